//! The region: one reservation of address space carved into blocks.
//!
//! The region is reserved once (no access, no memory) and handed
//! out in **units** of [`UNIT`] (2 MiB) bytes, aligned to their size: one unit holds one
//! block, so a block's base is found from any interior pointer by one mask. Units are named
//! by their index from the region's base: metadata never holds an absolute address, and a
//! pointer is ours exactly when `base <= p < base + len`.
//!
//! Unit states, one byte each in [`Region::units`]: `UNUSED` (never carved, or given
//! back), `BLOCK` (a block whose header is valid), `RUN` (the first unit of a large
//! allocation served from the region, [`runs`]) or `RUN_REST` (one of its other units).
//!
//! Invariants: `bump <= unit_count`; for `u < bump`, `state(u) == UNUSED` iff
//! `decommitted[u]` (the bit says "given back": its memory went back to the OS as the
//! region's [`Backing`] says, which for a kept region is not at all); for `u >= bump`,
//! `state(u) == UNUSED`; committed memory = units below `bump` (commit happens when `bump`
//! passes), or the whole region when it was committed up front; in a private reservation
//! the per-unit tables (promotion records, checked mode's shadow) are committed as `bump`
//! passes too ([`tables`]). All mutation happens under the pool lock ([`RegionState`] is
//! only reachable through it).
//!
//! **The carved end.** `[base, base + carved_len)` is accessible, the rest of a
//! reservation has no access (`mlockall(MCL_CURRENT)` populates every accessible mapping:
//! a whole readable reservation would cost page tables for all of it). `carved_len ==
//! bump * UNIT` in a reservation committed as carved (the commit's `mprotect` happens
//! before the Release store that raises it, so a reader that loads the new length with
//! Acquire, or sees it through the instance's copy, `crate::instance::RegionBounds`, reads
//! the headers below it), `carved_len == len` in a region mapped accessible whole (shared,
//! fixed, committed up front: nothing past its end to protect). It never decreases: a
//! given-back unit stays accessible (decommitted, it reads zero). A pointer at or past it
//! is never dereferenced: every path that reads memory from a pointer tests it first.
//!
//! **Shared regions.** A region shared between processes ([`Region::placed`] with
//! `shared`) is mapped readable and writable in every process, so nothing is committed;
//! its unit states and bitmap live in the region's state area, and [`Region`] is this
//! process's view of them (its base is where this process maps the units). Memory given
//! back is freed for every process (`MADV_REMOVE`); a unit carved again is not assumed to
//! read zero (`fresh` is false) unless it was never carved.
//!
//! **Backing.** How the region's memory is had and given back ([`Backing`]): a private
//! reservation commits a unit when it is first carved and decommits it when given back; a
//! shared region removes given-back memory for every process; a region committed up front
//! (fixed capacity, prefaulted, or memory the caller provided) keeps it: a given-back unit
//! keeps its pages, so no later carve takes a page fault.

pub(crate) mod options;
pub(crate) mod runs;
mod tables;

use crate::os;
use crate::sync::{AtomicU64, AtomicU8, Ordering};
use bitvec::slice::BitSlice;
use core::ptr;

/// log2 of [`UNIT`].
pub(crate) const UNIT_SHIFT: u32 = 21;
/// The bytes of one unit, the size and alignment of what the region hands out: one block
/// (`class::BLOCK_SIZE`, which the block layer checks equal).
pub(crate) const UNIT: usize = 1 << UNIT_SHIFT;

pub(crate) const UNUSED: u8 = 0;
pub(crate) const BLOCK: u8 = 1;
/// The first unit of a run: a large allocation in the region ([`runs`]).
pub(crate) const RUN: u8 = 2;
/// A unit of a run after its first.
pub(crate) const RUN_REST: u8 = 3;

/// How a region's memory is had and given back (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backing {
    /// A unit is committed when first carved (a reservation); else the region is writable
    /// from the start.
    pub(crate) commit: bool,
    /// What giving a unit back does to its memory.
    pub(crate) give_back: GiveBack,
    /// Large allocations are served as runs of units ([`runs`]); else they are mappings of
    /// their own, outside the region.
    pub(crate) serves_large: bool,
    /// Never-carved units read zero (false for memory the caller formatted, which may hold
    /// anything).
    pub(crate) fresh: bool,
    /// A full region serves requests from private mappings of their own, in the large
    /// table (a region of one process only: no other process could free them).
    pub(crate) fallback: bool,
    /// Every view of the region lies at one address (a private region, or a shared one its
    /// fork children inherit): only then does a run keep an alignment above a unit in every
    /// process ([`Region::keeps_alignment`]). A named region, or caller memory other
    /// processes may attach, lies wherever each process maps it, at a base aligned to a
    /// unit only.
    pub(crate) one_address: bool,
}

/// What giving a unit back does to its memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GiveBack {
    /// `MADV_DONTNEED` on private memory: freed, reads zero again.
    Decommit,
    /// `MADV_REMOVE` on shared memory: freed for every process (not assumed to read zero).
    RemoveShared,
    /// Nothing: the pages stay (a region committed up front); not assumed to read zero.
    Keep,
}

impl Backing {
    /// A private reservation: committed as carved, decommitted when given back, large
    /// allocations outside.
    pub(crate) const PRIVATE: Backing = Backing {
        commit: true,
        give_back: GiveBack::Decommit,
        serves_large: false,
        fresh: true,
        fallback: false,
        one_address: true,
    };
    /// A reservation of exact capacity (`Cohort::with_reservation`): as [`Backing::PRIVATE`],
    /// with large allocations inside, so that nothing the instance hands out is outside
    /// its capacity.
    pub(crate) const RESERVATION: Backing = Backing {
        serves_large: true,
        ..Backing::PRIVATE
    };
    /// A region shared between processes: mapped writable, memory removed when given back,
    /// large allocations inside (a mapping of one process would be invisible to the others).
    pub(crate) const SHARED: Backing = Backing {
        commit: false,
        give_back: GiveBack::RemoveShared,
        serves_large: true,
        fresh: true,
        fallback: false,
        one_address: true,
    };
    /// A region shared by name (a file or a POSIX shared-memory object): as
    /// [`Backing::SHARED`], mapped where each process's kernel chooses.
    pub(crate) const NAMED: Backing = Backing {
        one_address: false,
        ..Backing::SHARED
    };
}

/// The address space of one allocator instance, as this process sees it (a per-process
/// view: a shared region maps at another address in every process, and its state lives in
/// the region's state area, which [`Region::placed`] is given).
pub(crate) struct Region {
    base: *mut u8,
    unit_count: usize,
    /// One state byte per unit (`UNUSED`, `BLOCK`), readable without the lock.
    units: *const AtomicU8,
    /// Checked mode: one bit per byte of the region (reserved, touched only where blocks
    /// are), set while the slot starting there is live (null when not checked).
    pub(crate) live_bits: *const crate::sync::AtomicU64,
    /// [`PROMOTION_WORDS`] words per unit: which slots of its block were promoted from a
    /// smaller size class (see `crate::promote`).
    pub(crate) promotion: *const crate::sync::AtomicU64,
    /// Words of the decommitted-unit bitmap (one bit per unit below `bump`), touched only
    /// under the pool lock ([`RegionState`] proves it is held).
    decommitted: *mut usize,
    /// One word per unit: a run's length and lifetime class in its first unit ([`runs`]).
    run_words: *const AtomicU64,
    /// The lengths of the mappings this view owns (0 when placed: the placement's owner
    /// maps and unmaps).
    meta_len: usize,
    shadow_len: usize,
    /// How its memory is had and given back: set before anyone uses the region
    /// ([`Region::set_backing`]), read only after.
    backing: core::cell::UnsafeCell<Backing>,
    /// The bytes from `base` that are accessible (module docs, "The carved end").
    carved_len: AtomicU64,
}

/// The mutable part of the region, owned by the pool lock. Position independent: it may
/// live in a region shared between processes.
pub(crate) struct RegionState {
    /// Units below `bump` have been carved at least once (and are committed).
    bump: usize,
    /// Live runs (large allocations in the region) and the bytes their sizes round to.
    runs: usize,
    run_bytes: usize,
    /// The options the region was made with ([`options::RegionOptions`], as its words;
    /// zero: none recorded), which every process that attaches the region applies to its
    /// own view: kept memory, the lock, the prefault, transparent huge pages.
    pub(crate) options: [u64; 2],
}

#[cfg(test)]
impl RegionState {
    /// For `verify`'s tests of damaged state: sets the carved count, returns the old one.
    pub(crate) fn swap_bump(&mut self, bump: usize) -> usize {
        core::mem::replace(&mut self.bump, bump)
    }
}

/// The bytes of a placed region's state ([`Region::placed`]): the unit bytes, then the
/// decommitted bitmap (word aligned), then the promotion records, then the run words.
pub(crate) fn placed_meta_len(unit_count: usize) -> usize {
    run_words_at(unit_count) + run_words_len(unit_count)
}

/// Where the run words start in a placed region's state: after the promotion records.
fn run_words_at(unit_count: usize) -> usize {
    unit_states_len(unit_count) + bitmap_bytes(unit_count) + promotion_bytes(unit_count)
}

/// Words of one unit's promotion record (read and written by `crate::promote` only): an
/// information word, then a bitmap of one bit per 8 bytes of the unit, enough for a bit per
/// slot of every class a request can be promoted into (strides of 8 bytes and more).
/// Touched only where promotions happen: a region that never promotes keeps these pages
/// untouched (never resident).
pub(crate) const PROMOTION_WORDS: usize = 1 + UNIT / 8 / 64;

fn promotion_bytes(unit_count: usize) -> usize {
    unit_count * PROMOTION_WORDS * size_of::<crate::sync::AtomicU64>()
}

fn run_words_len(unit_count: usize) -> usize {
    unit_count * size_of::<AtomicU64>()
}

/// The bytes of the unit states, rounded up so the bitmap after them is word aligned: sized
/// by the type, not by a byte per unit (loom's atomics are larger).
fn unit_states_len(unit_count: usize) -> usize {
    (unit_count * size_of::<AtomicU8>()).next_multiple_of(size_of::<usize>())
}

fn bitmap_bytes(unit_count: usize) -> usize {
    unit_count.div_ceil(usize::BITS as usize) * size_of::<usize>()
}

// SAFETY: the raw pointers point into mappings owned by the region for its whole life; the
// shared parts are atomics, the rest is only touched under the pool lock.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// Reserves `bytes` of address space (rounded down to units; at least one unit). With
    /// `exact` false, halves the request until the OS accepts, and large allocations are
    /// outside it ([`Backing::PRIVATE`]); with `exact` the capacity is all the instance
    /// has, large allocations included ([`Backing::RESERVATION`]). Returns the region and
    /// its lock-guarded state, or `None` if nothing could be reserved.
    pub(crate) fn new(bytes: usize, exact: bool, checked: bool) -> Option<(Region, RegionState)> {
        let mut unit_count = (bytes / UNIT).max(1);
        loop {
            let len = unit_count * UNIT;
            let base = os::reserve(len, UNIT);
            if !base.is_null() {
                let backing = if exact {
                    Backing::RESERVATION
                } else {
                    Backing::PRIVATE
                };
                return Self::with_base(base, unit_count, checked, backing);
            }
            if exact || unit_count <= 64 {
                return None;
            }
            unit_count /= 2;
        }
    }

    fn with_base(
        base: *mut u8,
        unit_count: usize,
        checked: bool,
        backing: Backing,
    ) -> Option<(Region, RegionState)> {
        let len = unit_count * UNIT;
        let meta_len = os::page_round(placed_meta_len(unit_count))?;
        // Reserved without access: the per-unit tables are committed as units are carved
        // (`commit_unit_tables`), the rest of `meta` just below.
        let meta = os::reserve(meta_len, os::MIN_PAGE);
        let shadow_len = if checked { os::page_round(len / 8)? } else { 0 };
        let shadow = if checked {
            os::reserve(shadow_len, os::MIN_PAGE)
        } else {
            ptr::null_mut()
        };
        // The unit states and bitmap before the promotion records, the run words after:
        // committed before anything reads them.
        let records = unit_states_len(unit_count) + bitmap_bytes(unit_count);
        let fixed = [(0, records), (run_words_at(unit_count), meta_len)];
        let committed = !meta.is_null()
            && fixed
                .iter()
                .all(|&(from, to)| tables::commit_span(meta as usize, meta_len, from, to));
        if !committed || (checked && shadow.is_null()) {
            // SAFETY: each non-null range was mapped just above and is unused.
            unsafe {
                os::unmap(base, len);
                if !meta.is_null() {
                    os::unmap(meta, meta_len);
                }
                if !shadow.is_null() {
                    os::unmap(shadow, shadow_len);
                }
            }
            return None;
        }
        // SAFETY: `meta` and `shadow` are fresh, zeroed and ours, of the lengths computed;
        // what `placed` touches of `meta` (unit states, run words) is committed.
        let mut region = unsafe { Self::placed(base, unit_count, meta, shadow, backing) };
        region.meta_len = meta_len;
        region.shadow_len = shadow_len;
        Some((region, RegionState::new()))
    }

    /// A view of a region whose units start at `base` (aligned to [`UNIT`]) and whose
    /// state is at `meta` ([`placed_meta_len`] bytes) and, in checked mode, `shadow` (one
    /// bit per byte of the units; null otherwise), backed as `backing` says. The view owns
    /// none of these mappings.
    ///
    /// # Safety
    /// The ranges are mapped for the view's life; a new region's `meta` and `shadow` read
    /// zero (its [`RegionState`] is [`RegionState::new`]); an existing one's are the state
    /// of that region, laid out by this function.
    pub(crate) unsafe fn placed(
        base: *mut u8,
        unit_count: usize,
        meta: *mut u8,
        shadow: *mut u8,
        backing: Backing,
    ) -> Region {
        debug_assert_eq!(base as usize % UNIT, 0);
        let words = run_words_at(unit_count);
        // SAFETY: the unit bytes start `meta`, the run words follow the promotion records; aligned
        // and ours.
        #[cfg(loom)]
        unsafe {
            crate::sync::zeroed_atomics(meta.cast::<AtomicU8>(), unit_count);
            crate::sync::zeroed_atomics(meta.add(words).cast::<AtomicU64>(), unit_count);
        };
        Region {
            base,
            unit_count,
            units: meta as *const AtomicU8,
            live_bits: shadow as *const crate::sync::AtomicU64,
            // SAFETY: the bitmap follows the unit bytes in `meta` (placed_meta_len).
            decommitted: unsafe { meta.add(unit_states_len(unit_count)) }.cast::<usize>(),
            // SAFETY: the promotion records follow the bitmap in `meta` (placed_meta_len),
            // word aligned (the bitmap is whole words).
            promotion: unsafe { meta.add(unit_states_len(unit_count) + bitmap_bytes(unit_count)) }
                .cast(),
            // SAFETY: the run words follow the bitmap in `meta` (placed_meta_len).
            run_words: unsafe { meta.add(words) }.cast::<AtomicU64>(),
            meta_len: 0,
            shadow_len: 0,
            backing: core::cell::UnsafeCell::new(backing),
            carved_len: AtomicU64::new(Self::carved_len_at_start(backing, unit_count)),
        }
    }

    /// The carved length of a region nothing was carved from: 0 when units are committed
    /// as carved, else the whole region (mapped accessible from the start).
    fn carved_len_at_start(backing: Backing, unit_count: usize) -> u64 {
        if backing.commit {
            0
        } else {
            (unit_count * UNIT) as u64
        }
    }

    /// The bytes from the region's base that are accessible (module docs, "The carved
    /// end"): Acquire, pairing with the Release of the carve that raised it.
    #[inline]
    pub(crate) fn carved_len(&self) -> usize {
        self.carved_len.load(Ordering::Acquire) as usize
    }

    /// Units below `end` were just committed (`bump` reached `end`): in a region committed
    /// as carved, raises the carved length to them, after their commit (Release).
    fn carved_to(&self, end: usize) {
        if self.backing().commit {
            self.carved_len
                .store((end * UNIT) as u64, Ordering::Release);
        }
    }

    /// How the region's memory is had and given back.
    #[inline]
    pub(crate) fn backing(&self) -> Backing {
        // SAFETY: written only before the region is used (`set_backing`'s contract).
        unsafe { *self.backing.get() }
    }

    /// Changes how the region's memory is had and given back, and whether it serves large
    /// allocations (a region committed up front keeps given-back memory; see [`Backing`]).
    ///
    /// # Safety
    /// No other thread uses the region yet (this process's view of it: other processes
    /// have views of their own).
    pub(crate) unsafe fn set_backing(&self, backing: Backing) {
        debug_assert!(!self.backing().commit || backing.commit || self.carved_len() == 0);
        // SAFETY: nobody reads it meanwhile (caller).
        unsafe { *self.backing.get() = backing };
        // Nobody reads it either (the caller's contract); a region whose backing stops
        // committing as carved was mapped accessible whole (`options::RegionOptions`).
        self.carved_len.store(
            Self::carved_len_at_start(backing, self.unit_count),
            Ordering::Release,
        );
    }

    /// True when large allocations are runs of this region's units ([`runs`]).
    #[inline]
    pub(crate) fn serves_large(&self) -> bool {
        self.backing().serves_large
    }

    /// True when a run aligned to `align` keeps that alignment in every view of the region:
    /// `align <= UNIT` (every view's base is aligned to a unit), or every view lies at one
    /// address ([`Backing::one_address`]). Where it does not, `base_a + off` and `base_b +
    /// off` differ in alignment above a unit, so no offset serves the request.
    #[inline]
    pub(crate) fn keeps_alignment(&self, align: usize) -> bool {
        align <= UNIT || self.backing().one_address
    }

    /// True when a full region serves requests from private mappings ([`Backing::fallback`]).
    #[inline]
    pub(crate) fn falls_back(&self) -> bool {
        self.backing().fallback
    }

    /// True when free pages of medium blocks may be moved (`crate::medium`, "Moving pages"):
    /// a private reservation committed as carved (no other process maps it, no option locks
    /// it or binds it to nodes).
    pub(crate) fn moves_pages(&self) -> bool {
        let b = self.backing();
        b.commit && b.give_back == GiveBack::Decommit && !os::moves::locks_future()
    }

    /// True when a given-back unit reads zero when carved again.
    fn zero_after_give_back(&self) -> bool {
        self.backing().give_back == GiveBack::Decommit
    }

    /// The region's first byte.
    #[inline(always)]
    pub(crate) fn base(&self) -> usize {
        self.base as usize
    }

    /// The number of units the region holds.
    pub(crate) fn unit_count(&self) -> usize {
        self.unit_count
    }

    /// The region's length in bytes.
    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.unit_count * UNIT
    }

    /// True when `p` lies in the region.
    #[inline(always)]
    pub(crate) fn contains(&self, p: usize) -> bool {
        p.wrapping_sub(self.base()) < self.len()
    }

    /// The unit holding `p`, which must lie in the region.
    #[inline(always)]
    pub(crate) fn unit_of(&self, p: usize) -> usize {
        (p - self.base()) >> UNIT_SHIFT
    }

    /// The address of unit `u`.
    #[inline(always)]
    pub(crate) fn unit_addr(&self, u: usize) -> *mut u8 {
        debug_assert!(u < self.unit_count);
        self.base.wrapping_add(u << UNIT_SHIFT)
    }

    /// State byte of unit `u`.
    #[inline]
    pub(crate) fn unit_state(&self, u: usize) -> u8 {
        debug_assert!(u < self.unit_count);
        // SAFETY: `units` maps `unit_count` bytes and u is in range.
        unsafe { (*self.units.add(u)).load(Ordering::Acquire) }
    }

    fn set_state(&self, u: usize, state: u8) {
        debug_assert!(u < self.unit_count);
        // SAFETY: `units` maps `unit_count` bytes and u is in range.
        unsafe { (*self.units.add(u)).store(state, Ordering::Release) };
    }

    /// The number of units ever carved.
    pub(crate) fn carved_units(&self, st: &RegionState) -> usize {
        st.bump
    }

    fn decommitted_bits<'a>(&'a self, _st: &'a mut RegionState) -> &'a mut BitSlice<usize> {
        let words = self.unit_count.div_ceil(usize::BITS as usize);
        // SAFETY: `decommitted` maps `words` words owned by the region; the &mut state
        // proves the pool lock is held, so nobody else touches them.
        let words = unsafe { core::slice::from_raw_parts_mut(self.decommitted, words) };
        BitSlice::from_slice_mut(words)
    }

    /// Carves a unit for a block: a given-back one if any (committed, reading zeros in a
    /// decommitting region), else the next never-carved one. Returns its base and whether
    /// its memory is known to read zeros (`fresh`: always in a decommitting region; in
    /// another only for a never-carved unit), or `None` when the region is exhausted or the
    /// OS refuses to commit. Marks the unit `BLOCK`.
    pub(crate) fn carve(&self, st: &mut RegionState) -> Option<(*mut u8, bool)> {
        let bump = st.bump;
        let bits = self.decommitted_bits(st);
        let (u, fresh) = match bits[..bump].first_one() {
            Some(u) => {
                bits.set(u, false);
                (u, self.zero_after_give_back())
            }
            None => {
                if bump == self.unit_count {
                    return None;
                }
                // SAFETY: unit `bump` lies in our reservation, past every carved unit. (A
                // region mapped writable from the start has nothing to commit.)
                if self.backing().commit && !unsafe { os::commit(self.unit_addr(bump), UNIT) } {
                    return None;
                }
                if !self.commit_unit_tables(bump, bump + 1) {
                    return None;
                }
                st.bump = bump + 1;
                self.carved_to(bump + 1);
                (bump, self.backing().fresh)
            }
        };
        self.set_state(u, BLOCK);
        Some((self.unit_addr(u), fresh))
    }

    /// Under the lock, repairing after a holder died: unit `u`, carved once and not a block
    /// now, is marked given back (its bit set), whatever step of a carve or give-back the
    /// holder died in; unless it belongs to a run, which [`Region::repair_runs`] checks.
    pub(crate) fn mark_given_back(&self, st: &mut RegionState, u: usize) {
        if !matches!(self.unit_state(u), RUN | RUN_REST) {
            self.decommitted_bits(st).set(u, true);
        }
    }

    /// Gives a block's memory back to the OS and its unit to the region.
    ///
    /// # Safety
    /// `base` is a block carved from this region that nobody uses.
    pub(crate) unsafe fn give_back(&self, st: &mut RegionState, base: *mut u8) {
        let u = self.unit_of(base as usize);
        self.set_state(u, UNUSED);
        // SAFETY: the caller guarantees the block is ours and dead.
        unsafe { self.forget(base, UNIT) };
        if !self.live_bits.is_null() {
            // SAFETY: the shadow covers the region at one bit per byte; the block's part is
            // page aligned because units are 2 MiB aligned.
            unsafe { self.clear((self.live_bits as *mut u8).add((u * UNIT) / 8), UNIT / 8) };
        }
        self.decommitted_bits(st).set(u, true);
    }

    /// True when the region gives unused memory back to the OS at all (a region committed
    /// up front keeps it: a fixed capacity, caller-provided memory).
    pub(crate) fn gives_memory_back(&self) -> bool {
        !matches!(self.backing().give_back, GiveBack::Keep)
    }

    /// Gives the memory of a dead range back to the OS (its contents are not needed; a
    /// shared region's may not read zero afterwards).
    ///
    /// # Safety
    /// `[p, p + len)` is a page-aligned range of the region's mappings nobody needs.
    pub(crate) unsafe fn forget(&self, p: *mut u8, len: usize) {
        // SAFETY: the caller's guarantee.
        unsafe {
            match self.backing().give_back {
                GiveBack::RemoveShared => {
                    os::shared_mem::remove_shared(p, len);
                }
                GiveBack::Decommit => os::decommit(p, len),
                GiveBack::Keep => {}
            }
        }
    }

    /// Makes a page-aligned range of the region's mappings read zero, giving its memory
    /// back where the OS can.
    ///
    /// # Safety
    /// As [`Region::forget`].
    pub(crate) unsafe fn clear(&self, p: *mut u8, len: usize) {
        // SAFETY: the caller's guarantee.
        unsafe {
            match self.backing().give_back {
                GiveBack::Decommit => os::decommit(p, len),
                GiveBack::RemoveShared if os::shared_mem::remove_shared(p, len) => {}
                GiveBack::RemoveShared | GiveBack::Keep => ptr::write_bytes(p, 0, len),
            }
        }
    }
}

impl RegionState {
    /// The state of a new region: nothing carved.
    pub(crate) const fn new() -> RegionState {
        RegionState {
            bump: 0,
            runs: 0,
            run_bytes: 0,
            options: [0; 2],
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if self.meta_len == 0 {
            // Placed: the placement's owner unmaps.
            return;
        }
        // SAFETY: the region owns these mappings and is going away with everything in it.
        unsafe {
            os::unmap(self.base, self.len());
            os::unmap(self.units as *mut u8, self.meta_len);
            if !self.live_bits.is_null() {
                os::unmap(self.live_bits as *mut u8, self.shadow_len);
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn carve_aligns_blocks_and_reuses_given_back_units() {
        let (r, mut st) = Region::new(16 * UNIT, true, false).unwrap();
        let (a, fresh) = r.carve(&mut st).unwrap();
        assert!(fresh);
        assert_eq!(a as usize % UNIT, 0, "units are aligned to their size");
        let (b, _) = r.carve(&mut st).unwrap();
        assert_eq!(b as usize, a as usize + UNIT);
        assert_eq!(r.unit_state(r.unit_of(b as usize)), BLOCK);
        // SAFETY: a was carved above and is unused.
        unsafe {
            a.write(9);
            r.give_back(&mut st, a);
        }
        assert_eq!(r.unit_state(r.unit_of(a as usize)), UNUSED);
        let (d, fresh) = r.carve(&mut st).unwrap();
        assert_eq!(d, a);
        assert!(fresh);
        // SAFETY: d is a committed block.
        assert_eq!(unsafe { d.read() }, 0, "a given-back block reads zeros");
    }

    /// True when the kernel can read the 8 bytes at `p` (a write from them to a pipe
    /// fails with EFAULT when they have no access; no fault in this process).
    fn readable(p: *mut u8) -> bool {
        let mut fds = [0; 2];
        // SAFETY: a pipe of our own; the write reads 8 bytes at `p` in the kernel, which
        // reports an inaccessible address as EFAULT.
        unsafe {
            assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
            let n = libc::write(fds[1], p.cast(), 8);
            libc::close(fds[0]);
            libc::close(fds[1]);
            n == 8
        }
    }

    #[test]
    fn a_reservation_is_accessible_up_to_its_carved_end_only() {
        let (r, mut st) = Region::new(8 * UNIT, true, false).unwrap();
        assert_eq!(r.carved_len(), 0);
        assert!(!readable(r.unit_addr(0)));
        let (a, _) = r.carve(&mut st).unwrap();
        assert_eq!(r.carved_len(), UNIT);
        // SAFETY: a was just carved: committed.
        assert_eq!(unsafe { a.cast::<u64>().read_volatile() }, 0);
        for u in [1, 5, 7] {
            assert!(!readable(r.unit_addr(u)), "unit {u} of the reservation");
        }
        r.carve(&mut st).unwrap();
        assert_eq!(r.carved_len(), 2 * UNIT);
        assert!(readable(r.unit_addr(1).wrapping_add(UNIT - 8)));
        assert!(!readable(r.unit_addr(2)));
    }

    #[test]
    fn carve_fails_when_the_reservation_is_exhausted() {
        let (r, mut st) = Region::new(4 * UNIT, true, false).unwrap();
        for _ in 0..4 {
            assert!(r.carve(&mut st).is_some());
        }
        assert!(r.carve(&mut st).is_none());
        assert!(!r.contains(r.base() + r.len()));
        assert!(r.contains(r.base() + r.len() - 1));
    }
}
