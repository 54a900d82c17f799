//! Empty blocks: kept for reuse (at most [`RETAIN_EMPTY`]) or given back to the OS, and the
//! blocks remote frees empty (see the pool's module docs, "Emptied blocks").

use super::*;

impl Pool {
    /// Under the lock: takes a block that is empty (no live slot) and on no list. Keeps it
    /// committed or gives it back to the region.
    pub(crate) fn give_empty(&self, st: &mut PoolState, h: &Header) {
        debug_assert_eq!(h.live(), 0);
        self.give_block(st, h, RETAIN_EMPTY);
    }

    /// Under the lock: takes a block on no list whose slots are all dead (released with
    /// their lifetime class, whatever its counts say).
    pub(crate) fn discard(&self, st: &mut PoolState, h: &Header) {
        // Checked mode: the block's live bits go with it.
        self.clear_live_bits(h);
        self.give_block(st, h, RETAIN_EMPTY);
    }

    /// Under the lock: empties a block whose slots are all dead in place, for the same
    /// owner, class and lifetime class (its memory stays committed, so it is not fresh).
    pub(crate) fn reset(&self, h: &Header) {
        self.clear_live_bits(h);
        h.reset();
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
        self.empty_partial(st, 0)
    }

    /// Under the lock: as [`Pool::give_back_empty_partial`], but the blocks join the empty
    /// ones kept for reuse (up to [`RETAIN_EMPTY`]; the rest go back to the OS).
    pub(super) fn give_back_emptied(&self, st: &mut PoolState) {
        self.empty_partial(st, RETAIN_EMPTY);
    }

    /// Under the lock: clears the `emptied` flag (this pass does the work it asks for),
    /// reclaims what exited threads' heaps left, then gives away every block on a partial
    /// list that holds no live slot, keeping at most `retain` empty blocks committed.
    /// Returns how many.
    fn empty_partial(&self, st: &mut PoolState, retain: usize) -> usize {
        self.emptied.store(0, Ordering::Relaxed);
        self.reclaim_abandoned(st);
        let mut n = 0;
        for head in self.heads() {
            for h in st.partial(head).iter(self.units()) {
                if h.live() == 0 {
                    st.partial(head).remove(self.units(), h);
                    self.give_block(st, h, retain);
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
