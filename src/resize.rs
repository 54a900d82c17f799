//! Resizing an allocation (realloc): in place within its size class, in place or remapped
//! for a large allocation ([`large`]), else a new allocation, a copy and a free.
//!
//! Every resize checks the old allocation as a free would before anything changes, so a
//! rejected call (misuse: a panic, or an abort through `GlobalAlloc`) leaves everything as
//! it was, and so does a null return (out of memory).
//!
//! Every path takes the same parameters: the old allocation `p`, its [`SizeAlign`], the
//! new [`SizeAlign`] and the lifetime class. (A size and an alignment make two words, which
//! travel in registers: a larger record passed out of line would live in memory, its stores
//! would cost the inlined case, and its lifetime class would no longer fold to a constant
//! on the paths it reaches, as it does for a global allocator.)

mod large;

use crate::class::{class_of, malloc_align, medium_granules, CLASSES, GRANULE};
use crate::free::Named;
use crate::instance::Instance;
use crate::medium::SameRun;
use crate::medium_cache::{LONG_CHANGES, STARTS_MAX};
use crate::misuse::{report, Problem};
use crate::per_thread;
use crate::route::Route;
use core::alloc::Layout;
use core::cell::Cell;
use core::ptr;
use core::sync::atomic::Ordering;

/// One side of a resize: a size and its alignment (a `Layout` without its checks: the new
/// size asked for may be any `usize`).
#[derive(Clone, Copy)]
pub(crate) struct SizeAlign {
    pub(crate) size: usize,
    pub(crate) align: usize,
}

impl SizeAlign {
    /// A layout's size and alignment.
    #[inline(always)]
    pub(crate) fn of(layout: Layout) -> SizeAlign {
        SizeAlign {
            size: layout.size(),
            align: layout.align(),
        }
    }

    /// `layout`, and `new_size` with the same alignment (the `Layout` forms of realloc).
    #[inline(always)]
    pub(crate) fn layout_to(layout: Layout, new_size: usize) -> (SizeAlign, SizeAlign) {
        let new = SizeAlign {
            size: new_size,
            align: layout.align(),
        };
        (SizeAlign::of(layout), new)
    }

    /// A malloc-family size, with the alignment the family gives it ([`malloc_align`]).
    #[inline(always)]
    pub(crate) fn malloc(size: usize) -> SizeAlign {
        SizeAlign {
            size,
            align: malloc_align(size),
        }
    }
}

impl Instance {
    /// Resizes allocation `p` from `old` to `new` in lifetime class `life`; with `ZERO`,
    /// the bytes from `old.size` to the new allocation's usable size read zero. The old
    /// allocation is checked first (as a free checks it), so a rejected call changes
    /// nothing: misuse panics, or aborts when `ABORT`. A null return (out of memory) leaves
    /// the old allocation as it was. A null `p` is a fresh allocation (C's realloc).
    ///
    /// Memory that may be dirty is zeroed, never fresh mappings: a slot's tail (in place, or
    /// a new slot not fresh from the OS), the tail of a large allocation's last page.
    ///
    /// # Safety
    /// As [`Cohort::free`](crate::Cohort::free) for `(p, old.size, life)` with `old.align`,
    /// unless `p` is null or `old.size` is 0 (then `p` is null or the pointer of a zero-size
    /// request; anything else of this allocator's is reported).
    #[inline(always)]
    #[track_caller]
    pub(crate) unsafe fn realloc_sized<const ZERO: bool, const ABORT: bool, R: Route>(
        &self,
        route: R,
        p: *mut u8,
        old: SizeAlign,
        new: SizeAlign,
        life: usize,
    ) -> *mut u8 {
        // Inlined: both sizes in the same class of the exact table (a zero size wraps past
        // it), which stays in place after the old allocation's check.
        if let Some(class) = per_thread::exact_class(old.size, old.align) {
            if !p.is_null() && per_thread::exact_class(new.size, new.align) == Some(class) {
                // SAFETY: forwarded contract; both sizes are of `class`.
                return unsafe { self.resize_in_class::<ZERO, ABORT, R>(route, p, old.size, class, life) };
            }
        }
        // SAFETY: forwarded contract.
        unsafe { self.realloc_other::<ZERO, ABORT, R>(route, p, old, new, life) }
    }

    /// A resize within size class `class`: in place (every slot of the class fits both
    /// sizes), after the old allocation's check; with `ZERO` the slot's tail is zeroed.
    ///
    /// # Safety
    /// As [`Instance::realloc_sized`] for `(p, old, life)`, with `p` not null; `class` is
    /// the class of `old` (and of the new size).
    #[inline(always)]
    #[track_caller]
    unsafe fn resize_in_class<const ZERO: bool, const ABORT: bool, R: Route>(
        &self,
        route: R,
        p: *mut u8,
        old: usize,
        class: usize,
        life: usize,
    ) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { self.check_kept_slot::<ABORT, R>(route, p, old, class, life) };
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
    #[track_caller]
    unsafe fn realloc_other<const ZERO: bool, const ABORT: bool, R: Route>(
        &self,
        route: R,
        p: *mut u8,
        old: SizeAlign,
        new: SizeAlign,
        life: usize,
    ) -> *mut u8 {
        let (old_size, old_align) = (old.size, old.align);
        let (new_size, new_align) = (new.size, new.align);
        if old_size == 0 || p.is_null() {
            // Only a zero-size request's pointer (or null) has nothing to free.
            if let Err(m) = self.check_zero_size(p, life) {
                report::<ABORT>(m);
            }
            return self.alloc_sized::<ZERO, R>(route, new_size, new_align, life);
        }
        let new_class = if new_size == 0 {
            None
        } else {
            class_of(new_size, new_align)
        };
        match class_of(old_size, old_align) {
            Some(class) if new_class == Some(class) => {
                // SAFETY: forwarded contract; both sizes are of `class`.
                return unsafe { self.resize_in_class::<ZERO, ABORT, R>(route, p, old_size, class, life) };
            }
            Some(class) if !self.bounds.contains(p) && self.is_fallback_mapping(p) => {
                // A small request a full region served from a mapping of its own
                // (`RegionOptions::fallback`): resized as the large mapping it is, checked
                // against the stride its mapping was made for.
                let stride = SizeAlign {
                    size: CLASSES[class].stride as usize,
                    align: old_align,
                };
                if ZERO && old_size < stride.size && self.is_fallback_of(p, class, life) {
                    // The bytes between the request and the stride may be a previous
                    // user's (a cached mapping): they read zero too. (Only once the
                    // mapping is known to be this request's: misuse changes nothing.)
                    // SAFETY: the mapping holds the stride's bytes, this allocation's.
                    unsafe { ptr::write_bytes(p.add(old_size), 0, stride.size - old_size) };
                }
                let named = Named::Class(class);
                // SAFETY: forwarded contract; the stride's length is the mapping's.
                let done = unsafe { self.realloc_large::<ZERO, ABORT>(p, stride, new, named, life) };
                if let Some(q) = done {
                    return q;
                }
            }
            Some(class) => {
                // SAFETY: forwarded contract; class is the old size's.
                unsafe { self.check_kept_slot::<ABORT, R>(route, p, old_size, class, life) };
            }
            None if self.bounds.contains(p) && !self.in_run(p) => {
                if let Some(q) = self.realloc_medium::<ZERO, ABORT>(p, old, new, life) {
                    return q;
                }
            }
            None => {
                // (`old` is above the small classes; so is `new` unless it has a class.)
                if new_class.is_none() {
                    if let Some(q) = self.resize_within_pages::<ZERO>(p, old, new, life) {
                        return q;
                    }
                }
                let named = Named::Size(old_size);
                // SAFETY: forwarded contract.
                let done = unsafe { self.realloc_large::<ZERO, ABORT>(p, old, new, named, life) };
                if let Some(q) = done {
                    return q;
                }
            }
        }
        if new_size == 0 {
            // SAFETY: forwarded contract.
            unsafe { self.free_sized::<ABORT, R>(route, p, old_size, old_align, life) };
            return new_align as *mut u8;
        }
        // A new allocation; with ZERO it reads zero (a large one is a fresh mapping).
        let q = self.alloc_sized::<ZERO, R>(route, new_size, new_align, life);
        if !q.is_null() {
            // SAFETY: both hold at least min(old, new) bytes and are distinct allocations;
            // the old one was checked above.
            unsafe {
                ptr::copy_nonoverlapping(p, q, old_size.min(new_size));
                self.free_sized::<ABORT, R>(route, p, old_size, old_align, life);
            }
        }
        q
    }

    /// The resize of a medium allocation (`p` in the region, with a size above the small
    /// classes), after its check (misuse is reported): `Some(p)` when done in place (the
    /// new size is medium, `p` is aligned to its align, and its run shrinks, or grows into
    /// the free granules after it; with `ZERO` the bytes past the old size read zero);
    /// `None` when the caller must move it.
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn realloc_medium<const ZERO: bool, const ABORT: bool>(
        &self,
        p: *mut u8,
        old: SizeAlign,
        new: SizeAlign,
        life: usize,
    ) -> Option<*mut u8> {
        let Some(pool) = self.pool_if_any() else {
            report::<ABORT>(self.misuse(p, old.size, life, Problem::Foreign));
        };
        let in_place = medium_granules(new.size, new.align).is_some()
            && (p as usize).is_multiple_of(new.align);
        let n = old.size.div_ceil(GRANULE);
        let memo = |count| self.last(p, n, life, count);
        let found = match in_place && new.size.div_ceil(GRANULE) == n {
            true => pool.medium_same_run(p, old.size, life),
            false => SameRun::No,
        };
        // The run holds both sizes, checked with no lock (a loop of one-byte growths takes
        // this path for all but one step a granule): by its byte, or for a longer run by
        // the thread's memo of it, unchanged since.
        let quick = match found {
            SameRun::Live => true,
            SameRun::Long(count) => LAST_LONG_RUN.try_with(Cell::get).ok() == Some(memo(count)),
            SameRun::No => false,
        };
        let done = if quick {
            Ok(true)
        } else if in_place {
            let before = LONG_CHANGES.load(Ordering::Acquire);
            let done = pool.medium_resize_in_place(p, old.size, new.size, life);
            #[cfg(test)]
            tests::after_a_locked_resize();
            let m = new.size.div_ceil(GRANULE);
            // The resize's own change of a long run (none when it kept its granules).
            let own = u64::from(m != n);
            let count = LONG_CHANGES.load(Ordering::Acquire);
            if done == Ok(true) && m > STARTS_MAX && count == before.wrapping_add(own) {
                // Live as it is now, with no change of any long run but its own since
                // before the lock (a free of it after the unlock would be one): the
                // thread's next resize within its granules checks it against this.
                let _ = LAST_LONG_RUN.try_with(|last| last.set(Last { len: m, ..memo(count) }));
            }
            done
        } else {
            pool.medium_check(p, old.size, life).map(|_| false)
        };
        match done {
            Ok(true) => {
                if ZERO {
                    // SAFETY: the run holds the new size's granules now.
                    unsafe { zero_range(p, old.size, new.size.next_multiple_of(GRANULE)) };
                }
                Some(p)
            }
            Ok(false) => None,
            Err(problem) => report::<ABORT>(self.misuse(p, old.size, life, problem)),
        }
    }

    /// This instance's allocation at `p` of `len` in lifetime class `life`, seen when the
    /// count of changes was `count` (see [`Last`]).
    fn last(&self, p: *mut u8, len: usize, life: usize, count: u64) -> Last {
        Last {
            instance: self.instance_id(),
            p: p as usize,
            len,
            life,
            count,
        }
    }

    /// True when `p` is outside the region of an instance whose full region falls back to
    /// mappings of their own (`RegionOptions::fallback`): a small allocation there is one.
    #[cold]
    fn is_fallback_mapping(&self, p: *mut u8) -> bool {
        debug_assert!(!self.bounds.contains(p));
        self.pool_if_any().is_some_and(|pool| pool.region.falls_back())
    }

    /// True when `p` is a live fallback mapping made for a slot of `class` in lifetime
    /// class `life`.
    fn is_fallback_of(&self, p: *mut u8, class: usize, life: usize) -> bool {
        self.pool_if_any()
            .is_some_and(|pool| self.is_fallback(pool, p, class, life))
    }

}

/// An allocation the calling thread resized last, as it was then: this instance's
/// allocation at `p` of `len` (bytes, page-rounded, for a large allocation; granules for a
/// medium run) in lifetime class `life`, when the count of changes that would have made
/// it otherwise was `count` ([`crate::large::REMOVALS`], [`LONG_CHANGES`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Last {
    instance: u64,
    p: usize,
    len: usize,
    life: usize,
    count: u64,
}

/// No allocation.
const NONE: Last = Last {
    instance: 0,
    p: 0,
    len: 0,
    life: 0,
    count: 0,
};

std::thread_local! {
    /// The large allocation (outside the region, made for a large request) the calling
    /// thread resized last.
    static LAST_LARGE: Cell<Last> = const { Cell::new(NONE) };
    /// The medium run longer than `STARTS_MAX` granules the calling thread resized last.
    static LAST_LONG_RUN: Cell<Last> = const { Cell::new(NONE) };
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

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::RefCell;

    std::thread_local! {
        /// What runs between a locked medium resize and the thread's memo of it (what
        /// another thread may do at that moment).
        static AFTER_LOCKED_RESIZE: RefCell<Option<Box<dyn FnOnce()>>> = const { RefCell::new(None) };
    }

    /// Runs (once) what a test set in [`AFTER_LOCKED_RESIZE`].
    pub(super) fn after_a_locked_resize() {
        if let Some(f) = AFTER_LOCKED_RESIZE.with(|f| f.borrow_mut().take()) {
            f();
        }
    }

    /// A long medium run (over `STARTS_MAX` granules) freed right after a resize of it
    /// dropped the lock, before the resize's memo: the next resize of it within its
    /// granules (a resize after the free) is reported, not taken for a live run's.
    #[test]
    fn a_free_racing_a_long_runs_resize_leaves_no_memo_of_it() {
        let a: crate::Cohort = crate::Cohort::new();
        let old = 600 << 10;
        assert!(old / GRANULE > STARTS_MAX);
        let p = a.malloc(old, ());
        assert!(!p.is_null());
        let q = p as usize;
        let freer = ptr::from_ref(&a) as usize;
        AFTER_LOCKED_RESIZE.with(|f| {
            *f.borrow_mut() = Some(Box::new(move || {
                // SAFETY: `a` outlives the resize this runs in; the free is the race under
                // test (another thread's free of the run at this moment).
                unsafe { (*(freer as *const crate::Cohort)).free(q as *mut u8, old + 1, ()) };
            }))
        });
        // SAFETY: live with `old` bytes; grown within its granules.
        let r = unsafe { a.remalloc(p, old, old + 1, ()) };
        assert_eq!(r, p);
        let resized = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: misuse (freed above), reported before anything changes.
            unsafe { a.remalloc(p, old + 1, old + 2, ()) }
        }));
        assert!(
            resized.is_err(),
            "a resize of a long run freed after its last resize's unlock was not reported"
        );
    }

}
