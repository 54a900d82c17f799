//! Red-team attack of session 23 on another thread's free of an interior pointer in a
//! block's last slot, within 4 bytes of the block's end: a class whose slots fill the block
//! to its end (`limit == BLOCK_SIZE`: every power-of-two stride), and `p = base +
//! BLOCK_SIZE - k`, `k` in 1..=3. An interior pointer is misuse a release build does not
//! report (the README: checked builds only), but a free of `p` writes its 4-byte link at
//! `p`, past the block's end: into the next block's header, its owner-and-key word (the
//! key: its size and lifetime class). The next block's owner's correct frees are then
//! refused (a wrong size, or "the block is empty": `GlobalAlloc` aborts), or, past the
//! region's carved end, the write faults. Wanted: reported (pointer, size, class) before
//! anything is written, in every build, as the frees of pointers into a block's header
//! area or tail are; the next block's header unchanged. Another thread's free: a private
//! instance's batch, and a shared-anonymous region's free pushed at once. A test that
//! found a defect is `#[ignore]`d with its number (RED-n) and the exact failure.

mod red_team_common;
mod red_team_s22_common;

use cohort::class::BLOCK_SIZE;
use cohort::{set_misuse_hook, Cohort, Misuse};
use red_team_common::{in_child, wait, Report};
use red_team_s22_common::{check, make, raise, unmake, Object};
use std::panic::{catch_unwind, AssertUnwindSafe};
use test_support::raw_thread;

/// The malloc sizes tested, whose strides are powers of two: their slots end at the
/// block's end.
const SIZES: [usize; 3] = [8, 64, 1000];

/// [`case`] in a child process of its own (a write into the next block's header may make
/// the allocator fail hard, an abort, in the child only): its failure, or how the child
/// ended.
fn case_in_child(size: usize, back: usize, shared: bool) -> Result<(), String> {
    let report = Report::new();
    let child = in_child(60, || {
        if let Err(e) = case(size, back, shared) {
            report.fail(&e);
        }
    });
    match wait(child) {
        Ok(0) => Ok(()),
        Ok(_) => Err(report.message()),
        Err(signal) => Err(format!(
            "size {size}, {back} bytes before the block's end, shared: {shared}: the child \
             died of signal {signal} (6: an abort) after the free"
        )),
    }
}

/// One case: `size`'s first block, and live objects of 1000 bytes in the next block (a
/// block carved after it); another thread frees `base + BLOCK_SIZE - back` with `size`.
/// Then the next block's objects are checked and freed by their owner. The failure, if
/// any.
fn case(size: usize, back: usize, shared: bool) -> Result<(), String> {
    let what = format!("size {size}, {back} bytes before the block's end, shared: {shared}");
    let a = if shared {
        Cohort::<()>::shared_anonymous(64 << 20).expect("shared anonymous")
    } else {
        Cohort::<()>::new()
    };
    let first = make(&a, size, (), 0, &what);
    let base = first.0 & !(BLOCK_SIZE - 1);
    let next: Vec<Object> = (0..3000)
        .map(|i| make(&a, 1000, (), i as u8, &what))
        .filter(|o| o.0 & !(BLOCK_SIZE - 1) == base + BLOCK_SIZE)
        .collect();
    assert!(
        !next.is_empty(),
        "{what}: no block was carved after the first"
    );
    let p = base + BLOCK_SIZE - back;
    let caught = raw_thread::scope(|s| {
        s.spawn(|| {
            let before = set_misuse_hook(Some(raise));
            // SAFETY: deliberately misuse: an interior pointer of the block's last slot.
            let ended = catch_unwind(AssertUnwindSafe(|| unsafe {
                a.free(p as *mut u8, size, ())
            }));
            set_misuse_hook(before);
            // A private instance's batch pushed.
            let _ = a.stats();
            ended
                .err()
                .map(|e| *e.downcast::<Misuse>().expect("the hook's Misuse"))
        })
        .join()
        .expect("the freeing thread")
    });
    if let Some(m) = caught {
        unmake(&a, first, (), &what);
        next.iter().for_each(|&o| unmake(&a, o, (), &what));
        return match (m.ptr, m.size) == (p, size) {
            true => Ok(()),
            false => Err(format!("{what}: another report: {m}")),
        };
    }
    // Unreported: the next block's owner frees its objects, correctly.
    let before = set_misuse_hook(Some(raise));
    let refused = next.iter().find_map(|&o| {
        check(o, &what);
        // SAFETY: a live object of 1000 bytes, freed once.
        let ended = catch_unwind(AssertUnwindSafe(|| unsafe {
            a.free(o.0 as *mut u8, 1000, ())
        }));
        ended
            .err()
            .map(|e| *e.downcast::<Misuse>().expect("the hook's Misuse"))
    });
    set_misuse_hook(before);
    // The instance took misuse: it is never used again.
    std::mem::forget(a);
    Err(match refused {
        Some(m) => format!(
            "{what}: the free of {p:#x} was not reported, and a correct free of the next \
             block's object was refused: {m}"
        ),
        None => format!("{what}: the free of {p:#x} was not reported"),
    })
}

/// RED-142 (release builds: the remote free paths write a slot's link at the pointer,
/// checked against the block's slots by its offset only, not against its last 4 bytes):
/// another thread's free of an interior pointer 1 to 3 bytes before the block's end is
/// not reported, and its link's bytes land in the next block's owner-and-key word; that
/// block's owner's correct free is then refused (in a process whose thread then exits,
/// its heap's hand-over read the key's class 255 and panicked, an abort). Fails on main
/// 23df1ec, release-tests: all 18 cases, e.g. `size 64, 1 bytes before the block's end,
/// shared: false: the free of 0x7f96941fffff was not reported, and a correct free of the
/// next block's object was refused: cohort: bad free of 0x7f9694200400 (size 1000,
/// lifetime class 0): size 1000 is size class 130 (stride 1024 B) but the block is empty
/// or not a block of that size (wrong size, or already freed)`. A debug build reports it
/// (checked mode: not a slot's start).
#[test]
fn a_remote_free_within_4_bytes_of_the_blocks_end_is_reported() {
    let mut failures = Vec::new();
    for shared in [false, true] {
        for size in SIZES {
            for back in 1..=3 {
                if let Err(e) = case_in_child(size, back, shared) {
                    failures.push(e);
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures: {failures:#?}",
        failures.len()
    );
}
