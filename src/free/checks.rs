//! The checks a free makes before it touches anything, and the reports of what they find:
//! in every build the region bounds, the block's key and the one double free the block's
//! first free slot shows (the fast path's compares; [`Instance::check_kept_slot`] for a
//! resize's old allocation); in checked mode everything, with the live bits
//! ([`Instance::find_misuse`]); a zero size ([`Instance::check_zero_size`]).

use crate::block::{header_of, key, Header, MAGIC};
use crate::class::{class_of, geometry_unchecked, BLOCK_SIZE, CLASSES, CLASS_COUNT};
use crate::instance::{Instance, CHECKED};
use crate::live_bits::LiveBits;
use crate::large::Request;
use crate::misuse::{report, Misuse, Problem};
use crate::pool::{Pool, EMPTY_KEY};
use crate::promotion;
use crate::region::BLOCK;
use crate::route::Route;
use crate::sync::Ordering;
use crate::tiny;

impl Instance {
    /// A free with size 0, which frees nothing: misuse unless `p` is null or the pointer of
    /// a zero-size request ([`Instance::check_zero_size`]), reported.
    #[cold]
    #[inline(never)]
    #[track_caller]
    pub(super) fn free_zero_size<const ABORT: bool>(&self, p: *mut u8, life: usize) {
        if let Err(m) = self.check_zero_size(p, life) {
            report::<ABORT>(m);
        }
    }

    /// The check of a free (or a resize's old allocation) of `p` with size 0, which is
    /// right for null and for the pointer of a zero-size request, and frees nothing. That
    /// pointer is the request's alignment ([`Instance::alloc_sized`]), a power of two,
    /// which never starts a slot: the region starts on a block boundary, so a power of two
    /// inside it is a block's base, where the block's header lies. Any other pointer that
    /// lies in the region or starts a large allocation is an allocation (live or freed)
    /// given size 0: misuse, returned with the block's or the large allocation's class.
    /// Other pointers are not this allocator's concern with size 0 (left alone, as a zero
    /// size always was). A large allocation that happens to start at a power of two, given
    /// size 0, is taken for a zero-size request's pointer: unreported, it stays live. Changes nothing; takes the large table's lock
    /// for a pointer outside the region.
    pub(crate) fn check_zero_size(&self, p: *mut u8, life: usize) -> Result<(), Misuse> {
        if p.is_null() || (p as usize).is_power_of_two() {
            return Ok(());
        }
        let problem = if self.in_run(p) {
            self.pool_if_any().map_or(Problem::NotLarge, |pool| pool.run_problem(p))
        } else if self.in_carved(p) {
            // SAFETY: p lies below the region's carved end, which is accessible; its header
            // mask finds its block's header (every block has the same size).
            let h = unsafe { &*header_of(p) };
            Problem::ZeroSize {
                block_class: class_held(h),
                block_life: h.life(),
            }
        } else if self.bounds.contains(p) {
            // Past the carved end: in no block (as a block holding no allocations).
            Problem::ZeroSize {
                block_class: None,
                block_life: 0,
            }
        } else {
            let Some(pool) = self.pool_if_any() else {
                return Ok(());
            };
            let large = pool.large.lock();
            match large.get(p as usize) {
                Some(m) => super::mismatch(m),
                // A cached mapping: a large allocation freed already.
                None if large.is_cached(p as usize) => Problem::DoubleFree,
                None => return Ok(()),
            }
        };
        Err(self.misuse(p, 0, life, problem))
    }

    /// The checks a free of live slot `p` of (class, life) makes (every build: the region
    /// bounds, the key, the slot freed last onto the list the free would push it on;
    /// everything in checked mode), which leave the slot live: the check of a resize's old
    /// allocation that stays in its size class. A slot outside the region is right only as
    /// a mapping a full region that falls back made for (class, life). Misuse is reported
    /// (it panics, or aborts when `ABORT`).
    ///
    /// Inline, the free fast path's case: a block of `route`'s heap holding (class, life)
    /// (one compare of its owner-and-key word), whose one double free is the slot freed
    /// last; every other case out of line ([`Instance::check_kept_other`]).
    ///
    /// # Safety
    /// As [`Instance::free_sized`]: `p` is a live allocation of this allocator.
    #[inline(always)]
    #[track_caller]
    pub(crate) unsafe fn check_kept_slot<const ABORT: bool, R: Route>(
        &self,
        route: R,
        p: *mut u8,
        size: usize,
        class: usize,
        life: usize,
    ) {
        if CHECKED {
            return self.check_free::<ABORT, false>(p, size, class, life);
        }
        if let Some(in_region) = self.bounds.offset(p) {
            // SAFETY: p lies below the carved end (`offset`), which is accessible; its header
            // mask finds its block's header (as the free fast path reads it).
            let h = unsafe { &*header_of(p) };
            if route.owns(h.owner_key_xor(u64::from(key(class, life)))) {
                // The region starts on a block boundary: the slot's offset in its block.
                let off = in_region % BLOCK_SIZE;
                // SAFETY: class came from the size's look-up (caller).
                if !unsafe { geometry_unchecked(class) }.in_slots(off) {
                    return self.not_in_slots::<ABORT>(h, p, size, life);
                }
                if h.is_freed_last(off as u32) {
                    self.double_free::<ABORT>(p, size, life);
                }
                return;
            }
        }
        self.check_kept_other::<ABORT>(p, size, class, life);
    }

    /// [`Instance::check_kept_slot`] of a slot in no block of the route's heap holding
    /// (class, life) (release builds): outside the region, a mapping a full region that
    /// falls back made for (class, life); else a block holding (class, life) (or its
    /// promoted slots of class), and not the slot freed last onto a list a free of it
    /// would push it on (the block's local or remote list, the calling thread's batch of
    /// remote frees, a tiny run's list).
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn check_kept_other<const ABORT: bool>(&self, p: *mut u8, size: usize, class: usize, life: usize) {
        if !self.in_carved(p) {
            // Outside the region, or past its carved end (no allocation: reported).
            return self.check_kept_outside::<ABORT>(p, size, class, life);
        }
        if self.in_run(p) {
            self.foreign::<ABORT>(p, size, life);
        }
        // SAFETY: p is below the carved end (not in a run): in a block of this allocator,
        // whose header is mapped.
        let h = unsafe { &*header_of(p) };
        if h.is_promoting() {
            self.check_promoting::<ABORT>(h, p, size, class, life);
        } else if h.key() != key(class, life) {
            self.bad_key::<ABORT>(p, size, class, life);
        }
        let off = h.offset_of(p);
        if !h.geometry().in_slots(off as usize) {
            return self.not_in_slots::<ABORT>(h, p, size, life);
        }
        let freed_last = if h.geometry().is_tiny() {
            self.is_tiny_first_free(h, off)
        } else {
            h.is_freed_last(off) || self.is_first_pending(h, off)
        };
        if freed_last {
            self.double_free::<ABORT>(p, size, life);
        }
    }

    /// True when `off` starts a slot of tiny block `h` that is first on its run's list: the
    /// double free [`Instance::check_kept_other`] sees in a tiny block (an interior pointer,
    /// which only checked mode reports, is not). Out of line: the pool lock's code kept out
    /// of the other blocks' path.
    #[cold]
    #[inline(never)]
    fn is_tiny_first_free(&self, h: &Header, off: u32) -> bool {
        h.is_slot(off as usize) && {
            // SAFETY: the block exists, so the pool does.
            let pool = unsafe { &*self.pool.load(Ordering::Acquire) };
            let _locked = pool.lock();
            // SAFETY: we hold the lock that owns tiny blocks; off is a slot of the block.
            unsafe { tiny::is_first_free(h, off) }
        }
    }

    /// [`Instance::check_kept_slot`] of a pointer outside the region or past its carved end
    /// (release builds): a mapping made for (class, life) by a full region that falls
    /// back, else misuse, reported.
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn check_kept_outside<const ABORT: bool>(&self, p: *mut u8, size: usize, class: usize, life: usize) {
        let pool = self.pool_if_any();
        if !pool.is_some_and(|pool| self.is_fallback(pool, p, class, life)) {
            self.foreign::<ABORT>(p, size, life);
        }
    }

    /// A misuse report of a free (or resize) of `p` with `size` and lifetime class `life`.
    pub(crate) fn misuse(&self, p: *mut u8, size: usize, life: usize, problem: Problem) -> Misuse {
        Misuse::new(p as usize, size, life, problem, self.life_names, self.label())
    }

    /// What a pointer outside the region is: a large allocation (freed with a small size), a
    /// cached large mapping (freed already), or not this allocator's at all. For the cold
    /// report paths (it takes the large lock).
    fn foreign_or_large(&self, pool: &Pool, p: *mut u8) -> Problem {
        if self.in_run(p) {
            return pool.run_problem(p);
        }
        let large = pool.large.lock();
        match large.get(p as usize) {
            Some(m) => super::mismatch(m),
            None => large.not_a_start(p as usize).unwrap_or(Problem::Foreign),
        }
    }

    /// True when `p` lies in a run of the region's units (a large allocation inside the
    /// region, see `crate::region::runs`): its unit's bytes are the allocation's, so the
    /// header mask finds no header there. Read from the unit's state, never from `p`.
    #[inline]
    pub(crate) fn in_run(&self, p: *mut u8) -> bool {
        self.bounds.contains(p) && self.in_run_of_region(p)
    }

    /// [`Instance::in_run`] of a pointer known to lie in the region (no bounds check).
    #[inline(always)]
    pub(crate) fn in_run_of_region(&self, p: *mut u8) -> bool {
        debug_assert!(self.bounds.contains(p));
        self.pool_if_any().is_some_and(|pool| {
            // Only a region that serves large allocations has runs (a remote free in any
            // other reads no unit state).
            pool.region.serves_large() && pool.region.is_run_unit(pool.region.unit_of(p as usize))
        })
    }

    /// True when `p`, outside the region, is a live mapping a full region that falls back
    /// made for a small request of `class` in lifetime class `life`
    /// (`alloc::Instance::alloc_fallback`).
    pub(crate) fn is_fallback(&self, pool: &Pool, p: *mut u8, class: usize, life: usize) -> bool {
        let request = Request::small(class, life);
        pool.region.falls_back()
            && pool
                .large
                .lock()
                .get(p as usize)
                .is_some_and(|m| m.request == request)
    }

    /// The release-build check failed: the block's key is not (class, life). Cost on the
    /// fast path: one `xor`, since the key shares the owner's word and compare.
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn bad_key<const ABORT: bool>(&self, p: *mut u8, size: usize, class: usize, life: usize) -> ! {
        report::<ABORT>(self.wrong_block(p, size, class, life))
    }

    /// [`Instance::bad_key`] for a free of `size` bytes aligned to `align`: the class found
    /// again (out of line, so that `free_other` needs no stack frame). (Typed `()`, so that
    /// `free_other` reaches it with a jump.)
    ///
    /// # Safety
    /// As [`Instance::free_sized`].
    #[cold]
    #[inline(never)]
    #[track_caller]
    pub(super) unsafe fn bad_key_of_size<const ABORT: bool>(
        &self,
        p: *mut u8,
        size: usize,
        align: usize,
        life: usize,
    ) {
        match class_of(size, align) {
            Some(class) => self.bad_key::<ABORT>(p, size, class, life),
            // SAFETY: forwarded contract: a large size (not reached: free_class's caller
            // found a class).
            None => unsafe { self.free_large::<ABORT>(p, size, life) },
        }
    }

    /// A free of a pointer outside this instance's region. (Typed `()`, though it never
    /// returns, so that the fast path reaches it with a jump and needs no stack frame.)
    #[cold]
    #[inline(never)]
    #[track_caller]
    pub(super) fn foreign<const ABORT: bool>(&self, p: *mut u8, size: usize, life: usize) {
        let problem = match self.pool_if_any() {
            Some(pool) => self.foreign_or_large(pool, p),
            None => Problem::Foreign,
        };
        report::<ABORT>(self.misuse(p, size, life, problem))
    }

    /// A free (or a resize's old allocation) of `p`, in block `h` of the size's key, that
    /// lies in no slot of it: in its header area (the header, a tiny block's run table, the
    /// padding up to the first slot) or its tail past the last slot
    /// ([`Class::in_slots`](crate::class::Class::in_slots) false). Reported in every build
    /// before anything is written (typed `()` as [`Instance::foreign`]).
    #[cold]
    #[inline(never)]
    #[track_caller]
    pub(crate) fn not_in_slots<const ABORT: bool>(&self, h: &Header, p: *mut u8, size: usize, life: usize) {
        let stride = h.geometry().stride as usize;
        report::<ABORT>(self.misuse(p, size, life, Problem::NotASlot { stride }))
    }

    /// A free of a slot that is already free (typed `()` as [`Instance::foreign`]).
    #[cold]
    #[inline(never)]
    #[track_caller]
    pub(super) fn double_free<const ABORT: bool>(&self, p: *mut u8, size: usize, life: usize) {
        report::<ABORT>(self.misuse(p, size, life, Problem::DoubleFree))
    }

    fn wrong_block(&self, p: *mut u8, size: usize, class: usize, life: usize) -> Misuse {
        let c = &CLASSES[class];
        // SAFETY: only called after the header was found readable.
        let h = unsafe { &*header_of(p) };
        let problem = Problem::WrongBlock {
            class,
            stride: c.stride as usize,
            block_class: class_held(h),
            block_life: h.life(),
        };
        self.misuse(p, size, life, problem)
    }

    /// The release-build check of a resize's old allocation in a block that may hold
    /// promoted slots ([`promotion::check`], which changes nothing here).
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn check_promoting<const ABORT: bool>(
        &self,
        h: &Header,
        p: *mut u8,
        size: usize,
        class: usize,
        life: usize,
    ) {
        // SAFETY: the block exists, so the pool does.
        let pool = unsafe { &*self.pool.load(Ordering::Acquire) };
        if let Err(problem) = promotion::check(&pool.region, h, p, class, life, false) {
            report::<ABORT>(self.misuse(p, size, life, problem));
        }
    }

    /// Checked mode: every check a free can make, before it touches anything
    /// ([`Instance::find_misuse`]); misuse is reported. With `FREEING` (a free), the slot's
    /// live bit is cleared by the check.
    #[track_caller]
    pub(super) fn check_free<const ABORT: bool, const FREEING: bool>(
        &self,
        p: *mut u8,
        size: usize,
        class: usize,
        life: usize,
    ) {
        if p.is_null() {
            return; // A null free does nothing (see `free_sized`).
        }
        if let Err(m) = self.find_misuse::<FREEING>(p, size, class, life) {
            report::<ABORT>(m);
        }
    }

    /// Every check a free of `p` as (`size`, `class`, `life`) can make without owning the
    /// block, before it touches anything: `p` is in this instance's region, in a block whose
    /// key is (class, life), at the start of a slot; and the slot is live. Live means its
    /// live bit is set in checked mode (with `FREEING` tested and cleared in one atomic
    /// step, so that of two frees of one slot racing each other one is reported; without,
    /// the check of a resize's old allocation or of [`crate::Cohort::try_free`], only
    /// tested); otherwise, that it is not the first slot of its block's local or remote
    /// free list, or of its chain in the calling thread's batch of remote frees (of its
    /// run's list for a tiny block, read under the pool lock).
    pub(crate) fn find_misuse<const FREEING: bool>(
        &self,
        p: *mut u8,
        size: usize,
        class: usize,
        life: usize,
    ) -> Result<(), Misuse> {
        let bad = |problem| Err(self.misuse(p, size, life, problem));
        let Some(pool) = self.pool_if_any() else {
            return bad(Problem::Foreign);
        };
        let r = &pool.region;
        let c = &CLASSES[class];
        let base = header_of(p) as usize;
        if !r.contains(p as usize) && self.is_fallback(pool, p, class, life) {
            return Ok(());
        }
        if !r.contains(p as usize) || r.unit_state(r.unit_of(p as usize)) != BLOCK {
            return bad(self.foreign_or_large(pool, p));
        }
        // SAFETY: base is the start of p's unit (blocks are aligned to their size), which
        // holds a block (above), so it was carved: accessible; the fields are trusted only
        // if its unit starts a block, whose header is initialised.
        let h = unsafe { &*(base as *const Header) };
        let is_block = r.unit_state(r.unit_of(base)) == BLOCK && h.magic == MAGIC;
        if is_block && h.key() != EMPTY_KEY && h.is_promoting() {
            // Every check of the slot's size against the block's promotion record; the bit
            // itself is cleared by the free that follows (`free_in_promoting`).
            if let Err(problem) = promotion::check(r, h, p, class, life, false) {
                return bad(problem);
            }
        } else if !is_block || h.key() != key(class, life) {
            let block_class = is_block.then(|| class_held(h)).flatten();
            return bad(Problem::WrongBlock {
                class,
                stride: c.stride as usize,
                block_class,
                block_life: h.life(),
            });
        }
        let off = p as usize - base;
        if !h.is_slot(off) {
            return bad(Problem::NotASlot {
                stride: c.stride as usize,
            });
        }
        let off = off as u32;
        let already_free = match LiveBits::of(r) {
            Some(bits) if FREEING => !bits.set_free(p as usize),
            Some(bits) => !bits.is_live(p as usize),
            None if h.geometry().is_tiny() => {
                let _locked = pool.lock();
                // SAFETY: we hold the lock that owns tiny blocks; off is a slot of the block.
                unsafe { tiny::is_first_free(h, off) }
            }
            None => {
                h.is_freed_last(off)
                    || crate::heap::allocation_first(pool, h) == off
                    || self.is_first_pending(h, off)
            }
        };
        if already_free {
            return bad(Problem::DoubleFree);
        }
        Ok(())
    }
}

/// The size class block `h` holds, as a misuse report names it: `None` when it holds no
/// allocations (or its key names no class).
fn class_held(h: &Header) -> Option<usize> {
    (h.key() != EMPTY_KEY && h.class() < CLASS_COUNT).then(|| h.class())
}
