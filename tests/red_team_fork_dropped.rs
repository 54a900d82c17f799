//! Red team (session 20): a fork handler registered before cohort's (RED-100's setting)
//! whose `prepare` drops an instance the forking thread holds a heap of: after cohort's
//! `prepare` copied the thread's list of heaps (`ForkingHeaps`), which the child's
//! handler walks (`thread_next`) to tell the forking thread's heaps from the others'.
//!
//! This binary registers its handler from an ELF constructor of a higher priority than
//! cohort's (as `tests/fork_handlers_first.rs`); it acts only while [`DROP`] holds an
//! instance, in a fork child of the test.

#[path = "red_team_common/mod.rs"]
mod red_team_common;

use cohort::Cohort;
use red_team_common::{in_child, wait};
use std::sync::atomic::{AtomicPtr, Ordering::SeqCst};

/// The instance the `prepare` handler drops (null: none).
static DROP: AtomicPtr<Cohort<()>> = AtomicPtr::new(std::ptr::null_mut());
static KEPT: Cohort<()> = Cohort::new();
/// The `prepare` handler makes the thread's first allocation from [`OTHER`] while set.
static JOIN_OTHER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static OTHER: Cohort<()> = Cohort::new();

red_team_common::register_fork_handlers_first!(Some(prepare), None, None);

extern "C" fn prepare() {
    if JOIN_OTHER.swap(false, SeqCst) {
        // A heap the thread joins: its look-up walks the thread's list and releases the
        // heaps of dropped instances it meets.
        let p = OTHER.malloc(64, ());
        // SAFETY: allocated above with this size and class.
        unsafe { OTHER.free(p, 64, ()) };
    }
    let a = DROP.swap(std::ptr::null_mut(), SeqCst);
    if !a.is_null() {
        // SAFETY: a boxed instance (below), dropped once; its allocations were freed.
        drop(unsafe { Box::from_raw(a) });
    }
}

/// A boxed instance the calling thread has a heap of (it allocated and freed once), empty:
/// the newest heap, first on the thread's list.
fn used_instance() -> Box<Cohort<()>> {
    let a = Box::new(Cohort::<()>::new());
    let p = a.malloc(64, ());
    // SAFETY: allocated above with this size and class.
    unsafe { a.free(p, 64, ()) };
    a
}

/// Forks; the child allocates from `KEPT` (not `kept`, live), verifies it and leaves
/// (1 when either failed). Returns the child's pid.
fn fork_checking_kept(kept: *mut u8) -> libc::pid_t {
    // SAFETY: the child allocates, verifies and leaves through `_exit`.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork");
    if child == 0 {
        let q = KEPT.malloc(64, ());
        // SAFETY: the child's only thread.
        let ok = !q.is_null() && q != kept && unsafe { KEPT.verify() }.is_ok();
        // SAFETY: leaves the child.
        unsafe { libc::_exit(i32::from(!ok)) };
    }
    child
}

/// The thread allocates from `KEPT`, then from a boxed instance (its newest heap, first
/// on its list), frees that, and forks with the handler dropping the boxed instance. The
/// fork's child allocates from `KEPT` and verifies it. On lead 18fd27a (debug) the fork's
/// child died of SIGSEGV inside the fork (Err(11); also when it leaves at once after
/// `fork` returns): its handler follows the copied list, whose first heap was the
/// dropped instance's (unmapped).
#[test]
fn an_instance_dropped_inside_the_fork_window_leaves_the_child_whole() {
    let pid = in_child(10, || {
        let kept = KEPT.malloc(64, ());
        let a = used_instance();
        DROP.store(Box::into_raw(a), SeqCst);
        let child = fork_checking_kept(kept);
        assert!(
            DROP.load(SeqCst).is_null(),
            "the handler did not drop the instance"
        );
        assert_eq!(wait(child), Ok(0), "the fork's child (Err(11): SIGSEGV)");
        let r = KEPT.malloc(64, ());
        assert!(!r.is_null());
    });
    assert_eq!(wait(pid), Ok(0), "the test's child");
}

/// Guard: the same with the instance dropped before the fork (no handler acting).
#[test]
fn guard_an_instance_dropped_before_the_fork_leaves_the_child_whole() {
    let pid = in_child(10, || {
        let kept = KEPT.malloc(64, ());
        let a = used_instance();
        drop(a);
        let child = fork_checking_kept(kept);
        assert_eq!(wait(child), Ok(0), "the fork's child");
    });
    assert_eq!(wait(pid), Ok(0), "the test's child");
}

/// Guard, a sibling tried with nothing dropped inside the window: the boxed instance is
/// dropped before the fork (its heap may stay on the thread's list, orphaned, until a
/// look-up meets it), and the handler makes the thread's first allocation from another
/// instance (a join, whose look-up walks the thread's list and releases orphaned heaps),
/// after `prepare` copied the list. Passes on lead c1f793d.
#[test]
fn guard_a_join_inside_the_fork_window_after_an_instance_was_dropped_leaves_the_child_whole() {
    let pid = in_child(10, || {
        let kept = KEPT.malloc(64, ());
        let a = used_instance();
        drop(a);
        JOIN_OTHER.store(true, SeqCst);
        let child = fork_checking_kept(kept);
        assert!(!JOIN_OTHER.load(SeqCst), "the handler did not allocate");
        assert_eq!(wait(child), Ok(0), "the fork's child (Err(11): SIGSEGV)");
    });
    assert_eq!(wait(pid), Ok(0), "the test's child");
}

/// Siblings of RED-105 and RED-106 (lead, session 20) in a child that lacks a region (its
/// caller memory advised `MADV_DONTFORK`): the child's handler rebuilds the thread's list
/// from `prepare`'s copy, which names the heap of an instance dropped inside the fork
/// window (its pool no longer listed) and not a heap made inside it. The child allocates
/// from `KEPT` and verifies it.
#[test]
fn with_a_region_the_child_lacks_an_instance_dropped_or_joined_inside_the_window_leaves_it_whole() {
    for join in [false, true] {
        let pid = in_child(10, move || {
            let region =
                red_team_common::advised_region::<()>(libc::MADV_DONTFORK, false, 16 << 20);
            let r = region.malloc(64, ());
            assert!(!r.is_null());
            let kept = KEPT.malloc(64, ());
            let a = used_instance();
            DROP.store(Box::into_raw(a), SeqCst);
            JOIN_OTHER.store(join, SeqCst);
            let child = fork_checking_kept(kept);
            assert!(DROP.load(SeqCst).is_null() && !JOIN_OTHER.load(SeqCst));
            assert_eq!(wait(child), Ok(0), "the fork's child (Err(11): SIGSEGV)");
        });
        assert_eq!(wait(pid), Ok(0), "join {join}: the test's child");
    }
}
