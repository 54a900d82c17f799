//! The owner's two slot lists at work: the collects that move the local free list (or the
//! remote list) to the allocation list, the beats that make a program cycling objects
//! through its current blocks enter the slow path now and then, the counts the slow path
//! decides with, and the bump window's moves (see the module docs of [`super`]).

use super::*;

/// A word of a block's allocation state ([`AllocState`]): the header's atomics, or those
/// of its owner's cursor (core atomics, also under loom).
pub(crate) trait Word {
    fn get(&self) -> u32;
    fn set(&self, v: u32);
}

impl Word for core::sync::atomic::AtomicU32 {
    #[inline(always)]
    fn get(&self) -> u32 {
        self.load(Ordering::Relaxed)
    }
    #[inline(always)]
    fn set(&self, v: u32) {
        self.store(v, Ordering::Relaxed);
    }
}

#[cfg(loom)]
impl Word for AtomicU32 {
    fn get(&self) -> u32 {
        self.load(Ordering::Relaxed)
    }
    fn set(&self, v: u32) {
        self.store(v, Ordering::Relaxed);
    }
}

/// Where the owner's allocation state of a block lives: the allocation list's first slot
/// (`free`), the first never-used slot (`bump`) and the bump window's end (`end`). A
/// block's header holds them ([`Header::state`]), except while the block is current: then
/// its owner's cursor does (`crate::heap::Cursors`), and the header's copy is stale until
/// the cursor is written back. Only the owner reads or writes them (others read a
/// moment's view). One address: `bump` is `STRIDE` bytes after `free` and `end` as far
/// after `bump` (one displacement each from a register).
pub(crate) struct AllocState<'a, W: Word, const STRIDE: usize> {
    free: *const W,
    _words: PhantomData<&'a W>,
}

impl<W: Word, const STRIDE: usize> Clone for AllocState<'_, W, STRIDE> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<W: Word, const STRIDE: usize> Copy for AllocState<'_, W, STRIDE> {}

/// The allocation state in a header: `free`, `bump` and `bump_end` one field apart.
pub(crate) type HeaderState<'a> = AllocState<'a, AtomicU32, HEADER_STRIDE>;
const HEADER_STRIDE: usize =
    core::mem::offset_of!(Header, bump) - core::mem::offset_of!(Header, free);
const _: () = assert!(
    core::mem::offset_of!(Header, bump_end) - core::mem::offset_of!(Header, bump) == HEADER_STRIDE
);

impl<'a, W: Word, const STRIDE: usize> AllocState<'a, W, STRIDE> {
    /// The state whose `free` word is at `free`.
    ///
    /// # Safety
    /// `free`, `free + STRIDE` and `free + 2 * STRIDE` bytes are `W`s that live for `'a`,
    /// and `free`'s provenance covers the three.
    #[inline(always)]
    pub(crate) const unsafe fn new(free: *const W) -> Self {
        AllocState {
            free,
            _words: PhantomData,
        }
    }

    /// The allocation list's first slot (0: empty).
    #[inline(always)]
    pub(crate) fn free(self) -> &'a W {
        // SAFETY: a live `W` for `'a` (`new`'s contract).
        unsafe { &*self.free }
    }

    /// The first never-used slot.
    #[inline(always)]
    pub(crate) fn bump(self) -> &'a W {
        // SAFETY: as in `free`.
        unsafe { &*self.free.byte_add(STRIDE) }
    }

    /// The bump window's end.
    #[inline(always)]
    pub(crate) fn end(self) -> &'a W {
        // SAFETY: as in `free`.
        unsafe { &*self.free.byte_add(2 * STRIDE) }
    }
}

impl Header {
    /// The block's allocation state kept in its header (see [`AllocState`]).
    #[inline(always)]
    pub(crate) fn state(&self) -> HeaderState<'_> {
        // SAFETY: `free`, `bump` and `bump_end` are `HEADER_STRIDE` bytes apart (checked
        // above), atomics of the header, which the pointer's provenance covers.
        unsafe {
            AllocState::new(
                ptr::from_ref(self)
                    .byte_add(core::mem::offset_of!(Header, free))
                    .cast(),
            )
        }
    }

    /// Owner only: [`Header::pop`] from allocation state `s`, without counting the slot
    /// (the caller counts it: in the header, or in its cursor's `taken`).
    #[inline(always)]
    pub(crate) fn take_in<W: Word, const S: usize>(
        &self,
        s: AllocState<'_, W, S>,
    ) -> Option<(u32, bool)> {
        let off = s.free().get();
        if off != 0 {
            // SAFETY: `off` is a free slot of this block (module invariant); its first four
            // bytes hold the next link, written by `push_local` or `push_remote`.
            let next = unsafe { self.base().add(off as usize).cast::<u32>().read() };
            s.free().set(next);
            Some((off, false))
        } else {
            let bump = s.bump().get();
            if bump >= s.end().get() {
                return None;
            }
            s.bump().set(bump + self.stride);
            Some((bump, self.is_fresh()))
        }
    }

    /// Owner only, when [`Header::pop`] found no slot: while the block has beats left,
    /// spends one to make the local free list the allocation list, and pops its first slot
    /// (the one freed last). `None` when the local list is empty or no beat is left: the
    /// slow path, whose heartbeat gives the beats back ([`Header::take_beats`]). The
    /// allocation fast paths' first step out of line (`alloc::Instance::alloc_global_slow`
    /// and `alloc_class_slow`), which keeps their inline code as it was.
    #[cfg(test)]
    pub(crate) fn pop_collected(&self) -> Option<(u32, bool)> {
        let first = self.take_collected(self.state(), || ())?;
        self.count_add(1);
        Some((first, false))
    }

    /// [`Header::pop_collected`]'s part in the header: spends a beat and empties the local
    /// free list, or when that is empty takes the whole remote list (one swap: other
    /// threads' frees, a consumer's), returning its first slot and that slot's link, which
    /// becomes the allocation list (the caller stores it, and counts the slot handed out).
    /// `None` when both lists are empty or no beat is left (the slow path). So a block
    /// whose slots another thread frees enters the slow path once per [`BEATS`] + 1
    /// collects too, not at each.
    /// A remote list is taken with `guard()`'s value alive (the caller's row write: the
    /// swap and the count change are two steps a reader must not see apart).
    ///
    /// The rest of the list becomes the allocation list of `s` here, before the local list
    /// is emptied: an owner that stops between the two (a fork child's copy of another
    /// thread's heap) leaves the allocation list named by the local list's first slot's
    /// link, which [`Header::recount_local`] recognises (the local list then goes, its
    /// first slot counted handed out).
    #[inline(always)]
    pub(crate) fn take_collected<G, W: Word, const S: usize>(
        &self,
        s: AllocState<'_, W, S>,
        guard: impl FnOnce() -> G,
    ) -> Option<u32> {
        let beats = self.beats.get();
        if beats == 0 {
            return None;
        }
        let first = self.local.load(Ordering::Relaxed);
        let first = if first != 0 {
            s.free().set(self.link_of(first));
            self.local.store(0, Ordering::Relaxed);
            first
        } else {
            let _guard = guard();
            let first = self.take_remote().0;
            if first == 0 {
                return None;
            }
            s.free().set(self.link_of(first));
            first
        };
        self.beats.set(beats - 1);
        Some(first)
    }

    /// The link of free slot `off`: the next slot of its list (0 for none).
    #[inline(always)]
    fn link_of(&self, off: u32) -> u32 {
        // SAFETY: `off` is a free slot of this block (module invariant, callers); its first
        // four bytes hold the next link of its list, written by `push_local` or
        // `push_remote` (and visible: `take_remote`'s swap acquires).
        unsafe { self.base().add(off as usize).cast::<u32>().read() }
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
        self.collect_freed_in(self.state()) > 0 || self.advance_window()
    }

    /// [`Header::collect_freed_in`] of the header's own state.
    #[cfg(test)]
    pub(crate) fn collect_freed(&self) -> u32 {
        self.collect_freed_in(self.state())
    }

    /// Owner only, with an empty allocation list in `s`: moves the slots freed since the
    /// last collect to it, the local free list whole if it has any, else the remote list
    /// whole. Returns how many slots it moved.
    pub(crate) fn collect_freed_in<W: Word, const S: usize>(&self, s: AllocState<'_, W, S>) -> u32 {
        match self.collect_local_in(s) {
            0 => self.collect_remote_in(s),
            n => n,
        }
    }

    /// Owner only, with an empty allocation list in `s`: how many slots
    /// [`Header::collect_freed_in`] would move now (the local free list's, else the remote
    /// list's so far: remote frees may add more before the collect).
    pub(crate) fn freed_waiting_in<W: Word, const S: usize>(&self, s: AllocState<'_, W, S>) -> u32 {
        match self.local_count(s) {
            0 => self.remote_count(),
            n => n,
        }
    }

    /// Owner only, with an empty allocation list in `s`: the local free list's length, from
    /// the counts (no walk): `|local| == capacity - used - never used` then.
    fn local_count<W: Word, const S: usize>(&self, s: AllocState<'_, W, S>) -> u32 {
        debug_assert_eq!(s.free().get(), 0);
        if self.local.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let c = self.geometry();
        let never_used = c.limit.saturating_sub(s.bump().get()) / c.stride;
        c.capacity
            .saturating_sub(self.used())
            .saturating_sub(never_used)
            .max(1)
    }

    /// Owner only, with an empty allocation list in `s`: makes the local free list the
    /// allocation list. Returns how many slots it moved: from the counts, `|local| ==
    /// capacity - used - never used` when the allocation list is empty (no walk).
    fn collect_local_in<W: Word, const S: usize>(&self, s: AllocState<'_, W, S>) -> u32 {
        let n = self.local_count(s);
        if n > 0 {
            // The allocation list first, then the local list emptied: an owner that stops
            // between the two leaves both naming the same slots, which
            // `Header::recount_local` recognises.
            s.free().set(self.local.load(Ordering::Relaxed));
            self.local.store(0, Ordering::Relaxed);
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
        self.advance_window_in(self.state())
    }

    /// [`Header::advance_window`] in allocation state `s`.
    pub(crate) fn advance_window_in<W: Word, const S: usize>(
        &self,
        s: AllocState<'_, W, S>,
    ) -> bool {
        let bump = s.bump().get();
        let limit = self.geometry().limit;
        if bump >= limit {
            return false;
        }
        s.end().set(window_end(bump, limit));
        true
    }
}
