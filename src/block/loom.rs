//! Loom models of the block layer's lock-free structures: the remote free list, the `FULL`
//! flag that takes a block off its head and brings it back, and the blocks' `returned`
//! stacks; and the shadow cells ([`Slots`]) the models of the layers above check slot
//! payloads with. (The spin lock's model is in [`crate::sync`], the pool's in
//! `crate::pool::loom`, the hand-over of a heap's blocks when its thread exits in
//! `crate::heap_handover::loom`.)
//!
//! Run with `.ci/loom.sh` (or `RUSTFLAGS="--cfg loom" cargo test --release --lib`). Each
//! model drives the block header's own code and asserts the promise the allocator relies
//! on: no slot lost or handed out twice, a block listed exactly once, and every write made
//! before a hand-over visible after it.
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

use super::{BlockStack, Header, LocalFree, Units, FULL};
use crate::class::{class_of, BLOCK_SIZE};
use crate::sync::{model, Ordering};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use std::alloc::{alloc_zeroed, dealloc, Layout};

/// A heap token: `instance << 16 | id`.
const OWNER: u64 = 1 << 16 | 1;

/// Unit indices counted from address 0: the models' blocks are [`BLOCK_SIZE`]-aligned
/// allocations, not units of a region.
fn units() -> Units<'static> {
    // SAFETY: the models link only live `Block`s, each at a BLOCK_SIZE-aligned address.
    unsafe { Units::new(core::ptr::null_mut()) }
}

/// A block of the 16-byte size class (room for a payload word after the 4-byte link) in
/// memory of its own, with a header written by `Header::init`. It dereferences to its
/// header.
struct Block {
    base: *mut u8,
    /// The allocation the block lies in.
    memory: *mut u8,
}

// SAFETY: the block's memory is owned by the value; the header's shared fields are atomics,
// and the models touch its owner-only fields and slots only as the block protocol allows.
unsafe impl Send for Block {}
// SAFETY: as above.
unsafe impl Sync for Block {}

impl Block {
    /// Twice a block's size, so that an aligned block fits: the allocator zeroes it
    /// without touching it (an allocation aligned to the block size would be zeroed by
    /// writes, a page fault per page per model run).
    fn layout() -> Layout {
        Layout::from_size_align(2 * BLOCK_SIZE, 64).expect("block layout")
    }

    /// A block owned by `owner`, aligned to its size, in which every slot but the last `never_used` is live
    /// (handed out): `used == capacity - never_used`, empty local and remote free lists,
    /// and an empty bump window (`pop` takes a never-used slot only after `refill` moved
    /// the window on).
    fn new(owner: u64, never_used: u32) -> Block {
        let class = class_of(16, 8).expect("a 16-byte class");
        // SAFETY: the layout has a non-zero size.
        let memory = unsafe { alloc_zeroed(Self::layout()) };
        assert!(!memory.is_null(), "out of memory");
        let base = memory.wrapping_add(memory.align_offset(BLOCK_SIZE));
        // SAFETY: `base` is a fresh zeroed block-sized allocation, ours alone.
        let h = unsafe { &*Header::init(base, class, 0, owner, true) };
        let c = h.geometry();
        assert!(never_used <= c.capacity);
        // Not yet shared: Relaxed; the model's thread spawns publish it.
        let bump = c.limit - never_used * c.stride;
        h.bump.store(bump, Ordering::Relaxed);
        h.bump_end.store(bump, Ordering::Relaxed);
        h.set_used(c.capacity - never_used);
        h.take_beats();
        Block { base, memory }
    }

    /// Offset of slot `i`.
    fn slot(&self, i: u32) -> u32 {
        let c = self.geometry();
        c.first + i * c.stride
    }

    /// Owner only: the allocation fast path's steps, `Header::pop`, then the quick collect
    /// of the local free list (`Header::pop_collected`); the slot's offset.
    fn pop_slot(&self) -> Option<u32> {
        self.pop()
            .or_else(|| self.pop_collected())
            .map(|(off, _)| off)
    }

    /// Owner only: `Header::push_local` of the live slot `off`; true when the free takes
    /// the slow path.
    ///
    /// # Safety
    /// `off` is a live slot of this block.
    unsafe fn free_local(&self, off: u32) -> bool {
        // SAFETY: forwarded.
        let done = unsafe { self.push_local(self.base.add(off as usize)) };
        assert_ne!(done, LocalFree::AlreadyFree, "a double free");
        done == LocalFree::Slow
    }

    /// True when the `FULL` flag is set.
    fn is_full(&self) -> bool {
        self.remote.load(Ordering::Relaxed) & FULL != 0
    }
}

impl core::ops::Deref for Block {
    type Target = Header;
    fn deref(&self) -> &Header {
        // SAFETY: `new` wrote a header at `base`, which lives as long as `self`.
        unsafe { &*self.base.cast::<Header>() }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.memory, Self::layout()) };
    }
}

/// The bases of the blocks a `take_all` of `stack` takes, in order.
fn take_all(stack: &BlockStack) -> Vec<*mut u8> {
    stack.take_all(units()).map(Header::base).collect()
}

/// The slots a model uses, each with a shadow cell for loom (see the module docs).
pub(crate) struct Slots {
    offs: Vec<u32>,
    cells: Vec<UnsafeCell<u64>>,
}

impl Slots {
    pub(crate) fn new(offs: &[u32]) -> Slots {
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
    pub(crate) fn write(&self, block: &Header, off: u32, value: u64) {
        // SAFETY: loom checks this access to the shadow against every other one.
        self.cell(off).with_mut(|v| unsafe { *v = value });
        // SAFETY: `off` is a slot of the block of at least 16 bytes, owned by the caller (the
        // model's protocol); bytes 8..16 are past its link and aligned.
        unsafe {
            block
                .base()
                .add(off as usize + 8)
                .cast::<u64>()
                .write(value)
        };
    }

    /// Checks the slot's second word and its shadow read `value`.
    pub(crate) fn check(&self, block: &Header, off: u32, value: u64) {
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
        let block = Arc::new(Block::new(OWNER, 1));
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
            match block.pop_slot() {
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
            match block.pop_slot() {
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
    returned: &Arc<BlockStack>,
    off: u32,
) -> thread::JoinHandle<bool> {
    let (block, slots, returned) = (block.clone(), slots.clone(), returned.clone());
    thread::spawn(move || {
        slots.write(&block, off, 0xA);
        // SAFETY: the slot is live and this thread gives it up.
        let was_full = unsafe { block.push_remote(off) };
        if was_full {
            // `Pool::relist`: the owner is a registered heap, so onto its stack.
            assert_eq!(block.owner_acquire(), OWNER);
            returned.push(units(), &block);
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
        let block = Arc::new(Block::new(OWNER, 0));
        let returned = Arc::new(BlockStack::new());
        let cap = block.capacity();
        let a = block.slot(cap - 1);
        let slots = Arc::new(Slots::new(&[a]));
        slots.write(&block, a, 1);
        let remote = free_remotely(&block, &slots, &returned, a);

        // The freeing threads first: see the module docs.
        thread::yield_now();
        // The fast path's quick collect takes the remote list when the free came first.
        let quick = block.pop_slot();
        let outcome = if quick.is_some() || block.collect_remote() > 0 {
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
            assert_eq!(quick.or_else(|| block.pop_slot()), Some(a));
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
            assert_eq!(take_all(&returned), [block.base]);
            assert!(!block.is_full());
            assert_eq!(block.collect_remote(), 1);
            assert_eq!(block.pop_slot(), Some(a));
            slots.check(&block, a, 0xA);
        }
        assert_eq!(take_all(&returned), [], "listed once");
        assert_eq!(block.pop_slot(), None);
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
        let block = Arc::new(Block::new(OLD, 0));
        let a = block.slot(block.capacity() - 1);
        // Heap OLD allocated `a` and hands it over with the spawn.
        let remote = {
            let block = block.clone();
            thread::spawn(move || {
                // SAFETY: the slot is live and this thread gives it up.
                if unsafe { block.push_remote(a) } {
                    // `Pool::relist`'s load.
                    assert_eq!(block.owner_acquire(), OWNER, "stale owner");
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
        let block = Arc::new(Block::new(OWNER, 0));
        assert!(block.try_retire());
        let returned = Arc::new(BlockStack::new());
        let cap = block.capacity();
        let (a, b) = (block.slot(cap - 2), block.slot(cap - 1));
        let slots = Arc::new(Slots::new(&[a, b]));
        slots.write(&block, a, 1);
        let remote = free_remotely(&block, &slots, &returned, a);
        // The freeing thread first: see the module docs.
        thread::yield_now();
        // SAFETY: `b` is live and the owner frees it.
        let slow = unsafe { block.free_local(b) };
        assert!(slow, "the free into a full block takes the slow path");
        let cleared = block.clear_full();
        // Either way `FULL` is clear now, so the owner may collect (it lists the block, or
        // the remote free does).
        assert!(!block.is_full());
        assert_eq!(block.pop_slot(), Some(b));
        let take_a = || {
            assert_eq!(block.pop_slot(), Some(a));
            slots.check(&block, a, 0xA);
        };
        // With the local list empty the quick collect takes the remote list: `a`, when its
        // free came first.
        let took_a = match block.pop_slot() {
            Some(off) => {
                assert_eq!(off, a);
                slots.check(&block, a, 0xA);
                true
            }
            None => {
                assert_eq!(block.used(), cap, "used == live + |remote|: b back, a live");
                false
            }
        };
        let was_full = remote.join().unwrap();
        assert!(cleared != was_full, "exactly one lists the block");
        let relisted = if was_full { vec![block.base] } else { vec![] };
        assert_eq!(take_all(&returned), relisted);
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
        let blocks = Arc::new([Block::new(OWNER, 0), Block::new(OWNER, 0)]);
        // What a pusher wrote about its block before pushing it (stands for the slot it
        // freed and the header fields it touched).
        let marks = Arc::new([UnsafeCell::new(0u64), UnsafeCell::new(0u64)]);
        let stack = Arc::new(BlockStack::new());
        let pushers: Vec<_> = (0..2u32)
            .map(|u| {
                let (blocks, marks, stack) = (blocks.clone(), marks.clone(), stack.clone());
                thread::spawn(move || {
                    // SAFETY: loom checks the shadow accesses.
                    marks[u as usize].with_mut(|m| unsafe { *m = u as u64 + 1 });
                    stack.push(units(), &blocks[u as usize]);
                })
            })
            .collect();
        // The freeing threads first: see the module docs.
        thread::yield_now();
        let mut seen = Vec::new();
        let drain = |seen: &mut Vec<usize>| {
            for h in stack.take_all(units()) {
                let u = blocks
                    .iter()
                    .position(|b| b.base == h.base())
                    .expect("a block");
                assert!(!seen.contains(&u), "block {u} taken twice");
                // SAFETY: loom checks the shadow accesses.
                marks[u].with(|m| assert_eq!(unsafe { *m }, u as u64 + 1));
                seen.push(u);
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

// The models of the owner's two lists (the local free list apart from the allocation list).
mod local;
