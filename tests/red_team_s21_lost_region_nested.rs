//! Red team (session 21): a fork made inside a `child` handler registered before cohort's
//! (RED-103's setting: it runs in the outer fork's child C before cohort's repair) by a
//! process with a region in caller memory that C does not get (advised `MADV_DONTFORK`, or
//! `MADV_WIPEONFORK`: RED-81's lost region) whose heap is the first on the forking thread's
//! list. The nested fork's `prepare` in C reads the thread's list (`own_heaps`) before it
//! takes the instance list's lock, whose take runs C's repair (`fork_caller`); the repair
//! rebuilds the list without the lost region's heap (`keep_after_fork`), and `prepare`
//! then walks the list it read before, from the lost heap (`copy_forking_heaps`,
//! `on_thread_list`).

#[path = "red_team_common/mod.rs"]
mod red_team_common;

use cohort::Cohort;
use red_team_common::register_fork_handlers_first;
use red_team_common::{advised_region, fork_a_child_that_leaves, in_child, wait};
use std::sync::atomic::{AtomicU8, Ordering::SeqCst};

/// Whether the earlier `child` handler forks (cleared by it).
static NEST: AtomicU8 = AtomicU8::new(0);
static OTHER: Cohort<()> = Cohort::new();

/// Forks once when [`NEST`] is set: the nested child leaves at once, the handler waits
/// for it.
extern "C" fn child_first() {
    if NEST.swap(0, SeqCst) == 1 {
        assert_eq!(fork_a_child_that_leaves(), Ok(0), "the nested child");
    }
}

register_fork_handlers_first!(None, None, Some(child_first));

/// In a child of the test: another instance allocates, then a region advised `advice`
/// (its heap comes first on the thread's list); a fork with the nested fork in the earlier
/// `child` handler; C then allocates from the other instance. How the test's child ended.
fn nested_fork_in_a_child_handler(advice: libc::c_int, shared: bool) -> red_team_common::Ended {
    let pid = in_child(30, || {
        assert!(!OTHER.malloc(48, ()).is_null());
        let region = advised_region::<()>(advice, shared, 16 << 20);
        assert!(!region.malloc(64, ()).is_null());
        NEST.store(1, SeqCst);
        let c = in_child(30, || assert!(!OTHER.malloc(64, ()).is_null()));
        assert_eq!(
            wait(c),
            Ok(0),
            "C, the outer fork's child (Err(6): it aborted)"
        );
        // The region stays this process's (its drop would unmap caller memory).
        std::mem::forget(region);
    });
    wait(pid)
}

/// For each advice (private and shared `MADV_DONTFORK`, private `MADV_WIPEONFORK`),
/// [`nested_fork_in_a_child_handler`]. On lead 960396d (and before: `prepare` is unchanged
/// since) C dies of SIGABRT (Err(6)) for each of the three: 'panicked at
/// src/heap.rs:293:18' (a null pointer dereference, a debug build's check, in `Heap::pool`
/// from `copy_forking_heaps` from `prepare` from the nested fork in `child_first`).
#[test]
fn a_fork_in_an_earlier_child_handler_of_a_child_without_a_region_returns() {
    let failed: Vec<_> = [
        (libc::MADV_DONTFORK, false),
        (libc::MADV_DONTFORK, true),
        (libc::MADV_WIPEONFORK, false),
    ]
    .into_iter()
    .filter(|&(advice, shared)| nested_fork_in_a_child_handler(advice, shared) != Ok(0))
    .collect();
    assert!(
        failed.is_empty(),
        "failed for (advice, shared): {failed:?} (10: MADV_DONTFORK, 18: MADV_WIPEONFORK)"
    );
}

/// Guard: the same with a region the child gets (`MADV_NORMAL`, private and shared): C and
/// the nested child go on. Pins that the failure above is the lost region's.
#[test]
fn guard_a_fork_in_an_earlier_child_handler_of_a_child_with_the_region_returns() {
    for shared in [false, true] {
        assert_eq!(
            nested_fork_in_a_child_handler(libc::MADV_NORMAL, shared),
            Ok(0),
            "shared {shared}"
        );
    }
}
