//! Red-team attacks of session 16 on full regions of fixed capacity (`with_options`,
//! `with_reservation`): memory every object of which was freed must serve any thread or
//! join again ("freeing makes room again", invariant 11; the README's sizing rule: a
//! thread or join needs a block per class it uses beyond the live bytes). A test that
//! found a defect is `#[ignore]`d with its number (RED-n), its owner and the exact failure.

use cohort::{Cohort, RegionOptions};

cohort::lifetime_classes! { enum Life { A } }

const MIB: usize = 1 << 20;

/// Allocates 64-byte objects with `malloc` until null (or `n`); frees them through `a`.
fn how_many(a: &Cohort<Life>, n: usize, malloc: impl Fn() -> *mut u8) -> usize {
    let mut got = Vec::new();
    while got.len() < n {
        let p = malloc();
        if p.is_null() {
            break;
        }
        got.push(p);
    }
    let m = got.len();
    for p in got {
        // SAFETY: allocated above, freed once.
        unsafe { a.free(p, 64, Life::A) };
    }
    m
}

/// The main thread fills an 8 MiB region (`with_options`, `with_reservation`) with 64-byte
/// objects until null; another thread frees them all (remote frees) and exits; the main
/// thread calls `compact` when `compact_first`. Every object is free (the region says it is
/// empty), and then a new thread, and a join, may each allocate at least half as many (the
/// main thread's heap keeps at most one block of the class for itself; the region has
/// four). Returns the rounds that got less.
fn other_heaps_after_remote_frees(compact_first: bool) -> Vec<String> {
    let regions: [(&str, Cohort<Life>); 2] = [
        (
            "with_options",
            Cohort::with_options(&RegionOptions::new(8 * MIB)).expect("fixed"),
        ),
        ("with_reservation", Cohort::with_reservation(8 * MIB)),
    ];
    let mut failures = Vec::new();
    for (name, a) in &regions {
        let mut full = Vec::new();
        loop {
            let p = a.malloc(64, Life::A);
            if p.is_null() {
                break;
            }
            full.push(p as usize);
        }
        let n = full.len();
        std::thread::scope(|s| {
            s.spawn(|| {
                for p in full {
                    // SAFETY: the main thread's objects, handed over, freed once.
                    unsafe { a.free(p as *mut u8, 64, Life::A) };
                }
            });
        });
        assert!(a.is_empty(), "{name}: {:?}", a.stats());
        let compacted = compact_first.then(|| a.compact());
        let by_thread =
            std::thread::scope(|s| s.spawn(|| how_many(a, n, || a.malloc(64, Life::A))).join());
        let by_thread = by_thread.expect("the new thread");
        if by_thread < n / 2 {
            failures.push(format!(
                "{name}: a new thread got {by_thread} of {n} ({compacted:?})"
            ));
        }
        let join = a.join(1).expect("a join");
        let by_join = how_many(a, n, || join.malloc(64, Life::A));
        join.leave();
        if by_join < n / 2 {
            failures.push(format!("{name}: a join got {by_join} of {n}"));
        }
    }
    failures
}

/// The owner's `compact` after the remote frees gives the emptied blocks back.
///
/// RED-73 (owner's part; lead 5c2cdcf fixed it): failed on main c654d1c every run
/// (release-tests 3 of 3, debug 1 of 1): `["with_options: a new thread got 0 of 131068
/// (Some(Compacted { blocks: 0, resident_before: 8388608, resident_after: 8388608, .. }))",
/// "with_options: a join got 0 of 131068", "with_reservation: ...", ...]`: blocks retired full
/// and emptied by other threads' frees stayed listed in the owner's heap, their slots on
/// the blocks' remote lists, which `compact` did not collect. A guard now.
#[test]
fn a_full_region_emptied_by_remote_frees_and_compacted_serves_other_threads_and_joins() {
    let failures = other_heaps_after_remote_frees(true);
    assert!(failures.is_empty(), "{failures:?}");
}

/// The same without `compact`: another thread's or a join's out-of-memory path while the
/// owner idles.
///
/// RED-73b (owner: remote): fails on main 5c2cdcf every run (release-tests 3 of 3, debug 1
/// of 1): `["with_options: a new thread got 0 of 131068 (None)", "with_reservation: a new
/// thread got 0 of 131068 (None)"]` (the join after it got its share). A new thread's
/// out-of-memory path cannot reach the blocks an idle live heap holds, emptied by remote
/// frees (the cross-thread part of RED-71/RED-72's question).
/// Fixed (claim, session 17): out of memory claims the returned blocks of other live
/// heaps every slot of which other threads freed (`heap_handover::claim`).
#[test]
fn a_full_region_emptied_by_remote_frees_serves_other_threads_and_joins() {
    let failures = other_heaps_after_remote_frees(false);
    assert!(failures.is_empty(), "{failures:?}");
}
