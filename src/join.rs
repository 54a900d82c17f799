//! Explicit joins: a heap held by the caller instead of the calling thread.
//!
//! Thread heaps are joined on a thread's first allocation and left at its exit. Callers that
//! run their own workers (a task system, a thread per core, a process sharing memory) can
//! instead [`Cohort::join`] with a **concurrency-group hint**, as fd_alloc's `join(shalloc,
//! cgroup_hint)` does: the join gets a heap of its own, with the same lock-free fast paths,
//! and [`Join::leave`] (or dropping the join) hands its blocks back to the pool. A join of a
//! group adopts first the heap a previous join of the same group left, whose blocks are
//! warm in the caches of the cores that group runs on.
//!
//! A `Join` is `Send` (a worker may carry it) but not `Sync`: one thread at a time uses a
//! heap. Frees of its allocations by other threads (or through the `Cohort` itself) are
//! ordinary remote frees.

use crate::api::Cohort;
use crate::class::{class_of, malloc_align, CLASSES};
use crate::heap::{self, Heap};
use crate::heap_handover;
use crate::lifetime::Lifetime;
use crate::per_thread;
use core::alloc::Layout;
use core::cell::Cell;
use core::marker::PhantomData;
use core::ptr::{self, NonNull};

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
        self.alloc_sized::<false>(size, malloc_align(size), life.index())
    }

    /// As [`Cohort::calloc`], from this join's heap.
    #[inline]
    pub fn calloc(&self, size: usize, life: L) -> *mut u8 {
        self.alloc_sized::<true>(size, malloc_align(size), life.index())
    }

    /// As [`Cohort::alloc`], from this join's heap.
    #[inline]
    pub fn alloc(&self, layout: Layout, life: L) -> *mut u8 {
        self.alloc_sized::<false>(layout.size(), layout.align(), life.index())
    }

    /// As [`Cohort::free`]: `ptr` may come from this join, another join, a thread heap or
    /// the `Cohort`, as long as it came from the same allocator. A null `ptr` does nothing.
    ///
    /// # Safety
    /// As [`Cohort::free`].
    #[inline]
    pub unsafe fn free(&self, ptr: *mut u8, size: usize, life: L) {
        // SAFETY: forwarded contract.
        unsafe { self.free_sized(ptr, size, malloc_align(size), life.index()) }
    }

    /// As [`Cohort::dealloc`].
    ///
    /// # Safety
    /// As [`Cohort::dealloc`].
    #[inline]
    pub unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout, life: L) {
        // SAFETY: forwarded contract.
        unsafe { self.free_sized(ptr, layout.size(), layout.align(), life.index()) }
    }

    /// Hands the heap's blocks back to the pool (blocks with live allocations too: their
    /// frees become remote frees). Dropping the join does the same.
    pub fn leave(self) {}

    #[inline(always)]
    fn alloc_sized<const ZERO: bool>(&self, size: usize, align: usize, life: usize) -> *mut u8 {
        if size == 0 {
            return align as *mut u8;
        }
        let c = &self.cohort.core;
        let Some(class) = class_of(size, align) else {
            return c.alloc_large(size, align, life);
        };
        let heap = self.heap();
        let got = if CLASSES[class].is_tiny() {
            // Tiny classes are served under the pool's lock (see `crate::heap`).
            heap.alloc_tiny(class, life)
        } else {
            // SAFETY: class < CLASS_COUNT, life < L::COUNT; the current block is live
            // (or the never-written empty block).
            let h = unsafe { &*heap::current_block(heap, class, life) };
            match h.pop() {
                Some((off, zeroed)) => Some((h.base().wrapping_add(off as usize), zeroed)),
                None => heap.alloc_slow(class, life, || per_thread::find_own(heap.instance)),
            }
        };
        match got {
            Some((p, zeroed)) => c.finish_alloc::<ZERO>(p, zeroed, class),
            None => ptr::null_mut(),
        }
    }

    /// # Safety
    /// As [`Cohort::free`].
    #[inline(always)]
    unsafe fn free_sized(&self, p: *mut u8, size: usize, align: usize, life: usize) {
        if size == 0 || p.is_null() {
            return;
        }
        let c = &self.cohort.core;
        let Some(class) = class_of(size, align) else {
            // SAFETY: forwarded contract.
            return unsafe { c.free_large::<false>(p, size, life) };
        };
        // SAFETY: forwarded contract.
        let h = unsafe { c.validated_block::<false>(p, size, class, life) };
        let heap = self.heap();
        if h.owner() == heap.token {
            // SAFETY: a live slot of a block of this join's heap.
            if !unsafe { heap.free_local(h, p) } {
                c.double_free::<false>(p, size, life);
            }
        } else {
            // SAFETY: a live slot.
            unsafe { c.free_remote::<false>(h, p, size, life) };
        }
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
}
