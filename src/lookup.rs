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

/// True when `p`, a pointer in a small block of geometry `block`, starts one of its slots:
/// `slot_index(p % BLOCK_SIZE) < capacity` (blocks are aligned to their size).
#[inline(always)]
fn starts_slot(p: *mut u8, block: &Class) -> bool {
    block.slot_index((p as usize % BLOCK_SIZE) as u32) < block.capacity
}

impl Instance {
    /// The (size class, lifetime class) of the block holding `p`, a pointer below the
    /// region's carved end ([`Instance::carved_offset`]), and the block's geometry (the size class's own, but for a promoted slot: see
    /// [`crate::promotion`]); `None` when the block holds no allocations (an empty or
    /// never-used unit).
    #[inline(always)]
    fn small_at(&self, p: *mut u8) -> Option<(usize, usize, &'static Class)> {
        debug_assert!(self.in_carved(p));
        // SAFETY: p lies below the carved end, which is accessible; its header mask finds
        // its block's header (every block has the same size and alignment).
        let h = unsafe { &*header_of(p) };
        let key = h.key();
        let class = key_class(key);
        if h.is_promoting() && key != EMPTY_KEY {
            return self.promoted_at(h, p);
        }
        (key != EMPTY_KEY && class < CLASS_COUNT).then(|| (class, key_life(key), &CLASSES[class]))
    }

    /// For `p` in the region: `None` when its block is not a medium block; else the live
    /// medium allocation starting at `p`, or what a free of `p` without its size would be
    /// (an interior pointer, a double free), from the block's run table under the pool
    /// lock.
    #[cold]
    #[inline(never)]
    fn medium_at(&self, p: *mut u8) -> Option<Result<Allocation, Problem>> {
        let pool = self.pool_if_any()?;
        if !pool.block_at(p).is_some_and(is_medium) {
            return None;
        }
        Some(match pool.medium_at(p) {
            Some((usable, life)) => Ok(Allocation {
                usable,
                life,
                large: false,
            }),
            // No run starts at p: the check names why (with a size no run has).
            None => Err(pool
                .medium_check(p, usize::MAX, 0)
                .err()
                .unwrap_or(Problem::NotARun)),
        })
    }

    /// (usable size, lifetime class) of the allocation starting at `p`, a pointer below the
    /// region's carved end, for a free, resize or size query without its size: a small class's stride
    /// (which maps back to the class with `SMALL_ALIGN`) or a medium run's bytes. Misuse
    /// aborts, as [`Cohort::free_unsized`] says: a pointer into a block holding no
    /// allocations, inside a medium run, or not at a slot's start in a small block
    /// ([`Class::slot_index`]: a multiply, no division, so the C `free` pays it in every
    /// build).
    #[inline(always)]
    #[track_caller]
    fn in_region_or_report(&self, p: *mut u8) -> (usize, usize) {
        match self.small_at(p) {
            Some((class, life, block)) => {
                if !starts_slot(p, block) {
                    self.not_a_slot(p);
                }
                (CLASSES[class].stride as usize, life)
            }
            None => self.medium_or_report(p),
        }
    }

    /// [`Instance::in_region_or_report`] of a pointer in a block holding no small class.
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn medium_or_report(&self, p: *mut u8) -> (usize, usize) {
        match self.medium_at(p) {
            Some(Ok(found)) => (found.usable, found.life),
            Some(Err(problem)) => report::<true>(self.misuse(p, 0, 0, problem)),
            // Every slot of a block holding no allocations is free.
            None => report::<true>(self.misuse(p, 0, 0, Problem::DoubleFree)),
        }
    }

    /// Reports `p` (it aborts) when it lies in a small block of the region and starts no
    /// slot of it; anything else is left alone. See [`Cohort::check_slot_start`]. The
    /// block's key names its own class whether or not it holds promoted slots (the flag is
    /// in the owner's bits), so the check needs no more than the key.
    #[inline(always)]
    #[track_caller]
    fn check_slot_start(&self, p: *mut u8) {
        // Past the carved end nothing is read (the free reports the pointer).
        if !self.in_carved(p) {
            return;
        }
        // SAFETY: p lies below the carved end, which is accessible; its header mask finds
        // its block's header (every block has the same size and alignment).
        let class = unsafe { &*header_of(p) }.class();
        if class < CLASS_COUNT && !starts_slot(p, &CLASSES[class]) {
            self.not_a_slot_unless_run(p);
        }
    }

    /// [`Instance::not_a_slot`], but a pointer in a run of the region's units (a large
    /// allocation, whose first bytes the header read took for a block's key) is left alone.
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn not_a_slot_unless_run(&self, p: *mut u8) {
        if !self.in_run(p) {
            self.not_a_slot(p);
        }
    }

    /// Reports `p`, in a small block of the region but at no slot's start, freed, resized
    /// or asked about without its size.
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn not_a_slot(&self, p: *mut u8) -> ! {
        // SAFETY: p lies below the carved end (`check_slot_start`, `in_region_or_report`),
        // which is accessible; its header mask finds its block's header, which holds a
        // small class.
        let h = unsafe { &*header_of(p) };
        let stride = h.geometry().stride as usize;
        report::<true>(self.misuse(p, 0, h.life(), Problem::NotASlot { stride }))
    }

    /// The allocation starting at `p`, a non-null pointer, as the unsized resize and size
    /// query take it: the (size, align) a sized path takes it with and its lifetime class.
    /// Misuse in this allocator's memory aborts, as [`Cohort::free_unsized`] says (a
    /// pointer inside a small slot too). [`Problem::Foreign`] for any other pointer,
    /// nothing done.
    #[track_caller]
    fn unsized_side(&self, p: *mut u8) -> Result<(SizeAlign, usize), Misuse> {
        if self.in_run(p) {
            let Some(found) = self.run_allocation(p) else {
                report::<true>(self.misuse(p, 0, 0, Problem::NotLarge));
            };
            return Ok((found.side(), found.life));
        }
        if !self.bounds.contains(p) {
            let found = self.large_or_report(p)?;
            return Ok((found.side(), found.life));
        }
        if !self.in_carved(p) {
            self.past_carved_end(p);
        }
        let (usable, life) = self.in_region_or_report(p);
        let side = SizeAlign {
            size: usable,
            align: SMALL_ALIGN,
        };
        Ok((side, life))
    }

    /// Reports `p`, in the region past its carved end, freed, resized or asked about
    /// without its size: in no block (as a block holding no allocations, every slot of
    /// which is free).
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn past_carved_end(&self, p: *mut u8) -> ! {
        report::<true>(self.misuse(p, 0, 0, Problem::DoubleFree))
    }

    /// [`Instance::small_at`] in a block that may hold promoted slots: the class the slot's
    /// request was made with (see [`crate::promotion`]).
    #[cold]
    #[inline(never)]
    fn promoted_at(
        &self,
        h: &crate::block::Header,
        p: *mut u8,
    ) -> Option<(usize, usize, &'static Class)> {
        let pool = self.pool_if_any()?;
        let class = crate::promotion::class_of_slot(&pool.region, h, p);
        (class < CLASS_COUNT).then(|| (class, h.life(), h.geometry()))
    }

    /// The large allocation starting at `p` (outside the region), from the large table
    /// under its lock; a small or medium request the region served from a mapping of its
    /// own is small (its class's stride) or medium (its granules), as its frees are.
    #[cold]
    #[inline(never)]
    fn large_at(&self, p: *mut u8) -> Option<Allocation> {
        let pool = self.pool_if_any()?;
        let found = pool.large.lock().get(p as usize)?;
        let usable = match found.request.kind {
            Kind::Large => found.len,
            Kind::Medium(granules) => granules * GRANULE,
            Kind::Small(class) => CLASSES[class].stride as usize,
        };
        Some(Allocation {
            usable,
            life: found.request.life,
            large: found.request.kind == Kind::Large,
        })
    }

    /// The large allocation starting at `p`, a non-null pointer outside the region, for a
    /// free or resize without its size ([`Instance::large_at`]). A pointer into this
    /// allocator's mappings that starts no live allocation aborts, as [`Cohort::free_unsized`]
    /// says: one in a freed mapping the cache keeps (a double free), or one inside a live
    /// allocation. Any other pointer is [`Problem::Foreign`], nothing done: the caller may
    /// hand it to the allocator it came from, which must never be given cohort's memory.
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn large_or_report(&self, p: *mut u8) -> Result<Allocation, Misuse> {
        if let Some(found) = self.large_at(p) {
            return Ok(found);
        }
        let problem = self
            .pool_if_any()
            .and_then(|pool| pool.large.lock().not_a_start(p as usize));
        match problem {
            Some(problem) => report::<true>(self.misuse(p, 0, 0, problem)),
            None => Err(self.misuse(p, 0, 0, Problem::Foreign)),
        }
    }

    /// The run of the region's units starting at `p` (a large allocation inside the
    /// region), from its unit's word.
    #[cold]
    #[inline(never)]
    fn run_allocation(&self, p: *mut u8) -> Option<Allocation> {
        let run = self.pool_if_any()?.run_at(p)?;
        Some(Allocation {
            usable: run.len,
            life: run.life,
            large: true,
        })
    }

    /// The allocation `p` points into: from its block's key inside the region (or its
    /// run's word, for a large allocation there), from the large table outside it. `None`
    /// when `p` is not this instance's (or lies in a block holding no allocations, or
    /// inside a run but not at its start). Takes the large table's lock for pointers outside
    /// the region.
    #[inline]
    pub(crate) fn allocation_at(&self, p: *const u8) -> Option<Allocation> {
        let p = p.cast_mut();
        if !self.bounds.contains(p) {
            return self.large_at(p);
        }
        if self.in_run(p) {
            return self.run_allocation(p);
        }
        if !self.in_carved(p) {
            return None;
        }
        let Some((class, life, _)) = self.small_at(p) else {
            return self.medium_at(p)?.ok();
        };
        Some(Allocation {
            usable: CLASSES[class].stride as usize,
            life,
            large: false,
        })
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

#[cfg(test)]
mod tests {
    use crate::class::{CLASSES, GRANULE, MAX_MEDIUM, MAX_SMALL};
    use crate::{Cohort, Problem};
    use core::alloc::{GlobalAlloc, Layout};

    crate::lifetime_classes! {
        enum Life { A, B }
    }

    #[test]
    fn every_class_medium_and_large_size_is_found_and_freed_without_its_size() {
        let a = Cohort::<Life>::new();
        let mut sizes: Vec<usize> = CLASSES.iter().map(|c| c.stride as usize).collect();
        sizes.extend([MAX_SMALL + 1, 100_000, MAX_MEDIUM, MAX_MEDIUM + 1, 3 << 20]);
        for &size in &sizes {
            for life in [Life::A, Life::B] {
                let p = a.malloc(size, life);
                let found = a.allocation_at(p).expect("found");
                assert_eq!(found.life, life as usize, "size {size}");
                assert_eq!(found.large, size > MAX_MEDIUM, "size {size}");
                assert!(found.usable >= size, "size {size}: {found:?}");
                if size > MAX_SMALL && size <= MAX_MEDIUM {
                    assert_eq!(found.usable, size.next_multiple_of(GRANULE), "size {size}");
                }
                // SAFETY: allocated just above.
                unsafe { a.free_unsized(p) }.unwrap();
            }
        }
        assert!(a.is_empty());
    }

    #[test]
    fn a_pointer_of_another_allocator_is_refused_with_nothing_changed() {
        let a = Cohort::<()>::new();
        let keep = a.malloc(64, ());
        let other = Box::new([7u8; 64]);
        let p = Box::into_raw(other).cast::<u8>();
        assert_eq!(a.allocation_at(p), None);
        // SAFETY: not this allocator's: refused.
        let err = unsafe { a.free_unsized(p) }.unwrap_err();
        assert_eq!(err.problem, Problem::Foreign);
        // SAFETY: as above.
        let err = unsafe { a.realloc_unsized(p, 128, 16) }.unwrap_err();
        assert_eq!(err.problem, Problem::Foreign);
        // SAFETY: the box's own pointer, unchanged.
        let back = unsafe { Box::from_raw(p.cast::<[u8; 64]>()) };
        assert_eq!(*back, [7u8; 64]);
        // SAFETY: allocated above.
        unsafe { a.free(keep, 64, ()) };
        // SAFETY: null does nothing.
        unsafe { a.free_unsized(core::ptr::null_mut()) }.unwrap();
    }

    #[test]
    fn realloc_without_size_keeps_contents_and_class_across_small_and_large() {
        let a = Cohort::<Life>::new();
        let mut p = a.malloc(10, Life::B);
        // SAFETY: 10 bytes allocated.
        unsafe { core::ptr::write_bytes(p, 0x5a, 10) };
        let mut len = 10;
        for new in [24, 1000, 5000, 40_000, 3 << 20, 100, 7] {
            // SAFETY: p is live, of this allocator.
            let q = unsafe { a.realloc_unsized(p, new, 16) }.unwrap();
            assert!(!q.is_null());
            assert_eq!(q as usize % 16, 0);
            for i in 0..len.min(new) {
                // SAFETY: q holds at least min(len, new) bytes.
                assert_eq!(unsafe { *q.add(i) }, 0x5a, "byte {i} after {len} -> {new}");
            }
            // SAFETY: q holds new bytes.
            unsafe { core::ptr::write_bytes(q, 0x5a, new) };
            assert_eq!(a.allocation_at(q).unwrap().life, Life::B as usize);
            (p, len) = (q, new);
        }
        // SAFETY: live.
        unsafe { a.free_unsized(p) }.unwrap();
        assert!(a.is_empty());
    }

    #[test]
    fn an_aligned_large_allocation_of_one_page_is_freed_and_resized_as_large() {
        let a = Cohort::<()>::new();
        // Large only through its alignment: its mapping is a single page.
        let layout = Layout::from_size_align(100, 8192).unwrap();
        // SAFETY: a non-zero layout.
        let p = unsafe { GlobalAlloc::alloc(&a, layout) };
        assert_eq!(p as usize % 8192, 0);
        let found = a.allocation_at(p).unwrap();
        assert!(found.large && found.usable == a.usable_size(layout), "{found:?}");
        // SAFETY: live; 100 bytes.
        unsafe { p.write_bytes(3, 100) };
        // SAFETY: live.
        let q = unsafe { a.realloc_unsized(p, 200, 16) }.unwrap();
        // SAFETY: q holds 200 bytes, the first 100 copied.
        assert_eq!(unsafe { *q.add(99) }, 3);
        // SAFETY: live.
        unsafe { a.free_unsized(q) }.unwrap();
        assert!(a.is_empty());
    }
}
