//! `cohort-budget called|inline|noop|remote N`: see the library's docs (`src/lib.rs`).

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

/// A producer thread allocates `n` objects and stays alive while this thread frees them.
fn remote(n: usize) {
    let (to_main, from_producer) = std::sync::mpsc::channel();
    let (to_producer, from_main) = std::sync::mpsc::channel::<()>();
    let producer = std::thread::spawn(move || {
        warm_up();
        // The addresses travel as integers (raw pointers are not Send).
        let ptrs: Vec<usize> = (0..n)
            .map(|_| {
                // SAFETY: a valid non-zero layout.
                let p = unsafe { std::alloc::alloc(cohort_budget::LAYOUT) };
                assert!(!p.is_null(), "out of memory");
                p as usize
            })
            .collect();
        to_main.send(ptrs).unwrap();
        from_main.recv().unwrap();
    });
    let ptrs: Vec<*mut u8> = from_producer
        .recv()
        .unwrap()
        .into_iter()
        .map(|a| a as *mut u8)
        .collect();
    // SAFETY: live allocations of LAYOUT, each freed once, by a thread other than their
    // allocator's, which is still running.
    unsafe { cohort_budget::budget_measure_remote(&ptrs) };
    to_producer.send(()).unwrap();
    producer.join().unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: cohort-budget called|inline|noop|remote N";
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
        "remote" => remote(n),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
