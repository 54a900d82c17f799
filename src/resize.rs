//! Resizing an allocation (realloc): in place within its size class, in place or remapped
//! for a large allocation, else a new allocation, a copy and a free.
//!
//! Every resize checks the old allocation as a free would before anything changes, so a
//! rejected call (misuse: a panic, or an abort through `GlobalAlloc`) leaves everything as
//! it was, and so does a null return (out of memory).
//!
//! The out-of-line paths take one [`Resize`] record: the old allocation and the new size.

use crate::class::{class_of, CLASSES};
use crate::free::large_match;
use crate::instance::Instance;
use crate::misuse::{report, Problem};
use crate::os;
use crate::per_thread;
use crate::route::Route;
use core::ptr;

/// One resize: the old allocation `p` of `old` bytes aligned to `old_align`, to `new`
/// bytes aligned to `new_align`. (The lifetime class goes beside it, in a register: a record
/// passed out of line lives in memory, and the paths the class reaches from here, the
/// allocation and free slow paths, fold it when it is a constant, as for a global
/// allocator.)
#[derive(Clone, Copy)]
pub(crate) struct Resize {
    pub(crate) p: *mut u8,
    pub(crate) old: usize,
    pub(crate) old_align: usize,
    pub(crate) new: usize,
    pub(crate) new_align: usize,
}

impl Instance {
    /// Resizes `(p, old, old_align)` to `(new, new_align)` in lifetime class `life`; with
    /// `ZERO`, the bytes from `old` to the new allocation's usable size read zero. The old
    /// allocation is checked first (as a free checks it), so a rejected call changes
    /// nothing: misuse panics, or aborts when `ABORT`. A null return (out of memory) leaves
    /// the old allocation as it was. A null `p` is a fresh allocation (C's realloc).
    ///
    /// Memory that may be dirty is zeroed, never fresh mappings: a slot's tail (in place, or
    /// a new slot not fresh from the OS), the tail of a large allocation's last page.
    ///
    /// The parameters are the [`Resize`] record's, which is built only past the inlined
    /// case: a record passed out of line lives in memory, and its stores would cost the
    /// inlined case six instructions.
    ///
    /// # Safety
    /// As [`Cohort::free`](crate::Cohort::free) for `(p, old, life)` with `old_align`,
    /// unless `p` is null or `old` is 0.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn realloc_sized<const ZERO: bool, const ABORT: bool, R: Route>(
        &self,
        route: R,
        p: *mut u8,
        old: usize,
        old_align: usize,
        new: usize,
        new_align: usize,
        life: usize,
    ) -> *mut u8 {
        // Inlined: both sizes in the same class of the exact table (a zero size wraps past
        // it), which stays in place after the old allocation's check.
        if let Some(class) = per_thread::exact_class(old, old_align) {
            if !p.is_null() && per_thread::exact_class(new, new_align) == Some(class) {
                // SAFETY: forwarded contract; both sizes are of `class`.
                return unsafe { self.resize_in_class::<ZERO, ABORT>(p, old, class, life) };
            }
        }
        let r = Resize {
            p,
            old,
            old_align,
            new,
            new_align,
        };
        // SAFETY: forwarded contract.
        unsafe { self.realloc_other::<ZERO, ABORT, R>(route, r, life) }
    }

    /// A resize within size class `class`: in place (every slot of the class fits both
    /// sizes), after the old allocation's check; with `ZERO` the slot's tail is zeroed.
    ///
    /// # Safety
    /// As [`Instance::realloc_sized`] for `(p, old, life)`, with `p` not null; `class` is
    /// the class of `old` (and of the new size).
    #[inline(always)]
    unsafe fn resize_in_class<const ZERO: bool, const ABORT: bool>(
        &self,
        p: *mut u8,
        old: usize,
        class: usize,
        life: usize,
    ) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { self.validated_block::<ABORT>(p, old, class, life) };
        if ZERO {
            // SAFETY: the slot holds `stride` bytes.
            unsafe { zero_range(p, old, CLASSES[class].stride as usize) };
        }
        p
    }

    /// [`Instance::realloc_sized`] past its inlined case.
    ///
    /// # Safety
    /// As [`Instance::realloc_sized`].
    #[inline(never)]
    unsafe fn realloc_other<const ZERO: bool, const ABORT: bool, R: Route>(
        &self,
        route: R,
        r: Resize,
        life: usize,
    ) -> *mut u8 {
        let Resize {
            p,
            old,
            old_align,
            new,
            new_align,
        } = r;
        if old == 0 || p.is_null() {
            return self.alloc_sized::<ZERO, R>(route, new, new_align, life);
        }
        let new_class = if new == 0 {
            None
        } else {
            class_of(new, new_align)
        };
        match class_of(old, old_align) {
            Some(class) => {
                if new_class == Some(class) {
                    // SAFETY: forwarded contract; both sizes are of `class`.
                    return unsafe { self.resize_in_class::<ZERO, ABORT>(p, old, class, life) };
                }
                // SAFETY: forwarded contract; class is the old size's.
                unsafe { self.validated_block::<ABORT>(p, old, class, life) };
            }
            None => {
                // SAFETY: forwarded contract.
                let done = unsafe { self.realloc_large::<ZERO, ABORT>(r, life) };
                if let Some(q) = done {
                    return q;
                }
            }
        }
        if new == 0 {
            // SAFETY: forwarded contract.
            unsafe { self.free_sized::<ABORT, R>(route, p, old, old_align, life) };
            return new_align as *mut u8;
        }
        // A new allocation; with ZERO it reads zero (a large one is a fresh mapping).
        let q = self.alloc_sized::<ZERO, R>(route, new, new_align, life);
        if !q.is_null() {
            // SAFETY: both hold at least min(old, new) bytes and are distinct allocations;
            // the old one was checked above.
            unsafe {
                ptr::copy_nonoverlapping(p, q, old.min(new));
                self.free_sized::<ABORT, R>(route, p, old, old_align, life);
            }
        }
        q
    }

    /// [`Instance::realloc_sized`] of a large allocation: checks it against the large table
    /// (misuse is reported before anything changes), then resizes it in place when the new
    /// size is large and rounds to the same pages, or remaps it. `None` when it must move
    /// (to a small class, a larger alignment, or the OS refused to remap).
    ///
    /// # Safety
    /// As [`Instance::realloc_sized`], with `r.p` not null and `r.old` a large size.
    #[cold]
    #[inline(never)]
    unsafe fn realloc_large<const ZERO: bool, const ABORT: bool>(
        &self,
        r: Resize,
        life: usize,
    ) -> Option<*mut u8> {
        let (p, old, new) = (r.p, r.old, r.new);
        let Some(pool) = self.pool_if_any() else {
            report::<ABORT>(self.misuse(p, old, life, Problem::Foreign));
        };
        let mut large = pool.large.lock();
        let mapped = match large_match(&large, p, old, life) {
            Ok(mapped) => mapped,
            Err(problem) => {
                drop(large);
                report::<ABORT>(self.misuse(p, old, life, problem));
            }
        };
        let stays_large = new != 0 && class_of(new, r.new_align).is_none();
        if !stays_large || r.old_align > os::PAGE || r.new_align > os::PAGE {
            return None;
        }
        let Some(len) = os::page_round(new).filter(|&l| l <= isize::MAX as usize) else {
            return Some(ptr::null_mut());
        };
        let q = if len == mapped {
            p
        } else {
            large.remove(p as usize);
            // SAFETY: a live large allocation of ours (checked above), a mapping of `mapped`
            // bytes.
            let q = unsafe { os::remap(p, mapped, len) };
            let (at, at_len) = if q.is_null() { (p, mapped) } else { (q, len) };
            // Re-inserting never needs to grow: an entry was just removed.
            large.insert(at as usize, at_len, life);
            if q.is_null() {
                return None;
            }
            q
        };
        drop(large);
        if ZERO {
            // Pages past the old mapping are fresh; the old last page's tail may be dirty.
            // SAFETY: q maps `len` bytes.
            unsafe { zero_range(q, old, mapped.min(len)) };
        }
        Some(q)
    }
}

/// Zeroes bytes `[from, to)` of `p` (nothing when `to <= from`).
///
/// # Safety
/// `p` is valid for writes of `to` bytes.
unsafe fn zero_range(p: *mut u8, from: usize, to: usize) {
    if to > from {
        // SAFETY: in bounds (caller).
        unsafe { ptr::write_bytes(p.add(from), 0, to - from) };
    }
}
