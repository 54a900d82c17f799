//! The cache's unit tests: best fit, splits, joins, bounds, the adaptive delay.

use super::*;
use core::time::Duration;

const PAGE: usize = 4096;

/// What a take handed out: (address, length).
fn taken(took: (Option<Cached>, Evicted)) -> Option<(usize, usize)> {
    took.0.map(|c| (c.addr, c.len))
}

fn bounded(bytes: usize, mappings: usize, delay_ms: u64) -> Cache {
    let mut c = Cache::new();
    let r = Retention {
        large_cache_bytes: bytes,
        large_cache_mappings: mappings,
        delay: Duration::from_millis(delay_ms),
        ..Retention::DEFAULT
    };
    assert_eq!(c.configure(&r).len(), 0);
    c
}

#[test]
fn takes_the_best_fit_within_an_eighth() {
    let mut c = Cache::new();
    assert_eq!(c.put(0x10_0000, 16 * PAGE, 0).len(), 0);
    assert_eq!(c.put(0x20_0000, 18 * PAGE, 0).len(), 0);
    assert_eq!(c.put(0x30_0000, 17 * PAGE, 0).len(), 0);
    // 16 pages: 16..=18 fit; 16 is the shortest.
    assert_eq!(
        taken(c.take(16 * PAGE, PAGE, PAGE, 0)),
        Some((0x10_0000, 16 * PAGE))
    );
    // 17 pages: 17 (the shortest of 17, 18).
    assert_eq!(
        taken(c.take(17 * PAGE, PAGE, PAGE, 0)),
        Some((0x30_0000, 17 * PAGE))
    );
    // Alignment: 0x20_0000 is 2 MiB-aligned, not 4 MiB.
    assert_eq!(taken(c.take(18 * PAGE, 4 << 20, PAGE, 0)), None);
    assert_eq!(
        taken(c.take(18 * PAGE, 2 << 20, PAGE, 0)),
        Some((0x20_0000, 18 * PAGE))
    );
    assert_eq!((c.count(), c.bytes()), (0, 0));
}

#[test]
fn a_shorter_request_takes_the_head_of_a_longer_range_and_leaves_its_tail() {
    let mut c = bounded(1000 * PAGE, 32, 1000);
    assert_eq!(c.put(0x100_0000, 10 * PAGE, 5).len(), 0);
    assert_eq!(c.put(0x200_0000, 40 * PAGE, 7).len(), 0);
    // 15 pages: none within an eighth; the head of the shortest longer one (40).
    assert_eq!(
        taken(c.take(15 * PAGE, PAGE, PAGE, 9)),
        Some((0x200_0000, 15 * PAGE))
    );
    assert_eq!((c.count(), c.bytes()), (2, 35 * PAGE));
    assert!(c.contains(0x200_0000 + 15 * PAGE) && !c.contains(0x200_0000));
    // The tail keeps the range's time (7): it decays after the delay from 7.
    let mut d = bounded(1000 * PAGE, 32, 800);
    assert_eq!(d.put(0x200_0000, 40 * PAGE, 7).len(), 0);
    assert_eq!(
        taken(d.take(15 * PAGE, PAGE, PAGE, 9)).map(|t| t.1),
        Some(15 * PAGE)
    );
    let out = d.tick(7 + 101);
    assert_eq!(
        out.iter().collect::<Vec<_>>(),
        [(0x200_0000 + 15 * PAGE, 25 * PAGE)]
    );
    // A request longer than every range grows the longest (unless a larger alignment
    // than the page is asked: a grown range may move), whatever the bound.
    assert_eq!(taken(c.take(30 * PAGE, 2 * PAGE, PAGE, 9)), None);
    assert_eq!(
        taken(c.take(30 * PAGE, PAGE, PAGE, 9)),
        Some((0x200_0000 + 15 * PAGE, 25 * PAGE))
    );
    // Not for a request longer than the bound (it would not be cached at its free), nor
    // for one more than twice as long as the range.
    assert_eq!(taken(c.take(1001 * PAGE, PAGE, PAGE, 9)), None);
    assert_eq!(taken(c.take(21 * PAGE, PAGE, PAGE, 9)), None);
    assert_eq!(
        taken(c.take(20 * PAGE, PAGE, PAGE, 9)),
        Some((0x100_0000, 10 * PAGE))
    );
    assert_eq!((c.count(), c.bytes()), (0, 0));
}

#[test]
fn a_range_given_back_ungrown_keeps_its_time() {
    let mut c = bounded(100 * PAGE, 32, 800);
    assert_eq!(c.put(0x100_0000, 10 * PAGE, 1000).len(), 0);
    let (got, _) = c.take(15 * PAGE, PAGE, PAGE, 1050);
    let got = got.expect("the range, to grow");
    assert_eq!(
        (got.addr, got.len, got.freed_at),
        (0x100_0000, 10 * PAGE, 1000)
    );
    // Not grown: back in the cache with its time, so it goes at 1000 + 100 as before.
    assert_eq!(c.put_back(got, 1060).len(), 0);
    assert_eq!(c.tick(1100).len(), 0);
    assert_eq!(c.tick(1101).len(), 1);
    // One older than the delay goes at once.
    assert_eq!(c.put(0x100_0000, 10 * PAGE, 2000).len(), 0);
    let (got, _) = c.take(15 * PAGE, PAGE, PAGE, 2000);
    let out = c.put_back(got.unwrap(), 2101);
    assert_eq!(out.iter().collect::<Vec<_>>(), [(0x100_0000, 10 * PAGE)]);
    assert_eq!((c.count(), c.bytes()), (0, 0));
}

#[test]
fn a_freed_range_joins_the_cached_ranges_it_touches_and_keeps_the_oldest_time() {
    let mut c = bounded(100 * PAGE, 32, 800);
    let base = 0x100_0000;
    assert_eq!(c.put(base, 10 * PAGE, 1000).len(), 0);
    assert_eq!(c.put(base + 20 * PAGE, 10 * PAGE, 1010).len(), 0);
    // The middle joins both: one range of 30 pages, as old as its oldest part.
    assert_eq!(c.put(base + 10 * PAGE, 10 * PAGE, 1050).len(), 0);
    assert_eq!((c.count(), c.bytes()), (1, 30 * PAGE));
    assert!(
        c.contains(base + 15 * PAGE),
        "an address inside a joined range is cached"
    );
    assert!(!c.contains(base + 30 * PAGE));
    // Every cached byte goes back within the delay (100 ms now) of the oldest part.
    assert_eq!(c.tick(1100).len(), 0);
    let out = c.tick(1101);
    assert_eq!(out.iter().collect::<Vec<_>>(), [(base, 30 * PAGE)]);
    // A join never makes a range longer than the bound: 60 + 50 > 100 pages.
    assert_eq!(c.put(base, 60 * PAGE, 2000).len(), 0);
    assert_eq!(c.put(base + 60 * PAGE, 50 * PAGE, 2000).len(), 1);
    assert_eq!((c.count(), c.bytes()), (1, 50 * PAGE));
    assert!(c.contains(base + 60 * PAGE) && !c.contains(base));
}

#[test]
fn the_byte_bound_and_the_slots_evict_the_oldest() {
    let mut c = bounded(10 * PAGE, 32, 1000);
    assert_eq!(c.put(0x1000_0000, 4 * PAGE, 0).len(), 0);
    assert_eq!(c.put(0x2000_0000, 4 * PAGE, 1).len(), 0);
    let out = c.put(0x3000_0000, 4 * PAGE, 2);
    assert_eq!(out.iter().collect::<Vec<_>>(), [(0x1000_0000, 4 * PAGE)]);
    assert!(c.bytes() <= 10 * PAGE && c.contains(0x3000_0000));
    // Longer than the bound: not kept.
    let out = c.put(0x4000_0000, 11 * PAGE, 3);
    assert_eq!(out.iter().collect::<Vec<_>>(), [(0x4000_0000, 11 * PAGE)]);
    // Slots: limit + 1 one-page mappings keep `limit`, whatever the limit.
    for limit in [1, 5, SLOTS] {
        let mut c = bounded(1 << 30, limit, 1000);
        let mut evicted = 0;
        for i in 1..=limit + 1 {
            evicted += c.put(i << 24, PAGE, i as u64).len();
        }
        assert_eq!((c.count(), evicted), (limit, 1));
        assert!(!c.contains(1 << 24), "the oldest went");
        // A lower limit evicts the oldest at once.
        let out = c.configure(&Retention {
            large_cache_mappings: limit / 2,
            ..Retention::DEFAULT
        });
        assert_eq!((c.count(), out.len()), (limit / 2, limit - limit / 2));
        assert_eq!(c.drain().len(), limit / 2);
        assert_eq!((c.count(), c.bytes()), (0, 0));
    }
    // No mappings at all: nothing is kept.
    let mut c = bounded(1 << 30, 0, 1000);
    assert_eq!(c.put(1 << 24, PAGE, 0).len(), 1);
    assert_eq!(c.count(), 0);
}

#[test]
fn unused_mappings_decay_after_the_adaptive_delay() {
    // A delay of 800 ms starts at 100.
    let mut c = bounded(1 << 30, 32, 800);
    assert_eq!(c.delays(), (100, 800));
    assert_eq!(c.put(0x1000_0000, PAGE, 1000).len(), 0);
    assert_eq!(c.tick(1100).len(), 0, "not older than the delay");
    let out = c.tick(1101);
    assert_eq!(out.iter().collect::<Vec<_>>(), [(0x1000_0000, PAGE)]);
    assert_eq!(c.count(), 0);
    // A request 50 ms later finds nothing: the give-back was premature.
    let (got, out) = c.take(PAGE, PAGE, PAGE, 1150);
    assert!(got.is_none() && out.len() == 0);
    assert_eq!(c.delays(), (200, 800), "the delay doubled");
    // Now a mapping survives 150 ms unused, and is reused.
    assert_eq!(c.put(0x2000_0000, PAGE, 2000).len(), 0);
    assert_eq!(c.tick(2150).len(), 0);
    assert_eq!(
        taken(c.take(PAGE, PAGE, PAGE, 2150)),
        Some((0x2000_0000, PAGE))
    );
}

/// A request longer than the byte bound finds nothing, whatever was given back: no
/// range that long is ever kept (its free would not keep it either), so it judges no
/// give-back: the delay stays, and the give-back is judged by the next request the
/// cache could have served.
#[test]
fn a_request_longer_than_the_bound_is_no_miss() {
    let mut c = bounded(64 * PAGE, 32, 800);
    assert_eq!(c.put(0x1000_0000, PAGE, 1000).len(), 0);
    assert_eq!(c.tick(1101).len(), 1);
    for at in [1110, 1120] {
        let (got, out) = c.take(65 * PAGE, PAGE, PAGE, at);
        assert!(got.is_none() && out.len() == 0);
        let (got, out) = c.take_within(65 * PAGE, 1000 * PAGE, PAGE, at);
        assert!(got.is_none() && out.len() == 0);
        assert_eq!(
            c.delays(),
            (100, 800),
            "a request the cache could never serve lengthened the delay"
        );
    }
    // The next request it could have served judges the give-back (premature: doubled).
    assert!(c.take(PAGE, PAGE, PAGE, 1150).0.is_none());
    assert_eq!(c.delays(), (200, 800));
}
