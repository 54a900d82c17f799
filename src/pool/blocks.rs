//! Blocks coming into use and going out of it, under the pool lock: taken for a head (a
//! pool-owned partial block, a kept empty one, a fresh one carved from the region), given
//! away (kept empty or given back to the region), handed to the pool by a heap (adopted),
//! and relisted by the frees that take a block out of `FULL` (lock-free).

use super::check::Trust;
use super::*;
use crate::class::MEDIUM_CLASS;
use crate::medium_block::Runs;
use crate::medium_cache::Starts;

impl Pool {
    /// Under the lock: a block of (class, life) with a free slot, now owned by `owner`
    /// (0: the pool, for a tiny block whose holder the caller sets). Tries pool-owned blocks
    /// (not [`HEAPLESS`] ones; one with freed slots first), then full blocks of exited
    /// threads that were freed into,
    /// then an empty block, then a new one from the region. `None` when memory is exhausted.
    pub(crate) fn take_block<'a>(
        &'a self,
        st: &mut PoolState,
        class: usize,
        life: usize,
        owner: u64,
    ) -> Option<&'a Header> {
        let head = HeadIndex::new(class, life);
        if self.emptied.load(Ordering::Relaxed) != 0 {
            self.give_back_emptied(st);
        }
        if st.partial(head).is_empty() {
            self.reclaim_abandoned(st);
        }
        if let Some(h) = self.take_partial(st, head) {
            h.set_owner(owner);
            self.counters.add(head.get(), Counter::BlockTaken, 1);
            return Some(h);
        }
        let h = self.take_unused_block(st, class, life, owner)?;
        self.counters.add(head.get(), Counter::BlockTaken, 1);
        Some(h)
    }

    /// Under the lock: a block out of use (a kept empty one, else a new one from the
    /// region) with a fresh header of (class, life), owned by `owner`, on its lifetime
    /// class's list; for [`Pool::take_block`] and for medium blocks ([`MEDIUM_CLASS`], no
    /// slots: their run table is written here, empty).
    pub(crate) fn take_unused_block<'a>(
        &'a self,
        st: &mut PoolState,
        class: usize,
        life: usize,
        owner: u64,
    ) -> Option<&'a Header> {
        // Take before the decay: a block unused for the delay still serves the request that
        // comes for it.
        let retained = self.take_retained(st);
        let now = crate::decay::now();
        self.decay_empty(st, now);
        self.decay_large_cache(now);
        let (base, fresh) = match retained {
            Some(base) => (base, false),
            None => {
                st.decay.missed(now);
                self.region.carve(&mut st.region)?
            }
        };
        if class == MEDIUM_CLASS {
            // Its run table first, then the header that names it medium: a repair after
            // this holder's death reads only tables written (`medium_block::Runs::recount`).
            // SAFETY: the block is carved or retained: committed, ours, reachable by nobody.
            unsafe { Runs::of_base(base) }.init(fresh);
            // SAFETY: as above.
            unsafe { Starts::of_base(base) }.init();
        }
        // SAFETY: the block is carved or retained: committed, ours, reachable by nobody.
        let h = unsafe { &*Header::init(base, class, life, owner, fresh) };
        self.mark_new(h);
        if CLASSES.get(class).is_some_and(|c| c.is_tiny()) {
            let c = h.geometry();
            // SAFETY: as above; the run table follows the header.
            unsafe { tiny::init_runs(base.cast(), c) };
        }
        st.of_life_mut(life).push(self.life_links(), h);
        Some(h)
    }

    /// Under the lock: takes a block of the pool's partial list `head` whose allocations are
    /// the pool's ([`NO_HOLDER`]): one a heap may take (blocks of threads without a heap stay
    /// where those threads find them). Among the first [`REUSE_SCAN`] of those, one with
    /// freed slots, whose touched pages are reused before another block's never-used ones;
    /// else the first.
    pub(super) fn take_partial(&self, st: &mut PoolState, head: HeadIndex) -> Option<&Header> {
        loop {
            let mut heaps_may_take = st
                .partial(head)
                .iter(self.units())
                .filter(|h| h.holder() == NO_HOLDER)
                .take(REUSE_SCAN);
            let first = heaps_may_take.next()?;
            let h = if first.has_freed_slots() {
                first
            } else {
                heaps_may_take
                    .find(|h| h.has_freed_slots())
                    .unwrap_or(first)
            };
            st.partial(head).remove(self.units(), h);
            // SAFETY: a pool-owned block, under the lock; its lists are followed next.
            match unsafe { self.block_trusted(st, h) } {
                Trust::Whole => return Some(h),
                Trust::Damaged => self.quarantine(st, h),
            }
        }
    }

    /// Under the lock: an empty committed block from the kept ones, so emptied blocks serve
    /// every class.
    pub(super) fn take_retained(&self, st: &mut PoolState) -> Option<*mut u8> {
        let h = st.retained.pop(self.units())?;
        st.retained_count -= 1;
        self.note_kept(st);
        st.idle.taken(st.retained_count);
        Some(h.base())
    }

    /// Under the lock: takes every pool-owned block of lifetime class `life` off the partial
    /// lists (after reclaiming returned blocks) and passes each to `f`; [`HEAPLESS`] blocks
    /// only with `heapless` (they stay listed otherwise).
    pub(crate) fn take_life(
        &self,
        st: &mut PoolState,
        life: usize,
        heapless: bool,
        mut f: impl FnMut(&mut PoolState, &Header),
    ) {
        self.reclaim_abandoned(st);
        for head in HeadIndex::of_life(life) {
            for h in st.partial(head).iter(self.units()) {
                if heapless || h.holder() != HEAPLESS {
                    st.partial(head).remove(self.units(), h);
                    f(st, h);
                }
            }
        }
    }

    /// Under the lock: gives the memory of a block that is empty and on no list back to
    /// the OS.
    pub(crate) fn give_back_block(&self, st: &mut PoolState, h: &Header) {
        self.give_block(st, h, false);
    }

    /// Under the lock: takes a block out of use (empty, on no list): with `keep`, kept for
    /// reuse while fewer than the bound are (and the delay is not zero), else given back to
    /// the region.
    pub(super) fn give_block(&self, st: &mut PoolState, h: &Header, keep: bool) {
        st.of_life_mut(h.life()).remove(self.life_links(), h);
        if h.class() == MEDIUM_CLASS {
            // Counted before the key changes (`PoolShared::medium_given`): the one way a medium
            // block leaves use.
            self.medium_given.fetch_add(1, Ordering::Release);
        }
        if keep && st.retained_count < st.retain_blocks && st.decay.max() > 0 {
            // Frees read the key only to reject stale pointers: they now fail the check.
            h.set_pool_empty();
            st.retained.push(self.units(), h);
            st.retained_count += 1;
            self.note_kept(st);
        } else {
            // SAFETY: the block is ours, empty and on no list.
            unsafe { self.region.give_back(&mut st.region, h.base()) };
        }
    }

    /// Under the lock: hands a heap's block to the pool (thread exit, or a heap leaving).
    pub(crate) fn adopt_block(&self, st: &mut PoolState, h: &Header) {
        if self.is_quarantined(h) {
            // Relisted by a free that cleared its `FULL`: it stays out of use.
            return;
        }
        h.hand_to_pool();
        // A remote free may be emptying the block meanwhile: its push and its look at the
        // block (`after_remote_free`) against this adoption's stores (owner, role) and look
        // at its remote list. With a SeqCst fence on both sides at least one sees the
        // other's write: this check sees the push, or the free sees a pool-owned block with
        // no live slot and flags it. (Without them each may read the other's old value, and
        // the emptied block stays listed with nobody to give it back.)
        fence(Ordering::SeqCst);
        // Live, not used: the slots on the remote list (kept as it is: its next allocation
        // collects it) are free too.
        if h.live() == 0 {
            self.give_empty(st, h);
        } else {
            st.partial(HeadIndex::new(h.class(), h.life()))
                .push(self.units(), h);
        }
    }

    /// Under the lock: the full blocks of the pool and of exited threads' heaps that were
    /// freed into since become pool-owned partial blocks.
    pub(crate) fn reclaim_abandoned(&self, st: &mut PoolState) {
        self.adopt_stack(st, &self.returned);
        let mut link = st.abandoned;
        while link != 0 {
            // SAFETY: heaps on the abandoned list stay mapped and are owned by the lock.
            let hp = unsafe { &*self.record_at(link) };
            self.adopt_stack(st, &hp.returned);
            link = hp.next_abandoned;
        }
    }

    /// Under the lock, for another thread out of memory: takes the blocks on the `returned`
    /// stack of a live heap (`record`, whose holder may be running), gives those whose every
    /// slot other threads freed ([`Header::all_freed_remotely`]) to the pool as empty ones,
    /// and pushes the others back on the stack, for the heap. Returns how many it gave.
    ///
    /// Sound against the holder: the stack is taken whole with one swap, as the holder's
    /// drain takes it (no consumer pops one block, so a second consumer meets no ABA); a
    /// block off the stack is on none of the holder's lists, and the holder touches it only
    /// through a free of one of its live slots (a given block has none) or once it takes it
    /// from the stack again (a pushed-back block is there before the lock is released, so
    /// every path that looks at `returned` under the lock sees every block; a lock-free
    /// drain of the holder's meanwhile finds fewer, and goes on as with an empty stack).
    pub(crate) fn claim_returned(&self, st: &mut PoolState, record: &HeapRecord) -> usize {
        let mut given = 0;
        for h in record.returned.take_all(self.units()) {
            if h.all_freed_remotely() {
                self.give_empty(st, h);
                given += 1;
            } else {
                // The walk read the block's link before it yielded it.
                record.returned.push(self.units(), h);
            }
        }
        given
    }

    fn adopt_stack(&self, st: &mut PoolState, stack: &BlockStack) {
        for h in stack.take_all(self.units()) {
            self.adopt_block(st, h);
        }
    }

    /// A free of slot `off` of block `h` (not a tiny block) by a thread that does not own
    /// the block, lock-free: pushes the slot on the block's remote list, lists the block
    /// again when the push took it out of `FULL` ([`Pool::relist`]), and gives it back when
    /// the free may have emptied a block nobody else would notice
    /// ([`Pool::after_remote_free`]).
    ///
    /// # Safety
    /// `off` is a live slot of `h`, which the caller gives up.
    #[inline]
    pub(crate) unsafe fn free_remote(&self, h: &Header, off: u32) {
        // SAFETY: forwarded.
        if unsafe { h.push_remote(off) } {
            self.relist(h);
        }
        self.after_remote_free(h);
    }

    /// Lists a block again after a free cleared its `FULL` flag: on its owner's returned
    /// stack, or the pool's for a pool-owned block (lock-free).
    pub(crate) fn relist(&self, h: &Header) {
        // A write of the state without the pool lock: marked (`crate::pool::write_seal`).
        let _writing = self.writing();
        // The caller's push found FULL with an Acquire CAS, pairing with the owner's Release
        // in `try_retire`, which came after its store of `owner`: the load sees the current
        // owner. A FULL block is on no list, so its owner cannot change before this push.
        let heap = self.heap((h.owner_acquire() & 0xffff) as u32);
        let stack = if heap.is_null() {
            &self.returned
        } else {
            // SAFETY: registered heaps stay mapped for the pool's life.
            unsafe { &(*heap).returned }
        };
        stack.push(self.units(), h);
    }
}
