//! What a program writes of its plain medium runs, as its runs show it: the evidence that
//! decides whether a plain (not zeroed) medium request's clean pages, which read zero and are
//! not resident, are faulted in at allocation (one `madvise(MADV_POPULATE_WRITE)` a range,
//! `os::populate`: about a third of a page fault's cost a page) or left to fault in one
//! trap a page as the program writes them. Faulted in, a page the program never writes is
//! resident for nothing, so a page is faulted in only on evidence, and only so much of it.
//!
//! **Probes.** A plain run handed out with a range of at least [`PROBE_PAGES`] whole clean
//! pages may be a probe: the last pages of its longest such range (at most
//! [`WINDOW_PAGES`], its window, at the end: a program that writes a buffer from its start
//! but not whole shows it there) are left to fault in, and its start and window are
//! remembered ([`PROBES`] at most, the oldest replaced). When that run is freed, the pages
//! of the window still resident (`mincore`) are those the program wrote: the evidence is
//! dense when they are at least [`DENSE`] of the window, sparse otherwise.
//!
//! **Credit.** Evidence and credit are per kind of buffer ([`Written::kind`]: its lifetime
//! class and its size band), so that a program's scratch buffers, written whole, say
//! nothing of its long-lived buffers of another class or size, written in part. Dense
//! evidence sets its kind's credit to `live / 32 +` [`CREDIT_MIN`] bytes (live: the live
//! medium bytes then); sparse evidence takes it all. A run's clean pages are faulted in only
//! when they fit in its kind's credit, which they use up; with credit left, every
//! [`PROBE_EVERY`]-th run that could be a probe is one (its clean pages faulted in but for
//! the window), so the evidence keeps coming; without, every one. So a kind that frees
//! nothing, or whose buffers are written in part, has nothing faulted in; one that turns
//! sparse after dense evidence has at most its credit faulted in for nothing before a
//! sparse probe of it ends it. Buffers of one kind written whole and others of the same kind
//! written in part, the first ones freed and the others kept, are not told apart: the kept
//! ones may be faulted in whole (each dense probe of the first gives its credit again).
//!
//! Invariants (under the pool lock, which every method's caller holds; the atomics only
//! make the per-process view shareable): a probe of start `s` names pages that lay in the
//! run taken at `s` since the probe was recorded, and untouched by the allocator (a run
//! taken or shrunk at `s` drops it: [`Written::taken`], [`Written::forget`]; its range is
//! measured only when it lies inside the run freed); a kind's `credit <= live / 32 +
//! CREDIT_MIN` for the live bytes of its last dense evidence.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Probes remembered at most.
pub(crate) const PROBES: usize = 16;
/// The fewest whole clean pages a probe's range has.
pub(crate) const PROBE_PAGES: usize = 4;
/// With credit left, one run in this many that could be a probe is one.
pub(crate) const PROBE_EVERY: u64 = 4;
/// A probe's window: the last pages (at most this many) of its run's longest range of
/// clean pages, left to fault in while the rest of the run's clean pages are faulted in
/// (when the credit allows).
pub(crate) const WINDOW_PAGES: usize = 8;
/// The credit's part that does not scale with the live memory (bytes).
pub(crate) const CREDIT_MIN: usize = 8 << 20;
/// The credit's share of the live medium bytes: `live / CREDIT_SHARE`.
const CREDIT_SHARE: usize = 32;
/// Dense evidence: at least `DENSE.0 / DENSE.1` of a probe's pages were written.
pub(crate) const DENSE: (usize, usize) = (15, 16);

/// What [`Written::taken`] says of a plain run's clean pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fault {
    /// Fault them in, but for the window.
    pub(crate) fault_in: bool,
    /// A probe's window, left to fault in: `(offset from the region's base, bytes)`; no
    /// bytes when the run is no probe.
    pub(crate) window: (u64, usize),
}

/// The clean pages of a run being taken: their bytes (whole pages only) and the longest
/// range of them, `(offset from the region's base, bytes)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Clean {
    pub(crate) bytes: usize,
    pub(crate) longest: (u64, usize),
}

/// The evidence of one process's view of a pool (see the module docs).
pub(crate) struct Written {
    /// Per probe: `[start + 1 (0: none), window offset, window bytes, kind]`, offsets from
    /// the region's base.
    probes: [[AtomicU64; 4]; PROBES],
    /// The probe slot the next probe takes.
    next: AtomicUsize,
    /// Per kind of buffer ([`Written::kind`]): bytes that may still be faulted in before
    /// new evidence of that kind.
    credit: [AtomicUsize; KINDS],
    /// Runs that could have been probes, counted while credit was left.
    could: AtomicU64,
}

/// Size bands of a kind of buffer, by the power of two of its length: below 64 KiB, below
/// 128 KiB, 256 KiB, 512 KiB, 1 MiB, and 1 MiB.
pub(crate) const BANDS: usize = 6;
/// Kinds of buffer: a lifetime class (at most 256) and a size band.
const KINDS: usize = 256 * BANDS;

impl Written {
    /// The kind of a run of `granules` granules (2 KiB each) in lifetime class `life`:
    /// evidence of one kind says nothing of another (a program's scratch buffers, written
    /// whole, and its long-lived ones, written in part, are most often of other classes or
    /// sizes).
    pub(crate) fn kind(life: usize, granules: usize) -> usize {
        let band = (granules.max(1).ilog2() as usize)
            .saturating_sub(4)
            .min(BANDS - 1);
        life.min(255) * BANDS + band
    }

    /// No evidence: nothing is faulted in until a dense probe is freed.
    pub(crate) const fn new() -> Written {
        Written {
            probes: [const { [const { AtomicU64::new(0) }; 4] }; PROBES],
            next: AtomicUsize::new(0),
            credit: [const { AtomicUsize::new(0) }; KINDS],
            could: AtomicU64::new(0),
        }
    }

    /// Under the pool lock: a run is taken at `start` (offset from the region's base) with
    /// `clean` pages left to fault in (none for a zeroed request, whose clean pages read
    /// zero as they are). Drops a probe of an earlier run at `start`; says whether to fault
    /// `clean`'s pages in, and which of them to leave to fault in when it makes the run a
    /// probe.
    pub(crate) fn taken(&self, start: u64, clean: Clean, page: usize, kind: usize) -> Fault {
        self.forget(start);
        let credit = self.credit[kind].load(Relaxed);
        let enough = clean.bytes > 0 && clean.bytes <= credit;
        let probe = clean.longest.1 >= PROBE_PAGES * page
            && (!enough || self.could.fetch_add(1, Relaxed).is_multiple_of(PROBE_EVERY));
        let mut window = (0, 0);
        if probe {
            let bytes = clean.longest.1.min(WINDOW_PAGES * page);
            window = (clean.longest.0 + (clean.longest.1 - bytes) as u64, bytes);
            let slot = self.next.load(Relaxed);
            self.next.store((slot + 1) % PROBES, Relaxed);
            let p = &self.probes[slot];
            p[1].store(window.0, Relaxed);
            p[2].store(window.1 as u64, Relaxed);
            p[3].store(kind as u64, Relaxed);
            p[0].store(start + 1, Relaxed);
        }
        if enough {
            self.credit[kind].store(credit - (clean.bytes - window.1), Relaxed);
        }
        Fault {
            fault_in: enough,
            window,
        }
    }

    /// Under the pool lock: the run at `start` changes (shrunk, or gone without a
    /// [`Written::freed`]): its probe, if any, is dropped.
    pub(crate) fn forget(&self, start: u64) {
        for p in &self.probes {
            if p[0].load(Relaxed) == start + 1 {
                p[0].store(0, Relaxed);
            }
        }
    }

    /// Under the pool lock: the run `[start, end)` (offsets from the region's base) is being
    /// freed, with `live` live medium bytes. When it is a probe, `resident(offset, bytes)`
    /// measures its range (the resident bytes of it, by `mincore`) and the evidence sets the
    /// credit. Returns whether it was a probe.
    pub(crate) fn freed(
        &self,
        start: u64,
        end: u64,
        live: usize,
        resident: impl FnOnce(u64, usize) -> usize,
    ) -> bool {
        let Some(p) = self.probes.iter().find(|p| p[0].load(Relaxed) == start + 1) else {
            return false;
        };
        p[0].store(0, Relaxed);
        let (at, bytes) = (p[1].load(Relaxed), p[2].load(Relaxed) as usize);
        if at < start || at + bytes as u64 > end {
            return false;
        }
        let written = resident(at, bytes);
        let dense = written * DENSE.1 >= bytes * DENSE.0;
        let credit = if dense {
            live / CREDIT_SHARE + CREDIT_MIN
        } else {
            0
        };
        self.credit[p[3].load(Relaxed) as usize].store(credit, Relaxed);
        true
    }

    /// Bytes that may still be faulted in before new evidence.
    #[cfg(test)]
    pub(crate) fn credit(&self, kind: usize) -> usize {
        self.credit[kind].load(Relaxed)
    }
}

#[cfg(test)]
mod tests;
