//! Explicit joins: a heap held by the caller instead of the calling thread.
//!
//! Thread heaps are joined on a thread's first allocation and left at its exit. Callers that
//! run their own workers (a task system, a thread per core, a process sharing memory) can
//! instead [`Cohort::join`] with a **concurrency-group hint**: the join gets a heap of its
//! own, with the same lock-free fast paths,
//! and [`Join::leave`] (or dropping the join) hands its blocks back to the pool. A join of a
//! group adopts first the heap a previous join of the same group left, whose blocks are
//! warm in the caches of the cores that group runs on.
//!
//! A `Join` is `Send` (a worker may carry it) but not `Sync`: one thread at a time uses a
//! heap. Frees of its allocations by other threads (or through the `Cohort` itself) are
//! ordinary remote frees. A join's calls take the same paths as the `Cohort`'s, with the
//! same checks, on the join's heap instead of the thread's ([`crate::route`]).

use crate::api::Cohort;
use crate::class::malloc_align;
use crate::heap::Heap;
use crate::heap_handover;
use crate::lifetime::Lifetime;
use crate::route::JoinedHeap;
use core::alloc::Layout;
use core::cell::Cell;
use core::marker::PhantomData;
use core::ptr::NonNull;

/// A heap joined explicitly: see the module docs. Build one with [`Cohort::join`].
pub struct Join<'a, L: Lifetime = ()> {
    cohort: &'a Cohort<L>,
    heap: NonNull<Heap>,
    /// Not `Sync`: the heap's fast paths are for one thread at a time.
    _one_thread: PhantomData<Cell<()>>,
}

// SAFETY: a heap may move between threads as long as one thread at a time uses it, which
// `!Sync` and `&self` methods on an owned `Join` guarantee.
unsafe impl<L: Lifetime> Send for Join<'_, L> {}

impl<L: Lifetime> Cohort<L> {
    /// Joins the allocator with a heap of its own, in concurrency group `cgroup_hint`
    /// (callers that run on the same cores should pass the same hint). `None` when the OS
    /// refuses memory or the heap registry (16 383 heaps) is full.
    ///
    /// Cost: a lock and, unless a heap of a previous join or exited thread is adopted, a
    /// mapping of a few KiB.
    pub fn join(&self, cgroup_hint: usize) -> Option<Join<'_, L>> {
        let pool = self.core.pool()?;
        let heap = heap_handover::join_explicit(
            pool,
            self.core.instance_id(),
            cgroup_hint & (usize::MAX >> 1),
        );
        Some(Join {
            cohort: self,
            heap: NonNull::new(heap)?,
            _one_thread: PhantomData,
        })
    }
}

impl<L: Lifetime> Join<'_, L> {
    fn heap(&self) -> &Heap {
        // SAFETY: the heap is this join's until `leave`, which consumes it.
        unsafe { self.heap.as_ref() }
    }

    /// As [`Cohort::malloc`], from this join's heap.
    #[inline]
    pub fn malloc(&self, size: usize, life: L) -> *mut u8 {
        self.cohort.core.alloc_sized::<false, _>(
            JoinedHeap(self.heap()),
            size,
            malloc_align(size),
            life.index(),
        )
    }

    /// As [`Cohort::calloc`], from this join's heap.
    #[inline]
    pub fn calloc(&self, size: usize, life: L) -> *mut u8 {
        self.cohort.core.alloc_sized::<true, _>(
            JoinedHeap(self.heap()),
            size,
            malloc_align(size),
            life.index(),
        )
    }

    /// As [`Cohort::alloc`], from this join's heap.
    #[inline]
    pub fn alloc(&self, layout: Layout, life: L) -> *mut u8 {
        self.cohort.core.alloc_layout::<false, _>(
            JoinedHeap(self.heap()),
            layout.size(),
            layout.align(),
            life.index(),
        )
    }

    /// As [`Cohort::free`]: `ptr` may come from this join, another join, a thread heap or
    /// the `Cohort`, as long as it came from the same allocator. A null `ptr` does nothing.
    ///
    /// # Safety
    /// As [`Cohort::free`].
    #[inline]
    pub unsafe fn free(&self, ptr: *mut u8, size: usize, life: L) {
        // SAFETY: forwarded contract.
        unsafe {
            self.cohort.core.free_sized::<false, _>(
                JoinedHeap(self.heap()),
                ptr,
                size,
                malloc_align(size),
                life.index(),
            )
        }
    }

    /// As [`Cohort::dealloc`].
    ///
    /// # Safety
    /// As [`Cohort::dealloc`].
    #[inline]
    pub unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout, life: L) {
        // SAFETY: forwarded contract.
        unsafe {
            self.cohort.core.free_layout::<false, _>(
                JoinedHeap(self.heap()),
                ptr,
                layout.size(),
                layout.align(),
                life.index(),
            )
        }
    }

    /// Hands the heap's blocks back to the pool (blocks with live allocations too: their
    /// frees become remote frees). Dropping the join does the same.
    pub fn leave(self) {}
}

/// `Join { instance, heap, token }`: the instance, and the joined heap's id and owner token
/// (as its blocks' headers hold it). Reads no lock.
impl<L: Lifetime> core::fmt::Debug for Join<'_, L> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let heap = self.heap();
        f.debug_struct("Join")
            .field("instance", &self.cohort.core.instance_id())
            .field("heap", &heap.id)
            .field("token", &format_args!("{:#x}", heap.token))
            .finish()
    }
}

impl<L: Lifetime> Drop for Join<'_, L> {
    fn drop(&mut self) {
        // SAFETY: the heap is this join's, and it is going away.
        unsafe { heap_handover::abandon(self.heap.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_adopts_the_heap_its_group_left() {
        let a: Cohort = Cohort::new();
        let j = a.join(7).unwrap();
        let seven = j.heap().token;
        j.leave();
        let eight = a.join(8).unwrap();
        assert_ne!(
            eight.heap().token,
            seven,
            "another group's heap is not taken"
        );
        let again = a.join(7).unwrap();
        assert_eq!(again.heap().token, seven, "the group's own heap is adopted");
    }

    /// A join's free takes the `Cohort`'s path (one router), so it makes the same checks:
    /// a double free of the slot freed last is reported in every build.
    #[test]
    #[should_panic(expected = "double free")]
    fn a_join_reports_a_double_free() {
        let a: Cohort = Cohort::new();
        let j = a.join(1).unwrap();
        let p = j.malloc(64, ());
        // SAFETY: p is live; the second free is the misuse under test, caught before it
        // touches anything.
        unsafe {
            j.free(p, 64, ());
            j.free(p, 64, ());
        }
    }

    /// And a size of another class than the block's is reported, not pushed on its list.
    #[test]
    #[should_panic(expected = "size class")]
    fn a_join_reports_a_free_with_the_wrong_size() {
        let a: Cohort = Cohort::new();
        let j = a.join(2).unwrap();
        let p = j.malloc(64, ());
        // SAFETY: the wrong size is the misuse under test, caught before anything changes.
        unsafe { j.free(p, 4000, ()) };
    }

    /// A block of the calling thread's own heap freed through a join is a local free of
    /// that heap, and an allocation of the join freed through the `Cohort` a remote one:
    /// both come back for reuse.
    #[test]
    fn frees_across_a_join_and_its_thread_reach_their_owners() {
        let a: Cohort = Cohort::new();
        let j = a.join(3).unwrap();
        let mine = a.malloc(48, ());
        let joins = j.malloc(48, ());
        // SAFETY: both live, each freed once.
        unsafe {
            j.free(mine, 48, ());
            a.free(joins, 48, ());
        }
        // SAFETY: no other thread uses `a`.
        unsafe { a.verify() }.unwrap();
        assert_eq!(
            a.malloc(48, ()),
            mine,
            "the thread's heap reuses its slot first"
        );
    }
}
