//! The state seal's hash ([`seal_sum`]): what the last process to leave a region stores
//! and the first to open it again compares, to refuse a state whose bytes changed while
//! nobody had it open (`attach`'s "The state seal").
//!
//! Invariants: `seal_sum(region)` depends only on the bytes of the state area's pages and
//! of every unit's first page, as read: a page of zeros counts as a file's hole does (so
//! how the file stores its zeros does not change it), and any change of one byte changes
//! it but with odds of 2^-64. It detects damage; it does not authenticate.

use super::header::Layout;
use crate::class::BLOCK_SIZE;
use crate::os::shared_mem::Fd;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The granule [`seal_sum`] hashes by: pages of zeros (a file's holes among them) are
/// left out, so that a sparse state costs only what it holds.
const SUM_PAGE: usize = 4096;

/// What the state seal compares: a hash of every page of the state and of the first page
/// of every unit (a block's header and run table: the lists' links live there too), of
/// the region of `layout` in the file `fd` mapped at `base`. See [`sum_pages`].
///
/// # Safety
/// The region of `layout` is mapped readable at `base` for the call.
pub(super) unsafe fn seal_sum(base: *const u8, fd: &Fd, layout: &Layout) -> u64 {
    let state = (layout.state_offset, layout.state_offset + layout.state_len);
    let units = (layout.blocks_offset, layout.blocks_offset + layout.unit_count * BLOCK_SIZE);
    // SAFETY: both ranges lie in the caller's mapping.
    let (a, b) = unsafe {
        (
            sum_pages(base, fd, state, SUM_PAGE),
            sum_pages(base, fd, units, BLOCK_SIZE),
        )
    };
    mix(a, b)
}

/// One step of the hashes below.
fn mix(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29)
}

/// A hash of the pages at `from`, `from + step`, `from + 2 step`... below `to` (`from` and
/// `step` multiples of [`SUM_PAGE`]) of the file `fd` mapped at `base`: every one that is
/// not all zero counts, with its index; the file's holes are skipped unread. It detects
/// damage (a changed byte changes it but with odds of 2^-64); it does not authenticate.
///
/// # Safety
/// `[base + from, base + to)` is mapped readable for the call.
unsafe fn sum_pages(base: *const u8, fd: &Fd, (from, to): (usize, usize), step: usize) -> u64 {
    debug_assert!(from.is_multiple_of(SUM_PAGE) && step.is_multiple_of(SUM_PAGE));
    let mut sum = mix(from as u64, to as u64);
    // Pages below `next` are hashed already (extents of a file system's smaller blocks may
    // share a page).
    let mut next = from;
    for (start, end) in fd.data_extents(from as u64, to as u64) {
        // The first page of the series at or after the extent's start, and after `next`.
        let start = (start as usize / SUM_PAGE * SUM_PAGE).max(next);
        let mut page = from + (start - from).div_ceil(step) * step;
        while page < (end as usize).min(to) && page + SUM_PAGE <= to {
            // Four independent lanes: a word's multiply does not wait for the last's.
            let mut lanes = [1u64, 2, 3, 4];
            let mut any = 0;
            for i in 0..SUM_PAGE / 8 {
                // SAFETY: the page lies in the caller's range; read as an atomic because
                // another process may (in a damaged region) be writing it.
                let w = unsafe { &*base.add(page + i * 8).cast::<AtomicU64>() }.load(Relaxed);
                any |= w;
                lanes[i % 4] = mix(lanes[i % 4], w);
            }
            if any != 0 {
                sum = lanes.iter().fold(mix(sum, page as u64), |h, &l| mix(h, l));
            }
            page += step;
        }
        next = next.max(page);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::shared_mem::{self, CName, Kind};

    #[test]
    fn the_sum_sees_every_byte_of_its_pages_and_not_how_the_file_stores_its_zeros() {
        let name = CName::new(format!("/cohort-sum-{}", shared_mem::pid()).as_bytes()).unwrap();
        let _ = shared_mem::unlink(Kind::SharedMemory, &name);
        let fd = shared_mem::create_exclusive(Kind::SharedMemory, &name).unwrap();
        shared_mem::unlink(Kind::SharedMemory, &name).unwrap();
        let len = 6 * SUM_PAGE;
        fd.set_len(len as u64).unwrap();
        let p = shared_mem::map_shared(&fd, len, SUM_PAGE).unwrap();
        // SAFETY: `p` maps `len` bytes of the object for the whole test.
        let every = || unsafe { sum_pages(p, &fd, (SUM_PAGE, 3 * SUM_PAGE), SUM_PAGE) };
        // SAFETY: as above: pages 1, 3 and 5.
        let odd = || unsafe { sum_pages(p, &fd, (SUM_PAGE, 6 * SUM_PAGE), 2 * SUM_PAGE) };
        let (zeros, odd_zeros) = (every(), odd());
        // SAFETY: as above; page 3 is outside the first range, page 4 off the second's.
        unsafe {
            p.add(3 * SUM_PAGE + 5).write(1);
            p.add(4 * SUM_PAGE + 5).write(1);
        }
        assert_eq!(every(), zeros, "bytes outside the range do not count");
        let odd_base = odd();
        assert_ne!(odd_base, odd_zeros, "page 3 counts in the series 1, 3, 5");
        // SAFETY: as above.
        unsafe { p.add(4 * SUM_PAGE + 6).write(1) };
        assert_eq!(odd(), odd_base, "page 4 is not in the series");
        // SAFETY: as above.
        unsafe { p.add(2 * SUM_PAGE + 7).write(9) };
        let base = every();
        assert_ne!(base, zeros);
        for at in (SUM_PAGE..3 * SUM_PAGE).step_by(61) {
            // SAFETY: as above.
            unsafe {
                let old = p.add(at).read();
                p.add(at).write(old ^ 0x10);
                assert_ne!(every(), base, "byte {at:#x} changed");
                p.add(at).write(old);
            }
        }
        assert_eq!(every(), base);
        // Page 1 written with zeros is data now, not a hole: the sum is the same.
        // SAFETY: as above.
        unsafe { p.add(SUM_PAGE).write_bytes(0, SUM_PAGE) };
        assert_eq!(every(), base, "a page of zeros counts as a hole does");
        // SAFETY: mapped above, unmapped once.
        unsafe { shared_mem::unmap_shared(p, len) };
    }
}
