//! Runs: large allocations served from the region's own units, in a region that serves
//! them ([`Backing::serves_large`]: shared, file and fixed-capacity regions, whose every
//! byte must come from the region).
//!
//! A run is `n = ceil(len / UNIT)` contiguous units starting at a unit whose address is a
//! multiple of the allocation's alignment; the allocation starts at its first unit and has
//! no header. What the run is lives beside the units, in the region's state (so it is
//! position independent and every process of a shared region reads it): the first unit's
//! state is `RUN` and its run word holds `len / MIN_PAGE << 16 | life`; the other units'
//! states are `RUN_REST`. A free by size checks the word; a look-up by address reads the
//! unit state, never the allocation's bytes.
//!
//! Invariants (under the pool lock): for every unit `u` with `state(u) == RUN`, with `n`
//! its word's unit count: `u + n <= bump` and `state(u + i) == RUN_REST` for `0 < i < n`;
//! every `RUN_REST` unit is inside such a run; `runs` = the number of `RUN` units and
//! `run_bytes` = the sum of their lengths. A carve writes the word, then the `RUN_REST`
//! states, then `RUN` (Release); a give-back clears `RUN` first: a unit `RUN_REST` outside
//! a run is the trace of a holder that died in the middle, which [`Region::repair_runs`]
//! gives back.

use super::{Region, RegionState, BLOCK, RUN, RUN_REST, UNIT, UNIT_SHIFT, UNUSED};
use crate::os;
use crate::sync::Ordering;

/// A live run: its length (the page-rounded size of its allocation), its lifetime class,
/// and its units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) len: usize,
    pub(crate) life: usize,
    pub(crate) units: usize,
}

impl Run {
    fn word(len: usize, life: usize) -> u64 {
        debug_assert!(life < 1 << 16 && len.is_multiple_of(os::MIN_PAGE));
        ((len / os::MIN_PAGE) as u64) << 16 | life as u64
    }

    fn of_word(w: u64) -> Run {
        let len = (w >> 16) as usize * os::MIN_PAGE;
        Run {
            len,
            life: (w & 0xffff) as usize,
            units: len.div_ceil(UNIT),
        }
    }
}

/// What [`Region::check_runs`] found wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RunFault {
    /// Unit `unit` starts a run whose units are not all `RUN_REST` or pass `bump`.
    Broken { unit: usize },
    /// Unit `unit` is `RUN_REST` outside every run.
    Stray { unit: usize },
    /// The counters disagree with the units: (runs, bytes) counted vs kept.
    Counts {
        counted: (usize, usize),
        kept: (usize, usize),
    },
}

impl RunFault {
    /// The unit the fault is at (the region's first for a count mismatch).
    pub(crate) fn unit(&self) -> usize {
        match *self {
            RunFault::Broken { unit } | RunFault::Stray { unit } => unit,
            RunFault::Counts { .. } => 0,
        }
    }
}

/// "a run's units are not all its own (unit 3)", for verify's report.
impl core::fmt::Display for RunFault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RunFault::Broken { unit } => write!(f, "the run starting at unit {unit} is not whole"),
            RunFault::Stray { unit } => {
                write!(f, "unit {unit} is marked part of a run, outside every run")
            }
            RunFault::Counts { counted, kept } => write!(
                f,
                "{} runs of {} bytes counted, {} of {} kept",
                counted.0, counted.1, kept.0, kept.1
            ),
        }
    }
}

impl Region {
    fn run_word(&self, u: usize) -> &crate::sync::AtomicU64 {
        debug_assert!(u < self.unit_count);
        // SAFETY: the run words map `unit_count` words and u is in range.
        unsafe { &*self.run_words.add(u) }
    }

    /// True when unit `v` may join a new run: given back, or never carved.
    fn is_free(&self, bits: &bitvec::slice::BitSlice<usize>, bump: usize, v: usize) -> bool {
        v >= bump || bits[v]
    }

    /// Carves a run for a large allocation of `len` bytes (page-rounded, `len > 0`) aligned
    /// to `align` (a power of two) in lifetime class `life`: the first `ceil(len / UNIT)`
    /// free units in a row whose first address is a multiple of `align`. Returns its
    /// address and whether its memory is known to read zero, or `None` when no such units
    /// exist (or the OS refuses to commit them).
    pub(crate) fn carve_run(
        &self,
        st: &mut RegionState,
        len: usize,
        align: usize,
        life: usize,
    ) -> Option<(*mut u8, bool)> {
        let n = len.div_ceil(UNIT);
        let step = (align >> UNIT_SHIFT).max(1);
        let first_unit = self.base() >> UNIT_SHIFT;
        let bump = st.bump;
        let start = {
            let bits = self.decommitted_bits(st);
            let mut u = (first_unit.next_multiple_of(step)) - first_unit;
            loop {
                if u.checked_add(n)? > self.unit_count {
                    return None;
                }
                match (u..u + n).find(|&v| !self.is_free(bits, bump, v)) {
                    None => break u,
                    Some(taken) => u = (first_unit + taken + 1).next_multiple_of(step) - first_unit,
                }
            }
        };
        let end = start + n;
        if end > bump {
            let commit = self.backing().commit;
            // SAFETY: [bump, end) lies in our reservation, past every carved unit.
            if commit && !unsafe { os::commit(self.unit_addr(bump), (end - bump) * UNIT) } {
                return None;
            }
            if !self.commit_unit_tables(bump, end) {
                return None;
            }
            st.bump = end;
            self.carved_to(end);
        }
        let bits = self.decommitted_bits(st);
        // Units skipped to reach the alignment join the given-back ones.
        for v in bump..start {
            bits.set(v, true);
        }
        for v in start..end.min(bump) {
            bits.set(v, false);
        }
        // Given-back units read zero when decommitted; never-carved ones when the backing is.
        let fresh =
            (start >= bump || self.zero_after_give_back()) && (end <= bump || self.backing().fresh);
        self.run_word(start)
            .store(Run::word(len, life), Ordering::Relaxed);
        for v in start + 1..end {
            self.set_state(v, RUN_REST);
        }
        self.set_state(start, RUN);
        st.runs += 1;
        st.run_bytes += len;
        Some((self.unit_addr(start), fresh))
    }

    /// The live run starting at `p`, read without the lock (a free of `p` racing this read
    /// would break its caller's contract).
    pub(crate) fn run_at(&self, p: usize) -> Option<Run> {
        if !self.contains(p) || !p.is_multiple_of(UNIT) {
            return None;
        }
        let u = self.unit_of(p);
        (self.unit_state(u) == RUN).then(|| Run::of_word(self.run_word(u).load(Ordering::Relaxed)))
    }

    /// True when unit `u` is part of a run (whose bytes are an allocation's, not a header).
    #[inline]
    pub(crate) fn is_run_unit(&self, u: usize) -> bool {
        matches!(self.unit_state(u), RUN | RUN_REST)
    }

    /// Under the lock: changes the length of the run at unit `u` to `len` (page-rounded),
    /// which must need the same units (a resize in place).
    pub(crate) fn resize_run(&self, st: &mut RegionState, u: usize, len: usize) {
        let run = Run::of_word(self.run_word(u).load(Ordering::Relaxed));
        debug_assert_eq!(len.div_ceil(UNIT), run.units);
        self.run_word(u)
            .store(Run::word(len, run.life), Ordering::Relaxed);
        st.run_bytes = st.run_bytes - run.len + len;
    }

    /// Gives the run starting at unit `u` back to the region: its units become given back,
    /// their memory goes back to the OS as the region's backing says.
    ///
    /// # Safety
    /// Unit `u` starts a live run that nobody uses any more.
    pub(crate) unsafe fn give_back_run(&self, st: &mut RegionState, u: usize) {
        let run = Run::of_word(self.run_word(u).load(Ordering::Relaxed));
        debug_assert_eq!(self.unit_state(u), RUN);
        self.set_state(u, UNUSED);
        for v in u + 1..u + run.units {
            self.set_state(v, UNUSED);
        }
        // SAFETY: the run's units are ours and dead (caller).
        unsafe { self.forget(self.unit_addr(u), run.units * UNIT) };
        let bits = self.decommitted_bits(st);
        for v in u..u + run.units {
            bits.set(v, true);
        }
        self.run_word(u).store(0, Ordering::Relaxed);
        st.runs -= 1;
        st.run_bytes -= run.len;
    }

    /// Live runs and the bytes their allocations' sizes round to.
    pub(crate) fn run_totals(&self, st: &RegionState) -> (usize, usize) {
        (st.runs, st.run_bytes)
    }

    /// Under the lock: every live run from unit `from` on, as (first unit, run).
    pub(crate) fn runs_from<'a>(
        &'a self,
        st: &RegionState,
        from: usize,
    ) -> impl Iterator<Item = (usize, Run)> + 'a {
        let bump = st.bump;
        let mut u = from;
        core::iter::from_fn(move || {
            while u < bump {
                let at = u;
                u += 1;
                if self.unit_state(at) == RUN {
                    let run = Run::of_word(self.run_word(at).load(Ordering::Relaxed));
                    u = at + run.units.max(1);
                    return Some((at, run));
                }
            }
            None
        })
    }

    /// Under the lock: every live run, as (first unit, run).
    pub(crate) fn runs<'a>(&'a self, st: &RegionState) -> impl Iterator<Item = (usize, Run)> + 'a {
        self.runs_from(st, 0)
    }

    /// Checks the runs against the units and the counters (see the module invariants).
    pub(crate) fn check_runs(&self, st: &RegionState) -> Result<(), RunFault> {
        let (mut runs, mut bytes, mut u) = (0, 0, 0);
        while u < st.bump {
            match self.unit_state(u) {
                RUN => {
                    let run = Run::of_word(self.run_word(u).load(Ordering::Relaxed));
                    let whole = run.units > 0
                        && u + run.units <= st.bump
                        && (u + 1..u + run.units).all(|v| self.unit_state(v) == RUN_REST);
                    if !whole {
                        return Err(RunFault::Broken { unit: u });
                    }
                    runs += 1;
                    bytes += run.len;
                    u += run.units;
                }
                RUN_REST => return Err(RunFault::Stray { unit: u }),
                _ => u += 1,
            }
        }
        if (runs, bytes) != (st.runs, st.run_bytes) {
            return Err(RunFault::Counts {
                counted: (runs, bytes),
                kept: (st.runs, st.run_bytes),
            });
        }
        Ok(())
    }

    /// Under the lock, repairing after a holder died in a carve or give-back of a run:
    /// `RUN_REST` units outside a whole run, and a run that is not whole, go back (nobody
    /// was handed their memory: a carve publishes `RUN` last), as does every unit below
    /// `bump` that is neither a block nor in a run; the counters are recounted.
    pub(crate) fn repair_runs(&self, st: &mut RegionState) {
        let (mut runs, mut bytes, mut u) = (0, 0, 0);
        let bump = st.bump;
        while u < bump {
            let state = self.unit_state(u);
            if state == RUN {
                let run = Run::of_word(self.run_word(u).load(Ordering::Relaxed));
                let whole = run.units > 0
                    && u + run.units <= bump
                    && (u + 1..u + run.units).all(|v| self.unit_state(v) == RUN_REST);
                if whole {
                    runs += 1;
                    bytes += run.len;
                    u += run.units;
                    continue;
                }
            }
            if state != BLOCK {
                self.set_state(u, UNUSED);
                self.decommitted_bits(st).set(u, true);
            }
            u += 1;
        }
        st.runs = runs;
        st.run_bytes = bytes;
        debug_assert!(self.check_runs(st).is_ok());
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::super::Backing;
    use super::*;

    fn serving(units: usize) -> (Region, RegionState) {
        let (r, st) = Region::new(units * UNIT, true, false).unwrap();
        // SAFETY: nobody else uses the region yet.
        unsafe {
            r.set_backing(Backing {
                serves_large: true,
                ..Backing::PRIVATE
            })
        };
        (r, st)
    }

    #[test]
    fn a_run_takes_contiguous_units_and_goes_back_whole() {
        let (r, mut st) = serving(8);
        let (b, _) = r.carve(&mut st).unwrap();
        let (p, fresh) = r.carve_run(&mut st, 3 * UNIT - 4096, 4096, 5).unwrap();
        assert!(fresh);
        assert_eq!(p as usize, b as usize + UNIT);
        let run = r.run_at(p as usize).unwrap();
        assert_eq!((run.len, run.life, run.units), (3 * UNIT - 4096, 5, 3));
        assert_eq!(
            r.run_at(p as usize + UNIT),
            None,
            "only the first unit starts it"
        );
        assert!(r.is_run_unit(r.unit_of(p as usize) + 2));
        assert!(!r.is_run_unit(r.unit_of(b as usize)));
        assert_eq!(r.run_totals(&st), (1, 3 * UNIT - 4096));
        r.check_runs(&st).unwrap();
        // SAFETY: the run's memory is committed and ours.
        unsafe { p.add(3 * UNIT - 4097).write(7) };
        // SAFETY: a live run nobody uses.
        unsafe { r.give_back_run(&mut st, r.unit_of(p as usize)) };
        assert_eq!(r.run_totals(&st), (0, 0));
        r.check_runs(&st).unwrap();
        // The freed units serve blocks and runs again.
        let (q, fresh) = r.carve_run(&mut st, 2 * UNIT, 4096, 0).unwrap();
        assert_eq!(q, p);
        assert!(fresh, "a decommitting region's units read zero again");
        assert!(
            r.carve_run(&mut st, 6 * UNIT, 4096, 0).is_none(),
            "5 free units, not 6"
        );
        assert!(r.carve_run(&mut st, 4 * UNIT, 4096, 0).is_some());
        r.check_runs(&st).unwrap();
        assert!(r.carve(&mut st).is_some(), "the unit left over is a block");
        assert!(r.carve(&mut st).is_none());
        assert!(
            r.carve_run(&mut st, 4096, 4096, 0).is_none(),
            "a full region serves no run"
        );
    }

    #[test]
    fn an_aligned_run_skips_units_and_they_stay_usable() {
        let (r, mut st) = serving(16);
        let align = 4 * UNIT;
        let (p, _) = r.carve_run(&mut st, UNIT, align, 1).unwrap();
        assert_eq!(p as usize % align, 0);
        let skipped = r.unit_of(p as usize);
        for _ in 0..skipped {
            assert!(
                r.carve(&mut st).is_some(),
                "skipped units are given back, usable"
            );
        }
        r.check_runs(&st).unwrap();
    }

    #[test]
    fn repair_gives_back_a_half_carved_run() {
        let (r, mut st) = serving(8);
        let (p, _) = r.carve_run(&mut st, 2 * UNIT, 4096, 0).unwrap();
        let u = r.unit_of(p as usize);
        // A holder that died in the middle of giving it back: the first unit cleared.
        r.set_state(u, UNUSED);
        assert_eq!(r.check_runs(&st), Err(RunFault::Stray { unit: u + 1 }));
        r.repair_runs(&mut st);
        r.check_runs(&st).unwrap();
        assert_eq!(r.run_totals(&st), (0, 0));
        assert!(
            r.carve_run(&mut st, 8 * UNIT, 4096, 0).is_some(),
            "every unit is free again"
        );
    }
}
