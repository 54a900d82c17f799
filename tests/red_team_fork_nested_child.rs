//! Red team (session 20, second round): a fork made inside a `prepare` handler registered
//! before cohort's (RED-102's setting, fixed by `FORK_DEPTH`), whose child does not leave
//! at once but goes on: it returns from the handler into the rest of the outer fork, and
//! makes a child of its own (the grandchild). In the nested child, cohort's `child` handler
//! has run (the nested fork's), ending the fork window (`FORK_THREAD = 0`); the outer
//! fork's `child` handler in the grandchild then finds the window ended ("ran already")
//! and returns: the grandchild is not repaired (its generation is its parent's, its thread
//! keeps its parent's heaps of a shared region).
//!
//! Processes: the test's process forks P (`in_child`); P forks with [`NEST`] set (the
//! outer fork); the handler forks N inside it; N goes on and the outer fork makes G.

#[path = "red_team_common/mod.rs"]
mod red_team_common;

use cohort::Cohort;
use red_team_common::{
    block_of, handlers_join, handlers_region, in_child, leak_for_handlers,
    passes_without_wipe_on_fork, refuse_wipe_on_fork_when_set, register_fork_handlers_first,
    shared_words, wait,
};
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, AtomicUsize, Ordering::SeqCst};

/// Whether the earlier `prepare` handler forks (cleared by it).
static NEST: AtomicU8 = AtomicU8::new(0);
/// Set in N (the nested child) by the handler, inherited by G.
static NESTED: AtomicU8 = AtomicU8::new(0);
/// How N ended, as P's handler saw it (`wait` status, or -1 before).
static N_STATUS: AtomicI32 = AtomicI32::new(-1);
/// How N and G allocate from the shared region (a `fn() -> *mut u8`, set in P).
static ALLOC: AtomicUsize = AtomicUsize::new(0);
/// The words shared by P, N and G (a `*const [AtomicU64; WORDS]`).
static WORDS: AtomicUsize = AtomicUsize::new(0);
const WORDS_N: usize = 2;
/// Word indices: N's slot, G's slot.
const N_SLOT: usize = 0;
const G_SLOT: usize = 1;

extern "C" fn prepare() {
    if NEST.swap(0, SeqCst) == 0 {
        return;
    }
    // SAFETY: fork in a handler (glibc 2.35 on allows it); N goes on, P reaps it.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "the nested fork");
    if pid == 0 {
        // SAFETY: alarm has no preconditions (an alarm is not inherited through fork).
        unsafe { libc::alarm(10) };
        NESTED.store(1, SeqCst);
        words()[N_SLOT].store(alloc() as u64, SeqCst);
        return;
    }
    let mut status = 0;
    // SAFETY: reaps N.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    N_STATUS.store(status, SeqCst);
}

register_fork_handlers_first!(Some(prepare), None, None);
refuse_wipe_on_fork_when_set!();

fn alloc() -> *mut u8 {
    // SAFETY: set in P before the fork from a `fn() -> *mut u8`.
    let f: fn() -> *mut u8 = unsafe { std::mem::transmute(ALLOC.load(SeqCst)) };
    f()
}

fn words() -> &'static [AtomicU64] {
    // SAFETY: set before the fork to a leaked mapping of `WORDS_N` words.
    unsafe { std::slice::from_raw_parts(WORDS.load(SeqCst) as *const AtomicU64, WORDS_N) }
}

/// P makes the region and a join of it, allocates from both, then forks with the nested
/// fork in the earlier `prepare` handler; N allocates with `how` inside the handler (after
/// its own fork's `child` handler: a heap of its own), then makes G (the outer fork), which
/// allocates with `how` too. G's slot must be of a heap of its own (another block than
/// N's), not N's heap, which both processes would then pop and push at once.
fn grandchild_allocates(how: fn() -> *mut u8) {
    let w = shared_words(WORDS_N);
    let pid = in_child(20, || {
        WORDS.store(w.as_ptr() as usize, SeqCst);
        ALLOC.store(how as usize, SeqCst);
        leak_for_handlers(Cohort::shared_anonymous(64 << 20).expect("a region"));
        assert!(
            !handlers_region().malloc(64, ()).is_null()
                && !handlers_join().malloc(64, ()).is_null()
        );
        NEST.store(1, SeqCst);
        // SAFETY: every child leaves through `_exit`.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork");
        let nested = NESTED.load(SeqCst) == 1;
        if child == 0 {
            let q = how();
            if nested {
                words()[G_SLOT].store(q as u64, SeqCst);
            }
            // SAFETY: leaves the child (C or G) without its parent's destructors.
            unsafe { libc::_exit(i32::from(q.is_null())) };
        }
        if nested {
            // N: reap G, compare its slot with N's.
            let g = wait(child);
            let (qn, qg) = (words()[N_SLOT].load(SeqCst), words()[G_SLOT].load(SeqCst));
            let code = if g != Ok(0) || qn == 0 || qg == 0 {
                3
            } else if block_of(qn) == block_of(qg) {
                2
            } else {
                0
            };
            // SAFETY: leaves N.
            unsafe { libc::_exit(code) };
        }
        assert_eq!(wait(child), Ok(0), "the outer child (of P) failed");
        let status = N_STATUS.load(SeqCst);
        assert!(status >= 0, "the nested fork did not run");
        let (qn, qg) = (w[N_SLOT].load(SeqCst), w[G_SLOT].load(SeqCst));
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "N (the nested child) ended with status {status:#x} (exit 2: G's slot {qg:#x} \
             is of N's current block {:#x}: G went on with N's heap of the shared region; \
             exit 3: G failed)",
            block_of(qn)
        );
    });
    assert_eq!(wait(pid), Ok(0), "the test's child failed");
}

/// The thread's heap (`Cohort::malloc`). On lead 3e375f3: 'N .. ended with status 0x200
/// (exit 2: G's slot 0x7fe680000080 is of N's current block 0x7fe680000000 ..)'.
#[test]
fn the_outer_forks_child_in_a_nested_child_is_repaired() {
    grandchild_allocates(|| handlers_region().malloc(64, ()));
}

/// RED-107's sibling: a join P made (`Join::malloc`): its generation check takes a heap
/// of its own in N, and in G (whose generation is N's, the repair skipped) N's.
#[test]
fn a_join_in_the_outer_forks_child_in_a_nested_child_takes_a_heap_of_its_own() {
    grandchild_allocates(|| handlers_join().malloc(64, ()));
}

/// The cases above where the kernel refuses `MADV_WIPEONFORK` (no fork mark: the nested
/// child's repair leaves the forks it goes on through open: `GOING_ON`).
#[test]
fn without_the_fork_mark_the_outer_forks_child_in_a_nested_child_is_repaired() {
    for test in [
        "the_outer_forks_child_in_a_nested_child_is_repaired",
        "a_join_in_the_outer_forks_child_in_a_nested_child_takes_a_heap_of_its_own",
    ] {
        passes_without_wipe_on_fork(test);
    }
}
