//! Red-team attack of session 22 on two threads freeing one slot at once, each the quick
//! way (each holds a chain of the slot's block in its batch: it freed another object of
//! the block just before): a double free no list's first shows. A checked build (debug
//! assertions) reports exactly one of the two frees, naming the pointer (the live bit is
//! tested and cleared in one atomic step); a release build may take both, and then
//! `verify` must see the damage. Bound by rounds, each in a fresh instance; the two frees
//! start together at a barrier. A test that found a defect is `#[ignore]`d with its number
//! (RED-n) and the exact failure.

mod red_team_s22_common;
#[path = "common/threads.rs"]
mod threads;

use cohort::{set_misuse_hook, Cohort, Misuse};
use red_team_s22_common::{make, raise, unmake, Object};
use std::panic::{catch_unwind, AssertUnwindSafe};
use threads::Barrier;

cohort::lifetime_classes! {
    enum Life { A, B }
}

/// True in builds that check every free (debug builds, or the `checked` feature).
const CHECKED: bool = cfg!(debug_assertions);

const ROUNDS: usize = if CHECKED { 100 } else { 300 };

/// Frees `x` (class A) with the misuse hook raising: the report, if any.
fn free_reported(a: &Cohort<Life>, x: Object) -> Option<Misuse> {
    // SAFETY: the object is live, or this is the second of two racing frees (a double free
    // under test, which may be reported).
    catch_unwind(AssertUnwindSafe(|| unsafe {
        a.free(x.0 as *mut u8, x.1, Life::A)
    }))
    .err()
    .map(|e| *e.downcast::<Misuse>().expect("the hook's Misuse"))
}

#[test]
fn two_threads_freeing_one_slot_at_once_the_quick_way_are_caught() {
    let before = set_misuse_hook(Some(raise));
    let mut passed_both = 0;
    for round in 0..ROUNDS {
        let size = [16usize, 64, 1000][round % 3];
        let what = format!("round {round}, size {size}");
        let a = Cohort::<Life>::new();
        // x and one more object per freer, in one block (made one after another).
        let objects: Vec<Object> = (0..3)
            .map(|i| make(&a, size, Life::A, i as u8, &what))
            .collect();
        assert!(objects.iter().all(|o| o.0 >> 21 == objects[0].0 >> 21));
        let x = objects[0];
        let start = Barrier::new(2);
        let reports: Vec<Option<Misuse>> = std::thread::scope(|s| {
            let freers: Vec<_> = [objects[1], objects[2]]
                .into_iter()
                .map(|mine| {
                    let (a, start, what) = (&a, &start, &what);
                    s.spawn(move || {
                        let _party = start.party();
                        // A heap of the freer's own, then a chain of the block.
                        let kept = a.malloc(24, Life::B);
                        unmake(a, mine, Life::A, what);
                        start.wait();
                        let report = free_reported(a, x);
                        // SAFETY: allocated above, freed once.
                        unsafe { a.free(kept, 24, Life::B) };
                        report
                    })
                })
                .collect();
            freers
                .into_iter()
                .map(|f| f.join().expect("freer"))
                .collect()
        });
        for m in reports.iter().flatten() {
            assert_eq!(
                (m.ptr, m.size, m.life),
                (x.0, size, 0),
                "{what}: the report names another pointer, size or class: {m}"
            );
        }
        match reports.iter().flatten().count() {
            1 => {
                // SAFETY: every other thread has ended.
                if let Err(e) = unsafe { a.verify() } {
                    panic!("{what}: one free reported, yet verify fails: {e}");
                }
                assert!(a.is_empty(), "{what}: not empty: {:?}", a.stats());
            }
            0 => {
                if CHECKED {
                    panic!("{what}: a checked build took both frees of {:#x}", x.0);
                }
                passed_both += 1;
                // SAFETY: every other thread has ended.
                let v = unsafe { a.verify() };
                // The instance took a double free: it is never used again.
                std::mem::forget(a);
                assert!(
                    v.is_err(),
                    "{what}: both frees of {:#x} passed and verify passed: {v:?}",
                    x.0
                );
            }
            n => panic!("{what}: {n} reports of two frees"),
        }
    }
    set_misuse_hook(before);
    eprintln!("{passed_both} of {ROUNDS} rounds took both frees (a release build may)");
}
