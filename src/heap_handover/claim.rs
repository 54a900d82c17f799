//! Out of memory, what live heaps keep that another thread may take: a heap's blocks that
//! other threads' frees emptied while it was `FULL` (on its `returned` stack), and the
//! medium runs its cache keeps. Their holder gives them back at its next slow path, its
//! `compact`, a release or its exit; a holder that idles would keep them from every other
//! thread and join of a full region. A **claimer** (a thread whose allocation found the
//! region full) takes them from every live heap of the pool, under the pool lock, without
//! waiting for any holder and without a step on the holders' fast paths:
//!
//! - `returned`: taken whole with one swap (as the holder's drain takes it); a block whose
//!   every slot other threads freed since its retire goes to the pool as an empty block,
//!   the others back on the stack before the lock is released
//!   ([`Pool::claim_returned`](crate::pool::Pool::claim_returned));
//! - the medium cache: flushed once its guard is claimed (`MediumCache::claim`); a holder
//!   inside its lock-free medium path keeps it (one compare-and-swap each, neither waits).
//!
//! Not claimed: what a heap lists on its heads (its current blocks, its partial lists),
//! which only its holder reads and writes, without a lock: a current block emptied by
//! other threads' frees, or a listed one, comes back at the holder's next slow path,
//! `compact`, release or exit, as before.
//!
//! Only in a pool no other process uses. In a pool shared between processes the heaps of
//! other processes are theirs: a claimer killed between its take of a stack and its
//! push-back would lose the blocks it held (no repair finds a block a live heap owns that
//! is on none of its lists), and a cache guard it held would stay claimed.
//!
//! Invariants, with the pool lock held by no claimer at the end of a claim: every block a
//! live heap owns is current, listed, `FULL` or on its `returned` stack, as before (a
//! claimer holds blocks off the stack only while it holds the lock); `guard = CLAIMED ⇒`
//! the pool lock is held.

use crate::heap::registered;
use crate::heap_record::HeapState;
use crate::pool::Pool;

/// The claim (see the module docs): takes from every live heap of `pool` its emptied
/// returned blocks and its medium cache's runs, and gives back the medium blocks that
/// empties. Returns how many blocks and runs it took (0: nothing to try again for). Call it
/// without the pool lock, outside the calling thread's heap paths (its own heap is claimed
/// from too: its cache's guard must be free).
pub(crate) fn claim_idle(pool: &Pool) -> usize {
    if pool.is_process_shared() {
        return 0;
    }
    let mut st = pool.lock();
    let (mut blocks, mut runs) = (0, 0);
    for heap in registered(pool) {
        // SAFETY: the registered heaps of a pool no other process uses stay mapped for its
        // life.
        let hp = unsafe { &*heap };
        // A heap that is leaving waits for the lock we hold, and then takes its own
        // stack and flushes its own cache; an abandoned one's blocks are the pool's
        // (`Pool::reclaim_abandoned`), its cache flushed at its leave.
        if hp.state() != HeapState::Live {
            continue;
        }
        blocks += pool.claim_returned(&mut st, &hp.record);
        if let Some(_claimed) = hp.medium.claim() {
            runs += pool.flush_medium_cache(&mut st, &hp.medium);
        }
    }
    if runs > 0 {
        // Medium blocks the freed runs emptied go back: small requests need whole blocks.
        blocks += pool.compact_medium(&mut st);
    }
    blocks + runs
}

#[cfg(test)]
mod tests {
    use super::claim_idle;
    use crate::block::header_of;
    use crate::{Cohort, RegionOptions};
    use std::sync::mpsc;

    const MIB: usize = 1 << 20;

    /// Objects as `(address, size)`.
    type Objects = Vec<(usize, usize)>;

    /// [`idle_owner`]'s objects, the sender that hands them back, and its thread.
    type IdleOwner<'a> = (
        Objects,
        mpsc::Sender<Objects>,
        std::thread::ScopedJoinHandle<'a, ()>,
    );

    /// An owner thread of `c` runs `setup` (its objects: `(address, size)`), sends them,
    /// and waits (idle, calling nothing) until told to free what it was sent back, then
    /// frees it and exits. Returns the objects, a sender to hand them back, and the thread.
    fn idle_owner<'a>(
        s: &'a std::thread::Scope<'a, '_>,
        c: &'a Cohort<()>,
        setup: impl FnOnce() -> Objects + Send + 'a,
    ) -> IdleOwner<'a> {
        let (objects_tx, objects) = mpsc::channel();
        let (back, back_rx) = mpsc::channel::<Objects>();
        let owner = s.spawn(move || {
            objects_tx.send(setup()).unwrap();
            for (p, size) in back_rx.recv().unwrap() {
                // SAFETY: live objects of `c`, freed once.
                unsafe { c.free(p as *mut u8, size, ()) };
            }
        });
        (objects.recv().unwrap(), back, owner)
    }

    /// Frees `objects` of `c` from a thread of its own (remote frees), which then exits
    /// (its batch pushed).
    fn free_remotely(c: &Cohort<()>, objects: &[(usize, usize)]) {
        std::thread::scope(|s| {
            s.spawn(|| {
                for &(p, size) in objects {
                    // SAFETY: live objects of `c`, handed over, freed once.
                    unsafe { c.free(p as *mut u8, size, ()) };
                }
            });
        });
    }

    /// An idle owner's two retired blocks: one whose every slot another thread freed, one
    /// whose last slot its owner freed itself. A claim gives the first to the pool and
    /// leaves the second (its owner wrote to it since the retire), which stays the owner's.
    #[test]
    fn a_claim_takes_the_blocks_other_threads_emptied_and_leaves_the_others() {
        let c = Cohort::<()>::with_options(&RegionOptions::new(16 * MIB)).expect("fixed");
        std::thread::scope(|s| {
            // Three blocks' worth of 64-byte slots: two retired FULL, one current.
            let (objects, back, owner) = idle_owner(s, &c, || {
                let first = c.malloc(64, ());
                // SAFETY: a slot of a live block.
                let per_block = unsafe { &*header_of(first) }.capacity() as usize;
                let mut v = vec![(first as usize, 64)];
                v.extend((1..3 * per_block).map(|_| (c.malloc(64, ()) as usize, 64)));
                v
            });
            let block = |p: usize| header_of(p as *mut u8) as usize;
            let blocks: Vec<usize> = objects.iter().map(|&(p, _)| block(p)).collect();
            let (b1, b2) = (blocks[0], blocks[objects.len() / 3 + 1]);
            assert_ne!(b1, b2);
            let of = |b: usize| -> Vec<(usize, usize)> {
                objects
                    .iter()
                    .copied()
                    .filter(|&(p, _)| block(p) == b)
                    .collect()
            };
            let (in_b1, mut in_b2) = (of(b1), of(b2));
            // The owner keeps the first slot of b2 (freed locally, later).
            let kept = in_b2.remove(0);
            free_remotely(&c, &in_b1);
            free_remotely(&c, &in_b2);
            // A freeing thread pushes its batch at its exit, whose thread-local destructors
            // may still run when its scope has returned: wait until b1 has every slot back.
            // SAFETY: b1 is a carved block of the region, in use.
            let h1 = unsafe { &*(b1 as *const crate::block::Header) };
            while !h1.all_freed_remotely() {
                std::thread::yield_now();
            }
            let pool = c.core.pool().unwrap();
            let given = claim_idle(pool);
            // SAFETY: b2 is a carved block of the region, in use.
            let h2 = unsafe { &*(b2 as *const crate::block::Header) };
            assert_eq!(given, 1, "b1 given, b2 (a live slot) left");
            assert_ne!(h2.owner(), 0, "b2 stays its owner's");
            // Again: nothing more to take.
            assert_eq!(claim_idle(pool), 0);
            let rest: Vec<(usize, usize)> = objects
                .iter()
                .copied()
                .filter(|&(p, _)| block(p) != b1 && block(p) != b2)
                .chain([kept])
                .collect();
            back.send(rest).unwrap();
            owner.join().unwrap();
        });
        assert!(c.is_empty(), "{:?}", c.stats());
        // SAFETY: no other thread calls it.
        unsafe { c.verify() }.expect("consistent");
    }

    /// An idle owner's medium cache holds the runs it freed; a claim flushes it, and the
    /// owner's next medium pair goes on (through the pool, then its cache again). While the
    /// owner is inside its cache's guard, a claim leaves the cache alone.
    #[test]
    fn a_claim_flushes_an_idle_owners_medium_cache_unless_its_owner_is_inside() {
        let c = Cohort::<()>::with_options(&RegionOptions::new(16 * MIB)).expect("fixed");
        let pool = c.core.pool().unwrap();
        let held = || pool.medium_held(&pool.lock(), None).0;
        let instance = c.core.instance_id();
        std::thread::scope(|s| {
            let (go_tx, go) = mpsc::channel::<bool>();
            let (ready_tx, ready) = mpsc::channel::<()>();
            let c = &c;
            let owner = s.spawn(move || {
                let runs: Vec<_> = (0..8).map(|_| c.malloc(32768, ())).collect();
                for &p in &runs {
                    // SAFETY: allocated above, freed once (into the cache).
                    unsafe { c.free(p, 32768, ()) };
                }
                ready_tx.send(()).unwrap();
                while let Ok(inside) = go.recv() {
                    if inside {
                        let heap = crate::per_thread::find_own(instance);
                        // SAFETY: the thread's own heap, live while it runs.
                        let guard = unsafe { &*heap }.medium.enter();
                        assert!(guard.is_some(), "the guard is free");
                        ready_tx.send(()).unwrap();
                        // Held until told to go on.
                        let _ = go.recv();
                        drop(guard);
                        ready_tx.send(()).unwrap();
                    } else {
                        let p = c.malloc(32768, ());
                        assert!(!p.is_null());
                        // SAFETY: allocated above, freed once.
                        unsafe { c.free(p, 32768, ()) };
                        ready_tx.send(()).unwrap();
                    }
                }
            });
            ready.recv().unwrap();
            assert_eq!(held(), 8, "the owner's cache holds its runs");
            // The owner inside its guard: the claim leaves the cache.
            go_tx.send(true).unwrap();
            ready.recv().unwrap();
            assert_eq!(
                claim_idle(pool),
                0,
                "nothing taken while the owner is inside"
            );
            assert_eq!(held(), 8);
            go_tx.send(true).unwrap(); // (the `go.recv()` inside)
            ready.recv().unwrap();
            // Idle: the claim flushes the cache.
            assert!(claim_idle(pool) >= 8, "the eight runs");
            assert_eq!(held(), 0, "the cache flushed");
            go_tx.send(false).unwrap();
            ready.recv().unwrap();
            assert_eq!(held(), 1, "the owner's cache in use again");
            drop(go_tx);
            owner.join().unwrap();
        });
        assert!(c.is_empty(), "{:?}", c.stats());
    }

    /// A pool other processes may use is never claimed from (see the module docs).
    #[test]
    fn a_pool_shared_between_processes_is_not_claimed_from() {
        let c = Cohort::<()>::shared_anonymous(16 * MIB).expect("shared");
        let p = c.malloc(32768, ());
        // SAFETY: allocated above, freed once (into the cache).
        unsafe { c.free(p, 32768, ()) };
        let pool = c.core.pool().unwrap();
        assert_eq!(pool.medium_held(&pool.lock(), None).0, 1);
        assert_eq!(claim_idle(pool), 0);
        assert_eq!(pool.medium_held(&pool.lock(), None).0, 1, "kept");
    }
}
