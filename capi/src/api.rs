//! The cohort API in C: one process-wide allocator ([`COHORT`]) whose lifetime classes are
//! the numbers 0 to [`COHORT_CLASSES`]` - 1`.
//!
//! Every function may be called from any thread at any time, unless its contract says
//! otherwise. Misuse that cohort detects (a free whose size or class does not match its
//! block, a double free of the slot freed last; everything in a checked build) prints a
//! message naming the pointer, size and class on standard error and aborts the process: C
//! callers cannot unwind. A class number out of range is misuse too where a pointer comes
//! back (frees, resizes, release), and gives null with `errno = EINVAL` where memory is
//! asked for.

use crate::{misuse_abort, set_errno, CClass, COHORT, COHORT_CLASSES};
use core::ffi::{c_char, c_int, c_void};
use core::fmt::Write;
use core::ptr;

/// The class `cls` for a call that allocates; sets `errno = EINVAL` when out of range.
fn class_to_allocate(cls: u32) -> Option<CClass> {
    let c = CClass::new(cls);
    if c.is_none() {
        set_errno(libc::EINVAL);
    }
    c
}

/// The class `cls` for a call that frees: out of range is misuse.
fn class_to_free(what: &str, p: *mut c_void, cls: u32) -> CClass {
    CClass::new(cls).unwrap_or_else(|| {
        misuse_abort(format_args!(
            "{what}({p:p}): lifetime class {cls} is not below COHORT_CLASSES ({COHORT_CLASSES})"
        ))
    })
}

/// Allocates `size` bytes in lifetime class `cls`.
///
/// Returns memory aligned to the next power of two of `size` (at most 4096), or null when
/// memory is exhausted (`errno = ENOMEM`) or `cls >= COHORT_CLASSES` (`errno = EINVAL`). A
/// `size` of 0 is taken as 1 here and in every function below (a unique allocation, freed
/// with size 0 or 1). Free it with `cohort_free(p, size, cls)`, the same size (or any size up to
/// its usable size) and class; `free(p)` also works.
/// Thread safety: any thread; lock-free on the fast path.
#[no_mangle]
pub extern "C" fn cohort_malloc(size: usize, cls: u32) -> *mut c_void {
    allocate_in::<false>(size, cls)
}

/// As `cohort_malloc`, with the memory zeroed (memory fresh from the OS is not written).
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn cohort_calloc(size: usize, cls: u32) -> *mut c_void {
    allocate_in::<true>(size, cls)
}

/// `cohort_malloc`, or with `ZERO` `cohort_calloc`: null with `errno` set on failure.
#[inline(always)]
fn allocate_in<const ZERO: bool>(size: usize, cls: u32) -> *mut c_void {
    let Some(c) = class_to_allocate(cls) else {
        return ptr::null_mut();
    };
    let p = if ZERO {
        COHORT.calloc(size.max(1), c)
    } else {
        COHORT.malloc(size.max(1), c)
    };
    if p.is_null() {
        set_errno(libc::ENOMEM);
    }
    p.cast()
}

/// As `cohort_malloc`, and stores the usable size in `*usable` (when `usable` is not null):
/// any size from `size` up to it may be passed to `cohort_free`, and the bytes up to it may
/// be used. Null (with `*usable = 0`) on failure, as `cohort_malloc`.
/// Thread safety: any thread.
///
/// # Safety
/// `usable` is null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cohort_malloc_at_least(
    size: usize,
    cls: u32,
    usable: *mut usize,
) -> *mut c_void {
    let (p, n) = match class_to_allocate(cls) {
        Some(c) => COHORT.malloc_at_least(size.max(1), c),
        None => (ptr::null_mut(), 0),
    };
    if p.is_null() && cls < COHORT_CLASSES {
        set_errno(libc::ENOMEM);
    }
    if !usable.is_null() {
        // SAFETY: the caller's pointer, valid for a write.
        unsafe { *usable = n };
    }
    p.cast()
}

/// Frees `p`, allocated by `cohort_malloc`, `cohort_calloc`, `cohort_malloc_at_least`,
/// `cohort_remalloc` or `cohort_recalloc` with lifetime class `cls` and a size whose usable
/// size `size` does not exceed (the size asked for is always right). Null does nothing.
///
/// The sized fast path: no look-up of the size. A size or class that does not match the
/// block, or `cls >= COHORT_CLASSES`, is reported on standard error and aborts.
/// Thread safety: any thread, including one that did not allocate `p` (lock-free).
///
/// # Safety
/// `p` is null or a live allocation as above, not used after the call.
#[no_mangle]
pub unsafe extern "C" fn cohort_free(p: *mut c_void, size: usize, cls: u32) {
    let c = class_to_free("cohort_free", p, cls);
    // SAFETY: forwarded contract.
    unsafe { COHORT.free(p.cast(), size.max(1), c) }
}

/// Resizes `p` (from `old_size` to `new_size` bytes, in class `cls`): in place when the
/// size class stays, else moved with its contents (`min(old_size, new_size)` bytes). Null
/// `p` (or `old_size` 0) allocates. Returns null when memory is exhausted (`errno =
/// ENOMEM`), `p` untouched. The old allocation is checked as `cohort_free` checks it.
/// Thread safety: any thread.
///
/// # Safety
/// As `cohort_free` for `(p, old_size, cls)`.
#[no_mangle]
pub unsafe extern "C" fn cohort_remalloc(
    p: *mut c_void,
    old_size: usize,
    new_size: usize,
    cls: u32,
) -> *mut c_void {
    // SAFETY: forwarded contract.
    unsafe { resize_in::<false>(p, old_size, new_size, cls) }
}

/// As `cohort_remalloc`, and the bytes past `old_size` read zero when it grows.
/// Thread safety: any thread.
///
/// # Safety
/// As `cohort_remalloc`.
#[no_mangle]
pub unsafe extern "C" fn cohort_recalloc(
    p: *mut c_void,
    old_size: usize,
    new_size: usize,
    cls: u32,
) -> *mut c_void {
    // SAFETY: forwarded contract.
    unsafe { resize_in::<true>(p, old_size, new_size, cls) }
}

/// `cohort_remalloc`, or with `ZERO` `cohort_recalloc`: null with `errno` set on failure.
///
/// # Safety
/// As `cohort_remalloc`.
unsafe fn resize_in<const ZERO: bool>(
    p: *mut c_void,
    old_size: usize,
    new_size: usize,
    cls: u32,
) -> *mut c_void {
    let what = if ZERO {
        "cohort_recalloc"
    } else {
        "cohort_remalloc"
    };
    let c = class_to_free(what, p, cls);
    // SAFETY: forwarded contract.
    let q = unsafe {
        if ZERO {
            COHORT.recalloc(p.cast(), old_size.max(1), new_size.max(1), c)
        } else {
            COHORT.remalloc(p.cast(), old_size.max(1), new_size.max(1), c)
        }
    };
    if q.is_null() {
        set_errno(libc::ENOMEM);
    }
    q.cast()
}

/// What `cohort_release_class` did.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct cohort_released {
    /// Blocks emptied.
    pub blocks: usize,
    /// Live allocations freed with them.
    pub slots: usize,
    /// Blocks of the class left alone: other live threads' allocations.
    pub left_to_other_threads: usize,
    /// Large allocations of the class unmapped.
    pub large: usize,
}

/// Frees at once every allocation of lifetime class `cls` that is the calling thread's or
/// an exited thread's, and every large allocation of the class (any thread's); other live
/// threads' blocks are counted in `left_to_other_threads`, untouched. Time proportional to
/// blocks, not allocations. The drop-in malloc's allocations are never released (they are in
/// a class of their own). `cls >= COHORT_CLASSES` aborts.
///
/// # Safety
/// No allocation it frees is used or freed afterwards, and no thread allocates or frees in
/// class `cls` while it runs.
#[no_mangle]
pub unsafe extern "C" fn cohort_release_class(cls: u32) -> cohort_released {
    let c = class_to_free("cohort_release_class", ptr::null_mut(), cls);
    // SAFETY: forwarded contract.
    let r = unsafe { COHORT.release_class(c) };
    cohort_released {
        blocks: r.blocks,
        slots: r.slots,
        left_to_other_threads: r.left_to_other_threads,
        large: r.large,
    }
}

/// What `cohort_compact` did.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct cohort_compacted {
    /// Empty blocks given back to the OS.
    pub blocks: usize,
    /// Resident bytes of the allocator before.
    pub resident_before: usize,
    /// Resident bytes after.
    pub resident_after: usize,
}

/// Gives every empty block the calling thread and the shared pool hold back to the OS
/// (other live threads' empty blocks are theirs: each may call it).
/// Thread safety: any thread, while others allocate.
#[no_mangle]
pub extern "C" fn cohort_compact() -> cohort_compacted {
    let c = COHORT.compact();
    cohort_compacted {
        blocks: c.blocks,
        resident_before: c.resident_before,
        resident_after: c.resident_after,
    }
}

/// True when no allocation is live (of any class, the drop-in malloc's included): a leak
/// check. Thread safety: any thread; a snapshot while others allocate.
#[no_mangle]
pub extern "C" fn cohort_is_empty() -> bool {
    COHORT.is_empty()
}

/// Checks every block and list of the allocator. Returns 0 when all is consistent; else -1,
/// with the problem written to `message` (NUL-terminated, truncated to `len` bytes) when
/// `message` is not null and `len > 0`.
///
/// # Safety
/// No other thread allocates or frees meanwhile; `message` is null or valid for `len`
/// bytes.
#[no_mangle]
pub unsafe extern "C" fn cohort_verify(message: *mut c_char, len: usize) -> c_int {
    // SAFETY: forwarded contract: nobody else uses the allocator meanwhile.
    match unsafe { COHORT.verify() } {
        Ok(_) => 0,
        Err(e) => {
            if !message.is_null() && len > 0 {
                let mut text = crate::StackText::new();
                let _ = write!(text, "{e:?}");
                let n = text.bytes().len().min(len - 1);
                // SAFETY: the caller's buffer holds len > n bytes.
                unsafe {
                    ptr::copy_nonoverlapping(text.bytes().as_ptr(), message.cast(), n);
                    *message.add(n) = 0;
                }
            }
            -1
        }
    }
}

/// The allocator's figures, from `cohort_get_stats`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct cohort_stats {
    /// Blocks (2 MiB each) holding small allocations.
    pub blocks: usize,
    /// Live small allocations.
    pub live: usize,
    /// Bytes of the live small allocations (their slots).
    pub live_bytes: usize,
    /// Bytes of all slots of those blocks.
    pub capacity_bytes: usize,
    /// Resident bytes of those blocks.
    pub resident_bytes: usize,
    /// Live large allocations (above 1 MiB, each its own mapping).
    pub large_allocations: usize,
    /// Their mapped bytes.
    pub large_bytes: usize,
    /// Empty blocks kept for reuse.
    pub retained_empty_blocks: usize,
    /// Times the shared pool's lock was taken (slow paths only).
    pub lock_acquisitions: u64,
    /// Live medium allocations (above 16 KiB up to 1 MiB: runs of 2 KiB granules in
    /// medium blocks).
    pub medium_allocations: usize,
    /// Their usable bytes.
    pub medium_bytes: usize,
    /// Medium blocks (2 MiB each) in use.
    pub medium_blocks: usize,
}

/// The allocator's figures, gathered by walking its blocks (time proportional to blocks).
/// Thread safety: any thread; a snapshot while others allocate.
#[no_mangle]
pub extern "C" fn cohort_get_stats() -> cohort_stats {
    let s = COHORT.stats();
    cohort_stats {
        blocks: s.small.blocks,
        live: s.small.live,
        live_bytes: s.small.live_bytes,
        capacity_bytes: s.small.capacity_bytes,
        resident_bytes: s.small.resident_bytes,
        large_allocations: s.large_allocations,
        large_bytes: s.large_bytes,
        retained_empty_blocks: s.retained_empty_blocks,
        lock_acquisitions: s.lock_acquisitions,
        medium_allocations: s.medium_allocations,
        medium_bytes: s.medium_bytes,
        medium_blocks: s.medium_blocks,
    }
}

/// Writes a report of the allocator's figures to file descriptor `fd` (2 for standard
/// error): the totals, then one line per (size class, lifetime class) with blocks. Returns 0,
/// or -1 when a write fails (`errno` set by it).
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn cohort_stats_print(fd: c_int) -> c_int {
    let s = COHORT.stats();
    let mut out = FdWriter { fd, failed: false };
    let t = &s.small;
    let _ = writeln!(
        out,
        "cohort: {} blocks, {} live allocations ({} bytes of {} in slots), {} bytes resident",
        t.blocks, t.live, t.live_bytes, t.capacity_bytes, t.resident_bytes
    );
    let _ = writeln!(
        out,
        "cohort: {} medium allocations ({} bytes) in {} blocks",
        s.medium_allocations, s.medium_bytes, s.medium_blocks
    );
    let _ = writeln!(
        out,
        "cohort: {} large allocations ({} bytes), {} empty blocks kept, {} pool lock acquisitions",
        s.large_allocations, s.large_bytes, s.retained_empty_blocks, s.lock_acquisitions
    );
    let _ = writeln!(
        out,
        "{:>8} {:>6} {:>7} {:>9} {:>9}",
        "stride", "class", "blocks", "live", "capacity"
    );
    for h in &s.heads {
        let _ = writeln!(
            out,
            "{:>8} {:>6} {:>7} {:>9} {:>9}",
            h.stride,
            if h.life_name.is_empty() {
                "?"
            } else {
                h.life_name
            },
            h.blocks,
            h.live,
            h.capacity
        );
    }
    if out.failed {
        -1
    } else {
        0
    }
}

/// Writes formatted text to a file descriptor without buffering.
struct FdWriter {
    fd: c_int,
    failed: bool,
}

impl Write for FdWriter {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let mut rest = s.as_bytes();
        while !rest.is_empty() {
            // SAFETY: a valid buffer.
            let n = unsafe { libc::write(self.fd, rest.as_ptr().cast(), rest.len()) };
            if n <= 0 {
                self.failed = true;
                return Err(core::fmt::Error);
            }
            rest = &rest[n as usize..];
        }
        Ok(())
    }
}
