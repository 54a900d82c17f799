//! Whole-class and whole-allocator operations: releasing a lifetime class, compacting, and
//! the leak check.
//!
//! Releasing a lifetime class frees all its allocations at once, like resetting an arena, in
//! time proportional to the class's blocks (the pool keeps a list of them per lifetime
//! class, see [`crate::pool`]): every block of the class that holds allocations of the
//! calling thread or of exited threads is emptied and given back, without looking at a
//! single slot. Blocks of the class that hold *other live threads'* allocations are
//! theirs: each thread releases its own (see [`Released::left_to_other_threads`]). A
//! [`Join`](crate::Join) is a thread of its own here: live until it is left, then exited.
//!
//! Whose a block's allocations are: a heap-owned block's are its heap's thread's (or
//! join's); a pool-owned block's are its holder's (see [`crate::pool`]): a tiny block's, the
//! heap that allocates from it; a block of exited threads or left joins, nobody's (anyone
//! releases it); a block that threads without a heap allocated from, theirs (only
//! [`Cohort::scope_exclusive`] releases it, or the release of a scope's class, which is all
//! the scope's: [`Whose`]). So a block's allocations are released by whoever holds the
//! block, not by whoever made them: a block that an exited thread (or left join) gave back
//! with live allocations may be taken up by another heap, whose releases free them.

use crate::api::Cohort;
use crate::block::{Header, Snapshot, HEAPLESS, NO_HOLDER};
use crate::decay::Retention;
use crate::heap;
use crate::large::{unmap_evicted, Walk};
use crate::lifetime::{self, Lifetime};
use crate::stats::Bytes;
use core::fmt;
use crate::per_thread;
use crate::pool::{Pool, PoolState};
use core::time::Duration;

/// What [`Cohort::release_class`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Released {
    /// Blocks emptied and given back.
    pub blocks: usize,
    /// Live slots they held, now freed.
    pub slots: usize,
    /// Blocks of the class that hold other live threads' allocations (not released):
    /// blocks of their heaps and of joins not left, their tiny blocks, blocks threads
    /// without a heap allocated from.
    pub left_to_other_threads: usize,
    /// Large allocations of the class freed (whichever thread made them): cached as a free
    /// caches them, within the cache's bounds, or unmapped.
    pub large: usize,
    /// Medium allocations of the class freed (whichever thread made them), and their
    /// blocks given back with them.
    pub medium: usize,
}

/// "released 3 blocks (120 slots) and 2 large allocations; 1 block left to other threads".
impl fmt::Display for Released {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "released {} blocks ({} slots), {} medium and {} large allocations",
            self.blocks, self.slots, self.medium, self.large
        )?;
        if self.left_to_other_threads > 0 {
            write!(
                f,
                "; {} blocks left to other threads",
                self.left_to_other_threads
            )?;
        }
        Ok(())
    }
}

/// "gave back 4 empty blocks and 0 cached large mappings: resident 12.0 MiB -> 4.0 MiB".
impl fmt::Display for Compacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gave back {} empty blocks and {} cached large mappings: resident {} -> {}",
            self.blocks,
            self.large_mappings,
            Bytes(self.resident_before),
            Bytes(self.resident_after)
        )
    }
}

/// Whose allocations of a lifetime class a release frees.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Whose {
    /// [`Cohort::release_class`]'s: those of the calling thread and of exited threads (in
    /// blocks its heap owns or holds, blocks of exited threads' heaps, the pool's blocks
    /// of no holder), and every large one.
    Caller,
    /// A claimed class's (a scope's, see [`crate::scope`]): only the calling thread
    /// allocated in the class since the previous claim's release, so all of it is the
    /// caller's wherever it lies; `Caller`'s, and also the blocks threads without a heap
    /// allocated from ([`HEAPLESS`]: the caller, if it had no heap). Blocks another live
    /// heap owns or holds cannot hold any of it (its thread never allocated in the class
    /// since then): left alone all the same.
    Claimed,
    /// Everything, in every heap: nobody else uses the allocator
    /// ([`Cohort::scope_exclusive`]). In a shared instance, everything of this process's
    /// heaps (and what nobody holds): `&mut self` excludes no other process.
    Everyone,
}

/// What [`Cohort::compact`] gave back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Empty blocks given back to the OS.
    pub blocks: usize,
    /// Resident bytes of all blocks (in use or kept empty) before.
    pub resident_before: usize,
    /// Resident bytes after.
    pub resident_after: usize,
    /// Cached (freed) large mappings given back to the OS.
    pub large_mappings: usize,
}

impl<L: Lifetime> Cohort<L> {
    /// Frees every allocation of lifetime class `life` made by the calling thread or by
    /// threads that have exited, at once. A [`Join`](crate::Join) counts as a thread of its
    /// own: what was allocated through a join that has been left (or dropped) is an exited
    /// thread's, released by any thread's call, even while the thread that used the join
    /// lives on; a join not left is another live thread (its blocks are left alone, also
    /// by the thread holding it). Their blocks become reusable by any class, and past
    /// the pool's retention bound their memory goes back to the OS, so RSS drops.
    ///
    /// Cost: proportional to the blocks of the class (a walk of their headers), not to the
    /// allocations nor to other classes' blocks. Thread safety: other threads may allocate and free in *other* lifetime
    /// classes meanwhile; blocks of `life` that hold other live threads' allocations are
    /// left alone and counted in [`Released::left_to_other_threads`]. This holds for every
    /// size, 1- and 2-byte allocations included (they are served under a lock, but each
    /// thread from its own blocks). Allocations a thread made without a heap of its own
    /// (while it was exiting, or beyond the 16 383 heaps an instance registers) count as
    /// another live thread's: only [`Cohort::scope_exclusive`] releases them.
    ///
    /// Medium and large allocations (above 16 KiB) of the class are freed too, whichever
    /// thread made them: they belong to no heap.
    ///
    /// # Safety
    /// No allocation of class `life` that this call releases (small ones made by the
    /// calling thread, by a thread that has exited or through a join that has been left;
    /// large ones of any thread) is used or freed after the call, and no thread allocates or
    /// frees in class `life` while it runs.
    /// For a safe form, see [`Cohort::scope`] (any allocator, a `static` included) and
    /// [`Cohort::scope_exclusive`] (an allocator you own).
    ///
    /// # Examples
    ///
    /// ```
    /// cohort::lifetime_classes! { enum Life { Request, Long } }
    /// static A: cohort::Cohort<Life> = cohort::Cohort::new();
    /// let kept = A.malloc(64, Life::Long);
    /// for _ in 0..100 {
    ///     let _ = A.malloc(200, Life::Request); // never freed one by one
    /// }
    /// // SAFETY: nothing of `Request` made by this thread is used after this, and no other
    /// // thread uses `Request`.
    /// let r = unsafe { A.release_class(Life::Request) };
    /// assert_eq!(r.slots, 100);
    /// // SAFETY: `Long` is untouched.
    /// unsafe { A.free(kept, 64, Life::Long) };
    /// ```
    pub unsafe fn release_class(&self, life: L) -> Released {
        // SAFETY: forwarded contract.
        unsafe { self.release(lifetime::index_of(life), Whose::Caller) }
    }

    /// Releases lifetime class `life`: the allocations `whose` says (see [`Whose`]).
    ///
    /// # Safety
    /// As [`Cohort::release_class`], for the allocations `whose` names.
    pub(crate) unsafe fn release(&self, life: usize, whose: Whose) -> Released {
        let Some(pool) = self.core.pool_if_any() else {
            return Released::default();
        };
        // A batched free of a slot of the class must reach its block before the block is
        // emptied: else its late push would list a slot that may be live again.
        self.core.flush_batches_for_release();
        // SAFETY: forwarded contract.
        let out = unsafe { self.release_from(pool, life, whose) };
        // Blocks left to other heaps may be dead processes' (a shared instance): take those
        // heaps over (their blocks become the pool's) and release again. A look only when
        // something was left, so a release that left nothing makes no system call.
        if out.left_to_other_threads == 0 || crate::heap_handover::reap_dead(pool) == 0 {
            return out;
        }
        // SAFETY: as above.
        let again = unsafe { self.release_from(pool, life, whose) };
        Released {
            blocks: out.blocks + again.blocks,
            slots: out.slots + again.slots,
            left_to_other_threads: again.left_to_other_threads,
            large: out.large + again.large,
            medium: out.medium + again.medium,
        }
    }

    /// One pass of [`Cohort::release`] over `pool`.
    ///
    /// # Safety
    /// As [`Cohort::release`].
    unsafe fn release_from(&self, pool: &crate::pool::Pool, life: usize, whose: Whose) -> Released {
        // SAFETY: `find_own` gives null or the calling thread's heap.
        let me = unsafe { per_thread::find_own(self.core.instance_id()).as_ref() };
        let (my_token, my_id) = me.map_or((0, 0), |h| (h.token, h.id));
        let exclusive = whose == Whose::Everyone;
        // `Everyone` comes from `scope_exclusive`, which refuses an instance shared between
        // processes (`&mut self` excludes this process only). Should it reach one, it is
        // narrowed to this process's heaps (and what nobody holds), never another
        // process's heaps or the blocks threads without a heap allocate from.
        let everyone = exclusive && !pool.is_process_shared();
        // Whether a heap id names a heap this process holds.
        let held_here = |id: u32| {
            let record = pool.heap(id);
            // SAFETY: registered records stay mapped while the pool does.
            !record.is_null() && unsafe { (*heap::Heap::of(record)).held_here() }
        };
        // Whether a block's allocations (`b` as read once) are the caller's to release.
        let releasable = |b: &Snapshot| {
            everyone
                || match (b.owner, b.holder) {
                    (0, NO_HOLDER) => true,
                    (0, HEAPLESS) => whose == Whose::Claimed,
                    (0, id) => {
                        id == my_id || (exclusive && held_here(id)) || pool.heap_is_abandoned(id)
                    }
                    (owner, _) => {
                        owner == my_token
                            || (exclusive && held_here((owner & 0xffff) as u32))
                            || pool.owner_is_abandoned(owner)
                    }
                }
        };
        let mut r = Releasing {
            pool,
            out: Released::default(),
        };
        // Nothing below allocates: the lock is held (the allocator may be the global one).
        let mut st = pool.lock();
        // The calling thread's heads (with `exclusive`, every heap a thread holds: exclusive
        // use and the lock let us act as their owner; an exiting thread waits for the lock).
        if exclusive {
            for heap in heap::registered(pool) {
                // SAFETY: registered heaps stay mapped.
                let hp = unsafe { &*heap };
                // (In a shared instance only this process's heaps: `exclusive` says
                // nothing of other processes.)
                if hp.held_by_thread(&st) && hp.held_here() {
                    hp.release_life(life, |h, current| r.block(&mut st, h, current));
                }
            }
        } else if let Some(hp) = me {
            hp.release_life(life, |h, current| r.block(&mut st, h, current));
        }
        // The pool's lists, with what exited threads left. Blocks of threads without a heap
        // stay listed (unless `Everyone` or `Claimed`); the walk below counts them.
        let heapless = whose == Whose::Claimed || everyone;
        pool.take_life(&mut st, life, heapless, |st, h| r.block(st, h, false));
        // Medium allocations belong to no heap (like large ones): all of the class's go.
        let (medium, medium_blocks) = pool.release_medium(&mut st, life);
        r.out.medium += medium;
        r.out.blocks += medium_blocks;
        // What is left of the class: blocks on no list (full blocks of the caller, of the
        // pool, of exited threads) and other live threads' blocks.
        for h in pool.blocks_of_life(&st, life) {
            // One read of the header: other threads' blocks change under us (their counts;
            // their keys only under the lock we hold).
            let Some(b) = crate::heap::counted_snapshot(pool, h, Some(&st)) else {
                continue;
            };
            // Blocks with nothing in use are the current blocks just emptied in place (or
            // listed blocks): they stay where they are.
            if b.used == 0 {
                continue;
            }
            if releasable(&b) {
                r.block(&mut st, h, false);
            } else {
                r.out.left_to_other_threads += 1;
            }
        }
        // Runs of the region's units (large allocations inside it) likewise.
        let runs = pool.release_runs(&mut st, life);
        drop(st);
        let mut out = r.out;
        out.large += runs;
        // Large allocations belong to no heap: all of the class's go (the caller's contract
        // covers them: see `release_class`'s, and `Whose::Claimed`), cached as their frees
        // would cache them (a loop that releases its class reuses its mappings).
        // One at a time, each under the large lock, whatever it gives up unmapped after
        // (the lock is never held across a system call: other threads' large calls go on).
        let now = crate::decay::now();
        let mut at = Walk::default();
        loop {
            let step = pool.large.lock().release_next(life, at, now);
            let Some((next, evicted)) = step else {
                break;
            };
            out.large += 1;
            at = next;
            // SAFETY: what the cache gave up: mappings of no allocation (the class's are
            // dead by the caller's contract).
            unsafe { unmap_evicted(&evicted) };
        }
        out
    }

    /// Runs `f` with a handle to lifetime class `life`, then frees every allocation of the
    /// class at once: a safe form of [`Cohort::release_class`] for an allocator you own
    /// (`&mut`); on a shared one (a `static`), use [`Cohort::scope`]. Allocations made through
    /// the handle (`allocator_api2` collections) cannot outlive the scope: their type
    /// borrows it. `&mut self` keeps every other user of the allocator out meanwhile;
    /// scoped threads started inside `f` may use it, and their blocks of the class are
    /// released too, whichever heap holds them.
    ///
    /// Panics if the class has live allocations when the scope starts, small or large
    /// (they would be freed under their owners); and on an instance shared between
    /// processes, whose `&mut self` keeps out this process's other users only (another
    /// process's objects of the class would be freed: blocks pass between processes' heaps):
    /// there use [`Cohort::scope`], whose class is its own.
    ///
    /// # Examples
    ///
    /// ```
    /// use cohort::allocator_api2::vec::Vec;
    /// cohort::lifetime_classes! { enum Life { Frame } }
    /// let mut a: cohort::Cohort<Life> = cohort::Cohort::new();
    /// let n = a.scope_exclusive(Life::Frame, |_a, frame| {
    ///     let mut v = Vec::new_in(frame);
    ///     v.extend(0..1000u32);
    ///     v.len()
    /// });
    /// assert_eq!(n, 1000);
    /// assert!(a.is_empty());
    /// ```
    pub fn scope_exclusive<R>(
        &mut self,
        life: L,
        f: impl for<'s> FnOnce(&'s Self, crate::ClassHandle<'s, L>) -> R,
    ) -> R {
        self.core.assert_one_process(
            "scope_exclusive",
            "use `scope`, which allocates in a class of its own",
        );
        let live = self.live_in_class(lifetime::index_of(life));
        assert!(
            live == 0,
            "cohort: scope on lifetime class {} which has {live} live allocations",
            life.index()
        );
        let this: &Self = self;
        let r = f(this, this.handle(life));
        // SAFETY: `&mut self` excluded every other user; the closure's handles and the
        // collections built on them are gone (they borrowed the scope); scoped threads
        // have exited; raw pointers from the malloc family are the caller's to not use.
        let released = unsafe { this.release(lifetime::index_of(life), Whose::Everyone) };
        debug_assert_eq!(released.left_to_other_threads, 0);
        r
    }

    /// Live allocations of lifetime class `life`: small slots, medium and large
    /// allocations, what a release of the class frees.
    fn live_in_class(&self, life: usize) -> usize {
        let small: usize = self
            .stats()
            .heads
            .iter()
            .filter(|h| h.life == Self::reported(life))
            .map(|h| h.live)
            .sum();
        let Some(pool) = self.core.pool_if_any() else {
            return small;
        };
        let medium = pool.medium_of_life(&pool.lock_uncounted(), life).0;
        small + medium + pool.count_large_of_life(life)
    }

    /// Gives memory back to the OS: every empty block of the calling thread's heap and of the
    /// pool (blocks exited threads left included), and every empty block kept for reuse.
    /// Other live threads' empty blocks are theirs to give back (each may call `compact`).
    ///
    /// Thread safety: may run while other threads allocate. Cost: proportional to the blocks.
    /// Returns the blocks given back and the resident bytes before and after.
    ///
    /// In a region other processes use, the lists of blocks it follows (the pool's, the
    /// calling thread's heap's) are checked link by link first, under the pool lock: if
    /// another process's stray write damaged them, no block is given back (`verify`
    /// names the damage) rather than a wild address followed.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = cohort::Cohort::<()>::new();
    /// let ps: Vec<_> = (0..10_000).map(|_| a.malloc(64, ())).collect();
    /// for p in ps {
    ///     // SAFETY: allocated above with this size and class.
    ///     unsafe { a.free(p, 64, ()) };
    /// }
    /// let c = a.compact();
    /// assert!(c.resident_after <= c.resident_before);
    /// ```
    pub fn compact(&self) -> Compacted {
        let Some(pool) = self.core.pool_if_any() else {
            return Compacted::default();
        };
        // Dead processes' heaps first (a shared instance): their empty blocks go too.
        crate::heap_handover::reap_dead(pool);
        // Blocks that pending remote frees would empty are given back too.
        self.core.flush_batches();
        let resident_before = pool.resident_bytes();
        let me = per_thread::find_own(self.core.instance_id());
        let mut st = pool.lock();
        // SAFETY: `me` is null or the calling thread's own heap.
        let me = unsafe { me.as_ref() };
        // Lists another process's stray write damaged are left as they are (RED-30).
        let blocks = match crate::verify::lists_whole(pool, &st, me) {
            // Empty medium blocks, and the free pages of the others.
            true => heap::compact(me, pool, &mut st) + pool.compact_medium(&mut st),
            false => 0,
        };
        drop(st);
        // A pool other processes use maps no large allocation (they are runs of its
        // units) unless it falls back (its formatter's alone): its cache holds nothing to
        // unmap but what another process's stray write put there.
        let maps = !pool.is_process_shared() || pool.region.falls_back();
        let large_mappings = if maps {
            let cached = pool.large.lock().drain_cache();
            // SAFETY: cached large mappings belong to no allocation.
            unsafe { unmap_evicted(&cached) };
            cached.len()
        } else {
            0
        };
        let resident_after = pool.resident_bytes();
        Compacted {
            blocks,
            resident_before,
            resident_after,
            large_mappings,
        }
    }

    /// Sets what this instance keeps of the memory its program no longer uses: the cache
    /// of freed large mappings (bytes and mappings), the empty small blocks kept committed
    /// (bytes), and the longest time kept memory stays unused before it is given back (the
    /// delay adapts to the program from an eighth of it up to it; zero gives back at once).
    /// What no longer fits is given back now. The defaults are [`Retention::DEFAULT`] with
    /// what the environment changes ([`Retention::from_environment`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// cohort::lifetime_classes! { enum Life { Request } }
    /// let a = cohort::Cohort::<Life>::new();
    /// a.set_retention(cohort::Retention {
    ///     large_cache_bytes: 0,
    ///     ..cohort::Retention::DEFAULT
    /// });
    /// let p = a.malloc(1 << 20, Life::Request);
    /// assert!(!p.is_null());
    /// // SAFETY: allocated above with this size and class, not used after.
    /// unsafe { a.free(p, 1 << 20, Life::Request) };
    /// assert_eq!(a.stats().large_cached, 0);
    /// assert_eq!(a.retention().large_cache_bytes, 0);
    /// ```
    pub fn set_retention(&self, retention: Retention) {
        if let Some(pool) = self.core.pool() {
            pool.set_retention(&retention);
        }
    }

    /// What this instance keeps of unused memory now (see [`Cohort::set_retention`]);
    /// [`Retention::from_environment`] before its first allocation.
    pub fn retention(&self) -> Retention {
        match self.core.pool_if_any() {
            Some(pool) => pool.retention(),
            None => Retention::from_environment().effective(),
        }
    }

    /// The delays after which unused memory is given back now, as they adapted to the
    /// program: (cached large mappings, empty small blocks). Each lies between an eighth of
    /// [`Retention::delay`] and all of it.
    pub fn decay_delays(&self) -> (Duration, Duration) {
        let (large, empty) = self
            .core
            .pool_if_any()
            .map_or((0, 0), |pool| pool.current_delays());
        (Duration::from_millis(large), Duration::from_millis(empty))
    }

    /// True when no allocation is live: no small slot, no large allocation. A leak check
    /// at teardown. Cost: proportional to the blocks.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = cohort::Cohort::<()>::new();
    /// let p = a.malloc(10, ());
    /// assert!(!a.is_empty());
    /// // SAFETY: allocated above with this size and class.
    /// unsafe { a.free(p, 10, ()) };
    /// assert!(a.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        let s = self.stats();
        s.small.live == 0 && s.large_allocations == 0 && s.medium_allocations == 0
    }
}

/// A release under way: what it did so far.
struct Releasing<'a> {
    pool: &'a Pool,
    out: Released,
}

impl Releasing<'_> {
    /// Under the lock: releases block `h`, whose slots are all dead: emptied in place
    /// (`in_place`: a current block, which stays current), else given away.
    fn block(&mut self, st: &mut PoolState, h: &Header, in_place: bool) {
        self.out.blocks += 1;
        self.out.slots += h.live() as usize;
        if in_place {
            self.pool.reset(h);
        } else {
            self.pool.discard(st, h);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::pool::BLOCKS_WALKED;
    use crate::Cohort;
    use core::alloc::Layout;
    use std::cell::Cell;

    crate::lifetime_classes! {
        enum Life { Big, Small }
    }

    #[test]
    fn release_class_walks_only_the_class_blocks() {
        let a: Cohort<Life> = Cohort::new();
        // A block for `Big` in each of 20 size classes, two blocks for `Small`.
        let layouts: Vec<Layout> = (1..=24)
            .map(|i| Layout::from_size_align(i * 256, 8).unwrap())
            .collect();
        let big: Vec<(*mut u8, Layout)> = layouts
            .iter()
            .map(|&l| (a.alloc(l, Life::Big), l))
            .collect();
        let small = [a.malloc(64, Life::Small), a.malloc(16 * 1024, Life::Small)];
        assert!(big.iter().all(|(p, _)| !p.is_null()) && small.iter().all(|p| !p.is_null()));
        let in_use = a.stats().small.blocks;
        assert_eq!(in_use, 20 + small.len());
        BLOCKS_WALKED.with(|n| n.set(0));
        // SAFETY: nothing of `Small` is used after the call.
        let released = unsafe { a.release_class(Life::Small) };
        assert_eq!(released.slots, 2);
        let visited = BLOCKS_WALKED.with(Cell::get);
        assert!(
            visited <= small.len(),
            "release of a class of {} blocks walked {visited} blocks (of {in_use} in use)",
            small.len(),
        );
        for (p, l) in big {
            // SAFETY: live, of `Big`.
            unsafe { a.dealloc(p, l, Life::Big) };
        }
    }
}
