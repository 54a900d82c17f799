//! Red team (session 20, second round): a `child` fork handler registered before cohort's
//! (RED-100's setting) calls a private instance's join inside the child before cohort's
//! repair. The join's call that takes the pool's lock (held across the fork) runs the
//! child's repair first (`fork::fork_caller`), which repairs every join's heap in place as
//! if no thread of the child used it (`repair_joins_in_child`: its heads emptied, its blocks
//! listed again), while this call is inside it.
//!
//! This binary registers its handler from an ELF constructor of a higher priority than
//! cohort's; it acts only while [`CALL`] is set, in a fork child of the test.

#[path = "red_team_common/mod.rs"]
mod red_team_common;

use cohort::Cohort;
use red_team_common::{in_child, register_fork_handlers_first, wait};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering::SeqCst};

static A: Cohort<()> = Cohort::new();
/// The join the handler calls (leaked; null: none).
static JOIN: AtomicPtr<cohort::Join<'static, ()>> = AtomicPtr::new(std::ptr::null_mut());
/// The size the handler allocates through [`JOIN`] (0: the handler does nothing).
static CALL: AtomicUsize = AtomicUsize::new(0);
/// The handler's slot.
static SLOT: AtomicUsize = AtomicUsize::new(0);

register_fork_handlers_first!(None, None, Some(child));

extern "C" fn child() {
    let size = CALL.swap(0, SeqCst);
    if size == 0 {
        return;
    }
    // SAFETY: leaked by the test before the fork; this thread's (its copy).
    let j = unsafe { &*JOIN.load(SeqCst) };
    SLOT.store(j.malloc(size, ()) as usize, SeqCst);
}

/// The process allocates 100 slots of 64 bytes through a join, then forks with the
/// handler allocating `size` bytes through it. The child allocates 3000 slots of 64 bytes
/// and 3000 of `size` through the join and 3000 of each on its thread, then verifies:
/// every slot once (the handler's and the parent's included), `verify` passes.
fn fork_with_the_handler_allocating(size: usize) -> red_team_common::Ended {
    let j: &'static cohort::Join<'static, ()> = Box::leak(Box::new(A.join(0).expect("a join")));
    JOIN.store(std::ptr::from_ref(j).cast_mut(), SeqCst);
    let kept: Vec<usize> = (0..100).map(|_| j.malloc(64, ()) as usize).collect();
    CALL.store(size, SeqCst);
    // SAFETY: the child allocates, verifies and leaves through `_exit`.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork");
    if child == 0 {
        let mut all = kept;
        all.push(SLOT.load(SeqCst));
        for s in [64, size] {
            all.extend((0..3000).map(|_| j.malloc(s, ()) as usize));
            all.extend((0..3000).map(|_| A.malloc(s, ()) as usize));
        }
        let n = all.len();
        let null = all.contains(&0);
        all.sort_unstable();
        all.dedup();
        // SAFETY: the child's only thread.
        let verified = unsafe { A.verify() };
        let code = if null {
            4
        } else if all.len() != n {
            red_team_common::say(&format!("{} slots handed out twice", n - all.len()));
            2
        } else if verified.is_err() {
            red_team_common::say(&format!("verify: {verified:?}"));
            3
        } else {
            0
        };
        // SAFETY: leaves the child.
        unsafe { libc::_exit(code) };
    }
    CALL.store(0, SeqCst);
    wait(child)
}

/// Sizes of a class the join has no block of yet (its first slot takes the lock) and of
/// its current class (64: from its current block). Guard: passes on lead ae6aaca (debug,
/// release-tests).
#[test]
fn guard_an_earlier_child_handlers_join_call_leaves_the_join_whole() {
    let ended: Vec<_> = [64, 200, 3000, 100_000]
        .into_iter()
        .map(|size| {
            (
                size,
                wait(in_child(20, || {
                    let e = fork_with_the_handler_allocating(size);
                    assert_eq!(e, Ok(0), "the fork's child (2: twice, 3: verify, 4: null)");
                })),
            )
        })
        .collect();
    assert!(
        ended.iter().all(|(_, e)| *e == Ok(0)),
        "(size, how the test's child ended): {ended:?}"
    );
}
