//! Remote frees: the lock-free list other threads push freed slots on, and the `FULL`
//! state that makes the free into a retired block relist it.

use super::*;

impl Header {
    /// Any thread: true when the slot at `off` is the first of the remote free list (freed
    /// last by another thread and not yet collected) or of the local free list (freed last
    /// by the owner), or a first a reset kept in either word ([`Header::reset`]): freeing it
    /// again is a double free. Never true for a slot the caller holds live: the owner
    /// stored another first in the local list (and emptied the remote word of a kept first,
    /// [`Header::drop_kept`]) before it handed the slot out, which happens before the
    /// caller's free (the slot came to the caller after its allocation), so the caller
    /// reads those stores or later ones, and a later one names the slot only after a free
    /// of it.
    #[inline(always)]
    pub(crate) fn is_freed_last(&self, off: u32) -> bool {
        #[cfg(all(target_arch = "x86_64", not(miri), not(loom)))]
        {
            // Each field compared in memory: the compiler keeps an atomic's load an
            // instruction of its own (two more on the remote free's quick way).
            // SAFETY: reads the low 4 bytes of `remote` (a live, aligned `u64`; x86-64 is
            // little-endian: its first slot) and `local` (a live, aligned `u32`) with one
            // aligned load each, which is what a relaxed atomic load compiles to: a
            // concurrent store is no data race, and each value read is one the field (or
            // its low half) held. The asm only sets flags and jumps to the label.
            unsafe {
                core::arch::asm!(
                    "cmp dword ptr [{header} + {remote}], {off:e}",
                    "je {yes}",
                    "cmp dword ptr [{header} + {local}], {off:e}",
                    "je {yes}",
                    header = in(reg) ptr::from_ref(self),
                    off = in(reg) off,
                    remote = const core::mem::offset_of!(Header, remote),
                    local = const core::mem::offset_of!(Header, local),
                    yes = label { return true },
                    options(readonly, nostack),
                );
            }
            false
        }
        #[cfg(not(all(target_arch = "x86_64", not(miri), not(loom))))]
        {
            self.remote.load(Ordering::Relaxed) as u32 == off
                || self.local.load(Ordering::Relaxed) == off
        }
    }

    /// Any thread: pushes the slot at `off` on the remote free list. Returns true when the
    /// block was `FULL`: the caller must then list the block again.
    ///
    /// # Safety
    /// `off` is a live slot of this block, which the caller gives up.
    #[inline]
    pub(crate) unsafe fn push_remote(&self, off: u32) -> bool {
        // SAFETY: forwarded: a chain of one slot.
        unsafe { self.push_remote_chain(off, off, 1) }
    }

    /// Any thread: pushes a chain of `n` slots on the remote free list with one
    /// compare-and-swap: `first` is its first slot, each slot's link names the next, and
    /// `last`, the `n`-th, gets the list's old first slot as its link. Returns true when the
    /// block was `FULL`: the caller must then list the block again.
    ///
    /// # Safety
    /// The chain's slots are `n >= 1` distinct slots of this block that the caller gives
    /// up, linked from `first` to `last` through their first 4 bytes (`last`'s link is
    /// written here).
    pub(crate) unsafe fn push_remote_chain(&self, first: u32, last: u32, n: u32) -> bool {
        debug_assert!(n >= 1);
        let tail = self.base().wrapping_add(last as usize).cast::<u32>();
        let mut old = self.remote.load(Ordering::Relaxed);
        loop {
            // SAFETY: the slot is the caller's until the CAS below publishes it.
            unsafe { tail.write(old as u32) };
            let count = ((old >> 32) & COUNT_MASK) + n as u64;
            let new = first as u64 | count << 32;
            // Release: the links written before (the chain's, and the one above) happen
            // before the owner's Acquire swap in `collect_remote` that takes these slots.
            // Acquire: pairs with `try_retire`'s Release when the CAS finds FULL, so
            // `Pool::relist` reads the current owner.
            match self
                .remote
                .compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return old & FULL != 0,
                Err(now) => old = now,
            }
        }
    }

    /// Links the slot at `off` to `next` (an offset in this block, 0 for none): a free
    /// slot's first 4 bytes, as every slot list of the block links them.
    ///
    /// # Safety
    /// `off` is a slot of this block that the caller holds (freed by it, on no list).
    #[inline]
    pub(crate) unsafe fn link_slot(&self, off: u32, next: u32) {
        // SAFETY: the caller holds the slot, which lies inside the block.
        unsafe {
            self.base()
                .wrapping_add(off as usize)
                .cast::<u32>()
                .write(next)
        };
    }

    /// Owner only, with an empty allocation list: takes the whole remote free list as the
    /// allocation list. Returns how many slots it took. (The allocation paths collect
    /// through [`Header::collect_freed_in`] and [`Header::take_collected`].)
    #[cfg(all(test, loom))]
    pub(crate) fn collect_remote(&self) -> u32 {
        self.collect_remote_in(self.state())
    }

    /// [`Header::collect_remote`] into allocation state `s`.
    pub(crate) fn collect_remote_in<W: Word, const S: usize>(
        &self,
        s: AllocState<'_, W, S>,
    ) -> u32 {
        debug_assert_eq!(s.free().get(), 0);
        let (first, count) = self.take_remote();
        if count > 0 {
            s.free().set(first);
        }
        count
    }

    /// Owner only, with an empty allocation list: takes the whole remote free list (one
    /// swap), its slots no longer counted in `used`. Returns its first slot (whose link
    /// names the next) and how many it took; `(0, 0)` when it was empty. Never while the
    /// block keeps slots ([`KEPT_FREED`]): its word may hold a kept first then, no list
    /// ([`Header::reset`]; the slow path drops them first, [`Header::drop_kept`]).
    #[inline]
    pub(crate) fn take_remote(&self) -> (u32, u32) {
        if self.remote.load(Ordering::Relaxed) & !FULL == 0 {
            return (0, 0);
        }
        // Acquire pairs with the Release of every push it takes: their links are visible.
        // The block is listed (not FULL) whenever its owner collects, so 0 loses no flag.
        let taken = self.remote.swap(0, Ordering::Acquire);
        debug_assert_eq!(taken & FULL, 0);
        let count = ((taken >> 32) & COUNT_MASK) as u32;
        debug_assert!(
            count > 0 || taken as u32 == 0,
            "a kept first taken as a list"
        );
        self.count_add(count.wrapping_neg());
        (taken as u32, count)
    }

    /// Owner only, with no free slot: marks the block `FULL` before it leaves its head, in
    /// [`Role::Full`]. Returns false when a remote free came first (collect it instead).
    ///
    /// The role is set before the compare-and-swap (and set back when it fails): once the
    /// block is `FULL` its owner writes nothing more to it until a free brings it back, so
    /// whoever takes it from the owner's `returned` stack (the relisting free's Release
    /// push, pairing with this Release through the free's Acquire) sees every write the
    /// owner made to it (what lets another thread give it back when other threads' frees
    /// emptied it: [`Header::all_freed_remotely`]).
    pub(crate) fn try_retire(&self) -> bool {
        let before = self.role();
        self.set_role(Role::Full);
        // Release: the owner's earlier stores (`owner`, the counts, the role) happen before
        // any remote free that reads FULL (its CAS acquires), so the free relists the block
        // to this owner, and whoever takes it from the owner's `returned` sees them.
        let retired = self
            .remote
            .compare_exchange(0, FULL, Ordering::Release, Ordering::Relaxed)
            .is_ok();
        if !retired {
            self.set_role(before);
        }
        retired
    }

    /// Any thread, for a block it took from its owner's `returned` stack: true when every
    /// slot of the block is on its remote free list (`|remote| == capacity`). Such a block
    /// was retired `FULL` with every slot handed out, and every slot was freed since by
    /// other threads, none by its owner: its owner has not touched it since the retire
    /// (it frees only live slots, and allocates only from its current block), and never
    /// will (it holds no live slot), so the caller may give it to the pool. Acquire: every
    /// push's writes (their Release) happen before the caller's.
    pub(crate) fn all_freed_remotely(&self) -> bool {
        let word = self.remote.load(Ordering::Acquire);
        word & FULL == 0 && ((word >> 32) & COUNT_MASK) as u32 == self.capacity()
    }

    /// Owner only: clears `FULL` after a local free. Returns true when this call cleared it
    /// (the caller lists the block again); false when it was clear, or a remote free
    /// cleared it and lists the block.
    pub(crate) fn clear_full(&self) -> bool {
        let mut old = self.remote.load(Ordering::Relaxed);
        while old & FULL != 0 {
            match self.remote.compare_exchange_weak(
                old,
                old & !FULL,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => old = now,
            }
        }
        false
    }

    /// Any thread: true when the block is `FULL` now (retired, on no list, until a free
    /// relists it).
    pub(crate) fn is_full(&self) -> bool {
        self.remote.load(Ordering::Acquire) & FULL != 0
    }

    /// The first slot a reset kept in the remote word `word` (a value of this block's
    /// `remote`), if it is one: a word of count 0 (and not `FULL`) naming a slot is a kept
    /// first, not a list, and only while the block keeps slots ([`KEPT_FREED`]; see
    /// [`Header::reset`]). `None` for a list (empty or not). Owner only (or the pool-lock
    /// holder with the block's lists its own: verify, the open check).
    pub(crate) fn kept_remote_first(&self, word: u64) -> Option<u32> {
        let kept = self.flags.get() & KEPT_FREED != 0
            && word & (COUNT_MASK << 32 | FULL) == 0
            && word as u32 != 0;
        kept.then_some(word as u32)
    }

    /// Owner only, as [`Header::drop_kept`] forgets the kept slots: empties the remote word
    /// of the first a reset kept there (before the block hands that slot out again, so no
    /// free of it is taken for a double free). Frees pushed since the reset (of slots not
    /// live: no slot was handed out since, so each is a misuse the checks did not catch)
    /// stay on the list as they were without a kept first: the last slot of the chains
    /// pushed onto it links to it, so the list is taken and pushed again, its last link
    /// written anew (a list that breaks, its slots never used now, is dropped).
    #[cold]
    #[inline(never)]
    pub(super) fn forget_kept_remote(&self) {
        let word = self.remote.load(Ordering::Relaxed);
        if word == 0 || word & FULL != 0 {
            return;
        }
        let count = ((word >> 32) & COUNT_MASK) as u32;
        if count == 0
            && self
                .remote
                .compare_exchange(word, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return;
        }
        // Acquire: the pushes' links (their Release).
        let taken = self.remote.swap(0, Ordering::Acquire);
        let count = ((taken >> 32) & COUNT_MASK) as u32;
        let (first, mut last) = (taken as u32, taken as u32);
        let c = self.geometry();
        let mut steps = 1;
        while steps < count.min(c.capacity) && c.is_slot(last as usize) {
            // SAFETY: `last` is a slot of this block (checked), on the list taken above:
            // its first four bytes hold its link, written before its push.
            last = unsafe { self.base().add(last as usize).cast::<u32>().read() };
            steps += 1;
        }
        if count > 0 && steps == count && c.is_slot(last as usize) {
            // SAFETY: the taken list's `count` slots, `first` to `last`, linked (walked
            // above), which nothing else holds now (the swap took them).
            unsafe { self.push_remote_chain(first, last, count) };
        }
    }

    /// Slots on the remote free list now.
    pub(crate) fn remote_count(&self) -> u32 {
        ((self.remote.load(Ordering::Relaxed) >> 32) & COUNT_MASK) as u32
    }
}
