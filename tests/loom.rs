//! Loom models of cohort's lock-free structures: the remote free list, the `FULL` flag that
//! takes a block off its head and brings it back, the blocks' `returned` stacks, the spin
//! lock, and the hand-over of a block when its heap's thread exits.
//!
//! Run with `.ci/loom.sh` (or `RUSTFLAGS="--cfg loom" cargo test --release --test loom`).
//! Each model drives the allocator's own code through `cohort::loom_api` and asserts the
//! promise the allocator relies on: no slot lost or handed out twice, a block listed exactly
//! once, and every write made before a hand-over visible after it.
//!
//! Slot bytes are plain memory, which loom does not track, so each slot of a model also has
//! a shadow `loom::cell::UnsafeCell`, written where the slot is written and read where it is
//! read: loom fails the model when an access to it does not happen after the previous one.
//!
//! Every model names the mutations of `src/` that make it fail (each was tried, then undone).
//!
//! The threads that free start first in loom's first schedule (the owner yields): loom's
//! partial-order reduction misses the opposite order for a plain load in one thread followed
//! by a load-then-CAS in the other, so without the yield it never runs a free before the
//! owner's collect.
#![cfg(loom)]

use cohort::class::class_of;
use cohort::loom_api::{Block, Lock, Stack, NONE};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

/// A heap token: `instance << 16 | id`.
const OWNER: u64 = 1 << 16 | 1;
/// The unit index a model gives its block on a `returned` stack.
const UNIT: u32 = 7;

/// Runs a model, with at most 5 preemptions unless `LOOM_MAX_PREEMPTIONS` says otherwise
/// (every model here also passes with 10).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(5);
    }
    builder.check(f);
}

/// The 16-byte size class: room for a payload word after the 4-byte link.
fn class16() -> usize {
    class_of(16, 8).expect("a 16-byte class")
}

/// The slots a model uses, each with a shadow cell for loom (see the module docs).
struct Slots {
    offs: Vec<u32>,
    cells: Vec<UnsafeCell<u64>>,
}

impl Slots {
    fn new(offs: &[u32]) -> Slots {
        Slots {
            offs: offs.to_vec(),
            cells: offs.iter().map(|_| UnsafeCell::new(0)).collect(),
        }
    }

    fn cell(&self, off: u32) -> &UnsafeCell<u64> {
        let i = self
            .offs
            .iter()
            .position(|&o| o == off)
            .expect("a slot of the model");
        &self.cells[i]
    }

    /// Writes `value` into the slot's second word (past the 4-byte link) and its shadow.
    fn write(&self, block: &Block, off: u32, value: u64) {
        // SAFETY: loom checks this access to the shadow against every other one.
        self.cell(off).with_mut(|v| unsafe { *v = value });
        // SAFETY: `off` is a 16-byte slot of the block, owned by the caller (the model's
        // protocol); bytes 8..16 are past its link and aligned.
        unsafe {
            block
                .base()
                .add(off as usize + 8)
                .cast::<u64>()
                .write(value)
        };
    }

    /// Checks the slot's second word and its shadow read `value`.
    fn check(&self, block: &Block, off: u32, value: u64) {
        // SAFETY: as in `write`.
        self.cell(off)
            .with(|v| assert_eq!(unsafe { *v }, value, "shadow of slot {off}"));
        // SAFETY: as in `write`.
        let got = unsafe { block.base().add(off as usize + 8).cast::<u64>().read() };
        assert_eq!(got, value, "payload of slot {off}");
    }
}

/// Remote free list: two threads free a slot each onto the block's remote list while the
/// owner alternates `pop` and `refill` (`Heap::alloc_slow`'s steps: the remote list, else
/// the next bump window, which holds the block's one never-used slot).
///
/// Checks: every slot comes back exactly once (none lost, none handed out twice); a
/// `refill` that finds remote frees pending takes them (it lowers `used` by at least as
/// many) rather than moving the bump window on; `used` ends at `capacity`; the payload a
/// remote thread wrote before its push reads back after the owner collected the slot.
///
/// Orderings relied on: the Release CAS of `push_remote` pairs with the Acquire swap of
/// `collect_remote`, so the slot's link and payload written before the push are visible to
/// the owner's `pop`.
///
/// Fails with: `push_remote`'s CAS Release -> Relaxed, or `collect_remote`'s swap
/// Acquire -> Relaxed (the shadow read races the remote write); `refill` moving the window
/// before it collects (the never-used slot is handed out while freed ones wait).
#[test]
fn remote_free_list() {
    model(|| {
        let block = Arc::new(Block::new(class16(), OWNER, 1));
        let cap = block.capacity();
        let (a, b, fresh) = (
            block.slot(cap - 3),
            block.slot(cap - 2),
            block.slot(cap - 1),
        );
        let slots = Arc::new(Slots::new(&[a, b, fresh]));
        // The owner allocated `a` and `b` and wrote them; the spawns hand them over.
        slots.write(&block, a, 1);
        slots.write(&block, b, 1);
        let frees: Vec<_> = [(a, 0xA), (b, 0xB)]
            .into_iter()
            .map(|(off, value)| {
                let (block, slots) = (block.clone(), slots.clone());
                thread::spawn(move || {
                    slots.write(&block, off, value);
                    // SAFETY: the slot is live and this thread gives it up.
                    let was_full = unsafe { block.push_remote(off) };
                    assert!(!was_full, "the block was never retired");
                })
            })
            .collect();

        let mut taken = Vec::new();
        let mut take = |off: u32| {
            assert!(!taken.contains(&off), "slot {off} handed out twice");
            if off == a {
                slots.check(&block, off, 0xA);
            } else if off == b {
                slots.check(&block, off, 0xB);
            } else {
                assert_eq!(off, fresh, "slot {off} was never freed");
            }
            // The new allocation writes its object.
            slots.write(&block, off, 2);
            taken.push(off);
        };
        let refill = || {
            let (before, pending) = (block.used(), block.remote_count());
            let any = block.refill();
            assert!(
                block.used() + pending <= before,
                "{pending} remote frees pending, {} collected",
                before - block.used()
            );
            any
        };
        for _ in 0..3 {
            // The freeing threads first: see the module docs.
            thread::yield_now();
            match block.pop() {
                Some(off) => take(off),
                None => {
                    refill();
                }
            }
        }
        for t in frees {
            t.join().unwrap();
        }
        loop {
            match block.pop() {
                Some(off) => take(off),
                None if !refill() => break,
                None => {}
            }
        }
        taken.sort_unstable();
        assert_eq!(taken, [a, b, fresh], "every slot back exactly once");
        assert_eq!(block.used(), cap);
        assert_eq!(block.remote_count(), 0);
    });
}

/// Spawns a thread that frees the live slot `off` of `block` (writing `0xA` into it first)
/// and, when its push reports `FULL`, relists the block (`Pool::relist`: the owner `OWNER`
/// is a registered heap, so onto its `returned` stack). Returns whether it relisted.
fn free_remotely(
    block: &Arc<Block>,
    slots: &Arc<Slots>,
    returned: &Arc<Stack>,
    off: u32,
) -> thread::JoinHandle<bool> {
    let (block, slots, returned) = (block.clone(), slots.clone(), returned.clone());
    thread::spawn(move || {
        slots.write(&block, off, 0xA);
        // SAFETY: the slot is live and this thread gives it up.
        let was_full = unsafe { block.push_remote(off) };
        if was_full {
            assert_eq!(block.owner(), OWNER);
            returned.push(UNIT, &block);
        }
        was_full
    })
}

/// What the owner did with a block that had no free slot (`Heap::alloc_slow`).
#[derive(Debug, PartialEq, Eq)]
enum Retire {
    /// A remote free was already on the list: it collected it.
    Collected,
    /// `try_retire` lost to a remote free: it collects on its next round.
    Raced,
    /// The block is `FULL` and on no list.
    Retired,
}

/// `FULL` retirement racing a remote free: the owner of a block with no free slot runs
/// `alloc_slow`'s steps (collect, else try to retire) while another thread frees a slot.
///
/// Checks: exactly one of {the owner kept the block (collected, or lost the retire race and
/// collects), the remote push returned `was_full` and relisted it} holds, so the block is
/// neither lost (`FULL` with a free slot and on no list) nor listed twice; the freed slot is
/// then handed out once, with the remote thread's payload.
///
/// Orderings relied on: the retire CAS and the push CAS are on the same word, so they are
/// ordered and exactly one sees the other; the slot's payload reaches the owner through the
/// push's Release and the collect's Acquire (also along the `returned` stack's
/// Release/Acquire when the block was relisted).
///
/// Fails with: `try_retire` as a plain `store(FULL)` (the remote free is overwritten: slot
/// lost), `push_remote` reporting `false` when it cleared `FULL` (block lost), or
/// `collect_remote`'s swap Acquire -> Relaxed (the payload read races the remote write).
#[test]
fn retire_races_remote_free() {
    model(|| {
        let block = Arc::new(Block::new(class16(), OWNER, 0));
        let returned = Arc::new(Stack::new());
        let cap = block.capacity();
        let a = block.slot(cap - 1);
        let slots = Arc::new(Slots::new(&[a]));
        slots.write(&block, a, 1);
        let remote = free_remotely(&block, &slots, &returned, a);

        // The freeing threads first: see the module docs.
        thread::yield_now();
        assert_eq!(block.pop(), None, "no free slot");
        let outcome = if block.collect_remote() > 0 {
            Retire::Collected
        } else if !block.try_retire() {
            assert_eq!(block.collect_remote(), 1, "the free that beat the retire");
            Retire::Raced
        } else {
            Retire::Retired
        };
        if outcome != Retire::Retired {
            // The block stayed current: the slot is handed out again, maybe before the
            // freeing thread ended.
            assert_eq!(block.pop(), Some(a));
            slots.check(&block, a, 0xA);
        }
        let was_full = remote.join().unwrap();
        assert_eq!(
            outcome == Retire::Retired,
            was_full,
            "exactly one side lists the block ({outcome:?}, was_full {was_full})"
        );
        if outcome == Retire::Retired {
            // `Heap::drain_returned`, then the block is current again and collects.
            assert_eq!(returned.take_all(), UNIT);
            assert_eq!(block.returned_next(), NONE);
            assert!(!block.is_full());
            assert_eq!(block.collect_remote(), 1);
            assert_eq!(block.pop(), Some(a));
            slots.check(&block, a, 0xA);
        }
        assert_eq!(returned.take_all(), NONE, "listed once");
        assert_eq!(block.pop(), None);
        assert_eq!(block.collect_remote(), 0);
        assert_eq!(block.used(), cap);
    });
}

/// A remote free into a `FULL` block reads the block's owner (`Pool::relist`) to find the
/// `returned` stack to push it on. The owner may have changed since the freeing thread got
/// its slot: the slot was allocated by a heap whose thread exited, the pool adopted the
/// block (`owner = 0`), and another heap took it (`owner = token`), all under the pool
/// lock, which the freeing thread does not take. The freeing thread must still read the
/// current owner, or it pushes the block on another heap's stack (or the pool's), and two
/// owners then use its local free list.
///
/// Ordering needed: the owner's `try_retire` must publish its `owner` store (Release) to
/// the remote push that reads `FULL` (Acquire), so that `relist`'s load sees it.
///
/// This model found the bug when `try_retire` was a Relaxed CAS and `push_remote`'s success
/// ordering was Release only ("stale owner"): nothing ordered the new owner before the
/// `FULL` flag the remote thread read. Mutation: either half of the fix (Release in
/// `try_retire`, AcqRel in `push_remote`) undone fails it again.
#[test]
fn relist_reads_current_owner() {
    const OLD: u64 = 1 << 16 | 2;
    model(|| {
        let block = Arc::new(Block::new(class16(), OLD, 0));
        let a = block.slot(block.capacity() - 1);
        // Heap OLD allocated `a` and hands it over with the spawn.
        let remote = {
            let block = block.clone();
            thread::spawn(move || {
                // SAFETY: the slot is live and this thread gives it up.
                if unsafe { block.push_remote(a) } {
                    // `Pool::relist`'s load.
                    assert_eq!(block.owner(), OWNER, "stale owner");
                }
            })
        };
        // OLD's thread exits and the pool adopts the block (owner 0); heap OWNER takes it
        // (`Pool::take_block`), fills it and retires it.
        block.set_owner(0);
        block.set_owner(OWNER);
        if block.collect_remote() == 0 {
            block.try_retire();
        }
        remote.join().unwrap();
    });
}

/// `clear_full` by the owner (a local free into a `FULL` block, `Heap::free_slow`) racing a
/// remote free into the same block.
///
/// Checks: exactly one of them clears `FULL` and lists the block; afterwards `used` counts
/// the pending remote slot (`used == live + |remote|`), and both slots come back once.
///
/// Orderings relied on: both are read-modify-writes of the one `remote` word, so exactly
/// one sees `FULL`; the payload travels as in `remote_free_list`.
///
/// Fails with: `clear_full` as a load and a separate store (both sides list the block),
/// `push_remote` keeping `FULL` in the word it writes (both "clear" it), or `push_remote`'s
/// CAS Release -> Relaxed (the payload read races the remote write).
#[test]
fn clear_full_races_remote_free() {
    model(|| {
        let block = Arc::new(Block::new(class16(), OWNER, 0));
        assert!(block.try_retire());
        let returned = Arc::new(Stack::new());
        let cap = block.capacity();
        let (a, b) = (block.slot(cap - 2), block.slot(cap - 1));
        let slots = Arc::new(Slots::new(&[a, b]));
        slots.write(&block, a, 1);
        let remote = free_remotely(&block, &slots, &returned, a);
        // The freeing thread first: see the module docs.
        thread::yield_now();
        // SAFETY: `b` is live and the owner frees it.
        let slow = unsafe { block.push_local(b) };
        assert!(slow, "the free into a full block takes the slow path");
        let cleared = block.clear_full();
        // Either way `FULL` is clear now, so the owner may collect (it lists the block, or
        // the remote free does).
        assert!(!block.is_full());
        assert_eq!(block.pop(), Some(b));
        assert_eq!(block.pop(), None);
        let take_a = || {
            assert_eq!(block.pop(), Some(a));
            slots.check(&block, a, 0xA);
        };
        let took_a = block.collect_remote() == 1;
        if took_a {
            take_a();
        } else {
            assert_eq!(block.used(), cap, "used == live + |remote|: b back, a live");
        }
        let was_full = remote.join().unwrap();
        assert!(cleared != was_full, "exactly one lists the block");
        assert_eq!(returned.take_all(), if was_full { UNIT } else { NONE });
        if !took_a {
            assert_eq!(block.remote_count(), 1, "used == live + |remote|");
            assert_eq!(block.collect_remote(), 1);
            take_a();
        }
        assert_eq!(block.used(), cap);
        assert_eq!(block.remote_count(), 0);
    });
}

/// `BlockStack`: two threads push a block each while the owner takes everything, once
/// during the pushes and once after.
///
/// Checks: every block is taken exactly once, the `returned_next` links read by the owner
/// are the ones the pushers wrote, and what a pusher wrote before its push is visible to
/// the owner that took the block.
///
/// Orderings relied on: `push`'s Release CAS pairs with `take_all`'s Acquire swap (and CAS
/// failures reload the top, so a push never links to a stale top).
///
/// Fails with: `push`'s CAS Release -> Relaxed, or `take_all`'s swap Acquire -> Relaxed.
#[test]
fn block_stack() {
    model(|| {
        let blocks = Arc::new([
            Block::new(class16(), OWNER, 0),
            Block::new(class16(), OWNER, 0),
        ]);
        // What a pusher wrote about its block before pushing it (stands for the slot it
        // freed and the header fields it touched).
        let marks = Arc::new([UnsafeCell::new(0u64), UnsafeCell::new(0u64)]);
        let stack = Arc::new(Stack::new());
        let pushers: Vec<_> = (0..2u32)
            .map(|u| {
                let (blocks, marks, stack) = (blocks.clone(), marks.clone(), stack.clone());
                thread::spawn(move || {
                    // SAFETY: loom checks the shadow accesses.
                    marks[u as usize].with_mut(|m| unsafe { *m = u as u64 + 1 });
                    stack.push(u, &blocks[u as usize]);
                })
            })
            .collect();
        // The freeing threads first: see the module docs.
        thread::yield_now();
        let mut seen = Vec::new();
        let drain = |seen: &mut Vec<u32>| {
            let mut u = stack.take_all();
            while u != NONE {
                assert!(u < 2 && !seen.contains(&u), "block {u} taken twice");
                // SAFETY: loom checks the shadow accesses.
                marks[u as usize].with(|m| assert_eq!(unsafe { *m }, u as u64 + 1));
                seen.push(u);
                u = blocks[u as usize].returned_next();
            }
        };
        drain(&mut seen);
        for t in pushers {
            t.join().unwrap();
        }
        drain(&mut seen);
        seen.sort_unstable();
        assert_eq!(seen, [0, 1], "every block taken once");
    });
}

/// The spin lock (`RawSpin` under `lock_api`): two threads increment a counter that is not
/// atomic.
///
/// Checks: mutual exclusion (loom fails on two overlapping accesses) and happens-before
/// from one holder to the next (the count ends at 2, and loom checks each access happens
/// after the previous one).
///
/// Orderings relied on: `try_lock`'s Acquire CAS pairs with `unlock`'s Release store.
///
/// Fails with: `try_lock`'s success ordering Acquire -> Relaxed, or `unlock`'s store
/// Release -> Relaxed.
#[test]
fn spin_lock() {
    model(|| {
        let lock = Arc::new(Lock::new(UnsafeCell::new(0u64)));
        let bump = |lock: &Lock<UnsafeCell<u64>>| {
            // SAFETY: loom checks the accesses.
            lock.with(|count| count.with_mut(|c| unsafe { *c += 1 }));
        };
        let other = {
            let lock = lock.clone();
            thread::spawn(move || bump(&lock))
        };
        bump(&lock);
        other.join().unwrap();
        // SAFETY: loom checks the access.
        lock.with(|count| count.with(|c| assert_eq!(unsafe { *c }, 2)));
    });
}

/// The pool's lock-guarded state in `exit_races_relist`.
#[derive(Default)]
struct PoolModel {
    /// Pool-owned blocks with free slots (`PoolState::partial`).
    partial: Vec<u32>,
    /// The heap is on the abandoned list.
    abandoned: bool,
}

/// `Pool::adopt_block`, under the lock: the pool owns the block and collects its remote
/// frees.
fn adopt(st: &mut PoolModel, unit: u32, block: &Block) {
    block.set_owner(0);
    if block.local_list_empty() {
        block.collect_remote();
    }
    assert_ne!(block.used(), 0, "the model's block has live slots");
    st.partial.push(unit);
}

/// `Pool::reclaim_abandoned` for the model's one heap, under the lock.
fn reclaim(st: &mut PoolModel, returned: &Stack, block: &Block) {
    if st.abandoned {
        let mut u = returned.take_all();
        while u != NONE {
            assert_eq!(u, UNIT);
            let next = block.returned_next();
            adopt(st, u, block);
            u = next;
        }
    }
}

/// Abandonment and adoption: a remote free into a `FULL` block relists it on its heap's
/// `returned` stack while the heap's thread exits (`Heap::thread_exit`: drain `returned`,
/// hand the listed blocks to the pool, put the heap on the abandoned list) and a third
/// thread reclaims abandoned heaps' stacks (`Pool::reclaim_abandoned` from `take_block`).
///
/// The pool and heap layers are not built under loom (they need the OS layer), so this
/// models their protocol with the same primitives: the block's header, a `Stack` for the
/// heap's `returned`, and the spin lock for the pool's state. The lists under the lock are
/// plain vectors.
///
/// Checks: however the three interleave, the block ends on the pool's partial list exactly
/// once (taken by the exit's drain, the reclaim, or a later reclaim, never lost and never
/// twice), pool-owned, with its remote free collected once, and the freed slot's payload
/// visible to the pool.
///
/// Orderings relied on: the `returned` stack's Release push / Acquire take; the remote
/// push's Release and the collect's Acquire; the spin lock's Acquire/Release between the
/// exiting thread and the reclaiming one (`abandoned`, `partial`).
///
/// Fails with: `BlockStack::take_all` returning the top without swapping it to `NONE` (the
/// block is adopted twice), or `BlockStack::push`'s CAS Release -> Relaxed (the reclaimer
/// follows a stale link and misses the block). (`collect_remote`'s Acquire is not needed
/// on this path: the stack's Release/Acquire already orders the remote free before it.)
#[test]
fn exit_races_relist() {
    model(|| {
        let block = Arc::new(Block::new(class16(), OWNER, 0));
        // The heap retired the block while its thread ran.
        assert!(block.try_retire());
        let returned = Arc::new(Stack::new());
        let pool = Arc::new(Lock::new(PoolModel::default()));
        let cap = block.capacity();
        let a = block.slot(cap - 1);
        let slots = Arc::new(Slots::new(&[a]));
        slots.write(&block, a, 1);

        let remote = free_remotely(&block, &slots, &returned, a);
        let reclaimer = {
            let (block, pool, returned) = (block.clone(), pool.clone(), returned.clone());
            thread::spawn(move || pool.with(|st| reclaim(st, &returned, &block)))
        };

        // The freeing threads first: see the module docs.
        thread::yield_now();
        // `Heap::thread_exit`: `drain_returned` onto the heap's partial list, then under
        // the lock hand every listed block to the pool and abandon the heap.
        let mut listed = Vec::new();
        let mut u = returned.take_all();
        while u != NONE {
            listed.push(u);
            u = block.returned_next();
        }
        pool.with(|st| {
            for &u in &listed {
                adopt(st, u, &block);
            }
            st.abandoned = true;
        });

        remote.join().unwrap();
        reclaimer.join().unwrap();
        // Any later `take_block` reclaims what is still on the abandoned heap's stack.
        pool.with(|st| {
            reclaim(st, &returned, &block);
            assert_eq!(st.partial, [UNIT], "the block listed exactly once");
        });
        assert_eq!(block.owner(), 0, "pool-owned");
        assert!(!block.is_full());
        assert_eq!(block.remote_count(), 0, "its remote free collected");
        assert_eq!(block.used(), cap - 1);
        // The pool allocates from it under the lock.
        pool.with(|_| {
            assert_eq!(block.pop(), Some(a));
            slots.check(&block, a, 0xA);
        });
    });
}
