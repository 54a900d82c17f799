//! Red team (session 20): a fork made inside a fork handler that a program registered
//! before cohort's (another library's constructor, or a program's under `LD_PRELOAD`:
//! RED-100's setting). POSIX runs such a handler's `prepare` after cohort's, while cohort
//! holds its locks across the fork, and glibc (2.35 on) lets a handler fork (it drops its
//! handler lock around each call). The nested fork runs cohort's handlers inside the
//! outer fork's window: its `parent` handler ends the window (`FORK_THREAD = 0`) and
//! releases every lock, so when the outer fork then makes its child, cohort's `child`
//! handler there finds the window ended and returns at once ("ran already"): the outer
//! child's thread keeps its parent's heaps of a shared region, and both processes
//! allocate from the same heap.
//!
//! This binary registers its handlers from an ELF constructor of a higher priority than
//! cohort's (as `tests/fork_handlers_first.rs`), so they come first; the handlers act only
//! while [`NEST`] is set, in a fork child of the test (one thread).

#[path = "red_team_common/mod.rs"]
mod red_team_common;

use cohort::Cohort;
use red_team_common::{in_child, shared_words, wait};
use std::sync::atomic::{AtomicU8, Ordering::SeqCst};

/// Which of the handlers forks once (0: none; cleared by the handler that forks).
static NEST: AtomicU8 = AtomicU8::new(NONE);
const NONE: u8 = 0;
const PREPARE: u8 = 1;
const PARENT: u8 = 2;
const CHILD: u8 = 3;

#[used]
#[link_section = ".init_array.00100"]
static REGISTER_FIRST: extern "C" fn() = register_first;

extern "C" fn register_first() {
    // SAFETY: plain functions, valid for the life of the process.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

extern "C" fn prepare() {
    nest(PREPARE);
}

extern "C" fn parent() {
    nest(PARENT);
}

extern "C" fn child() {
    nest(CHILD);
}

/// Forks once when [`NEST`] is `at`: the inner child leaves at once, the handler waits
/// for it.
fn nest(at: u8) {
    if NEST.compare_exchange(at, NONE, SeqCst, SeqCst).is_err() {
        return;
    }
    // SAFETY: the child leaves through `_exit` at once; the parent reaps it.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "the nested fork");
        if pid == 0 {
            libc::_exit(0);
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
    }
}

/// Block of slot `p` (blocks are 2 MiB, aligned).
fn block(p: usize) -> usize {
    p & !((2 << 20) - 1)
}

/// Forks (the outer child allocates one 64-byte slot, says which, and leaves without
/// leaving the region: `_exit`), then checks in the parent that the child joined afresh:
/// its slot is of another block than the parent's current one, and the parent takes over
/// exactly one dead heap (the child's) afterwards.
fn fork_and_check(a: &Cohort<()>, kept: &[usize]) {
    let words = shared_words(1);
    // SAFETY: the child allocates, writes a word and leaves through `_exit`.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork");
    if child == 0 {
        let q = a.malloc(64, ());
        words[0].store(q as u64, SeqCst);
        // SAFETY: leaves the child.
        unsafe { libc::_exit(0) };
    }
    assert_eq!(wait(child), Ok(0), "the outer child failed");
    let q = words[0].load(SeqCst) as usize;
    assert!(q != 0, "out of memory");
    let reaped = a.reap_dead_processes();
    assert!(
        block(q) != block(kept[0]) && reaped == 1,
        "the child's slot {q:#x} is of the parent's current block {:#x} (heaps of dead \
         processes taken over: {reaped}, not 1): the child went on with its parent's heap",
        block(kept[0])
    );
}

/// A shared anonymous region; the process allocates (its thread joins: a heap of the
/// region's), then forks with the nested fork inside the earlier `prepare` handler. On
/// lead 8cdf979 the outer child allocated from the parent's heap ('the child's slot
/// 0x7f..00140 is of the parent's current block .. (heaps of dead processes taken over:
/// 0, not 1)'): two processes then pop and push one heap's lists at once.
#[test]
fn a_fork_inside_an_earlier_prepare_handler_leaves_the_outer_child_repaired() {
    let pid = in_child(20, || {
        let a = Cohort::<()>::shared_anonymous(64 << 20).expect("a region");
        let kept: Vec<usize> = (0..4).map(|_| a.malloc(64, ()) as usize).collect();
        NEST.store(PREPARE, SeqCst);
        fork_and_check(&a, &kept);
        assert_eq!(NEST.load(SeqCst), NONE, "the nested fork did not run");
    });
    assert_eq!(wait(pid), Ok(0), "the test's child failed");
}

/// Guard: the same fork with no nested fork (the handler does nothing): the child joins
/// afresh.
#[test]
fn guard_a_plain_fork_of_a_shared_region_gives_the_child_its_own_heap() {
    let pid = in_child(20, || {
        let a = Cohort::<()>::shared_anonymous(64 << 20).expect("a region");
        let kept: Vec<usize> = (0..4).map(|_| a.malloc(64, ()) as usize).collect();
        fork_and_check(&a, &kept);
    });
    assert_eq!(wait(pid), Ok(0), "the test's child failed");
}

/// A private instance with a registered heap (the thread allocated), the same nested
/// fork. The nested fork's `prepare` runs inside the outer one's: it enters the pool's
/// lock held for the fork (`FORK_ENTERED`), then takes over every registered heap's batch
/// of remote frees (`RemoteBatch::hold_for_fork`), which the outer `prepare` holds
/// (`flushing == FORK_HELD`): its compare-and-swap from 0 never succeeds, and the fork
/// never returns. On lead 8cdf979: the test's child died of SIGALRM (Err(14)).
#[test]
fn a_fork_inside_an_earlier_prepare_handler_returns_with_a_private_instance() {
    let pid = in_child(30, || {
        let a = Cohort::<()>::new();
        let p = a.malloc(64, ());
        assert!(!p.is_null());
        NEST.store(PREPARE, SeqCst);
        // SAFETY: the child leaves through `_exit` at once.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork");
        if child == 0 {
            let q = a.malloc(64, ());
            // SAFETY: leaves the child.
            unsafe { libc::_exit(i32::from(q.is_null() || q == p)) };
        }
        assert_eq!(NEST.load(SeqCst), NONE, "the nested fork did not run");
        assert_eq!(wait(child), Ok(0), "the outer child failed");
        // SAFETY: p is live, of this size and class.
        unsafe { a.free(p, 64, ()) };
    });
    assert_eq!(
        wait(pid),
        Ok(0),
        "the test's child failed (Err(14): SIGALRM, a hang)"
    );
}

/// Siblings of RED-102 and RED-103 (lead, session 20): the nested fork made in a `parent`
/// handler registered before cohort's (it runs before cohort's, the locks still held) or
/// in such a `child` handler (in the outer child, before cohort's repair): a shared
/// region's outer child still joins afresh, and a private instance's fork returns and its
/// child allocates.
#[test]
fn a_fork_inside_an_earlier_parent_or_child_handler_leaves_both_processes_whole() {
    for at in [PARENT, CHILD] {
        let pid = in_child(20, move || {
            let a = Cohort::<()>::shared_anonymous(64 << 20).expect("a region");
            let kept: Vec<usize> = (0..4).map(|_| a.malloc(64, ()) as usize).collect();
            NEST.store(at, SeqCst);
            fork_and_check(&a, &kept);
            // A child handler forks in the child: this process's word is still set.
            assert_eq!(NEST.swap(NONE, SeqCst), if at == CHILD { at } else { NONE });
            let b = Cohort::<()>::new();
            let p = b.malloc(64, ());
            assert!(!p.is_null());
            NEST.store(at, SeqCst);
            // SAFETY: the child leaves through `_exit` at once.
            let child = unsafe { libc::fork() };
            assert!(child >= 0, "fork");
            if child == 0 {
                let q = b.malloc(64, ());
                // SAFETY: leaves the child.
                unsafe { libc::_exit(i32::from(q.is_null() || q == p)) };
            }
            assert_eq!(wait(child), Ok(0), "the outer child failed");
            // SAFETY: p is live, of this size and class.
            unsafe { b.free(p, 64, ()) };
        });
        assert_eq!(
            wait(pid),
            Ok(0),
            "the nested fork in handler {at}: the test's child failed (Err(14): SIGALRM, a hang)"
        );
    }
}
