//! cohort for C and C++: the library `libcohort.so` / `libcohort.a` and its header
//! `include/cohort.h` (generated from this crate by cbindgen in `build.rs`).
//!
//! - The cohort API in C ([`api`]): one process-wide allocator with [`COHORT_CLASSES`]
//!   lifetime classes named by small integers, `cohort_malloc(size, cls)`,
//!   `cohort_free(p, size, cls)` and the rest of the family, release of a class, compact,
//!   statistics, verification.
//! - The drop-in malloc ([`malloc`]): the standard family, so that a program linked with
//!   the library, or run with `LD_PRELOAD=libcohort.so`, allocates everything in cohort.
//!   Its allocations live in the allocator's hidden lifetime class of `GlobalAlloc`, which
//!   no C class number names, so releasing a class never frees them.
//! - The C++ operators new and delete in all their forms ([`cxx`]), exported under their
//!   Itanium names: sized deletes take the sized free path.
//! - Pointers that are not cohort's (a block the C library allocated before cohort took
//!   over, or through its own entry points) are recognised by the region bounds and the
//!   large table and handed back to the C library ([`foreign`]).
//!
//! Invariants: every allocation of the drop-in family is in the hidden class and has the
//! (size, align) of [`malloc::request`] for its arguments, so that a sized free recomputes
//! the same class; `free(p)` frees any allocation of this library whatever its class, from
//! its address alone.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod api;
pub mod cxx;
pub mod foreign;
pub mod malloc;

use cohort::{Cohort, Lifetime};

/// The number of lifetime classes of the C interface: `cls` arguments run from 0 to
/// `COHORT_CLASSES - 1`.
pub const COHORT_CLASSES: u32 = 16;

/// A C lifetime class number below [`COHORT_CLASSES`] (checked where it enters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CClass(u8);

impl CClass {
    /// The class `cls`, or `None` when it is not below [`COHORT_CLASSES`].
    pub fn new(cls: u32) -> Option<CClass> {
        (cls < COHORT_CLASSES).then_some(CClass(cls as u8))
    }
}

/// The classes' names in misuse reports and statistics, by index: C class `n` is index `n`.
/// The drop-in malloc allocates through `GlobalAlloc`, in the allocator's hidden `"global"`
/// class (index `COHORT_CLASSES` in reports), which no C class number names, so
/// `cohort_release_class` never frees what `malloc` gave.
pub(crate) const NAMES: [&str; COHORT_CLASSES as usize] = [
    "c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9", "c10", "c11", "c12", "c13", "c14",
    "c15",
];

// SAFETY: CClass::new admits only values below COHORT_CLASSES = COUNT (16, within 1 to
// MAX_LIFETIME_CLASSES), so index() < COUNT.
unsafe impl Lifetime for CClass {
    const COUNT: usize = COHORT_CLASSES as usize;
    const NAMES: &'static [&'static str] = &NAMES;
    #[inline(always)]
    fn index(self) -> usize {
        self.0 as usize
    }
}

/// The process's allocator: the C interface's and the drop-in malloc's. Const-initialised,
/// so it is usable from the first allocation of the process; it reserves its address space
/// on first use.
pub static COHORT: Cohort<CClass> = Cohort::new();

/// Sets `errno`.
pub(crate) fn set_errno(e: i32) {
    // SAFETY: __errno_location returns the calling thread's errno, always valid.
    unsafe { *libc::__errno_location() = e };
}

/// Writes `bytes` to standard error, without allocating.
pub(crate) fn write_stderr(bytes: &[u8]) {
    // SAFETY: writing a valid buffer to fd 2.
    unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
}

/// A fixed buffer that formats without allocating (truncating past its size).
pub(crate) struct StackText {
    buf: [u8; 512],
    len: usize,
}

impl StackText {
    pub(crate) const fn new() -> StackText {
        StackText {
            buf: [0; 512],
            len: 0,
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl core::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Reports misuse found at the C boundary (which cannot unwind) and aborts.
#[cold]
pub(crate) fn misuse_abort(args: core::fmt::Arguments<'_>) -> ! {
    let mut text = StackText::new();
    let _ = core::fmt::write(&mut text, format_args!("cohort: {args}\n"));
    write_stderr(text.bytes());
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}
