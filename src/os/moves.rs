//! Moving pages inside a private anonymous mapping instead of giving them back and faulting
//! others in (see `crate::medium`, "Moving pages"): [`move_pages`] (`mremap` with
//! `MREMAP_DONTUNMAP | MREMAP_FIXED`), [`map_fresh`] (a fresh mapping over a range, which
//! the kernel merges with its neighbours again) and [`unlocked`] (a move must never touch a
//! locked mapping: `mremap` unlocks the whole mapping it moves pages out of).
//!
//! Invariants: after `move_pages(src, dst, len)` returned true, `[dst, dst + len)` holds what
//! `[src, src + len)` held (the same pages: nothing copied, zeroed or charged) and
//! `[src, src + len)` reads zero, holding no page; returned false, nothing changed but
//! `[dst, dst + len)`, which may read zero.

use core::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// False once the kernel refused a move as unknown (`MREMAP_DONTUNMAP` before Linux 5.7):
/// [`move_pages`] then never asks again.
static MOVES: AtomicBool = AtomicBool::new(true);

/// This process's id.
pub fn process() -> u64 {
    // SAFETY: no precondition.
    unsafe { libc::getpid() as u64 }
}

/// True when the process's mappings are born locked (`mlockall(MCL_FUTURE)`, as the last
/// reservation found): a move would unlock them.
pub fn locks_future() -> bool {
    super::LOCKS_FUTURE.load(Relaxed)
}

/// `MADV_COLD` (Linux 5.4): refused on a locked mapping, which is what [`unlocked`] asks.
const MADV_COLD: libc::c_int = 20;

/// Moves the pages of `[src, src + len)` to `[dst, dst + len)` (whatever `dst` held is
/// dropped), leaving `src` mapped and reading zero. False when the kernel refuses (an
/// older kernel, the ranges in more than one mapping, the mapping count at its limit):
/// nothing moved then.
///
/// # Safety
/// Both ranges are page aligned, of `len` bytes (a page multiple), disjoint, in private
/// anonymous memory of ours mapped readable and writable and not locked, and nobody needs
/// what `dst` holds.
pub unsafe fn move_pages(src: *mut u8, dst: *mut u8, len: usize) -> bool {
    if !MOVES.load(Relaxed) {
        return false;
    }
    let flags = libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED | libc::MREMAP_DONTUNMAP;
    // SAFETY: the caller's ranges; the kernel moves the page table entries of `src` to
    // `dst` (unmapping `dst` first), which nobody needs.
    let p = unsafe { libc::mremap(src.cast(), len, len, flags, dst.cast::<libc::c_void>()) };
    if p == libc::MAP_FAILED {
        if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
            MOVES.store(false, Relaxed);
        }
        return false;
    }
    debug_assert_eq!(p.cast::<u8>(), dst);
    true
}

/// Maps fresh private anonymous memory (read-write, `MAP_NORESERVE`) over
/// `[ptr, ptr + len)`: it reads zero, holds no page, and the kernel merges it with the
/// mappings beside it where they are alike. False when the kernel refuses (the range is
/// as it was then).
///
/// # Safety
/// `[ptr, ptr + len)` is a page-aligned range of private anonymous memory of ours, mapped
/// readable and writable, whose contents nobody needs.
pub unsafe fn map_fresh(ptr: *mut u8, len: usize) -> bool {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED;
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    // SAFETY: the caller's range, replaced by a mapping like it that reads zero.
    unsafe { libc::mmap(ptr.cast(), len, prot, flags, -1, 0) != libc::MAP_FAILED }
}

/// True when the mapping holding the page at `ptr` is not locked (`MADV_COLD` on that
/// page, refused exactly for a locked mapping, or by a kernel without it: false then).
/// The advice only ages the page if resident.
///
/// # Safety
/// `ptr` is a page-aligned address of a mapping of ours.
pub unsafe fn unlocked(ptr: *mut u8) -> bool {
    // SAFETY: the caller's page; the advice changes no contents.
    unsafe { libc::madvise(ptr.cast(), super::kernel_page_size(), MADV_COLD) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::{map, page_size, resident_bytes, unmap};

    #[test]
    fn a_move_takes_the_pages_and_leaves_zeros() {
        let page = page_size();
        let p = map(16 * page, page);
        assert!(!p.is_null());
        // SAFETY: p maps 16 pages, ours.
        unsafe {
            core::ptr::write_bytes(p, 7, 4 * page);
            assert!(unlocked(p));
            assert!(move_pages(p, p.add(8 * page), 4 * page));
            assert_eq!(*p.add(8 * page + 5), 7, "the pages moved");
            // (Asked before reading it: a read maps the zero page, which counts.)
            assert_eq!(resident_bytes(p, 4 * page), 0, "the source holds no page");
            assert_eq!(*p.add(5), 0, "the source reads zero");
            assert!(map_fresh(p.add(8 * page), 4 * page));
            assert_eq!(*p.add(8 * page + 5), 0, "a fresh mapping reads zero");
            unmap(p, 16 * page);
        }
    }

    #[test]
    fn a_locked_mapping_is_told() {
        let page = page_size();
        let p = map(4 * page, page);
        // SAFETY: p maps 4 pages, ours.
        unsafe {
            *p = 1;
            if libc::mlock(p.cast(), page) == 0 {
                assert!(!unlocked(p));
                libc::munlock(p.cast(), page);
            }
            assert!(unlocked(p));
            unmap(p, 4 * page);
        }
    }
}
