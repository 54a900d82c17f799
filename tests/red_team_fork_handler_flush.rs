//! Red team (session 20): fork handlers a program registered before cohort's (RED-100's
//! setting: another library's constructor, or a program's under `LD_PRELOAD`) that call
//! what flushes every thread's pending remote frees: the statistics (`stats`,
//! `for_each_block`, `is_empty`), `compact`. RED-100's fix lets such a handler allocate
//! (the forking thread enters the locks `prepare` holds), but `prepare` also holds every
//! registered heap's batch (`RemoteBatch::hold_for_fork`: `flushing = FORK_HELD`, `wants =
//! 1`), and a flush waits for neither: another heap's batch with frees pending is taken
//! over with a compare-and-swap from 0 (`RemoteBatch::take_over`), the caller's own is
//! entered and waited for while `wants != 0` (`RemoteBatch::flush_own(wait)`). Both spin
//! until the `parent` handler, which runs after.
//!
//! This binary registers its handlers from an ELF constructor of a higher priority than
//! cohort's (as `tests/fork_handlers_first.rs`); they act only while [`CALL`] names one,
//! in a fork child of the test.

#[path = "red_team_common/mod.rs"]
mod red_team_common;

use cohort::Cohort;
use red_team_common::{in_child, wait};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc;
use test_support::raw_thread;

/// Which handler calls [`Cohort::stats`] (0: none).
static CALL: AtomicUsize = AtomicUsize::new(0);
const PREPARE: usize = 1;
const PARENT: usize = 2;
const CHILD: usize = 3;
/// The `prepare` handler drops [`JOIN`] (instead of asking for the statistics).
const DROP_JOIN: usize = 4;
/// A join the `prepare` handler drops (null: none).
static JOIN: AtomicPtr<cohort::Join<'static, ()>> = AtomicPtr::new(core::ptr::null_mut());
/// The instance the handlers ask.
static INSTANCE: AtomicPtr<Cohort<()>> = AtomicPtr::new(core::ptr::null_mut());

red_team_common::register_fork_handlers_first!(Some(prepare), Some(parent), Some(child));

fn ask(which: usize) {
    if CALL.load(SeqCst) != which {
        return;
    }
    // SAFETY: set to a live instance (leaked) before CALL.
    let a = unsafe { &*INSTANCE.load(SeqCst) };
    let stats = a.stats();
    std::hint::black_box(stats);
}

extern "C" fn prepare() {
    ask(PREPARE);
    let join = JOIN.swap(core::ptr::null_mut(), SeqCst);
    if CALL.load(SeqCst) == DROP_JOIN && !join.is_null() {
        // SAFETY: a boxed join (below), dropped once.
        drop(unsafe { Box::from_raw(join) });
    }
}
extern "C" fn parent() {
    ask(PARENT);
}
extern "C" fn child() {
    if CALL.load(SeqCst) == CHILD {
        // The fork's child has no alarm of its parent's: a hang here must end too (before
        // the parent's, which waits for it).
        // SAFETY: alarm has no preconditions.
        unsafe { libc::alarm(2) };
    }
    ask(CHILD);
}

/// Forks with the handler `which` asking for the statistics; the fork's child leaves at
/// once. Panics unless it returns in both processes.
fn fork_asking(which: usize) {
    CALL.store(which, SeqCst);
    // SAFETY: the child leaves through `_exit` at once.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork");
    if child == 0 {
        // SAFETY: leaves the child.
        unsafe { libc::_exit(0) };
    }
    CALL.store(0, SeqCst);
    assert_eq!(
        wait(child),
        Ok(0),
        "the fork's child (Err(14): SIGALRM, it hung)"
    );
}

/// In a fork child of the test: a private instance; another thread allocates 64 slots
/// and stays (its heap owns their block); this thread frees them (remote frees: pending
/// in its batch), then forks with the handler `which` asking for the statistics. The fork
/// must return in both processes.
fn fork_with_pending_frees(which: usize) {
    let pid = in_child(30, || {
        let a: &'static Cohort<()> = Box::leak(Box::new(Cohort::new()));
        INSTANCE.store(core::ptr::from_ref(a).cast_mut(), SeqCst);
        let (to_main, from_holder) = mpsc::channel::<Vec<usize>>();
        let (to_holder, from_main) = mpsc::channel::<()>();
        let holder = raw_thread::spawn(move || {
            let slots = (0..64).map(|_| a.malloc(64, ()) as usize).collect();
            to_main.send(slots).unwrap();
            from_main.recv().unwrap();
        });
        let slots = from_holder.recv().unwrap();
        // The main thread's own heap (its batch is registered with it).
        let own = a.malloc(64, ());
        for &p in &slots {
            // SAFETY: the other thread's live slots, freed once.
            unsafe { a.free(p as *mut u8, 64, ()) };
        }
        fork_asking(which);
        to_holder.send(()).unwrap();
        holder.join().unwrap();
        // SAFETY: live, freed once.
        unsafe { a.free(own, 64, ()) };
        assert!(
            a.is_empty(),
            "live objects after the fork: {:?}",
            a.stats().classes
        );
    });
    assert_eq!(
        wait(pid),
        Ok(0),
        "the test's child (Err(14): SIGALRM, the fork hung in the handler's flush)"
    );
}

#[test]
fn an_earlier_prepare_handler_may_ask_for_statistics() {
    fork_with_pending_frees(PREPARE);
}

#[test]
fn an_earlier_parent_handler_may_ask_for_statistics() {
    fork_with_pending_frees(PARENT);
}

#[test]
fn an_earlier_child_handler_may_ask_for_statistics() {
    fork_with_pending_frees(CHILD);
}

/// Guard: the same with no handler asking (the test's own scaffolding).
#[test]
fn guard_a_fork_with_pending_remote_frees_returns() {
    fork_with_pending_frees(0);
}

/// Sibling (lead, session 20): the pending frees are another thread's (its batch holds the
/// main thread's slots and it idles), so a handler's flush takes that batch over
/// (`RemoteBatch::flush`) rather than pushing its own. In a fork child of the test: the
/// fork returns in both processes with each handler asking, and everything is freed after.
#[test]
fn an_earlier_handler_may_ask_for_statistics_while_another_threads_batch_holds_frees() {
    for which in [PREPARE, PARENT, CHILD] {
        let pid = in_child(30, move || {
            let a: &'static Cohort<()> = Box::leak(Box::new(Cohort::new()));
            INSTANCE.store(core::ptr::from_ref(a).cast_mut(), SeqCst);
            let slots: Vec<usize> = (0..64).map(|_| a.malloc(64, ()) as usize).collect();
            let (freed, from_freer) = mpsc::channel::<()>();
            let (to_freer, go) = mpsc::channel::<()>();
            let freer = raw_thread::spawn(move || {
                // Its own heap first, so its batch is registered.
                let mine = a.malloc(64, ());
                for &p in &slots {
                    // SAFETY: the main thread's live slots, handed over, freed once.
                    unsafe { a.free(p as *mut u8, 64, ()) };
                }
                freed.send(()).unwrap();
                go.recv().unwrap();
                // SAFETY: its own live slot.
                unsafe { a.free(mine, 64, ()) };
            });
            from_freer.recv().unwrap();
            fork_asking(which);
            to_freer.send(()).unwrap();
            freer.join().unwrap();
            assert!(a.is_empty(), "live objects: {:?}", a.stats().classes);
        });
        assert_eq!(
            wait(pid),
            Ok(0),
            "handler {which}: the test's child (Err(14): SIGALRM, the fork hung)"
        );
    }
}

/// A sibling: the `prepare` handler drops a `Join` (its leave pushes the join's batch as
/// its holder, `RemoteBatch::flush_own`, which waited while `prepare` held the batch),
/// with nothing pending. On lead 18fd27a: the test's child died of SIGALRM.
#[test]
fn an_earlier_prepare_handler_may_drop_a_join() {
    let pid = in_child(30, || {
        let a: &'static Cohort<()> = Box::leak(Box::new(Cohort::new()));
        let join = Box::new(a.join(0).expect("a join"));
        let p = join.malloc(64, ());
        // SAFETY: allocated above with this size and class, freed once.
        unsafe { join.free(p, 64, ()) };
        JOIN.store(Box::into_raw(join), SeqCst);
        fork_asking(DROP_JOIN);
        assert!(
            JOIN.load(SeqCst).is_null(),
            "the handler did not drop the join"
        );
        let q = a.malloc(64, ());
        assert!(!q.is_null());
    });
    assert_eq!(
        wait(pid),
        Ok(0),
        "the test's child (Err(14): SIGALRM, the fork hung)"
    );
}
