//! Red-team attacks of session 14 on every path where a block leaves its owner's ordinary
//! allocation (the owner's allocation cursor, kept in the heap's row since session 14, not
//! in the block's header). Each test first makes a **stale head**: a current
//! block whose live objects were all handed out by the allocation fast path (no slow-path
//! event between them, counted through `Stats::events`) after the one slot the slow path
//! handed out was freed again, so a reader of the header alone sees an empty block. Then
//! one path runs (statistics, block reports, `verify`, `compact`, `release_class`, the
//! idle look, a thread's exit, a heap taken over, an explicit join left or moved,
//! `scope_exclusive` over another thread's heap), and the objects must be counted, whole
//! (each filled with a byte of its address) and never handed out again. A test that found
//! a defect is `#[ignore]`d with its number (RED-n), its owner and the exact failure.

mod red_team_cursor_common;

use cohort::{Cohort, Retention};
use red_team_cursor_common::*;
use std::collections::HashSet;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Statistics, block reports and `verify` from the owner and from another thread count a
/// stale head's objects; the owner goes on allocating from its cursor after `verify`
/// (which may write the cursor to the block) with nothing handed out twice.
#[test]
fn every_reader_counts_a_stale_head_and_the_owner_goes_on() {
    let a = Cohort::<Life>::new();
    let mut objs = stale_head(&a, Life::A);
    counted(&a, &objs, true, "the owner's readers");
    std::thread::scope(|s| {
        s.spawn(|| counted(&a, &objs, true, "another thread's readers"));
    });
    // The owner's cursor goes on after verify: more fast-path objects, then a new window.
    for round in 0..4 {
        let more: Vec<usize> = (0..N).map(|_| a.malloc(S, Life::A) as usize).collect();
        more.iter().for_each(|&p| fill(p, S));
        let all: HashSet<usize> = objs.iter().chain(&more).copied().collect();
        assert_eq!(
            all.len(),
            objs.len() + more.len(),
            "round {round}: a slot twice"
        );
        objs.extend(more);
        counted(&a, &objs, true, &format!("round {round}"));
    }
    hands_out_apart(&a, &objs, 3000, "after the rounds");
    free_all(&a, &objs);
    ends_empty(&a);
}

/// `compact` by the owner and by another thread leaves a stale head's block alone: its
/// objects are whole, counted, and not handed out again.
#[test]
fn compact_keeps_a_stale_heads_block() {
    let a = Cohort::<Life>::new();
    let objs = stale_head(&a, Life::A);
    let c = a.compact();
    counted(
        &a,
        &objs,
        true,
        &format!("after the owner's compact ({c:?})"),
    );
    std::thread::scope(|s| {
        s.spawn(|| a.compact());
    });
    counted(&a, &objs, true, "after another thread's compact");
    hands_out_apart(&a, &objs, 3000, "after compact");
    free_all(&a, &objs);
    a.compact();
    ends_empty(&a);
}

/// `release_class` of the stale head's class by another thread leaves it to its owner
/// (counted as left to other threads, no slot freed); of another class by the owner
/// changes nothing; by the owner, frees exactly its objects, and the block serves again.
#[test]
fn release_class_counts_a_stale_head() {
    let a = Cohort::<Life>::new();
    let objs = stale_head(&a, Life::A);
    let other = std::thread::scope(|s| {
        // SAFETY: nothing of class A of this (new) thread is live.
        s.spawn(|| unsafe { a.release_class(Life::A) })
            .join()
            .unwrap()
    });
    assert_eq!(
        other.slots, 0,
        "another thread's release freed slots: {other:?}"
    );
    assert!(
        other.left_to_other_threads >= 1,
        "the owner's block was not left to it: {other:?}"
    );
    counted(&a, &objs, true, "after another thread's release");
    // SAFETY: nothing of class B is live.
    let b = unsafe { a.release_class(Life::B) };
    assert_eq!(b.slots, 0);
    counted(&a, &objs, true, "after the release of class B");
    for round in 0..3 {
        let objs = if round == 0 {
            objs.clone()
        } else {
            stale_head(&a, Life::A)
        };
        // SAFETY: the objects are not used after.
        let r = unsafe { a.release_class(Life::A) };
        assert_eq!(
            r.slots,
            objs.len(),
            "round {round}: the owner's release: {r:?}"
        );
        assert_eq!(
            stats_live(&a, Life::A),
            0,
            "round {round}: live after the release"
        );
        hands_out_apart(&a, &[], 3000, &format!("round {round}: after the release"));
    }
    ends_empty(&a);
}

/// A thread leaves a stale head and exits (its heap handed over): the objects are counted,
/// whole, never handed out to another thread, and freed by it.
#[test]
fn a_stale_head_outlives_its_threads_exit() {
    let a = Arc::new(Cohort::<Life>::new());
    let a2 = a.clone();
    let objs = std::thread::spawn(move || stale_head(&a2, Life::A))
        .join()
        .unwrap();
    counted(&a, &objs, true, "after the owner's exit");
    hands_out_apart(&a, &objs, 3000, "after the owner's exit");
    // Another thread adopts the exited heap (same concurrency group) and allocates.
    std::thread::scope(|s| {
        s.spawn(|| hands_out_apart(&a, &objs, 3000, "a thread taking the heap over"));
    });
    counted(&a, &objs, true, "after the take-over");
    free_all(&a, &objs);
    ends_empty(&a);
}

/// Threads that each leave a stale head and exit, one after another (each adopting the
/// heap the last one left): nothing is handed out twice across them, all counted.
#[test]
fn stale_heads_of_successive_threads_are_all_kept() {
    let a = Arc::new(Cohort::<Life>::new());
    let mut objs: Vec<usize> = Vec::new();
    for t in 0..8 {
        let a2 = a.clone();
        let mine = std::thread::spawn(move || stale_head(&a2, Life::A))
            .join()
            .unwrap();
        objs.extend(mine);
        let set: HashSet<usize> = objs.iter().copied().collect();
        assert_eq!(
            set.len(),
            objs.len(),
            "thread {t}: a live slot handed out again"
        );
        counted(&a, &objs, true, &format!("after thread {t}"));
    }
    free_all(&a, &objs);
    ends_empty(&a);
}

/// An explicit join's stale head: counted while the join lives (from the thread that
/// made it), after the join moves to another thread and goes on allocating, and after it
/// is left; nothing handed out twice.
#[test]
fn a_joins_stale_head_survives_a_move_and_its_leave() {
    let a = Cohort::<Life>::new();
    let j = a.join(7).expect("a heap");
    let objs = stale_head_with(
        &a,
        Life::A,
        || j.malloc(S, Life::A),
        // SAFETY: the setup's own allocations, freed once.
        |p| unsafe { j.free(p, S, Life::A) },
    );
    counted(&a, &objs, true, "the join's stale head");
    let (j, more) = std::thread::scope(|s| {
        s.spawn(move || {
            let more: Vec<usize> = (0..N).map(|_| j.malloc(S, Life::A) as usize).collect();
            more.iter().for_each(|&p| fill(p, S));
            (j, more)
        })
        .join()
        .unwrap()
    });
    let mut all = objs.clone();
    all.extend(&more);
    let set: HashSet<usize> = all.iter().copied().collect();
    assert_eq!(
        set.len(),
        all.len(),
        "the moved join handed a live slot out again"
    );
    counted(&a, &all, true, "after the join moved");
    j.leave();
    counted(&a, &all, true, "after the join left");
    hands_out_apart(&a, &all, 3000, "after the join left");
    free_all(&a, &all);
    ends_empty(&a);
}

/// The allocator's page (`COHORT_PAGE_SIZE`): a page-aligned request's usable size.
fn page(a: &Cohort<Life>) -> usize {
    a.usable_size(std::alloc::Layout::from_size_align(1, 8192).unwrap())
}

/// Drives the calling thread's slow paths (1000-byte objects of class B, freed by another
/// thread so each round collects them) with a short delay until the idle look resets the
/// thread's empty 256-byte block of class B (its resident bytes drop), at most 10 s.
fn until_the_idle_look_runs(a: &Cohort<Life>) {
    // Two pages' worth past the header's page, whatever the page (`COHORT_PAGE_SIZE`).
    let ps: Vec<*mut u8> = (0..3 * page(a) / 256)
        .map(|_| a.malloc(256, Life::B))
        .collect();
    assert!(ps.iter().all(|p| !p.is_null()));
    for &q in &ps {
        // SAFETY: allocated above, freed once.
        unsafe { a.free(q, 256, Life::B) };
    }
    let resident = |a: &Cohort<Life>| {
        a.stats()
            .heads
            .iter()
            .filter(|h| h.stride == 256)
            .map(|h| h.resident_bytes)
            .sum::<usize>()
    };
    let before = resident(a);
    let start = Instant::now();
    while resident(a) >= before && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
        let qs: Vec<usize> = (0..3000)
            .map(|_| a.malloc(1000, Life::B) as usize)
            .collect();
        std::thread::scope(|s| {
            s.spawn(|| {
                for q in qs {
                    // SAFETY: allocated above, freed once.
                    unsafe { a.free(q as *mut u8, 1000, Life::B) };
                }
            });
        });
    }
    assert!(
        resident(a) < before,
        "setup: the idle look did not reset the empty block within 10 s"
    );
}

/// The idle look (which resets the current blocks with no live slot) runs while the
/// thread has a stale head: the head's block keeps its objects, whole and counted.
#[test]
fn the_idle_look_keeps_a_stale_heads_block() {
    let a = Cohort::<Life>::new();
    a.set_retention(Retention {
        delay: Duration::from_millis(40),
        ..Retention::DEFAULT
    });
    // The block's first pages used and freed, so that a reset would have pages to give
    // back past the header's.
    let ballast: Vec<usize> = (0..3 * page(&a) / S)
        .map(|_| a.malloc(S, Life::A) as usize)
        .collect();
    for p in ballast {
        // SAFETY: allocated above, freed once.
        unsafe { a.free(p as *mut u8, S, Life::A) };
    }
    let objs = stale_head(&a, Life::A);
    until_the_idle_look_runs(&a);
    counted(&a, &objs, true, "after the idle look");
    hands_out_apart(&a, &objs, 3000, "after the idle look");
    free_all(&a, &objs);
    ends_empty(&a);
}

/// `scope_exclusive` over a class in which a live (parked) worker thread has a stale
/// head whose objects it freed again: the release acts as the worker's owner (its current
/// block emptied in place); the worker's next allocations and the scope's never share a
/// slot, and the worker's objects of the other class stay whole.
#[test]
fn scope_exclusive_over_a_parked_workers_stale_head() {
    let mut a = Cohort::<Life>::new();
    let (job_tx, job_rx) = mpsc::channel::<usize>();
    let (done_tx, done_rx) = mpsc::channel::<Vec<usize>>();
    // The worker allocates in the instance whose address it is given, between the jobs.
    let worker = std::thread::spawn(move || {
        while let Ok(at) = job_rx.recv() {
            // SAFETY: the test keeps the instance alive, and unused by `&mut`, until the
            // worker answers.
            let a = unsafe { &*(at as *const Cohort<Life>) };
            let objs = stale_head(a, Life::A);
            done_tx.send(objs).unwrap();
        }
    });
    let at = &a as *const Cohort<Life> as usize;
    job_tx.send(at).unwrap();
    let first = done_rx.recv().unwrap();
    // The worker's objects freed here (remote frees), its cursor left as it was.
    free_all(&a, &first);
    let scoped = a.scope_exclusive(Life::A, |a, _h| {
        let objs: Vec<usize> = (0..3 * N).map(|_| a.malloc(S, Life::A) as usize).collect();
        objs.iter().for_each(|&p| fill(p, S));
        assert_eq!(changed(&objs), None);
        objs.len()
    });
    assert_eq!(scoped, 3 * N);
    // The worker allocates again; this thread too; no slot is shared.
    job_tx.send(at).unwrap();
    let second = done_rx.recv().unwrap();
    let mine: Vec<usize> = (0..3 * N).map(|_| a.malloc(S, Life::A) as usize).collect();
    mine.iter().for_each(|&p| fill(p, S));
    let mut all = second.clone();
    all.extend(&mine);
    let set: HashSet<usize> = all.iter().copied().collect();
    assert_eq!(
        set.len(),
        all.len(),
        "a slot handed to the worker and to this thread"
    );
    assert_eq!(changed(&all), None, "an object changed");
    counted(&a, &all, true, "after the scope");
    free_all(&a, &all);
    drop(job_tx);
    worker.join().unwrap();
    ends_empty(&a);
}

/// `scope_exclusive` refuses a class in which a parked worker has a stale head with live
/// objects (a statistics count that missed them would let the scope free them).
#[test]
fn scope_exclusive_refuses_a_class_live_only_in_a_workers_cursor() {
    let mut a = Cohort::<Life>::new();
    let (job_tx, job_rx) = mpsc::channel::<usize>();
    let (done_tx, done_rx) = mpsc::channel::<Vec<usize>>();
    let worker = std::thread::spawn(move || {
        if let Ok(at) = job_rx.recv() {
            // SAFETY: as in `scope_exclusive_over_a_parked_workers_stale_head`.
            let a = unsafe { &*(at as *const Cohort<Life>) };
            done_tx.send(stale_head(a, Life::A)).unwrap();
        }
        // Parked until the channel closes: its heap stays held.
        let _ = job_rx.recv();
    });
    job_tx.send(&a as *const Cohort<Life> as usize).unwrap();
    let objs = done_rx.recv().unwrap();
    let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        a.scope_exclusive(Life::A, |_a, _h| ())
    }));
    assert!(
        refused.is_err(),
        "scope_exclusive ran on a class with {} live objects (a worker's cursor)",
        objs.len()
    );
    counted(&a, &objs, true, "after the refused scope");
    free_all(&a, &objs);
    drop(job_tx);
    worker.join().unwrap();
    ends_empty(&a);
}

/// The owner's current block emptied (every object freed) and given back by `compact`
/// (or kept as is), several times: the head serves again from a real block (each new
/// object is in a block the reports know), nothing twice, consistent.
#[test]
fn compact_of_an_emptied_current_block_and_the_head_serves_again() {
    let a = Cohort::<Life>::new();
    for round in 0..4 {
        let objs = stale_head(&a, Life::A);
        free_all(&a, &objs);
        let c = a.compact();
        ends_empty(&a);
        let next: Vec<usize> = (0..3 * N).map(|_| a.malloc(S, Life::A) as usize).collect();
        for &p in &next {
            assert!(
                a.block_of(p as *const u8, S).is_some(),
                "round {round}: {p:#x} is in no block of the instance (after {c:?})"
            );
            fill(p, S);
        }
        let set: HashSet<usize> = next.iter().copied().collect();
        assert_eq!(
            set.len(),
            next.len(),
            "round {round}: a slot handed out twice"
        );
        counted(&a, &next, true, &format!("round {round}"));
        free_all(&a, &next);
    }
    a.compact();
    ends_empty(&a);
}

/// Frees two of `live` (the owner's objects of class A), then allocates until one of them
/// comes back: the other is then first on the block's allocation list (the local free
/// list moved there whole). Tried until that move was a quick collect (no slow path: the
/// fast path's own, in the cursor when there is one). Returns (the one handed out, now
/// live again, the one still free), removing the latter from `live`.
fn one_left_on_the_allocation_list(a: &Cohort<Life>, live: &mut Vec<usize>) -> (usize, usize) {
    for _ in 0..16 {
        let (x, y) = (live[live.len() - 2], live[live.len() - 1]);
        live.truncate(live.len() - 2);
        for p in [x, y] {
            // SAFETY: live objects of class A, freed once.
            unsafe { a.free(p as *mut u8, S, Life::A) };
        }
        let before = slow_events(a, Life::A);
        let mut taken = Vec::new();
        let got = loop {
            let p = a.malloc(S, Life::A) as usize;
            assert!(
                p != 0 && taken.len() < 100_000,
                "setup: {x:#x}, {y:#x} never served"
            );
            fill(p, S);
            if p == x || p == y {
                break p;
            }
            taken.push(p);
        };
        let quick = slow_events(a, Life::A) == before;
        let other = if got == x { y } else { x };
        live.extend(taken);
        live.push(got);
        if quick {
            return (got, other);
        }
        // The other one back to life before the next try.
        loop {
            let p = a.malloc(S, Life::A) as usize;
            assert!(p != 0, "setup: null");
            fill(p, S);
            live.push(p);
            if p == other {
                break;
            }
        }
    }
    panic!("setup: no quick collect in 16 tries");
}

/// `try_free` promises, in every build, to report a free of a slot that is first on its
/// block's free list. After a collect, the owner's allocation list (which a cursor may
/// keep outside the header) starts with a free slot: `try_free` of it, by the owner and by
/// another thread, is reported and changes nothing; the slot is then served once.
#[test]
fn try_free_reports_the_first_slot_of_the_owners_allocation_list() {
    let a = Cohort::<Life>::new();
    let mut live = stale_head(&a, Life::A);
    let (got, free) = one_left_on_the_allocation_list(&a, &mut live);
    // SAFETY: misuse under test (a double free), which must be reported before anything
    // changes.
    let mine = unsafe { a.try_free(free as *mut u8, S, Life::A) };
    assert!(
        mine.is_err(),
        "the owner's try_free of {free:#x}, first on its allocation list, passed"
    );
    let theirs = std::thread::scope(|s| {
        // SAFETY: as above.
        s.spawn(|| unsafe { a.try_free(free as *mut u8, S, Life::A) }.is_err())
            .join()
            .unwrap()
    });
    assert!(
        theirs,
        "another thread's try_free of {free:#x}, first on its allocation list, passed"
    );
    assert!(live.contains(&got));
    counted(&a, &live, true, "after the reported frees");
    // The free slot is served once more, then never again while live.
    let next: Vec<usize> = (0..200).map(|_| a.malloc(S, Life::A) as usize).collect();
    assert_eq!(
        next.iter().filter(|&&p| p == free).count(),
        1,
        "{free:#x} served"
    );
    next.iter().for_each(|&p| fill(p, S));
    live.extend(&next);
    let set: HashSet<usize> = live.iter().copied().collect();
    assert_eq!(set.len(), live.len(), "a slot handed out twice");
    counted(&a, &live, true, "at the end");
    free_all(&a, &live);
    ends_empty(&a);
}
