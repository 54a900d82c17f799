//! RSS per requested byte: 4 million live objects of one size, allocated with `Layout`s as
//! Rust code does (8-byte aligned), by cohort and by the system allocator (glibc), each
//! measurement in a fresh process.
//!
//! `cargo run --release --example rss` prints one row per size: resident memory the
//! allocator added divided by the bytes requested (1.00 is perfect: no header, no padding).
//! `COHORT_RSS_COUNT` changes the object count.

mod common;

use cohort::Cohort;
use common::env_number;
use std::alloc::{GlobalAlloc, Layout, System};
use test_support::{rss, run_child};

const SIZES: [usize; 6] = [8, 16, 24, 48, 100, 1000];

/// Allocates `count` objects of `size` bytes through `alloc`, touching each, and returns
/// the RSS growth in bytes.
fn measure(alloc: &dyn GlobalAlloc, size: usize, count: usize) -> usize {
    let layout = Layout::from_size_align(size, 8).unwrap();
    // The bookkeeping vector's pages are touched before the measurement starts.
    let mut ptrs: Vec<*mut u8> = vec![std::ptr::null_mut(); count];
    let before = rss();
    for slot in ptrs.iter_mut() {
        // SAFETY: a non-zero-size layout.
        let p = unsafe { alloc.alloc(layout) };
        assert!(!p.is_null());
        // SAFETY: p holds `size` bytes.
        unsafe { p.write_bytes(1, size) };
        *slot = p;
    }
    let grown = rss() - before;
    for &p in &ptrs {
        // SAFETY: allocated above with `layout`.
        unsafe { alloc.dealloc(p, layout) };
    }
    grown
}

fn main() {
    let count = env_number("COHORT_RSS_COUNT", 4_000_000);
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 {
        // Child: one measurement.
        let size: usize = args[2].parse().unwrap();
        let grown = match args[1].as_str() {
            "cohort" => measure(&Cohort::<()>::new(), size, count),
            _ => measure(&System, size, count),
        };
        println!("{grown}");
        return;
    }
    let run = |which: &str, size: usize| -> f64 {
        let out = run_child(&[which, &size.to_string()]);
        let grown: f64 = out.trim().parse().unwrap();
        grown / (size * count) as f64
    };
    println!("RSS growth / requested bytes, {count} live objects (8-byte aligned layouts)");
    println!(
        "{:>6} {:>14} {:>8} {:>8}",
        "size", "requested", "cohort", "glibc"
    );
    for size in SIZES {
        let (c, g) = (run("cohort", size), run("system", size));
        println!(
            "{size:>6} {:>11.1} MB {c:>8.3} {g:>8.3}",
            (size * count) as f64 / 1e6
        );
    }
}
