//! Loom models of a claim of a live heap's `returned` stack ([`Pool::claim_returned`], what
//! `heap_handover::claim` runs for another thread out of memory): against the relisting
//! free, the heap's own lock-free drain (`Heap::drain_returned`) and the heap's local free
//! into the block. On the real pool and heap (see `crate::pool::loom`'s fixtures); run with
//! `.ci/loom.sh`.
//!
//! Every model names a mutation of `src/` that makes it fail (each was tried, then undone).

use super::loom::{end, full_block, new_heap};
use crate::block::Header;
use crate::heap::Heap;
use crate::heap_record::HeapRecord;
use crate::pool::loom::{block, check, slot, test_pool, TestPool};
use crate::pool::Pool;
use crate::sync::model;
use loom::sync::Arc;
use loom::thread;

/// A thread that frees slots `from..capacity` of block `base` as one chain (as a batch
/// pushes its chain of a block: `crate::remote`), relisting the block when the push finds
/// it `FULL`.
fn free_chain(pool: &Arc<TestPool>, base: usize, from: u32) -> thread::JoinHandle<()> {
    let pool = pool.clone();
    thread::spawn(move || {
        // SAFETY: a carved block of the pool the thread holds.
        let b = unsafe { block(base) };
        let last = b.capacity() - 1;
        for i in from..last {
            // SAFETY: live slots this thread gives up, linked in order.
            unsafe { b.link_slot(slot(b, i), slot(b, i + 1)) };
        }
        // SAFETY: the chain of the `last - from + 1` live slots linked above.
        if unsafe { b.push_remote_chain(slot(b, from), slot(b, last), last - from + 1) } {
            pool.relist(b);
        }
        pool.after_remote_free(b);
    })
}

/// A thread out of memory that claims `heap`'s returned blocks under the pool lock:
/// how many it gave to the pool.
fn claimer(pool: &Arc<TestPool>, heap: &Heap) -> thread::JoinHandle<usize> {
    let pool = pool.clone();
    let record = core::ptr::from_ref(&heap.record) as usize;
    thread::spawn(move || {
        // SAFETY: the heap's record stays mapped until the model's teardown.
        let record = unsafe { &*(record as *const HeapRecord) };
        pool.claim_returned(&mut pool.lock(), record)
    })
}

/// How many times the heap lists block `base` (current or partial).
fn listed_on(pool: &Pool, heap: &Heap, base: usize) -> usize {
    let mut n = 0;
    heap.for_each_listed(pool, |h: &Header, _| {
        n += usize::from(h.base() as usize == base)
    });
    n
}

/// True when the pool keeps `base` empty or gave it back to the region (not in use).
fn with_the_pool(pool: &Pool, base: usize) -> bool {
    let census = check(pool);
    census.retained.contains(&base) || !census.in_use.contains(&base)
}

/// The heap's `FULL` block `b` has every slot freed by another thread (one chain, whose
/// push relists `b` on the heap's `returned` stack), while another thread out of memory
/// claims the heap's returned blocks and the heap's thread drains its stack (its slow
/// path's `Heap::drain_returned`, without the lock).
///
/// Checks: `b` ends exactly once either with the pool (kept empty or given back: the
/// claim gave it) or on the heap's lists (its drain, or a later one, listed it), never
/// both and never lost; the pool's invariants hold ([`check`]).
///
/// Fails with: `BlockStack::take_all` reading the top and storing `NONE` instead of one
/// swap (the claim and the drain both take `b`; the drain lists a block the claim gave the
/// pool, whose key is then the empty one: 'index out of bounds: the len is 163 but the
/// index is 255').
#[test]
fn a_claim_and_the_owners_drain_take_an_emptied_block_once() {
    model(|| {
        let pool = test_pool();
        let heap = new_heap(&pool);
        let base = full_block(heap);
        let freer = free_chain(&pool, base, 0);
        let claim = claimer(&pool, heap);
        // The other threads first (see `crate::block::loom`'s docs).
        thread::yield_now();
        heap.drain_returned();
        freer.join().unwrap();
        let given = claim.join().unwrap();
        // A relist after the drain: the heap's next slow path lists it.
        heap.drain_returned();
        let pooled = usize::from(with_the_pool(&pool, base));
        assert_eq!(given, pooled, "the claim gave it");
        let listed = listed_on(&pool, heap, base);
        assert_eq!(
            pooled + listed,
            1,
            "with the pool {pooled}, listed {listed} (2: taken twice; 0: lost)"
        );
        end(&pool, &[heap]);
    });
}

/// As above, but the heap's thread frees one slot of `b` itself (a local free, whose slow
/// path takes `b` out of its `Full` role: `Heap::free_slow`) while the other thread's chain
/// frees every other slot: `b` ends empty, but its owner wrote to it after the retire, so a
/// claim must leave it to the heap ([`Header::all_freed_remotely`]).
///
/// Checks: the claim gives nothing; `b` ends on the heap's lists once, empty; the pool's
/// invariants hold.
///
/// Fails with: `Pool::claim_returned` giving blocks with `live() == 0` instead (a schedule
/// where the claim reads the count the local free left and gives `b` to the pool while its
/// owner is still in the free's slow path: 'given while its owner freed into it'), or
/// dropping the blocks it keeps instead of pushing them back ('listed once').
#[test]
fn a_claim_leaves_a_block_its_owner_frees_into() {
    model(|| {
        let pool = test_pool();
        let heap = new_heap(&pool);
        let base = full_block(heap);
        // SAFETY: a carved block of `pool`.
        let b = unsafe { block(base) };
        let freer = free_chain(&pool, base, 1);
        let claim = claimer(&pool, heap);
        thread::yield_now();
        // SAFETY: slot 0 is live, the heap's, and freed once.
        assert!(unsafe { heap.free_local(b, b.base().wrapping_add(slot(b, 0) as usize)) });
        freer.join().unwrap();
        let given = claim.join().unwrap();
        assert_eq!(given, 0, "given while its owner freed into it");
        heap.drain_returned();
        assert_eq!(listed_on(&pool, heap, base), 1, "listed once");
        assert_eq!(b.live(), 0);
        check(&pool);
        end(&pool, &[heap]);
    });
}
