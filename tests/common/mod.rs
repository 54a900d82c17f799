//! Helpers of the tests: the allocation patterns and a random size distribution (nothing of
//! those allocates, so the fork children may use them), and the message of a reported
//! misuse. The PRNG comes from the workspace's `test-support` package.
#![allow(dead_code)]

pub use test_support::{mix, Rng};

/// The pattern seed of an allocation of `size` bytes at `p`: two live allocations never share
/// it, so an overlap or a slot handed out twice shows up as a mismatch.
pub fn seed_of(p: *const u8, size: usize) -> u64 {
    mix(p as u64 ^ (size as u64).rotate_left(40))
}

#[inline]
fn word(seed: u64, i: usize) -> u64 {
    seed.wrapping_add((i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93))
}

/// Fills `len` bytes at `p` with the pattern of `seed`: every 8-byte word, then the tail.
///
/// # Safety
/// `p` is valid for writes of `len` bytes.
pub unsafe fn fill(p: *mut u8, seed: u64, len: usize) {
    let words = len / 8;
    for i in 0..words {
        // SAFETY: word i lies in the caller's `len` bytes; unaligned writes need no alignment.
        unsafe { p.add(i * 8).cast::<u64>().write_unaligned(word(seed, i)) };
    }
    let tail = word(seed, words).to_le_bytes();
    for (j, b) in tail.iter().enumerate().take(len % 8) {
        // SAFETY: the tail bytes lie in the caller's `len` bytes.
        unsafe { p.add(words * 8 + j).write(*b) };
    }
}

/// The offset of the first byte of `len` bytes at `p` that differs from the pattern of `seed`.
///
/// # Safety
/// `p` is valid for reads of `len` bytes.
pub unsafe fn mismatch(p: *const u8, seed: u64, len: usize) -> Option<usize> {
    let words = len / 8;
    for i in 0..words {
        // SAFETY: word i lies in the caller's `len` bytes.
        let got = unsafe { p.add(i * 8).cast::<u64>().read_unaligned() };
        if got != word(seed, i) {
            let diff = (got ^ word(seed, i)).to_le_bytes();
            return Some(i * 8 + diff.iter().position(|&b| b != 0).unwrap_or(0));
        }
    }
    let tail = word(seed, words).to_le_bytes();
    for (j, b) in tail.iter().enumerate().take(len % 8) {
        // SAFETY: the tail bytes lie in the caller's `len` bytes.
        if unsafe { p.add(words * 8 + j).read() } != *b {
            return Some(words * 8 + j);
        }
    }
    None
}

/// The offset of the first non-zero byte of `len` bytes at `p`.
///
/// # Safety
/// `p` is valid for reads of `len` bytes.
pub unsafe fn nonzero(p: *const u8, len: usize) -> Option<usize> {
    // SAFETY: the caller's `len` bytes.
    let bytes = unsafe { core::slice::from_raw_parts(p, len) };
    bytes.iter().position(|&b| b != 0)
}

/// A random request size: mostly small, over every size class (1 B to 16 KiB), some tiny
/// (1 and 2 bytes), a few zero-size and a few large (up to `large_max`).
pub fn random_size(rng: &mut Rng, large_max: usize) -> usize {
    match rng.below(1000) {
        0..=4 => 0,
        5..=54 => rng.range(1, 4),
        55..=704 => rng.range(1, 256),
        705..=904 => rng.range(257, 4096),
        905..=989 => rng.range(4097, 16 * 1024),
        _ => rng.range(16 * 1024 + 1, large_max),
    }
}

/// The alignment `malloc(size)` promises: min(next power of two of size, 4096).
pub fn malloc_align(size: usize) -> usize {
    size.max(1).next_power_of_two().min(4096)
}

pub mod batches;
pub mod kernel_view;
pub mod memory;
pub mod objects;
pub mod processes;
pub mod seccomp;
pub mod threads;
#[allow(unused_imports)]
pub use threads::{yield_until, CountOnDrop, StopOnDrop};

/// The panic message of `f`, which must panic: the report of a misuse.
pub fn misuse_message(f: impl FnOnce()) -> String {
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .expect_err("the misuse was not caught");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Sets `a`'s retention delay to 40 ms, then allocates, writes and frees ten medium
/// allocations of 100 000 bytes (above what the heaps' caches keep: freed under the lock,
/// below the bound of free medium memory: none given back yet). Returns the free resident
/// medium bytes after, checked to be about 1 MB.
pub fn free_medium_memory_on_a_short_delay(a: &cohort::Cohort<()>) -> usize {
    a.set_retention(cohort::Retention {
        delay: std::time::Duration::from_millis(40),
        ..cohort::Retention::DEFAULT
    });
    let ps: Vec<*mut u8> = (0..10).map(|_| a.malloc(100_000, ())).collect();
    for &p in &ps {
        // SAFETY: p holds 100 000 bytes; freed once.
        unsafe {
            p.write_bytes(3, 100_000);
            a.free(p, 100_000, ());
        }
    }
    let dirty = a.stats().medium_dirty_bytes;
    assert!(
        dirty >= 900_000,
        "under the bound, nothing given back yet: {dirty}"
    );
    dirty
}
