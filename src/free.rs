//! The free paths: the class look-up, the fast path ([`Instance::free_class`]: a push on a
//! block of the calling thread's heap), frees the fast path cannot finish (a remote free: a
//! lock-free push on the block's remote list; or misuse), large frees, and the checks a free
//! makes before it touches anything (every build: the region bounds, the block's key, the
//! one double free the block's first free slot shows; checked mode: everything, with the
//! live bits).

use crate::block::{header_of, key, Header, LocalFree, MAGIC};
use core::alloc::Layout;
#[cfg(doc)]
use crate::class::Lookup;
use crate::class::{class_of, BLOCK_SIZE, CLASSES, CLASS_COUNT, MAX_MEDIUM};
use crate::instance::{Instance, CHECKED};
#[cfg(doc)]
use crate::instance::RegionBounds;
use crate::large::{unmap_evicted, LargeTable};
use crate::live_bits::LiveBits;
use crate::misuse::{report, Misuse, Problem};
use crate::os;
use crate::per_thread;
use crate::pool::{Pool, EMPTY_KEY};
use crate::region::BLOCK;
use crate::route::Route;
use crate::sync::Ordering;
use crate::tiny;

impl Instance {
    /// The free paths' entry: the class look-up, inlined for requests that round below
    /// 2 KiB ([`Lookup::exact_class`]: the size rounded up to the align, as the malloc
    /// family's requests need). A null `p` does nothing (as C's free), nor does a zero size
    /// with the pointer of a zero-size request (any other pointer with size 0 is checked:
    /// [`Instance::check_zero_size`]); both tests are out of line, so they cost the fast
    /// path nothing: a zero size wraps past the table into `free_above_exact`, and a null
    /// pointer fails the region-bounds check into `free_other`.
    ///
    /// # Safety
    /// `p` is null, or a live allocation of this instance made with an alignment of
    /// `align`, lifetime class `life` and a size whose usable size `size` does not exceed,
    /// at least the size asked for (as [`Cohort::free`](crate::Cohort::free)).
    #[inline(always)]
    #[track_caller]
    pub(crate) unsafe fn free_sized<const ABORT: bool, R: Route>(
        &self,
        route: R,
        p: *mut u8,
        size: usize,
        align: usize,
        life: usize,
    ) {
        let class = per_thread::exact_class(size, align);
        // SAFETY: forwarded contract.
        unsafe { self.free_looked_up::<ABORT, R>(route, class, p, size, align, life) }
    }

    /// As [`Instance::free_sized`], for a layout (every Rust type's size is a multiple of
    /// its align): the look-up that needs no rounding ([`Lookup::class_of_multiple`], one
    /// instruction less; other requests take the look-up out of line). A zero size gets
    /// class 0, whose blocks no heap owns, so it fails the owner compare into
    /// `free_other`, which sends it to the zero-size path (`free_zero_size`).
    ///
    /// # Safety
    /// As [`Instance::free_sized`].
    #[inline(always)]
    #[track_caller]
    pub(crate) unsafe fn free_layout<const ABORT: bool, R: Route>(
        &self,
        route: R,
        p: *mut u8,
        layout: Layout,
        life: usize,
    ) {
        let (size, align) = (layout.size(), layout.align());
        let class = per_thread::class_of_multiple(size, align);
        // SAFETY: forwarded contract.
        unsafe { self.free_looked_up::<ABORT, R>(route, class, p, size, align, life) }
    }

    /// The free of `p` whose table look-up gave `class` (`None`: past the table, the
    /// look-up out of line; class 0 for a zero size, which `free_class`'s cold paths test
    /// before anything trusts the class).
    ///
    /// # Safety
    /// As [`Instance::free_sized`], with `class` the table's answer for `(size, align)`.
    #[inline(always)]
    #[track_caller]
    unsafe fn free_looked_up<const ABORT: bool, R: Route>(
        &self,
        route: R,
        class: Option<usize>,
        p: *mut u8,
        size: usize,
        align: usize,
        life: usize,
    ) {
        match class {
            // SAFETY: forwarded contract; class is the size's, or 0 for a zero size.
            Some(class) => unsafe {
                self.free_class::<ABORT, R>(route, p, size, align, class, life)
            },
            // SAFETY: forwarded contract.
            None => unsafe { self.free_above_exact::<ABORT, R>(route, p, size, align, life) },
        }
    }

    /// As `alloc_above_exact`, for frees.
    ///
    /// # Safety
    /// As [`Instance::free_sized`].
    #[inline(never)]
    #[track_caller]
    unsafe fn free_above_exact<const ABORT: bool, R: Route>(
        &self,
        route: R,
        p: *mut u8,
        size: usize,
        align: usize,
        life: usize,
    ) {
        if size == 0 {
            return self.free_zero_size::<ABORT>(p, life);
        }
        match class_of(size, align) {
            // SAFETY: forwarded contract; class is the size's.
            Some(class) => unsafe {
                self.free_class::<ABORT, R>(route, p, size, align, class, life)
            },
            // SAFETY: forwarded contract: a large size.
            None => unsafe { self.free_large::<ABORT>(p, size, life) },
        }
    }

    /// A free with size 0, which frees nothing: misuse unless `p` is null or the pointer of
    /// a zero-size request ([`Instance::check_zero_size`]), reported.
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn free_zero_size<const ABORT: bool>(&self, p: *mut u8, life: usize) {
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
        let problem = if self.bounds.contains(p) {
            // SAFETY: p lies in the region, which is readable everywhere; its header mask
            // finds its block's header (every block has the same size).
            let h = unsafe { &*header_of(p) };
            Problem::ZeroSize {
                block_class: class_held(h),
                block_life: h.life(),
            }
        } else {
            let Some(pool) = self.pool_if_any() else {
                return Ok(());
            };
            let large = pool.large.lock();
            match large.get(p as usize) {
                Some((mapped, life)) => Problem::LargeMismatch { mapped, life },
                // A cached mapping: a large allocation freed already.
                None if large.is_cached(p as usize) => Problem::DoubleFree,
                None => return Ok(()),
            }
        };
        Err(self.misuse(p, 0, life, problem))
    }

    /// The free fast path: the block is the route's heap's (for the thread: its last used
    /// heap's) and holds (class, life); one compare checks both ([`Route::owns`]). Budget,
    /// x86-64, with the class look-up before it (checked by `.ci/budget.sh`): 23
    /// instructions in a `__rust_dealloc` of its own, `ret` included: size test 4 (`lea`,
    /// `or`, `test`, branch: [`Lookup::class_of_multiple`] of [`Instance::free_layout`];
    /// the rounding look-up of [`Instance::free_sized`] costs one more), thread pointer 1,
    /// class 1,
    /// region bounds 4, the slot's offset 1 (an `and` on the region-bounds subtraction,
    /// [`RegionBounds::offset`]), header mask 1 (in place: the pointer is rebuilt from the
    /// header and the offset for the cold paths only), owner-and-key compare 3 (the
    /// header's word loaded by its xor, `Header::owner_key_xor`), first free slot 1, double
    /// free 2, push 2, count 2 (a decrement in memory and a branch,
    /// `Header::count_sub_one`). Two of these checks hold in every build: the region
    /// bounds, so that a foreign pointer is reported and never dereferenced (copy,
    /// subtract, compare, branch), and the slot against the block's first free slot, a
    /// double free of the slot freed last (compare, branch). Measured by
    /// `cargo bench -p cohort-benches --bench iai` (inlined, static instance): a 16-byte
    /// malloc+free pair went from 39 to 46 instructions with those two checks, and to 44
    /// with the count's decrement in memory and the word's load folded into its xor.
    ///
    /// # Safety
    /// As [`Instance::free_sized`], with `class` the class of the size and alignment
    /// `align`.
    #[inline(always)]
    #[track_caller]
    unsafe fn free_class<const ABORT: bool, R: Route>(
        &self,
        route: R,
        p: *mut u8,
        size: usize,
        align: usize,
        class: usize,
        life: usize,
    ) {
        if CHECKED {
            if size == 0 {
                return self.free_zero_size::<ABORT>(p, life);
            }
            self.check_free::<ABORT, true>(p, size, class, life);
        }
        // A zero size has class 0 here ([`Lookup::class_of_multiple`]), whose blocks are the
        // pool's: no heap owns them, so the compare below fails for it and `free_other`
        // takes it to the zero-size path.
        // Every exit to the cold paths is a jump to `free_other` (which tells misuse from a
        // remote free) or `free_slow_current`: calls to functions that never return would
        // need a stack frame.
        let Some(in_region) = self.bounds.offset(p) else {
            // SAFETY: forwarded contract; `word` is unread when p is outside the region.
            return unsafe { self.free_other::<ABORT, R>(route, p, size, align, 0, life) };
        };
        // The region starts on a block boundary (`RegionBounds::offset`).
        let off = in_region % BLOCK_SIZE;
        // SAFETY: p lies in the region, which is readable everywhere, and its block is the
        // one its header mask finds (every block has the same size), so the header read is
        // the block's own.
        let h = unsafe { &*header_of(p) };
        let word = h.owner_key_xor(key(class, life) as u64);
        if route.owns(word) {
            // SAFETY: the slot is live (the caller says so; push_local checks the one double
            // free it can see), its block is this thread's, and `off` is its offset in the
            // block.
            match unsafe { h.push_local_at(off as u32) } {
                LocalFree::Done => return,
                LocalFree::Slow => return route.free_slow(h),
                // free_other finds the same and reports it.
                LocalFree::AlreadyFree => {}
            }
        }
        // `p` again, rebuilt from the block's base and the slot's offset: past the header
        // mask the fast path no longer needs `p`, and masks its register into the header's
        // address in place (one instruction, where keeping `p` costs a copy more).
        let p = h.base().wrapping_add(off);
        // SAFETY: forwarded contract (this is the caller's `p`); `word` is the block's, as
        // read above.
        unsafe { self.free_other::<ABORT, R>(route, p, size, align, word, life) }
    }

    /// A free the fast path could not finish: the pointer is not in the region, or its block
    /// holds another (class, life), or the slot is already free, which is misuse; or the
    /// block belongs to another heap: a remote free.
    ///
    /// `word` is the block's owner-and-key word xor the key of the size's class and `life`,
    /// as the fast path read it (unread when `p` is outside the region): its key bits are
    /// [`EMPTY_KEY`] exactly when the block held that key then. The fast path passes it,
    /// and the align rather than the class, so that the class's register is free once
    /// xor'ed into the word (no copy).
    ///
    /// # Safety
    /// As [`Instance::free_class`], with `word` as above.
    #[cold]
    #[inline(never)]
    #[track_caller]
    unsafe fn free_other<const ABORT: bool, R: Route>(
        &self,
        route: R,
        p: *mut u8,
        size: usize,
        align: usize,
        word: u64,
        life: usize,
    ) {
        // A zero size (class 0 from `free_layout`) is tested where it can arrive, off the
        // remote free's way: outside the region, against a block of another key, or in a
        // tiny block (class 0 is tiny: `free_remote`).
        if !self.bounds.contains(p) {
            if p.is_null() {
                return; // A null free does nothing (see `free_sized`).
            }
            if size == 0 {
                return self.free_zero_size::<ABORT>(p, life);
            }
            return self.foreign::<ABORT>(p, size, life);
        }
        // SAFETY: as in free_class: p lies in the region, readable everywhere.
        let h = unsafe { &*header_of(p) };
        if !CHECKED && word as u16 != EMPTY_KEY {
            if size == 0 {
                return self.free_zero_size::<ABORT>(p, life);
            }
            // SAFETY: forwarded contract.
            return unsafe { self.bad_key_of_size::<ABORT>(p, size, align, life) };
        }
        // SAFETY: a live slot of block h (caller), or a zero size, which free_remote tests
        // before it frees anything.
        unsafe { self.free_remote::<ABORT, R>(route, h, p, size, life) };
    }

    /// The block of live slot `p` of (class, life), after the checks a free makes (the key
    /// compare in every build, everything in checked mode), which leave the slot live: the
    /// check of a resize's old allocation. Misuse is reported (it panics, or aborts when
    /// `ABORT`).
    ///
    /// # Safety
    /// As [`Instance::free_sized`]: `p` is a live allocation of this allocator.
    #[inline(always)]
    #[track_caller]
    pub(crate) unsafe fn validated_block<const ABORT: bool>(
        &self,
        p: *mut u8,
        size: usize,
        class: usize,
        life: usize,
    ) -> &Header {
        let h = header_of(p);
        if CHECKED {
            self.check_free::<ABORT, false>(p, size, class, life);
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

    /// A free of slot `p` of a block the route's heap does not own: local after all when
    /// the block is another heap of the caller's ([`Route::heap_owning`]); else a lock-free
    /// push on its remote list, or the pool's lock for tiny blocks. A slot that is the first of the
    /// list it would join is already free: reported as a double free (`size` and `life`
    /// are the caller's, for the report).
    ///
    /// # Safety
    /// `p` is a live slot of block `h` (its size and lifetime class checked against the
    /// block's key), or `size` is 0 and `h` is tiny (the key of class 0 a zero size gets:
    /// nothing is freed).
    #[cold]
    #[inline(never)]
    #[track_caller]
    unsafe fn free_remote<const ABORT: bool, R: Route>(
        &self,
        route: R,
        h: &Header,
        p: *mut u8,
        size: usize,
        life: usize,
    ) {
        let off = h.offset_of(p);
        let owner = h.owner();
        // The block may be the caller's after all, in a heap it did not use last (a thread
        // allocates from several instances; a join's thread has its own heap too), made
        // current. Then the free is local, so the block's emptying is seen.
        // SAFETY: the route gives null or a live heap the caller holds.
        let mine = unsafe { route.heap_owning(self.instance_id(), owner).as_ref() };
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
            if size == 0 {
                // Class 0 (tiny) is a zero size's in `free_layout`: the zero-size path.
                return self.free_zero_size::<ABORT>(p, life);
            }
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
            unsafe { pool.free_remote(h, off) };
        }
    }

    /// Frees a medium or large allocation (a size above the small classes): in the region,
    /// a medium one, after checking its run (every build: the run table); outside it, a
    /// large one, after checking the large table (every build: a hash look-up beside a
    /// system call): the pointer must start a live large allocation of this lifetime
    /// class whose mapped length `size` rounds to.
    ///
    /// # Safety
    /// As [`Instance::free_sized`], with `size` a large size: if a large allocation of
    /// this instance starts at `p`, it is the caller's to free (nothing uses it after).
    #[cold]
    #[inline(never)]
    #[track_caller]
    unsafe fn free_large<const ABORT: bool>(&self, p: *mut u8, size: usize, life: usize) {
        if p.is_null() {
            return; // A null free does nothing (see `free_sized`).
        }
        // SAFETY: forwarded contract.
        if let Err(m) = unsafe { self.free_large_checked(p, size, life) } {
            report::<ABORT>(m);
        }
    }

    /// Frees the medium allocation at `p` (in the region) if a live run of `size`'s
    /// granules in lifetime class `life` starts there, or the large allocation at `p`
    /// (outside it) if the large table holds it with this length and lifetime class; else
    /// returns what is wrong, having changed nothing. No lock is held
    /// on return (reporting may allocate).
    ///
    /// # Safety
    /// As [`Instance::free_large`], with `p` not null.
    pub(crate) unsafe fn free_large_checked(
        &self,
        p: *mut u8,
        size: usize,
        life: usize,
    ) -> Result<(), Misuse> {
        let Some(pool) = self.pool_if_any() else {
            return Err(self.misuse(p, size, life, Problem::Foreign));
        };
        if self.bounds.contains(p) {
            // A medium allocation (a large one is never in the region): its run checked
            // and freed under the pool lock. A large size names none: the medium
            // allocation there is named if there is one.
            let problem = if size <= MAX_MEDIUM {
                match pool.medium_free(p, size, life) {
                    Ok(()) => return Ok(()),
                    Err(problem) => problem,
                }
            } else {
                match pool.medium_at(p) {
                    Some((usable, block_life)) => Problem::WrongRun { usable, block_life },
                    None => Problem::NotLarge,
                }
            };
            return Err(self.misuse(p, size, life, problem));
        }
        // One clock read (before the lock) serves the cache and the empty blocks.
        let now = crate::decay::now();
        let mut large = pool.large.lock();
        let found = large_match(&large, p, size, life);
        let evicted = found.map(|mapped| {
            large.remove(p as usize);
            // Cached, not unmapped: the caller gives the mapping up.
            large.cache_freed(p as usize, mapped, now)
        });
        drop(large);
        let evicted = evicted.map_err(|problem| self.misuse(p, size, life, problem))?;
        // SAFETY: what the cache gave up (or would not keep): mappings of no allocation.
        unsafe { unmap_evicted(&evicted) };
        // A slow path: empty blocks unused for the delay go back (see `pool`'s `empty`).
        pool.decay_if_due(now);
        Ok(())
    }

    /// A misuse report of a free (or resize) of `p` with `size` and lifetime class `life`.
    pub(crate) fn misuse(&self, p: *mut u8, size: usize, life: usize, problem: Problem) -> Misuse {
        Misuse::new(p as usize, size, life, problem, self.life_names)
    }

    /// What a pointer outside the region is: a large allocation (freed with a small size), a
    /// cached large mapping (freed already), or not this allocator's at all. For the cold
    /// report paths (it takes the large lock).
    fn foreign_or_large(&self, pool: &Pool, p: *mut u8) -> Problem {
        let large = pool.large.lock();
        match large.get(p as usize) {
            Some((mapped, life)) => Problem::LargeMismatch { mapped, life },
            None if large.is_cached(p as usize) => Problem::DoubleFree,
            None => Problem::Foreign,
        }
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
    unsafe fn bad_key_of_size<const ABORT: bool>(
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
    fn foreign<const ABORT: bool>(&self, p: *mut u8, size: usize, life: usize) {
        let problem = match self.pool_if_any() {
            Some(pool) => self.foreign_or_large(pool, p),
            None => Problem::Foreign,
        };
        report::<ABORT>(self.misuse(p, size, life, problem))
    }

    /// A free of a slot that is already free (typed `()` as [`Instance::foreign`]).
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn double_free<const ABORT: bool>(&self, p: *mut u8, size: usize, life: usize) {
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

    /// Checked mode: every check a free can make, before it touches anything
    /// ([`Instance::find_misuse`]); misuse is reported. With `FREEING` (a free), the slot's
    /// live bit is cleared by the check.
    #[track_caller]
    fn check_free<const ABORT: bool, const FREEING: bool>(
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
    /// free list (of its run's list for a tiny block, read under the pool lock).
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
        if !r.contains(p as usize) || r.unit_state(r.unit_of(p as usize)) != BLOCK {
            return bad(self.foreign_or_large(pool, p));
        }
        // SAFETY: base lies in the region (p does, and blocks are aligned to their size),
        // which is readable everywhere; the fields are trusted only if its unit starts a
        // block, whose header is initialised.
        let h = unsafe { &*(base as *const Header) };
        let is_block = r.unit_state(r.unit_of(base)) == BLOCK && h.magic == MAGIC;
        if !is_block || h.key() != key(class, life) {
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
            None if c.is_tiny() => {
                let _locked = pool.lock();
                // SAFETY: we hold the lock that owns tiny blocks; off is a slot of the block.
                unsafe { tiny::is_first_free(h, off) }
            }
            None => h.free.load(Ordering::Relaxed) == off || h.is_first_remote(off),
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

/// The mapped length of the live large allocation at `p` when `size` rounds to its length
/// and `life` is its lifetime class; else what is wrong (a cached address was freed
/// already: a double free).
pub(crate) fn large_match(
    large: &LargeTable,
    p: *mut u8,
    size: usize,
    life: usize,
) -> Result<usize, Problem> {
    match large.get(p as usize) {
        Some((len, l)) if Some(len) == os::page_round(size) && l == life => {
            Ok(large.mapped(p as usize).unwrap_or(len))
        }
        Some((len, l)) => Err(Problem::LargeMismatch { mapped: len, life: l }),
        None if large.is_cached(p as usize) => Err(Problem::DoubleFree),
        None => Err(Problem::NotLarge),
    }
}
