//! The owner's two slot lists at work: the collects that move the local free list (or the
//! remote list) to the allocation list, the beats that make a program cycling objects
//! through its current blocks enter the slow path now and then, the counts the slow path
//! decides with, and the bump window's moves (see the module docs of [`super`]).

use super::*;

impl Header {
    /// Owner only, when [`Header::pop`] found no slot: while the block has beats left,
    /// spends one to make the local free list the allocation list, and pops its first slot
    /// (the one freed last). `None` when the local list is empty or no beat is left: the
    /// slow path, whose heartbeat gives the beats back ([`Header::take_beats`]). The
    /// allocation fast paths' first step out of line (`alloc::Instance::alloc_global_slow`
    /// and `alloc_class_slow`), which keeps their inline code as it was.
    #[inline(always)]
    pub(crate) fn pop_collected(&self) -> Option<(u32, bool)> {
        let first = self.local.load(Ordering::Relaxed);
        let beats = self.beats.get();
        if first == 0 || beats == 0 {
            return None;
        }
        self.beats.set(beats - 1);
        self.local.store(0, Ordering::Relaxed);
        // SAFETY: `first` is a free slot of this block (module invariant); its first four
        // bytes hold the next link of the local free list, written by `push_local`.
        let next = unsafe { self.base().add(first as usize).cast::<u32>().read() };
        self.free.store(next, Ordering::Relaxed);
        self.count_add(1);
        Some((first, false))
    }

    /// Owner only: true when the allocation fast path spent the block's beats (its
    /// heartbeat is due, or the block never had any).
    pub(crate) fn beats_spent(&self) -> bool {
        self.beats.get() == 0
    }

    /// Owner only, on the slow path: gives the block [`BEATS`] again.
    pub(crate) fn take_beats(&self) {
        self.beats.set(BEATS);
    }

    /// Owner only, on the slow path of a block whose collects give a few slots each:
    /// `BEATS * times` beats (at most `u16::MAX`), so that its slow paths come about as
    /// often in allocations as those of a block whose collects give many.
    pub(crate) fn give_beats(&self, times: u32) {
        let beats = u32::from(BEATS).saturating_mul(times.max(1));
        self.beats.set(beats.min(u32::from(u16::MAX)) as u16);
    }

    /// True when the block has freed slots to hand out (on its allocation, local or remote
    /// list): memory it used before, unlike its never-used slots. Owner only (or a
    /// snapshot).
    pub(crate) fn has_freed_slots(&self) -> bool {
        self.free.load(Ordering::Relaxed) != 0
            || self.local.load(Ordering::Relaxed) != 0
            || self.remote_count() > 0
    }

    /// Owner only, when [`Header::pop`] found no slot: makes slots available to it,
    /// preferring the slots freed (the local free list, else the whole remote list) to
    /// never-used ones (the next bump window: the never-used slots that start before the
    /// end of the page `bump` is in, at least one). Returns false when the block has no
    /// free slot at all.
    pub(crate) fn refill(&self) -> bool {
        self.collect_freed() > 0 || self.advance_window()
    }

    /// Owner only, with an empty allocation list: moves the slots freed since the last
    /// collect to it, the local free list whole if it has any, else the remote list whole.
    /// Returns how many slots it moved.
    pub(crate) fn collect_freed(&self) -> u32 {
        match self.collect_local() {
            0 => self.collect_remote(),
            n => n,
        }
    }

    /// Owner only, with an empty allocation list: how many slots [`Header::collect_freed`]
    /// would move now (the local free list's, else the remote list's so far: remote frees
    /// may add more before the collect).
    pub(crate) fn freed_waiting(&self) -> u32 {
        match self.local_count() {
            0 => self.remote_count(),
            n => n,
        }
    }

    /// Owner only, with an empty allocation list: the local free list's length, from the
    /// counts (no walk): `|local| == capacity - used - never used` then.
    fn local_count(&self) -> u32 {
        debug_assert_eq!(self.free.load(Ordering::Relaxed), 0);
        if self.local.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let c = self.geometry();
        let never_used = c.limit.saturating_sub(self.bump.load(Ordering::Relaxed)) / c.stride;
        c.capacity
            .saturating_sub(self.used())
            .saturating_sub(never_used)
            .max(1)
    }

    /// Owner only, with an empty allocation list: makes the local free list the allocation
    /// list. Returns how many slots it moved: from the counts, `|local| == capacity - used -
    /// never used` when the allocation list is empty (no walk).
    pub(crate) fn collect_local(&self) -> u32 {
        debug_assert_eq!(self.free.load(Ordering::Relaxed), 0);
        let n = self.local_count();
        if n > 0 {
            let first = self.local.load(Ordering::Relaxed);
            self.local.store(0, Ordering::Relaxed);
            self.free.store(first, Ordering::Relaxed);
        }
        n
    }

    /// Slots free now (on a list, or never used): `capacity - used + |remote|`. Owner only
    /// (or a snapshot).
    pub(crate) fn free_slots(&self) -> u32 {
        self.capacity()
            .saturating_sub(self.used())
            .saturating_add(self.remote_count())
    }

    /// Owner only: moves the bump window on past `bump`. False when no slot is left above
    /// `bump`.
    pub(crate) fn advance_window(&self) -> bool {
        let bump = self.bump.load(Ordering::Relaxed);
        let limit = self.geometry().limit;
        if bump >= limit {
            return false;
        }
        self.bump_end
            .store(window_end(bump, limit), Ordering::Relaxed);
        true
    }
}
