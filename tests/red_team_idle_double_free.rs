//! Red-team attack of session 12 on the idle look's reset of an empty current block (its
//! pages given back, its lists forgotten, its bump pointer back at the first slot) against
//! the every-build check of a double free of the slot freed last. A test that found a
//! defect is `#[ignore]`d with its number (RED-n), its owner and the exact failure.

use cohort::{set_misuse_hook, Cohort, Misuse, Retention};
use std::panic::{catch_unwind, panic_any, AssertUnwindSafe};
use std::time::{Duration, Instant};

cohort::lifetime_classes! { enum Life { A } }

fn raise(m: &Misuse) {
    panic_any(m.clone());
}

/// RED-62 (owner cursor: src/heap/idle.rs, `Header::reset`): a thread frees its 64-byte
/// objects (the slot freed last, `p`, is the first of its list), goes on with other work
/// (slow paths of another size class) past the delay, so that the idle look resets the
/// empty block, then frees `p` again. The README promises the double free of the slot freed
/// last is reported in every build; after the reset no list names `p`, so a release build
/// takes the free, and `p`, also a never-used slot again, is handed out twice. Failure on
/// main 921aec8 and eec6e3f, release: `the double free of the slot freed last after an idle
/// reset was not reported, and the slot was handed out 2 times among the next 400` (a debug
/// build reports it: checked mode).
/// Fixed: the reset keeps the slot freed last first on the local free list until the
/// block's next allocation (`KEPT_FREED` in src/block.rs).
#[test]
fn a_double_free_of_the_slot_freed_last_after_an_idle_reset_is_reported() {
    let a = Cohort::<Life>::new();
    a.set_retention(Retention {
        delay: Duration::from_millis(40),
        ..Retention::DEFAULT
    });
    // 128 KiB of the 64-byte class's current block, all freed again, `p` last: more than
    // the block's first page at every page size the tests run with (4 KiB, and 64 KiB
    // through COHORT_PAGE_SIZE), so the reset's decommit shows in the resident bytes (with
    // 300 objects, 19 KiB, it could not at 64 KiB pages: the wait below timed out).
    let ps: Vec<*mut u8> = (0..2048).map(|_| a.malloc(64, Life::A)).collect();
    assert!(ps.iter().all(|p| !p.is_null()));
    let p = ps[2047];
    for &q in &ps {
        // SAFETY: allocated above, freed once.
        unsafe { a.free(q, 64, Life::A) };
    }
    let resident = |a: &Cohort<Life>| {
        a.stats()
            .heads
            .iter()
            .filter(|h| h.stride == 64)
            .map(|h| h.resident_bytes)
            .sum::<usize>()
    };
    let before = resident(&a);
    // Slow paths of another size class on this thread (its objects freed by another thread,
    // so that each round collects them) until the idle look resets the 64-byte block.
    let start = Instant::now();
    while resident(&a) >= before && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
        let qs: Vec<usize> = (0..3000)
            .map(|_| a.malloc(1000, Life::A) as usize)
            .collect();
        std::thread::scope(|s| {
            s.spawn(|| {
                for q in qs {
                    // SAFETY: allocated above, freed once.
                    unsafe { a.free(q as *mut u8, 1000, Life::A) };
                }
            });
        });
    }
    assert!(
        resident(&a) < before,
        "the idle look did not reset the block within 10 s ({before} bytes resident)"
    );
    if !reported(&a, p) {
        let next: Vec<*mut u8> = (0..400).map(|_| a.malloc(64, Life::A)).collect();
        let times = next.iter().filter(|&&q| q == p).count();
        // The instance took a double free: it is never used again.
        std::mem::forget(a);
        panic!(
            "the double free of the slot freed last after an idle reset was not reported, and \
             the slot was handed out {times} times among the next 400"
        );
    }
}

/// Frees `p` (a double free) with the misuse hook raising: true when it was reported.
fn reported(a: &Cohort<Life>, p: *mut u8) -> bool {
    let prev = set_misuse_hook(Some(raise));
    // SAFETY: misuse under test (a double free), which must be reported before anything
    // changes.
    let freed = catch_unwind(AssertUnwindSafe(|| unsafe { a.free(p, 64, Life::A) }));
    set_misuse_hook(prev);
    freed.is_err()
}

/// RED-62's sibling on the other reset (session 13, cursor): `release_class` empties the
/// class's current block in place, as the idle look does; the slot freed last before the
/// release stays first on its local free list, so freeing it again is reported. Failed
/// before the fix, release build: `the double free of the slot freed last after a release
/// was not reported`.
#[test]
fn a_double_free_of_the_slot_freed_last_after_a_release_is_reported() {
    let a = Cohort::<Life>::new();
    let ps: Vec<*mut u8> = (0..300).map(|_| a.malloc(64, Life::A)).collect();
    assert!(ps.iter().all(|p| !p.is_null()));
    for &q in &ps {
        // SAFETY: allocated above, freed once.
        unsafe { a.free(q, 64, Life::A) };
    }
    // SAFETY: nothing of the class is live.
    let released = unsafe { a.release_class(Life::A) };
    assert_eq!(released.slots, 0);
    if !reported(&a, ps[299]) {
        // The instance took a double free: it is never used again.
        std::mem::forget(a);
        panic!("the double free of the slot freed last after a release was not reported");
    }
    // The block still serves, with no slot handed out twice.
    let next: Vec<*mut u8> = (0..400).map(|_| a.malloc(64, Life::A)).collect();
    test_support::assert_distinct(&next);
}

/// A double free by another thread of the slot its owner freed last (the first of the
/// owner's local free list) is reported in every build, as the owner's own is: the remote
/// paths compare with that slot too. Failed before the fix, release build: `another
/// thread's double free of the slot its owner freed last was not reported`.
#[test]
fn another_threads_double_free_of_the_slot_its_owner_freed_last_is_reported() {
    let a = Cohort::<Life>::new();
    let keep = a.malloc(64, Life::A);
    let p = a.malloc(64, Life::A);
    assert!(!keep.is_null() && !p.is_null());
    // SAFETY: allocated above, freed once (by its owner, the calling thread).
    unsafe { a.free(p, 64, Life::A) };
    let addr = p as usize;
    let seen = std::thread::scope(|s| s.spawn(|| reported(&a, addr as *mut u8)).join().unwrap());
    if !seen {
        std::mem::forget(a);
        panic!("another thread's double free of the slot its owner freed last was not reported");
    }
    // SAFETY: allocated above, freed once.
    unsafe { a.free(keep, 64, Life::A) };
}
