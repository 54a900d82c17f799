//! Medium blocks: a block of [`BLOCK_SIZE`] bytes whose allocations are **runs** of
//! [`GRANULE`]-byte granules, with no header per allocation.
//!
//! A medium block is laid out as every block: the block [`Header`] (key
//! `MEDIUM_CLASS | life << 8`, owned by the pool), then, in the rest of its first
//! [`META_BYTES`], its [`Runs`]: which granules are used, which read zero, and the run
//! table (a run's length at its first granule). Granules `0..META_GRANULES` hold that
//! metadata and count as used for ever. Everything here is read and written under the
//! pool lock only.
//!
//! Invariants (under the lock), for granule indices `g` of one block:
//!
//! - `used(g) ⇔ g < META_GRANULES ∨ g lies in a live run`; live runs are disjoint;
//! - a live run `[s, s + n)` has `lens[s] = n`, and `lens[g] = 0` for every granule `g`
//!   that starts no live run;
//! - `free = |{g : ¬used(g)}|`, `runs = |live runs|`, `live = Σ n` over the live runs,
//!   so `free + live + META_GRANULES = GRANULES`;
//! - `clean(g) ⇒ ¬used(g)` and granule `g` reads zero; `dirty = |{g : ¬used(g) ∧ ¬clean(g)}|`
//!   (free granules that may be resident);
//! - `longest ≥` the longest run of free granules (a bound, exact after a failed search);
//! - `summary = Summary::of(used, clean)`: bit `w` of each of its masks says whether word `w`
//!   of the bitmaps holds a used, a free, a clean, a dirty granule (`bits`), so that the
//!   searches read two words at most wherever what they look for lies.

use crate::block::Header;
use crate::class::{BLOCK_SIZE, GRANULE, HEADER_SIZE, MAX_MEDIUM};
use crate::decay::Idle;
use bits::{count_range, set_range, Bitmaps, Mark, Summary};

/// Granules in a block.
pub(crate) const GRANULES: usize = BLOCK_SIZE / GRANULE;
const WORDS: usize = GRANULES / 64;
/// Bytes at a medium block's start that hold its header and its [`Runs`]: a run starts on
/// a page of its own.
pub(crate) const META_BYTES: usize = 4096;
/// Granules the metadata takes.
pub(crate) const META_GRANULES: usize = META_BYTES / GRANULE;
/// Granules a run may have at most (every medium request fits a block).
pub(crate) const MAX_RUN: usize = GRANULES - META_GRANULES;
/// Runs of free granules at least this long (15/16 of the longest medium request) keep
/// their dirty granules through every pass of a purge but the last (see [`Runs::purge`]):
/// only such runs can serve the longest requests without a page fault.
pub(crate) const KEPT_FREE: usize = MAX_MEDIUM / GRANULE * 15 / 16;

/// A medium block's granules and runs (see the module docs), after its header.
#[repr(C)]
pub(crate) struct Runs {
    /// Free granules.
    free: u32,
    /// Live runs.
    runs: u32,
    /// Free granules not known to read zero.
    dirty: u32,
    /// At least the longest run of free granules.
    longest: u32,
    /// Which granules are used and which clean, and which words of those bitmaps hold
    /// what (`bits`, beside the counts: a search skips the words without what it looks for).
    bits: Bitmaps,
    /// `lens[s]`: the length of the live run starting at granule `s`, else 0.
    lens: [u16; GRANULES],
}

const _: () = assert!(HEADER_SIZE + size_of::<Runs>() <= META_BYTES);
const _: () = assert!(GRANULES.is_multiple_of(64) && MAX_RUN < u16::MAX as usize);

/// The medium blocks of a pool, summed (under the pool lock): `live = Σ live granules`,
/// `dirty = Σ dirty` over its medium blocks, `runs = Σ runs`, `blocks` = how many.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MediumCounts {
    pub(crate) live: usize,
    pub(crate) dirty: usize,
    pub(crate) runs: usize,
    pub(crate) blocks: usize,
    /// Dirty granules the last purge could not give back (parts of pages holding live
    /// runs): the next purge waits for that many more than its bound.
    pub(crate) floor: usize,
    /// Ranges given back by purges (system calls).
    pub(crate) purged: u64,
    /// Pool lock acquisitions of the medium paths (`Pool::lock_medium`), counted under it.
    pub(crate) locks: u64,
    /// Medium frees, which look at the clock for the empty blocks' decay every
    /// `medium::DECAY_EVERY`.
    pub(crate) frees: u64,
    /// The fewest dirty granules since the current decay window began: those were dirty
    /// the whole window (`crate::decay::Idle`).
    pub(crate) idle: Idle,
}

impl MediumCounts {
    /// No medium block.
    pub(crate) const fn new() -> MediumCounts {
        MediumCounts {
            live: 0,
            dirty: 0,
            runs: 0,
            blocks: 0,
            floor: 0,
            purged: 0,
            locks: 0,
            frees: 0,
            idle: Idle::new(),
        }
    }

    /// `n` dirty granules fewer (taken by a run, given back, or gone with their block).
    pub(crate) fn less_dirty(&mut self, n: usize) {
        self.dirty -= n;
        self.idle.taken(self.dirty);
    }
}

/// What a granule is to the run table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum At {
    /// The start of a live run of this many granules.
    Start(usize),
    /// Inside a live run (or the metadata), not at its start.
    Inside,
    /// A free granule.
    Free,
}

impl Runs {
    /// The runs of the medium block `h`.
    ///
    /// # Safety
    /// `h` is the header of a block whose key is a medium one (or that the caller is
    /// making one), and the caller holds its pool's lock (which alone reads and writes
    /// runs), taking no other reference to them meanwhile.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn of(h: &Header) -> &mut Runs {
        // SAFETY: forwarded contract.
        unsafe { Runs::of_base(h.base()) }
    }

    /// The runs of the block at `base`, which the caller is making a medium block: written
    /// before its header names it medium, so that a repair after the lock holder's death
    /// never reads a run table that was not written.
    ///
    /// # Safety
    /// `base` is a block's base, committed, taken out of use by the caller under its
    /// pool's lock (or a medium block's, as [`Runs::of`]), with no other reference to
    /// its runs meanwhile.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn of_base<'a>(base: *mut u8) -> &'a mut Runs {
        // SAFETY: the block's first META_BYTES are committed and hold the runs after the
        // header (caller); the lock makes this the only reference.
        unsafe { &mut *base.add(HEADER_SIZE).cast::<Runs>() }
    }

    /// Writes empty runs: every granule free but the metadata's; `fresh` says the block
    /// reads zero (else every free granule is dirty).
    pub(crate) fn init(&mut self, fresh: bool) {
        self.bits.used = [0; WORDS];
        set_range(&mut self.bits.used, 0, META_GRANULES, true);
        self.bits.clean = [0; WORDS];
        if fresh {
            set_range(&mut self.bits.clean, META_GRANULES, MAX_RUN, true);
        }
        self.lens = [0; GRANULES];
        self.free = MAX_RUN as u32;
        self.runs = 0;
        self.dirty = if fresh { 0 } else { MAX_RUN as u32 };
        self.longest = MAX_RUN as u32;
        self.bits.summary = Summary::of(&self.bits.used, &self.bits.clean);
    }

    /// Free granules.
    pub(crate) fn free(&self) -> usize {
        self.free as usize
    }

    /// Live runs.
    pub(crate) fn runs(&self) -> usize {
        self.runs as usize
    }

    /// Free granules not known to read zero.
    pub(crate) fn dirty(&self) -> usize {
        self.dirty as usize
    }

    /// True when no free granule past the block's first page (of `page` bytes) is dirty:
    /// what dirty granules are left share that page with the metadata, which
    /// [`Runs::purge`] never gives back (with 64 KiB pages, up to 24 granules).
    pub(crate) fn dirty_only_in_first_page(&self, page: usize) -> bool {
        let first = META_GRANULES.next_multiple_of((page / GRANULE).max(1));
        self.bits.next_dirty(first, GRANULES) == GRANULES
    }

    /// True when no run is live.
    pub(crate) fn is_empty(&self) -> bool {
        self.runs == 0
    }

    /// What granule `g` is.
    pub(crate) fn at(&self, g: usize) -> At {
        match self.lens[g] {
            0 if self.bits.used[g / 64] >> (g % 64) & 1 == 0 => At::Free,
            0 => At::Inside,
            n => At::Start(n as usize),
        }
    }

    /// The first run of `n` free granules starting at a multiple of `align` granules
    /// (a power of two), lowest first; `None` when there is none (then `longest` is made
    /// exact, so the next request this long skips the block at once).
    pub(crate) fn find(&mut self, n: usize, align: usize) -> Option<usize> {
        if n > self.longest as usize {
            return None;
        }
        let mut g = META_GRANULES;
        loop {
            g = self.bits.next_free(g, GRANULES).next_multiple_of(align);
            if g + n > GRANULES {
                self.longest = self.longest_free() as u32;
                return None;
            }
            let used = self.bits.next_used(g, g + n);
            if used == g + n {
                return Some(g);
            }
            g = used + 1;
        }
    }

    /// The run of `n` free granules starting at a multiple of `align` granules (a power of
    /// two) that covers the most dirty granules (still resident: taking them costs no page
    /// fault): `(first granule, clean granules it covers, length of the dirty range it
    /// starts or ends with)`; `None` when no such run covers a dirty granule. Among runs
    /// covering as few clean granules, the one in the shortest range of dirty granules
    /// (so long ones stay for long requests), lowest first.
    ///
    /// A window over free granules covers the most dirty ones when it starts at the start
    /// of a range of dirty granules or ends at the end of one (slid either way it loses as
    /// many as it gains or more), so only those windows are counted, kept inside their free
    /// range and aligned both down and up (the covered count is linear between those
    /// windows: the best aligned window is an aligned neighbour of one).
    pub(crate) fn find_dirty(&self, n: usize, align: usize) -> Option<(usize, usize, usize)> {
        if self.dirty == 0 || n > self.longest as usize {
            return None;
        }
        let mut best: Option<(usize, usize, usize)> = None;
        let mut g = META_GRANULES;
        while g < GRANULES {
            // The next dirty granule: free, not clean.
            let ds = self.bits.next_dirty(g, GRANULES);
            if ds == GRANULES {
                break;
            }
            let fe = self.bits.next_used(ds, GRANULES);
            let de = self.bits.next_clean(ds, fe);
            let lo = self.bits.free_start(ds).next_multiple_of(align);
            if lo + n <= fe {
                let hi = (fe - n) / align * align;
                let end = de.saturating_sub(n);
                let windows = [
                    ds / align * align,
                    end / align * align,
                    ds.next_multiple_of(align),
                    end.next_multiple_of(align),
                ];
                // (Aligned up only when that is another window.)
                let count = if align > 1 { 4 } else { 2 };
                for &c in &windows[..count] {
                    // A run with no clean granule in a range as long or shorter was found:
                    // this range's runs are no better.
                    if best.is_some_and(|(_, b, l)| b == 0 && l <= de - ds) {
                        break;
                    }
                    let c = c.clamp(lo, hi);
                    // `[ds, de)` is dirty: a run inside it covers no clean granule.
                    let clean = match ds <= c && c + n <= de {
                        true => 0,
                        false => count_range(&self.bits.clean, c, n),
                    };
                    let better = best.is_none_or(|(_, b, l)| (clean, de - ds) < (b, l));
                    if clean < n && better {
                        best = Some((c, clean, de - ds));
                    }
                }
                if best.is_some_and(|(_, b, l)| b == 0 && l == n) {
                    // No run covers fewer clean granules in a shorter range.
                    break;
                }
            }
            g = de;
        }
        best
    }

    /// The longest run of free granules.
    fn longest_free(&self) -> usize {
        let (mut g, mut longest) = (META_GRANULES, 0);
        while g < GRANULES {
            let s = self.bits.next_free(g, GRANULES);
            let e = self.bits.next_used(s, GRANULES);
            longest = longest.max(e - s);
            g = e;
        }
        longest
    }

    /// Calls `f(s, k)` for each range of granules `[s, s + k)` of the run `[g, g + n)`
    /// (free) that may not read zero.
    pub(crate) fn for_each_dirty(&self, g: usize, n: usize, f: impl FnMut(usize, usize)) {
        self.for_each_marked(g, n, false, f);
    }

    /// Calls `f(s, k)` for each range of granules `[s, s + k)` of the run `[g, g + n)`
    /// (free) that read zero (clean).
    pub(crate) fn for_each_clean(&self, g: usize, n: usize, f: impl FnMut(usize, usize)) {
        self.for_each_marked(g, n, true, f);
    }

    /// Calls `f(s, k)` for each longest range of granules `[s, s + k)` of `[g, g + n)` whose
    /// clean bits are all `clean`.
    fn for_each_marked(&self, g: usize, n: usize, clean: bool, mut f: impl FnMut(usize, usize)) {
        debug_assert_eq!(count_range(&self.bits.used, g, n), 0, "a free run");
        // The granules are free: those not clean are dirty.
        let next = |from, clean| match clean {
            true => self.bits.next_clean(from, g + n),
            false => self.bits.next_dirty(from, g + n),
        };
        let mut s = g;
        while s < g + n {
            let d = next(s, clean);
            if d == g + n {
                break;
            }
            let e = next(d, !clean);
            f(d, e - d);
            s = e;
        }
    }

    /// Makes the free granules `[g, g + n)` a live run. Returns how many of them were
    /// dirty.
    pub(crate) fn take(&mut self, g: usize, n: usize) -> usize {
        debug_assert!(n > 0 && g >= META_GRANULES && g + n <= GRANULES);
        debug_assert_eq!(count_range(&self.bits.used, g, n), 0);
        let dirty = n - self.bits.mark(g, n, Mark::Used);
        self.lens[g] = n as u16;
        self.free -= n as u32;
        self.dirty -= dirty as u32;
        self.runs += 1;
        dirty
    }

    /// Frees the live run starting at `g` (`At::Start`); returns its length. Its
    /// granules become dirty.
    pub(crate) fn free_run(&mut self, g: usize) -> usize {
        let n = self.lens[g] as usize;
        debug_assert!(n > 0);
        self.lens[g] = 0;
        self.bits.mark(g, n, Mark::Free);
        self.free += n as u32;
        self.dirty += n as u32;
        self.runs -= 1;
        // The free run around it: the longest may have grown.
        let s = self.bits.free_start(g);
        let e = self.bits.next_used(g + n, GRANULES);
        self.longest = self.longest.max((e - s) as u32);
        n
    }

    /// Grows the live run at `g` from `n` to `m > n` granules when the `m - n` granules
    /// after it are free; returns how many of them were dirty, or `None` (nothing changed).
    pub(crate) fn grow(&mut self, g: usize, n: usize, m: usize) -> Option<usize> {
        debug_assert_eq!(self.lens[g] as usize, n);
        if g + m > GRANULES || self.bits.next_used(g + n, g + m) != g + m {
            return None;
        }
        let dirty = (m - n) - self.bits.mark(g + n, m - n, Mark::Used);
        self.lens[g] = m as u16;
        self.free -= (m - n) as u32;
        self.dirty -= dirty as u32;
        Some(dirty)
    }

    /// Shrinks the live run at `g` from `n` to `0 < m < n` granules; its last `n - m`
    /// granules become free (dirty).
    pub(crate) fn shrink(&mut self, g: usize, n: usize, m: usize) {
        debug_assert!(0 < m && m < n && self.lens[g] as usize == n);
        self.bits.mark(g + m, n - m, Mark::Free);
        self.lens[g] = m as u16;
        self.free += (n - m) as u32;
        self.dirty += (n - m) as u32;
        let e = self.bits.next_used(g + n, GRANULES);
        self.longest = self.longest.max((e - g - m) as u32);
    }

    /// Marks clean the whole pages (of `page` bytes) of free granules that hold dirty
    /// granules of ranges of dirty granules at most `longest` long (by [`Runs::purge_length`]:
    /// a range in a run of at least [`KEPT_FREE`] free granules counts as [`GRANULES`] long,
    /// so only a pass with `longest >= GRANULES` gives it back), calling
    /// `give_back(s, k)` first for each range of granules `[s, s + k)` of such pages (whose
    /// memory the caller gives back to the OS, so that they read zero), from the lowest
    /// range up, until `enough` dirty granules became clean (or none is left). Returns how
    /// many dirty granules became clean.
    pub(crate) fn purge(
        &mut self,
        page: usize,
        longest: usize,
        enough: usize,
        mut give_back: impl FnMut(usize, usize),
    ) -> usize {
        let per_page = (page / GRANULE).max(1);
        let first = META_GRANULES.next_multiple_of(per_page);
        let mut cleaned = 0;
        let mut g = first;
        while g < GRANULES && cleaned < enough {
            let Some((ds, de)) = self.next_dirty_range(g) else {
                break;
            };
            // The range lies in one run of free granules `[fs, fe)`.
            let (fs, fe) = (self.bits.free_start(ds), self.bits.next_used(de, GRANULES));
            if Runs::purge_length(ds, de, fs, fe) <= longest {
                // The whole free pages the range touches: the pages that touch it and lie in
                // its run of free granules, one range of pages.
                let s = (ds / per_page * per_page)
                    .max(fs.next_multiple_of(per_page))
                    .max(first);
                let e = de.next_multiple_of(per_page).min(fe / per_page * per_page);
                if s < e {
                    cleaned += self.give_back(s, e - s, &mut give_back);
                }
            }
            g = de;
        }
        cleaned
    }

    /// The length a purge ranks the range of dirty granules `[ds, de)`, in the run of free
    /// granules `[fs, fe)`, by: its own, but [`GRANULES`] (the last pass) in a run of at
    /// least [`KEPT_FREE`] free granules. Short ranges beside live runs go back first (they
    /// serve only short requests); the dirty granules of the long free runs stay longest,
    /// for the longest requests, which nothing else serves without page faults (on
    /// `medium:400`: 18.9 -> 18.4 faults a step at the same density, 5 seeds).
    fn purge_length(ds: usize, de: usize, fs: usize, fe: usize) -> usize {
        match fe - fs >= KEPT_FREE {
            true => GRANULES,
            false => de - ds,
        }
    }

    /// The first range `[ds, de)` of dirty granules (free, not clean; as long as it goes)
    /// that starts at `from` or after.
    fn next_dirty_range(&self, from: usize) -> Option<(usize, usize)> {
        let ds = self.bits.next_dirty(from, GRANULES);
        let free_end = self.bits.next_used(ds.min(GRANULES), GRANULES);
        (ds < GRANULES).then(|| (ds, self.bits.next_clean(ds, free_end)))
    }

    /// Calls `f(k, pages)` for each range of dirty granules (as [`Runs::purge`] finds
    /// them): `k` its length as a purge ranks it ([`Runs::purge_length`]), `pages` the granules of the whole pages (of `page` bytes,
    /// past the first) inside it, which a purge of the range gives back at least.
    pub(crate) fn for_each_dirty_range(&self, page: usize, mut f: impl FnMut(usize, usize)) {
        let per_page = (page / GRANULE).max(1);
        let first = META_GRANULES.next_multiple_of(per_page);
        let mut g = META_GRANULES;
        while let Some((ds, de)) = self.next_dirty_range(g) {
            let inner =
                (de / per_page * per_page).saturating_sub(ds.max(first).next_multiple_of(per_page));
            let (fs, fe) = (self.bits.free_start(ds), self.bits.next_used(de, GRANULES));
            f(Runs::purge_length(ds, de, fs, fe), inner);
            g = de;
        }
    }

    /// Gives back the free granules `[s, s + k)` (whole pages) and marks them clean;
    /// returns how many of them were dirty.
    fn give_back(&mut self, s: usize, k: usize, give_back: &mut impl FnMut(usize, usize)) -> usize {
        let dirty = k - count_range(&self.bits.clean, s, k);
        if dirty > 0 {
            give_back(s, k);
            // Marked after the call: a page is clean once given back.
            self.bits.mark(s, k, Mark::Clean);
            self.dirty -= dirty as u32;
        }
        dirty
    }

    /// Rebuilds the bitmaps' used granules and the counts from the run table, for a repair
    /// after a lock holder died mid-operation: a run whose granules are not all marked
    /// used, or that overlaps another, is dropped (its holder died taking, freeing or
    /// shrinking it: it was nobody's to keep); used granules of no run become free (taken
    /// or freed halfway). Clean bits stay only on free granules: a granule handed out
    /// was unmarked before it was (`take`, `grow`), so none is ever clean wrongly.
    pub(crate) fn recount(&mut self) {
        let mut used = [0; WORDS];
        set_range(&mut used, 0, META_GRANULES, true);
        self.lens[..META_GRANULES].fill(0);
        let (mut runs, mut g) = (0, META_GRANULES);
        while g < GRANULES {
            let n = self.lens[g] as usize;
            if n > 0 {
                if g + n <= GRANULES && count_range(&self.bits.used, g, n) == n {
                    runs += 1;
                    set_range(&mut used, g, n, true);
                    for inside in &mut self.lens[g + 1..g + n] {
                        *inside = 0;
                    }
                    g += n;
                    continue;
                }
                self.lens[g] = 0;
            }
            g += 1;
        }
        self.bits.used = used;
        self.runs = runs;
        self.free = (GRANULES - count_range(&self.bits.used, 0, GRANULES)) as u32;
        for w in 0..WORDS {
            self.bits.clean[w] &= !self.bits.used[w];
        }
        self.bits.summary = Summary::of(&self.bits.used, &self.bits.clean);
        self.dirty = self.free - count_range(&self.bits.clean, 0, GRANULES) as u32;
        self.longest = self.longest_free() as u32;
    }

    /// Checks the invariants of the module docs; returns (live runs, live granules), or
    /// what is wrong.
    pub(crate) fn check(&self) -> Result<(usize, usize), &'static str> {
        if count_range(&self.bits.used, 0, META_GRANULES) != META_GRANULES {
            return Err("the metadata's granules are not used");
        }
        let (mut runs, mut live, mut g) = (0, 0, META_GRANULES);
        while g < GRANULES {
            match self.lens[g] as usize {
                0 => {
                    if self.bits.used[g / 64] >> (g % 64) & 1 != 0 {
                        return Err("a used granule outside every run");
                    }
                    g += 1;
                }
                n => {
                    if g + n > GRANULES || count_range(&self.bits.used, g, n) != n {
                        return Err("a run's granules are not all used");
                    }
                    if (g + 1..g + n).any(|i| self.lens[i] != 0) {
                        return Err("runs overlap");
                    }
                    runs += 1;
                    live += n;
                    g += n;
                }
            }
        }
        let free = GRANULES - META_GRANULES - live;
        // Checked first: clean granules are then free ones, so `dirty` cannot underflow.
        if (0..WORDS).any(|w| self.bits.clean[w] & self.bits.used[w] != 0) {
            return Err("a used granule is marked clean");
        }
        let dirty = free - count_range(&self.bits.clean, 0, GRANULES);
        if (runs, free, dirty) != (self.runs(), self.free(), self.dirty()) {
            return Err("the counts disagree with the bitmaps");
        }
        // Checked before the searches that read it (`longest_free`).
        if self.bits.summary != Summary::of(&self.bits.used, &self.bits.clean) {
            return Err("the word summary disagrees with the bitmaps");
        }
        if (self.longest as usize) < self.longest_free() {
            return Err("the longest free run is longer than its bound");
        }
        Ok((runs, live))
    }
}

mod bits;
#[cfg(test)]
mod model;
mod moved;
mod source;
#[cfg(test)]
mod tests;
mod written;

pub(crate) use moved::Moved;
pub(crate) use source::Source;
pub(crate) use written::{Clean, Fault, Written};
