//! Red-team attacks (session 18) on the fork handlers with caller memory a fork child does
//! not get as a copy: `format_in` takes "memory the caller already has", and a program may
//! have advised it `MADV_DONTFORK` (RDMA libraries do so for every registered buffer:
//! `ibv_fork_init`) or `MADV_WIPEONFORK`. The kernel then gives a fork child no mapping
//! there (or a zeroed one), while cohort's `child` handler walks the region's heaps (and
//! `prepare`/`parent` lock and unlock it) for every private pool. A child that never uses
//! the region (a `fork` then `exec`, `system`, a worker of its own) must live.
//!
//! One such region makes every fork of its process fail, so each case runs in a process of
//! its own (this test binary again, `CASE` set).

mod red_team_common;

use cohort::{Cohort, RegionOptions};
use red_team_common::{aligned_anonymous, in_child, wait, Ended};

cohort::lifetime_classes! {
    enum Life { Short }
}

const CAP: usize = 16 << 20;

const CASE: &str = "COHORT_RED_TEAM_FORK_MEMORY_CASE";

/// Runs [`fork_with_advised_memory`] in a process of its own (this binary's test `test`
/// again): how its fork child ended, as the process reports it.
fn isolated(test: &str, advice: libc::c_int, shared: bool) -> Ended {
    if std::env::var_os(CASE).is_some() {
        let ended = fork_with_advised_memory(advice, shared);
        println!("ended {ended:?}");
        std::process::exit(0);
    }
    let out = red_team_common::rerun(test, &[(CASE, "1")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}: {stdout}", out.status);
    match stdout.split("ended ").nth(1).and_then(|l| l.lines().next()) {
        Some("Ok(0)") => Ok(0),
        Some(other) => panic!("the child ended {other}"),
        None => panic!("no report: {stdout}"),
    }
}

/// A caller-memory region (in private or `shared` memory) advised `advice`, in use by the process (objects of two
/// threads); a fork child that touches nothing of it and exits: how it ended.
fn fork_with_advised_memory(advice: libc::c_int, shared: bool) -> Ended {
    let f = Cohort::<Life>::footprint(CAP).expect("footprint");
    let mem = aligned_anonymous(f.bytes, f.align, shared);
    // SAFETY: our fresh mapping; the advice changes what a fork child gets, not its bytes.
    assert_eq!(
        unsafe { libc::madvise(mem.cast(), f.bytes, advice) },
        0,
        "madvise"
    );
    // SAFETY: fresh memory of `f.bytes`, aligned, this region's for the rest of the process.
    let a = unsafe { Cohort::<Life>::format_in(mem, f.bytes, &RegionOptions::new(CAP)) }
        .expect("format_in");
    let p = a.malloc(64, Life::Short);
    std::thread::scope(|s| {
        s.spawn(|| assert!(!a.malloc(100, Life::Short).is_null()));
    });
    assert!(!p.is_null());
    let pid = in_child(30, || {});
    let ended = wait(pid);
    // The parent goes on with the region.
    // SAFETY: allocated above with this size and class, freed once.
    unsafe { a.free(p, 64, Life::Short) };
    assert!(!a.malloc(64, Life::Short).is_null());
    core::mem::forget(a);
    ended
}

/// RED-81: private caller memory advised `MADV_DONTFORK`: on main 53822bb the child dies
/// of SIGSEGV in `cohort::fork::child` (gdb, following the child: frame 0
/// `cohort::fork::child`, frame 1 glibc's `__run_postfork_handlers`), which walks the
/// region's heaps where the child has no mapping. The same memory without the advice: the
/// child exits 0.
#[test]
fn a_fork_child_lives_when_the_region_is_not_forked() {
    assert_eq!(
        isolated(
            "a_fork_child_lives_when_the_region_is_not_forked",
            libc::MADV_DONTFORK,
            false
        ),
        Ok(0)
    );
}

/// Guard: private caller memory advised `MADV_WIPEONFORK` (the child's copy reads zero):
/// the child lives (passes on main 53822bb, in a process of its own).
#[test]
fn a_fork_child_lives_when_the_region_is_wiped_on_fork() {
    assert_eq!(
        isolated(
            "a_fork_child_lives_when_the_region_is_wiped_on_fork",
            libc::MADV_WIPEONFORK,
            false
        ),
        Ok(0)
    );
}

/// RED-81's sibling: shared caller memory advised `MADV_DONTFORK` (a region other
/// processes may use, whose lock the handlers leave alone): on main 53822bb the child dies
/// of SIGSEGV too, in `cohort::per_thread::owned::forget_pool` (called by
/// `cohort::fork::child`), which reads the thread's heaps in the region.
#[test]
fn a_fork_child_lives_when_a_shared_region_is_not_forked() {
    assert_eq!(
        isolated(
            "a_fork_child_lives_when_a_shared_region_is_not_forked",
            libc::MADV_DONTFORK,
            true
        ),
        Ok(0)
    );
}

/// Guard: the same memory without advice: the child lives (the attacks' control).
#[test]
fn a_fork_child_lives_with_the_region_forked_as_usual() {
    assert_eq!(
        isolated(
            "a_fork_child_lives_with_the_region_forked_as_usual",
            libc::MADV_NORMAL,
            false
        ),
        Ok(0)
    );
}
