//! The pool: what one allocator instance shares between its heaps.
//!
//! - the [`Region`] blocks come from;
//! - per head (size class × lifetime class), the **pool-owned** blocks that still have free
//!   slots: blocks abandoned by exited threads, reclaimed full blocks, blocks threads
//!   without a heap allocate from, and tiny blocks no live heap holds (a heap's tiny blocks
//!   are pool-owned but listed on the heap's tiny heads, see [`crate::heap`]);
//! - empty blocks kept committed for reuse by any class, at most [`RETAIN_EMPTY`] per block
//!   size; the rest are decommitted and their units given back to the region;
//! - the heap registry (id → heap) and the heaps of exited threads.
//!
//! Everything here is guarded by one [`SpinLock`] and only slow paths take it. The lock
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
//! waits), else flags the pool and the next slow path that takes a block does the work.
//!
//! Invariants (under the lock): a block is on at most one list; a block on `partial[h]` has
//! key `h`, `owner == 0` and holder [`NO_HOLDER`] or [`HEAPLESS`]; a block on `retained[s]`
//! is empty with key [`EMPTY_KEY`]; `retained_count[s] <= RETAIN_EMPTY`.

use crate::block::{BlockStack, Header, Role, HEAPLESS, NONE, NO_HOLDER};
use crate::class::{CLASSES, CLASS_COUNT, MAX_BLOCK_SHIFT, UNIT_SHIFT};
use crate::heap_record::HeapRecord;
use crate::large::LargeTable;
use crate::region::{Region, RegionState};
use crate::sync::RawSpin;
use crate::sync::{spin_lock, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering, SpinLock};
use crate::{os, tiny};
use core::ptr;
use parking_lot::lock_api::MutexGuard;

/// Empty blocks kept committed per block size.
pub(crate) const RETAIN_EMPTY: usize = 8;
/// Blocks of a partial list a heap taking a block looks at for one with freed slots.
const REUSE_SCAN: usize = 8;
pub(crate) use crate::block::EMPTY_KEY;
/// The most heaps (threads × instances joined at once) an instance registers; more threads
/// allocate through the pool's lock.
pub(crate) const MAX_HEAPS: usize = 1 << 14;
const SHIFTS: usize = (MAX_BLOCK_SHIFT - UNIT_SHIFT + 1) as usize;

/// The pool of one allocator instance.
pub(crate) struct Pool {
    pub(crate) region: Region,
    pub(crate) state: SpinLock<PoolState>,
    /// Number of lifetime classes.
    pub(crate) life_count: usize,
    /// Heap id → heap (id 0 is never used).
    heaps: *const AtomicPtr<HeapRecord>,
    /// Ids handed out so far.
    pub(crate) heap_ids: AtomicU32,
    /// Pool-owned blocks a free took out of `FULL` state.
    returned: BlockStack,
    /// Times the lock was taken (slow paths only): a measure for tests and stats.
    pub(crate) lock_count: AtomicU64,
    /// Set (1) by a remote free that may have emptied a pool-owned block while the lock
    /// was taken: the next [`Pool::take_block`] gives emptied blocks back.
    emptied: AtomicU8,
    /// The live large allocations (a separate lock: their paths never take the pool's).
    pub(crate) large: SpinLock<LargeTable>,
    /// Next pool of the process-wide list the fork handlers walk (under that list's lock).
    pub(crate) fork_next: *mut Pool,
    meta_len: usize,
}

/// The lock-guarded part of the pool.
pub(crate) struct PoolState {
    pub(crate) region: RegionState,
    /// Per head, a doubly linked list of pool-owned blocks with free slots (unit index).
    partial: *mut u32,
    retained: [u32; SHIFTS],
    retained_count: [usize; SHIFTS],
    /// Heaps of exited threads, linked through `HeapRecord::next_abandoned`.
    pub(crate) abandoned: *mut HeapRecord,
}

// SAFETY: the raw pointers address mappings the pool owns; the registry is atomics and the
// rest is reached only through the lock.
unsafe impl Send for Pool {}
// SAFETY: as above.
unsafe impl Sync for Pool {}
// SAFETY: as above.
unsafe impl Send for PoolState {}

impl Pool {
    /// Makes a pool for `life_count` lifetime classes over a fresh region, in memory mapped
    /// from the OS. Returns null when the OS refuses.
    pub(crate) fn create(bytes: usize, exact: bool, life_count: usize, checked: bool) -> *mut Pool {
        let Some((region, region_state)) = Region::new(bytes, exact, checked) else {
            return ptr::null_mut();
        };
        let heads = CLASS_COUNT * life_count;
        let registry_bytes = MAX_HEAPS * size_of::<AtomicPtr<HeapRecord>>();
        let Some(meta_len) =
            os::page_round(size_of::<Pool>() + registry_bytes + heads * size_of::<u32>())
        else {
            return ptr::null_mut();
        };
        let meta = os::map(meta_len, os::PAGE);
        if meta.is_null() {
            return ptr::null_mut();
        }
        let pool = meta.cast::<Pool>();
        // SAFETY: `meta` is fresh zeroed memory of `meta_len` bytes: the pool, then the
        // registry (null pointers are zeros), then the partial-list heads.
        unsafe {
            let heaps = meta.add(size_of::<Pool>()).cast::<AtomicPtr<HeapRecord>>();
            let partial = meta.add(size_of::<Pool>() + registry_bytes).cast::<u32>();
            for i in 0..heads {
                partial.add(i).write(NONE);
            }
            ptr::write(
                pool,
                Pool {
                    region,
                    state: spin_lock(PoolState {
                        region: region_state,
                        partial,
                        retained: [NONE; SHIFTS],
                        retained_count: [0; SHIFTS],
                        abandoned: ptr::null_mut(),
                    }),
                    life_count,
                    heaps,
                    heap_ids: AtomicU32::new(0),
                    returned: BlockStack::new(),
                    lock_count: AtomicU64::new(0),
                    emptied: AtomicU8::new(0),
                    large: spin_lock(LargeTable::new()),
                    fork_next: ptr::null_mut(),
                    meta_len,
                },
            );
        }
        pool
    }

    /// Drops the pool and releases its memory.
    ///
    /// # Safety
    /// `pool` came from [`Pool::create`] and nothing uses it or any of its blocks.
    pub(crate) unsafe fn destroy(pool: *mut Pool) {
        // SAFETY: the caller guarantees exclusive access; the region unmaps every block,
        // and the large allocations go with the instance.
        unsafe {
            (*pool).large.lock().release_all();
            let len = (*pool).meta_len;
            ptr::drop_in_place(pool);
            os::release(pool.cast(), len);
        }
    }

    /// Takes the pool lock.
    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, RawSpin, PoolState> {
        self.lock_count.fetch_add(1, Ordering::Relaxed);
        self.state.lock()
    }

    /// Empty blocks held committed for reuse, per block size.
    pub(crate) fn retained_blocks(st: &PoolState) -> usize {
        st.retained_count.iter().sum()
    }

    /// The header of the block at unit `u`.
    #[inline]
    pub(crate) fn block(&self, u: u32) -> &Header {
        // SAFETY: list links name units holding a block header, which stay mapped for the
        // region's life.
        unsafe { &*self.region.unit_addr(u as usize).cast::<Header>() }
    }

    /// The unit index of a block.
    #[inline]
    pub(crate) fn unit(&self, h: &Header) -> u32 {
        self.region.unit_of(h.base() as usize) as u32
    }

    /// The heap with id `id`, if registered.
    pub(crate) fn heap(&self, id: u32) -> *mut HeapRecord {
        if id == 0 || id as usize >= MAX_HEAPS {
            return ptr::null_mut();
        }
        // SAFETY: id < MAX_HEAPS: inside the registry.
        unsafe { (*self.heaps.add(id as usize)).load(Ordering::Acquire) }
    }

    /// Reserves a new heap id; 0 when the registry is full (then cheaply, with no write).
    pub(crate) fn reserve_id(&self) -> u32 {
        if self.heap_ids.load(Ordering::Relaxed) as usize >= MAX_HEAPS - 1 {
            return 0;
        }
        let id = self.heap_ids.fetch_add(1, Ordering::Relaxed) + 1;
        if id as usize >= MAX_HEAPS {
            self.heap_ids.store(MAX_HEAPS as u32, Ordering::Relaxed);
            return 0;
        }
        id
    }

    /// Registers `heap` under `id`, from [`Pool::reserve_id`].
    pub(crate) fn publish(&self, id: u32, heap: *mut HeapRecord) {
        debug_assert!(id != 0 && (id as usize) < MAX_HEAPS);
        // SAFETY: reserved ids are below MAX_HEAPS.
        unsafe { (*self.heaps.add(id as usize)).store(heap, Ordering::Release) };
    }

    /// Every registered heap, for teardown and stats.
    pub(crate) fn registered_heaps(&self) -> impl Iterator<Item = *mut HeapRecord> + '_ {
        let n = (self.heap_ids.load(Ordering::Acquire) as usize).min(MAX_HEAPS - 1);
        (1..=n as u32)
            .map(|id| self.heap(id))
            .filter(|h| !h.is_null())
    }

    /// Pushes `h` on a doubly linked list whose head is `*head`.
    pub(crate) fn list_push(&self, head: &mut u32, h: &Header) {
        let u = self.unit(h);
        h.prev.store(NONE, Ordering::Relaxed);
        h.next.store(*head, Ordering::Relaxed);
        if *head != NONE {
            self.block(*head).prev.store(u, Ordering::Relaxed);
        }
        *head = u;
    }

    /// Unlinks `h` from the doubly linked list whose head is `*head`.
    pub(crate) fn list_remove(&self, head: &mut u32, h: &Header) {
        let (prev, next) = (
            h.prev.load(Ordering::Relaxed),
            h.next.load(Ordering::Relaxed),
        );
        if prev == NONE {
            debug_assert_eq!(*head, self.unit(h));
            *head = next;
        } else {
            self.block(prev).next.store(next, Ordering::Relaxed);
        }
        if next != NONE {
            self.block(next).prev.store(prev, Ordering::Relaxed);
        }
        h.prev.store(NONE, Ordering::Relaxed);
        h.next.store(NONE, Ordering::Relaxed);
    }

    /// Pops the first block of a list.
    pub(crate) fn list_pop(&self, head: &mut u32) -> Option<&Header> {
        if *head == NONE {
            return None;
        }
        let h = self.block(*head);
        self.list_remove(head, h);
        Some(h)
    }
}

impl PoolState {
    /// The first block of the partial list of head `head` (`NONE` when empty).
    pub(crate) fn partial_first(&self, head: usize) -> u32 {
        // SAFETY: as in `partial`; only read.
        unsafe { *self.partial.add(head) }
    }

    /// The partial list head of (class, life).
    pub(crate) fn partial(&mut self, head: usize) -> &mut u32 {
        // SAFETY: `partial` holds CLASS_COUNT * life_count heads and callers pass a head
        // index below that (class < CLASS_COUNT, life < life_count).
        unsafe { &mut *self.partial.add(head) }
    }
}

impl Pool {
    /// Under the lock: a block of (class, life) with a free slot, now owned by `owner`
    /// (0: the pool, for a tiny block whose holder the caller sets). Tries pool-owned blocks
    /// (not [`HEAPLESS`] ones; one with freed slots first), then full blocks of exited
    /// threads that were freed into,
    /// then an empty block, then a new one from the region. `None` when memory is exhausted.
    pub(crate) fn take_block<'a>(
        &'a self,
        st: &mut PoolState,
        class: usize,
        life: usize,
        owner: u64,
    ) -> Option<&'a Header> {
        let head = life * CLASS_COUNT + class;
        if self.emptied.load(Ordering::Relaxed) != 0 {
            self.give_back_emptied(st);
        }
        if *st.partial(head) == NONE {
            self.reclaim_abandoned(st);
        }
        if let Some(h) = self.take_partial(st, head) {
            h.set_owner(owner);
            return Some(h);
        }
        let c = &CLASSES[class];
        let s = (c.block_shift - UNIT_SHIFT) as usize;
        let (base, fresh) = match self.take_retained(st, s) {
            Some(base) => (base, false),
            None => self.region.carve(&mut st.region, c.block_shift)?,
        };
        // SAFETY: the block is carved or retained: committed, ours, reachable by nobody.
        Some(unsafe { &*Header::init(base, class, life, owner, fresh) })
    }

    /// Under the lock: takes a block of the pool's partial list `head` whose allocations are
    /// the pool's ([`NO_HOLDER`]): one a heap may take (blocks of threads without a heap stay
    /// where those threads find them). Among the first [`REUSE_SCAN`] of those, one with
    /// freed slots, whose touched pages are reused before another block's never-used ones;
    /// else the first.
    fn take_partial(&self, st: &mut PoolState, head: usize) -> Option<&Header> {
        let mut first = None;
        let mut seen = 0;
        let mut u = *st.partial(head);
        while u != NONE && seen < REUSE_SCAN {
            let h = self.block(u);
            u = h.next.load(Ordering::Relaxed);
            if h.holder() != NO_HOLDER {
                continue;
            }
            if h.has_freed_slots() {
                first = Some(h);
                break;
            }
            first.get_or_insert(h);
            seen += 1;
        }
        let h = first?;
        self.list_remove(st.partial(head), h);
        Some(h)
    }

    /// Under the lock: an empty committed block of `2^s` units, from the kept ones of that
    /// size, else split from a larger kept one (its other pieces are kept as blocks of
    /// `2^s` units), so emptied blocks serve every class, whatever its block size.
    fn take_retained(&self, st: &mut PoolState, s: usize) -> Option<*mut u8> {
        let t = (s..SHIFTS).find(|&t| st.retained[t] != NONE)?;
        let h = self.block(st.retained[t]);
        st.retained[t] = h.next.load(Ordering::Relaxed);
        st.retained_count[t] -= 1;
        let base = h.base();
        let first = self.unit(h) as usize;
        for piece in 1..1usize << (t - s) {
            let u = first + (piece << s);
            self.region.mark_block(u, 1 << s);
            // SAFETY: the piece lies in the block just taken, which nobody else reaches.
            let p = unsafe { &*Header::init_empty(self.region.unit_addr(u)) };
            p.next.store(st.retained[s], Ordering::Relaxed);
            st.retained[s] = u as u32;
            st.retained_count[s] += 1;
        }
        self.region.mark_block(first, 1 << s);
        Some(base)
    }

    /// Under the lock: takes a block that is empty (no live slot) and on no list. Keeps it
    /// committed or gives it back to the region.
    pub(crate) fn give_empty(&self, st: &mut PoolState, h: &Header) {
        debug_assert_eq!(h.live(), 0);
        self.give_block(st, h, RETAIN_EMPTY);
    }

    /// Under the lock: takes a block on no list whose slots are all dead (released with
    /// their lifetime class, whatever its counts say).
    pub(crate) fn discard(&self, st: &mut PoolState, h: &Header) {
        // Checked mode: the block's live bits go with it.
        self.clear_live_bits(h);
        self.give_block(st, h, RETAIN_EMPTY);
    }

    /// Under the lock: empties a block whose slots are all dead in place, for the same
    /// owner, class and lifetime class (its memory stays committed, so it is not fresh).
    pub(crate) fn reset(&self, h: &Header) {
        self.clear_live_bits(h);
        h.reset();
        h.set_role(Role::Current);
    }

    fn clear_live_bits(&self, h: &Header) {
        if !self.region.live_bits.is_null() {
            let base = h.base() as usize - self.region.base();
            // SAFETY: the shadow covers the region at one bit per byte; blocks are 2 MiB
            // aligned, so their part of it is page aligned.
            unsafe {
                os::decommit(
                    (self.region.live_bits as *mut u8).add(base / 8),
                    h.geometry().block_size() / 8,
                )
            };
        }
    }

    /// Under the lock: gives every empty block kept for reuse back to the OS. Returns how
    /// many.
    pub(crate) fn release_retained(&self, st: &mut PoolState) -> usize {
        let mut n = 0;
        for s in 0..SHIFTS {
            while st.retained[s] != NONE {
                let h = self.block(st.retained[s]);
                st.retained[s] = h.next.load(Ordering::Relaxed);
                st.retained_count[s] -= 1;
                // SAFETY: a retained block is ours, empty and now on no list.
                unsafe {
                    self.region
                        .give_back(&mut st.region, h.base(), UNIT_SHIFT + s as u32)
                };
                n += 1;
            }
        }
        n
    }

    /// Under the lock: pool-owned blocks on a partial list that hold no live slot (blocks
    /// of exited threads that were freed into included) go back to the OS. Returns how
    /// many.
    pub(crate) fn release_empty_partial(&self, st: &mut PoolState) -> usize {
        self.emptied.store(0, Ordering::Relaxed);
        self.reclaim_abandoned(st);
        self.empty_partial(st, 0)
    }

    /// Under the lock: as [`Pool::release_empty_partial`], but the blocks join the empty
    /// ones kept for reuse (up to [`RETAIN_EMPTY`]; the rest go back to the OS).
    fn give_back_emptied(&self, st: &mut PoolState) {
        self.emptied.store(0, Ordering::Relaxed);
        self.reclaim_abandoned(st);
        self.empty_partial(st, RETAIN_EMPTY);
    }

    /// Under the lock: gives away every block on a partial list that holds no live slot,
    /// keeping at most `retain` empty blocks committed. Returns how many.
    fn empty_partial(&self, st: &mut PoolState, retain: usize) -> usize {
        let mut n = 0;
        for head in 0..CLASS_COUNT * self.life_count {
            let mut u = *st.partial(head);
            while u != NONE {
                let h = self.block(u);
                u = h.next.load(Ordering::Relaxed);
                if h.live() == 0 {
                    self.list_remove(st.partial(head), h);
                    self.give_block(st, h, retain);
                    n += 1;
                }
            }
        }
        n
    }

    /// Under the lock: every empty block the pool holds goes back to the OS: those on its
    /// partial lists and those kept for reuse. Returns how many.
    pub(crate) fn release_empty(&self, st: &mut PoolState) -> usize {
        self.release_empty_partial(st) + self.release_retained(st)
    }

    /// A remote free took a slot of `h`, after any relisting: if that may have emptied a
    /// block the pool owns or an exited thread's heap owns (nobody else would notice), the
    /// block goes back to the empty ones now when the lock is free, else the pool is
    /// flagged and the next [`Pool::take_block`] does it. Never waits: remote frees stay
    /// lock-free.
    pub(crate) fn after_remote_free(&self, h: &Header) {
        // One read of the header: the block may be given back and taken again meanwhile;
        // a wrong guess costs one pass under the lock.
        let Some(b) = h.snapshot() else {
            return;
        };
        if b.live != 0 || (b.owner != 0 && !self.owner_is_abandoned(b.owner)) {
            return;
        }
        self.emptied.store(1, Ordering::Relaxed);
        if let Some(mut st) = self.state.try_lock() {
            self.lock_count.fetch_add(1, Ordering::Relaxed);
            self.give_back_emptied(&mut st);
        }
    }

    /// Under the lock: takes every pool-owned block of lifetime class `life` off the partial
    /// lists (after reclaiming returned blocks) and passes each to `f`; [`HEAPLESS`] blocks
    /// only with `heapless` (they stay listed otherwise).
    pub(crate) fn take_life(
        &self,
        st: &mut PoolState,
        life: usize,
        heapless: bool,
        mut f: impl FnMut(&mut PoolState, &Header),
    ) {
        self.reclaim_abandoned(st);
        for class in 0..CLASS_COUNT {
            let head = life * CLASS_COUNT + class;
            let mut u = *st.partial(head);
            while u != NONE {
                let h = self.block(u);
                u = h.next.load(Ordering::Relaxed);
                if heapless || h.holder() != HEAPLESS {
                    self.list_remove(st.partial(head), h);
                    f(st, h);
                }
            }
        }
    }

    /// Resident bytes of every block, in use or kept empty (one `mincore` per unit).
    pub(crate) fn resident_bytes(&self) -> usize {
        let r = &self.region;
        let carved = r.carved_units(&self.state.lock().region);
        (0..carved)
            .filter(|&u| r.unit_state(u) != crate::region::UNUSED)
            // SAFETY: units below the carved bound are mapped.
            .map(|u| unsafe { os::resident_bytes(r.unit_addr(u), crate::class::UNIT) })
            .sum()
    }

    /// True when blocks with owner `token` belong to a heap whose thread has exited.
    pub(crate) fn owner_is_abandoned(&self, token: u64) -> bool {
        let heap = self.heap((token & 0xffff) as u32);
        // SAFETY: registered heaps stay mapped for the pool's life.
        !heap.is_null() && unsafe { (*heap).token == token && (*heap).is_abandoned() }
    }

    /// True when the heap with id `id` is registered and its thread has exited (the pool
    /// holds it).
    pub(crate) fn heap_is_abandoned(&self, id: u32) -> bool {
        let heap = self.heap(id);
        // SAFETY: registered heaps stay mapped for the pool's life.
        !heap.is_null() && unsafe { (*heap).is_abandoned() }
    }

    /// Under the lock: gives the memory of a block that is empty and on no list back to
    /// the OS.
    pub(crate) fn release_block(&self, st: &mut PoolState, h: &Header) {
        self.give_block(st, h, 0);
    }

    fn give_block(&self, st: &mut PoolState, h: &Header, retain: usize) {
        let shift = h.geometry().block_shift;
        let s = (shift - UNIT_SHIFT) as usize;
        if st.retained_count[s] < retain {
            // Frees read the key only to reject stale pointers: they now fail the check.
            h.set_pool_empty();
            h.next.store(st.retained[s], Ordering::Relaxed);
            st.retained[s] = self.unit(h);
            st.retained_count[s] += 1;
        } else {
            // SAFETY: the block is ours, empty and on no list.
            unsafe { self.region.give_back(&mut st.region, h.base(), shift) };
        }
    }

    /// Under the lock: hands a heap's block to the pool (thread exit, or a heap leaving).
    pub(crate) fn adopt_block(&self, st: &mut PoolState, h: &Header) {
        h.set_owner(0);
        // Current, or retired FULL and relisted by a remote free: a listed block now.
        h.set_role(Role::Listed);
        // A heap's tiny block: its allocations are the pool's now. (A `HEAPLESS` block
        // relisted from the pool's returned stack stays theirs.)
        if h.holder() != HEAPLESS {
            h.set_holder(NO_HOLDER);
        }
        if h.free.load(Ordering::Relaxed) == 0 {
            h.collect_remote();
        }
        // Live, not used: slots on the remote list (when the local list kept it from being
        // collected) are free too.
        if h.live() == 0 {
            self.give_empty(st, h);
        } else {
            let head = h.life() * CLASS_COUNT + h.class();
            self.list_push(st.partial(head), h);
        }
    }

    /// Under the lock: the full blocks of the pool and of exited threads' heaps that were
    /// freed into since become pool-owned partial blocks.
    pub(crate) fn reclaim_abandoned(&self, st: &mut PoolState) {
        self.adopt_stack(st, &self.returned);
        let mut heap = st.abandoned;
        while !heap.is_null() {
            // SAFETY: heaps on the abandoned list stay mapped and are owned by the lock.
            let hp = unsafe { &*heap };
            self.adopt_stack(st, &hp.returned);
            heap = hp.next_abandoned;
        }
    }

    fn adopt_stack(&self, st: &mut PoolState, stack: &BlockStack) {
        let mut u = stack.take_all();
        while u != NONE {
            let h = self.block(u);
            u = h.returned_next.load(Ordering::Relaxed);
            self.adopt_block(st, h);
        }
    }

    /// Lists a block again after a free cleared its `FULL` flag: on its owner's returned
    /// stack, or the pool's for a pool-owned block (lock-free).
    pub(crate) fn relist(&self, h: &Header) {
        // The caller's push found FULL with an Acquire CAS, pairing with the owner's Release
        // in `try_retire`, which came after its store of `owner`: the load sees the current
        // owner. A FULL block is on no list, so its owner cannot change before this push.
        let heap = self.heap((h.owner_acquire() & 0xffff) as u32);
        let stack = if heap.is_null() {
            &self.returned
        } else {
            // SAFETY: registered heaps stay mapped for the pool's life.
            unsafe { &(*heap).returned }
        };
        stack.push(self.unit(h), h);
    }

    /// Under the lock, for a thread without a heap: takes a slot of (class, life) from a
    /// pool-owned block, which becomes [`HEAPLESS`] (see the module docs). Before saying
    /// out of memory, gives every empty block the pool holds back to the OS and tries
    /// again. Returns the slot and whether it reads zero.
    pub(crate) fn alloc_locked(
        &self,
        st: &mut PoolState,
        class: usize,
        life: usize,
    ) -> Option<(*mut u8, bool)> {
        self.alloc_heapless(st, class, life).or_else(|| {
            (self.release_empty(st) > 0).then(|| self.alloc_heapless(st, class, life))?
        })
    }

    fn alloc_heapless(
        &self,
        st: &mut PoolState,
        class: usize,
        life: usize,
    ) -> Option<(*mut u8, bool)> {
        let head = life * CLASS_COUNT + class;
        loop {
            let first = *st.partial(head);
            let h = if first == NONE {
                let h = self.take_block(st, class, life, 0)?;
                self.list_push(st.partial(head), h);
                h
            } else {
                self.block(first)
            };
            h.set_holder(HEAPLESS);
            let got = if h.geometry().is_tiny() {
                // SAFETY: tiny blocks are pool-owned; we hold the lock.
                unsafe { tiny::pop(h) }
            } else {
                h.pop().or_else(|| h.refill().then(|| h.pop()).flatten())
            };
            if let Some((off, zeroed)) = got {
                if h.geometry().is_tiny() && h.used() == h.capacity() {
                    // A full tiny block is on no list; `free_tiny` lists it again.
                    self.list_remove(st.partial(head), h);
                }
                return Some((h.base().wrapping_add(off as usize), zeroed));
            }
            // Full: it leaves the list; frees find it again through `free_tiny` (tiny) or
            // its remote list (collected when it is next adopted).
            self.list_remove(st.partial(head), h);
            if !h.geometry().is_tiny() && !h.try_retire() {
                self.list_push(st.partial(head), h);
            }
        }
    }

    /// Under the lock: frees a slot of a pool-owned tiny block.
    ///
    /// # Safety
    /// `off` is a live slot of tiny block `h`.
    pub(crate) unsafe fn free_tiny(&self, st: &mut PoolState, h: &Header, off: u32) {
        // SAFETY: the caller guarantees the slot; we hold the lock that owns tiny blocks.
        let used = unsafe { tiny::push(h, off) };
        if used == h.capacity() {
            // It was full and off every list: back on its holder's.
            let list = self.tiny_list(st, h);
            self.list_push(list, h);
        } else if used == 1 {
            let list = self.tiny_list(st, h);
            self.list_remove(list, h);
            self.give_empty(st, h);
        }
    }

    /// Under the lock: the list a tiny block with a free slot is on: its holder heap's
    /// tiny head, else the pool's partial list. A block whose holder's thread has exited
    /// (it was full when the heap was abandoned, so on no list) becomes the pool's.
    fn tiny_list<'a>(&self, st: &'a mut PoolState, h: &Header) -> &'a mut u32 {
        let holder = h.holder();
        if holder != NO_HOLDER && holder != HEAPLESS {
            let heap = self.heap(holder);
            if !heap.is_null() && !self.heap_is_abandoned(holder) {
                // SAFETY: registered heaps stay mapped; a live heap's tiny heads are
                // touched only under the pool lock, which `st` proves we hold.
                return unsafe { (*heap).tiny_list(h.class(), h.life()) };
            }
            h.set_holder(NO_HOLDER);
        }
        st.partial(h.life() * CLASS_COUNT + h.class())
    }
}
