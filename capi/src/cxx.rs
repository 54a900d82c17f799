//! The C++ operators new and delete in all their forms (plain, array, nothrow, aligned,
//! sized), exported under their Itanium ABI names for x86-64 and other LP64 targets
//! (`size_t` is `unsigned long`, `m`).
//!
//! `operator new` serves the request of [`malloc::request`] for its size (and alignment);
//! when memory is exhausted it calls the installed new-handler and tries again, and with no
//! handler throws `std::bad_alloc`, through the C++ runtime's own functions found in the
//! process when needed (a program that uses operator new has the C++ runtime loaded). The
//! nothrow forms return null instead. Sized deletes take the sized free path
//! ([`malloc::free_with_size`]) with the size (and alignment) the program passes; the others
//! free from the address.

use crate::malloc;
use core::ffi::c_void;

/// `std::align_val_t`.
type AlignVal = usize;
/// `const std::nothrow_t &` (never read).
type Nothrow = *const c_void;

/// A C++ runtime function with no arguments, found by its mangled name; None when absent.
fn cxx_runtime(name: &core::ffi::CStr) -> Option<unsafe extern "C-unwind" fn()> {
    // SAFETY: a NUL-terminated name; RTLD_DEFAULT searches the whole process.
    let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    // SAFETY: a non-null symbol of that name is a function taking nothing (both functions
    // looked up here are declared so by the C++ standard library).
    (!f.is_null())
        .then(|| unsafe { core::mem::transmute::<*mut c_void, unsafe extern "C-unwind" fn()>(f) })
}

/// What `operator new` does when memory is exhausted: the new-handler if one is installed
/// (then the allocation is tried again), else `std::bad_alloc` is thrown (or, without a C++
/// runtime in the process, the process aborts).
#[cold]
fn out_of_memory() {
    // `std::get_new_handler()` returns the handler (a function pointer) or null.
    if let Some(get) = cxx_runtime(c"_ZSt15get_new_handlerv") {
        // SAFETY: get_new_handler's signature: () -> void (*)().
        let get: unsafe extern "C-unwind" fn() -> Option<unsafe extern "C-unwind" fn()> =
            unsafe { core::mem::transmute(get) };
        // SAFETY: calling the C++ runtime's function; the handler may throw, which unwinds
        // through these frames (C-unwind, nothing to drop).
        if let Some(handler) = unsafe { get() } {
            // SAFETY: as above.
            unsafe { handler() };
            return;
        }
    }
    match cxx_runtime(c"_ZSt17__throw_bad_allocv") {
        // SAFETY: throws std::bad_alloc; it unwinds through these C-unwind frames.
        Some(throw) => unsafe { throw() },
        None => crate::misuse_abort(format_args!("operator new: out of memory")),
    }
    crate::misuse_abort(format_args!(
        "operator new: std::__throw_bad_alloc returned"
    ))
}

/// `operator new` for `size` bytes aligned to `align` (1 for the plain forms).
fn new_throwing(size: usize, align: usize) -> *mut c_void {
    loop {
        let p = new_nothrow(size, align);
        if !p.is_null() {
            return p;
        }
        out_of_memory();
    }
}

/// The nothrow forms: null when memory is exhausted.
fn new_nothrow(size: usize, align: usize) -> *mut c_void {
    if align == 1 {
        return malloc::malloc(size);
    }
    malloc::aligned_alloc(align, size)
}

/// `operator new(size_t)`.
#[export_name = "_Znwm"]
pub extern "C-unwind" fn new(size: usize) -> *mut c_void {
    new_throwing(size, 1)
}

/// `operator new[](size_t)`.
#[export_name = "_Znam"]
pub extern "C-unwind" fn new_array(size: usize) -> *mut c_void {
    new_throwing(size, 1)
}

/// `operator new(size_t, const std::nothrow_t &)`.
#[export_name = "_ZnwmRKSt9nothrow_t"]
pub extern "C" fn new_nothrow_plain(size: usize, _: Nothrow) -> *mut c_void {
    new_nothrow(size, 1)
}

/// `operator new[](size_t, const std::nothrow_t &)`.
#[export_name = "_ZnamRKSt9nothrow_t"]
pub extern "C" fn new_array_nothrow(size: usize, _: Nothrow) -> *mut c_void {
    new_nothrow(size, 1)
}

/// `operator new(size_t, std::align_val_t)`.
#[export_name = "_ZnwmSt11align_val_t"]
pub extern "C-unwind" fn new_aligned(size: usize, align: AlignVal) -> *mut c_void {
    new_throwing(size, align)
}

/// `operator new[](size_t, std::align_val_t)`.
#[export_name = "_ZnamSt11align_val_t"]
pub extern "C-unwind" fn new_array_aligned(size: usize, align: AlignVal) -> *mut c_void {
    new_throwing(size, align)
}

/// `operator new(size_t, std::align_val_t, const std::nothrow_t &)`.
#[export_name = "_ZnwmSt11align_val_tRKSt9nothrow_t"]
pub extern "C" fn new_aligned_nothrow(size: usize, align: AlignVal, _: Nothrow) -> *mut c_void {
    new_nothrow(size, align)
}

/// `operator new[](size_t, std::align_val_t, const std::nothrow_t &)`.
#[export_name = "_ZnamSt11align_val_tRKSt9nothrow_t"]
pub extern "C" fn new_array_aligned_nothrow(
    size: usize,
    align: AlignVal,
    _: Nothrow,
) -> *mut c_void {
    new_nothrow(size, align)
}

/// Generates the unsized deletes (freed from the address): each name and its extra
/// parameter types, ignored.
macro_rules! unsized_deletes {
    ($($(#[$doc:meta])* $name:literal fn $fn:ident($($arg:ty),*);)*) => {$(
        $(#[$doc])*
        ///
        /// # Safety
        /// `p` is null or a live allocation of operator new, not used after the call.
        #[export_name = $name]
        pub unsafe extern "C" fn $fn(p: *mut c_void, $(_: $arg),*) {
            // SAFETY: forwarded contract.
            unsafe { malloc::free(p) }
        }
    )*};
}

unsized_deletes! {
    /// `operator delete(void *)`.
    "_ZdlPv" fn delete();
    /// `operator delete[](void *)`.
    "_ZdaPv" fn delete_array();
    /// `operator delete(void *, std::align_val_t)`.
    "_ZdlPvSt11align_val_t" fn delete_aligned(AlignVal);
    /// `operator delete[](void *, std::align_val_t)`.
    "_ZdaPvSt11align_val_t" fn delete_array_aligned(AlignVal);
    /// `operator delete(void *, const std::nothrow_t &)`.
    "_ZdlPvRKSt9nothrow_t" fn delete_nothrow(Nothrow);
    /// `operator delete[](void *, const std::nothrow_t &)`.
    "_ZdaPvRKSt9nothrow_t" fn delete_array_nothrow(Nothrow);
    /// `operator delete(void *, std::align_val_t, const std::nothrow_t &)`.
    "_ZdlPvSt11align_val_tRKSt9nothrow_t" fn delete_aligned_nothrow(AlignVal, Nothrow);
    /// `operator delete[](void *, std::align_val_t, const std::nothrow_t &)`.
    "_ZdaPvSt11align_val_tRKSt9nothrow_t" fn delete_array_aligned_nothrow(AlignVal, Nothrow);
}

/// `operator delete(void *, size_t)`: the sized free.
///
/// # Safety
/// `p` is null or a live allocation of `operator new(size)`, not used after the call.
#[export_name = "_ZdlPvm"]
pub unsafe extern "C" fn delete_sized(p: *mut c_void, size: usize) {
    // SAFETY: forwarded contract.
    unsafe { malloc::free_with_size(p, size, 1) }
}

/// `operator delete[](void *, size_t)`: the sized free.
///
/// # Safety
/// As `delete_sized`, for `operator new[]`.
#[export_name = "_ZdaPvm"]
pub unsafe extern "C" fn delete_array_sized(p: *mut c_void, size: usize) {
    // SAFETY: forwarded contract.
    unsafe { malloc::free_with_size(p, size, 1) }
}

/// `operator delete(void *, size_t, std::align_val_t)`: the sized free.
///
/// # Safety
/// `p` is null or a live allocation of `operator new(size, align)`, not used after.
#[export_name = "_ZdlPvmSt11align_val_t"]
pub unsafe extern "C" fn delete_sized_aligned(p: *mut c_void, size: usize, align: AlignVal) {
    // SAFETY: forwarded contract.
    unsafe { malloc::free_with_size(p, size, align) }
}

/// `operator delete[](void *, size_t, std::align_val_t)`: the sized free.
///
/// # Safety
/// As `delete_sized_aligned`, for `operator new[]`.
#[export_name = "_ZdaPvmSt11align_val_t"]
pub unsafe extern "C" fn delete_array_sized_aligned(p: *mut c_void, size: usize, align: AlignVal) {
    // SAFETY: forwarded contract.
    unsafe { malloc::free_with_size(p, size, align) }
}
