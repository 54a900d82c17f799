//! Loom model of a heap's batch of remote frees ([`RemoteBatch`]) on a real pool: the
//! batch's holder frees two slots of a block owned by another heap (a chain of two,
//! pending; the second by the quick way, `RemoteBatch::try_append`, when it may), another
//! thread flushes every batch (a release, `compact`, `verify`, the statistics:
//! `free::flush_batches`), and the block's owner, which has no free slot, runs the alloc
//! slow path's steps on it (collect the remote list, else retire it `FULL`).
//! Run with `.ci/loom.sh`.

use super::{BatchFree, RemoteBatch};
use crate::block::loom::Slots;
use crate::class::class_of;
use crate::pool::loom::{block, hand_out_all, is_full, test_pool, TOKEN};
use crate::sync::model_bounded;
use loom::sync::Arc;
use loom::thread;

/// What the owner's slow path did with its block, which had no free slot.
#[derive(Debug, PartialEq, Eq)]
enum Owner {
    /// It collected remote frees (the chain had arrived).
    Collected,
    /// It retired the block `FULL`: the chain's push relists it.
    Retired,
}

/// The batch's flush against the owner's collect and the block's retirement.
///
/// Checks: each freed slot comes back to the owner exactly once, with the payload its
/// freeing thread wrote before the free (through the batch's exclusion between holder and
/// flusher, the push's Release and the collect's Acquire); the holder and the flusher never
/// touch the entries at once (loom's cell checks it); a block the owner retired is not
/// left `FULL` with the chain on its remote list (the push that cleared `FULL` reported
/// it, so it was listed again); the batch ends with nothing pending, whichever thread
/// flushed.
///
/// Fails with: the holder's fence removed (`fence::light`, or `fence::light_asymmetric` in
/// the quick way: the holder and the flusher both read the other's word before it was
/// stored and touch the entries at once), or
/// `RemoteBatch::leave`'s store Release -> Relaxed (the entries touched by two threads
/// unordered); `push_remote_chain` not reporting `FULL` (the retired block keeps the
/// chain: "lost"); `flush_entries` skipping the last entry (a slot never comes back).
#[test]
fn batch_flush_races_collect_and_retire() {
    model_bounded(3, || {
        let pool = test_pool();
        // 1 KiB slots: chains of up to 8 (`BATCH_BYTES / stride`).
        let class = class_of(1024, 8).expect("a 1 KiB class");
        let b = pool
            .take_block(&mut pool.lock(), class, 0, TOKEN)
            .expect("a block");
        hand_out_all(b);
        let cap = b.geometry().capacity;
        let (first, stride) = (b.geometry().first, b.geometry().stride);
        let (a, c) = (first + (cap - 2) * stride, first + (cap - 1) * stride);
        let slots = Arc::new(Slots::new(&[a, c]));
        let base = b.base() as usize;
        let batch = Arc::new(RemoteBatch::new());
        let holder = {
            let (pool, slots, batch) = (pool.clone(), slots.clone(), batch.clone());
            thread::spawn(move || {
                // SAFETY: a carved block of `pool`, alive for the whole model.
                let b = unsafe { block(base) };
                for (off, value) in [(a, 0xA), (c, 0xC)] {
                    slots.write(b, off, value);
                    // The quick way first (`free::Instance::free_other`), the general way
                    // when it did nothing: the first free starts the chain (and allows the
                    // quick way), the second joins it unless the flusher has the batch.
                    // SAFETY: `off` is live (handed out) and this thread gives it up; `b`
                    // is the pool's, owned by another heap.
                    if !unsafe { batch.try_append(b, b.base().wrapping_add(off as usize)) } {
                        // SAFETY: as above; the quick way changed nothing.
                        let done = unsafe { batch.free(&pool, b, off) };
                        assert_eq!(done, BatchFree::Done);
                    }
                }
            })
        };
        let flusher = {
            let (pool, batch) = (pool.clone(), batch.clone());
            // SAFETY: the batch's blocks are the pool's, alive for the whole model.
            thread::spawn(move || unsafe { batch.flush(&pool) })
        };
        // The freeing threads first (see `crate::block::loom`'s docs).
        thread::yield_now();
        // The owner's slow path: no free slot, so collect, else retire.
        assert_eq!(b.pop(), None, "no free slot");
        let owner = if b.collect_remote() > 0 {
            Owner::Collected
        } else if b.try_retire() {
            Owner::Retired
        } else {
            assert!(b.collect_remote() > 0, "the push that beat the retire");
            Owner::Collected
        };
        holder.join().unwrap();
        flusher.join().unwrap();
        // The holder's thread exits: its batch is flushed (`heap_handover::abandon`).
        // SAFETY: as above.
        unsafe { batch.flush_own(&pool) };
        if owner == Owner::Retired {
            assert!(!is_full(b), "a retired block with freed slots, lost");
        }
        // The owner (again current: `Heap::drain_returned` when it was relisted) takes
        // back every freed slot.
        let mut back = Vec::new();
        loop {
            match b.pop() {
                Some((off, _)) => {
                    slots.check(b, off, if off == a { 0xA } else { 0xC });
                    back.push(off);
                }
                None if b.collect_remote() == 0 => break,
                None => {}
            }
        }
        back.sort_unstable();
        assert_eq!(back, [a, c], "every freed slot back exactly once");
        assert_eq!(b.used(), cap);
    });
}
