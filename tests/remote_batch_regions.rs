//! Which regions batch their remote frees: every pool no other process uses (a private
//! instance, a fixed region made with `RegionOptions`, caller memory the kernel maps
//! privately), and none that other processes may use (a shared-anonymous region, caller
//! memory mapped shared). Told apart by events, not time: the slots a thread freed that
//! have reached their block while that thread still runs (a batch holds its last chain per
//! block until its thread's slow path, exit or a flush). And what a batch in a private
//! region must survive: a view left and attached again while the freeing thread of the
//! first view still holds a pending chain.

mod common;

use cohort::{Cohort, RegionOptions};
use common::batches::{alloc_n, free_all, frees_not_at_their_block_while_the_freer_runs};
use common::memory::{map_aligned, memfd, private_aligned};
use std::sync::mpsc;
use std::thread;

cohort::lifetime_classes! {
    enum Life { A }
}

const CAPACITY: usize = 64 << 20;

/// A batched free leaves the block's last chain pending: at least one slot and at most a
/// chain's 8.
fn assert_batched(what: &str, elsewhere: usize) {
    assert!(
        (1..=8).contains(&elsewhere),
        "{what}: {elsewhere} of the slots another thread freed had not reached their block \
         while it ran (batched remote frees leave the last chain pending: 1 to 8)"
    );
}

#[test]
fn a_private_instance_batches_its_remote_frees() {
    let a = Cohort::<Life>::new();
    assert_batched(
        "Cohort::new",
        frees_not_at_their_block_while_the_freer_runs(&a, Life::A),
    );
}

/// Before regions in private mappings batched, their heaps' tokens (which carry the
/// region's tag, as a shared region's do) kept every remote free off the batch: this read
/// 0 (`0 of the slots another thread freed had not reached their block`).
#[test]
fn a_fixed_region_made_with_options_batches_its_remote_frees() {
    let a = Cohort::<Life>::with_options(&RegionOptions::new(CAPACITY)).expect("a fixed region");
    assert_batched(
        "Cohort::with_options",
        frees_not_at_their_block_while_the_freer_runs(&a, Life::A),
    );
}

/// As above, in caller memory the kernel maps privately (before: 0).
#[test]
fn a_region_in_private_caller_memory_batches_its_remote_frees() {
    let f = Cohort::<Life>::footprint(CAPACITY).unwrap();
    let mem = private_aligned(f.bytes);
    // SAFETY: ours, unused, mapped for the process's life.
    let a = unsafe { Cohort::<Life>::format_in(mem, f.bytes, &RegionOptions::new(CAPACITY)) }
        .expect("formatted");
    assert_batched(
        "format_in, private memory",
        frees_not_at_their_block_while_the_freer_runs(&a, Life::A),
    );
}

/// A region other processes may use pushes every remote free at once (a batch would die
/// with a process killed before its flush, and no other process could flush it).
#[test]
fn regions_other_processes_may_use_push_every_remote_free_at_once() {
    let a = Cohort::<Life>::shared_anonymous(CAPACITY).expect("a shared region");
    assert_eq!(
        frees_not_at_their_block_while_the_freer_runs(&a, Life::A),
        0,
        "shared_anonymous"
    );
    let f = Cohort::<Life>::footprint(CAPACITY).unwrap();
    let mem = map_aligned(memfd(f.bytes), f.bytes);
    // SAFETY: ours, unused, mapped for the process's life.
    let b = unsafe { Cohort::<Life>::format_in(mem, f.bytes, &RegionOptions::new(CAPACITY)) }
        .expect("formatted");
    assert_eq!(
        frees_not_at_their_block_while_the_freer_runs(&b, Life::A),
        0,
        "format_in, shared memory"
    );
}

/// A region in private caller memory is left (its instance dropped) while a thread of that
/// view holds a pending chain of frees into the main thread's block, and attached again:
/// the second view's flushes reach the first view's heap (its batch is in the region's
/// state, at the same addresses), so its statistics, `is_empty` and `verify` see every
/// slot freed, and the thread's exit later pushes nothing twice.
#[test]
fn pending_frees_of_a_thread_of_a_view_left_reach_their_block_in_the_view_attached_again() {
    let f = Cohort::<Life>::footprint(CAPACITY).unwrap();
    let mem = private_aligned(f.bytes);
    // SAFETY: ours, unused, mapped for the process's life.
    let a = unsafe { Cohort::<Life>::format_in(mem, f.bytes, &RegionOptions::new(CAPACITY)) }
        .expect("formatted");
    // A few slots: every one of them in the freer's pending chain (8 fit).
    let ptrs = alloc_n(&a, Life::A, 5);
    let (freed_tx, freed_rx) = mpsc::channel();
    let (exit_tx, exit_rx) = mpsc::channel::<()>();
    let a_at = &a as *const Cohort<Life> as usize;
    let freer = thread::spawn(move || {
        // SAFETY: the instance lives until the main thread has our message (it drops it
        // only after); we use it no more after.
        let a = unsafe { &*(a_at as *const Cohort<Life>) };
        free_all(a, Life::A, &ptrs);
        freed_tx.send(()).unwrap();
        // Runs on (its heap orphaned by the drop, its chain pending) until told to exit.
        exit_rx.recv().unwrap();
    });
    freed_rx.recv().unwrap();
    drop(a);
    // SAFETY: the region formatted above, mapped for the process's life.
    let b = unsafe { Cohort::<Life>::attach_in(mem, f.bytes, CAPACITY) }.expect("attached again");
    assert_eq!(
        b.stats().small.live,
        0,
        "frees pending in the first view's batch"
    );
    assert!(b.is_empty());
    // SAFETY: the freer waits and uses no instance.
    assert_eq!(unsafe { b.verify() }.expect("verifies").live, 0);
    exit_tx.send(()).unwrap();
    freer.join().unwrap();
    // The slots came back once: a block's worth of allocations gets each at most once.
    let again = alloc_n(&b, Life::A, 64);
    let distinct: std::collections::HashSet<_> = again.iter().collect();
    assert_eq!(distinct.len(), again.len(), "a slot handed out twice");
    free_all(&b, Life::A, &again);
    // SAFETY: no other thread uses `b`.
    assert_eq!(unsafe { b.verify() }.expect("verifies").live, 0);
    assert!(b.is_empty());
}
