//! [`Cohort`]'s `Layout` forms (`alloc`, `alloc_zeroed`, `usable_size`, `dealloc`,
//! `realloc`) and its `GlobalAlloc` implementation, whose allocations take the hidden
//! lifetime class `lifetime::GLOBAL`.

use super::Cohort;
use crate::class::{class_of, medium_granules, CLASSES, GRANULE};
use crate::lifetime::{self, Lifetime};
use crate::os;
use crate::resize::SizeAlign;
use crate::route::ThreadHeap;
use core::alloc::{GlobalAlloc, Layout};

impl<L: Lifetime> Cohort<L> {

    /// Allocates for `layout` in lifetime class `life`, honouring `layout.align()` with the
    /// exact-fit class (a 24-byte, 8-aligned request takes a 24-byte slot). Null when memory
    /// is exhausted; a zero-size layout returns `layout.dangling()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::alloc::Layout;
    /// let a = cohort::Cohort::<()>::new();
    /// let l = Layout::from_size_align(24, 8).unwrap();
    /// let p = a.alloc(l, ());
    /// assert_eq!(a.usable_size(l), 24); // an exact-fit slot
    /// // SAFETY: allocated above with this layout and class.
    /// unsafe { a.dealloc(p, l, ()) };
    /// ```
    #[inline]
    pub fn alloc(&self, layout: Layout, life: L) -> *mut u8 {
        self.core
            .alloc_layout::<false, _>(ThreadHeap, layout, lifetime::index_of(life))
    }

    /// Like [`Cohort::alloc`], with the memory zeroed.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::alloc::Layout;
    /// let a = cohort::Cohort::<()>::new();
    /// let l = Layout::new::<[u64; 8]>();
    /// let p = a.alloc_zeroed(l, ()).cast::<[u64; 8]>();
    /// // SAFETY: zeroed memory for the layout; then freed as made.
    /// unsafe {
    ///     assert_eq!(*p, [0; 8]);
    ///     a.dealloc(p.cast(), l, ());
    /// }
    /// ```
    #[inline]
    pub fn alloc_zeroed(&self, layout: Layout, life: L) -> *mut u8 {
        self.core
            .alloc_layout::<true, _>(ThreadHeap, layout, lifetime::index_of(life))
    }

    /// The usable size of an allocation for `layout`: any size from `layout.size()` up to it
    /// may be given back at free (with the same align).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::alloc::Layout;
    /// let a = cohort::Cohort::<()>::new();
    /// assert_eq!(a.usable_size(Layout::from_size_align(24, 8).unwrap()), 24);
    /// assert_eq!(a.usable_size(Layout::from_size_align(100_000, 8).unwrap()), 100_352); // 2 KiB granules
    /// assert_eq!(a.usable_size(Layout::from_size_align(3_000_000, 8).unwrap()), 3_002_368); // pages
    /// ```
    pub fn usable_size(&self, layout: Layout) -> usize {
        usable_size(layout.size(), layout.align())
    }

    /// Frees an allocation of [`Cohort::alloc`]; as [`Cohort::free`] for misuse and for a
    /// null `ptr` (nothing happens).
    ///
    /// # Panics
    /// As [`Cohort::free`].
    ///
    /// # Safety
    /// `ptr` is null, or a live allocation (not freed since) of [`Cohort::alloc`],
    /// [`Cohort::alloc_zeroed`] or [`Cohort::realloc`] of this allocator, made in lifetime
    /// class `life` with a layout of the same alignment as `layout`; `layout.size()` is at
    /// least the size that was asked for and at most its usable size
    /// ([`Cohort::usable_size`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::alloc::Layout;
    /// cohort::lifetime_classes! { enum Life { Frame, Long } }
    /// let a: cohort::Cohort<Life> = cohort::Cohort::new();
    /// let l = Layout::from_size_align(40, 8).unwrap();
    /// let p = a.alloc(l, Life::Long);
    /// // SAFETY: allocated above with this layout and class.
    /// unsafe { a.dealloc(p, l, Life::Long) };
    /// ```
    #[inline]
    #[track_caller]
    pub unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout, life: L) {
        // SAFETY: forwarded contract.
        unsafe {
            self.core.free_layout::<false, _>(
                ThreadHeap,
                ptr,
                layout,
                lifetime::index_of(life),
            )
        }
    }

    /// Resizes an allocation of [`Cohort::alloc`] to `new_size` bytes with the same align,
    /// in the same lifetime class, keeping its first `min(layout.size(), new_size)` bytes.
    ///
    /// - **In place** (returns `ptr`) when `new_size` maps to the allocation's size class
    ///   (any size up to [`Cohort::usable_size`] of the old layout does), or when both sizes
    ///   are large and the OS can resize the mapping where it is.
    /// - **Moved** otherwise: a new allocation, the bytes copied, the old one freed; the
    ///   returned pointer differs and `ptr` is dangling.
    /// - **Null** when memory is exhausted (or `new_size` rounded to the alignment
    ///   overflows): the old allocation is left as it was, still the caller's to free with
    ///   its old layout.
    /// - A null `ptr` allocates `new_size` bytes (as [`Cohort::alloc`]). A zero `new_size`
    ///   frees the allocation and returns a dangling pointer aligned to `layout.align()`, as
    ///   [`Cohort::alloc`] of a zero size does (freeing it, with size 0, does nothing).
    ///
    /// The old allocation is checked first, as [`Cohort::dealloc`] checks it: a rejected
    /// call panics and changes nothing.
    ///
    /// # Panics
    /// As [`Cohort::dealloc`], for `(ptr, layout, life)`.
    ///
    /// # Safety
    /// As [`Cohort::dealloc`] for `(ptr, layout, life)`; the result, when not null, is an
    /// allocation of layout `(new_size, layout.align())` in class `life`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::alloc::Layout;
    /// let a = cohort::Cohort::<()>::new();
    /// let l = Layout::from_size_align(20, 4).unwrap();
    /// let p = a.alloc(l, ());
    /// // SAFETY: p is live with layout l; q with size 24 and the same align.
    /// unsafe {
    ///     p.write_bytes(3, 20);
    ///     let q = a.realloc(p, l, 24, ());
    ///     assert_eq!(q, p); // 20 and 24 bytes share a size class: in place
    ///     assert_eq!(*q.add(19), 3);
    ///     a.dealloc(q, Layout::from_size_align(24, 4).unwrap(), ());
    /// }
    /// ```
    #[track_caller]
    pub unsafe fn realloc(
        &self,
        ptr: *mut u8,
        layout: Layout,
        new_size: usize,
        life: L,
    ) -> *mut u8 {
        let (old, new) = SizeAlign::layout_to(layout, new_size);
        let life = lifetime::index_of(life);
        // SAFETY: forwarded contract.
        unsafe { self.core.realloc_sized::<false, false, _>(ThreadHeap, ptr, old, new, life) }
    }
}

/// The usable size of a request: its class's stride, its granules when medium, or its
/// page-rounded size when large.
pub(crate) fn usable_size(size: usize, align: usize) -> usize {
    if size == 0 {
        return 0;
    }
    match (class_of(size, align), medium_granules(size, align)) {
        (Some(c), _) => CLASSES[c].stride as usize,
        (None, Some(granules)) => granules * GRANULE,
        (None, None) => os::page_round(size).unwrap_or(size),
    }
}

// std's allocations go to the class `lifetime::GLOBAL`, which no value of `L` names:
// releasing any of the caller's classes leaves them alone.
//
// SAFETY: alloc returns null or a block of at least layout.size() bytes aligned to
// layout.align() (class_of picks a stride that is a multiple of the align, in a block whose
// slots are aligned to it; large allocations are aligned mappings); dealloc receives what
// alloc returned with the same layout. Misuse aborts rather than unwinds.
unsafe impl<L: Lifetime> GlobalAlloc for Cohort<L> {
    // GlobalAlloc's callers never pass a zero size (its contract), so these skip that
    // test; a zero size anyway gets a null return in every build (its class, 0, is tiny,
    // so the fast path's pop fails into the slow path, which tests the size). Nor a null
    // pointer to dealloc, which is not tested either.
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.core
            .alloc_global::<false>(layout.size(), layout.align(), lifetime::GLOBAL)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: GlobalAlloc's contract: ptr came from alloc with this layout.
        unsafe {
            self.core
                .free_layout::<true, _>(ThreadHeap, ptr, layout, lifetime::GLOBAL)
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.core
            .alloc_global::<true>(layout.size(), layout.align(), lifetime::GLOBAL)
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (old, new) = SizeAlign::layout_to(layout, new_size);
        // SAFETY: GlobalAlloc's contract. Misuse aborts, as in dealloc.
        unsafe { self.core.realloc_sized::<false, true, _>(ThreadHeap, ptr, old, new, lifetime::GLOBAL) }
    }
}
