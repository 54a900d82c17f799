//! Medium allocations: requests above the largest small class up to [`MAX_MEDIUM`]
//! (`class::medium_granules`), served as runs of granules in medium blocks
//! (`crate::medium_block`), with no header per allocation and no system call in steady
//! state.
//!
//! Medium blocks are blocks of the region like any other (units addressed by offsets, their
//! run tables inside them), so every kind of region serves medium requests the same way:
//! private, shared between processes (a free from any process, a repair after a holder's
//! death: `Runs::recount`), file, fixed capacity, caller memory. A region's runs of units
//! (`crate::region::runs`) serve only the requests above the medium range (or aligned
//! above a page).
//!
//! Everything here runs under the pool lock, from any thread: a medium allocation belongs
//! to no heap (like a large one), so a free by another thread than the allocating one is
//! the same free, and releasing a lifetime class frees all its medium allocations.
//!
//! **Where a request goes.** Each lifetime class has a list of its medium blocks
//! (`PoolState::medium`). In a private region, an allocation of `n` granules takes, over
//! the blocks of its class, the run that covers the most dirty granules (free and maybe
//! still resident, `Runs::find_dirty`: writing them costs no page fault), among equals the
//! one in the shortest range of dirty granules (long ranges stay for long requests). When
//! no free run long enough covers a dirty granule, and always in a region of a bounded
//! capacity (shared, file, fixed, caller memory: spreading runs for residence would
//! exhaust it), the first fitting run (lowest address) of the first block on the list that
//! has one (a block whose longest free run is shorter is skipped by one compare), else a
//! block from the pool (`Pool::take_unused_block`: a kept empty one, else a new one), put
//! first on the list. A free moves its block to the front of its list.
//!
//! **What a run costs in page faults.** A run's dirty granules may be resident; its clean
//! ones read zero and fault in as the caller writes them, a trap a page. In a private
//! region a plain request's whole clean pages are faulted in at allocation instead (one
//! `madvise(MADV_POPULATE_WRITE)` a range outside the lock, about a third of a trap's cost
//! a page) only while this process's freed runs of the same kind (lifetime class and size
//! band) show that it writes what it allocates, and only up to a credit that bounds what a
//! kind turning sparse has made resident for nothing (`crate::medium_block`'s `written`:
//! probes, evidence, credit, and the case it does not tell apart). A zeroed request's clean
//! pages are never faulted in.
//!
//! **Moving pages.** In a private reservation (`Region::moves_pages`: no other process
//! maps it, no option locks it or binds it to nodes), the clean pages a plain request
//! would fault in take free dirty pages of the medium blocks instead, under the lock, by
//! `mremap(MREMAP_DONTUNMAP | MREMAP_FIXED)` (`os::moves`; `medium/moves.rs`): about 10 µs
//! a call and 0.05 µs a page, against about 1.8 µs a page given back by a purge and
//! faulted in again; ranges of at least 128 KiB (fewer, longer moves: each takes a
//! range of the table below), up to 4 a run. The sources: ranges pages
//! were moved into, all free and dirty, first (moved out whole, they heal), then the
//! shortest range of whole dirty pages that serves the rest at once (a purge's ranking:
//! short ones first, the long free runs' last), else the longest; block of the run first.
//! RSS does not change (a page leaves one place for the other) and the dirty granules fall
//! by the pages moved, so the dirty bound below holds as before and purges come less
//! often. A moved range keeps its pages' kernel offsets, so it is a mapping of its own:
//! the ranges moved into are a bounded table (`medium_block`'s `Moved`, 1 024 ranges:
//! at most 2 049 more mappings of the region, of the 65 530 Linux allows a process by
//! default); one all free and clean again (purged, moved out) is mapped fresh, which
//! merges it back, and so is every range of a block leaving the medium blocks; a full
//! table maps fresh (giving back) a range all free among 32 looked at, else the request's
//! pages are faulted in as before. A mapping a move would touch that is locked (`mlock`:
//! `mremap` would unlock the whole mapping it moves out of) is not moved from or into
//! (`MADV_COLD` refused tells it), and only the process that made the region moves (a fork
//! child's fresh mappings do not merge with what it inherited: it faults in as before).
//! Shared, file, fixed and caller-memory regions never move pages (their pages are not
//! the process's alone, or are kept).
//!
//! **What stays resident.** Freed granules are dirty (they may be resident). The medium
//! blocks' dirty granules are bounded by `live / 40` plus a quarter block (512 KiB), so that
//! with the parts of pages next to live runs and the blocks' metadata (about 0.7 % of the
//! live memory for random sizes) they add about 3 % to it at most: past the bound after an
//! allocation (or past it plus the longest run after a free, which the next allocation may
//! reuse), whole pages of free dirty granules go back to the OS (`Pool::purge_medium`) down
//! to three quarters of the bound, those of the shortest ranges of dirty granules first
//! (the least likely to serve a request) and those in runs of free granules long enough for
//! the longest requests last (`medium_block::KEPT_FREE`), among as short ones those of the
//! blocks freed into longest ago (last on their lists: no request took them since); they read zero
//! afterwards. Below the bound,
//! dirty granules unused for a while go back on the pool's delay (`Pool::decay_medium`,
//! looked at every [`DECAY_EVERY`]-th medium free): per window of half the delay, those
//! that stayed dirty the whole window. Runs in heaps' caches (`crate::medium_cache`) are
//! runs to both: never purged. A region committed up front (fixed capacity, caller memory:
//! its units are kept, never given back) purges nothing. In a private region, a block
//! whose last run is freed stays on its list (its granules are dirty granules as any,
//! bounded and reused first) until a purge leaves it with nothing resident; in a region of
//! a bounded capacity (shared, file, fixed, caller memory: its unit may be another
//! class's next block) at once. Then, unless it is its class's only (or first) medium
//! block, it goes to the pool's empty blocks (kept and decayed as any: `crate::pool`); every
//! [`DECAY_EVERY`]-th medium free looks at the clock and gives back the empty blocks kept
//! unused for the delay, as the other slow paths do.
//!
//! Invariants (under the lock): a block is on `medium[l]` ⇔ its key is
//! `key(MEDIUM_CLASS, l)`; `medium_counts` sums its blocks' counts (`MediumCounts`); a
//! pointer `p` of a live medium allocation of `n` granules is
//! `base(b) + s * GRANULE` with `lens(b)[s] = n`.

use crate::block::{header_of, key_class, key_life, BlockList, Header, EMPTY_KEY};
use crate::class::{BLOCK_SIZE, GRANULE, MAX_MEDIUM, MEDIUM_CLASS};
use crate::medium_block::{At, Clean, Fault, Runs, Written, GRANULES, MAX_RUN, META_BYTES, META_GRANULES};
use crate::medium_cache::{MediumCache, Starts, LONG_CHANGES, STARTS_MAX};
use crate::misuse::Problem;
use crate::os;
use crate::pool::{Pool, PoolState};
use crate::region::{GiveBack, BLOCK};
use core::ptr;
use core::sync::atomic::Ordering;

use crate::medium_block::MediumCounts;

/// What a free may leave dirty beyond the bound: as much as the next allocation may take
/// (half a block, the longest medium run), so that a free/allocate loop purges only what
/// its allocations do not reuse.
const FREE_SLACK: usize = MAX_MEDIUM / GRANULE;
/// Medium frees between two looks at the clock for the decay of empty blocks (a clock
/// read costs more than a medium free's other work).
pub(crate) const DECAY_EVERY: u64 = 32;
/// Dirty ranges of a zeroed allocation remembered for zeroing outside the lock; with more,
/// the whole run is zeroed.
const ZERO_RANGES: usize = 8;

/// A live medium run found from a pointer: its block, first granule and length.
#[derive(Clone, Copy)]
pub(crate) struct Run<'a> {
    pub(crate) block: &'a Header,
    pub(crate) granule: usize,
    pub(crate) granules: usize,
}

impl Run<'_> {
    /// Its usable bytes.
    pub(crate) fn usable(&self) -> usize {
        self.granules * GRANULE
    }
}

/// True when `h`'s key (read once) is a medium block's.
pub(crate) fn is_medium(h: &Header) -> bool {
    let k = h.key();
    k != EMPTY_KEY && key_class(k) == MEDIUM_CLASS
}

/// What [`Pool::medium_same_run`] found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum SameRun {
    /// A live run of the size's granules, told by its byte.
    Live,
    /// Maybe a live run longer than its byte tells, if the caller saw it live when
    /// `LONG_CHANGES` was this.
    Long(u64),
    /// Not one (or not told without the lock).
    No,
}

impl Pool {
    /// The header of the block holding `p` (a pointer in the region) when its unit holds
    /// a block (not a run of units, whose bytes are an allocation's, nor a unit given
    /// back, whose bytes mean nothing): read from the unit's state first.
    pub(crate) fn block_at(&self, p: *mut u8) -> Option<&Header> {
        debug_assert!(self.region.contains(p as usize));
        let r = &self.region;
        (r.unit_state(r.unit_of(p as usize)) == BLOCK).then(|| {
            // SAFETY: p's unit holds a block, so it was carved (below the carved end:
            // accessible); its header mask finds its block (every block has the same size
            // and alignment), whose unit says it holds an initialised header.
            unsafe { &*header_of(p) }
        })
    }

    /// A run of `n` granules (`0 < n <= MAX_RUN`) aligned to `align` (at most a page) in
    /// lifetime class `life`; with `ZERO` it reads zero. Null when the region is exhausted.
    pub(crate) fn medium_alloc<const ZERO: bool>(&self, n: usize, align: usize, life: usize) -> *mut u8 {
        debug_assert!(n > 0 && n <= MAX_RUN && align <= META_BYTES);
        let align = (align / GRANULE).max(1);
        let mut st = self.lock_medium();
        let units = self.units();
        // Dirty granules first (still resident: no page fault), then the first fit.
        let mut found = None;
        let mut best = (n, 0);
        // Only a private region spends address space for residence: in one of a bounded
        // capacity (shared, file, fixed, caller memory) the first fit packs the runs.
        let dirty_first = self.region.backing().give_back == GiveBack::Decommit;
        // Dirty granules of the blocks not looked at yet, at most (every class's).
        let mut unseen = st.medium_counts.dirty;
        for h in st.medium(life).iter(units).filter(|_| dirty_first) {
            if found.is_some() && unseen < n - best.0 {
                // The blocks left cannot cover as many dirty granules as the best run
                // found (a walk of the list costs a cache miss a block: their headers
                // share their cache sets).
                break;
            }
            // SAFETY: a block on a medium list is a medium block; we hold the lock.
            let runs = unsafe { Runs::of(h) };
            unseen -= runs.dirty();
            if found.is_some() && runs.dirty() < n - best.0 {
                // Too few dirty granules to cover as many as the best run found.
                continue;
            }
            if let Some((g, clean, range)) = runs.find_dirty(n, align) {
                if found.is_none() || (clean, range) < best {
                    (found, best) = (Some((h, g)), (clean, range));
                }
            }
        }
        if found.is_none() {
            for h in st.medium(life).iter(units) {
                // SAFETY: as above.
                if let Some(g) = unsafe { Runs::of(h) }.find(n, align) {
                    found = Some((h, g));
                    break;
                }
            }
        }
        let (h, g) = match found {
            Some(got) => got,
            None => {
                let Some(h) = self.take_unused_block(&mut st, MEDIUM_CLASS, life, 0) else {
                    return ptr::null_mut();
                };
                // SAFETY: a block just made medium (its runs written), ours under the lock.
                let runs = unsafe { Runs::of(h) };
                let c = &mut st.medium_counts;
                c.blocks += 1;
                c.dirty += runs.dirty();
                st.medium(life).push(units, h);
                let g = runs.find(n, align).expect("a run of at most MAX_RUN fits an empty block");
                (h, g)
            }
        };
        // SAFETY: as above.
        let runs = unsafe { Runs::of(h) };
        // Zeroed: the run's dirty ranges, written with zeros outside the lock. Plain, in a
        // private region: its whole clean pages, faulted in by one call a range outside the
        // lock when the evidence says the program writes what it allocates (else left to
        // fault in as the caller writes them: a buffer written in part stays sparse), see
        // `medium_block`'s `written`.
        let mut ranges = [(0, 0); ZERO_RANGES];
        let mut count = 0;
        let mut clean = Clean::default();
        let start = (h.base() as usize + g * GRANULE - self.region.base()) as u64;
        let page = os::page_size();
        if ZERO {
            runs.for_each_dirty(g, n, |s, k| {
                if count < ZERO_RANGES {
                    ranges[count] = (s, k);
                }
                count += 1;
            });
        } else if dirty_first {
            let per_page = (page / GRANULE).max(1);
            runs.for_each_clean(g, n, |s, k| {
                let (a, b) = (s.next_multiple_of(per_page), (s + k) / per_page * per_page);
                if b > a && count < ZERO_RANGES {
                    ranges[count] = (a, b - a);
                    count += 1;
                    let bytes = (b - a) * GRANULE;
                    clean.bytes += bytes;
                    if bytes > clean.longest.1 {
                        clean.longest = (start + ((a - g) * GRANULE) as u64, bytes);
                    }
                }
            });
        }
        let fault = match dirty_first {
            true => self.medium_written.taken(start, clean, page, Written::kind(life, n)),
            false => Fault {
                fault_in: false,
                window: (0, 0),
            },
        };
        let dirty = runs.take(g, n);
        Starts::of(h).set_live(g, n);
        let c = &mut st.medium_counts;
        c.live += n;
        c.runs += 1;
        c.less_dirty(dirty);
        if fault.fault_in {
            // A probe's window (the end of one range) is left to fault in.
            let window = (fault.window.1 > 0).then(|| (fault.window.0 - start) as usize / GRANULE + g);
            for r in &mut ranges[..count] {
                let (s, k) = *r;
                let k = match window {
                    Some(w) if (s..s + k).contains(&w) => w - s,
                    _ => k,
                };
                // Free dirty pages moved in first; the rest is faulted in outside the lock.
                let moved = self.move_into(&mut st, h, s, k);
                *r = (s + moved, k - moved);
            }
        }
        self.purge_medium_if_due(&mut st, 0);
        drop(st);
        let base = h.base();
        if ZERO {
            let ranges: &[(usize, usize)] = if count <= ZERO_RANGES {
                &ranges[..count]
            } else {
                &[(g, n)]
            };
            for &(s, k) in ranges {
                // SAFETY: granules of the run just taken, ours.
                unsafe { ptr::write_bytes(base.add(s * GRANULE), 0, k * GRANULE) };
            }
        } else if fault.fault_in {
            for &(s, k) in &ranges[..count] {
                // SAFETY: whole pages of the run just taken (the block is page aligned),
                // ours, mapped writable; faulting them in changes no byte.
                unsafe { os::populate(base.add(s * GRANULE), k * GRANULE) };
            }
        }
        base.wrapping_add(g * GRANULE)
    }

    /// Under the lock: the live medium run that starts at `p` (a pointer in the region)
    /// and that a free of `size` bytes in lifetime class `life` names, or what is wrong.
    fn medium_run<'a>(&'a self, p: *mut u8, size: usize, life: usize) -> Result<Run<'a>, Problem> {
        let Some(h) = self.block_at(p) else {
            return Err(Problem::NotMedium {
                block_class: None,
                block_life: 0,
            });
        };
        let k = h.key();
        if k == EMPTY_KEY || key_class(k) != MEDIUM_CLASS {
            let block_class = (k != EMPTY_KEY).then_some(key_class(k));
            return Err(Problem::NotMedium {
                block_class,
                block_life: key_life(k),
            });
        }
        let off = p as usize - h.base() as usize;
        if off < META_BYTES || !off.is_multiple_of(GRANULE) {
            return Err(Problem::NotARun);
        }
        let g = off / GRANULE;
        // SAFETY: a medium block (its key); we hold the lock.
        let n = match unsafe { Runs::of(h) }.at(g) {
            // A run a heap's cache holds is free memory.
            At::Start(_) if Starts::of(h).is_held(g) => return Err(Problem::DoubleFree),
            At::Start(n) => n,
            At::Inside => return Err(Problem::NotARun),
            At::Free => return Err(Problem::DoubleFree),
        };
        if size.div_ceil(GRANULE) != n || size > MAX_MEDIUM || key_life(k) != life {
            return Err(Problem::WrongRun {
                usable: n * GRANULE,
                block_life: key_life(k),
            });
        }
        Ok(Run {
            block: h,
            granule: g,
            granules: n,
        })
    }

    /// Checks that `p` (in the region) starts a live medium run of `size` bytes in
    /// lifetime class `life`, changing nothing: the check of a resize's old allocation.
    pub(crate) fn medium_check(&self, p: *mut u8, size: usize, life: usize) -> Result<usize, Problem> {
        let _st = self.lock_medium();
        self.medium_run(p, size, life).map(|r| r.usable())
    }

    /// The live medium run starting at `p` (in the region): (usable bytes, lifetime
    /// class); `None` when no live run starts at `p` (or its block is not medium).
    pub(crate) fn medium_at(&self, p: *mut u8) -> Option<(usize, usize)> {
        let _st = self.lock_medium();
        let h = self.block_at(p).filter(|h| is_medium(h))?;
        let off = p as usize - h.base() as usize;
        if off < META_BYTES || !off.is_multiple_of(GRANULE) {
            return None;
        }
        // SAFETY: a medium block; we hold the lock.
        match unsafe { Runs::of(h) }.at(off / GRANULE) {
            At::Start(n) if !Starts::of(h).is_held(off / GRANULE) => Some((n * GRANULE, h.life())),
            _ => None,
        }
    }

    /// Frees the medium allocation at `p` (in the region) of `size` bytes in lifetime
    /// class `life`, after checking it (every build: `p` starts a live run of `size`'s
    /// granules in a medium block of `life`); else returns what is wrong, having changed
    /// nothing.
    pub(crate) fn medium_free(&self, p: *mut u8, size: usize, life: usize) -> Result<(), Problem> {
        let mut st = self.lock_medium();
        let run = self.medium_run(p, size, life)?;
        // A free into a cache at the same moment (the same run freed twice) wins or loses
        // here.
        if !Starts::of(run.block).change(run.granule, run.granules, 0) {
            return Err(Problem::DoubleFree);
        }
        self.free_medium_run(&mut st, run);
        Ok(())
    }

    /// Under the lock: frees the live run `run` (its start byte cleared already), moving
    /// its block to the front of its list; purges and decays when due.
    fn free_medium_run(&self, st: &mut PoolState, run: Run<'_>) {
        let h = run.block;
        let life = h.life();
        if self.region.backing().give_back == GiveBack::Decommit {
            // A probe of what the program writes (`medium_block`'s `written`): measured
            // while the run is still its own.
            let base = self.region.base();
            let start = (h.base() as usize + run.granule * GRANULE - base) as u64;
            let end = start + (run.granules * GRANULE) as u64;
            let live = st.medium_counts.live * GRANULE;
            self.medium_written.freed(start, end, live, |at, bytes| {
                // SAFETY: whole pages of the run being freed, in the region (mapped).
                unsafe { os::resident_bytes((base + at as usize) as *const u8, bytes) }
            });
        }
        // SAFETY: a medium block; we hold the lock.
        let runs = unsafe { Runs::of(h) };
        runs.free_run(run.granule);
        let c = &mut st.medium_counts;
        c.live -= run.granules;
        c.runs -= 1;
        c.dirty += run.granules;
        let units = self.units();
        let list = st.medium(life);
        let first = list.first(units).is_some_and(|f| ptr::eq(f, h));
        let only = first && list.iter(units).nth(1).is_none();
        // In a private region an emptied block stays (its dirty granules bounded as any,
        // reused first); in one of a bounded capacity (shared, file, fixed, caller memory)
        // its unit may be another class's next block.
        let stays = self.region.backing().give_back == GiveBack::Decommit;
        if runs.is_empty() && !only && !stays {
            list.remove(units, h);
            self.drop_medium_block(st, h);
        } else if !first {
            list.remove(units, h);
            list.push(units, h);
        }
        // The next allocation may take as many dirty granules as the largest run.
        self.purge_medium_if_due(st, FREE_SLACK);
        // A slow path: empty blocks unused for the delay go back (see `pool`'s `empty`).
        st.medium_counts.frees += 1;
        if st.medium_counts.frees.is_multiple_of(DECAY_EVERY) {
            let now = crate::decay::now();
            self.decay_if_due_locked(st, now);
            self.decay_medium(st, now);
        }
    }

    /// Resizes the live medium allocation at `p` (in the region) of `old` bytes to `new`
    /// bytes (both medium sizes) where it lies: shrinking frees its tail granules, growing
    /// takes the granules after it when they are free. Returns whether it did (false: the
    /// granules after it are taken; nothing changed), or what is wrong with the old
    /// allocation (nothing changed). Grown granules hold what they held (not zeroed).
    pub(crate) fn medium_resize_in_place(
        &self,
        p: *mut u8,
        old: usize,
        new: usize,
        life: usize,
    ) -> Result<bool, Problem> {
        let mut st = self.lock_medium();
        let run = self.medium_run(p, old, life)?;
        let m = new.div_ceil(GRANULE);
        if new > MAX_MEDIUM || m == 0 {
            return Ok(false);
        }
        // SAFETY: a medium block; we hold the lock.
        let runs = unsafe { Runs::of(run.block) };
        let n = run.granules;
        let c = &mut st.medium_counts;
        let starts = Starts::of(run.block);
        if m < n {
            if !starts.change(run.granule, n, m) {
                return Err(Problem::DoubleFree);
            }
            runs.shrink(run.granule, n, m);
            // A probe of the run may name pages it no longer holds.
            let start = (run.block.base() as usize + run.granule * GRANULE) - self.region.base();
            self.medium_written.forget(start as u64);
            c.live -= n - m;
            c.dirty += n - m;
        } else if m > n {
            let Some(dirty) = runs.grow(run.granule, n, m) else {
                return Ok(false);
            };
            if !starts.change(run.granule, n, m) {
                // Freed into a cache meanwhile (a free of it at the same moment).
                // Its granules are free again, dirty now (grown, they lost their clean
                // bits).
                runs.shrink(run.granule, m, n);
                c.dirty += (m - n) - dirty;
                return Err(Problem::DoubleFree);
            }
            c.live += m - n;
            c.less_dirty(dirty);
        }
        self.purge_medium_if_due(&mut st, 0);
        Ok(true)
    }

    /// Under the lock: a medium block with no live run leaves the medium blocks (the
    /// caller took it off its list) for the pool's empty blocks.
    fn drop_medium_block(&self, st: &mut PoolState, h: &Header) {
        // SAFETY: a medium block; we hold the lock.
        let runs = unsafe { Runs::of(h) };
        let c = &mut st.medium_counts;
        c.blocks -= 1;
        c.less_dirty(runs.dirty());
        c.live -= MAX_RUN - runs.free();
        c.runs -= runs.runs();
        self.heal_leaving(h);
        self.discard(st, h);
    }

    /// Under the lock: releases every medium allocation of lifetime class `life`, giving
    /// its blocks to the pool's empty blocks. Returns (allocations, blocks).
    pub(crate) fn release_medium(&self, st: &mut PoolState, life: usize) -> (usize, usize) {
        let units = self.units();
        let (mut allocations, mut blocks) = (0, 0);
        for h in st.medium(life).iter(units) {
            let held = Starts::of(h).held().0;
            if held > 0 {
                // Runs heaps' caches hold are no allocations: they and their block stay.
                allocations += self.free_unheld_runs(st, h);
                continue;
            }
            st.medium(life).remove(units, h);
            // SAFETY: a medium block; we hold the lock.
            allocations += unsafe { Runs::of(h) }.runs();
            blocks += 1;
            self.drop_medium_block(st, h);
        }
        (allocations, blocks)
    }

    /// Under the lock: frees every live run of medium block `h` that no cache holds,
    /// leaving the block where it is. Returns how many.
    fn free_unheld_runs(&self, st: &mut PoolState, h: &Header) -> usize {
        // SAFETY: a medium block; we hold the lock.
        let runs = unsafe { Runs::of(h) };
        let starts = Starts::of(h);
        let (mut freed, mut g) = (0, 0);
        while g < GRANULES {
            let At::Start(n) = runs.at(g) else {
                g += 1;
                continue;
            };
            if starts.change(g, n, 0) {
                runs.free_run(g);
                let c = &mut st.medium_counts;
                c.live -= n;
                c.runs -= 1;
                c.dirty += n;
                freed += 1;
            }
            g += n;
        }
        freed
    }

    /// The live medium allocations of block `h` (taking the lock): its live runs and
    /// their granules, runs heaps' caches hold not counted; `None` when `h` is not a
    /// medium block (now).
    pub(crate) fn medium_block_counts(&self, h: &Header) -> Option<MediumCounts> {
        // A report's: no medium path's lock acquisition to count.
        let _st = self.lock_uncounted();
        if !is_medium(h) {
            return None;
        }
        // SAFETY: a medium block (its key, read under the lock); we hold the lock.
        let runs = unsafe { Runs::of(h) };
        let (held, held_granules) = Starts::of(h).held();
        Some(MediumCounts {
            live: MAX_RUN - runs.free() - held_granules,
            runs: runs.runs() - held,
            dirty: runs.dirty(),
            blocks: 1,
            ..MediumCounts::new()
        })
    }

    /// Under the lock: the live medium allocations of lifetime class `life` and their
    /// usable bytes.
    pub(crate) fn medium_of_life(&self, st: &PoolState, life: usize) -> (usize, usize) {
        let (mut runs, mut granules) = (0, 0);
        for h in st.medium_list(life).iter(self.units()) {
            // SAFETY: a medium block; we hold the lock.
            let r = unsafe { Runs::of(h) };
            // Runs heaps' caches hold are free memory, no allocations.
            let (held, held_granules) = Starts::of(h).held();
            runs += r.runs() - held;
            granules += MAX_RUN - r.free() - held_granules;
        }
        (runs, granules * GRANULE)
    }
}

mod held;
mod moves;
mod purge;
#[cfg(test)]
mod tests;

