//! A delay that `set_retention` shortens applies from the next slow path: neither a heap's
//! next look at its idle current blocks nor the pool's next decay of its kept empty blocks
//! waits for the time the longer delay scheduled (half an hour, at the longest delay).
//! Residency comes from `mincore` and the statistics, not from timing; the kept blocks'
//! test waits for the new delay's decay, bounded by 50 times that delay.

mod common;

use cohort::{Cohort, Retention};
use common::kernel_view::resident_pages;
use std::thread::sleep;
use std::time::{Duration, Instant};

const SIZE: usize = 512;

/// An instance whose delay is the longest accepted (an hour).
fn longest_delay() -> Cohort<()> {
    let a = Cohort::<()>::new();
    a.set_retention(Retention {
        delay: Retention::MAX_DELAY,
        ..Retention::DEFAULT
    });
    a
}

fn set_delay(a: &Cohort<()>, delay: Duration) {
    a.set_retention(Retention {
        delay,
        ..Retention::DEFAULT
    });
}

/// `n` objects of `SIZE` bytes, each written whole.
fn fill(a: &Cohort<()>, n: usize) -> Vec<*mut u8> {
    let ptrs: Vec<*mut u8> = (0..n).map(|_| a.malloc(SIZE, ())).collect();
    for &p in &ptrs {
        assert!(!p.is_null());
        // SAFETY: SIZE bytes of ours.
        unsafe { p.write_bytes(0x5a, SIZE) };
    }
    ptrs
}

fn free_all(a: &Cohort<()>, ptrs: Vec<*mut u8>) {
    for p in ptrs {
        // SAFETY: allocated by `fill` with this size, freed once.
        unsafe { a.free(p, SIZE, ()) };
    }
}

/// One large allocation and its free: a slow path of the calling thread, which runs its
/// heap's look when due and the pool's decay when due.
fn slow_path(a: &Cohort<()>) {
    let p = a.malloc(4 << 20, ());
    assert!(!p.is_null());
    // SAFETY: live, freed once.
    unsafe { a.free(p, 4 << 20, ()) };
}

/// The first slow path (the thread's first allocation) looks at the heap's current blocks
/// and schedules the next look half the delay on: half an hour. The delay set to zero
/// after, an empty current block goes at the next slow path (a look with a zero delay
/// gives back at once). Failure before the fix (main 74f1a97): `after the delay went from
/// an hour to zero: 125 of the empty block's pages still resident` (the look scheduled by
/// the hour).
#[test]
fn a_delay_shortened_to_zero_gives_an_empty_current_block_back_at_the_next_slow_path() {
    let a = longest_delay();
    let ptrs = fill(&a, 1000);
    let lo = ptrs.iter().map(|&p| p as usize).min().unwrap();
    let hi = ptrs.iter().map(|&p| p as usize).max().unwrap() + SIZE;
    // Past the header's page, which stays.
    let first_page = (lo + 1).next_multiple_of(64 << 10);
    free_all(&a, ptrs);
    set_delay(&a, Duration::ZERO);
    slow_path(&a);
    assert_eq!(
        resident_pages(first_page, hi),
        0,
        "after the delay went from an hour to zero: the empty block's pages still resident"
    );
}

/// Three blocks' worth of objects freed by their owner: the two blocks not current go to
/// the pool, kept (the pool's next decay was scheduled by the hour: its first delay is an
/// eighth of it, the decay looks half that on). The delay set to 40 ms after, they go back
/// within 50 delays of slow paths. Failure before the fix (main 74f1a97): `2 empty blocks
/// still kept 2.0s after the delay went from an hour to 40 ms`.
#[test]
fn kept_blocks_go_back_on_a_delay_shortened_after_they_were_kept() {
    let a = longest_delay();
    let ptrs = fill(&a, 10_000);
    free_all(&a, ptrs);
    let kept = || a.stats().retained_empty_blocks;
    assert!(kept() >= 2, "blocks kept: {}", kept());
    let delay = Duration::from_millis(40);
    set_delay(&a, delay);
    let start = Instant::now();
    while kept() > 0 && start.elapsed() < delay * 50 {
        sleep(delay / 4);
        slow_path(&a);
    }
    assert_eq!(
        kept(),
        0,
        "empty blocks still kept {:?} after the delay went from an hour to {delay:?}",
        start.elapsed()
    );
}
