//! Where a pool's state lives: the layout of its state area, and the building of a pool's
//! per-process view over it.
//!
//! A private instance's state area is a mapping of its own holding the [`PoolShared`], the
//! heap registry, the partial and lifetime-class lists and the lifetime-class links; its
//! region's unit states, its checked-mode shadow and its heaps have mappings of their own.
//! A shared instance's state area is inside the region (its offset and length are the
//! region header's business) and holds everything: the same parts, then the region's unit
//! states and decommitted bitmap, the heaps (one slot of `heap_stride` bytes per id) and,
//! in checked mode, the shadow. Every part starts at a fixed offset of the area computed
//! from the geometry alone (`Layout::new`), so every process finds it, at whatever
//! address it maps the region.
//!
//! Invariants: the parts do not overlap and lie in `[0, len)`; `len` and the offsets of the
//! heap slots and the shadow are page multiples; a freshly formatted area's lists are
//! empty, its registry all zero (no heap), its region state [`RegionState::new`].

use super::check::SCRATCH_WORDS;
use super::{BlockList, Pool, PoolShared, PoolState, MAX_HEAPS, RETAIN_EMPTY};
use crate::block::BlockStack;
use crate::class::HeadIndex;
use crate::counters::HeadCounters;
use crate::decay::{Decay, Idle, Retention};
use crate::large::LargeTable;
use crate::lifetime::ScopeClaims;
use crate::medium_block::{MediumCounts, Moved, Written};
use crate::os;
use crate::region::{placed_meta_len, Backing, Region, RegionState, UNIT};
use crate::sync::{pool_lock, AtomicU32, AtomicU64, AtomicU8};
use core::ptr;

/// The layout version of a shared region's state area, kept in the area
/// (`PoolShared::layout`): an area of another version was formatted by an incompatible
/// build and is never attached. (A region header that describes the region should name it
/// too, so that an opener refuses before it maps anything.) The blocks' headers are part of
/// what it versions: 10, the header of two cache lines (`crate::class::HEADER_SIZE` 128);
/// and so are the medium blocks' run tables: 11, the run table's word summary beside its
/// counts (`crate::medium_block`'s `bits`), which a build without it would leave stale;
/// and a heap's: 12, a heap's rows of current blocks with their allocation cursors
/// (`crate::heap::Row`); 13, a heap's medium cache's lent run (`crate::medium_cache`); 14,
/// free slots' links relative to the slot (reverted: 14 names no layout that shipped); 15,
/// a heap's medium cache's guard (`MediumCache::claim`); 16, the blocks' check generation
/// and its mark per unit (`crate::pool`'s `check`).
pub(crate) const STATE_LAYOUT: u32 = 16;

/// Where a pool's view starts in its mapping: past the page's first cache line. The
/// lines at a page's start share their cache set with the first bytes of every page of a
/// page-aligned allocation, which a program touching a medium buffer page by page writes;
/// the view's fields the medium cache's paths read (the region's bounds, the write seal,
/// [`Pool::is_process_shared`]) stay out of that set.
pub(crate) const VIEW_COLOUR: usize = 64;
/// Where the blocks' check's bitmap starts in a view's mapping: the first page past the
/// view (`Pool`'s `check_scratch`). Only a view of a region laid out as a shared one has
/// it: a check generation starts only at the open of such a region (`crate::persist`);
/// a private reservation's blocks are never checked, and its view maps no bitmap (which
/// a process that locks its future mappings would lock: 255 KiB an instance).
const SCRATCH_AT: usize = (VIEW_COLOUR + size_of::<Pool>()).next_multiple_of(os::MIN_PAGE);

/// The length of a view's mapping: the view, then (`shared`) the check's bitmap.
pub(crate) const fn view_len(shared: bool) -> usize {
    if shared {
        SCRATCH_AT + SCRATCH_WORDS * size_of::<usize>()
    } else {
        SCRATCH_AT
    }
}
// The fields the medium cache's paths read, first in the view (`Pool` is `repr(C)`), lie
// in its first page, past its first line; so does the shared state's count they read (the
// state starts on a page: a private pool's own mapping, a shared region's state area).
const _: () = assert!(
    VIEW_COLOUR + core::mem::offset_of!(Pool, process_shared) + size_of::<bool>() <= os::MIN_PAGE
);
const _: () = assert!(core::mem::offset_of!(PoolShared, medium_given) % os::MIN_PAGE >= 64);

/// The most heaps any shared region holds at once (its heaps live in its state area).
#[cfg(not(loom))]
pub(crate) const SHARED_MAX_HEAPS: u32 = 512;
/// Under loom, as [`MAX_HEAPS`].
#[cfg(loom)]
pub(crate) const SHARED_MAX_HEAPS: u32 = MAX_HEAPS as u32;
/// The fewest heaps a shared region holds at once (unless [`SHARED_MAX_HEAPS`] is fewer).
const SHARED_MIN_HEAPS: usize = 16;
/// Heaps per block of a shared region (between the two bounds).
const HEAPS_PER_UNIT: usize = 2;

/// The heaps a shared region of `unit_count` blocks holds at once:
/// `clamp(HEAPS_PER_UNIT * unit_count, SHARED_MIN_HEAPS, SHARED_MAX_HEAPS)`. Each heap's slot
/// holds a head for every (size class, lifetime class), so the slots dominate a small
/// region's state area; a heap is of use only with blocks to allocate from, and threads
/// beyond the registry's room allocate through the pool's lock. Computed from the geometry
/// alone: every process finds the same layout.
pub(crate) fn shared_max_heaps(unit_count: usize) -> u32 {
    let heaps = unit_count
        .saturating_mul(HEAPS_PER_UNIT)
        .max(SHARED_MIN_HEAPS);
    heaps.min(SHARED_MAX_HEAPS as usize) as u32
}

/// What a shared region's state area holds beyond a private pool's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SharedParts {
    /// The bytes of one heap slot (a heap and its heads).
    pub(crate) heap_stride: usize,
    /// Whether the region keeps checked mode's shadow.
    pub(crate) checked: bool,
    /// The region is mapped privately (see `Pool::private`).
    pub(crate) private: bool,
}

/// The offsets of a state area's parts (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    registry: usize,
    lists: usize,
    life_links: usize,
    /// One [`AtomicU32`] per unit: the generation of the blocks' check a block was last
    /// found whole in (`super::check`).
    checks: usize,
    /// The region's unit states and bitmap (shared only, else 0).
    region_meta: usize,
    /// The per-head counters, region-wide (shared only, else 0: the view maps its own).
    counters: usize,
    /// The heap slots (shared only, else 0).
    heaps: usize,
    heap_stride: usize,
    /// The shadow (shared and checked only, else 0).
    shadow: usize,
    pub(crate) max_heaps: u32,
    /// The number of heads (for the view's per-head counters).
    heads: usize,
    /// The area's length in bytes.
    pub(crate) len: usize,
}

impl Layout {
    /// The layout for a region of `unit_count` units and `life_count` lifetime classes;
    /// `None` when it does not fit in the address space.
    pub(crate) fn new(
        unit_count: usize,
        life_count: usize,
        shared: Option<SharedParts>,
    ) -> Option<Layout> {
        let max_heaps = if shared.is_some() {
            shared_max_heaps(unit_count)
        } else {
            MAX_HEAPS as u32
        };
        let heads = HeadIndex::count(life_count);
        let registry = size_of::<PoolShared>().next_multiple_of(64);
        // Sized by the types, not by their bytes in a build: loom's atomics are larger.
        let lists =
            registry.checked_add((max_heaps as usize).checked_mul(size_of::<AtomicU64>())?)?;
        let lists_bytes = heads.checked_add(2 * life_count)? * size_of::<BlockList>();
        let life_links = lists
            .checked_add(lists_bytes)?
            .next_multiple_of(align_of::<[AtomicU32; 2]>());
        let checks = life_links
            .checked_add(unit_count.checked_mul(size_of::<[AtomicU32; 2]>())?)?
            .next_multiple_of(align_of::<AtomicU32>());
        let end = checks.checked_add(unit_count.checked_mul(size_of::<AtomicU32>())?)?;
        let Some(parts) = shared else {
            return Some(Layout {
                registry,
                lists,
                life_links,
                checks,
                region_meta: 0,
                counters: 0,
                heaps: 0,
                heap_stride: 0,
                shadow: 0,
                max_heaps,
                heads,
                len: os::page_round(end)?,
            });
        };
        let region_meta = end.next_multiple_of(64);
        let end = region_meta.checked_add(placed_meta_len(unit_count))?;
        let counters = end.next_multiple_of(64);
        let end = counters.checked_add(HeadCounters::bytes_of(heads))?;
        let heaps = os::page_round(end)?;
        let heap_stride = parts.heap_stride.next_multiple_of(64);
        let end = heaps.checked_add(heap_stride.checked_mul(max_heaps as usize)?)?;
        let shadow = os::page_round(end)?;
        let end = if parts.checked {
            shadow.checked_add(unit_count.checked_mul(UNIT / 8)?)?
        } else {
            shadow
        };
        Some(Layout {
            registry,
            lists,
            life_links,
            checks,
            region_meta,
            counters,
            heaps,
            heap_stride,
            shadow: if parts.checked { shadow } else { 0 },
            max_heaps,
            heads,
            len: os::page_round(end)?,
        })
    }
}

/// Maps a view of the pool whose state area is at `area` (laid out by `layout`) over
/// `region`; a shared pool's links count from the area. Null when the OS refuses the view's
/// memory.
///
/// # Safety
/// `area` is mapped for the view's life, laid out by `layout`; with `shared`, `region` is
/// placed on the area's region part.
pub(crate) unsafe fn build(
    region: Region,
    area: *mut u8,
    layout: &Layout,
    shared: bool,
) -> *mut Pool {
    let mapped = os::map(view_len(shared), os::MIN_PAGE);
    if mapped.is_null() {
        return ptr::null_mut();
    }
    let view = mapped.wrapping_add(VIEW_COLOUR).cast::<Pool>();
    let heap_area = if shared {
        area.wrapping_add(layout.heaps)
    } else {
        ptr::null_mut()
    };
    // Only the process that made a private reservation moves pages in it.
    let mover = match region.moves_pages() {
        true => os::moves::process(),
        false => 0,
    };
    // SAFETY: the view's fresh mapping (the check's bitmap lies in it, at `SCRATCH_AT`);
    // the parts lie in the area (caller).
    unsafe {
        ptr::write(
            view,
            Pool {
                region,
                shared: area.cast::<PoolShared>(),
                heaps: area.add(layout.registry).cast::<AtomicU64>(),
                life_links: area.add(layout.life_links).cast::<[AtomicU32; 2]>(),
                checks: area.add(layout.checks).cast::<AtomicU32>(),
                link_base: if shared { area as usize } else { 0 },
                heap_area,
                heap_stride: layout.heap_stride,
                fork_next: ptr::null_mut(),
                fork_serial: 0,
                lost: core::sync::atomic::AtomicBool::new(false),
                write_seal: None,
                medium_written: Written::new(),
                medium_moved: Moved::new(mover),
                check_scratch: if shared {
                    mapped.add(SCRATCH_AT).cast::<usize>()
                } else {
                    ptr::null_mut()
                },
                process_shared: false,
                area: ptr::null_mut(),
                area_len: 0,
                refs: AtomicU64::new(1),
                leave: None,
                private: false,
                counters: if shared {
                    HeadCounters::placed(area.add(layout.counters), layout.heads)
                } else {
                    HeadCounters::new(layout.heads)
                },
            },
        );
    }
    view
}

/// Formats the state area of `pool`'s view (fresh memory reading zero): the shared state,
/// empty lists, the region state `region`, and for a shared pool (`tag != 0`) a robust
/// process-shared lock. False when the C library refuses that lock.
///
/// # Safety
/// The area is fresh, laid out as the view was built, and no other thread or process uses
/// it yet.
pub(crate) unsafe fn format(
    pool: &Pool,
    life_count: usize,
    max_heaps: u32,
    tag: u64,
    region: RegionState,
    layout: &Layout,
    // Under loom every lock is the spin lock (a model runs in one process): unused there.
    #[cfg_attr(loom, allow(unused_variables))] robust: bool,
) -> bool {
    let heads = HeadIndex::count(life_count);
    let area = pool.shared.cast_mut().cast::<u8>();
    // SAFETY: the area is ours (caller); the lists and links lie in it (layout).
    unsafe {
        let lists = area.add(layout.lists).cast::<BlockList>();
        for i in 0..heads + 2 * life_count {
            lists.add(i).write(BlockList::new());
        }
        #[cfg(loom)]
        {
            crate::sync::zeroed_atomics(pool.heaps.cast_mut(), max_heaps as usize);
            crate::sync::zeroed_atomics(pool.life_links.cast_mut(), pool.region.unit_count());
            crate::sync::zeroed_atomics(pool.checks.cast_mut(), pool.region.unit_count());
        }
        let shared = area.cast::<PoolShared>();
        ptr::write(
            shared,
            PoolShared {
                state: pool_lock(PoolState {
                    region,
                    partial: 0,
                    of_life: 0,
                    medium: 0,
                    medium_counts: MediumCounts::new(),
                    retained: BlockList::new(),
                    retained_count: 0,
                    retain_blocks: RETAIN_EMPTY,
                    decay: Decay::new(Retention::DEFAULT.delay_ms()),
                    idle: Idle::new(),
                    abandoned: 0,
                }),
                layout: STATE_LAYOUT,
                life_count,
                max_heaps,
                heap_ids: AtomicU32::new(0),
                tag,
                returned: BlockStack::new(),
                lock_count: AtomicU64::new(0),
                emptied: AtomicU8::new(0),
                large: pool_lock(LargeTable::new()),
                lock_repairs: AtomicU64::new(0),
                heaps_reaped: AtomicU64::new(0),
                decay_at: AtomicU64::new(0),
                kept: AtomicU32::new(0),
                idle_delay: AtomicU64::new(Retention::DEFAULT.delay_ms()),
                scope_claims: ScopeClaims::new(),
                pid_ns: if tag != 0 {
                    os::shared_mem::pid_namespace()
                } else {
                    0
                },
                mixed_ns: AtomicU8::new(0),
                label: crate::label::LabelCell::new(crate::label::Label::new("")),
                medium_given: AtomicU64::new(0),
                check_gen: AtomicU32::new(0),
                quarantined: AtomicU64::new(0),
            },
        );
        // The tables' offsets from the state, now that it is in place.
        let st = (*shared).state.data_ptr();
        (*st).partial = lists as usize - st as usize;
        (*st).of_life = lists.add(heads) as usize - st as usize;
        (*st).medium = lists.add(heads + life_count) as usize - st as usize;
        // A shared pool's locks must survive a holder's death (see `RawPoolLock`).
        #[cfg(not(loom))]
        if robust && !((*shared).state.raw().make_robust() && (*shared).large.raw().make_robust()) {
            return false;
        }
    }
    true
}

/// A view of the shared pool whose region's units start at `units` (`unit_count` of them)
/// and whose state area (`layout.len` bytes) is at `area`: formatted when `is_new` (the
/// area then reads zero), else attached as it is. Null when the OS refuses the view's
/// memory, or when an attached area's geometry differs from `life_count` and `layout`.
///
/// # Safety
/// Both ranges are mapped shared for the view's life and belong to one region, laid out
/// by `layout` (built for `unit_count`, `life_count` and `parts`); when `is_new` nothing
/// else uses them yet, else they were formatted by this function.
pub(crate) unsafe fn place(
    units: *mut u8,
    unit_count: usize,
    area: *mut u8,
    layout: &Layout,
    life_count: usize,
    parts: SharedParts,
    is_new: bool,
) -> *mut Pool {
    let shadow = if parts.checked {
        area.wrapping_add(layout.shadow)
    } else {
        ptr::null_mut()
    };
    // SAFETY: the region part of the area (caller).
    let region = unsafe {
        Region::placed(
            units,
            unit_count,
            area.add(layout.region_meta),
            shadow,
            Backing::SHARED,
        )
    };
    if !is_new {
        // SAFETY: an attached area holds a formatted shared state (caller).
        let shared = unsafe { &*area.cast::<PoolShared>() };
        if shared.layout != STATE_LAYOUT
            || shared.life_count != life_count
            || shared.max_heaps != layout.max_heaps
            || shared.tag & (super::SHARED_TAG | super::PRIVATE_REGION_TAG) == 0
        {
            return ptr::null_mut();
        }
    }
    // SAFETY: as the caller guarantees.
    let pool = unsafe { build(region, area, layout, true) };
    if pool.is_null() {
        return pool;
    }
    // SAFETY: just built, ours.
    unsafe {
        (*pool).private = parts.private;
        (*pool).process_shared = !parts.private;
    }
    if !is_new {
        return pool;
    }
    // Tokens of a region formatted privately do not say "shared": they take the remote
    // free's quick way (see `PRIVATE_REGION_TAG`).
    let tag = if parts.private {
        super::PRIVATE_REGION_TAG | u64::from(os::shared_mem::random_u32() >> 2)
    } else {
        super::SHARED_TAG | u64::from(os::shared_mem::random_u32() >> 1)
    };
    // SAFETY: a new area, ours alone (caller).
    let formatted = unsafe {
        format(
            &*pool,
            life_count,
            layout.max_heaps,
            tag,
            RegionState::new(),
            layout,
            !parts.private,
        )
    };
    if !formatted {
        // SAFETY: ours, unused.
        unsafe { Pool::destroy(pool) };
        return ptr::null_mut();
    }
    // The creator's settings of empty-block retention are the region's.
    // SAFETY: just formatted, ours alone.
    unsafe { (*pool).set_retention(&Retention::from_environment()) };
    pool
}
