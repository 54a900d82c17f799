//! Red-team attack (session 18) on the remote-free batches' asymmetric fences
//! (`remote/fence.rs`): once `membarrier` is registered (the process's first remote free),
//! a flush of another thread's batch calls it, and "were it refused anyway ... the process
//! stops with a message". A process that sandboxes itself after its start (a seccomp filter
//! refusing the calls it does not expect, as servers do once initialised) refuses it: then
//! any `compact`, `stats`, `verify` or release aborts the process, though nothing was
//! misused. Each case runs in a process of its own (this test binary again): a seccomp
//! filter cannot be removed.

mod common;

use cohort::Cohort;
use common::seccomp::refuse_membarrier;
use std::sync::mpsc;

cohort::lifetime_classes! {
    enum Life { A }
}

const CASE: &str = "COHORT_RED_TEAM_MEMBARRIER_CASE";
const SIZE: usize = 1024;

/// The case: a thread frees another thread's objects (its batch keeps chains: membarrier
/// registered) and stays; the main thread then sandboxes itself and calls `call`, which
/// flushes the batches. Prints "done" when the process lives.
fn case(call: &str) {
    // 'static, so that the freeing thread is joined whole (its exit, which pushes its
    // pending frees, included: a scope's end waits for the closure only).
    let a: &'static Cohort<Life> = Box::leak(Box::new(Cohort::<Life>::new()));
    let objects: Vec<usize> = (0..256).map(|_| a.malloc(SIZE, Life::A) as usize).collect();
    let (freed_tx, freed) = mpsc::channel();
    let (go_tx, go) = mpsc::channel::<()>();
    let freeing = std::thread::spawn(move || {
        for &p in &objects {
            // SAFETY: live objects of `a`, handed over, freed once.
            unsafe { a.free(p as *mut u8, SIZE, Life::A) };
        }
        freed_tx.send(()).unwrap();
        // Stays, its last chains pending, until told.
        go.recv().unwrap();
    });
    freed.recv().unwrap();
    refuse_membarrier();
    match call {
        "compact" => drop(a.compact()),
        "stats" => drop(a.stats()),
        // SAFETY: the other thread is idle (waiting), calling nothing of `a`.
        "verify" => drop(unsafe { a.verify() }),
        _ => fork_and_verify(a),
    }
    go_tx.send(()).unwrap();
    freeing.join().unwrap();
    // The freeing thread pushed its own chains at its exit.
    assert!(a.is_empty());
    println!("done");
}

/// A fork while the other thread's batch holds chains, from a thread that may not call
/// membarrier: the prepare handler cannot be sure the batch is held, so the child empties
/// it (its slots stay in use there) instead of trusting a copy another thread may have been
/// changing; the child verifies and allocates. Panics unless the child exits 0.
fn fork_and_verify(a: &'static Cohort<Life>) {
    // SAFETY: fork; the child calls only cohort and `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // SAFETY: the child's only thread.
        let ok = unsafe { a.verify() }.is_ok();
        let p = a.malloc(SIZE, Life::A);
        // SAFETY: `_exit` has no precondition.
        unsafe { libc::_exit(if ok && !p.is_null() { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the fork child failed: status {status:#x}"
    );
}

/// RED-83: on main 53822bb each call aborts the process ("cohort: membarrier refused after
/// it was registered", SIGABRT) when the calling thread may no longer call membarrier.
#[test]
fn a_sandbox_refusing_membarrier_after_registration_does_not_abort() {
    if let Ok(call) = std::env::var(CASE) {
        case(&call);
        return;
    }
    let test = "a_sandbox_refusing_membarrier_after_registration_does_not_abort";
    let cases = ["compact", "stats", "verify", "fork"].map(|call| (call.into(), call.into()));
    let failed = test_support::failed_cases(test, CASE, cases, &["cohort"]);
    assert!(failed.is_empty(), "{failed:#?}");
}
