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
//! - `count = |cached| <= SLOTS` and `bytes = Σ_{c ∈ cached} c.len <= cap`;
//! - every `c.len` is a whole number of pages and `c.len <= cap`;
//! - a cached address is in no live entry of the large table, and in at most one slot;
//! - a mapping is handed out for a page-rounded request `len` only when
//!   `len <= c.len <= len + len / 8` (at most 1/8 of the mapping unused, so the resident
//!   size stays within 1/8 of what is asked) and `c.addr % align = 0`;
//! - decay: after any cache operation at time `now`, `now - c.freed_at <= delay` for every
//!   cached `c` (older mappings are handed back for unmapping); `compact()`, instance drop
//!   and a zero cap empty it.
//!
//! The cache never makes a system call itself: operations return the mappings to unmap
//! ([`Evicted`]), which the caller unmaps after dropping the large lock.

use std::time::{Duration, Instant};

/// Most mappings cached at once.
pub(crate) const SLOTS: usize = 32;
/// The default byte bound.
pub(crate) const DEFAULT_CAP: usize = 64 << 20;
/// The default delay after which an unused cached mapping is unmapped.
pub(crate) const DEFAULT_DELAY: Duration = Duration::from_secs(1);

#[derive(Clone, Copy)]
struct Cached {
    /// The mapping's address (0: the slot is free).
    addr: usize,
    /// Its length in bytes.
    len: usize,
    /// When it was freed, in milliseconds since the cache's origin.
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
    /// Unused mappings older than this are unmapped.
    delay: Duration,
    /// The clock's zero, set at the first use.
    origin: Option<Instant>,
}

impl Cache {
    pub(crate) const fn new() -> Self {
        Cache {
            slots: [FREE; SLOTS],
            count: 0,
            bytes: 0,
            cap: DEFAULT_CAP,
            delay: DEFAULT_DELAY,
            origin: None,
        }
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

    /// Sets the byte bound and the delay; returns what no longer fits.
    pub(crate) fn configure(&mut self, cap: usize, delay: Duration) -> Evicted {
        self.cap = cap;
        self.delay = delay;
        let mut out = Evicted::new();
        self.shrink_to(cap, 0, &mut out);
        out
    }

    /// The current time in milliseconds since the origin.
    fn now(&mut self) -> u64 {
        let now = Instant::now();
        let origin = *self.origin.get_or_insert(now);
        now.saturating_duration_since(origin).as_millis() as u64
    }

    fn evict(&mut self, i: usize, out: &mut Evicted) {
        let c = self.slots[i];
        debug_assert!(c.addr != 0);
        out.push(c.addr, c.len);
        self.slots[i] = FREE;
        self.count -= 1;
        self.bytes -= c.len;
    }

    /// Evicts every mapping freed more than `delay` ago.
    fn decay(&mut self, now: u64, out: &mut Evicted) {
        let delay = self.delay.as_millis() as u64;
        for i in 0..SLOTS {
            let c = self.slots[i];
            if c.addr != 0 && now.saturating_sub(c.freed_at) > delay {
                self.evict(i, out);
            }
        }
    }

    /// Evicts the oldest mappings until `bytes + room <= cap` and a slot is free (when
    /// `room > 0`).
    fn shrink_to(&mut self, cap: usize, room: usize, out: &mut Evicted) {
        while self.count > 0 && (self.bytes + room > cap || (room > 0 && self.count == SLOTS)) {
            let oldest = (0..SLOTS)
                .filter(|&i| self.slots[i].addr != 0)
                .min_by_key(|&i| self.slots[i].freed_at)
                .expect("count > 0");
            self.evict(oldest, out);
        }
    }

    /// Takes the cached mapping that best fits a request of `len` bytes (page-rounded)
    /// aligned to `align`: the shortest with `len <= c.len <= len + len / 8`. Returns it as
    /// (address, mapped length), and the mappings that decayed meanwhile. `align` is a
    /// power of two.
    pub(crate) fn take(&mut self, len: usize, align: usize) -> (Option<(usize, usize)>, Evicted) {
        let mut out = Evicted::new();
        if self.count == 0 {
            return (None, out);
        }
        let now = self.now();
        self.decay(now, &mut out);
        let most = len.saturating_add(len / 8);
        let best = (0..SLOTS)
            .filter(|&i| {
                let c = self.slots[i];
                c.addr != 0 && c.len >= len && c.len <= most && c.addr & (align - 1) == 0
            })
            .min_by_key(|&i| self.slots[i].len);
        let got = best.map(|i| {
            let c = self.slots[i];
            self.slots[i] = FREE;
            self.count -= 1;
            self.bytes -= c.len;
            (c.addr, c.len)
        });
        (got, out)
    }

    /// Keeps the freed mapping `addr` of `len` bytes (a whole number of pages, in no live
    /// entry), evicting the oldest mappings to make room and the decayed ones. A mapping
    /// longer than the bound is not kept: it is returned among the evicted.
    pub(crate) fn put(&mut self, addr: usize, len: usize) -> Evicted {
        let mut out = Evicted::new();
        let now = self.now();
        self.decay(now, &mut out);
        if len > self.cap {
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

    const PAGE: usize = 4096;

    #[test]
    fn takes_the_best_fit_within_an_eighth() {
        let mut c = Cache::new();
        assert_eq!(c.put(0x10_0000, 16 * PAGE).len(), 0);
        assert_eq!(c.put(0x20_0000, 18 * PAGE).len(), 0);
        assert_eq!(c.put(0x30_0000, 17 * PAGE).len(), 0);
        // 16 pages: 16..=18 fit; 16 is the shortest.
        assert_eq!(c.take(16 * PAGE, PAGE).0, Some((0x10_0000, 16 * PAGE)));
        // 15 pages: at most 16 pages (15 + 15/8 = 16.875): none of 17, 18.
        assert_eq!(c.take(15 * PAGE, PAGE).0, None);
        // 17 pages: 17 (the shortest of 17, 18).
        assert_eq!(c.take(17 * PAGE, PAGE).0, Some((0x30_0000, 17 * PAGE)));
        // Alignment: 0x20_0000 is 2 MiB-aligned, not 4 MiB.
        assert_eq!(c.take(18 * PAGE, 4 << 20).0, None);
        assert_eq!(c.take(18 * PAGE, 2 << 20).0, Some((0x20_0000, 18 * PAGE)));
        assert_eq!((c.count(), c.bytes()), (0, 0));
    }

    #[test]
    fn the_byte_bound_and_the_slots_evict_the_oldest() {
        let mut c = Cache::new();
        let evicted = c.configure(10 * PAGE, DEFAULT_DELAY);
        assert_eq!(evicted.len(), 0);
        assert_eq!(c.put(0x1000_0000, 4 * PAGE).len(), 0);
        assert_eq!(c.put(0x2000_0000, 4 * PAGE).len(), 0);
        let out = c.put(0x3000_0000, 4 * PAGE);
        assert_eq!(out.iter().collect::<Vec<_>>(), [(0x1000_0000, 4 * PAGE)]);
        assert!(c.bytes() <= 10 * PAGE && c.contains(0x3000_0000));
        // Longer than the bound: not kept.
        let out = c.put(0x4000_0000, 11 * PAGE);
        assert_eq!(out.iter().collect::<Vec<_>>(), [(0x4000_0000, 11 * PAGE)]);
        // Slots: SLOTS + 1 one-page mappings keep SLOTS.
        let mut c = Cache::new();
        let mut evicted = 0;
        for i in 1..=SLOTS + 1 {
            evicted += c.put(i << 24, PAGE).len();
        }
        assert_eq!((c.count(), evicted), (SLOTS, 1));
        assert!(!c.contains(1 << 24), "the oldest went");
        assert_eq!(c.drain().len(), SLOTS);
        assert_eq!((c.count(), c.bytes()), (0, 0));
    }

    #[test]
    fn unused_mappings_decay() {
        let mut c = Cache::new();
        c.configure(DEFAULT_CAP, Duration::from_millis(20));
        assert_eq!(c.put(0x1000_0000, PAGE).len(), 0);
        std::thread::sleep(Duration::from_millis(60));
        let (got, out) = c.take(PAGE, PAGE);
        assert!(got.is_none());
        assert_eq!(out.iter().collect::<Vec<_>>(), [(0x1000_0000, PAGE)]);
        assert_eq!(c.count(), 0);
    }
}
