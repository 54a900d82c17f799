//! Block reports: [`Cohort::for_each_block`] and the block of an allocation.

use super::Cohort;
use crate::class::{class_of, malloc_align, Class, BLOCK_SIZE, CLASSES, GRANULE, MEDIUM_CLASS};
use crate::medium_block::MAX_RUN;
use crate::lifetime::Lifetime;
use crate::os;

/// One block, as [`Cohort::for_each_block`] reports it. A medium block (`size_class` is
/// [`MEDIUM_CLASS`]) is reported by its granules: its slots are its
/// [`GRANULE`]-byte granules (`stride`), `capacity` those that runs may use, `live` those of
/// its live medium allocations, which `runs` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockReport {
    /// The block's base address.
    pub base: usize,
    /// Size class index ([`MEDIUM_CLASS`] for a medium block).
    pub size_class: usize,
    /// Slot size in bytes ([`GRANULE`] for a medium block).
    pub stride: usize,
    /// Lifetime class index.
    pub life: usize,
    /// Slots in the block.
    pub capacity: usize,
    /// Live slots.
    pub live: usize,
    /// Live medium allocations (runs of granules) in a medium block; 0 in a small one.
    pub runs: usize,
    /// The block's size in bytes (virtual).
    pub block_bytes: usize,
    /// Usable bytes: `capacity * stride`.
    pub usable_bytes: usize,
    /// Bytes of the block resident in RAM.
    pub resident_bytes: usize,
    /// Live slots holding requests of a smaller size class promoted into the block (its
    /// class had no free slot and the region no block to carve), counted in `live`.
    pub promoted: usize,
}

impl BlockReport {
    /// Block bytes divided by usable bytes: the measure of the ratio contract
    /// ([`crate::class::ratio_contract_limit`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let a = cohort::Cohort::<()>::new();
    /// let p = a.malloc(48, ());
    /// a.for_each_block(|b| assert!(b.geometry_ratio() >= 1.0 && b.geometry_ratio() < 1.1));
    /// // SAFETY: allocated above with this size and class.
    /// unsafe { a.free(p, 48, ()) };
    /// ```
    pub fn geometry_ratio(&self) -> f64 {
        self.block_bytes as f64 / self.usable_bytes as f64
    }
}

impl<L: Lifetime> Cohort<L> {
    /// Calls `f` for every block in use (blocks held empty for reuse are skipped). A
    /// snapshot: counts of blocks other threads are using may be a moment old, and a block
    /// changing hands meanwhile is reported with its old or its new class, whole.
    /// Cost: one `mincore` call per block.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = cohort::Cohort::<()>::new();
    /// let p = a.malloc(64, ());
    /// let mut live = 0;
    /// a.for_each_block(|b| live += b.live);
    /// assert_eq!(live, 1);
    /// // SAFETY: allocated above with this size and class.
    /// unsafe { a.free(p, 64, ()) };
    /// ```
    pub fn for_each_block(&self, mut f: impl FnMut(&BlockReport)) {
        let Some(pool) = self.core.pool_if_any() else {
            return;
        };
        // The reports (and the statistics and `is_empty` built on them) count pending
        // remote frees as freed.
        // In a fork child whose repair has not run (a program's earlier child handler asks),
        // the repair first: it marks the heaps below taken over (RED-114).
        crate::fork::repair_pending_child();
        self.core.flush_batches();
        // In a fork child, the heaps of the parent's other threads are taken over first
        // (recounted), as `verify` does: such a thread may have stopped inside a write of
        // its counts, which nobody in the child finishes (its row's sequence stays odd, and
        // its fast-path allocations are counted twice: in the header and in `taken`).
        if !pool.is_process_shared() {
            crate::heap_handover::reap_forsaken(pool);
        }
        let blocks = pool.blocks(&pool.lock_uncounted());
        for h in blocks {
            // One read of the header's identity: the block may change hands meanwhile.
            let Some(b) = crate::heap::counted_snapshot(pool, h, None) else {
                if let Some(m) = pool.medium_block_counts(h) {
                    f(&BlockReport {
                        base: h.base() as usize,
                        size_class: MEDIUM_CLASS,
                        stride: GRANULE,
                        life: Self::reported(h.life()),
                        capacity: MAX_RUN,
                        live: m.live,
                        runs: m.runs,
                        block_bytes: BLOCK_SIZE,
                        usable_bytes: MAX_RUN * GRANULE,
                        // SAFETY: the block is mapped.
                        resident_bytes: unsafe { os::resident_bytes(h.base(), BLOCK_SIZE) },
                        promoted: 0,
                    });
                }
                continue;
            };
            let c: &Class = b.geometry;
            let report = BlockReport {
                base: h.base() as usize,
                size_class: b.class,
                stride: c.stride as usize,
                life: Self::reported(b.life),
                capacity: c.capacity as usize,
                live: b.live as usize,
                runs: 0,
                block_bytes: c.block_size(),
                usable_bytes: c.usable(),
                // SAFETY: the block is mapped.
                resident_bytes: unsafe { os::resident_bytes(h.base(), c.block_size()) },
                // Read a moment after `live`: kept within it (other threads may promote
                // or free meanwhile).
                promoted: crate::promotion::promoted_in(&pool.region, h)
                    .0
                    .min(b.live as usize),
            };
            f(&report);
        }
    }

    /// The base address of the block holding an allocation of `size` bytes made by
    /// [`Cohort::malloc`] (for `Layout` allocations use [`Cohort::block_of_layout`]).
    /// `None` for medium and large allocations (a medium one has a block, but a run of
    /// granules in it, not a slot: `allocation_at` finds it), and for a small request a
    /// full region served from a mapping of its own ([`crate::RegionOptions::fallback`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let a = cohort::Cohort::<()>::new();
    /// let (p, q) = (a.malloc(64, ()), a.malloc(64, ()));
    /// // Two allocations of one size class and lifetime class, one thread: one block.
    /// assert_eq!(a.block_of(p, 64), a.block_of(q, 64));
    /// assert_eq!(a.block_of(p, 64).unwrap() % (2 << 20), 0);
    /// // SAFETY: both allocated above with this size and class.
    /// unsafe { a.free(p, 64, ()); a.free(q, 64, ()) };
    /// ```
    pub fn block_of(&self, ptr: *const u8, size: usize) -> Option<usize> {
        self.block_of_layout(ptr, size, malloc_align(size))
    }

    /// The base address of the block holding an allocation for (size, align). `None` as
    /// for [`Cohort::block_of`], and for an `align` that is not a power of two (no
    /// `Layout` has one).
    ///
    /// # Examples
    ///
    /// ```
    /// let a = cohort::Cohort::<()>::new();
    /// let l = std::alloc::Layout::from_size_align(24, 8).unwrap();
    /// let p = a.alloc(l, ());
    /// let base = a.block_of_layout(p, 24, 8).unwrap();
    /// assert!(base <= p as usize && (p as usize) < base + (2 << 20));
    /// assert_eq!(a.block_of_layout(p, 100_000, 8), None); // large: no block
    /// // SAFETY: allocated above with this layout and class.
    /// unsafe { a.dealloc(p, l, ()) };
    /// ```
    pub fn block_of_layout(&self, ptr: *const u8, size: usize, align: usize) -> Option<usize> {
        if !self.in_region(ptr) || !align.is_power_of_two() {
            return None; // A mapping of its own: no block; or no allocation's alignment.
        }
        let c = &CLASSES[class_of(size.max(1), align)?];
        Some(ptr as usize & !(c.block_size() - 1))
    }
}
