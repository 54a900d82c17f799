//! Allocations that never promote: [`Cohort::try_malloc`] and its kin, [`TryHandle`]
//! (any of cohort's allocator handles, never promoting), for real-time paths
//! that would rather fail than take a slot of a larger size class (see
//! [`crate::promotion`]: in a full region, [`Cohort::malloc`] serves a request whose size
//! class has no free slot from the next larger class of its lifetime class that has one).
//!
//! Invariant: a `try_` allocation returns a slot of its request's own size class (or a
//! large allocation), or null; it never leaves a promoted slot behind.

use crate::api::Cohort;
use crate::handle::ClassHandle;
use crate::join::Join;
use crate::lifetime::Lifetime;
use crate::promotion::without_promotion;
use core::alloc::Layout;
use core::ptr::NonNull;

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

impl<L: Lifetime> Join<'_, L> {
    /// As [`Join::malloc`], but never promotes (see [`Cohort::try_malloc`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let a = cohort::Cohort::<()>::with_reservation(4 << 20);
    /// let worker = a.join(0).expect("a heap");
    /// let p = worker.try_malloc(24, ());
    /// assert!(!p.is_null());
    /// // SAFETY: allocated above with this size and class.
    /// unsafe { worker.free(p, 24, ()) };
    /// ```
    #[inline]
    pub fn try_malloc(&self, size: usize, life: L) -> *mut u8 {
        without_promotion(|| self.malloc(size, life))
    }

    /// As [`Join::calloc`], but never promotes (see [`Cohort::try_malloc`]).
    #[inline]
    pub fn try_calloc(&self, size: usize, life: L) -> *mut u8 {
        without_promotion(|| self.calloc(size, life))
    }

    /// As [`Join::alloc`], but never promotes (see [`Cohort::try_malloc`]).
    #[inline]
    pub fn try_alloc(&self, layout: Layout, life: L) -> *mut u8 {
        without_promotion(|| self.alloc(layout, life))
    }
}

impl<L: Lifetime> Cohort<L> {
    /// A handle that allocates in lifetime class `life` and never promotes: as
    /// [`Cohort::handle`] wrapped in [`TryHandle`].
    ///
    /// # Examples
    ///
    /// ```
    /// use cohort::allocator_api2::vec::Vec;
    /// let a = cohort::Cohort::<()>::with_reservation(4 << 20);
    /// let mut v = Vec::new_in(a.try_handle(()));
    /// v.push(7u64);
    /// assert_eq!(v[0], 7);
    /// ```
    pub fn try_handle(&self, life: L) -> TryHandle<ClassHandle<'_, L>> {
        TryHandle(self.handle(life))
    }
}

/// An allocator handle whose allocations and resizes never promote (see
/// [`Cohort::try_malloc`]): in a full region, a request whose size class has no free slot
/// is an `AllocError`, never a slot of a larger class. Wraps any of cohort's handles
/// ([`ClassHandle`], [`StaticHandle`](crate::StaticHandle),
/// [`ClassScope`](crate::ClassScope)); frees are the wrapped handle's. The same size as
/// the handle it wraps.
#[derive(Clone, Copy, Debug, Default)]
pub struct TryHandle<H>(pub H);

/// The `Allocator` methods named (`allocate`, `allocate_zeroed`: a layout in) forwarded
/// to the wrapped handle's without promotion, with the trait's error type `$error`.
macro_rules! allocations_without_promotion {
    ($error:ty; $($name:ident),+) => {
        $(
            fn $name(&self, layout: Layout) -> Result<NonNull<[u8]>, $error> {
                without_promotion(|| self.0.$name(layout))
            }
        )+
    };
}

/// The `Allocator` resizes named (`grow`, `grow_zeroed`, `shrink`: a block and its old and
/// new layouts in) forwarded to the wrapped handle's without promotion, with the trait's
/// error type `$error`.
macro_rules! resizes_without_promotion {
    ($error:ty; $($name:ident),+) => {
        $(
            #[track_caller]
            unsafe fn $name(
                &self,
                p: NonNull<u8>,
                old: Layout,
                new: Layout,
            ) -> Result<NonNull<[u8]>, $error> {
                // SAFETY: the trait's contract, forwarded.
                without_promotion(|| unsafe { self.0.$name(p, old, new) })
            }
        )+
    };
}

/// Implements an `Allocator` trait (allocator_api2's, or core's behind `nightly`) for
/// [`TryHandle`] over a handle that has it: every call that may allocate runs without
/// promotion.
macro_rules! impl_try_allocator {
    ($($trait_:ident)::+, $($error:ident)::+) => {
        // SAFETY: every method forwards to the wrapped handle's, which meets the trait's
        // contract; turning promotion off only makes an allocation fail where it would
        // have taken a larger slot.
        unsafe impl<H: $($trait_)::+> $($trait_)::+ for TryHandle<H> {
            allocations_without_promotion!($($error)::+; allocate, allocate_zeroed);

            #[track_caller]
            unsafe fn deallocate(&self, p: NonNull<u8>, layout: Layout) {
                // SAFETY: the trait's contract, forwarded.
                unsafe { self.0.deallocate(p, layout) }
            }

            resizes_without_promotion!($($error)::+; grow, grow_zeroed, shrink);
        }
    };
}

impl_try_allocator!(allocator_api2::alloc::Allocator, allocator_api2::alloc::AllocError);
#[cfg(feature = "nightly")]
impl_try_allocator!(core::alloc::Allocator, core::alloc::AllocError);
