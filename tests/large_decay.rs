//! Unused memory given back on a schedule, driven by slow paths only: after a burst that
//! frees 1 GiB of mixed sizes, the resident size returns to within a few MiB of the live
//! data within the delay; a steady loop never pays a page fault per iteration, with the
//! default settings and with a short delay that the loop's period first exceeds (the
//! delay learns the period).
//!
//! Resident sizes come from `/proc/self/statm`, page faults from
//! `getrusage(RUSAGE_THREAD)`; the tests of this file run one at a time.

use cohort::{Cohort, Retention};
use std::time::{Duration, Instant};
use test_support::{rss, serial};

cohort::lifetime_classes! { enum Life { A } }

/// Minor page faults of the calling thread so far.
fn minor_faults() -> i64 {
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut usage: libc::rusage = unsafe { core::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) },
        0
    );
    usage.ru_minflt
}

/// Allocates `size` bytes and writes one byte per 4 KiB.
fn touched(a: &Cohort<Life>, size: usize) -> *mut u8 {
    let p = a.malloc(size, Life::A);
    assert!(!p.is_null(), "malloc({size})");
    for i in (0..size).step_by(4096) {
        // SAFETY: i < size.
        unsafe { p.add(i).write(1) };
    }
    p
}

/// One slow-path call: a large allocation and its free.
fn slow_path(a: &Cohort<Life>) {
    let p = a.malloc(2 << 20, Life::A);
    // SAFETY: live, freed once.
    unsafe { a.free(p, 2 << 20, Life::A) };
}

fn with_delay(delay: Duration) -> Retention {
    Retention {
        large_cache_bytes: 256 << 20,
        large_cache_mappings: Retention::MAX_LARGE_CACHE_MAPPINGS,
        empty_block_bytes: 256 << 20,
        delay,
    }
}

#[test]
fn a_burst_of_one_gib_goes_back_within_the_delay() {
    let _serial = serial();
    let a = Cohort::<Life>::new();
    // Generous bounds, so that only time gives the burst back.
    let delay = Duration::from_millis(300);
    a.set_retention(with_delay(delay));
    // 8 MiB of live data that stays.
    let live: Vec<*mut u8> = (0..8).map(|_| touched(&a, 1 << 20)).collect();
    let before = rss();
    // 1 GiB of mixed sizes, half small (64 B to 16 KiB, 4 MiB of each in turn) and half
    // large (48 KiB to 3 MiB).
    let small = [64, 1 << 10, 4 << 10, 16 << 10];
    let large = [48 << 10, 200 << 10, 1 << 20, 3 << 20];
    let mut burst = Vec::new();
    let mut bytes = 0;
    let mut i = 0;
    while bytes < 1 << 30 {
        let size = small[i % small.len()];
        for _ in 0..(4 << 20) / size {
            burst.push((touched(&a, size), size));
        }
        let mut large_bytes = 0;
        while large_bytes < 4 << 20 {
            let size = large[(i + large_bytes) % large.len()];
            burst.push((touched(&a, size), size));
            large_bytes += size;
        }
        bytes += (4 << 20) + large_bytes;
        i += 1;
    }
    assert!(rss() >= before + (900 << 20), "the burst is resident");
    for (p, size) in burst {
        // SAFETY: live, freed once.
        unsafe { a.free(p, size, Life::A) };
    }
    let freed = Instant::now();
    // (Slow paths while the burst is freed may give part of it back already.)
    let kept = rss();
    // Idle, with a slow-path call every 10 ms, for up to three delays.
    let goal = before + (8 << 20);
    while rss() > goal && freed.elapsed() < delay * 3 {
        std::thread::sleep(Duration::from_millis(10));
        slow_path(&a);
    }
    let after = rss();
    assert!(
        after <= goal,
        "{} MiB resident over the live data {:?} after the burst was freed (kept at first: {} \
         MiB): {}",
        after.saturating_sub(before) >> 20,
        freed.elapsed(),
        (kept - before) >> 20,
        a.stats()
    );
    for p in live {
        // SAFETY: live, freed once.
        unsafe { a.free(p, 1 << 20, Life::A) };
    }
}

/// Rounds of: 4 MiB of 1 KiB objects and a 2 MiB buffer (large), touched, freed; `pause` between
/// rounds. Returns the page faults of the last `measured` rounds.
fn faults_of_steady_rounds(
    a: &Cohort<Life>,
    rounds: usize,
    measured: usize,
    pause: Duration,
) -> i64 {
    let mut faults = 0;
    for round in 0..rounds {
        let start = minor_faults();
        let small: Vec<*mut u8> = (0..4096).map(|_| touched(a, 1 << 10)).collect();
        let large = touched(a, 2 << 20);
        // SAFETY: all live, each freed once.
        unsafe {
            a.free(large, 2 << 20, Life::A);
            for p in small {
                a.free(p, 1 << 10, Life::A);
            }
        }
        if round >= rounds - measured {
            faults += minor_faults() - start;
        }
        std::thread::sleep(pause);
    }
    faults
}

/// A round faults in 1 536 pages when nothing is kept (4 MiB + 2 MiB of 4 KiB pages).
const ROUND_FAULTS: i64 = 1536;

#[test]
fn a_steady_loop_pays_no_fault_per_iteration() {
    let _serial = serial();
    let a = Cohort::<Life>::new();
    let faults = faults_of_steady_rounds(&a, 50, 40, Duration::ZERO);
    assert!(
        faults < ROUND_FAULTS / 2,
        "{faults} page faults in 40 rounds with the default retention"
    );
}

#[test]
fn the_delay_learns_a_period_longer_than_its_start() {
    let _serial = serial();
    let a = Cohort::<Life>::new();
    // The delay starts at 50 ms; the loop comes back every 80 ms or more.
    let r = with_delay(Duration::from_millis(400));
    a.set_retention(r);
    let faults = faults_of_steady_rounds(&a, 24, 12, Duration::from_millis(80));
    let (large, empty) = a.decay_delays();
    // The large cache gave its mapping back between rounds at first, and learnt not to.
    // (Empty blocks are judged per window between two looks, and a look comes with each
    // round: blocks reused every round are never unused for a whole window.)
    assert!(
        large > r.delay / 8,
        "the large cache's delay grew from {:?}: {large:?}",
        r.delay / 8
    );
    assert!(empty >= r.delay / 8 && empty <= r.delay, "{empty:?}");
    // Each round would pay ROUND_FAULTS if what it freed were given back before the next.
    assert!(
        faults < ROUND_FAULTS * 3,
        "{faults} page faults in the last 12 rounds (delays {large:?}, {empty:?})"
    );
}
