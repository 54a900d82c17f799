//! Red-team attacks of session 22 on the double-free checks of the remote free's quick way
//! (a slot added to its block's pending chain in the freeing thread's batch: the chain's
//! first, then the block's remote list's first and the owner's local list's first, each
//! compared in memory). A thread F frees objects of the main thread O (remote frees) while
//! the block's chain in F's batch holds 0, 1, ... up to its limit and one more slots, and
//! frees again the slot freed last onto each list a free of it would meet: the chain's
//! first, the remote list's first (a chain pushed by `stats`), the local list's first (O's
//! own free); and the same after O exited (its heap maybe adopted by another thread).
//! Every such double free is reported in every build, naming the pointer, size and
//! lifetime class, and changes nothing: the objects freed after, `verify`, `is_empty` and
//! a fresh allocation of as many objects (none handed out twice, every pattern whole)
//! pass. A private instance, a fixed region, private memory formatted as a region, and a
//! shared-anonymous region (whose remote frees are never batched). A test that found a
//! defect is `#[ignore]`d with its number (RED-n) and the exact failure.

mod red_team_common;
mod red_team_s22_common;

use cohort::{set_misuse_hook, Cohort, Misuse, RegionOptions};
use red_team_s22_common::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Mutex};

cohort::lifetime_classes! {
    enum Life { A, B }
}

/// The hook is one per process: the tests take turns.
static TURN: Mutex<()> = Mutex::new(());

/// The sizes tried: chains of 64 slots (strides 4, 8, 16, 48), 32, 8 and 2 (`8192 / stride`,
/// at most 64).
const SIZES: [usize; 7] = [4, 8, 16, 48, 256, 1000, 4000];

/// The block size (every block is aligned to it).
const BLOCK: usize = 1 << 21;

/// True when a private instance's remote frees wait in chains: the process may use
/// `membarrier` (without it, every remote free is pushed to its block at once).
fn chains_kept() -> bool {
    const REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;
    // SAFETY: membarrier takes integers and touches no memory of ours; registering again
    // is harmless.
    unsafe { libc::syscall(libc::SYS_membarrier, REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0 }
}

/// Runs jobs on a thread of its own, one at a time, each to its end before `run` returns.
struct Worker<'s> {
    jobs: mpsc::Sender<Box<dyn FnOnce() + Send + 's>>,
    done: mpsc::Receiver<Result<(), String>>,
}

impl<'s> Worker<'s> {
    fn start(s: &'s std::thread::Scope<'s, '_>) -> Worker<'s> {
        let (jobs, jobs_in) = mpsc::channel::<Box<dyn FnOnce() + Send + 's>>();
        let (done_out, done) = mpsc::channel();
        s.spawn(move || {
            for job in jobs_in {
                let ended = catch_unwind(AssertUnwindSafe(job)).map_err(|e| {
                    e.downcast_ref::<Misuse>().map_or_else(
                        || red_team_common::panic_message(&*e),
                        |m| format!("an unexpected report: {m}"),
                    )
                });
                if done_out.send(ended).is_err() {
                    break;
                }
            }
        });
        Worker { jobs, done }
    }

    /// Runs `job` on the worker's thread; panics with its failure.
    fn run(&self, job: impl FnOnce() + Send + 's) {
        self.jobs.send(Box::new(job)).expect("the worker is gone");
        if let Err(e) = self.done.recv().expect("the worker is gone") {
            panic!("{e}");
        }
    }
}

/// Frees `o` again: a double free that must be reported naming it.
fn again(a: &Cohort<Life>, o: Object, what: &str) {
    use_the_other_instance();
    double_free_reported(a, o, Life::A, what);
}

/// Checks `o`'s pattern and frees it.
fn free(a: &Cohort<Life>, o: Object, what: &str) {
    use_the_other_instance();
    unmake(a, o, Life::A, what);
}

thread_local! {
    /// True on a thread that uses [`OTHER`] before each of its frees.
    static ALTERNATE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Another instance, which a thread set to [`ALTERNATE`] allocates from and frees into
/// before each free: the heap it used last is then never the freed object's instance's.
static OTHER: Cohort<Life> = Cohort::new();

fn use_the_other_instance() {
    if ALTERNATE.with(|alternate| alternate.get()) {
        let p = OTHER.malloc(32, Life::B);
        assert!(!p.is_null());
        // SAFETY: allocated above, freed once.
        unsafe { OTHER.free(p, 32, Life::B) };
    }
}

/// Which list's first the double free meets.
#[derive(Clone, Copy, Debug)]
enum First {
    /// The block's chain in F's batch: F frees its last free again.
    Chain,
    /// The block's remote list: F frees X, pushes it (`stats`), fills the chain, frees X.
    Remote,
    /// O's local list: O frees X, F fills the chain, frees X.
    Local,
}

/// F's frees of `same`, objects of one block, around the double free that `first` names
/// (for [`First::Local`], its owner freed `same[0]` already), `k` of them before it; then
/// every object of `same` is free.
fn frees_around_the_double_free(
    a: &Cohort<Life>,
    same: &[Object],
    k: usize,
    first: First,
    what: &str,
) {
    let twice = match first {
        // k + 1 frees; the last is the chain's first (past the limit, the first of the
        // chain that follows the pushed one).
        First::Chain => {
            same[..=k].iter().for_each(|&o| free(a, o, what));
            same[k]
        }
        First::Remote => {
            free(a, same[0], what);
            // Every batch pushed: same[0] is the remote list's first (its owner waits or
            // has exited, and allocates nothing of this size meanwhile).
            let _ = a.stats();
            same[1..=k].iter().for_each(|&o| free(a, o, what));
            same[0]
        }
        First::Local => {
            same[1..=k].iter().for_each(|&o| free(a, o, what));
            same[0]
        }
    };
    again(a, twice, what);
    same[k + 1..].iter().for_each(|&o| free(a, o, what));
}

/// `k + 80` objects of `size`, class A, made by the calling thread: (those in the block of
/// the first, the others), or `None` when too few lie in that block for `k`.
fn objects_for(
    a: &Cohort<Life>,
    size: usize,
    k: usize,
    what: &str,
) -> Option<(Vec<Object>, Vec<Object>)> {
    let objects: Vec<Object> = (0..k + 80)
        .map(|i| make(a, size, Life::A, i as u8, what))
        .collect();
    let block = objects[0].0 / BLOCK;
    let (same, others): (Vec<Object>, Vec<Object>) =
        objects.iter().copied().partition(|o| o.0 / BLOCK == block);
    if same.len() < k + 2 {
        // The objects straddle a block boundary: too few in the block for this k.
        objects.into_iter().for_each(|o| free(a, o, what));
        return None;
    }
    Some((same, others))
}

/// One attack: O (this thread) allocates objects of `size`, F frees `k` of those in the
/// same block as the first around the double free that `first` names, then every object
/// is freed once (those in other blocks half by F, half by O).
fn attack<'s>(a: &'s Cohort<Life>, f: &Worker<'s>, size: usize, k: usize, first: First) {
    let what = format!("size {size}, {k} slots on the chain, {first:?}'s first");
    let Some((same, others)) = objects_for(a, size, k, &what) else {
        return;
    };
    if let First::Local = first {
        free(a, same[0], &what);
    }
    let w = what.clone();
    f.run(move || frees_around_the_double_free(a, &same, k, first, &w));
    let theirs: Vec<Object> = others.iter().copied().step_by(2).collect();
    let w = what.clone();
    f.run(move || theirs.into_iter().for_each(|o| free(a, o, &w)));
    others
        .into_iter()
        .skip(1)
        .step_by(2)
        .for_each(|o| free(a, o, &what));
}

/// As [`attack`], with an owner that exits first: thread O makes the objects (and, for
/// [`First::Local`], frees the first of its block) and exits; thread N, which may adopt O's
/// heap, holds objects of class B of another size throughout; F frees O's objects around
/// the double free, then every other object.
fn attack_after_exit<'s>(
    a: &'s Cohort<Life>,
    s: &'s std::thread::Scope<'s, '_>,
    f: &Worker<'s>,
    size: usize,
    k: usize,
    first: First,
) {
    let what = format!("size {size}, {k} slots on the chain, {first:?}'s first, owner exited");
    let w = what.clone();
    let made = s
        .spawn(move || {
            let made = objects_for(a, size, k, &w);
            if let (Some((same, _)), First::Local) = (&made, first) {
                free(a, same[0], &w);
            }
            made
        })
        .join()
        .expect("O");
    let Some((same, others)) = made else {
        return;
    };
    let n = Worker::start(s);
    let kept = std::sync::Arc::new(Mutex::new(Vec::new()));
    let (k2, w) = (kept.clone(), what.clone());
    n.run(move || k2.lock().unwrap().push(make(a, 24, Life::B, 9, &w)));
    let w = what.clone();
    f.run(move || {
        frees_around_the_double_free(a, &same, k, first, &w);
        others.into_iter().for_each(|o| free(a, o, &w));
    });
    n.run(move || {
        for o in kept.lock().unwrap().drain(..) {
            unmake(a, o, Life::B, &what);
        }
    });
}

/// Every attack on `a`, with sizes from [`SIZES`] and chains from empty to one past full
/// (`batched`: `a`'s remote frees wait in chains), the owner alive or exited, F using
/// [`OTHER`] before each free (`alternate`) or not; then the instance verifies, is empty,
/// and hands out fresh objects once each.
fn attacks(a: &Cohort<Life>, name: &str, batched: bool, alternate: bool) {
    std::thread::scope(|s| {
        let f = Worker::start(s);
        f.run(move || ALTERNATE.with(|set| set.set(alternate)));
        // F's own heap first (a free joins one anyway): objects of class B, live
        // throughout.
        let mine = std::sync::Arc::new(Mutex::new(Vec::new()));
        let kept = mine.clone();
        let what = name.to_string();
        f.run(move || {
            for n in SIZES {
                kept.lock().unwrap().push(make(a, n, Life::B, 7, &what));
            }
        });
        for size in SIZES {
            let limit = (8192 / size.next_multiple_of(16)).clamp(1, 64);
            for k in (0..=limit + 1).filter(|&k| k <= 3 || k + 3 >= limit || k % 7 == 0) {
                // The remote list's first stays the slot while no chain is pushed (a full
                // one is, at the next free; without chains, every free).
                let remote = k == 0 || (batched && k <= limit);
                for first in [First::Chain, First::Local, First::Remote] {
                    if remote || !matches!(first, First::Remote) {
                        attack(a, &f, size, k, first);
                        attack_after_exit(a, s, &f, size, k, first);
                    }
                }
            }
        }
        let what = name.to_string();
        f.run(move || {
            for o in mine.lock().unwrap().drain(..) {
                unmake(a, o, Life::B, &what);
            }
        });
    });
    // SAFETY: no other thread uses the instance now.
    if let Err(e) = unsafe { a.verify() } {
        panic!("{name}: verify after the double frees: {e}");
    }
    assert!(a.is_empty(), "{name}: not empty: {:?}", a.stats());
    fresh_objects_once(a, &SIZES, 3000, Life::A, name);
    assert!(
        a.is_empty(),
        "{name}: not empty at the end: {:?}",
        a.stats()
    );
}

#[test]
fn double_frees_of_each_lists_first_from_another_thread_are_reported_at_every_chain_fill() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let before = set_misuse_hook(Some(raise));
    attacks(&Cohort::<Life>::new(), "private", chains_kept(), false);
    set_misuse_hook(before);
}

#[test]
fn double_frees_of_each_lists_first_in_private_regions_are_reported_at_every_chain_fill() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let capacity = 64 << 20;
    let f = Cohort::<Life>::footprint(capacity).expect("footprint");
    let mem = red_team_common::aligned_anonymous(f.bytes, f.align, false);
    let options = RegionOptions::new(capacity);
    let fixed = Cohort::<Life>::with_options(&options).expect("fixed");
    // SAFETY: ours, unused, mapped for the process's life.
    let formatted = unsafe { Cohort::<Life>::format_in(mem, f.bytes, &options) }.expect("format");
    let before = set_misuse_hook(Some(raise));
    attacks(&fixed, "fixed", chains_kept(), false);
    attacks(&formatted, "formatted", chains_kept(), false);
    set_misuse_hook(before);
}

#[test]
fn double_frees_of_each_lists_first_in_a_shared_region_are_reported() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let a = Cohort::<Life>::shared_anonymous(64 << 20).expect("shared anonymous");
    let before = set_misuse_hook(Some(raise));
    attacks(&a, "shared anonymous", false, false);
    set_misuse_hook(before);
}

/// As above in an instance past the threads' slots (id 16 and up: every such instance
/// shares slot 0, always empty, so the quick way finds the caller's heap as the one it used
/// last): 16 instances used and dropped first.
#[test]
fn double_frees_of_each_lists_first_in_an_instance_past_the_slots_are_reported() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..16 {
        let used = Cohort::<Life>::new();
        let p = used.malloc(16, Life::A);
        // SAFETY: allocated above, freed once.
        unsafe { used.free(p, 16, Life::A) };
    }
    let before = set_misuse_hook(Some(raise));
    attacks(
        &Cohort::<Life>::new(),
        "past the slots",
        chains_kept(),
        false,
    );
    set_misuse_hook(before);
}

/// As above, F allocating from and freeing into another instance before each free (the
/// heap it used last is never the freed object's instance's: the quick way does not find
/// the caller's heap, the general way does).
#[test]
fn double_frees_of_each_lists_first_by_a_thread_alternating_instances_are_reported() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let before = set_misuse_hook(Some(raise));
    attacks(&Cohort::<Life>::new(), "alternating", chains_kept(), true);
    set_misuse_hook(before);
}
