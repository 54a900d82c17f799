//! Frees and resizes without a size: the allocation's size and lifetime class found from its
//! address alone, for callers that do not know them (C's `free(p)` and `realloc(p, n)`).
//!
//! A pointer inside the region is a slot of the block its header mask finds (invariant 3
//! of [`crate::design`]), and that block's key names its size class and lifetime class:
//! `size = stride(key_class(key))`, `life = key_life(key)`. A pointer outside the region is
//! a large allocation exactly when the large table holds it: `size = mapped length`,
//! `life` as recorded. Anything else is not this allocator's.
//!
//! The size found is the usable size, which a free accepts (any size from the one asked for
//! up to the usable size is a valid free size), so every path below is the sized one, with
//! the checks it makes: a found key never disagrees with its block, so the key compare
//! cannot catch a wrong size here, but the double free checks and, in checked mode, the
//! live-bit checks still run. What the sized path checks only in checked mode, that the
//! pointer starts a slot, every path here checks first in every build:
//! `slot_index(p % BLOCK_SIZE) < capacity` of the block's class ([`Class::slot_index`]),
//! so a pointer inside a slot is never freed onto a list (where the next allocation of its
//! class would hand out memory overlapping a live slot).

use crate::api::Cohort;
use crate::block::{header_of, key_class, key_life, EMPTY_KEY};
use crate::class::{Class, BLOCK_SIZE, CLASSES, CLASS_COUNT, GRANULE, MAX_SMALL, MAX_SMALL_ALIGN};
use crate::large::Kind;
use crate::instance::Instance;
use crate::lifetime::Lifetime;
use crate::medium::is_medium;
use crate::misuse::{report, Misuse, Problem};
use crate::resize::SizeAlign;
use crate::route::ThreadHeap;

/// An allocation as [`Cohort::allocation_at`] finds it from its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    /// Its usable size: its slot's stride, a medium allocation's granules, or the length of
    /// a large allocation's mapping.
    /// Any size from the one asked for up to this one frees it.
    pub usable: usize,
    /// Its lifetime class index: `L::index()` of one of the caller's classes; from
    /// `L::COUNT` up, the allocator's own hidden classes (`L::COUNT` is the one
    /// `GlobalAlloc` allocates in).
    pub life: usize,
    /// True for a large allocation (a mapping of its own, or a run of a region's units);
    /// false for a small or medium one, also when the region served it from a mapping of
    /// its own ([`RegionOptions::fallback`](crate::RegionOptions::fallback), or no room for
    /// a medium request): its frees name its size class or granule count.
    pub large: bool,
}

/// The alignment that makes a small size's class its own: any stride `s` maps back to its
/// class with align 1 (`class_of(s, 1)` is the smallest stride at least `s`).
const SMALL_ALIGN: usize = 1;

impl Allocation {
    /// The (size, align) a sized path takes for this allocation: its usable size, with an
    /// alignment that maps it back to its own class when small, and keeps it large when
    /// large (a mapping of at most 16 KiB is large only through its alignment, so it is
    /// given one above the largest small alignment).
    fn side(&self) -> SizeAlign {
        let align = match (self.large, self.usable > MAX_SMALL) {
            (false, _) => SMALL_ALIGN,
            (true, true) => MAX_SMALL_ALIGN,
            (true, false) => 2 * MAX_SMALL_ALIGN,
        };
        SizeAlign {
            size: self.usable,
            align,
        }
    }
}

impl<L: Lifetime> Cohort<L> {
    /// The live allocation starting at `ptr`, found from the address alone: its usable size,
    /// its lifetime class index and whether it is large. `None` when `ptr` is not in this
    /// allocator's memory (null, another allocator's, or a large allocation already freed).
    ///
    /// For a pointer into this allocator's blocks the answer is the block's: it means
    /// something only when `ptr` is the start of a live allocation (a freed slot reports its
    /// block's class too). Cost: a few instructions inside the region; outside it, a look-up
    /// in the large table under its lock.
    ///
    /// ```
    /// let a = cohort::Cohort::<()>::new();
    /// let p = a.malloc(100, ());
    /// let found = a.allocation_at(p).unwrap();
    /// assert!(found.usable >= 100 && found.life == 0 && !found.large);
    /// // SAFETY: allocated just above with this size and class.
    /// unsafe { a.free(p, 100, ()) };
    /// assert_eq!(a.allocation_at(&0u8), None);
    /// ```
    pub fn allocation_at(&self, ptr: *const u8) -> Option<Allocation> {
        let found = self.core.allocation_at(ptr)?;
        Some(Allocation {
            life: Self::reported(found.life),
            ..found
        })
    }

    /// The usable size of the live allocation starting at `ptr`, found from the address (C's
    /// `malloc_usable_size`): any size up to it frees the allocation and may be written.
    /// 0 for null.
    ///
    /// # Errors
    /// [`Problem::Foreign`] when `ptr` is not in this allocator's memory: the caller may ask
    /// the allocator it came from (never about a pointer into this allocator's memory).
    /// A pointer into this allocator's memory that starts no live allocation it can tell
    /// (inside a slot, a medium run or a large allocation; in a block holding no
    /// allocations; in a freed large mapping the cache keeps; a medium run freed already)
    /// aborts the process with a message naming the pointer, as [`Cohort::free_unsized`]
    /// does. A small slot freed already is not told from a live one (its block's stride is
    /// the answer).
    ///
    /// # Examples
    ///
    /// ```
    /// let a = cohort::Cohort::<()>::new();
    /// let p = a.malloc(100, ());
    /// assert!(a.usable_size_at(p).unwrap() >= 100);
    /// assert!(a.usable_size_at(&0u8).is_err()); // not cohort's
    /// // SAFETY: allocated above with this size and class.
    /// unsafe { a.free(p, 100, ()) };
    /// ```
    #[track_caller]
    pub fn usable_size_at(&self, ptr: *const u8) -> Result<usize, Misuse> {
        if ptr.is_null() {
            return Ok(0);
        }
        let (side, _) = self.core.unsized_side(ptr.cast_mut())?;
        Ok(side.size)
    }

    /// True when `ptr` lies in this allocator's region: the address space of its small
    /// allocations (large ones are mappings of their own, outside it). Two instructions:
    /// a caller holding a pointer that may be another allocator's takes the sized free
    /// ([`Cohort::free`], [`GlobalAlloc::dealloc`](core::alloc::GlobalAlloc::dealloc)) when
    /// this is true, and [`Cohort::free_unsized`] otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = cohort::Cohort::<()>::new();
    /// let p = a.malloc(64, ());
    /// assert!(a.in_region(p));
    /// assert!(!a.in_region(&0u8)); // not cohort's
    /// // SAFETY: allocated above with this size and class.
    /// unsafe { a.free(p, 64, ()) };
    /// ```
    #[inline(always)]
    pub fn in_region(&self, ptr: *const u8) -> bool {
        self.core.bounds.contains(ptr.cast_mut())
    }

    /// Aborts the process with a report naming `ptr`, as [`Cohort::free_unsized`] does, when
    /// `ptr` lies in a block of small allocations of this allocator but starts none of its
    /// slots (inside a slot, in the block's header, past its last slot); returns having
    /// changed nothing otherwise (a medium run, a large allocation or memory that is not
    /// this allocator's is left to the free that follows). The check the sized frees make
    /// only in checked mode: a sized free of a pointer inside a slot whose block holds the
    /// size's class cannot be told by the block's key. For sized frees of pointers from code
    /// that may get them wrong (the C library's `free_sized`). Cost: the block header's key
    /// read, then one multiply, one rotate and one compare ([`Class::slot_index`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let a = cohort::Cohort::<()>::new();
    /// let p = a.malloc(64, ());
    /// a.check_slot_start(p); // returns: a slot's start
    /// a.check_slot_start(&0u8); // returns: not this allocator's
    /// // a.check_slot_start(p.wrapping_add(16)) would abort: inside the slot.
    /// // SAFETY: allocated above with this size and class.
    /// unsafe { a.free(p, 64, ()) };
    /// ```
    #[inline]
    #[track_caller]
    pub fn check_slot_start(&self, ptr: *const u8) {
        self.core.check_slot_start(ptr.cast_mut());
    }

    /// Frees the allocation starting at `ptr` without its size or lifetime class: both are
    /// found from the address ([`Cohort::allocation_at`]), then the sized free runs. A null
    /// `ptr` does nothing.
    ///
    /// # Errors
    /// [`Problem::Foreign`] when `ptr` is not in this allocator's memory: nothing is
    /// changed, and the caller may hand the pointer to the allocator it came from (never a
    /// pointer into memory of this allocator's). Other misuse the free detects (a pointer
    /// into a block that holds no allocations, inside a slot, a medium or a large
    /// allocation, a double free of the slot freed last or of a large allocation, or in
    /// checked mode any double free) aborts the process with a message naming the pointer,
    /// as `GlobalAlloc` does: this free is for callers that cannot unwind.
    ///
    /// # Safety
    /// `ptr` is null, not this allocator's, or the start of a live allocation of it that
    /// nothing uses after the call.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = cohort::Cohort::<()>::new();
    /// let (small, large) = (a.malloc(100, ()), a.malloc(100_000, ()));
    /// // SAFETY: both live; their sizes and classes are found from the addresses.
    /// unsafe {
    ///     a.free_unsized(small).unwrap();
    ///     a.free_unsized(large).unwrap();
    ///     assert!(a.free_unsized(&mut 0u8).is_err()); // foreign: nothing done
    /// }
    /// assert!(a.is_empty());
    /// ```
    #[inline]
    #[track_caller]
    pub unsafe fn free_unsized(&self, ptr: *mut u8) -> Result<(), Misuse> {
        if self.core.bounds.offset(ptr).is_none() {
            // SAFETY: forwarded contract.
            return unsafe { self.free_unsized_past_carved(ptr) };
        }
        if self.core.in_run(ptr) {
            // SAFETY: forwarded contract.
            return unsafe { self.free_unsized_run(ptr) };
        }
        let (usable, life) = self.core.in_region_or_report(ptr);
        // SAFETY: a live allocation of this allocator (caller): its usable size (a small
        // class's stride, which maps back to the class with SMALL_ALIGN; or a medium run's
        // bytes), in its lifetime class.
        unsafe {
            self.core
                .free_sized::<true, _>(ThreadHeap, ptr, usable, SMALL_ALIGN, life)
        };
        Ok(())
    }

    /// [`Cohort::free_unsized`] of a pointer in a run of the region's units: the start of a
    /// large allocation there, freed as one; else misuse (inside a run, or a run freed
    /// already), reported.
    ///
    /// # Safety
    /// As [`Cohort::free_unsized`].
    #[cold]
    #[inline(never)]
    #[track_caller]
    unsafe fn free_unsized_run(&self, ptr: *mut u8) -> Result<(), Misuse> {
        let Some(found) = self.core.run_allocation(ptr) else {
            report::<true>(self.core.misuse(ptr, 0, 0, Problem::NotLarge));
        };
        let side = found.side();
        // SAFETY: a live large allocation of this allocator (caller) with its length and an
        // alignment that keeps it large, in its lifetime class.
        unsafe {
            self.core
                .free_sized::<true, _>(ThreadHeap, ptr, side.size, side.align, found.life)
        };
        Ok(())
    }

    /// [`Cohort::free_unsized`] of a pointer past the instance's copy of the carved end:
    /// outside the region ([`Cohort::free_unsized_outside`]), past the region's carved end
    /// (in no block: reported), or in a unit carved since the copy was raised (freed as
    /// any, the copy raised).
    ///
    /// # Safety
    /// As [`Cohort::free_unsized`].
    #[cold]
    #[inline(never)]
    #[track_caller]
    unsafe fn free_unsized_past_carved(&self, ptr: *mut u8) -> Result<(), Misuse> {
        if !self.core.bounds.contains(ptr) {
            // SAFETY: forwarded contract.
            return unsafe { self.free_unsized_outside(ptr) };
        }
        if !self.core.in_carved(ptr) {
            self.core.past_carved_end(ptr);
        }
        // SAFETY: forwarded contract (below the copy of the carved end now).
        unsafe { self.free_unsized(ptr) }
    }

    /// [`Cohort::free_unsized`] of a pointer outside the region: null, a large allocation,
    /// or not this allocator's.
    ///
    /// # Safety
    /// As [`Cohort::free_unsized`].
    #[cold]
    #[inline(never)]
    unsafe fn free_unsized_outside(&self, ptr: *mut u8) -> Result<(), Misuse> {
        if ptr.is_null() {
            return Ok(());
        }
        let found = self.core.large_or_report(ptr)?;
        let side = found.side();
        // SAFETY: a live large allocation of this allocator (caller) with its mapped length
        // and an alignment that keeps it large, in its lifetime class.
        unsafe {
            self.core
                .free_sized::<true, _>(ThreadHeap, ptr, side.size, side.align, found.life)
        };
        Ok(())
    }

    /// Resizes the allocation starting at `ptr` to `new_size` bytes aligned to `new_align`,
    /// in its own lifetime class, without its old size: found from the address
    /// ([`Cohort::allocation_at`]). As [`Cohort::remalloc`] otherwise: in place when the new
    /// size falls in the same size class (or a large allocation can be remapped), else a new
    /// allocation, a copy of `min(usable size, new_size)` bytes and a free. Null when memory
    /// is exhausted, the old allocation untouched. A null `ptr` allocates in lifetime class
    /// 0; a zero `new_size` frees `ptr` and returns a dangling pointer aligned to
    /// `new_align`.
    ///
    /// # Errors
    /// [`Problem::Foreign`] when a non-null `ptr` is not in this allocator's memory, with
    /// nothing changed. Other misuse aborts, as in [`Cohort::free_unsized`].
    ///
    /// # Safety
    /// As [`Cohort::free_unsized`]; `new_align` is a power of two.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = cohort::Cohort::<()>::new();
    /// let p = a.malloc(10, ());
    /// // SAFETY: p is live; q is live after.
    /// unsafe {
    ///     p.write_bytes(1, 10);
    ///     let q = a.realloc_unsized(p, 5000, 8).unwrap();
    ///     assert_eq!(*q.add(9), 1);
    ///     a.free_unsized(q).unwrap();
    /// }
    /// ```
    #[track_caller]
    pub unsafe fn realloc_unsized(
        &self,
        ptr: *mut u8,
        new_size: usize,
        new_align: usize,
    ) -> Result<*mut u8, Misuse> {
        let new = SizeAlign {
            size: new_size,
            align: new_align,
        };
        let (old, life) = if ptr.is_null() {
            (SizeAlign { size: 0, align: 1 }, 0)
        } else {
            self.core.unsized_side(ptr)?
        };
        // SAFETY: a live allocation of this allocator (caller) with its usable size, an
        // alignment that maps to its class (or keeps it large) and its lifetime class; or
        // null, which allocates.
        Ok(unsafe {
            self.core
                .realloc_sized::<false, true, _>(ThreadHeap, ptr, old, new, life)
        })
    }
}

mod find;
#[cfg(test)]
mod tests;
