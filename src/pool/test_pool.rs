//! A pool for the pool's tests and loom models: built over a fresh region, destroyed when
//! dropped.

use super::Pool;

/// A pool of its own, destroyed on drop.
pub(crate) struct TestPool(*mut Pool);

// SAFETY: the pool is built for sharing between threads (`Pool` is `Send + Sync`); this
// handle only adds its destruction, by whoever drops it last.
unsafe impl Send for TestPool {}
// SAFETY: as above.
unsafe impl Sync for TestPool {}

impl TestPool {
    /// A pool over `units` units of the region, for `life_count` lifetime classes.
    pub(crate) fn new(units: usize, life_count: usize) -> TestPool {
        let pool = Pool::create(units * crate::region::UNIT, true, life_count, false);
        assert!(!pool.is_null(), "the OS refused the pool");
        TestPool(pool)
    }
}

impl TestPool {
    /// A shared pool (as a region shared between processes has) over `units` units, for
    /// `life_count` lifetime classes and heaps of `heap_stride` bytes, in a fresh
    /// shared-anonymous mapping: its state area, then its blocks.
    pub(crate) fn shared(units: usize, life_count: usize, heap_stride: usize) -> TestPool {
        use super::place::{self, Layout, SharedParts};
        use crate::region::UNIT;
        let parts = SharedParts {
            heap_stride,
            checked: false,
            private: false,
        };
        let layout = Layout::new(units, life_count, Some(parts)).expect("a layout");
        let blocks = layout.len.next_multiple_of(UNIT);
        let len = blocks + units * UNIT;
        let base = crate::os::shared_mem::map_shared_anonymous(len, UNIT);
        assert!(!base.is_null(), "the OS refused the region");
        // SAFETY: a fresh shared mapping: the state area at its start, the units after.
        let pool = unsafe {
            place::place(
                base.add(blocks),
                units,
                base,
                &layout,
                life_count,
                parts,
                true,
            )
        };
        assert!(!pool.is_null(), "the pool was refused");
        // SAFETY: just built, ours.
        unsafe {
            (*pool).leave = Some(super::Leave {
                unmap: unmap_region,
                base,
                len,
                sync: false,
                after: None,
            })
        };
        TestPool(pool)
    }
}

/// Unmaps a shared test pool's region.
///
/// # Safety
/// The region's mapping, unused.
unsafe fn unmap_region(base: *mut u8, len: usize, _sync: bool) {
    // SAFETY: the caller's guarantee.
    unsafe { crate::os::unmap(base, len) }
}

impl core::ops::Deref for TestPool {
    type Target = Pool;
    fn deref(&self) -> &Pool {
        // SAFETY: built in `new`, destroyed only on drop.
        unsafe { &*self.0 }
    }
}

impl Drop for TestPool {
    fn drop(&mut self) {
        // SAFETY: the last handle: the test is done with the pool and its blocks. (A shared
        // pool's view goes with its instance's reference, which unmaps the region.)
        unsafe {
            if (*self.0).is_shared() {
                Pool::release(self.0);
            } else {
                Pool::destroy(self.0);
            }
        }
    }
}
