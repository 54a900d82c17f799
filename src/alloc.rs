//! The alloc paths: the class look-up, the fast path ([`Instance::alloc_class`]: a slot of
//! the calling thread's current block, no lock, no atomic read-modify-write), its slow path
//! (the heap's other blocks, the pool), and large allocations (a mapping each).
//!
//! Routing of a request (size, align, lifetime class):
//!
//! - size 0: no memory; a dangling pointer aligned to the request (Rust's rule for
//!   zero-sized allocations). Freeing it with size 0 does nothing.
//! - a small class ([`class_of`]): the calling thread's heap; the fast path pops a slot of
//!   the current block of (class, life) with no lock and no atomic read-modify-write.
//! - tiny classes (1- and 2-byte slots): the calling thread's heap's tiny blocks, under the
//!   pool's lock; threads without a heap: the pool's blocks, under its lock.
//! - a medium request (above 16 KiB up to 1 MiB, aligned to at most a page): a run of
//!   granules in a medium block of its lifetime class, under the pool's lock (see
//!   `medium`); the size given back at free finds the run.
//! - otherwise a large allocation: its own page-rounded mapping, no header, taken from the
//!   cache of freed large mappings when one fits (see `large`'s cache), else mapped. The
//!   size given back at free says it is large.

#[cfg(doc)]
use crate::class::Lookup;
use crate::class::{class_of, geometry_unchecked, medium_granules, HeadIndex, CLASSES, GRANULE};
use crate::medium_cache::CACHED_MAX;
use crate::counters::Counter;
use crate::heap;
use crate::instance::{Instance, CHECKED};
use crate::live_bits::LiveBits;
use crate::os;
use crate::per_thread;
use crate::promotion;
use crate::route::{Route, ThreadHeap};
use crate::sync::Ordering;
use core::alloc::Layout;
use core::ptr;

impl Instance {
    /// Allocates `size` bytes aligned to `align` in lifetime class `life` on `route`'s
    /// heap; with `ZERO`, zeroed. Null when memory is exhausted; a zero size returns a
    /// dangling pointer aligned to `align`. The class look-up rounds the size up to the
    /// align ([`Lookup::exact_class`]): the malloc family's requests, whose align is the
    /// size's next power of two.
    #[inline(always)]
    pub(crate) fn alloc_sized<const ZERO: bool, R: Route>(
        &self,
        route: R,
        size: usize,
        align: usize,
        life: usize,
    ) -> *mut u8 {
        if size == 0 {
            return align as *mut u8;
        }
        let class = per_thread::exact_class(size, align);
        self.alloc_looked_up::<ZERO, R>(route, class, size, align, life)
    }

    /// As [`Instance::alloc_sized`] for a layout (every Rust type's size is a multiple of
    /// its align): the look-up that needs no rounding ([`Lookup::class_of_multiple`], one
    /// instruction less; other requests take the look-up out of line).
    #[inline(always)]
    pub(crate) fn alloc_layout<const ZERO: bool, R: Route>(
        &self,
        route: R,
        layout: Layout,
        life: usize,
    ) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        if size == 0 {
            return align as *mut u8;
        }
        let class = per_thread::class_of_multiple(size, align);
        self.alloc_looked_up::<ZERO, R>(route, class, size, align, life)
    }

    /// The allocation of a non-zero `size` whose table look-up gave `class` (`None`: past
    /// the table, the look-up out of line).
    #[inline(always)]
    fn alloc_looked_up<const ZERO: bool, R: Route>(
        &self,
        route: R,
        class: Option<usize>,
        size: usize,
        align: usize,
        life: usize,
    ) -> *mut u8 {
        match class {
            Some(class) => self.alloc_class::<ZERO, R>(route, class, life),
            None => self.alloc_above_exact::<ZERO, R>(route, size, align, life),
        }
    }

    /// The global allocator's alloc (`GlobalAlloc::alloc` and `alloc_zeroed`; a zero size,
    /// outside their contract, is null):
    /// as [`Instance::alloc_layout`] on the calling thread's heap, reached through the
    /// instance's thread-local slot ([`per_thread::row`]) rather than the thread's last used
    /// heap, so with no instance compare: an instance with no heap on the thread, or with
    /// no slot of its own, finds a row of empty blocks there, whose pop fails into
    /// [`Instance::alloc_global_slow`]. Every call for one instance must pass the same
    /// `life` (the slot holds that lifetime class's row).
    ///
    /// Budget, x86-64 (checked by `.ci/budget.sh`): 17 instructions in a `__rust_alloc` of
    /// its own, `ret` included: size test 4 (`lea`, `or`, `test`, branch:
    /// [`Lookup::class_of_multiple`]), thread pointer 1, class 1, slot 1, row and block 2,
    /// free-list pop 5, count 1, pointer 1, where the instance compare of `alloc_class`
    /// costs 3 and its heap load 1.
    #[inline(always)]
    pub(crate) fn alloc_global<const ZERO: bool>(
        &self,
        size: usize,
        align: usize,
        life: usize,
    ) -> *mut u8 {
        let Some(class) = per_thread::class_of_multiple(size, align) else {
            return Instance::alloc_global_above_exact::<ZERO>(size, align, self, life);
        };
        let slot = self.slot.load(Ordering::Relaxed) as usize;
        // SAFETY: slot < SLOTS (the field's invariant, see crate::instance).
        let row = unsafe { per_thread::row(slot) };
        // SAFETY: class < CLASS_COUNT (the exact table's), the row's length; its entry is
        // the current block of (class, life) of the thread's heap, live and owned by it, or
        // the never-written EMPTY_BLOCK, whose cursor is empty.
        match unsafe { &*row }.pop(class) {
            Some((p, zeroed)) => self.finish_alloc::<ZERO>(p, zeroed, class),
            None => Instance::alloc_global_slow::<ZERO>(size, self, class, life),
        }
    }

    /// [`Instance::alloc_global`]'s requests past the exact table. The size and align come
    /// first, in the registers the caller has them in: the fast path reaches this with a
    /// jump, moving no argument it shares with the fast path.
    #[inline(never)]
    fn alloc_global_above_exact<const ZERO: bool>(
        size: usize,
        align: usize,
        this: &Instance,
        life: usize,
    ) -> *mut u8 {
        this.alloc_above_exact::<ZERO, ThreadHeap>(ThreadHeap, size, align, life)
    }

    /// The slow path of [`Instance::alloc_global`]: first the quick collect of the current
    /// block's local frees (`Header::pop_collected`), else the thread's path
    /// ([`Instance::alloc_class`] on the heap it used last, joining or switching as
    /// needed), then the slot's row filled for the next call. A zero size (outside `GlobalAlloc`'s contract) is null: the fast
    /// path gives it class 0, a tiny class, whose heads have no current block, so its pop
    /// always fails into this function. The size comes first, in the register the caller
    /// has it in.
    #[cold]
    #[inline(never)]
    fn alloc_global_slow<const ZERO: bool>(
        size: usize,
        this: &Instance,
        class: usize,
        life: usize,
    ) -> *mut u8 {
        if size == 0 {
            return ptr::null_mut();
        }
        let slot = this.slot.load(Ordering::Relaxed) as usize;
        // SAFETY: as in `alloc_global`, whose pop failed on this entry.
        if let Some((p, zeroed)) = unsafe { &*per_thread::row(slot) }.pop_collected(class) {
            return this.finish_alloc::<ZERO>(p, zeroed, class);
        }
        let p = this.alloc_class::<ZERO, ThreadHeap>(ThreadHeap, class, life);
        // SAFETY: life is one of the instance's lifetime classes and the same on every call
        // (alloc_global's contract, which its callers keep).
        unsafe { per_thread::fill_row(this.instance.load(Ordering::Relaxed), life) };
        p
    }

    /// Requests the fast look-up passes on (from 2 KiB, or a size that is not a multiple of
    /// its align): out of line, so that the inlined path needs no stack frame.
    #[inline(never)]
    fn alloc_above_exact<const ZERO: bool, R: Route>(
        &self,
        route: R,
        size: usize,
        align: usize,
        life: usize,
    ) -> *mut u8 {
        match class_of(size, align) {
            Some(class) => self.alloc_class::<ZERO, R>(route, class, life),
            None => self.alloc_large::<ZERO, R>(route, size, align, life),
        }
    }

    /// Before a medium or large request finds the region full: gives back every empty
    /// block the caller may, as the small slow path does: the route's heap's, the calling
    /// thread's own heap's, the pool's, the kept ones (`heap::compact`), the empty medium
    /// block each lifetime class keeps, and (in a shared instance) dead processes' heaps'
    /// blocks, and what other live heaps keep free (their emptied returned blocks, their
    /// medium caches: `heap_handover::claim`); first, every thread's pending remote frees
    /// are pushed (their slots count as used until then, keeping blocks from emptying).
    /// Returns how many blocks (and runs), plus one
    /// when a batch had frees pending (its blocks may have been given back as they emptied).
    fn make_room<R: Route>(&self, route: R, pool: &crate::pool::Pool) -> usize {
        let instance = self.instance.load(Ordering::Relaxed);
        // Without the lock (a flush only tries it).
        let pushed = usize::from(self.flush_batches());
        let mut st = pool.lock();
        let mut freed = route
            .with_heap(instance, |heap| Some(heap.give_back_empty(&mut st)))
            .unwrap_or(0);
        // SAFETY: `find_own` gives null or the calling thread's own heap: it is its owner,
        // and no reference to its heads is alive (the thread is inside this allocation,
        // outside the heap's paths; the route's heap's reference above has ended).
        let own = unsafe { per_thread::find_own(instance).as_ref() };
        freed += heap::compact(own, pool, &mut st) + pool.compact_medium(&mut st);
        drop(st);
        // Dead processes' heaps taken over; what other live heaps keep that is free
        // (`heap_handover::claim`).
        freed + pushed + crate::heap_handover::reap_dead(pool) + crate::heap_handover::claim_idle(pool)
    }

    /// The fast path: the route's heap's current block of (class, life) has a free slot.
    /// Cost, x86-64, with the class look-up before it, in a function of its own: 19
    /// instructions, `ret` included: size test 4, thread pointer 1, class 1, instance
    /// compare 3, heap and block 2, free-list pop 5, count 1, pointer 1. The global
    /// allocator's alloc goes through the instance's slot instead ([`Instance::alloc_global`]:
    /// 17).
    #[inline(always)]
    fn alloc_class<const ZERO: bool, R: Route>(
        &self,
        route: R,
        class: usize,
        life: usize,
    ) -> *mut u8 {
        let got = route.with_heap(self.instance.load(Ordering::Relaxed), |heap| {
            // SAFETY: class < CLASS_COUNT (class_of) and life < L::COUNT (Lifetime's
            // contract) index one of the heap's heads; a current block is live and owned by
            // this thread's heap (or is the never-written EMPTY_BLOCK, whose cursor is
            // empty).
            unsafe { &*heap::current_row(heap, life) }.pop(class)
        });
        match got {
            Some((p, zeroed)) => self.finish_alloc::<ZERO>(p, zeroed, class),
            None => self.alloc_class_collect::<ZERO, R>(route, class, life),
        }
    }

    /// [`Instance::alloc_class`]'s miss: the quick collect of the current block's local
    /// frees (`Header::pop_collected`) in a function of its own, small (its cost is
    /// amortized over the slots it moves), else [`Instance::alloc_class_slow`].
    #[cold]
    #[inline(never)]
    fn alloc_class_collect<const ZERO: bool, R: Route>(
        &self,
        route: R,
        class: usize,
        life: usize,
    ) -> *mut u8 {
        let collected = route.with_heap(self.instance.load(Ordering::Relaxed), |heap| {
            // SAFETY: as in `alloc_class`, whose pop failed on this block.
            unsafe { &*heap::current_row(heap, life) }.pop_collected(class)
        });
        match collected {
            Some((p, zeroed)) => self.finish_alloc::<ZERO>(p, zeroed, class),
            None => self.alloc_class_slow::<ZERO, R>(route, class, life),
        }
    }

    /// The end of every small allocation: the live bit (checked mode), the zeroing.
    #[inline(always)]
    fn finish_alloc<const ZERO: bool>(&self, p: *mut u8, zeroed: bool, class: usize) -> *mut u8 {
        // SAFETY: class came from class_of.
        let c = unsafe { geometry_unchecked(class) };
        if CHECKED {
            // SAFETY: the pool exists (p came from it).
            let pool = unsafe { &*self.pool.load(Ordering::Relaxed) };
            if let Some(bits) = LiveBits::of(&pool.region) {
                bits.set_live(p as usize);
            }
        }
        if ZERO && !zeroed {
            // SAFETY: p is a slot of `stride` bytes, ours now.
            unsafe { ptr::write_bytes(p, 0, c.stride as usize) };
        }
        p
    }

    /// The slow path of [`Instance::alloc_class`] (after its quick collect): the route's heap
    /// made current, or joined; a slot from its other blocks or the pool ([`Heap::alloc_slow`](crate::heap::Heap::alloc_slow), tiny
    /// classes under the pool's lock); a thread without a heap allocates through the pool.
    #[cold]
    #[inline(never)]
    fn alloc_class_slow<const ZERO: bool, R: Route>(
        &self,
        route: R,
        class: usize,
        life: usize,
    ) -> *mut u8 {
        let instance = self.instance.load(Ordering::Relaxed);
        if route.promote(instance) {
            // The thread's previous heap, now the one the fast path reads.
            return self.alloc_class::<ZERO, R>(route, class, life);
        }
        let Some(pool) = self.pool() else {
            return ptr::null_mut();
        };
        pool.counters
            .add(HeadIndex::new(class, life).get(), Counter::AllocSlow, 1);
        // Again: the first use of the instance gave it its id just now.
        let instance = self.instance.load(Ordering::Relaxed);
        let heap = route.slow_heap(pool, instance);
        // SAFETY: the route gives null or a live heap of this instance that the caller
        // holds.
        let heap = unsafe { heap.as_ref() };
        let from = |heap: Option<&crate::heap::Heap>| match heap {
            None => pool.alloc_locked(&mut pool.lock(), class, life),
            Some(heap) if CLASSES[class].is_tiny() => heap
                .alloc_tiny(class, life)
                .or_else(|| promotion::alloc(heap, class, life)),
            Some(heap) => {
                // A slow path: the thread's pending remote frees go to their blocks.
                // SAFETY: the batch's blocks are this pool's, live while it holds their
                // slots.
                unsafe { heap.remote.try_flush_own(pool) };
                heap.alloc_slow(class, life, || per_thread::find_own(instance))
                    .inspect(|&(p, _)| {
                        // The block the slot came from collected its remote frees: the last
                        // promoted one among them clears its flag.
                        // SAFETY: p is a slot of a live block of this heap.
                        promotion::settle(heap, unsafe { &*crate::block::header_of(p) });
                    })
                    .or_else(|| promotion::alloc(heap, class, life))
            }
        };
        // Out of memory: in a shared instance, dead processes' heaps may hold free slots
        // and empty blocks; taken over, they are the pool's. Other threads' batches may
        // hold frees into the blocks (counted used until pushed: `crate::remote`): pushed
        // now (the caller's own went at `from`'s start). Then once more.
        let got = from(heap).or_else(|| {
            let reaped = crate::heap_handover::reap_dead(pool);
            (self.flush_batches() | (reaped > 0)).then(|| from(heap))?
        });
        // Then what other live heaps keep that is free: their blocks other threads'
        // frees emptied, their medium caches (`heap_handover::claim`). Then once more.
        let got = got.or_else(|| (crate::heap_handover::claim_idle(pool) > 0).then(|| from(heap))?);
        match got {
            Some((p, zeroed)) => self.finish_alloc::<ZERO>(p, zeroed, class),
            None => self.alloc_fallback::<ZERO>(pool, class, life),
        }
    }

    /// A small request a full region cannot serve: null, or, in a region that falls back
    /// ([`crate::RegionOptions::fallback`]), a private mapping of the class's stride
    /// (page-rounded) in the large table, which the frees of the class's sizes find
    /// (`free::Instance::free_fallback`).
    #[cold]
    #[inline(never)]
    fn alloc_fallback<const ZERO: bool>(&self, pool: &crate::pool::Pool, class: usize, life: usize) -> *mut u8 {
        let Some(len) = os::page_round(CLASSES[class].stride as usize) else {
            return ptr::null_mut();
        };
        if !pool.region.falls_back() {
            return ptr::null_mut();
        }
        // Fresh mappings read zero, and a slot's alignment is at most a page. The entry keeps
        // the class: the slot's frees must name it.
        let request = crate::large::Request::small(class, life);
        crate::large::allocate::<ZERO>(&pool.large, len, os::MIN_PAGE, request, crate::decay::now())
    }

    /// A medium or large allocation. A medium request (see `medium`) is a run of granules
    /// in a medium block, in every region. A large one, in a region that serves large
    /// allocations (shared, file, fixed capacity), is a run of the region's units: a mapping
    /// of this process's own would be invisible to the others, or uncounted; elsewhere, its
    /// own mapping (a cached one of a similar length, else a fresh one), recorded in the
    /// pool's large table with its lifetime class. A request the region cannot serve first
    /// gives back the empty blocks the caller may ([`Instance::make_room`], as out of memory
    /// does for a small request: see `Heap::alloc_slow`) and tries once more; then what a
    /// full region does: a mapping of its own where the region maps (private, or falls
    /// back), null otherwise. With `ZERO` it reads zero. Null when the OS refuses.
    #[cold]
    #[inline(never)]
    pub(crate) fn alloc_large<const ZERO: bool, R: Route>(
        &self,
        route: R,
        size: usize,
        align: usize,
        life: usize,
    ) -> *mut u8 {
        // Zero (GlobalAlloc misuse) maps nothing; a rounded size must fit in isize.
        if size == 0 || size.saturating_add(align) > isize::MAX as usize {
            return ptr::null_mut();
        }
        let (Some(len), Some(pool)) = (os::page_round(size), self.pool()) else {
            return ptr::null_mut();
        };
        let medium = medium_granules(size, align);
        if let Some(granules) = medium {
            // A run the heap's cache kept: no lock.
            let instance = self.instance.load(Ordering::Relaxed);
            let cached = route.with_heap(instance, |heap| {
                let p = if granules <= CACHED_MAX {
                    pool.medium_cache_alloc(&heap.medium, granules, align, life)
                } else {
                    ptr::null_mut()
                };
                Some((p, heap.medium.tick()))
            });
            // A thread with no heap yet joins one, whose cache its frees fill.
            let (p, tick) = cached.unwrap_or_else(|| {
                route.slow_heap(pool, instance);
                (ptr::null_mut(), false)
            });
            if tick {
                // What is kept unused goes back on the delay: the pool's empty blocks and
                // medium pages, the cached large mappings, and the calling thread's idle
                // current blocks' pages.
                let now = crate::decay::now();
                pool.decay_medium_if_due(now);
                pool.decay_large_cache(now);
                self.give_back_idle_own(now);
            }
            if !p.is_null() {
                if ZERO {
                    // SAFETY: the run just taken, ours: `granules` granules.
                    unsafe { ptr::write_bytes(p, 0, granules * GRANULE) };
                }
                return p;
            }
        }
        let serves_large = pool.region.serves_large();
        let from_region = || match medium {
            Some(granules) => pool.medium_alloc::<ZERO>(granules, align, life),
            None if serves_large => pool.alloc_run::<ZERO>(len, align.max(os::MIN_PAGE), life),
            None => ptr::null_mut(),
        };
        let mut p = from_region();
        if p.is_null() && serves_large && self.make_room(route, pool) > 0 {
            p = from_region();
        }
        if !p.is_null() || (serves_large && !pool.region.falls_back()) {
            return p;
        }
        // A private region, or a full region that falls back: a mapping of its own. One
        // clock read serves the cache and the empty blocks.
        let now = crate::decay::now();
        // A medium request keeps its granule count: its frees name it, as in the region.
        let request = crate::large::Request::sized(size, align, life);
        let p = crate::large::allocate::<ZERO>(&pool.large, len, align.max(os::MIN_PAGE), request, now);
        // A slow path: empty blocks unused for the delay go back (see `pool`'s `empty`).
        pool.decay_if_due(now);
        self.give_back_idle_own(now);
        p
    }

    /// From a large path at `now`: the calling thread's own heap of the instance, if it
    /// has one, gives back the pages of its idle current blocks when its look is due
    /// (`crate::heap`'s idle module): a thread whose small allocations all hit its current
    /// blocks still returns a burst's pages.
    pub(crate) fn give_back_idle_own(&self, now: u64) {
        let own = per_thread::find_own(self.instance.load(Ordering::Relaxed));
        if !own.is_null() {
            // SAFETY: the calling thread's own heap: it is its owner, and no reference to
            // its heads is alive (the thread is inside a large allocation or free, outside
            // the heap's paths).
            unsafe { (*own).give_back_idle_current(now) };
        }
    }
}
