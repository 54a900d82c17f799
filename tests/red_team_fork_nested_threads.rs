//! Guard (red team, session 20) of RED-102/103's fix (`FORK_DEPTH`: a fork inside the
//! forking thread's own fork leaves cohort's locks held): forks from two threads at once,
//! each with a nested fork in the `prepare` and the `parent` handler a program registered
//! before cohort's, while a third thread allocates and frees 40 size classes (slow paths under the
//! pool lock). Every fork must return in both processes; every child (outer and
//! nested) allocates from a private instance and a shared region and verifies the private
//! one. Bounded: 4 forks per thread.
//!
//! This binary registers its handlers from an ELF constructor of a higher priority than
//! cohort's (as `tests/fork_handlers_first.rs`); they act only on a thread whose [`NEST`]
//! is set, in a fork child of the test.

#[path = "red_team_common/mod.rs"]
mod red_team_common;

use cohort::Cohort;
use red_team_common::{in_child, wait};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::OnceLock;
use test_support::raw_thread;

thread_local! {
    /// The handlers of this thread's forks fork once more (in `prepare` and `parent`).
    static NEST: Cell<bool> = const { Cell::new(false) };
}

static PRIVATE: Cohort<()> = Cohort::new();
static SHARED: OnceLock<Cohort<()>> = OnceLock::new();
/// The churning thread stops when this is set.
static STOP: AtomicBool = AtomicBool::new(false);

red_team_common::register_fork_handlers_first!(Some(nest), Some(nest), None);

/// A child's work: allocates from both instances, frees, verifies the private one (the
/// child's only thread), leaves with 0 when all went well.
fn in_the_child() -> ! {
    let shared = SHARED.get().expect("the shared region");
    let p = PRIVATE.malloc(200, ());
    let q = shared.malloc(200, ());
    let ok = !p.is_null() && !q.is_null();
    // SAFETY: allocated above with these sizes and classes.
    unsafe {
        PRIVATE.free(p, 200, ());
        shared.free(q, 200, ());
    }
    // SAFETY: the child's only thread.
    let verified = unsafe { PRIVATE.verify() }.is_ok();
    // SAFETY: leaves the child.
    unsafe { libc::_exit(if ok && verified { 0 } else { 3 }) };
}

/// Forks once (when this thread's [`NEST`] is set, cleared meanwhile so the nested fork's
/// own handlers do not fork again); the nested child does its work, the handler waits
/// for it and aborts when it failed.
extern "C" fn nest() {
    if !NEST.with(|n| n.replace(false)) {
        return;
    }
    // SAFETY: the child does its work and leaves through `_exit`; the parent reaps it.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        in_the_child();
    }
    assert!(pid > 0, "the nested fork");
    assert_eq!(wait(pid), Ok(0), "the nested fork's child");
    NEST.with(|n| n.set(true));
}

/// A thread that forks `rounds` times with nesting on; each child does its work.
fn forker(rounds: usize) {
    for _ in 0..rounds {
        NEST.with(|n| n.set(true));
        // SAFETY: the child does its work and leaves through `_exit`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            in_the_child();
        }
        NEST.with(|n| n.set(false));
        assert!(pid > 0, "fork");
        assert_eq!(wait(pid), Ok(0), "the outer fork's child");
    }
}

#[test]
fn guard_nested_forks_from_two_threads_at_once_return_whole() {
    let pid = in_child(20, || {
        SHARED
            .set(Cohort::shared_anonymous(64 << 20).expect("a region"))
            .ok()
            .unwrap();
        let churn = raw_thread::spawn(|| {
            let mut held = Vec::new();
            let mut round = 0usize;
            while !STOP.load(SeqCst) && round < 200_000 {
                held.push(PRIVATE.malloc(16 + 8 * (round % 40), ()) as usize);
                if held.len() > 64 {
                    let p = held.remove(0);
                    let size = 16 + 8 * ((round - 64) % 40);
                    // SAFETY: allocated above with this size (round - 64's), freed once.
                    unsafe { PRIVATE.free(p as *mut u8, size, ()) };
                }
                round += 1;
            }
            held.len()
        });
        let forkers: Vec<_> = (0..2).map(|_| raw_thread::spawn(|| forker(4))).collect();
        for f in forkers {
            f.join().expect("a forking thread");
        }
        STOP.store(true, SeqCst);
        churn.join().expect("the churning thread");
        // SAFETY: the process's threads are done with the instance.
        assert!(unsafe { PRIVATE.verify() }.is_ok(), "verify at the end");
    });
    assert_eq!(wait(pid), Ok(0), "the test's child (Err(14): a fork hung)");
}
