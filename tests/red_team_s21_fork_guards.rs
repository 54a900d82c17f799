//! Red-team guards (session 21) of RED-117 (a fork child told by `FORK_MARK` alone; a
//! nested fork's child repaired, its locks released, none taken again for the outer fork):
//! forks nested two and three deep in a `prepare` handler registered before cohort's, each
//! nested child going on into the forks around it (every process of the tree allocates,
//! and must have a heap of its own); and a process spawned without fork handlers
//! (`posix_spawn`, which glibc makes with `CLONE_VM | CLONE_VFORK`, and `vfork` + `exec`)
//! from each handler position while cohort's locks are held or its child is not repaired.
//! They pass on lead 960396d; the two fork trees fail on lead 313b13e (see each).
//!
//! This binary registers its handlers first (`register_fork_handlers_first!`); they act
//! only while [`DEPTH_LEFT`] or [`SPAWN_AT`] is set, in a fork child of the test.

#[path = "red_team_common/mod.rs"]
mod red_team_common;

use cohort::Cohort;
use red_team_common::register_fork_handlers_first;
use red_team_common::{block_of, handlers_join, handlers_region, in_child, leak_for_handlers};
use red_team_common::{passes_without_wipe_on_fork, refuse_wipe_on_fork_when_set};
use red_team_common::{reap_children, shared_words, wait};
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering::SeqCst};

/// How many more forks the earlier `prepare` handler nests (each nested fork's own
/// `prepare` handlers run it again, one level deeper).
static DEPTH_LEFT: AtomicU32 = AtomicU32::new(0);
/// Which earlier handler spawns a process (0: none; cleared by it).
static SPAWN_AT: AtomicU8 = AtomicU8::new(NONE);
const NONE: u8 = 0;
const PREPARE: u8 = 1;
const PARENT: u8 = 2;
const CHILD: u8 = 3;
/// Set while a tree of forks runs: every child of it sets an alarm (in the earlier `child`
/// handler, before cohort's repair, which may hang).
static TREE: AtomicU8 = AtomicU8::new(0);

extern "C" fn prepare_first() {
    let left = DEPTH_LEFT.load(SeqCst);
    if left > 0 {
        DEPTH_LEFT.store(left - 1, SeqCst);
        // SAFETY: fork in a handler (glibc 2.35 on allows it); both processes go on into
        // the forks around this one, and every process reaps its children at the end.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "the nested fork");
        if pid == 0 {
            // The nested child has a heap of the region and its join's before it goes on:
            // a child of the forks around not repaired would go on with them.
            assert!(!handlers_region().malloc(64, ()).is_null());
            assert!(!handlers_join().malloc(64, ()).is_null());
        }
    }
    spawn_at(PREPARE);
}

extern "C" fn parent_first() {
    spawn_at(PARENT);
}

extern "C" fn child_first() {
    if TREE.load(SeqCst) == 1 {
        // SAFETY: alarm has no preconditions (not inherited through fork).
        unsafe { libc::alarm(30) };
    }
    spawn_at(CHILD);
}

register_fork_handlers_first!(Some(prepare_first), Some(parent_first), Some(child_first));
refuse_wipe_on_fork_when_set!();

/// Spawns `/bin/true` twice when [`SPAWN_AT`] is `at` (`posix_spawn`, then `vfork` +
/// `execv`), and waits for both.
fn spawn_at(at: u8) {
    if SPAWN_AT.compare_exchange(at, NONE, SeqCst, SeqCst).is_err() {
        return;
    }
    let path = c"/bin/true";
    let pid = red_team_common::posix_spawn_of(path).expect("posix_spawn");
    assert_eq!(wait(pid), Ok(0), "the spawned process");
    let argv = [path.as_ptr(), core::ptr::null()];
    // SAFETY: the child only calls execv and _exit (what a vfork child may call; the
    // libc crate deprecates vfork for Rust code that does more in the child).
    #[allow(deprecated)]
    let pid = unsafe { libc::vfork() };
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            libc::execv(path.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
    }
    assert!(pid > 0, "vfork");
    assert_eq!(wait(pid), Ok(0), "the vforked process");
}

/// In a child P of the test: a shared region, a join of it and a private instance; one
/// fork with forks nested `depth` deep in the earlier `prepare` handler, each nested child
/// allocating from the region and the join in the handler and going on. Every process of
/// the tree (2^(depth + 1), P with them) allocates a slot of the region and one of the
/// join after the fork and says which, waits for the others to, verifies the private
/// instance, and reaps its children. The slots must lie in as many distinct blocks: each
/// process has heaps of its own (a child not repaired goes on with its parent's heap, and
/// a join whose generation is its parent's with the parent's join heap: its slot lies in
/// the parent's block).
fn fork_tree(depth: u32) {
    const MOST: usize = 64;
    let words = shared_words(2 + MOST);
    let total = 1 << (depth + 1);
    let pid = in_child(60, || {
        let me = std::process::id();
        let private = Cohort::<()>::new();
        leak_for_handlers(Cohort::shared_anonymous(256 << 20).expect("a region"));
        let region = handlers_region();
        assert!(!private.malloc(64, ()).is_null() && !region.malloc(64, ()).is_null());
        TREE.store(1, SeqCst);
        DEPTH_LEFT.store(depth, SeqCst);
        // SAFETY: every process of the tree but P leaves through `_exit` below.
        let forked = unsafe { libc::fork() };
        assert!(forked >= 0, "fork");
        let (slot, joined) = (region.malloc(64, ()), handlers_join().malloc(64, ()));
        let n = words[0].fetch_add(1, SeqCst) as usize;
        words[2 + (2 * n).min(MOST - 2)].store(slot as u64, SeqCst);
        words[3 + (2 * n).min(MOST - 2)].store(joined as u64, SeqCst);
        // No process leaves before all allocated: a dead process's heap may be taken over
        // by a process that joins later, its block with it.
        while (words[0].load(SeqCst) as usize) < total {
            std::thread::yield_now();
        }
        let q = private.malloc(100, ());
        // SAFETY: this process's only thread.
        let verified = unsafe { private.verify() }.is_ok();
        if slot.is_null() || joined.is_null() || q.is_null() || !verified || !reap_children() {
            words[1].fetch_add(1, SeqCst);
        }
        if std::process::id() != me {
            // SAFETY: leaves a process of the tree without its parent's destructors.
            unsafe { libc::_exit(0) };
        }
        let count = words[0].load(SeqCst) as usize;
        let failed = words[1].load(SeqCst);
        assert_eq!(count, total, "processes that allocated");
        assert_eq!(
            failed, 0,
            "processes that failed (a slot, verify or a child)"
        );
        let mut blocks: Vec<u64> = words[2..2 + 2 * count]
            .iter()
            .map(|w| block_of(w.load(SeqCst)))
            .collect();
        blocks.sort_unstable();
        blocks.dedup();
        assert_eq!(
            blocks.len(),
            2 * count,
            "distinct blocks of the slots of {count} processes (a thread's and a join's each)"
        );
    });
    assert_eq!(wait(pid), Ok(0), "the test's child (P) failed");
}

/// [`fork_tree`] two deep. Passes on lead 960396d. On lead 313b13e (RED-119's
/// `FORK_PENDING`): 'distinct blocks of the slots of 8 processes (a thread's and a join's
/// each): left 12, right 16': two processes go on with their parents' heaps. The child
/// X of the innermost fork is repaired and sets `FORK_PENDING` again (nested), but its
/// `parent` handler for the middle fork, which it goes on into, clears it, so the child of
/// the outermost fork that X then makes finds no repair due (`repair_due`); and the middle
/// fork's child of X, repaired with `FORK_PENDING = nested = false`, goes on into the
/// outermost fork too, whose child it makes is not repaired either (RED-121). Fixed: a
/// repaired child counts the forks it goes on through (`GOING_ON`), each `parent` handler
/// there one fewer.
#[test]
fn guard_forks_nested_two_deep_whose_children_go_on_each_get_a_heap_of_their_own() {
    fork_tree(2);
}

/// [`fork_tree`] three deep. Passes on lead 960396d. On lead 313b13e: 'distinct blocks
/// of the slots of 16 processes (a thread's and a join's each): left 16, right 32' (eight
/// processes not repaired, as above).
#[test]
fn guard_forks_nested_three_deep_whose_children_go_on_each_get_a_heap_of_their_own() {
    fork_tree(3);
}

/// Guard (session 21, second round): the two fork trees above where the kernel refuses
/// `MADV_WIPEONFORK` (no fork mark: a repaired process going on through the forks around
/// it is told from its unrepaired children by the pids, `FORK_PID`). Passes on lead 3dc6b80.
#[test]
fn guard_the_fork_trees_without_the_fork_mark() {
    for test in [
        "guard_forks_nested_two_deep_whose_children_go_on_each_get_a_heap_of_their_own",
        "guard_forks_nested_three_deep_whose_children_go_on_each_get_a_heap_of_their_own",
    ] {
        passes_without_wipe_on_fork(test);
    }
}

/// A process spawned without fork handlers from each earlier handler (`prepare`: cohort's
/// locks held; `parent`: still held; `child`: the child not repaired yet): the spawned
/// processes run, the fork returns in both processes, and the child joins the shared
/// region afresh (its slot in another block than its parent's) and allocates privately.
#[test]
fn guard_a_process_spawned_without_fork_handlers_from_each_earlier_handler() {
    for at in [PREPARE, PARENT, CHILD] {
        let words = shared_words(1);
        let pid = in_child(60, || {
            let private = Cohort::<()>::new();
            let region = Cohort::<()>::shared_anonymous(64 << 20).expect("a region");
            let kept = region.malloc(64, ()) as u64;
            assert!(kept != 0 && !private.malloc(64, ()).is_null());
            SPAWN_AT.store(at, SeqCst);
            let child = in_child(30, || {
                words[0].store(region.malloc(64, ()) as u64, SeqCst);
                assert!(!private.malloc(200, ()).is_null());
            });
            assert_eq!(wait(child), Ok(0), "the child");
            assert_eq!(SPAWN_AT.load(SeqCst), if at == CHILD { at } else { NONE });
            let q = words[0].load(SeqCst);
            assert!(
                q != 0 && block_of(q) != block_of(kept),
                "the child's slot {q:#x}"
            );
            assert!(!private.malloc(300, ()).is_null());
        });
        assert_eq!(
            wait(pid),
            Ok(0),
            "spawned in handler {at}: the test's child failed"
        );
    }
}
