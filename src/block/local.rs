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

/// The allocation list's first slot in an allocation state ([`AllocState`]): in a header,
/// its offset (`AtomicU32`, 0 for none); in the owner's cursor, its address (`AtomicPtr`:
/// the block's base plus the offset, so that the allocation fast path hands it out with no
/// addition and finds the next slot by adding the slot's link, [`Header::link_at`]). An
/// address whose offset bits (below [`BLOCK_SIZE`]) are 0, the block's base or null, is
/// the empty list: no slot starts at offset 0 (the header is there). Blocks are aligned to
/// [`BLOCK_SIZE`] in every mapping, so the offset is the address's low bits wherever the
/// region is mapped.
pub(crate) trait First {
    /// The offset of the first slot, 0 when the list is empty.
    fn first(&self) -> u32;
    /// Makes the slot at `off` of the block at `base` the first (0: the list empty).
    fn set_first(&self, base: *mut u8, off: u32);
    /// Makes the slot after free slot `p` of the block at `base` the first: the one its
    /// link names ([`Header::link_at`]), none when it is the last.
    ///
    /// # Safety
    /// `p` is a free slot of the block at `base`, on one of its slot lists (or just taken
    /// from one), whose link that list's push wrote.
    #[inline(always)]
    unsafe fn set_next(&self, base: *mut u8, p: *mut u8) {
        // SAFETY: the slot's first four bytes hold its link (caller).
        let link = unsafe { p.cast::<u32>().read() };
        self.set_first(base, ((p.addr() - base.addr()) as u32).wrapping_add(link));
    }
}

impl First for core::sync::atomic::AtomicU32 {
    #[inline(always)]
    fn first(&self) -> u32 {
        self.load(Ordering::Relaxed)
    }
    #[inline(always)]
    fn set_first(&self, _: *mut u8, off: u32) {
        self.store(off, Ordering::Relaxed);
    }
}

#[cfg(loom)]
impl First for AtomicU32 {
    fn first(&self) -> u32 {
        self.load(Ordering::Relaxed)
    }
    fn set_first(&self, _: *mut u8, off: u32) {
        self.store(off, Ordering::Relaxed);
    }
}

impl First for core::sync::atomic::AtomicPtr<u8> {
    #[inline(always)]
    fn first(&self) -> u32 {
        (self.load(Ordering::Relaxed).addr() % BLOCK_SIZE) as u32
    }
    #[inline(always)]
    fn set_first(&self, base: *mut u8, off: u32) {
        self.store(base.wrapping_add(off as usize), Ordering::Relaxed);
    }
    #[inline(always)]
    unsafe fn set_next(&self, _: *mut u8, p: *mut u8) {
        // SAFETY: the caller's.
        self.store(unsafe { next_of(p) }, Ordering::Relaxed);
    }
}

/// The address of the slot after free slot `p` on its list, from the slot's link, which is
/// relative to the slot ([`Header::link_at`]): the block's base when `p` is the last (an
/// address whose offset bits are 0: the empty list, see [`First`]). One load and one
/// addition.
///
/// # Safety
/// `p` is a free slot of a live block, on one of its slot lists (or just taken from one),
/// whose link was written by that list's push.
#[inline(always)]
pub(crate) unsafe fn next_of(p: *mut u8) -> *mut u8 {
    // SAFETY: the slot's first four bytes hold its link (caller); the link stays inside
    // the block: the next slot, or the block's base for none.
    let link = unsafe { p.cast::<i32>().read() };
    p.wrapping_offset(link as isize)
}

/// Where the owner's allocation state of a block lives: the allocation list's first slot
/// (`first`, a [`First`]), the first never-used slot (`bump`) and the bump window's end
/// (`end`). A block's header holds them ([`Header::state`]), except while the block is
/// current: then its owner's cursor does (`crate::heap::Cursors`), and the header's copy is
/// stale until the cursor is written back. Only the owner reads or writes them (others
/// read a moment's view). `end` is `STRIDE` bytes after `bump` (one displacement each
/// from a register).
pub(crate) struct AllocState<'a, F: First, W: Word, const STRIDE: usize> {
    first: *const F,
    bump: *const W,
    _words: PhantomData<(&'a F, &'a W)>,
}

impl<F: First, W: Word, const STRIDE: usize> Clone for AllocState<'_, F, W, STRIDE> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<F: First, W: Word, const STRIDE: usize> Copy for AllocState<'_, F, W, STRIDE> {}

/// The allocation state in a header: `free` (an offset), then `bump` and `bump_end` one
/// field apart.
pub(crate) type HeaderState<'a> = AllocState<'a, AtomicU32, AtomicU32, HEADER_STRIDE>;
const HEADER_STRIDE: usize =
    core::mem::offset_of!(Header, bump_end) - core::mem::offset_of!(Header, bump);

impl<'a, F: First, W: Word, const STRIDE: usize> AllocState<'a, F, W, STRIDE> {
    /// The state whose first slot is at `first` and whose `bump` word is at `bump`.
    ///
    /// # Safety
    /// `first` is an `F`, `bump` and `bump + STRIDE` bytes are `W`s, all living for `'a`,
    /// and `bump`'s provenance covers both `W`s.
    #[inline(always)]
    pub(crate) const unsafe fn new(first: *const F, bump: *const W) -> Self {
        AllocState {
            first,
            bump,
            _words: PhantomData,
        }
    }

    /// The allocation list's first slot (an offset; 0: empty).
    #[inline(always)]
    pub(crate) fn first(self) -> u32 {
        // SAFETY: a live `F` for `'a` (`new`'s contract).
        unsafe { &*self.first }.first()
    }

    /// Makes the slot at `off` of the block at `base` the allocation list's first (0:
    /// empty).
    #[inline(always)]
    pub(crate) fn set_first(self, base: *mut u8, off: u32) {
        // SAFETY: as in `first`.
        unsafe { &*self.first }.set_first(base, off)
    }

    /// Makes the slot after free slot `p` of the block at `base` the allocation list's
    /// first ([`First::set_next`]).
    ///
    /// # Safety
    /// As [`First::set_next`]'s.
    #[inline(always)]
    pub(crate) unsafe fn set_next(self, base: *mut u8, p: *mut u8) {
        // SAFETY: a live `F` for `'a` (`new`'s contract); the rest is the caller's.
        unsafe { (*self.first).set_next(base, p) }
    }

    /// The first never-used slot.
    #[inline(always)]
    pub(crate) fn bump(self) -> &'a W {
        // SAFETY: a live `W` for `'a` (`new`'s contract).
        unsafe { &*self.bump }
    }

    /// The bump window's end.
    #[inline(always)]
    pub(crate) fn end(self) -> &'a W {
        // SAFETY: as in `bump`.
        unsafe { &*self.bump.byte_add(STRIDE) }
    }
}

impl Header {
    /// The block's allocation state kept in its header (see [`AllocState`]).
    #[inline(always)]
    pub(crate) fn state(&self) -> HeaderState<'_> {
        // SAFETY: `free`, `bump` and `bump_end` are atomics of the header, `bump_end`
        // `HEADER_STRIDE` bytes after `bump`; the pointers come from the whole header.
        unsafe {
            let h = ptr::from_ref(self);
            AllocState::new(
                h.byte_add(core::mem::offset_of!(Header, free)).cast(),
                h.byte_add(core::mem::offset_of!(Header, bump)).cast(),
            )
        }
    }

    /// Owner only: [`Header::pop`] from allocation state `s`, without counting the slot
    /// (the caller counts it: in the header, or in its cursor's `taken`).
    #[inline(always)]
    pub(crate) fn take_in<F: First, W: Word, const S: usize>(
        &self,
        s: AllocState<'_, F, W, S>,
    ) -> Option<(u32, bool)> {
        let off = s.first();
        if off != 0 {
            // SAFETY: `off` is a free slot of this block (module invariant); its first four
            // bytes hold the next link, written by `push_local` or `push_remote`.
            let next = unsafe { self.link_at(off) };
            s.set_first(self.base(), next);
            Some((off, false))
        } else {
            self.take_bump_in(s)
        }
    }

    /// Owner only: [`Header::take_in`]'s second half, a never-used slot of the bump window
    /// of `s` (whose allocation list is empty), not counted.
    #[inline(always)]
    pub(crate) fn take_bump_in<F: First, W: Word, const S: usize>(
        &self,
        s: AllocState<'_, F, W, S>,
    ) -> Option<(u32, bool)> {
        let bump = s.bump().get();
        if bump >= s.end().get() {
            return None;
        }
        s.bump().set(bump + self.stride);
        Some((bump, self.is_fresh()))
    }

    /// Owner only, when [`Header::pop`] found no slot: while the block has beats left,
    /// spends one to make the local free list the allocation list, and pops its first slot
    /// (the one freed last). `None` when the local list is empty or no beat is left: the
    /// slow path, whose heartbeat gives the beats back ([`Header::take_beats`]). The
    /// allocation fast paths' first step out of line (`alloc::Instance::alloc_global_slow`
    /// and `alloc_class_slow`), which keeps their inline code as it was.
    #[cfg(test)]
    pub(crate) fn pop_collected(&self) -> Option<(u32, bool)> {
        let p = self.take_collected(self.state(), || ())?;
        let first = (p.addr() - self.base().addr()) as u32;
        self.count_add(1);
        Some((first, false))
    }

    /// [`Header::pop_collected`]'s part in the header: spends a beat and empties the local
    /// free list, or when that is empty takes the whole remote list (one swap: other
    /// threads' frees, a consumer's), returning its first slot's address, whose link (the rest of the
    /// list, visible: `take_remote`'s swap acquires) becomes the allocation list (the caller
    /// stores it, and counts the slot handed out).
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
    pub(crate) fn take_collected<G, F: First, W: Word, const S: usize>(
        &self,
        s: AllocState<'_, F, W, S>,
        guard: impl FnOnce() -> G,
    ) -> Option<*mut u8> {
        let beats = self.beats.get();
        if beats == 0 {
            return None;
        }
        // The slot's address made in each branch, where its link is read: the caller
        // hands it out, and an addition after the two branches meet would be a second.
        let local = self.local.load(Ordering::Relaxed);
        let first = if local != 0 {
            let p = self.base().wrapping_add(local as usize);
            // SAFETY: `p` is the local list's first slot, a free slot of this block
            // (module invariant) whose link `push_local_at` wrote.
            unsafe { s.set_next(self.base(), p) };
            self.local.store(0, Ordering::Relaxed);
            p
        } else {
            let _guard = guard();
            let p = match self.take_remote().0 {
                0 => return None,
                remote => self.base().wrapping_add(remote as usize),
            };
            // SAFETY: `p` is the remote list's first slot, a free slot of this block whose
            // link its push wrote (visible: `take_remote`'s swap acquires).
            unsafe { s.set_next(self.base(), p) };
            p
        };
        self.beats.set(beats - 1);
        Some(first)
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
    pub(crate) fn collect_freed_in<F: First, W: Word, const S: usize>(
        &self,
        s: AllocState<'_, F, W, S>,
    ) -> u32 {
        match self.collect_local_in(s) {
            0 => self.collect_remote_in(s),
            n => n,
        }
    }

    /// Owner only, with an empty allocation list in `s`: how many slots
    /// [`Header::collect_freed_in`] would move now (the local free list's, else the remote
    /// list's so far: remote frees may add more before the collect).
    pub(crate) fn freed_waiting_in<F: First, W: Word, const S: usize>(
        &self,
        s: AllocState<'_, F, W, S>,
    ) -> u32 {
        match self.local_count(s) {
            0 => self.remote_count(),
            n => n,
        }
    }

    /// Owner only, with an empty allocation list in `s`: the local free list's length, from
    /// the counts (no walk): `|local| == capacity - used - never used` then.
    fn local_count<F: First, W: Word, const S: usize>(&self, s: AllocState<'_, F, W, S>) -> u32 {
        debug_assert_eq!(s.first(), 0);
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
    fn collect_local_in<F: First, W: Word, const S: usize>(
        &self,
        s: AllocState<'_, F, W, S>,
    ) -> u32 {
        let n = self.local_count(s);
        if n > 0 {
            // The allocation list first, then the local list emptied: an owner that stops
            // between the two leaves both naming the same slots, which
            // `Header::recount_local` recognises.
            s.set_first(self.base(), self.local.load(Ordering::Relaxed));
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
    pub(crate) fn advance_window_in<F: First, W: Word, const S: usize>(
        &self,
        s: AllocState<'_, F, W, S>,
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
