//! Red-team attacks of session 15 on the medium cache's lent run (a free of the run the
//! cache handed out last, checked by its start byte alone while the pool's count of medium
//! blocks given away is the one recorded with it). The count is the process's view's; the
//! record is in the heap, which lives in the region's state and outlives the view when the
//! region is left and attached again. A stale free of a medium run whose block has since
//! become a small block must still be reported (`free` panics), never take the small
//! block's memory. A test that found a defect is `#[ignore]`d with its number (RED-n), its
//! owner and the exact failure.

mod common;

use cohort::{Cohort, RegionOptions};
use common::memory::private_aligned;
use std::panic::{catch_unwind, AssertUnwindSafe};

cohort::lifetime_classes! {
    enum Life { A }
}

const MIB: usize = 1 << 20;
const BLOCK: usize = 2 * MIB;
/// A medium size the heap's cache keeps: 16 granules of 2 KiB.
const MEDIUM: usize = 32 << 10;
const GRANULES: u8 = (MEDIUM / 2048) as u8;

/// A thread's medium run handed out by its cache (allocated, freed into the cache, taken
/// again), freed into the cache again; the thread exits (its cache flushed, the block
/// emptied, and given up by `compact`). The region is left and attached again at the same address. A new thread
/// (adopting the exited thread's heap,, the lent run recorded in it) fills the memory with
/// 64-byte objects, each byte 16 (the run's granule count), until one lies in the run's old
/// block: the block is a small block now. Then it frees the stale run: a misuse to report.
/// Returns what happened.
fn stale_free_after_a_new_attach() -> Result<(), String> {
    let capacity = 32 * MIB;
    let f = Cohort::<Life>::footprint(capacity).unwrap();
    let mem = private_aligned(f.bytes);
    // SAFETY: ours, unused, mapped for the process's life.
    let a = unsafe { Cohort::<Life>::format_in(mem, f.bytes, &RegionOptions::new(capacity)) }
        .expect("formatted");
    let run = std::thread::scope(|s| {
        s.spawn(|| {
            let p = a.malloc(MEDIUM, Life::A);
            assert!(!p.is_null());
            // SAFETY: live, freed once (into the cache).
            unsafe { a.free(p, MEDIUM, Life::A) };
            let q = a.malloc(MEDIUM, Life::A);
            assert_eq!(q, p, "the cache hands the run out again");
            // SAFETY: live, freed once.
            unsafe { a.free(q, MEDIUM, Life::A) };
            q as usize
        })
        .join()
        .unwrap()
    });
    // The emptied medium block goes (in this view: the next one counts from 0 again).
    a.compact();
    drop(a);
    // SAFETY: the region formatted above, mapped for the process's life.
    let a = unsafe { Cohort::<Life>::attach_in(mem, f.bytes, capacity) }.expect("attached");
    let block = run & !(BLOCK - 1);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut objects = Vec::new();
            let mut in_block = 0;
            while in_block < 2 && objects.len() < 600_000 {
                let p = a.malloc(64, Life::A);
                if p.is_null() {
                    break;
                }
                // SAFETY: 64 bytes of ours.
                unsafe { p.write_bytes(GRANULES, 64) };
                if p as usize & !(BLOCK - 1) == block {
                    in_block += 1;
                }
                objects.push(p as usize);
            }
            if in_block == 0 {
                return Err("the run's block never became a small block".to_string());
            }
            // Fill the block whole: the run's start byte lies in one of its slots.
            for _ in 0..(BLOCK / 64) {
                let p = a.malloc(64, Life::A);
                assert!(!p.is_null());
                // SAFETY: as above.
                unsafe { p.write_bytes(GRANULES, 64) };
                objects.push(p as usize);
            }
            // SAFETY: deliberately wrong (a stale free of a run freed before the leave);
            // the allocator must report it and change nothing.
            let reported = catch_unwind(AssertUnwindSafe(|| unsafe {
                a.free(run as *mut u8, MEDIUM, Life::A)
            }))
            .is_err();
            let changed: Vec<usize> = objects
                .iter()
                .copied()
                .filter(|&p| {
                    // SAFETY: live objects of ours.
                    unsafe { std::slice::from_raw_parts(p as *const u8, 64) }
                        .iter()
                        .any(|&b| b != GRANULES)
                })
                .collect();
            let again = a.malloc(MEDIUM, Life::A) as usize;
            let overlaps = objects
                .iter()
                .filter(|&&p| p < again + MEDIUM && again < p + 64)
                .count();
            if reported && changed.is_empty() && overlaps == 0 {
                Ok(())
            } else {
                Err(format!(
                    "a stale free of the medium run at {run:#x} (its block a small block now, \
                     after the region was left and attached again): reported {reported}; \
                     live 64-byte objects changed: {} (first at {:#x}); the next {MEDIUM}-byte \
                     allocation {again:#x} overlaps {overlaps} live 64-byte objects",
                    changed.len(),
                    changed.first().copied().unwrap_or(0)
                ))
            }
        })
        .join()
        .unwrap()
    })
}

/// RED-68 (owner: medium): see [`stale_free_after_a_new_attach`]. Passes on main 93125ec
/// (release-tests: the free panics, nothing changes). Fails on medium's 7165ef1 (the lent
/// run: a free checked by its start byte alone while the view's count of medium blocks
/// given away equals the one recorded in the heap, 0 in both views), release-tests 5 of 5
/// runs: `a stale free of the medium run at 0x7f8b79e01000 (its block a small block now,
/// after the region was left and attached again): reported false; live 64-byte objects
/// changed: 1 (first at 0x7f8b79e00940); the next 32768-byte allocation 0x7f8b79e01000
/// overlaps 512 live 64-byte objects`: the hold's compare-and-swap took a live small
/// object's byte for the run's start byte, and the cache handed the run out over 512 live
/// objects. Not ignored: a guard on main, which must stay green when the lent run lands.
#[test]
fn a_stale_medium_free_after_a_new_attach_is_reported_and_takes_nothing() {
    if let Err(e) = stale_free_after_a_new_attach() {
        panic!("{e}");
    }
}
