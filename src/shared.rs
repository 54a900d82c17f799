//! Instances in memory shared between processes: the shared-anonymous backend, inherited
//! by the children this process forks ([`Cohort::shared_anonymous`]).
//!
//! A shared instance keeps everything its processes share in its region: the pool's state,
//! the heap registry, the heaps, the lists and the unit states, in the state area before
//! the blocks (`crate::pool::place`). Nothing stored there is an address: blocks are named
//! by unit index, slots by offset in their block, heap records by offset in the state
//! area, and the pool's tables by their offset from the state itself; each process reaches
//! them through its own view ([`crate::pool::Pool`]), so the region may map at any address.
//! Two fields of a heap are addresses in its holder's mapping (its current blocks and its
//! pool view): only the holder reads them, and whoever takes an abandoned heap rewrites
//! them (`Heap::take_over`).
//!
//! **Ownership across processes.** A heap's token is `tag << 16 | id`: `tag` is the
//! region's (bit 31 set and 31 random bits, drawn when it is formatted, the same for every
//! process), `id` the heap's index in the region's registry. So a free by another process
//! meets a block whose owner is not one of its heaps, and goes on the block's remote list,
//! as a free by another thread does. No token of a shared region equals one of a private
//! instance (whose tag is its instance id, below 2^31), and a process refuses a second
//! region with the tag of one it already has.
//!
//! **fork.** The child's thread forgets the heaps it held of every shared instance (they
//! are the parent's, which goes on using them: both would pop the same free lists) and
//! joins afresh on its first allocation, with a heap of its own. A [`crate::Join`] the
//! child inherits does the same on its first call (it compares the fork generation it was
//! made in, `crate::fork::generation`); a scope the parent opened and the child ends
//! (returning from its closure) is left to the parent: the child neither releases its
//! class nor gives the claim back.
//!
//! **Leaving.** Dropping a shared instance is this process's leave: the calling thread's
//! heap goes back to the region (abandoned: its blocks to the pool, its record to the next
//! taker, in any process); other threads' heaps are orphaned, and each goes back when its
//! thread next looks up a heap (a first allocation in any instance) or exits; the last of
//! them unmaps this process's mapping. The region lives while any process maps it.
//!
//! **Large allocations** (above the largest size class) are runs of the region's own
//! units (`crate::region::runs`), which every process sees and may free by size; a region
//! with no room for one returns null, as out of memory does.

use crate::instance::{state_len, Instance, Placement, CHECKED};
use crate::lifetime::Lifetime;
use crate::os;
use crate::region::UNIT;
use crate::sync::Ordering;
use crate::Cohort;

/// Where a shared-anonymous region's state area starts: past a page left for a header.
const STATE_OFFSET: usize = os::MIN_PAGE;

impl<L: Lifetime> Cohort<L> {
    /// An instance in a fresh region of `bytes` (rounded down to 2 MiB units, at least one)
    /// of memory shared with the children this process forks after: parent and children
    /// allocate and free in the same instance, and an allocation made by one is seen and
    /// may be freed by any other. `None` when the OS refuses the memory.
    ///
    /// Large allocations (above the largest size class) take whole 2 MiB units of the
    /// region, contiguous (null when it has no such room). Dropping the instance is this
    /// process's leave: the region lives while any
    /// process maps it.
    pub fn shared_anonymous(bytes: usize) -> Option<Self> {
        let geometry = Geometry::new(bytes, Self::INSIDE_COUNT)?;
        let base = os::shared_mem::map_shared_anonymous(geometry.len, UNIT);
        if base.is_null() {
            return None;
        }
        // SAFETY: the mapping is fresh (reads zero), shared, ours alone, and only
        // `unmap_anonymous` unmaps it.
        match unsafe { Instance::placed(geometry.placement(base, true), Self::INSIDE_COUNT, Self::NAMES) } {
            Some(core) => Some(Cohort::from_core(core)),
            None => {
                // SAFETY: refused: the mapping is still ours and unused.
                unsafe { os::unmap(base, geometry.len) };
                None
            }
        }
    }

    /// In a shared instance: takes over the heaps of processes that died while joined
    /// (kill -9): a heap whose holder's pid is gone, or is another process's now (told by
    /// its start time), is abandoned on its holder's behalf, as the holder's exit would
    /// have done: its partial and current blocks go to the pool, the heap to the next
    /// thread or process that joins. What the dead process held live stays allocated: any
    /// process may free it, or release its lifetime class. Returns how many heaps it took
    /// over; 0 in a private instance. Every join (a thread's first allocation in the
    /// instance, [`Cohort::join`]) does this too, and so do [`Cohort::compact`], a
    /// [`Cohort::release_class`] that found blocks of other heaps, and an allocation about
    /// to fail for want of memory.
    pub fn reap_dead_processes(&self) -> usize {
        self.core
            .pool_if_any()
            .map_or(0, crate::heap_handover::reap_dead)
    }

    /// What this instance's processes recovered from the deaths of others (all zero in a
    /// private instance).
    pub fn recoveries(&self) -> Recoveries {
        self.core.pool_if_any().map_or_else(Recoveries::default, |pool| Recoveries {
            lock_repairs: pool.lock_repairs.load(Ordering::Relaxed),
            heaps_reaped: pool.heaps_reaped.load(Ordering::Relaxed),
        })
    }
}

/// What a shared instance's processes recovered from the deaths of others, since the
/// region was made ([`Cohort::recoveries`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recoveries {
    /// Times a process found the pool's lock held by a dead process and repaired the pool.
    pub lock_repairs: u64,
    /// Heaps of dead processes taken over ([`Cohort::reap_dead_processes`]).
    pub heaps_reaped: u64,
}

/// The parts of a shared-anonymous region of a given size: a page for a header, the state
/// area, the blocks.
pub(crate) struct Geometry {
    pub(crate) unit_count: usize,
    pub(crate) state_len: usize,
    pub(crate) blocks_offset: usize,
    pub(crate) len: usize,
}

impl Geometry {
    /// For `bytes` of blocks (rounded down to units, at least one) and `life_count`
    /// lifetime classes; `None` past the address space.
    pub(crate) fn new(bytes: usize, life_count: usize) -> Option<Geometry> {
        let unit_count = (bytes / UNIT).max(1);
        let state_len = state_len(unit_count, life_count, CHECKED)?;
        let blocks_offset = STATE_OFFSET
            .checked_add(state_len)?
            .checked_next_multiple_of(UNIT)?;
        let len = blocks_offset.checked_add(unit_count.checked_mul(UNIT)?)?;
        Some(Geometry {
            unit_count,
            state_len,
            blocks_offset,
            len,
        })
    }

    /// The placement of a region of this geometry mapped at `base`.
    pub(crate) fn placement(&self, base: *mut u8, is_new: bool) -> Placement {
        Placement {
            base,
            len: self.len,
            state_offset: STATE_OFFSET,
            state_len: self.state_len,
            blocks_offset: self.blocks_offset,
            unit_count: self.unit_count,
            is_new,
            sync_on_leave: false,
            private: false,
            unmap: unmap_anonymous,
            after_leave: None,
            write_seal: None,
        }
    }
}

/// Unmaps a shared-anonymous region from this process (a `Placement::unmap`).
///
/// # Safety
/// `[base, base + len)` is the region's mapping, which nothing of this process uses.
pub(crate) unsafe fn unmap_anonymous(base: *mut u8, len: usize, _sync: bool) {
    // SAFETY: the caller's guarantee.
    unsafe { os::unmap(base, len) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One node of a list built in the region: the offset of the next node from the
    /// region's base (0 ends it) and a value.
    #[repr(C)]
    struct Node {
        next: usize,
        value: u64,
    }

    /// The same region at two addresses of one process: a list built through the first
    /// mapping is walked and freed through the second, after the first left (a process
    /// attaches a region once at a time: the second attach is refused while the first is
    /// there, see `Instance::placed`). The thread's heap, abandoned by the first mapping's
    /// leave, is taken over by the second: the frees are local to it.
    #[test]
    fn a_region_left_at_one_address_is_attached_and_used_at_another() {
        const NODES: u64 = 2000;
        let (count, names) = (Cohort::<()>::INSIDE_COUNT, Cohort::<()>::NAMES);
        let geometry = Geometry::new(16 << 20, count).unwrap();
        let a = Cohort::<()>::shared_anonymous(16 << 20).unwrap();
        let leave = a.core.pool_if_any().unwrap().leave.unwrap();
        let base_a = leave.base as usize;
        assert_eq!(leave.len, geometry.len);
        let mut head = 0;
        for value in 0..NODES {
            let n = a.malloc(size_of::<Node>(), ()).cast::<Node>();
            assert!(!n.is_null());
            // SAFETY: fresh, ours.
            unsafe { n.write(Node { next: head, value }) };
            head = n as usize - base_a;
        }
        // SAFETY: a shared mapping of this process.
        let b = unsafe { os::shared_mem::map_again(leave.base, leave.len, UNIT) };
        assert!(!b.is_null() && b != leave.base);
        // SAFETY: the same region, formatted by `a`, mapped for as long as the instance.
        let twice = unsafe { Instance::placed(geometry.placement(b, false), count, names) };
        assert!(twice.is_none(), "a process attaches a region once at a time");
        drop(a);
        // SAFETY: as above; `a` has left, and its mapping is gone.
        let core = unsafe { Instance::placed(geometry.placement(b, false), count, names) };
        let c = Cohort::<()>::from_core(core.expect("attached at the second address"));
        let mut at = head;
        let mut expect = NODES;
        while at != 0 {
            let n = (b as usize + at) as *mut Node;
            // SAFETY: a node of the list, at its offset in the region.
            let node = unsafe { n.read() };
            expect -= 1;
            assert_eq!(node.value, expect, "the list reads the same at the second address");
            at = node.next;
            // SAFETY: allocated through `a`, freed once through `c`.
            unsafe { c.free(n.cast(), size_of::<Node>(), ()) };
        }
        assert_eq!(expect, 0);
        assert!(c.is_empty());
        // SAFETY: nobody else uses the region.
        unsafe { c.verify() }.expect("verifies at the second address");
        let p = c.malloc(100, ());
        assert!(!p.is_null());
        // SAFETY: allocated above.
        unsafe { c.free(p, 100, ()) };
    }
}
