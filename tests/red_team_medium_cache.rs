//! Red-team attacks of session 10 on the per-heap medium cache (a heap keeps up to 8 freed
//! medium runs of up to 64 KiB for its next requests, with no lock) together with batched
//! remote frees: forks while other threads' caches are full and their batches pending
//! (the children must see an empty, consistent instance and work in it), thread exits
//! with a full cache, wrong sizes between medium lengths against cached runs, and resizes
//! that cross the cache's longest run. A test that found a defect is `#[ignore]`d with its
//! number (RED-n), its owner and the exact failure.

mod red_team_common;

use cohort::{Cohort, RegionOptions};
use red_team_common::*;
use std::sync::mpsc;

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

/// Medium sizes of 9 to 32 granules (in the cache's range) and two above it.
const MEDIUM: [usize; 10] = [
    16_385, 20_000, 24_577, 30_000, 36_000, 45_000, 50_000, 65_536, 65_537, 200_000,
];
const SMALL: [usize; 5] = [16, 64, 200, 1000, 4000];

fn first_not(p: usize, n: usize, b: u8) -> Option<usize> {
    // SAFETY: the callers pass live allocations of at least n bytes.
    unsafe { std::slice::from_raw_parts(p as *const u8, n) }
        .iter()
        .position(|&x| x != b)
}

/// Medium churn with checks: allocations of every size in `MEDIUM`, written, resized
/// (some across the cache's longest run), checked and freed. Panics on a lost byte.
fn churn(a: &Cohort<Life>, what: &str, rounds: usize) {
    let mut live: Vec<(usize, usize, u8)> = Vec::new();
    for r in 0..rounds {
        let n = MEDIUM[r % MEDIUM.len()];
        let zero = r % 3 == 0;
        let p = if zero {
            a.calloc(n, Life::Short)
        } else {
            a.malloc(n, Life::Short)
        };
        assert!(!p.is_null(), "{what}: medium alloc({n})");
        if zero {
            assert_eq!(first_not(p as usize, n, 0), None, "{what}: calloc({n})");
        }
        let b = (r as u8) | 1;
        // SAFETY: n bytes of ours.
        unsafe { p.write_bytes(b, n) };
        live.push((p as usize, n, b));
        if r % 4 == 3 {
            let (p, n, b) = live.remove(r % live.len());
            let m = MEDIUM[(r * 7) % MEDIUM.len()];
            // SAFETY: live, of size n in Short.
            let q = unsafe { a.remalloc(p as *mut u8, n, m, Life::Short) };
            assert!(!q.is_null());
            assert_eq!(
                first_not(q as usize, n.min(m), b),
                None,
                "{what}: remalloc {n} -> {m}"
            );
            // SAFETY: m bytes of ours.
            unsafe { q.write_bytes(b, m) };
            live.push((q as usize, m, b));
        }
        if live.len() > 12 {
            let (p, n, b) = live.swap_remove(r % live.len());
            assert_eq!(first_not(p, n, b), None, "{what}: a {n}-byte run changed");
            // SAFETY: live, freed once.
            unsafe { a.free(p as *mut u8, n, Life::Short) };
        }
    }
    for (p, n, b) in live {
        assert_eq!(first_not(p, n, b), None, "{what}: a {n}-byte run changed");
        // SAFETY: live, freed once.
        unsafe { a.free(p as *mut u8, n, Life::Short) };
    }
}

/// Fills the calling thread's medium cache (its 8 slots, and frees past them that go to
/// the blocks) and frees `theirs` (another thread's small objects: remote frees, pending
/// in this thread's batch in a private instance); everything it made is freed.
fn fill_cache_and_free_remotely(a: &Cohort<Life>, theirs: Vec<(usize, usize)>) {
    let runs: Vec<(usize, usize)> = MEDIUM
        .iter()
        .chain(&MEDIUM[..4])
        .map(|&n| (a.malloc(n, Life::Short) as usize, n))
        .collect();
    let smalls: Vec<(usize, usize)> = (0..300)
        .map(|i| (a.malloc(SMALL[i % 5], Life::Short) as usize, SMALL[i % 5]))
        .collect();
    for (p, n) in runs.into_iter().chain(smalls) {
        assert_ne!(p, 0);
        // SAFETY: allocated above, freed once.
        unsafe { a.free(p as *mut u8, n, Life::Short) };
    }
    for (p, n) in theirs {
        // SAFETY: the other thread's objects, handed over, freed once.
        unsafe { a.free(p as *mut u8, n, Life::Short) };
    }
}

/// What a child checks of an instance in which every allocation is freed, though other
/// threads (of its parent) hold full medium caches and pending remote frees: the instance
/// is empty and verifies, medium work succeeds, a release and a compact leave it empty and
/// consistent.
fn child_checks(a: &Cohort<Life>, what: &str) {
    let s = a.stats();
    assert!(
        a.is_empty(),
        "{what}: every allocation was freed, yet the child sees {} small, {} medium, {} large live",
        s.small.live,
        s.medium_allocations,
        s.large_allocations
    );
    // SAFETY: the child's only thread.
    if let Err(e) = unsafe { a.verify() } {
        panic!("{what}: verify in the child: {e}");
    }
    churn(a, what, 400);
    // SAFETY: nothing of Short is live.
    unsafe { a.release_class(Life::Short) };
    let _ = a.compact();
    assert!(a.is_empty(), "{what}: after churn, release, compact");
    // SAFETY: the child's only thread.
    if let Err(e) = unsafe { a.verify() } {
        panic!("{what}: verify after churn: {e}");
    }
}

/// Thread T fills its medium cache and frees the main thread's small objects (pending in
/// its batch), then waits, alive; the main thread does the same with T's objects. Then a
/// child forked by the main thread, and one forked by T, check the instance
/// ([`child_checks`]). The parent then finishes and checks it too.
fn fork_beside_full_caches(a: &Cohort<Life>, what: &str) {
    let report = Report::new();
    let mine: Vec<(usize, usize)> = (0..400)
        .map(|i| (a.malloc(SMALL[i % 5], Life::Short) as usize, SMALL[i % 5]))
        .collect();
    let (to_t, t_in) = mpsc::channel::<Vec<(usize, usize)>>();
    let (from_t, main_in) = mpsc::channel::<Vec<(usize, usize)>>();
    let (ready_tx, ready) = mpsc::channel::<()>();
    let (go_tx, go) = mpsc::channel::<()>();
    let (t_forked_tx, t_forked) = mpsc::channel::<Result<(), String>>();
    std::thread::scope(|s| {
        s.spawn(move || {
            let report = Report::new();
            let objects: Vec<(usize, usize)> = (0..400)
                .map(|i| (a.malloc(SMALL[i % 5], Life::Short) as usize, SMALL[i % 5]))
                .collect();
            from_t.send(objects).unwrap();
            fill_cache_and_free_remotely(a, t_in.recv().unwrap());
            ready_tx.send(()).unwrap();
            // Main forks now; then T forks, while the main thread waits.
            go.recv().unwrap();
            let child = in_child_reporting(20, &report, || {
                child_checks(a, &format!("{what}: fork of T"))
            });
            let ended = wait(child);
            t_forked_tx
                .send(if ended == Ok(0) {
                    Ok(())
                } else {
                    Err(format!("{what}: T's child {ended:?}: {}", report.message()))
                })
                .unwrap();
            go.recv().unwrap();
        });
        to_t.send(mine).unwrap();
        fill_cache_and_free_remotely(a, main_in.recv().unwrap());
        ready.recv().unwrap();
        let child = in_child_reporting(20, &report, || {
            child_checks(a, &format!("{what}: fork of main"))
        });
        let ended = wait(child);
        assert_eq!(ended, Ok(0), "{what}: main's child: {}", report.message());
        go_tx.send(()).unwrap();
        let t_result = t_forked.recv().unwrap();
        go_tx.send(()).unwrap();
        if let Err(e) = t_result {
            panic!("{e}");
        }
    });
    // T exited with its cache full: its runs went back.
    assert!(
        a.is_empty(),
        "{what}: parent after T's exit: {:?}",
        a.stats().medium_allocations
    );
    // SAFETY: no other thread uses the instance.
    if let Err(e) = unsafe { a.verify() } {
        panic!("{what}: parent: {e}");
    }
}

#[test]
fn forks_beside_full_medium_caches_and_pending_batches_see_an_empty_consistent_instance() {
    fork_beside_full_caches(&Cohort::<Life>::new(), "private");
    let fixed = Cohort::<Life>::with_options(&RegionOptions::new(64 << 20)).expect("fixed");
    fork_beside_full_caches(&fixed, "fixed");
    let shared = Cohort::<Life>::shared_anonymous(64 << 20).expect("shared");
    fork_beside_full_caches(&shared, "shared-anonymous");
}

/// A cached run (freed into the heap's cache) freed again with its own size, with another
/// medium size of another length, with a size of the same length, resized, or freed as
/// small or large: each must be misuse (the run is free memory), and the cache must hand
/// it out once, whole.
#[test]
fn a_run_in_a_heaps_cache_is_never_freed_or_resized_again() {
    let a = Cohort::<Life>::new();
    for &n in &MEDIUM[..8] {
        let p = a.malloc(n, Life::Short);
        assert!(!p.is_null());
        // SAFETY: live, freed once: into the cache.
        unsafe { a.free(p, n, Life::Short) };
        for m in [n, n + 1, n - 1, n + 2048, n - 2048, 16_000, 2 << 20] {
            // SAFETY: a freed pointer: misuse, which try_free reports without freeing.
            let r = unsafe { a.try_free(p, m, Life::Short) };
            assert!(
                r.is_err(),
                "a run of {n} bytes in the cache freed again as {m} bytes"
            );
        }
        for m in [n + 4096, n - 2048, 100] {
            // SAFETY: a freed pointer; misuse must panic and change nothing.
            let moved = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
                a.remalloc(p, n, m, Life::Short)
            }));
            assert!(
                moved.is_err(),
                "a run of {n} bytes in the cache resized to {m}"
            );
        }
        let q = a.malloc(n, Life::Short);
        let r = a.malloc(n, Life::Short);
        assert!(q != r, "one run handed out twice");
        for (x, b) in [(q, 1u8), (r, 2)] {
            // SAFETY: n bytes of ours.
            unsafe { x.write_bytes(b, n) };
        }
        assert_eq!(first_not(q as usize, n, 1), None);
        for x in [q, r] {
            // SAFETY: live, freed once.
            unsafe { a.free(x, n, Life::Short) };
        }
    }
    // SAFETY: no other thread uses the instance.
    unsafe { a.verify() }.expect("verifies");
    assert!(a.is_empty());
}

/// Medium blocks emptied of every run (which a private region may keep on their class's
/// list until purged): their class released, the instance compacted, verified and counted
/// empty; the other class then takes the memory back, zeroed where asked and whole; and
/// the first class allocates again. Three rounds, with frees in both orders.
#[test]
fn emptied_medium_blocks_kept_on_their_list_serve_release_compact_and_the_other_class() {
    let a = Cohort::<Life>::new();
    for round in 0..3 {
        let sizes = |i: usize| 16_385 + (i * 37_000 + round * 5_000) % 900_000;
        let runs: Vec<(usize, usize)> = (0..60)
            .map(|i| {
                let n = sizes(i);
                let p = a.malloc(n, Life::Short);
                assert!(!p.is_null());
                // SAFETY: n bytes of ours.
                unsafe { p.write_bytes(0xee, n) };
                (p as usize, n)
            })
            .collect();
        let order: Vec<usize> = if round % 2 == 0 {
            (0..runs.len()).collect()
        } else {
            (0..runs.len()).rev().collect()
        };
        for i in order {
            let (p, n) = runs[i];
            // SAFETY: live, freed once.
            unsafe { a.free(p as *mut u8, n, Life::Short) };
        }
        assert!(
            a.is_empty(),
            "round {round}: every run freed: {:?}",
            a.stats().medium_allocations
        );
        // SAFETY: nothing of Short is live.
        unsafe { a.release_class(Life::Short) };
        let _ = a.compact();
        // SAFETY: no other thread uses the instance.
        unsafe { a.verify() }.expect("verifies after release and compact");
        let longs: Vec<(usize, usize)> = (0..60)
            .map(|i| {
                let n = sizes(i + 7);
                let p = a.calloc(n, Life::Long);
                assert!(!p.is_null());
                assert_eq!(
                    first_not(p as usize, n, 0),
                    None,
                    "round {round}: calloc({n}) of Long"
                );
                // SAFETY: n bytes of ours.
                unsafe { p.write_bytes(0x11, n) };
                (p as usize, n)
            })
            .collect();
        let shorts: Vec<(usize, usize)> = (0..30)
            .map(|i| {
                let n = sizes(i + 3);
                let p = a.calloc(n, Life::Short);
                assert!(!p.is_null());
                assert_eq!(
                    first_not(p as usize, n, 0),
                    None,
                    "round {round}: calloc({n}) of Short"
                );
                // SAFETY: n bytes of ours.
                unsafe { p.write_bytes(0x22, n) };
                (p as usize, n)
            })
            .collect();
        for &(p, n) in &longs {
            assert_eq!(
                first_not(p, n, 0x11),
                None,
                "round {round}: a Long run changed"
            );
        }
        for (p, n) in longs {
            // SAFETY: live, freed once.
            unsafe { a.free(p as *mut u8, n, Life::Long) };
        }
        for (p, n) in shorts {
            assert_eq!(
                first_not(p, n, 0x22),
                None,
                "round {round}: a Short run changed"
            );
            // SAFETY: live, freed once.
            unsafe { a.free(p as *mut u8, n, Life::Short) };
        }
        // SAFETY: no other thread uses the instance.
        unsafe { a.verify() }.expect("verifies");
        assert!(a.is_empty());
    }
}
