//! The allocator type: [`Cohort`], its malloc family, `GlobalAlloc`, and block reports.
//!
//! Routing of a request (size, align, lifetime class):
//!
//! - size 0: no memory; a dangling pointer aligned to the request (Rust's rule for
//!   zero-sized allocations). Freeing it with size 0 does nothing.
//! - a small class ([`class_of`]): the calling thread's heap; the fast path pops a slot of
//!   the current block of (class, life) with no lock and no atomic read-modify-write.
//! - tiny classes (1- and 2-byte slots): the calling thread's heap's tiny blocks, under the
//!   pool's lock; threads without a heap: the pool's blocks, under its lock.
//! - otherwise a large allocation: its own page-rounded mapping, no header. The size given
//!   back at free says it is large.

use crate::block::{header_of, key, Header, LocalFree, MAGIC};
use crate::class::{
    class_of, geometry_unchecked, malloc_align, Class, CLASSES, CLASS_COUNT, MAX_SMALL_ALIGN,
};
use crate::heap::{self, Heap};
use crate::large::LargeTable;
use crate::lifetime::Lifetime;
use crate::os;
use crate::pool::{Pool, EMPTY_KEY};
use crate::region::{BLOCK, TAIL};
use crate::sync::{spin_hint, spin_lock, AtomicPtr, AtomicU64, AtomicU8, Ordering, SpinLock};
use crate::tiny;
use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::fmt;
use core::marker::PhantomData;
use core::ptr;

/// True when every free is fully checked (foreign pointers, double frees).
pub(crate) const CHECKED: bool = cfg!(any(debug_assertions, feature = "checked"));

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
    /// The instance id (never reused), `u64::MAX` until the pool exists.
    instance: AtomicU64,
    pool: AtomicPtr<Pool>,
    /// The region's bounds, for the free fast path's check of foreign pointers.
    bounds: RegionBounds,
    reservation: usize,
    exact: bool,
    _life: PhantomData<fn(L) -> L>,
}

// SAFETY: the raw pool pointer is shared state designed for concurrent use (atomics and
// locks); nothing in a Cohort is tied to a thread.
unsafe impl<L: Lifetime> Sync for Cohort<L> {}
// SAFETY: as above.
unsafe impl<L: Lifetime> Send for Cohort<L> {}

impl<L: Lifetime> Default for Cohort<L> {
    fn default() -> Self {
        Self::new()
    }
}

/// The bounds of an instance's region, read by the free fast path to tell foreign pointers
/// (two instructions, with no pointer chase: plain fields of the instance).
///
/// Written once, by the thread that creates the instance's pool, before it publishes the
/// pool (Release); read without synchronisation by frees. A free that respects its contract
/// frees a pointer this instance allocated, so the pool's publication happened before it and
/// the read sees the written bounds; only a free of a pointer the instance never allocated
/// (already a broken contract) can race with the write, and it reads 0 (no pointer is in
/// an empty range: reported foreign) or the bounds.
struct RegionBounds {
    base: UnsafeCell<usize>,
    len: UnsafeCell<usize>,
}

impl RegionBounds {
    /// No region yet: no pointer is inside.
    const fn empty() -> RegionBounds {
        RegionBounds {
            base: UnsafeCell::new(0),
            len: UnsafeCell::new(0),
        }
    }

    /// Sets the bounds.
    ///
    /// # Safety
    /// Called once per instance, by the thread creating its pool, before publishing it.
    unsafe fn set(&self, base: usize, len: usize) {
        // SAFETY: the only write (caller); reads that could race it are of frees whose
        // contract is already broken (see the type).
        unsafe {
            *self.base.get() = base;
            *self.len.get() = len;
        }
    }

    /// True when `p` lies in the region.
    #[inline(always)]
    fn contains(&self, p: *mut u8) -> bool {
        // SAFETY: see the type: written once before any pointer of the region exists.
        let (base, len) = unsafe { (*self.base.get(), *self.len.get()) };
        (p as usize).wrapping_sub(base) < len
    }
}

/// What a free found wrong (see [`Cohort::free`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misuse {
    /// The pointer given to free.
    pub ptr: usize,
    /// The size given to free.
    pub size: usize,
    /// The lifetime class index given to free.
    pub life: usize,
    /// What is wrong.
    pub problem: Problem,
    /// The lifetime classes' names ([`Lifetime::NAMES`]), for the message; may be empty.
    pub life_names: &'static [&'static str],
}

/// The kinds of [`Misuse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The pointer is not in this allocator's memory.
    Foreign,
    /// The pointer's block holds another size class or lifetime class (or is empty).
    WrongBlock {
        /// The size class the size maps to.
        class: usize,
        /// Its stride.
        stride: usize,
        /// The block's size class (`None` for an empty or unreadable block).
        block_class: Option<usize>,
        /// The block's lifetime class.
        block_life: usize,
    },
    /// The pointer is inside a slot, not at its start.
    NotASlot {
        /// The block's stride.
        stride: usize,
    },
    /// The slot is already free.
    DoubleFree,
    /// The size says large, but no live large allocation starts at the pointer (a double
    /// free, a foreign pointer, or a size that is too large).
    NotLarge,
    /// A large allocation starts at the pointer, but of another length or lifetime class.
    LargeMismatch {
        /// Its mapped length.
        mapped: usize,
        /// Its lifetime class.
        life: usize,
    },
}

/// "lifetime class 1", or "lifetime class 1 (Request)" when the classes have names.
struct LifeName<'a>(usize, &'a [&'static str]);

impl fmt::Display for LifeName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lifetime class {}", self.0)?;
        match self.1.get(self.0) {
            Some(name) => write!(f, " ({name})"),
            None => Ok(()),
        }
    }
}

impl fmt::Display for Misuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let life = |l| LifeName(l, self.life_names);
        write!(
            f,
            "cohort: bad free of {:#x} (size {}, {}): ",
            self.ptr,
            self.size,
            life(self.life)
        )?;
        match &self.problem {
            Problem::Foreign => write!(f, "the pointer is not from this allocator"),
            Problem::WrongBlock {
                class,
                stride,
                block_class: Some(bc),
                block_life,
            } if bc == class => write!(
                f,
                "freed as {} but the block holds {} (the size matches: stride {stride} B)",
                life(self.life),
                life(*block_life)
            ),
            Problem::WrongBlock {
                class,
                stride,
                block_class: Some(bc),
                block_life,
            } => write!(
                f,
                "size {} is size class {class} (stride {stride} B) but the block holds size \
                 class {bc} (stride {} B) of {}",
                self.size,
                CLASSES[*bc].stride,
                life(*block_life)
            ),
            Problem::WrongBlock {
                class,
                stride,
                block_class: None,
                ..
            } => write!(
                f,
                "size {} is size class {class} (stride {stride} B) but the block is empty or \
                 not a block of that size (wrong size, or already freed)",
                self.size
            ),
            Problem::NotASlot { stride } => {
                write!(
                    f,
                    "the pointer is not the start of a slot (stride {stride} B)"
                )
            }
            Problem::DoubleFree => write!(f, "the slot is already free (double free)"),
            Problem::NotLarge => write!(
                f,
                "size {} is a large allocation, but none starts at the pointer (double free, \
                 foreign pointer, or wrong size)",
                self.size
            ),
            Problem::LargeMismatch { mapped, life: l } => write!(
                f,
                "the large allocation there maps {mapped} B in {}, which size {} and {} do \
                 not match",
                life(*l),
                self.size,
                life(self.life)
            ),
        }
    }
}

/// A fixed buffer for formatting a message without allocating.
struct StackBuf {
    buf: [u8; 512],
    len: usize,
}

impl fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Reports misuse: a panic from the direct API, an abort with the message from
/// `GlobalAlloc` (which must not unwind).
#[cold]
#[inline(never)]
fn report<const ABORT: bool>(m: Misuse) -> ! {
    if ABORT {
        let mut out = StackBuf {
            buf: [0; 512],
            len: 0,
        };
        let _ = fmt::write(&mut out, format_args!("{m}\n"));
        // SAFETY: writes our own buffer to stderr, then aborts; neither allocates.
        unsafe {
            libc::write(2, out.buf.as_ptr().cast(), out.len);
            libc::abort();
        }
    }
    panic!("{m}");
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
    /// The seed's measure: block bytes divided by usable bytes.
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
            instance: AtomicU64::new(u64::MAX),
            pool: AtomicPtr::new(ptr::null_mut()),
            bounds: RegionBounds::empty(),
            reservation,
            exact,
            _life: PhantomData,
        }
    }

    /// The pool, created on first use; `None` when the OS refuses the reservation.
    #[inline(always)]
    pub(crate) fn pool(&self) -> Option<&Pool> {
        let p = self.pool.load(Ordering::Acquire);
        if p.is_null() {
            return self.init_pool();
        }
        // SAFETY: a published pool lives until the Cohort drops.
        Some(unsafe { &*p })
    }

    /// Creates the pool. Initialisation runs under the lock of the process's instance
    /// list, which the fork handlers hold across `fork()`: a child never inherits an
    /// instance half initialised by a thread it does not have (it would wait for it
    /// forever).
    #[cold]
    #[inline(never)]
    fn init_pool(&self) -> Option<&Pool> {
        let mut list = fork::lock_list();
        let p = self.pool.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: a published pool lives until the Cohort drops.
            return Some(unsafe { &*p });
        }
        // The id is taken only once the pool exists: a failing creation, retried by every
        // call, must not use ids up.
        if !os::page_size_matches()
            || heap::NEXT_INSTANCE.load(Ordering::Relaxed) >= heap::MAX_INSTANCES
        {
            return None;
        }
        let pool = Pool::create(self.reservation, self.exact, L::COUNT, CHECKED);
        if pool.is_null() {
            return None;
        }
        // Ids are taken under the list lock: the test above still holds.
        let id = heap::NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed);
        fork::push(&mut list, pool);
        // SAFETY: the pool was just created, not yet shared; this thread holds the instance
        // list's lock, under which every initialisation runs, so it is the only writer of the
        // bounds, and it writes them before publishing the pool (see RegionBounds).
        unsafe {
            let region = &(*pool).region;
            self.bounds.set(region.base(), region.len());
        }
        self.instance.store(id, Ordering::Relaxed);
        self.pool.store(pool, Ordering::Release);
        // SAFETY: just created; lives until the Cohort drops.
        Some(unsafe { &*pool })
    }

    // ---- The malloc family (seed names) ----

    /// Allocates `size` bytes in lifetime class `life`, aligned to at least the next power
    /// of two of `size`, at most 4096 (so `malloc(max(size, align))` is an aligned
    /// allocation for any `align` up to 4096).
    ///
    /// Returns null when memory is exhausted. `size == 0` returns a dangling non-null
    /// pointer, to be freed with size 0 (or not at all). Cost: about 20 instructions when
    /// the calling thread's current block of the class has a free slot.
    #[inline]
    pub fn malloc(&self, size: usize, life: L) -> *mut u8 {
        self.alloc_sized::<false>(size, malloc_align(size), life.index())
    }

    /// Like [`Cohort::malloc`], with the memory zeroed. Memory fresh from the OS is not
    /// written again.
    #[inline]
    pub fn calloc(&self, size: usize, life: L) -> *mut u8 {
        self.alloc_sized::<true>(size, malloc_align(size), life.index())
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
    /// `checked` feature, foreign pointers and double frees panic too.
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
        unsafe { self.free_sized::<false>(ptr, size, malloc_align(size), life.index()) }
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
        let (old_align, new_align) = (malloc_align(old), malloc_align(new));
        // SAFETY: forwarded contract.
        unsafe {
            self.realloc_sized::<ZERO, false>(ptr, old, old_align, new, new_align, life.index())
        }
    }

    // ---- Layout forms ----

    /// Allocates for `layout` in lifetime class `life`, honouring `layout.align()` with the
    /// exact-fit class (a 24-byte, 8-aligned request takes a 24-byte slot). Null when memory
    /// is exhausted; a zero-size layout returns `layout.dangling()`.
    #[inline]
    pub fn alloc(&self, layout: Layout, life: L) -> *mut u8 {
        self.alloc_sized::<false>(layout.size(), layout.align(), life.index())
    }

    /// Like [`Cohort::alloc`], with the memory zeroed.
    #[inline]
    pub fn alloc_zeroed(&self, layout: Layout, life: L) -> *mut u8 {
        self.alloc_sized::<true>(layout.size(), layout.align(), life.index())
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
        unsafe { self.free_sized::<false>(ptr, layout.size(), layout.align(), life.index()) }
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
        let a = layout.align();
        // SAFETY: forwarded contract.
        unsafe {
            self.realloc_sized::<false, false>(ptr, layout.size(), a, new_size, a, life.index())
        }
    }

    // ---- Inner paths, on class and lifetime indices ----

    #[inline(always)]
    fn alloc_sized<const ZERO: bool>(&self, size: usize, align: usize, life: usize) -> *mut u8 {
        if size == 0 {
            return align as *mut u8;
        }
        self.alloc_nonzero::<ZERO>(size, align, life)
    }

    /// `alloc_sized` for a non-zero size (GlobalAlloc's contract spares the test).
    #[inline(always)]
    fn alloc_nonzero<const ZERO: bool>(&self, size: usize, align: usize, life: usize) -> *mut u8 {
        match heap::exact_class(size, align) {
            Some(class) => self.alloc_class::<ZERO>(class, life),
            None => self.alloc_above_exact::<ZERO>(size, align, life),
        }
    }

    /// Requests past the exact table (above 1 KiB, or aligned above it): out of line, so
    /// that the inlined path needs no stack frame.
    #[inline(never)]
    fn alloc_above_exact<const ZERO: bool>(
        &self,
        size: usize,
        align: usize,
        life: usize,
    ) -> *mut u8 {
        match class_of(size, align) {
            Some(class) => self.alloc_class::<ZERO>(class, life),
            None => self.alloc_large(size, align, life),
        }
    }

    /// The fast path: the calling thread's current block of (class, life) has a free slot.
    /// Budget, x86-64, with the class look-up before it (checked by `benches/iai.rs`): 20
    /// instructions in a `__rust_alloc` of its own, `ret` included: size index 3, bound 2,
    /// thread pointer 1, class 1, instance compare 3, heap and block 2, free-list pop 5,
    /// count 1, pointer 1. Inlined with a constant align: 18.
    #[inline(always)]
    fn alloc_class<const ZERO: bool>(&self, class: usize, life: usize) -> *mut u8 {
        let got = heap::with_current(self.instance.load(Ordering::Relaxed), |heap| {
            // SAFETY: class < CLASS_COUNT (class_of) and life < L::COUNT (Lifetime's
            // contract) index one of the heap's heads; a current block is live and owned by
            // this thread's heap (or is the never-written EMPTY_BLOCK, whose pop fails).
            let h = unsafe { &*heap::current_block(heap, class, life) };
            h.pop()
                .map(|(off, zeroed)| (h.base().wrapping_add(off as usize), zeroed))
        });
        match got {
            Some((p, zeroed)) => self.finish_alloc::<ZERO>(p, zeroed, class),
            None => self.alloc_class_slow::<ZERO>(class, life),
        }
    }

    #[inline(always)]
    pub(crate) fn finish_alloc<const ZERO: bool>(
        &self,
        p: *mut u8,
        zeroed: bool,
        class: usize,
    ) -> *mut u8 {
        // SAFETY: class came from class_of.
        let c = unsafe { geometry_unchecked(class) };
        if CHECKED {
            // SAFETY: the pool exists (p came from it).
            let pool = unsafe { &*self.pool.load(Ordering::Relaxed) };
            live_bit(pool, p, true);
        }
        if ZERO && !zeroed {
            // SAFETY: p is a slot of `stride` bytes, ours now.
            unsafe { ptr::write_bytes(p, 0, c.stride as usize) };
        }
        p
    }

    #[cold]
    #[inline(never)]
    fn alloc_class_slow<const ZERO: bool>(&self, class: usize, life: usize) -> *mut u8 {
        let instance = self.instance.load(Ordering::Relaxed);
        if heap::promote_instance(instance) {
            // The thread's previous heap, now the one the fast path reads.
            return self.alloc_class::<ZERO>(class, life);
        }
        let Some(pool) = self.pool() else {
            return ptr::null_mut();
        };
        // Again: the first use of the instance gave it its id just now.
        let instance = self.instance.load(Ordering::Relaxed);
        let mut heap = heap::current(instance);
        if heap.is_null() {
            heap = heap::join(pool, instance);
        }
        // SAFETY: join/current return null or a live heap of this instance, the calling
        // thread's.
        let got = match unsafe { heap.as_ref() } {
            None => pool.alloc_locked(&mut pool.lock(), class, life),
            Some(heap) if CLASSES[class].is_tiny() => heap.alloc_tiny(class, life),
            Some(heap) => heap.alloc_slow(class, life),
        };
        match got {
            Some((p, zeroed)) => self.finish_alloc::<ZERO>(p, zeroed, class),
            None => ptr::null_mut(),
        }
    }

    /// A large allocation: its own mapping, recorded in the pool's large table with its
    /// lifetime class. Null when the OS refuses.
    #[cold]
    #[inline(never)]
    pub(crate) fn alloc_large(&self, size: usize, align: usize, life: usize) -> *mut u8 {
        // Zero (GlobalAlloc misuse) maps nothing; a rounded size must fit in isize.
        if size == 0 || size.saturating_add(align) > isize::MAX as usize {
            return ptr::null_mut();
        }
        let (Some(len), Some(pool)) = (os::page_round(size), self.pool()) else {
            return ptr::null_mut();
        };
        // Fresh mappings read zero: calloc needs no memset.
        let p = os::map(len, align.max(os::PAGE));
        if !p.is_null() && !pool.large.lock().insert(p as usize, len, life) {
            // SAFETY: mapped just above, never handed out.
            unsafe { os::release(p, len) };
            return ptr::null_mut();
        }
        p
    }

    /// The free paths' entry: the class look-up, inlined for sizes up to 1 KiB. A null `p`
    /// does nothing (as C's free), nor does a zero size; both tests are out of line, so they
    /// cost the fast path nothing: a zero size wraps past the exact table into
    /// `free_above_exact`, and a null pointer fails the region-bounds check into
    /// `free_other`.
    #[inline(always)]
    unsafe fn free_sized<const ABORT: bool>(
        &self,
        p: *mut u8,
        size: usize,
        align: usize,
        life: usize,
    ) {
        match heap::exact_class(size, align) {
            // SAFETY: forwarded contract; class is the size's.
            Some(class) => unsafe { self.free_class::<ABORT>(p, size, class, life) },
            // SAFETY: forwarded contract.
            None => unsafe { self.free_above_exact::<ABORT>(p, size, align, life) },
        }
    }

    /// As [`Cohort::alloc_above_exact`], for frees.
    ///
    /// # Safety
    /// As [`Cohort::free`].
    #[inline(never)]
    unsafe fn free_above_exact<const ABORT: bool>(
        &self,
        p: *mut u8,
        size: usize,
        align: usize,
        life: usize,
    ) {
        if size == 0 {
            return;
        }
        match class_of(size, align) {
            // SAFETY: forwarded contract; class is the size's.
            Some(class) => unsafe { self.free_class::<ABORT>(p, size, class, life) },
            // SAFETY: forwarded contract: a large size.
            None => unsafe { self.free_large::<ABORT>(p, size, life) },
        }
    }

    /// The free fast path: the block is the calling thread's (its last used heap's) and
    /// holds (class, life); one compare checks both ([`heap::owns`]). Budget, x86-64, with
    /// the class look-up before it (checked by `benches/iai.rs`): 22 instructions in a
    /// `__rust_dealloc` of its own, `ret` included: size index 3, bound 2, thread pointer 1,
    /// class 1, header mask 2, owner-and-key compare 4, push 4, count 4 (an atomic's load,
    /// decrement, store and branch: a plain field would fold to 2, but snapshots read the
    /// count from other threads). Inlined with a constant align: 20. On top of that, two
    /// checks that hold in every build: the region bounds, so that a foreign pointer is
    /// reported and never dereferenced (4: copy, subtract, compare, branch), and the slot
    /// against the block's first free slot, a double free of the slot freed last (2:
    /// compare, branch). Measured by `cargo bench --bench iai`: a 16-byte malloc+free pair
    /// went from 39 to 46 instructions with them (inlined, static instance).
    ///
    /// # Safety
    /// As [`Cohort::free`], with `class` the class of the size.
    #[inline(always)]
    unsafe fn free_class<const ABORT: bool>(
        &self,
        p: *mut u8,
        size: usize,
        class: usize,
        life: usize,
    ) {
        if CHECKED {
            self.check_free::<ABORT>(p, size, class, life);
        }
        // Every exit to the cold paths is a jump to `free_other` (which tells misuse from a
        // remote free) or `free_slow_current`: calls to functions that never return would
        // need a stack frame.
        if self.bounds.contains(p) {
            // SAFETY: p lies in the region, which is readable everywhere, and its block is
            // the one its header mask finds (every block has the same size), so the header
            // read is the block's own.
            let h = unsafe { &*header_of(p) };
            if heap::owns(h.owner_key() ^ key(class, life) as u64) {
                // SAFETY: the slot is live (the caller says so; push_local checks the one
                // double free it can see) and its block is this thread's.
                match unsafe { h.push_local(p) } {
                    LocalFree::Done => return,
                    LocalFree::Slow => return Heap::free_slow_current(h),
                    // free_other finds the same and reports it.
                    LocalFree::AlreadyFree => {}
                }
            }
        }
        // SAFETY: forwarded contract.
        unsafe { self.free_other::<ABORT>(p, size, class, life) }
    }

    /// A free the fast path could not finish: the pointer is not in the region, or its block
    /// holds another (class, life), or the slot is already free, which is misuse; or the
    /// block belongs to another heap: a remote free.
    ///
    /// # Safety
    /// As [`Cohort::free_class`].
    #[cold]
    #[inline(never)]
    unsafe fn free_other<const ABORT: bool>(
        &self,
        p: *mut u8,
        size: usize,
        class: usize,
        life: usize,
    ) {
        if !self.bounds.contains(p) {
            if p.is_null() {
                return; // A null free does nothing (see `free_sized`).
            }
            return self.foreign::<ABORT>(p, size, life);
        }
        // SAFETY: as in free_class: p lies in the region, readable everywhere.
        let h = unsafe { &*header_of(p) };
        if !CHECKED && h.key() != key(class, life) {
            self.bad_key::<ABORT>(p, size, class, life);
        }
        // SAFETY: a live slot of block h (caller).
        unsafe { self.free_remote::<ABORT>(h, p, size, life) };
    }

    /// The block of slot `p` of (class, life), after the checks a free makes: the key
    /// compare in every build, everything in checked mode. Misuse is reported (it panics,
    /// or aborts when `ABORT`).
    ///
    /// # Safety
    /// As [`Cohort::free`]: `p` is a live allocation of this allocator.
    #[inline(always)]
    pub(crate) unsafe fn validated_block<const ABORT: bool>(
        &self,
        p: *mut u8,
        size: usize,
        class: usize,
        life: usize,
    ) -> &Header {
        let h = header_of(p);
        if CHECKED {
            self.check_free::<ABORT>(p, size, class, life);
        } else {
            if !self.bounds.contains(p) {
                self.foreign::<ABORT>(p, size, life);
            }
            // SAFETY: the caller's pointer is in a block of this allocator, whose header is
            // mapped.
            if unsafe { (*h).key() } != key(class, life) {
                self.bad_key::<ABORT>(p, size, class, life);
            }
        }
        // SAFETY: checked or promised by the caller: h is the live block holding slot p.
        unsafe { &*h }
    }

    /// A free of slot `p` of a block the calling thread does not own: lock-free push on its
    /// remote list, or the pool's lock for tiny blocks. A slot that is the first of the
    /// list it would join is already free: reported as a double free (`size` and `life`
    /// are the caller's, for the report).
    ///
    /// # Safety
    /// `p` is a live slot of block `h` (its size and lifetime class checked against the
    /// block's key).
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn free_remote<const ABORT: bool>(
        &self,
        h: &Header,
        p: *mut u8,
        size: usize,
        life: usize,
    ) {
        let off = h.offset_of(p);
        let owner = h.owner();
        // The block may be this thread's after all, in a heap it did not use last (it
        // allocates from several instances): the heap it used before (no search), or any
        // of its heaps, made current. Then the free is local, so the block's emptying is
        // seen.
        let mine = heap::promote_owner(owner)
            .or_else(|| (owner != 0).then(|| heap::switch_to_own(self.instance_id(), owner))?);
        if let Some(heap) = mine {
            // SAFETY: a live slot of a block of this thread's heap.
            if !unsafe { heap.free_local(h, p) } {
                self.double_free::<ABORT>(p, size, life);
            }
            return;
        }
        // SAFETY: the block exists, so the pool does.
        let pool = unsafe { &*self.pool.load(Ordering::Acquire) };
        if h.geometry().is_tiny() {
            if !h.is_slot(off as usize) {
                let stride = h.geometry().stride as usize;
                report::<ABORT>(self.misuse(p, size, life, Problem::NotASlot { stride }));
            }
            let mut st = pool.lock();
            // SAFETY: we hold the lock that owns tiny blocks; off is a slot of the block.
            if unsafe { tiny::is_first_free(h, off) } {
                drop(st);
                return self.double_free::<ABORT>(p, size, life);
            }
            // SAFETY: the caller guarantees a live slot; tiny blocks are the pool's.
            unsafe { pool.free_tiny(&mut st, h, off) };
        } else {
            if h.is_first_remote(off) {
                return self.double_free::<ABORT>(p, size, life);
            }
            // SAFETY: a live slot (caller).
            if unsafe { h.push_remote(off) } {
                pool.relist(h);
            }
            pool.after_remote_free(h);
        }
    }

    /// Frees a large allocation, after checking the large table (every build: a hash
    /// look-up beside a system call): the pointer must start a live large allocation of
    /// this lifetime class whose mapped length `size` rounds to.
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn free_large<const ABORT: bool>(
        &self,
        p: *mut u8,
        size: usize,
        life: usize,
    ) {
        if p.is_null() {
            return; // A null free does nothing (see `free_sized`).
        }
        let Some(pool) = self.pool_if_any() else {
            report::<ABORT>(self.misuse(p, size, life, Problem::Foreign));
        };
        let mut large = pool.large.lock();
        match large_match(&large, p, size, life) {
            Ok(mapped) => {
                large.remove(p as usize);
                drop(large);
                // SAFETY: a live large allocation of ours: a mapping of `mapped` bytes.
                unsafe { os::release(p, mapped) };
            }
            Err(problem) => {
                // (The lock is dropped first: reporting may allocate.)
                drop(large);
                report::<ABORT>(self.misuse(p, size, life, problem));
            }
        }
    }

    /// A misuse report of a free (or resize) of `p` with `size` and lifetime class `life`.
    fn misuse(&self, p: *mut u8, size: usize, life: usize, problem: Problem) -> Misuse {
        Misuse {
            ptr: p as usize,
            size,
            life,
            problem,
            life_names: L::NAMES,
        }
    }

    /// What a pointer outside the region is: a large allocation (freed with a small size), or
    /// not this allocator's at all. For the cold report paths (it takes the large lock).
    fn foreign_or_large(&self, pool: &Pool, p: *mut u8) -> Problem {
        match pool.large.lock().get(p as usize) {
            Some((mapped, life)) => Problem::LargeMismatch { mapped, life },
            None => Problem::Foreign,
        }
    }

    /// The release-build check failed: the block's key is not (class, life). Cost on the
    /// fast path: one `xor`, since the key shares the owner's word and compare.
    #[cold]
    #[inline(never)]
    fn bad_key<const ABORT: bool>(&self, p: *mut u8, size: usize, class: usize, life: usize) -> ! {
        report::<ABORT>(self.wrong_block(p, size, class, life))
    }

    /// A free of a pointer outside this instance's region. (Typed `()`, though it never
    /// returns, so that the fast path reaches it with a jump and needs no stack frame.)
    #[cold]
    #[inline(never)]
    fn foreign<const ABORT: bool>(&self, p: *mut u8, size: usize, life: usize) {
        let problem = match self.pool_if_any() {
            Some(pool) => self.foreign_or_large(pool, p),
            None => Problem::Foreign,
        };
        report::<ABORT>(self.misuse(p, size, life, problem))
    }

    /// A free of a slot that is already free (typed `()` as [`Cohort::foreign`]).
    #[cold]
    #[inline(never)]
    pub(crate) fn double_free<const ABORT: bool>(&self, p: *mut u8, size: usize, life: usize) {
        report::<ABORT>(self.misuse(p, size, life, Problem::DoubleFree))
    }

    fn wrong_block(&self, p: *mut u8, size: usize, class: usize, life: usize) -> Misuse {
        let c = &CLASSES[class];
        // SAFETY: only called after the header was found readable.
        let h = unsafe { &*header_of(p) };
        let block_class = (h.key() != EMPTY_KEY && h.class() < CLASS_COUNT).then(|| h.class());
        let problem = Problem::WrongBlock {
            class,
            stride: c.stride as usize,
            block_class,
            block_life: h.life(),
        };
        self.misuse(p, size, life, problem)
    }

    /// Checked mode: every check a free can make, before it touches anything.
    fn check_free<const ABORT: bool>(&self, p: *mut u8, size: usize, class: usize, life: usize) {
        if p.is_null() {
            return; // A null free does nothing (see `free_sized`).
        }
        let bad = |problem| self.misuse(p, size, life, problem);
        let pool = self.pool.load(Ordering::Acquire);
        // SAFETY: a non-null pool lives until the Cohort drops.
        let Some(pool) = (unsafe { pool.as_ref() }) else {
            report::<ABORT>(bad(Problem::Foreign));
        };
        let r = &pool.region;
        let c = &CLASSES[class];
        let base = p as usize & !(c.block_size() - 1);
        if !r.contains(p as usize) || !matches!(r.unit_state(r.unit_of(p as usize)), BLOCK | TAIL) {
            report::<ABORT>(bad(self.foreign_or_large(pool, p)));
        }
        // SAFETY: base lies in the region (p does, and blocks are aligned to their size);
        // the header is read only if its unit starts a block, so it is mapped.
        let h = unsafe { &*(base as *const Header) };
        if r.unit_state(r.unit_of(base)) != BLOCK || h.magic != MAGIC || h.key() != key(class, life)
        {
            let block_class = (r.unit_state(r.unit_of(base)) == BLOCK
                && h.magic == MAGIC
                && h.key() != EMPTY_KEY)
                .then(|| h.class());
            report::<ABORT>(bad(Problem::WrongBlock {
                class,
                stride: c.stride as usize,
                block_class,
                block_life: h.life(),
            }));
        }
        let off = p as usize - base;
        if !h.is_slot(off) {
            report::<ABORT>(bad(Problem::NotASlot {
                stride: c.stride as usize,
            }));
        }
        if !live_bit(pool, p, false) {
            report::<ABORT>(bad(Problem::DoubleFree));
        }
    }

    /// Resizes `(p, old, old_align)` to `(new, new_align)` in lifetime class `life`; with
    /// `ZERO`, the bytes from `old` to the new allocation's usable size read zero. The old
    /// allocation is checked first (as a free checks it), so a rejected call changes
    /// nothing: misuse panics, or aborts when `ABORT`. A null return (out of memory) leaves
    /// the old allocation as it was. A null `p` is a fresh allocation (C's realloc).
    ///
    /// Memory that may be dirty is zeroed, never fresh mappings: a slot's tail (in place, or
    /// a new slot not fresh from the OS), the tail of a large allocation's last page.
    ///
    /// # Safety
    /// As [`Cohort::free`] for `(p, old, life)` with `old_align`, unless `p` is null or `old`
    /// is 0.
    #[inline(always)]
    pub(crate) unsafe fn realloc_sized<const ZERO: bool, const ABORT: bool>(
        &self,
        p: *mut u8,
        old: usize,
        old_align: usize,
        new: usize,
        new_align: usize,
        life: usize,
    ) -> *mut u8 {
        // Inlined: both sizes in the same class of the exact table (a zero size wraps past
        // it), which stays in place after the old allocation's check.
        if let Some(class) = heap::exact_class(old, old_align) {
            if !p.is_null() && heap::exact_class(new, new_align) == Some(class) {
                // SAFETY: forwarded contract; both sizes are of `class`.
                return unsafe { self.resize_in_class::<ZERO, ABORT>(p, old, class, life) };
            }
        }
        // SAFETY: forwarded contract.
        unsafe { self.realloc_other::<ZERO, ABORT>(p, old, old_align, new, new_align, life) }
    }

    /// A resize within size class `class`: in place (every slot of the class fits both
    /// sizes), after the old allocation's check; with `ZERO` the slot's tail is zeroed.
    ///
    /// # Safety
    /// As [`Cohort::free`] for `(p, old, life)`; `class` is the class of `old` (and of the
    /// new size).
    #[inline(always)]
    unsafe fn resize_in_class<const ZERO: bool, const ABORT: bool>(
        &self,
        p: *mut u8,
        old: usize,
        class: usize,
        life: usize,
    ) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { self.check_small_old::<ABORT>(p, old, class, life) };
        if ZERO {
            // SAFETY: the slot holds `stride` bytes.
            unsafe { zero_range(p, old, CLASSES[class].stride as usize) };
        }
        p
    }

    /// Checks the old allocation of a resize as a free would (misuse is reported), leaving
    /// it live.
    ///
    /// # Safety
    /// As [`Cohort::free`] for `(p, old, life)`; `class` is the class of `old`.
    #[inline(always)]
    unsafe fn check_small_old<const ABORT: bool>(
        &self,
        p: *mut u8,
        old: usize,
        class: usize,
        life: usize,
    ) {
        // SAFETY: forwarded contract.
        unsafe { self.validated_block::<ABORT>(p, old, class, life) };
        if CHECKED {
            // The check cleared the slot's live bit, as for a free; it is live still.
            // SAFETY: the pool exists (p is one of its slots, checked).
            live_bit(unsafe { &*self.pool.load(Ordering::Relaxed) }, p, true);
        }
    }

    /// [`Cohort::realloc_sized`] past its inlined case.
    ///
    /// # Safety
    /// As [`Cohort::realloc_sized`].
    #[inline(never)]
    unsafe fn realloc_other<const ZERO: bool, const ABORT: bool>(
        &self,
        p: *mut u8,
        old: usize,
        old_align: usize,
        new: usize,
        new_align: usize,
        life: usize,
    ) -> *mut u8 {
        if old == 0 || p.is_null() {
            return self.alloc_sized::<ZERO>(new, new_align, life);
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
                unsafe { self.check_small_old::<ABORT>(p, old, class, life) };
            }
            None => {
                // SAFETY: forwarded contract.
                let done = unsafe {
                    self.realloc_large::<ZERO, ABORT>(p, old, old_align, new, new_align, life)
                };
                if let Some(q) = done {
                    return q;
                }
            }
        }
        if new == 0 {
            // SAFETY: forwarded contract.
            unsafe { self.free_sized::<ABORT>(p, old, old_align, life) };
            return new_align as *mut u8;
        }
        // A new allocation; with ZERO it reads zero (a large one is a fresh mapping).
        let q = self.alloc_sized::<ZERO>(new, new_align, life);
        if !q.is_null() {
            // SAFETY: both hold at least min(old, new) bytes and are distinct allocations;
            // the old one was checked above.
            unsafe {
                ptr::copy_nonoverlapping(p, q, old.min(new));
                self.free_sized::<ABORT>(p, old, old_align, life);
            }
        }
        q
    }

    /// [`Cohort::realloc_sized`] of a large allocation: checks it against the large table
    /// (misuse is reported before anything changes), then resizes it in place when the new
    /// size is large and rounds to the same pages, or remaps it. `None` when it must move
    /// (to a small class, a larger alignment, or the OS refused to remap).
    ///
    /// # Safety
    /// As [`Cohort::realloc_sized`].
    #[cold]
    #[inline(never)]
    unsafe fn realloc_large<const ZERO: bool, const ABORT: bool>(
        &self,
        p: *mut u8,
        old: usize,
        old_align: usize,
        new: usize,
        new_align: usize,
        life: usize,
    ) -> Option<*mut u8> {
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
        let stays_large = new != 0 && class_of(new, new_align).is_none();
        if !stays_large || old_align > os::PAGE || new_align > os::PAGE {
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

    /// Calls `f` for every block in use (blocks held empty for reuse are skipped). A
    /// snapshot: counts of blocks other threads are using may be a moment old, and a block
    /// changing hands meanwhile is reported with its old or its new class, whole.
    /// Cost: one `mincore` call per block.
    pub fn for_each_block(&self, mut f: impl FnMut(&BlockReport)) {
        let Some(pool) = self.pool_if_any() else {
            return;
        };
        let r = &pool.region;
        let carved = r.carved_units(&pool.state.lock().region);
        for u in 0..carved {
            if r.unit_state(u) != BLOCK {
                continue;
            }
            // SAFETY: a BLOCK unit starts a block whose header is initialised.
            let h = unsafe { &*r.unit_addr(u).cast::<Header>() };
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

    /// (large allocations, large bytes, retained empty blocks, lock acquisitions).
    pub(crate) fn pool_counters(&self) -> (usize, usize, usize, u64) {
        let Some(pool) = self.pool_if_any() else {
            return (0, 0, 0, 0);
        };
        let retained = Pool::retained_blocks(&pool.state.lock());
        let large = pool.large.lock();
        (
            large.count(),
            large.bytes,
            retained,
            pool.lock_count.load(Ordering::Relaxed),
        )
    }

    /// The instance id (`u64::MAX` before the pool exists).
    pub(crate) fn instance_id(&self) -> u64 {
        self.instance.load(Ordering::Relaxed)
    }

    pub(crate) fn pool_if_any(&self) -> Option<&Pool> {
        // SAFETY: a published pool lives until the Cohort drops.
        unsafe { self.pool.load(Ordering::Acquire).as_ref() }
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

/// The mapped length of the live large allocation at `p` when `size` rounds to it and `life`
/// is its lifetime class; else what is wrong.
fn large_match(large: &LargeTable, p: *mut u8, size: usize, life: usize) -> Result<usize, Problem> {
    match large.get(p as usize) {
        Some((mapped, l)) if Some(mapped) == os::page_round(size) && l == life => Ok(mapped),
        Some((mapped, l)) => Err(Problem::LargeMismatch { mapped, life: l }),
        None => Err(Problem::NotLarge),
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

/// Checked mode: the live bit of slot `p`.
pub(crate) fn live_bit_get(pool: &Pool, p: usize) -> bool {
    let r = &pool.region;
    let bit = p - r.base();
    // SAFETY: the shadow covers the region at one bit per byte and p is in the region.
    let word = unsafe { &*r.live_bits.add(bit / 64) };
    word.load(Ordering::Relaxed) & (1 << (bit % 64)) != 0
}

/// Checked mode: sets (`set`) or clears the live bit of slot `p`; returns the bit before.
fn live_bit(pool: &Pool, p: *mut u8, set: bool) -> bool {
    let r = &pool.region;
    let bit = p as usize - r.base();
    // SAFETY: the shadow covers the region at one bit per byte and p is in the region.
    let word = unsafe { &*r.live_bits.add(bit / 64) };
    let mask = 1u64 << (bit % 64);
    let old = if set {
        word.fetch_or(mask, Ordering::Relaxed)
    } else {
        word.fetch_and(!mask, Ordering::Relaxed)
    };
    old & mask != 0
}

impl<L: Lifetime> Drop for Cohort<L> {
    fn drop(&mut self) {
        let pool = *self.pool.get_mut();
        if pool.is_null() {
            return;
        }
        fork::unregister(pool);
        // SAFETY: `&mut self`: no thread uses this instance any more, so its heaps can be
        // detached and its memory released.
        unsafe {
            Heap::teardown(&*pool);
            Pool::destroy(pool);
        }
        // The calling thread's heap of it (now ORPHANED) goes at once; other threads
        // release theirs when their next look-up meets it.
        heap::release_orphans();
        #[cfg(test)]
        heap::hooks::teardown_goes_on(pool);
    }
}

// SAFETY: alloc returns null or a block of at least layout.size() bytes aligned to
// layout.align() (class_of picks a stride that is a multiple of the align, in a block whose
// slots are aligned to it; large allocations are aligned mappings); dealloc receives what
// alloc returned with the same layout. Misuse aborts rather than unwinds.
unsafe impl<L: Lifetime> GlobalAlloc for Cohort<L> {
    // GlobalAlloc's callers never pass a zero size (its contract), so these skip that
    // test; a zero size anyway gets a null return in every build (it wraps past the exact
    // table to the large path, which refuses it). Nor a null pointer to dealloc, which is
    // not tested either.
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.alloc_nonzero::<false>(layout.size(), layout.align(), 0)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: GlobalAlloc's contract: ptr came from alloc with this layout.
        unsafe { self.free_sized::<true>(ptr, layout.size(), layout.align(), 0) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.alloc_nonzero::<true>(layout.size(), layout.align(), 0)
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let a = layout.align();
        // SAFETY: GlobalAlloc's contract. Misuse aborts, as in dealloc.
        unsafe { self.realloc_sized::<false, true>(ptr, layout.size(), a, new_size, a, 0) }
    }
}

const _: () = assert!(MAX_SMALL_ALIGN == os::PAGE);

/// fork(): the instance list's lock and every instance's pool and large-table locks are taken
/// before the fork and released after it in both processes, so the child never inherits a
/// lock held by a thread it does not have, nor an instance half initialised (initialisation
/// runs under the list's lock).
mod fork {
    use super::*;
    use crate::sync::RawSpin;
    use parking_lot::lock_api::MutexGuard;

    pub(super) struct List(*mut Pool);
    // SAFETY: the list is only touched under its lock.
    unsafe impl Send for List {}

    static INSTANCES: SpinLock<List> = spin_lock(List(ptr::null_mut()));
    static REGISTERED: AtomicU8 = AtomicU8::new(0);

    /// Handlers not registered / being registered / registered.
    const NONE: u8 = 0;
    const REGISTERING: u8 = 1;
    const DONE: u8 = 2;

    /// Registers the fork handlers (once per process; other callers wait until they are),
    /// then takes the instance list's lock. The handlers are registered outside the lock:
    /// `pthread_atfork` waits for a fork in progress, whose `prepare` waits for the lock.
    pub(super) fn lock_list() -> MutexGuard<'static, RawSpin, List> {
        let mut round = 0;
        loop {
            match REGISTERED.compare_exchange(
                NONE,
                REGISTERING,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    os::at_fork(prepare, parent, child);
                    REGISTERED.store(DONE, Ordering::Release);
                    break;
                }
                Err(DONE) => break,
                Err(_) => {
                    spin_hint(round);
                    round += 1;
                }
            }
        }
        INSTANCES.lock()
    }

    /// Adds a fresh pool to the list (whose lock the caller holds).
    pub(super) fn push(list: &mut List, pool: *mut Pool) {
        // SAFETY: the pool is fresh and ours; the list lock guards `fork_next`.
        unsafe { (*pool).fork_next = list.0 };
        list.0 = pool;
    }

    pub(super) fn unregister(pool: *mut Pool) {
        let mut list = INSTANCES.lock();
        let mut at: *mut *mut Pool = &mut list.0;
        // SAFETY: every pool on the list is live until unregistered here.
        unsafe {
            while !(*at).is_null() {
                if *at == pool {
                    *at = (*pool).fork_next;
                    return;
                }
                at = &mut (**at).fork_next;
            }
        }
    }

    fn for_each(list: &List, f: impl Fn(&Pool)) {
        let mut p = list.0;
        while !p.is_null() {
            // SAFETY: pools on the list are live.
            let pool = unsafe { &*p };
            f(pool);
            p = pool.fork_next;
        }
    }

    unsafe extern "C" fn prepare() {
        let list = INSTANCES.lock();
        for_each(&list, |pool| {
            core::mem::forget(pool.state.lock());
            core::mem::forget(pool.large.lock());
        });
        core::mem::forget(list);
    }

    unsafe fn release_all() {
        // SAFETY: `prepare` locked the list and every pool in this process (parent) or in
        // the parent's image (child, where that thread is the only one).
        unsafe {
            let list = &*INSTANCES.data_ptr();
            for_each(list, |pool| {
                pool.large.force_unlock();
                pool.state.force_unlock();
            });
            INSTANCES.force_unlock();
        }
    }

    unsafe extern "C" fn parent() {
        // SAFETY: see release_all.
        unsafe { release_all() }
    }

    unsafe extern "C" fn child() {
        // SAFETY: `prepare` locked the list; this thread is the child's only one.
        for_each(unsafe { &*INSTANCES.data_ptr() }, Heap::after_fork_in_child);
        // SAFETY: see release_all.
        unsafe { release_all() }
    }
}
