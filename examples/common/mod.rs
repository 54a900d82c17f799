//! What the examples share: resident memory from /proc/self/statm, a deterministic random
//! number generator, running this example again as a child process (so that each allocator
//! is measured in a fresh process), and number formatting.
//!
//! Not an example itself: each example includes it with `mod common;`.
#![allow(dead_code)] // each example uses a part of it

use std::fmt;
use std::process::Command;

/// Resident set size of this process in bytes (/proc/self/statm, second field, in pages).
pub fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .expect("statm's second field");
    // SAFETY: sysconf only reads a constant of the system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * usize::try_from(page).unwrap_or(4096)
}

/// Bytes shown in MiB with one decimal, right-aligned to the formatter's width.
pub struct Mib(pub usize);

impl fmt::Display for Mib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = format!("{:.1} MiB", self.0 as f64 / (1 << 20) as f64);
        f.pad(&s)
    }
}

/// RSS growth from `before` to now, or 0 when it shrank.
pub fn rss_since(before: usize) -> usize {
    rss().saturating_sub(before)
}

/// xorshift64*: deterministic, fast, good enough for shaping workloads.
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

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

/// The first command-line argument: set in a child started by [`run_child`].
pub fn child_role() -> Option<String> {
    std::env::args().nth(1)
}

/// Runs this example again with `role` as its argument and returns its standard output.
/// Panics with the child's standard error if it fails.
pub fn run_child(role: &str) -> String {
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe).arg(role).output().expect("start child");
    assert!(
        out.status.success(),
        "child `{role}` failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
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
                $cohort.class($life).allocate(layout)
            }

            unsafe fn deallocate(&self, p: std::ptr::NonNull<u8>, layout: std::alloc::Layout) {
                // SAFETY: the caller's contract, for the same allocator and class.
                unsafe { $cohort.class($life).deallocate(p, layout) }
            }

            unsafe fn grow(
                &self,
                p: std::ptr::NonNull<u8>,
                old: std::alloc::Layout,
                new: std::alloc::Layout,
            ) -> Result<std::ptr::NonNull<[u8]>, allocator_api2::alloc::AllocError> {
                // SAFETY: the caller's contract, for the same allocator and class.
                unsafe { $cohort.class($life).grow(p, old, new) }
            }

            unsafe fn shrink(
                &self,
                p: std::ptr::NonNull<u8>,
                old: std::alloc::Layout,
                new: std::alloc::Layout,
            ) -> Result<std::ptr::NonNull<[u8]>, allocator_api2::alloc::AllocError> {
                // SAFETY: the caller's contract, for the same allocator and class.
                unsafe { $cohort.class($life).shrink(p, old, new) }
            }
        }
    };
}
