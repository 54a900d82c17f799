//! Red-team attacks of session 14 on readers racing the owner's allocation cursor: the
//! statistics and block reports of another thread while the owner allocates (a cursor
//! written back to its block on each slow path must be counted once: neither missed nor
//! counted both in the block and in the cursor). A test that found a defect is
//! `#[ignore]`d with its number (RED-n), its owner and the exact failure.

use cohort::Cohort;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

cohort::lifetime_classes! { enum Life { A } }

/// Allocations per epoch, and epochs (fewer in a debug build).
const PER_EPOCH: u64 = 4000;
const EPOCHS: u64 = if cfg!(debug_assertions) { 30 } else { 300 };

/// Live objects of class A as the statistics count them.
fn stats_live(a: &Cohort<Life>) -> u64 {
    a.stats().heads.iter().map(|h| h.live as u64).sum()
}

/// One thread allocates `size`-byte objects only, `PER_EPOCH` per epoch (each epoch ends
/// with every object freed); another reads the statistics meanwhile. Within an allocating
/// epoch every read must lie between the allocations finished before it began and those
/// begun before it ended: blocks' counts only grow then, so a read outside is a slot
/// counted twice or missed. Returns the reads checked and the first read outside.
fn reads_within_bounds(size: usize) -> (u64, Option<String>) {
    let a = Cohort::<Life>::new();
    // Odd: allocating; even: freeing (the counts below are reset then).
    let epoch = AtomicU64::new(1);
    let started = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let stop = AtomicU64::new(0);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut checked = 0;
            while stop.load(SeqCst) == 0 {
                let e1 = epoch.load(SeqCst);
                let low = done.load(SeqCst);
                let live = stats_live(&a);
                let high = started.load(SeqCst);
                let e2 = epoch.load(SeqCst);
                if e1 != e2 || e1.is_multiple_of(2) {
                    continue;
                }
                checked += 1;
                if live < low || live > high {
                    return (
                        checked,
                        Some(format!(
                            "{size} B: stats counted {live} live while {low} to {high} \
                             allocations were made (epoch {e1}, read {checked})"
                        )),
                    );
                }
            }
            (checked, None)
        });
        for e in 0..EPOCHS {
            let mut objs = Vec::with_capacity(PER_EPOCH as usize);
            for _ in 0..PER_EPOCH {
                started.fetch_add(1, SeqCst);
                let p = a.malloc(size, Life::A);
                assert!(!p.is_null());
                objs.push(p as usize);
                done.fetch_add(1, SeqCst);
            }
            epoch.store(2 * e + 2, SeqCst);
            for p in objs {
                // SAFETY: allocated above, freed once.
                unsafe { a.free(p as *mut u8, size, Life::A) };
            }
            started.store(0, SeqCst);
            done.store(0, SeqCst);
            epoch.store(2 * e + 3, SeqCst);
            if reader.is_finished() {
                break;
            }
        }
        stop.store(1, SeqCst);
        reader.join().unwrap()
    })
}

/// Sizes whose bump windows hold many slots (a slow path every few dozen allocations) and
/// few (1 KiB: four to a 4 KiB page; 8 KiB, one to two pages).
#[test]
fn statistics_racing_allocations_count_each_slot_once() {
    for size in [64usize, 1024, 8192] {
        let (checked, outside) = reads_within_bounds(size);
        assert_eq!(outside, None, "after {checked} reads");
    }
}
