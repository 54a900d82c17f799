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

impl core::ops::Deref for TestPool {
    type Target = Pool;
    fn deref(&self) -> &Pool {
        // SAFETY: built in `new`, destroyed only on drop.
        unsafe { &*self.0 }
    }
}

impl Drop for TestPool {
    fn drop(&mut self) {
        // SAFETY: the last handle: the test is done with the pool and its blocks.
        unsafe { Pool::destroy(self.0) };
    }
}
