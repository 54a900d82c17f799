//! Red-team attacks of session 9 on batched remote frees (a private instance, or a fixed
//! region in a private mapping since session 16, keeps a thread's frees into other
//! threads' blocks pending, and pushes them later): pending
//! frees against `release_class` and the reuse of the released blocks by another class,
//! against `compact`, `stats`, `is_empty` and `verify` from other threads, against forks
//! (the children flush, release and verify), against the freeing thread's exit, and
//! `try_free` of slots pending in a batch. A test that found a defect is `#[ignore]`d with
//! its number (RED-n), its owner and the exact failure.

mod red_team_common;

use cohort::{Cohort, RegionOptions};
use red_team_common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc;

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

const SIZES: [usize; 5] = [16, 64, 200, 1000, 4000];

/// True when the `n` bytes at `p` are all `b`.
fn holds(p: usize, n: usize, b: u8) -> bool {
    // SAFETY: the callers pass live allocations of at least n bytes.
    unsafe { std::slice::from_raw_parts(p as *const u8, n) }
        .iter()
        .all(|&x| x == b)
}

/// Thread O allocates objects of class Short and hands them to thread F, which frees them
/// (remote frees: pending in F's batch) and then waits without allocating (its batch is
/// not flushed by a slow path of its own). O then releases Short (every object of it is
/// dead: F's frees returned), allocates objects of class Long of the same sizes until it
/// has as many, fills them, and checks them after F has gone on (allocating, which
/// flushes its batch) and exited. A batch pushed into blocks the release gave away would
/// hand Long's slots out twice.
fn pending_frees_then_release(a: &Cohort<Life>, what: &str) {
    for round in 0..20 {
        let (to_freer, freer_in) = mpsc::channel::<Vec<(usize, usize)>>();
        let (freed_tx, freed) = mpsc::channel::<()>();
        let (go_tx, go) = mpsc::channel::<()>();
        std::thread::scope(|s| {
            s.spawn(move || {
                // A heap of F's own first (remote frees batch on the caller's heap).
                let mine = a.malloc(24, Life::Short);
                assert!(
                    !mine.is_null(),
                    "{what}, round {round}: F's first malloc(24): {:?}",
                    a.stats()
                );
                for (p, n) in freer_in.recv().expect("objects") {
                    // SAFETY: live objects of O, handed over, freed once.
                    unsafe { a.free(p as *mut u8, n, Life::Short) };
                }
                freed_tx.send(()).expect("freed");
                go.recv().expect("go");
                // Allocation slow paths (the batch is flushed) and the exit.
                let mut more = Vec::new();
                for i in 0..2000 {
                    let n = SIZES[i % SIZES.len()];
                    more.push((a.malloc(n, Life::Short) as usize, n));
                }
                for (p, n) in more {
                    // SAFETY: allocated above, freed once.
                    unsafe { a.free(p as *mut u8, n, Life::Short) };
                }
                // SAFETY: allocated above, freed once.
                unsafe { a.free(mine, 24, Life::Short) };
            });
            let objects: Vec<(usize, usize)> = (0..300)
                .map(|i| {
                    let n = SIZES[i % SIZES.len()];
                    let p = a.malloc(n, Life::Short);
                    assert!(!p.is_null(), "{what}: malloc({n})");
                    (p as usize, n)
                })
                .collect();
            to_freer.send(objects).expect("hand over");
            freed.recv().expect("freed");
            // SAFETY: Short's allocations of this thread are dead (F freed them and waits);
            // F's own `mine`, live, is in F's block, which a release leaves to F; nobody
            // allocates or frees in Short meanwhile.
            unsafe { a.release_class(Life::Short) };
            let longs: Vec<(usize, usize)> = (0..600)
                .map(|i| {
                    let n = SIZES[i % SIZES.len()];
                    let p = a.malloc(n, Life::Long);
                    assert!(!p.is_null(), "{what}: malloc({n}) of Long");
                    // SAFETY: n bytes of ours.
                    unsafe { p.write_bytes(0x4c, n) };
                    (p as usize, n)
                })
                .collect();
            go_tx.send(()).expect("go");
            // Meanwhile O allocates more Long (slots a bad push would give out again).
            let extra: Vec<(usize, usize)> = (0..600)
                .map(|i| {
                    let n = SIZES[i % SIZES.len()];
                    let p = a.malloc(n, Life::Long);
                    // SAFETY: n bytes of ours.
                    unsafe { p.write_bytes(0x33, n) };
                    (p as usize, n)
                })
                .collect();
            let mut seen = std::collections::HashSet::new();
            for &(p, n) in longs.iter().chain(&extra) {
                assert!(
                    seen.insert(p),
                    "{what}, round {round}: {p:#x} handed out twice"
                );
                let _ = n;
            }
            for &(p, n) in &longs {
                assert!(
                    holds(p, n, 0x4c),
                    "{what}, round {round}: a Long object changed"
                );
            }
            for (p, n) in longs.into_iter().chain(extra) {
                // SAFETY: allocated above, freed once.
                unsafe { a.free(p as *mut u8, n, Life::Long) };
            }
        });
    }
    // SAFETY: no other thread uses the instance.
    let v = unsafe { a.verify() };
    assert!(v.is_ok(), "{what}: {v:?}");
    assert!(a.is_empty(), "{what}: not empty: {:?}", a.stats());
}

#[test]
fn frees_pending_in_a_batch_never_reach_blocks_a_release_gave_to_another_class() {
    pending_frees_then_release(&Cohort::<Life>::new(), "private");
    let fixed = Cohort::<Life>::with_options(&RegionOptions::new(64 << 20)).expect("fixed");
    pending_frees_then_release(&fixed, "fixed");
}

/// Threads free each other's objects without pause (their batches fill and empty) while
/// the main thread forks 60 times; each child, under an alarm, calls every function that
/// flushes every batch (`stats`, `is_empty`, `compact`, `for_each_block`), allocates and
/// frees; it must finish (a batch the fork left held would make the child's flush wait
/// for ever). The parent ends consistent.
#[test]
fn forks_amid_batched_remote_frees_leave_children_that_flush_and_finish() {
    forks_amid_batched_remote_frees(&Cohort::<Life>::new());
}

/// As above, in a fixed region (a private mapping laid out as a shared region), whose
/// remote frees batch too: its batches live in the region's state area.
#[test]
fn forks_amid_batched_remote_frees_in_a_fixed_region_leave_children_that_flush_and_finish() {
    forks_amid_batched_remote_frees(
        &Cohort::<Life>::with_options(&RegionOptions::new(64 << 20)).expect("fixed"),
    );
}

fn forks_amid_batched_remote_frees(a: &Cohort<Life>) {
    let stop = AtomicBool::new(false);
    let swaps = AtomicUsize::new(0);
    let report = Report::new();
    std::thread::scope(|s| {
        let (tx0, rx0) = mpsc::channel::<Vec<(usize, usize)>>();
        let (tx1, rx1) = mpsc::channel::<Vec<(usize, usize)>>();
        for (tx, rx) in [(tx0, rx1), (tx1, rx0)] {
            let (stop, swaps) = (&stop, &swaps);
            s.spawn(move || {
                while !stop.load(Relaxed) {
                    let mine: Vec<_> = (0..200)
                        .map(|i| {
                            let n = SIZES[i % SIZES.len()];
                            (a.malloc(n, Life::Short) as usize, n)
                        })
                        .collect();
                    if tx.send(mine).is_err() {
                        break;
                    }
                    let Ok(theirs) = rx.recv() else { break };
                    for (p, n) in theirs {
                        // SAFETY: the other thread's objects, handed over, freed once.
                        unsafe { a.free(p as *mut u8, n, Life::Short) };
                    }
                    swaps.fetch_add(1, Relaxed);
                }
            });
        }
        // The threads stop on `stop` only: set it when a fork fails too (an assertion here
        // otherwise left the scope waiting for them: a failure became a hang).
        let forks = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            forks_of(a, &swaps, &report)
        }));
        stop.store(true, Relaxed);
        if let Err(panic) = forks {
            std::panic::resume_unwind(panic);
        }
    });
    // The threads' last hand-overs may be unfreed: both threads exited.
    // SAFETY: no other thread uses the instance.
    let v = unsafe { a.verify() };
    assert!(v.is_ok(), "{v:?}");
}

/// [`forks_amid_batched_remote_frees`]' forks: 60 children, each after two more swaps.
fn forks_of(a: &Cohort<Life>, swaps: &AtomicUsize, report: &Report) {
    for round in 0..60 {
        while swaps.load(Relaxed) < round * 2 {
            std::thread::yield_now();
        }
        let child = in_child_reporting(10, report, || {
            let _ = a.stats();
            let _ = a.is_empty();
            let _ = a.compact();
            a.for_each_block(|_| {});
            let p = a.malloc(100, Life::Long);
            assert!(!p.is_null());
            // SAFETY: allocated above, freed once.
            unsafe { a.free(p, 100, Life::Long) };
        });
        let ended = wait(child);
        assert_eq!(ended, Ok(0), "fork {round}: {}", report.message());
    }
}

/// Short-lived threads (each adopts a heap an exited one left, or makes one) free objects
/// the main thread made (remote frees, batched) and exit, 200 of them, four at a time,
/// while a flusher thread runs `stats`, `compact` and `is_empty` without pause. Nothing
/// hangs; every object is freed exactly once (the main thread's later allocations never
/// overlap a live one), and the instance ends empty and consistent.
#[test]
fn threads_exiting_with_pending_frees_race_flushers() {
    threads_exiting_with_pending_frees(&Cohort::<Life>::new());
}

/// As above, in a fixed region.
#[test]
fn threads_exiting_with_pending_frees_race_flushers_in_a_fixed_region() {
    threads_exiting_with_pending_frees(
        &Cohort::<Life>::with_options(&RegionOptions::new(64 << 20)).expect("fixed"),
    );
}

fn threads_exiting_with_pending_frees(a: &Cohort<Life>) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Relaxed) {
                let _ = a.stats();
                let _ = a.compact();
                let _ = a.is_empty();
            }
        });
        // Stops the thread however this test ends (a failed assertion panics here).
        let stop_thread = StopOnDrop(&stop);
        let mut kept: Vec<(usize, usize)> = Vec::new();
        for round in 0..50 {
            let batches: Vec<Vec<(usize, usize)>> = (0..4)
                .map(|t| {
                    (0..150)
                        .map(|i| {
                            let n = SIZES[(i + t) % SIZES.len()];
                            let p = a.malloc(n, Life::Short);
                            assert!(!p.is_null());
                            // SAFETY: n bytes of ours.
                            unsafe { p.write_bytes(0x99, n) };
                            (p as usize, n)
                        })
                        .collect()
                })
                .collect();
            std::thread::scope(|inner| {
                for objects in batches {
                    inner.spawn(move || {
                        for (p, n) in objects {
                            // SAFETY: the main thread's objects, handed over, freed once.
                            unsafe { a.free(p as *mut u8, n, Life::Short) };
                        }
                    });
                }
            });
            // Objects made now must not overlap the ones kept live (a slot freed twice, or
            // a chain pushed twice, would hand one out again).
            for i in 0..40 {
                let n = SIZES[i % SIZES.len()];
                let p = a.malloc(n, Life::Short);
                // SAFETY: n bytes of ours.
                unsafe { p.write_bytes(round as u8, n) };
                kept.push((p as usize, n));
            }
        }
        drop(stop_thread);
        let mut sorted = kept.clone();
        sorted.sort();
        for w in sorted.windows(2) {
            assert!(
                w[0].0 + w[0].1 <= w[1].0,
                "overlapping live objects: {w:x?}"
            );
        }
        for (p, n) in kept {
            // SAFETY: allocated above, freed once.
            unsafe { a.free(p as *mut u8, n, Life::Short) };
        }
    });
    // SAFETY: no other thread uses the instance.
    let v = unsafe { a.verify() };
    assert!(v.is_ok(), "{v:?}");
    assert!(a.is_empty(), "{:?}", a.stats());
}

/// RED-40 (every build; owner: remote, src/remote.rs with fork.rs): the fork's prepare
/// handler takes every batch over (`wants = 1`) and waits its holder out, but a holder's
/// next free still enters: `busy = 1`, it reads `wants`, `busy = 0`, and goes straight to
/// the block. A fork whose copy of the memory is made between those two stores gives the
/// child `busy = 1` in the batch of a thread the child does not have; `unhold_after_fork`
/// gives the batch back but leaves `busy`, so the child's first flush of it (`stats`,
/// `compact`, `is_empty`, `verify`, a release, `for_each_block`) spins in `wait_out` for
/// ever (gdb: `sched_yield <- spin_hint(round=7855716) <- RemoteBatch::wait_out <-
/// RemoteBatch::flush <- Instance::flush_batches <- Cohort::for_each_block <-
/// Cohort::stats`). Made here by two threads freeing each other's objects in tight loops
/// (their batches hold pending chains nearly all the time) while the main thread forks
/// 3000 times; each child, under an alarm, asks for `stats` and allocates. Wanted: the
/// child handler clears `busy` of every batch (no other thread of the child runs), or the
/// prepare handler keeps holders out of `busy` as well. Passes on main (no batches).
/// Exact failure on remote 13cb98e: `Some((832, Err(14), ""))` (fork 832 died of SIGALRM;
/// fork 1812 in another run).
#[test]
fn forks_amid_tight_remote_frees_never_leave_a_batch_busy_in_the_child() {
    forks_amid_tight_remote_frees(&Cohort::<Life>::new(), 3000);
}

/// As above, in a fixed region (its batches in the region's state area).
#[test]
fn forks_amid_tight_remote_frees_in_a_fixed_region_never_leave_a_batch_busy_in_the_child() {
    forks_amid_tight_remote_frees(
        &Cohort::<Life>::with_options(&RegionOptions::new(64 << 20)).expect("fixed"),
        1000,
    );
}

fn forks_amid_tight_remote_frees(a: &Cohort<Life>, forks: usize) {
    let stop = AtomicBool::new(false);
    let frees = AtomicUsize::new(0);
    let failed = std::thread::scope(|s| {
        let (tx0, rx0) = mpsc::sync_channel::<Vec<usize>>(2);
        let (tx1, rx1) = mpsc::sync_channel::<Vec<usize>>(2);
        let mut threads = Vec::new();
        for (tx, rx) in [(tx0, rx1), (tx1, rx0)] {
            let (stop, frees) = (&stop, &frees);
            threads.push(s.spawn(move || {
                while !stop.load(Relaxed) {
                    let mine: Vec<usize> = (0..2000)
                        .map(|_| a.malloc(48, Life::Short) as usize)
                        .collect();
                    if tx.send(mine).is_err() {
                        break;
                    }
                    let Ok(theirs) = rx.recv() else { break };
                    for p in theirs {
                        // SAFETY: the other thread's objects, handed over, freed once.
                        unsafe { a.free(p as *mut u8, 48, Life::Short) };
                        frees.fetch_add(1, Relaxed);
                    }
                }
            }));
        }
        // Stops the threads however this test ends (a failed fork panics here).
        let stop_threads = StopOnDrop(&stop);
        let failed = first_failed_fork(
            forks,
            FORK_CHILD_SECS,
            |round| {
                yield_until(
                    "the threads' remote frees",
                    || frees.load(Relaxed) >= round * 50,
                    || threads.iter().all(|t| t.is_finished()),
                )
            },
            || {
                let _ = a.stats();
                let p = a.malloc(100, Life::Long);
                assert!(!p.is_null());
                // SAFETY: allocated above, freed once.
                unsafe { a.free(p, 100, Life::Long) };
            },
        );
        drop(stop_threads);
        failed
    });
    assert_eq!(
        failed, None,
        "(fork, how the child ended: Err(14) is SIGALRM, a hang)"
    );
}
