//! The region: one reservation of address space carved into blocks.
//!
//! The region is reserved once (readable, not writable, no memory: it reads zero) and handed
//! out in **units** of [`UNIT`] (2 MiB) bytes, aligned to their size: one unit holds one
//! block, so a block's base is found from any interior pointer by one mask. Units are named
//! by their index from the region's base: metadata never holds an absolute address, and a
//! pointer is ours exactly when `base <= p < base + len`.
//!
//! Unit states, one byte each in [`Region::units`]: `UNUSED` (never carved, or given back
//! and decommitted) or `BLOCK` (a block whose header is valid).
//!
//! Invariants: `bump <= unit_count`; for `u < bump`, `state(u) == UNUSED` iff
//! `decommitted[u]`; for `u >= bump`, `state(u) == UNUSED`; committed memory = units below
//! `bump` (commit happens when `bump` passes). All mutation happens under the pool lock
//! ([`RegionState`] is only reachable through it).

use crate::os;
use crate::sync::{AtomicU8, Ordering};
use bitvec::slice::BitSlice;
use core::ptr;

/// log2 of [`UNIT`].
pub(crate) const UNIT_SHIFT: u32 = 21;
/// The bytes of one unit, the size and alignment of what the region hands out: one block
/// (`class::BLOCK_SIZE`, which the block layer checks equal).
pub(crate) const UNIT: usize = 1 << UNIT_SHIFT;

pub(crate) const UNUSED: u8 = 0;
pub(crate) const BLOCK: u8 = 1;

/// The address space of one allocator instance.
pub(crate) struct Region {
    base: *mut u8,
    unit_count: usize,
    /// One state byte per unit (`UNUSED`, `BLOCK`), readable without the lock.
    units: *const AtomicU8,
    /// Checked mode: one bit per byte of the region (reserved, touched only where blocks
    /// are), set while the slot starting there is live (null when not checked).
    pub(crate) live_bits: *const crate::sync::AtomicU64,
    meta_len: usize,
    shadow_len: usize,
}

/// The mutable part of the region, owned by the pool lock.
pub(crate) struct RegionState {
    /// Units below `bump` have been carved at least once (and are committed).
    bump: usize,
    /// Words of the decommitted-unit bitmap (one bit per unit below `bump`).
    decommitted: *mut usize,
}

// SAFETY: the raw pointers point into mappings owned by the region for its whole life; the
// shared parts are atomics, the rest is only touched under the pool lock.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}
// SAFETY: as above.
unsafe impl Send for RegionState {}

impl Region {
    /// Reserves `bytes` of address space (rounded down to units; at least one unit). With
    /// `exact` false, halves the request until the OS accepts. Returns the region and its
    /// lock-guarded state, or `None` if nothing could be reserved.
    pub(crate) fn new(bytes: usize, exact: bool, checked: bool) -> Option<(Region, RegionState)> {
        let mut unit_count = (bytes / UNIT).max(1);
        loop {
            let len = unit_count * UNIT;
            let base = os::reserve(len, UNIT);
            if !base.is_null() {
                return Self::with_base(base, unit_count, checked);
            }
            if exact || unit_count <= 64 {
                return None;
            }
            unit_count /= 2;
        }
    }

    fn with_base(base: *mut u8, unit_count: usize, checked: bool) -> Option<(Region, RegionState)> {
        let len = unit_count * UNIT;
        let bitmap_bytes = unit_count.div_ceil(usize::BITS as usize) * size_of::<usize>();
        let meta_len = os::page_round(unit_count + bitmap_bytes)?;
        let meta = os::map(meta_len, os::MIN_PAGE);
        let shadow_len = if checked { os::page_round(len / 8)? } else { 0 };
        let shadow = if checked {
            os::map(shadow_len, os::MIN_PAGE)
        } else {
            ptr::null_mut()
        };
        if meta.is_null() || (checked && shadow.is_null()) {
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
        // SAFETY: the unit bytes start `meta`, which is fresh, aligned and ours.
        #[cfg(loom)]
        unsafe {
            crate::sync::zeroed_atomics(meta.cast::<AtomicU8>(), unit_count)
        };
        let region = Region {
            base,
            unit_count,
            units: meta as *const AtomicU8,
            live_bits: shadow as *const crate::sync::AtomicU64,
            meta_len,
            shadow_len,
        };
        // SAFETY: the bitmap lies in `meta` after the unit bytes, word aligned.
        let decommitted = unsafe { meta.add(meta_len - bitmap_bytes) }.cast::<usize>();
        Some((
            region,
            RegionState {
                bump: 0,
                decommitted,
            },
        ))
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

    fn decommitted_bits<'a>(&self, st: &'a mut RegionState) -> &'a mut BitSlice<usize> {
        let words = self.unit_count.div_ceil(usize::BITS as usize);
        // SAFETY: `decommitted` maps `words` words owned by the region; the &mut state
        // proves the pool lock is held, so nobody else touches them.
        let words = unsafe { core::slice::from_raw_parts_mut(st.decommitted, words) };
        BitSlice::from_slice_mut(words)
    }

    /// Carves a unit for a block: a given-back one if any (committed, reading zeros), else
    /// the next never-carved one. Returns its base and whether its memory is known to read
    /// zeros (`fresh`, always true today), or `None` when the region is exhausted or the OS
    /// refuses to commit. Marks the unit `BLOCK`.
    pub(crate) fn carve(&self, st: &mut RegionState) -> Option<(*mut u8, bool)> {
        let bump = st.bump;
        let bits = self.decommitted_bits(st);
        let u = match bits[..bump].first_one() {
            Some(u) => {
                bits.set(u, false);
                u
            }
            None => {
                if bump == self.unit_count {
                    return None;
                }
                // SAFETY: unit `bump` lies in our reservation, past every carved unit.
                if !unsafe { os::commit(self.unit_addr(bump), UNIT) } {
                    return None;
                }
                st.bump = bump + 1;
                bump
            }
        };
        self.set_state(u, BLOCK);
        Some((self.unit_addr(u), true))
    }

    /// Gives a block's memory back to the OS and its unit to the region.
    ///
    /// # Safety
    /// `base` is a block carved from this region that nobody uses.
    pub(crate) unsafe fn give_back(&self, st: &mut RegionState, base: *mut u8) {
        let u = self.unit_of(base as usize);
        self.set_state(u, UNUSED);
        // SAFETY: the caller guarantees the block is ours and dead.
        unsafe { os::decommit(base, UNIT) };
        if !self.live_bits.is_null() {
            // SAFETY: the shadow covers the region at one bit per byte; the block's part is
            // page aligned because units are 2 MiB aligned.
            unsafe { os::decommit((self.live_bits as *mut u8).add((u * UNIT) / 8), UNIT / 8) };
        }
        self.decommitted_bits(st).set(u, true);
    }
}

impl Drop for Region {
    fn drop(&mut self) {
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

    #[test]
    fn the_whole_reservation_reads_zero_before_it_is_carved() {
        let (r, mut st) = Region::new(8 * UNIT, true, false).unwrap();
        r.carve(&mut st).unwrap();
        for u in [1, 5, 7] {
            // SAFETY: the reservation is readable everywhere (os::reserve).
            let w = unsafe { r.unit_addr(u).cast::<u64>().read_volatile() };
            assert_eq!(w, 0, "unit {u} of the reservation");
        }
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
