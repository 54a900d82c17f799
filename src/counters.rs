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
//! The table is this process's (for a region shared between processes, the events of this
//! process's view), mapped on the first event and readable at any time; with no memory for
//! it, events go uncounted. Invariant: every counter only grows (relaxed atomic adds).

use crate::class::CLASS_COUNT;
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
    /// `heads * COUNTERS` words, mapped on first use (null before).
    table: AtomicPtr<AtomicU64>,
    heads: usize,
}

// SAFETY: the table is atomics only, mapped for the value's life.
unsafe impl Send for HeadCounters {}
// SAFETY: as above.
unsafe impl Sync for HeadCounters {}

impl HeadCounters {
    /// The counters of `life_count` lifetime classes' heads, all 0.
    pub(crate) const fn new(life_count: usize) -> HeadCounters {
        HeadCounters {
            table: AtomicPtr::new(ptr::null_mut()),
            heads: life_count * CLASS_COUNT,
        }
    }

    fn bytes(&self) -> usize {
        self.heads * COUNTERS * size_of::<AtomicU64>()
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
        // SAFETY: the table is `bytes()` long, mapped for self's life, and reads zero or
        // counts: the prefault writes each page's bytes back unchanged.
        unsafe { os::placement::prefault(t.cast(), self.bytes()) }
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
        if !t.is_null() {
            // SAFETY: mapped by `table`, and nothing uses it any more.
            unsafe { os::unmap(t.cast(), self.bytes()) };
        }
    }
}
