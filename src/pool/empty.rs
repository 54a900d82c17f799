//! Empty blocks: kept for reuse (at most the instance's bound, [`RETAIN_EMPTY`] by default)
//! or given back to the OS, and the blocks remote frees empty (see the pool's module docs,
//! "Emptied blocks").
//!
//! **Decay.** A kept block unused for the adaptive delay `d` goes back to the OS (see
//! `decay`): blocks carry no timestamp; per window of `d / 2` the pool counts the fewest
//! it kept at any moment (`Idle`), and at the window's end gives back that many. The look
//! happens on slow paths only: every [`Pool::take_block`], and the large paths
//! ([`Pool::decay_if_due`], which reads one atomic until something may be due). A block
//! taken from the region because none was kept, soon after blocks went back, teaches the
//! delay to grow.

use super::*;
use crate::large::unmap_evicted;

impl Pool {
    /// Under the lock: takes a block that is empty (no live slot) and on no list. Keeps it
    /// committed or gives it back to the region.
    pub(crate) fn give_empty(&self, st: &mut PoolState, h: &Header) {
        debug_assert_eq!(h.live(), 0);
        self.count_given_back(h);
        self.give_block(st, h, true);
    }

    /// Under the lock: takes a block on no list whose slots are all dead (released with
    /// their lifetime class, whatever its counts say).
    pub(crate) fn discard(&self, st: &mut PoolState, h: &Header) {
        // Checked mode: the block's live bits go with it.
        self.clear_live_bits(h);
        self.count_given_back(h);
        self.give_block(st, h, true);
    }

    /// Counts block `h` (still holding its key) as given back to the pool.
    fn count_given_back(&self, h: &Header) {
        if let Some(b) = h.snapshot() {
            let head = crate::class::HeadIndex::new(b.class, b.life);
            self.counters
                .add(head.get(), crate::counters::Counter::BlockGivenBack, 1);
        }
    }

    /// Under the lock: empties a block whose slots are all dead in place, for the same
    /// owner, class and lifetime class (its memory stays committed, so it is not fresh; the
    /// pages its slots touched stay resident until its heap's idle look gives them back:
    /// `Header::touched_end`).
    pub(crate) fn reset(&self, h: &Header) {
        self.clear_live_bits(h);
        h.reset(true);
        h.set_role(Role::Current);
    }

    pub(super) fn clear_live_bits(&self, h: &Header) {
        if !self.region.live_bits.is_null() {
            let base = h.base() as usize - self.region.base();
            // SAFETY: the shadow covers the region at one bit per byte; blocks are 2 MiB
            // aligned, so their part of it is page aligned.
            unsafe {
                self.region.clear(
                    (self.region.live_bits as *mut u8).add(base / 8),
                    BLOCK_SIZE / 8,
                )
            };
        }
    }

    /// Under the lock: gives back, at `now`, the kept blocks unused for a whole window (see
    /// the module docs), and sets the hint of when the next may be due. Returns how many.
    pub(crate) fn decay_empty(&self, st: &mut PoolState, now: u64) -> usize {
        let delay = st.decay.delay();
        let due = st.idle.due(now, st.retained_count, delay);
        for _ in 0..due {
            let base = self.take_retained(st).expect("due <= retained_count");
            // SAFETY: a retained block is ours, empty and now on no list.
            unsafe { self.region.give_back(&mut st.region, base) };
        }
        if due > 0 {
            st.decay.gave_back(now);
        }
        self.decay_at
            .store(now.saturating_add(delay / 2), Ordering::Relaxed);
        due
    }

    /// The configured delay in milliseconds (see the `idle_delay` field).
    pub(crate) fn idle_delay_ms(&self) -> u64 {
        self.idle_delay.load(Ordering::Relaxed)
    }

    /// Gives back the cached large mappings unused for their delay at `now`, if the large
    /// lock is free (never waits: the large paths do this themselves).
    pub(crate) fn decay_large_cache(&self, now: u64) {
        let Some(mut large) = self.large.try_lock() else {
            return;
        };
        let out = large.decay_cache(now);
        drop(large);
        // SAFETY: mappings the cache gave up belong to no allocation.
        unsafe { unmap_evicted(&out) };
    }

    /// Under the lock, after `retained_count` changed: its lock-free copy (the `kept` hint).
    pub(super) fn note_kept(&self, st: &PoolState) {
        self.kept.store(st.retained_count as u32, Ordering::Relaxed);
    }

    /// As [`Pool::decay_if_due`], for a heap's heartbeat: with no block kept (the hint),
    /// nothing, without the lock (a program cycling objects through its current blocks
    /// takes no lock then).
    pub(crate) fn decay_kept_if_due(&self, now: u64) -> usize {
        if self.kept.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        self.decay_if_due(now)
    }

    /// From a slow path that does not hold the lock (a large allocation or free), at `now`:
    /// when
    /// kept blocks may be due to go back, gives them back if the lock is free (never
    /// waits). Returns how many.
    pub(crate) fn decay_if_due(&self, now: u64) -> usize {
        if now < self.decay_at.load(Ordering::Relaxed) {
            return 0;
        }
        match self.try_lock() {
            Some(mut st) => self.decay_empty(&mut st, now),
            None => 0,
        }
    }

    /// The lock, when kept memory may be due to go back at `now` (the same test as
    /// [`Pool::decay_if_due`]) and the lock is free (never waits): for a caller that gives
    /// back more than the empty blocks under it (the medium pages).
    pub(crate) fn try_lock_if_decay_due(&self, now: u64) -> Option<PoolGuard<'_>> {
        if now < self.decay_at.load(Ordering::Relaxed) {
            return None;
        }
        self.try_lock()
    }

    /// As [`Pool::decay_if_due`], from a slow path that holds the lock (a medium free).
    pub(crate) fn decay_if_due_locked(&self, st: &mut PoolState, now: u64) -> usize {
        if now < self.decay_at.load(Ordering::Relaxed) {
            return 0;
        }
        self.decay_empty(st, now)
    }

    /// Under the lock: sets what is kept of empty blocks (`r.empty_block_bytes`, in whole
    /// blocks) and the delay (which starts adapting again); gives back the blocks beyond the
    /// new bound at once.
    pub(super) fn set_empty_retention(&self, st: &mut PoolState, r: &Retention) {
        st.retain_blocks = r.empty_block_bytes / BLOCK_SIZE;
        st.decay = Decay::new(r.delay_ms());
        self.idle_delay.store(r.delay_ms(), Ordering::Relaxed);
        st.idle = Idle::new();
        // The next decay was scheduled by the old delay: the next slow path looks again.
        self.decay_at.store(0, Ordering::Relaxed);
        let keep = if r.delay_ms() == 0 {
            0
        } else {
            st.retain_blocks
        };
        while st.retained_count > keep {
            let base = self.take_retained(st).expect("retained_count > 0");
            // SAFETY: a retained block is ours, empty and now on no list.
            unsafe { self.region.give_back(&mut st.region, base) };
        }
    }

    /// Sets what the pool keeps of unused memory (empty blocks and the large cache) and
    /// gives back what no longer fits at once. Takes the pool lock, then the large lock.
    pub(crate) fn set_retention(&self, r: &Retention) {
        self.set_empty_retention(&mut self.lock_uncounted(), r);
        let out = self.large.lock().configure_cache(r);
        // SAFETY: mappings the cache gave up belong to no allocation.
        unsafe { unmap_evicted(&out) };
    }

    /// What the pool keeps of unused memory now.
    pub(crate) fn retention(&self) -> Retention {
        let st = self.lock_uncounted();
        let large = self.large.lock();
        let (large_cache_bytes, large_cache_mappings) = large.cache_bounds();
        Retention {
            large_cache_bytes,
            large_cache_mappings,
            empty_block_bytes: st.retain_blocks * BLOCK_SIZE,
            delay: core::time::Duration::from_millis(st.decay.max()),
        }
    }

    /// The current (adaptive) delays of the large cache and of empty blocks, in
    /// milliseconds.
    pub(crate) fn current_delays(&self) -> (u64, u64) {
        let empty = self.lock_uncounted().decay.delay();
        (self.large.lock().cache_delays().0, empty)
    }

    /// Under the lock: gives every empty block kept for reuse back to the OS. Returns how
    /// many.
    pub(crate) fn give_back_retained(&self, st: &mut PoolState) -> usize {
        let mut n = 0;
        while let Some(base) = self.take_retained(st) {
            // SAFETY: a retained block is ours, empty and now on no list.
            unsafe { self.region.give_back(&mut st.region, base) };
            n += 1;
        }
        n
    }

    /// Under the lock: pool-owned blocks on a partial list that hold no live slot (blocks
    /// of exited threads that were freed into included) go back to the OS. Returns how
    /// many.
    pub(crate) fn give_back_empty_partial(&self, st: &mut PoolState) -> usize {
        self.empty_partial(st, false)
    }

    /// Under the lock: as [`Pool::give_back_empty_partial`], but the blocks join the empty
    /// ones kept for reuse (up to the bound; the rest go back to the OS).
    pub(super) fn give_back_emptied(&self, st: &mut PoolState) {
        self.empty_partial(st, true);
    }

    /// Under the lock: clears the `emptied` flag (this pass does the work it asks for),
    /// reclaims what exited threads' heaps left, then gives away every block on a partial
    /// list that holds no live slot, keeping empty blocks committed (up to the bound) with
    /// `keep`. Returns how many.
    fn empty_partial(&self, st: &mut PoolState, keep: bool) -> usize {
        self.emptied.store(0, Ordering::Relaxed);
        self.reclaim_abandoned(st);
        let mut n = 0;
        for head in self.heads() {
            for h in st.partial(head).iter(self.units()) {
                if h.live() == 0 {
                    st.partial(head).remove(self.units(), h);
                    self.give_block(st, h, keep);
                    n += 1;
                }
            }
        }
        n
    }

    /// Under the lock: every empty block the pool holds goes back to the OS: those on its
    /// partial lists and those kept for reuse. Returns how many.
    pub(crate) fn give_back_empty(&self, st: &mut PoolState) -> usize {
        self.give_back_empty_partial(st) + self.give_back_retained(st)
    }

    /// A remote free took a slot of `h`, after any relisting: if that may have emptied a
    /// block the pool owns or an exited thread's heap owns (nobody else would notice), the
    /// block goes back to the empty ones now when the lock is free, else the pool is
    /// flagged and the next [`Pool::take_block`] does it. Never waits: remote frees stay
    /// lock-free.
    pub(crate) fn after_remote_free(&self, h: &Header) {
        // Pairs with the fence in `adopt_block`, after the pool's stores to a block it
        // adopts: either the adoption sees this free's push, or the reads below see the
        // adoption (see there).
        fence(Ordering::SeqCst);
        // One read of the header: the block may be given back and taken again meanwhile;
        // a wrong guess costs one pass under the lock.
        let Some(b) = h.snapshot() else {
            return;
        };
        if b.live != 0 || (b.owner != 0 && !self.owner_is_abandoned(b.owner)) {
            return;
        }
        self.emptied.store(1, Ordering::Relaxed);
        if let Some(mut st) = self.try_lock() {
            self.give_back_emptied(&mut st);
        }
    }
}
