//! Red team (session 20, third round) on RED-107's fix (lead 06eeb4f): cohort's `child`
//! fork handler now returns at once where the pid `prepare` noted (`FORK_PID`) is the
//! calling process's own ("ran and prepared this process's own fork again"), and
//! `fork_caller` takes such a process for the forking one. A pid is unique only inside a
//! pid namespace: a process that is its namespace's init (pid 1: a container's init, a
//! sandbox's) and moves its children into a new namespace (`unshare(CLONE_NEWPID)`, as
//! sandboxes do) makes a first child whose pid is 1 too. That child must be repaired as
//! any: a heap of its own of a shared region, the locks `prepare` held released.
//!
//! Processes: the test's child P (root, or a user namespace) unshares its pid namespace
//! and forks I (pid 1 there); I unshares again and forks G (pid 1 in the nested one).
//! I and G each allocate from a shared region I made; G's slot must be in a block of its
//! own, and a second thread of G must get through the pool lock.

#[path = "red_team_common/mod.rs"]
mod red_team_common;

use cohort::Cohort;
use red_team_common::{
    block_of, in_child, passes_without_wipe_on_fork, refuse_wipe_on_fork_when_set, shared_words,
    wait,
};
use std::sync::atomic::Ordering::SeqCst;
use test_support::raw_thread;

refuse_wipe_on_fork_when_set!();

/// Word indices: I's slot, G's slot, G's thread's slot.
const I_SLOT: usize = 0;
const G_SLOT: usize = 1;
const G_THREAD: usize = 2;

/// `unshare(CLONE_NEWPID)` and a fork: the child is pid 1 of a new namespace. Returns
/// fork's answer, or `None` when the namespace is refused (not root, no user namespaces).
fn fork_into_new_pid_namespace() -> Option<libc::pid_t> {
    // SAFETY: no preconditions; it changes only where this process's children go.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        return None;
    }
    // SAFETY: each child leaves through `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    Some(pid)
}

/// Fails on lead 01cbab0: 'G's slot 0x7fab33e00080 is in I's block: G went on with I's heap
/// of the shared region'. Passes with `child`'s test of `FORK_PID` taken out (its form
/// before 06eeb4f).
#[test]
fn a_fork_child_with_its_parents_pid_in_a_new_namespace_is_repaired() {
    let words = shared_words(3);
    let pid = in_child(20, || {
        let Some(i) = fork_into_new_pid_namespace() else {
            eprintln!("skipped: unshare(CLONE_NEWPID) refused");
            return;
        };
        if i == 0 {
            // I: pid 1 of its namespace (ignores signals it has no handler for; the test's
            // child P kills it on a hang).
            // SAFETY: getpid has no preconditions.
            assert_eq!(unsafe { libc::getpid() }, 1);
            let a = Cohort::<()>::shared_anonymous(64 << 20).expect("a region");
            let p = a.malloc(64, ());
            words[I_SLOT].store(p as u64, SeqCst);
            let g = fork_into_new_pid_namespace().expect("a nested namespace");
            if g == 0 {
                // G: pid 1 as its parent was.
                let q = a.malloc(64, ());
                words[G_SLOT].store(q as u64, SeqCst);
                let r = raw_thread::scope(|s| s.spawn(|| a.malloc(640, ()) as u64).join().unwrap());
                words[G_THREAD].store(r, SeqCst);
                // SAFETY: leaves G.
                unsafe { libc::_exit(0) };
            }
            let ended = wait(g);
            // SAFETY: leaves I.
            unsafe { libc::_exit(if ended == Ok(0) { 0 } else { 3 }) };
        }
        // P: I ends, or hangs (then killed, with its namespace).
        let mut ended = None;
        for _ in 0..5000 {
            let mut status = 0;
            // SAFETY: our own child.
            if unsafe { libc::waitpid(i, &mut status, libc::WNOHANG) } == i {
                ended = Some(status);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let Some(status) = ended else {
            // SAFETY: our own child, the init of its namespace: SIGKILL ends it and every
            // process in it.
            unsafe { libc::kill(i, libc::SIGKILL) };
            let _ = wait(i);
            panic!(
                "I or G hung (G's slot {:#x}, G's thread's {:#x}): G waits on a lock its \
                 parent's prepare held",
                words[G_SLOT].load(SeqCst),
                words[G_THREAD].load(SeqCst)
            );
        };
        let (qi, qg, qt) = (
            words[I_SLOT].load(SeqCst),
            words[G_SLOT].load(SeqCst),
            words[G_THREAD].load(SeqCst),
        );
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "I ended with status {status:#x} (G's slot {qg:#x}, its thread's {qt:#x})"
        );
        assert!(qi != 0 && qg != 0 && qt != 0, "{qi:#x} {qg:#x} {qt:#x}");
        assert_ne!(
            block_of(qi),
            block_of(qg),
            "G's slot {qg:#x} is in I's block: G went on with I's heap of the shared region \
             (unrepaired: cohort's child handler took G for I)"
        );
    });
    assert_eq!(wait(pid), Ok(0), "the test's child failed");
}

/// RED-116: where `madvise(MADV_WIPEONFORK)` is refused (a kernel before 4.14, a seccomp
/// sandbox), cohort has no fork mark and told a child from its parent by the pids alone,
/// so the case above went unrepaired again: 'G's slot 0x7f3d0be00080 is in I's block: G
/// went on with I's heap of the shared region' (lead 960396d). The `child` handler, which
/// runs only in a child, now asks whether a fork was prepared (`FORK_THREAD`), not
/// whether the pid changed.
#[test]
fn without_the_fork_mark_a_child_with_its_parents_pid_is_repaired() {
    passes_without_wipe_on_fork("a_fork_child_with_its_parents_pid_in_a_new_namespace_is_repaired");
}
