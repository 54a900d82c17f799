//! Whether a thread's remote frees are batched, told apart by events, not time: the slots
//! a thread freed that have not reached their block while that thread still runs (a batch
//! holds its last chain per block until its thread's slow path, exit or a flush).

use cohort::{Cohort, Lifetime};
use std::sync::mpsc;
use std::thread;

/// 1 KiB objects: chains of 8 slots (a batch's chain holds 8 KiB).
pub const SIZE: usize = 1024;

/// `n` fresh `SIZE`-byte allocations of class `life`, each filled with its index.
pub fn alloc_n<L: Lifetime>(a: &Cohort<L>, life: L, n: usize) -> Vec<usize> {
    (0..n)
        .map(|i| {
            let p = a.malloc(SIZE, life);
            assert!(!p.is_null());
            // SAFETY: a fresh allocation of SIZE bytes.
            unsafe { p.write_bytes(i as u8, SIZE) };
            p as usize
        })
        .collect()
}

/// Frees what [`alloc_n`] gave, once each.
pub fn free_all<L: Lifetime>(a: &Cohort<L>, life: L, ptrs: &[usize]) {
    for &p in ptrs {
        // SAFETY: allocated by `alloc_n` on `a` in class `life`, freed once.
        unsafe { a.free(p as *mut u8, SIZE, life) };
    }
}

/// The caller fills one block with `SIZE`-byte slots; another thread frees them all and
/// waits; meanwhile the caller allocates a block's worth again and counts the slots that
/// come from another block: the frees that had not reached the block (0 when every remote
/// free is pushed at once; the batch's pending last chain, 1 to 8 slots, when batched).
/// Then the thread exits (pushing its batch), and every slot is freed; the region
/// verifies empty.
pub fn frees_not_at_their_block_while_the_freer_runs<L: Lifetime>(a: &Cohort<L>, life: L) -> usize {
    let per_block =
        cohort::class::CLASSES[cohort::class::class_of(SIZE, 16).unwrap()].capacity as usize;
    let first = alloc_n(a, life, per_block);
    let block = a.block_of(first[0] as *const u8, SIZE).unwrap();
    assert!(first
        .iter()
        .all(|&p| a.block_of(p as *const u8, SIZE) == Some(block)));
    let (again, elsewhere) = thread::scope(|s| {
        let (freed_tx, freed_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let first = &first;
        let freer = s.spawn(move || {
            free_all(a, life, first);
            freed_tx.send(()).unwrap();
            // Alive, its batch unflushed, until the caller has allocated again.
            done_rx.recv().unwrap();
        });
        freed_rx.recv().unwrap();
        let again = alloc_n(a, life, per_block);
        let elsewhere = again
            .iter()
            .filter(|&&p| a.block_of(p as *const u8, SIZE) != Some(block))
            .count();
        done_tx.send(()).unwrap();
        // Joined: its exit (which pushes its batch) is over before the frees below.
        freer.join().unwrap();
        (again, elsewhere)
    });
    free_all(a, life, &again);
    assert!(a.is_empty(), "every slot freed once");
    // SAFETY: no other thread uses `a`.
    let v = unsafe { a.verify() }.expect("the region verifies");
    assert_eq!(v.live, 0);
    elsewhere
}
