//! The allocator type: [`Cohort`] and its malloc family (sized forms); its `Layout` forms
//! and `GlobalAlloc` are in `layout`, its block reports in `blocks`.
//!
//! A `Cohort<L>` is an [`Instance`] (the non-generic core: pool, id, region bounds) typed
//! with its lifetime classes `L`; its methods are the public forms of the paths in
//! [`crate::alloc`], [`crate::free`] and [`crate::resize`].

use crate::class::{class_of, malloc_align, MAX_SMALL_ALIGN};
use crate::instance::Instance;
use crate::lifetime::{self, Lifetime, ScopeClaims, HIDDEN, MAX_LIFETIME_CLASSES};
use crate::misuse::Misuse;
use crate::os;
use crate::resize::SizeAlign;
use crate::route::ThreadHeap;
use core::fmt;
use core::marker::PhantomData;

mod blocks;
#[cfg(all(test, not(loom)))]
mod fork_mid_write;
mod layout;

pub use blocks::BlockReport;
pub(crate) use layout::usable_size;

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

    /// An allocator whose allocations, large ones included, come from exactly `bytes` of
    /// address space (rounded down to whole 2 MiB units, at least 4 MiB): past that,
    /// allocation returns null. A large allocation (above the largest size class) takes
    /// whole contiguous units of it, as a block does one; memory is committed as units are
    /// first used and given back to the OS when they are freed (for memory committed or
    /// prefaulted up front, see [`Cohort::with_options`]).
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

}

const _: () = assert!(MAX_SMALL_ALIGN == os::MIN_PAGE);
