//! Repair after a lock holder died: a shared pool's robust lock tells the next locker that
//! the previous holder died holding it (kill -9 in the middle of a slow path), which may
//! have left any structure the lock guards half updated. The repair rebuilds all of them
//! from what the blocks' headers say, which every step of the slow paths leaves
//! consistent on its own (a header is written by its owner; the lists only link headers).
//!
//! Rebuilt: the counts of the pool's blocks (their local lists are the lock holder's: see
//! [`Header::recount_local`] and [`tiny::recount`]), the region's unit states and decommitted bitmap (a unit carved but not yet
//! initialised goes back, as does a run not wholly carved), the lifetime-class lists, the kept empty blocks, the pool's
//! partial lists, the medium blocks' lists and counts (each block's from its run table,
//! `Runs::recount`), every heap's tiny heads, the abandoned list (from the heaps' states),
//! and the `emptied` flag. Not touched: what heaps own (their own lists are their
//! holders'; a dead holder's heaps are taken over by the dead-process reaper,
//! `crate::heap_handover`).
//!
//! The pool's `returned` stack is taken twice, before and after the walk: a block a remote
//! free takes out of `FULL` during the walk is pushed there, and is listed after the walk
//! unless the walk listed it (told by [`BlockList::mark_unlisted`]), so no block ends on
//! two lists.

use super::*;
use crate::block::MAGIC;
use crate::class::MEDIUM_CLASS;
use crate::heap_record::HeapState;
use crate::medium_block::{Runs, MAX_RUN};

impl Pool {
    /// Under the lock just taken from a holder that died: rebuilds what the lock guards
    /// (see the module docs). Returns the blocks it found in use.
    pub(crate) fn repair(&self, st: &mut PoolState) -> usize {
        self.lock_repairs.fetch_add(1, Ordering::Relaxed);
        let units = self.units();
        for h in self.returned.take_all(units) {
            BlockList::mark_unlisted(units, h);
        }
        // Empty every list the lock guards.
        for head in self.heads() {
            *st.partial(head) = BlockList::new();
        }
        for life in 0..self.life_count {
            *st.of_life_mut(life) = BlockList::new();
            *st.medium(life) = BlockList::new();
        }
        st.medium_counts = MediumCounts {
            purged: st.medium_counts.purged,
            locks: st.medium_counts.locks,
            ..MediumCounts::new()
        };
        st.retained = BlockList::new();
        st.retained_count = 0;
        self.note_kept(st);
        for record in self.registered_heaps() {
            for head in self.heads().filter(|h| CLASSES[h.class()].is_tiny()) {
                // SAFETY: registered records stay mapped; their tiny heads are the lock's,
                // which we hold; `head` is a tiny head of the pool's classes.
                unsafe { *(*record).tiny_list(head.class(), head.life()) = BlockList::new() };
            }
        }
        // The region: a unit below `bump` is a block or given back, never in between.
        let carved = self.region.carved_units(&st.region);
        for u in 0..carved {
            let h = units.block(u as u32);
            if self.region.unit_state(u) == crate::region::BLOCK {
                // A heap's block is linked on its heap's lists, which are its holder's:
                // only the pool's are rebuilt. (Ownership changes only under the lock.)
                if h.owner() == 0 {
                    BlockList::mark_unlisted(units, h);
                }
                if h.magic != MAGIC {
                    // Carved and never initialised: back to the region.
                    // SAFETY: no slot of it was ever handed out.
                    unsafe { self.region.give_back(&mut st.region, h.base()) };
                }
            } else {
                self.region.mark_given_back(&mut st.region, u);
            }
        }
        // Runs (large allocations in the region) half carved or half given back go back.
        self.region.repair_runs(&mut st.region);
        let mut in_use = 0;
        for u in 0..carved {
            if self.region.unit_state(u) != crate::region::BLOCK {
                continue;
            }
            let h = units.block(u as u32);
            if h.key() == EMPTY_KEY {
                self.give_block_kept(st, h);
                continue;
            }
            in_use += 1;
            st.of_life_mut(h.life()).push(self.life_links(), h);
            if h.owner() != 0 {
                continue;
            }
            if h.class() == MEDIUM_CLASS {
                // SAFETY: a medium block (its key), under the lock.
                let runs = unsafe { Runs::of(h) };
                runs.recount();
                crate::medium_cache::Starts::of(h).recount(runs);
                let c = &mut st.medium_counts;
                c.live += MAX_RUN - runs.free();
                c.dirty += runs.dirty();
                c.runs += runs.runs();
                c.blocks += 1;
                st.medium(h.life()).push(units, h);
            } else if h.geometry().is_tiny() {
                // SAFETY: a pool-owned tiny block, under the lock.
                unsafe { tiny::recount(h) };
                if h.used() == 0 {
                    // Off its class's list (pushed above, by this repair) and kept or given
                    // back: one removal, through links this repair wrote.
                    self.give_block(st, h, true);
                } else if h.used() < h.capacity() {
                    self.tiny_list(st, h).push(units, h);
                }
            } else {
                // Pool-owned blocks' local lists are the lock holder's.
                h.recount_local();
                if !h.is_full() {
                    self.adopt_block(st, h);
                }
            }
        }
        for h in self.returned.take_all(units) {
            if BlockList::is_unlisted(units, h) {
                self.adopt_block(st, h);
            }
        }
        st.abandoned = 0;
        for record in self.registered_heaps() {
            // SAFETY: registered records stay mapped; the abandoned links are the lock's.
            let r = unsafe { &mut *record };
            if r.state() == HeapState::Abandoned {
                r.next_abandoned = st.abandoned;
                st.abandoned = self.link_of(record);
            }
        }
        self.emptied.store(0, Ordering::Relaxed);
        in_use
    }

    /// Under the lock, in the repair: an empty block (key [`EMPTY_KEY`]) on no list joins
    /// the kept ones, or goes back to the region when enough are kept.
    fn give_block_kept(&self, st: &mut PoolState, h: &Header) {
        if st.retained_count < st.retain_blocks {
            st.retained.push(self.units(), h);
            st.retained_count += 1;
            self.note_kept(st);
        } else {
            // SAFETY: an empty block on no list.
            unsafe { self.region.give_back(&mut st.region, h.base()) };
        }
    }
}
