//! Tiny blocks: slots of 1 and 2 bytes, too small for a 32-bit link.
//!
//! The slots of a tiny block are cut into **runs** of `run_len = 2^(8 * stride) - 1` slots
//! (255 or 65 535). A free slot links to the next free slot *of its run* by its index in the
//! run, in `stride` bytes; the all-ones link ends a list. The link to each run's first free
//! slot (`stride` bytes) sits in the run table right after the header. So a 2 MiB block of
//! 1-byte slots spends 8 KiB on the table (ratio 1.004, where the ratio contract allows
//! 1.024) and a block of 2-byte slots 32 bytes (ratio 1.00005, against 1.00023).
//!
//! Invariants: slot `i` belongs to run `i / run_len`; a run's list holds only its own free
//! slots; `free` (the run hint) `<=` the lowest run with a non-empty list; `used` counts live slots.
//! Tiny blocks are owned by the pool (`owner == 0`) and touched only under its lock: 1- and
//! 2-byte allocations are rare enough (a Rust `Vec` never asks for fewer than 8 bytes) that
//! they stay off the lock-free fast paths. Each is held by the heap that allocates from it
//! (`Header::holder`, the heap's tiny heads: see [`crate::heap`]), so that releasing a
//! lifetime class frees only the calling thread's (and exited threads') tiny allocations.

use crate::block::Header;
use crate::class::Class;
use crate::sync::Ordering;

#[inline]
fn table(h: *const Header) -> *mut u8 {
    (h as *mut u8).wrapping_add(crate::class::HEADER_SIZE)
}

/// Reads a link of `stride` bytes at `p`.
///
/// # Safety
/// `p` is inside the block and aligned to `stride`.
#[inline]
unsafe fn read_link(p: *const u8, stride: u32) -> u32 {
    // SAFETY: the caller guarantees p is valid and aligned for `stride` bytes.
    unsafe {
        if stride == 1 {
            p.read() as u32
        } else {
            p.cast::<u16>().read() as u32
        }
    }
}

/// Writes a link of `stride` bytes at `p`.
///
/// # Safety
/// As [`read_link`].
#[inline]
unsafe fn write_link(p: *mut u8, stride: u32, v: u32) {
    // SAFETY: as in read_link.
    unsafe {
        if stride == 1 {
            p.write(v as u8)
        } else {
            p.cast::<u16>().write(v as u16)
        }
    }
}

/// Writes empty run lists.
///
/// # Safety
/// `h` is a block being initialised for tiny class `c`.
pub(crate) unsafe fn init_runs(h: *mut Header, c: &Class) {
    // SAFETY: the run table lies between the header and slot 0 of the caller's block.
    unsafe { core::ptr::write_bytes(table(h), 0xff, (c.runs * c.stride) as usize) };
}

/// Takes a slot; returns its offset and whether it reads zero. Freed slots first, then
/// never-used ones: a block whose slots are freed as fast as they are taken stays within a
/// few pages.
///
/// # Safety
/// `h` is a tiny block, and the caller holds the lock that owns it.
pub(crate) unsafe fn pop(h: &Header) -> Option<(u32, bool)> {
    let c = h.geometry();
    let bump = h.bump.load(Ordering::Relaxed);
    // Runs past the one holding `bump` were never handed out: their lists are empty.
    let last_run = ((bump - c.first) / c.stride / c.run_len).min(c.runs - 1);
    let mut run = h.free.load(Ordering::Relaxed);
    while run <= last_run {
        let first_at = table(h).wrapping_add((run * c.stride) as usize);
        // SAFETY: run < runs: the run's link lies in the run table.
        let first = unsafe { read_link(first_at, c.stride) };
        if first != c.run_len {
            let slot = c.first + (run * c.run_len + first) * c.stride;
            let slot_at = h.base().wrapping_add(slot as usize);
            // SAFETY: `first` indexes a free slot of this run; its bytes hold the next link,
            // and the run's link is in the table.
            unsafe { write_link(first_at, c.stride, read_link(slot_at, c.stride)) };
            h.free.store(run, Ordering::Relaxed);
            h.count_add(1);
            return Some((slot, false));
        }
        run += 1;
    }
    // Every run up to `last_run` is empty, and the ones above it too.
    h.free.store(run, Ordering::Relaxed);
    if bump >= c.limit {
        return None;
    }
    h.bump.store(bump + c.stride, Ordering::Relaxed);
    h.count_add(1);
    Some((bump, h.is_fresh()))
}

/// Frees the slot at `off`. Returns `used` before.
///
/// # Safety
/// `h` is a tiny block, the caller holds the lock that owns it, and `off` is a live slot.
pub(crate) unsafe fn push(h: &Header, off: u32) -> u32 {
    let c = h.geometry();
    let index = (off - c.first) / c.stride;
    let run = index / c.run_len;
    let first_at = table(h).wrapping_add((run * c.stride) as usize);
    // SAFETY: the slot is live (caller) so ours to overwrite; the run's link is in the
    // table.
    unsafe {
        write_link(
            h.base().add(off as usize),
            c.stride,
            read_link(first_at, c.stride),
        );
        write_link(first_at, c.stride, index % c.run_len);
    }
    if run < h.free.load(Ordering::Relaxed) {
        h.free.store(run, Ordering::Relaxed);
    }
    let used = h.used();
    h.count_add(u32::MAX);
    used
}

/// True when the slot at `off` is the first of its run's free list (the slot of its run
/// freed last): freeing it again is a double free.
///
/// # Safety
/// `h` is a tiny block, the caller holds the lock that owns it, and `off` is a slot offset
/// of the block.
pub(crate) unsafe fn is_first_free(h: &Header, off: u32) -> bool {
    let c = h.geometry();
    let index = (off - c.first) / c.stride;
    let first_at = table(h).wrapping_add((index / c.run_len * c.stride) as usize);
    // SAFETY: the run's link is in the run table (index is a slot of the block).
    unsafe { read_link(first_at, c.stride) == index % c.run_len }
}

/// Repairs a tiny block after the holder of the lock that owns it died, possibly in the
/// middle of a [`pop`] or [`push`]: `used` is recounted from the run lists (the slots
/// handed out minus the free-listed ones), and the run hint goes back to run 0. When a run
/// list is broken (a cycle, or a link out of its run), every run list is emptied: their
/// free slots are lost (counted as used), never handed out twice.
///
/// # Safety
/// As [`push`].
pub(crate) unsafe fn recount(h: &Header) {
    let c = h.geometry();
    let handed_out = (h.bump.load(Ordering::Relaxed) - c.first) / c.stride;
    let mut free = 0;
    // SAFETY: the caller's guarantee.
    let whole = unsafe {
        for_each_free(h, c, |_| {
            free += 1;
            free <= handed_out
        })
    };
    if !whole || free > handed_out {
        for run in 0..c.runs {
            // SAFETY: the run's link is in the table.
            unsafe {
                write_link(
                    table(h).wrapping_add((run * c.stride) as usize),
                    c.stride,
                    c.run_len,
                )
            };
        }
        free = 0;
    }
    h.free.store(0, Ordering::Relaxed);
    h.set_used(handed_out - free);
}

/// Walks every run list of `h`, a block of tiny class `c`, calling `f(offset)` for each
/// free-listed slot; stops and returns false if a list is longer than its run (a cycle) or
/// links outside its run.
///
/// # Safety
/// As [`push`].
pub(crate) unsafe fn for_each_free(h: &Header, c: &Class, mut f: impl FnMut(u32) -> bool) -> bool {
    for run in 0..c.runs {
        let first_at = table(h).wrapping_add((run * c.stride) as usize);
        // SAFETY: the run's link is in the table.
        let mut at = unsafe { read_link(first_at, c.stride) };
        let mut steps = 0;
        while at != c.run_len {
            let index = run * c.run_len + at;
            if at > c.run_len || index >= c.capacity || steps > c.run_len {
                return false;
            }
            let slot = c.first + index * c.stride;
            if !f(slot) {
                return false;
            }
            // SAFETY: slot is a slot of this block (checked above).
            at = unsafe { read_link(h.base().add(slot as usize), c.stride) };
            steps += 1;
        }
    }
    true
}
