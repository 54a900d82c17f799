//! Checked mode's shadow of the region: one bit per byte of the region, set while a live
//! slot starts at that byte.
//!
//! Invariant, in checked mode (debug assertions or the `checked` feature), for every slot
//! start `p` of a block in use: `bit(p) == 1` iff `p` was handed out by an allocation and
//! not freed since. An allocation sets the bit; a free checks that it is set, then clears
//! it; a block given back clears its range (see [`crate::pool`], [`crate::region`]). The
//! shadow is reserved with the region and touched only where blocks are, so it costs
//! memory in proportion to the blocks in use.

use crate::region::Region;
use crate::sync::{AtomicU64, Ordering};

/// The live bits of one region (present in checked mode only).
pub(crate) struct LiveBits<'a> {
    region: &'a Region,
    words: *const AtomicU64,
}

impl<'a> LiveBits<'a> {
    /// The region's live bits; `None` when the region has no shadow (not checked mode).
    #[inline]
    pub(crate) fn of(region: &'a Region) -> Option<LiveBits<'a>> {
        let words = region.live_bits;
        (!words.is_null()).then_some(LiveBits { region, words })
    }

    /// The shadow word holding the bit of address `p`, and the bit's mask.
    ///
    /// # Panics
    /// When `p` is not in the region (a caller's bug: every slot is).
    #[inline]
    fn word(&self, p: usize) -> (&AtomicU64, u64) {
        assert!(
            self.region.contains(p),
            "live bit of {p:#x}, outside the region"
        );
        let bit = p - self.region.base();
        // SAFETY: the shadow covers the region at one bit per byte, and p is in the region
        // (checked above); the shadow lives as long as the region.
        let word = unsafe { &*self.words.add(bit / 64) };
        (word, 1 << (bit % 64))
    }

    /// True when the slot starting at `p` is live.
    pub(crate) fn is_live(&self, p: usize) -> bool {
        let (word, mask) = self.word(p);
        word.load(Ordering::Relaxed) & mask != 0
    }

    /// Marks the slot starting at `p` live; returns whether it was.
    #[inline]
    pub(crate) fn set_live(&self, p: usize) -> bool {
        let (word, mask) = self.word(p);
        word.fetch_or(mask, Ordering::Relaxed) & mask != 0
    }

    /// Marks the slot starting at `p` free; returns whether it was live.
    #[inline]
    pub(crate) fn set_free(&self, p: usize) -> bool {
        let (word, mask) = self.word(p);
        word.fetch_and(!mask, Ordering::Relaxed) & mask != 0
    }
}
