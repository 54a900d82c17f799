//! Loom models of heaps changing hands, on the real code: a thread's exit ([`abandon`]) and
//! a new thread's adoption of the heap it left ([`adopt_or_create`]), against a remote free
//! into one of the heap's blocks ([`Pool::free_remote`], which relists a `FULL` block on
//! its owner's `returned` stack) and the pool's reclaim of abandoned heaps' returned blocks
//! ([`Pool::reclaim_abandoned`], also run by [`Pool::take_block`]).
//!
//! The pool, its region and the heaps are the real ones, built inside each model (see
//! `crate::pool::loom`, whose fixtures these models share); slots carry a payload checked
//! through loom's shadow cells (`crate::block::loom::Slots`). Run with `.ci/loom.sh`.
//!
//! Every model names a mutation of `src/` that makes it fail (each was tried, then undone).

use super::{abandon, adopt_or_create, reap_dead, teardown, THREAD_GROUP};
use crate::block::loom::Slots;
use crate::block::{header_of, Header};
use crate::class::class_of;
use crate::heap::{counted_snapshot, Heap};
use crate::heap_record::HeapState;
use crate::pool::loom::{
    big_class, block, check, hand_out_all, is_full, slot, test_pool, TestPool, TOKEN,
};
use crate::pool::Pool;
use crate::sync::{model, model_bounded};
use core::ptr;
use loom::sync::Arc;
use loom::thread;

/// The instance of the models' heaps.
const INSTANCE: u64 = 1;

/// A new heap of `pool`, for a thread (what a thread's first allocation joins).
pub(super) fn new_heap(pool: &Pool) -> &'static Heap {
    let heap = Heap::create(pool, INSTANCE, THREAD_GROUP);
    assert!(!heap.is_null(), "no heap");
    // SAFETY: a heap stays mapped until the model's teardown, after every use.
    unsafe { &*heap }
}

/// The heap's thread allocates from a fresh block of [`big_class`] until the block has no
/// free slot and the heap retires it `FULL` ([`Heap::alloc_slow`]; the fixture
/// [`hand_out_all`] stands for the allocations between the first and the last). Returns the
/// block's base: every slot of it is live. The heap's current block is another one, with
/// one live slot.
pub(super) fn full_block(heap: &Heap) -> usize {
    let class = big_class();
    let first = heap.alloc_slow(class, 0, ptr::null_mut).expect("a slot").0;
    // SAFETY: a slot of a carved block, mapped for the pool's life.
    let b = unsafe { &*header_of(first) };
    hand_out_all(b);
    // The block is current: its allocation state is its head's cursor (`crate::heap::Cursors`).
    heap.reload_cursor(class, 0);
    let next = heap.alloc_slow(class, 0, ptr::null_mut).expect("a slot").0;
    assert_ne!(
        header_of(next),
        header_of(first),
        "a full block gives no slot"
    );
    assert!(is_full(b), "retired");
    b.base() as usize
}

/// A model's pool, a heap of it with a full block `b` ([`full_block`]), the offset of `b`'s
/// first slot, and that slot's shadow, written by the heap's thread.
fn heap_with_full_block() -> (
    Arc<TestPool>,
    &'static Heap,
    &'static Header,
    u32,
    Arc<Slots>,
) {
    let pool = test_pool();
    let heap = new_heap(&pool);
    // SAFETY: a carved block of `pool`, which the model keeps until its end.
    let b = unsafe { block(full_block(heap)) };
    let a = slot(b, 0);
    let slots = Arc::new(Slots::new(&[a]));
    slots.write(b, a, 1);
    (pool, heap, b, a, slots)
}

/// Ends a model: the heaps still held are left by their threads ([`abandon`], as at a
/// thread's exit), then the instance's teardown releases them all ([`teardown`]).
pub(super) fn end(pool: &Pool, held: &[&Heap]) {
    for &heap in held {
        // SAFETY: the heap is the model's main thread's, which uses it no more.
        unsafe { abandon(ptr::from_ref(heap).cast_mut()) };
    }
    // SAFETY: every heap is abandoned and the model's other threads are done.
    unsafe { teardown(pool) };
}

/// A thread that writes `0xA` into slot `off` of block `base` and frees it remotely
/// ([`Pool::free_remote`]).
fn free_remotely(
    pool: &Arc<TestPool>,
    slots: &Arc<Slots>,
    base: usize,
    off: u32,
) -> thread::JoinHandle<()> {
    let (pool, slots) = (pool.clone(), slots.clone());
    thread::spawn(move || {
        // SAFETY: a carved block of the pool the thread holds.
        let b = unsafe { block(base) };
        slots.write(b, off, 0xA);
        // SAFETY: the slot is live and this thread gives it up.
        unsafe { pool.free_remote(b, off) };
    })
}

/// A thread that reclaims abandoned heaps' returned blocks ([`Pool::reclaim_abandoned`],
/// what `take_block` runs when its head has no pool-owned block).
fn reclaim(pool: &Arc<TestPool>) -> thread::JoinHandle<()> {
    let pool = pool.clone();
    thread::spawn(move || pool.reclaim_abandoned(&mut pool.lock()))
}

/// The pool's block `b` serves its slot `a` under the lock, with the freeing thread's
/// payload: the pool-lock holder owns pool-owned blocks. The slot was freed remotely onto
/// a full block, so it is served as a thread without a heap is served
/// (`Pool::alloc_heapless`): the allocation list's pop, else a refill (the collect of the
/// remote list, which no hand-over takes: RED-140) and the pop.
fn pool_serves(pool: &Pool, slots: &Slots, b: &Header, a: u32) {
    let _st = pool.lock();
    let served = b.pop().or_else(|| b.refill().then(|| b.pop()).flatten());
    assert_eq!(served.map(|(off, _)| off), Some(a));
    slots.check(b, a, 0xA);
}

/// A heap's thread exits while another thread frees a slot of its `FULL` block (the free
/// relists the block on the heap's `returned` stack) and a third reclaims abandoned heaps'
/// returned blocks.
///
/// Checks: however the three interleave, the block ends on the pool's partial list exactly
/// once (taken by the exit's drain of `returned`, the reclaim, or a later reclaim; never
/// lost, never twice), pool-owned, not `FULL`, its remote free still on its remote list
/// (RED-140), and the pool serves the freed slot (after collecting it) with the freeing
/// thread's payload; the pool's invariants hold ([`check`]).
///
/// Orderings relied on: the `returned` stack's Release push and Acquire take; the remote
/// push's Release and the collect's Acquire; the pool lock between the exiting thread and
/// the reclaiming one (the abandoned list).
///
/// Fails with: `Pool::reclaim_abandoned` leaving abandoned heaps' stacks alone (when the
/// free relists the block after the exit drained the stack, the block is lost: "the block
/// listed"), or `BlockStack::take_all` reading the top without swapping in `NONE` (the
/// exit's drain and the reclaim both list the block, whose list links then form a cycle:
/// loom stops the walk at its branch bound).
#[test]
fn exit_races_relist() {
    model(|| {
        let (pool, heap, b, a, slots) = heap_with_full_block();
        let base = b.base() as usize;
        let freer = free_remotely(&pool, &slots, base, a);
        let reclaimer = reclaim(&pool);
        // The other threads first (see `crate::block::loom`'s docs).
        thread::yield_now();
        end_thread(heap);
        freer.join().unwrap();
        reclaimer.join().unwrap();
        // Any later `take_block` reclaims what is still on the abandoned heap's stack.
        pool.reclaim_abandoned(&mut pool.lock());
        let census = check(&pool);
        assert!(census.partial.contains(&base), "the block listed");
        assert_eq!(b.owner(), 0, "pool-owned");
        assert!(!is_full(b));
        // Only an allocation collects a remote list (RED-140): the free stays on it, first,
        // where another thread's double free of it is compared, and counts as used
        // (`used == live + |remote|`).
        assert_eq!(
            b.remote_count(),
            1,
            "its remote free kept on its remote list"
        );
        assert_eq!(b.used(), b.capacity());
        pool_serves(&pool, &slots, b, a);
        end(&pool, &[]);
    });
}

/// The heap's thread exits ([`abandon`]).
pub(super) fn end_thread(heap: &Heap) {
    // SAFETY: the model's main thread is the heap's, and uses it no more.
    unsafe { abandon(ptr::from_ref(heap).cast_mut()) };
}

/// A remote free that empties an abandoned heap's block, racing with the block's reclaim:
/// the heap's thread exited with the block `FULL` (so it stayed the heap's), other threads
/// freed every slot of it but one (the first free relisted it on the heap's `returned`
/// stack), and now one thread frees the last slot ([`Pool::free_remote`]: the block is
/// empty and its owner abandoned, so the free gives it back if the lock is free, else flags
/// the pool) while another's slow path takes a block of another class
/// ([`Pool::take_block`]: it gives emptied blocks back, then reclaims abandoned heaps'
/// returned blocks, as its head has none).
///
/// Checks: the block is reclaimed once and not lost: pool-owned, off the heap's stack, kept
/// empty, or on its partial list only while a pass over emptied blocks is asked for; the
/// pool's invariants hold ([`check`]).
///
/// Fails with: the SeqCst fence of `Pool::adopt_block` or of `Pool::after_remote_free`
/// removed (the adoption misses the push and the free reads the block's counts from before
/// the adoption's collect, so neither gives the empty block back: "an emptied block on a
/// partial list, and no pass asked for"; this model found that bug), `Header::init` writing
/// a reused block's header as one plain value (loom: "Causality violation", the free's
/// look at the block races the write; found by this model too), or `after_remote_free` not
/// flagging the pool.
///
/// Preemption bound 2: its set-up frees a block's slots one by one, and at 3 it runs a
/// minute for nothing more (both bugs it found show at 2, the fences' at 1).
#[test]
fn emptying_free_races_reclaim() {
    model_bounded(2, || {
        let pool = test_pool();
        let heap = new_heap(&pool);
        let base = full_block(heap);
        // SAFETY: a carved block of `pool`.
        let b = unsafe { block(base) };
        end_thread(heap);
        assert_eq!(
            b.owner(),
            heap.token,
            "a FULL block stays its abandoned heap's"
        );
        for i in 1..b.capacity() {
            // SAFETY: slot `i` is live, and freed once.
            unsafe { pool.free_remote(b, slot(b, i)) };
        }
        let a = slot(b, 0);
        let slots = Arc::new(Slots::new(&[a]));
        let freer = free_remotely(&pool, &slots, base, a);
        let taker = {
            let pool = pool.clone();
            let class = class_of(64, 8).expect("a class");
            thread::spawn(move || {
                let taken = pool.take_block(&mut pool.lock(), class, 0, TOKEN);
                taken.expect("a block").base() as usize
            })
        };
        thread::yield_now();
        freer.join().unwrap();
        let taken = taker.join().unwrap();
        let census = check(&pool);
        assert_eq!(heap.returned.take_all(pool.units()).count(), 0, "reclaimed");
        assert!(
            census.retained.contains(&base)
                || census.partial.contains(&base)
                || (taken == base && b.owner() == TOKEN),
            "the emptied block is kept, listed, or taken again"
        );
        end(&pool, &[]);
    });
}

/// Two threads reclaim the same abandoned heap while a third frees a slot of its `FULL`
/// block: a new thread adopts the heap ([`adopt_or_create`]) and lists its returned blocks
/// (`Heap::drain_returned`, as its slow path does), another reclaims abandoned heaps'
/// returned blocks for the pool ([`Pool::reclaim_abandoned`]), and the free relists the
/// block on the heap's `returned` stack.
///
/// Checks: the block ends exactly once either on the heap's lists, owned by the heap, or on
/// the pool's partial list, pool-owned; its owner serves the freed slot with the freeing
/// thread's payload (the heap's slow path, or the pool under its lock); the pool's
/// invariants hold ([`check`]).
///
/// Fails with: `BlockStack::take_all` reading the top without swapping in `NONE` (the heap
/// and the pool both list the block; its list links form a cycle: loom stops the walk at
/// its branch bound). (The payload's orderings are checked by `crate::block::loom`'s
/// models: here the owner reads it after the joins.)
#[test]
fn adopt_races_reclaim() {
    model(|| {
        let (pool, heap, b, a, slots) = heap_with_full_block();
        let base = b.base() as usize;
        end_thread(heap);
        let freer = free_remotely(&pool, &slots, base, a);
        let reclaimer = reclaim(&pool);
        thread::yield_now();
        let adopted = adopt_or_create(&pool, INSTANCE, THREAD_GROUP);
        assert!(ptr::eq(adopted, heap), "the abandoned heap is adopted");
        heap.drain_returned();
        freer.join().unwrap();
        reclaimer.join().unwrap();
        // The free may have relisted the block after the drain: the heap's next slow path
        // lists it.
        heap.drain_returned();
        let mut on_heap = 0;
        heap.for_each_listed(&pool, |h, _| {
            on_heap += usize::from(h.base() as usize == base)
        });
        let census = check(&pool);
        let on_pool = census.partial.iter().filter(|&&p| p == base).count();
        assert_eq!(
            on_heap + on_pool,
            1,
            "listed once: heap {on_heap}, pool {on_pool}"
        );
        if on_heap == 1 {
            assert_eq!(b.owner(), heap.token);
            let got = heap
                .alloc_slow(big_class(), 0, ptr::null_mut)
                .expect("a slot");
            assert_eq!(got.0, b.base().wrapping_add(a as usize), "the freed slot");
            slots.check(b, a, 0xA);
        } else {
            assert_eq!(b.owner(), 0);
            pool_serves(&pool, &slots, b, a);
        }
        end(&pool, &[heap]);
    });
}

/// The holder word of a process that does not exist (pid 0, no process's, with start
/// time 1): a dead holder to `reap_dead`.
const DEAD: u64 = 1;

/// A shared pool (its heaps in its state area, reaped when their holder dies) of the
/// models' size, and a heap of it whose holder is [`DEAD`], with a `FULL` block `b`
/// ([`full_block`]) and a current block with one live slot; the offset of `b`'s first slot
/// and its shadow.
fn dead_heap_with_full_block() -> (
    Arc<TestPool>,
    &'static Heap,
    &'static Header,
    u32,
    Arc<Slots>,
) {
    let pool = Arc::new(TestPool::shared(6, 1, Heap::bytes(1)));
    let heap = new_heap(&pool);
    // SAFETY: a carved block of `pool`, which the model keeps until its end.
    let b = unsafe { block(full_block(heap)) };
    let a = slot(b, 0);
    let slots = Arc::new(Slots::new(&[a]));
    slots.write(b, a, 1);
    heap.holder
        .store(DEAD, loom::sync::atomic::Ordering::Relaxed);
    (pool, heap, b, a, slots)
}

/// Two survivors take over the heap of a process that died while it was leaving it
/// (`Exiting`, so no state transition tells the survivors apart) at once ([`reap_dead`]: a
/// CAS on the heap's holder word claims it).
///
/// Checks: exactly one of them takes it over; the heap ends abandoned and on the pool's
/// abandoned list once; its current block went to the pool; the pool's invariants hold.
///
/// Orderings relied on: the claim's AcqRel CAS on `holder`; the pool lock between the
/// claimant's hand-over and the other survivor's look at the heap's state.
///
/// Fails with: the claim made by a plain store instead of a CAS (both survivors take the
/// heap over: "taken over once").
#[test]
fn two_survivors_take_over_a_dead_processes_heap_once() {
    model(|| {
        let (pool, heap, _b, _a, _slots) = dead_heap_with_full_block();
        heap.transition(HeapState::Live, HeapState::Exiting)
            .unwrap();
        let other = {
            let pool = pool.clone();
            thread::spawn(move || reap_dead(&pool))
        };
        let mine = reap_dead(&pool);
        let theirs = other.join().unwrap();
        assert_eq!(mine + theirs, 1, "taken over once");
        assert!(heap.is_abandoned());
        {
            let st = pool.lock();
            assert_eq!(st.abandoned, pool.link_of(&heap.record), "parked once");
            assert_eq!(heap.next_abandoned, 0);
        }
        check(&pool);
        // SAFETY: the model's threads are done.
        unsafe { teardown(&pool) };
    });
}

/// A survivor takes over a dead process's heap while another process frees a slot of the
/// heap's `FULL` block (the free relists the block on the heap's `returned` stack), then
/// the pool reclaims abandoned heaps' returned blocks.
///
/// Checks: the block ends on the pool's partial list exactly once (taken by the
/// take-over's drain of `returned`, or by the reclaim; left alone by the retirement of
/// stray blocks, since a free is under way into it), and the pool serves the freed slot
/// with the freeing thread's payload; the pool's invariants hold.
///
/// Orderings relied on: as `exit_races_relist`, and the remote push's
/// Release against `try_retire`'s CAS in the retirement of strays.
///
/// Fails with: `retire_strays` retiring blocks whoever owns them (the dead heap's current
/// block, just handed to the pool's partial list, is retired there: "a listed block is
/// not FULL").
#[test]
fn a_dead_processes_heap_taken_over_while_its_full_block_is_freed_into() {
    model(|| {
        let (pool, _heap, b, a, slots) = dead_heap_with_full_block();
        let free = free_remotely(&pool, &slots, b.base() as usize, a);
        reap_dead(&pool);
        free.join().unwrap();
        pool.reclaim_abandoned(&mut pool.lock());
        pool_serves(&pool, &slots, b, a);
        check(&pool);
        // SAFETY: the model's threads are done.
        unsafe { teardown(&pool) };
    });
}

/// A heap's thread allocates through its head's cursor (the fast path's
/// [`Row::pop`](crate::heap::Row::pop): the block's header is not written) and exits
/// ([`abandon`]: the hand-over writes the cursor to the block) while another thread frees
/// one of those slots remotely.
///
/// Checks: however the two interleave, the block goes to the pool as a listed block with
/// exactly the two slots still live (the cursor's allocations counted once: neither lost,
/// nor the freed slot counted live), the freed slot served again by the pool after its
/// bump window, with the freeing thread's payload; the pool's invariants hold ([`check`]).
///
/// Fails with: `hand_over` not writing the cursor to the block (`Cursors::sync`): the block
/// counts one slot used, the remote free makes it look empty and the pool takes it as an
/// empty block with two slots live ("listed").
#[test]
fn an_exit_writes_the_cursor_back_while_a_remote_free_comes() {
    model(|| {
        let pool = test_pool();
        let heap = new_heap(&pool);
        let class = class_of(256, 8).expect("a 256-byte class");
        let first = heap.alloc_slow(class, 0, ptr::null_mut).expect("a slot").0;
        // SAFETY: a slot of a carved block, mapped for the pool's life.
        let b = unsafe { &*header_of(first) };
        // SAFETY: the heap is this thread's; life 0 is one of its lifetime classes.
        let row = unsafe { &*crate::heap::current_row(heap, 0) };
        let taken: Vec<u32> = (0..2)
            .map(|_| b.offset_of(row.pop(class).expect("a slot of the window").0))
            .collect();
        let a = taken[0];
        let slots = Arc::new(Slots::new(&[a]));
        let freer = free_remotely(&pool, &slots, b.base() as usize, a);
        thread::yield_now();
        end_thread(heap);
        freer.join().unwrap();
        let census = check(&pool);
        assert!(census.partial.contains(&(b.base() as usize)), "listed");
        assert_eq!(b.owner(), 0, "pool-owned");
        assert_eq!(b.live(), 2, "the cursor's allocations counted");
        // The pool serves its bump window first (a page), then the freed slot.
        let st = pool.lock();
        let serve = || b.pop().or_else(|| b.refill().then(|| b.pop()).flatten());
        let served = (0..64).find_map(|_| serve().filter(|&(off, _)| off == a));
        assert!(served.is_some(), "the freed slot served again");
        slots.check(b, a, 0xA);
        drop(st);
        end(&pool, &[]);
    });
}

/// RED-67: the statistics read a heap's block ([`counted_snapshot`], without the pool
/// lock) while its owner lists it again: a `FULL` block a remote free relisted on the
/// heap's `returned` stack goes from [`Role::Full`] to [`Role::Listed`]
/// ([`Heap::drain_returned`]), two stores (the role, then the count carrying its bias).
///
/// Checks: the reader counts every slot live but the one freed remotely, whichever role it
/// reads.
///
/// Fails with: the role changed outside the row's sequence (`Header::set_role` in
/// `drain_returned`, as before the fix): a reader that reads the old role and the new
/// count decodes `used == 2 * capacity - 1` and counts every slot live: "left: Some(127),
/// right: Some(126)" (or, the other way round, the new role and the old count: none).
///
/// [`Role::Full`]: crate::block::Role::Full
/// [`Role::Listed`]: crate::block::Role::Listed
#[test]
fn statistics_read_a_block_its_owner_lists_again() {
    model(|| {
        let (pool, heap, b, a, _slots) = heap_with_full_block();
        let capacity = b.capacity();
        // SAFETY: `a` is live; freed once, here: the free relists `b` on `returned`.
        unsafe { pool.free_remote(b, a) };
        let base = b.base() as usize;
        let reader = {
            let pool = pool.clone();
            thread::spawn(move || {
                // SAFETY: a carved block of the pool the thread holds.
                let b = unsafe { block(base) };
                counted_snapshot(&pool, b, None).map(|s| s.live)
            })
        };
        heap.drain_returned();
        assert_eq!(reader.join().unwrap(), Some(capacity - 1));
        end(&pool, &[heap]);
    });
}
