//! The allocator type: [`Cohort`], its malloc family, `GlobalAlloc`, and block reports.
//!
//! A `Cohort<L>` is an [`Instance`] (the non-generic core: pool, id, region bounds) typed
//! with its lifetime classes `L`; its methods are the public forms of the paths in
//! [`crate::alloc`], [`crate::free`] and [`crate::resize`].

use crate::class::{class_of, malloc_align, medium_granules, Class, CLASSES, GRANULE, MAX_SMALL_ALIGN};
use crate::instance::Instance;
use crate::lifetime::{self, Lifetime, ScopeClaims, HIDDEN, MAX_LIFETIME_CLASSES};
use crate::misuse::Misuse;
use crate::os;
use crate::resize::SizeAlign;
use crate::route::ThreadHeap;
use core::alloc::{GlobalAlloc, Layout};
use core::fmt;
use core::marker::PhantomData;

/// Address space reserved by [`Cohort::new`]: reserved, not committed, so it costs no
/// memory; halved until the OS accepts.
pub const DEFAULT_RESERVATION: usize = 256 << 30;

/// A sized-free allocator with lifetime classes `L`.
///
/// Every allocation is a slot in a block of slots of one size class and one lifetime class;
/// nothing is stored beside it. The caller gives the size (and lifetime class) back at
/// free time. See the crate docs for the contracts.
///
/// Thread safety: all methods take `&self` and may be called from any thread. Each thread
/// allocates from its own heap; frees from another thread are lock-free.
///
/// Dropping a `Cohort` unmaps all its memory: every allocation from it dangles.
pub struct Cohort<L: Lifetime = ()> {
    pub(crate) core: Instance,
    /// The scope classes open scopes hold (see [`Cohort::scope`]).
    pub(crate) scopes: ScopeClaims,
    _life: PhantomData<fn(L) -> L>,
}

/// `Cohort { instance, lifetime_classes, reservation, exact_reservation, region, heaps,
/// lock_acquisitions }`: the instance id (`None` before the first allocation), and once
/// its pool exists the region's bounds, the heap ids handed out and the times the pool lock
/// was taken. Reads atomics only: it takes no lock and creates nothing.
impl<L: Lifetime> fmt::Debug for Cohort<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Cohort");
        self.core.debug_fields(&mut d);
        d.finish()
    }
}

impl<L: Lifetime> Default for Cohort<L> {
    fn default() -> Self {
        Self::new()
    }
}

/// One block, as [`Cohort::for_each_block`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockReport {
    /// The block's base address.
    pub base: usize,
    /// Size class index.
    pub size_class: usize,
    /// Slot size in bytes.
    pub stride: usize,
    /// Lifetime class index.
    pub life: usize,
    /// Slots in the block.
    pub capacity: usize,
    /// Live slots.
    pub live: usize,
    /// The block's size in bytes (virtual).
    pub block_bytes: usize,
    /// Usable bytes: `capacity * stride`.
    pub usable_bytes: usize,
    /// Bytes of the block resident in RAM.
    pub resident_bytes: usize,
}

impl BlockReport {
    /// Block bytes divided by usable bytes: the measure of the ratio contract
    /// ([`crate::class::ratio_contract_limit`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let a = cohort::Cohort::<()>::new();
    /// let p = a.malloc(48, ());
    /// a.for_each_block(|b| assert!(b.geometry_ratio() >= 1.0 && b.geometry_ratio() < 1.1));
    /// // SAFETY: allocated above with this size and class.
    /// unsafe { a.free(p, 48, ()) };
    /// ```
    pub fn geometry_ratio(&self) -> f64 {
        self.block_bytes as f64 / self.usable_bytes as f64
    }
}

impl<L: Lifetime> Cohort<L> {
    /// The instance with core `core` (an instance placed in a shared region, built for
    /// [`Cohort::INSIDE_COUNT`] lifetime classes named [`Cohort::NAMES`]).
    pub(crate) const fn from_core(core: Instance) -> Self {
        Cohort {
            core,
            scopes: ScopeClaims::new(),
            _life: PhantomData,
        }
    }

    /// The lifetime classes an instance of `Cohort<L>` is built for: `L`'s and the hidden
    /// ones (see [`crate::lifetime`]).
    pub(crate) const INSIDE_COUNT: usize = L::COUNT + HIDDEN;
}

impl<L: Lifetime> Cohort<L> {
    /// An allocator that will reserve [`DEFAULT_RESERVATION`] bytes of address space on its
    /// first allocation. `const`, so it can be a `static` (a `#[global_allocator]`).
    ///
    /// # Examples
    ///
    /// ```
    /// cohort::lifetime_classes! { enum Life { Frame, Long } }
    /// static A: cohort::Cohort<Life> = cohort::Cohort::new();
    ///
    /// let p = A.malloc(32, Life::Long);
    /// assert!(!p.is_null());
    /// // SAFETY: allocated above with this size and class.
    /// unsafe { A.free(p, 32, Life::Long) };
    /// ```
    pub const fn new() -> Self {
        Self::build(DEFAULT_RESERVATION, false)
    }

    /// An allocator whose small allocations come from exactly `bytes` of address space
    /// (rounded down to whole 2 MiB blocks, at least 4 MiB): past that, allocation returns null.
    /// Large allocations are separate mappings and not counted.
    ///
    /// # Sizing
    ///
    /// Each thread allocates from blocks of its own, one at a time per (size class,
    /// lifetime class) it uses, and keeps that block while it lives, even once everything
    /// in it has been freed: its fast paths use the block without synchronisation, so no
    /// other thread can take it back. Before returning null an allocation gives back every
    /// empty block the pool and the calling thread hold (what [`Cohort::compact`] would), but
    /// not the blocks of other live threads. So a reservation must allow, besides the live
    /// data, one 2 MiB block for each (thread, size class, lifetime class) in use; a thread
    /// gives its blocks back when it exits or calls [`Cohort::compact`].
    ///
    /// # Examples
    ///
    /// ```
    /// // Small allocations from 8 MiB of address space (4 blocks of 2 MiB).
    /// let a = cohort::Cohort::<()>::with_reservation(8 << 20);
    /// let p = a.malloc(100, ());
    /// assert!(!p.is_null());
    /// // SAFETY: allocated above with this size and class.
    /// unsafe { a.free(p, 100, ()) };
    /// ```
    pub const fn with_reservation(bytes: usize) -> Self {
        Self::build(bytes, true)
    }

    const fn build(reservation: usize, exact: bool) -> Self {
        assert!(
            L::COUNT >= 1 && L::COUNT <= MAX_LIFETIME_CLASSES,
            "1 to MAX_LIFETIME_CLASSES (247) lifetime classes"
        );
        Cohort {
            core: Instance::new(reservation, exact, Self::INSIDE_COUNT, Self::NAMES),
            scopes: ScopeClaims::new(),
            _life: PhantomData,
        }
    }

    /// Every lifetime class's name by index, the hidden classes' included (see
    /// [`crate::lifetime`]); `""` for a class of `L` without one.
    pub(crate) const NAMES: &'static [&'static str] = {
        let all: &'static [&'static str; 256] = &lifetime::all_names::<L>();
        // At most 256 (past MAX_LIFETIME_CLASSES, `build`'s assertion speaks).
        let n = L::COUNT + HIDDEN;
        all.split_at(if n < 256 { n } else { 256 }).0
    };

    /// The index reports give inside lifetime class index `inside` (see [`crate::lifetime`]).
    pub(crate) const fn reported(inside: usize) -> usize {
        lifetime::reported(inside, L::COUNT + HIDDEN)
    }

    /// The name of lifetime class `life`, a reported index (hidden classes included): `L::NAMES`'s,
    /// `"global"`, `"scope 1"`..., or `""` for a class of `L` without a name.
    pub(crate) fn life_name(life: usize) -> &'static str {
        Self::NAMES.get(life).copied().unwrap_or("")
    }

    // ---- The malloc family ----

    /// Allocates `size` bytes in lifetime class `life`, aligned to at least the next power
    /// of two of `size`, at most 4096 (so `malloc(max(size, align))` is an aligned
    /// allocation for any `align` up to 4096).
    ///
    /// Returns null when memory is exhausted. `size == 0` returns a dangling non-null
    /// pointer, to be freed with size 0 (or not at all). Cost: about 20 instructions when
    /// the calling thread's current block of the class has a free slot.
    ///
    /// # Examples
    ///
    /// ```
    /// cohort::lifetime_classes! { enum Life { Frame, Long } }
    /// static A: cohort::Cohort<Life> = cohort::Cohort::new();
    ///
    /// let p = A.malloc(100, Life::Frame);
    /// assert!(!p.is_null() && p as usize % 64 == 0); // aligned to 128, capped at 4096
    /// // SAFETY: 100 writable bytes; then freed with the size and class it was made with.
    /// unsafe {
    ///     p.write_bytes(7, 100);
    ///     A.free(p, 100, Life::Frame);
    /// }
    /// ```
    #[inline]
    pub fn malloc(&self, size: usize, life: L) -> *mut u8 {
        self.core
            .alloc_sized::<false, _>(ThreadHeap, size, malloc_align(size), lifetime::index_of(life))
    }

    /// Like [`Cohort::malloc`], with the memory zeroed. Memory fresh from the OS is not
    /// written again.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = cohort::Cohort::<()>::new();
    /// let p = a.calloc(64, ());
    /// // SAFETY: 64 readable bytes; then freed as made.
    /// unsafe {
    ///     assert!(std::slice::from_raw_parts(p, 64).iter().all(|&b| b == 0));
    ///     a.free(p, 64, ());
    /// }
    /// ```
    #[inline]
    pub fn calloc(&self, size: usize, life: L) -> *mut u8 {
        self.core
            .alloc_sized::<true, _>(ThreadHeap, size, malloc_align(size), lifetime::index_of(life))
    }

    /// Like [`Cohort::malloc`], and also returns the usable size: any size between `size`
    /// and it may be passed to [`Cohort::free`].
    ///
    /// # Examples
    ///
    /// ```
    /// let a = cohort::Cohort::<()>::new();
    /// let (p, usable) = a.malloc_at_least(100, ());
    /// assert!(usable >= 100);
    /// // SAFETY: any size from 100 to `usable` frees it.
    /// unsafe { a.free(p, usable, ()) };
    /// ```
    pub fn malloc_at_least(&self, size: usize, life: L) -> (*mut u8, usize) {
        let p = self.malloc(size, life);
        if p.is_null() {
            return (p, 0);
        }
        (p, usable_size(size, malloc_align(size)))
    }

    /// Frees an allocation of [`Cohort::malloc`], [`Cohort::calloc`],
    /// [`Cohort::malloc_at_least`], [`Cohort::remalloc`] or [`Cohort::recalloc`].
    ///
    /// Misuse the block header can reveal (a size or lifetime class that does not match the
    /// block) panics with the pointer, size and class; with debug assertions or the
    /// `checked` feature, foreign pointers and double frees panic too. [`Cohort::try_free`]
    /// returns the [`Misuse`] instead.
    ///
    /// A null `ptr` does nothing (as C's `free`), whatever the size; so does size 0 with the
    /// pointer of a zero-size request. Size 0 with a pointer into this allocator's memory
    /// (an allocation given the wrong size) is misuse, reported in every build.
    ///
    /// # Panics
    /// On the misuse described above, with the pointer, size and lifetime class; the panic
    /// names the caller's line.
    ///
    /// # Safety
    /// `ptr` is null, or a live allocation (not freed since) of this allocator's malloc
    /// family made in lifetime class `life`; `size` is at least the size that was asked for
    /// and at most its usable size (the second value of [`Cohort::malloc_at_least`]).
    ///
    /// # Examples
    ///
    /// ```
    /// cohort::lifetime_classes! { enum Life { Frame, Long } }
    /// let a: cohort::Cohort<Life> = cohort::Cohort::new();
    /// let p = a.malloc(24, Life::Frame);
    /// // SAFETY: allocated above with this size and class, freed once.
    /// unsafe { a.free(p, 24, Life::Frame) };
    /// // SAFETY: null does nothing.
    /// unsafe { a.free(std::ptr::null_mut(), 24, Life::Long) };
    /// ```
    #[inline]
    #[track_caller]
    pub unsafe fn free(&self, ptr: *mut u8, size: usize, life: L) {
        // SAFETY: forwarded contract.
        unsafe {
            self.core.free_sized::<false, _>(
                ThreadHeap,
                ptr,
                size,
                malloc_align(size),
                lifetime::index_of(life),
            )
        }
    }

    /// As [`Cohort::free`], but misuse the allocator can detect is returned, with nothing
    /// changed, instead of reported by a panic: for a caller that must not unwind (a C
    /// interface, a plugin host) or that wants to log and go on.
    ///
    /// # Errors
    /// It checks everything before it touches anything, in every build: the pointer is in
    /// this allocator's memory, at the start of a slot of a block that holds `size`'s size
    /// class and lifetime class `life` ([`Problem::Foreign`](crate::Problem::Foreign),
    /// [`Problem::WrongBlock`](crate::Problem::WrongBlock),
    /// [`Problem::NotASlot`](crate::Problem::NotASlot)); a large size names a live large
    /// allocation of that length and class ([`Problem::NotLarge`](crate::Problem::NotLarge),
    /// [`Problem::LargeMismatch`](crate::Problem::LargeMismatch)); the slot is not free
    /// ([`Problem::DoubleFree`](crate::Problem::DoubleFree): every double free in checked
    /// mode, otherwise a slot that is first on its block's free or remote list, such as the
    /// slot freed last). Size 0 frees nothing and is right only for null and the pointer of
    /// a zero-size request: with a pointer into this allocator's blocks or a large
    /// allocation, it is [`Problem::ZeroSize`](crate::Problem::ZeroSize) or
    /// [`Problem::LargeMismatch`](crate::Problem::LargeMismatch). Cost: those checks (tens of
    /// instructions, and the pool lock for 1- and 2-byte sizes), then a free.
    ///
    /// # Safety
    /// As [`Cohort::free`], except that a call the checks reject is safe: it changes
    /// nothing. Outside checked mode, a double free of a slot that is not the first of its
    /// block's lists goes undetected and corrupts the block, as with [`Cohort::free`].
    ///
    /// # Examples
    ///
    /// ```
    /// use cohort::Problem;
    /// cohort::lifetime_classes! { enum Life { Frame, Long } }
    /// let a: cohort::Cohort<Life> = cohort::Cohort::new();
    /// let p = a.malloc(64, Life::Frame);
    /// // SAFETY: a rejected call changes nothing; the second frees as made.
    /// unsafe {
    ///     let err = a.try_free(p, 64, Life::Long).unwrap_err();
    ///     assert!(matches!(err.problem, Problem::WrongBlock { .. }));
    ///     assert!(err.to_string().contains("wrong lifetime class"), "{err}");
    ///     a.try_free(p, 64, Life::Frame).unwrap();
    /// }
    /// ```
    pub unsafe fn try_free(&self, ptr: *mut u8, size: usize, life: L) -> Result<(), Misuse> {
        let (align, life) = (malloc_align(size), lifetime::index_of(life));
        if size == 0 {
            return self.core.check_zero_size(ptr, life);
        }
        if ptr.is_null() {
            return Ok(());
        }
        match class_of(size, align) {
            // SAFETY: forwarded contract: a large size, a non-null pointer.
            None => unsafe { self.core.free_large_checked(ptr, size, life) },
            Some(class) => {
                self.core.find_misuse::<false>(ptr, size, class, life)?;
                // SAFETY: forwarded contract; the checks above passed.
                unsafe {
                    self.core
                        .free_sized::<false, _>(ThreadHeap, ptr, size, align, life)
                };
                Ok(())
            }
        }
    }

    /// Resizes an allocation of the malloc family to `new_size` bytes. Stays in place when
    /// `new_size` maps to the same size class (or both are large and the OS can remap);
    /// otherwise copies `min(old_size, new_size)` bytes to a new allocation. Returns null,
    /// leaving the old allocation as it was, when memory is exhausted (or `new_size` cannot
    /// be allocated at all). A null `ptr` (or `old_size` 0, with the pointer of a zero-size
    /// request) allocates `new_size` bytes.
    ///
    /// The old allocation is checked as [`Cohort::free`] checks it before anything else
    /// happens (`old_size` 0 too): misuse panics and changes nothing.
    ///
    /// # Safety
    /// As [`Cohort::free`] for `(ptr, old_size, life)`.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = cohort::Cohort::<()>::new();
    /// let p = a.malloc(16, ());
    /// // SAFETY: 16 writable bytes; p is live with size 16, q with size 4000.
    /// unsafe {
    ///     p.write_bytes(9, 16);
    ///     let q = a.remalloc(p, 16, 4000, ());
    ///     assert!(!q.is_null() && *q.add(15) == 9); // the first 16 bytes moved with it
    ///     a.free(q, 4000, ());
    /// }
    /// ```
    #[track_caller]
    pub unsafe fn remalloc(
        &self,
        ptr: *mut u8,
        old_size: usize,
        new_size: usize,
        life: L,
    ) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { self.resize_malloc::<false>(ptr, old_size, new_size, life) }
    }

    /// Like [`Cohort::remalloc`], and the bytes from `old_size` to `new_size` (to the usable
    /// size, in fact) read zero when it grows. Only memory that may be dirty is written:
    /// growing into a fresh large mapping writes nothing there.
    ///
    /// # Safety
    /// As [`Cohort::remalloc`].
    ///
    /// # Examples
    ///
    /// ```
    /// let a = cohort::Cohort::<()>::new();
    /// let p = a.calloc(8, ());
    /// // SAFETY: p is live with size 8, q with size 64.
    /// unsafe {
    ///     let q = a.recalloc(p, 8, 64, ());
    ///     assert!(std::slice::from_raw_parts(q, 64).iter().all(|&b| b == 0));
    ///     a.free(q, 64, ());
    /// }
    /// ```
    #[track_caller]
    pub unsafe fn recalloc(
        &self,
        ptr: *mut u8,
        old_size: usize,
        new_size: usize,
        life: L,
    ) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { self.resize_malloc::<true>(ptr, old_size, new_size, life) }
    }

    /// [`Cohort::remalloc`] (or with `ZERO`, [`Cohort::recalloc`]).
    ///
    /// # Safety
    /// As [`Cohort::remalloc`].
    #[track_caller]
    unsafe fn resize_malloc<const ZERO: bool>(
        &self,
        ptr: *mut u8,
        old: usize,
        new: usize,
        life: L,
    ) -> *mut u8 {
        let (old, new) = (SizeAlign::malloc(old), SizeAlign::malloc(new));
        let life = lifetime::index_of(life);
        // SAFETY: forwarded contract.
        unsafe { self.core.realloc_sized::<ZERO, false, _>(ThreadHeap, ptr, old, new, life) }
    }

    // ---- Layout forms ----

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

    /// Calls `f` for every block in use (blocks held empty for reuse are skipped). A
    /// snapshot: counts of blocks other threads are using may be a moment old, and a block
    /// changing hands meanwhile is reported with its old or its new class, whole.
    /// Cost: one `mincore` call per block.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = cohort::Cohort::<()>::new();
    /// let p = a.malloc(64, ());
    /// let mut live = 0;
    /// a.for_each_block(|b| live += b.live);
    /// assert_eq!(live, 1);
    /// // SAFETY: allocated above with this size and class.
    /// unsafe { a.free(p, 64, ()) };
    /// ```
    pub fn for_each_block(&self, mut f: impl FnMut(&BlockReport)) {
        let Some(pool) = self.core.pool_if_any() else {
            return;
        };
        let blocks = pool.blocks(&pool.state.lock());
        for h in blocks {
            // One read of the header's identity: the block may change hands meanwhile.
            let Some(b) = h.snapshot() else {
                continue;
            };
            let c: &Class = b.geometry;
            let report = BlockReport {
                base: h.base() as usize,
                size_class: b.class,
                stride: c.stride as usize,
                life: Self::reported(b.life),
                capacity: c.capacity as usize,
                live: b.live as usize,
                block_bytes: c.block_size(),
                usable_bytes: c.usable(),
                // SAFETY: the block is mapped.
                resident_bytes: unsafe { os::resident_bytes(h.base(), c.block_size()) },
            };
            f(&report);
        }
    }

    /// The base address of the block holding an allocation of `size` bytes made by
    /// [`Cohort::malloc`] (for `Layout` allocations use [`Cohort::block_of_layout`]).
    /// `None` for medium and large allocations (a medium one has a block, but a run of
    /// granules in it, not a slot: `allocation_at` finds it).
    ///
    /// # Examples
    ///
    /// ```
    /// let a = cohort::Cohort::<()>::new();
    /// let (p, q) = (a.malloc(64, ()), a.malloc(64, ()));
    /// // Two allocations of one size class and lifetime class, one thread: one block.
    /// assert_eq!(a.block_of(p, 64), a.block_of(q, 64));
    /// assert_eq!(a.block_of(p, 64).unwrap() % (2 << 20), 0);
    /// // SAFETY: both allocated above with this size and class.
    /// unsafe { a.free(p, 64, ()); a.free(q, 64, ()) };
    /// ```
    pub fn block_of(&self, ptr: *const u8, size: usize) -> Option<usize> {
        self.block_of_layout(ptr, size, malloc_align(size))
    }

    /// The base address of the block holding an allocation for (size, align).
    ///
    /// # Examples
    ///
    /// ```
    /// let a = cohort::Cohort::<()>::new();
    /// let l = std::alloc::Layout::from_size_align(24, 8).unwrap();
    /// let p = a.alloc(l, ());
    /// let base = a.block_of_layout(p, 24, 8).unwrap();
    /// assert!(base <= p as usize && (p as usize) < base + (2 << 20));
    /// assert_eq!(a.block_of_layout(p, 100_000, 8), None); // large: no block
    /// // SAFETY: allocated above with this layout and class.
    /// unsafe { a.dealloc(p, l, ()) };
    /// ```
    pub fn block_of_layout(&self, ptr: *const u8, size: usize, align: usize) -> Option<usize> {
        let c = &CLASSES[class_of(size.max(1), align)?];
        Some(ptr as usize & !(c.block_size() - 1))
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

const _: () = assert!(MAX_SMALL_ALIGN == os::MIN_PAGE);
