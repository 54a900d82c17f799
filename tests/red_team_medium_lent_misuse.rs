//! Red-team attacks of session 15 (second round) on the medium cache's lent run (a free of
//! the run the cache handed out last, checked by its start byte alone while the pool's
//! count of medium blocks given away stays) and the owner's load-and-store take: frees of
//! the lent run with a wrong size or lifetime class, twice, after a release of its class,
//! after `compact`, from another thread (and after that thread's exit), and in a fork child
//! whose new thread takes over the heap of a parent thread that held the run. Every misuse
//! is refused (`try_free` errs), no run is handed out twice, `verify` passes. A test that
//! found a defect is `#[ignore]`d with its number (RED-n), its owner and the exact failure.

use cohort::Cohort;
use std::collections::HashSet;
use test_support::raw_thread;

cohort::lifetime_classes! { enum Life { A, B } }

/// A medium size the heap's cache keeps (16 granules of 2 KiB).
const M: usize = 32 << 10;

/// A run the calling thread's cache hands out (allocated, freed into the cache, taken
/// again: its lent run).
fn lent(a: &Cohort<Life>, life: Life) -> *mut u8 {
    let p = a.malloc(M, life);
    assert!(!p.is_null());
    // SAFETY: live, freed once.
    unsafe { a.free(p, M, life) };
    let q = a.malloc(M, life);
    assert_eq!(q, p, "the cache hands the run out again");
    q
}

/// `n` runs of `M` bytes, each distinct and not `not`.
fn distinct_runs(a: &Cohort<Life>, n: usize, not: &[*mut u8]) -> Vec<*mut u8> {
    let runs: Vec<*mut u8> = (0..n).map(|_| a.malloc(M, Life::A)).collect();
    let set: HashSet<_> = runs.iter().copied().collect();
    assert_eq!(set.len(), n, "a run handed out twice");
    assert!(
        runs.iter().all(|p| !p.is_null() && !not.contains(p)),
        "a run still live handed out"
    );
    runs
}

#[test]
fn the_lent_runs_misuses_are_refused() {
    let a = Cohort::<Life>::new();
    let q = lent(&a, Life::A);
    // SAFETY (every try_free below): misuses tried, refused without a change.
    unsafe {
        for size in [M - 2048, M + 2048, 2 * M] {
            assert!(
                a.try_free(q, size, Life::A).is_err(),
                "{size} B freed a {M} B run"
            );
        }
        assert!(
            a.try_free(q, M, Life::B).is_err(),
            "freed in the wrong class"
        );
        assert!(
            a.try_free(q.add(2048), M, Life::A).is_err(),
            "an inner pointer freed"
        );
        a.try_free(q, M, Life::A).expect("the lent run freed");
        assert!(
            a.try_free(q, M, Life::A).is_err(),
            "the lent run freed twice"
        );
    }
    let runs = distinct_runs(&a, 40, &[]);
    for p in runs {
        // SAFETY: live, freed once.
        unsafe { a.free(p, M, Life::A) };
    }
    // Released with its class: the lent run is freed by the release.
    let r = lent(&a, Life::B);
    // SAFETY: nothing of class B is used after.
    unsafe { a.release_class(Life::B) };
    // SAFETY: misuse tried.
    assert!(
        unsafe { a.try_free(r, M, Life::B) }.is_err(),
        "freed after its class's release"
    );
    let s = a.malloc(M, Life::B);
    assert!(!s.is_null());
    // SAFETY: live, freed once; then the misuse tried.
    unsafe {
        a.free(s, M, Life::B);
        assert!(a.try_free(s, M, Life::B).is_err());
    }
    // Given back by compact, then a stale free.
    let t = lent(&a, Life::A);
    // SAFETY: live, freed once.
    unsafe { a.free(t, M, Life::A) };
    a.compact();
    // SAFETY: misuse tried.
    assert!(
        unsafe { a.try_free(t, M, Life::A) }.is_err(),
        "freed after compact"
    );
    let live = distinct_runs(&a, 40, &[]);
    // SAFETY: single thread.
    unsafe { a.verify() }.expect("verify");
    for p in live {
        // SAFETY: live, freed once.
        unsafe { a.free(p, M, Life::A) };
    }
    assert!(a.is_empty());
}

#[test]
fn the_lent_run_freed_by_another_thread_is_not_freed_again() {
    let a = &Cohort::<Life>::new();
    let q = lent(a, Life::A);
    let addr = q as usize;
    std::thread::scope(|s| {
        s.spawn(|| {
            let q = addr as *mut u8;
            // SAFETY: live, freed once (into this thread's cache); then the misuse.
            unsafe {
                a.free(q, M, Life::A);
                assert!(a.try_free(q, M, Life::A).is_err());
            }
        });
    });
    // The other thread has left its heap (its cache flushed): the run is free.
    // SAFETY: misuse tried.
    assert!(
        unsafe { a.try_free(q, M, Life::A) }.is_err(),
        "freed twice after the thread's exit"
    );
    let runs = distinct_runs(a, 40, &[]);
    // The same with the other thread still running: the run held by its cache.
    let r = runs[39];
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let addr = r as usize;
        s.spawn(move || {
            // A heap of its own first (so the free below goes into its cache).
            let own = a.malloc(64, Life::A);
            // SAFETY: live, freed once each.
            unsafe {
                a.free(own, 64, Life::A);
                a.free(addr as *mut u8, M, Life::A);
            }
            done_tx.send(()).unwrap();
            rx.recv().unwrap();
        });
        done_rx.recv().unwrap();
        // SAFETY: misuse tried.
        let refused = unsafe { a.try_free(r, M, Life::A) }.is_err();
        let more: Vec<*mut u8> = (0..40).map(|_| a.malloc(M, Life::A)).collect();
        tx.send(()).unwrap();
        assert!(refused, "a run another cache holds freed");
        assert!(!more.contains(&r), "a run another cache holds handed out");
        assert_eq!(
            more.iter().collect::<HashSet<_>>().len(),
            40,
            "a run handed out twice"
        );
        for p in more {
            // SAFETY: live, freed once.
            unsafe { a.free(p, M, Life::A) };
        }
    });
    for &p in &runs[..39] {
        // SAFETY: live, freed once.
        unsafe { a.free(p, M, Life::A) };
    }
    // SAFETY: single thread.
    unsafe { a.verify() }.expect("verify");
    assert!(a.is_empty());
}

/// In a fork child, a parent thread's lent run (the thread parked at the fork): the child's
/// thread frees it (an object of the parent's, live in the child), a second free is
/// refused, then a new thread of the child (its join takes the parked thread's heap over,
/// the lent run recorded in it) frees it again (refused) and allocates: no run twice.
/// The child's status: 0 when all holds.
fn child(a: &Cohort<Life>, q: *mut u8) -> i32 {
    let mine: Vec<usize> = (0..20).map(|_| a.malloc(M, Life::A) as usize).collect();
    // SAFETY: live in the child, freed once; then the misuse.
    unsafe {
        a.free(q, M, Life::A);
        if a.try_free(q, M, Life::A).is_ok() {
            return 2;
        }
    }
    let addr = q as usize;
    let theirs = raw_thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: misuse tried.
            if unsafe { a.try_free(addr as *mut u8, M, Life::A) }.is_ok() {
                return None;
            }
            Some(
                (0..40)
                    .map(|_| a.malloc(M, Life::A) as usize)
                    .collect::<Vec<_>>(),
            )
        })
        .join()
        .ok()
        .flatten()
    });
    let Some(theirs) = theirs else {
        return 3;
    };
    let mut seen = HashSet::new();
    if !mine
        .iter()
        .chain(&theirs)
        .all(|&p| p != 0 && seen.insert(p))
    {
        return 4;
    }
    // SAFETY: the child's other thread has ended.
    match unsafe { a.verify() } {
        Ok(_) => 0,
        Err(_) => 5,
    }
}

#[test]
fn a_fork_child_refuses_a_second_free_of_a_parked_threads_lent_run() {
    // Not on a thread's stack (the child's new thread may reuse the parked one's).
    let a: &'static Cohort<Life> = Box::leak(Box::new(Cohort::new()));
    let (tx, rx) = std::sync::mpsc::channel::<usize>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            let q = lent(a, Life::A);
            tx.send(q as usize).unwrap();
            go_rx.recv().unwrap();
            // SAFETY: live, freed once.
            unsafe { a.free(q, M, Life::A) };
        });
        let q = rx.recv().unwrap() as *mut u8;
        let mut statuses = Vec::new();
        for _ in 0..if cfg!(debug_assertions) { 3 } else { 20 } {
            // SAFETY: the child frees, allocates, verifies and leaves with _exit.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0);
            if pid == 0 {
                // SAFETY: plain alarm: a hung child dies.
                unsafe { libc::alarm(20) };
                let code = child(a, q);
                // SAFETY: ends the child without the parent's exit hooks.
                unsafe { libc::_exit(code) };
            }
            let mut status = 0;
            // SAFETY: our child.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            statuses.push(status);
        }
        go_tx.send(()).unwrap();
        assert!(
            statuses.iter().all(|&s| s == 0),
            "the children's statuses (exit code << 8): {statuses:x?}"
        );
    });
}
