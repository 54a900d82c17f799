//! A fork child's repair of the explicit joins' heaps of a private pool: each stays its
//! join's, made whole in place, whatever call of it another thread of the parent was in
//! the middle of at the fork (RED-70).
//!
//! Which thread carries which join is not recorded: the forking thread may carry a join
//! (with no call in progress), another thread may have been inside a call of one (a fast
//! path's pop or push and its count are two stores; a slow path moves blocks between the
//! current block, the partial list and `returned`), which will not go on in the child. The
//! join itself may go on in the child (the forking thread's, or one kept in a shared
//! structure), and what it allocated before the fork stays live there: its heap is not a
//! dead thread's, to be handed to the pool (the child's `release_class` would free those
//! objects as an exited thread's: RED-78). So the child's fork handler, on the child's
//! only thread with the pool lock held (nothing moves under it: no other thread, no
//! claim, no remote free), rebuilds each such heap from the blocks it owns
//! ([`repair_joins_in_child`]):
//!
//! 1. every non-tiny head is emptied: its current block's cursor written back to the
//!    block when it was loaded whole (`Cursors::loaded`, as a dead thread's take-over
//!    writes it), no current block, an empty partial list; its `returned` stack emptied;
//!    its medium cache flushed and its guard freed (a holder may have died inside its
//!    medium path, as the take-over's hand-over frees it);
//! 2. every block the heap owns, found by one walk of the pool's blocks (a block on a list
//!    half linked, or in the middle of a move between lists, is found all the same, once),
//!    is recounted (`Header::recount_local`: a slot in flight counts as handed out, lost to
//!    the child, never handed out twice; a block a reset emptied in place keeps the firsts
//!    it kept, `KEPT_FREED`, for the join's double-free check in the child, RED-141) and
//!    listed again: retired `FULL` when it has no free slot, else on its head's partial
//!    list.
//!
//! Tiny heads are left as they are: they are served and freed under the pool lock, which
//! the fork held, so no call left them half done. Each repaired heap counts as one taken
//! over from a dead holder (`Pool::heaps_reaped`): in checked mode a slot whose stopped
//! call cleared or had not yet set its live bit is in use with the bit clear, lost, which
//! `verify` accepts only then.
//!
//! Invariants, after the handler, for every explicit join's heap `j` of the pool that was
//! live at the fork (its join not leaving it: an exiting one is forsaken, see
//! `after_fork_in_child`): `j` is live and held as before (its join's first call in the
//! child goes on with it, its drop leaves it as any join's drop does); no non-tiny head of
//! `j` has a current block; every block `b` with `b.owner == j.token` has `used(b) ==
//! handed out - |free| - |local|` and is `FULL` with `free_slots(b) == 0` xor on its
//! head's partial list (`Listed`, not `FULL`) with `free_slots(b) > 0`; its live slots and
//! its owner are as before, so `release_class`, `compact` and `verify` in the child treat
//! them as a live join's.
//!
//! Cost: nothing on any fast path. The handler pays for it only in a process with explicit
//! joins in a private pool: a pass over their heads, and one walk of the pool's blocks.

use super::{FORSAKEN, THREAD_GROUP};
use crate::block::{BlockList, Header, Role};
use crate::class::{HeadIndex, CLASSES};
use crate::heap::{empty_block, head_at, registered, Heap};
use crate::heap_record::HeapState::Live;
use crate::pool::{Pool, PoolState};
use crate::sync::Ordering;

/// Whether `heap` is a heap [`repair_joins_in_child`] repairs: live, an explicit join's,
/// not forsaken (its join was leaving it at the fork, or a fork of an ancestor left it).
fn repaired_here(heap: &Heap) -> bool {
    heap.state() == Live
        && heap.group != THREAD_GROUP
        && heap.holder.load(Ordering::Relaxed) != FORSAKEN
}

/// In a fork child, after `after_fork_in_child`: repairs every explicit join's heap of the
/// private pool `pool` in place (see the module docs). Returns how many it repaired.
///
/// # Safety
/// The fork child's handler, on the child's only thread, holding `pool`'s lock (taken by
/// the parent's `prepare` handler); `pool` is not shared between processes.
pub(crate) unsafe fn repair_joins_in_child(pool: &Pool) -> usize {
    // SAFETY: the lock is held (the caller's), by this thread's image of the parent's
    // thread, and no other thread exists: the state is ours.
    let st = unsafe { &mut *pool.state.data_ptr() };
    // A write of the state (a named region's seal, for a region mapped privately).
    let _writing = pool.writing();
    let mut repaired = 0;
    for heap in registered(pool) {
        // SAFETY: registered heaps stay mapped while the pool lives.
        if repaired_here(unsafe { &*heap }) {
            // SAFETY: no thread of the child uses the heap (the caller's); we hold the lock.
            unsafe { empty_heads(heap, pool, st) };
            repaired += 1;
        }
    }
    if repaired == 0 {
        return 0;
    }
    // Checked mode: a call stopped between a slot's live bit and its list (a free that
    // cleared the bit, an allocation that popped the slot) leaves a slot in use with its bit
    // clear, lost to the child as a dead holder's are: `verify` reads it so once a heap was
    // taken over from a dead holder, which a join's call stopped by the fork is.
    pool.heaps_reaped
        .fetch_add(repaired as u64, Ordering::Relaxed);
    for h in pool.blocks(st) {
        let owner = h.owner();
        if owner == 0 || h.life() >= pool.life_count {
            continue;
        }
        let record = pool.heap((owner & 0xffff) as u32);
        if record.is_null() {
            continue;
        }
        let heap = Heap::of(record);
        // SAFETY: a registered heap, mapped while the pool lives.
        let hp = unsafe { &*heap };
        if hp.token == owner && repaired_here(hp) {
            // SAFETY: as above; the block is the heap's, on none of its lists now.
            unsafe { relist(heap, pool, h) };
        }
    }
    repaired
}

/// Step 1 of the module docs for `heap`: its non-tiny heads emptied (a current block's
/// cursor loaded whole written back first), its `returned` stack emptied, its medium cache
/// flushed and its guard freed.
///
/// # Safety
/// As [`repair_joins_in_child`]'s, `heap` a registered heap of `pool`, `st` its state.
unsafe fn empty_heads(heap: *mut Heap, pool: &Pool, st: &mut PoolState) {
    // SAFETY: the caller's: nobody else uses the heap.
    let hp = unsafe { &*heap };
    pool.flush_medium_cache(st, &hp.medium);
    hp.medium.reset_guard();
    let heads = HeadIndex::count(pool.life_count);
    for i in pool.heads().filter(|i| !CLASSES[i.class()].is_tiny()) {
        // SAFETY: i is below the head count; the heap is the caller's.
        let head = unsafe { head_at(heap, heads, i.get()) };
        let current = hp.current_in(pool, head.current());
        if let Some(h) = current.filter(|h| h.owner() == hp.token) {
            // The header is the truth for a cursor not loaded whole (a holder stopped
            // inside `HeapHead::enter`): it is not written back.
            if head.cursors.loaded(head.class, h) {
                head.cursors.sync(head.class, h);
            }
        }
        head.enter(empty_block());
        *head.partial = BlockList::new();
    }
    // Its blocks are found by the walk of the pool's blocks (`relist`), each once.
    let _taken = hp.returned.take_all(pool.units());
}

/// Step 2 of the module docs for block `h` of `heap`: recounted, then retired `FULL`
/// when it has no free slot, else listed on its head's partial list.
///
/// # Safety
/// As [`empty_heads`]'s (which ran for `heap`); `h` is a block `heap` owns, of a lifetime
/// class below the pool's count.
unsafe fn relist(heap: *mut Heap, pool: &Pool, h: &Header) {
    h.recount_local();
    let heads = HeadIndex::count(pool.life_count);
    // SAFETY: the block's key names a head of its owner's (the caller's); nobody else
    // uses the heap.
    let head = unsafe { head_at(heap, heads, HeadIndex::new(h.class(), h.life()).get()) };
    if h.free_slots() == 0 {
        // Every slot handed out, none freed: `FULL`, as its owner retires it (nothing
        // frees into it meanwhile: the child has no other thread yet).
        if h.is_full() {
            head.set_role(h, Role::Full);
            return;
        }
        if head.retire(h) {
            return;
        }
    }
    // A free slot: listed (a free stopped on its slow path may have left it `FULL`).
    h.clear_full();
    head.set_role(h, Role::Listed);
    head.partial.push(pool.units(), h);
}
