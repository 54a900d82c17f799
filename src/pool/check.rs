//! The blocks' check, lazily (RED-77): a free slot's link damaged while nobody had a region
//! open is found before anything follows it, one block at a time.
//!
//! The links of free slots past a block's first page (its allocation, local and remote
//! free lists, a tiny block's run lists) are covered by no seal, and the allocation fast
//! path follows a link unchecked. So the first process to open a region nobody has open
//! starts a new **check generation** (`PoolShared::check_gen += 1`, in O(1)); every block
//! has a **mark** per unit in the state area (`Pool::checks`), shared by every process. A
//! block whose mark is not the generation is checked ([`Pool::block_trusted`]) before a
//! heap or the lock holder follows its lists: where a heap first takes it (the pool's
//! partial lists, a heap's own partial list, which blocks relisted by frees come back to,
//! a tiny list, the lists the lock holder allocates from for threads without a heap). The
//! check walks its lists link by link (each link must name a slot of the block below its
//! `bump`, once; their lengths must match the counts: [`slot_lists_fault`]) and sets the mark to
//! the generation, so each block is walked once per generation whoever takes it. The walk
//! runs under the pool lock (a heap owner whose block's mark is stale takes it), with a
//! bitmap every view reserves in its own mapping ([`SCRATCH_WORDS`]): a check asks the OS
//! for nothing, so it always runs.
//!
//! Invariants: `mark(b) == check_gen` ⇒ `b`'s lists were found whole in this generation
//! (or `b` was formatted in it: [`Pool::mark_new`]); `mark(b) == QUARANTINED` ⇒ `b` was
//! found damaged, is on no list, pool-owned and [`HEAPLESS`] (no heap takes it, no
//! release of one class frees it), and never handed out; `quarantined` counts such finds.
//!
//! A damaged block is **quarantined**: its slots are never handed out again (its live
//! objects stay readable, their frees push on its remote list and change nothing else),
//! [`crate::Cohort::verify`] names it (its walk finds the damage), and the statistics count
//! it. Walks that read only headers (counts, `compact`, `release_class`'s resets, the
//! statistics) and pushes (frees, remote frees, a tiny free's run link) follow no link
//! and need no check.

use super::*;
use crate::class::Class;
use bitvec::slice::BitSlice;

/// The mark of a block found damaged (no generation reaches it: [`Pool::new_check_generation`]).
pub(crate) const QUARANTINED: u32 = u32::MAX;

/// What [`Pool::block_trusted`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trust {
    /// The block's lists may be followed.
    Whole,
    /// The block was found damaged (now or before): quarantine it.
    Damaged,
}

/// What is wrong with a block's slot lists, as plain data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ListFault {
    /// A list (named) links to this offset, not a slot handed out.
    NotSlot(&'static str, u32),
    /// The slot at this offset is met twice.
    Twice(u32),
    /// A tiny run list leaves its run or is longer than it.
    RunList,
    /// The header's never-used boundary is not a slot boundary of its class.
    Bump(u32),
    /// The remote list holds this many slots, its count says that.
    RemoteCount(usize, u32),
    /// Checked mode: the slot at this offset is on a free list but its live bit is set (a
    /// link written to a live object).
    ListedLive(u32),
    /// `used + free-listed != handed out`.
    Counts {
        used: usize,
        free: usize,
        handed_out: usize,
    },
}

/// Marks the free-listed slots of `h` (class geometry `c`, never-used slots from `bump`)
/// in `seen`, the remote list's too; returns how many are on its owner's lists (the
/// allocation and local free lists, the run lists of a tiny block). The remote list is
/// read from one load of its word (its offset and count together), so frees pushing
/// meanwhile change nothing the walk reads.
///
/// # Safety
/// The caller owns the block's local lists (its owner, or the pool-lock holder for a
/// pool-owned block); `bump` is a slot boundary of `c` (`first <= bump <= limit`).
pub(crate) unsafe fn free_listed(
    h: &Header,
    c: &Class,
    bump: u32,
    seen: &mut BitSlice<usize>,
) -> Result<usize, ListFault> {
    let mut mark = |off: u32, list: &'static str| {
        if !(c.is_slot(off as usize) && off < bump) {
            return Err(ListFault::NotSlot(list, off));
        }
        match seen.replace(((off - c.first) / c.stride) as usize, true) {
            false => Ok(()),
            true => Err(ListFault::Twice(off)),
        }
    };
    if c.is_tiny() {
        let (mut free, mut bad) = (0, None);
        // SAFETY: the caller owns the block's lists.
        let ok = unsafe {
            crate::tiny::for_each_free(h, c, |off| {
                free += 1;
                mark(off, "a run list").map_err(|e| bad = Some(e)).is_ok()
            })
        };
        return match (bad, ok) {
            (Some(fault), _) => Err(fault),
            (None, false) => Err(ListFault::RunList),
            (None, true) => Ok(free),
        };
    }
    let mut walk = |first: u32, list: &'static str| -> Result<usize, ListFault> {
        let (mut n, mut off) = (0, first);
        while off != 0 {
            mark(off, list)?;
            n += 1;
            // SAFETY: `mark` checked that off is a slot of this block.
            off = unsafe { h.base().add(off as usize).cast::<u32>().read() };
        }
        Ok(n)
    };
    let free = walk(h.free.load(Ordering::Relaxed), "the allocation list")?
        + walk(h.local_listed(), "the local free list")?;
    let word = h.remote.load(Ordering::Acquire);
    // A first a reset kept in the word (a count of 0) is a never-used slot on no list
    // (`Header::reset`): it must be a slot, and is not marked.
    let listed = match h.kept_remote_first(word) {
        Some(kept) if c.is_slot(kept as usize) => 0,
        Some(kept) => return Err(ListFault::NotSlot("the remote word's kept first", kept)),
        None => word as u32,
    };
    let remote = walk(listed, "the remote free list")?;
    let count = ((word >> 32) & ((1 << 31) - 1)) as u32;
    if remote != count as usize {
        return Err(ListFault::RemoteCount(remote, count));
    }
    Ok(free)
}

/// The check of one block's lists: [`free_listed`], then `used + free-listed == handed
/// out`. `seen` has a bit per slot of the class (cleared here).
///
/// # Safety
/// As [`free_listed`].
pub(crate) unsafe fn slot_lists_fault(
    h: &Header,
    c: &Class,
    bump: u32,
    seen: &mut BitSlice<usize>,
) -> Result<(), ListFault> {
    seen[..c.capacity as usize].fill(false);
    // SAFETY: forwarded.
    let free = unsafe { free_listed(h, c, bump, seen) }?;
    let handed_out = ((bump - c.first) / c.stride) as usize;
    let used = h.used() as usize;
    match used + free == handed_out {
        true => Ok(()),
        false => Err(ListFault::Counts {
            used,
            free,
            handed_out,
        }),
    }
}

/// The bits of the largest class's slots, in words: the check's bitmap, which every view
/// reserves in its own mapping when it is built (`place`), so a check asks the OS for
/// nothing.
pub(crate) const SCRATCH_WORDS: usize = {
    let (mut most, mut i) = (0, 0);
    while i < CLASSES.len() {
        if CLASSES[i].capacity as usize > most {
            most = CLASSES[i].capacity as usize;
        }
        i += 1;
    }
    most.div_ceil(usize::BITS as usize)
};

impl Pool {
    /// The mark of block `h` (see the module docs).
    fn mark(&self, h: &Header) -> &AtomicU32 {
        // SAFETY: the table has an entry per unit, and `h` is a block of the region.
        unsafe { &*self.checks.add(self.units().index(h) as usize) }
    }

    /// Under the lock: block `h`, just formatted, is whole in this generation.
    pub(crate) fn mark_new(&self, h: &Header) {
        let gen = self.check_gen.load(Ordering::Relaxed);
        self.mark(h).store(gen, Ordering::Release);
    }

    /// The first process to open a region nobody has open, before any other attaches:
    /// every block's lists are checked again before they are followed.
    pub(crate) fn new_check_generation(&self) {
        let _writing = self.writing();
        let next = match self.check_gen.load(Ordering::Relaxed).wrapping_add(1) {
            QUARANTINED => 0,
            g => g,
        };
        self.check_gen.store(next, Ordering::Release);
    }

    /// True when block `h` was found whole in this generation: the first test of
    /// [`Pool::block_trusted`], which a caller not holding the lock makes before it takes
    /// the lock for the check. One load and compare.
    pub(crate) fn checked_now(&self, h: &Header) -> bool {
        self.mark(h).load(Ordering::Acquire) == self.check_gen.load(Ordering::Acquire)
    }

    /// Under the lock (`_st`, whose holder alone uses the view's bitmap): whether block
    /// `h`'s lists may be followed: [`Trust::Whole`] when its mark is this generation's or
    /// a check now finds them whole (and marks it); [`Trust::Damaged`] for a block found
    /// damaged, now or before: the caller, which has taken it off its list, hands it to
    /// [`Pool::quarantine`]. Costs one load and compare for a block checked already.
    ///
    /// # Safety
    /// The caller owns the block's local lists (its owner heap's thread, or the pool-lock
    /// holder for a pool-owned block), and the block is carved, of a size class.
    pub(crate) unsafe fn block_trusted(&self, _st: &mut PoolState, h: &Header) -> Trust {
        let gen = self.check_gen.load(Ordering::Acquire);
        let mark = self.mark(h).load(Ordering::Acquire);
        if mark == gen {
            return Trust::Whole;
        }
        if mark == QUARANTINED {
            return Trust::Damaged;
        }
        // SAFETY: forwarded; the lock is held (`_st`).
        match unsafe { self.check_lists(h) } {
            Ok(()) => {
                let _writing = self.writing();
                self.mark(h).store(gen, Ordering::Release);
                Trust::Whole
            }
            Err(_) => Trust::Damaged,
        }
    }

    /// Walks block `h`'s lists ([`slot_lists_fault`]) with the view's bitmap (no
    /// allocation, no system call: reserved with the view).
    ///
    /// # Safety
    /// As [`Pool::block_trusted`], whose lock (held) makes the bitmap this thread's alone.
    unsafe fn check_lists(&self, h: &Header) -> Result<(), ListFault> {
        let c = h.geometry();
        let bump = h.bump.load(Ordering::Relaxed);
        if bump < c.first || bump > c.limit || !(bump - c.first).is_multiple_of(c.stride) {
            return Err(ListFault::Bump(bump));
        }
        // A view without a bitmap is a private reservation's, where no check generation
        // starts (`place::view_len`): its blocks' marks are the generation they were made in.
        debug_assert!(
            !self.check_scratch.is_null(),
            "a check in a private reservation"
        );
        if self.check_scratch.is_null() {
            return Ok(());
        }
        // SAFETY: `SCRATCH_WORDS` words of the view's mapping, used by the lock holder
        // only (caller); no other reference to them is alive.
        let seen = unsafe { core::slice::from_raw_parts_mut(self.check_scratch, SCRATCH_WORDS) };
        let seen = BitSlice::from_slice_mut(seen);
        // SAFETY: forwarded; `bump` was checked a slot boundary above.
        let found = unsafe { slot_lists_fault(h, c, bump, seen) };
        // (Loom's models keep no live bits.)
        #[cfg(not(loom))]
        let found = found.and_then(|()| self.listed_live(h, c, bump, seen));
        found
    }

    /// Checked mode: fails on a free-listed slot (`seen`, of the slots below `bump`) whose
    /// live bit is set. Sound while other threads free into the block: a free clears the
    /// slot's bit before it lists the slot (`crate::free`'s checks), and only the caller,
    /// the block's owner, allocates from it. (`verify`, which excludes every other thread,
    /// also checks the other way.)
    #[cfg(not(loom))]
    fn listed_live(
        &self,
        h: &Header,
        c: &Class,
        bump: u32,
        seen: &BitSlice<usize>,
    ) -> Result<(), ListFault> {
        let Some(bits) = crate::live_bits::LiveBits::of(&self.region) else {
            return Ok(());
        };
        let handed_out = ((bump - c.first) / c.stride) as usize;
        match seen[..handed_out].iter_ones().find(|&i| {
            let off = c.first as usize + i * c.stride as usize;
            bits.is_live(h.base() as usize + off)
        }) {
            Some(i) => Err(ListFault::ListedLive(c.first + i as u32 * c.stride)),
            None => Ok(()),
        }
    }

    /// True when block `h` was found damaged ([`QUARANTINED`]).
    pub(crate) fn is_quarantined(&self, h: &Header) -> bool {
        self.mark(h).load(Ordering::Acquire) == QUARANTINED
    }

    /// Under the lock: takes block `h`, found damaged and on no list, out of use for good:
    /// pool-owned, [`HEAPLESS`] (no heap takes it, no release of one class frees it), its
    /// mark [`QUARANTINED`], counted.
    pub(crate) fn quarantine(&self, _st: &mut PoolState, h: &Header) {
        h.set_owner(0);
        h.set_holder(HEAPLESS);
        h.set_role(Role::Listed);
        self.mark(h).store(QUARANTINED, Ordering::Release);
        self.quarantined.fetch_add(1, Ordering::Relaxed);
    }
}
