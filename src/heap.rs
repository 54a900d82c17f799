//! Heaps: what one thread owns in one allocator instance, and where the fast paths run.
//!
//! A heap has, per head (size class × lifetime class), a **current** block the fast paths
//! allocate from, and a list of other blocks it owns that have free slots (`partial`).
//! Blocks with no free slot are on no list: they are `FULL` (see [`crate::block`]) and the
//! first free into one brings it back, through the heap's `returned` stack when the free
//! came from another thread.
//!
//! Invariants, for every block `b` with `b.owner == heap.token`:
//! `b` is the current block of its head (role `Current`), xor on its head's partial list
//! (role `Listed`, not `FULL`), xor `FULL` (role `Full`) or on `returned` (role `Full`, or
//! `Listed` when a local free came after the remote one that relisted it), and on no list
//! (or, while another thread's claim holds the pool lock, in that claimer's hands:
//! `crate::heap_handover`'s claim gives it to the pool or pushes it back before it
//! unlocks). Only the owning thread reads or writes a heap's heads; other threads touch
//! only `returned` and `state`, and, under the pool lock, the medium cache whose guard
//! they claimed.
//!
//! **Tiny heads.** The heads of the tiny classes (1- and 2-byte slots, see [`crate::tiny`])
//! have no current block; their partial lists hold the heap's tiny blocks with a free slot.
//! Those blocks are pool-owned (`owner == 0`) with the heap's id as their holder, so that
//! releasing a lifetime class knows whose they are; they are served and freed under the
//! pool lock, and a heap's tiny heads are read and written only under that lock, by any
//! thread (a free lists a block on its holder's head again).
//!
//! Life cycle ([`crate::heap_handover`]): a thread joins a heap on its first allocation in
//! an instance (adopting the heap of an exited thread when there is one). When the thread
//! exits, its heap hands its current and partial blocks to the pool, keeps its `FULL` blocks
//! (they come back through `returned`) and waits on the pool's abandoned list for the next
//! thread.

use crate::block::{BlockList, Header, LocalFree, Role};
use crate::class::{HeadIndex, CLASS_COUNT};
use crate::heap_record::{HeapRecord, HeapState};
use crate::medium_cache::MediumCache;
use crate::os;
use crate::pool::check::Trust;
use crate::pool::{Pool, PoolState};
use crate::remote::RemoteBatch;
use crate::sync::Ordering;
use crate::tiny;
use core::ops::Deref;
use core::ptr;

mod cursor;
#[cfg(all(test, not(loom)))]
pub(crate) mod fork_mid_write;
mod idle;
mod slow;
pub(crate) use cursor::{allocation_first, counted_snapshot, Cursors, HeapHead, Row};
pub(crate) use slow::compact;

/// A heap. Its heads follow it in the same mapping: first a [`Row`] per lifetime class
/// (the current block of every size class and its allocation cursor, see [`cursor`]), then
/// the partial list of every head, indexed by `life * CLASS_COUNT + class`.
///
/// Its first field is its [`HeapRecord`], what other threads may touch of it (token, state,
/// `returned`, abandoned link, tiny heads): the pool's registry and abandoned list hold
/// pointers to records, which [`Heap::of`] turns back into heaps. A heap reads its record's
/// fields as its own (`Deref`).
///
/// In a shared pool the heap lives in the region's state area (its slot `id`, see
/// `crate::pool::place`), where other processes read its record. The fields after the
/// record and the current blocks are its holder's: `pool` and `thread_next` are addresses
/// in the holder process, the current blocks addresses in the holder's mapping of the
/// region; only the holder uses them, another process reads the current blocks through
/// [`Heap::current_in`], and whoever takes the heap over rewrites them
/// ([`Heap::take_over`]). Every other link of a heap is an offset.
#[repr(C)]
pub(crate) struct Heap {
    pub(crate) record: HeapRecord,
    /// The instance the heap belongs to (never reused, so a stale heap never matches).
    pub(crate) instance: u64,
    /// The heap's index in its pool's registry.
    pub(crate) id: u32,
    /// The concurrency group it was joined with
    /// ([`THREAD_GROUP`](crate::heap_handover::THREAD_GROUP) for thread heaps).
    pub(crate) group: usize,
    pool: *const Pool,
    /// Next heap of the same thread (other instances).
    pub(crate) thread_next: *mut Heap,
    mapped_len: usize,
    /// The heap's frees into blocks of other heaps, pending ([`crate::remote`]).
    pub(crate) remote: RemoteBatch,
    /// Freed medium runs kept for the heap's next medium requests (`crate::medium_cache`).
    pub(crate) medium: MediumCache,
    /// The holder's looks at its idle current blocks ([`idle`]): when the next one is due.
    pub(crate) idle: idle::NextLook,
}

impl Deref for Heap {
    type Target = HeapRecord;

    #[inline(always)]
    fn deref(&self) -> &HeapRecord {
        &self.record
    }
}

/// Every heap registered in `pool`.
pub(crate) fn registered(pool: &Pool) -> impl Iterator<Item = *mut Heap> + '_ {
    pool.registered_heaps().map(Heap::of)
}

/// The block of every head that has none: `pop` on it always fails, so the fast path needs
/// no separate test for "no block". Never written. (Read it through [`empty_block`].)
#[cfg(not(loom))]
pub(crate) static EMPTY_BLOCK: Header = Header::sentinel();

// Under loom a header's atomics belong to one execution of a model, so the sentinel is built
// once per execution (no `static` can hold one).
#[cfg(loom)]
loom::lazy_static! {
    pub(crate) static ref EMPTY_BLOCK: Header = Header::sentinel();
}

/// [`EMPTY_BLOCK`]: the address every head without a block holds.
#[inline(always)]
pub(crate) fn empty_block() -> &'static Header {
    &EMPTY_BLOCK
}

/// The rows of the heap, one per lifetime class, after the heap.
#[inline(always)]
fn rows(heap: *const Heap) -> *mut Row {
    heap.cast::<u8>()
        .wrapping_add(size_of::<Heap>())
        .cast::<Row>()
        .cast_mut()
}

/// The row of lifetime class `life`: `current_row(heap, life).current[class]` is
/// `current_block(heap, class, life)` for as long as the heap lives (the thread-local
/// slots of [`crate::per_thread`] keep it).
///
/// # Safety
/// `heap` is a live heap and `life` is below its instance's lifetime-class count.
#[inline(always)]
pub(crate) unsafe fn current_row(heap: *const Heap, life: usize) -> *const Row {
    // SAFETY: in bounds by the caller's guarantee.
    unsafe { rows(heap).add(life) }
}

/// The current block of (class, life).
///
/// # Safety
/// `heap` is a live heap and `life * CLASS_COUNT + class` is below its head count.
#[inline(always)]
pub(crate) unsafe fn current_block(heap: *const Heap, class: usize, life: usize) -> *const Header {
    // SAFETY: in bounds by the caller's guarantee.
    unsafe { (*current_row(heap, life)).current[class].load(Ordering::Relaxed) }
}

/// Head `i` of a heap with `heads` heads.
///
/// # Safety
/// `heap` is a live heap the calling thread owns, `i < heads`, and no other reference to
/// that head is alive.
#[inline]
pub(crate) unsafe fn head_at<'a>(heap: *const Heap, heads: usize, i: usize) -> HeapHead<'a> {
    debug_assert!(i < heads && heads.is_multiple_of(CLASS_COUNT));
    // SAFETY: forwarded.
    unsafe { head_of(heap, heads / CLASS_COUNT, i % CLASS_COUNT, i / CLASS_COUNT) }
}

/// Head (class, life) of a heap with `life_count` lifetime classes: [`head_at`] with no
/// division.
///
/// # Safety
/// As [`head_at`], for head `life * CLASS_COUNT + class`.
#[inline]
unsafe fn head_of<'a>(
    heap: *const Heap,
    life_count: usize,
    class: usize,
    life: usize,
) -> HeapHead<'a> {
    debug_assert!(class < CLASS_COUNT && life < life_count);
    // SAFETY: the rows and the partial lists hold `life_count * CLASS_COUNT` entries;
    // exclusivity is the caller's.
    unsafe {
        let row = &*rows(heap).add(life);
        let partial = &mut *rows(heap)
            .add(life_count)
            .cast::<BlockList>()
            .add(HeadIndex::new(class, life).get());
        HeapHead {
            current: &row.current[class],
            cursors: &row.cursors,
            class,
            partial,
        }
    }
}

impl Heap {
    /// The heap whose record is `record` (every registered or abandoned record is a heap's
    /// first field).
    #[inline]
    pub(crate) fn of(record: *mut HeapRecord) -> *mut Heap {
        record.cast()
    }

    /// The bytes of a heap and its heads, for `life_count` lifetime classes.
    pub(crate) fn bytes(life_count: usize) -> usize {
        size_of::<Heap>()
            + life_count * size_of::<Row>()
            + HeadIndex::count(life_count) * size_of::<BlockList>()
    }

    /// Maps (or, in a shared pool, places in its heap slot) and registers a new heap. Null
    /// when the OS refuses or the registry is full.
    pub(crate) fn create(pool: &Pool, instance: u64, group: usize) -> *mut Heap {
        let heads_len = HeadIndex::count(pool.life_count);
        let Some(len) = os::page_round(Self::bytes(pool.life_count)) else {
            return ptr::null_mut();
        };
        // The id first: with the registry full, a thread without a heap allocates through
        // the pool on every call, and must not map and unmap a heap each time. (An id whose
        // mapping the OS then refuses stays unused.)
        let id = pool.reserve_id();
        if id == 0 {
            return ptr::null_mut();
        }
        let slot = pool.heap_slot(id, Self::bytes(pool.life_count));
        let (heap, mapped_len) = if slot.is_null() {
            (os::map(len, os::MIN_PAGE).cast::<Heap>(), len)
        } else {
            (slot.cast::<Heap>(), 0)
        };
        if heap.is_null() {
            return heap;
        }
        #[cfg(test)]
        counts::HEAPS_MAPPED_HERE.with(|n| n.set(n.get() + 1));
        // SAFETY: the mapping holds the heap and its heads, and is ours alone until
        // registered.
        unsafe {
            ptr::write(
                heap,
                Heap {
                    record: HeapRecord::new(
                        pool.token_prefix(instance) << 16 | id as u64,
                        size_of::<Heap>() + pool.life_count * size_of::<Row>(),
                    ),
                    instance,
                    id,
                    group,
                    pool,
                    thread_next: ptr::null_mut(),
                    mapped_len,
                    remote: RemoteBatch::new(),
                    medium: MediumCache::new(),
                    idle: idle::NextLook::new(),
                },
            );
            // No current block, and empty cursors: a fresh mapping reads zero, a heap slot
            // of a shared region may hold an earlier heap's.
            for life in 0..pool.life_count {
                Cursors::build(current_row(heap, life).cast_mut());
                let row = &*current_row(heap, life);
                if mapped_len == 0 {
                    row.cursors.clear();
                }
                row.set_no_current(empty_block());
            }
            for i in 0..heads_len {
                *head_at(heap, heads_len, i).partial = BlockList::new();
            }
            (*heap).set_holder(pool);
        }
        Self::register(pool, heap, id);
        heap
    }

    /// Registers the fresh heap `heap` under `id`. In a pool no other process uses, under
    /// the pool's lock, which a fork's `prepare` handler holds from its walk of the
    /// registered heaps (it takes their batches of remote frees) to the `parent` or `child`
    /// handler: a heap is registered before that walk, or after the fork (its thread waits
    /// for the lock meanwhile), or inside the fork by the forking thread itself (a
    /// program's fork handler's first allocation, which enters the lock the fork holds),
    /// whose batch is taken for the fork here, as the walk would have. So while a fork is
    /// prepared, every registered heap's batch is held (a heap registered after the walk
    /// without it left its batch to a thread that may be inside it when the process is
    /// copied: the child's flush of it waited for ever).
    fn register(pool: &Pool, heap: *mut Heap, id: u32) {
        // SAFETY: fresh, and ours alone until registered.
        let record = unsafe { ptr::addr_of_mut!((*heap).record) };
        if pool.is_process_shared() {
            pool.publish(id, record);
            return;
        }
        let _st = pool.lock();
        // Inside its own fork exactly when this thread entered the lock as held for it.
        // SAFETY: `raw` only to read the state of the lock this thread holds.
        #[cfg(not(loom))]
        if unsafe { pool.state.raw() }.is_entered_for_fork() {
            // SAFETY: as above; the holder is the calling thread, in no call of the batch.
            unsafe { (*heap).remote.hold_for_fork(true) };
        }
        pool.publish(id, record);
    }

    pub(crate) fn heads(&self) -> usize {
        HeadIndex::count(self.pool().life_count)
    }

    /// The head of (class, life).
    ///
    /// # Safety
    /// The calling thread owns the heap; class < CLASS_COUNT, life < life_count; no other
    /// reference to the head is alive.
    pub(super) unsafe fn head(&self, class: usize, life: usize) -> HeapHead<'_> {
        // SAFETY: forwarded.
        unsafe { head_of(self, self.pool().life_count, class, life) }
    }

    pub(crate) fn pool(&self) -> &Pool {
        // SAFETY: a heap never outlives its pool while it is in use (orphaned heaps are
        // only released, never used).
        unsafe { &*self.pool }
    }

    /// Every block this heap owns that is on one of its heads, with `true` for the current
    /// blocks and `false` for the partial ones, as `pool` (the caller's view of the heap's
    /// pool: the heap may be another process's) sees them.
    #[cfg(all(loom, test))]
    pub(crate) fn for_each_listed(&self, pool: &Pool, mut f: impl FnMut(&Header, bool)) {
        self.for_each_head(pool, |current, partial| {
            if let Some(h) = current {
                f(h, true);
            }
            for h in partial.iter(pool.units()) {
                f(h, false);
            }
        });
    }

    /// Every head's current block (as [`Heap::current_in`] reads it) and partial list,
    /// as `pool` sees them.
    pub(crate) fn for_each_head(
        &self,
        pool: &Pool,
        mut f: impl FnMut(Option<&Header>, &BlockList),
    ) {
        let heads = HeadIndex::count(pool.life_count);
        for i in pool.heads() {
            // SAFETY: i is below the head count; the head is only read here.
            let head = unsafe { head_at(self, heads, i.get()) };
            f(self.current_in(pool, head.current()), head.partial);
        }
    }

    /// Owner only: reads the cursor of (class, life) from its current block's header again,
    /// after a model's fixture wrote the header's allocation state directly.
    #[cfg(all(loom, test))]
    pub(crate) fn reload_cursor(&self, class: usize, life: usize) {
        // SAFETY: the owner, with a head of this heap; no other reference to it is alive.
        unsafe { self.head(class, life) }.load();
    }

    /// With the heap kept still (verify's contract: no thread allocates meanwhile): writes
    /// every head's cursor to its current block, if the heap still owns it, so that the
    /// headers are the truth (see [`Cursors`]); the cursors stay as they are, agreeing.
    pub(crate) fn sync_cursors(&self, pool: &Pool) {
        let heads = HeadIndex::count(pool.life_count);
        for i in pool.heads() {
            // SAFETY: i is below the head count; the heap is kept still (caller).
            let head = unsafe { head_at(self, heads, i.get()) };
            let current = self.current_in(pool, head.current());
            if let Some(h) = current.filter(|h| h.owner() == self.token) {
                head.cursors.sync(head.class, h);
            }
        }
    }

    /// The block a current-block entry of this heap names, seen through `pool` (the
    /// caller's view): the entry is an address in the holder's mapping, read relative to
    /// the holder's base (`HeapRecord::holder_base`; in a private pool, or for the holder,
    /// the caller's own base). `None` for the empty block, or an entry that names no unit
    /// of the region (the empty block of another process).
    pub(crate) fn current_in<'p>(
        &self,
        pool: &'p Pool,
        current: *const Header,
    ) -> Option<&'p Header> {
        if ptr::eq(current, empty_block()) {
            return None;
        }
        let from = if pool.is_shared() {
            self.holder_base.load(Ordering::Relaxed) as usize
        } else {
            pool.region.base()
        };
        let off = (current as usize).wrapping_sub(from);
        if off >= pool.region.len() || off % crate::region::UNIT != 0 {
            return None;
        }
        // SAFETY: a unit of the region, mapped for the view's life.
        Some(unsafe { &*((pool.region.base() + off) as *const Header) })
    }

    /// Under the pool lock, with exclusive use of the instance: true when a thread (or
    /// join) still holds the heap, so the caller may act as its owner until it unlocks.
    /// Such a heap is LIVE (its owner does not use the instance meanwhile) or EXITING (its
    /// owner waits for the lock and has not touched the heap since: see `abandon`); an
    /// ABANDONED heap is the pool's, an ORPHANED one cannot be while the instance lives.
    /// Nothing waits here: a wait under the lock for an EXITING heap would never end, since
    /// its thread needs the lock to finish.
    pub(crate) fn held_by_thread(&self, _locked: &PoolState) -> bool {
        matches!(self.state(), HeapState::Live | HeapState::Exiting)
    }

    /// Unmaps a heap nobody references any more (a heap in a shared pool's heap area has
    /// no mapping of its own: nothing to do).
    ///
    /// # Safety
    /// `heap` is a heap no thread, join, list or registry of a live pool reaches.
    pub(crate) unsafe fn unmap(heap: *mut Heap) {
        // SAFETY: the caller's guarantee; the length is read before the unmap.
        let len = unsafe { (*heap).mapped_len };
        if len == 0 {
            return;
        }
        #[cfg(test)]
        counts::HEAPS_UNMAPPED_HERE.with(|n| n.set(n.get() + 1));
        // SAFETY: as above.
        unsafe { os::unmap(heap.cast(), len) };
    }

    /// True when this process holds the heap (always in a private pool, whose heaps have
    /// no holder word). A fork child inherits references to its parent's heaps of a shared
    /// pool (an explicit join made before the fork): they are not its own. Reads the
    /// record only (the pool of an orphaned heap is gone).
    pub(crate) fn held_here(&self) -> bool {
        let holder = self.holder.load(Ordering::Acquire);
        holder == 0 || os::shared_mem::same_process(holder, os::shared_mem::process_word())
    }

    /// In a shared pool: this process holds the heap from now on (see
    /// `HeapRecord::holder`), its current blocks read relative to its base.
    fn set_holder(&self, pool: &Pool) {
        if pool.is_shared() {
            pool.note_namespace();
            self.holder_base
                .store(pool.region.base() as u64, Ordering::Relaxed);
            self.holder
                .store(os::shared_mem::process_word(), Ordering::Release);
        }
    }

    /// A thread or join of `instance` (this process's id of the pool's instance) takes the
    /// heap, off the abandoned list, under the pool lock: the holder's fields (`pool`,
    /// `instance`, `group`, `thread_next`, the current blocks, which hold addresses in the
    /// holder's mapping) are rewritten for the taker, who may be another process. Every
    /// current block of an abandoned heap is empty ([`crate::heap_handover`]).
    ///
    /// # Safety
    /// `heap` is an abandoned heap of `pool` the caller takes under the pool lock.
    pub(crate) unsafe fn take_over(heap: *mut Heap, pool: &Pool, instance: u64, group: usize) {
        // SAFETY: the caller holds the heap exclusively.
        unsafe {
            (*heap).pool = pool;
            (*heap).instance = instance;
            (*heap).group = group;
            (*heap).thread_next = ptr::null_mut();
            (*heap).set_holder(pool);
            // The hand-over left every cursor empty: only the current blocks' addresses
            // are the holder's.
            for life in 0..pool.life_count {
                (*current_row(heap, life)).set_no_current(empty_block());
            }
        }
    }

    pub(crate) fn thread_next_reset(&self) {
        // SAFETY: only the owning thread touches thread_next.
        unsafe {
            ptr::addr_of!(self.thread_next)
                .cast_mut()
                .write(ptr::null_mut())
        };
    }
}

/// Test counts of heap mappings, per thread.
#[cfg(test)]
pub(crate) mod counts {
    std::thread_local! {
        /// Heaps the calling thread mapped.
        pub(crate) static HEAPS_MAPPED_HERE: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
        /// Heaps the calling thread unmapped.
        pub(crate) static HEAPS_UNMAPPED_HERE: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
    }
}
