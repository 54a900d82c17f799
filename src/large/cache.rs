//! The cache of freed large mappings: a free keeps the mapping (pages and all) instead of
//! unmapping it, and a later large request takes back a cached range, so a loop of
//! malloc, touch, free of large sizes makes no system call and no page fault after its
//! first rounds, whether the sizes repeat or not.
//!
//! A cached range belongs to no allocation and no lifetime class: it is not in the large
//! table, so a free of an address inside it finds no live allocation (a double free), stats
//! count it as free, and `release_class` never sees it. Its pages may be dirty (they keep
//! the last user's bytes): a zeroed request served from the cache zeroes them (cheaper than
//! dropping the pages at insert and faulting them in again), by writing zeros below 1 MiB
//! and by their residence from there (the resident pages written, the others dropped: a
//! large zeroed request may be sparse, and zeros written over all of it would make it all
//! resident).
//!
//! **Ranges, not mappings.** A cached entry is a page-aligned range of address space mapped
//! by the large paths, not necessarily one whole `mmap`: a request shorter than a cached
//! range takes its head and leaves its tail cached (a split: no system call, the tail's
//! pages stay resident for the next request), and a freed range is joined to the cached
//! ranges that touch it (a join: the next longer request finds them as one). So the pages a
//! program's large buffers have touched serve its next buffers of any length; only a request
//! longer than every cached range maps more (the longest one grown to it, its pages reused,
//! when it is at least half as long; else a fresh mapping).
//!
//! Invariants, with `cached` the occupied slots:
//! - `count = |cached| <= limit <= SLOTS` and `bytes = Σ_{c ∈ cached} c.len <= cap`;
//! - every `c.addr` and `c.len` is a whole number of pages and `c.len <= cap`;
//! - cached ranges are disjoint, and no byte of one is in a live entry of the large table;
//! - a range is handed out for a page-rounded request `len` only when `c.addr % align =
//!   0`, as it is when `len <= c.len <= len + len / 8` ([`fits`]: at most 1/8 of it unused,
//!   so a live allocation's resident size stays within 1/8 of what is asked), its first
//!   `len` bytes (the rest stays cached) when it is longer, and grown to `len` by the
//!   caller when it is the longest, shorter than `len` and `2 * c.len >= len` (never for a
//!   request longer than `cap`, which would not be cached at its free);
//! - decay: every cached range's `freed_at` is at most the time any of its bytes was last
//!   part of a live allocation (a join keeps the older time, a split the range's), and after
//!   any cache operation at time `now`, `now - c.freed_at <= d` for every cached `c`, with `d`
//!   the adaptive delay ([`Decay`]: a request of at most `cap` bytes that finds nothing
//!   soon after ranges decayed lengthens it; a longer one could never be served); older
//!   ranges are handed back for unmapping: no cached byte stays unused longer than `d`.
//!   `compact()`, instance drop and a zero cap empty the cache.
//!
//! The cache never makes a system call itself: operations return the ranges to unmap
//! ([`Evicted`]), which the caller unmaps after dropping the large lock (`munmap` takes any
//! page-aligned range, within one mapping or across several).

use crate::decay::{Decay, Retention};

/// True when a cached range of `mapped` bytes serves a request of `len` bytes as it is:
/// `len <= mapped <= len + len / 8` (at most an eighth of it unused, so the resident size
/// stays within an eighth of what is asked). A shorter range [`Cache::take`] hands out is
/// grown to `len` by the caller.
pub(crate) fn fits(mapped: usize, len: usize) -> bool {
    len <= mapped && mapped <= len.saturating_add(len / 8)
}

/// Most mappings cached at once, whatever the settings.
pub(crate) const SLOTS: usize = Retention::MAX_LARGE_CACHE_MAPPINGS;

/// A cached range (or a free slot).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Cached {
    /// The range's address (0: the slot is free).
    pub(crate) addr: usize,
    /// Its length in bytes.
    pub(crate) len: usize,
    /// When it was freed (milliseconds of the monotonic clock; see the decay invariant).
    pub(crate) freed_at: u64,
}

const FREE: Cached = Cached {
    addr: 0,
    len: 0,
    freed_at: 0,
};

/// Mappings a cache operation gave up, for the caller to unmap (outside the lock).
pub(crate) struct Evicted {
    maps: [(usize, usize); SLOTS + 1],
    count: usize,
}

impl Evicted {
    const fn new() -> Self {
        Evicted {
            maps: [(0, 0); SLOTS + 1],
            count: 0,
        }
    }

    fn push(&mut self, addr: usize, len: usize) {
        self.maps[self.count] = (addr, len);
        self.count += 1;
    }

    /// How many mappings there are to unmap.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// The (address, length) of each mapping to unmap.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.maps[..self.count].iter().copied()
    }
}

/// Freed large mappings kept for reuse (guarded by the pool's large lock, beside the table).
pub(crate) struct Cache {
    slots: [Cached; SLOTS],
    count: usize,
    bytes: usize,
    /// The byte bound (0: nothing is cached).
    cap: usize,
    /// The most mappings cached (`limit <= SLOTS`).
    limit: usize,
    /// Unused mappings older than its delay are unmapped.
    decay: Decay,
    /// No cached mapping is older than the delay before this time (a scan is skipped).
    next_decay: u64,
}

impl Cache {
    pub(crate) const fn new() -> Self {
        Cache {
            slots: [FREE; SLOTS],
            count: 0,
            bytes: 0,
            cap: Retention::DEFAULT.large_cache_bytes,
            limit: Retention::DEFAULT.large_cache_mappings,
            decay: Decay::new(Retention::DEFAULT.delay.as_millis() as u64),
            next_decay: 0,
        }
    }

    /// The bounds: (bytes, mappings).
    pub(crate) fn bounds(&self) -> (usize, usize) {
        (self.cap, self.limit)
    }

    /// The current delay and the configured one, in milliseconds.
    pub(crate) fn delays(&self) -> (u64, u64) {
        (self.decay.delay(), self.decay.max())
    }

    /// Mappings cached now.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Bytes cached now.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// True when `addr` lies in a cached range (a free of it is a double free: a freed
    /// range may have been joined to its neighbours).
    pub(crate) fn contains(&self, addr: usize) -> bool {
        self.slots
            .iter()
            .any(|c| c.addr != 0 && addr.wrapping_sub(c.addr) < c.len)
    }

    /// Sets the bounds and the delay (the adaptive delay starts again); returns what no
    /// longer fits.
    pub(crate) fn configure(&mut self, r: &Retention) -> Evicted {
        self.cap = r.large_cache_bytes;
        self.limit = r.large_cache_mappings.min(SLOTS);
        self.decay = Decay::new(r.delay_ms());
        self.next_decay = 0;
        let mut out = Evicted::new();
        self.shrink_to(self.cap, 0, &mut out);
        while self.count > self.limit {
            self.evict_oldest(&mut out);
        }
        out
    }

    /// Gives back, at `now`, what was unused for longer than the delay.
    pub(crate) fn tick(&mut self, now: u64) -> Evicted {
        let mut out = Evicted::new();
        self.decay(now, &mut out);
        out
    }

    fn evict(&mut self, i: usize, out: &mut Evicted) {
        let c = self.slots[i];
        debug_assert!(c.addr != 0);
        out.push(c.addr, c.len);
        self.slots[i] = FREE;
        self.count -= 1;
        self.bytes -= c.len;
    }

    /// Evicts every mapping freed more than the delay before `now`.
    fn decay(&mut self, now: u64, out: &mut Evicted) {
        if self.count == 0 || now <= self.next_decay {
            return;
        }
        let delay = self.decay.delay();
        let before = out.len();
        let mut oldest = u64::MAX;
        for i in 0..SLOTS {
            let c = self.slots[i];
            if c.addr == 0 {
                continue;
            }
            if now.saturating_sub(c.freed_at) > delay {
                self.evict(i, out);
            } else {
                oldest = oldest.min(c.freed_at);
            }
        }
        if out.len() > before {
            self.decay.gave_back(now);
        }
        // The delay only grows between scans (a miss), so this stays a lower bound.
        self.next_decay = oldest.saturating_add(self.decay.delay());
    }

    fn evict_oldest(&mut self, out: &mut Evicted) {
        let oldest = (0..SLOTS)
            .filter(|&i| self.slots[i].addr != 0)
            .min_by_key(|&i| self.slots[i].freed_at)
            .expect("count > 0");
        self.evict(oldest, out);
    }

    /// Evicts the oldest mappings until `bytes + room <= cap` and, when `room > 0`, fewer
    /// than `limit` are cached.
    fn shrink_to(&mut self, cap: usize, room: usize, out: &mut Evicted) {
        while self.count > 0 && (self.bytes + room > cap || (room > 0 && self.count >= self.limit))
        {
            self.evict_oldest(out);
        }
    }

    /// Takes a cached range for a request of `len` bytes (page-rounded, `len > 0`) aligned
    /// to `align`, among the ranges that start at a multiple of `align`: the shortest that
    /// [`fits`], as it is; else the head of the shortest longer one (its tail stays cached,
    /// pages and all: no system call); else, when `align` is at most `page` (a grown range
    /// may move to any page) and `len` is at most the bound, the longest shorter one if it
    /// is at least half as long, for the caller to grow to `len` (its pages are reused, only
    /// the rest is new; if it cannot, it gives it back with [`Cache::put_back`]). Returns
    /// it, and the ranges that decayed by `now` (after the take). `align` is a power of two.
    /// Finding none is a miss the adaptive delay learns from (for a `len` the bound allows).
    pub(crate) fn take(
        &mut self,
        len: usize,
        align: usize,
        page: usize,
        now: u64,
    ) -> (Option<Cached>, Evicted) {
        debug_assert!(len > 0 && len.is_multiple_of(page));
        let aligned = |i: &usize| {
            let c = self.slots[*i];
            c.addr != 0 && c.addr & (align - 1) == 0
        };
        let longer = (0..SLOTS)
            .filter(|i| aligned(i) && self.slots[*i].len >= len)
            .min_by_key(|&i| self.slots[i].len);
        if let Some(i) = longer.filter(|&i| !fits(self.slots[i].len, len)) {
            // Split: the head goes, the tail stays in the slot with the range's time.
            let c = &mut self.slots[i];
            let head = Cached { len, ..*c };
            c.addr += len;
            c.len -= len;
            self.bytes -= len;
            return self.take_slot(None, Some(head), len, now);
        }
        // Growing a range of less than half the request would reuse less than it maps: a
        // fresh mapping serves it (aligned and advised as a buffer's, `os::map_large`).
        let grow = || {
            (0..SLOTS)
                .filter(|i| aligned(i) && align <= page && len <= self.cap)
                .max_by_key(|&i| self.slots[i].len)
                .filter(|&i| self.slots[i].len >= len.div_ceil(2))
        };
        let best = longer.or_else(grow);
        self.take_slot(best, None, len, now)
    }

    /// As [`Cache::take`], for a mapping of `len <= c.len <= most` bytes (a growing
    /// allocation takes a longer one: it fills it), never one to resize.
    pub(crate) fn take_within(
        &mut self,
        len: usize,
        most: usize,
        align: usize,
        now: u64,
    ) -> (Option<Cached>, Evicted) {
        let best = (0..SLOTS)
            .filter(|&i| {
                let c = self.slots[i];
                c.addr != 0 && c.len >= len && c.len <= most && c.addr & (align - 1) == 0
            })
            .min_by_key(|&i| self.slots[i].len);
        self.take_slot(best, None, len, now)
    }

    /// Takes slot `best` (if any) out of the cache, or reports `split` (a range already
    /// split off a slot), then gives back the ranges that decayed by `now` (after the take:
    /// a range unused for the delay still serves the request that comes for it, and then
    /// nothing was given back too early). Nothing taken for a request of `len` bytes is a
    /// miss the adaptive delay learns from, unless `len` is above the byte bound: no range
    /// that long is ever kept, so no give-back could have served it.
    fn take_slot(
        &mut self,
        best: Option<usize>,
        split: Option<Cached>,
        len: usize,
        now: u64,
    ) -> (Option<Cached>, Evicted) {
        let mut out = Evicted::new();
        let got = best
            .map(|i| {
                let c = self.slots[i];
                self.slots[i] = FREE;
                self.count -= 1;
                self.bytes -= c.len;
                c
            })
            .or(split);
        self.decay(now, &mut out);
        if got.is_none() && len <= self.cap {
            self.decay.missed(now);
        }
        (got, out)
    }

    /// Takes the cached range that starts at `addr`, if it is at least `least` bytes
    /// long (a growing allocation whose mapping ends at `addr` grows into it, in place).
    pub(crate) fn take_at(&mut self, addr: usize, least: usize) -> Option<Cached> {
        let i = self
            .slots
            .iter()
            .position(|c| c.addr == addr && addr != 0 && c.len >= least)?;
        let c = self.slots[i];
        self.slots[i] = FREE;
        self.count -= 1;
        self.bytes -= c.len;
        Some(c)
    }

    /// Keeps the freed range `addr` of `len` bytes (whole pages, in no live entry) at `now`,
    /// joined to the cached ranges that touch it (the joined range keeps the oldest time,
    /// and stays within the bound), evicting the decayed ranges and the oldest ones to make
    /// room. A range longer than the bound (or any, when `limit` is 0) is not kept: it is
    /// returned among the evicted.
    pub(crate) fn put(&mut self, addr: usize, len: usize, now: u64) -> Evicted {
        let freed = Cached {
            addr,
            len,
            freed_at: now,
        };
        self.keep(freed, now)
    }

    /// Gives back at `now` a range taken from the cache and left unused (one [`Cache::take`]
    /// handed out to grow that the caller could not grow, or the part of a taken range a
    /// growing allocation did not keep): kept as a freed range of its own time.
    pub(crate) fn put_back(&mut self, taken: Cached, now: u64) -> Evicted {
        self.keep(taken, now)
    }

    /// [`Cache::put`] of `freed`, whose time may be older than `now`.
    fn keep(&mut self, freed: Cached, now: u64) -> Evicted {
        let Cached { addr, len, .. } = freed;
        let mut out = Evicted::new();
        self.decay(now, &mut out);
        if len > self.cap
            || self.limit == 0
            || now.saturating_sub(freed.freed_at) > self.decay.delay()
        {
            out.push(addr, len);
            return out;
        }
        let mut joined = freed;
        // The range that ends at `addr`, then the one that starts where it ends (at most
        // one each: cached ranges are disjoint).
        let before = self
            .slots
            .iter()
            .position(|c| c.addr != 0 && c.addr + c.len == addr);
        let after = self.slots.iter().position(|c| c.addr == addr + len);
        for i in [before, after].into_iter().flatten() {
            let c = self.slots[i];
            if joined.len + c.len <= self.cap {
                self.slots[i] = FREE;
                self.count -= 1;
                self.bytes -= c.len;
                joined = Cached {
                    addr: joined.addr.min(c.addr),
                    len: joined.len + c.len,
                    freed_at: joined.freed_at.min(c.freed_at),
                };
            }
        }
        self.shrink_to(self.cap, joined.len, &mut out);
        let free = self.slots.iter().position(|c| c.addr == 0);
        let i = free.expect("shrink_to frees a slot");
        self.slots[i] = joined;
        let due = joined.freed_at.saturating_add(self.decay.delay());
        self.next_decay = if self.count == 0 {
            due
        } else {
            self.next_decay.min(due)
        };
        self.count += 1;
        self.bytes += joined.len;
        out
    }

    /// Empties the cache: every mapping is returned for unmapping.
    pub(crate) fn drain(&mut self) -> Evicted {
        let mut out = Evicted::new();
        for i in 0..SLOTS {
            if self.slots[i].addr != 0 {
                self.evict(i, &mut out);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
