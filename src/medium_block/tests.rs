//! Unit tests of `crate::medium_block`: the run table's search, take, free, resize,
//! purge and repair.

use super::*;

fn fresh() -> Box<Runs> {
    // SAFETY: Runs is plain integers, for which zero bytes are a value.
    let mut r: Box<Runs> = Box::new(unsafe { core::mem::zeroed() });
    r.init(true);
    r
}

#[test]
fn runs_are_found_first_fit_aligned_and_freed_with_their_neighbours() {
    let mut r = fresh();
    let a = r.find(3, 1).unwrap();
    assert_eq!(a, META_GRANULES);
    assert_eq!(r.take(a, 3), 0);
    let b = r.find(4, 2).unwrap();
    assert_eq!(b, META_GRANULES + 4, "aligned to two granules");
    r.take(b, 4);
    assert_eq!(r.at(a), At::Start(3));
    assert_eq!(r.at(a + 1), At::Inside);
    assert_eq!(r.at(a + 3), At::Free);
    assert_eq!(r.find(1, 1), Some(a + 3));
    assert_eq!(r.free_run(a), 3);
    assert_eq!(r.at(a), At::Free);
    assert_eq!(r.find(4, 1), Some(a), "the freed run and the gap after it");
    assert_eq!(r.check(), Ok((1, 4)));
    assert_eq!(r.dirty(), 3);
}

#[test]
fn a_full_block_refuses_and_learns_its_longest_run() {
    let mut r = fresh();
    let g = r.find(MAX_RUN, 1).unwrap();
    r.take(g, MAX_RUN);
    assert_eq!(r.find(1, 1), None);
    assert_eq!(r.longest, 0);
    r.free_run(g);
    assert_eq!(r.find(MAX_RUN, 1), Some(g));
    assert_eq!(r.check(), Ok((0, 0)));
}

#[test]
fn runs_grow_into_free_granules_and_shrink() {
    let mut r = fresh();
    let a = r.find(4, 1).unwrap();
    r.take(a, 4);
    let b = r.find(4, 1).unwrap();
    r.take(b, 4);
    assert_eq!(r.grow(a, 4, 5), None, "b follows a");
    assert_eq!(r.grow(b, 4, 10), Some(0));
    assert_eq!(r.at(b), At::Start(10));
    r.shrink(b, 10, 2);
    assert_eq!(r.at(b + 2), At::Free);
    assert_eq!(r.check(), Ok((2, 6)));
    assert_eq!(r.dirty(), 8);
}

#[test]
fn purge_cleans_whole_free_pages_only() {
    let mut r = fresh();
    let a = r.find(5, 1).unwrap(); // granules 2..7: pages 1, 2 and half of 3
    r.take(a, 5);
    let b = r.find(1, 1).unwrap(); // granule 7, the rest of page 3
    r.take(b, 1);
    r.free_run(a);
    assert_eq!(r.dirty(), 5);
    let mut given = Vec::new();
    let cleaned = r.purge(4096, GRANULES, usize::MAX, |s, k| given.push((s, k)));
    assert_eq!(given, vec![(2, 4)], "pages 1 and 2; page 3 holds b");
    assert_eq!((cleaned, r.dirty()), (4, 1));
    let mut zeroing = Vec::new();
    r.for_each_dirty(2, 5, |s, k| zeroing.push((s, k)));
    assert_eq!(zeroing, vec![(6, 1)]);
    assert_eq!(r.check(), Ok((1, 1)));
    assert_eq!(
        r.purge(4096, GRANULES, usize::MAX, |_, _| panic!(
            "nothing to give back"
        )),
        0
    );
}

/// With 64 KiB pages the first page holds the metadata and the first free granules, so
/// a purge leaves those dirty: an emptied block is then as clean as purges can make it
/// (the medium decay hands such blocks to the pool; before, with 64 KiB pages, 191
/// emptied blocks kept 11.5 MiB resident for good: tests/large_decay.rs under
/// `COHORT_PAGE_SIZE=64K`).
#[test]
fn a_purged_empty_block_is_dirty_only_in_its_first_page() {
    const PAGE: usize = 64 << 10;
    let per_page = PAGE / GRANULE;
    let mut r = fresh();
    let a = r.find(2 * per_page, 1).unwrap(); // the rest of page 0, and page 1 and more
    r.take(a, 2 * per_page);
    r.free_run(a);
    assert!(r.is_empty() && r.dirty() == 2 * per_page);
    assert!(!r.dirty_only_in_first_page(PAGE), "page 1 is dirty");
    r.purge(PAGE, GRANULES, usize::MAX, |_, _| {});
    assert_eq!(
        r.dirty(),
        per_page - META_GRANULES,
        "page 0's free granules stay dirty"
    );
    assert!(r.dirty_only_in_first_page(PAGE));
    assert!(
        !r.dirty_only_in_first_page(4096),
        "with 4 KiB pages those granules lie past the first page: a purge takes them"
    );
}

/// Runs of `lens` granules one after the other from the first free granule, every
/// other one freed again (dirty), the rest live: returns their first granules.
fn every_other_freed(r: &mut Runs, lens: &[usize]) -> Vec<usize> {
    let starts: Vec<usize> = lens
        .iter()
        .map(|&n| {
            let g = r.find(n, 1).unwrap();
            r.take(g, n);
            g
        })
        .collect();
    for &g in starts.iter().step_by(2) {
        r.free_run(g);
    }
    starts
}

#[test]
fn the_dirty_fit_takes_the_shortest_dirty_range_that_holds_the_run() {
    let mut r = fresh();
    // Freed: 10 at a, 4 at b, 6 at c (dirty); live between them; clean after.
    let s = every_other_freed(&mut r, &[10, 1, 4, 1, 6, 1]);
    let (a, b, c) = (s[0], s[2], s[4]);
    assert_eq!(r.find_dirty(4, 1), Some((b, 0, 4)), "b fits exactly");
    assert_eq!(r.find_dirty(5, 1), Some((c, 0, 6)), "c before the longer a");
    assert_eq!(r.find_dirty(10, 1), Some((a, 0, 10)));
    assert_eq!(r.find(5, 1), Some(a), "the first fit would take a");
    // No free run of 20 covers a dirty granule (the clean ones after the last live run
    // are the first fit's).
    assert_eq!(r.find_dirty(20, 1), None);
    assert_eq!(r.find(20, 1), Some(s[5] + 1));
    assert_eq!(r.check(), Ok((3, 3)));
}

/// An aligned dirty fit takes the aligned run that covers the most dirty granules, which
/// may start after its dirty range does. Before, only the windows aligned down from the
/// range's start and from its end less the run were counted: here both are granule 8's,
/// covering 1 dirty granule where the run at 16 covers 7 (found by the model test).
#[test]
fn an_aligned_dirty_fit_may_start_after_its_dirty_range() {
    let mut r = fresh();
    r.take(15, 8);
    r.free_run(15);
    assert_eq!(r.find_dirty(8, 8), Some((16, 1, 8)));
}

#[test]
fn a_dirty_fit_spills_into_clean_granules_when_no_dirty_range_is_long_enough() {
    let mut r = fresh();
    let b = every_other_freed(&mut r, &[5])[0];
    // b's 5 dirty granules and the clean ones after: a run of 8 starts at b, clean 3.
    assert_eq!(r.find_dirty(8, 1), Some((b, 3, 5)));
    // Aligned to 4 granules: the window starts at a multiple of 4 in the free range.
    let (g, clean, _) = r.find_dirty(8, 4).unwrap();
    assert!(g.is_multiple_of(4) && g >= b && clean == 8 - (b + 5 - g));
    assert_eq!(
        r.find_dirty(MAX_RUN, 1),
        Some((b, MAX_RUN - 5, 5)),
        "the whole block"
    );
}

#[test]
fn purge_gives_back_the_shortest_dirty_ranges_first_and_stops_at_enough() {
    let mut r = fresh();
    // Dirty ranges of 4, 2 and 16 granules (2, 1 and 8 pages of 4 KiB), live between.
    let s = every_other_freed(&mut r, &[4, 2, 2, 2, 16, 2]);
    assert_eq!(r.dirty(), 22);
    let mut given = Vec::new();
    assert_eq!(r.purge(4096, 4, usize::MAX, |g, k| given.push((g, k))), 6);
    assert!(
        given.iter().all(|&(g, _)| g < s[4]),
        "the 16 stays: {given:?}"
    );
    let mut given = Vec::new();
    assert_eq!(r.purge(4096, GRANULES, 2, |g, k| given.push((g, k))), 16);
    assert_eq!(given, vec![(s[4], 16)]);
    assert_eq!(r.dirty(), 0);
    assert_eq!(r.check(), Ok((3, 6)));
}

/// A range of dirty granules in a run of at least `KEPT_FREE` free granules (where the
/// longest requests fit) goes back only in a purge's last pass; one as long between live
/// runs goes back in the first.
#[test]
fn dirty_granules_of_long_free_runs_go_back_last() {
    let mut r = fresh();
    let [a, _, c] = [16; 3].map(|n| {
        let g = r.find(n, 1).unwrap();
        r.take(g, n);
        g
    });
    // a: between the metadata and a live run; c: in the free run to the block's end.
    r.free_run(a);
    r.free_run(c);
    assert_eq!(r.dirty(), 32);
    let mut lengths = Vec::new();
    r.for_each_dirty_range(4096, |k, pages| lengths.push((k, pages)));
    assert_eq!(
        lengths,
        vec![(16, 16), (GRANULES, 16)],
        "c ranked with the last pass"
    );
    let mut given = Vec::new();
    assert_eq!(
        r.purge(4096, GRANULES / 2, usize::MAX, |g, k| given.push((g, k))),
        16
    );
    assert_eq!(given, vec![(a, 16)], "c stays for the longest requests");
    assert_eq!(
        r.purge(4096, GRANULES, usize::MAX, |g, k| given.push((g, k))),
        16
    );
    assert_eq!(given, vec![(a, 16), (c, 16)]);
    assert_eq!(r.dirty(), 0);
    assert_eq!(r.check(), Ok((1, 16)));
}

#[test]
fn dirty_ranges_are_counted_with_the_whole_pages_inside_them() {
    let mut r = fresh();
    // Dirty ranges of 4, 2 and 16 granules, live between; granule 2 starts page 1.
    let s = every_other_freed(&mut r, &[4, 2, 2, 2, 16, 2]);
    let mut seen = Vec::new();
    r.for_each_dirty_range(4096, |k, pages| seen.push((k, pages)));
    // 2..6: pages 1 and 2; 8..10: page 4; 12..28: pages 6 to 13.
    assert_eq!(s[..5], [2, 6, 8, 10, 12]);
    assert_eq!(seen, vec![(4, 4), (2, 2), (16, 16)]);
    seen.clear();
    // With 64 KiB pages none of them holds a whole page past the first.
    r.for_each_dirty_range(64 << 10, |k, pages| seen.push((k, pages)));
    assert_eq!(seen, vec![(4, 0), (2, 0), (16, 0)]);
}

#[test]
fn a_recount_drops_half_written_runs() {
    let mut r = fresh();
    let a = r.find(3, 1).unwrap();
    r.take(a, 3);
    // A holder died after writing a run's length but before marking its granules.
    r.lens[a + 5] = 4;
    r.runs = 7;
    r.recount();
    assert_eq!(r.check(), Ok((1, 3)));
    assert_eq!(r.at(a + 5), At::Free);
}

#[test]
fn a_recount_frees_used_granules_of_no_run() {
    let mut r = fresh();
    let a = r.find(3, 1).unwrap();
    r.take(a, 3);
    let b = r.find(5, 1).unwrap();
    // A holder died taking a run (granules marked, length not yet written), and
    // another freeing one (length cleared, granules still marked).
    set_range(&mut r.bits.used, b, 5, true);
    r.lens[a] = 0;
    // Garbage length inside a kept run, and in the metadata.
    let c = r.find(2, 1).unwrap();
    r.take(c, 2);
    r.lens[c + 1] = 1;
    r.lens[1] = 9;
    r.recount();
    assert_eq!(r.check(), Ok((1, 2)));
    assert_eq!(r.at(b), At::Free);
    assert_eq!(r.at(a), At::Free);
    assert_eq!(r.at(c), At::Start(2));
    assert_eq!(r.free(), MAX_RUN - 2);
    assert_eq!(
        r.find(c - META_GRANULES, 1),
        Some(META_GRANULES),
        "the freed granules serve"
    );
}

/// A full purge of a block of random live runs (freed in part, so dirty ranges lie between
/// live runs and at block ends) leaves no dirty granule in a whole free page, marks no
/// used granule clean, and gives back each range of pages once: for pages of 1, 2 and 32
/// granules.
#[test]
fn a_full_purge_leaves_every_whole_free_page_clean() {
    for per_page in [1, 2, 32] {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ per_page as u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..20 {
            let mut r = fresh();
            let mut live = Vec::new();
            loop {
                let n = 1 + next(40);
                let Some(g) = r.find(n, 1) else { break };
                r.take(g, n);
                live.push(g);
            }
            for (i, &g) in live.iter().enumerate() {
                if i % 3 != 0 {
                    r.free_run(g);
                }
            }
            let mut given = Vec::new();
            r.purge(per_page * GRANULE, GRANULES, usize::MAX, |s, k| {
                given.push((s, k))
            });
            assert!(r.check().is_ok());
            for w in given.windows(2) {
                assert!(
                    w[0].0 + w[0].1 <= w[1].0,
                    "ranges overlap or go back: {given:?}"
                );
            }
            let first = META_GRANULES.next_multiple_of(per_page);
            for p in (first..GRANULES).step_by(per_page) {
                let free = count_range(&r.bits.used, p, per_page) == 0;
                if free {
                    assert_eq!(
                        count_range(&r.bits.clean, p, per_page),
                        per_page,
                        "page {p} left dirty"
                    );
                }
            }
        }
    }
}

/// The checks see a summary that disagrees with the bitmaps, a word too few or too many.
#[test]
fn a_stale_word_summary_is_reported() {
    let mut r = fresh();
    let g = r.find(100, 1).unwrap();
    r.take(g, 100);
    assert_eq!(r.check(), Ok((1, 100)));
    let good = r.bits.summary;
    r.bits.used[5] = 1 << 3;
    assert_eq!(r.check(), Err("a used granule outside every run"));
    r.bits.used[5] = 0;
    assert_eq!(r.check(), Ok((1, 100)));
    r.bits.summary = bits::Summary::default();
    assert_eq!(
        r.check(),
        Err("the word summary disagrees with the bitmaps")
    );
    // The run freed but the summary kept: word 1 is marked as holding used granules, and
    // it holds none.
    r.bits.mark(g, 100, bits::Mark::Free);
    r.bits.summary = good;
    r.lens[g] = 0;
    r.runs = 0;
    r.free += 100;
    r.dirty += 100;
    assert_eq!(
        r.check(),
        Err("the word summary disagrees with the bitmaps")
    );
}
