//! Allocations that never promote: [`Cohort::try_malloc`] and its kin, for real-time paths
//! that would rather fail than take a slot of a larger size class (see
//! [`crate::promotion`]: in a full region, [`Cohort::malloc`] serves a request whose size
//! class has no free slot from the next larger class of its lifetime class that has one).
//!
//! Invariant: a `try_` allocation returns a slot of its request's own size class (or a
//! large allocation), or null; it never leaves a promoted slot behind.

use crate::api::Cohort;
use crate::lifetime::Lifetime;
use crate::promotion::without_promotion;
use core::alloc::Layout;

impl<L: Lifetime> Cohort<L> {
    /// Like [`Cohort::malloc`], but never promotes: when the request's size class has no
    /// free slot and no block can be carved, the result is null even if a larger class has
    /// free slots. Costs what `malloc` costs while a slot of the class is free (the fast
    /// path is the same); the difference is on the slow path only.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = cohort::Cohort::<()>::with_reservation(4 << 20);
    /// let p = a.try_malloc(16, ());
    /// assert!(!p.is_null());
    /// // SAFETY: allocated above with this size and class.
    /// unsafe { a.free(p, 16, ()) };
    /// ```
    #[inline]
    pub fn try_malloc(&self, size: usize, life: L) -> *mut u8 {
        without_promotion(|| self.malloc(size, life))
    }

    /// Like [`Cohort::calloc`], but never promotes (see [`Cohort::try_malloc`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let a = cohort::Cohort::<()>::new();
    /// let p = a.try_calloc(64, ());
    /// // SAFETY: 64 readable bytes; then freed as made.
    /// unsafe {
    ///     assert!(std::slice::from_raw_parts(p, 64).iter().all(|&b| b == 0));
    ///     a.free(p, 64, ());
    /// }
    /// ```
    #[inline]
    pub fn try_calloc(&self, size: usize, life: L) -> *mut u8 {
        without_promotion(|| self.calloc(size, life))
    }

    /// Like [`Cohort::alloc`], but never promotes (see [`Cohort::try_malloc`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::alloc::Layout;
    /// let a = cohort::Cohort::<()>::new();
    /// let l = Layout::new::<[u32; 4]>();
    /// let p = a.try_alloc(l, ());
    /// assert!(!p.is_null());
    /// // SAFETY: allocated above with this layout and class.
    /// unsafe { a.dealloc(p, l, ()) };
    /// ```
    #[inline]
    pub fn try_alloc(&self, layout: Layout, life: L) -> *mut u8 {
        without_promotion(|| self.alloc(layout, life))
    }

    /// Like [`Cohort::alloc_zeroed`], but never promotes (see [`Cohort::try_malloc`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::alloc::Layout;
    /// let a = cohort::Cohort::<()>::new();
    /// let l = Layout::new::<[u64; 2]>();
    /// let p = a.try_alloc_zeroed(l, ()).cast::<[u64; 2]>();
    /// // SAFETY: zeroed memory for the layout; then freed as made.
    /// unsafe {
    ///     assert_eq!(*p, [0, 0]);
    ///     a.dealloc(p.cast(), l, ());
    /// }
    /// ```
    #[inline]
    pub fn try_alloc_zeroed(&self, layout: Layout, life: L) -> *mut u8 {
        without_promotion(|| self.alloc_zeroed(layout, life))
    }
}
