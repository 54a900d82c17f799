//! The 16-byte malloc+free pair, counted the way a program pays for it: cohort is the
//! `#[global_allocator]` (in `main.rs`), the program is built without LTO (this package's
//! release profile), and the loop calls `std::alloc::alloc` and `dealloc`, as `Box` does.
//! `.ci/budget.sh` runs the binary under callgrind, which counts only inside the measured
//! function (`--toggle-collect`), so process start-up and the warm-up (the thread's heap,
//! the block's first pages) are left out.
//!
//! ```text
//! cohort-budget called N    # warm up, then N pairs in `budget_measure_called`
//! cohort-budget inline N    # the same loop in the crate that declares the allocator
//! cohort-budget noop N      # the same loop on an allocator that does nothing
//! cohort-budget remote N    # N frees of another thread's 16-byte objects (not checked)
//! ```
//!
//! - **called** (the budgeted figure): the loop is in this library, a crate other than the
//!   one declaring the `#[global_allocator]`, as in any dependency of a program, and in the
//!   standard library: every allocation is a call to the `__rust_alloc` and
//!   `__rust_dealloc` functions, with cohort's fast paths inlined in them.
//! - **inline**: the loop is in the binary's crate, which defines those functions; with one
//!   codegen unit the compiler may inline them into the loop, as LTO does everywhere.
//! - **noop**: the same code with a do-nothing allocator inlined into it (an opaque
//!   pointer, nothing freed), so `(count - count(noop)) / N` is what a pair costs the
//!   program: the calls, the shim and cohort's fast paths, net of the loop.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::cell::UnsafeCell;
use std::hint::black_box;

/// The layout of the measured pair: 16 bytes, as a `Box<[u64; 2]>` asks for.
pub const LAYOUT: Layout = match Layout::from_size_align(16, 8) {
    Ok(l) => l,
    Err(_) => panic!("a valid layout"),
};

/// An allocator's two calls, for [`pairs`].
pub trait Pair {
    /// # Safety
    /// As `std::alloc::alloc`.
    unsafe fn alloc(l: Layout) -> *mut u8;
    /// # Safety
    /// As `std::alloc::dealloc`.
    unsafe fn dealloc(p: *mut u8, l: Layout);
}

/// The global allocator, as `Box` calls it.
pub struct Global;

impl Pair for Global {
    #[inline(always)]
    unsafe fn alloc(l: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { alloc(l) }
    }
    #[inline(always)]
    unsafe fn dealloc(p: *mut u8, l: Layout) {
        // SAFETY: forwarded contract.
        unsafe { dealloc(p, l) }
    }
}

/// Does nothing: hands out the address of one static buffer, opaque to the compiler (so
/// the loop's null check stays), and frees nothing.
pub struct Noop;

#[repr(align(64))]
struct Buffer(UnsafeCell<[u8; 64]>);
// SAFETY: nobody reads or writes the buffer; only its address is handed out.
unsafe impl Sync for Buffer {}
static BUFFER: Buffer = Buffer(UnsafeCell::new([0; 64]));

impl Pair for Noop {
    #[inline(always)]
    unsafe fn alloc(_: Layout) -> *mut u8 {
        let p: *mut u8 = BUFFER.0.get().cast();
        #[allow(unused_mut)]
        let mut addr = p as usize;
        // An empty `asm!` that claims to change the register: one move at most, where
        // `black_box` would add a store and a load.
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the assembly is empty: it reads and writes nothing.
        unsafe {
            std::arch::asm!("/* {0} */", inout(reg) addr, options(nomem, nostack, preserves_flags))
        };
        #[cfg(not(target_arch = "x86_64"))]
        let addr = black_box(addr);
        p.wrapping_add(addr.wrapping_sub(p as usize))
    }
    #[inline(always)]
    unsafe fn dealloc(_: *mut u8, _: Layout) {}
}

/// `n` times: allocate 16 bytes (a null result is `Box`'s allocation error), hand the
/// pointer to an opaque use, free it.
#[inline(always)]
pub fn pairs<P: Pair>(n: usize) {
    for _ in 0..n {
        // SAFETY: the pointer freed is the one just allocated with the same layout, once.
        unsafe {
            let p = P::alloc(LAYOUT);
            if p.is_null() {
                handle_alloc_error(LAYOUT);
            }
            P::dealloc(black_box(p), LAYOUT);
        }
    }
}

/// The measured loop through the allocator functions (callgrind counts inside it only).
#[no_mangle]
#[inline(never)]
pub extern "C" fn budget_measure_called(n: usize) {
    pairs::<Global>(n)
}

/// The measured loop on the do-nothing allocator.
#[no_mangle]
#[inline(never)]
pub extern "C" fn budget_measure_noop(n: usize) {
    pairs::<Noop>(n)
}

/// Frees the objects of `ptrs`, each allocated with [`LAYOUT`] by another thread that is
/// still running: remote frees (callgrind counts inside this function only).
///
/// # Safety
/// Every pointer is a live allocation of [`LAYOUT`] of the global allocator, freed once.
#[no_mangle]
#[inline(never)]
pub unsafe fn budget_measure_remote(ptrs: &[*mut u8]) {
    for &p in ptrs {
        // SAFETY: the caller's.
        unsafe { dealloc(black_box(p), LAYOUT) };
    }
}

/// The warm-up, outside the measured functions: the thread's heap and its current block.
#[inline(never)]
pub fn warm_up() {
    pairs::<Global>(black_box(1000))
}
