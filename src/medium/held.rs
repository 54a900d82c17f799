//! The medium paths that serve or fill a heap's cache of freed medium runs
//! (`crate::medium_cache`) without the pool lock, the lock-free same-run check of a resize,
//! and the flush of a cache by a heap that leaves it.
//!
//! Invariant: a run a cache holds is free memory to every report (its start byte says
//! held) and live to the blocks' run tables; it changes hands only by its start byte's
//! compare-and-swap (`Starts`), so a free racing a take of it loses cleanly, but for its
//! own heap's take in a pool no other process uses, the only party that changes a held
//! byte there while it holds the cache's guard (a load and a store: `Starts::unhold_owned`;
//! a claimer's flush, the one other party, holds the guard, and empties the entries
//! before it gives the guard back). In such a pool the cache's paths
//! read no unit state and no block header for the run the cache handed out last
//! (`MediumCache::lent`), nor for a run it holds (its block stays medium while it does).

use super::*;

impl Pool {
    /// Under the lock: the runs heaps' caches hold in the medium blocks of lifetime class
    /// `life` (every class: `None`): (how many, their granules).
    pub(crate) fn medium_held(&self, st: &PoolState, life: Option<usize>) -> (usize, usize) {
        let lives = life.map_or(0..self.life_count, |l| l..l + 1);
        let (mut runs, mut granules) = (0, 0);
        for l in lives {
            for h in st.medium_list(l).iter(self.units()) {
                let (r, g) = Starts::of(h).held();
                runs += r;
                granules += g;
            }
        }
        (runs, granules)
    }

    /// A free into `cache` (a heap's, its owner calling, inside the cache's guard:
    /// `MediumCache::enter`): keeps the medium allocation at
    /// `p` (in the region) of `granules` granules in lifetime class `life` when it is one
    /// (its block medium, of `life`, a live run of that length starting at `p`) and the
    /// cache has room. Takes no lock. False: nothing changed (the locked free follows, and
    /// reports what is wrong).
    pub(crate) fn medium_cache_free(&self, cache: &MediumCache, p: *mut u8, granules: usize, life: usize) -> bool {
        // A write of the state without the pool lock: marked (`crate::pool::write_seal`).
        let _writing = self.writing();
        // The cache's guard (another thread may be claiming it: then the locked free).
        let Some(_inside) = cache.enter() else {
            return false;
        };
        let at = (p as usize - self.region.base()) as u64;
        if !self.is_process_shared()
            && cache.lent(at, granules, life, self.medium_given.load(Ordering::Acquire))
        {
            // The run the cache handed out last, its block still medium of `life`: its
            // start byte tells whether it is a live run of that length (the hold's
            // compare-and-swap). Neither the unit's state nor the block's header is read.
            let block = p as usize & !(BLOCK_SIZE - 1);
            // SAFETY: a medium block's base (above).
            let starts = unsafe { Starts::of_base(block as *mut u8) };
            return cache.put(at, granules, life, || starts.hold((p as usize - block) / GRANULE, granules));
        }
        let Some(h) = self.block_at(p) else {
            return false;
        };
        let k = h.key();
        if k == EMPTY_KEY || key_class(k) != MEDIUM_CLASS || key_life(k) != life {
            return false;
        }
        let off = p as usize - h.base() as usize;
        if off < META_BYTES || !off.is_multiple_of(GRANULE) {
            return false;
        }
        cache.put(at, granules, life, || Starts::of(h).hold(off / GRANULE, granules))
    }

    /// A request of `granules` granules aligned to `align` (at most a page) in lifetime
    /// class `life` served from `cache` (a heap's, its owner calling, inside the cache's
    /// guard), taking no lock; null when it keeps no such run or another thread claims it. The run holds what it held when freed.
    pub(crate) fn medium_cache_alloc(&self, cache: &MediumCache, granules: usize, align: usize, life: usize) -> *mut u8 {
        // A write of the state without the pool lock: marked (`crate::pool::write_seal`).
        let _writing = self.writing();
        // The cache's guard (another thread may be claiming it: then the locked path).
        let Some(_inside) = cache.enter() else {
            return ptr::null_mut();
        };
        let base = self.region.base();
        if !self.is_process_shared() {
            // Nothing but this heap changes a run its cache holds, and a held run keeps its
            // block medium of its class: the entry's block is its offset's (no unit state,
            // no header read), its byte taken back by a load and a store.
            let given = self.medium_given.load(Ordering::Acquire);
            let take = |at: u64| {
                let p = base.wrapping_add(at as usize);
                let block = p & !(BLOCK_SIZE - 1);
                let g = (p - block) / GRANULE;
                // SAFETY: a medium block's base (the entry is the cache's).
                self.region.contains(p) && g >= META_GRANULES && unsafe { Starts::of_base(block as *mut u8) }.unhold_owned(g, granules)
            };
            return match cache.take(granules, life, align, take) {
                Some(at) => {
                    cache.lend(at, granules, life, given);
                    base.wrapping_add(at as usize) as *mut u8
                }
                None => ptr::null_mut(),
            };
        }
        let take = |at: u64| {
            let p = base.wrapping_add(at as usize) as *mut u8;
            // The entry was the cache's: its block is medium while the run is held.
            let h = self.block_at(p).filter(|h| is_medium(h));
            h.is_some_and(|h| Starts::of(h).unhold((p as usize - h.base() as usize) / GRANULE, granules))
        };
        cache
            .take(granules, life, align, |at| self.region.contains(base.wrapping_add(at as usize)) && take(at))
            .map_or(ptr::null_mut(), |at| base.wrapping_add(at as usize) as *mut u8)
    }

    /// A resize of the medium allocation at `p` (in the region) of `size` bytes in lifetime
    /// class `life` to a size of as many granules, taking no lock (the check a free makes,
    /// read as a free into a cache reads it): [`SameRun::Live`] when `p` starts a live run of
    /// `size`'s granules in a medium block of `life` that no cache holds, as its byte in the
    /// block's [`Starts`] tells for a run of at most `STARTS_MAX` granules (then nothing
    /// changes: the run holds the new size); for a longer run, whose byte is 0, in a region
    /// no other process uses, [`SameRun::Long`] with [`LONG_CHANGES`] now (this process's
    /// count), which the caller compares with what it saw when it last found that run live;
    /// else [`SameRun::No`] (the locked resize
    /// follows and reports misuse). Changes nothing.
    pub(crate) fn medium_same_run(&self, p: *mut u8, size: usize, life: usize) -> SameRun {
        let Some(h) = self.block_at(p) else {
            return SameRun::No;
        };
        let k = h.key();
        if k == EMPTY_KEY || key_class(k) != MEDIUM_CLASS || key_life(k) != life {
            return SameRun::No;
        }
        let off = p as usize - h.base() as usize;
        let n = size.div_ceil(GRANULE);
        if off < META_BYTES || !off.is_multiple_of(GRANULE) || size > MAX_MEDIUM {
            return SameRun::No;
        }
        if n <= STARTS_MAX {
            return match Starts::of(h).is_live(off / GRANULE, n) {
                true => SameRun::Live,
                false => SameRun::No,
            };
        }
        if self.is_process_shared() {
            // Another process's change would not count in this process's `LONG_CHANGES`.
            return SameRun::No;
        }
        // Read before the byte: a change after this read is seen by the caller's compare.
        let changes = LONG_CHANGES.load(Ordering::Acquire);
        match Starts::of(h).is_clear(off / GRANULE) {
            true => SameRun::Long(changes),
            false => SameRun::No,
        }
    }

    /// Under the lock: frees every run `cache` keeps (a heap leaving it: its thread's
    /// exit, its holder's death; its owner's `compact`; another thread's out-of-memory
    /// path, holding the cache's guard: `MediumCache::claim`) and empties it. Entries that name no held run of their
    /// length (a holder killed mid-change) are skipped. Returns how many it freed.
    pub(crate) fn flush_medium_cache(&self, st: &mut PoolState, cache: &MediumCache) -> usize {
        let base = self.region.base();
        let mut freed = 0;
        for e in cache.drain() {
            let p = base.wrapping_add(e.off as usize) as *mut u8;
            if !self.region.contains(p as usize) {
                continue;
            }
            let Some(h) = self.block_at(p).filter(|h| is_medium(h)) else {
                continue;
            };
            let g = (p as usize - h.base() as usize) / GRANULE;
            let n = e.granules as usize;
            // SAFETY: a medium block (its key); we hold the lock.
            let is_run = g >= META_GRANULES && unsafe { Runs::of(h) }.at(g) == At::Start(n);
            if !is_run || !Starts::of(h).unhold(g, n) || !Starts::of(h).change(g, n, 0) {
                continue;
            }
            self.free_medium_run(
                st,
                Run {
                    block: h,
                    granule: g,
                    granules: n,
                },
            );
            freed += 1;
        }
        freed
    }

}
