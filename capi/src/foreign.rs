//! Pointers that are not cohort's: blocks the C library's own allocator made (before cohort
//! took over, or through its `__libc_*` entry points). cohort recognises them by the region
//! bounds and the large table ([`cohort::Cohort::allocation_at`]) and hands them back to
//! the C library, which frees, resizes and measures its own blocks.

use core::ffi::c_void;
use core::sync::atomic::{AtomicPtr, Ordering};

extern "C" {
    fn __libc_free(p: *mut c_void);
    fn __libc_realloc(p: *mut c_void, size: usize) -> *mut c_void;
}

/// Frees a block of the C library's allocator.
///
/// # Safety
/// `p` is a live block of the C library's allocator.
pub unsafe fn free(p: *mut c_void) {
    // SAFETY: forwarded contract.
    unsafe { __libc_free(p) }
}

/// Resizes a block of the C library's allocator (it stays the C library's).
///
/// # Safety
/// `p` is a live block of the C library's allocator.
pub unsafe fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: forwarded contract.
    unsafe { __libc_realloc(p, size) }
}

/// The C library's `malloc_usable_size` (the next definition after this library's),
/// looked up on first use.
static USABLE_SIZE: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());

/// The usable size of a block of the C library's allocator; 0 when its
/// `malloc_usable_size` cannot be found.
///
/// # Safety
/// `p` is a live block of the C library's allocator.
pub unsafe fn usable_size(p: *mut c_void) -> usize {
    let mut f = USABLE_SIZE.load(Ordering::Acquire);
    if f.is_null() {
        // SAFETY: a NUL-terminated name; RTLD_NEXT finds the definition after ours.
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, c"malloc_usable_size".as_ptr()) };
        if f.is_null() {
            return 0;
        }
        USABLE_SIZE.store(f, Ordering::Release);
    }
    // SAFETY: the C library's malloc_usable_size has this signature.
    let f: unsafe extern "C" fn(*mut c_void) -> usize = unsafe { core::mem::transmute(f) };
    // SAFETY: forwarded contract.
    unsafe { f(p) }
}
