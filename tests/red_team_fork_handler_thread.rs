//! Red team (session 20, second round): a fork handler registered before cohort's (RED-100's
//! setting) whose `prepare` (run after cohort's, while cohort holds its locks across the
//! fork) starts a thread that allocates from an instance, and waits for it. Only the forking
//! thread enters the locks held (`fork::fork_caller`); any other thread waits for the
//! `parent` handler, which runs after the handler that waits for it.
//!
//! This binary registers its handler from an ELF constructor of a higher priority than
//! cohort's; it acts only while [`SPAWN`] is set, in a fork child of the test.

#[path = "red_team_common/mod.rs"]
mod red_team_common;

use cohort::Cohort;
use red_team_common::{in_child, register_fork_handlers_first, wait};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

static A: Cohort<()> = Cohort::new();
/// The `prepare` handler starts a thread allocating from [`A`] and joins it (cleared by it).
static SPAWN: AtomicBool = AtomicBool::new(false);

register_fork_handlers_first!(Some(prepare), None, None);

extern "C" fn prepare() {
    if !SPAWN.swap(false, SeqCst) {
        return;
    }
    let t = std::thread::spawn(|| {
        let p = A.malloc(64, ());
        assert!(!p.is_null());
        // SAFETY: allocated above with this size and class.
        unsafe { A.free(p, 64, ()) };
    });
    t.join().expect("the handler's thread");
}

/// The process allocates from `A` (its pool exists), then forks with the handler's thread
/// allocating from `A` (a heap of its own: the pool's lock); the child leaves at once.
/// On lead ae6aaca (debug): the test's child died of SIGALRM (Err(14)): the handler's thread
/// waits for the pool's lock, held across the fork, and the handler for the thread.
#[test]
#[ignore = "RED-110: a thread an earlier prepare fork handler starts and waits for hangs the fork on its first allocation (only the forking thread enters the locks held)"]
fn a_thread_an_earlier_prepare_handler_starts_may_allocate() {
    let pid = in_child(3, || {
        let p = A.malloc(64, ());
        assert!(!p.is_null());
        SPAWN.store(true, SeqCst);
        // SAFETY: the child leaves through `_exit` at once.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork");
        if child == 0 {
            // SAFETY: leaves the child.
            unsafe { libc::_exit(0) };
        }
        assert_eq!(wait(child), Ok(0), "the fork's child");
    });
    assert_eq!(
        wait(pid),
        Ok(0),
        "the test's child (Err(14): SIGALRM, a hang)"
    );
}
