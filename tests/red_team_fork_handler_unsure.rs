//! Red team (session 20, second round): RED-104's fix where `membarrier` is refused. A fork
//! handler registered before cohort's (RED-100's setting) asks for the statistics,
//! compacts or verifies inside the fork while another thread's batch holds chains and the
//! forking thread may not call `membarrier` (a seccomp filter installed after cohort
//! registered it): cohort's `prepare` could not be sure it holds that batch
//! (`FORK_UNSURE`), so the handler's flush of it is refused, and the child empties it. The
//! fork returns, the child verifies and allocates, the parent verifies.
//!
//! This binary registers its handler from an ELF constructor of a higher priority than
//! cohort's; it acts only while [`CALL`] names a call, in a fork child of the test.

#[path = "red_team_common/mod.rs"]
mod red_team_common;

use cohort::Cohort;
use red_team_common::{in_child, register_fork_handlers_first, seccomp, wait};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc;
use test_support::raw_thread;

static A: Cohort<()> = Cohort::new();
const SIZE: usize = 1024;
/// What the `prepare` handler calls (0: nothing).
static CALL: AtomicUsize = AtomicUsize::new(0);
const STATS: usize = 1;
const COMPACT: usize = 2;
const VERIFY: usize = 3;

register_fork_handlers_first!(Some(prepare), None, None);

extern "C" fn prepare() {
    match CALL.swap(0, SeqCst) {
        STATS => drop(std::hint::black_box(A.stats())),
        COMPACT => drop(std::hint::black_box(A.compact())),
        // SAFETY: the other thread waits, calling nothing of `A`.
        VERIFY => drop(std::hint::black_box(unsafe { A.verify() })),
        _ => {}
    }
}

/// A thread frees 256 of the main thread's objects (its batch keeps chains) and waits; the
/// main thread refuses itself `membarrier`, then forks with the handler calling `call`.
/// The child verifies, allocates and leaves; the parent lets the thread end, verifies and
/// finds the instance empty.
fn fork_with_the_handler_calling(call: usize) {
    let (go_tx, freeing) = frees_pending_on_another_thread();
    seccomp::refuse_membarrier();
    CALL.store(call, SeqCst);
    // SAFETY: the child calls only cohort and `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // SAFETY: the child's only thread.
        let verified = unsafe { A.verify() };
        let p = A.malloc(SIZE, ());
        // SAFETY: leaves the child.
        unsafe { libc::_exit(i32::from(verified.is_err() || p.is_null())) };
    }
    assert_eq!(CALL.load(SeqCst), 0, "the handler did not run");
    assert_eq!(
        wait(pid),
        Ok(0),
        "the fork's child (Ok(1): verify or malloc failed)"
    );
    go_tx.send(()).unwrap();
    freeing.join().unwrap();
    // After the thread's exit (which pushed its chains): not before, RED-113.
    // SAFETY: the only thread left.
    let verified = unsafe { A.verify() };
    assert!(verified.is_ok(), "the parent's verify: {verified:?}");
    assert!(A.is_empty(), "the thread's chains, pushed at its exit");
}

/// A thread frees 256 of the main thread's objects (its batch keeps chains) and waits
/// until told (the sender returned), then ends (joined through the handle).
fn frees_pending_on_another_thread() -> (mpsc::Sender<()>, raw_thread::JoinHandle<()>) {
    let objects: Vec<usize> = (0..256).map(|_| A.malloc(SIZE, ()) as usize).collect();
    let (freed_tx, freed) = mpsc::channel();
    let (go_tx, go) = mpsc::channel::<()>();
    let freeing = raw_thread::spawn(move || {
        for &p in &objects {
            // SAFETY: live objects of `A`, handed over, freed once.
            unsafe { A.free(p as *mut u8, SIZE, ()) };
        }
        freed_tx.send(()).unwrap();
        go.recv().unwrap();
    });
    freed.recv().unwrap();
    (go_tx, freeing)
}

/// With no fork: the main thread, refused `membarrier`, verifies while the other thread's
/// batch holds chains (its frees left to it: CHANGELOG, "no longer aborts ... in verify").
/// In checked mode (debug builds, the `checked` feature) the slots of those chains are
/// reported as damage: on lead ae6aaca (debug) 'verify: Err(VerifyError { .., size_class:
/// Some(130), .., problem: "slot at offset 0x3e400 is live but its checked-mode live bit
/// says free" })'; passes in release-tests (no live bits). Also after a fork, in the parent.
#[test]
fn verify_where_membarrier_is_refused_with_frees_pending_on_another_thread() {
    let pid = in_child(10, || {
        let (go_tx, freeing) = frees_pending_on_another_thread();
        seccomp::refuse_membarrier();
        // SAFETY: the other thread waits, calling nothing of `A`.
        let verified = unsafe { A.verify() };
        go_tx.send(()).unwrap();
        freeing.join().unwrap();
        assert!(verified.is_ok(), "verify: {verified:?}");
    });
    assert_eq!(wait(pid), Ok(0), "the test's child");
}

/// Guard: passes on lead ae6aaca (debug).
#[test]
fn guard_an_earlier_prepare_handler_flushing_where_membarrier_is_refused() {
    let ended: Vec<_> = [0, STATS, COMPACT, VERIFY]
        .into_iter()
        .map(|call| {
            (
                call,
                wait(in_child(10, || fork_with_the_handler_calling(call))),
            )
        })
        .collect();
    assert!(
        ended.iter().all(|(_, e)| *e == Ok(0)),
        "(call: 1 stats, 2 compact, 3 verify; how the test's child ended, Err(14): a hang): \
         {ended:?}"
    );
}
