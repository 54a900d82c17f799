//! What cohort's tests, benchmarks, examples and tools share: a deterministic PRNG
//! ([`Rng`]), the process's resident memory ([`rss`]), byte sizes for people ([`ByteSize`],
//! [`mib`]) and child processes that run this same executable again ([`run_child`],
//! [`abort_in_child`], [`failed_cases`]), fork children that check objects ([`fork_children`],
//! [`apart_and_whole`]), threads a fork child may start ([`raw_thread`]), the lock that makes a test binary's tests take turns ([`serial`]),
//! the colours of the plots ([`PALETTE`]), and an allocator's shared checks and loads, given
//! its calls as closures ([`assert_distinct`], [`burst`], [`rounds_until_resident`]).
//!
//! Generic on purpose: it does not depend on cohort, so a test links one copy of the
//! library's types. [`Rng`]'s `new`, `next_u64`, `below`, `range` and `chance` do not
//! allocate: a fork child may use them.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod bytes;
mod child;
mod forked;
mod heap;
pub mod raw_thread;
mod rng;

pub use bytes::{mib, ByteSize};
pub use child::{
    abort_in_child, bounded_output, child_case, failed_cases, how_it_ended, misuse_unnamed,
    run_child, test_in_child, RERUN_ALARM_SECS,
};
pub use forked::{apart_and_whole, byte_of, fill, fork_children, say};
pub use heap::{assert_distinct, burst, rounds_until_resident, Rounds};
pub use rng::{mix, Rng};

/// The plots' colours, as RGB: a grey (the benchmarks' System), then nine distinct colours
/// (one per allocator in the benchmarks' plots, one per lifetime class in the ratio tool's).
pub const PALETTE: [(u8, u8, u8); 10] = [
    (120, 120, 120),
    (31, 119, 180),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (255, 127, 14),
    (140, 86, 75),
    (227, 119, 194),
    (188, 189, 34),
    (23, 190, 207),
];

/// The lock that makes the tests of one test binary take turns (each binary links its own
/// copy of this crate, so its own lock): held by tests whose checks are process-wide
/// (resident sizes, system-call counts, forked children that inherit the process's open
/// regions). A test that panicked while holding it does not poison it for the others.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Resident set size of this process in bytes (`/proc/self/statm`, second field, in pages).
pub fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .expect("statm's second field");
    // SAFETY: sysconf only reads a constant of the system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * usize::try_from(page).unwrap_or(4096)
}
