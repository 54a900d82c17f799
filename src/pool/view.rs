//! A pool view's life in this process: made over a fresh region ([`Pool::create`], or
//! placed on a shared one: `place`), held by this process's heaps ([`Pool::hold`]),
//! released ([`Pool::release`]: the last reference unmaps the view and, for a shared
//! region, runs its [`Leave`]), destroyed ([`Pool::destroy`]).
//!
//! Invariants: in a shared pool, `refs = 1 (the instance's) + the heaps of it this process's
//! threads and joins hold`; the view and this process's mapping of the region are unmapped
//! exactly when `refs` reaches 0, and `Leave::after` runs once, after that unmap. A private
//! pool counts nothing: its instance destroys it.

use super::*;

/// How this process lets go of a shared region's mapping: `unmap(base, len, sync)`, then
/// `after`.
#[derive(Clone, Copy)]
pub(crate) struct Leave {
    /// Unmaps the region (and, for a file, syncs it first when `sync`).
    pub(crate) unmap: unsafe fn(*mut u8, usize, bool),
    pub(crate) base: *mut u8,
    pub(crate) len: usize,
    pub(crate) sync: bool,
    /// Run once the region is unmapped, when this process is done with it for good.
    pub(crate) after: Option<AfterLeave>,
}

/// What a shared region's maker runs when the last of this process's references to the
/// view is released ([`Pool::release`]): `run(data)`, once (a named region's attachment:
/// its slot freed and the state sealed only when nothing of the process can write to the
/// region any more).
///
/// In a fork child, `in_fork_child(data)` runs first, from the fork handlers (the child's
/// thread its only one): the child has the view open as its parent had it (a named
/// region's attachment: the child claims a slot of its own, with no system call).
#[derive(Clone, Copy)]
pub(crate) struct AfterLeave {
    pub(crate) run: unsafe fn(*mut ()),
    pub(crate) in_fork_child: unsafe fn(*mut ()),
    pub(crate) data: *mut (),
}

impl Pool {
    /// Makes a private pool for `life_count` lifetime classes over a fresh region, in
    /// memory mapped from the OS. Returns null when the OS refuses.
    pub(crate) fn create(bytes: usize, exact: bool, life_count: usize, checked: bool) -> *mut Pool {
        let Some((region, region_state)) = Region::new(bytes, exact, checked) else {
            return ptr::null_mut();
        };
        let Some(layout) = place::Layout::new(region.unit_count(), life_count, None) else {
            return ptr::null_mut();
        };
        let area = os::map(layout.len, os::MIN_PAGE);
        if area.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: `area` is fresh zeroed memory laid out by `layout`, ours alone.
        let pool = unsafe { place::build(region, area, &layout, false) };
        if pool.is_null() {
            // SAFETY: mapped above, unused.
            unsafe { os::unmap(area, layout.len) };
            return pool;
        }
        // SAFETY: just built; nothing else uses it.
        unsafe {
            (*pool).area = area;
            (*pool).area_len = layout.len;
            let formatted = place::format(
                &*pool,
                life_count,
                layout.max_heaps,
                0,
                region_state,
                &layout,
                false,
            );
            debug_assert!(
                formatted,
                "a private pool's lock needs nothing of the C library"
            );
            (*pool).set_retention(&Retention::from_environment());
        }
        pool
    }

    /// Drops the pool and releases its memory: for a private pool everything; for a shared
    /// one this process's view only (the region's state stays for the other processes).
    ///
    /// # Safety
    /// `pool` came from [`Pool::create`] or [`place`] and nothing in this process uses it
    /// (nor, for a private pool, any of its blocks).
    pub(crate) unsafe fn destroy(pool: *mut Pool) {
        // SAFETY: the caller guarantees exclusive access; the region unmaps every block,
        // and the large allocations go with the instance (in a placed region: this
        // process's fallback mappings, which no other process can free).
        unsafe {
            let (area, area_len) = ((*pool).area, (*pool).area_len);
            // (A region that never falls back has nothing there: its table is left alone.)
            if !area.is_null() || (*pool).region.falls_back() {
                (&*pool).large.lock().unmap_all();
            }
            if !area.is_null() {
                ptr::drop_in_place((*pool).shared.cast_mut());
            }
            let view_len = place::view_len(!(*pool).check_scratch.is_null());
            ptr::drop_in_place(pool);
            os::unmap(pool.cast::<u8>().sub(place::VIEW_COLOUR), view_len);
            if !area.is_null() {
                os::unmap(area, area_len);
            }
        }
    }

    /// A thread or join of this process took a heap of this pool (a shared pool counts it:
    /// see `refs`).
    pub(crate) fn hold(&self) {
        if self.is_shared() {
            self.refs.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lets go of one of this process's references to a shared pool (see `refs`): the
    /// last one unmaps this process's view and mapping of the region. Nothing for a
    /// private pool (its instance destroys it).
    ///
    /// # Safety
    /// The caller holds the reference it releases, and uses neither the pool nor the
    /// heap it held after this call.
    pub(crate) unsafe fn release(pool: *const Pool) {
        // SAFETY: the caller's reference keeps the view mapped until here.
        let p = unsafe { &*pool };
        if !p.is_shared() || p.refs.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let leave = p.leave;
        // SAFETY: the last reference: nothing of this process uses the view or the region.
        unsafe {
            Pool::destroy(pool.cast_mut());
            if let Some(l) = leave {
                (l.unmap)(l.base, l.len, l.sync);
                if let Some(after) = l.after {
                    (after.run)(after.data);
                }
            }
        }
    }
}
