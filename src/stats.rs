//! Statistics of one allocator instance, gathered by walking its blocks.
//!
//! Nothing is counted on the fast paths: [`Cohort::stats`] walks the blocks (one header read
//! and one `mincore` call per block), so it costs time proportional to the blocks, not the
//! allocations, and the allocator pays nothing when nobody asks.
//!
//! Invariants of a [`Stats`]: `small` is the sum of `heads`; for every head,
//! `live <= capacity` and `live_bytes == live * stride`.

use crate::api::Cohort;
use crate::lifetime::Lifetime;
use core::fmt;

/// Figures for one (size class, lifetime class) pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadStats {
    /// Size class index.
    pub size_class: usize,
    /// Slot size in bytes.
    pub stride: usize,
    /// Lifetime class index.
    pub life: usize,
    /// Blocks in use.
    pub blocks: usize,
    /// Live slots.
    pub live: usize,
    /// Slots in those blocks.
    pub capacity: usize,
    /// Bytes of those blocks (virtual).
    pub block_bytes: usize,
    /// Bytes of those blocks resident in RAM.
    pub resident_bytes: usize,
}

impl HeadStats {
    /// Bytes in live slots: `live * stride`.
    pub fn live_bytes(&self) -> usize {
        self.live * self.stride
    }
}

/// Figures summed over many heads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Blocks in use.
    pub blocks: usize,
    /// Live slots.
    pub live: usize,
    /// Bytes in live slots.
    pub live_bytes: usize,
    /// Bytes of all slots of those blocks.
    pub capacity_bytes: usize,
    /// Bytes of those blocks (virtual).
    pub block_bytes: usize,
    /// Bytes of those blocks resident in RAM.
    pub resident_bytes: usize,
}

/// A snapshot of an allocator's memory, from [`Cohort::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Every (size class, lifetime class) pair with a block, by size class then lifetime.
    pub heads: Vec<HeadStats>,
    /// The sum over `heads`.
    pub small: Totals,
    /// Large allocations live now, and their mapped bytes.
    pub large_allocations: usize,
    /// Mapped bytes of the large allocations.
    pub large_bytes: usize,
    /// Freed large mappings cached for reuse (free memory: no allocation owns them).
    pub large_cached: usize,
    /// Mapped bytes of the cached large mappings.
    pub large_cached_bytes: usize,
    /// System calls (map, unmap, remap) the large paths made since the allocator started.
    pub large_system_calls: u64,
    /// Empty blocks kept committed for reuse.
    pub retained_empty_blocks: usize,
    /// Times the pool lock was taken since the allocator started (slow paths only).
    pub lock_acquisitions: u64,
}

impl<L: Lifetime> Cohort<L> {
    /// Gathers statistics: per (size class, lifetime class) pair and in total.
    ///
    /// Thread safety: may run while other threads allocate; their figures may then be a
    /// moment old. Cost: proportional to the number of blocks (one `mincore` call each).
    /// Allocates the result through the global allocator, holding no lock of its own.
    pub fn stats(&self) -> Stats {
        let mut heads: Vec<HeadStats> = Vec::new();
        self.for_each_block(|b| {
            let at =
                heads.binary_search_by_key(&(b.size_class, b.life), |h| (h.size_class, h.life));
            let i = at.unwrap_or_else(|i| {
                let h = HeadStats {
                    size_class: b.size_class,
                    stride: b.stride,
                    life: b.life,
                    ..Default::default()
                };
                heads.insert(i, h);
                i
            });
            let h = &mut heads[i];
            h.blocks += 1;
            h.live += b.live;
            h.capacity += b.capacity;
            h.block_bytes += b.block_bytes;
            h.resident_bytes += b.resident_bytes;
        });
        let mut small = Totals::default();
        for h in &heads {
            small.blocks += h.blocks;
            small.live += h.live;
            small.live_bytes += h.live_bytes();
            small.capacity_bytes += h.capacity * h.stride;
            small.block_bytes += h.block_bytes;
            small.resident_bytes += h.resident_bytes;
        }
        let (large_allocations, large_bytes, retained_empty_blocks, lock_acquisitions) =
            self.core.pool_counters();
        let (large_cached, large_cached_bytes, large_system_calls) =
            self.core.large_cache_counters();
        Stats {
            heads,
            small,
            large_allocations,
            large_bytes,
            large_cached,
            large_cached_bytes,
            large_system_calls,
            retained_empty_blocks,
            lock_acquisitions,
        }
    }
}

/// Bytes as B, KiB, MiB or GiB with one decimal.
pub(crate) struct Bytes(pub usize);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0 as f64;
        let s = if self.0 < 1024 {
            format!("{} B", self.0)
        } else if b < 1024.0 * 1024.0 {
            format!("{:.1} KiB", b / 1024.0)
        } else if b < 1024.0 * 1024.0 * 1024.0 {
            format!("{:.1} MiB", b / (1024.0 * 1024.0))
        } else {
            format!("{:.1} GiB", b / (1024.0 * 1024.0 * 1024.0))
        };
        f.pad(&s)
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:>5} {:>7} {:>4} {:>6} {:>10} {:>10} {:>11} {:>11} {:>6}",
            "class",
            "stride",
            "life",
            "blocks",
            "live",
            "live bytes",
            "block bytes",
            "resident",
            "fill"
        )?;
        for h in &self.heads {
            writeln!(
                f,
                "{:>5} {:>7} {:>4} {:>6} {:>10} {:>10} {:>11} {:>11} {:>5.1}%",
                h.size_class,
                h.stride,
                h.life,
                h.blocks,
                h.live,
                Bytes(h.live_bytes()),
                Bytes(h.block_bytes),
                Bytes(h.resident_bytes),
                100.0 * h.live as f64 / h.capacity.max(1) as f64
            )?;
        }
        let t = &self.small;
        writeln!(
            f,
            "small: {} blocks, {} live slots, {} live, {} resident ({} reserved); large: {} \
             allocations, {} ({} freed mappings cached, {}); {} empty blocks kept; pool lock \
             taken {} times",
            t.blocks,
            t.live,
            Bytes(t.live_bytes),
            Bytes(t.resident_bytes),
            Bytes(t.block_bytes),
            self.large_allocations,
            Bytes(self.large_bytes),
            self.large_cached,
            Bytes(self.large_cached_bytes),
            self.retained_empty_blocks,
            self.lock_acquisitions
        )
    }
}
