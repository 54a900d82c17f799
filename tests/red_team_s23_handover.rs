//! Red-team attack of session 23 on the every-build check of a double free of the slot
//! another thread freed last onto a block's cross-thread list, across the hand-over of the
//! owner's heap to the pool: its thread's exit, its join's leave, or the take-over of a
//! dead process's heap in a shared region (`verify` reaps it). The hand-over gives the
//! heap's current block to the pool (`Header::hand_to_pool`), which collects the block's
//! remote list into its allocation list when its local list is empty. The owner O makes
//! `n` objects of class A; the test's thread F frees the last of them, `x` (a remote free:
//! F's chain, pushed by `stats`, or pushed at once in a shared-anonymous region), and the
//! others stay live; O's heap is handed over; then F frees `x` again. The README promises
//! a report in every build for the slot freed last onto the list the free would push it on
//! (for another thread's free, the block's cross-thread list or the owner's). Unreported,
//! `x` is on the pool-owned block's allocation list and on its remote list at once: handed
//! out twice. A test that found a defect names its number (RED-n) and the exact failure it
//! had before its fix.

mod red_team_common;
mod red_team_s22_common;

use cohort::{set_misuse_hook, Cohort, Misuse};
use red_team_common::{ended_unreaped, in_child, shared_words, wait};
use red_team_s22_common::{check, double_free_verdict, make, raise, unmake, Object};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc;

cohort::lifetime_classes! {
    enum Life { A, B }
}

/// Whose heap made the objects, and how it is handed to the pool.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Owner {
    /// Another thread's, which exits.
    ThreadExit,
    /// An explicit join of the test's thread, which leaves.
    JoinLeave,
    /// A forked child's (a shared-anonymous region), which exits without leaving; the
    /// test's process takes its heap over (`verify`).
    DeadProcess,
    /// Another thread's, whose objects fill a block (retired `FULL`, relisted onto the
    /// thread's returned stack by F's free), which exits. `n` is the block's capacity.
    FullThenExit,
}

/// Objects of `size` of class A, made until one lands in another block (freed at once):
/// the first block's, which is full (retired at that last allocation).
fn filled_block(a: &Cohort<Life>, size: usize, what: &str) -> Vec<Object> {
    let mut all = vec![make(a, size, Life::A, 0, what)];
    let block = all[0].0 >> 21;
    loop {
        let next = make(a, size, Life::A, all.len() as u8, what);
        if next.0 >> 21 != block {
            unmake(a, next, Life::A, what);
            return all;
        }
        all.push(next);
    }
}

/// O's `n` objects of `size` once F freed the last (pushed onto the block's remote list),
/// O freed the first when `owner_frees` (its local list's first), and O's heap was handed
/// over.
fn made_and_handed_over(
    a: &Cohort<Life>,
    size: usize,
    n: usize,
    owner: Owner,
    owner_frees: bool,
    what: &str,
) -> Vec<Object> {
    let f_frees_last = |all: &[Object]| {
        unmake(a, all[all.len() - 1], Life::A, what);
        // F's chain pushed onto the block's remote list (a private instance's batch).
        let _ = a.stats();
    };
    match owner {
        Owner::ThreadExit | Owner::FullThenExit => {
            let (made_tx, made) = mpsc::channel::<Vec<Object>>();
            let (freed_tx, freed) = mpsc::channel::<()>();
            std::thread::scope(|s| {
                // Moved in: dropped as this closure ends, however it ends, so that O's wait
                // for F's free ends too (a failed check here left O waiting, and the scope
                // waiting for O, for ever).
                let freed_tx = freed_tx;
                let o = s.spawn(move || {
                    let all = if owner == Owner::FullThenExit {
                        filled_block(a, size, what)
                    } else {
                        (0..n)
                            .map(|i| make(a, size, Life::A, i as u8, what))
                            .collect()
                    };
                    made_tx.send(all.clone()).expect("F");
                    // O exits once F freed `x`: its heap hands the block to the pool.
                    freed.recv().expect("F");
                    if owner_frees {
                        unmake(a, all[0], Life::A, what);
                    }
                });
                let all = made.recv().expect("O");
                f_frees_last(&all);
                freed_tx.send(()).expect("O");
                o.join().expect("O");
                all
            })
        }
        Owner::JoinLeave => {
            let o = a.join(1).expect("a join");
            let all: Vec<Object> = (0..n)
                .map(|i| {
                    let p = o.malloc(size, Life::A) as usize;
                    assert_ne!(p, 0, "{what}: the join's malloc({size})");
                    red_team_s22_common::patterned(p, size, i as u8)
                })
                .collect();
            f_frees_last(&all);
            if owner_frees {
                check(all[0], what);
                // SAFETY: a live object of the join's, freed once.
                unsafe { o.free(all[0].0 as *mut u8, size, Life::A) };
            }
            o.leave();
            all
        }
        Owner::DeadProcess => {
            // Word 0: how many addresses the child wrote (from word 2 on); word 1: F freed
            // `x`, the child may exit.
            let words = shared_words(n + 2);
            let child = in_child(30, || {
                let all: Vec<Object> = (0..n)
                    .map(|i| make(a, size, Life::A, i as u8, what))
                    .collect();
                for (i, o) in all.iter().enumerate() {
                    words[i + 2].store(o.0 as u64, Ordering::Relaxed);
                }
                words[0].store(n as u64, Ordering::Release);
                while words[1].load(Ordering::Acquire) == 0 {
                    std::thread::yield_now();
                }
                if owner_frees {
                    unmake(a, all[0], Life::A, what);
                }
                // Exits through `_exit` without leaving the region: a dead holder.
            });
            while words[0].load(Ordering::Acquire) == 0 {
                // A child that ended first (a failed check) never writes it.
                if let Some(ended) = ended_unreaped(child) {
                    assert_ne!(
                        words[0].load(Ordering::Acquire),
                        0,
                        "{what}: the child ended before it made its objects: {ended:?}"
                    );
                }
                std::thread::yield_now();
            }
            let all: Vec<Object> = (0..n)
                .map(|i| (words[i + 2].load(Ordering::Relaxed) as usize, size, i as u8))
                .collect();
            f_frees_last(&all);
            words[1].store(1, Ordering::Release);
            assert_eq!(wait(child), Ok(0), "{what}: the child");
            // SAFETY: no other thread uses the region meanwhile; its walk takes the dead
            // child's heap over.
            let verified = unsafe { a.verify() };
            assert!(verified.is_ok(), "{what}: verify: {verified:?}");
            all
        }
    }
}

/// Which slot F frees twice.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Twice {
    /// `x`, the slot F freed last (the remote list's first); O freed none.
    RemoteFirst,
    /// `x`, and O freed a slot of its own after F's free (the local list is not empty).
    RemoteFirstOwnerFreed,
    /// `y`, the slot O freed last (the local list's first), after F's free of `x`.
    LocalFirst,
}

/// One case: O makes `n` objects of `size`; F frees the last, O frees the first as `twice`
/// says, O's heap is handed over as `owner` says, and F frees the slot `twice` names
/// again. `shared`: a shared-anonymous region (remote frees pushed at once), else a
/// private instance. The failure, if any, with how often the slot was handed out among
/// the objects made after.
fn case(size: usize, n: usize, owner: Owner, twice: Twice, shared: bool) -> Result<(), String> {
    let objects = match n {
        0 => "a full block".to_string(),
        n => format!("{n} objects"),
    };
    let what = format!("size {size}, {objects}, {owner:?}, {twice:?}, shared: {shared}");
    let a = if shared {
        Cohort::<Life>::shared_anonymous(64 << 20).expect("shared anonymous")
    } else {
        Cohort::<Life>::new()
    };
    let owner_frees = twice != Twice::RemoteFirst;
    let objects = made_and_handed_over(&a, size, n, owner, owner_frees, &what);
    let n = objects.len();
    let x = if twice == Twice::LocalFirst {
        objects[0]
    } else {
        objects[n - 1]
    };
    let live = &objects[usize::from(owner_frees)..n - 1];
    let before = set_misuse_hook(Some(raise));
    // SAFETY: deliberately a double free.
    let twice = catch_unwind(AssertUnwindSafe(|| unsafe {
        a.free(x.0 as *mut u8, size, Life::A)
    }));
    set_misuse_hook(before);
    let caught = twice
        .err()
        .map(|e| *e.downcast::<Misuse>().expect("the hook's Misuse"));
    if caught.is_some() {
        live.iter().for_each(|&o| unmake(&a, o, Life::A, &what));
    } else {
        live.iter().for_each(|&o| check(o, &what));
    }
    // Unreported: the block hands `x` out from its allocation list and from its remote
    // list.
    double_free_verdict(a, (x.0, size), Life::A, n, caught, &what)
}

/// The failures of `owner`'s cases of sizes 64 and 1000, 10 and 300 objects, each slot of
/// `twice`, in each of `shared`'s kinds of instance.
fn failures(owner: Owner, twice: &[Twice], shared: &[bool]) -> Vec<String> {
    let mut failures = Vec::new();
    for &shared in shared {
        for &twice in twice {
            for size in [64usize, 1000] {
                for n in [10usize, 300] {
                    if let Err(e) = case(size, n, owner, twice, shared) {
                        failures.push(e);
                    }
                }
            }
        }
    }
    failures
}

/// The failures of the cases of a full block (sizes 64 and 1000), each slot of `twice`,
/// in a private instance and a shared-anonymous region.
fn full_block_failures(twice: &[Twice]) -> Vec<String> {
    let mut failures = Vec::new();
    for shared in [false, true] {
        for &twice in twice {
            for size in [64usize, 1000] {
                if let Err(e) = case(size, 0, Owner::FullThenExit, twice, shared) {
                    failures.push(e);
                }
            }
        }
    }
    failures
}

/// Panics with every failure of `failures`, if any.
fn assert_none(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} failures: {failures:#?}",
        failures.len()
    );
}

/// Guard: when O freed a slot of the block too, the hand-over leaves the remote list as
/// it is (the local list is not empty), and F's double frees of either list's first are
/// reported, naming the pointer, size and class, after each kind of hand-over. Passes on
/// main 23df1ec, release-tests and debug.
#[test]
fn a_double_free_of_either_first_after_a_hand_over_is_reported_when_the_owner_freed_too() {
    let both = [Twice::RemoteFirstOwnerFreed, Twice::LocalFirst];
    let mut found = failures(Owner::ThreadExit, &both, &[false, true]);
    found.extend(failures(Owner::JoinLeave, &both, &[false, true]));
    found.extend(failures(Owner::DeadProcess, &both, &[true]));
    found.extend(full_block_failures(&both));
    assert_none(found);
}

/// RED-140 (release builds: `Header::hand_to_pool` in src/block/life.rs collects the remote
/// list of a block whose local list is empty): after the owner's thread exits, the slot
/// another thread freed last onto the block's remote list is on its allocation list, and
/// that thread's double free of it passes unreported; the slot is handed out twice. Fails
/// on main 23df1ec, release-tests: all 8 cases, e.g. `size 64, 10 objects, ThreadExit,
/// RemoteFirst, shared: false: the double free of 0x7fbaa8000280 was not reported; handed
/// out 2 times among the next 134400 objects (all live)`. A debug build reports it (checked
/// mode). Fixed (session 24): the hand-over keeps the remote list as it is; whoever next
/// allocates from the block collects it and pops its first at once.
#[test]
fn a_remote_double_free_after_the_owners_thread_exit_is_reported() {
    assert_none(failures(
        Owner::ThreadExit,
        &[Twice::RemoteFirst],
        &[false, true],
    ));
}

/// RED-140 through a join's leave (the same hand-over). Fails on main 23df1ec,
/// release-tests: all 8 cases, e.g. `size 64, 10 objects, JoinLeave, RemoteFirst, shared:
/// false: the double free of 0x7f8fb0000280 was not reported; handed out 2 times among the
/// next 134400 objects (all live)`. A debug build reports it.
#[test]
fn a_remote_double_free_after_the_owners_join_left_is_reported() {
    assert_none(failures(
        Owner::JoinLeave,
        &[Twice::RemoteFirst],
        &[false, true],
    ));
}

/// RED-140 through the take-over of a dead process's heap in a shared region (`verify`
/// reaps it; the hand-over recounts the block, then collects its remote list). Fails on
/// main 23df1ec, release-tests: all 4 cases, e.g. `size 64, 10 objects, DeadProcess,
/// RemoteFirst, shared: true: the double free of 0x7f8ea3e00280 was not reported; handed
/// out 2 times among the next 134400 objects (all live)`. A debug build reports it.
#[test]
fn a_remote_double_free_after_a_dead_owners_take_over_is_reported() {
    assert_none(failures(Owner::DeadProcess, &[Twice::RemoteFirst], &[true]));
}

/// RED-140 through a full block: F's free relists it onto O's returned stack, and O's exit
/// hands it to the pool as its current block would be (`Pool::adopt_block`). Fails on main
/// 23df1ec, release-tests: all 4 cases, e.g. `size 64, a full block, FullThenExit,
/// RemoteFirst, shared: false: the double free of 0x7f93b41fffc0 was not reported; handed
/// out 2 times among the next 134400 objects (all live)`. A debug build reports it.
#[test]
fn a_remote_double_free_in_a_full_block_after_the_owners_exit_is_reported() {
    assert_none(full_block_failures(&[Twice::RemoteFirst]));
}
