//! Batches of remote frees: a heap's frees into blocks it does not own, kept per block and
//! pushed on each block's remote list as one chain with one compare-and-swap.
//!
//! A remote free writes the block's `remote` word, which shares the header's cache line
//! with the fields its owner writes on every allocation: a compare-and-swap per free moves
//! that line between the two threads' caches each time. A batch keeps up to [`ENTRIES`]
//! blocks' pending frees, block `b`'s in entry `entry_of(b) = (b / BLOCK_SIZE) % ENTRIES`
//! (no search): per block `b`, a chain of slots linked through their first 4
//! bytes (as every slot list of a block) from `first` to `last`, with room for `left` more,
//!
//! `chain(b) = first -> ... -> last`, `|chain(b)| = limit(b) - left <= limit(b)`,
//! `limit(b) = clamp(BATCH_BYTES / stride(b), 1, MAX_CHAIN)` (1 without `membarrier`),
//!
//! and every slot on a chain is counted in its block's `used` (invariant 6 counts it
//! live): pending frees never make a block look emptier than it is, so no block with a
//! pending slot is given back or handed to another key. A chain goes to its block
//! ([`Header::push_remote_chain`]) when a free of the block finds it full (`left = 0`: that
//! slot starts the next chain), when its entry is needed for another block, when the heap's thread takes the alloc slow path or exits, and when any
//! thread makes a call that must see every free: a release, `compact`, `verify`, the
//! statistics, `is_empty` (`free::Instance::flush_batches`). So a chain is never pushed to
//! a block that was given back and reused: its slots keep the block in use until then, and
//! a release (which empties blocks whatever their count) flushes every batch first.
//!
//! **Who touches a batch.** Its heap's holder adds to it and flushes it (its alloc slow
//! path, its exit); any other thread may take it over to flush it (a flusher: the calls
//! above, and the fork handlers, which only keep it). The two sides exclude each other
//! with two words and no read-modify-write on the holder's side, as in Dekker's algorithm:
//!
//! - holder: `busy = 1`, fence, read `wants`: 0, it touches the entries, then
//!   `busy = 0` (Release); 1, it leaves them alone (`busy = 0`) and its free goes straight
//!   to the block's remote list (the remote free stays lock-free);
//! - flusher (one at a time: the `flushing` lock): `wants = 1`, fence, waits while
//!   `busy == 1`, touches the entries, then `wants = 0` (Release).
//!
//! The fences make the store-then-load pairs sequentially consistent: at least one side
//! sees the other's store, so they never touch the entries at once. They are asymmetric
//! ([`fence`]): the holder's, on every free, is a compiler fence only, and the flusher's
//! a `membarrier` system call that makes every running thread of the process execute a full
//! barrier (both are full fences where the kernel has no `membarrier`; a batch then keeps
//! no chain: `limit(b) = 1`, every remote free pushed at once, so that the quick way,
//! whose fence is always a compiler fence, only ever acts where that is the holder's
//! fence: `|chain(b)| > 0 => membarrier registered`). A flusher waits
//! only for a holder between its two stores to `busy` (a few instructions, never waiting
//! itself: it pushes lock-free and only tries the pool lock), so nobody holding the pool
//! lock waits for ever. A batch's `pending` word, set when an entry is taken, lets a
//! flusher skip batches with nothing pending: a free that returned before the flush
//! began set it first.
//!
//! Only pools no other process uses batch (`Pool::is_process_shared` false): private
//! instances, and regions laid out as shared ones in a private mapping
//! (`Cohort::with_options`, `Cohort::format_in` in private memory). In a region other
//! processes use (shared-anonymous, named, a file, shared caller memory) every remote free
//! is pushed at once: a batch lives in one process, whose death (`kill -9`) would lose its
//! slots for ever (counted used, never pushed); the other processes could not flush it
//! (its chains name blocks by this process's addresses, and its exclusion rests on this
//! process's `membarrier`); and a process attaching the region could not tell a pending
//! slot from a live one. A private mapping has none of these: it dies with its process;
//! no other process maps it (a fork child gets a copy at the same addresses, with every
//! batch whole: the fork handlers hold them as a private instance's); a view of private
//! caller memory attached again is in the same process at the same addresses, and its
//! flushes reach every registered heap's batch, the first view's included. A heap of a
//! pool other processes use starts no chain, so the quick way
//! ([`RemoteBatch::try_append`], which only adds to a chain) does nothing there.

use crate::block::Header;
use crate::class::{HeadIndex, BLOCK_SHIFT};
use crate::counters::Counter;
use crate::pool::Pool;
use crate::sync::{spin_hint, AtomicU32, ForkCaller, Ordering};
#[cfg(loom)]
use ::loom::cell::UnsafeCell;
#[cfg(not(loom))]
use core::cell::UnsafeCell;
use core::ptr;
use entries::{append_quick, entry_of, flush_entry, free_in, new_entries, push_chain, Entries};
use fork_hold::{held_by_fork, FORK_UNSURE};

/// Blocks one batch keeps pending frees for.
pub(crate) const ENTRIES: usize = 8;
/// The most slots one chain holds.
pub(crate) const MAX_CHAIN: u32 = 64;
/// The bytes of slots one chain holds at most (at least one slot).
pub(crate) const BATCH_BYTES: u32 = 8192;
/// What [`RemoteBatch::take_over`] did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Taken {
    /// The caller has the batch (`flushing` its value, `wants` 1).
    Now,
    /// The calling thread's own fork holds it ([`fork_hold`]).
    ByOwnFork,
}

/// What [`RemoteBatch::flush`] did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Flush {
    /// Nothing was pending.
    Nothing,
    /// The chains were pushed to their blocks.
    Pushed,
    /// Frees were pending, and stay so: the fence the flush needs was refused
    /// (`membarrier` refused since its registration). Their blocks must not be emptied.
    Refused,
}

/// A heap's batch of remote frees (see the module docs).
pub(crate) struct RemoteBatch {
    /// 1 while the holder may be touching `entries`, else 0. Written by the holder only.
    busy: AtomicU32,
    /// 1 while a flusher has taken the batch over (the holder keeps out), else 0. Written
    /// by the holder of `flushing` only.
    wants: AtomicU32,
    /// The flushers' lock: 0 free, 1 held by a flusher, or the fork handlers' hold
    /// (`fork_hold`'s `FORK_HELD`, `FORK_UNSURE`).
    flushing: AtomicU32,
    /// 1 when an entry may be in use (set by the holder when it takes one, cleared by a
    /// full flush): a flusher skips the batch when it reads 0.
    pending: AtomicU32,
    /// Touched only by the holder while `busy == 1` and `wants == 0`, or by the flusher
    /// that took the batch over and saw `busy == 0`.
    entries: UnsafeCell<Entries>,
}

// SAFETY: `entries` is touched by one thread at a time (the exclusion of the module docs,
// whose Release stores and Acquire loads order those accesses); the chains' slots are the
// batch's.
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
    crate::sync::const_unless_loom! {
        pub(crate) fn new() -> RemoteBatch {
            RemoteBatch {
                busy: AtomicU32::new(0),
                wants: AtomicU32::new(0),
                flushing: AtomicU32::new(0),
                pending: AtomicU32::new(0),
                entries: new_entries(),
            }
        }
    }

    /// Runs `f` on the entries.
    ///
    /// # Safety
    /// The caller may touch the entries: it is the holder between a true
    /// [`RemoteBatch::enter`] and its [`RemoteBatch::leave`], or the flusher between
    /// [`RemoteBatch::wait_out`] and [`RemoteBatch::give_back`].
    unsafe fn with_entries<T>(&self, f: impl FnOnce(&mut Entries) -> T) -> T {
        #[cfg(not(loom))]
        // SAFETY: the caller may touch the entries: they are its alone.
        return f(unsafe { &mut *self.entries.get() });
        #[cfg(loom)]
        // SAFETY: as above.
        self.entries.with_mut(|e| f(unsafe { &mut *e }))
    }

    /// The holder: true when it may touch the entries (then it calls
    /// [`RemoteBatch::leave`]); false when a flusher has taken the batch over. Never waits.
    #[inline(always)]
    fn enter(&self) -> bool {
        self.busy.store(1, Ordering::Relaxed);
        fence::light();
        // Acquire: the entries as the last flusher left them (its `give_back`).
        if self.wants.load(Ordering::Acquire) == 0 {
            return true;
        }
        self.busy.store(0, Ordering::Relaxed);
        false
    }

    /// The holder: done with the entries.
    #[inline(always)]
    fn leave(&self) {
        // Release: a flusher that reads 0 sees the entries as this holder left them.
        self.busy.store(0, Ordering::Release);
    }

    /// A flusher: takes the batch over (waiting for another flusher), so that a holder
    /// entering from now on keeps out. Then [`fence::heavy`], [`RemoteBatch::wait_out`]
    /// and [`RemoteBatch::give_back`].
    ///
    /// [`Taken::ByOwnFork`] instead when the calling thread is the one inside a fork whose
    /// `prepare` handler holds the batch (a fork handler the program registered before
    /// cohort's, which may ask for statistics, compact or verify: RED-104): the batch is
    /// then this thread's already, its holder waited out, and the caller may touch the
    /// entries unless the hold is unsure ([`fork_hold`]). A fork child's thread that finds
    /// its parent's hold repairs the child first and takes the batch as usual.
    fn take_over(&self, value: u32) -> Taken {
        let mut round = 0;
        while let Err(now) =
            self.flushing
                .compare_exchange(0, value, Ordering::Acquire, Ordering::Relaxed)
        {
            match held_by_fork(now) {
                Some(ForkCaller::Enter) => return Taken::ByOwnFork,
                Some(ForkCaller::Retry) => continue,
                _ => {}
            }
            spin_hint(round);
            round += 1;
        }
        self.wants.store(1, Ordering::Relaxed);
        Taken::Now
    }

    /// A flusher, after [`RemoteBatch::take_over`] and a [`fence::heavy`]: waits until the
    /// holder is out of the entries (it stays out until [`RemoteBatch::give_back`]).
    fn wait_out(&self) {
        let mut round = 0;
        // Acquire: the entries as the holder left them (its `leave`).
        while self.busy.load(Ordering::Acquire) != 0 {
            spin_hint(round);
            round += 1;
        }
    }

    /// A flusher: gives the batch back to its holder.
    fn give_back(&self) {
        // Release: the holder's next `enter` sees the entries as the flusher left them.
        self.wants.store(0, Ordering::Release);
        self.flushing.store(0, Ordering::Release);
    }

    /// The heap's holder: frees slot `off` of block `h` (a block of `pool` the heap does not
    /// own, not tiny): onto the block's chain, which goes to the block when full. A slot
    /// that is its block's chain's first or its remote or local list's first is already free:
    /// reported, nothing changed. Lock-free, and no read-modify-write unless a chain is
    /// pushed.
    ///
    /// # Safety
    /// The caller holds the batch's heap; `off` is a live slot of `h`, which the caller
    /// gives up; `h` is a block of `pool`, which no other process uses.
    #[inline(always)]
    pub(crate) unsafe fn free(&self, pool: &Pool, h: &Header, off: u32) -> BatchFree {
        if !self.enter() {
            // A flusher has the batch: straight to the block.
            if h.is_freed_last(off) {
                return BatchFree::AlreadyFree;
            }
            // SAFETY: forwarded.
            unsafe { push_chain(pool, h, off, off, 1) };
            return BatchFree::Done;
        }
        // SAFETY: entered; forwarded.
        let done =
            unsafe { self.with_entries(|entries| free_in(entries, &self.pending, pool, h, off)) };
        self.leave();
        done
    }

    /// The heap's holder, the quick way of [`RemoteBatch::free`]: adds the slot at `p` in
    /// block `h` to the block's chain when the batch has one with room and the slot is neither
    /// its first nor the block's remote or local list's first. True when done; false when
    /// it did nothing (a flusher has the batch, no chain of `h` with room: never one before
    /// the fences are known asymmetric, or a double free to report): [`RemoteBatch::free`]
    /// takes the free then. Touches nothing but the batch and the slot (and reads the
    /// header's remote word): no call, so its caller needs no stack frame.
    ///
    /// # Safety
    /// The caller holds the batch's heap; `p` is a live slot of `h`, which the caller
    /// gives up, a block of the heap's pool that the heap does not own. The pool may be one
    /// other processes use: the batch then holds no chain, and nothing is done.
    #[inline(always)]
    pub(crate) unsafe fn try_append(&self, h: &Header, p: *mut u8) -> bool {
        // The compiler fence stands for the holder's fence: the batch holds a chain only
        // once the fences are known asymmetric ([`chain_limit`]), and without one nothing
        // below is done (the entries are only read, and a flusher then writes none of them).
        self.busy.store(1, Ordering::Relaxed);
        fence::light_asymmetric();
        // Acquire: the entries as the last flusher left them (its `give_back`).
        let done = self.wants.load(Ordering::Acquire) == 0
            // SAFETY: entered (busy 1, wants 0); forwarded.
            && unsafe { self.with_entries(|entries| append_quick(entries, h, p)) };
        self.leave();
        done
    }

    /// The heap's holder, where nothing may stay pending (a thread exit, a `compact`):
    /// pushes every chain to its block (no fence: the holder needs none to see its own
    /// entries, so this works where `membarrier` is refused), waiting while a flusher has
    /// the batch. Every free the holder made before the call is on its block's remote list
    /// on return. [`Flush::Pushed`] when frees were pending.
    ///
    /// # Safety
    /// The caller holds the batch's heap; every block of the batch's chains is a live block
    /// of `pool` (the pool of the batch's heap; in a pool other processes use, it has none).
    pub(crate) unsafe fn flush_own(&self, pool: &Pool) -> Flush {
        let had = self.own_pending();
        loop {
            if self.enter() {
                // SAFETY: entered; forwarded.
                unsafe { self.flush_entries(pool) };
                self.leave();
                return had;
            }
            if self.wait_for_flusher() {
                // SAFETY: the batch is held by this thread's own fork, its holder (this
                // thread, in no call of the batch) out of the entries; forwarded.
                unsafe { self.flush_entries(pool) };
                return had;
            }
        }
    }

    /// The heap's holder, on a slow path: [`RemoteBatch::flush_own`], lock-free: returns at
    /// once when a flusher has the batch (the flusher pushes the chains). It first reads
    /// `pending`: 0 means no chain is pending (the holder sets it before it fills an entry,
    /// and only a whole flush clears it, after which only the holder, the caller, fills
    /// entries again), so a thread that frees nothing remotely pays one load on its alloc
    /// slow path.
    ///
    /// # Safety
    /// As [`RemoteBatch::flush_own`].
    pub(crate) unsafe fn try_flush_own(&self, pool: &Pool) -> Flush {
        let had = self.own_pending();
        if had == Flush::Nothing {
            return had;
        }
        if self.enter() {
            // SAFETY: entered; forwarded.
            unsafe { self.flush_entries(pool) };
            self.leave();
        }
        had
    }

    /// The holder: whether frees it made are pending ([`Flush::Pushed`]) or not. Only the
    /// holder adds: frees it made are pending until this reads 0.
    fn own_pending(&self) -> Flush {
        if self.pending.load(Ordering::Relaxed) == 0 {
            Flush::Nothing
        } else {
            Flush::Pushed
        }
    }

    /// The holder: spins while a flusher has the batch (`wants` not 0). True instead when
    /// the flusher is the fork this thread is inside (its `prepare` handler:
    /// [`RemoteBatch::take_over`]), which gives the batch back only after this thread's
    /// fork handlers: the holder may then touch its own entries, being in no call of the
    /// batch.
    fn wait_for_flusher(&self) -> bool {
        let mut round = 0;
        while self.wants.load(Ordering::Acquire) != 0 {
            match held_by_fork(self.flushing.load(Ordering::Relaxed)) {
                Some(ForkCaller::Enter) => return true,
                Some(ForkCaller::Retry) => continue,
                _ => {}
            }
            spin_hint(round);
            round += 1;
        }
        false
    }

    /// The heap's holder: true when slot `off` of block `h` is the first of the block's
    /// pending chain (the holder's last free of the block, still pending): already free.
    /// Waits while a flusher has the batch (then the slot is on the block's remote list).
    pub(crate) fn is_first_pending(&self, h: &Header, off: u32) -> bool {
        let block = ptr::from_ref(h);
        loop {
            if self.enter() {
                // SAFETY: entered.
                let first = unsafe {
                    self.with_entries(|entries| {
                        let i = entry_of(block);
                        entries.block[i] == block && entries.first[i] == off
                    })
                };
                self.leave();
                return first;
            }
            if self.wait_for_flusher() {
                // SAFETY: as in `flush_own`: the batch is held by this thread's own fork.
                return unsafe {
                    self.with_entries(|entries| {
                        let i = entry_of(block);
                        entries.block[i] == block && entries.first[i] == off
                    })
                };
            }
        }
    }

    /// Any thread but the holder: pushes every chain to its block, waiting for another
    /// flusher and for the holder to be out of the entries (a few instructions). Nothing
    /// to do when the batch's `pending` reads 0. True when it read 1 (a chain may have
    /// been pushed).
    ///
    /// # Safety
    /// Every block of the batch's chains is a live block of `pool` (the pool of the batch's
    /// heap, which no other process uses).
    pub(crate) unsafe fn flush(&self, pool: &Pool) -> Flush {
        if self.pending.load(Ordering::Relaxed) == 0 {
            return Flush::Nothing;
        }
        if self.take_over(1) == Taken::ByOwnFork {
            if self.flushing.load(Ordering::Relaxed) == FORK_UNSURE {
                // As a refused fence below: the holder may have been inside the entries.
                return Flush::Refused;
            }
            // SAFETY: held by this thread's fork, whose `prepare` waited the holder out
            // and keeps it out (`wants` 1) until the fork's `parent` handler; forwarded.
            unsafe { self.flush_entries(pool) };
            return Flush::Pushed;
        }
        if !fence::heavy() {
            // `membarrier` refused since its registration (a seccomp filter on this
            // thread): the holder may be inside the entries unseen. Its chains stay its
            // own, pushed by the holder (a full chain, its slow paths, its exit).
            self.give_back();
            return Flush::Refused;
        }
        self.wait_out();
        // SAFETY: taken over and waited out; forwarded.
        unsafe { self.flush_entries(pool) };
        self.give_back();
        Flush::Pushed
    }

    /// Pushes every entry's chain.
    ///
    /// # Safety
    /// The caller may touch the entries ([`RemoteBatch::with_entries`]); as
    /// [`RemoteBatch::flush`].
    unsafe fn flush_entries(&self, pool: &Pool) {
        // SAFETY: forwarded.
        unsafe {
            self.with_entries(|entries| {
                for i in 0..ENTRIES {
                    if !entries.block[i].is_null() {
                        // SAFETY: the chain's slots are the batch's; forwarded.
                        flush_entry(pool, entries, i);
                    }
                }
            })
        };
        self.pending.store(0, Ordering::Relaxed);
    }
}

mod entries;
mod fence;
mod fork_hold;
#[cfg(all(loom, test))]
mod loom;
