//! `cohort-budget called|inline|noop N`: see the library's docs (`src/lib.rs`).

#[cfg(not(feature = "mimalloc"))]
use cohort::Cohort;
use cohort_budget::{pairs, warm_up, Global};
use std::hint::black_box;

#[cfg(not(feature = "mimalloc"))]
#[global_allocator]
static A: Cohort = Cohort::new();

/// The same measurement with mimalloc as the global allocator (`--features mimalloc`), for
/// comparison.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static A: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The measured loop in the crate that declares the allocator (see the library's docs).
#[no_mangle]
#[inline(never)]
pub extern "C" fn budget_measure_inline(n: usize) {
    pairs::<Global>(n)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: cohort-budget called|inline|noop N";
    let (Some(mode), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse().ok())) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    warm_up();
    let n = black_box(n);
    match mode.as_str() {
        "called" => cohort_budget::budget_measure_called(n),
        "inline" => budget_measure_inline(n),
        "noop" => cohort_budget::budget_measure_noop(n),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
