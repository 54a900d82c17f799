//! The cache of freed large mappings: a free keeps the mapping (pages and all) instead of
//! unmapping it, and a later large request of a similar length takes it back, so a loop of
//! malloc, touch, free of one large size makes no system call and no page fault after its
//! first round.
//!
//! A cached mapping belongs to no allocation and no lifetime class: it is not in the large
//! table, so a free of its address finds no live allocation (a double free when the address
//! is cached), stats count it as free, and `release_class` never sees it. Its pages may be
//! dirty (they keep the last user's bytes): a zeroed request served from the cache zeroes
//! them (cheaper than dropping the pages at insert and faulting them in again).
//!
//! Invariants, with `cached` the occupied slots:
//! - `count = |cached| <= limit <= SLOTS` and `bytes = Σ_{c ∈ cached} c.len <= cap`;
//! - every `c.len` is a whole number of pages and `c.len <= cap`;
//! - a cached address is in no live entry of the large table, and in at most one slot;
//! - a mapping is handed out for a page-rounded request `len` only when `c.addr % align =
//!   0`, and used as it is only when `len <= c.len <= len + len / 8` ([`fits`]: at most 1/8
//!   of the mapping unused, so the resident size stays within 1/8 of what is asked); with
//!   the cache at its bound, a longer one is trimmed to `len` and a shorter one grown to
//!   it, reusing its pages (a program allocating large buffers of ever-different lengths
//!   faults in only the difference);
//! - decay: after any cache operation at time `now`, `now - c.freed_at <= d` for every
//!   cached `c`, with `d` the adaptive delay ([`Decay`]: a request that finds no fit soon
//!   after mappings decayed lengthens it); older mappings are handed back for unmapping.
//!   `compact()`, instance drop and a zero cap empty the cache.
//!
//! The cache never makes a system call itself: operations return the mappings to unmap
//! ([`Evicted`]), which the caller unmaps after dropping the large lock.

use crate::decay::{Decay, Retention};

/// True when a cached mapping of `mapped` bytes serves a request of `len` bytes as it is:
/// `len <= mapped <= len + len / 8` (at most an eighth of it unused, so the resident size
/// stays within an eighth of what is asked). Any other mapping [`Cache::take`] hands out
/// is resized to `len` by the caller.
pub(crate) fn fits(mapped: usize, len: usize) -> bool {
    len <= mapped && mapped <= len.saturating_add(len / 8)
}

/// Most mappings cached at once, whatever the settings.
pub(crate) const SLOTS: usize = Retention::MAX_LARGE_CACHE_MAPPINGS;

#[derive(Clone, Copy)]
struct Cached {
    /// The mapping's address (0: the slot is free).
    addr: usize,
    /// Its length in bytes.
    len: usize,
    /// When it was freed (milliseconds of the monotonic clock).
    freed_at: u64,
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

    /// True when a cached mapping starts at `addr`.
    pub(crate) fn contains(&self, addr: usize) -> bool {
        addr != 0 && self.slots.iter().any(|c| c.addr == addr)
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

    /// Takes the cached mapping that best fits a request of `len` bytes (page-rounded)
    /// aligned to `align`: the shortest with `len <= c.len <= len + len / 8`. When none
    /// fits and the request's own mapping would not fit in the cache beside what it holds
    /// (its bytes or its mappings at their bound: a fresh mapping would only push a cached
    /// one out at its free) though it would alone, the nearest instead, for the caller to resize ([`fits`] says
    /// when it must): the shortest longer one (trimmed to `len`: its first `len` bytes'
    /// pages are reused), else the longest shorter one (grown to `len`: its pages are
    /// reused, only the rest is new) when `align` is at most `page` (a grown mapping may
    /// move to any page). Returns it as (address, mapped length), and the mappings that
    /// decayed by `now` (after the take). `align` is a power of two. Finding none is a
    /// miss the adaptive delay learns from.
    pub(crate) fn take(
        &mut self,
        len: usize,
        align: usize,
        page: usize,
        now: u64,
    ) -> (Option<(usize, usize)>, Evicted) {
        let mut out = Evicted::new();
        let aligned = |c: &Cached| c.addr != 0 && c.addr & (align - 1) == 0;
        let cached = |i: &usize| aligned(&self.slots[*i]);
        let best = (0..SLOTS)
            .filter(|i| cached(i) && fits(self.slots[*i].len, len))
            .min_by_key(|&i| self.slots[i].len);
        // A request longer than the bound would not be cached at its free: resizing a
        // cached mapping for it would only lose that mapping.
        let full = len <= self.cap
            && (self.bytes.saturating_add(len) > self.cap || self.count >= self.limit);
        let near = || {
            let longer = (0..SLOTS)
                .filter(|i| cached(i) && self.slots[*i].len > len)
                .min_by_key(|&i| self.slots[i].len);
            longer.or_else(|| {
                (0..SLOTS)
                    .filter(|i| cached(i) && align <= page && self.slots[*i].len < len)
                    .max_by_key(|&i| self.slots[i].len)
            })
        };
        let best = best.or_else(|| if full { near() } else { None });
        let got = best.map(|i| {
            let c = self.slots[i];
            self.slots[i] = FREE;
            self.count -= 1;
            self.bytes -= c.len;
            (c.addr, c.len)
        });
        // Decay after the take: a mapping unused for the delay still serves the request
        // that comes for it (then nothing was given back too early).
        self.decay(now, &mut out);
        if got.is_none() {
            self.decay.missed(now);
        }
        (got, out)
    }

    /// Keeps the freed mapping `addr` of `len` bytes (a whole number of pages, in no live
    /// entry) at `now`, evicting the oldest mappings to make room and the decayed ones. A
    /// mapping longer than the bound (or any, when `limit` is 0) is not kept: it is returned
    /// among the evicted.
    pub(crate) fn put(&mut self, addr: usize, len: usize, now: u64) -> Evicted {
        let mut out = Evicted::new();
        self.decay(now, &mut out);
        if len > self.cap || self.limit == 0 {
            out.push(addr, len);
            return out;
        }
        self.shrink_to(self.cap, len, &mut out);
        let free = self.slots.iter().position(|c| c.addr == 0);
        let i = free.expect("shrink_to frees a slot");
        self.slots[i] = Cached {
            addr,
            len,
            freed_at: now,
        };
        let due = now.saturating_add(self.decay.delay());
        self.next_decay = if self.count == 0 {
            due
        } else {
            self.next_decay.min(due)
        };
        self.count += 1;
        self.bytes += len;
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
mod tests {
    use super::*;
    use core::time::Duration;

    const PAGE: usize = 4096;

    fn bounded(bytes: usize, mappings: usize, delay_ms: u64) -> Cache {
        let mut c = Cache::new();
        let r = Retention {
            large_cache_bytes: bytes,
            large_cache_mappings: mappings,
            delay: Duration::from_millis(delay_ms),
            ..Retention::DEFAULT
        };
        assert_eq!(c.configure(&r).len(), 0);
        c
    }

    #[test]
    fn takes_the_best_fit_within_an_eighth() {
        let mut c = Cache::new();
        assert_eq!(c.put(0x10_0000, 16 * PAGE, 0).len(), 0);
        assert_eq!(c.put(0x20_0000, 18 * PAGE, 0).len(), 0);
        assert_eq!(c.put(0x30_0000, 17 * PAGE, 0).len(), 0);
        // 16 pages: 16..=18 fit; 16 is the shortest.
        assert_eq!(
            c.take(16 * PAGE, PAGE, PAGE, 0).0,
            Some((0x10_0000, 16 * PAGE))
        );
        // 15 pages: at most 16 pages (15 + 15/8 = 16.875): none of 17, 18.
        assert_eq!(c.take(15 * PAGE, PAGE, PAGE, 0).0, None);
        // 17 pages: 17 (the shortest of 17, 18).
        assert_eq!(
            c.take(17 * PAGE, PAGE, PAGE, 0).0,
            Some((0x30_0000, 17 * PAGE))
        );
        // Alignment: 0x20_0000 is 2 MiB-aligned, not 4 MiB.
        assert_eq!(c.take(18 * PAGE, 4 << 20, PAGE, 0).0, None);
        assert_eq!(
            c.take(18 * PAGE, 2 << 20, PAGE, 0).0,
            Some((0x20_0000, 18 * PAGE))
        );
        assert_eq!((c.count(), c.bytes()), (0, 0));
    }

    #[test]
    fn at_its_bound_the_cache_hands_out_the_nearest_mapping_to_resize() {
        // Room for 40 pages: a 30-page request does not fit beside the 30 cached.
        let mut c = bounded(40 * PAGE, 32, 1000);
        assert_eq!(c.put(0x10_0000, 10 * PAGE, 0).len(), 0);
        assert_eq!(c.put(0x20_0000, 20 * PAGE, 0).len(), 0);
        // 15 pages: none within an eighth; the shortest longer one, to trim.
        assert_eq!(
            c.take(15 * PAGE, PAGE, PAGE, 0).0,
            Some((0x20_0000, 20 * PAGE))
        );
        assert!(!fits(20 * PAGE, 15 * PAGE));
        assert_eq!(c.put(0x20_0000, 20 * PAGE, 0).len(), 0);
        // 30 pages: none longer; the longest shorter one, to grow, unless a larger
        // alignment than the page is asked (a grown mapping may move).
        assert_eq!(c.take(30 * PAGE, 2 * PAGE, PAGE, 0).0, None);
        assert_eq!(
            c.take(30 * PAGE, PAGE, PAGE, 0).0,
            Some((0x20_0000, 20 * PAGE))
        );
        // Below its bound the cache keeps its mappings for the lengths they fit: a miss.
        let mut roomy = bounded(1000 * PAGE, 32, 1000);
        assert_eq!(roomy.put(0x10_0000, 10 * PAGE, 0).len(), 0);
        assert_eq!(roomy.take(15 * PAGE, PAGE, PAGE, 0).0, None);
        assert_eq!(roomy.take(5 * PAGE, PAGE, PAGE, 0).0, None);
    }

    #[test]
    fn the_byte_bound_and_the_slots_evict_the_oldest() {
        let mut c = bounded(10 * PAGE, 32, 1000);
        assert_eq!(c.put(0x1000_0000, 4 * PAGE, 0).len(), 0);
        assert_eq!(c.put(0x2000_0000, 4 * PAGE, 1).len(), 0);
        let out = c.put(0x3000_0000, 4 * PAGE, 2);
        assert_eq!(out.iter().collect::<Vec<_>>(), [(0x1000_0000, 4 * PAGE)]);
        assert!(c.bytes() <= 10 * PAGE && c.contains(0x3000_0000));
        // Longer than the bound: not kept.
        let out = c.put(0x4000_0000, 11 * PAGE, 3);
        assert_eq!(out.iter().collect::<Vec<_>>(), [(0x4000_0000, 11 * PAGE)]);
        // Slots: limit + 1 one-page mappings keep `limit`, whatever the limit.
        for limit in [1, 5, SLOTS] {
            let mut c = bounded(1 << 30, limit, 1000);
            let mut evicted = 0;
            for i in 1..=limit + 1 {
                evicted += c.put(i << 24, PAGE, i as u64).len();
            }
            assert_eq!((c.count(), evicted), (limit, 1));
            assert!(!c.contains(1 << 24), "the oldest went");
            // A lower limit evicts the oldest at once.
            let out = c.configure(&Retention {
                large_cache_mappings: limit / 2,
                ..Retention::DEFAULT
            });
            assert_eq!((c.count(), out.len()), (limit / 2, limit - limit / 2));
            assert_eq!(c.drain().len(), limit / 2);
            assert_eq!((c.count(), c.bytes()), (0, 0));
        }
        // No mappings at all: nothing is kept.
        let mut c = bounded(1 << 30, 0, 1000);
        assert_eq!(c.put(1 << 24, PAGE, 0).len(), 1);
        assert_eq!(c.count(), 0);
    }

    #[test]
    fn unused_mappings_decay_after_the_adaptive_delay() {
        // A delay of 800 ms starts at 100.
        let mut c = bounded(1 << 30, 32, 800);
        assert_eq!(c.delays(), (100, 800));
        assert_eq!(c.put(0x1000_0000, PAGE, 1000).len(), 0);
        assert_eq!(c.tick(1100).len(), 0, "not older than the delay");
        let out = c.tick(1101);
        assert_eq!(out.iter().collect::<Vec<_>>(), [(0x1000_0000, PAGE)]);
        assert_eq!(c.count(), 0);
        // A request 50 ms later finds nothing: the give-back was premature.
        let (got, out) = c.take(PAGE, PAGE, PAGE, 1150);
        assert!(got.is_none() && out.len() == 0);
        assert_eq!(c.delays(), (200, 800), "the delay doubled");
        // Now a mapping survives 150 ms unused, and is reused.
        assert_eq!(c.put(0x2000_0000, PAGE, 2000).len(), 0);
        assert_eq!(c.tick(2150).len(), 0);
        assert_eq!(c.take(PAGE, PAGE, PAGE, 2150).0, Some((0x2000_0000, PAGE)));
    }
}
