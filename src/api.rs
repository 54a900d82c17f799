//! The allocator type: [`Cohort`], its malloc family, `GlobalAlloc`, and block reports.
//!
//! A `Cohort<L>` is an [`Instance`] (the non-generic core: pool, id, region bounds) typed
//! with its lifetime classes `L`; its methods are the public forms of the paths in
//! [`crate::alloc`], [`crate::free`] and [`crate::resize`].

use crate::class::{class_of, malloc_align, Class, CLASSES, MAX_SMALL_ALIGN};
use crate::instance::Instance;
use crate::lifetime::Lifetime;
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
    pub fn geometry_ratio(&self) -> f64 {
        self.block_bytes as f64 / self.usable_bytes as f64
    }
}

impl<L: Lifetime> Cohort<L> {
    /// An allocator that will reserve [`DEFAULT_RESERVATION`] bytes of address space on its
    /// first allocation. `const`, so it can be a `static` (a `#[global_allocator]`).
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
    pub const fn with_reservation(bytes: usize) -> Self {
        Self::build(bytes, true)
    }

    const fn build(reservation: usize, exact: bool) -> Self {
        assert!(
            L::COUNT >= 1 && L::COUNT <= 256,
            "1 to 256 lifetime classes"
        );
        Cohort {
            core: Instance::new(reservation, exact, L::COUNT, L::NAMES),
            _life: PhantomData,
        }
    }

    // ---- The malloc family ----

    /// Allocates `size` bytes in lifetime class `life`, aligned to at least the next power
    /// of two of `size`, at most 4096 (so `malloc(max(size, align))` is an aligned
    /// allocation for any `align` up to 4096).
    ///
    /// Returns null when memory is exhausted. `size == 0` returns a dangling non-null
    /// pointer, to be freed with size 0 (or not at all). Cost: about 20 instructions when
    /// the calling thread's current block of the class has a free slot.
    #[inline]
    pub fn malloc(&self, size: usize, life: L) -> *mut u8 {
        self.core
            .alloc_sized::<false, _>(ThreadHeap, size, malloc_align(size), life.index())
    }

    /// Like [`Cohort::malloc`], with the memory zeroed. Memory fresh from the OS is not
    /// written again.
    #[inline]
    pub fn calloc(&self, size: usize, life: L) -> *mut u8 {
        self.core
            .alloc_sized::<true, _>(ThreadHeap, size, malloc_align(size), life.index())
    }

    /// Like [`Cohort::malloc`], and also returns the usable size: any size between `size`
    /// and it may be passed to [`Cohort::free`].
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
    /// A null `ptr` does nothing (as C's `free`), whatever the size.
    ///
    /// # Safety
    /// `ptr` is null, or came from this allocator's malloc family with lifetime class `life`
    /// and a size whose usable size `size` does not exceed, at least the size asked for; it
    /// was not freed since.
    #[inline]
    pub unsafe fn free(&self, ptr: *mut u8, size: usize, life: L) {
        // SAFETY: forwarded contract.
        unsafe {
            self.core.free_sized::<false, _>(
                ThreadHeap,
                ptr,
                size,
                malloc_align(size),
                life.index(),
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
    /// slot freed last). Cost: those checks (tens of instructions, and the pool lock for 1-
    /// and 2-byte sizes), then a free.
    ///
    /// # Safety
    /// As [`Cohort::free`], except that a call the checks reject is safe: it changes
    /// nothing. Outside checked mode, a double free of a slot that is not the first of its
    /// block's lists goes undetected and corrupts the block, as with [`Cohort::free`].
    pub unsafe fn try_free(&self, ptr: *mut u8, size: usize, life: L) -> Result<(), Misuse> {
        let (align, life) = (malloc_align(size), life.index());
        if ptr.is_null() || size == 0 {
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
    /// be allocated at all). A null `ptr` (or `old_size` 0) allocates `new_size` bytes.
    ///
    /// The old allocation is checked as [`Cohort::free`] checks it before anything else
    /// happens: misuse panics and changes nothing.
    ///
    /// # Safety
    /// As [`Cohort::free`] for `(ptr, old_size, life)`.
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
    unsafe fn resize_malloc<const ZERO: bool>(
        &self,
        ptr: *mut u8,
        old: usize,
        new: usize,
        life: L,
    ) -> *mut u8 {
        let (old, new) = (SizeAlign::malloc(old), SizeAlign::malloc(new));
        let life = life.index();
        // SAFETY: forwarded contract.
        unsafe { self.core.realloc_sized::<ZERO, false, _>(ThreadHeap, ptr, old, new, life) }
    }

    // ---- Layout forms ----

    /// Allocates for `layout` in lifetime class `life`, honouring `layout.align()` with the
    /// exact-fit class (a 24-byte, 8-aligned request takes a 24-byte slot). Null when memory
    /// is exhausted; a zero-size layout returns `layout.dangling()`.
    #[inline]
    pub fn alloc(&self, layout: Layout, life: L) -> *mut u8 {
        self.core
            .alloc_layout::<false, _>(ThreadHeap, layout.size(), layout.align(), life.index())
    }

    /// Like [`Cohort::alloc`], with the memory zeroed.
    #[inline]
    pub fn alloc_zeroed(&self, layout: Layout, life: L) -> *mut u8 {
        self.core
            .alloc_layout::<true, _>(ThreadHeap, layout.size(), layout.align(), life.index())
    }

    /// The usable size of an allocation for `layout`: any size from `layout.size()` up to it
    /// may be given back at free (with the same align).
    pub fn usable_size(&self, layout: Layout) -> usize {
        usable_size(layout.size(), layout.align())
    }

    /// Frees an allocation of [`Cohort::alloc`]; as [`Cohort::free`] for misuse and for a
    /// null `ptr` (nothing happens).
    ///
    /// # Safety
    /// `ptr` is null, or came from [`Cohort::alloc`] (or `alloc_zeroed`, `realloc`) of this allocator
    /// with lifetime class `life`, a layout of the same align, and a size from which
    /// `layout.size()` is in the usable range; it was not freed since.
    #[inline]
    pub unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout, life: L) {
        // SAFETY: forwarded contract.
        unsafe {
            self.core.free_layout::<false, _>(
                ThreadHeap,
                ptr,
                layout.size(),
                layout.align(),
                life.index(),
            )
        }
    }

    /// Resizes an allocation of [`Cohort::alloc`] to `new_size` bytes with the same align.
    ///
    /// # Safety
    /// As [`Cohort::dealloc`].
    pub unsafe fn realloc(
        &self,
        ptr: *mut u8,
        layout: Layout,
        new_size: usize,
        life: L,
    ) -> *mut u8 {
        let (old, new) = SizeAlign::layout_to(layout, new_size);
        let life = life.index();
        // SAFETY: forwarded contract.
        unsafe { self.core.realloc_sized::<false, false, _>(ThreadHeap, ptr, old, new, life) }
    }

    /// Calls `f` for every block in use (blocks held empty for reuse are skipped). A
    /// snapshot: counts of blocks other threads are using may be a moment old, and a block
    /// changing hands meanwhile is reported with its old or its new class, whole.
    /// Cost: one `mincore` call per block.
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
                life: b.life,
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
    /// `None` for large allocations, which have no block.
    pub fn block_of(&self, ptr: *const u8, size: usize) -> Option<usize> {
        self.block_of_layout(ptr, size, malloc_align(size))
    }

    /// The base address of the block holding an allocation for (size, align).
    pub fn block_of_layout(&self, ptr: *const u8, size: usize, align: usize) -> Option<usize> {
        let c = &CLASSES[class_of(size.max(1), align)?];
        Some(ptr as usize & !(c.block_size() - 1))
    }
}

/// The usable size of a request: its class's stride, or its page-rounded size when large.
fn usable_size(size: usize, align: usize) -> usize {
    if size == 0 {
        return 0;
    }
    match class_of(size, align) {
        Some(c) => CLASSES[c].stride as usize,
        None => os::page_round(size).unwrap_or(size),
    }
}

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
            .alloc_global::<false>(layout.size(), layout.align(), 0)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: GlobalAlloc's contract: ptr came from alloc with this layout.
        unsafe {
            self.core
                .free_layout::<true, _>(ThreadHeap, ptr, layout.size(), layout.align(), 0)
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.core
            .alloc_global::<true>(layout.size(), layout.align(), 0)
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (old, new) = SizeAlign::layout_to(layout, new_size);
        // SAFETY: GlobalAlloc's contract. Misuse aborts, as in dealloc.
        unsafe { self.core.realloc_sized::<false, true, _>(ThreadHeap, ptr, old, new, 0) }
    }
}

const _: () = assert!(MAX_SMALL_ALIGN == os::MIN_PAGE);
