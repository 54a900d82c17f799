//! What the examples share beside the workspace's `test-support` package (resident memory,
//! the PRNG, byte formats, running this example again as a child process so that each
//! allocator is measured in a fresh process): their settings, the child's role, and a median.
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
