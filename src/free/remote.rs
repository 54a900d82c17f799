//! The frees the fast path passes on ([`Instance::free_other`]): a pointer outside the
//! region, a block of another (class, life), a slot already free (misuse, reported through
//! [`super::checks`]), or a block of another heap: a remote free ([`Instance::free_remote`]),
//! local after all when the block is another heap of the caller's, else, in a pool no
//! other process uses (a private instance, a region in a private mapping), onto the
//! caller's heap's batch ([`crate::remote`]), in one other processes use a lock-free push
//! on the block's remote list, or the pool's lock for tiny blocks.

use crate::block::{header_of, Header, PROMOTING};
use crate::class::{class_of, HeadIndex};
use crate::counters::Counter;
use crate::heap::{registered, Heap};
use crate::promotion;
use crate::instance::{Instance, CHECKED};
use crate::misuse::{report, Problem};
use crate::per_thread;
use crate::pool::{EMPTY_KEY, SHARED_TAG};
use crate::remote::{BatchFree, Flush};
#[cfg(doc)]
use crate::remote::RemoteBatch;
use crate::route::Route;
use crate::sync::Ordering;
use crate::tiny;

impl Instance {
    /// A free the fast path could not finish: the pointer is not in the region, or its block
    /// holds another (class, life), or the slot is already free, which is misuse; or the
    /// block belongs to another heap: a remote free. The common remote free is tested first
    /// and takes the quick way, a slot added to its block's chain in the caller's batch
    /// ([`RemoteBatch::try_append`]); everything else goes on to
    /// [`Instance::free_other_general`], with a jump: the quick way makes no call, so it
    /// saves and restores one register only.
    ///
    /// `word` is the block's owner-and-key word xor the key of the size's class and `life`,
    /// as the fast path read it (0 when `p` is outside the region): its key bits are
    /// [`EMPTY_KEY`] exactly when the block held that key then. The fast path passes it,
    /// and the align rather than the class, so that the class's register is free once
    /// xor'ed into the word (no copy). The pointer, size, align and word come first, in the
    /// registers the fast path has them in, the instance after them (see
    /// `free_above_exact`).
    ///
    /// # Safety
    /// As [`Instance::free_class`], with `word` as above.
    #[cold]
    #[inline(never)]
    #[track_caller]
    pub(super) unsafe fn free_other<const ABORT: bool, R: Route>(
        p: *mut u8,
        size: usize,
        align: usize,
        word: u64,
        this: &Instance,
        route: R,
        life: usize,
    ) {
        // Not for a token of a region formatted for other processes to use: its heaps do
        // not batch (`crate::remote`), and the test costs nothing (it is part of the
        // word's mask). A token without the bit (a private instance's, a region formatted
        // in a private mapping) is tried whatever its view: a heap of a pool other
        // processes use never starts a chain, so `try_append` finds none there. Nor is
        // owner 0 (the pool's tiny blocks) tested: no batch chains a tiny block's slots
        // (`free_remote` frees those under the pool lock), so `try_append` finds no chain
        // of such a block either.
        if let Some(owner) = keyed_owner(word).filter(|&o| !is_shared_token(o)) {
            let slot = this.slot.load(Ordering::Relaxed) as usize;
            // SAFETY: slot < SLOTS (the field's invariant, see crate::instance); the route
            // gives null or a live heap the caller holds.
            let heap = unsafe { route.remote_heap(this.instance_id(), slot, owner).as_ref() };
            // SAFETY: p is below the carved end (the fast path passes a word other than 0
            // only then), so its header is readable (a run's bytes, maybe: see below).
            let h = unsafe { &*header_of(p) };
            // The quick way takes the free only into a chain the batch already holds for
            // block h: a block with pending slots is a live block of slots (never given
            // back while they are pending, `crate::remote`), so h is no large run's bytes
            // and the run test of `remote_owner` is not needed here (the general way makes
            // it before it starts a chain).
            // SAFETY: a live slot of h (caller), which holds the size's key and is owned by
            // another heap than the caller's (`keyed_owner`, `remote_heap`), not tiny,
            // whenever h is the block of one of the batch's chains, the only case
            // `try_append` acts on; the caller holds the heap.
            if heap.is_some_and(|heap| unsafe { heap.remote.try_append(h, p) }) {
                return;
            }
        }
        // SAFETY: forwarded contract.
        unsafe { Instance::free_other_general::<ABORT, R>(p, size, align, word, this, route, life) }
    }

    /// The heap token of the block of `p` when `word` (as [`Instance::free_other`] has it)
    /// says the block holds the size's key (its key bits are EMPTY_KEY), is not promoting,
    /// and a heap owns it (never a tiny block: those are the pool's, owner 0) that is not
    /// the route's heap (the fast path's compare failed); `p` is then in the region (else
    /// `word` is 0) and not in a large allocation's run (whose bytes the fast path read
    /// as a header: never trusted). `None` otherwise.
    #[inline(always)]
    fn remote_owner(&self, p: *mut u8, word: u64) -> Option<u64> {
        // The fast path reads a header (and passes a word other than 0) only for a `p` in
        // the region.
        quick_owner(word).filter(|_| !self.in_run_of_region(p))
    }

    /// [`Instance::free_other`]'s frees that do not take the quick way: a remote free
    /// batched the general way ([`Instance::free_batched`]: a new chain, a full chain, a
    /// flusher at work, a double free of a pending slot); everything
    /// else goes on to [`Instance::free_unbatched`], out of line.
    ///
    /// # Safety
    /// As [`Instance::free_other`].
    #[cold]
    #[inline(never)]
    #[track_caller]
    unsafe fn free_other_general<const ABORT: bool, R: Route>(
        p: *mut u8,
        size: usize,
        align: usize,
        word: u64,
        this: &Instance,
        route: R,
        life: usize,
    ) {
        if let Some(owner) = this.remote_owner(p, word) {
            // SAFETY: p is below the carved end (`remote_owner`: the fast path read its
            // header), so its header is readable.
            let h = unsafe { &*header_of(p) };
            // In the block's header area or tail (no slot there): reported before a link is
            // written at `p` (the quick way turned it away: `append_quick`).
            if !h.geometry().in_slots(h.offset_of(p) as usize) {
                return this.not_in_slots::<ABORT>(h, p, size, life);
            }
            // The block may be another heap's of the caller (a thread allocating from two
            // instances in turn: the fast path compares with the heap it used last), found
            // with no search: a local free, with none of the checks below, which the word
            // the fast path read already passed (the size's key, not promoting, in no run).
            // SAFETY: the route gives null or a live heap the caller holds.
            if let Some(heap) = unsafe { route.heap_owning(this.instance_id(), owner).as_ref() } {
                // SAFETY: a live slot of h (caller), a block of the caller's heap.
                return unsafe { this.free_mine::<ABORT>(heap, h, p, size, life) };
            }
            // SAFETY: forwarded contract, and `word` is the block's, as read by the fast
            // path.
            let done = unsafe { this.free_batched(route, h, p, owner) };
            match done {
                Some(BatchFree::Done) => return,
                Some(BatchFree::AlreadyFree) => return this.double_free::<ABORT>(p, size, life),
                None => {}
            }
        }
        // SAFETY: forwarded contract.
        unsafe { Instance::free_unbatched::<ABORT, R>(p, size, align, word, this, route, life) }
    }

    /// [`Instance::free_other`]'s frees that are not batched: see there.
    ///
    /// # Safety
    /// As [`Instance::free_other`].
    #[cold]
    #[inline(never)]
    #[track_caller]
    unsafe fn free_unbatched<const ABORT: bool, R: Route>(
        p: *mut u8,
        size: usize,
        align: usize,
        word: u64,
        this: &Instance,
        route: R,
        life: usize,
    ) {
        // A zero size (class 0 from `free_layout`) is tested where it can arrive, off the
        // remote free's way: outside the region, against a block of another key, or in a
        // tiny block (class 0 is tiny: `free_remote`).
        // Past the region's carved end (or outside it) no header is read: never an
        // allocation of the region's blocks.
        if !this.in_carved(p) {
            if p.is_null() {
                return; // A null free does nothing (see `free_sized`).
            }
            if size == 0 {
                return this.free_zero_size::<ABORT>(p, life);
            }
            if this.free_fallback::<ABORT>(p, size, align, life) {
                return;
            }
            return this.foreign::<ABORT>(p, size, life);
        }
        if this.in_run(p) {
            // A large allocation's bytes, not a header: never trusted.
            return this.foreign::<ABORT>(p, size, life);
        }
        // SAFETY: p lies below the region's carved end (above), which is accessible.
        let h = unsafe { &*header_of(p) };
        if h.is_promoting() && size != 0 {
            // SAFETY: forwarded contract.
            return unsafe { this.free_in_promoting::<ABORT, R>(route, h, p, size, align, life) };
        }
        if !CHECKED && word as u16 != EMPTY_KEY {
            if size == 0 {
                return this.free_zero_size::<ABORT>(p, life);
            }
            // SAFETY: forwarded contract.
            return unsafe { this.bad_key_of_size::<ABORT>(p, size, align, life) };
        }
        // SAFETY: a live slot of block h (caller), or a zero size, which free_remote tests
        // before it frees anything.
        unsafe { this.free_remote::<ABORT, R>(route, h, p, size, life) };
    }

    /// A free that reached the remote paths into a block of `heap`, one of the caller's own
    /// heaps after all: local, so the block's emptying is seen; a double free the local
    /// list shows is reported (`size` and `life` are the caller's, for the report).
    ///
    /// # Safety
    /// `p` is a live slot of block `h`, which `heap`, held by the caller, owns.
    #[inline(always)]
    #[track_caller]
    unsafe fn free_mine<const ABORT: bool>(
        &self,
        heap: &Heap,
        h: &Header,
        p: *mut u8,
        size: usize,
        life: usize,
    ) {
        // SAFETY: the block exists, so the pool does.
        let pool = unsafe { &*self.pool.load(Ordering::Acquire) };
        let head = HeadIndex::new(h.class(), h.life()).get();
        pool.counters.add(head, Counter::FreeSlow, 1);
        // The owner's free of a block that held promoted slots: cleared when none is left
        // (before the free, which may give the block away).
        promotion::settle(heap, h);
        // SAFETY: a live slot of a block of this thread's heap (caller).
        if !unsafe { heap.free_local(h, p) } {
            self.double_free::<ABORT>(p, size, life);
        }
    }

    /// A remote free of slot `p` of block `h`, owned by heap token `owner`, that the quick
    /// way did not take: onto the batch of the caller's heap when the route finds that heap
    /// without a search ([`Route::remote_heap`]) and no other process uses the pool
    /// ([`Pool::is_process_shared`](crate::pool::Pool::is_process_shared)). `None` when it did
    /// nothing (the general way, [`Instance::free_remote`], takes the free).
    ///
    /// # Safety
    /// As [`Instance::free_sized`]; `h` is the block of `p`, holds the key of the free's
    /// size and lifetime class, is not promoting and is owned by heap token `owner != 0`,
    /// as the fast path read.
    #[inline(always)]
    unsafe fn free_batched<R: Route>(
        &self,
        route: R,
        h: &Header,
        p: *mut u8,
        owner: u64,
    ) -> Option<BatchFree> {
        let slot = self.slot.load(Ordering::Relaxed) as usize;
        // SAFETY: slot < SLOTS (the field's invariant, see crate::instance); the route
        // gives null or a live heap the caller holds.
        let heap = unsafe { route.remote_heap(self.instance_id(), slot, owner).as_ref() }?;
        let pool = heap.pool();
        if pool.is_process_shared() {
            return None; // Pools other processes use do not batch (see `crate::remote`).
        }
        // SAFETY: a live slot of h (caller), a block of this pool, which no other process
        // uses (the caller's heap's: the block is in the instance's region), that the heap
        // does not own; the caller holds the heap.
        Some(unsafe { heap.remote.free(pool, h, h.offset_of(p)) })
    }

    /// A free into a block that may hold promoted slots (see [`crate::promotion`]), which
    /// every free of it reaches: checked against the slot's promotion bit (cleared here
    /// for a promoted slot), then freed as any slot of the block.
    ///
    /// # Safety
    /// As [`Instance::free_sized`], with `h` the block of `p` and `size` not 0.
    #[cold]
    #[inline(never)]
    #[track_caller]
    unsafe fn free_in_promoting<const ABORT: bool, R: Route>(
        &self,
        route: R,
        h: &Header,
        p: *mut u8,
        size: usize,
        align: usize,
        life: usize,
    ) {
        let Some(class) = class_of(size, align) else {
            // SAFETY: forwarded contract: a large size.
            return unsafe { self.free_large::<ABORT>(p, size, life) };
        };
        // SAFETY: the block exists, so the pool does.
        let pool = unsafe { &*self.pool.load(Ordering::Acquire) };
        if let Err(problem) = promotion::check_free(pool, h, p, class, life) {
            report::<ABORT>(self.misuse(p, size, life, problem));
        }
        // SAFETY: a live slot of block h, checked above.
        unsafe { self.free_remote::<ABORT, R>(route, h, p, size, life) };
    }

    /// A free of slot `p` of a block the route's heap does not own: local after all when
    /// the block is another heap of the caller's ([`Route::heap_owning`]); else onto the
    /// caller's batch (a pool no other process uses) or a lock-free push on the block's
    /// remote list, or the pool's lock for tiny blocks. A slot that is the first of the list
    /// it would join is already free: reported as a double free (`size` and `life` are the
    /// caller's, for the report).
    ///
    /// # Safety
    /// `p` is a live slot of block `h` (its size and lifetime class checked against the
    /// block's key), or `size` is 0 and `h` is tiny (the key of class 0 a zero size gets:
    /// nothing is freed).
    #[cold]
    #[inline(never)]
    #[track_caller]
    unsafe fn free_remote<const ABORT: bool, R: Route>(
        &self,
        route: R,
        h: &Header,
        p: *mut u8,
        size: usize,
        life: usize,
    ) {
        let off = h.offset_of(p);
        // In the block's header area or tail (no slot there), which a link written at `p`
        // would corrupt (a zero size, which frees nothing, is the tiny branch's below).
        if size != 0 && !h.geometry().in_slots(off as usize) {
            return self.not_in_slots::<ABORT>(h, p, size, life);
        }
        let owner = h.owner();
        // The block may be the caller's after all, in a heap it did not use last (a thread
        // allocates from several instances; a join's thread has its own heap too), made
        // current. Then the free is local, so the block's emptying is seen.
        // SAFETY: the route gives null or a live heap the caller holds.
        let mine = unsafe { route.heap_owning(self.instance_id(), owner).as_ref() };
        // SAFETY: the block exists, so the pool does.
        let pool = unsafe { &*self.pool.load(Ordering::Acquire) };
        let count = |counter| {
            let head = HeadIndex::new(h.class(), h.life()).get();
            pool.counters.add(head, counter, 1);
        };
        if let Some(heap) = mine {
            // SAFETY: a live slot of a block of this thread's heap (caller).
            return unsafe { self.free_mine::<ABORT>(heap, h, p, size, life) };
        }
        if h.geometry().is_tiny() {
            count(Counter::RemoteFree);
            if size == 0 {
                // Class 0 (tiny) is a zero size's in `free_layout`: the zero-size path.
                return self.free_zero_size::<ABORT>(p, life);
            }
            if !h.is_slot(off as usize) {
                let stride = h.geometry().stride as usize;
                report::<ABORT>(self.misuse(p, size, life, Problem::NotASlot { stride }));
            }
            let mut st = pool.lock();
            // SAFETY: we hold the lock that owns tiny blocks; off is a slot of the block.
            if unsafe { tiny::is_first_free(h, off) } {
                drop(st);
                return self.double_free::<ABORT>(p, size, life);
            }
            // SAFETY: the caller guarantees a live slot; tiny blocks are the pool's.
            unsafe { pool.free_tiny(&mut st, h, off) };
        } else {
            // In a pool no other process uses, the free goes to the caller's heap's batch
            // ([`crate::remote`]).
            // SAFETY: the route gives null or a live heap the caller holds.
            let batch = (!pool.is_process_shared())
                .then(|| unsafe { route.batch_heap(pool, self.instance_id()).as_ref() })
                .flatten();
            if let Some(heap) = batch {
                if h.owner() == heap.token {
                    // The heap the thread just joined is the block's owner (it adopted the
                    // heap of an exited thread): a local free, whose emptying is seen.
                    // SAFETY: a live slot of a block of this thread's heap.
                    return unsafe { self.free_mine::<ABORT>(heap, h, p, size, life) };
                }
                // Counted when its chain is pushed (no shared counter per free).
                // SAFETY: a live slot of h (caller), a block of this pool (which no other
                // process uses) that the heap does not own; the caller holds the heap.
                if unsafe { heap.remote.free(pool, h, off) } != BatchFree::Done {
                    self.double_free::<ABORT>(p, size, life);
                }
                return;
            }
            count(Counter::RemoteFree);
            if h.is_freed_last(off) {
                return self.double_free::<ABORT>(p, size, life);
            }
            // SAFETY: a live slot (caller).
            unsafe { pool.free_remote(h, off) };
        }
    }

    /// True when slot `off` of block `h` waits in the calling thread's batch as the
    /// first of its block's chain (the thread's last free of the block): already free, as
    /// the first of a block's free list is. [`Instance::find_misuse`] asks where it has no
    /// live bits (`try_free` in a build without checked mode).
    pub(crate) fn is_first_pending(&self, h: &Header, off: u32) -> bool {
        // SAFETY: null or the calling thread's own heap, live while it holds it.
        let me = unsafe { per_thread::find_own(self.instance_id()).as_ref() };
        me.is_some_and(|heap| h.owner() != heap.token && heap.remote.is_first_pending(h, off))
    }

    /// Pushes every heap's pending remote frees ([`crate::remote`]) to their blocks, so that
    /// what follows sees every free that returned: a release (which must not empty a block
    /// a batch still holds slots of), `compact`, `verify`, the statistics. Waits while a
    /// batch is being changed (a few instructions of its thread). Call it without the pool
    /// lock (a flush only tries it, and then leaves the give-back of emptied blocks to the
    /// lock's next holder). True when a batch had frees pending (pushed now): out of
    /// memory then tries again (other threads' pending frees count as used until pushed).
    pub(crate) fn flush_batches(&self) -> bool {
        self.flush_each_batch().0
    }

    /// [`Instance::flush_batches`]; false when a batch's flush was refused (`membarrier`
    /// refused since its registration): its frees are still pending, their slots neither
    /// live nor on their blocks' lists (verify).
    pub(crate) fn flush_batches_all_pushed(&self) -> bool {
        !self.flush_each_batch().1
    }

    /// [`Instance::flush_batches`] for a release, which empties blocks whatever their
    /// counts: a batch that could not be pushed (`membarrier` refused since its
    /// registration, a seccomp filter on this thread) may hold slots of them, whose late
    /// push would list a slot live again, so the process stops with a message instead.
    pub(crate) fn flush_batches_for_release(&self) {
        if self.flush_each_batch().1 {
            crate::os::abort_with(format_args!(
                "cohort: release_class needs every thread's pending remote frees pushed \
                 first, and this thread may no longer call membarrier (a seccomp filter \
                 installed after cohort registered it): a release here could hand out a \
                 live slot again\n"
            ));
        }
    }

    /// Flushes every registered heap's batch: (a batch had frees pending and pushed them,
    /// a batch's flush was refused).
    fn flush_each_batch(&self) -> (bool, bool) {
        let Some(pool) = self.pool_if_any() else {
            return (false, false);
        };
        if pool.is_process_shared() {
            return (false, false); // Pools other processes use do not batch.
        }
        let (mut pushed, mut refused) = (false, false);
        let own = per_thread::find_own(self.instance_id());
        for heap in registered(pool) {
            // SAFETY: the registered heaps of a pool no other process uses stay mapped for
            // its life (in their own mappings, or in its state area), and the blocks of their
            // batches' chains live while the chains hold their slots. The calling thread
            // holds `own`, and pushes its batch as its holder (no fence to be refused).
            let flush = unsafe {
                if heap == own {
                    (*heap).remote.flush_own(pool)
                } else {
                    (*heap).remote.flush(pool)
                }
            };
            match flush {
                Flush::Nothing => {}
                Flush::Pushed => pushed = true,
                Flush::Refused => refused = true,
            }
        }
        (pushed, refused)
    }
}

/// [`Instance::remote_owner`] without the run test: the heap token of a block whose word
/// (as [`Instance::free_other`] has it) says it holds the size's key, is not promoting and
/// is owned by a heap (`None` otherwise). Trusted only for a block known to be a block of
/// slots.
#[inline(always)]
fn quick_owner(word: u64) -> Option<u64> {
    keyed_owner(word).filter(|&owner| owner != 0)
}

/// The owner token of a block whose word (as [`Instance::free_other`] has it) says it
/// holds the size's key and is not promoting, 0 (the pool's, a tiny block) included;
/// `None` otherwise. [`Instance::free_other`]'s quick way, which acts only on the block of
/// one of the batch's chains (never a tiny block, never a large run's bytes).
#[inline(always)]
fn keyed_owner(word: u64) -> Option<u64> {
    (word & (PROMOTING | u64::from(EMPTY_KEY)) == u64::from(EMPTY_KEY)).then_some(word >> 16)
}

/// True when heap token `token` is the heap's of a region formatted for other processes to
/// use: its upper half is the region's tag, which holds [`SHARED_TAG`], where a private
/// instance's is its id and a privately formatted region's tag holds
/// `crate::pool::PRIVATE_REGION_TAG`, both without it.
#[inline(always)]
fn is_shared_token(token: u64) -> bool {
    (token >> 16) & SHARED_TAG != 0
}
