//! Resizing an allocation (realloc): in place within its size class, in place or remapped
//! for a large allocation, else a new allocation, a copy and a free.
//!
//! Every resize checks the old allocation as a free would before anything changes, so a
//! rejected call (misuse: a panic, or an abort through `GlobalAlloc`) leaves everything as
//! it was, and so does a null return (out of memory).
//!
//! Every path takes the same parameters: the old allocation `p`, its [`SizeAlign`], the
//! new [`SizeAlign`] and the lifetime class. (A size and an alignment make two words, which
//! travel in registers: a larger record passed out of line would live in memory, its stores
//! would cost the inlined case, and its lifetime class would no longer fold to a constant
//! on the paths it reaches, as it does for a global allocator.)

use crate::class::{class_of, malloc_align, medium_granules, CLASSES, GRANULE};
use crate::free::{large_match, Named};
use crate::instance::Instance;
use crate::large::{self, unmap_evicted, zero_reused, Cached, Evicted, Kind, LargeTable, Mapping, Request};
use crate::medium::SameRun;
use crate::medium_cache::{LONG_CHANGES, STARTS_MAX};
use crate::misuse::{report, Problem};
use crate::os;
use crate::per_thread;
use crate::route::Route;
use core::alloc::Layout;
use core::cell::Cell;
use core::ptr;
use core::sync::atomic::Ordering;

/// A growing large allocation takes a cached mapping up to this many times its new length
/// (see `Instance::realloc_large`).
const GROWTH_TAKE: usize = 16;

/// One side of a resize: a size and its alignment (a `Layout` without its checks: the new
/// size asked for may be any `usize`).
#[derive(Clone, Copy)]
pub(crate) struct SizeAlign {
    pub(crate) size: usize,
    pub(crate) align: usize,
}

impl SizeAlign {
    /// A layout's size and alignment.
    #[inline(always)]
    pub(crate) fn of(layout: Layout) -> SizeAlign {
        SizeAlign {
            size: layout.size(),
            align: layout.align(),
        }
    }

    /// `layout`, and `new_size` with the same alignment (the `Layout` forms of realloc).
    #[inline(always)]
    pub(crate) fn layout_to(layout: Layout, new_size: usize) -> (SizeAlign, SizeAlign) {
        let new = SizeAlign {
            size: new_size,
            align: layout.align(),
        };
        (SizeAlign::of(layout), new)
    }

    /// A malloc-family size, with the alignment the family gives it ([`malloc_align`]).
    #[inline(always)]
    pub(crate) fn malloc(size: usize) -> SizeAlign {
        SizeAlign {
            size,
            align: malloc_align(size),
        }
    }
}

impl Instance {
    /// Resizes allocation `p` from `old` to `new` in lifetime class `life`; with `ZERO`,
    /// the bytes from `old.size` to the new allocation's usable size read zero. The old
    /// allocation is checked first (as a free checks it), so a rejected call changes
    /// nothing: misuse panics, or aborts when `ABORT`. A null return (out of memory) leaves
    /// the old allocation as it was. A null `p` is a fresh allocation (C's realloc).
    ///
    /// Memory that may be dirty is zeroed, never fresh mappings: a slot's tail (in place, or
    /// a new slot not fresh from the OS), the tail of a large allocation's last page.
    ///
    /// # Safety
    /// As [`Cohort::free`](crate::Cohort::free) for `(p, old.size, life)` with `old.align`,
    /// unless `p` is null or `old.size` is 0 (then `p` is null or the pointer of a zero-size
    /// request; anything else of this allocator's is reported).
    #[inline(always)]
    #[track_caller]
    pub(crate) unsafe fn realloc_sized<const ZERO: bool, const ABORT: bool, R: Route>(
        &self,
        route: R,
        p: *mut u8,
        old: SizeAlign,
        new: SizeAlign,
        life: usize,
    ) -> *mut u8 {
        // Inlined: both sizes in the same class of the exact table (a zero size wraps past
        // it), which stays in place after the old allocation's check.
        if let Some(class) = per_thread::exact_class(old.size, old.align) {
            if !p.is_null() && per_thread::exact_class(new.size, new.align) == Some(class) {
                // SAFETY: forwarded contract; both sizes are of `class`.
                return unsafe { self.resize_in_class::<ZERO, ABORT>(p, old.size, class, life) };
            }
        }
        // SAFETY: forwarded contract.
        unsafe { self.realloc_other::<ZERO, ABORT, R>(route, p, old, new, life) }
    }

    /// A resize within size class `class`: in place (every slot of the class fits both
    /// sizes), after the old allocation's check; with `ZERO` the slot's tail is zeroed.
    ///
    /// # Safety
    /// As [`Instance::realloc_sized`] for `(p, old, life)`, with `p` not null; `class` is
    /// the class of `old` (and of the new size).
    #[inline(always)]
    #[track_caller]
    unsafe fn resize_in_class<const ZERO: bool, const ABORT: bool>(
        &self,
        p: *mut u8,
        old: usize,
        class: usize,
        life: usize,
    ) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { self.check_kept_slot::<ABORT>(p, old, class, life) };
        if ZERO {
            // SAFETY: the slot holds `stride` bytes.
            unsafe { zero_range(p, old, CLASSES[class].stride as usize) };
        }
        p
    }

    /// [`Instance::realloc_sized`] past its inlined case.
    ///
    /// # Safety
    /// As [`Instance::realloc_sized`].
    #[inline(never)]
    #[track_caller]
    unsafe fn realloc_other<const ZERO: bool, const ABORT: bool, R: Route>(
        &self,
        route: R,
        p: *mut u8,
        old: SizeAlign,
        new: SizeAlign,
        life: usize,
    ) -> *mut u8 {
        let (old_size, old_align) = (old.size, old.align);
        let (new_size, new_align) = (new.size, new.align);
        if old_size == 0 || p.is_null() {
            // Only a zero-size request's pointer (or null) has nothing to free.
            if let Err(m) = self.check_zero_size(p, life) {
                report::<ABORT>(m);
            }
            return self.alloc_sized::<ZERO, R>(route, new_size, new_align, life);
        }
        let new_class = if new_size == 0 {
            None
        } else {
            class_of(new_size, new_align)
        };
        match class_of(old_size, old_align) {
            Some(class) if new_class == Some(class) => {
                // SAFETY: forwarded contract; both sizes are of `class`.
                return unsafe { self.resize_in_class::<ZERO, ABORT>(p, old_size, class, life) };
            }
            Some(class) if !self.bounds.contains(p) && self.is_fallback_mapping(p) => {
                // A small request a full region served from a mapping of its own
                // (`RegionOptions::fallback`): resized as the large mapping it is, checked
                // against the stride its mapping was made for.
                let stride = SizeAlign {
                    size: CLASSES[class].stride as usize,
                    align: old_align,
                };
                if ZERO && old_size < stride.size && self.is_fallback_of(p, class, life) {
                    // The bytes between the request and the stride may be a previous
                    // user's (a cached mapping): they read zero too. (Only once the
                    // mapping is known to be this request's: misuse changes nothing.)
                    // SAFETY: the mapping holds the stride's bytes, this allocation's.
                    unsafe { ptr::write_bytes(p.add(old_size), 0, stride.size - old_size) };
                }
                let named = Named::Class(class);
                // SAFETY: forwarded contract; the stride's length is the mapping's.
                let done = unsafe { self.realloc_large::<ZERO, ABORT>(p, stride, new, named, life) };
                if let Some(q) = done {
                    return q;
                }
            }
            Some(class) => {
                // SAFETY: forwarded contract; class is the old size's.
                unsafe { self.check_kept_slot::<ABORT>(p, old_size, class, life) };
            }
            None if self.bounds.contains(p) && !self.in_run(p) => {
                if let Some(q) = self.realloc_medium::<ZERO, ABORT>(p, old, new, life) {
                    return q;
                }
            }
            None => {
                // (`old` is above the small classes; so is `new` unless it has a class.)
                if new_class.is_none() {
                    if let Some(q) = self.resize_within_pages::<ZERO>(p, old, new, life) {
                        return q;
                    }
                }
                let named = Named::Size(old_size);
                // SAFETY: forwarded contract.
                let done = unsafe { self.realloc_large::<ZERO, ABORT>(p, old, new, named, life) };
                if let Some(q) = done {
                    return q;
                }
            }
        }
        if new_size == 0 {
            // SAFETY: forwarded contract.
            unsafe { self.free_sized::<ABORT, R>(route, p, old_size, old_align, life) };
            return new_align as *mut u8;
        }
        // A new allocation; with ZERO it reads zero (a large one is a fresh mapping).
        let q = self.alloc_sized::<ZERO, R>(route, new_size, new_align, life);
        if !q.is_null() {
            // SAFETY: both hold at least min(old, new) bytes and are distinct allocations;
            // the old one was checked above.
            unsafe {
                ptr::copy_nonoverlapping(p, q, old_size.min(new_size));
                self.free_sized::<ABORT, R>(route, p, old_size, old_align, life);
            }
        }
        q
    }

    /// The resize of a medium allocation (`p` in the region, with a size above the small
    /// classes), after its check (misuse is reported): `Some(p)` when done in place (the
    /// new size is medium, `p` is aligned to its align, and its run shrinks, or grows into
    /// the free granules after it; with `ZERO` the bytes past the old size read zero);
    /// `None` when the caller must move it.
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn realloc_medium<const ZERO: bool, const ABORT: bool>(
        &self,
        p: *mut u8,
        old: SizeAlign,
        new: SizeAlign,
        life: usize,
    ) -> Option<*mut u8> {
        let Some(pool) = self.pool_if_any() else {
            report::<ABORT>(self.misuse(p, old.size, life, Problem::Foreign));
        };
        let in_place = medium_granules(new.size, new.align).is_some()
            && (p as usize).is_multiple_of(new.align);
        let n = old.size.div_ceil(GRANULE);
        let memo = |count| self.last(p, n, life, count);
        let found = match in_place && new.size.div_ceil(GRANULE) == n {
            true => pool.medium_same_run(p, old.size, life),
            false => SameRun::No,
        };
        // The run holds both sizes, checked with no lock (a loop of one-byte growths takes
        // this path for all but one step a granule): by its byte, or for a longer run by
        // the thread's memo of it, unchanged since.
        let quick = match found {
            SameRun::Live => true,
            SameRun::Long(count) => LAST_LONG_RUN.try_with(Cell::get).ok() == Some(memo(count)),
            SameRun::No => false,
        };
        let done = if quick {
            Ok(true)
        } else if in_place {
            let before = LONG_CHANGES.load(Ordering::Acquire);
            let done = pool.medium_resize_in_place(p, old.size, new.size, life);
            #[cfg(test)]
            tests::after_a_locked_resize();
            let m = new.size.div_ceil(GRANULE);
            // The resize's own change of a long run (none when it kept its granules).
            let own = u64::from(m != n);
            let count = LONG_CHANGES.load(Ordering::Acquire);
            if done == Ok(true) && m > STARTS_MAX && count == before.wrapping_add(own) {
                // Live as it is now, with no change of any long run but its own since
                // before the lock (a free of it after the unlock would be one): the
                // thread's next resize within its granules checks it against this.
                let _ = LAST_LONG_RUN.try_with(|last| last.set(Last { len: m, ..memo(count) }));
            }
            done
        } else {
            pool.medium_check(p, old.size, life).map(|_| false)
        };
        match done {
            Ok(true) => {
                if ZERO {
                    // SAFETY: the run holds the new size's granules now.
                    unsafe { zero_range(p, old.size, new.size.next_multiple_of(GRANULE)) };
                }
                Some(p)
            }
            Ok(false) => None,
            Err(problem) => report::<ABORT>(self.misuse(p, old.size, life, problem)),
        }
    }

    /// [`Instance::realloc_sized`] of a large allocation (a run of the region's units, or a
    /// mapping of its own), or of a medium or small request the region served from a mapping
    /// of its own (`named` names what its free would: the old size, or a small size's class,
    /// `old_side` then the class's stride): checks it (misuse is reported before anything
    /// changes), then resizes it in place when the new size is above the small classes and
    /// rounds to the same pages, or remaps it; the entry is then the new size's request.
    /// `None` when it must move (to a small class, a larger alignment, or the OS refused to
    /// remap).
    ///
    /// # Safety
    /// As [`Instance::realloc_sized`], with `p` not null and `old.size` a large size (or
    /// the stride of a small request served from a mapping).
    #[cold]
    #[inline(never)]
    #[track_caller]
    unsafe fn realloc_large<const ZERO: bool, const ABORT: bool>(
        &self,
        p: *mut u8,
        old_side: SizeAlign,
        new_side: SizeAlign,
        named: Named,
        life: usize,
    ) -> Option<*mut u8> {
        let (old, new) = (old_side.size, new_side.size);
        let Some(pool) = self.pool_if_any() else {
            report::<ABORT>(self.misuse(p, old, life, Problem::Foreign));
        };
        if pool.region.contains(p as usize) {
            return self.realloc_run::<ZERO, ABORT>(pool, p, old_side, new_side, life);
        }
        // Room for the entry to go back in first (a growth of the table maps with the lock
        // dropped); with none to be had (out of memory) the call fails, after the check,
        // with nothing changed.
        let room = large::lock_with_room(&pool.large, 1);
        let has_room = room.is_some();
        let mut large = room.unwrap_or_else(|| pool.large.lock());
        let found = match large_match(&large, p, named, life) {
            Ok(found) => found,
            Err(problem) => {
                drop(large);
                report::<ABORT>(self.misuse(p, old, life, problem));
            }
        };
        let stays_large = new != 0 && class_of(new, new_side.align).is_none();
        if !stays_large || old_side.align > os::MIN_PAGE || new_side.align > os::MIN_PAGE {
            return None;
        }
        let Some(len) = os::page_round(new).filter(|&l| l <= isize::MAX as usize) else {
            return Some(ptr::null_mut());
        };
        if !has_room {
            return Some(ptr::null_mut());
        }
        let mapped = found.mapped;
        // The length the old size rounds to (large_match checked it).
        let was = found.len;
        let grows = len > was;
        let now = crate::decay::now();
        // What the cache gives up meanwhile, unmapped once the lock is dropped (nothing
        // under the lock allocates).
        let mut evicted: [Option<Evicted>; 2] = [None, None];
        // The mapping this allocation moved out of, cached once its bytes are copied.
        let mut moved_from = None;
        // True when the new bytes lie in cached pages (dirty: a last user's).
        let mut from_cache = false;
        // The entry goes out, its slot kept: it goes back in (at its new address) with no
        // growth of the table, even across a remap that drops the lock.
        large.take_out(p as usize);
        let (q, now_mapped) = if len <= mapped && (grows || mapped - len <= len / 8) {
            // The mapping (longer when it came from the cache, or grown with room) holds
            // the new length: in place. (A shrink keeps the 1/8 bound: past it, the tail
            // goes back.)
            (p, mapped)
        } else if let Some((q, q_mapped)) =
            grows.then(|| grow_cached(&mut large, p, mapped, len, now, &mut evicted)).flatten()
        {
            if q != p {
                moved_from = Some(mapped);
            }
            from_cache = true;
            (q, q_mapped)
        } else {
            // Remapped with the lock dropped (every other large call would spin through
            // the system call): meanwhile the allocation is in no entry, so a release of
            // its class or a stats call does not see it, and a free of it (misuse: the
            // caller resizes it) is reported as no large allocation's.
            drop(large);
            // SAFETY: a live large allocation of ours (checked above), a mapping of
            // `mapped` bytes, out of the table: nothing else changes it.
            let (remapped, calls) = unsafe { remap_large(p, mapped, was, len) };
            large = pool.large.lock();
            large.system_calls += calls;
            let Some(remapped) = remapped else {
                // Left as it was.
                large.put_in(p as usize, found);
                return None;
            };
            remapped
        };
        let resized = Mapping {
            len,
            mapped: now_mapped,
            request: Request::sized(new, new_side.align, life),
        };
        large.put_in(q as usize, resized);
        if resized.request.kind == Kind::Large {
            // Live as it is now, with no removal after ours (under the lock): the thread's
            // next resize within these pages checks it against this.
            let count = large::REMOVALS.load(Ordering::Acquire);
            let _ = LAST_LARGE.try_with(|last| last.set(self.last(q, len, life, count)));
        }
        drop(large);
        for e in evicted.iter().flatten() {
            // SAFETY: what the cache gave up: mappings of no allocation.
            unsafe { unmap_evicted(e) };
        }
        if let Some(old_mapped) = moved_from {
            // SAFETY: `p` holds `old` bytes (checked above), `q` at least `len > old`, taken
            // from the cache for this allocation alone; distinct mappings.
            unsafe { ptr::copy_nonoverlapping(p, q, old) };
            // The old mapping is in neither the table nor the cache until now.
            let out = pool.large.lock().cache_freed(p as usize, old_mapped, now);
            // SAFETY: as above.
            unsafe { unmap_evicted(&out) };
        }
        if ZERO {
            // Pages past the old mapping are fresh; the old mapping's bytes past `old`, and
            // a cached mapping's, may be dirty (a last page's tail, a last user's bytes):
            // the old size's last page is written, the whole pages after it zeroed as a
            // zeroed request from the cache is (by residence from 1 MiB: a large zeroed
            // buffer may be sparse).
            let dirty = if from_cache { len } else { mapped.min(len) };
            let whole = os::page_round(old).map_or(dirty, |w| w.min(dirty));
            // SAFETY: q maps `len >= dirty` bytes, this allocation's (the first `old` hold
            // its bytes); `[whole, dirty)` is whole pages of a private mapping of ours.
            unsafe {
                zero_range(q, old, whole);
                if dirty > whole {
                    zero_reused(q.add(whole), dirty - whole);
                }
            }
        }
        Some(q)
    }

    /// A large allocation's resize within its pages without the large lock (both sizes
    /// above the small classes): `Some(p)` when the calling thread's last large resize
    /// ([`Last`]) left `p` a live large allocation of this instance, of the pages `old` and
    /// `new` both round to, in lifetime class `life`, and no large allocation of the process
    /// was removed since ([`large::REMOVALS`]), in a region no other process uses: its entry
    /// is then as it was, so the check a free makes (the entry's length and lifetime class)
    /// passes as it did, and its mapping holds the pages (`len <= mapped <= len + len / 8`).
    /// With `ZERO` the bytes past `old` read zero. `None`: the locked path decides (a loop
    /// of one-byte growths takes this path for all but one step a page).
    #[inline]
    fn resize_within_pages<const ZERO: bool>(
        &self,
        p: *mut u8,
        old: SizeAlign,
        new: SizeAlign,
        life: usize,
    ) -> Option<*mut u8> {
        // Large requests both (the entry's kind stays `Large`), aligned to a page at most
        // (the caller saw both above the small classes).
        let large = |s: SizeAlign| {
            s.size != 0 && s.align <= os::MIN_PAGE && medium_granules(s.size, s.align).is_none()
        };
        if !large(old) || !large(new) {
            return None;
        }
        let len = os::page_round(old.size)?;
        if os::page_round(new.size) != Some(len) {
            return None;
        }
        // Another process's removal would not count in this process's `REMOVALS`.
        if self.pool_if_any()?.is_process_shared() {
            return None;
        }
        let seen = self.last(p, len, life, large::REMOVALS.load(Ordering::Acquire));
        if LAST_LARGE.try_with(Cell::get).ok()? != seen {
            return None;
        }
        if ZERO {
            // SAFETY: `p` maps `len` bytes (its entry's length), this allocation's.
            unsafe { zero_range(p, old.size, len) };
        }
        Some(p)
    }

    /// This instance's allocation at `p` of `len` in lifetime class `life`, seen when the
    /// count of changes was `count` (see [`Last`]).
    fn last(&self, p: *mut u8, len: usize, life: usize, count: u64) -> Last {
        Last {
            instance: self.instance_id(),
            p: p as usize,
            len,
            life,
            count,
        }
    }

    /// True when `p` is outside the region of an instance whose full region falls back to
    /// mappings of their own (`RegionOptions::fallback`): a small allocation there is one.
    #[cold]
    fn is_fallback_mapping(&self, p: *mut u8) -> bool {
        debug_assert!(!self.bounds.contains(p));
        self.pool_if_any().is_some_and(|pool| pool.region.falls_back())
    }

    /// True when `p` is a live fallback mapping made for a slot of `class` in lifetime
    /// class `life`.
    fn is_fallback_of(&self, p: *mut u8, class: usize, life: usize) -> bool {
        self.pool_if_any()
            .is_some_and(|pool| self.is_fallback(pool, p, class, life))
    }

    /// [`Instance::realloc_large`] of a run of the region's units (`crate::region::runs`):
    /// checked against the run's word, then resized in place when the new size is large,
    /// needs the same units and no larger alignment; `None` when it must move.
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn realloc_run<const ZERO: bool, const ABORT: bool>(
        &self,
        pool: &crate::pool::Pool,
        p: *mut u8,
        old_side: SizeAlign,
        new_side: SizeAlign,
        life: usize,
    ) -> Option<*mut u8> {
        let (old, new) = (old_side.size, new_side.size);
        let run = match pool.run_at(p) {
            Some(run) if Some(run.len) == os::page_round(old) && run.life == life => run,
            _ => report::<ABORT>(self.misuse(p, old, life, pool.run_problem(p))),
        };
        let stays_large = new != 0 && class_of(new, new_side.align).is_none();
        let aligned = (p as usize).is_multiple_of(new_side.align.max(os::MIN_PAGE));
        let len = os::page_round(new)?;
        if !stays_large || !aligned || !pool.resize_run(p, len) {
            return None;
        }
        debug_assert!(run.len <= run.units * crate::region::UNIT);
        if ZERO {
            // The run's bytes past the old size may be dirty (its last page's tail, or a
            // kept region's older bytes).
            // SAFETY: the run holds `len` bytes, this allocation's.
            unsafe { zero_range(p, old, len) };
        }
        Some(p)
    }
}

/// An allocation the calling thread resized last, as it was then: this instance's
/// allocation at `p` of `len` (bytes, page-rounded, for a large allocation; granules for a
/// medium run) in lifetime class `life`, when the count of changes that would have made
/// it otherwise was `count` ([`large::REMOVALS`], [`LONG_CHANGES`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Last {
    instance: u64,
    p: usize,
    len: usize,
    life: usize,
    count: u64,
}

/// No allocation.
const NONE: Last = Last {
    instance: 0,
    p: 0,
    len: 0,
    life: 0,
    count: 0,
};

std::thread_local! {
    /// The large allocation (outside the region, made for a large request) the calling
    /// thread resized last.
    static LAST_LARGE: Cell<Last> = const { Cell::new(NONE) };
    /// The medium run longer than `STARTS_MAX` granules the calling thread resized last.
    static LAST_LONG_RUN: Cell<Last> = const { Cell::new(NONE) };
}

/// The longest mapping a large allocation of `len` bytes (page-rounded) keeps: an eighth
/// more, in whole pages.
fn longest_mapping(len: usize) -> usize {
    let page = os::page_size();
    len + ((len / 8) & !(page - 1))
}

/// Remaps the large allocation `p`, a mapping of `mapped` bytes whose size rounded to
/// `was`, to `len` bytes (moved or not). A small growth (an eighth or less: a buffer grown
/// by exact reserves) maps an eighth more, so that the steps after it grow in place with no
/// system call (the room is address space until written, within the 1/8 bound). Returns
/// the new address and mapping length, or `None` with the mapping as it was; and the
/// system calls made.
///
/// # Safety
/// `[p, p + mapped)` is a mapping of ours that nothing else changes meanwhile; `len` is a
/// page multiple.
unsafe fn remap_large(p: *mut u8, mapped: usize, was: usize, len: usize) -> (Option<(*mut u8, usize)>, u64) {
    let room = if len > was && len - was <= was / 8 {
        longest_mapping(len)
    } else {
        len
    };
    // SAFETY: the caller's mapping; both lengths are page multiples.
    let q = unsafe { os::remap(p, mapped, room) };
    if !q.is_null() {
        return (Some((q, room)), 1);
    }
    if room == len {
        return (None, 1);
    }
    // SAFETY: as above (the failed remap changed nothing).
    let q = unsafe { os::remap(p, mapped, len) };
    ((!q.is_null()).then_some((q, len)), 2)
}

/// Growth of the large allocation `p` (a mapping of `mapped` bytes) to `len > mapped`
/// bytes from the cache, under the large lock: into the cached mapping that starts where
/// `p`'s ends (in place), else into a cached mapping of `len` to [`GROWTH_TAKE`] times
/// `len` bytes, whose pages are resident already (the caller copies and caches `p`'s
/// mapping). Either keeps at most [`longest_mapping`]; the rest stays cached with the
/// taken range's time (unused since then: the cache's decay bound). Returns the
/// new address and mapping length, or `None` (nothing changed); the cache's give-ups go
/// to `evicted`.
fn grow_cached(
    large: &mut LargeTable,
    p: *mut u8,
    mapped: usize,
    len: usize,
    now: u64,
    evicted: &mut [Option<Evicted>; 2],
) -> Option<(*mut u8, usize)> {
    let keep = longest_mapping(len);
    let after = p as usize + mapped;
    let (at, total, freed_at) = match large.take_cached_at(after, len - mapped) {
        Some(more) => (p as usize, mapped + more.len, more.freed_at),
        None => {
            let most = len.saturating_mul(GROWTH_TAKE);
            let (got, decayed) = large.take_cached_within(len, most, now);
            evicted[0] = Some(decayed);
            let got = got?;
            (got.addr, got.len, got.freed_at)
        }
    };
    if total > keep {
        // The rest lies in the taken range (`keep > mapped`).
        let rest = Cached {
            addr: at + keep,
            len: total - keep,
            freed_at,
        };
        evicted[1] = Some(large.cache_again(rest, now));
    }
    Some((at as *mut u8, total.min(keep)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decay::Retention;
    use core::cell::RefCell;
    use core::time::Duration;

    std::thread_local! {
        /// What runs between a locked medium resize and the thread's memo of it (what
        /// another thread may do at that moment).
        static AFTER_LOCKED_RESIZE: RefCell<Option<Box<dyn FnOnce()>>> = const { RefCell::new(None) };
    }

    /// Runs (once) what a test set in [`AFTER_LOCKED_RESIZE`].
    pub(super) fn after_a_locked_resize() {
        if let Some(f) = AFTER_LOCKED_RESIZE.with(|f| f.borrow_mut().take()) {
            f();
        }
    }

    /// A long medium run (over `STARTS_MAX` granules) freed right after a resize of it
    /// dropped the lock, before the resize's memo: the next resize of it within its
    /// granules (a resize after the free) is reported, not taken for a live run's.
    #[test]
    fn a_free_racing_a_long_runs_resize_leaves_no_memo_of_it() {
        let a: crate::Cohort = crate::Cohort::new();
        let old = 600 << 10;
        assert!(old / GRANULE > STARTS_MAX);
        let p = a.malloc(old, ());
        assert!(!p.is_null());
        let q = p as usize;
        let freer = ptr::from_ref(&a) as usize;
        AFTER_LOCKED_RESIZE.with(|f| {
            *f.borrow_mut() = Some(Box::new(move || {
                // SAFETY: `a` outlives the resize this runs in; the free is the race under
                // test (another thread's free of the run at this moment).
                unsafe { (*(freer as *const crate::Cohort)).free(q as *mut u8, old + 1, ()) };
            }))
        });
        // SAFETY: live with `old` bytes; grown within its granules.
        let r = unsafe { a.remalloc(p, old, old + 1, ()) };
        assert_eq!(r, p);
        let resized = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: misuse (freed above), reported before anything changes.
            unsafe { a.remalloc(p, old + 1, old + 2, ()) }
        }));
        assert!(
            resized.is_err(),
            "a resize of a long run freed after its last resize's unlock was not reported"
        );
    }

    /// A table whose cache keeps up to 1 GiB in 32 ranges, with a delay of 800 ms (the
    /// adaptive delay starts at 100).
    fn table() -> LargeTable {
        let mut t = LargeTable::new();
        let r = Retention {
            large_cache_bytes: 1 << 30,
            large_cache_mappings: 32,
            delay: Duration::from_millis(800),
            ..Retention::DEFAULT
        };
        assert_eq!(t.configure_cache(&r).len(), 0);
        t
    }

    /// A growing allocation takes a cached range (the one after it, or one elsewhere up to
    /// 16 times as long) and keeps at most an eighth more than it asks: the rest stays
    /// cached with the time its bytes were last used, so it still goes back within the
    /// delay of that time (the cache's decay bound), not a delay after the growth.
    #[test]
    fn a_growth_leaves_the_rest_of_a_cached_range_with_its_own_time() {
        let page = os::page_size();
        let (p, mapped, len) = (0x1000_0000usize, 16 * page, 32 * page);
        let keep = longest_mapping(len);
        for after in [true, false] {
            let mut t = table();
            // Cached at 1000: right after the allocation, or elsewhere.
            let at = if after { p + mapped } else { 0x2000_0000 };
            assert_eq!(t.cache_freed(at, 64 * page, 1000).len(), 0);
            let mut evicted = [None, None];
            let got = grow_cached(&mut t, p as *mut u8, mapped, len, 1050, &mut evicted);
            let start = if after { p } else { at };
            assert_eq!(got, Some((start as *mut u8, keep)), "after: {after}");
            let total = if after { mapped + 64 * page } else { 64 * page };
            assert_eq!(t.cached(), (1, total - keep));
            // Unused since 1000: kept until 1000 + 100, given back after.
            assert_eq!(t.decay_cache(1100).len(), 0, "after: {after}");
            let out = t.decay_cache(1101);
            assert_eq!(
                out.iter().collect::<Vec<_>>(),
                [(start + keep, total - keep)],
                "the rest of the range taken to grow (after: {after}) was kept past the delay"
            );
        }
    }
}
