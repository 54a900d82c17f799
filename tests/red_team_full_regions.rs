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

/// The main thread fills an 8 MiB region with 64-byte objects until null; another thread
/// frees them all (remote frees) and exits; `compact` runs. Every object is free (the
/// region says it is empty), and then a new thread, and a join, may each allocate at least
/// half as many (the main thread's heap keeps at most one block of the class for itself;
/// the region has four).
///
/// RED-73 (owner: remote): fails on main c654d1c, every run (release-tests 3 of 3, debug
/// 1 of 1): `["with_options: a new thread got 0 of 131068", "with_options: a join got 0 of
/// 131068", "with_reservation: a new thread got 0 of 131068", ...]`; `compact` gives back no
/// block (`Compacted { blocks: 0, resident_before: 8388608, .. }`). Blocks emptied by remote
/// frees stay listed in the idle owner's heap with their slots on the blocks' remote lists,
/// seen as used by everyone but their owner (only its own allocation collects them), so no
/// other heap, nor `compact`, can take them: the region is full for everyone else while
/// it holds nothing. When the main thread frees the objects itself, the new thread and the
/// join get all 131068.
#[test]
#[ignore = "RED-73: blocks emptied by remote frees stay with their idle owner: a full region serves no other thread or join, and compact gives none back (main: every run, 0 of 131068)"]
fn a_full_region_emptied_by_remote_frees_serves_other_threads_and_joins() {
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
        let compacted = a.compact();
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
    assert!(failures.is_empty(), "{failures:?}");
}
