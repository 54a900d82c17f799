//! The free paths: the class look-up and the fast path ([`Instance::free_class`]: a push on
//! a block of the calling thread's heap), here; in submodules, the frees the fast path cannot
//! finish ([`remote`]: a remote free, a lock-free push on the block's remote list, or misuse
//! found on the way), large frees ([`large`]), and the checks a free makes before it touches
//! anything ([`checks`]: every build, the region bounds, the block's key, the one double free
//! the block's first free slot shows; checked mode, everything, with the live bits).

mod checks;
mod large;
mod remote;

pub(crate) use large::{large_match, mismatch, Named};

use crate::block::{header_of, key, LocalFree};
#[cfg(doc)]
use crate::class::Lookup;
use crate::class::{class_of, medium_granules, BLOCK_SIZE};
use crate::instance::{Instance, CHECKED};
use crate::medium_cache::CACHED_MAX;
#[cfg(doc)]
use crate::instance::RegionBounds;
use crate::per_thread;
use crate::route::Route;
use core::alloc::Layout;

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
            None => unsafe {
                Instance::free_above_exact::<ABORT, R>(p, size, align, self, route, life)
            },
        }
    }

    /// As `alloc_above_exact`, for frees. The pointer, size and align come first, in the
    /// registers a `__rust_dealloc(ptr, size, align)` has them in: the fast path reaches
    /// this with a jump and moves none of them (the instance after them, whichever it is).
    ///
    /// # Safety
    /// As [`Instance::free_sized`].
    #[inline(never)]
    #[track_caller]
    unsafe fn free_above_exact<const ABORT: bool, R: Route>(
        p: *mut u8,
        size: usize,
        align: usize,
        this: &Instance,
        route: R,
        life: usize,
    ) {
        if size == 0 {
            return this.free_zero_size::<ABORT>(p, life);
        }
        match class_of(size, align) {
            // SAFETY: forwarded contract; class is the size's.
            Some(class) => unsafe {
                this.free_class::<ABORT, R>(route, p, size, align, class, life)
            },
            None => {
                let short = medium_granules(size, align).filter(|&n| n <= CACHED_MAX);
                if short.is_some_and(|n| this.free_into_cache(route, p, n, life)) {
                    return;
                }
                // SAFETY: forwarded contract: a large size.
                unsafe { this.free_large::<ABORT>(p, size, life) }
            }
        }
    }

    /// The free fast path: the block is the route's heap's (for the thread: its last used
    /// heap's) and holds (class, life); one compare checks both ([`Route::owns`]). Budget,
    /// x86-64, with the class look-up before it (checked by `.ci/budget.sh`): 24
    /// instructions in a `__rust_dealloc` of its own, `ret` included: size test 4 (`lea`,
    /// `or`, `test`, branch: [`Lookup::class_of_multiple`] of [`Instance::free_layout`];
    /// the rounding look-up of [`Instance::free_sized`] costs one more), thread pointer 1,
    /// class 1, region bounds 5 (the compare is with the instance's copy of the carved end,
    /// an atomic read by an asm, whose memory operand needs the instance's address in a
    /// register: a `lea` for a static instance, whose fields are otherwise addressed from
    /// `rip`), the slot's offset 1 (an `and` on the region-bounds subtraction,
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
        // SAFETY: forwarded contract.
        unsafe { self.free_carved::<ABORT, R>(route, p, size, align, class, life) }
    }

    /// [`Instance::free_class`] past its checks of a checked build: the pointer's bounds
    /// test, against the instance's copy of the region's carved end (a pointer past it
    /// goes to [`Instance::free_past_carved`]), and the fast path.
    ///
    /// # Safety
    /// As [`Instance::free_class`].
    #[inline(always)]
    #[track_caller]
    unsafe fn free_carved<const ABORT: bool, R: Route>(
        &self,
        route: R,
        p: *mut u8,
        size: usize,
        align: usize,
        class: usize,
        life: usize,
    ) {
        // A zero size has class 0 here ([`Lookup::class_of_multiple`]), whose blocks are the
        // pool's: no heap owns them, so the compare below fails for it and `free_other`
        // takes it to the zero-size path.
        // Every exit to the cold paths is a jump to `free_other` (which tells misuse from a
        // remote free), `free_past_carved` or `free_slow_current`: calls to functions that
        // never return would need a stack frame.
        let Some(in_region) = self.bounds.offset(p) else {
            // SAFETY: forwarded contract.
            return unsafe { self.free_past_carved::<ABORT, R>(route, p, size, align, class, life) };
        };
        // The region starts on a block boundary (`RegionBounds::offset`).
        let off = in_region % BLOCK_SIZE;
        // SAFETY: p lies below the region's carved end (`offset`), which is accessible, and
        // its block is the one its header mask finds (every block has the same size), so
        // the header read is the block's own.
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
        unsafe { Instance::free_other::<ABORT, R>(p, size, align, word, self, route, life) }
    }

    /// A free of a pointer past the instance's copy of the carved end: outside the region,
    /// past the region's carved end (never an allocation: misuse), or in a unit another
    /// thread carved since the copy was raised, whose free goes on once the copy is.
    ///
    /// # Safety
    /// As [`Instance::free_class`].
    #[cold]
    #[inline(never)]
    #[track_caller]
    unsafe fn free_past_carved<const ABORT: bool, R: Route>(
        &self,
        route: R,
        p: *mut u8,
        size: usize,
        align: usize,
        class: usize,
        life: usize,
    ) {
        if self.carved_offset(p).is_some() {
            // Below the carved end now: the copy was raised (`carved_offset`), and the fast
            // path takes the free.
            // SAFETY: forwarded contract.
            return unsafe { self.free_carved::<ABORT, R>(route, p, size, align, class, life) };
        }
        // SAFETY: forwarded contract; `word` is unread when p is below no carved end.
        unsafe { Instance::free_other::<ABORT, R>(p, size, align, 0, self, route, life) }
    }
}
