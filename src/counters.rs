//! Per-head counters: events of the slow paths, counted per (size class, lifetime class)
//! where they happen, never on the fast paths (whose instruction budget they must not
//! move), and shown by `stats` ([`HeadStats`](crate::HeadStats)) and the ratio tool.
//!
//! Counted: the alloc slow path's entries ([`Counter::AllocSlow`]), the free slow path's
//! (a local free that empties or relists a block, any free the fast path did not finish:
//! [`Counter::FreeSlow`]), remote frees ([`Counter::RemoteFree`]), blocks a heap took from
//! the pool ([`Counter::BlockTaken`]), blocks given back to the pool empty or released
//! ([`Counter::BlockGivenBack`]), and requests served by promotion, counted on the
//! request's own head ([`Counter::Promoted`]).
//!
//! Not counted: each allocation and each free. The fast paths change a block's `count`
//! (`used + bias`) by one per pop and per push, and nothing else: a pop of a slot freed
//! locally and that free leave every other header word as it was, so no count made off
//! the fast paths can tell how many such pairs happened (`live = allocations - frees` is
//! all the headers hold). A counter of its own would cost the fast paths an instruction
//! each (a memory increment per pop and per push: the budget's 48 would be 50).
//!
//! **Where the table is.** A private instance's is its own, mapped on the first event and
//! readable at any time (with no memory for it, events go uncounted). A region laid out to
//! be shared between processes (shared-anonymous, named, a file, caller memory, a fixed
//! region) keeps it in the region's state area: its counts are **region-wide**, every
//! process's events, kept across leave and open. Each event is one atomic add on the
//! region's memory: one instruction, which a process killed at any point has made or not
//! (no torn counter), and which no other process's add can lose. A fork child of an
//! instance counts on in its copy (a private one) or in the region it shares with its
//! parent.
//!
//! Invariant: every counter only grows (relaxed atomic adds), and equals the events of
//! its kind counted on its head since the table was made.

use crate::os;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// What a counter counts (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counter {
    AllocSlow,
    FreeSlow,
    RemoteFree,
    BlockTaken,
    BlockGivenBack,
    Promoted,
}

/// Counters per head.
pub(crate) const COUNTERS: usize = 6;

/// The counters of every head of one pool.
pub(crate) struct HeadCounters {
    /// `heads * COUNTERS` words: mapped on first use (null before), or in a region's state
    /// area (`placed`).
    table: AtomicPtr<AtomicU64>,
    heads: usize,
    /// The table is in a region (not this value's to unmap; other processes use it).
    placed: bool,
}

// SAFETY: the table is atomics only, mapped for the value's life.
unsafe impl Send for HeadCounters {}
// SAFETY: as above.
unsafe impl Sync for HeadCounters {}

impl HeadCounters {
    /// The counters of `heads` heads (`life_count * CLASS_COUNT`), all 0, in a table of
    /// their own mapped on the first event.
    pub(crate) const fn new(heads: usize) -> HeadCounters {
        HeadCounters {
            table: AtomicPtr::new(ptr::null_mut()),
            heads,
            placed: false,
        }
    }

    /// The counters of `heads` heads in a region's state area: [`HeadCounters::bytes_of`]
    /// bytes at `table`, 8-byte aligned, zero when the region was formatted, mapped while
    /// the value lives.
    pub(crate) fn placed(table: *mut u8, heads: usize) -> HeadCounters {
        debug_assert!((table as usize).is_multiple_of(align_of::<AtomicU64>()));
        HeadCounters {
            table: AtomicPtr::new(table.cast()),
            heads,
            placed: true,
        }
    }

    /// The bytes of the counters of `heads` heads.
    pub(crate) const fn bytes_of(heads: usize) -> usize {
        heads * COUNTERS * size_of::<AtomicU64>()
    }

    fn bytes(&self) -> usize {
        Self::bytes_of(self.heads)
    }

    /// The table, mapped now if it is not yet (null when the OS refuses).
    fn table(&self) -> *mut AtomicU64 {
        let t = self.table.load(Ordering::Acquire);
        if !t.is_null() {
            return t;
        }
        let fresh = os::map(self.bytes(), os::MIN_PAGE).cast::<AtomicU64>();
        if fresh.is_null() {
            return fresh;
        }
        match self.table.compare_exchange(
            ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => fresh,
            Err(won) => {
                // SAFETY: mapped above, never published.
                unsafe { os::unmap(fresh.cast(), self.bytes()) };
                won
            }
        }
    }

    /// Maps the table now and faults its pages in, for a region made so that no allocation
    /// takes a page fault (a prefaulted region): otherwise the table is mapped and touched
    /// on first use, a page at a time. The OS's error number when it refuses.
    pub(crate) fn prefault(&self) -> Result<(), i32> {
        let t = self.table();
        if t.is_null() {
            return Err(libc::ENOMEM);
        }
        // SAFETY: the table is `bytes()` long, mapped for self's life; in a region other
        // processes may be adding to it (`in_use`: the prefault changes no byte).
        unsafe { os::placement::prefault(t.cast(), self.bytes(), self.placed) }
    }

    /// Adds `n` to counter `which` of head `head` (`life * CLASS_COUNT + class`).
    pub(crate) fn add(&self, head: usize, which: Counter, n: u64) {
        let t = self.table();
        if t.is_null() || head >= self.heads {
            return;
        }
        // SAFETY: head < heads: inside the table, which lives as long as self.
        let c = unsafe { &*t.add(head * COUNTERS + which as usize) };
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters of head `head`, in [`Counter`]'s order (0 before any event).
    pub(crate) fn get(&self, head: usize) -> [u64; COUNTERS] {
        let t = self.table.load(Ordering::Acquire);
        if t.is_null() || head >= self.heads {
            return [0; COUNTERS];
        }
        // SAFETY: as in `add`.
        core::array::from_fn(|i| unsafe { (*t.add(head * COUNTERS + i)).load(Ordering::Relaxed) })
    }
}

impl Drop for HeadCounters {
    fn drop(&mut self) {
        let t = *self.table.get_mut();
        if !t.is_null() && !self.placed {
            // SAFETY: mapped by `table`, and nothing uses it any more.
            unsafe { os::unmap(t.cast(), self.bytes()) };
        }
    }
}
