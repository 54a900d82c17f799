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
//! Life cycle: a thread joins a heap on its first allocation in an instance (adopting the
//! heap of an exited thread when there is one). When the thread exits, its heap hands its
//! current and partial blocks to the pool, keeps its `FULL` blocks (they come back through
//! `returned`) and waits on the pool's abandoned list for the next thread. The exit path
//! takes the pool lock but never allocates.

use crate::block::{BlockStack, Header, LocalFree, Role, NONE};
use crate::class::{Lookup, CLASS_COUNT, LOOKUP};
use crate::os;
use crate::pool::{Pool, PoolState};
use crate::sync::{spin_hint, AtomicU64, AtomicU8, Ordering};
use core::cell::Cell;
use core::ptr;

const LIVE: u8 = 0;
const EXITING: u8 = 1;
const ABANDONED: u8 = 2;
const ORPHANED: u8 = 3;
/// Held by a caller with exclusive use of the instance (`Cohort::scope`) for a moment; the
/// heap's thread, if it exits meanwhile, waits.
const BORROWED: u8 = 4;

/// One head of a heap: references into the heap's two arrays.
pub(crate) struct HeapHead<'a> {
    /// The block the fast paths allocate from: [`EMPTY_BLOCK`] when there is none.
    pub(crate) current: &'a mut *const Header,
    /// First block of the partial list (unit index, `NONE` when empty).
    pub(crate) partial: &'a mut u32,
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
    unsafe { *currents(heap).add(life * CLASS_COUNT + class) }
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
        let partial = &mut *currents(heap).add(heads).cast::<u32>().add(i);
        HeapHead { current, partial }
    }
}

impl Heap {
    /// Maps and registers a new heap. Null when the OS refuses or the registry is full.
    fn create(pool: &Pool, instance: u64, group: usize) -> *mut Heap {
        let heads_len = CLASS_COUNT * pool.life_count;
        let head_bytes = size_of::<*const Header>() + size_of::<u32>();
        let Some(len) = os::page_round(size_of::<Heap>() + heads_len * head_bytes) else {
            return ptr::null_mut();
        };
        let heap = os::map(len, os::PAGE).cast::<Heap>();
        if heap.is_null() {
            return heap;
        }
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
                *head.partial = NONE;
            }
            let id = pool.register(heap);
            if id == 0 {
                os::release(heap.cast(), len);
                return ptr::null_mut();
            }
            (*heap).id = id;
            (*heap).token = instance << 16 | id as u64;
        }
        heap
    }

    fn heads(&self) -> usize {
        CLASS_COUNT * self.pool().life_count
    }

    /// The head of (class, life).
    ///
    /// # Safety
    /// The calling thread owns the heap; class < CLASS_COUNT, life < life_count; no other
    /// reference to the head is alive.
    unsafe fn head(&self, class: usize, life: usize) -> HeapHead<'_> {
        // SAFETY: forwarded.
        unsafe { head_at(self, self.heads(), life * CLASS_COUNT + class) }
    }

    fn pool(&self) -> &Pool {
        // SAFETY: a heap never outlives its pool while it is in use (orphaned heaps are
        // only released, never used).
        unsafe { &*self.pool }
    }

    /// The slow path of malloc: the current block of (class, life) has no free slot. Finds
    /// one (remote frees, returned blocks, the partial list, the pool), makes it current and
    /// takes a slot from it. `None` when memory is exhausted.
    #[cold]
    #[inline(never)]
    pub(crate) fn alloc_slow(&self, class: usize, life: usize) -> Option<(*mut u8, bool)> {
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
                if h.collect_remote() > 0 || !h.try_retire() {
                    continue;
                }
                *head.current = &EMPTY_BLOCK;
            }
            self.drain_returned();
            let h = match pool.list_pop(head.partial) {
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
                    pool.list_push(head.partial, h);
                }
            }
            Role::Listed => {
                pool.list_remove(head.partial, h);
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
        let mut u = self.returned.take_all();
        while u != NONE {
            let h = pool.block(u);
            u = h.returned_next.load(Ordering::Relaxed);
            // SAFETY: returned blocks are owned by this heap; their key names its heads.
            let head = unsafe { self.head(h.class(), h.life()) };
            h.set_role(Role::Listed);
            pool.list_push(head.partial, h);
        }
    }

    /// Every block this heap owns that is on one of its heads, with `true` for the current
    /// blocks and `false` for the partial ones.
    pub(crate) fn for_each_listed(&self, mut f: impl FnMut(&Header, bool)) {
        let pool = self.pool();
        for i in 0..self.heads() {
            // SAFETY: i is below the head count; the head is only read here.
            let head = unsafe { head_at(self, self.heads(), i) };
            if !ptr::eq(*head.current, &EMPTY_BLOCK) {
                // SAFETY: a current block is live.
                f(unsafe { &**head.current }, true);
            }
            let mut u = *head.partial;
            while u != NONE {
                let h = pool.block(u);
                u = h.next.load(Ordering::Relaxed);
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
        for class in 0..CLASS_COUNT {
            // SAFETY: the owner, a valid class and life.
            let head = unsafe { self.head(class, life) };
            if !ptr::eq(*head.current, &EMPTY_BLOCK) {
                // SAFETY: a current block is live.
                f(unsafe { &**head.current }, true);
            }
            while let Some(h) = pool.list_pop(head.partial) {
                f(h, false);
            }
        }
    }

    /// Owner only, under the pool lock: gives every block of this heap's heads that holds
    /// no live slot to the pool. Returns how many.
    pub(crate) fn give_back_empty(&self, st: &mut PoolState) -> usize {
        let pool = self.pool();
        let mut given = 0;
        for i in 0..self.heads() {
            // SAFETY: the owner; i is below the head count.
            let head = unsafe { head_at(self, self.heads(), i) };
            if !ptr::eq(*head.current, &EMPTY_BLOCK) {
                // SAFETY: a current block is live.
                let h = unsafe { &**head.current };
                if h.live() == 0 {
                    h.set_role(Role::Listed);
                    *head.current = &EMPTY_BLOCK;
                    pool.give_empty(st, h);
                    given += 1;
                }
            }
            let mut u = *head.partial;
            while u != NONE {
                let h = pool.block(u);
                u = h.next.load(Ordering::Relaxed);
                if h.live() == 0 {
                    pool.list_remove(head.partial, h);
                    pool.give_empty(st, h);
                    given += 1;
                }
            }
        }
        given
    }

    /// With exclusive use of the instance: runs `f` on the heap as if its owner, unless the
    /// heap is abandoned (then the pool owns it) or orphaned. The heap's thread, should it
    /// exit meanwhile, waits for `f` to finish.
    pub(crate) fn with_borrowed(&self, f: impl FnOnce(&Heap)) {
        let mut round = 0;
        loop {
            match self
                .state
                .compare_exchange(LIVE, BORROWED, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(EXITING) => {
                    spin_hint(round);
                    round += 1;
                }
                Err(_) => return,
            }
        }
        f(self);
        self.state.store(LIVE, Ordering::Release);
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
        let mut round = 0;
        loop {
            match hp
                .state
                .compare_exchange(LIVE, EXITING, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(BORROWED) => {
                    spin_hint(round);
                    round += 1;
                }
                Err(_) => {
                    // ORPHANED: the instance is gone and left this heap to its thread.
                    // SAFETY: nobody else references an orphaned heap.
                    unsafe { os::release(heap.cast(), hp.mapped_len) };
                    return;
                }
            }
        }
        hp.drain_returned();
        let pool = hp.pool();
        let mut st = pool.lock();
        for i in 0..hp.heads() {
            // SAFETY: i is below the head count; the heap is ours until ABANDONED.
            let head = unsafe { head_at(heap, hp.heads(), i) };
            if !ptr::eq(*head.current, &EMPTY_BLOCK) {
                // SAFETY: a current block is live.
                let h = unsafe { &**head.current };
                pool.adopt_block(&mut st, h);
                *head.current = &EMPTY_BLOCK;
            }
            while let Some(h) = pool.list_pop(head.partial) {
                pool.adopt_block(&mut st, h);
            }
        }
        hp.thread_next_reset();
        // SAFETY: the pool lock is held; the abandoned list owns the heap from now on.
        unsafe { (*heap).next_abandoned = st.abandoned };
        st.abandoned = heap;
        hp.state.store(ABANDONED, Ordering::Release);
    }

    fn thread_next_reset(&self) {
        // SAFETY: only the owning thread touches thread_next.
        unsafe {
            ptr::addr_of!(self.thread_next)
                .cast_mut()
                .write(ptr::null_mut())
        };
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
                        unsafe { os::release(heap.cast(), hp.mapped_len) };
                        break;
                    }
                }
            }
        }
    }
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
/// otherwise.
pub(crate) fn find_own(instance: u64) -> *mut Heap {
    OWNED
        .try_with(|owned| {
            let mut heap = owned.first.get();
            // SAFETY: heaps on the thread's list stay mapped until the thread exits.
            while !heap.is_null() && unsafe { (*heap).instance } != instance {
                // SAFETY: as above.
                heap = unsafe { (*heap).thread_next };
            }
            heap
        })
        .unwrap_or(ptr::null_mut())
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
/// abandoned heap, and for an explicit join, one a thread left; else a new one.
fn adopt_or_create(pool: &Pool, instance: u64, group: usize) -> *mut Heap {
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
                while group != THREAD_GROUP && !(*at).is_null() && (**at).group != THREAD_GROUP {
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
    Heap::create(pool, instance, group)
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
