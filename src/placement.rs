//! Regions made with [`RegionOptions`]: a private region of fixed capacity
//! ([`Cohort::with_options`]), a shared-anonymous one ([`Cohort::shared_anonymous_with`]),
//! and memory the caller already has formatted as a region ([`Cohort::format_in`], sized
//! by [`Cohort::footprint`]; another user of the same memory attaches with
//! [`Cohort::attach_in`]).
//!
//! Each is one mapping laid out as a shared region is (`crate::shared`): a page, the state
//! area (pool, registry, heaps, lists, unit states), then the units, so that every byte the
//! instance uses is in it: its capacity is fixed (large allocations are runs of its units),
//! and committing, prefaulting, locking or binding the mapping covers the instance's own
//! state too. Invariant: `footprint(c).bytes = blocks_offset + units(c) * 2 MiB` with
//! `units(c) = max(1, c / 2 MiB)`, and `blocks_offset` a multiple of 2 MiB
//! (`footprint(c).align`), so invariant 3 holds at any 2 MiB-aligned address.

use crate::api::Cohort;
use crate::instance::Instance;
use crate::lifetime::Lifetime;
use crate::os;
use crate::region::options::{HugePages, PlacementError, RegionOptions};
use crate::region::{Backing, GiveBack, UNIT};
use crate::shared::{unmap_anonymous, Geometry};

/// What a region of a given capacity needs of the memory it is formatted in
/// ([`Cohort::footprint`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// Its length in bytes (the header, the instance's state, the blocks).
    pub bytes: usize,
    /// The alignment of its first byte (2 MiB: blocks are aligned to their size).
    pub align: usize,
}

/// A private mapping that gives memory back with `MADV_DONTNEED`.
const PRIVATE_MAPPING: Backing = Backing {
    commit: false,
    give_back: GiveBack::Decommit,
    serves_large: true,
    fresh: true,
    fallback: false,
    one_address: true,
};

/// Memory the caller formatted: kept as it is (never given back), not assumed to read
/// zero; other processes may attach it at addresses of their own (memory mapped
/// privately lies at one address: `Cohort::place`).
const CALLER_MEMORY: Backing = Backing {
    commit: false,
    give_back: GiveBack::Keep,
    serves_large: true,
    fresh: false,
    fallback: false,
    one_address: false,
};

/// Leaves memory the caller owns mapped (a `Placement::unmap`).
///
/// # Safety
/// None: it does nothing.
unsafe fn leave_in_place(_base: *mut u8, _len: usize, _sync: bool) {}

impl<L: Lifetime> Cohort<L> {
    /// The memory a region of `capacity` bytes of blocks needs (rounded down to whole 2 MiB
    /// units, at least one), in this build (a checked build's state is larger): to format
    /// with [`Cohort::format_in`]. `None` when it does not fit in the address space.
    pub fn footprint(capacity: usize) -> Option<Footprint> {
        Geometry::new(capacity, Self::INSIDE_COUNT).map(|g| Footprint {
            bytes: g.len,
            align: UNIT,
        })
    }

    /// An allocator whose every allocation, large ones included, comes from one private
    /// region of `options.capacity()` bytes, made now as the options say (committed,
    /// prefaulted, locked, bound to NUMA nodes, in huge pages; see [`RegionOptions`]).
    /// Past the capacity allocation returns null, unless the options ask for a fallback.
    ///
    /// # Errors
    /// The option the OS refused, with its error ([`PlacementError`]).
    pub fn with_options(options: &RegionOptions) -> Result<Self, PlacementError> {
        let g = Self::geometry(options)?;
        let base = if options.huge() == HugePages::Explicit {
            os::placement::map_huge(g.len).map_err(|errno| PlacementError::HugePages { errno })?
        } else if options.committed() {
            os::map_accounted(g.len, UNIT)
        } else {
            os::map(g.len, UNIT)
        };
        if base.is_null() {
            return Err(Self::refused_memory());
        }
        // SAFETY: a fresh private mapping of the geometry's length, ours alone, unmapped by
        // `unmap_anonymous` only.
        unsafe { Self::place(&g, base, options, PRIVATE_MAPPING, true, unmap_anonymous) }
    }

    /// As [`Cohort::shared_anonymous`], made as `options` say (committed, prefaulted,
    /// locked, bound to NUMA nodes, transparent huge pages): a region shared with the
    /// children this process forks after.
    ///
    /// # Errors
    /// The option the OS refused ([`PlacementError`]); a fallback or explicit huge pages
    /// are [`PlacementError::Unsupported`] (a private mapping would be invisible to the
    /// other processes).
    pub fn shared_anonymous_with(options: &RegionOptions) -> Result<Self, PlacementError> {
        options.check_shared(false)?;
        let g = Self::geometry(options)?;
        let base = os::shared_mem::map_shared_anonymous(g.len, UNIT);
        if base.is_null() {
            return Err(Self::refused_memory());
        }
        // SAFETY: a fresh shared mapping of the geometry's length, ours alone, unmapped by
        // `unmap_anonymous` only.
        unsafe { Self::place(&g, base, options, Backing::SHARED, true, unmap_anonymous) }
    }

    /// Formats `len` bytes at `mem`, memory the caller already has (a slice of a
    /// shared-memory workspace, a hugetlbfs mapping...), as a region of
    /// `options.capacity()` bytes of blocks, and returns an allocator in it. Nothing is
    /// mapped or unmapped: dropping the allocator leaves the memory as it is (with the
    /// region in it, which [`Cohort::attach_in`] finds again). The region's memory is never
    /// given back to the OS; its bytes need not read zero (the state part is zeroed here).
    ///
    /// **Private memory.** Memory the kernel maps privately (a private anonymous or
    /// hugetlbfs mapping, a copy-on-write file mapping: `/proc/self/maps` says so) is seen by
    /// no other process: the region is a private one (as [`Cohort::with_options`]'s), whose
    /// lock the fork handlers take, so a fork child gets a copy it can use, and whose
    /// exclusive forms (`verify_exclusive`, `scope_exclusive`) `&mut self` makes sound.
    /// Shared memory (or memory whose mapping cannot be read) makes a region other
    /// processes may use.
    ///
    /// **Fallback.** With [`RegionOptions::fallback`], a full region serves requests from
    /// private mappings of this process (which every free of this allocator finds): the
    /// caller declares the region this process's alone. No other process can free such a
    /// mapping, so [`Cohort::attach_in`] refuses the region ([`PlacementError::Unsupported`]),
    /// and the fallback mappings go with this allocator (free them before dropping it; a
    /// child forked after sees copies of them, its own). Without it, a full region returns
    /// null.
    ///
    /// # Errors
    /// [`PlacementError::Misaligned`] unless `mem` is aligned to [`Footprint::align`];
    /// [`PlacementError::TooSmall`] when `len` is below [`Cohort::footprint`]'s bytes; else
    /// the option the OS refused.
    ///
    /// # Safety
    /// `[mem, mem + len)` is mapped readable and writable, and holds nothing anyone uses:
    /// it is the region's until every user of it (this allocator, its heaps' threads, other
    /// processes attached to it) has left, and only the caller unmaps it after that.
    pub unsafe fn format_in(
        mem: *mut u8,
        len: usize,
        options: &RegionOptions,
    ) -> Result<Self, PlacementError> {
        let g = Self::caller_geometry(mem, len, options)?;
        // The header page and the state area must read zero to be formatted.
        // SAFETY: the caller's memory, nobody else's.
        unsafe { core::ptr::write_bytes(mem, 0, g.blocks_offset) };
        // SAFETY: as the caller guarantees.
        unsafe { Self::place(&g, mem, options, CALLER_MEMORY, true, leave_in_place) }
    }

    /// An allocator in the region [`Cohort::format_in`] made at `mem` with a capacity of
    /// `capacity` bytes: the same memory, in this process or another that maps it shared
    /// (at any address). What the region holds stays; this process joins it.
    ///
    /// The options the region was formatted with are applied to this process's mapping as
    /// far as they are per mapping (the lock, the huge-page advice, the prefault of its
    /// page tables), and its memory is kept as they say.
    ///
    /// # Errors
    /// As [`Cohort::format_in`]'s for the memory; [`PlacementError::Refused`] when the
    /// memory holds no region of this capacity and lifetime classes, or this process is
    /// attached to it already; [`PlacementError::Unsupported`] for a region formatted to
    /// fall back (its fallback mappings are its formatter's); the option the OS refused.
    ///
    /// # Safety
    /// `[mem, mem + len)` holds a region formatted by [`Cohort::format_in`] with this
    /// capacity and `L`, mapped readable and writable as long as any user of it in this
    /// process lives.
    pub unsafe fn attach_in(mem: *mut u8, len: usize, capacity: usize) -> Result<Self, PlacementError> {
        let options = RegionOptions::new(capacity);
        let g = Self::caller_geometry(mem, len, &options)?;
        // SAFETY: as the caller guarantees.
        unsafe { Self::place(&g, mem, &options, CALLER_MEMORY, false, leave_in_place) }
    }

    /// The options this allocator's region was made with, as its state records them (for
    /// a region another process made or formatted, its maker's), with the region's
    /// capacity in whole units; `None` for a region made without options ([`Cohort::new`],
    /// [`Cohort::with_reservation`], [`Cohort::shared_anonymous`]...).
    ///
    /// ```
    /// use cohort::{Cohort, RegionOptions};
    /// let options = RegionOptions::new(8 << 20).fallback(true);
    /// let a = Cohort::<()>::with_options(&options).expect("a fixed region");
    /// assert_eq!(a.region_options(), Some(options));
    /// assert_eq!(Cohort::<()>::with_reservation(8 << 20).region_options(), None);
    /// ```
    pub fn region_options(&self) -> Option<RegionOptions> {
        let pool = self.core.pool_if_any()?;
        let words = pool.lock_uncounted().region.options;
        RegionOptions::recorded(pool.region.len(), words)
    }

    fn geometry(options: &RegionOptions) -> Result<Geometry, PlacementError> {
        Geometry::new(options.capacity(), Self::INSIDE_COUNT).ok_or(PlacementError::Capacity {
            asked: options.capacity(),
        })
    }

    /// The geometry of `options` in the caller's `[mem, mem + len)`, which must fit it.
    fn caller_geometry(
        mem: *mut u8,
        len: usize,
        options: &RegionOptions,
    ) -> Result<Geometry, PlacementError> {
        if !(mem as usize).is_multiple_of(UNIT) {
            return Err(PlacementError::Misaligned {
                align: UNIT,
                addr: mem as usize,
            });
        }
        let g = Self::geometry(options)?;
        if len < g.len {
            return Err(PlacementError::TooSmall {
                needed: g.len,
                given: len,
            });
        }
        Ok(g)
    }

    fn refused_memory() -> PlacementError {
        PlacementError::Os {
            what: "map",
            errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        }
    }

    /// Applies `options` to `[base, base + g.len)` (when `is_new`), places the instance
    /// there and sets its region's backing from `backing`. On an error the mapping is given
    /// to `unmap`.
    ///
    /// # Safety
    /// As `Instance::placed` for a placement of `g` at `base` unmapped by `unmap`; when
    /// `is_new`, the memory's first `g.blocks_offset` bytes read zero.
    unsafe fn place(
        g: &Geometry,
        base: *mut u8,
        options: &RegionOptions,
        backing: Backing,
        is_new: bool,
        unmap: unsafe fn(*mut u8, usize, bool),
    ) -> Result<Self, PlacementError> {
        let fail = |e| {
            // SAFETY: refused: the mapping is still ours and unused.
            unsafe { unmap(base, g.len, false) };
            Err(e)
        };
        if is_new {
            // SAFETY: the caller's mapping, nobody else's yet.
            if let Err(e) = unsafe { options.apply(base, g.len) } {
                return fail(e);
            }
        }
        // A private fixed region, or caller memory the kernel maps privately: shared with
        // no other process (see `Pool::private`; a fork child gets a copy), so at one
        // address.
        let private = backing == PRIVATE_MAPPING
            || backing == CALLER_MEMORY && os::maps::is_private_mapping(base as usize, g.len);
        let backing = Backing {
            one_address: backing.one_address || private,
            ..backing
        };
        let placement = crate::instance::Placement {
            unmap,
            private,
            ..g.placement(base, is_new)
        };
        // SAFETY: as the caller guarantees.
        let Some(core) = (unsafe { Instance::placed(placement, Self::INSIDE_COUNT, Self::NAMES) }) else {
            return fail(PlacementError::Refused);
        };
        let pool = core.pool_if_any().expect("a placed instance has its pool");
        let made = is_new.then_some(options);
        // SAFETY: the instance was just made: no other thread of this process uses it.
        let options = unsafe { RegionOptions::adopt(&pool.region, &mut pool.lock().region, backing, made) };
        if !is_new {
            // Attached: this process's mapping as its maker asked (a refusal drops `core`:
            // the instance leaves, and nothing is unmapped). A region that falls back is
            // its formatter's alone: its fallback mappings are private to that process.
            if options.falls_back() {
                return Err(PlacementError::Unsupported {
                    option: "attaching a region that falls back (its fallback mappings are private to the process that formatted it)",
                });
            }
            // SAFETY: the region's whole mapping in this process.
            unsafe { options.apply_attached(base, g.len) }?;
        }
        // The view's own tables, outside the mapping, faulted in too.
        // A refusal drops `core`: the instance leaves and unmaps its region.
        options.prefault_view(|| pool.counters.prefault())?;
        Ok(Cohort::from_core(core))
    }
}

/// The capacity a dynamically sized structure should grow to: `needed` if the current
/// capacity `max` is already at least that, else the larger of `needed` and `max + delta`,
/// never overflowing (saturating at `usize::MAX`). So growing by a fixed step (or a
/// doubling, with `delta = max`) is amortised, and a request past the step is met at once.
///
/// ```
/// use cohort::max_expand;
/// assert_eq!(max_expand(100, 50, 120), 150); // one step covers it
/// assert_eq!(max_expand(100, 50, 400), 400); // past the step: what is needed
/// assert_eq!(max_expand(100, 50, 80), 100); // already enough
/// assert_eq!(max_expand(usize::MAX - 1, 10, usize::MAX), usize::MAX); // no overflow
/// ```
pub const fn max_expand(max: usize, delta: usize, needed: usize) -> usize {
    if needed <= max {
        return max;
    }
    let stepped = max.saturating_add(delta);
    if stepped > needed {
        stepped
    } else {
        needed
    }
}
