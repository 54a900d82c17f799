//! Resizing a large allocation: a mapping of the large table (in place within its mapping,
//! into a cached range, or remapped), or a run of the region's units (in place).
//!
//! Invariants:
//! - after a resize of a mapping to `new` bytes its entry has `len = page_round(new)` and
//!   `len <= mapped <= len + len / 8` (a small growth remaps with an eighth more as room for
//!   the next steps; a shrink past the bound remaps to `len`);
//! - the large lock is never held across a system call: a remap drops it, the entry taken
//!   out of the table with its slot kept (`LargeTable::take_out`, `put_in`: no growth of
//!   the table, however it changed meanwhile), and put back as it was when the remap fails;
//! - the thread's memo `LAST_LARGE = (instance, p, len, life, REMOVALS)` is set only under
//!   the lock with the entry live as it is then, so that `REMOVALS` unchanged since implies
//!   the entry unchanged (a resize within its pages then skips the lock).

use super::{zero_range, SizeAlign, LAST_LARGE};
use crate::class::{class_of, medium_granules};
use crate::free::{large_match, Named};
use crate::instance::Instance;
use crate::large::{self, unmap_evicted, zero_reused, Cached, Evicted, Kind, LargeTable, Mapping, Request};
use crate::misuse::{report, Problem};
use crate::os;
use core::cell::Cell;
use core::ptr;
use core::sync::atomic::Ordering;

/// A growing large allocation takes a cached mapping up to this many times its new length
/// (see `Instance::realloc_large`).
const GROWTH_TAKE: usize = 16;

impl Instance {
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
    pub(super) unsafe fn realloc_large<const ZERO: bool, const ABORT: bool>(
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
    /// ([`super::Last`]) left `p` a live large allocation of this instance, of the pages `old` and
    /// `new` both round to, in lifetime class `life`, and no large allocation of the process
    /// was removed since ([`large::REMOVALS`]), in a region no other process uses: its entry
    /// is then as it was, so the check a free makes (the entry's length and lifetime class)
    /// passes as it did, and its mapping holds the pages (`len <= mapped <= len + len / 8`).
    /// With `ZERO` the bytes past `old` read zero. `None`: the locked path decides (a loop
    /// of one-byte growths takes this path for all but one step a page).
    #[inline]
    pub(super) fn resize_within_pages<const ZERO: bool>(
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
        // An alignment the region cannot keep in every view moves (and is refused there).
        let aligned = (p as usize).is_multiple_of(new_side.align.max(os::MIN_PAGE))
            && pool.region.keeps_alignment(new_side.align);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decay::Retention;
    use core::time::Duration;

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
