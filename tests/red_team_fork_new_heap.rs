//! Red team (session 20): a fork handler registered before cohort's (RED-100's setting)
//! whose `prepare` makes the forking thread's first allocation in a private instance,
//! which gives the thread a new heap inside the fork window: after cohort's `prepare`
//! copied the thread's list of heaps (`ForkingHeaps`), which the `child` handler uses to
//! tell the forking thread's heaps (kept) from the other threads' (forsaken, taken over
//! by the child's next reap). The child's thread goes on with the new heap; if the
//! handler takes it for another thread's, the child's next reap hands its blocks to the
//! pool while the thread still allocates from them.
//!
//! This binary registers its handler from an ELF constructor of a higher priority than
//! cohort's (as `tests/fork_handlers_first.rs`); it acts only while [`FIRST`] is set, in a
//! fork child of the test.

#[path = "red_team_common/mod.rs"]
mod red_team_common;

use cohort::Cohort;
use red_team_common::{in_child, wait};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use test_support::raw_thread;

/// The `prepare` handler allocates once from [`INSTANCE`] while this is set.
static FIRST: AtomicBool = AtomicBool::new(false);
/// The handler makes a new instance (leaked) and allocates from it, while this is set.
static NEW_INSTANCE: AtomicBool = AtomicBool::new(false);
/// Where the handler's slot is kept (0: none).
static HANDLERS_SLOT: AtomicUsize = AtomicUsize::new(0);
static INSTANCE: Cohort<()> = Cohort::new();
/// The instance the handler made (null: none).
static MADE: std::sync::atomic::AtomicPtr<Cohort<()>> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

red_team_common::register_fork_handlers_first!(Some(prepare), None, None);

extern "C" fn prepare() {
    if FIRST.swap(false, SeqCst) {
        HANDLERS_SLOT.store(INSTANCE.malloc(64, ()) as usize, SeqCst);
    }
    if NEW_INSTANCE.swap(false, SeqCst) {
        let a: &'static Cohort<()> = Box::leak(Box::new(Cohort::new()));
        HANDLERS_SLOT.store(a.malloc(64, ()) as usize, SeqCst);
        MADE.store(std::ptr::from_ref(a).cast_mut(), SeqCst);
    }
}

/// In a fork child of the test: another thread uses the instance (its pool exists, and
/// is on cohort's fork list) and stays; this thread has never allocated from it. It forks
/// with the handler allocating (this thread's new heap); the fork's child allocates from
/// this thread, reaps (`verify`: the forsaken heaps are taken over), allocates more from
/// this thread and from a new one, and checks no slot was handed out twice.
///
/// On lead 18fd27a (debug): the new thread of the child was handed the forking thread's
/// new heap as a forsaken one, while the forking thread still allocated from it: 'the
/// fork's child: panicked at src/heap/cursor.rs:360:13 .. left: 25 right: 0' (its cursor
/// had taken 25 slots: `Row::set_no_current`'s check of a taken-over heap); release-tests:
/// 'verify at the end: .. problem: "used 1984 + free-listed 0 != 9 slots handed out"'.
#[test]
fn a_heap_made_inside_the_fork_window_stays_the_forking_threads_in_the_child() {
    let pid = in_child(10, || {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let other = raw_thread::spawn(move || {
            let p = INSTANCE.malloc(64, ());
            ready_tx.send(()).unwrap();
            stop_rx.recv().unwrap();
            // SAFETY: allocated above with this size and class.
            unsafe { INSTANCE.free(p, 64, ()) };
        });
        ready_rx.recv().unwrap();
        FIRST.store(true, SeqCst);
        fork_and_check(|| &INSTANCE);
        stop_tx.send(()).unwrap();
        other.join().unwrap();
    });
    assert_eq!(wait(pid), Ok(0), "the test's child");
}

/// Forks (the handler allocates as its flag says); the fork's child runs
/// [`check_in_child`] on the instance `which` names there, and must pass.
fn fork_and_check(which: fn() -> &'static Cohort<()>) {
    // SAFETY: the child runs the closure below and leaves through `_exit`.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork");
    if child == 0 {
        std::panic::set_hook(Box::new(|info| {
            let line = format!("the fork's child: {info}\n");
            // SAFETY: writes from a valid buffer to fd 2.
            unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
        }));
        let code = i32::from(std::panic::catch_unwind(|| check_in_child(which())).is_err());
        // SAFETY: leaves the child.
        unsafe { libc::_exit(code) };
    }
    assert!(
        HANDLERS_SLOT.load(SeqCst) != 0,
        "the handler did not allocate"
    );
    assert_eq!(wait(child), Ok(0), "the fork's child");
}

/// The same with an instance the handler makes inside the fork window (its pool joins
/// cohort's fork list then, its locks not held), and its first allocation there. On lead
/// 18fd27a (debug): the same panic at src/heap/cursor.rs:360.
#[test]
fn a_heap_of_an_instance_made_inside_the_fork_window_stays_the_forking_threads_in_the_child() {
    let pid = in_child(10, || {
        NEW_INSTANCE.store(true, SeqCst);
        fork_and_check(|| {
            // SAFETY: set by the handler to a leaked instance before the fork.
            unsafe { &*MADE.load(SeqCst) }
        });
    });
    assert_eq!(wait(pid), Ok(0), "the test's child");
}

/// The fork's child: see the tests. `a` is the instance the handler allocated from.
fn check_in_child(a: &'static Cohort<()>) {
    let mut live: Vec<usize> = vec![HANDLERS_SLOT.load(SeqCst)];
    live.extend((0..8).map(|_| a.malloc(64, ()) as usize));
    // SAFETY: the child's only thread.
    let verified = unsafe { a.verify() };
    assert!(verified.is_ok(), "verify in the child: {verified:?}");
    live.extend((0..2000).map(|_| a.malloc(64, ()) as usize));
    let theirs: Vec<usize> =
        raw_thread::spawn(move || (0..2000).map(|_| a.malloc(64, ()) as usize).collect())
            .join()
            .unwrap();
    live.extend(theirs);
    let mut seen = HashSet::new();
    let twice: Vec<&usize> = live.iter().filter(|p| !seen.insert(**p)).collect();
    assert!(
        twice.is_empty(),
        "slots handed out twice in the child: {:x?}",
        &twice[..twice.len().min(8)]
    );
    // SAFETY: the child's only thread now.
    let verified = unsafe { a.verify() };
    assert!(verified.is_ok(), "verify at the end: {verified:?}");
}
