//! Test-only access to the lock-free structures, for the loom models (`tests/loom.rs`).
//!
//! Built only under `cfg(loom)` and hidden from the docs: it is not part of cohort's API.
//! Every method forwards to the allocator's own code ([`crate::block`], [`crate::sync`]), so
//! the models check what the allocator runs, not a copy of it.

use crate::block::{BlockStack, Header, FULL};
use crate::class::CLASSES;
use crate::sync::{spin_lock, Ordering, SpinLock};
use std::alloc::{alloc_zeroed, dealloc, Layout};

/// "No block" in a [`Stack`] and in [`Block::returned_next`].
pub const NONE: u32 = crate::block::NONE;

/// A block in heap memory (not carved from a region) with a header written by
/// `Header::init`. Slot `i` is at offset `first + i * stride`.
pub struct Block {
    base: *mut u8,
    layout: Layout,
}

// SAFETY: the block's memory is owned by the value; the header's shared fields are atomics,
// and the models touch its owner-only fields and slots only as the block protocol allows.
unsafe impl Send for Block {}
// SAFETY: as above.
unsafe impl Sync for Block {}

impl Block {
    /// A block of size class `class` (not tiny) owned by `owner`, in which every slot but
    /// the last `never_used` is live (handed out): `used == capacity - never_used`, empty
    /// local and remote free lists, and an empty bump window (`pop` takes a never-used slot
    /// only after `refill` moved the window on).
    pub fn new(class: usize, owner: u64, never_used: u32) -> Block {
        let c = &CLASSES[class];
        assert!(!c.is_tiny() && never_used <= c.capacity);
        let layout = Layout::from_size_align(c.block_size(), 64).expect("block layout");
        // SAFETY: the layout has a non-zero size.
        let base = unsafe { alloc_zeroed(layout) };
        assert!(!base.is_null(), "out of memory");
        // SAFETY: `base` is a fresh zeroed allocation of the class's block size, ours alone.
        let h = unsafe { &*Header::init(base, class, 0, owner, true) };
        // Not yet shared: Relaxed; the model's thread spawns publish it.
        let bump = c.limit - never_used * c.stride;
        h.bump.store(bump, Ordering::Relaxed);
        h.bump_end.store(bump, Ordering::Relaxed);
        h.set_used(c.capacity - never_used);
        Block { base, layout }
    }

    fn header(&self) -> &Header {
        // SAFETY: `new` wrote a header at `base`, which lives as long as `self`.
        unsafe { &*self.base.cast::<Header>() }
    }

    /// The block's base address.
    pub fn base(&self) -> *mut u8 {
        self.base
    }

    /// Offset of slot `i`.
    pub fn slot(&self, i: u32) -> u32 {
        let c = self.header().geometry();
        c.first + i * c.stride
    }

    /// Slots in the block.
    pub fn capacity(&self) -> u32 {
        self.header().capacity()
    }

    /// Owner only: `Header::pop`; returns the slot's offset.
    pub fn pop(&self) -> Option<u32> {
        self.header().pop().map(|(off, _)| off)
    }

    /// Owner only: `Header::push_local`; returns true when the free takes the slow path.
    ///
    /// # Safety
    /// `off` is a live slot of this block.
    pub unsafe fn push_local(&self, off: u32) -> bool {
        // SAFETY: forwarded.
        let done = unsafe { self.header().push_local(self.base.add(off as usize)) };
        assert_ne!(done, crate::block::LocalFree::AlreadyFree, "a double free");
        done == crate::block::LocalFree::Slow
    }

    /// Any thread: `Header::push_remote`; true when the block was `FULL`.
    ///
    /// # Safety
    /// `off` is a live slot of this block, which the caller gives up.
    pub unsafe fn push_remote(&self, off: u32) -> bool {
        // SAFETY: forwarded.
        unsafe { self.header().push_remote(off) }
    }

    /// Owner only, with an empty local free list: `Header::collect_remote`.
    pub fn collect_remote(&self) -> u32 {
        self.header().collect_remote()
    }

    /// Owner only, when `pop` found no slot: `Header::refill` (the remote list, else the
    /// next bump window); false when the block has no free slot.
    pub fn refill(&self) -> bool {
        self.header().refill()
    }

    /// Owner only, with no free slot: `Header::try_retire` (the block's role becomes
    /// `Full`).
    pub fn try_retire(&self) -> bool {
        self.header().try_retire()
    }

    /// Owner only: `Header::clear_full`.
    pub fn clear_full(&self) -> bool {
        self.header().clear_full()
    }

    /// `used` (Relaxed: read by the owner, or after the model's threads joined).
    pub fn used(&self) -> u32 {
        self.header().used()
    }

    /// Slots on the remote free list (`Header::remote_count`).
    pub fn remote_count(&self) -> u32 {
        self.header().remote_count()
    }

    /// True when the `FULL` flag is set.
    pub fn is_full(&self) -> bool {
        self.header().remote.load(Ordering::Relaxed) & FULL != 0
    }

    /// True when the local free list is empty (what `Pool::adopt_block` tests before it
    /// collects).
    pub fn local_list_empty(&self) -> bool {
        self.header().free.load(Ordering::Relaxed) == 0
    }

    /// The owner token, read as `Pool::relist` reads it (`Header::owner_acquire`).
    pub fn owner(&self) -> u64 {
        self.header().owner_acquire()
    }

    /// Owner only: hands the block to `owner` (`Header::set_owner`).
    pub fn set_owner(&self, owner: u64) {
        self.header().set_owner(owner)
    }

    /// The block's link in a [`Stack`] (Relaxed, as `Heap::drain_returned` reads it).
    pub fn returned_next(&self) -> u32 {
        self.header().returned_next.load(Ordering::Relaxed)
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.base, self.layout) };
    }
}

/// A `BlockStack` (a heap's or the pool's `returned` stack).
pub struct Stack(BlockStack);

impl Stack {
    /// An empty stack.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Stack {
        Stack(BlockStack::new())
    }

    /// `BlockStack::push` of `block`, whose unit index is `unit`.
    pub fn push(&self, unit: u32, block: &Block) {
        self.0.push(unit, block.header());
    }

    /// `BlockStack::take_all`: the first unit, or [`NONE`].
    pub fn take_all(&self) -> u32 {
        self.0.take_all()
    }
}

/// The allocator's [`SpinLock`].
pub struct Lock<T>(SpinLock<T>);

impl<T> Lock<T> {
    /// A lock around `value`.
    pub fn new(value: T) -> Lock<T> {
        Lock(spin_lock(value))
    }

    /// Runs `f` with the lock held.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.0.lock())
    }
}
