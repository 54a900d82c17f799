//! The pool: what one allocator instance shares between its heaps.
//!
//! - the [`Region`] blocks come from;
//! - per head (size class × lifetime class), the **pool-owned** blocks that still have free
//!   slots: blocks abandoned by exited threads, reclaimed full blocks, blocks threads
//!   without a heap allocate from, and tiny blocks no live heap holds (a heap's tiny blocks
//!   are pool-owned but listed on the heap's tiny heads, see [`crate::heap`]);
//! - empty blocks kept committed for reuse by any class, at most `retain_blocks` (the
//!   instance's [`Retention`], by default [`RETAIN_EMPTY`]), each given back once unused for
//!   the adaptive delay (see `decay` and `empty`); the rest are decommitted and their units
//!   given back to the region at once;
//! - the heap registry (id → heap) and the heaps of exited threads.
//!
//! **Where it lives.** [`Pool`] is this process's view; what every process of a shared
//! instance sees is [`PoolShared`] and the tables after it, in the instance's state area
//! ([`place`]): position independent, since a shared region maps at another address in
//! every process. No absolute address is stored there: blocks are named by unit index,
//! heap records by [`Link`] (an offset from the state area in a shared pool, an address in
//! a private one, whose `link_base` is 0), and [`PoolState`] finds its tables at fixed
//! offsets from itself. A private pool has the same parts in a mapping of its own.
//!
//! Everything here is guarded by one lock ([`crate::sync::RawPoolLock`]: a spin lock, or
//! in a shared pool a robust process-shared mutex whose dead holder's half-done work the
//! next locker repairs, [`Pool::repair`]) and only slow paths take it. The lock
//! holder owns every pool-owned block (`owner == 0`): it alone touches their local free
//! lists. The holder never allocates through the global allocator.
//!
//! **Holders.** For `release_class`, a pool-owned block's allocations belong to its
//! [`Header::holder`]: the pool ([`NO_HOLDER`]: allocations of exited threads, released by
//! anyone), a heap (tiny blocks: released by that heap's thread, or by anyone once it has
//! exited), or [`HEAPLESS`] (threads without a heap allocated from it: no release of one
//! class frees them, only [`crate::Cohort::scope`] and the instance's drop). A heap never
//! takes a `HEAPLESS` block, so such allocations never come under a heap.
//!
//! **Emptied blocks.** A pool-owned block (or a block of an exited thread's heap) that
//! remote frees empty goes back to the empty blocks without a `compact`: the free that
//! empties it takes the lock if it is free ([`Pool::after_remote_free`], which never
//! waits), else flags the pool and the next slow path that takes a block does the work:
//! whenever the lock is free, `live(b) == 0 ⇒ emptied == 1` for every block `b` on a
//! partial list. A lock holder that changes a block's counts (adopting it) and a remote
//! free into it each look at the other's writes after a SeqCst fence, so at least one of
//! them sees the block empty.
//!
//! **Blocks of a lifetime class.** Every block in use (carved or reused, and not yet given
//! back or kept empty) is on its lifetime class's list, [`PoolState::of_life`], whoever owns
//! it: `release_class` walks that list, never another class's blocks. Blocks enter it in
//! [`Pool::take_block`] and leave it when they are given away, both under the lock.
//!
//! Invariants (under the lock): a block is on at most one list linked through its header
//! (a heap's, `partial[h]` or `retained`); a block on `partial[h]` has key `h`, `owner ==
//! 0` and holder [`NO_HOLDER`] or [`HEAPLESS`]; a block on `retained` is empty with key
//! [`EMPTY_KEY`]; `retained_count == |retained| <= retain_blocks`; `of_life[l]` = the blocks
//! with key of lifetime class `l`, each once; `Σ_l |of_life[l]| + |retained|` = the units in
//! state `BLOCK`.

use crate::block::{BlockList, BlockStack, Header, Links, Role, Units, HEAPLESS, MAGIC, NO_HOLDER};
use crate::class::{HeadIndex, BLOCK_SIZE, CLASSES};
use crate::counters::{Counter, HeadCounters};
use crate::decay::{Decay, Idle, Retention};
use crate::heap_record::HeapRecord;
use crate::label::LabelCell;
use crate::large::LargeTable;
use crate::lifetime::ScopeClaims;
use crate::medium_block::{MediumCounts, Moved, Written};
use crate::region::{Region, RegionState, BLOCK, UNIT};
use crate::sync::{fence, AtomicU32, AtomicU64, AtomicU8, Ordering};
use crate::sync::{PoolLock, RawPoolLock};
use crate::{os, tiny};
use core::ptr;
use lock_api::MutexGuard;
pub(crate) use write_seal::{WriteSeal, Writing};

mod blocks;
pub(crate) mod check;
mod empty;
mod fork_child;
mod guard;
mod heapless;
mod lists;
pub(crate) mod place;
mod registry;
mod repair;
#[cfg(not(loom))]
mod runs;
mod view;
pub(crate) mod write_seal;

pub(crate) use guard::PoolGuard;
pub(crate) use view::{AfterLeave, Leave};

#[cfg(test)]
pub(crate) use lists::BLOCKS_WALKED;

/// Empty blocks kept committed by default ([`Retention::DEFAULT`]).
pub(crate) const RETAIN_EMPTY: usize = Retention::DEFAULT.empty_block_bytes / BLOCK_SIZE;
/// Blocks of a partial list a heap taking a block looks at for one with freed slots.
const REUSE_SCAN: usize = 8;
pub(crate) use crate::block::EMPTY_KEY;
/// The most heaps (threads × instances joined at once) an instance registers; more threads
/// allocate through the pool's lock.
#[cfg(not(loom))]
pub(crate) const MAX_HEAPS: usize = 1 << 14;
/// Under loom, room for the few heaps of a model: each registry entry is an atomic the model
/// checker builds and tracks.
#[cfg(loom)]
pub(crate) const MAX_HEAPS: usize = 8;
// One unit of the region holds one block.
const _: () = assert!(BLOCK_SIZE == UNIT);

/// The pool of one allocator instance, as this process sees it: a per-process view (the
/// region's bounds here, the addresses of the tables) of the state every process of the
/// instance shares, [`PoolShared`], which it derefs to. A private instance's state is in a
/// mapping of its own; a shared one's is in the region's state area ([`place`]). The view
/// is `repr(C)` with the fields the medium cache's paths read first, and starts
/// [`place::VIEW_COLOUR`] bytes into its mapping: those fields never share the first cache
/// line of a page (nor does [`PoolShared::medium_given`], far from its state's start).
#[repr(C)]
pub(crate) struct Pool {
    pub(crate) region: Region,
    /// A named region's write seal: where every write to the state area is marked
    /// ([`write_seal`]); `None` in every other pool.
    pub(crate) write_seal: Option<WriteSeal>,
    /// [`Pool::is_process_shared`], kept in the view: the medium cache's paths read it
    /// beside the region's bounds, not in the shared state's first line.
    process_shared: bool,
    shared: *const PoolShared,
    /// Heap id → [`Link`] of its record (0: none; id 0 is never used).
    heaps: *const AtomicU64,
    /// `[next, prev]` per unit: the links of [`PoolState::of_life`] (see [`LifeLinks`]).
    life_links: *const [AtomicU32; 2],
    /// Per unit, the blocks' check generation its block was last found whole in
    /// ([`check`]).
    checks: *const AtomicU32,
    /// What a [`Link`] counts from: 0 in a private instance (a link is an address), the
    /// state area's base in a shared one (a link is an offset in it).
    link_base: usize,
    /// A shared instance's heaps: `max_heaps` slots of `heap_stride` bytes, slot `id` for
    /// heap `id` (null in a private instance, whose heaps have mappings of their own).
    heap_area: *mut u8,
    heap_stride: usize,
    /// Next pool of the process-wide list the fork handlers walk (under that list's lock).
    pub(crate) fork_next: *mut Pool,
    /// This pool's number on that list: each pool pushed takes the next (1, 2, ...; never
    /// reused in the process), so a pool made where a dropped one was is told from it.
    pub(crate) fork_serial: u64,
    /// Set in a fork child whose copy of the process lacks the region's state (caller
    /// memory advised `MADV_DONTFORK`, or `MADV_WIPEONFORK`, which reads zero): nothing of
    /// the region is read or written in this process any more ([`Pool::is_lost`]).
    lost: core::sync::atomic::AtomicBool,
    /// The state area when this view mapped it (a private instance), and its length.
    area: *mut u8,
    area_len: usize,
    /// A shared pool's references from this process: one for its instance, one per heap of
    /// it that a thread or join of this process holds (a heap on a thread's list must stay
    /// mapped until the thread lets it go). The last one released unmaps the view and the
    /// region ([`Pool::release`]).
    refs: AtomicU64,
    /// How a shared pool's region is unmapped from this process once `refs` reaches 0.
    pub(crate) leave: Option<Leave>,
    /// The region is mapped privately (a private fixed region, `Cohort::with_options`):
    /// laid out as a shared one, shared with no other process. Its lock is a spin lock,
    /// which the fork handlers take as a private pool's; a fork child keeps its thread's
    /// heaps of it, and nobody else's death is reaped ([`Pool::is_process_shared`]).
    pub(crate) private: bool,
    /// This view's per-head counters of slow-path events (see [`crate::counters`]).
    pub(crate) counters: HeadCounters,
    /// What this process writes of its plain medium runs: whether their clean pages are
    /// faulted in at allocation (`crate::medium_block`'s `written`; private regions only).
    pub(crate) medium_written: Written,
    /// The ranges free medium pages were moved into (`crate::medium`, "Moving pages";
    /// private reservations only).
    pub(crate) medium_moved: Moved,
    /// The blocks' check's bitmap ([`check`]), [`check::SCRATCH_WORDS`] words in the view's
    /// own mapping, past the view: reserved with it, used only under the pool lock. Null
    /// in a private reservation's view, whose blocks are never checked (`place::view_len`).
    check_scratch: *mut usize,
}

/// What every process of an instance shares, under its lock or atomic: position
/// independent (no absolute address), so that it may live in a region mapped at another
/// address in every process.
#[repr(C)]
pub(crate) struct PoolShared {
    /// [`place::STATE_LAYOUT`] of the build that formatted it.
    pub(crate) layout: u32,
    pub(crate) state: PoolLock<PoolState>,
    /// Number of lifetime classes.
    pub(crate) life_count: usize,
    /// The most heaps the registry holds (ids are below it).
    pub(crate) max_heaps: u32,
    /// Ids handed out so far.
    pub(crate) heap_ids: AtomicU32,
    /// The upper half of the tokens of a shared region's heaps (`SHARED_TAG | 31 random
    /// bits`, the same for every process; `PRIVATE_REGION_TAG | 30 random bits` for a region
    /// formatted in a private mapping); 0 in a private instance, whose tokens take the
    /// process's instance id instead (see [`Pool::token_prefix`]).
    pub(crate) tag: u64,
    /// Pool-owned blocks a free took out of `FULL` state.
    returned: BlockStack,
    /// Times the lock was taken (slow paths only): a measure for tests and stats.
    pub(crate) lock_count: AtomicU64,
    /// Set (1) by a remote free that may have emptied a pool-owned block while the lock
    /// was taken: the next [`Pool::take_block`] gives emptied blocks back.
    emptied: AtomicU8,
    /// The live large allocations (a separate lock: their paths never take the pool's).
    /// Always empty in a region that serves large allocations from its own units
    /// (`Backing::serves_large`: shared, file and fixed regions). In a shared pool its lock
    /// is robust, as the pool's: a process killed while it holds it (the statistics, the
    /// retention's settings and the cache's decay take it there) leaves it to the next
    /// locker instead of wedging every process. Nothing needs repair then: the table has no
    /// entry in such a region, and a setting the dead holder left half written is still a
    /// number the next `set_retention` replaces.
    pub(crate) large: PoolLock<LargeTable>,
    /// Times a locker found the lock's holder dead and repaired the pool ([`Pool::repair`]).
    pub(crate) lock_repairs: AtomicU64,
    /// Heaps of dead processes taken over (`crate::heap_handover::reap_dead`).
    pub(crate) heaps_reaped: AtomicU64,
    /// No retained block can be due to go back before this time (a hint read without the
    /// lock, so that large paths look at empty blocks only when something may be due); 0
    /// after `set_retention`, whose new delay may make something due sooner.
    decay_at: AtomicU64,
    /// `retained_count`, stored under the lock after every change, so that a heap's
    /// heartbeat (`crate::heap`'s idle module) takes the lock for the decay only when blocks
    /// are kept (a hint: read without the lock).
    kept: AtomicU32,
    /// The configured delay (ms) after which a heap's idle current blocks give their pages
    /// back (`crate::heap`'s idle module), readable without the lock.
    idle_delay: AtomicU64,
    /// A shared instance's scope claims, every process's (a private instance keeps its
    /// own in its `Cohort`).
    pub(crate) scope_claims: ScopeClaims,
    /// The pid namespace of the process that formatted a shared pool
    /// (`os::shared_mem::pid_namespace`).
    pid_ns: u64,
    /// Set (1, for good) once a process of another pid namespace wrote its process word
    /// into the region: see [`Pool::pids_compare`].
    mixed_ns: AtomicU8,
    /// A shared region's label in reports (empty when its state was formatted; unused in
    /// a private instance, whose label is the instance's).
    pub(crate) label: LabelCell,
    /// Medium blocks given away (kept empty or given back to the region), each counted
    /// under the lock before its key changes: while it stays the same, a block seen medium
    /// of a lifetime class still is. In the state, beside the heaps whose medium caches
    /// record it (`crate::medium_cache`'s lent run), so that a view attached again (or a
    /// fork child's copy) reads the count those records were taken against; read for a
    /// pool no other process uses (whose every give-away a locker of this state counts).
    pub(crate) medium_given: AtomicU64,
    /// The generation of the blocks' check ([`check`]): bumped by the first process to open
    /// a region nobody has open; a block whose mark is older is checked before its lists
    /// are followed.
    pub(crate) check_gen: AtomicU32,
    /// Blocks the lazy check found damaged and took out of use ([`check`]).
    pub(crate) quarantined: AtomicU64,
}

/// Bit 31 of a token prefix: set for the heaps of a region formatted in memory other
/// processes may map (a shared region's), never for an instance id (ids are below
/// `MAX_INSTANCES`, `1 << 30`), so no token of such a region equals one of a private
/// instance of the same process. Its tag's other 31 bits are random.
pub(crate) const SHARED_TAG: u64 = 1 << 31;

/// Bit 30 of a token prefix, with bit 31 clear: the heaps of a region laid out as a shared
/// one but formatted in a private mapping (`Cohort::with_options`, `Cohort::format_in` in
/// private memory), again never an instance id. Its tag's other 30 bits are random. The
/// remote free's quick way is tried for tokens without [`SHARED_TAG`] only (a private
/// instance's, or such a region's): a heap of a pool other processes use never batches
/// (`crate::remote`), and its remote frees skip the try at no cost. What batches is the
/// view's business ([`Pool::is_process_shared`]), not the tag's: a region attached in a
/// mapping of another kind than it was formatted in only skips or tries the quick way for
/// nothing.
pub(crate) const PRIVATE_REGION_TAG: u64 = 1 << 30;

/// A heap record's name in shared state: its address minus the pool's `link_base` (so an
/// offset in a shared instance's state area), 0 for none.
pub(crate) type Link = u64;

/// The lock-guarded part of the pool, position independent (see [`PoolShared`]): its
/// tables are found at fixed offsets from itself, in the same mapping.
pub(crate) struct PoolState {
    pub(crate) region: RegionState,
    /// Per head ([`HeadIndex`]), the pool-owned blocks with free slots: the table's offset
    /// from this state.
    partial: usize,
    /// Per lifetime class, every block of the class in use, whoever owns it and whatever
    /// list it is on (linked through [`LifeLinks`]): what `release_class` walks (the
    /// table's offset from this state).
    of_life: usize,
    /// Per lifetime class, its medium blocks (linked through their headers, see
    /// `crate::medium`): the table's offset from this state.
    medium: usize,
    /// The medium blocks' counts, summed.
    pub(crate) medium_counts: MediumCounts,
    /// Empty blocks kept committed (at most `retain_blocks`).
    retained: BlockList,
    retained_count: usize,
    /// The most empty blocks kept.
    retain_blocks: usize,
    /// When kept blocks go back: the adaptive delay, and the fewest kept in this window.
    decay: Decay,
    idle: Idle,
    /// Heaps of exited threads, linked through `HeapRecord::next_abandoned`.
    pub(crate) abandoned: Link,
}

// SAFETY: the raw pointers address mappings the pool owns or is placed on; the registry is
// atomics and the rest is reached only through the lock.
unsafe impl Send for Pool {}
// SAFETY: as above.
unsafe impl Sync for Pool {}
// SAFETY: as above.
unsafe impl Send for PoolShared {}
// SAFETY: as above.
unsafe impl Sync for PoolShared {}

impl core::ops::Deref for Pool {
    type Target = PoolShared;

    #[inline(always)]
    fn deref(&self) -> &PoolShared {
        // SAFETY: the shared state is mapped for the view's life.
        unsafe { &*self.shared }
    }
}

impl Pool {
    /// True when the pool is in a region laid out to be shared between processes (its
    /// state in the region, its tokens the region's tag).
    #[inline]
    pub(crate) fn is_shared(&self) -> bool {
        self.tag != 0
    }

    /// True when other processes may use the pool's region: a shared region not mapped
    /// privately ([`Pool::private`]). Such a pool's locks live with the other processes:
    /// the fork handlers leave them alone.
    #[inline]
    pub(crate) fn is_process_shared(&self) -> bool {
        debug_assert_eq!(self.process_shared, self.is_shared() && !self.private);
        self.process_shared
    }

    /// The upper half of the token of this pool's heap for a process whose id of the
    /// instance is `instance`: the region's tag in a shared pool (the same in every
    /// process), else `instance`.
    pub(crate) fn token_prefix(&self, instance: u64) -> u64 {
        if self.is_shared() {
            self.tag
        } else {
            instance
        }
    }

    /// Empty blocks held committed for reuse.
    pub(crate) fn retained_blocks(st: &PoolState) -> usize {
        st.retained_count
    }

    /// How the blocks' links name blocks: unit indices of the region.
    #[inline]
    pub(crate) fn units(&self) -> Units<'_> {
        // SAFETY: links name carved units, which stay mapped for the region's life.
        unsafe { Units::new(self.region.base() as *mut u8) }
    }

    /// Every head of the pool's lifetime classes.
    pub(crate) fn heads(&self) -> impl Iterator<Item = HeadIndex> {
        HeadIndex::all(self.life_count)
    }
}

#[cfg(all(loom, test))]
pub(crate) mod loom;

#[cfg(test)]
pub(crate) mod test_pool;

#[cfg(all(test, not(loom)))]
mod tests;
