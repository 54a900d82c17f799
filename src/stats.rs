//! Statistics of one allocator instance, gathered by walking its blocks.
//!
//! Nothing is counted on the fast paths: [`Cohort::stats`] walks the blocks (one header read
//! and one `mincore` call per block), so it costs time proportional to the blocks, not the
//! allocations, and the allocator pays nothing when nobody asks.
//!
//! Invariants of a [`Stats`]: `small` is the sum of `heads`; for every head,
//! `live <= capacity` and `live_bytes == live * stride`; for every lifetime class `c` in
//! `classes`, `c.small_live` and `c.small_live_bytes` are the sums over the heads of its
//! class; `Σ_c c.large_allocations = large_allocations` and `Σ_c c.large_bytes =
//! large_bytes` (read under one lock); `Σ_c c.medium_allocations = medium_allocations`
//! and `Σ_c c.medium_bytes = medium_bytes` when nothing allocates meanwhile.

use crate::api::Cohort;
use crate::class::GRANULE;
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
    /// The lifetime class's name: its variant's (`""` when the classes have no names), or
    /// `"global"` for std's allocations (through `GlobalAlloc`), or `"scope N"` for an
    /// open [`Cohort::scope`]'s (N from 1 to 8: the scope class it holds).
    pub life_name: &'static str,
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
    ///
    /// # Examples
    ///
    /// ```
    /// let a = cohort::Cohort::<()>::new();
    /// let p = a.malloc(24, ()); // a 32-byte slot: malloc aligns to the next power of two
    /// let s = a.stats();
    /// assert_eq!(s.heads[0].live_bytes(), 32);
    /// // SAFETY: allocated above with this size and class.
    /// unsafe { a.free(p, 24, ()) };
    /// ```
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

/// Figures for one lifetime class: its small allocations (over all size classes) and its
/// large ones (above 16 KiB, each a mapping of its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Lifetime class index (`L::index()`; from `L::COUNT` up, the allocator's own:
    /// `"global"`, then the scopes').
    pub life: usize,
    /// Its name, as [`HeadStats::life_name`].
    pub life_name: &'static str,
    /// Live small allocations.
    pub small_live: usize,
    /// Bytes in their slots.
    pub small_live_bytes: usize,
    /// Blocks holding them.
    pub blocks: usize,
    /// Live large allocations.
    pub large_allocations: usize,
    /// Their mapped bytes.
    pub large_bytes: usize,
    /// Live medium allocations (above 16 KiB up to 1 MiB).
    pub medium_allocations: usize,
    /// Their usable bytes.
    pub medium_bytes: usize,
}

impl ClassStats {
    /// Live allocations, small, medium and large.
    ///
    /// # Examples
    ///
    /// ```
    /// cohort::lifetime_classes! { enum Life { Frame } }
    /// let a: cohort::Cohort<Life> = cohort::Cohort::new();
    /// let v = cohort::Vec::<u8, _>::with_capacity_in(100_000, a.handle(Life::Frame));
    /// let b = cohort::Box::new_in(1u8, a.handle(Life::Frame));
    /// let s = a.stats();
    /// assert_eq!(s.classes[0].life_name, "Frame");
    /// assert_eq!(s.classes[0].live(), 2); // one medium, one small
    /// ```
    pub fn live(&self) -> usize {
        self.small_live + self.medium_allocations + self.large_allocations
    }

    /// Bytes of live allocations: small slots, medium runs and large mappings.
    ///
    /// # Examples
    ///
    /// ```
    /// cohort::lifetime_classes! { enum Life { Frame } }
    /// let a: cohort::Cohort<Life> = cohort::Cohort::new();
    /// let v = cohort::Vec::<u8, _>::with_capacity_in(100_000, a.handle(Life::Frame));
    /// assert_eq!(a.stats().classes[0].live_bytes(), 100_352); // 49 granules of 2 KiB
    /// ```
    pub fn live_bytes(&self) -> usize {
        self.small_live_bytes + self.medium_bytes + self.large_bytes
    }
}

/// A snapshot of an allocator's memory, from [`Cohort::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Every (size class, lifetime class) pair with a block, by size class then lifetime.
    pub heads: Vec<HeadStats>,
    /// The sum over `heads`.
    pub small: Totals,
    /// Every lifetime class with live allocations or blocks, small and large, by index.
    pub classes: Vec<ClassStats>,
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
    /// Medium allocations (above 16 KiB up to 1 MiB: runs of granules in medium blocks)
    /// live now.
    pub medium_allocations: usize,
    /// Usable bytes of the live medium allocations.
    pub medium_bytes: usize,
    /// Medium blocks in use.
    pub medium_blocks: usize,
    /// Free bytes of the medium blocks that may be resident (not yet given back).
    pub medium_dirty_bytes: usize,
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
    ///
    /// # Examples
    ///
    /// ```
    /// cohort::lifetime_classes! { enum Life { Frame, Long } }
    /// static A: cohort::Cohort<Life> = cohort::Cohort::new();
    /// let v = cohort::Vec::<u64, _>::with_capacity_in(10, A.handle(Life::Long));
    /// let s = A.stats();
    /// assert_eq!(s.small.live, 1);
    /// assert_eq!(s.classes[0].life_name, "Long");
    /// println!("{s}"); // a table per (size class, lifetime class), then per lifetime class
    /// ```
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
                    life_name: Self::life_name(b.life),
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
        let classes = self.class_totals(&heads);
        let (large_cached, large_cached_bytes, large_system_calls) =
            self.core.large_cache_counters();
        let medium = self.core.medium_counts();
        Stats {
            heads,
            small,
            classes,
            medium_allocations: medium.runs,
            medium_bytes: medium.live * GRANULE,
            medium_blocks: medium.blocks,
            medium_dirty_bytes: medium.dirty * GRANULE,
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

impl<L: Lifetime> Cohort<L> {
    /// Per lifetime class: the sums over `heads`, and the large allocations, counted under
    /// the large table's lock into a fixed array (nothing allocates under it: the
    /// allocator may be the global one).
    fn class_totals(&self, heads: &[HeadStats]) -> Vec<ClassStats> {
        let mut large = [(0usize, 0usize); 256];
        let mut medium = [(0usize, 0usize); 256];
        if let Some(pool) = self.core.pool_if_any() {
            for (_, len, life) in pool.large.lock().live() {
                let at = &mut large[Self::reported(life) & 255];
                *at = (at.0 + 1, at.1 + len);
            }
            let st = pool.state.lock();
            for life in 0..pool.life_count {
                medium[Self::reported(life) & 255] = pool.medium_of_life(&st, life);
            }
        }
        let mut classes: Vec<ClassStats> = Vec::new();
        for (life, &(count, bytes)) in large.iter().enumerate() {
            let (medium_allocations, medium_bytes) = medium[life];
            let mut c = ClassStats {
                life,
                life_name: Self::life_name(life),
                large_allocations: count,
                large_bytes: bytes,
                medium_allocations,
                medium_bytes,
                ..Default::default()
            };
            for h in heads.iter().filter(|h| h.life == life) {
                c.small_live += h.live;
                c.small_live_bytes += h.live_bytes();
                c.blocks += h.blocks;
            }
            if c.blocks > 0 || c.large_allocations > 0 || c.medium_allocations > 0 {
                classes.push(c);
            }
        }
        classes
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

/// A lifetime class as a table shows it: its name, or its index when it has none.
pub(crate) struct LifeLabel(pub usize, pub &'static str);

impl fmt::Display for LifeLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.1.is_empty() {
            f.pad(&self.0.to_string())
        } else {
            f.pad(self.1)
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:>5} {:>7} {:>10} {:>6} {:>10} {:>10} {:>11} {:>11} {:>6}",
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
                "{:>5} {:>7} {:>10} {:>6} {:>10} {:>10} {:>11} {:>11} {:>5.1}%",
                h.size_class,
                h.stride,
                LifeLabel(h.life, h.life_name),
                h.blocks,
                h.live,
                Bytes(h.live_bytes()),
                Bytes(h.block_bytes),
                Bytes(h.resident_bytes),
                100.0 * h.live as f64 / h.capacity.max(1) as f64
            )?;
        }
        writeln!(
            f,
            "{:>10} {:>10} {:>10} {:>11} {:>10} {:>10} {:>11} {:>10}",
            "life", "small live", "small", "medium live", "medium", "large live", "large", "total"
        )?;
        for c in &self.classes {
            writeln!(
                f,
                "{:>10} {:>10} {:>10} {:>11} {:>10} {:>10} {:>11} {:>10}",
                LifeLabel(c.life, c.life_name),
                c.small_live,
                Bytes(c.small_live_bytes),
                c.medium_allocations,
                Bytes(c.medium_bytes),
                c.large_allocations,
                Bytes(c.large_bytes),
                Bytes(c.live_bytes())
            )?;
        }
        let t = &self.small;
        writeln!(
            f,
            "small: {} blocks, {} live slots, {} live, {} resident ({} reserved); large: {} \
             allocations, {} ({} freed mappings cached, {}); medium: {} allocations, {} in {} \
             blocks ({} free resident); {} empty blocks kept; pool lock taken {} times",
            t.blocks,
            t.live,
            Bytes(t.live_bytes),
            Bytes(t.resident_bytes),
            Bytes(t.block_bytes),
            self.large_allocations,
            Bytes(self.large_bytes),
            self.large_cached,
            Bytes(self.large_cached_bytes),
            self.medium_allocations,
            Bytes(self.medium_bytes),
            self.medium_blocks,
            Bytes(self.medium_dirty_bytes),
            self.retained_empty_blocks,
            self.lock_acquisitions
        )
    }
}
