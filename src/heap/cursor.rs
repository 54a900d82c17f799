//! The owner's allocation cursors: a heap keeps, per lifetime class, a [`Row`] holding the
//! current block of every size class and that block's allocation state (the [`Cursors`]),
//! so that the allocation fast path writes no block header (a remote free reads the
//! header's line: a write per allocation would move the line between the two threads
//! each time).
//!
//! For a heap `H`, its row `R` of lifetime class `l` and a size class `c`, with
//! `b == R.current[c]`:
//!
//! - `R.current[c]`: written by `H`'s owner only (the slow paths, the idle look, `compact`,
//!   `release_class`, the hand-over at thread exit, a take-over or creation under the pool
//!   lock); read by the owner's fast paths and, relaxed (a moment's view), by any thread
//!   ([`cursor_of`]: statistics, block reports, `release_class`, the misuse check).
//! - `R.cursors.free[c]`, `.bump[c]`, `.end[c]`: written by the owner only; read by the
//!   owner and, a moment's view, by the misuse check of other threads
//!   ([`allocation_first`]).
//! - `R.cursors.taken[c]`: incremented by the owner's fast path, zeroed by the owner when
//!   it writes the cursor back or loads it; read by others for statistics
//!   ([`cursor_taken`]).
//! - `R.cursors.seq`: odd while the owner writes counts that a reader must see together,
//!   even and changed by each such write: a write-back, a change of current block, and,
//!   for any block `b` of the heap of lifetime class `l`, every change of `b`'s counts
//!   that takes more than one store: a collect of its remote list (the swap, then the
//!   count), a change of its role (the role, then the count that carries its bias:
//!   [`HeapHead::set_role`], [`HeapHead::retire`]), a reset in place (the count, then the
//!   remote list). [`counted_snapshot`] takes a block's counts between two equal even reads
//!   of it: `live(b) == b.used() - |remote(b)| + taken[c]` at one moment. (A block leaving
//!   the heap for the pool changes its owner word first: `Header::hand_to_pool`; the pool's
//!   blocks change under the pool lock.)
//!
//! Invariants, while `b != EMPTY_BLOCK`:
//!
//! - `state(b) == (free[c], bump[c], end[c])`: the block's allocation list, first
//!   never-used slot and bump window end (`crate::block::AllocState`) are the cursor's;
//!   the header's copy is stale; `bump[c] >= b.bump` (pops move it on; a write-back makes
//!   them equal; a reset in place lowers `b.bump`, then loads the cursor).
//! - `used(b) == b.used() + taken[c]`: the header counts the local and collected remote
//!   frees and the slow paths' allocations, the cursor the fast paths' allocations since
//!   it was last written back.
//!
//! and while `b == EMPTY_BLOCK`: `free[c] == bump[c] == end[c] == taken[c] == 0` (every pop
//! fails, and writes nothing). **Write-back** ([`HeapHead::sync`], [`Cursors::sync`]):
//! `header(b).state := cursor`, `header(b).count += taken`, `taken := 0`, after which the
//! header is the truth and the cursor still agrees with it. Every path where `b` leaves
//! its head writes back first ([`HeapHead::leave`]); every path where a block becomes
//! current loads its state from its header ([`HeapHead::enter`]); every reader of `b`'s
//! header that needs its allocation state while `b` stays current writes back first (the
//! idle look, `release_class`, `verify`). The allocation slow path works on the cursor
//! itself ([`HeapHead::state`]) after folding `taken` into the header's count
//! ([`HeapHead::count_taken`]). Offsets, like every link of a block: a shared region's
//! heap keeps them valid for whoever takes it over.

use super::{current_row, empty_block, Heap};
use crate::block::{AllocState, BlockList, Header, Role, Snapshot, Word};
use crate::class::CLASS_COUNT;
use crate::pool::{Pool, PoolState};
use crate::sync::{self, Ordering};
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32};

/// One head of a heap: references into the heap's rows and partial lists.
pub(crate) struct HeapHead<'a> {
    /// The block the fast paths allocate from: [`empty_block`] when there is none.
    pub(crate) current: &'a AtomicPtr<Header>,
    /// The allocation cursors of the head's row, this head's at `class`.
    pub(crate) cursors: &'a Cursors,
    /// The head's size class.
    pub(crate) class: usize,
    /// The partial list.
    pub(crate) partial: &'a mut BlockList,
}

impl<'a> HeapHead<'a> {
    /// The current block's address ([`empty_block`] for none).
    #[inline]
    pub(crate) fn current(&self) -> *const Header {
        self.current.load(Ordering::Relaxed)
    }

    /// Owner only: the current block, `None` when there is none.
    #[inline]
    pub(crate) fn block(&self) -> Option<&'a Header> {
        let h = self.current();
        // SAFETY: a current block other than the empty one is live and the owner's (the
        // caller's): it stays mapped while the heap owns it.
        (!ptr::eq(h, empty_block())).then(|| unsafe { &*h })
    }

    /// Owner only: the current block's allocation state, the head's cursor (module docs).
    #[inline]
    pub(crate) fn state(&self) -> CursorState<'a> {
        self.cursors.at(self.class)
    }

    /// Owner only: writes the head's cursor back to its current block's header (module
    /// docs); the block stays current and the cursor agrees with it.
    pub(crate) fn sync(&self) {
        if let Some(h) = self.block() {
            self.cursors.sync(self.class, h);
        }
    }

    /// Owner only: loads the head's cursor from its current block's header (empty for no
    /// block): after anything changed the current block's allocation state in its header.
    pub(crate) fn load(&self) {
        self.cursors.load(self.class, self.block());
    }

    /// Owner only, on the allocation slow path: adds the fast paths' allocations since
    /// the last write-back to the current block's header count (`used(b) == b.used()`
    /// from here until the fast path allocates again).
    #[inline]
    pub(crate) fn count_taken(&self) {
        if let Some(h) = self.block() {
            let _writing = self.cursors.writing();
            let taken = &self.cursors.taken[self.class];
            h.count_add(taken.get());
            #[cfg(all(test, not(loom)))]
            super::fork_mid_write::inside_count_taken();
            taken.set(0);
        }
    }

    /// Owner only, with an empty allocation list in the head's cursor: moves the slots
    /// freed since the last collect of block `h` (the current block) to it
    /// ([`Header::collect_freed_in`]). A remote list's collect takes the list off the
    /// block's count in two steps (the swap, then the count), so it is a write of the row
    /// for readers: [`counted_snapshot`] between the two would count the collected slots
    /// as live still.
    pub(crate) fn collect_freed(&self, h: &Header) -> u32 {
        let _writing = self.cursors.writing();
        h.collect_freed_in(self.state())
    }

    /// Owner only: records block `h`'s role ([`Header::set_role`]) as a write of the row:
    /// the role and the count that carries its bias are two stores, and a reader between
    /// them would decode the count with the other role's bias (2^31 apart for
    /// [`Role::Current`]: a whole block counted live, or none). `h` is a block of the head,
    /// current or not.
    pub(crate) fn set_role(&self, h: &Header, role: Role) {
        let _writing = self.cursors.writing();
        h.set_role(role);
    }

    /// Owner only: retires the current block `h` `FULL` ([`Header::try_retire`], whose
    /// role change is a write of the row as in [`HeapHead::set_role`]). False when a remote
    /// free came first.
    pub(crate) fn retire(&self, h: &Header) -> bool {
        let _writing = self.cursors.writing();
        h.try_retire()
    }

    /// Owner only: makes `h` (a block of the head, or [`empty_block`]) current, its
    /// allocation state loaded from its header. The previous current block left first
    /// ([`HeapHead::leave`]), or had none.
    pub(crate) fn enter(&self, h: *const Header) {
        let _writing = self.cursors.writing();
        self.current.store(h.cast_mut(), Ordering::Relaxed);
        self.cursors.read_from(self.class, self.block());
    }

    /// Owner only: the current block leaves its head (to the partial list, the pool, or
    /// retired `FULL`), its cursor written back first; the head has none after.
    pub(crate) fn leave(&self) {
        self.sync();
        self.enter(empty_block());
    }
}

/// The allocation state in a row's cursors: `free[c]`, `bump[c]` and `end[c]` one array
/// apart.
pub(crate) type CursorState<'a> = AllocState<'a, AtomicU32, CURSOR_STRIDE>;
const CURSOR_STRIDE: usize = size_of::<[AtomicU32; CLASS_COUNT]>();
const _: () = assert!(
    core::mem::offset_of!(Cursors, free) == 0
        && core::mem::offset_of!(Cursors, bump) == CURSOR_STRIDE
        && core::mem::offset_of!(Cursors, end) == 2 * CURSOR_STRIDE
);

/// A lifetime class's allocation cursors, one per size class (see the module docs). Core
/// atomics, relaxed, under loom too: written by the owner only, read by others for a
/// moment's view. The sequence is the crate's atomic (loom's under loom, built in place
/// with the heap: [`Cursors::build`]), so that loom models its Release and Acquire.
#[repr(C)]
pub(crate) struct Cursors {
    pub(crate) free: [AtomicU32; CLASS_COUNT],
    pub(crate) bump: [AtomicU32; CLASS_COUNT],
    pub(crate) end: [AtomicU32; CLASS_COUNT],
    pub(crate) taken: [AtomicU32; CLASS_COUNT],
    /// Odd while a writer moves counts between a header and `taken`, or changes a current
    /// block ([`Cursors::writing`]); even otherwise, and changed by each write.
    seq: sync::AtomicU32,
}

/// A write of a row's counts or current blocks under way ([`Cursors::writing`]).
pub(crate) struct Writing<'a>(&'a sync::AtomicU32);

impl Drop for Writing<'_> {
    #[inline]
    fn drop(&mut self) {
        // Even again, the next even value. Release: the writes before it are seen with it.
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Release,
        );
    }
}

/// Reads of a row [`counted_snapshot`] makes before it takes one whose sequence did not
/// agree (a writer that died in the middle of a write, in a process that shares the
/// region, leaves the sequence odd until its heap is taken over).
const READS: u32 = 256;

/// The fast paths' state of one lifetime class of a heap: the current block of every size
/// class, then their cursors. A row's fields are one displacement apart from its start, so
/// the fast path reaches each with one instruction from the row's address and the class.
/// Relaxed atomics: on x86-64 plain moves.
#[repr(C)]
pub(crate) struct Row {
    pub(crate) current: [AtomicPtr<Header>; CLASS_COUNT],
    pub(crate) cursors: Cursors,
}

impl Cursors {
    sync::const_unless_loom! {
    /// Every cursor empty (no block): its pops fail.
    pub(crate) fn empty() -> Cursors {
        Cursors {
            free: [const { AtomicU32::new(0) }; CLASS_COUNT],
            bump: [const { AtomicU32::new(0) }; CLASS_COUNT],
            end: [const { AtomicU32::new(0) }; CLASS_COUNT],
            taken: [const { AtomicU32::new(0) }; CLASS_COUNT],
            seq: sync::AtomicU32::new(0),
        }
    }
    }

    /// Under loom, builds the sequence of `row`, a new heap's, in place (loom's atomics are
    /// objects of the model checker, which zeroed memory does not hold); nothing outside
    /// loom, where zeroed memory is an atomic holding 0.
    ///
    /// # Safety
    /// `row` is a new heap's row, mapped and writable, which nobody reads yet.
    pub(crate) unsafe fn build(row: *mut Row) {
        #[cfg(loom)]
        // SAFETY: the caller's: nobody reads the word, which holds no loom object to drop
        // yet; written through the raw pointer (no reference to the row exists).
        unsafe {
            ptr::addr_of_mut!((*row).cursors.seq).write(sync::AtomicU32::new(0))
        };
        #[cfg(not(loom))]
        let _ = row;
    }

    /// Every cursor empty, the sequence 0: a new heap's, before anyone reads it.
    pub(crate) fn clear(&self) {
        for words in [&self.free, &self.bump, &self.end, &self.taken] {
            for w in words {
                w.set(0);
            }
        }
        self.seq.set(0);
    }

    /// The row's writer (its owner, or a thread acting for it) is about to move counts
    /// between a header and `taken`, or change a current block: readers that see the
    /// sequence odd, or changed across their reads, read again (see [`counted_snapshot`]).
    /// Ends when the guard drops.
    #[inline]
    pub(crate) fn writing(&self) -> Writing<'_> {
        // Odd (already odd when a writer died in the middle: a dead process's heap, taken
        // over and written back by another).
        self.seq.set(self.seq.get() | 1);
        // Release: the odd sequence is seen before any of the writes after it.
        sync::fence(Ordering::Release);
        Writing(&self.seq)
    }

    /// The allocation state of `class`'s current block.
    #[inline]
    pub(crate) fn at(&self, class: usize) -> CursorState<'_> {
        assert!(class < CLASS_COUNT);
        // SAFETY: in bounds (above).
        unsafe { self.at_unchecked(class) }
    }

    /// [`Cursors::at`] with no bounds check.
    ///
    /// # Safety
    /// `class < CLASS_COUNT`.
    #[inline(always)]
    unsafe fn at_unchecked(&self, class: usize) -> CursorState<'_> {
        // SAFETY: `free`, `bump` and `end` are arrays of `CLASS_COUNT` atomics one after the
        // other (`repr(C)`, no padding between arrays of one type), so entry `class` of each
        // is `CURSOR_STRIDE` bytes after the previous one's; the pointer comes from the
        // whole struct.
        unsafe { AllocState::new(ptr::from_ref(self).cast::<AtomicU32>().add(class)) }
    }

    /// The write-back (module docs): `h` is the current block of `class`.
    pub(crate) fn sync(&self, class: usize, h: &Header) {
        let _writing = self.writing();
        let (to, from) = (h.state(), self.at(class));
        to.free().set(from.free().get());
        to.bump().set(from.bump().get());
        to.end().set(from.end().get());
        h.count_add(self.taken[class].get());
        self.taken[class].set(0);
    }

    /// Whether the cursor of `class` holds the state of `h`, its current block, loaded
    /// whole (`bump[c] >= h.bump`, module docs). A holder that stopped inside
    /// [`HeapHead::enter`] (the block named first, then the cursor loaded a word at a time)
    /// left it empty, or with the allocation list and no `bump` yet: the header is the truth.
    pub(crate) fn loaded(&self, class: usize, h: &Header) -> bool {
        self.at(class).bump().get() >= h.state().bump().get()
    }

    /// Loads the cursor of `class` from `h`, its current block, if any (module docs).
    pub(crate) fn load(&self, class: usize, h: Option<&Header>) {
        let _writing = self.writing();
        self.read_from(class, h);
    }

    /// [`Cursors::load`] inside a write the caller marked ([`Cursors::writing`]).
    fn read_from(&self, class: usize, h: Option<&Header>) {
        let to = self.at(class);
        let (free, bump, end) = h.map_or((0, 0, 0), |h| {
            let from = h.state();
            (from.free().get(), from.bump().get(), from.end().get())
        });
        to.free().set(free);
        to.bump().set(bump);
        to.end().set(end);
        self.taken[class].set(0);
    }
}

impl Row {
    sync::const_unless_loom! {
    /// A row with no current block: every pop on it fails, and writes nothing.
    pub(crate) fn empty(block: *const Header) -> Row {
        let mut row = Row {
            current: [const { AtomicPtr::new(ptr::null_mut()) }; CLASS_COUNT],
            cursors: Cursors::empty(),
        };
        let mut i = 0;
        while i < CLASS_COUNT {
            row.current[i] = AtomicPtr::new(block.cast_mut());
            i += 1;
        }
        row
    }
    }

    /// Every size class without a current block (`block` is this process's empty block),
    /// its cursor empty already (a new heap's, or one taken over: its hand-over left it
    /// so).
    pub(crate) fn set_no_current(&self, block: *const Header) {
        let _writing = self.cursors.writing();
        for (c, taken) in self.current.iter().zip(&self.cursors.taken) {
            debug_assert_eq!(taken.get(), 0);
            c.store(block.cast_mut(), Ordering::Relaxed);
        }
    }

    /// The allocation fast path: a slot of the current block of `class` from its cursor,
    /// the allocation list first, else the bump window, counted in `taken`. Returns its
    /// address and whether its bytes are known to read zero. `None` does not mean the
    /// block is full (see `Header::pop`, whose cursor this is).
    #[inline(always)]
    pub(crate) fn pop(&self, class: usize) -> Option<(*mut u8, bool)> {
        // SAFETY: class < CLASS_COUNT (callers); a current block is live and the owner's,
        // or the never-written EMPTY_BLOCK, whose cursor is empty.
        let (h, s, taken) = unsafe { self.fast(class) };
        let (off, zeroed) = h.take_in(s)?;
        taken.set(taken.get().wrapping_add(1));
        Some((h.base().wrapping_add(off as usize), zeroed))
    }

    /// The quick collect (`Header::pop_collected`) through the cursor of `class`.
    #[inline(always)]
    pub(crate) fn pop_collected(&self, class: usize) -> Option<(*mut u8, bool)> {
        // SAFETY: as in `pop`.
        let (h, s, taken) = unsafe { self.fast(class) };
        // A remote list taken is a write of the row (see `HeapHead::collect_freed`); the
        // local list's branch writes no count and takes no guard.
        let first = h.take_collected(s, || self.cursors.writing())?;
        taken.set(taken.get().wrapping_add(1));
        Some((h.base().wrapping_add(first as usize), false))
    }

    /// The current block of `class`, its cursor and its `taken`, with no bounds check.
    ///
    /// # Safety
    /// `class < CLASS_COUNT`; the row is the calling thread's (its owner's) or empty.
    #[inline(always)]
    unsafe fn fast(&self, class: usize) -> (&Header, CursorState<'_>, &AtomicU32) {
        // SAFETY: in bounds (caller); a current block is live and the owner's, or the
        // never-written EMPTY_BLOCK.
        unsafe {
            let c = &self.cursors;
            let h = &*self.current.get_unchecked(class).load(Ordering::Relaxed);
            (h, c.at_unchecked(class), c.taken.get_unchecked(class))
        }
    }
}

/// Block `h`'s snapshot ([`Header::snapshot`]) with its counts whole: when `h` is the
/// current block of a registered heap of `pool`, the allocations its owner's cursor counts
/// (`taken`) are added. Any thread, a moment's view. `locked` is the caller's pool lock,
/// if it holds it.
///
/// A block's counts are several words (its role, whose bias its count carries; its count;
/// its remote list), and a writer changes them one at a time, so a reader validates what it
/// read against whoever writes them:
///
/// - a block owned by a registered heap (owner `o`, lifetime class `l`): its counts change
///   only inside the sequence of `o`'s row of `l` (module docs), or after its owner word
///   changed (a heap's block handed to the pool stores its new owner first: `Header::
///   hand_to_pool`). So the counts are read between two reads of the row's sequence that
///   agree, and the owner and key read after them must be those read with them (a
///   write-back moves counts from `taken` to the header; a reader between the two would see
///   them twice, or not at all);
/// - a pool-owned block (or one whose heap is gone): its counts change only under the pool
///   lock (a remote free's push aside, one word), so it is read under the lock.
pub(crate) fn counted_snapshot(
    pool: &Pool,
    h: &Header,
    locked: Option<&PoolState>,
) -> Option<Snapshot> {
    let mut round = 0;
    loop {
        let b = h.snapshot()?;
        let Some(row) = row_of(pool, b.owner, b.class, b.life) else {
            if locked.is_some() || round >= READS {
                return Some(b);
            }
            let st = pool.lock_uncounted();
            let b = h.snapshot()?;
            if row_of(pool, b.owner, b.class, b.life).is_none() {
                return Some(b);
            }
            // A heap took the block meanwhile: read it through its row.
            drop(st);
            round += 1;
            continue;
        };
        let seq = row.cursors.seq.load(Ordering::Acquire);
        if seq % 2 == 0 || round >= READS {
            let current = row.current[b.class].load(Ordering::Relaxed);
            let taken = row.cursors.taken[b.class].get();
            let again = h.snapshot()?;
            // Acquire: the reads above are done before the owner and the sequence are read
            // again. The owner first: a block taken back by the same heap (its owner word
            // stored with Release after the heap's take-over wrote its rows) shows the
            // row's new sequence.
            sync::fence(Ordering::Acquire);
            let word = h.owner_key_acquire();
            let same = again.is_word(word) && again.owner == b.owner;
            if same && row.cursors.seq.load(Ordering::Relaxed) == seq || round >= READS {
                let heap_current =
                    row_heap(pool, again.owner).and_then(|hp| hp.current_in(pool, current));
                return Some(match heap_current {
                    Some(c) if ptr::eq(c, h) => again.with_taken(taken),
                    _ => again,
                });
            }
        }
        crate::sync::spin_hint(round);
        round += 1;
    }
}

/// The first slot of block `h`'s allocation list: its cursor's while it is current (module
/// docs), else its header's. Any thread, a moment's view (the misuse checks of a build
/// without live bits).
pub(crate) fn allocation_first(pool: &Pool, h: &Header) -> u32 {
    match cursor_of(pool, h, h.owner(), h.class(), h.life()) {
        Some(c) => c.free[h.class()].get(),
        None => h.state().free().get(),
    }
}

/// The registered heap of `pool` whose token is `owner`, if any.
fn row_heap(pool: &Pool, owner: u64) -> Option<&Heap> {
    if owner == 0 {
        return None;
    }
    let record = pool.heap((owner & 0xffff) as u32);
    if record.is_null() {
        return None;
    }
    // SAFETY: a registered heap stays mapped while its pool lives.
    let heap = unsafe { &*Heap::of(record) };
    (heap.token == owner).then_some(heap)
}

/// The row of lifetime class `life` of the registered heap of `pool` whose token is
/// `owner`, if any (and `class` and `life` are a head's).
fn row_of(pool: &Pool, owner: u64, class: usize, life: usize) -> Option<&Row> {
    if class >= CLASS_COUNT || life >= pool.life_count {
        return None;
    }
    let heap = row_heap(pool, owner)?;
    // SAFETY: life is below the pool's lifetime-class count.
    Some(unsafe { &*current_row(heap, life) })
}

/// The cursors of block `h` (of `class` and `life`, owned by heap token `owner`) when it
/// is the current block of a registered heap of `pool`: that heap's row of `life`.
fn cursor_of<'p>(
    pool: &'p Pool,
    h: &Header,
    owner: u64,
    class: usize,
    life: usize,
) -> Option<&'p Cursors> {
    let row = row_of(pool, owner, class, life)?;
    let current = row.current[class].load(Ordering::Relaxed);
    match row_heap(pool, owner)?.current_in(pool, current) {
        Some(c) if ptr::eq(c, h) => Some(&row.cursors),
        _ => None,
    }
}
#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::block::header_of;
    use crate::class::class_of;
    use crate::pool::test_pool::TestPool;

    /// A new heap of `pool` (group 0: an explicit join's; the group plays no part here),
    /// its row of lifetime class 0, the 64-byte class, the slot its slow path handed out
    /// first and that slot's block.
    fn first_slot_of_64(pool: &TestPool) -> (&Heap, &Row, usize, *mut u8, &Header) {
        let heap = Heap::create(pool, 1, 0);
        assert!(!heap.is_null());
        // SAFETY: registered in the pool, which outlives the references; this thread owns
        // it.
        let hp = unsafe { &*heap };
        let class = class_of(64, 8).unwrap();
        let first = hp.alloc_from_heads(class, 0).expect("a slot").0;
        // SAFETY: a slot of a carved block, mapped for the pool's life.
        let b = unsafe { &*header_of(first) };
        // SAFETY: the heap is this thread's; life 0 is its only lifetime class.
        let row = unsafe { &*current_row(heap, 0) };
        (hp, row, class, first, b)
    }

    /// The allocation slow path counts the fast path's allocations in the current block's
    /// header before it decides anything (how many slots the local free list holds is
    /// `capacity - used - never used`): after it, `used(b) == b.used()`, and the cursor's
    /// `taken` is 0. Fails with `count_taken` left out of `alloc_from_heads`: the header
    /// counts 2 of the 11 slots handed out.
    #[test]
    fn the_slow_path_counts_the_cursors_allocations_in_the_header_first() {
        let pool = TestPool::new(4, 1);
        let (hp, row, class, _, b) = first_slot_of_64(&pool);
        for _ in 0..9 {
            row.pop(class).expect("a slot of the bump window");
        }
        assert_eq!((b.used(), row.cursors.taken[class].get()), (1, 9));
        hp.alloc_from_heads(class, 0).expect("a slot");
        assert_eq!((b.used(), row.cursors.taken[class].get()), (11, 0));
    }

    /// A quick collect that takes the current block's remote list writes the row (its
    /// sequence goes odd and back to the next even value), so that a reader never sees the
    /// swap without the count's change (RED-67); one that finds nothing writes nothing.
    /// Fails with the collect outside the row's sequence: the sequence stays where it was.
    #[test]
    fn a_quick_collect_of_a_remote_list_is_a_write_of_the_row() {
        let pool = TestPool::new(4, 1);
        let (_, row, class, first, b) = first_slot_of_64(&pool);
        // The bump window spent: the next allocation is a quick collect's.
        while row.pop(class).is_some() {}
        // Beats to spend (a block that never reached the slow path's refill has none).
        b.take_beats();
        let seq = || row.cursors.seq.load(Ordering::Relaxed);
        let before = seq();
        assert!(row.pop_collected(class).is_none(), "nothing freed yet");
        let nothing = seq();
        let off = (first as usize - b.base() as usize) as u32;
        // SAFETY: `first` is a live slot of `b`, given up here as another thread's free.
        unsafe { b.push_remote(off) };
        let got = row.pop_collected(class).expect("the remote list's slot").0;
        assert_eq!(got, first);
        let after = seq();
        assert_eq!(before % 2, 0);
        assert_eq!(
            (after % 2, after != nothing),
            (0, true),
            "the collect of the remote list changed the row's sequence ({before}, {nothing}, {after})"
        );
    }
}
