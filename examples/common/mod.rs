//! What the examples share beside the workspace's `test-support` package (resident memory,
//! the PRNG, byte formats, running this example again as a child process so that each
//! allocator is measured in a fresh process): their settings, the child's role, a median
//! and zero-size allocator handles.
//!
//! Not an example itself: each example includes it with `mod common;`.
#![allow(dead_code)] // each example uses a part of it

/// The median of some measurements.
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// The number in environment variable `name`, or `default` when it is unset or not a number.
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The first command-line argument: set in a child started by `test_support::run_child`.
pub fn child_role() -> Option<String> {
    std::env::args().nth(1)
}

/// Declares a zero-size `Allocator` for one lifetime class of a `static` [`cohort::Cohort`]:
/// `zero_size_class!(TreeClass = COHORT, Life::Tree)`. A `ClassHandle` is two words, so an
/// `allocator_api2` box of it is three; a box of this handle is one pointer, like `std`'s.
#[allow(unused_macros)]
macro_rules! zero_size_class {
    ($(#[$meta:meta])* $name:ident = $cohort:path, $life:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default)]
        struct $name;

        // SAFETY: every method forwards to the `ClassHandle` of ($cohort, $life), so this
        // handle keeps its contract; every copy names the same static allocator and class.
        unsafe impl allocator_api2::alloc::Allocator for $name {
            fn allocate(
                &self,
                layout: std::alloc::Layout,
            ) -> Result<std::ptr::NonNull<[u8]>, allocator_api2::alloc::AllocError> {
                $cohort.handle($life).allocate(layout)
            }

            unsafe fn deallocate(&self, p: std::ptr::NonNull<u8>, layout: std::alloc::Layout) {
                // SAFETY: the caller's contract, for the same allocator and class.
                unsafe { $cohort.handle($life).deallocate(p, layout) }
            }

            unsafe fn grow(
                &self,
                p: std::ptr::NonNull<u8>,
                old: std::alloc::Layout,
                new: std::alloc::Layout,
            ) -> Result<std::ptr::NonNull<[u8]>, allocator_api2::alloc::AllocError> {
                // SAFETY: the caller's contract, for the same allocator and class.
                unsafe { $cohort.handle($life).grow(p, old, new) }
            }

            unsafe fn shrink(
                &self,
                p: std::ptr::NonNull<u8>,
                old: std::alloc::Layout,
                new: std::alloc::Layout,
            ) -> Result<std::ptr::NonNull<[u8]>, allocator_api2::alloc::AllocError> {
                // SAFETY: the caller's contract, for the same allocator and class.
                unsafe { $cohort.handle($life).shrink(p, old, new) }
            }
        }
    };
}
