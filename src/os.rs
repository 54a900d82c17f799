//! The OS layer: every system call of the allocator lives here (a Windows backend would be
//! one more file beside this one).
//!
//! Vocabulary: **reserve** takes address space without memory (`PROT_READ`), **commit**
//! makes a reserved range usable (`PROT_READ | PROT_WRITE`; pages still cost RAM only when
//! touched), **decommit** gives a range's pages back while keeping the range
//! (`MADV_DONTNEED`: the next touch reads zeros), **unmap** gives the range back
//! (`munmap`). No function here allocates through Rust's global allocator.

use core::ptr;

/// The page size cohort assumes (checked against the OS once, in [`page_size_matches`]).
pub const PAGE: usize = 4096;

/// Rounds `len` up to whole pages, or `None` on overflow.
#[inline]
pub fn page_round(len: usize) -> Option<usize> {
    len.checked_add(PAGE - 1).map(|l| l & !(PAGE - 1))
}

/// True when the OS page size is [`PAGE`].
pub fn page_size_matches() -> bool {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) == PAGE as libc::c_long }
}

fn mmap(len: usize, prot: libc::c_int, extra_flags: libc::c_int) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address of the kernel's choice touches no
    // existing memory.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | extra_flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Maps `len` bytes (page multiple) of zeroed read-write memory, aligned to `align` (a power
/// of two, at least a page). Returns null when the OS refuses. The over-reservation used to
/// reach the alignment is trimmed, so exactly `len` bytes stay mapped.
pub fn map(len: usize, align: usize) -> *mut u8 {
    map_with(len, align, libc::PROT_READ | libc::PROT_WRITE)
}

/// Reserves `len` bytes of address space aligned to `align`, without memory: readable
/// (every page reads zero until committed, through the kernel's shared zero page) but not
/// writable. Readable so that a free given a wild pointer into the reservation reads an
/// empty header and reports it, rather than faulting. A read-only private mapping is not
/// charged against the commit limit, and its untouched pages are left out of core dumps.
pub fn reserve(len: usize, align: usize) -> *mut u8 {
    map_with(len, align, libc::PROT_READ)
}

fn map_with(len: usize, align: usize, prot: libc::c_int) -> *mut u8 {
    debug_assert!(len.is_multiple_of(PAGE) && align.is_power_of_two());
    if align <= PAGE {
        return mmap(len, prot, 0);
    }
    let Some(over) = len.checked_add(align - PAGE) else {
        return ptr::null_mut();
    };
    let raw = mmap(over, prot, 0);
    if raw.is_null() {
        return raw;
    }
    let start = (raw as usize + align - 1) & !(align - 1);
    let head = start - raw as usize;
    let tail = over - head - len;
    // SAFETY: both trimmed ranges lie inside the mapping just made and outside [start,
    // start + len), which is what the caller receives.
    unsafe {
        if head > 0 {
            unmap(raw, head);
        }
        if tail > 0 {
            unmap((start + len) as *mut u8, tail);
        }
    }
    start as *mut u8
}

/// Makes a reserved range readable and writable. Returns false when the OS refuses (out
/// of memory under strict overcommit).
///
/// # Safety
/// `[ptr, ptr + len)` lies in a reservation made by [`reserve`], page aligned.
pub unsafe fn commit(ptr: *mut u8, len: usize) -> bool {
    // SAFETY: the caller guarantees the range is ours.
    unsafe { libc::mprotect(ptr.cast(), len, libc::PROT_READ | libc::PROT_WRITE) == 0 }
}

/// Gives the pages of a committed range back to the OS; the range stays usable and reads
/// zeros when next touched.
///
/// # Safety
/// `[ptr, ptr + len)` is a page-aligned range of ours whose contents nobody needs.
pub unsafe fn decommit(ptr: *mut u8, len: usize) {
    // SAFETY: the caller guarantees the range is ours and dead. MADV_DONTNEED on a private
    // anonymous mapping cannot fail for a valid range.
    unsafe {
        libc::madvise(ptr.cast(), len, libc::MADV_DONTNEED);
    }
}

/// Unmaps a range.
///
/// # Safety
/// `[ptr, ptr + len)` is a page-aligned range mapped by this module, and nothing uses it.
pub unsafe fn unmap(ptr: *mut u8, len: usize) {
    // SAFETY: the caller guarantees the range is ours and unused.
    unsafe {
        libc::munmap(ptr.cast(), len);
    }
}

/// Resizes a mapping made by [`map`] (alignment at most a page), in place when the OS can,
/// else by moving it. Returns null, leaving the mapping as it was, when the OS refuses.
///
/// # Safety
/// `[ptr, ptr + old)` is a mapping of ours; both lengths are page multiples.
pub unsafe fn remap(ptr: *mut u8, old: usize, new: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the mapping is ours; MREMAP_MAYMOVE keeps its contents.
    let p = unsafe { libc::mremap(ptr.cast(), old, new, libc::MREMAP_MAYMOVE) };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Bytes of `[ptr, ptr + len)` resident in RAM now (`mincore`), or 0 if the OS refuses.
///
/// # Safety
/// The range is page aligned and mapped.
pub unsafe fn resident_bytes(ptr: *const u8, len: usize) -> usize {
    let pages = len / PAGE;
    let mut resident = 0;
    let mut vec = [0u8; 256];
    let mut done = 0;
    while done < pages {
        let n = (pages - done).min(vec.len());
        // SAFETY: the range is ours (caller) and `vec` holds `n` entries.
        let rc = unsafe {
            libc::mincore(
                ptr.add(done * PAGE) as *mut libc::c_void,
                n * PAGE,
                vec.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return 0;
        }
        resident += vec[..n].iter().filter(|&&v| v & 1 != 0).count() * PAGE;
        done += n;
    }
    resident
}

/// Registers the fork handlers (`pthread_atfork`).
pub fn at_fork(
    prepare: unsafe extern "C" fn(),
    parent: unsafe extern "C" fn(),
    child: unsafe extern "C" fn(),
) -> bool {
    // SAFETY: the handlers are plain functions valid for the life of the process.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) == 0 }
}

/// Writes `bytes` to standard error with one `write` call (a short write is not retried:
/// this is for a last message before [`abort`]). Never allocates.
pub fn write_stderr(bytes: &[u8]) {
    // SAFETY: writes from a valid buffer of `bytes.len()` bytes to fd 2.
    unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
}

/// Ends the process at once (`abort`): no unwinding, no allocation.
pub fn abort() -> ! {
    // SAFETY: abort has no precondition.
    unsafe { libc::abort() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_is_aligned_zeroed_and_trimmed() {
        let align = 1 << 21;
        let p = map(3 * PAGE, align);
        assert!(!p.is_null());
        assert_eq!(p as usize % align, 0);
        // SAFETY: p maps 3 pages.
        unsafe {
            *p = 7;
            assert_eq!(
                resident_bytes(p, 3 * PAGE),
                PAGE,
                "only the touched page is resident"
            );
            assert_eq!(*p.add(3 * PAGE - 1), 0);
            decommit(p, 3 * PAGE);
            assert_eq!(*p, 0, "decommitted memory reads zeros");
            unmap(p, 3 * PAGE);
        }
    }

    #[test]
    fn reserve_then_commit() {
        let p = reserve(1 << 20, 1 << 20);
        assert!(!p.is_null());
        // SAFETY: p reserves 1 MiB.
        unsafe {
            assert!(commit(p, PAGE));
            *p.add(PAGE - 1) = 1;
            assert_eq!(resident_bytes(p, PAGE), PAGE);
            unmap(p, 1 << 20);
        }
        assert!(page_size_matches());
    }
}
