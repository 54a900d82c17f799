//! Instruction counts of the fast paths, under callgrind (iai-callgrind), for every allocator.
//!
//! One binary calls each allocator's `GlobalAlloc` on a static instance (none of them needs to be
//! the `#[global_allocator]` for that), so the calls are statically dispatched as they are behind
//! `#[global_allocator]`. Each benchmark runs in its own valgrind process: the setup warms the
//! allocator up with the same operation (thread heap, first-touch pages), then the measured
//! function repeats the operation [`N`] times. The `noop` allocator runs the same code with an
//! allocator that does nothing, so `(count - noop count) / N` is the allocator's own cost per
//! operation, loop and call overhead removed. `benches/suite.rs` does that arithmetic.

use iai_callgrind::{library_benchmark, library_benchmark_group, main};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::hint::black_box;

/// Operations per measured benchmark.
const N: usize = 1000;
/// Objects per batch in [`Op::Batch`].
const BATCH: usize = 100;

/// One measured operation.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// malloc + free of this many bytes.
    Pair(usize),
    /// [`BATCH`] mallocs of 64 bytes, then their frees in the same order.
    Batch,
    /// realloc 20 -> 24 bytes and back: the same size class in every allocator measured.
    Realloc,
    /// calloc + free of 64 bytes.
    Calloc,
}

/// Repeats `op` `n` times on `a`.
#[inline(always)]
fn run<A: GlobalAlloc>(a: &A, op: Op, n: usize) {
    let l = |size| Layout::from_size_align(size, 8).unwrap();
    // SAFETY (whole body): every pointer passed to dealloc/realloc is the live result of an
    // allocation on `a` with the layout passed alongside, and each is freed once; a null result
    // stops the benchmark before it is used.
    unsafe {
        match op {
            Op::Pair(size) => {
                for _ in 0..n {
                    let p = check(a.alloc(l(size)));
                    a.dealloc(black_box(p), l(size));
                }
            }
            Op::Batch => {
                let mut ptrs = [std::ptr::null_mut(); BATCH];
                for _ in 0..n / BATCH {
                    for p in ptrs.iter_mut() {
                        *p = check(a.alloc(l(64)));
                    }
                    for &p in black_box(&ptrs) {
                        a.dealloc(p, l(64));
                    }
                }
            }
            Op::Realloc => {
                let mut p = check(a.alloc(l(20)));
                for _ in 0..n / 2 {
                    p = check(a.realloc(black_box(p), l(20), 24));
                    p = check(a.realloc(black_box(p), l(24), 20));
                }
                a.dealloc(p, l(20));
            }
            Op::Calloc => {
                for _ in 0..n {
                    let p = check(a.alloc_zeroed(l(64)));
                    a.dealloc(black_box(p), l(64));
                }
            }
        }
    }
}

fn check(p: *mut u8) -> *mut u8 {
    assert!(!p.is_null(), "out of memory");
    p
}

/// The baseline: hands out one static buffer and frees nothing.
struct Noop;

#[repr(align(4096))]
struct Buffer(UnsafeCell<[u8; 4096]>);
// SAFETY: nobody reads or writes the buffer; only its address is handed out.
unsafe impl Sync for Buffer {}
static BUFFER: Buffer = Buffer(UnsafeCell::new([0; 4096]));

// SAFETY: only the benchmarks above use it, which never touch the memory it returns.
unsafe impl GlobalAlloc for Noop {
    unsafe fn alloc(&self, _: Layout) -> *mut u8 {
        BUFFER.0.get().cast()
    }
    unsafe fn dealloc(&self, _: *mut u8, _: Layout) {}
    unsafe fn alloc_zeroed(&self, _: Layout) -> *mut u8 {
        BUFFER.0.get().cast()
    }
    unsafe fn realloc(&self, p: *mut u8, _: Layout, _: usize) -> *mut u8 {
        p
    }
}

static MIMALLOC: ::mimalloc::MiMalloc = ::mimalloc::MiMalloc;
static JEMALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
static COHORT: ::cohort::Cohort = ::cohort::Cohort::new();

/// A benchmark function (and its warm-up setup) running every [`Op`] on one allocator.
macro_rules! allocator {
    ($name:ident, $warm:ident, $alloc:expr) => {
        fn $warm(op: Op) -> Op {
            run(&$alloc, op, N);
            op
        }

        #[library_benchmark]
        #[benches::op(
                    args = [Op::Pair(16), Op::Pair(64), Op::Pair(256), Op::Pair(1024), Op::Batch,
                            Op::Realloc, Op::Calloc],
                    setup = $warm
                )]
        fn $name(op: Op) {
            run(&$alloc, op, N)
        }
    };
}

allocator!(noop, warm_noop, Noop);
allocator!(system, warm_system, System);
allocator!(mimalloc, warm_mimalloc, MIMALLOC);
allocator!(jemalloc, warm_jemalloc, JEMALLOC);
allocator!(cohort, warm_cohort, COHORT);

library_benchmark_group!(
    name = fast_paths;
    benchmarks = noop, system, mimalloc, jemalloc, cohort
);

main!(library_benchmark_groups = fast_paths);
