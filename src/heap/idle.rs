//! Idle current blocks: the pages of a current block that stays empty go back to the OS.
//!
//! A block that empties while listed goes to the pool (`free_slow`), where the kept empty
//! blocks decay (see [`crate::decay`]), when a local free empties it with nothing pending on
//! its remote list (that free takes `used == live + |remote|` to 0). A listed block whose
//! last live slot goes otherwise (freed by another thread, which takes no slow path, or by
//! its owner with remote frees pending, `used == |remote| > 0`) goes to the pool at the
//! owner's next look ([`Heap::give_listed_empty`]): after a look that walks them, every
//! block listed on a small head (and on `returned` before it) has `live > 0`. A look walks
//! the listed blocks at most once per millisecond (a walk reads every listed block's
//! header: with a delay of 0 every clock read of a slow path is a look, and a program
//! cycling objects through its current blocks reads the clock every few collects). A **current** block never reaches the pool when it
//! empties: its head keeps it for the next allocation, and with it every page its bump
//! pointer ever touched. After a burst, a heap would thus keep up to one block's touched
//! pages per head (size class × lifetime class) for good. Instead, the owner looks at its
//! current blocks on its slow paths, at most once per half delay (per heap, [`NextLook`]: a
//! thread holding heaps of several instances looks at each on its own schedule):
//!
//! - a block empty at the look is marked (`Header::seen_idle`); one that is not, unmarked;
//! - a block empty at two looks in a row (so empty for at least half the delay, as far as
//!   the looks can tell) has its slots' pages past the header's page given back and is
//!   reset in place: it stays current, its next allocations take never-used slots again
//!   and touch pages one by one. With a delay of 0, an empty block goes at the first look.
//!
//! A block a release emptied in place (`release_class`, a scope's end) has its bump pointer
//! back at its first slot, its touched pages still resident: it is marked
//! (`Header::touched_end` is then the slots' end), and the look gives those pages back as
//! it gives back a block emptied by frees.
//!
//! Invariant kept: a block reset here had `live == 0` (no live slot; its free slots on its
//! lists, or pending on its remote list, which the reset empties: no push can come, as a
//! push needs a live slot) and is owned by the looking thread, so no slot of it is
//! reachable by anyone; the given-back range is `[page_up(base + first), page_up(base +
//! touched_end))`, inside the block and past the header. A block the program still cycles
//! through (empty at both looks yet in use between them) pays one page fault per look: at
//! most one per half delay.
//! Regions that keep their memory (committed up front) are never looked at.

use super::*;
use crate::class::CLASSES;
use core::sync::atomic::{AtomicU32, AtomicU64};

/// Slow-path entries between two reads of the clock by [`Heap::look_for_idle`].
const ENTRIES_PER_CLOCK_READ: u32 = 32;

/// A heap's schedule of looks, written by its holder only (the atomics, relaxed, only make
/// the heap's bytes shareable: a heap taken over by another thread or process after its
/// holder died or left carries its schedule with it; a look late or early by one entry
/// changes nothing). Core atomics even under loom: the looks are off there.
#[repr(C)]
pub(crate) struct NextLook {
    /// When the holder looks at the heap's current blocks next (ms of [`crate::decay::now`]),
    /// half the delay after the last look; a look scheduled further than half the current
    /// delay on (the delay was shortened since) is due at once.
    at: AtomicU64,
    /// Slow-path entries left before [`Heap::look_for_idle`] reads the clock again.
    entries_left: AtomicU32,
    /// The low 32 bits of the time (ms of [`crate::decay::now`]) of the holder's last walk
    /// of the heap's listed blocks ([`Heap::give_listed_empty`]): a look in the same
    /// millisecond skips the walk. (In what was the struct's padding: the heap's size and
    /// every other offset are as they were, and bytes an older build left there delay one
    /// walk by a millisecond at most.)
    listed_at: AtomicU32,
}

impl NextLook {
    pub(crate) const fn new() -> NextLook {
        NextLook {
            at: AtomicU64::new(0),
            entries_left: AtomicU32::new(0),
            listed_at: AtomicU32::new(0),
        }
    }
}

impl Heap {
    /// Owner only, on the allocation slow path of (class, life), with no reference to the
    /// heap's heads alive: the heartbeat. When the allocation fast path spent the beats of
    /// the head's current block (see `crate::block`'s `BEATS`: a program cycling objects
    /// through its current blocks still gets here), reads the clock and runs the idle look
    /// and the pool's decay when due ([`Heap::heartbeat`]); on other entries, as every
    /// slow path, [`Heap::look_for_idle`]. Returns the bytes the idle look gave back.
    pub(crate) fn beat(&self, class: usize, life: usize) -> usize {
        // SAFETY: the owner, with class and life of one of the heap's heads (caller).
        let current = unsafe { current_block(self, class, life) };
        // SAFETY: a current block is live and owned by this heap, or the never-written
        // EMPTY_BLOCK, whose beats are 0 and never written.
        let spent = !ptr::eq(current, empty_block()) && unsafe { (*current).beats_spent() };
        if spent && !cfg!(loom) {
            self.heartbeat(crate::decay::now())
        } else {
            self.look_for_idle()
        }
    }

    /// Owner only, at `now`, with no reference to the heap's heads alive: what a slow path
    /// runs when it reads the clock: the idle look ([`Heap::give_back_idle_current`]) and
    /// the pool's decay of its kept empty blocks, each when due. Returns the bytes the idle
    /// look gave back.
    pub(crate) fn heartbeat(&self, now: u64) -> usize {
        let given = self.give_back_idle_current(now);
        self.pool().decay_kept_if_due(now);
        given
    }

    /// Owner only, on a slow path with no reference to the heap's heads alive: every
    /// [`ENTRIES_PER_CLOCK_READ`]th call reads the clock and runs
    /// [`Heap::give_back_idle_current`]. Returns the bytes given back.
    pub(crate) fn look_for_idle(&self) -> usize {
        // Under loom every model thread shares the OS thread whose locals these are, and
        // they outlive an execution: a look would differ between the model's iterations.
        if cfg!(loom) {
            return 0;
        }
        let left = &self.idle.entries_left;
        match left.load(Ordering::Relaxed) {
            0 => left.store(ENTRIES_PER_CLOCK_READ, Ordering::Relaxed),
            n => {
                left.store(n - 1, Ordering::Relaxed);
                return 0;
            }
        }
        self.heartbeat(crate::decay::now())
    }

    /// Owner only, at `now`, with no reference to the heap's heads alive: when the heap's
    /// look is due, gives the listed blocks with no live slot to the pool
    /// ([`Heap::give_listed_empty`], unless a look walked them this millisecond), looks at
    /// every current block (see the module docs)
    /// and gives back the pages of those empty at two looks in a row. Returns the bytes of
    /// current blocks given back.
    pub(crate) fn give_back_idle_current(&self, now: u64) -> usize {
        if cfg!(loom) {
            return 0; // see `look_for_idle`
        }
        let pool = self.pool();
        let delay = pool.idle_delay_ms();
        let next = &self.idle.at;
        let at = next.load(Ordering::Relaxed);
        // Not due: scheduled within half the delay. A look scheduled further on was
        // scheduled by a longer delay, which `set_retention` shortened since: due now.
        if now < at && at - now <= delay / 2 {
            return 0;
        }
        next.store(now.saturating_add(delay / 2), Ordering::Relaxed);
        // The listed blocks: at most one walk a millisecond, whatever the delay (with 1000
        // listed blocks and a delay of 0, a walk at every look made a 64-byte malloc+free
        // pair cycled through a current block cost 66 ns, against 14 with 10).
        let ms = now as u32;
        if self.idle.listed_at.load(Ordering::Relaxed) != ms {
            self.idle.listed_at.store(ms, Ordering::Relaxed);
            self.give_listed_empty();
        }
        if !pool.region.gives_memory_back() {
            return 0;
        }
        let page = os::page_size();
        let heads = self.heads();
        let mut given = 0;
        for i in pool.heads() {
            // SAFETY: the caller owns the heap and holds no other reference to its heads; i
            // is below the head count.
            let head = unsafe { head_at(self, heads, i.get()) };
            let Some(h) = self.current_in(pool, head.current()) else {
                continue;
            };
            // The header's counts and bump pointer are the truth from here (see `Cursors`);
            // the cursor is read again from it after a reset.
            head.sync();
            // No live slot: every slot free, on the block's lists or pending on its
            // remote list (no push can come: a push needs a live slot, and slots in other
            // threads' batches count as live).
            let empty = h.live() == 0;
            if !(h.seen_idle(empty) || empty && delay == 0) {
                continue;
            }
            let base = h.base() as usize;
            let start = (base + h.geometry().first as usize).next_multiple_of(page);
            // Up to `bump`, or to the slots' end for a block a release emptied in place.
            let end = (base + h.touched_end() as usize).next_multiple_of(page);
            if end <= start {
                continue; // nothing touched past the header's page
            }
            // SAFETY: the range lies in the block past its header (bump <= limit <= the
            // block's size, a multiple of the page), and no slot in it is live or listed
            // anywhere but on this block's own lists, which the reset below forgets: the
            // block is this heap's (the caller owns it) and `live == 0`.
            unsafe { pool.region.forget(start as *mut u8, end - start) };
            {
                // Its count and remote list zeroed: a write of the row (a reader between
                // the two would count the remote list's slots live).
                let _writing = head.cursors.writing();
                h.reset(false);
            }
            head.load();
            given += end - start;
        }
        given
    }
}

impl Heap {
    /// Owner only, at a look (see the module docs), with no reference to the heap's heads
    /// alive: lists the blocks on `returned`, then gives every listed block with no live
    /// slot to the pool, whose decay gives it back. Such a block had its last live slot
    /// freed while some of its slots were pending on its remote list (`used == |remote| >
    /// 0`, so no local free took `count` to 0: `free_slow` never ran), or freed by another
    /// thread (a remote free takes no slow path in a heap's block). Tiny heads are the
    /// pool lock's (their blocks empty under it). Returns how many blocks.
    pub(crate) fn give_listed_empty(&self) -> usize {
        let pool = self.pool();
        // A write of the state without the pool lock: marked (`crate::pool::write_seal`).
        let _writing = pool.writing();
        self.drain_returned();
        let heads = self.heads();
        let mut st = None;
        let mut given = 0;
        for i in pool.heads().filter(|i| !CLASSES[i.class()].is_tiny()) {
            // SAFETY: the caller owns the heap and holds no other reference to its heads; i
            // is below the head count.
            let head = unsafe { head_at(self, heads, i.get()) };
            for h in head.partial.iter(pool.units()) {
                // No live slot: none can come back (a remote push needs a live slot, and
                // slots in other threads' batches count as live), so the block is empty.
                if h.live() == 0 {
                    head.partial.remove(pool.units(), h);
                    pool.give_empty(st.get_or_insert_with(|| pool.lock()), h);
                    given += 1;
                }
            }
        }
        given
    }
}

// Under loom the crate has no instances (`Cohort`): the tests need them.
#[cfg(all(test, not(loom)))]
mod tests;
