//! The sync facade: every atomic and lock of the allocator comes from here, so that under
//! `cfg(loom)` the lock-free structures run on loom's model checker instead of std.
//!
//! [`SpinLock`] is the allocator's only lock. It never allocates: a lock that parks a thread
//! (std's or parking_lot's mutex) may allocate while parking, which re-enters the allocator
//! that holds the lock. Locks guard slow paths only (invariant 9 of [`crate::design`]).

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicU8};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicU8};

pub(crate) use core::sync::atomic::Ordering;

/// Spin hint, or a loom yield point under the model checker.
#[inline]
pub(crate) fn spin_hint(round: u32) {
    #[cfg(loom)]
    {
        let _ = round;
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    {
        if round < 64 {
            core::hint::spin_loop();
        } else {
            // sched_yield: a system call that never allocates.
            std::thread::yield_now();
        }
    }
}

/// A test-and-test-and-set lock implementing `lock_api::RawMutex`, so the allocator gets
/// `lock_api`'s mutex and guards with a lock that never parks (a parking lock's slow path
/// may allocate).
pub(crate) struct RawSpin {
    locked: AtomicU8,
}

impl RawSpin {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Self {
        RawSpin {
            locked: AtomicU8::new(0),
        }
    }
    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        RawSpin {
            locked: AtomicU8::new(0),
        }
    }
}

// SAFETY: `lock` returns only after this thread changed `locked` from 0 to 1 with Acquire,
// and `unlock` stores 0 with Release, so at most one holder exists and the holder's writes
// happen before the next holder's reads.
unsafe impl lock_api::RawMutex for RawSpin {
    #[allow(clippy::declare_interior_mutable_const)]
    #[cfg(not(loom))]
    const INIT: Self = RawSpin::new();
    #[allow(clippy::declare_interior_mutable_const)]
    #[cfg(loom)]
    const INIT: Self = panic!("under loom, build locks with RawSpin::new()");
    type GuardMarker = lock_api::GuardSend;

    fn lock(&self) {
        let mut round = 0;
        while !self.try_lock() {
            while self.locked.load(Ordering::Relaxed) != 0 {
                spin_hint(round);
                round = round.saturating_add(1);
            }
        }
    }

    fn try_lock(&self) -> bool {
        self.locked
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    unsafe fn unlock(&self) {
        self.locked.store(0, Ordering::Release);
    }
}

/// The allocator's lock.
pub(crate) type SpinLock<T> = lock_api::Mutex<RawSpin, T>;

/// Builds a [`SpinLock`] (const outside loom).
#[cfg(not(loom))]
pub(crate) const fn spin_lock<T>(value: T) -> SpinLock<T> {
    lock_api::Mutex::const_new(RawSpin::new(), value)
}
/// Builds a [`SpinLock`].
#[cfg(loom)]
pub(crate) fn spin_lock<T>(value: T) -> SpinLock<T> {
    lock_api::Mutex::from_raw(RawSpin::new(), value)
}

/// Runs a loom model, with at most 5 preemptions unless `LOOM_MAX_PREEMPTIONS` says
/// otherwise (every model of the crate also passes with 10).
#[cfg(all(loom, test))]
pub(crate) fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(5);
    }
    builder.check(f);
}

#[cfg(all(loom, test))]
mod loom_models {
    use super::{model, spin_lock, SpinLock};
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::thread;

    /// The spin lock (`RawSpin` under `lock_api`): two threads increment a counter that is
    /// not atomic.
    ///
    /// Checks: mutual exclusion (loom fails on two overlapping accesses) and happens-before
    /// from one holder to the next (the count ends at 2, and loom checks each access
    /// happens after the previous one).
    ///
    /// Orderings relied on: `try_lock`'s Acquire CAS pairs with `unlock`'s Release store.
    ///
    /// Fails with: `try_lock`'s success ordering Acquire -> Relaxed, or `unlock`'s store
    /// Release -> Relaxed.
    #[test]
    fn spin_lock_excludes_and_orders() {
        model(|| {
            let lock = Arc::new(spin_lock(UnsafeCell::new(0u64)));
            let bump = |lock: &SpinLock<UnsafeCell<u64>>| {
                // SAFETY: loom checks the accesses.
                lock.lock().with_mut(|c| unsafe { *c += 1 });
            };
            let other = {
                let lock = lock.clone();
                thread::spawn(move || bump(&lock))
            };
            bump(&lock);
            other.join().unwrap();
            // SAFETY: loom checks the access.
            lock.lock().with(|c| assert_eq!(unsafe { *c }, 2));
        });
    }
}
