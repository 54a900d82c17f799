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
//!
//! **fork.** A join of a shared instance copied into a fork child names a heap of the
//! parent's, which the parent goes on using. A join records the process's fork generation
//! ([`crate::fork::generation`]) when it takes its heap and compares it on every call: in
//! the child the first call takes a heap of its own (in the same concurrency group) and
//! from then on the child's copy uses that one; the parent's heap is never touched in the
//! child (nor left by the child's drop). If the child can have no heap (the registry is
//! full, the OS refuses), its allocations through the join return null and its frees go
//! through the [`Cohort`]. A join of a private instance keeps its heap in the child (the
//! child's copy of the instance is its own), which the child's fork handler made whole:
//! another thread of the parent may have been inside a call of the join at the fork
//! (`crate::heap_handover::repair_joins_in_child`). What the join allocated before the
//! fork stays the live join's in the child.
//!
//! Invariant: `born == fork::generation()` ⇒ `heap` is held by this process (a join's
//! heap of a shared instance: its holder word is this process's), or `heap` is null.

use crate::api::Cohort;
use crate::class::malloc_align;
use crate::fork;
use crate::heap::Heap;
use crate::heap_handover;
use crate::lifetime::{self, Lifetime};
use crate::route::JoinedHeap;
use core::alloc::Layout;
use core::cell::Cell;
use core::marker::PhantomData;
use core::ptr;

/// A heap joined explicitly: see the module docs. Build one with [`Cohort::join`].
pub struct Join<'a, L: Lifetime = ()> {
    cohort: &'a Cohort<L>,
    /// The joined heap; null in a fork child that could get none (see the module docs).
    heap: Cell<*mut Heap>,
    /// The fork generation `heap` was taken in (see the module docs).
    born: Cell<u64>,
    /// The concurrency group the join was made for.
    group: usize,
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
    ///
    /// # Examples
    ///
    /// ```
    /// cohort::lifetime_classes! { enum Life { Frame, Long } }
    /// static A: cohort::Cohort<Life> = cohort::Cohort::new();
    /// let worker = A.join(3).expect("a heap");
    /// std::thread::scope(|s| {
    ///     // A join is Send: a worker may carry it to the thread it runs on.
    ///     s.spawn(move || {
    ///         let p = worker.malloc(64, Life::Frame);
    ///         // SAFETY: allocated above with this size and class.
    ///         unsafe { worker.free(p, 64, Life::Frame) };
    ///         worker.leave();
    ///     });
    /// });
    /// ```
    pub fn join(&self, cgroup_hint: usize) -> Option<Join<'_, L>> {
        let pool = self.core.pool()?;
        let group = cgroup_hint & (usize::MAX >> 1);
        let born = fork::generation();
        let heap = heap_handover::join_explicit(pool, self.core.instance_id(), group);
        if heap.is_null() {
            return None;
        }
        Some(Join {
            cohort: self,
            heap: Cell::new(heap),
            born: Cell::new(born),
            group,
            _one_thread: PhantomData,
        })
    }
}

impl<L: Lifetime> Join<'_, L> {
    /// The join's heap in this process; `None` in a fork child that could get none.
    #[inline(always)]
    fn heap(&self) -> Option<&Heap> {
        if self.born.get() != fork::generation() {
            self.after_fork();
        }
        // SAFETY: the heap is this join's until `leave`, which consumes it (the invariant
        // in the module docs: this process holds it).
        unsafe { self.heap.get().as_ref() }
    }

    /// The first call in a fork child: a join of a shared instance takes a heap of its own
    /// (the one it names is the parent's); a private instance's heap is the child's copy,
    /// repaired by the fork handler.
    #[cold]
    #[inline(never)]
    fn after_fork(&self) {
        // A child without the region's memory stops here, naming it (`Pool::is_lost`).
        self.cohort.core.pool_if_any();
        self.born.set(fork::generation());
        // SAFETY: a heap of this join's, possibly the parent's: only its holder word (in
        // the region) is read, which every process may read.
        let held = unsafe { self.heap.get().as_ref() }.is_none_or(Heap::held_here);
        if held {
            return;
        }
        let fresh = self.cohort.core.pool().map_or(ptr::null_mut(), |pool| {
            heap_handover::join_explicit(pool, self.cohort.core.instance_id(), self.group)
        });
        self.heap.set(fresh);
    }

    /// As [`Cohort::malloc`], from this join's heap.
    ///
    /// # Examples
    ///
    /// ```
    /// cohort::lifetime_classes! { enum Life { Frame, Long } }
    /// static A: cohort::Cohort<Life> = cohort::Cohort::new();
    /// let worker = A.join(3).expect("a heap");
    /// let p = worker.malloc(100, Life::Long);
    /// assert!(!p.is_null());
    /// // SAFETY: allocated above with this size and class; any thread or join may free it.
    /// unsafe { A.free(p, 100, Life::Long) };
    /// ```
    #[inline]
    pub fn malloc(&self, size: usize, life: L) -> *mut u8 {
        let Some(heap) = self.heap() else {
            return ptr::null_mut();
        };
        self.cohort.core.alloc_sized::<false, _>(
            JoinedHeap(heap),
            size,
            malloc_align(size),
            lifetime::index_of(life),
        )
    }

    /// As [`Cohort::calloc`], from this join's heap.
    ///
    /// # Examples
    ///
    /// ```
    /// cohort::lifetime_classes! { enum Life { Frame, Long } }
    /// static A: cohort::Cohort<Life> = cohort::Cohort::new();
    /// let worker = A.join(3).expect("a heap");
    /// let p = worker.calloc(32, Life::Frame);
    /// // SAFETY: 32 zeroed bytes; then freed as made.
    /// unsafe {
    ///     assert_eq!(*p.add(31), 0);
    ///     worker.free(p, 32, Life::Frame);
    /// }
    /// ```
    #[inline]
    pub fn calloc(&self, size: usize, life: L) -> *mut u8 {
        let Some(heap) = self.heap() else {
            return ptr::null_mut();
        };
        self.cohort.core.alloc_sized::<true, _>(
            JoinedHeap(heap),
            size,
            malloc_align(size),
            lifetime::index_of(life),
        )
    }

    /// As [`Cohort::alloc`], from this join's heap.
    ///
    /// # Examples
    ///
    /// ```
    /// cohort::lifetime_classes! { enum Life { Frame, Long } }
    /// static A: cohort::Cohort<Life> = cohort::Cohort::new();
    /// let worker = A.join(3).expect("a heap");
    /// let l = std::alloc::Layout::new::<[u32; 6]>();
    /// let p = worker.alloc(l, Life::Frame);
    /// // SAFETY: allocated above with this layout and class.
    /// unsafe { worker.dealloc(p, l, Life::Frame) };
    /// ```
    #[inline]
    pub fn alloc(&self, layout: Layout, life: L) -> *mut u8 {
        let Some(heap) = self.heap() else {
            return ptr::null_mut();
        };
        self.cohort.core.alloc_layout::<false, _>(
            JoinedHeap(heap),
            layout,
            lifetime::index_of(life),
        )
    }

    /// As [`Cohort::free`]: `ptr` may come from this join, another join, a thread heap or
    /// the `Cohort`, as long as it came from the same allocator. A null `ptr` does nothing.
    ///
    /// # Safety
    /// As [`Cohort::free`].
    ///
    /// # Examples
    ///
    /// ```
    /// cohort::lifetime_classes! { enum Life { Frame, Long } }
    /// static A: cohort::Cohort<Life> = cohort::Cohort::new();
    /// let worker = A.join(3).expect("a heap");
    /// let p = A.malloc(48, Life::Long); // from the thread's own heap
    /// // SAFETY: allocated above with this size and class.
    /// unsafe { worker.free(p, 48, Life::Long) };
    /// ```
    #[inline]
    #[track_caller]
    pub unsafe fn free(&self, ptr: *mut u8, size: usize, life: L) {
        let Some(heap) = self.heap() else {
            // SAFETY: forwarded contract.
            return unsafe { self.cohort.free(ptr, size, life) };
        };
        // SAFETY: forwarded contract.
        unsafe {
            self.cohort.core.free_sized::<false, _>(
                JoinedHeap(heap),
                ptr,
                size,
                malloc_align(size),
                lifetime::index_of(life),
            )
        }
    }

    /// As [`Cohort::dealloc`].
    ///
    /// # Safety
    /// As [`Cohort::dealloc`].
    ///
    /// # Examples
    ///
    /// ```
    /// cohort::lifetime_classes! { enum Life { Frame, Long } }
    /// static A: cohort::Cohort<Life> = cohort::Cohort::new();
    /// let worker = A.join(3).expect("a heap");
    /// let l = std::alloc::Layout::from_size_align(20, 4).unwrap();
    /// let p = worker.alloc(l, Life::Long);
    /// // SAFETY: allocated above with this layout and class.
    /// unsafe { worker.dealloc(p, l, Life::Long) };
    /// ```
    #[inline]
    #[track_caller]
    pub unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout, life: L) {
        let Some(heap) = self.heap() else {
            // SAFETY: forwarded contract.
            return unsafe { self.cohort.dealloc(ptr, layout, life) };
        };
        // SAFETY: forwarded contract.
        unsafe {
            self.cohort.core.free_layout::<false, _>(
                JoinedHeap(heap),
                ptr,
                layout,
                lifetime::index_of(life),
            )
        }
    }

    /// Hands the heap's blocks back to the pool (blocks with live allocations too: their
    /// frees become remote frees). Dropping the join does the same.
    ///
    /// From then on, what was allocated through the join counts as an exited thread's:
    /// any thread's [`Cohort::release_class`] of its lifetime class frees it (the thread
    /// that used the join may still be using it: release only classes whose allocations
    /// are dead).
    ///
    /// # Examples
    ///
    /// ```
    /// cohort::lifetime_classes! { enum Life { Frame, Long } }
    /// static A: cohort::Cohort<Life> = cohort::Cohort::new();
    /// let worker = A.join(3).expect("a heap");
    /// let p = worker.malloc(64, Life::Long);
    /// worker.leave(); // its blocks go back to the pool; p stays live
    /// // SAFETY: live, allocated with this size and class.
    /// unsafe { A.free(p, 64, Life::Long) };
    /// ```
    pub fn leave(self) {}
}

/// `Join { instance, heap, token }`: the instance, and the joined heap's id and owner token
/// (as its blocks' headers hold it). Reads no lock.
impl<L: Lifetime> core::fmt::Debug for Join<'_, L> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut d = f.debug_struct("Join");
        d.field("instance", &self.cohort.core.instance_id());
        match self.heap() {
            Some(heap) => d
                .field("heap", &heap.id)
                .field("token", &format_args!("{:#x}", heap.token)),
            None => d.field("heap", &"none (a fork child that could get none)"),
        };
        d.finish()
    }
}

impl<L: Lifetime> Drop for Join<'_, L> {
    fn drop(&mut self) {
        let heap = self.heap.get();
        let lost = self.born.get() != fork::generation()
            && self
                .cohort
                .core
                .pool_if_lost()
                .is_some();
        // A fork child without the region's memory: its heap there cannot be read, nor
        // given back (`Pool::is_lost`).
        if !heap.is_null() && !lost {
            // SAFETY: the heap is this join's, and it is going away. A fork child's copy
            // that made no call names its parent's heap, which `abandon` leaves alone (it
            // leaves only heaps this process holds).
            unsafe { heap_handover::abandon(heap) };
        }
    }
}

#[cfg(test)]
mod tests;
