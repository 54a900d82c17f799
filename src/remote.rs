//! Batches of remote frees: a heap's frees into blocks it does not own, kept per block and
//! pushed on each block's remote list as one chain with one compare-and-swap.
//!
//! A remote free writes the block's `remote` word, which shares the header's cache line
//! with the fields its owner writes on every allocation: a compare-and-swap per free moves
//! that line between the two threads' caches each time. A batch keeps up to [`ENTRIES`]
//! blocks' pending frees: per block `b`, a chain of slots linked through their first 4
//! bytes (as every slot list of a block) from `first` to `last`, `count` long,
//!
//! `chain(b) = first -> ... -> last`, `|chain(b)| = count <= limit(b)`,
//! `limit(b) = clamp(BATCH_BYTES / stride(b), 1, MAX_CHAIN)`,
//!
//! and every slot on a chain is counted in its block's `used` (invariant 6 counts it
//! live): pending frees never make a block look emptier than it is, so no block with a
//! pending slot is given back or handed to another key. A chain goes to its block
//! ([`Header::push_remote_chain`]) when it reaches `limit(b)`, when its entry is needed for
//! another block, when the heap's thread takes the alloc slow path or exits, and when any
//! thread makes a call that must see every free: a release, `compact`, `verify`, the
//! statistics, `is_empty` (`free::Instance::flush_batches`). So a chain is never pushed to
//! a block that was given back and reused: its slots keep the block in use until then, and
//! a release (which empties blocks whatever their count) flushes every batch first.
//!
//! **Who touches a batch.** Its heap's holder adds to it; any thread may flush it. Both
//! hold the batch's `busy` word (0 free, 1 held) while they touch the entries. The holder
//! only tries: when a flusher holds it, the free goes straight to the block's remote list
//! (the remote free stays lock-free); a flusher waits, and a holder of `busy` never waits
//! for anything (it pushes lock-free and only tries the pool lock), so nobody holding the
//! pool lock waits for ever.
//!
//! Only private instances batch. In a shared region every remote free is pushed at once:
//! a batch lives in one process, whose death (`kill -9`) would lose its slots for ever
//! (counted used, never pushed), and the other processes could not flush it.

use crate::block::Header;
use crate::class::HeadIndex;
use crate::counters::Counter;
use crate::pool::Pool;
use crate::sync::{spin_hint, AtomicU32, Ordering};
#[cfg(loom)]
use ::loom::cell::UnsafeCell;
#[cfg(not(loom))]
use core::cell::UnsafeCell;
use core::ptr;

/// Blocks one batch keeps pending frees for.
pub(crate) const ENTRIES: usize = 8;
/// The most slots one chain holds.
pub(crate) const MAX_CHAIN: u32 = 64;
/// The bytes of slots one chain holds at most (at least one slot).
pub(crate) const BATCH_BYTES: u32 = 8192;
/// `busy` while the fork handlers hold the batch.
const FORK_HELD: u32 = 2;

/// One block's pending frees (see the module docs); `block` null: an unused entry.
#[derive(Clone, Copy)]
struct Pending {
    block: *const Header,
    first: u32,
    last: u32,
    count: u32,
    limit: u32,
}

const UNUSED: Pending = Pending {
    block: ptr::null(),
    first: 0,
    last: 0,
    count: 0,
    limit: 0,
};

/// A batch's entries.
struct Entries {
    pending: [Pending; ENTRIES],
    /// The entry a new block takes when none is unused (round robin).
    victim: u32,
}

/// A heap's batch of remote frees (see the module docs).
pub(crate) struct RemoteBatch {
    /// 0 when free; 1 while a thread touches `entries` (the heap's holder, or a flusher);
    /// [`FORK_HELD`] from a fork's prepare handler to its end.
    busy: AtomicU32,
    /// Touched only by the thread that holds `busy`.
    entries: UnsafeCell<Entries>,
}

// SAFETY: `entries` is touched only by the thread holding `busy`, whose Acquire and
// Release order those accesses; the chains' slots are the batch's.
unsafe impl Sync for RemoteBatch {}
// SAFETY: as above.
unsafe impl Send for RemoteBatch {}

/// What [`RemoteBatch::free`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub(crate) enum BatchFree {
    /// The slot is on a chain, or on its block's remote list.
    Done,
    /// The slot is the one this batch or the block's remote list took last: a double free
    /// (nothing changed).
    AlreadyFree,
}

impl RemoteBatch {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> RemoteBatch {
        RemoteBatch {
            busy: AtomicU32::new(0),
            entries: UnsafeCell::new(Entries {
                pending: [UNUSED; ENTRIES],
                victim: 0,
            }),
        }
    }

    #[cfg(loom)]
    pub(crate) fn new() -> RemoteBatch {
        RemoteBatch {
            busy: AtomicU32::new(0),
            entries: UnsafeCell::new(Entries {
                pending: [UNUSED; ENTRIES],
                victim: 0,
            }),
        }
    }

    /// Runs `f` on the entries.
    ///
    /// # Safety
    /// The caller holds `busy`.
    unsafe fn with_entries<T>(&self, f: impl FnOnce(&mut Entries) -> T) -> T {
        #[cfg(not(loom))]
        // SAFETY: the caller holds `busy`, so the entries are its alone.
        return f(unsafe { &mut *self.entries.get() });
        #[cfg(loom)]
        // SAFETY: as above.
        self.entries.with_mut(|e| f(unsafe { &mut *e }))
    }

    fn try_hold(&self) -> bool {
        self.busy
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Takes `busy`, waiting while another thread holds it.
    fn hold(&self) {
        let mut round = 0;
        while !self.try_hold() {
            spin_hint(round);
            round += 1;
        }
    }

    fn unhold(&self) {
        self.busy.store(0, Ordering::Release);
    }

    /// The heap's holder: frees slot `off` of block `h` (a block of `pool` the heap does not
    /// own, not tiny): onto the block's chain, which goes to the block when full. A slot
    /// that is its block's chain's first or its remote list's first is already free:
    /// reported, nothing changed. Lock-free.
    ///
    /// # Safety
    /// The caller holds the batch's heap; `off` is a live slot of `h`, which the caller
    /// gives up; `h` is a block of `pool`, a private pool.
    pub(crate) unsafe fn free(&self, pool: &Pool, h: &Header, off: u32) -> BatchFree {
        if !self.try_hold() {
            // A flusher holds the batch: straight to the block.
            if h.is_first_remote(off) {
                return BatchFree::AlreadyFree;
            }
            // SAFETY: forwarded.
            unsafe { push_chain(pool, h, off, off, 1) };
            return BatchFree::Done;
        }
        // SAFETY: we hold `busy`; forwarded.
        let done = unsafe { self.free_held(pool, h, off) };
        self.unhold();
        done
    }

    /// [`RemoteBatch::free`] with `busy` held.
    ///
    /// # Safety
    /// As [`RemoteBatch::free`], with `busy` held by the caller.
    unsafe fn free_held(&self, pool: &Pool, h: &Header, off: u32) -> BatchFree {
        // SAFETY: the caller holds `busy`.
        unsafe { self.with_entries(|entries| free_in(entries, pool, h, off)) }
    }

    /// Pushes every chain to its block. `wait`: waits while another thread flushes (a thread
    /// exit, a flush of every batch); otherwise returns at once then (the other thread
    /// flushes). Lock-free without `wait`.
    ///
    /// # Safety
    /// Every block of the batch's chains is a live block of `pool` (the pool of the batch's
    /// heap, private).
    pub(crate) unsafe fn flush(&self, pool: &Pool, wait: bool) {
        if wait {
            self.hold();
        } else if !self.try_hold() {
            return;
        }
        // SAFETY: we hold `busy`.
        unsafe {
            self.with_entries(|entries| {
                for e in entries.pending.iter_mut().filter(|e| !e.block.is_null()) {
                    // SAFETY: the chain's slots are the batch's; forwarded.
                    flush_entry(pool, e);
                }
            })
        };
        self.unhold();
    }

    /// The fork's prepare handler: takes `busy` (as [`FORK_HELD`]), so that no thread is
    /// in the middle of a change to the batch while the process is copied (a free meanwhile
    /// goes straight to its block). Both processes give it back
    /// ([`RemoteBatch::unhold_after_fork`]).
    pub(crate) fn hold_for_fork(&self) {
        self.hold();
        self.busy.store(FORK_HELD, Ordering::Relaxed);
    }

    /// After a fork, in the parent and the child: gives back `busy` if the prepare handler
    /// took it (a heap registered meanwhile was not taken, and is left alone).
    pub(crate) fn unhold_after_fork(&self) {
        let _ = self
            .busy
            .compare_exchange(FORK_HELD, 0, Ordering::Release, Ordering::Relaxed);
    }
}

/// [`RemoteBatch::free`] on the entries.
///
/// # Safety
/// As [`RemoteBatch::free`], with the entries the caller's alone.
unsafe fn free_in(entries: &mut Entries, pool: &Pool, h: &Header, off: u32) -> BatchFree {
    let block = ptr::from_ref(h);
    if let Some(e) = entries.pending.iter_mut().find(|e| e.block == block) {
        if e.first == off || h.is_first_remote(off) {
            return BatchFree::AlreadyFree;
        }
        // SAFETY: the slot is the caller's (given up), in block h.
        unsafe { h.link_slot(off, e.first) };
        e.first = off;
        e.count += 1;
        if e.count >= e.limit {
            // SAFETY: the chain's slots are the batch's, of block h.
            unsafe { flush_entry(pool, e) };
        }
        return BatchFree::Done;
    }
    if h.is_first_remote(off) {
        return BatchFree::AlreadyFree;
    }
    let limit = (BATCH_BYTES / h.stride).clamp(1, MAX_CHAIN);
    if limit == 1 {
        // SAFETY: forwarded.
        unsafe { push_chain(pool, h, off, off, 1) };
        return BatchFree::Done;
    }
    let at = match entries.pending.iter().position(|e| e.block.is_null()) {
        Some(at) => at,
        None => {
            let at = entries.victim as usize % ENTRIES;
            entries.victim = entries.victim.wrapping_add(1);
            // SAFETY: the chain's slots are the batch's.
            unsafe { flush_entry(pool, &mut entries.pending[at]) };
            at
        }
    };
    // A chain of one slot: its link is written when it is pushed.
    entries.pending[at] = Pending {
        block,
        first: off,
        last: off,
        count: 1,
        limit,
    };
    BatchFree::Done
}

/// Pushes entry `e`'s chain to its block and leaves the entry unused.
///
/// # Safety
/// The caller holds the batch's `busy`; `e.block` is a live block of `pool` whose chain
/// slots are the batch's.
unsafe fn flush_entry(pool: &Pool, e: &mut Pending) {
    // SAFETY: the block is live (caller).
    let h = unsafe { &*e.block };
    // SAFETY: the chain's slots are the batch's, linked from first to last.
    unsafe { push_chain(pool, h, e.first, e.last, e.count) };
    *e = UNUSED;
}

/// Pushes a chain of `n` slots of block `h` on its remote list, relists the block when it
/// was `FULL` and gives it back when it may now be empty and nobody would notice (as
/// [`Pool::free_remote`] for one slot).
///
/// # Safety
/// As [`Header::push_remote_chain`]; `h` is a live block of `pool`.
unsafe fn push_chain(pool: &Pool, h: &Header, first: u32, last: u32, n: u32) {
    let head = HeadIndex::new(h.class(), h.life()).get();
    pool.counters.add(head, Counter::RemoteFree, u64::from(n));
    // SAFETY: forwarded.
    if unsafe { h.push_remote_chain(first, last, n) } {
        pool.relist(h);
    }
    pool.after_remote_free(h);
}

#[cfg(all(loom, test))]
mod loom;
