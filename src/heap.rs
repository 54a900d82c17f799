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
//! `Listed` when a local free came after the remote one that relisted it), and on no list.
//! Only the owning thread reads or writes a heap's heads; other threads touch only
//! `returned` and `state`.
//!
//! **Tiny heads.** The heads of the tiny classes (1- and 2-byte slots, see [`crate::tiny`])
//! have no current block; their partial lists hold the heap's tiny blocks with a free slot.
//! Those blocks are pool-owned (`owner == 0`) with the heap's id as their holder, so that
//! releasing a lifetime class knows whose they are; they are served and freed under the
//! pool lock, and a heap's tiny heads are read and written only under that lock, by any
//! thread (a free lists a block on its holder's head again).
//!
//! Life cycle: a thread joins a heap on its first allocation in an instance (adopting the
//! heap of an exited thread when there is one). When the thread exits, its heap hands its
//! current and partial blocks to the pool, keeps its `FULL` blocks (they come back through
//! `returned`) and waits on the pool's abandoned list for the next thread. The exit path
//! takes the pool lock but never allocates.

use crate::block::{BlockList, BlockStack, Header, LocalFree, Role};
use crate::class::{HeadIndex, Lookup, LOOKUP};
use crate::os;
use crate::pool::{Pool, PoolState};
use crate::sync::{spin_hint, AtomicU64, AtomicU8, Ordering};
use crate::tiny;
use core::cell::Cell;
use core::ptr;

const LIVE: u8 = 0;
const EXITING: u8 = 1;
const ABANDONED: u8 = 2;
const ORPHANED: u8 = 3;

/// One head of a heap: references into the heap's two arrays.
pub(crate) struct HeapHead<'a> {
    /// The block the fast paths allocate from: [`EMPTY_BLOCK`] when there is none.
    pub(crate) current: &'a mut *const Header,
    /// The partial list.
    pub(crate) partial: &'a mut BlockList,
}

/// A heap. Its heads follow it in the same mapping: first the current block of every head
/// (the fast path reads one pointer, indexed by `life * CLASS_COUNT + class`), then the
/// partial list of every head.
#[repr(C)]
pub(crate) struct Heap {
    /// The instance the heap belongs to (never reused, so a stale heap never matches).
    pub(crate) instance: u64,
    /// The heap's index in its pool's registry.
    pub(crate) id: u32,
    /// `instance << 16 | id`: unique in the process; `Header::owner` of its blocks.
    pub(crate) token: u64,
    /// The concurrency group it was joined with ([`THREAD_GROUP`] for thread heaps).
    group: usize,
    state: AtomicU8,
    pool: *const Pool,
    /// Next heap of the same thread (other instances).
    thread_next: *mut Heap,
    /// Next heap on the pool's abandoned list.
    pub(crate) next_abandoned: *mut Heap,
    /// Blocks a remote free took out of `FULL` state.
    pub(crate) returned: BlockStack,
    mapped_len: usize,
}

/// The block of every head that has none: `pop` on it always fails, so the fast path needs
/// no separate test for "no block" (mimalloc's empty-page trick). Never written.
pub(crate) static EMPTY_BLOCK: Header = Header::sentinel();

/// The current block of every head, `CLASS_COUNT * life_count` of them, after the heap.
#[inline(always)]
fn currents(heap: *const Heap) -> *mut *const Header {
    heap.cast::<u8>()
        .wrapping_add(size_of::<Heap>())
        .cast::<*const Header>()
        .cast_mut()
}

/// The current block of (class, life).
///
/// # Safety
/// `heap` is a live heap and `life * CLASS_COUNT + class` is below its head count.
#[inline(always)]
pub(crate) unsafe fn current_block(heap: *const Heap, class: usize, life: usize) -> *const Header {
    // SAFETY: in bounds by the caller's guarantee.
    unsafe { *currents(heap).add(HeadIndex::new(class, life).get()) }
}

/// Head `i` of a heap with `heads` heads.
///
/// # Safety
/// `heap` is a live heap the calling thread owns, `i < heads`, and no other reference to
/// that head is alive.
#[inline]
unsafe fn head_at<'a>(heap: *const Heap, heads: usize, i: usize) -> HeapHead<'a> {
    debug_assert!(i < heads);
    // SAFETY: both arrays hold `heads` entries; exclusivity is the caller's.
    unsafe {
        let current = &mut *currents(heap).add(i);
        let partial = &mut *currents(heap).add(heads).cast::<BlockList>().add(i);
        HeapHead { current, partial }
    }
}

impl Heap {
    /// Maps and registers a new heap. Null when the OS refuses or the registry is full.
    fn create(pool: &Pool, instance: u64, group: usize) -> *mut Heap {
        let heads_len = HeadIndex::count(pool.life_count);
        let head_bytes = size_of::<*const Header>() + size_of::<BlockList>();
        let Some(len) = os::page_round(size_of::<Heap>() + heads_len * head_bytes) else {
            return ptr::null_mut();
        };
        // The id first: with the registry full, a thread without a heap allocates through
        // the pool on every call, and must not map and unmap a heap each time. (An id whose
        // mapping the OS then refuses stays unused.)
        let id = pool.reserve_id();
        if id == 0 {
            return ptr::null_mut();
        }
        let heap = os::map(len, os::PAGE).cast::<Heap>();
        if heap.is_null() {
            return heap;
        }
        #[cfg(test)]
        hooks::HEAPS_MAPPED_HERE.with(|n| n.set(n.get() + 1));
        // SAFETY: the mapping holds the heap and its heads, and is ours alone until
        // registered.
        unsafe {
            ptr::write(
                heap,
                Heap {
                    instance,
                    id: 0,
                    token: 0,
                    group,
                    state: AtomicU8::new(LIVE),
                    pool,
                    thread_next: ptr::null_mut(),
                    next_abandoned: ptr::null_mut(),
                    returned: BlockStack::new(),
                    mapped_len: len,
                },
            );
            for i in 0..heads_len {
                let head = head_at(heap, heads_len, i);
                *head.current = &EMPTY_BLOCK;
                *head.partial = BlockList::new();
            }
            (*heap).id = id;
            (*heap).token = instance << 16 | id as u64;
            pool.publish(id, heap);
        }
        heap
    }

    fn heads(&self) -> usize {
        HeadIndex::count(self.pool().life_count)
    }

    /// The head of (class, life).
    ///
    /// # Safety
    /// The calling thread owns the heap; class < CLASS_COUNT, life < life_count; no other
    /// reference to the head is alive.
    unsafe fn head(&self, class: usize, life: usize) -> HeapHead<'_> {
        // SAFETY: forwarded.
        unsafe { head_at(self, self.heads(), HeadIndex::new(class, life).get()) }
    }

    fn pool(&self) -> &Pool {
        // SAFETY: a heap never outlives its pool while it is in use (orphaned heaps are
        // only released, never used).
        unsafe { &*self.pool }
    }

    /// The slow path of malloc: the current block of (class, life) has no slot on its
    /// local free list or in its bump window. Finds one (the block's remote frees, then the
    /// first listed block if it has freed slots, then the block's next bump window, then
    /// the partial list, the pool), makes it current and takes a slot from it. Before
    /// saying out of memory (`None`), gives back every empty block it may
    /// ([`release_empty`]) and tries once more.
    #[cold]
    #[inline(never)]
    pub(crate) fn alloc_slow(&self, class: usize, life: usize) -> Option<(*mut u8, bool)> {
        self.alloc_from_heads(class, life).or_else(|| {
            let pool = self.pool();
            // When this is an explicit join's heap, the calling thread's own heap of the
            // instance may hold empty blocks too (`compact` gives those back).
            let own = find_own(self.instance);
            let mut st = pool.lock();
            let mut freed = release_empty(Some(self), pool, &mut st);
            if !own.is_null() && !ptr::eq(own, self) {
                // SAFETY: the calling thread's own heap: it is its owner, and no reference
                // to its heads is alive (the thread is inside this join's allocation).
                freed += unsafe { (*own).give_back_empty(&mut st) };
            }
            drop(st);
            (freed > 0).then(|| self.alloc_from_heads(class, life))?
        })
    }

    /// [`Heap::alloc_slow`] without the last resort.
    fn alloc_from_heads(&self, class: usize, life: usize) -> Option<(*mut u8, bool)> {
        let pool = self.pool();
        // SAFETY: callers are the owning thread, with class < CLASS_COUNT, life < life_count.
        let head = unsafe { self.head(class, life) };
        loop {
            if !ptr::eq(*head.current, &EMPTY_BLOCK) {
                // SAFETY: a current block is a live block owned by this heap.
                let h = unsafe { &**head.current };
                if let Some((off, zeroed)) = h.pop() {
                    return Some((h.base().wrapping_add(off as usize), zeroed));
                }
                // Slots other threads freed first, then those of the next listed block,
                // then never-used ones: reusing what comes back keeps the touched pages
                // near what is live.
                if h.collect_remote() > 0 {
                    continue;
                }
                self.drain_returned();
                let next = head.partial.first(pool.units());
                if let Some(next) = next.filter(|next| next.has_freed_slots()) {
                    // The next listed block becomes current; this one keeps its never-used
                    // slots for later, listed.
                    head.partial.remove(pool.units(), next);
                    h.set_role(Role::Listed);
                    head.partial.push(pool.units(), h);
                    next.set_role(Role::Current);
                    *head.current = next;
                    continue;
                }
                if h.advance_window() || !h.try_retire() {
                    continue;
                }
                *head.current = &EMPTY_BLOCK;
            }
            self.drain_returned();
            let h = match head.partial.pop(pool.units()) {
                Some(h) => h,
                None => {
                    let mut st = pool.lock();
                    pool.take_block(&mut st, class, life, self.token)?
                }
            };
            h.set_role(Role::Current);
            *head.current = h;
        }
    }

    /// A tiny allocation (1- or 2-byte class) by the owner: a slot from the heap's tiny
    /// blocks of (class, life), under the pool lock (see the module docs). Before saying out
    /// of memory, gives back every empty block it may and tries once more.
    pub(crate) fn alloc_tiny(&self, class: usize, life: usize) -> Option<(*mut u8, bool)> {
        let pool = self.pool();
        let mut st = pool.lock();
        self.alloc_tiny_locked(&mut st, class, life).or_else(|| {
            (release_empty(Some(self), pool, &mut st) > 0)
                .then(|| self.alloc_tiny_locked(&mut st, class, life))?
        })
    }

    fn alloc_tiny_locked(
        &self,
        st: &mut PoolState,
        class: usize,
        life: usize,
    ) -> Option<(*mut u8, bool)> {
        let pool = self.pool();
        // SAFETY: a tiny head, under the pool lock (`st`); no other reference to it is alive.
        let list = unsafe { self.tiny_list(class, life) };
        loop {
            let h = match list.first(pool.units()) {
                Some(h) => h,
                None => {
                    let h = pool.take_block(st, class, life, 0)?;
                    h.set_holder(self.id);
                    list.push(pool.units(), h);
                    h
                }
            };
            // SAFETY: a tiny block (pool-owned), under the pool lock.
            let got = unsafe { tiny::pop(h) };
            if got.is_none() || h.used() == h.capacity() {
                // Full: on no list until a free (`Pool::free_tiny`) lists it again.
                list.remove(pool.units(), h);
            }
            if let Some((off, zeroed)) = got {
                return Some((h.base().wrapping_add(off as usize), zeroed));
            }
        }
    }

    /// The partial list of tiny head (class, life).
    ///
    /// # Safety
    /// `class` is a tiny class and `life < life_count`; the caller holds the pool lock (any
    /// thread) and keeps no other reference to the list.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn tiny_list(&self, class: usize, life: usize) -> &mut BlockList {
        debug_assert!(crate::class::CLASSES[class].is_tiny());
        // SAFETY: in bounds (caller); tiny heads are guarded by the pool lock.
        unsafe { head_at(self, self.heads(), HeadIndex::new(class, life).get()) }.partial
    }

    /// A free by the owner: pushes slot `p` on the block's local list, and takes the slow
    /// path when the block's count says so. Returns false, having done nothing, when the
    /// slot is the first of the list already (a double free, for the caller to report).
    ///
    /// # Safety
    /// `p` is a slot of block `h`, which this heap owns, live or the first of its free list.
    #[must_use]
    pub(crate) unsafe fn free_local(&self, h: &Header, p: *mut u8) -> bool {
        // SAFETY: forwarded.
        match unsafe { h.push_local(p) } {
            LocalFree::Done => true,
            LocalFree::Slow => {
                self.free_slow(h);
                true
            }
            LocalFree::AlreadyFree => false,
        }
    }

    /// The slow path of a local free: `push_local` took the block's count to 0, so the
    /// block was retired `FULL` and this free brings it back, or it is listed and now
    /// empty (see [`Role`]).
    #[cold]
    #[inline(never)]
    pub(crate) fn free_slow(&self, h: &Header) {
        let pool = self.pool();
        // SAFETY: the block is this heap's, so its key names a head of this heap.
        let head = unsafe { self.head(h.class(), h.life()) };
        match h.role() {
            Role::Full => {
                h.set_role(Role::Listed);
                // When a remote free cleared FULL first, it put the block on `returned`.
                if h.clear_full() {
                    head.partial.push(pool.units(), h);
                }
            }
            Role::Listed => {
                head.partial.remove(pool.units(), h);
                let mut st = pool.lock();
                pool.give_empty(&mut st, h);
            }
            Role::Current => unreachable!("a current block's count never reaches 0"),
        }
    }

    /// The slow path of a local free by the thread's current heap (the free fast path
    /// does not load the heap).
    #[cold]
    #[inline(never)]
    pub(crate) fn free_slow_current(h: &Header) {
        CURRENT.with(|c| {
            // SAFETY: only called when the first slot's tag matched the block's owner, so
            // its heap is live and owns the block.
            unsafe { (*c.slots[0].heap.get()).free_slow(h) }
        })
    }

    /// Lists the blocks on `returned` on their heads' partial lists.
    fn drain_returned(&self) {
        let pool = self.pool();
        for h in self.returned.take_all(pool.units()) {
            // SAFETY: returned blocks are owned by this heap; their key names its heads.
            let head = unsafe { self.head(h.class(), h.life()) };
            h.set_role(Role::Listed);
            head.partial.push(pool.units(), h);
        }
    }

    /// Every block this heap owns that is on one of its heads, with `true` for the current
    /// blocks and `false` for the partial ones.
    pub(crate) fn for_each_listed(&self, mut f: impl FnMut(&Header, bool)) {
        let pool = self.pool();
        for i in pool.heads() {
            // SAFETY: i is below the head count; the head is only read here.
            let head = unsafe { head_at(self, self.heads(), i.get()) };
            if !ptr::eq(*head.current, &EMPTY_BLOCK) {
                // SAFETY: a current block is live.
                f(unsafe { &**head.current }, true);
            }
            for h in head.partial.iter(pool.units()) {
                f(h, false);
            }
        }
    }

    /// Owner only, releasing lifetime class `life`: passes every block of the class on this
    /// heap's heads (after listing its returned blocks) to `f`, with `true` for the current
    /// blocks, which stay current (the caller empties them in place, so the next
    /// allocations of the class reuse them with no system call: a request loop releases
    /// its class after every request) and `false` for the others, which leave the heap.
    pub(crate) fn release_life(&self, life: usize, mut f: impl FnMut(&Header, bool)) {
        self.drain_returned();
        let pool = self.pool();
        for i in HeadIndex::of_life(life) {
            // SAFETY: the owner, a valid class and life.
            let head = unsafe { self.head(i.class(), i.life()) };
            if !ptr::eq(*head.current, &EMPTY_BLOCK) {
                // SAFETY: a current block is live.
                f(unsafe { &**head.current }, true);
            }
            while let Some(h) = head.partial.pop(pool.units()) {
                f(h, false);
            }
        }
    }

    /// Owner only, under the pool lock: gives every block of this heap's heads that holds
    /// no live slot back to the OS. Returns how many.
    pub(crate) fn give_back_empty(&self, st: &mut PoolState) -> usize {
        let pool = self.pool();
        let mut given = 0;
        for i in pool.heads() {
            // SAFETY: the owner; i is below the head count.
            let head = unsafe { head_at(self, self.heads(), i.get()) };
            if !ptr::eq(*head.current, &EMPTY_BLOCK) {
                // SAFETY: a current block is live.
                let h = unsafe { &**head.current };
                if h.live() == 0 {
                    h.set_role(Role::Listed);
                    *head.current = &EMPTY_BLOCK;
                    pool.release_block(st, h);
                    given += 1;
                }
            }
            for h in head.partial.iter(pool.units()) {
                if h.live() == 0 {
                    head.partial.remove(pool.units(), h);
                    pool.release_block(st, h);
                    given += 1;
                }
            }
        }
        given
    }

    /// Under the pool lock, with exclusive use of the instance: true when a thread (or
    /// join) still holds the heap, so the caller may act as its owner until it unlocks.
    /// Such a heap is LIVE (its owner does not use the instance meanwhile) or EXITING (its
    /// owner waits for the lock and has not touched the heap since: see `abandon`); an
    /// ABANDONED heap is the pool's, an ORPHANED one cannot be while the instance lives.
    /// Nothing waits here: a wait under the lock for an EXITING heap would never end, since
    /// its thread needs the lock to finish.
    pub(crate) fn held_by_thread(&self, _locked: &PoolState) -> bool {
        matches!(self.state.load(Ordering::Acquire), LIVE | EXITING)
    }

    /// True when the heap's thread has exited and the pool holds the heap.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.state.load(Ordering::Acquire) == ABANDONED
    }

    /// Thread exit, or the leave of an explicit join: hands the heap's listed blocks to
    /// the pool and parks the heap on the pool's abandoned list, or releases it if its
    /// instance is gone.
    ///
    /// # Safety
    /// `heap` is the caller's (its thread's, or its join's), which uses it no more.
    pub(crate) unsafe fn abandon(heap: *mut Heap) {
        // SAFETY: heaps stay mapped until released below or by the instance's teardown,
        // which waits for EXITING heaps.
        let hp = unsafe { &*heap };
        // EXITING pins the pool: teardown waits for the heap to be ABANDONED. Nothing is
        // done with the heap until the pool lock is held, so that the lock holders (`scope`,
        // the fork handlers) see an EXITING heap untouched.
        if hp
            .state
            .compare_exchange(LIVE, EXITING, Ordering::Acquire, Ordering::Acquire)
            .is_err()
        {
            // ORPHANED: the instance is gone and left this heap to its thread.
            // SAFETY: nobody else references an orphaned heap.
            unsafe { Heap::unmap(heap) };
            return;
        }
        #[cfg(test)]
        hooks::after_exiting(hp.pool());
        let pool = hp.pool();
        let mut st = pool.lock();
        hp.drain_returned();
        for i in pool.heads() {
            // SAFETY: i is below the head count; the heap is ours until ABANDONED.
            let head = unsafe { head_at(heap, hp.heads(), i.get()) };
            if !ptr::eq(*head.current, &EMPTY_BLOCK) {
                // SAFETY: a current block is live.
                let h = unsafe { &**head.current };
                pool.adopt_block(&mut st, h);
                *head.current = &EMPTY_BLOCK;
            }
            while let Some(h) = head.partial.pop(pool.units()) {
                pool.adopt_block(&mut st, h);
            }
        }
        hp.thread_next_reset();
        // SAFETY: the pool lock is held; the abandoned list owns the heap from now on.
        unsafe { (*heap).next_abandoned = st.abandoned };
        st.abandoned = heap;
        hp.state.store(ABANDONED, Ordering::Release);
        // From here on an instance teardown may release the heap (it is ABANDONED), but the
        // guard's unlock below still writes to the pool: teardown takes the pool lock once
        // before the pool is destroyed, so it waits for this unlock.
        #[cfg(test)]
        hooks::after_abandoned(pool);
        drop(st);
    }

    /// Unmaps a heap nobody references any more.
    ///
    /// # Safety
    /// `heap` is a heap no thread, join, list or registry of a live pool reaches.
    unsafe fn unmap(heap: *mut Heap) {
        #[cfg(test)]
        hooks::HEAPS_UNMAPPED_HERE.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's guarantee; the length is read before the unmap.
        unsafe { os::release(heap.cast(), (*heap).mapped_len) };
    }

    fn thread_next_reset(&self) {
        // SAFETY: only the owning thread touches thread_next.
        unsafe {
            ptr::addr_of!(self.thread_next)
                .cast_mut()
                .write(ptr::null_mut())
        };
    }

    /// In a child process after `fork()`, with the pool lock held: a heap whose thread was
    /// exiting at the fork (EXITING, waiting for the lock the fork handlers held) has no
    /// thread in the child to finish; it is untouched, so it becomes LIVE again, like the
    /// heaps of the parent's other threads (which no thread of the child uses either).
    /// Otherwise the child's teardown of the instance would wait for it forever.
    pub(crate) fn after_fork_in_child(pool: &Pool) {
        for heap in pool.registered_heaps() {
            // SAFETY: registered heaps stay mapped while the pool lives.
            let hp = unsafe { &*heap };
            let _ = hp
                .state
                .compare_exchange(EXITING, LIVE, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// Instance teardown: makes every heap unreachable from the instance. Heaps of running
    /// threads become ORPHANED (the thread releases them at exit); the others are released.
    ///
    /// # Safety
    /// The pool is being destroyed and no thread allocates from it any more.
    pub(crate) unsafe fn teardown(pool: &Pool) {
        for heap in pool.registered_heaps() {
            // SAFETY: registered heaps stay mapped until released here or by their thread.
            let hp = unsafe { &*heap };
            let mut round = 0;
            loop {
                match hp
                    .state
                    .compare_exchange(LIVE, ORPHANED, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => break,
                    Err(EXITING) => {
                        spin_hint(round);
                        round += 1;
                    }
                    Err(_) => {
                        // SAFETY: ABANDONED: no thread references it any more.
                        unsafe { Heap::unmap(heap) };
                        break;
                    }
                }
            }
        }
        // Every heap is ORPHANED or released now, so no thread starts an abandon; but one
        // that stored ABANDONED may still be about to unlock the pool (see `abandon`).
        // Taking the lock once waits for that unlock, its last access to the pool.
        #[cfg(test)]
        hooks::teardown_goes_on(pool);
        drop(pool.lock());
    }
}

/// Under the pool lock: gives back to the OS every empty block the calling thread may:
/// those of its heap `heap` (the calling thread's, if any), the pool's (exited threads'
/// included) and those kept for reuse. What [`crate::Cohort::compact`] does, and the
/// allocation paths' last resort before out of memory. Returns how many, each once.
pub(crate) fn release_empty(heap: Option<&Heap>, pool: &Pool, st: &mut PoolState) -> usize {
    heap.map_or(0, |h| h.give_back_empty(st)) + pool.release_empty(st)
}

/// One heap the calling thread used: its instance, the heap, and the owner word of its
/// blocks without their key ([`owner_tag`] of its token).
struct Slot {
    instance: Cell<u64>,
    heap: Cell<*mut Heap>,
    tag: Cell<u64>,
}

impl Slot {
    /// A slot naming no heap.
    const fn empty() -> Slot {
        Slot {
            instance: Cell::new(0),
            heap: Cell::new(ptr::null_mut()),
            tag: Cell::new(NO_TAG),
        }
    }

    fn set(&self, instance: u64, heap: *mut Heap, tag: u64) {
        self.instance.set(instance);
        self.heap.set(heap);
        self.tag.set(tag);
    }

    fn swap(&self, other: &Slot) {
        self.instance.swap(&other.instance);
        self.heap.swap(&other.heap);
        self.tag.swap(&other.tag);
    }
}

/// The calling thread's state for the fast paths: the heap it used last (`slots[0]`, the
/// only one the fast paths read), the one it used before in another instance (`slots[1]`:
/// the slow paths swap the two when it matches, so that a thread alternating between two
/// instances, a global allocator and a lifetime-class instance say, finds both without a
/// search), and a
/// copy of the class tables (read-only). The copy is there because the fast paths load the
/// thread pointer anyway: a table beside it is one base register away, while a table in the
/// binary needs its own address computation in position-independent code.
///
/// A slot names a live heap of its instance, or an instance that is gone: instance ids and
/// tokens are never reused, so a stale slot matches nothing.
#[repr(C)]
struct Current {
    slots: [Slot; 2],
    lookup: Lookup,
}

/// The tag of no heap: `owner_key ^ key` of no block (it would take token `2^48 - 1`,
/// whose heap id `0xffff` is past the registry's).
const NO_TAG: u64 = u64::MAX;

/// `Header::owner_key ^ key` of every block owned by token `token`, whatever its key:
/// the free fast path compares it with one word ([`crate::block::owner_word`]).
#[inline]
pub(crate) const fn owner_tag(token: u64) -> u64 {
    crate::block::owner_word(token, 0)
}

/// The calling thread's heaps (one per instance it allocated from); its drop is the thread
/// exit hook.
struct Owned {
    first: Cell<*mut Heap>,
}

thread_local! {
    // No destructor: readable at any point of the thread's life, even while other thread
    // locals are being destroyed, and read with one TLS access on the fast path.
    static CURRENT: Current = const {
        Current { slots: [Slot::empty(), Slot::empty()], lookup: LOOKUP }
    };
    static OWNED: Owned = const { Owned { first: Cell::new(ptr::null_mut()) } };
}

impl Drop for Owned {
    fn drop(&mut self) {
        CURRENT.with(|c| {
            for slot in &c.slots {
                slot.set(0, ptr::null_mut(), NO_TAG);
            }
        });
        let mut heap = self.first.replace(ptr::null_mut());
        while !heap.is_null() {
            // SAFETY: heaps on this thread's list are this thread's; read the link before
            // the heap may be released.
            let next = unsafe { (*heap).thread_next };
            // SAFETY: the thread is exiting and uses the heap no more.
            unsafe { Heap::abandon(heap) };
            heap = next;
        }
    }
}

/// Runs `f` on the calling thread's heap for `instance` if it is the one it used last (the
/// fast path: one thread-local read and a compare); `None` otherwise.
#[inline(always)]
pub(crate) fn with_current<R>(instance: u64, f: impl FnOnce(&Heap) -> Option<R>) -> Option<R> {
    CURRENT.with(|c| {
        let slot = &c.slots[0];
        if slot.instance.get() == instance {
            // SAFETY: a slot names a live heap of `instance` whenever its instance matches
            // (see `Current`).
            f(unsafe { &*slot.heap.get() })
        } else {
            None
        }
    })
}

/// The class of a request up to 1 KiB ([`Lookup::exact_class`]), from the thread's tables.
#[inline(always)]
pub(crate) fn exact_class(size: usize, align: usize) -> Option<usize> {
    CURRENT.with(|c| c.lookup.exact_class(size, align))
}

/// True when `word`, a block's `owner_key` xor the key a free expects, is the calling
/// thread's last used heap's tag: the block is that heap's and holds the freed slot's size
/// and lifetime class (the free fast path: one thread-local compare; tokens are unique in
/// the process, so no instance check is needed). CURRENT's tag is a live heap's, or
/// [`NO_TAG`], which matches no block.
#[inline(always)]
pub(crate) fn owns(word: u64) -> bool {
    CURRENT.with(|c| c.slots[0].tag.get() == word)
}

/// The calling thread's heap for `instance` if it is the one it used last; else null.
#[inline]
pub(crate) fn current(instance: u64) -> *mut Heap {
    with_current(instance, |h| Some(ptr::from_ref(h).cast_mut())).unwrap_or(ptr::null_mut())
}

/// If the heap the calling thread used before the last one is of `instance`, swaps the two
/// (it becomes the one the fast paths use) and returns true.
pub(crate) fn promote_instance(instance: u64) -> bool {
    CURRENT.with(|c| {
        let hit = c.slots[1].instance.get() == instance;
        if hit {
            c.slots[0].swap(&c.slots[1]);
        }
        hit
    })
}

/// If the heap the calling thread used before the last one owns blocks with owner `token`,
/// swaps the two (as [`promote_instance`]) and returns it: the slow path of a free tries it
/// before a search.
pub(crate) fn promote_owner<'a>(token: u64) -> Option<&'a Heap> {
    CURRENT.with(|c| {
        if c.slots[1].tag.get() != owner_tag(token) {
            return None;
        }
        c.slots[0].swap(&c.slots[1]);
        // SAFETY: the slot's tag matched, so it names a live heap (see `Current`).
        Some(unsafe { &*c.slots[0].heap.get() })
    })
}

/// Makes `heap`, a live heap of the calling thread in `instance`, the one the fast paths
/// use; the previous one, if of another instance, becomes the second slot.
fn make_current(instance: u64, heap: *mut Heap) {
    debug_assert!(instance != 0 && instance < MAX_INSTANCES, "an instance id");
    // SAFETY: the caller passes a live heap.
    let tag = owner_tag(unsafe { (*heap).token });
    CURRENT.with(|c| {
        let [first, second] = &c.slots;
        if first.instance.get() != instance {
            second.set(first.instance.get(), first.heap.get(), first.tag.get());
        }
        first.set(instance, heap, tag);
    });
}

/// The calling thread's heap for `instance`, joining one if needed. Null when the thread
/// can have none (it is exiting, the registry is full, or the OS refuses memory): the
/// caller then goes through the pool's lock.
#[cold]
#[inline(never)]
pub(crate) fn join(pool: &Pool, instance: u64) -> *mut Heap {
    let found = OWNED.try_with(|owned| {
        let mut heap = find_own(instance);
        if heap.is_null() {
            heap = adopt_or_create(pool, instance, THREAD_GROUP);
            if !heap.is_null() {
                // SAFETY: the heap is ours: fresh or just taken off the abandoned list.
                unsafe { (*heap).thread_next = owned.first.get() };
                owned.first.set(heap);
            }
        }
        heap
    });
    let heap = found.unwrap_or(ptr::null_mut());
    if !heap.is_null() {
        make_current(instance, heap);
    }
    heap
}

/// The calling thread's heap for `instance` if it has one (it never joins one); null
/// otherwise. Heaps of dropped instances (ORPHANED) that the walk meets are unlinked and
/// released: a thread that outlives many instances keeps a short list (a miss walks the
/// whole list, so every join of a new heap prunes it).
pub(crate) fn find_own(instance_wanted: u64) -> *mut Heap {
    OWNED
        .try_with(|owned| {
            let mut at: *mut *mut Heap = owned.first.as_ptr();
            loop {
                // SAFETY: `at` is the list's head or the link of a heap on it; heaps on the
                // thread's list stay mapped until released here or at thread exit, and only
                // this thread touches the links.
                let heap = unsafe { *at };
                if heap.is_null() {
                    return heap;
                }
                // SAFETY: as above.
                let (state, instance, next) = unsafe {
                    (
                        (*heap).state.load(Ordering::Acquire),
                        (*heap).instance,
                        (*heap).thread_next,
                    )
                };
                if state == ORPHANED {
                    // SAFETY: as above.
                    unsafe { *at = next };
                    forget_heap(heap);
                    // SAFETY: the instance is gone (ORPHANED): its teardown touches the heap
                    // no more, and it is now on no list and in no slot.
                    unsafe { Heap::unmap(heap) };
                    continue;
                }
                if instance == instance_wanted {
                    return heap;
                }
                // SAFETY: a mapped heap of the list.
                at = unsafe { ptr::addr_of_mut!((*heap).thread_next) };
            }
        })
        .unwrap_or(ptr::null_mut())
}

/// Releases the calling thread's heaps of dropped instances (after an instance drop).
pub(crate) fn release_orphans() {
    // Instance 0 is never used: the walk meets every heap.
    find_own(0);
}

/// Clears the thread's slots that name `heap`.
fn forget_heap(heap: *mut Heap) {
    let _ = CURRENT.try_with(|c| {
        for slot in &c.slots {
            if slot.heap.get() == heap {
                slot.set(0, ptr::null_mut(), NO_TAG);
            }
        }
    });
}

/// If the calling thread's heap for `instance` has token `owner`, makes it the thread's
/// current heap and returns it.
pub(crate) fn switch_to_own<'a>(instance: u64, owner: u64) -> Option<&'a Heap> {
    let heap = find_own(instance);
    // SAFETY: find_own returns null or a live heap of the calling thread.
    let hp = unsafe { heap.as_ref() }?;
    if hp.token != owner {
        return None;
    }
    make_current(instance, heap);
    Some(hp)
}

/// A heap for a new thread or join of concurrency group `group`: the abandoned heap of the
/// same group if there is one (its blocks were last used there); else, for a thread, any
/// abandoned heap, and for an explicit join, one a thread left; else a new one; else (no
/// new heap can be had) any abandoned heap.
fn adopt_or_create(pool: &Pool, instance: u64, group: usize) -> *mut Heap {
    let heap = adopt(pool, group, false);
    if !heap.is_null() {
        return heap;
    }
    let heap = Heap::create(pool, instance, group);
    if !heap.is_null() {
        return heap;
    }
    // No new heap (the registry is full, or the OS refused): any abandoned heap, whatever
    // its group, rather than none while heaps sit idle (joins that each bring a new hint
    // would otherwise fill the registry and be refused for good).
    adopt(pool, group, true)
}

/// Takes an abandoned heap for a thread or join of `group`, as [`adopt_or_create`] says;
/// with `any`, the first abandoned heap of whatever group. Null when there is none.
fn adopt(pool: &Pool, group: usize, any: bool) -> *mut Heap {
    {
        let mut st = pool.lock();
        // SAFETY: abandoned heaps are owned by the pool lock, which we hold; the walk and
        // the unlink touch only their `next_abandoned` links.
        unsafe {
            let mut at: *mut *mut Heap = &mut st.abandoned;
            while !(*at).is_null() && (**at).group != group {
                at = &mut (**at).next_abandoned;
            }
            if (*at).is_null() {
                at = &mut st.abandoned;
                while !any
                    && group != THREAD_GROUP
                    && !(*at).is_null()
                    && (**at).group != THREAD_GROUP
                {
                    at = &mut (**at).next_abandoned;
                }
            }
            let heap = *at;
            if !heap.is_null() {
                *at = (*heap).next_abandoned;
                (*heap).next_abandoned = ptr::null_mut();
                (*heap).group = group;
                (*heap).state.store(LIVE, Ordering::Release);
                return heap;
            }
        }
    }
    ptr::null_mut()
}

/// An explicit join (not tied to the calling thread): a heap of concurrency group `group`.
/// Null when the OS refuses memory or the registry is full.
pub(crate) fn join_explicit(pool: &Pool, instance: u64, group: usize) -> *mut Heap {
    adopt_or_create(pool, instance, group)
}

/// The concurrency group of thread heaps (explicit joins choose theirs).
pub(crate) const THREAD_GROUP: usize = usize::MAX;

/// Source of instance ids: never reused, never 0.
pub(crate) static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

/// Instance ids are below this, so that a token (`instance << 16 | heap id`) fits the 48
/// bits `Header::owner_key` gives it: the 2^32nd instance a process creates cannot
/// allocate (its calls return null), rather than reuse an id.
pub(crate) const MAX_INSTANCES: u64 = 1 << 32;

/// Test hooks that hold a thread at a chosen point of the heap life cycle, for one pool.
#[cfg(test)]
pub(crate) mod hooks {
    use crate::pool::Pool;
    use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

    /// The pool whose exiting thread pauses after storing ABANDONED.
    pub(crate) static PAUSE_POOL: AtomicPtr<Pool> = AtomicPtr::new(core::ptr::null_mut());
    pub(crate) static PAUSED: AtomicBool = AtomicBool::new(false);
    std::thread_local! {
        /// Heaps the calling thread mapped.
        pub(crate) static HEAPS_MAPPED_HERE: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
        /// Heaps the calling thread unmapped.
        pub(crate) static HEAPS_UNMAPPED_HERE: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
    }

    /// Set when the teardown of the paused pool goes on to destroy it.
    pub(crate) static RESUME: AtomicBool = AtomicBool::new(false);

    pub(crate) fn after_abandoned(pool: &Pool) {
        if !core::ptr::eq(PAUSE_POOL.load(Ordering::Acquire), pool) {
            return;
        }
        PAUSED.store(true, Ordering::Release);
        // Bounded: a failing test must not hang.
        for _ in 0..10_000 {
            if RESUME.load(Ordering::Acquire) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// The pool whose exiting thread pauses after storing EXITING, until `EXIT_GO`.
    pub(crate) static PAUSE_EXITING: AtomicPtr<Pool> = AtomicPtr::new(core::ptr::null_mut());
    pub(crate) static EXITING_PAUSED: AtomicBool = AtomicBool::new(false);
    pub(crate) static EXIT_GO: AtomicBool = AtomicBool::new(false);

    /// Serialises the tests that use the EXITING pause, and resets it.
    pub(crate) fn exiting_pause(pool: *mut Pool) -> std::sync::MutexGuard<'static, ()> {
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        EXITING_PAUSED.store(false, Ordering::Release);
        EXIT_GO.store(false, Ordering::Release);
        PAUSE_EXITING.store(pool, Ordering::Release);
        guard
    }

    pub(crate) fn after_exiting(pool: &Pool) {
        if !core::ptr::eq(PAUSE_EXITING.load(Ordering::Acquire), pool) {
            return;
        }
        EXITING_PAUSED.store(true, Ordering::Release);
        for _ in 0..10_000 {
            if EXIT_GO.load(Ordering::Acquire) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// The teardown of `pool` is about to wait for the pool lock, or destroyed the pool.
    pub(crate) fn teardown_goes_on(pool: *const Pool) {
        if core::ptr::eq(PAUSE_POOL.load(Ordering::Acquire), pool) {
            RESUME.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::hooks;
    use crate::Cohort;
    use std::sync::atomic::Ordering;

    /// Starts a thread that allocates and frees once in `c`, then exits. The caller keeps
    /// `c` alive until the thread's allocation is done (the tests wait for its exit hook).
    fn allocate_once_and_exit(c: &Cohort<()>) -> std::thread::JoinHandle<()> {
        let shared = c as *const Cohort<()> as usize;
        std::thread::spawn(move || {
            // SAFETY: the caller's promise.
            let c = unsafe { &*(shared as *const Cohort<()>) };
            let p = c.malloc(64, ());
            // SAFETY: just allocated.
            unsafe { c.free(p, 64, ()) };
        })
    }

    /// A thread exits (its heap becomes ABANDONED) while another drops the instance: the
    /// drop must not unmap the pool before the exiting thread has unlocked it.
    #[test]
    fn drop_waits_for_an_exiting_thread_to_unlock_the_pool() {
        let c = Box::into_raw(Box::new(Cohort::<()>::new()));
        // SAFETY: c lives until the drop below.
        let pool = unsafe { (*c).pool() }.unwrap() as *const _ as *mut _;
        hooks::PAUSE_POOL.store(pool, Ordering::Release);
        // SAFETY: c lives until the drop below, after the thread's allocation.
        let t = allocate_once_and_exit(unsafe { &*c });
        while !hooks::PAUSED.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        // SAFETY: no thread uses the instance any more (the other one is exiting).
        drop(unsafe { Box::from_raw(c) });
        t.join().unwrap();
        hooks::PAUSE_POOL.store(std::ptr::null_mut(), Ordering::Release);
    }

    /// With every registry id held by a join, a thread without a heap allocates through the
    /// pool: it must not map (and unmap) a heap on every allocation.
    #[test]
    fn a_full_registry_maps_no_heap_per_allocation() {
        let c = Cohort::<()>::new();
        let joins: Vec<_> = (1..crate::pool::MAX_HEAPS)
            .map(|i| c.join(i).expect("a join while the registry has room"))
            .collect();
        assert!(c.join(0).is_none(), "the registry is full");
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..100 {
                    let p = c.malloc(64, ());
                    assert!(!p.is_null());
                    // SAFETY: just allocated.
                    unsafe { c.free(p, 64, ()) };
                }
                let mapped = hooks::HEAPS_MAPPED_HERE.with(|n| n.get());
                assert_eq!(
                    mapped, 0,
                    "heaps mapped by a thread that cannot register one"
                );
            });
        });
        drop(joins);
    }

    /// The calling thread's heap list.
    fn own_heaps() -> usize {
        let mut n = 0;
        let mut heap = super::OWNED.with(|o| o.first.get());
        while !heap.is_null() {
            n += 1;
            // SAFETY: heaps on the thread's list are mapped.
            heap = unsafe { (*heap).thread_next };
        }
        n
    }

    /// Heaps the calling thread mapped and has not unmapped.
    fn heaps_kept_here() -> usize {
        hooks::HEAPS_MAPPED_HERE.with(|n| n.get()) - hooks::HEAPS_UNMAPPED_HERE.with(|n| n.get())
    }

    /// One long-lived thread creates, uses and drops many instances: their heaps are
    /// released as they go, not kept (and walked) until the thread exits.
    #[test]
    fn instances_dropped_on_a_long_lived_thread_release_its_heaps() {
        std::thread::spawn(|| {
            for _ in 0..2000 {
                let c = Cohort::<()>::new();
                let p = c.malloc(64, ());
                // SAFETY: just allocated.
                unsafe { c.free(p, 64, ()) };
            }
            assert!(own_heaps() <= 1, "the thread keeps {} heaps", own_heaps());
            assert!(
                heaps_kept_here() <= 1,
                "{} heaps stay mapped",
                heaps_kept_here()
            );
        })
        .join()
        .unwrap();
    }

    /// An instance dropped by another thread: the thread's heap of it is released on its
    /// next join.
    #[test]
    fn heaps_orphaned_by_another_thread_are_released_on_the_next_join() {
        let keep = Cohort::<()>::new();
        let (tx, rx) = std::sync::mpsc::channel::<usize>();
        let (back, done) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            s.spawn(|| {
                for c in rx {
                    // SAFETY: the main thread drops it only after our answer.
                    let c = unsafe { &*(c as *const Cohort<()>) };
                    let p = c.malloc(64, ());
                    // SAFETY: just allocated.
                    unsafe { c.free(p, 64, ()) };
                    back.send(()).unwrap();
                }
                let p = keep.malloc(64, ());
                // SAFETY: just allocated.
                unsafe { keep.free(p, 64, ()) };
                assert!(own_heaps() <= 2, "the thread keeps {} heaps", own_heaps());
            });
            for _ in 0..200 {
                let c = Box::new(Cohort::<()>::new());
                tx.send(&*c as *const Cohort<()> as usize).unwrap();
                done.recv().unwrap();
                drop(c);
            }
            drop(tx);
        });
    }

    /// `scope` (exclusive use, under the pool lock) while a thread that used the instance
    /// is exiting: neither waits for the other forever.
    #[test]
    fn scope_while_a_thread_exits_does_not_deadlock() {
        let mut c = Box::new(Cohort::<()>::new());
        let pool = c.pool().unwrap() as *const _ as *mut _;
        let _one = hooks::exiting_pause(pool);
        let t = allocate_once_and_exit(&c);
        while !hooks::EXITING_PAUSED.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let scoper = std::thread::spawn(move || {
            c.scope((), |_, _| ());
            tx.send(()).unwrap();
            c
        });
        let finished = rx.recv_timeout(std::time::Duration::from_secs(30));
        hooks::EXIT_GO.store(true, Ordering::Release);
        assert!(
            finished.is_ok(),
            "scope waited forever for the exiting thread"
        );
        t.join().unwrap();
        hooks::PAUSE_EXITING.store(std::ptr::null_mut(), Ordering::Release);
        drop(scoper.join().unwrap());
    }

    /// fork while a thread is exiting (its heap EXITING, waiting for the pool lock the fork
    /// handlers hold): the child, which has no such thread, can still drop the instance.
    #[test]
    fn fork_while_a_thread_exits_leaves_the_child_able_to_drop_the_instance() {
        let c = Box::new(Cohort::<()>::new());
        let pool = c.pool().unwrap() as *const _ as *mut _;
        let _one = hooks::exiting_pause(pool);
        let t = allocate_once_and_exit(&c);
        while !hooks::EXITING_PAUSED.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        // SAFETY: the child only drops the instance and exits through _exit; the alarm
        // turns a hang into a failure.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: as above.
            unsafe {
                libc::alarm(10);
                drop(c);
                libc::_exit(0);
            }
        }
        hooks::EXIT_GO.store(true, Ordering::Release);
        let mut status = 0;
        // SAFETY: our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        t.join().unwrap();
        hooks::PAUSE_EXITING.store(std::ptr::null_mut(), Ordering::Release);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child hung dropping the instance (status {status:#x})"
        );
    }
}
