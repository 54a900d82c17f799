//! Large allocations: each is its own page-rounded mapping with no header. The pool keeps a
//! table of them (address → length, lifetime class), outside the mappings, so that
//! releasing a lifetime class frees its large allocations too, a free of an address that
//! is not a live large allocation is caught in every build, and stats count them. The
//! small requests a full region serves from mappings of their own
//! ([`crate::RegionOptions::fallback`]) and the medium requests the region has no room
//! for are entries too, which keep the request's size class or granule count: a free must
//! name what the entry was made for ([`Request`]), as a free in the region must name its
//! block's key or its run's granules.
//!
//! The table ([`table`]) is an open-addressing hash set in memory mapped from the OS (never
//! the global allocator). For every live entry `len <= mapped <= len + len / 8` (`len` is
//! what the allocation's size rounds to, `mapped` the mapping, longer when it came from the
//! cache); an entry made for a small request of size class `c` has `len =
//! page_round(stride(c))`, one for a medium request of `g` granules `len = page_round(size)`
//! with `ceil(size / GRANULE) = g`. The large lock is never held across a system call.
//!
//! Freed mappings go to the [`cache`] (beside the table, under the same lock) as ranges of
//! address space, not back to the OS at once: no byte of a cached range is in a live entry
//! (a live allocation may be the head of what was a cached range, its tail still cached),
//! and `bytes + cache.bytes()` is every large byte mapped.

mod cache;
mod table;

use crate::class::medium_granules;
use crate::decay::Retention;
#[cfg(not(loom))]
use crate::misuse::Problem;
use crate::os;
use crate::sync::PoolLock;
pub(crate) use cache::{Cached, Evicted};
use core::ptr;
pub(crate) use table::{lock_with_room, LargeTable, Walk, REMOVALS};

/// What a live entry's request was, which a free of it must name (besides its lifetime
/// class).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    /// A large request: freed with a size that rounds to the entry's length.
    Large,
    /// A medium request of this many granules (`class::medium_granules`) the region had no
    /// room for: freed with a size of as many granules, as in the region.
    Medium(usize),
    /// A small request of this size class that a full region served from a mapping of its
    /// own (`RegionOptions::fallback`): freed with a size of that class, as in the region.
    Small(usize),
}

/// What a live entry was made for: its request's [`Kind`] and lifetime class.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Request {
    pub(crate) kind: Kind,
    /// Its lifetime class.
    pub(crate) life: usize,
}

impl Request {
    /// A small request of size class `class` in lifetime class `life`.
    pub(crate) const fn small(class: usize, life: usize) -> Request {
        Request {
            kind: Kind::Small(class),
            life,
        }
    }

    /// A request of `size` bytes aligned to `align` above the small classes in lifetime
    /// class `life`: medium or large.
    pub(crate) fn sized(size: usize, align: usize, life: usize) -> Request {
        let kind = medium_granules(size, align).map_or(Kind::Large, Kind::Medium);
        Request { kind, life }
    }
}

/// A live large allocation as the table records it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Mapping {
    /// The page-rounded length its size must round to (its usable size, when large).
    pub(crate) len: usize,
    /// Its mapped length in bytes (`len <= mapped <= len + len / 8`).
    pub(crate) mapped: usize,
    /// What it was made for.
    pub(crate) request: Request,
}

/// The large cache's operations on the table's [`cache`] (under the same lock). Those that
/// give mappings up return them to unmap once the lock is dropped, and count them as
/// system calls.
impl LargeTable {
    /// True when `addr` lies in a cached (freed) mapping: a free of it is a double free.
    pub(crate) fn is_cached(&self, addr: usize) -> bool {
        self.cache.contains(addr)
    }

    /// What a free of `addr`, where no live allocation of the table starts, does to memory
    /// of this allocator's: a double free in a freed mapping the cache keeps, or a pointer
    /// inside a live allocation. `None` when `addr` is in neither (another allocator's, as
    /// far as the table knows).
    #[cfg(not(loom))]
    pub(crate) fn not_a_start(&self, addr: usize) -> Option<Problem> {
        if self.is_cached(addr) {
            return Some(Problem::DoubleFree);
        }
        let (start, mapped) = self.containing(addr)?;
        Some(Problem::InsideLarge { start, mapped })
    }

    /// Cached mappings and their bytes.
    pub(crate) fn cached(&self) -> (usize, usize) {
        (self.cache.count(), self.cache.bytes())
    }

    /// Takes a cached range for a request of `len` bytes (page-rounded) aligned to `align`
    /// (see [`cache`]; shorter than `len` when it is to be grown), and the ranges that
    /// decayed, to unmap (counted as system calls).
    pub(crate) fn take_cached(
        &mut self,
        len: usize,
        align: usize,
        now: u64,
    ) -> (Option<Cached>, Evicted) {
        let (got, out) = self.cache.take(len, align, os::page_size(), now);
        self.system_calls += out.len() as u64;
        (got, out)
    }

    /// The cached range that starts at `addr`, taken if it is at least `least` bytes long.
    pub(crate) fn take_cached_at(&mut self, addr: usize, least: usize) -> Option<Cached> {
        self.cache.take_at(addr, least)
    }

    /// As [`LargeTable::take_cached`], for a growing allocation: a cached mapping of `len`
    /// to `most` bytes.
    pub(crate) fn take_cached_within(
        &mut self,
        len: usize,
        most: usize,
        now: u64,
    ) -> (Option<Cached>, Evicted) {
        let (got, out) = self.cache.take_within(len, most, os::MIN_PAGE, now);
        self.system_calls += out.len() as u64;
        (got, out)
    }

    /// Caches the freed mapping `addr` of `mapped` bytes (already out of the table);
    /// returns the mappings to unmap (counted as system calls).
    pub(crate) fn cache_freed(&mut self, addr: usize, mapped: usize, now: u64) -> Evicted {
        debug_assert!(self.get(addr).is_none() && !self.cache.contains(addr));
        let out = self.cache.put(addr, mapped, now);
        self.system_calls += out.len() as u64;
        out
    }

    /// Gives back, with its own time, a range taken from the cache and left unused (one
    /// [`LargeTable::take_cached`] handed out to grow that could not be grown, or the part
    /// of a taken range a growing allocation did not keep); returns the ranges to unmap
    /// (counted as system calls).
    pub(crate) fn cache_again(&mut self, taken: Cached, now: u64) -> Evicted {
        debug_assert!(self.get(taken.addr).is_none() && !self.cache.contains(taken.addr));
        let out = self.cache.put_back(taken, now);
        self.system_calls += out.len() as u64;
        out
    }

    /// Empties the cache; returns its mappings to unmap (counted as system calls).
    pub(crate) fn drain_cache(&mut self) -> Evicted {
        let out = self.cache.drain();
        self.system_calls += out.len() as u64;
        out
    }

    /// Sets the cache's bounds and delay; returns the mappings to unmap.
    pub(crate) fn configure_cache(&mut self, r: &Retention) -> Evicted {
        let out = self.cache.configure(r);
        self.system_calls += out.len() as u64;
        out
    }

    /// Returns the cached mappings unused for longer than the delay at `now`, to unmap.
    pub(crate) fn decay_cache(&mut self, now: u64) -> Evicted {
        let out = self.cache.tick(now);
        self.system_calls += out.len() as u64;
        out
    }

    /// The cache's bounds: (bytes, mappings).
    pub(crate) fn cache_bounds(&self) -> (usize, usize) {
        self.cache.bounds()
    }

    /// The cache's current (adaptive) delay and its configured one, in milliseconds.
    pub(crate) fn cache_delays(&self) -> (u64, u64) {
        self.cache.delays()
    }
}

/// A large allocation of `len` bytes (page-rounded, `len > 0`) aligned to `align` (a power
/// of two, at least a page) made for `request`, recorded in `table`: a cached mapping
/// of a similar length, else a fresh one; when the OS refuses a fresh one, the cache is
/// given back and the mapping tried once more. With `ZERO` it reads zero. Null when out of
/// memory. `now` is the time ([`crate::decay::now`]). The lock is never held across a
/// system call.
pub(crate) fn allocate<const ZERO: bool>(
    table: &PoolLock<LargeTable>,
    len: usize,
    align: usize,
    request: Request,
    now: u64,
) -> *mut u8 {
    let mapping = |mapped| Mapping {
        len,
        mapped,
        request,
    };
    // Room for the entry first (a growth maps with the lock dropped), so that a range taken
    // from the cache is recorded in the same hold, or keeps a slot while it grows.
    let Some(mut large) = lock_with_room(table, 1).or_else(|| {
        // Out of memory for the table's slots: what the cache holds may make room.
        drain(table).then(|| lock_with_room(table, 1)).flatten()
    }) else {
        return ptr::null_mut();
    };
    let (cached, decayed) = large.take_cached(len, align, now);
    let mut ungrown = None;
    let reused = match cached {
        // A shorter range the cache handed out to grow: grown with the lock dropped (a
        // system call), or given back when it cannot be.
        Some(c) if c.len < len => {
            large.reserve();
            drop(large);
            // SAFETY: taken from the cache: a range of ours no allocation uses.
            let grown = unsafe { grow_range(c.addr, c.len, len) };
            large = table.lock();
            large.system_calls += 1;
            if let Some((addr, mapped)) = grown {
                large.put_in(addr, mapping(mapped));
            } else {
                large.unreserve();
                ungrown = Some(large.cache_again(c, now));
            }
            grown.map(|(addr, _)| addr)
        }
        Some(c) => {
            large.insert(c.addr, mapping(c.len));
            Some(c.addr)
        }
        None => None,
    };
    drop(large);
    // SAFETY: ranges the cache gave up (decayed, or an ungrown range it would not keep): no
    // allocation uses them.
    unsafe {
        unmap_evicted(&decayed);
        if let Some(out) = &ungrown {
            unmap_evicted(out);
        }
    }
    if let Some(addr) = reused {
        let p = addr as *mut u8;
        if ZERO {
            // A cached mapping keeps its last user's bytes.
            // SAFETY: p maps at least `len` bytes (a page multiple), now this allocation's.
            unsafe { zero_reused(p, len) };
        }
        return p;
    }
    // Fresh mappings read zero: calloc needs no memset. A zeroed request may be sparse (a
    // table touched here and there): mapped afresh, it keeps small pages, so that its
    // resident size is what it touches; a buffer's pages are huge where the system allows
    // (fewer faults). (A cached range keeps the pages it was mapped with.)
    let map = |len, align| match ZERO {
        true => os::map(len, align),
        false => os::map_large(len, align),
    };
    let mut p = map(len, align);
    if p.is_null() {
        // Out of address space or memory: what the cache holds may make room.
        if !drain(table) {
            return p;
        }
        p = map(len, align);
        if p.is_null() {
            return p;
        }
    }
    let Some(mut large) = lock_with_room(table, 1) else {
        // SAFETY: mapped just above, never handed out.
        unsafe { os::unmap(p, len) };
        return ptr::null_mut();
    };
    large.system_calls += 1;
    large.insert(p as usize, mapping(len));
    p
}

/// Empties the cache of `table` and unmaps what it held (after the unlock): false when it
/// held nothing.
fn drain(table: &PoolLock<LargeTable>) -> bool {
    let drained = table.lock().drain_cache();
    // SAFETY: cached mappings belong to no allocation.
    unsafe { unmap_evicted(&drained) };
    drained.len() > 0
}

/// From this length up a reused range is zeroed by its pages' residence ([`os::zero_pages`]:
/// the resident ones written with zeros, the others given back, one residence read)
/// rather than by writing zeros over all of it: a large zeroed request may be sparse, and
/// writing it all would make it all resident; giving it all back would fault it all in
/// again (a loop of `vec![0; n]` faulting every page of every round).
const ZERO_BY_RESIDENCE: usize = 1 << 20;

/// Makes the first `len` bytes of a reused private mapping at `p` read zero.
///
/// # Safety
/// `[p, p + len)` is a page-aligned range of a private mapping of ours whose contents
/// nobody needs; `len` is a page multiple.
pub(crate) unsafe fn zero_reused(p: *mut u8, len: usize) {
    if len >= ZERO_BY_RESIDENCE {
        // SAFETY: the caller's guarantee.
        unsafe { os::zero_pages(p, len) };
    } else {
        // SAFETY: the caller's guarantee.
        unsafe { ptr::write_bytes(p, 0, len) };
    }
}

/// Grows a cached range of `mapped` bytes at `addr` to `len > mapped` (both page
/// multiples): in place when the address space after it is free; else, where buffers are
/// not given huge pages ([`os::huge_pages_on_advice`]), moved with its pages (a move to an
/// address of another offset in a huge page would break its huge pages into small ones,
/// whose untouched parts then fault page by page: a fresh mapping faults less). Returns the
/// range as (address, length) for the request, or `None`, the range left as it was, when it
/// cannot grow (the OS also refuses a range that spans two of its mappings: cached ranges
/// joined across mappings).
///
/// # Safety
/// `[addr, addr + mapped)` is a range of ours that no allocation uses.
unsafe fn grow_range(addr: usize, mapped: usize, len: usize) -> Option<(usize, usize)> {
    debug_assert!(mapped < len);
    let p = addr as *mut u8;
    // SAFETY: the caller's range; both lengths are page multiples.
    if unsafe { os::grow_in_place(p, mapped, len) } {
        return Some((addr, len));
    }
    if os::huge_pages_on_advice() {
        return None;
    }
    // SAFETY: as above (a refused growth left it as it was).
    let q = unsafe { os::remap(p, mapped, len) };
    (!q.is_null()).then_some((q as usize, len))
}

/// Unmaps the mappings a cache operation gave up.
///
/// # Safety
/// They came from the cache (or a free that was not cached): no allocation uses them.
pub(crate) unsafe fn unmap_evicted(out: &Evicted) {
    for (addr, len) in out.iter() {
        // SAFETY: a mapping of `len` bytes that belongs to no allocation (caller).
        unsafe { os::unmap(addr as *mut u8, len) };
    }
}
