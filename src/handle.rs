//! Allocator handles: one lifetime class of one allocator, as an `Allocator` for
//! `allocator_api2` collections (and `core::alloc::Allocator` with the `nightly` feature).
//!
//! A handle is two words and `Copy`. `deallocate` accepts any size in Rust's "memory
//! fitting" range (from the requested size to the usable size `allocate` returned): all of
//! them map to the same size class. `grow` and `shrink` stay in place while the new size
//! maps to the same class.
//!
//! Misuse (a pointer or layout that does not match the allocation) panics, as the direct
//! API's does: `Allocator` methods may unwind, unlike `GlobalAlloc`'s. A resize checks the
//! old allocation before it allocates or copies anything, so a rejected resize changes
//! nothing.

use crate::api::{usable_size, Cohort};
use crate::instance::Instance;
use crate::lifetime::{self, Lifetime};
use crate::resize::SizeAlign;
use crate::route::ThreadHeap;
use core::alloc::Layout;
use core::ptr::NonNull;

/// Lifetime class `life` of an allocator: an `Allocator` handle. Build one with
/// [`Cohort::handle`].
///
/// ```
/// use allocator_api2::vec::Vec;
/// cohort::lifetime_classes! { enum Life { Frame, Long } }
/// static A: cohort::Cohort<Life> = cohort::Cohort::new();
///
/// let mut v = Vec::new_in(A.handle(Life::Frame));
/// v.extend_from_slice(&[1u32, 2, 3]);
/// assert_eq!(v.iter().sum::<u32>(), 6);
/// ```
pub struct ClassHandle<'a, L: Lifetime = ()> {
    cohort: &'a Cohort<L>,
    life: L,
}

impl<L: Lifetime> Clone for ClassHandle<'_, L> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<L: Lifetime> Copy for ClassHandle<'_, L> {}

impl<L: Lifetime> core::fmt::Debug for ClassHandle<'_, L> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ClassHandle(lifetime class {})", self.life.index())
    }
}

impl<L: Lifetime> Cohort<L> {
    /// A handle that allocates in lifetime class `life`. Cost: none (two words, `Copy`).
    ///
    /// # Examples
    ///
    /// ```
    /// use cohort::allocator_api2::vec::Vec;
    /// cohort::lifetime_classes! { enum Life { Frame, Long } }
    /// static A: cohort::Cohort<Life> = cohort::Cohort::new();
    /// let mut names = Vec::new_in(A.handle(Life::Long));
    /// names.push("cohort");
    /// assert_eq!(names.len(), 1);
    /// ```
    pub fn handle(&self, life: L) -> ClassHandle<'_, L> {
        ClassHandle { cohort: self, life }
    }

    /// The former name of [`Cohort::handle`], which read as a size class (what
    /// [`crate::class`] means).
    ///
    /// # Examples
    ///
    /// ```
    /// cohort::lifetime_classes! { enum Life { Frame } }
    /// let a: cohort::Cohort<Life> = cohort::Cohort::new();
    /// #[allow(deprecated)]
    /// let h = a.class(Life::Frame);
    /// assert_eq!(h.life(), Life::Frame);
    /// ```
    #[deprecated(since = "0.2.0", note = "renamed `handle`: a class is a size class")]
    pub fn class(&self, life: L) -> ClassHandle<'_, L> {
        self.handle(life)
    }
}

impl<L: Lifetime> ClassHandle<'_, L> {
    /// The lifetime class.
    ///
    /// # Examples
    ///
    /// ```
    /// cohort::lifetime_classes! { enum Life { Frame, Long } }
    /// let a: cohort::Cohort<Life> = cohort::Cohort::new();
    /// assert_eq!(a.handle(Life::Long).life(), Life::Long);
    /// ```
    pub fn life(&self) -> L {
        self.life
    }
}

/// What every handle allocates through: one lifetime class (by index, hidden classes
/// included) of one instance, on the calling thread's heap. The handles' `Allocator`
/// methods are these.
#[derive(Clone, Copy)]
pub(crate) struct Lane<'a> {
    pub(crate) core: &'a Instance,
    pub(crate) life: usize,
}

impl Lane<'_> {
    fn slice(p: *mut u8, layout: Layout) -> Option<NonNull<[u8]>> {
        let p = NonNull::new(p)?;
        let usable = usable_size(layout.size(), layout.align());
        Some(NonNull::slice_from_raw_parts(p, usable))
    }

    pub(crate) fn allocate(&self, layout: Layout, zeroed: bool) -> Option<NonNull<[u8]>> {
        let (size, align) = (layout.size(), layout.align());
        let p = if zeroed {
            self.core.alloc_sized::<true, _>(ThreadHeap, size, align, self.life)
        } else {
            self.core.alloc_sized::<false, _>(ThreadHeap, size, align, self.life)
        };
        Self::slice(p, layout)
    }

    /// Frees `p`.
    ///
    /// # Safety
    /// `p` was allocated through a lane of the same instance and class, with a size
    /// fitting `layout`, and not freed since.
    #[track_caller]
    pub(crate) unsafe fn deallocate(&self, p: NonNull<u8>, layout: Layout) {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: forwarded contract.
        unsafe {
            self.core
                .free_sized::<false, _>(ThreadHeap, p.as_ptr(), size, align, self.life)
        }
    }

    /// Resizes to `new`: in place while the class stays (or a large allocation can be
    /// remapped); else a move. With `ZERO`, the bytes past `old.size()` read zero up to the
    /// returned length.
    ///
    /// # Safety
    /// As [`Lane::deallocate`] for `(p, old)`.
    #[track_caller]
    pub(crate) unsafe fn resize<const ZERO: bool>(
        &self,
        p: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Option<NonNull<[u8]>> {
        // SAFETY: forwarded contract.
        let q = unsafe {
            let (from, to) = (SizeAlign::of(old), SizeAlign::of(new));
            self.core
                .realloc_sized::<ZERO, false, _>(ThreadHeap, p.as_ptr(), from, to, self.life)
        };
        Self::slice(q, new)
    }
}

/// Implements an `Allocator` trait (allocator_api2's, or core's behind `nightly`: the
/// same methods) for a handle type, on its [`Lane`] (`$lane`: an expression of `self`).
macro_rules! impl_allocator {
    ([$($gen:tt)*] $ty:ty, $self_:ident => $lane:expr) => {
        impl_allocator!(@one [$($gen)*] $ty, $self_ => $lane,
            allocator_api2::alloc::Allocator, allocator_api2::alloc::AllocError);
        #[cfg(feature = "nightly")]
        impl_allocator!(@one [$($gen)*] $ty, $self_ => $lane,
            core::alloc::Allocator, core::alloc::AllocError);
    };
    (@one [$($gen:tt)*] $ty:ty, $self_:ident => $lane:expr,
        $($trait_:ident)::+, $($error:ident)::+) => {
        // SAFETY: allocate returns blocks of at least layout.size() bytes aligned to
        // layout.align() (the alloc paths' contract), valid until deallocated through any
        // copy of the handle (they all name the same allocator and class); deallocate and
        // the resizes accept any size in the fitting range because it maps to the same
        // size class.
        unsafe impl<$($gen)*> $($trait_)::+ for $ty {
            fn allocate(&$self_, layout: Layout) -> Result<NonNull<[u8]>, $($error)::+> {
                $lane.allocate(layout, false).ok_or($($error)::+)
            }

            fn allocate_zeroed(&$self_, layout: Layout) -> Result<NonNull<[u8]>, $($error)::+> {
                $lane.allocate(layout, true).ok_or($($error)::+)
            }

            #[track_caller]
            unsafe fn deallocate(&$self_, p: NonNull<u8>, layout: Layout) {
                // SAFETY: the Allocator contract: p was allocated by this handle (a copy of
                // it: the same lane), layout fits it.
                unsafe { $lane.deallocate(p, layout) }
            }

            #[track_caller]
            unsafe fn grow(
                &$self_,
                p: NonNull<u8>,
                old: Layout,
                new: Layout,
            ) -> Result<NonNull<[u8]>, $($error)::+> {
                // SAFETY: the Allocator contract.
                unsafe { $lane.resize::<false>(p, old, new) }.ok_or($($error)::+)
            }

            #[track_caller]
            unsafe fn grow_zeroed(
                &$self_,
                p: NonNull<u8>,
                old: Layout,
                new: Layout,
            ) -> Result<NonNull<[u8]>, $($error)::+> {
                // SAFETY: the Allocator contract.
                unsafe { $lane.resize::<true>(p, old, new) }.ok_or($($error)::+)
            }

            #[track_caller]
            unsafe fn shrink(
                &$self_,
                p: NonNull<u8>,
                old: Layout,
                new: Layout,
            ) -> Result<NonNull<[u8]>, $($error)::+> {
                // SAFETY: the Allocator contract.
                unsafe { $lane.resize::<false>(p, old, new) }.ok_or($($error)::+)
            }
        }
    };
}
pub(crate) use impl_allocator;

impl_allocator!([L: Lifetime] ClassHandle<'_, L>, self => Lane {
    core: &self.cohort.core,
    life: lifetime::index_of(self.life),
});

/// A lifetime class of a `static` allocator, named by a type: what a [`StaticHandle`]
/// allocates in. Declare one with [`static_class!`](crate::static_class).
///
/// A safe trait: the constants name an allocator and a class, and any pair is sound (a
/// free in the wrong one is misuse the allocator reports).
pub trait StaticClass: 'static {
    /// The allocator's lifetime classes.
    type Life: Lifetime;
    /// The allocator.
    const COHORT: &'static Cohort<Self::Life>;
    /// The class.
    const LIFE: Self::Life;
}

/// A zero-size `Allocator` handle to the lifetime class `C` names: a
/// `Box<T, StaticHandle<C>>` is one pointer, as std's `Box<T>` is (a [`ClassHandle`] is two
/// words). `Copy`, `Send`, `Sync`; every value is the same handle.
///
/// ```
/// use cohort::allocator_api2::boxed::Box;
/// use cohort::StaticHandle;
/// cohort::lifetime_classes! { enum Life { Tree } }
/// static A: cohort::Cohort<Life> = cohort::Cohort::new();
/// cohort::static_class!(TreeClass = A, Life::Tree);
///
/// struct Node { value: u64, next: Option<Box<Node, StaticHandle<TreeClass>>> }
/// type TreeBox<T> = Box<T, StaticHandle<TreeClass>>;
/// let list: TreeBox<Node> = Box::new_in(Node { value: 1, next: None }, StaticHandle::new());
/// assert_eq!(size_of::<TreeBox<Node>>(), size_of::<usize>());
/// assert_eq!(list.value, 1);
/// ```
pub struct StaticHandle<C: StaticClass>(core::marker::PhantomData<fn() -> C>);

impl<C: StaticClass> StaticHandle<C> {
    /// The handle (every value is the same).
    ///
    /// # Examples
    ///
    /// ```
    /// use cohort::StaticHandle;
    /// cohort::lifetime_classes! { enum Life { Tree } }
    /// static A: cohort::Cohort<Life> = cohort::Cohort::new();
    /// cohort::static_class!(TreeClass = A, Life::Tree);
    /// let v = cohort::Vec::<u32, _>::with_capacity_in(10, StaticHandle::<TreeClass>::new());
    /// assert!(v.capacity() >= 10);
    /// ```
    pub const fn new() -> Self {
        StaticHandle(core::marker::PhantomData)
    }
}

impl<C: StaticClass> Default for StaticHandle<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: StaticClass> Clone for StaticHandle<C> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<C: StaticClass> Copy for StaticHandle<C> {}

impl<C: StaticClass> core::fmt::Debug for StaticHandle<C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let life = C::LIFE.index();
        let name = Cohort::<C::Life>::life_name(life);
        write!(f, "StaticHandle(lifetime class {life} ({name}))")
    }
}

impl_allocator!([C: StaticClass] StaticHandle<C>, self => Lane {
    core: &C::COHORT.core,
    life: lifetime::index_of(C::LIFE),
});

/// Declares a type naming a lifetime class of a `static` allocator, for a zero-size
/// [`StaticHandle`]: `static_class!(pub TreeClass = COHORT, Life::Tree);` then
/// `StaticHandle<TreeClass>` allocates in `Life::Tree` of `COHORT` (a
/// `static COHORT: Cohort<Life>`). The class is written `Enum::Variant`, or `()` for a
/// `Cohort<()>`.
///
/// ```
/// static A: cohort::Cohort = cohort::Cohort::new();
/// cohort::static_class!(Everything = A, ());
/// let v = cohort::Vec::<u8, _>::with_capacity_in(10, cohort::StaticHandle::<Everything>::new());
/// assert!(v.capacity() >= 10);
/// ```
#[macro_export]
macro_rules! static_class {
    ($(#[$meta:meta])* $vis:vis $name:ident = $cohort:path, ()) => {
        $crate::static_class!(@impl [$(#[$meta])*] $vis $name = $cohort, (), ());
    };
    ($(#[$meta:meta])* $vis:vis $name:ident = $cohort:path, $life:ident :: $variant:ident) => {
        $crate::static_class!(@impl [$(#[$meta])*] $vis $name = $cohort, $life, $life::$variant);
    };
    (@impl [$(#[$meta:meta])*] $vis:vis $name:ident = $cohort:path, $ty:ty, $value:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default)]
        $vis struct $name;

        impl $crate::StaticClass for $name {
            type Life = $ty;
            const COHORT: &'static $crate::Cohort<$ty> = &$cohort;
            const LIFE: $ty = $value;
        }
    };
}
