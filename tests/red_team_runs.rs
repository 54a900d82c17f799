//! Red-team attacks of session 8 on large allocations as runs of a shared region's units
//! and on promotion across processes: two processes freeing one run at once, a process
//! killed (-9) while it carves and gives back runs, promoted slots freed by another
//! process with right and wrong sizes.

mod red_team_common;

use cohort::Cohort;
use red_team_common::*;
use std::sync::atomic::Ordering::Relaxed;

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

const MIB: usize = 1 << 20;
const UNIT: usize = 2 * MIB;

/// A run of one unit, above every small and medium size.
const ONE_UNIT: usize = UNIT - 4096;

/// Two processes free the same runs at the same time (a double free across processes):
/// each run is freed exactly once, the other free is reported and changes nothing, and the
/// region ends empty and consistent.
#[test]
fn a_run_freed_by_two_processes_at_once_is_freed_once() {
    isolated(120, |report| {
        const RUNS: usize = 120;
        let a = Cohort::<Life>::shared_anonymous(512 * MIB).expect("a shared region");
        let runs: Vec<usize> = (0..RUNS)
            .map(|i| {
                let p = a.malloc(ONE_UNIT, Life::Long);
                assert!(!p.is_null() && a.in_region(p), "run {i}");
                // SAFETY: one byte of ours.
                unsafe { p.write(i as u8) };
                p as usize
            })
            .collect();
        let words = shared_words(2 * RUNS + 2);
        let go = &words[2 * RUNS];
        let mut children = Vec::new();
        for c in 0..2 {
            let runs = &runs;
            let a = &a;
            children.push(in_child_reporting(60, report, move || {
                words[2 * RUNS + 1].fetch_add(1, Relaxed);
                while go.load(Relaxed) == 0 {
                    std::hint::spin_loop();
                }
                for (i, &p) in runs.iter().enumerate() {
                    // SAFETY: a live run of the parent, or (the other process won) freed
                    // already: then reported, nothing changed.
                    if unsafe { a.try_free(p as *mut u8, ONE_UNIT, Life::Long) }.is_ok() {
                        words[2 * i + c].store(1, Relaxed);
                    }
                }
            }));
        }
        while words[2 * RUNS + 1].load(Relaxed) < 2 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        go.store(1, Relaxed);
        for c in children {
            wait_ok(c, report, "a freeing process");
        }
        let twice: Vec<usize> = (0..RUNS)
            .filter(|&i| words[2 * i].load(Relaxed) + words[2 * i + 1].load(Relaxed) != 1)
            .collect();
        if !twice.is_empty() {
            report.fail(&format!(
                "runs not freed exactly once (freed by both or neither): {twice:?}"
            ));
        }
        a.reap_dead_processes();
        if !a.is_empty() {
            report.fail(&format!("not empty: {:?}", a.stats()));
        }
        // SAFETY: the children have exited.
        if let Err(e) = unsafe { a.verify() } {
            report.fail(&format!("verify: {e}"));
        }
        // Every unit serves again: one run of the whole capacity less a unit.
        let big = a.malloc(500 * MIB, Life::Short);
        if big.is_null() {
            report.fail("a 500 MiB run after the frees: null");
        }
    });
}

/// A process carving, resizing and giving back runs (and small blocks) is killed at random
/// points, over and over; after each kill the survivor reaps it, verifies the region,
/// releases the dead process's class (its run, if it held one, goes) and allocates the
/// whole capacity as one run: no unit is lost to a half-made or half-freed run.
#[test]
fn runs_survive_kill_9_in_the_middle_of_carves_and_give_backs() {
    isolated(240, |report| {
        const CAP: usize = 64 * MIB;
        let a = Cohort::<Life>::shared_anonymous(CAP).expect("a shared region");
        let words = shared_words(2);
        for round in 0..25u64 {
            words[0].store(0, Relaxed);
            let child = in_child(60, || {
                let mut seed = round * 0x9e37_79b9 + 1;
                loop {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let units = 1 + (seed % 5) as usize;
                    let size = units * UNIT - (seed as usize % 3) * 4096;
                    let p = a.malloc(size, Life::Short);
                    if !p.is_null() {
                        // SAFETY: size bytes of ours.
                        unsafe { p.write(1) };
                        // SAFETY: live, resized with its size.
                        let q = unsafe { a.remalloc(p, size, size - 4096, Life::Short) };
                        let s = if q.is_null() { size } else { size - 4096 };
                        let q = if q.is_null() { p } else { q };
                        let small = a.malloc(100, Life::Short);
                        // SAFETY: live, freed once each.
                        unsafe {
                            a.free(q, s, Life::Short);
                            a.free(small, 100, Life::Short);
                        }
                    }
                    words[0].fetch_add(1, Relaxed);
                }
            });
            until(
                &words[0],
                20 + (round * 37) % 400,
                child,
                report,
                "the carving child",
            );
            kill9(child);
            a.reap_dead_processes();
            // SAFETY: the child is dead; no other process uses the region.
            if let Err(e) = unsafe { a.verify() } {
                report.fail(&format!("round {round}: verify after kill -9: {e}"));
            }
            // SAFETY: the dead process's Short allocations are nobody's now.
            let _ = unsafe { a.release_class(Life::Short) };
            let s = a.stats();
            if s.large_allocations != 0 {
                report.fail(&format!(
                    "round {round}: {} runs left after release_class",
                    s.large_allocations
                ));
            }
            let big = a.malloc(CAP - UNIT, Life::Long);
            if big.is_null() {
                report.fail(&format!(
                    "round {round}: a run of all units but one is null after the kill: {s:?}"
                ));
            }
            // SAFETY: allocated above, freed once.
            unsafe { a.free(big, CAP - UNIT, Life::Long) };
        }
        // SAFETY: no other process uses the region.
        if let Err(e) = unsafe { a.verify() } {
            report.fail(&format!("at the end: {e}"));
        }
    });
}

/// In a full shared region, a process's requests are promoted into a larger class; another
/// process frees them: with the request's size (right, once), with the block's size or
/// another class (reported, nothing freed); the region ends empty with no promoted slot.
#[test]
fn promoted_slots_are_checked_and_freed_by_another_process() {
    isolated(120, |report| {
        let a = Cohort::<Life>::shared_anonymous(16 * MIB).expect("a shared region");
        // One block of 32-byte slots of Short holding a few; the rest of the region full
        // of 16-byte slots of Short (try_malloc never promotes).
        let bigs: Vec<usize> = (0..8).map(|_| a.malloc(32, Life::Short) as usize).collect();
        let mut smalls = Vec::new();
        loop {
            let p = a.try_malloc(16, Life::Short);
            if p.is_null() {
                break;
            }
            smalls.push(p as usize);
        }
        let promoted: Vec<usize> = (0..200)
            .map(|i| {
                let p = a.malloc(16, Life::Short);
                if p.is_null() {
                    report.fail(&format!("promotion {i}: null"));
                }
                // SAFETY: 16 bytes of ours.
                unsafe { p.write_bytes(i as u8, 16) };
                p as usize
            })
            .collect();
        let promoted_live =
            |a: &Cohort<Life>| -> usize { a.stats().heads.iter().map(|h| h.promoted).sum() };
        if promoted_live(&a) != 200 {
            report.fail(&format!("{} promoted, not 200", promoted_live(&a)));
        }
        let child = in_child_reporting(60, report, || {
            for (i, &p) in promoted.iter().enumerate() {
                let p = p as *mut u8;
                // SAFETY: 16 bytes of a live allocation.
                assert!(unsafe { std::slice::from_raw_parts(p, 16) }
                    .iter()
                    .all(|&b| b == i as u8));
                // SAFETY: misuse (reported, nothing freed), then the right free, then a
                // double free (reported).
                unsafe {
                    assert!(a.try_free(p, 32, Life::Short).is_err(), "the block's size");
                    assert!(a.try_free(p, 16, Life::Long).is_err(), "another class");
                    assert!(a.try_free(p, 48, Life::Short).is_err(), "a third size");
                    a.try_free(p, 16, Life::Short)
                        .expect("the request's own size");
                    assert!(a.try_free(p, 16, Life::Short).is_err(), "twice");
                }
            }
            assert_eq!(promoted_live(&a), 0, "every promoted slot freed");
        });
        wait_ok(child, report, "the freeing process");
        a.reap_dead_processes();
        for &p in &bigs {
            // SAFETY: live, freed once.
            unsafe { a.free(p as *mut u8, 32, Life::Short) };
        }
        for &p in &smalls {
            // SAFETY: live, freed once.
            unsafe { a.free(p as *mut u8, 16, Life::Short) };
        }
        if !a.is_empty() || promoted_live(&a) != 0 {
            report.fail(&format!("not empty: {:?}", a.stats()));
        }
        // SAFETY: the child has exited.
        if let Err(e) = unsafe { a.verify() } {
            report.fail(&format!("verify: {e}"));
        }
    });
}

/// RED-19's form for allocations that belong to no heap: runs of a shared region's units
/// (large sizes) and, with medium blocks, medium sizes. `scope_exclusive` (safe, `&mut`)
/// excludes this process only; at its end it releases every run of the class, another
/// process's live ones included, which this process then reuses: the other process's
/// objects are overwritten.
#[test]

fn scope_exclusive_never_frees_another_processs_large_or_medium_objects() {
    isolated(60, |report| {
        const SIZES: [usize; 2] = [100_000, 3 * MIB];
        let mut a = Cohort::<Life>::shared_anonymous(64 * MIB).expect("a shared region");
        let flags = shared_words(2);
        let (in_scope, allocated) = (&flags[0], &flags[1]);
        let other = {
            let a = &a;
            in_child_reporting(30, report, || {
                while in_scope.load(Relaxed) == 0 {
                    std::hint::spin_loop();
                }
                let objs: Vec<(*mut u8, usize)> = (0..6)
                    .map(|i| {
                        let n = SIZES[i % 2];
                        let p = a.malloc(n, Life::Short);
                        assert!(!p.is_null());
                        // SAFETY: fresh, n bytes.
                        unsafe { p.write_bytes(i as u8 + 1, n) };
                        (p, n)
                    })
                    .collect();
                allocated.store(1, Relaxed);
                while in_scope.load(Relaxed) != 2 {
                    std::hint::spin_loop();
                }
                for (i, &(p, n)) in objs.iter().enumerate() {
                    // SAFETY: live, n bytes.
                    let bytes = unsafe { std::slice::from_raw_parts(p, n) };
                    let bad = bytes.iter().position(|&b| b != i as u8 + 1);
                    assert_eq!(
                        bad, None,
                        "object {i} ({n} B) of this process was overwritten after another \
                         process's scope_exclusive"
                    );
                }
                for (p, n) in objs {
                    // SAFETY: allocated above, freed once.
                    unsafe { a.free(p, n, Life::Short) };
                }
            })
        };
        // Refused (a panic naming it: `&mut` cannot keep the other process out), or run
        // without freeing the other process's objects.
        in_scope.store(1, Relaxed);
        let scoped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            a.scope_exclusive(Life::Short, |_, _h| {
                while allocated.load(Relaxed) == 0 {
                    std::hint::spin_loop();
                }
            })
        }));
        if let Err(e) = scoped {
            let msg = panic_message(&*e);
            assert!(msg.contains("scope_exclusive"), "another panic: {msg}");
            while allocated.load(Relaxed) == 0 {
                std::hint::spin_loop();
            }
        }
        let mine: Vec<(*mut u8, usize)> = (0..6)
            .map(|i| (a.malloc(SIZES[i % 2], Life::Short), SIZES[i % 2]))
            .collect();
        for &(p, n) in &mine {
            if !p.is_null() {
                // SAFETY: fresh, n bytes.
                unsafe { p.write_bytes(0xee, n) };
            }
        }
        in_scope.store(2, Relaxed);
        wait_ok(other, report, "the other process");
    });
}
