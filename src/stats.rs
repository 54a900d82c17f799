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
use crate::class::{HeadIndex, CLASSES, GRANULE, MEDIUM_CLASS};
use crate::counters::Counter;
use crate::label::{Label, LabelCell};
use crate::lifetime::Lifetime;
use crate::sync::Ordering;
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
    /// Live slots (counted in `live`) holding requests of a smaller size class, promoted
    /// into these blocks because their own class had no free slot and the region no block
    /// to carve.
    pub promoted: usize,
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

/// The slow-path events of one (size class, lifetime class) pair since the allocator
/// started, counted off the fast paths (per allocation and per free nothing is counted:
/// see [`Stats::events`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadEvents {
    /// Size class index.
    pub size_class: usize,
    /// Slot size in bytes.
    pub stride: usize,
    /// Lifetime class index (as [`HeadStats::life`]).
    pub life: usize,
    /// The lifetime class's name, as [`HeadStats::life_name`].
    pub life_name: &'static str,
    /// Allocations that took the slow path (the current block had no slot ready: a new
    /// bump window, freed slots collected, another block, a block from the pool).
    pub alloc_slow: u64,
    /// Local frees that took the slow path (a block relisted or emptied), and frees that
    /// were local after all on a heap the thread did not use last.
    pub free_slow: u64,
    /// Frees by a thread that does not own the block.
    pub remote_frees: u64,
    /// Blocks a heap took from the pool (kept, retained or new).
    pub blocks_taken: u64,
    /// Blocks given back to the pool, emptied by frees or by a release.
    pub blocks_given_back: u64,
    /// Requests of this head served by promotion (from a larger size class).
    pub promoted: u64,
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
    /// The allocator's label ([`Cohort::set_label`]), empty when it has none.
    pub label: Label,
    /// The region's capacity in bytes: the blocks it can ever hold times 2 MiB (0 before
    /// the first allocation). Past it, small allocations promote or fail (null).
    pub region_bytes: usize,
    /// Blocks carved from the region so far (in use, kept empty, or given back to the OS
    /// and carvable again): `region_bytes / 2 MiB - carved_blocks` are never used yet.
    pub carved_blocks: usize,
    /// Units (2 MiB) of the region held by large allocations, in a region that serves them
    /// from its units (a fixed capacity, a shared or file region): with the blocks in use
    /// and kept, what the region's capacity is used by.
    pub run_units: usize,
    /// Blocks taken out of use because their free slots' links were found damaged when
    /// first taken after an open ([`crate::OpenOptions::check_blocks`]): their slots are
    /// never handed out again, and [`Cohort::verify`] names each.
    pub damaged_blocks: u64,
    /// Every (size class, lifetime class) pair with a slow-path event since the allocator
    /// started, by lifetime class then size class. In a region shared between processes
    /// (or a fixed region) the counts are region-wide: every process's events since the
    /// region was made, kept across leave and open. Each allocation and each free is not
    /// counted (that would cost the fast paths an instruction each); `live` in `heads` is
    /// their difference.
    pub events: Vec<HeadEvents>,
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
            if b.size_class == MEDIUM_CLASS {
                // Counted below, with the medium allocations.
                return;
            }
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
            h.promoted += b.promoted;
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
        let damaged_blocks = self
            .core
            .pool_if_any()
            .map_or(0, |pool| pool.quarantined.load(Ordering::Relaxed));
        let (region_bytes, carved_blocks, run_units) = self.core.pool_if_any().map_or((0, 0, 0), |pool| {
            // Repairing as every locker does (`pool_counters` repaired already, unless a
            // holder died since).
            let st = pool.lock_uncounted();
            let runs = pool.region.runs(&st.region).map(|(_, run)| run.units).sum();
            (pool.region.len(), pool.region.carved_units(&st.region), runs)
        });
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
            label: self.label(),
            events: self.events(),
            region_bytes,
            carved_blocks,
            run_units,
            damaged_blocks,
        }
    }
}

impl<L: Lifetime> Cohort<L> {
    /// The per-head event counters (see [`Stats::events`]).
    fn events(&self) -> Vec<HeadEvents> {
        let Some(pool) = self.core.pool_if_any() else {
            return Vec::new();
        };
        let mut events = Vec::new();
        for inside in 0..Self::INSIDE_COUNT {
            for (class, c) in CLASSES.iter().enumerate() {
                let n = pool.counters.get(HeadIndex::new(class, inside).get());
                if n.iter().all(|&n| n == 0) {
                    continue;
                }
                let life = Self::reported(inside);
                events.push(HeadEvents {
                    size_class: class,
                    stride: c.stride as usize,
                    life,
                    life_name: Self::life_name(life),
                    alloc_slow: n[Counter::AllocSlow as usize],
                    free_slow: n[Counter::FreeSlow as usize],
                    remote_frees: n[Counter::RemoteFree as usize],
                    blocks_taken: n[Counter::BlockTaken as usize],
                    blocks_given_back: n[Counter::BlockGivenBack as usize],
                    promoted: n[Counter::Promoted as usize],
                });
            }
        }
        events.sort_by_key(|e| (e.life, e.size_class));
        events
    }

    /// This allocator, labelled `label` (cut to [`LABEL_BYTES`](crate::LABEL_BYTES) bytes): its misuse
    /// reports, verify errors and statistics name it, so that a program with several
    /// allocators knows which one complained.
    ///
    /// # Examples
    ///
    /// ```
    /// static FRAMES: cohort::Cohort = cohort::Cohort::new().labelled("frames");
    /// assert_eq!(FRAMES.label().as_str(), "frames");
    /// let p = FRAMES.malloc(24, ());
    /// // SAFETY: p is live; the wrong size is reported and nothing is freed.
    /// let m = unsafe { FRAMES.try_free(p, 4000, ()) }.unwrap_err();
    /// assert!(m.to_string().starts_with("cohort [frames]: bad free"));
    /// // SAFETY: allocated above with this size and class.
    /// unsafe { FRAMES.free(p, 24, ()) };
    /// ```
    pub const fn labelled(mut self, label: &str) -> Self {
        self.core.label = LabelCell::new(Label::new(label));
        self
    }

    /// Sets the label of this allocator's reports (see [`Cohort::labelled`]); a shared
    /// region's label is the region's, seen by every process that has it open.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = cohort::Cohort::<()>::new();
    /// a.set_label("parser");
    /// assert!(a.stats().to_string().starts_with("allocator parser"));
    /// ```
    pub fn set_label(&self, label: &str) {
        self.core.set_label(Label::new(label));
    }

    /// The label of this allocator's reports (empty unless set).
    pub fn label(&self) -> Label {
        self.core.label()
    }

    /// Per lifetime class: the sums over `heads`, and the large allocations, counted under
    /// the large table's lock into a fixed array (nothing allocates under it: the
    /// allocator may be the global one).
    fn class_totals(&self, heads: &[HeadStats]) -> Vec<ClassStats> {
        let mut large = [(0usize, 0usize); 256];
        let mut medium = [(0usize, 0usize); 256];
        if let Some(pool) = self.core.pool_if_any() {
            pool.each_large(|_, len, life| {
                let at = &mut large[Self::reported(life) & 255];
                *at = (at.0 + 1, at.1 + len);
            });
            let st = pool.lock_uncounted();
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
        if !self.label.is_empty() {
            writeln!(f, "allocator {}", self.label)?;
        }
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
        if !self.events.is_empty() {
            events_table(f, &self.events)?;
        }
        let t = &self.small;
        writeln!(
            f,
            "small: {} blocks, {} live slots, {} live, {} resident ({} reserved); large: {} \
             allocations, {} ({} freed mappings cached, {}); medium: {} allocations, {} in {} \
             blocks ({} free resident); {} empty blocks kept; pool lock taken {} times; region {} \
             ({} of {} blocks carved, {} units in large allocations)",
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
            self.lock_acquisitions,
            Bytes(self.region_bytes),
            self.carved_blocks,
            self.region_bytes / crate::class::BLOCK_SIZE,
            self.run_units
        )?;
        if self.damaged_blocks > 0 {
            writeln!(
                f,
                "{} blocks found damaged and taken out of use (verify names them)",
                self.damaged_blocks
            )?;
        }
        Ok(())
    }
}

/// The table of [`Stats::events`]: a header line, then a line per head.
fn events_table(f: &mut fmt::Formatter<'_>, events: &[HeadEvents]) -> fmt::Result {
    let header = [
        "class",
        "stride",
        "life",
        "alloc slow",
        "free slow",
        "remote",
        "taken",
        "given",
        "promoted",
    ]
    .map(String::from);
    let rows = events.iter().map(|e| {
        [
            e.size_class.to_string(),
            e.stride.to_string(),
            LifeLabel(e.life, e.life_name).to_string(),
            e.alloc_slow.to_string(),
            e.free_slow.to_string(),
            e.remote_frees.to_string(),
            e.blocks_taken.to_string(),
            e.blocks_given_back.to_string(),
            e.promoted.to_string(),
        ]
    });
    for c in core::iter::once(header).chain(rows) {
        writeln!(
            f,
            "{:>5} {:>7} {:>10} {:>10} {:>10} {:>10} {:>7} {:>7} {:>9}",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]
        )?;
    }
    Ok(())
}
