//! The drop-in malloc: the standard family, exported under its standard names, all served
//! by [`COHORT`] in its hidden `GlobalAlloc` class.
//!
//! Requests: an allocation of `n` bytes aligned to `a` (1 for the plain forms) is the
//! cohort request [`request`]`(n, a)`: size `max(n, 1)`, alignment `max(a, 8)` up to 8
//! bytes and `max(a, 16)` above (what the C library guarantees: any object that fits is
//! aligned). A sized free recomputes the same request from its size (and alignment), so it
//! finds the same size class: the sized fast path with the caller's size, checked against
//! the block's key. An unsized free finds the size from the address.
//!
//! Standard behaviour: a null `free` does nothing; a zero size allocates a unique minimal
//! block; sizes above `PTRDIFF_MAX` and overflowing products (`calloc`, `reallocarray`,
//! `pvalloc`) give null with `errno = ENOMEM`; bad alignments give `EINVAL` (returned by
//! `posix_memalign`, in `errno` with null from `aligned_alloc` and `memalign`); `realloc`
//! keeps the contents; `realloc(p, 0)` with a non-null `p` frees `p` and returns null, as
//! the GNU C library does (and `errno` is left alone). Pointers that are not cohort's go to
//! the C library ([`crate::foreign`]).

use crate::{foreign, set_errno, COHORT};
use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;
use core::ptr;

/// The largest size any call accepts: `PTRDIFF_MAX` less a page (room to round up to any
/// alignment a small allocation can have, and to whole pages).
const MAX_SIZE: usize = isize::MAX as usize - 4096;

/// The largest alignment accepted: half the address space.
const MAX_ALIGN: usize = 1 << (usize::BITS - 2);

/// The cohort request for `size` bytes aligned to `align` (a power of two): see the module
/// docs. `None` when it is too large for any allocation.
#[inline(always)]
pub fn request(size: usize, align: usize) -> Option<Layout> {
    let natural = if size <= 8 { 8 } else { 16 };
    let align = if align > natural { align } else { natural };
    if size > MAX_SIZE || align > MAX_ALIGN {
        return None;
    }
    // A zero size is a one-byte request: a unique block.
    let size = if size == 0 { 1 } else { size };
    Layout::from_size_align(size, align).ok()
}

/// Allocates `size` bytes aligned to `align` (a power of two); with `ZERO`, zeroed. Null
/// with `errno = ENOMEM` when too large or out of memory.
#[inline(always)]
fn allocate<const ZERO: bool>(size: usize, align: usize) -> *mut c_void {
    let Some(layout) = request(size, align) else {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    };
    // SAFETY: a non-zero size (request never gives zero).
    let p = unsafe {
        if ZERO {
            GlobalAlloc::alloc_zeroed(&COHORT, layout)
        } else {
            GlobalAlloc::alloc(&COHORT, layout)
        }
    };
    if p.is_null() {
        set_errno(libc::ENOMEM);
    }
    p.cast()
}

/// Frees `p` knowing its size and alignment: in cohort's region, the start of a slot checked
/// ([`cohort::Cohort::check_slot_start`]), then the sized fast path with that request (a
/// wrong size is caught by the block's key and aborts); outside it, a large
/// allocation (a mapping of its own) is freed with the size checked against its mapping (a
/// wrong one aborts), and any other pointer goes to the unsized `free` (the C library's
/// block, or misuse it reports). A size no allocation can have (above [`MAX_SIZE`]) given
/// with cohort's memory aborts.
///
/// # Safety
/// `p` is null, or a live allocation of the drop-in family made with `(size, align)` (a
/// size from the one asked for up to its usable size), or a live block of the C library.
#[inline(always)]
pub(crate) unsafe fn free_with_size(p: *mut c_void, size: usize, align: usize) {
    let cohorts = COHORT.in_region(p.cast()) || {
        // Off the fast path: a large allocation, found in the large table (under its lock).
        !p.is_null() && COHORT.allocation_at(p.cast()).is_some()
    };
    if !cohorts {
        // SAFETY: forwarded contract.
        return unsafe { free(p) };
    }
    let Some(layout) = request(size, align) else {
        crate::misuse_abort(format_args!(
            "sized free of {p:p} with size {size} (alignment {align}): no allocation has that \
             size"
        ));
    };
    // The sized free checks the start of a slot in checked builds only; a C caller's
    // pointer is checked in every build, as `free`'s is (a wrong one aborts).
    COHORT.check_slot_start(p.cast());
    // SAFETY: cohort's allocation; the caller's size and alignment give its request,
    // checked against the block's key or the large allocation's mapping (a wrong one aborts).
    unsafe { GlobalAlloc::dealloc(&COHORT, p.cast(), layout) }
}

/// `malloc(3)`.
#[no_mangle]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    allocate::<false>(size, 1)
}

/// `calloc(3)`: zeroed; null with `ENOMEM` when `count * size` overflows.
#[no_mangle]
pub extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    match count.checked_mul(size) {
        Some(n) => allocate::<true>(n, 1),
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// `free(3)`: any allocation of this library, whatever its class, found from its address;
/// a pointer that is not cohort's goes to the C library.
///
/// # Safety
/// `p` is null or a live allocation (of this library or of the C library).
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: forwarded contract.
    if unsafe { COHORT.free_unsized(p.cast()) }.is_err() {
        // SAFETY: not cohort's: the C library's (caller).
        unsafe { foreign::free(p) }
    }
}

/// C23 `free_sized`: the sized free with the size given to `malloc`, `calloc` or `realloc`
/// (any size up to the usable size), checked against the block.
///
/// # Safety
/// As `free`, with `size` the allocation's size.
#[no_mangle]
pub unsafe extern "C" fn free_sized(p: *mut c_void, size: usize) {
    // SAFETY: forwarded contract.
    unsafe { free_with_size(p, size, 1) }
}

/// C23 `free_aligned_sized`: the sized free of an `aligned_alloc` allocation.
///
/// # Safety
/// As `free`, with `(align, size)` the allocation's.
#[no_mangle]
pub unsafe extern "C" fn free_aligned_sized(p: *mut c_void, align: usize, size: usize) {
    if !align.is_power_of_two() {
        crate::misuse_abort(format_args!(
            "free_aligned_sized({p:p}, {align}, {size}): the alignment is not a power of two"
        ));
    }
    // SAFETY: forwarded contract.
    unsafe { free_with_size(p, size, align) }
}

/// `realloc(3)`: contents kept up to the smaller size; in place when the size class stays.
/// `realloc(NULL, n)` is `malloc(n)`; `realloc(p, 0)` frees `p` and returns null. Null with
/// `ENOMEM`, `p` untouched, when out of memory.
///
/// # Safety
/// As `free` for `p`.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if p.is_null() {
        return malloc(size);
    }
    if size == 0 {
        // SAFETY: forwarded contract.
        unsafe { free(p) };
        return ptr::null_mut();
    }
    let Some(layout) = request(size, 1) else {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    };
    // SAFETY: forwarded contract.
    match unsafe { COHORT.realloc_unsized(p.cast(), layout.size(), layout.align()) } {
        Ok(q) => {
            if q.is_null() {
                set_errno(libc::ENOMEM);
            }
            q.cast()
        }
        // SAFETY: not cohort's: the C library's (caller).
        Err(_) => unsafe { foreign::realloc(p, size) },
    }
}

/// `reallocarray(3)`: `realloc(p, count * size)`, null with `ENOMEM` (and `p` untouched)
/// when the product overflows.
///
/// # Safety
/// As `realloc`.
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, count: usize, size: usize) -> *mut c_void {
    match count.checked_mul(size) {
        // SAFETY: forwarded contract.
        Some(n) => unsafe { realloc(p, n) },
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// `posix_memalign(3)`: `align` must be a power of two and a multiple of `sizeof(void *)`,
/// else `EINVAL` is returned; `ENOMEM` when out of memory. `errno` is left alone; `*out` is
/// written only on success.
///
/// # Safety
/// `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> i32 {
    if !align.is_power_of_two() || !align.is_multiple_of(size_of::<*mut c_void>()) {
        return libc::EINVAL;
    }
    let Some(layout) = request(size, align) else {
        return libc::ENOMEM;
    };
    // SAFETY: a non-zero size.
    let p = unsafe { GlobalAlloc::alloc(&COHORT, layout) };
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller's out pointer.
    unsafe { *out = p.cast() };
    0
}

/// `aligned_alloc(3)` (C11): `align` must be a power of two (else null, `EINVAL`); any size.
#[no_mangle]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    allocate::<false>(size, align)
}

/// `memalign(3)`: as the GNU C library, an alignment that is not a power of two is rounded
/// up to one; above half the address space, null with `EINVAL`.
#[no_mangle]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    if align > MAX_ALIGN {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    allocate::<false>(size, align.max(1).next_power_of_two())
}

/// `valloc(3)`: page aligned.
#[no_mangle]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    allocate::<false>(size, page_size())
}

/// `pvalloc(3)`: page aligned, the size rounded up to whole pages (one page for 0); null
/// with `ENOMEM` when the rounding overflows.
#[no_mangle]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let page = page_size();
    match size.max(1).checked_next_multiple_of(page) {
        Some(n) => allocate::<false>(n, page),
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// `malloc_usable_size(3)`: the bytes usable at `p` (at least the size asked for); 0 for
/// null; the C library's answer for its own blocks. A pointer into cohort's memory that
/// starts no live allocation (inside one, or in memory it holds free) aborts with cohort's
/// report: it is never handed to the C library, which would read cohort's bytes before it
/// as a chunk header.
///
/// # Safety
/// `p` is null or a live allocation (of this library or of the C library).
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    match COHORT.usable_size_at(p.cast()) {
        Ok(usable) => usable,
        // SAFETY: not cohort's: the C library's (caller).
        Err(_) => unsafe { foreign::usable_size(p) },
    }
}

/// The OS page size.
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page > 0 {
        page as usize
    } else {
        4096
    }
}
