//! The ranges pages were moved into (`crate::medium`, "Moving pages"), per process view of
//! a private pool: a bounded table, so that the mappings moves make stay bounded.
//!
//! A move of pages into `[a, b)` (`os::moves::move_pages`) makes `[a, b)` a mapping of its
//! own: its pages keep the kernel's page offsets of where they came from, so the kernel
//! cannot merge it with its neighbours, and cuts the mapping it lay in around it. The table
//! remembers each such range; a range whose granules are all free and clean again (no page
//! left to lose) is mapped fresh (`os::moves::map_fresh`: merged again) and forgotten.
//!
//! Invariants (under the pool lock, which every method's caller holds; the atomics only make
//! the per-process view shareable): the ranges are disjoint and sorted by start;
//! `len <= MOVED`; every mapping of the region whose page offsets are not its own lies
//! inside a range of the table (a move adds its range before the table forgets what it
//! overlapped), so the region's mappings number at most `2 * len + 1` more than without
//! moves.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Ranges remembered at most.
pub(crate) const MOVED: usize = 1024;

/// Bits of an entry's length (granules): a range lies in one run.
const LEN_BITS: u32 = 16;

/// The ranges pages were moved into, in granules from the region's base.
pub(crate) struct Moved {
    /// `start << LEN_BITS | length`, sorted by start.
    ranges: [AtomicU64; MOVED],
    len: AtomicUsize,
    /// Where [`Moved::next_cursor`] is.
    cursor: AtomicUsize,
    /// The process that made the pool's region (0: none moves): a fork child's mappings
    /// are not merged again when mapped fresh, so only this process moves pages.
    owner: AtomicU64,
    /// Moves made, ranges mapped fresh, and moves not made for want of room: statistics.
    pub(crate) moves: AtomicU64,
    pub(crate) healed: AtomicU64,
    pub(crate) full: AtomicU64,
}

impl Moved {
    /// An empty table; `owner` is the process that may move pages (0: none).
    pub(crate) const fn new(owner: u64) -> Moved {
        Moved {
            ranges: [const { AtomicU64::new(0) }; MOVED],
            len: AtomicUsize::new(0),
            cursor: AtomicUsize::new(0),
            owner: AtomicU64::new(owner),
            moves: AtomicU64::new(0),
            healed: AtomicU64::new(0),
            full: AtomicU64::new(0),
        }
    }

    /// The process that may move pages (0: none).
    pub(crate) fn owner(&self) -> u64 {
        self.owner.load(Relaxed)
    }

    /// Ranges remembered.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    /// Range `i`: `(start, end)`.
    pub(crate) fn get(&self, i: usize) -> (usize, usize) {
        let e = self.ranges[i].load(Relaxed);
        let s = (e >> LEN_BITS) as usize;
        (s, s + (e & ((1 << LEN_BITS) - 1)) as usize)
    }

    fn set(&self, i: usize, (s, e): (usize, usize)) {
        debug_assert!(s < e && e - s < 1 << LEN_BITS);
        self.ranges[i].store(((s as u64) << LEN_BITS) | (e - s) as u64, Relaxed);
    }

    /// A range's index (`len > 0`), the next in turn from the last asked.
    pub(crate) fn next_cursor(&self) -> usize {
        let i = (self.cursor.load(Relaxed) + 1) % self.len();
        self.cursor.store(i, Relaxed);
        i
    }

    /// The indices of the ranges that overlap `[lo, hi)`.
    pub(crate) fn overlapping(&self, lo: usize, hi: usize) -> core::ops::Range<usize> {
        // The ranges are disjoint and sorted: their ends are sorted too.
        let first = self.partition(0, |(_, e)| e <= lo);
        first..self.partition(first, |(s, _)| s < hi)
    }

    /// The first index from `from` whose range `r` has `!before(r)` (`before` holds for
    /// a prefix of the table).
    fn partition(&self, from: usize, before: impl Fn((usize, usize)) -> bool) -> usize {
        let (mut a, mut b) = (from, self.len());
        while a < b {
            let m = (a + b) / 2;
            match before(self.get(m)) {
                true => a = m + 1,
                false => b = m,
            }
        }
        a
    }

    /// True when a move may add a range (it may cut one in two).
    pub(crate) fn has_room(&self) -> bool {
        self.len() + 2 <= MOVED
    }

    /// Remembers `[lo, hi)` as a range pages were moved into: the parts of the ranges it
    /// overlaps that lie outside it stay (the kernel cut their mappings around it).
    /// Needs [`Moved::has_room`].
    pub(crate) fn add(&self, lo: usize, hi: usize) {
        debug_assert!(self.has_room());
        let over = self.overlapping(lo, hi);
        let mut keep = [(0, 0); 3];
        let mut k = 0;
        if let Some(i) = (!over.is_empty()).then_some(over.start) {
            let (s, _) = self.get(i);
            if s < lo {
                keep[k] = (s, lo);
                k += 1;
            }
        }
        keep[k] = (lo, hi);
        k += 1;
        if let Some(i) = (!over.is_empty()).then(|| over.end - 1) {
            let (_, e) = self.get(i);
            if e > hi {
                keep[k] = (hi, e);
                k += 1;
            }
        }
        self.replace(over, &keep[..k]);
    }

    /// Forgets range `i`.
    pub(crate) fn remove(&self, i: usize) {
        self.replace(i..i + 1, &[]);
    }

    /// Replaces the ranges `old` (consecutive) by `new` (sorted, between their neighbours).
    fn replace(&self, old: core::ops::Range<usize>, new: &[(usize, usize)]) {
        let n = self.len();
        let end = n - old.len() + new.len();
        debug_assert!(end <= MOVED);
        if new.len() > old.len() {
            for i in (old.end..n).rev() {
                self.ranges[i + new.len() - old.len()].store(self.ranges[i].load(Relaxed), Relaxed);
            }
        } else {
            for i in old.end..n {
                self.ranges[i + new.len() - old.len()].store(self.ranges[i].load(Relaxed), Relaxed);
            }
        }
        for (j, &r) in new.iter().enumerate() {
            self.set(old.start + j, r);
        }
        self.len.store(end, Relaxed);
    }

    /// The longest part of `[lo, hi)` that crosses no range's border: a move's source must
    /// lie in one mapping.
    pub(crate) fn within_one(&self, lo: usize, hi: usize) -> (usize, usize) {
        let mut best = (lo, lo);
        let mut at = lo;
        for i in self.overlapping(lo, hi) {
            let (s, e) = self.get(i);
            // The part before this range, then this range's part.
            for part in [(at, s.max(at)), (s.max(lo), e.min(hi))] {
                if part.1 - part.0 > best.1 - best.0 {
                    best = part;
                }
            }
            at = e.min(hi);
        }
        if hi - at > best.1 - best.0 {
            best = (at, hi);
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(m: &Moved) -> Vec<(usize, usize)> {
        (0..m.len()).map(|i| m.get(i)).collect()
    }

    #[test]
    fn added_ranges_stay_disjoint_and_sorted_and_cut_what_they_overlap() {
        let m = Moved::new(1);
        m.add(100, 200);
        m.add(10, 20);
        m.add(300, 400);
        assert_eq!(all(&m), [(10, 20), (100, 200), (300, 400)]);
        // Inside one: cut in two around it.
        m.add(120, 130);
        assert_eq!(
            all(&m),
            [(10, 20), (100, 120), (120, 130), (130, 200), (300, 400)]
        );
        // Over several: their outside parts stay.
        m.add(150, 350);
        assert_eq!(
            all(&m),
            [
                (10, 20),
                (100, 120),
                (120, 130),
                (130, 150),
                (150, 350),
                (350, 400)
            ]
        );
        assert_eq!(m.overlapping(20, 100), 1..1);
        assert_eq!(m.overlapping(0, 11), 0..1);
        assert_eq!(m.overlapping(125, 151), 2..5);
        m.remove(0);
        assert_eq!(all(&m)[0], (100, 120));
    }

    #[test]
    fn a_source_crosses_no_border() {
        let m = Moved::new(1);
        m.add(100, 200);
        m.add(250, 260);
        assert_eq!(m.within_one(0, 50), (0, 50));
        assert_eq!(m.within_one(50, 180), (100, 180));
        assert_eq!(m.within_one(150, 400), (260, 400));
        assert_eq!(m.within_one(190, 255), (200, 250));
        assert_eq!(m.within_one(120, 150), (120, 150));
    }

    #[test]
    fn the_table_is_bounded() {
        let m = Moved::new(1);
        let mut at = 0;
        while m.has_room() {
            m.add(at, at + 4);
            at += 8;
        }
        assert!(m.len() <= MOVED && m.len() + 2 > MOVED);
    }
}
