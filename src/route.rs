//! Which heap a call runs on: the one router of the alloc and free paths.
//!
//! [`Cohort`](crate::Cohort)'s calls run on the calling thread's heap ([`ThreadHeap`]: found
//! through the thread's state, joined on first use); [`Join`](crate::Join)'s on the join's
//! heap ([`JoinedHeap`]). The paths in [`crate::alloc`] and [`crate::free`] are written
//! once, generic over a [`Route`], and make the same checks for both: a free is local when
//! the block's `owner_key ^ key(class, life)` is the route's heap's tag (one compare checks
//! the owner, the size class and the lifetime class), remote otherwise.
//!
//! `ThreadHeap` is a zero-sized type and every method is inlined: the thread's paths
//! compile to what they would be without the router.

use crate::block::Header;
use crate::heap::Heap;
use crate::heap_record::owner_tag;
use crate::per_thread;
use crate::pool::Pool;
use core::ptr;

/// The heap the alloc and free paths use (see the module docs).
pub(crate) trait Route: Copy {
    /// Runs `f` on the route's heap when it is ready for the fast paths (for the thread:
    /// when the heap it used last is of `instance`); `None` otherwise.
    fn with_heap<T>(self, instance: u64, f: impl FnOnce(&Heap) -> Option<T>) -> Option<T>;

    /// True when `word`, a block's `owner_key` xor the key a free expects, is the route's
    /// heap's tag: the block is that heap's and holds the freed slot's size and lifetime
    /// class.
    fn owns(self, word: u64) -> bool;

    /// The slow path of a local free into block `h`, which [`Route::owns`] said is the
    /// route's heap's.
    fn free_slow(self, h: &Header);

    /// For the alloc slow path: when the fast path missed only because another heap of the
    /// thread was the one it used last, makes the heap of `instance` current and returns
    /// true (the fast path then runs again).
    fn promote(self, instance: u64) -> bool;

    /// For the alloc slow path: the route's heap, joined if needed; null when there is none
    /// (the thread cannot have one: the caller allocates through the pool's lock).
    fn slow_heap(self, pool: &Pool, instance: u64) -> *mut Heap;

    /// For a free that the fast path did not finish: a heap of the caller (the route's, or
    /// one of the calling thread's) whose token is `owner`, made the one the fast paths use;
    /// null when the caller has none (the free is remote).
    fn heap_owning(self, instance: u64, owner: u64) -> *const Heap;

    /// For a remote free: the caller's heap of `instance`, whose batch takes the free
    /// ([`crate::remote`]), joined if the thread has none; null when it can have none.
    fn batch_heap(self, pool: &Pool, instance: u64) -> *const Heap;

    /// For the quick way of a remote free ([`crate::remote`]): the caller's heap of
    /// `instance` when it is found without a search and does not own blocks of token
    /// `owner` (nor does any other heap the route would free locally into: the free is
    /// remote, and the heap's batch may take it); null otherwise (the free takes the
    /// general way, [`Route::heap_owning`] and [`Route::batch_heap`]). `slot` is the
    /// instance's `slot` field (`per_thread::slot_of(instance)`, or 0 before its pool
    /// exists: the shared slot, always empty).
    ///
    /// # Safety
    /// `slot < per_thread::SLOTS`.
    unsafe fn remote_heap(self, instance: u64, slot: usize, owner: u64) -> *const Heap;
}

/// The calling thread's heap of the instance.
#[derive(Clone, Copy)]
pub(crate) struct ThreadHeap;

impl Route for ThreadHeap {
    #[inline(always)]
    fn with_heap<T>(self, instance: u64, f: impl FnOnce(&Heap) -> Option<T>) -> Option<T> {
        per_thread::with_current(instance, f)
    }

    #[inline(always)]
    fn owns(self, word: u64) -> bool {
        per_thread::owns(word)
    }

    #[inline(always)]
    fn free_slow(self, h: &Header) {
        per_thread::free_slow_current(h)
    }

    #[inline(always)]
    fn promote(self, instance: u64) -> bool {
        per_thread::promote_instance(instance)
    }

    #[inline(always)]
    fn slow_heap(self, pool: &Pool, instance: u64) -> *mut Heap {
        let heap = per_thread::current(instance);
        if heap.is_null() {
            return per_thread::join_thread(pool, instance);
        }
        heap
    }

    #[inline(always)]
    fn heap_owning(self, instance: u64, owner: u64) -> *const Heap {
        // The heap in the instance's slot is the thread's only heap of the instance: the
        // block is its, left as it is (a global allocator's block freed while the thread
        // uses another heap last), or the free is remote, with no search.
        if let Some(heap) = per_thread::slot_heap(instance) {
            return if heap.token == owner {
                heap
            } else {
                ptr::null()
            };
        }
        // The heap it used last, if of this instance, is its only heap of the instance
        // (a thread that frees into an instance it does not allocate from: no search).
        let current = per_thread::current(instance);
        // SAFETY: null or a live heap of the calling thread.
        if let Some(heap) = unsafe { current.as_ref() } {
            return if heap.token == owner {
                heap
            } else {
                ptr::null()
            };
        }
        // The heap it used before (no search), or any of its heaps, made current.
        per_thread::promote_owner(owner)
            .or_else(|| (owner != 0).then(|| per_thread::switch_to_own(instance, owner))?)
            .map_or(ptr::null(), ptr::from_ref)
    }

    #[inline(always)]
    fn batch_heap(self, pool: &Pool, instance: u64) -> *const Heap {
        if let Some(heap) = per_thread::slot_heap(instance) {
            return heap;
        }
        // The heap used last (a global allocator's, which has no slot), else a search.
        let mut heap = per_thread::current(instance);
        if heap.is_null() {
            heap = per_thread::find_own(instance);
        }
        if heap.is_null() {
            return per_thread::join_thread(pool, instance);
        }
        heap
    }

    #[inline(always)]
    unsafe fn remote_heap(self, instance: u64, slot: usize, owner: u64) -> *const Heap {
        // The first two cases of `heap_owning`: the heap in the instance's slot, else the
        // one used last if of this instance, is the thread's only heap of the instance.
        // SAFETY: slot < SLOTS (caller).
        let heap = match unsafe { per_thread::heap_at(slot) } {
            Some(heap) => ptr::from_ref(heap),
            None => per_thread::current(instance).cast_const(),
        };
        // SAFETY: null or a live heap of the calling thread.
        match unsafe { heap.as_ref() } {
            Some(h) if h.token != owner => heap,
            _ => ptr::null(),
        }
    }
}

/// An explicit join's heap ([`crate::Join`]), which the calling thread holds through it.
#[derive(Clone, Copy)]
pub(crate) struct JoinedHeap<'a>(pub(crate) &'a Heap);

impl Route for JoinedHeap<'_> {
    #[inline(always)]
    fn with_heap<T>(self, _instance: u64, f: impl FnOnce(&Heap) -> Option<T>) -> Option<T> {
        f(self.0)
    }

    #[inline(always)]
    fn owns(self, word: u64) -> bool {
        word == owner_tag(self.0.token)
    }

    #[inline(always)]
    fn free_slow(self, h: &Header) {
        self.0.free_slow(h)
    }

    #[inline(always)]
    fn promote(self, _instance: u64) -> bool {
        false
    }

    #[inline(always)]
    fn slow_heap(self, _pool: &Pool, _instance: u64) -> *mut Heap {
        ptr::from_ref(self.0).cast_mut()
    }

    #[inline(always)]
    fn heap_owning(self, instance: u64, owner: u64) -> *const Heap {
        if self.0.token == owner {
            return self.0;
        }
        // A block of the calling thread's own heap, freed through the join.
        ThreadHeap.heap_owning(instance, owner)
    }

    #[inline(always)]
    fn batch_heap(self, _pool: &Pool, _instance: u64) -> *const Heap {
        self.0
    }

    #[inline(always)]
    unsafe fn remote_heap(self, _instance: u64, _slot: usize, _owner: u64) -> *const Heap {
        // The block may be the calling thread's own heap's (`heap_owning`): the general way.
        ptr::null()
    }
}
