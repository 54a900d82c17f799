//! Large allocations of a region that serves them (`Backing::serves_large`): runs of the
//! region's units, carved and given back under the pool lock (see `crate::region::runs`).
//! Every process of a shared region reaches them the same way: a free by size from any
//! process checks the run's word and gives the units back.
//!
//! A region full of runs and blocks refuses (null): before that, a carve that finds no room
//! gives back the empty blocks the pool holds and tries once more.

use super::{Pool, PoolState};
use crate::misuse::Problem;
use crate::os;
use crate::region::runs::Run;
use core::ptr;

impl Pool {
    /// A large allocation of `len` bytes (page-rounded) aligned to `align` in lifetime class
    /// `life`, from a run of the region; with `ZERO` it reads zero. Null when the region has
    /// no room for it, or cannot keep the alignment in every view
    /// ([`crate::region::Region::keeps_alignment`]).
    pub(crate) fn alloc_run<const ZERO: bool>(
        &self,
        len: usize,
        align: usize,
        life: usize,
    ) -> *mut u8 {
        if !self.region.keeps_alignment(align) {
            return ptr::null_mut();
        }
        let mut st = self.lock();
        let mut got = self.region.carve_run(&mut st.region, len, align, life);
        if got.is_none() && self.give_back_empty(&mut st) > 0 {
            got = self.region.carve_run(&mut st.region, len, align, life);
        }
        drop(st);
        let Some((p, fresh)) = got else {
            return ptr::null_mut();
        };
        if ZERO && !fresh {
            // SAFETY: the run's `len` bytes are this allocation's.
            unsafe { ptr::write_bytes(p, 0, len) };
        }
        p
    }

    /// The live run starting at `p`, read without the lock.
    pub(crate) fn run_at(&self, p: *mut u8) -> Option<Run> {
        self.region.run_at(p as usize)
    }

    /// What a pointer into the region that no block holds is, for a misuse report: the
    /// start of a run (a large allocation given another size or class), or not an
    /// allocation (`NotLarge`: inside a run, in a given-back unit, or a run freed already).
    pub(crate) fn run_problem(&self, p: *mut u8) -> Problem {
        match self.run_at(p) {
            Some(run) => Problem::LargeMismatch {
                mapped: run.len,
                life: run.life,
            },
            None => Problem::NotLarge,
        }
    }

    /// Frees the run at `p` if one starts there with the length `size` rounds to and
    /// lifetime class `life`; else says what is wrong, having changed nothing.
    ///
    /// # Safety
    /// If a run starts at `p`, it is the caller's to free (nothing uses it after).
    pub(crate) unsafe fn free_run(
        &self,
        p: *mut u8,
        size: usize,
        life: usize,
    ) -> Result<(), Problem> {
        let mut st = self.lock();
        match self.run_at(p) {
            Some(run) if Some(run.len) == os::page_round(size) && run.life == life => {
                let u = self.region.unit_of(p as usize);
                // SAFETY: a live run, the caller's to free.
                unsafe { self.region.give_back_run(&mut st.region, u) };
                Ok(())
            }
            _ => {
                drop(st);
                Err(self.run_problem(p))
            }
        }
    }

    /// Resizes the run at `p` (checked by the caller against its old size and class) to
    /// `len` bytes (page-rounded) in place when it needs the same units; false when it
    /// must move.
    pub(crate) fn resize_run(&self, p: *mut u8, len: usize) -> bool {
        let Some(run) = self.run_at(p) else {
            return false;
        };
        if len == 0 || len.div_ceil(crate::region::UNIT) != run.units {
            return false;
        }
        let mut st = self.lock();
        self.region
            .resize_run(&mut st.region, self.region.unit_of(p as usize), len);
        true
    }

    /// Under the lock: gives back every run of lifetime class `life`. Returns how many.
    pub(crate) fn release_runs(&self, st: &mut PoolState, life: usize) -> usize {
        let (mut n, mut from) = (0, 0);
        while let Some((u, run)) = self.region.runs_from(&st.region, from).next() {
            from = u + run.units;
            if run.life == life {
                // SAFETY: a live run of the class, dead by the caller's contract.
                unsafe { self.region.give_back_run(&mut st.region, u) };
                n += 1;
            }
        }
        n
    }

    /// Live runs of lifetime class `life`.
    pub(crate) fn count_runs_of_life(&self, life: usize) -> usize {
        let st = self.lock();
        self.region
            .runs(&st.region)
            .filter(|&(_, run)| run.life == life)
            .count()
    }

    /// (live runs, bytes their sizes round to).
    pub(crate) fn run_totals(&self) -> (usize, usize) {
        self.region.run_totals(&self.lock().region)
    }
}

impl Pool {
    /// Every live large allocation, mappings and runs: `f(address, length, lifetime class)`.
    /// Takes the large table's lock, then the pool's (never both at once); `f` must not
    /// allocate.
    pub(crate) fn each_large(&self, mut f: impl FnMut(usize, usize, usize)) {
        for (addr, len, life) in self.large.lock().live() {
            f(addr, len, life);
        }
        if self.region.serves_large() {
            let st = self.lock();
            for (u, run) in self.region.runs(&st.region) {
                f(self.region.unit_addr(u) as usize, run.len, run.life);
            }
        }
    }

    /// (live large allocations, their bytes): the large table's (mapped bytes) and the
    /// runs' (the lengths their sizes round to).
    pub(crate) fn large_totals(&self) -> (usize, usize) {
        let (count, bytes) = {
            let large = self.large.lock();
            (large.count(), large.bytes)
        };
        let (runs, run_bytes) = if self.region.serves_large() {
            self.run_totals()
        } else {
            (0, 0)
        };
        (count + runs, bytes + run_bytes)
    }

    /// Live large allocations of lifetime class `life`, mappings and runs.
    pub(crate) fn count_large_of_life(&self, life: usize) -> usize {
        let mapped = self.large.lock().count_life(life);
        mapped
            + if self.region.serves_large() {
                self.count_runs_of_life(life)
            } else {
                0
            }
    }
}
