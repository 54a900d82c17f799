//! The medium blocks' resident memory (see `crate::medium`, "What stays resident"): the
//! bound on their dirty granules and the purge down to three quarters of it, the decay of
//! dirty granules unused for the pool's delay, and `compact`.
//!
//! Invariants (under the lock): after a purge, `medium_counts.dirty <= keep + floor`, where
//! `floor` is what lay in parts of pages holding live runs; a purge marks clean exactly the
//! granules whose pages it gave back (they read zero).

use super::*;

/// Dirty granules kept beyond the bound's share of the live ones: a quarter block's
/// (512 KiB).
const DIRTY_SLACK: usize = BLOCK_SIZE / GRANULE / 4;
/// The bound's share of the live granules: `live / DIRTY_SHARE` (2.5 %: with the pages
/// next to live runs and the blocks' metadata, the free resident memory of medium blocks
/// adds about 3 % to the live medium memory).
const DIRTY_SHARE: usize = 40;
/// A purge gives back a `1 / DIRTY_CUT` of the bound: down to three quarters of it.
const DIRTY_CUT: usize = 4;
/// Passes of a purge at most, by length of range of dirty granules: up to a page, 4, 16...
/// `4^(PASSES - 1)` pages (a block, with pages of 4 KiB or more).
const PASSES: usize = 6;

/// Medium blocks a purge records on its first walk at most (8 bytes each on the stack: 2 KiB
/// for 512 MiB of medium blocks); with more, its passes walk the lists. (4 in unit tests,
/// which take both ways.)
pub(super) const SEEN: usize = if cfg!(test) { 4 } else { 256 };

/// A medium block as a purge's first walk saw it.
#[derive(Clone, Copy)]
struct Seen {
    unit: u32,
    /// Its shortest range of dirty granules (`u16::MAX`: none).
    shortest: u16,
    /// No live run.
    empty: bool,
}

impl Seen {
    const NONE: Seen = Seen {
        unit: u32::MAX,
        shortest: u16::MAX,
        empty: false,
    };
}

impl Pool {
    /// Under the lock: gives back every medium block with no live run and every whole
    /// free page of the others (`compact`). Returns the blocks given away.
    pub(crate) fn compact_medium(&self, st: &mut PoolState) -> usize {
        let units = self.units();
        let mut blocks = 0;
        for life in 0..self.life_count {
            for h in st.medium(life).iter(units) {
                // SAFETY: a medium block; we hold the lock.
                if unsafe { Runs::of(h) }.is_empty() {
                    st.medium(life).remove(units, h);
                    self.drop_medium_block(st, h);
                    blocks += 1;
                }
            }
        }
        self.purge_medium(st, 0);
        blocks
    }

    /// Under the lock, at `now`: at the end of a decay window (half the pool's delay, as
    /// for empty blocks: `crate::decay::Idle`), the dirty granules that stayed dirty the
    /// whole window (the fewest there were at any moment of it) go back to the OS: every
    /// whole free page but for the dirty granules freed into most recently (the blocks
    /// first on their lists). So freed memory stays resident from half the delay to the
    /// delay, unless reused. Returns how many granules it gave back.
    pub(crate) fn decay_medium(&self, st: &mut PoolState, now: u64) -> usize {
        let delay = st.decay_delay();
        let dirty = st.medium_counts.dirty;
        let due = st.medium_counts.idle.due(now, dirty, delay);
        if due == 0 {
            return 0;
        }
        let before = st.medium_counts.dirty;
        self.purge_medium(st, dirty - due);
        // The window starts again from what is left.
        let c = &mut st.medium_counts;
        c.idle.taken(c.dirty);
        before - c.dirty
    }

    /// From a medium path that holds no lock (a heap's every `DECAY_EVERY`-th medium
    /// allocation), at `now`: when kept memory may be due to go back and the lock is free
    /// (never waits), the empty blocks and the medium pages unused for the delay go back.
    pub(crate) fn decay_medium_if_due(&self, now: u64) {
        if let Some(mut st) = self.try_lock_if_decay_due(now) {
            self.decay_empty(&mut st, now);
            self.decay_medium(&mut st, now);
        }
    }

    /// Under the lock: purges when the dirty granules exceed the bound plus `slack` (see the
    /// module docs), down to three quarters of the bound.
    pub(super) fn purge_medium_if_due(&self, st: &mut PoolState, slack: usize) {
        let c = &st.medium_counts;
        let bound = c.live / DIRTY_SHARE + DIRTY_SLACK;
        if c.dirty > bound + c.floor + slack {
            self.purge_medium(st, bound - bound / DIRTY_CUT);
        }
    }

    /// Under the lock: gives whole pages of free dirty granules of the medium blocks back to
    /// the OS (they read zero after) until at most `keep` dirty granules are left: those of
    /// the shortest ranges of dirty granules first (a long range serves any request without
    /// a page fault; short ones, only short requests), those in runs of at least
    /// `KEPT_FREE` free granules last (only such runs serve the longest requests: 18.3 ->
    /// 17.9 faults a step on `medium:400`), among as short ones those of the
    /// blocks last on their lists first (freed into longest ago; on `medium:400` this gave
    /// 20 faults a step where the other way gave 23). A medium block left with no live run
    /// and nothing dirty past its first page goes to the pool's empty blocks, unless first on
    /// its list.
    pub(crate) fn purge_medium(&self, st: &mut PoolState, keep: usize) {
        if self.region.backing().give_back == GiveBack::Keep {
            // A region committed up front keeps its pages: a purge would only write zeros.
            return;
        }
        let units = self.units();
        let page = os::page_size();
        let (mut cleaned, mut calls) = (0, 0);
        let before = st.medium_counts.dirty;
        // Pass `k` gives back the whole free pages of the ranges of dirty granules up to
        // `4^k` pages long, until enough; a pass walks every medium block (a cache miss a
        // block). The passes whose ranges, with the shorter ones', give back less than
        // needed give back all of theirs: they are done as one, found by counting first
        // (the short ranges, beside live runs, often hold no whole page).
        let mut longest = (page / GRANULE).max(1);
        let pass_of = |k: usize| {
            let times = k.div_ceil(longest).next_power_of_two().trailing_zeros();
            (times.div_ceil(2) as usize).min(PASSES - 1)
        };
        let mut gives = [0; PASSES];
        // The one walk over every medium block: each block as it is now (up to `SEEN` of
        // them, class by class, first to last on its list), so that the passes and the
        // look for emptied blocks read only the blocks they act on (each block's metadata
        // shares its cache sets with every other block's); and each class's last block (the
        // one freed into longest ago), from which the passes walk back when there are more.
        let mut seen = [Seen::NONE; SEEN];
        let (mut count, mut ends) = (0, [0u16; 256]);
        let mut lasts = [u32::MAX; 256];
        for life in 0..self.life_count {
            for h in st.medium_list(life).iter(units) {
                // SAFETY: a medium block; we hold the lock.
                let runs = unsafe { Runs::of(h) };
                let mut shortest = usize::MAX;
                runs.for_each_dirty_range(page, |k, pages| {
                    gives[pass_of(k)] += pages;
                    shortest = shortest.min(k);
                });
                lasts[life] = units.index(h);
                if let Some(e) = seen.get_mut(count) {
                    *e = Seen {
                        unit: units.index(h),
                        shortest: shortest.min(u16::MAX as usize) as u16,
                        empty: runs.is_empty(),
                    };
                }
                count += 1;
            }
            ends[life] = count.min(SEEN) as u16;
        }
        // Every block recorded: the passes read the records, else the lists.
        let recorded = count <= SEEN;
        let (mut pass, mut shorter) = (0, 0);
        while pass + 1 < PASSES && shorter + gives[pass] < before.saturating_sub(keep) {
            shorter += gives[pass];
            pass += 1;
        }
        longest <<= 2 * pass.saturating_sub(1);
        while before - cleaned > keep {
            for life in (0..self.life_count).filter(|&l| lasts[l] != u32::MAX) {
                let group = match recorded {
                    true => &seen[life.checked_sub(1).map_or(0, |l| ends[l] as usize)..ends[life] as usize],
                    false => &[],
                };
                let listed = match recorded {
                    true => BlockList::new().iter(units),
                    false => BlockList::iter_back(units, units.block(lasts[life])),
                };
                let back = group.iter().rev().map(|e| (units.block(e.unit), e.shortest as usize));
                for (h, shortest) in back.chain(listed.map(|h| (h, 0))) {
                    let enough = (before - cleaned).saturating_sub(keep);
                    if enough == 0 {
                        break;
                    }
                    // (No range as short: nothing to give back in this pass; known without
                    // reading the block.)
                    if shortest > longest {
                        continue;
                    }
                    // SAFETY: a medium block; we hold the lock.
                    let runs = unsafe { Runs::of(h) };
                    if runs.dirty() == 0 {
                        continue;
                    }
                    let base = h.base();
                    let (mut lo, mut hi) = (GRANULES, 0);
                    cleaned += runs.purge(page, longest, enough, |s, k| {
                        calls += 1;
                        (lo, hi) = (lo.min(s), hi.max(s + k));
                        // SAFETY: whole pages of free granules of a block of ours: nobody's.
                        unsafe { self.region.clear(base.add(s * GRANULE), k * GRANULE) };
                    });
                    // Ranges pages were moved into, now all free and clean, are merged again.
                    if lo < hi {
                        self.heal_moved(h, lo, hi - lo);
                    }
                }
            }
            if longest >= GRANULES {
                break;
            }
            longest *= 4;
        }
        for life in 0..self.life_count {
            let first = st.medium(life).first(units);
            let group = match recorded {
                true => &seen[life.checked_sub(1).map_or(0, |l| ends[l] as usize)..ends[life] as usize],
                false => &[],
            };
            let empties = group.iter().filter(|e| e.empty).map(|e| units.block(e.unit));
            let listed = match recorded {
                true => BlockList::new().iter(units),
                false => st.medium(life).iter(units),
            };
            for h in empties.chain(listed) {
                // SAFETY: a medium block; we hold the lock.
                let runs = unsafe { Runs::of(h) };
                // An empty block whose dirty granules all share the metadata's page can
                // give nothing more back here: it goes to the pool, whose decay gives the
                // whole block back.
                // (Emptiness first: the bitmaps of a block with live runs are not read.)
                let clean = || runs.dirty() == 0 || runs.dirty_only_in_first_page(page);
                if runs.is_empty() && !first.is_some_and(|f| ptr::eq(f, h)) && clean() {
                    st.medium(life).remove(units, h);
                    self.drop_medium_block(st, h);
                }
            }
        }
        let c = &mut st.medium_counts;
        c.less_dirty(cleaned);
        // What could not be given back (parts of pages with live runs).
        c.floor = c.dirty.saturating_sub(keep);
        c.purged += calls;
    }
}
