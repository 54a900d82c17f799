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
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering::SeqCst};

/// The instance the `prepare` handler drops (null: none).
static DROP: AtomicPtr<Cohort<()>> = AtomicPtr::new(std::ptr::null_mut());
/// The instance the `prepare` handler makes after the drop (leaked; null before).
static MADE: AtomicPtr<Cohort<()>> = AtomicPtr::new(std::ptr::null_mut());
/// A join of [`MADE`] the handler makes (leaked), before the thread's first allocation.
static MADE_JOIN: AtomicPtr<cohort::Join<'static, ()>> = AtomicPtr::new(std::ptr::null_mut());

/// Caller memory the boxed instances are formatted in (0: `Cohort::new`, memory of their
/// own), of [`footprint`]'s bytes.
static MEMORY: AtomicUsize = AtomicUsize::new(0);
const CAP: usize = 16 << 20;

register_fork_handlers_first!(Some(prepare), None, None);

fn footprint() -> cohort::Footprint {
    Cohort::<()>::footprint(CAP).expect("footprint")
}

/// A boxed instance: in [`MEMORY`] (formatted again: the dropped one's place) or not.
fn make() -> Box<Cohort<()>> {
    let m = MEMORY.load(SeqCst);
    if m == 0 {
        return Box::new(Cohort::new());
    }
    let options = cohort::RegionOptions::new(CAP);
    // SAFETY: the test's memory of the footprint's bytes, aligned, used by no live instance
    // (the one formatted in it before was dropped).
    Box::new(
        unsafe { Cohort::format_in(m as *mut u8, footprint().bytes, &options) }.expect("format_in"),
    )
}

extern "C" fn prepare() {
    let a = DROP.swap(std::ptr::null_mut(), SeqCst);
    if a.is_null() {
        return;
    }
    // SAFETY: a boxed instance (below), dropped once; its allocations were freed.
    drop(unsafe { Box::from_raw(a) });
    let b: &'static Cohort<()> = Box::leak(make());
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
fn drop_and_remake_in_the_window(advice: libc::c_int, in_memory: bool) -> red_team_common::Ended {
    let pid = in_child(10, move || {
        if in_memory {
            let f = footprint();
            let m = red_team_common::aligned_anonymous(f.bytes, f.align, false);
            MEMORY.store(m as usize, SeqCst);
        }
        let region = red_team_common::advised_region::<()>(advice, false, 16 << 20);
        assert!(!region.malloc(64, ()).is_null());
        let a = make();
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
            let verified = unsafe { b.verify() };
            let ok = q != 0
                && jq != 0
                && red_team_common::block_of(q as u64) != red_team_common::block_of(jq as u64)
                && verified.is_ok();
            if !ok {
                red_team_common::say(&format!(
                    "the child: thread's slot {q:#x}, join's {jq:#x}, verify {verified:?}"
                ));
            }
            // SAFETY: leaves the child.
            unsafe { libc::_exit(i32::from(!ok)) };
        }
        assert!(!MADE.load(SeqCst).is_null(), "the handler did not act");
        assert_eq!(wait(child), Ok(0), "the fork's child (Err(11): SIGSEGV)");
    });
    wait(pid)
}

/// Both advices, the boxed instances in memory of their own (`in_memory` false) or
/// formatted in the same caller memory.
fn each_advice(in_memory: bool) {
    let ended: Vec<_> = [libc::MADV_DONTFORK, libc::MADV_WIPEONFORK]
        .into_iter()
        .map(|advice| (advice, drop_and_remake_in_the_window(advice, in_memory)))
        .collect();
    assert!(
        ended.iter().all(|(_, e)| *e == Ok(0)),
        "(advice, how the test's child ended): {ended:?}"
    );
}

/// Set in a rerun of this binary (a fresh address space layout): one round of the test.
const CASE: &str = "COHORT_RED_TEAM_DROPPED_REUSED_CASE";
/// How many processes of their own the test runs the round in: whether the new pool is
/// mapped where the dropped one was depends on the layout (here 1 to 3 processes in 100
/// failed, each with its block area 64 MiB aligned, e.g. 0x7f2f54000000; the passing ones
/// only 2 MiB aligned). Not certain to fail: a miss is possible (about 1 run in 8 at 2%).
const ROUNDS: usize = 100;

/// The instances in memory of their own (`Cohort::new`), in [`ROUNDS`] processes of their
/// own (reruns of this test, each with its layout): the new instance's pool is mapped
/// where the dropped one's was in some of them. On lead ae6aaca (release-tests, 3 runs in
/// 30; debug 0 in 30 runs of one process each): 'the child: thread's slot 0x7f1ab0000080,
/// join's 0x7f1ab00000c0, verify Ok(..)' for both advices: the child's thread allocated
/// from the join's block (the copy's entry of the dropped heap kept: its pool's address
/// listed again).
#[test]
fn an_instance_dropped_and_another_made_in_the_window_leave_a_child_lacking_a_region_whole() {
    if std::env::var_os(CASE).is_some() {
        each_advice(false);
        return;
    }
    let name =
        "an_instance_dropped_and_another_made_in_the_window_leave_a_child_lacking_a_region_whole";
    let failed: Vec<String> = (0..ROUNDS)
        .filter_map(|_| {
            let out = red_team_common::rerun(name, &[(CASE, "1")]);
            (!out.status.success()).then(|| {
                let text = String::from_utf8_lossy(&out.stderr).into_owned()
                    + &String::from_utf8_lossy(&out.stdout);
                text.lines()
                    .filter(|l| l.contains("the child:") || l.contains("(advice"))
                    .collect::<Vec<_>>()
                    .join(" / ")
            })
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {ROUNDS} processes failed; the first: {}",
        failed.len(),
        failed[0]
    );
}

/// Guard (RED-112 tried with a fixed place): both instances formatted in the same caller
/// memory (`format_in`). Passes on lead ae6aaca (debug and release-tests, 30 runs each).
#[test]
fn guard_an_instance_formatted_again_in_the_window_leaves_a_child_lacking_a_region_whole() {
    each_advice(true);
}
