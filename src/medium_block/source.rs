//! What a move of pages reads and writes of a block's runs (`crate::medium`, "Moving
//! pages"): the whole pages of dirty granules a move may take, and marking them clean after.

use super::bits::{count_range, Mark};
use super::{Runs, GRANULES, META_GRANULES};
use crate::class::GRANULE;

/// A range of whole pages of free dirty granules a move may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Source {
    /// Its first granule and its granules (whole pages).
    pub(crate) start: usize,
    pub(crate) granules: usize,
    /// The length of its range of dirty granules as a purge ranks it
    /// ([`Runs::purge_length`]): the shorter, the sooner a purge would give it back.
    pub(crate) rank: usize,
    /// Clean granules follow its range of dirty granules: a part of it is taken from its
    /// end (else from its start), so that the clean granules left stay one range.
    at_end: bool,
}

impl Source {
    /// A range pages were moved into (rank 0), all of whose granules are free: moved out
    /// whole, it can be mapped fresh again (`medium_block`'s `Moved`).
    pub(crate) fn moved_into(start: usize, granules: usize) -> Source {
        Source {
            start,
            granules,
            rank: 0,
            at_end: false,
        }
    }

    /// True when `self` is a better source for `want` granules than `other`: a range pages
    /// were moved into (the longest), else one as long as `want` that a purge would give
    /// back sooner, else the longest.
    pub(crate) fn better(&self, other: Option<Source>, want: usize) -> bool {
        let Some(o) = other else {
            return true;
        };
        if (self.rank == 0) != (o.rank == 0) {
            return self.rank == 0;
        }
        match (
            self.granules >= want || self.rank == 0,
            o.granules >= want || o.rank == 0,
        ) {
            (true, true) => self.rank < o.rank,
            (a, b) if a != b => a,
            _ => self.granules > o.granules,
        }
    }
}

impl Runs {
    /// The best source (as [`Source::better`] ranks them) for `want` granules among this
    /// block's ranges of whole pages (of `page` bytes) of dirty granules, if any has at
    /// least `least` granules: `want` granules of it, or all of it when shorter.
    pub(crate) fn move_source(&self, page: usize, want: usize, least: usize) -> Option<Source> {
        let per_page = (page / GRANULE).max(1);
        let first = META_GRANULES.next_multiple_of(per_page);
        let mut best: Option<Source> = None;
        let mut g = META_GRANULES;
        while let Some((ds, de)) = self.next_dirty_range(g) {
            g = de;
            let (s, e) = (
                ds.max(first).next_multiple_of(per_page),
                de / per_page * per_page,
            );
            if e < s + least.max(1) {
                continue;
            }
            let (fs, fe) = (self.bits.free_start(ds), self.bits.next_used(de, GRANULES));
            let found = Source {
                start: s,
                granules: e - s,
                rank: Runs::purge_length(ds, de, fs, fe),
                at_end: de < fe,
            };
            if found.better(best, want) {
                best = Some(found);
            }
        }
        best.map(|mut b| {
            if b.granules > want {
                if b.at_end {
                    b.start += b.granules - want;
                }
                b.granules = want;
            }
            b
        })
    }

    /// The dirty granules of `[s, s + n)` when all are free.
    pub(crate) fn free_dirty(&self, s: usize, n: usize) -> Option<usize> {
        (count_range(&self.bits.used, s, n) == 0).then(|| n - count_range(&self.bits.clean, s, n))
    }

    /// True when the granules `[s, s + n)` are all free and clean.
    pub(crate) fn free_and_clean(&self, s: usize, n: usize) -> bool {
        count_range(&self.bits.used, s, n) == 0 && count_range(&self.bits.clean, s, n) == n
    }

    /// Marks clean the free granules `[s, s + n)` (whole pages) whose pages were moved away
    /// (they read zero); returns how many of them were dirty.
    pub(crate) fn moved_away(&mut self, s: usize, n: usize) -> usize {
        debug_assert_eq!(count_range(&self.bits.used, s, n), 0);
        let dirty = n - count_range(&self.bits.clean, s, n);
        self.bits.mark(s, n, Mark::Clean);
        self.dirty -= dirty as u32;
        dirty
    }
}
