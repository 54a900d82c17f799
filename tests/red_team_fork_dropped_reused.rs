//! Red team (session 20, second round): RED-106's fix in a child that lacks a region: the
//! child's handler rebuilds the forking thread's list from `prepare`'s copy, keeping the
//! heaps whose pools are still listed (by address) and not lost. A fork handler registered
//! before cohort's whose `prepare` drops an instance the thread holds a heap of, then
//! makes a new instance and allocates from it: the new pool may be mapped where the
//! dropped one was, so the copy's entry of the dropped heap names a listed pool again.
//!
//! This binary registers its handler from an ELF constructor of a higher priority than
//! cohort's; it acts only while [`DROP`] holds an instance, in a fork child of the test.

#[path = "red_team_common/mod.rs"]
mod red_team_common;

use cohort::Cohort;
use red_team_common::{in_child, register_fork_handlers_first, wait};
use std::sync::atomic::{AtomicPtr, Ordering::SeqCst};

/// The instance the `prepare` handler drops (null: none).
static DROP: AtomicPtr<Cohort<()>> = AtomicPtr::new(std::ptr::null_mut());
/// The instance the `prepare` handler makes after the drop (leaked; null before).
static MADE: AtomicPtr<Cohort<()>> = AtomicPtr::new(std::ptr::null_mut());
/// A join of [`MADE`] the handler makes (leaked), before the thread's first allocation.
static MADE_JOIN: AtomicPtr<cohort::Join<'static, ()>> = AtomicPtr::new(std::ptr::null_mut());

register_fork_handlers_first!(Some(prepare), None, None);

extern "C" fn prepare() {
    let a = DROP.swap(std::ptr::null_mut(), SeqCst);
    if a.is_null() {
        return;
    }
    // SAFETY: a boxed instance (below), dropped once; its allocations were freed.
    drop(unsafe { Box::from_raw(a) });
    let b: &'static Cohort<()> = Box::leak(Box::new(Cohort::<()>::new()));
    // The join takes the new pool's first heap (the dropped pool's first heap's place),
    // the thread's heap comes after.
    let j = Box::leak(Box::new(b.join(0).expect("a join")));
    let jp = j.malloc(64, ());
    let p = b.malloc(64, ());
    assert!(!p.is_null() && !jp.is_null());
    MADE_JOIN.store(std::ptr::from_mut(j), SeqCst);
    MADE.store(std::ptr::from_ref(b).cast_mut(), SeqCst);
}

/// The thread allocates from a region in caller memory advised `advice` (the child lacks
/// it), and from a boxed instance (freed again); the fork's earlier `prepare` drops the
/// boxed instance and allocates from a new one. The child allocates from the new one,
/// and its join (their slots of two blocks), verifies it and leaves.
fn drop_and_remake_in_the_window(advice: libc::c_int) -> red_team_common::Ended {
    let pid = in_child(10, move || {
        let region = red_team_common::advised_region::<()>(advice, false, 16 << 20);
        assert!(!region.malloc(64, ()).is_null());
        let a = Box::new(Cohort::<()>::new());
        let p = a.malloc(64, ());
        // SAFETY: allocated above with this size and class.
        unsafe { a.free(p, 64, ()) };
        DROP.store(Box::into_raw(a), SeqCst);
        // SAFETY: the child allocates, verifies and leaves through `_exit`.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork");
        if child == 0 {
            // SAFETY: leaked by the handler.
            let b = unsafe { &*MADE.load(SeqCst) };
            // SAFETY: leaked by the handler; this thread's (its copy).
            let j = unsafe { &*MADE_JOIN.load(SeqCst) };
            let q = b.malloc(64, ()) as usize;
            let jq = j.malloc(64, ()) as usize;
            // SAFETY: the child's only thread.
            let ok = q != 0
                && jq != 0
                && red_team_common::block_of(q as u64) != red_team_common::block_of(jq as u64)
                && unsafe { b.verify() }.is_ok();
            // SAFETY: leaves the child.
            unsafe { libc::_exit(i32::from(!ok)) };
        }
        assert!(!MADE.load(SeqCst).is_null(), "the handler did not act");
        assert_eq!(wait(child), Ok(0), "the fork's child (Err(11): SIGSEGV)");
    });
    wait(pid)
}

/// Guard (passes on lead ae6aaca, debug): the new instance's first slot is where the
/// dropped one's was (its pool mapped at the same place); its join's heap comes first,
/// the thread's heap after; the child's thread allocates from its own block, the join
/// from the join's, and `verify` passes.
#[test]
fn guard_an_instance_dropped_and_another_made_in_the_window_leave_a_child_lacking_a_region_whole() {
    let ended: Vec<_> = [libc::MADV_DONTFORK, libc::MADV_WIPEONFORK]
        .into_iter()
        .map(|advice| (advice, drop_and_remake_in_the_window(advice)))
        .collect();
    assert!(
        ended.iter().all(|(_, e)| *e == Ok(0)),
        "(advice, how the test's child ended): {ended:?}"
    );
}
