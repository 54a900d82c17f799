//! The per-unit tables of a region that owns its state (a private reservation,
//! `Region::with_base`): the promotion records and checked mode's shadow are reserved
//! without access and committed as the bump passes their units, so that nothing of them is
//! populated for units never carved (a process's `mlockall(MCL_CURRENT)` populates every
//! accessible mapping: at 32 KiB of records a unit, 4 GiB for the default reservation).
//!
//! Invariant: in such a region (`meta_len != 0`), the records and shadow of every unit
//! below `bump` are committed; nothing reads those of a unit at or above it.

use super::{Region, PROMOTION_WORDS, UNIT};
use crate::os;
use crate::sync::AtomicU64;

impl Region {
    /// Makes the per-unit tables of units `[from, to)` usable as the bump passes them (see
    /// the module docs); nothing to do in a placed region, whose state is its placement's.
    /// False when the OS refuses.
    pub(super) fn commit_unit_tables(&self, from: usize, to: usize) -> bool {
        if self.meta_len == 0 {
            return true;
        }
        let meta = self.units as usize;
        let record = PROMOTION_WORDS * size_of::<AtomicU64>();
        let records = self.promotion as usize - meta;
        let mut ok = commit_span(
            meta,
            self.meta_len,
            records + from * record,
            records + to * record,
        );
        if !self.live_bits.is_null() {
            let shadow = self.live_bits as usize;
            ok &= commit_span(shadow, self.shadow_len, from * UNIT / 8, to * UNIT / 8);
        }
        ok
    }
}

/// Commits the pages of `[map + from, map + to)`, rounded out to whole pages within `[map,
/// map + len)`, a mapping the region reserved without access (`Region::with_base`).
pub(super) fn commit_span(map: usize, len: usize, from: usize, to: usize) -> bool {
    let page = os::page_size();
    let (lo, hi) = (from & !(page - 1), to.next_multiple_of(page).min(len));
    // SAFETY: whole pages (the mapping is page aligned, its length whole pages) of a
    // reservation of the region's, page aligned.
    lo >= hi || unsafe { os::commit((map + lo) as *mut u8, hi - lo) }
}
