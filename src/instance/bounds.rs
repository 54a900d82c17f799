//! The bounds of an instance's region, kept in the instance for the free fast path: the
//! region's base and length, and this process's copy of its carved length.
//!
//! Invariants: `base` and `len` are the region's, written once before the pool is
//! published; `carved <= region.carved_len()` (raised only to lengths the region had, and
//! the region's never decreases), so `[base, base + carved)` is accessible.

use crate::class::BLOCK_SIZE;
use crate::sync::{AtomicU64, Ordering};
use core::cell::UnsafeCell;
#[cfg(all(target_arch = "x86_64", not(miri), not(loom)))]
use core::ptr;

/// The bounds of an instance's region, read by the free fast path to tell foreign pointers
/// (with no pointer chase: fields of the instance), and this process's copy of the
/// region's carved end, below which the fast path reads headers.
///
/// `base` and `len` are written once, by the thread that creates the instance's pool,
/// before it publishes the pool (Release); read without synchronisation by frees. A free
/// that respects its contract frees a pointer this instance allocated, so the pool's
/// publication happened before it and the read sees the written bounds; only a free of a
/// pointer the instance never allocated (already a broken contract) can race with the
/// write, and it reads 0 (no pointer is in an empty range: reported foreign) or the bounds.
///
/// `carved` is a copy of the region's carved length (`crate::region`, "The carved end"):
/// `carved <= region.carved_len()` always (it is only raised, to values loaded from the
/// region, by [`Instance::carved_offset`]; the region's never decreases), so every byte
/// below `base + carved` is accessible. It lags when another thread carved since: a
/// pointer past it takes the cold path, which tests the region's own length and raises the
/// copy. Kept by this process, in the instance beside `base`: a shared or file region's
/// other processes carve its units, but this process maps the whole region accessible, so
/// its carved length is the region's length from the start; so is a fixed region's, mapped
/// accessible whole (`crate::region`, "The carved end").
///
/// [`Instance::carved_offset`]: super::Instance::carved_offset
pub(crate) struct RegionBounds {
    base: UnsafeCell<usize>,
    len: UnsafeCell<usize>,
    carved: AtomicU64,
}

impl RegionBounds {
    /// No region yet: no pointer is inside.
    pub(super) const fn empty() -> RegionBounds {
        RegionBounds {
            base: UnsafeCell::new(0),
            len: UnsafeCell::new(0),
            carved: AtomicU64::new(0),
        }
    }

    /// Sets the bounds, and the carved length `carved` the region had then.
    ///
    /// # Safety
    /// Called once per instance, by the thread creating its pool, before publishing it.
    pub(super) unsafe fn set(&self, base: usize, len: usize, carved: usize) {
        debug_assert_eq!(base % BLOCK_SIZE, 0, "the region starts on a block boundary");
        // SAFETY: the only write (caller); reads that could race it are of frees whose
        // contract is already broken (see the type).
        unsafe {
            *self.base.get() = base;
            *self.len.get() = len;
        }
        self.carved.store(carved as u64, Ordering::Relaxed);
    }

    /// True when `p` lies in the region (carved or not).
    #[inline(always)]
    pub(crate) fn contains(&self, p: *mut u8) -> bool {
        // SAFETY: see the type: written once before any pointer of the region exists.
        let (base, len) = unsafe { (*self.base.get(), *self.len.get()) };
        (p as usize).wrapping_sub(base) < len
    }

    /// `p - base` when `p` lies below the carved end as this copy has it (its header is
    /// readable), `None` otherwise (outside the region, or past the copy's carved end:
    /// [`Instance::carved_offset`] tells). The region's base is a unit boundary (units are
    /// aligned to their size), so `offset % BLOCK_SIZE` is the offset of `p` in its block:
    /// the free fast path takes it from this subtraction, which the bounds check computes
    /// anyway (one `and`, where `p - block` costs a copy more).
    ///
    /// [`Instance::carved_offset`]: super::Instance::carved_offset
    #[inline(always)]
    pub(crate) fn offset(&self, p: *mut u8) -> Option<usize> {
        // SAFETY: see the type: written once before any pointer of the region exists.
        let base = unsafe { *self.base.get() };
        let offset = (p as usize).wrapping_sub(base);
        #[cfg(all(target_arch = "x86_64", not(miri), not(loom)))]
        {
            // One compare with the length in memory and a branch, as for a plain field:
            // LLVM does not fold an atomic load into the compare (it would cost a load of
            // its own on every free).
            // SAFETY: reads `carved`, a live, aligned `u64` of `self`, with one aligned
            // 8-byte load, which is what a relaxed atomic load compiles to: a concurrent
            // store of a carve is no data race, and the value read is one the field held.
            // The asm only sets flags and jumps to the label, whose block returns. (A value
            // read was stored after the carve's `mprotect` returned, see the type: the
            // mapping's change is seen by every thread by then, so a header below it is
            // accessible to the caller's read.)
            unsafe {
                core::arch::asm!(
                    "cmp {offset}, qword ptr [{bounds} + {carved}]",
                    "jae {past}",
                    offset = in(reg) offset,
                    bounds = in(reg) ptr::from_ref(self),
                    carved = const core::mem::offset_of!(RegionBounds, carved),
                    past = label { return None },
                    options(readonly, nostack),
                );
            }
            Some(offset)
        }
        #[cfg(not(all(target_arch = "x86_64", not(miri), not(loom))))]
        {
            (offset < self.carved.load(Ordering::Relaxed) as usize).then_some(offset)
        }
    }

    /// Raises the copy of the carved length to `carved` (a length the region had).
    pub(super) fn raise_carved(&self, carved: usize) {
        self.carved.fetch_max(carved as u64, Ordering::Relaxed);
    }
}
