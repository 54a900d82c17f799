//! What is at an address, for an instance: a small slot (its block's key: size class and
//! lifetime class), a medium run, a large allocation (the large table), or nothing of this
//! instance's; and the misuse reports of the frees without a size that find nothing there.
//!
//! Invariants: for `p` in the region, `p` is a small allocation exactly when its block
//! (`p & !(BLOCK_SIZE - 1)`) holds allocations and `slot_index(p % BLOCK_SIZE) <
//! capacity` ([`starts_slot`]), with `size = stride(key_class(key))`, `life =
//! key_life(key)`; for `p` outside it, a large allocation exactly when the large table
//! holds it; nothing found is never freed.

use super::*;

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
    pub(super) fn in_region_or_report(&self, p: *mut u8) -> (usize, usize) {
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
    pub(super) fn check_slot_start(&self, p: *mut u8) {
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
    pub(super) fn unsized_side(&self, p: *mut u8) -> Result<(SizeAlign, usize), Misuse> {
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
    pub(super) fn past_carved_end(&self, p: *mut u8) -> ! {
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
    pub(super) fn large_or_report(&self, p: *mut u8) -> Result<Allocation, Misuse> {
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
    pub(super) fn run_allocation(&self, p: *mut u8) -> Option<Allocation> {
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
