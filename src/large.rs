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
//! The table is an open-addressing hash set with linear probing, in memory mapped from the
//! OS (never the global allocator). Invariants: `len + tombstones < capacity * 3 / 4`
//! after every insert; an address is in at most one live entry; for every live entry
//! `len <= mapped <= len + len / 8` (`len` is what the allocation's size rounds to, `mapped`
//! the mapping, longer when it came from the cache); `bytes = Σ mapped` over the live
//! entries; an entry made for a small request of size class `c` has
//! `len = page_round(stride(c))`, one for a medium request of `g` granules
//! `len = page_round(size)` with `ceil(size / GRANULE) = g`.
//!
//! Freed mappings go to the [`cache`] (beside the table, under the same lock) as ranges of
//! address space, not back to the OS at once: no byte of a cached range is in a live entry
//! (a live allocation may be the head of what was a cached range, its tail still cached),
//! and `bytes + cache.bytes()` is every large byte mapped.

mod cache;

use crate::class::medium_granules;
use crate::decay::Retention;
use crate::os;
use crate::sync::PoolLock;
pub(crate) use cache::{Cached, Evicted};
use core::ptr;

const EMPTY: usize = 0;
const TOMB: usize = 1;

/// Live large allocations removed from any table of the process so far (each removal adds
/// one, under its table's lock): while it stays the same, every entry a thread saw live is
/// still live as it was (an entry changes only by its removal), which lets a resize within
/// the same pages skip the lock (`resize`'s memo of the last large allocation resized).
/// Core atomics even under loom (read outside any model's schedule: a hint that only
/// decides between two correct paths).
pub(crate) static REMOVALS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
const MIN_CAPACITY: usize = 512;

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

/// A slot of the table, in words only (the table's memory starts zeroed: every bit pattern
/// must be a valid entry).
#[derive(Clone, Copy)]
struct Entry {
    /// The mapping's address, or `EMPTY` / `TOMB`.
    addr: usize,
    len: usize,
    mapped: usize,
    life: usize,
    /// The request's kind ([`Kind`]): 0 large; `granules << 2 | 1` medium; `class << 2 | 2`
    /// small.
    kind: usize,
}

impl Entry {
    fn new(addr: usize, m: Mapping) -> Entry {
        Entry {
            addr,
            len: m.len,
            mapped: m.mapped,
            life: m.request.life,
            kind: match m.request.kind {
                Kind::Large => 0,
                Kind::Medium(granules) => granules << 2 | 1,
                Kind::Small(class) => class << 2 | 2,
            },
        }
    }

    fn mapping(&self) -> Mapping {
        Mapping {
            len: self.len,
            mapped: self.mapped,
            request: Request {
                kind: match self.kind & 3 {
                    1 => Kind::Medium(self.kind >> 2),
                    2 => Kind::Small(self.kind >> 2),
                    _ => Kind::Large,
                },
                life: self.life,
            },
        }
    }
}

/// The live large allocations of one allocator instance (guarded by the pool's large lock).
pub(crate) struct LargeTable {
    entries: *mut Entry,
    capacity: usize,
    len: usize,
    tombs: usize,
    /// Mapped bytes of the live entries.
    pub(crate) bytes: usize,
    /// Freed mappings kept for reuse.
    cache: cache::Cache,
    /// System calls the large paths made (map, unmap, remap), counted where they are decided.
    pub(crate) system_calls: u64,
    /// Rebuilds so far ([`LargeTable::grow`]): between two, every entry keeps its slot.
    rebuilds: u64,
}

/// A walk of the table that drops its lock between steps ([`LargeTable::release_next`]):
/// the next slot, in the table as it was after `rebuilds` rebuilds.
#[derive(Clone, Copy, Default)]
pub(crate) struct Walk {
    slot: usize,
    rebuilds: u64,
}

// SAFETY: the table owns its mapping; it is only reached through its lock.
unsafe impl Send for LargeTable {}

impl LargeTable {
    pub(crate) const fn new() -> Self {
        LargeTable {
            entries: ptr::null_mut(),
            capacity: 0,
            len: 0,
            tombs: 0,
            bytes: 0,
            cache: cache::Cache::new(),
            system_calls: 0,
            rebuilds: 0,
        }
    }

    /// Live large allocations.
    pub(crate) fn count(&self) -> usize {
        self.len
    }

    fn slot(&self, i: usize) -> Entry {
        debug_assert!(i < self.capacity);
        // SAFETY: i < capacity: inside the table's mapping.
        unsafe { self.entries.add(i).read() }
    }

    fn set(&mut self, i: usize, e: Entry) {
        debug_assert!(i < self.capacity);
        // SAFETY: as in slot; `&mut self` is the only access.
        unsafe { self.entries.add(i).write(e) }
    }

    fn home(&self, addr: usize) -> usize {
        ((addr >> 12).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20) & (self.capacity - 1)
    }

    /// Records a live allocation at `addr`. Returns false when the table cannot grow (out
    /// of memory).
    pub(crate) fn insert(&mut self, addr: usize, mapping: Mapping) -> bool {
        debug_assert!(mapping.len <= mapping.mapped);
        debug_assert!(mapping.mapped <= mapping.len + mapping.len / 8);
        // An address is in at most one live entry, and a cached one in none.
        debug_assert!(self.find(addr).is_none() && !self.cache.contains(addr));
        if (self.len + self.tombs + 1) * 4 >= self.capacity * 3 && !self.grow() {
            return false;
        }
        let mut i = self.home(addr);
        loop {
            let e = self.slot(i);
            if e.addr == EMPTY || e.addr == TOMB {
                if e.addr == TOMB {
                    self.tombs -= 1;
                }
                self.set(i, Entry::new(addr, mapping));
                self.len += 1;
                self.bytes += mapping.mapped;
                return true;
            }
            i = (i + 1) & (self.capacity - 1);
        }
    }

    /// Makes room for one more entry (growing the table now if the next insert would):
    /// then a removal and an insert after it never grow it. False when it cannot grow (out
    /// of memory), nothing changed.
    pub(crate) fn reserve_one(&mut self) -> bool {
        (self.len + self.tombs + 1) * 4 < self.capacity * 3 || self.grow()
    }

    /// The index of the live entry of `addr`, if any.
    fn find(&self, addr: usize) -> Option<usize> {
        if self.capacity == 0 || addr <= TOMB {
            return None;
        }
        let mut i = self.home(addr);
        loop {
            match self.slot(i).addr {
                EMPTY => return None,
                a if a == addr => return Some(i),
                _ => i = (i + 1) & (self.capacity - 1),
            }
        }
    }

    /// The live large allocation starting at `addr`.
    pub(crate) fn get(&self, addr: usize) -> Option<Mapping> {
        self.find(addr).map(|i| self.slot(i).mapping())
    }

    /// Removes the allocation at `addr` and returns it, or `None` when no live large
    /// allocation starts there.
    pub(crate) fn remove(&mut self, addr: usize) -> Option<Mapping> {
        let i = self.find(addr)?;
        // Before the entry goes: a resize that read the old count after this would find
        // the entry removed only by its lock (see `REMOVALS`).
        REMOVALS.fetch_add(1, core::sync::atomic::Ordering::AcqRel);
        let e = self.slot(i);
        self.set(i, Entry { addr: TOMB, ..e });
        self.len -= 1;
        self.tombs += 1;
        self.bytes -= e.mapped;
        Some(e.mapping())
    }

    /// True when `addr` starts a cached (freed) mapping: a free of it is a double free.
    pub(crate) fn is_cached(&self, addr: usize) -> bool {
        self.cache.contains(addr)
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
        debug_assert!(self.find(addr).is_none() && !self.cache.contains(addr));
        let out = self.cache.put(addr, mapped, now);
        self.system_calls += out.len() as u64;
        out
    }

    /// Gives back, with its own time, a range taken from the cache and left unused (one
    /// [`LargeTable::take_cached`] handed out to grow that could not be grown, or the part
    /// of a taken range a growing allocation did not keep); returns the ranges to unmap
    /// (counted as system calls).
    pub(crate) fn cache_again(&mut self, taken: Cached, now: u64) -> Evicted {
        debug_assert!(self.find(taken.addr).is_none() && !self.cache.contains(taken.addr));
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

    /// Live large allocations of lifetime class `life`.
    pub(crate) fn count_life(&self, life: usize) -> usize {
        self.live().filter(|&(_, _, l)| l == life).count()
    }

    /// Every live large allocation: (address, length, lifetime class).
    pub(crate) fn live(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        (0..self.capacity)
            .map(|i| self.slot(i))
            .filter(|e| e.addr > TOMB)
            .map(|e| (e.addr, e.len, e.life))
    }

    /// Where a walk of the table stands: the slot to look at next, in the table as it was
    /// after `rebuilds` rebuilds (a rebuild moves the entries: the walk starts again).
    pub(crate) fn walk_from(&self, at: Walk) -> usize {
        if at.rebuilds == self.rebuilds {
            at.slot
        } else {
            0
        }
    }

    /// Removes the first allocation of lifetime class `life` at or after the slot `at`
    /// names ([`LargeTable::walk_from`]) and caches it as its free would at `now`
    /// ([`LargeTable::cache_freed`]: within the cache's bounds). Returns where the walk
    /// goes on and what the cache gave up (to unmap once the lock is dropped: one
    /// allocation per call, so the lock is never held across a system call); `None` when
    /// there is none left.
    pub(crate) fn release_next(
        &mut self,
        life: usize,
        at: Walk,
        now: u64,
    ) -> Option<(Walk, Evicted)> {
        let i = (self.walk_from(at)..self.capacity)
            .find(|&i| self.slot(i).addr > TOMB && self.slot(i).life == life)?;
        let e = self.slot(i);
        self.remove(e.addr);
        let next = Walk {
            slot: i + 1,
            rebuilds: self.rebuilds,
        };
        Some((next, self.cache_freed(e.addr, e.mapped, now)))
    }

    /// Doubles the table (or rebuilds it at the same size when tombstones fill it).
    fn grow(&mut self) -> bool {
        let capacity = if (self.len + 1) * 2 >= self.capacity {
            (self.capacity * 2).max(MIN_CAPACITY)
        } else {
            self.capacity.max(MIN_CAPACITY)
        };
        let Some(bytes) = capacity.checked_mul(size_of::<Entry>()) else {
            return false;
        };
        let entries = os::map(bytes, os::MIN_PAGE).cast::<Entry>();
        if entries.is_null() {
            return false;
        }
        let mut old = core::mem::replace(
            self,
            LargeTable {
                entries,
                capacity,
                len: 0,
                tombs: 0,
                bytes: 0,
                cache: cache::Cache::new(),
                system_calls: 0,
                rebuilds: self.rebuilds + 1,
            },
        );
        for i in 0..old.capacity {
            let e = old.slot(i);
            if e.addr > TOMB {
                self.insert(e.addr, e.mapping());
            }
        }
        // The cache and the count move over as they are (a Drop type: swapped, not moved).
        core::mem::swap(&mut self.cache, &mut old.cache);
        self.system_calls = old.system_calls;
        drop(old);
        true
    }
}

impl LargeTable {
    /// Unmaps every live large allocation and every cached mapping (the instance is going
    /// away).
    ///
    /// # Safety
    /// None of the live ones is used again.
    pub(crate) unsafe fn unmap_all(&mut self) {
        for i in 0..self.capacity {
            let e = self.slot(i);
            if e.addr > TOMB {
                self.remove(e.addr);
                // SAFETY: a live large allocation, unused from now on (caller).
                unsafe { os::unmap(e.addr as *mut u8, e.mapped) };
            }
        }
        let cached = self.drain_cache();
        // SAFETY: cached mappings belong to no allocation: nothing uses them.
        unsafe { unmap_evicted(&cached) };
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
    let mut large = table.lock();
    let (cached, decayed) = large.take_cached(len, align, now);
    let mut ungrown = None;
    // A shorter range the cache handed out to grow: grown outside the lock (a system call),
    // or given back when it cannot be.
    let cached = match cached {
        Some(c) if c.len < len => {
            drop(large);
            // SAFETY: taken from the cache: a range of ours no allocation uses.
            let grown = unsafe { grow_range(c.addr, c.len, len) };
            large = table.lock();
            large.system_calls += 1;
            if grown.is_none() {
                ungrown = Some(large.cache_again(c, now));
            }
            grown
        }
        other => other.map(|c| (c.addr, c.len)),
    };
    let reused = cached.filter(|&(addr, mapped)| {
        large.insert(
            addr,
            Mapping {
                len,
                mapped,
                request,
            },
        )
    });
    drop(large);
    // SAFETY: ranges the cache gave up (decayed, or an ungrown range it would not keep): no
    // allocation uses them.
    unsafe {
        unmap_evicted(&decayed);
        if let Some(out) = &ungrown {
            unmap_evicted(out);
        }
    }
    if let Some((addr, _)) = reused {
        let p = addr as *mut u8;
        if ZERO {
            // A cached mapping keeps its last user's bytes.
            // SAFETY: p maps at least `len` bytes (a page multiple), now this allocation's.
            unsafe { zero_reused(p, len) };
        }
        return p;
    }
    if let Some((addr, mapped)) = cached {
        // Taken but not recorded (the table could not grow): out of memory.
        // SAFETY: taken from the cache, handed to no one.
        unsafe { os::unmap(addr as *mut u8, mapped) };
        return ptr::null_mut();
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
        let drained = table.lock().drain_cache();
        if drained.len() == 0 {
            return p;
        }
        // SAFETY: cached mappings belong to no allocation.
        unsafe { unmap_evicted(&drained) };
        p = map(len, align);
        if p.is_null() {
            return p;
        }
    }
    let mut large = table.lock();
    large.system_calls += 1;
    let fresh = Mapping {
        len,
        mapped: len,
        request,
    };
    if !large.insert(p as usize, fresh) {
        large.system_calls += 1;
        drop(large);
        // SAFETY: mapped just above, never handed out.
        unsafe { os::unmap(p, len) };
        return ptr::null_mut();
    }
    p
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

impl Drop for LargeTable {
    /// Frees the table's own memory (not the allocations it lists: `grow` drops the old
    /// table after moving them).
    fn drop(&mut self) {
        if !self.entries.is_null() {
            // SAFETY: the table's own mapping, no longer used.
            unsafe { os::unmap(self.entries.cast(), self.capacity * size_of::<Entry>()) };
        }
    }
}

#[cfg(test)]
mod tests;
