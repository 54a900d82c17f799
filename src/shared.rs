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
//! joins afresh on its first allocation, with a heap of its own.
//!
//! **Leaving.** Dropping a shared instance is this process's leave: the calling thread's
//! heap goes back to the region (abandoned: its blocks to the pool, its record to the next
//! taker, in any process), other threads' heaps when they exit, and the last of them
//! unmaps this process's mapping. The region lives while any process maps it.
//!
//! **Large allocations** (above the largest size class) are refused in a shared instance:
//! they return null, as out of memory does. (A large allocation is a mapping of its own,
//! which other processes would not see.)

use crate::instance::{state_len, Instance, Placement, CHECKED};
use crate::lifetime::Lifetime;
use crate::os;
use crate::region::UNIT;
use crate::Cohort;

/// Where a shared-anonymous region's state area starts: past a page left for a header.
const STATE_OFFSET: usize = os::MIN_PAGE;

impl<L: Lifetime> Cohort<L> {
    /// An instance in a fresh region of `bytes` (rounded down to 2 MiB units, at least one)
    /// of memory shared with the children this process forks after: parent and children
    /// allocate and free in the same instance, and an allocation made by one is seen and
    /// may be freed by any other. `None` when the OS refuses the memory.
    ///
    /// Large allocations (above the largest size class) are refused in a shared instance
    /// (null). Dropping the instance is this process's leave: the region lives while any
    /// process maps it.
    pub fn shared_anonymous(bytes: usize) -> Option<Self> {
        let unit_count = (bytes / UNIT).max(1);
        let state_len = state_len(unit_count, L::COUNT, CHECKED)?;
        let blocks_offset = (STATE_OFFSET.checked_add(state_len)?).checked_next_multiple_of(UNIT)?;
        let len = blocks_offset.checked_add(unit_count.checked_mul(UNIT)?)?;
        let base = os::shared_mem::map_shared_anonymous(len, UNIT);
        if base.is_null() {
            return None;
        }
        let placement = Placement {
            base,
            len,
            state_offset: STATE_OFFSET,
            state_len,
            blocks_offset,
            unit_count,
            is_new: true,
            sync_on_leave: false,
            unmap: unmap_anonymous,
        };
        // SAFETY: the mapping is fresh (reads zero), shared, ours alone, and only
        // `unmap_anonymous` unmaps it.
        match unsafe { Instance::placed(placement, L::COUNT, L::NAMES) } {
            Some(core) => Some(Cohort::from_core(core)),
            None => {
                // SAFETY: refused: the mapping is still ours and unused.
                unsafe { os::unmap(base, len) };
                None
            }
        }
    }
}

/// Unmaps a shared-anonymous region from this process (a `Placement::unmap`).
///
/// # Safety
/// `[base, base + len)` is the region's mapping, which nothing of this process uses.
unsafe fn unmap_anonymous(base: *mut u8, len: usize, _sync: bool) {
    // SAFETY: the caller's guarantee.
    unsafe { os::unmap(base, len) }
}
