//! Instruction counts of the fast paths, under callgrind (iai-callgrind), for every allocator.
//!
//! One binary calls each allocator's `GlobalAlloc` on a static instance (none of them needs to be
//! the `#[global_allocator]` for that): statically dispatched, and inlined where the allocator's
//! code allows (cohort's is Rust and `#[inline]`; the C allocators are calls). `cohort_global`
//! measures cohort once more as the `#[global_allocator]`, through `std::alloc` (this binary
//! is built with LTO, which inlines the `__rust_alloc` shim); `cohort_called` puts cohort
//! behind calls the compiler may not inline, as `__rust_alloc` is in a program built without
//! LTO (a shim function with the fast path inlined in it); `cohort_two` adds a malloc+free
//! pair in a second instance to every allocation, as a thread alternating between a global
//! allocator and a lifetime-class instance runs; `cohort_direct` calls cohort's direct API
//! (`Cohort::alloc`, `Cohort::dealloc`) instead of `GlobalAlloc`; `cohort_shared` runs
//! `GlobalAlloc` on an instance in a region shared with fork children. Each benchmark runs in its own
//! valgrind process: the setup warms the
//! allocator up with the same operation (thread heap, first-touch pages), then the measured
//! function repeats the operation [`N`] times. The `noop` allocator runs the same code with an
//! allocator that does nothing, so `(count - noop count) / N` is the allocator's own cost per
//! operation, loop and call overhead removed. `benches/suite/main.rs` does that arithmetic.
//!
//! snmalloc is not measured here: it cannot start under valgrind (its first allocation
//! reserves address space for a map of every possible chunk, more than valgrind's address
//! space manager gives a process, and it stops with "Failed to initialise snmalloc").

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
    // The size is opaque to the compiler, as it is behind `__rust_alloc` or a C call: an
    // inlined allocator cannot fold its size-class lookup into a constant.
    let l = |size| Layout::from_size_align(black_box(size), 8).unwrap();
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

impl Noop {
    /// The buffer's address, opaque to the compiler like a real allocator's result (so the
    /// benchmark's own null check is not folded away), at no cost: an empty `asm!` that
    /// claims to change the register (`black_box` would add a store and a load).
    #[inline(always)]
    fn buffer() -> *mut u8 {
        let p: *mut u8 = BUFFER.0.get().cast();
        #[allow(unused_mut)]
        let mut addr = p as usize;
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the assembly is empty: it reads and writes nothing.
        unsafe {
            std::arch::asm!("/* {0} */", inout(reg) addr, options(nomem, nostack, preserves_flags))
        };
        #[cfg(not(target_arch = "x86_64"))]
        let addr = black_box(addr);
        p.wrapping_add(addr.wrapping_sub(p as usize))
    }
}

// SAFETY: only the benchmarks above use it, which never touch the memory it returns.
unsafe impl GlobalAlloc for Noop {
    unsafe fn alloc(&self, _: Layout) -> *mut u8 {
        Self::buffer()
    }
    unsafe fn dealloc(&self, _: *mut u8, _: Layout) {}
    unsafe fn alloc_zeroed(&self, _: Layout) -> *mut u8 {
        Self::buffer()
    }
    unsafe fn realloc(&self, p: *mut u8, _: Layout, _: usize) -> *mut u8 {
        p
    }
}

static MIMALLOC: ::mimalloc::MiMalloc = ::mimalloc::MiMalloc;
static JEMALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
static COHORT: ::cohort::Cohort = ::cohort::Cohort::new();

/// cohort is this binary's global allocator too, so that [`RustGlobal`] measures it the way
/// Rust code calls it: through `__rust_alloc`, the shim `alloc::alloc` is routed to.
#[global_allocator]
static GLOBAL: ::cohort::Cohort = ::cohort::Cohort::new();

/// Forwards to `std::alloc`, i.e. to the `#[global_allocator]`.
struct RustGlobal;

// SAFETY: every method forwards its arguments unchanged to the std::alloc function with the
// same contract.
unsafe impl GlobalAlloc for RustGlobal {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller upholds GlobalAlloc::alloc's contract, which is alloc's.
        unsafe { std::alloc::alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: as above, for dealloc.
        unsafe { std::alloc::dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: as above, for alloc_zeroed.
        unsafe { std::alloc::alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above, for realloc.
        unsafe { std::alloc::realloc(p, l, new_size) }
    }
}

/// cohort behind calls that are never inlined: each method is a function of its own with
/// cohort's fast path inlined in it, as `__rust_alloc` is in a program built without LTO.
struct Called;

// SAFETY: every method forwards its arguments unchanged to COHORT's method of the same name.
unsafe impl GlobalAlloc for Called {
    #[inline(never)]
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller upholds GlobalAlloc::alloc's contract.
        unsafe { GlobalAlloc::alloc(&COHORT, l) }
    }
    #[inline(never)]
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: as above, for dealloc.
        unsafe { GlobalAlloc::dealloc(&COHORT, p, l) }
    }
    #[inline(never)]
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: as above, for alloc_zeroed.
        unsafe { GlobalAlloc::alloc_zeroed(&COHORT, l) }
    }
    #[inline(never)]
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above, for realloc.
        unsafe { GlobalAlloc::realloc(&COHORT, p, l, new_size) }
    }
}

/// cohort's direct API (the `Layout` forms `Cohort::alloc`, `dealloc`, `alloc_zeroed`,
/// `realloc` in lifetime class `()`), which a program calls on its own instances: unlike
/// `GlobalAlloc::dealloc` its free accepts a null pointer (and does nothing).
struct Direct;

// SAFETY: every method forwards its arguments unchanged to COHORT's direct-API method of the
// same name, whose contract is GlobalAlloc's with lifetime class `()`.
unsafe impl GlobalAlloc for Direct {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        COHORT.alloc(l, ())
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller upholds dealloc's contract.
        unsafe { COHORT.dealloc(p, l, ()) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        COHORT.alloc_zeroed(l, ())
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above, for realloc.
        unsafe { COHORT.realloc(p, l, new_size, ()) }
    }
}

/// A second cohort instance, for [`Alternating`].
static OTHER: ::cohort::Cohort = ::cohort::Cohort::new();

/// cohort with a thread alternating between two instances, as a program using cohort as its
/// global allocator and a lifetime-class instance beside it does: every allocation from
/// COHORT is followed by a malloc+free pair in OTHER, so each operation is two pairs, and
/// the thread's current instance changes twice per operation.
struct Alternating;

// SAFETY: allocations and frees go to COHORT unchanged; the extra pair in OTHER frees what
// it allocates.
unsafe impl GlobalAlloc for Alternating {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller upholds alloc's contract; q is freed with its own layout.
        unsafe {
            let p = GlobalAlloc::alloc(&COHORT, l);
            let q = check(GlobalAlloc::alloc(&OTHER, l));
            GlobalAlloc::dealloc(&OTHER, q, l);
            p
        }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: as above, for dealloc.
        unsafe { GlobalAlloc::dealloc(&COHORT, p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: as in alloc.
        unsafe {
            let p = GlobalAlloc::alloc_zeroed(&COHORT, l);
            let q = check(GlobalAlloc::alloc(&OTHER, l));
            GlobalAlloc::dealloc(&OTHER, q, l);
            p
        }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above, for realloc.
        unsafe { GlobalAlloc::realloc(&COHORT, p, l, new_size) }
    }
}

/// An instance in a region shared with fork children (`Cohort::shared_anonymous`): the fast
/// paths of a shared region, beside a private instance's ([`COHORT`]). Built on first use,
/// in the setup's warm-up; the measured loop gets a reference to it once, as a program
/// holding a shared instance does.
static SHARED: std::sync::OnceLock<::cohort::Cohort> = std::sync::OnceLock::new();

/// The [`SHARED`] instance.
fn shared() -> &'static ::cohort::Cohort {
    SHARED.get_or_init(|| {
        ::cohort::Cohort::shared_anonymous(64 << 20).expect("a shared region of 64 MiB")
    })
}

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
allocator!(cohort_global, warm_cohort_global, RustGlobal);
allocator!(cohort_called, warm_cohort_called, Called);
allocator!(cohort_two, warm_cohort_two, Alternating);
allocator!(cohort_direct, warm_cohort_direct, Direct);
allocator!(cohort_shared, warm_cohort_shared, *shared());

library_benchmark_group!(
    name = fast_paths;
    benchmarks = noop, system, mimalloc, jemalloc, cohort, cohort_global, cohort_called,
        cohort_two, cohort_direct, cohort_shared
);

main!(library_benchmark_groups = fast_paths);
