//! The non-generic core of an allocator instance: its id, its pool (created on first use,
//! under the fork handlers' lock), the region bounds the free fast path reads, and the
//! instance's drop. The alloc, free and resize paths ([`crate::alloc`], [`crate::free`],
//! [`crate::resize`]) are methods of [`Instance`]; [`crate::Cohort`] wraps it with its
//! lifetime-class type.
//!
//! Invariants: `pool` is null or a pool that lives until the instance drops; `instance` is
//! `u64::MAX` while `pool` is null, then the id taken when the pool was created (ids are
//! unique in the process, see [`crate::instance_id`]); `slot` is 0, or `slot_of(instance)`
//! once the id is taken (so `slot < per_thread::SLOTS`); once `pool` is published, `bounds`
//! are the region's, written before the publication.
//!
//! **Placed instances.** An instance may also live in memory it is given
//! ([`Instance::placed`]): a region shared between processes, whose state area holds
//! everything the processes share (see `crate::pool::place`). Its pool exists from the
//! start; its drop is this process's leave (the region and what other processes hold of it
//! stay), not a teardown: the calling thread's heap of it is abandoned into the region at
//! once, other threads' heaps of it become ORPHANED and go back at their threads' next
//! look-up or exit, and the last of them unmaps this process's mapping
//! ([`Pool::release`]).

use crate::label::{Label, LabelCell};
use crate::medium_block::MediumCounts;
use crate::fork;
use crate::heap_handover;
use crate::instance_id::{MAX_INSTANCES, NEXT_INSTANCE};
use crate::os;
use crate::per_thread;
use crate::heap::Heap;
use crate::pool::place::{self, Layout, SharedParts};
use crate::pool::{AfterLeave, Leave, Pool, WriteSeal};
use crate::region::UNIT;
use crate::sync::{AtomicPtr, AtomicU64, Ordering};
use core::fmt;
use core::ptr;

mod bounds;
pub(crate) use bounds::RegionBounds;

/// True when every free is fully checked (foreign pointers, double frees).
pub(crate) const CHECKED: bool = cfg!(any(debug_assertions, feature = "checked"));

/// One allocator instance, whatever its lifetime-class type.
pub(crate) struct Instance {
    /// The instance id (never reused), `u64::MAX` until the pool exists.
    pub(crate) instance: AtomicU64,
    /// The instance's thread-local slot ([`per_thread::slot_of`] its id), 0 (the shared,
    /// always empty slot) until the pool exists.
    pub(crate) slot: AtomicU64,
    pub(crate) pool: AtomicPtr<Pool>,
    /// The region's bounds, for the free fast path's check of foreign pointers.
    pub(crate) bounds: RegionBounds,
    reservation: usize,
    exact: bool,
    /// Number of lifetime classes.
    life_count: usize,
    /// The lifetime classes' names, for misuse reports.
    pub(crate) life_names: &'static [&'static str],
    /// The instance's label in its reports (a shared region's is in the region:
    /// [`Instance::label`]).
    pub(crate) label: LabelCell,
}

// SAFETY: the raw pool pointer is shared state designed for concurrent use (atomics and
// locks); nothing in an instance is tied to a thread.
unsafe impl Sync for Instance {}
// SAFETY: as above.
unsafe impl Send for Instance {}

impl Instance {
    /// An instance whose pool, created on first use, reserves `reservation` bytes (exactly,
    /// or halved until the OS accepts unless `exact`), for `life_count` lifetime classes.
    pub(crate) const fn new(
        reservation: usize,
        exact: bool,
        life_count: usize,
        life_names: &'static [&'static str],
    ) -> Instance {
        Instance {
            instance: AtomicU64::new(u64::MAX),
            slot: AtomicU64::new(0),
            pool: AtomicPtr::new(ptr::null_mut()),
            bounds: RegionBounds::empty(),
            reservation,
            exact,
            life_count,
            life_names,
            label: LabelCell::new(Label::new("")),
        }
    }

    /// The label its reports show: a shared region's own (every process of it sees the
    /// same), else the instance's.
    pub(crate) fn label(&self) -> Label {
        match self.pool_if_any() {
            Some(pool) if pool.is_shared() => pool.label.get(),
            _ => self.label.get(),
        }
    }

    /// Sets the label its reports show (a shared region's, for every process of it).
    pub(crate) fn set_label(&self, label: Label) {
        self.label.set(label);
        if let Some(pool) = self.pool_if_any().filter(|pool| pool.is_shared()) {
            pool.label.set(label);
        }
    }

    /// The pool, created on first use; `None` when the OS refuses the reservation.
    #[inline(always)]
    pub(crate) fn pool(&self) -> Option<&Pool> {
        let p = self.pool.load(Ordering::Acquire);
        if p.is_null() {
            return self.init_pool();
        }
        // SAFETY: a published pool lives until the instance drops.
        let pool = unsafe { &*p };
        // Off the fast paths (which read the thread's rows, not the pool): a fork child
        // that did not get the region stops here with a message.
        pool.ensure_here();
        Some(pool)
    }

    /// Creates the pool. Initialisation runs under the lock of the process's instance
    /// list, which the fork handlers hold across `fork()`: a child never inherits an
    /// instance half initialised by a thread it does not have (it would wait for it
    /// forever).
    #[cold]
    #[inline(never)]
    fn init_pool(&self) -> Option<&Pool> {
        let mut list = fork::lock_list();
        let p = self.pool.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: a published pool lives until the instance drops.
            return Some(unsafe { &*p });
        }
        // The id is taken only once the pool exists: a failing creation, retried by every
        // call, must not use ids up.
        if !os::page_size_supported() || NEXT_INSTANCE.load(Ordering::Relaxed) >= MAX_INSTANCES {
            return None;
        }
        // An instance without an explicit reservation takes `COHORT_RESERVE`'s, if set.
        let reservation = if self.exact {
            self.reservation
        } else {
            os::env::reservation().unwrap_or(self.reservation)
        };
        let pool = Pool::create(reservation, self.exact, self.life_count, CHECKED);
        if pool.is_null() {
            return None;
        }
        // SAFETY: just created, not yet shared; we hold the list's lock.
        unsafe { self.publish(&mut list, pool) };
        // SAFETY: just created; lives until the instance drops.
        Some(unsafe { &*pool })
    }

    /// The medium blocks' counts (all zero before the pool exists), with the runs heaps'
    /// caches hold counted free: `runs` and `live` are the allocations'.
    pub(crate) fn medium_counts(&self) -> MediumCounts {
        self.pool_if_any()
            .map_or(MediumCounts::new(), |pool| {
                let st = pool.lock_uncounted();
                // Runs heaps' caches hold are free memory, no allocations.
                let (runs, granules) = pool.medium_held(&st, None);
                let mut c = st.medium_counts;
                c.runs -= runs;
                c.live -= granules;
                c
            })
    }

    /// (large allocations, large bytes, retained empty blocks, lock acquisitions).
    pub(crate) fn pool_counters(&self) -> (usize, usize, usize, u64) {
        let Some(pool) = self.pool_if_any() else {
            return (0, 0, 0, 0);
        };
        let (retained, medium_locks) = {
            let st = pool.lock_uncounted();
            (Pool::retained_blocks(&st), st.medium_counts.locks)
        };
        let (count, bytes) = pool.large_totals();
        (
            count,
            bytes,
            retained,
            pool.lock_count.load(Ordering::Relaxed) + medium_locks,
        )
    }

    /// (cached large mappings, their bytes, system calls the large paths made).
    pub(crate) fn large_cache_counters(&self) -> (usize, usize, u64) {
        let Some(pool) = self.pool_if_any() else {
            return (0, 0, 0);
        };
        let large = pool.large.lock();
        let (count, bytes) = large.cached();
        (count, bytes, large.system_calls)
    }

    /// `p - base` when `p` lies below the region's carved end (its memory is accessible: a
    /// header read there is sound), `None` otherwise: outside the region, or in its part
    /// never carved (no access, never read). The instance's copy first, then, when `p` is
    /// past it, the region's own length (a carve of another thread since), which raises
    /// the copy.
    #[inline]
    pub(crate) fn carved_offset(&self, p: *mut u8) -> Option<usize> {
        self.bounds.offset(p).or_else(|| self.carved_offset_since(p))
    }

    /// [`Instance::carved_offset`] past the copy of the carved length.
    #[cold]
    #[inline(never)]
    fn carved_offset_since(&self, p: *mut u8) -> Option<usize> {
        if !self.bounds.contains(p) {
            return None;
        }
        // SAFETY: the bounds are set, so the pool is published, and lives until the
        // instance drops.
        let region = unsafe { &(*self.pool.load(Ordering::Acquire)).region };
        let carved = region.carved_len();
        self.bounds.raise_carved(carved);
        let offset = p as usize - region.base();
        (offset < carved).then_some(offset)
    }

    /// True when `p` lies below the region's carved end ([`Instance::carved_offset`]).
    #[inline]
    pub(crate) fn in_carved(&self, p: *mut u8) -> bool {
        self.carved_offset(p).is_some()
    }

    /// The instance id (`u64::MAX` before the pool exists). Inline: the remote free's
    /// quick way reads it, and a call there (from a crate built without LTO: every
    /// program's `__rust_dealloc` then) costs every remote free the saving and restoring of
    /// six registers.
    #[inline]
    pub(crate) fn instance_id(&self) -> u64 {
        self.instance.load(Ordering::Relaxed)
    }

    /// The pool if it exists and this process lost its region at a fork
    /// ([`Pool::is_lost`]); `None` otherwise. Never aborts.
    pub(crate) fn pool_if_lost(&self) -> Option<&Pool> {
        // SAFETY: a published pool lives until the instance drops.
        unsafe { self.pool.load(Ordering::Acquire).as_ref() }.filter(|pool| pool.is_lost())
    }

    /// The pool if it exists (it is never created here).
    pub(crate) fn pool_if_any(&self) -> Option<&Pool> {
        // SAFETY: a published pool lives until the instance drops.
        let pool = unsafe { self.pool.load(Ordering::Acquire).as_ref() }?;
        // As in `pool`.
        pool.ensure_here();
        Some(pool)
    }

    /// Panics when the instance is shared between processes: `what`, an `_exclusive` form
    /// whose `&mut self` excludes this process's other users only, cannot keep out the
    /// others' (`instead` says what to call).
    #[track_caller]
    pub(crate) fn assert_one_process(&self, what: &str, instead: &str) {
        assert!(
            !self.pool_if_any().is_some_and(|p| p.is_process_shared()),
            "cohort: {what} on an instance shared between processes: `&mut self` excludes \
             this process's threads only; {instead}"
        );
    }

    /// The instance's fields of `Debug`: its id (`None` before the first allocation:
    /// formatting creates nothing), lifetime classes, reservation and, once the pool
    /// exists, the region's bounds, the heap ids handed out and the pool-lock count. Reads
    /// atomics only and takes no lock, so formatting, which may allocate through this very
    /// instance, never waits for a lock the allocation needs.
    pub(crate) fn debug_fields(&self, d: &mut fmt::DebugStruct<'_, '_>) {
        let pool = self.pool_if_any();
        d.field("instance", &pool.map(|_| self.instance_id()))
            .field("lifetime_classes", &self.life_count)
            .field("reservation", &self.reservation)
            .field("exact_reservation", &self.exact);
        if let Some(pool) = pool {
            let (base, len) = (pool.region.base(), pool.region.len());
            d.field("region", &format_args!("{base:#x}..{:#x}", base + len))
                .field("heaps", &pool.heap_ids.load(Ordering::Relaxed))
                .field("lock_acquisitions", &self.pool_counters().3);
        }
    }
}

/// Where a shared instance lives: the region's mapping in this process and the offsets of
/// its parts (see `crate::pool::place`): `[base + state_offset, + state_len)` is the state
/// area, `[base + blocks_offset, + unit_count * UNIT)` the blocks.
pub(crate) struct Placement {
    /// The mapping's first byte, aligned to a unit (2 MiB).
    pub(crate) base: *mut u8,
    /// The mapping's length.
    pub(crate) len: usize,
    pub(crate) state_offset: usize,
    /// [`state_len`] of the geometry.
    pub(crate) state_len: usize,
    /// A multiple of the unit past the state area.
    pub(crate) blocks_offset: usize,
    pub(crate) unit_count: usize,
    /// True for a region being created (its state area reads zero): it is formatted;
    /// else it is attached as it is.
    pub(crate) is_new: bool,
    /// Passed to `unmap` when this process lets the region go.
    pub(crate) sync_on_leave: bool,
    /// The mapping is private to this process (a private fixed region): see `Pool::private`.
    pub(crate) private: bool,
    /// Unmaps the region from this process: `unmap(base, len, sync_on_leave)`.
    pub(crate) unmap: unsafe fn(*mut u8, usize, bool),
    /// Run after `unmap`, when the last of this process's references to the region goes
    /// (see [`AfterLeave`]); not run when the instance is refused (the caller still owns
    /// what it names).
    pub(crate) after_leave: Option<AfterLeave>,
    /// A named region's write seal (see `crate::pool::write_seal`), `None` for other
    /// regions.
    pub(crate) write_seal: Option<WriteSeal>,
}

/// The bytes of a shared region's state area for `unit_count` units of blocks and
/// `life_count` lifetime classes, in checked mode or not: a multiple of the page. `None`
/// when it would not fit in the address space.
pub(crate) fn state_len(unit_count: usize, life_count: usize, checked: bool) -> Option<usize> {
    Layout::new(unit_count, life_count, Some(shared_parts(life_count, checked))).map(|l| l.len)
}

fn shared_parts(life_count: usize, checked: bool) -> SharedParts {
    SharedParts {
        heap_stride: Heap::bytes(life_count),
        checked,
        private: false,
    }
}

/// Why [`Instance::placed_or_why`] built no instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// This process has an instance of the region already (a process attaches a region
    /// once; or a region with the same token tag: one in 2^30 per pair of regions at most).
    AttachedHere,
    /// The placement is inconsistent, the state disagrees, or the OS refused memory.
    Other,
}

impl Instance {
    /// An instance in the shared region `p` describes (see [`Placement`]), for `life_count`
    /// lifetime classes: a new region is formatted, an existing one attached. `None` when
    /// the placement is inconsistent (misaligned, parts overlapping or past the mapping,
    /// `state_len` not [`state_len`]'s), when an attached region's state disagrees with
    /// the geometry, when this process already has an instance of that region (or of one
    /// with the same token tag: one in 2^30 per pair of regions at most), or when the OS refuses
    /// memory for the view. The region is left untouched unless it is new. On `None` the
    /// caller still owns the mapping.
    ///
    /// # Safety
    /// `[p.base, p.base + p.len)` is mapped shared and readable and writable for as long as
    /// the instance (and any heap of it this process's threads hold) lives, then unmapped
    /// only by `p.unmap`; when `p.is_new` it reads zero and no other process uses it yet;
    /// otherwise its state area was formatted by this function with the same geometry.
    pub(crate) unsafe fn placed(
        p: Placement,
        life_count: usize,
        life_names: &'static [&'static str],
    ) -> Option<Instance> {
        // SAFETY: the caller's guarantees.
        unsafe { Instance::placed_or_why(p, life_count, life_names) }.ok()
    }

    /// [`Instance::placed`], telling a refusal for a region this process has attached
    /// already ([`Refused::AttachedHere`]) from the others.
    ///
    /// # Safety
    /// As [`Instance::placed`].
    pub(crate) unsafe fn placed_or_why(
        p: Placement,
        life_count: usize,
        life_names: &'static [&'static str],
    ) -> Result<Instance, Refused> {
        let refused = Refused::Other;
        let layout = Layout::new(p.unit_count, life_count, Some(shared_parts(life_count, CHECKED)))
            .ok_or(refused)?;
        let blocks_len = p.unit_count.checked_mul(UNIT).ok_or(refused)?;
        let fits = (p.base as usize).is_multiple_of(UNIT)
            && p.unit_count > 0
            && p.blocks_offset.is_multiple_of(UNIT)
            && p.state_len == layout.len
            && p.state_offset.is_multiple_of(os::MIN_PAGE)
            && p.state_offset.checked_add(layout.len).ok_or(refused)? <= p.blocks_offset
            && p.blocks_offset.checked_add(blocks_len).ok_or(refused)? <= p.len;
        if !fits {
            return Err(refused);
        }
        let instance = Instance::new(p.len, true, life_count, life_names);
        let mut list = fork::lock_list();
        if !os::page_size_supported() || NEXT_INSTANCE.load(Ordering::Relaxed) >= MAX_INSTANCES {
            return Err(refused);
        }
        // SAFETY: the caller's guarantees; the parts lie in the mapping (checked above).
        let pool = unsafe {
            place::place(
                p.base.add(p.blocks_offset),
                p.unit_count,
                p.base.add(p.state_offset),
                &layout,
                life_count,
                SharedParts {
                    private: p.private,
                    ..shared_parts(life_count, CHECKED)
                },
                p.is_new,
            )
        };
        if pool.is_null() {
            return Err(refused);
        }
        // SAFETY: the view was just built and is ours.
        let view = unsafe { &mut *pool };
        if fork::has_tag(&list, view.tag) {
            // SAFETY: ours, unused; the region's state is untouched by an attach.
            unsafe { Pool::destroy(pool) };
            return Err(Refused::AttachedHere);
        }
        view.leave = Some(Leave {
            unmap: p.unmap,
            base: p.base,
            len: p.len,
            sync: p.sync_on_leave,
            after: p.after_leave,
        });
        view.write_seal = p.write_seal;
        // The writes of the attach so far (a region's format, its repair) are followed by a
        // mark, as every write of its state is from now on.
        drop(view.writing());
        // SAFETY: as in `init_pool`: the pool is not shared with any thread yet.
        unsafe { instance.publish(&mut list, pool) };
        Ok(instance)
    }

    /// Gives the instance its id and `pool`, published after the bounds (see
    /// [`RegionBounds`]).
    ///
    /// # Safety
    /// `pool` is fresh and this instance has none yet; the caller holds the instance
    /// list's lock `list`.
    unsafe fn publish(&self, list: &mut fork::List, pool: *mut Pool) {
        // Ids are taken under the list lock: the caller's test of MAX_INSTANCES still holds.
        let id = NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed);
        fork::push(list, pool);
        // SAFETY: the pool was just created, not yet shared; this thread holds the instance
        // list's lock, under which every initialisation runs, so it is the only writer of the
        // bounds, and it writes them before publishing the pool (see RegionBounds).
        unsafe {
            let region = &(*pool).region;
            self.bounds.set(region.base(), region.len(), region.carved_len());
        }
        self.instance.store(id, Ordering::Relaxed);
        self.slot
            .store(per_thread::slot_of(id) as u64, Ordering::Relaxed);
        self.pool.store(pool, Ordering::Release);
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let pool = *self.pool.get_mut();
        if pool.is_null() {
            return;
        }
        fork::unregister(pool);
        // SAFETY: a published pool lives until the instance drops.
        if unsafe { (*pool).is_lost() } {
            // A fork child without the region's memory (`Pool::check_after_fork`): nothing
            // of it can be given back here; the view is left mapped.
            return;
        }
        // SAFETY: as above.
        if unsafe { (*pool).is_shared() } {
            // A leave: the calling thread's heap goes back to the region now; other threads'
            // become ORPHANED, and each goes back at its thread's next look-up or exit,
            // releasing its reference to the view (the last one unmaps the region).
            let own = per_thread::leave_own(self.instance_id());
            // SAFETY: `&mut self`: no thread uses this instance any more; the calling
            // thread's heap of it is off its list and used no more; the instance's
            // reference is released last.
            unsafe {
                if !own.is_null() {
                    heap_handover::abandon(own);
                }
                heap_handover::orphan_this_process_heaps(&*pool);
                Pool::release(pool);
            }
            return;
        }
        // SAFETY: `&mut self`: no thread uses this instance any more, so its heaps can be
        // detached and its memory released.
        unsafe {
            heap_handover::teardown(&*pool);
            Pool::destroy(pool);
        }
        // The calling thread's heap of it (now ORPHANED) goes at once; other threads
        // release theirs when their next look-up meets it.
        per_thread::unmap_orphans();
        #[cfg(test)]
        heap_handover::hooks::teardown_goes_on(pool);
    }
}
