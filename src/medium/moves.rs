//! Moving pages (see `crate::medium`, "Moving pages"): a plain request's clean pages, which
//! the evidence says the program writes, take free dirty pages of the medium blocks by
//! `os::moves::move_pages` instead of being faulted in while a purge gives others back; the
//! ranges moved into are remembered (`medium_block`'s `Moved`) and mapped fresh once all
//! free and clean again.
//!
//! Invariants (under the lock): a move takes whole pages of free dirty granules, marked
//! clean after (they read zero), into whole clean pages of the run just taken, so
//! `medium_counts.dirty` falls by the dirty granules moved and nothing else changes (RSS
//! stays: no page is faulted in or given back); a range of the table lies in one medium
//! block or in a unit that left the medium blocks while mapping it fresh failed; only the
//! process that made the region moves pages, only in a private reservation not locked.

use super::*;
use crate::medium_block::Source;
use crate::os::moves;

/// The fewest bytes a move takes. A call costs about what faulting in 5 to 10 pages does,
/// but each move also takes a range of the table (`Moved`) for as long as its pages stay in
/// live runs, and a full table sends spills back to faulting in: at 128 KiB, moves are
/// fewer and longer (on `medium:400` 57.2 µs a step against 63.5 at 32 KiB, 10.0 faults
/// against 9.3; 64 KiB 62.7, 96 KiB 58.9, 192 KiB 59.9).
const LEAST_BYTES: usize = 128 << 10;
/// Ranges a full table looks at for one all free, to make room.
const ROOM_LOOKS: usize = 32;
/// Moves into one run at most (its clean pages may take several sources).
const MOVES_PER_RUN: usize = 4;

impl Pool {
    /// Under the lock: moves free dirty pages into the whole clean pages `[g, g + k)` of
    /// block `h` (granules of the run just taken, which the evidence says the program
    /// writes), from `g` up. Returns how many granules it filled: the rest are the
    /// caller's to fault in.
    pub(super) fn move_into(&self, st: &mut PoolState, h: &Header, g: usize, k: usize) -> usize {
        let moved = &self.medium_moved;
        let page = os::page_size();
        let least = LEAST_BYTES.max(page) / GRANULE;
        if k < least || moved.owner() == 0 || moved.owner() != moves::process() {
            return 0;
        }
        let per_page = (page / GRANULE).max(1);
        let base = self.region.base();
        let granule_of = |b: &Header| (b.base() as usize - base) / GRANULE;
        let dst = h.base().wrapping_add(g * GRANULE);
        // SAFETY: a page of the run just taken, ours.
        if !unsafe { moves::unlocked(dst) } {
            return 0;
        }
        let mut done = 0;
        for _ in 0..MOVES_PER_RUN {
            let want = k - done;
            if want < least {
                break;
            }
            // (A move may cut a range in two: room for two more.)
            if !(moved.has_room() || self.make_room(st) && (moved.has_room() || self.make_room(st))) {
                moved.full.fetch_add(1, Ordering::Relaxed);
                break;
            }
            let Some((from, source)) = self.move_source(st, h, page, want, least) else {
                break;
            };
            let gb = granule_of(from);
            // A source lies in one mapping.
            let (lo, hi) = moved.within_one(gb + source.start, gb + source.start + source.granules);
            let n = (hi - lo) / per_page * per_page;
            let src = (base + lo * GRANULE) as *mut u8;
            // SAFETY: whole pages of free granules of a medium block (the table's ranges and
            // blocks are page aligned): nobody's; the destination's are the run's, ours;
            // neither is locked (asked just before).
            if n < least || !unsafe { moves::unlocked(src) && moves::move_pages(src, dst.add(done * GRANULE), n * GRANULE) } {
                break;
            }
            let at = granule_of(h) + g + done;
            moved.add(at, at + n);
            moved.moves.fetch_add(1, Ordering::Relaxed);
            // SAFETY: a medium block; we hold the lock (no other reference to its runs).
            let dirty = unsafe { Runs::of(from) }.moved_away(lo - gb, n);
            st.medium_counts.less_dirty(dirty);
            self.heal_moved(from, lo - gb, n);
            done += n;
        }
        done
    }

    /// Under the lock: the best source of `want` granules (`Source::better`) of at least
    /// `least`, and its block: block `h` first (its metadata is in cache), then the others
    /// of every class, until one serves `want` whole outside the long free runs.
    fn move_source<'a>(
        &'a self,
        st: &PoolState,
        h: &'a Header,
        page: usize,
        want: usize,
        least: usize,
    ) -> Option<(&'a Header, Source)> {
        let units = self.units();
        let mut best: Option<(&Header, Source)> = None;
        let lists = (0..self.life_count).flat_map(|l| st.medium_list(l).iter(units));
        for b in core::iter::once(h).chain(lists.filter(|b| !ptr::eq(*b, h))) {
            // SAFETY: a medium block; we hold the lock.
            let runs = unsafe { Runs::of(b) };
            if runs.dirty() < least {
                continue;
            }
            let found = runs.move_source(page, want, least);
            // Ranges pages were moved into, all free and dirty: moved out whole, they
            // are mapped fresh (merged) again, so the table keeps room.
            let gb = (b.base() as usize - self.region.base()) / GRANULE;
            let moved = &self.medium_moved;
            let entries = moved.overlapping(gb, gb + GRANULES).map(|i| moved.get(i));
            let whole = entries.filter(|&(s, e)| s >= gb && e <= gb + GRANULES && e - s >= least);
            let free = whole.filter_map(|(s, e)| {
                let dirty = runs.free_dirty(s - gb, e - s)?;
                (dirty == e - s).then(|| Source::moved_into(s - gb, (e - s).min(want)))
            });
            for s in found.into_iter().chain(free) {
                if s.better(best.map(|(_, s)| s), want) {
                    best = Some((b, s));
                }
            }
            if best.is_some_and(|(_, s)| s.granules == want && s.rank < GRANULES) {
                break;
            }
        }
        best
    }

    /// Under the lock, the table full: maps fresh the first range all of whose granules are
    /// free among [`ROOM_LOOKS`] from a rotating cursor (giving back its pages, as a purge
    /// would), and forgets it. Returns whether it did.
    fn make_room(&self, st: &mut PoolState) -> bool {
        let moved = &self.medium_moved;
        let base = self.region.base();
        for _ in 0..ROOM_LOOKS.min(moved.len()) {
            let i = moved.next_cursor();
            let (s, e) = moved.get(i);
            let p = (base + s * GRANULE) as *mut u8;
            let Some(h) = self.block_at(p).filter(|h| is_medium(h)) else {
                continue;
            };
            let gb = (h.base() as usize - base) / GRANULE;
            if e > gb + GRANULES {
                continue;
            }
            // SAFETY: a medium block; we hold the lock.
            let runs = unsafe { Runs::of(h) };
            // SAFETY: free granules of a medium block: nobody's.
            if runs.free_dirty(s - gb, e - s).is_some() && unsafe { moves::map_fresh(p, (e - s) * GRANULE) } {
                let dirty = runs.moved_away(s - gb, e - s);
                st.medium_counts.less_dirty(dirty);
                moved.remove(i);
                moved.healed.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        false
    }

    /// Under the lock: maps fresh the ranges of the table in block `h` that overlap its
    /// granules `[g, g + n)` and are all free and clean (no page left in them to lose), so
    /// that the kernel merges them with their neighbours again, and forgets them.
    pub(super) fn heal_moved(&self, h: &Header, g: usize, n: usize) {
        let moved = &self.medium_moved;
        if moved.len() == 0 {
            return;
        }
        let gb = (h.base() as usize - self.region.base()) / GRANULE;
        let mut over = moved.overlapping(gb + g, gb + g + n);
        while over.start < over.end {
            let (s, e) = moved.get(over.start);
            // SAFETY: a medium block; we hold the lock.
            let free = s >= gb && e <= gb + GRANULES && unsafe { Runs::of(h) }.free_and_clean(s - gb, e - s);
            // SAFETY: free granules of a medium block reading zero: nobody's, nothing in them.
            if free && unsafe { moves::map_fresh(self.region.base().wrapping_add(s * GRANULE) as *mut u8, (e - s) * GRANULE) } {
                moved.remove(over.start);
                moved.healed.fetch_add(1, Ordering::Relaxed);
                over.end -= 1;
            } else {
                over.start += 1;
            }
        }
    }

    /// Under the lock: block `h`, which has no live run, leaves the medium blocks: the
    /// ranges of the table in it are mapped fresh and forgotten (what they held is nobody's).
    pub(super) fn heal_leaving(&self, h: &Header) {
        let moved = &self.medium_moved;
        if moved.len() == 0 {
            return;
        }
        let gb = (h.base() as usize - self.region.base()) / GRANULE;
        let mut over = moved.overlapping(gb, gb + GRANULES);
        while over.start < over.end {
            let (s, e) = moved.get(over.start);
            let p = self.region.base().wrapping_add(s * GRANULE) as *mut u8;
            // SAFETY: granules of a block with no live run, leaving the medium blocks: nobody's.
            if unsafe { moves::map_fresh(p, (e - s) * GRANULE) } {
                moved.remove(over.start);
                moved.healed.fetch_add(1, Ordering::Relaxed);
                over.end -= 1;
            } else {
                over.start += 1;
            }
        }
    }
}
