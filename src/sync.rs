//! The sync facade: every atomic and lock of the allocator comes from here, so that under
//! `cfg(loom)` the lock-free structures run on loom's model checker instead of std.
//!
//! [`SpinLock`] is the allocator's only lock. It never allocates: a lock that parks a thread
//! (std's or parking_lot's mutex) may allocate while parking, which re-enters the allocator
//! that holds the lock. Locks guard slow paths only (invariant 9 of [`crate::design`]).

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{fence, AtomicPtr, AtomicU32, AtomicU64, AtomicU8};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicPtr, AtomicU32, AtomicU64, AtomicU8};

pub(crate) use core::sync::atomic::Ordering;

/// Defines a function that is `const` outside loom and a plain one under it: loom's atomics
/// register with the model checker's execution when built, so no `const fn` can build one.
/// One body serves both, so the two builds cannot drift apart.
macro_rules! const_unless_loom {
    ($(#[$attr:meta])* $vis:vis fn $name:ident $(<$($g:ident),*>)? ($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $(#[$attr])*
        #[cfg(not(loom))]
        $vis const fn $name $(<$($g),*>)? ($($arg: $ty),*) -> $ret $body
        $(#[$attr])*
        #[cfg(loom)]
        $vis fn $name $(<$($g),*>)? ($($arg: $ty),*) -> $ret $body
    };
}
pub(crate) use const_unless_loom;

/// An atomic that can be built holding 0 (null for a pointer): what its all-zero bytes
/// hold outside loom.
#[cfg(loom)]
pub(crate) trait ZeroAtomic {
    /// The atomic holding 0, built.
    fn zero() -> Self;
}

#[cfg(loom)]
macro_rules! zero_atomic {
    ($($t:ty),*) => {
        $(impl ZeroAtomic for $t {
            fn zero() -> Self {
                <$t>::new(0)
            }
        })*
    };
}
#[cfg(loom)]
zero_atomic!(AtomicU8, AtomicU32, AtomicU64);
#[cfg(loom)]
impl<T> ZeroAtomic for AtomicPtr<T> {
    fn zero() -> Self {
        AtomicPtr::new(core::ptr::null_mut())
    }
}
#[cfg(loom)]
impl<A: ZeroAtomic> ZeroAtomic for [A; 2] {
    fn zero() -> Self {
        [A::zero(), A::zero()]
    }
}

/// Under loom: builds the `n` atomics at `table`, in memory that reads zero (fresh from the
/// OS), each holding 0. Outside loom the zero bytes already are atomics holding 0 (std's
/// atomics are their bytes), and the callers' tables rely on it; under loom an atomic is an
/// object of the model checker, which zero bytes are not, so each one is built in place.
///
/// # Safety
/// `table` is valid for writes of `n` values of `A`, aligned, and nothing reads them yet.
#[cfg(loom)]
pub(crate) unsafe fn zeroed_atomics<A: ZeroAtomic>(table: *mut A, n: usize) {
    for i in 0..n {
        // SAFETY: in bounds and unread (the caller's contract); the zero bytes there hold no
        // value that needs dropping.
        unsafe { table.add(i).write(A::zero()) };
    }
}

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
///
/// `locked` is 0 (free), 1 (held), [`FORK_HELD`] (held by the fork's `prepare` handler
/// across the fork: [`RawSpin::hold_for_fork`]) or [`FORK_ENTERED`] (held so, and entered
/// by the forking thread itself: a fork handler the program registered before cohort's
/// runs between cohort's `prepare` and its `parent` or `child` handler, and may allocate).
/// Who may enter a lock held so is asked of [`FORK_CALLER`], which `crate::fork` sets.
pub(crate) struct RawSpin {
    locked: AtomicU8,
}

/// `RawSpin::locked` of a lock the fork's `prepare` handler holds.
const FORK_HELD: u8 = 2;
/// `RawSpin::locked` of a lock the fork's `prepare` handler holds, entered by the forking
/// thread (its unlock goes back to [`FORK_HELD`]).
const FORK_ENTERED: u8 = 3;

/// What a thread that finds a lock [`FORK_HELD`] may do, as [`FORK_CALLER`] answers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForkCaller {
    /// Wait: another thread forks.
    Wait,
    /// Enter: this is the forking thread, inside the fork (a program's fork handler).
    Enter,
    /// Try again: this is a fork child's only thread, whose repair has just run (it
    /// released every lock the `prepare` handler held).
    Retry,
}

/// Set once by `crate::fork` (null: no fork handlers yet): the function a thread that finds
/// a lock [`FORK_HELD`] asks, in a static of its own (a typed pointer to it: a function
/// pointer has no atomic of its own). Never written through.
#[cfg(not(loom))]
static FORK_CALLER: core::sync::atomic::AtomicPtr<fn() -> ForkCaller> =
    core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());

/// Sets the function [`RawSpin::lock`] asks when it finds a lock held across a fork.
#[cfg(not(loom))]
pub(crate) fn set_fork_caller(f: &'static fn() -> ForkCaller) {
    let f: *const fn() -> ForkCaller = f;
    FORK_CALLER.store(f.cast_mut(), core::sync::atomic::Ordering::Release);
}

/// What the calling thread may do with a lock or a batch of remote frees held across a
/// fork (see [`ForkCaller`]).
#[cfg(not(loom))]
pub(crate) fn fork_caller() -> ForkCaller {
    let f = FORK_CALLER.load(core::sync::atomic::Ordering::Acquire);
    // SAFETY: null, or what `set_fork_caller` stored: a `&'static`, only read.
    match unsafe { f.as_ref() } {
        None => ForkCaller::Wait,
        Some(f) => f(),
    }
}

/// Loom's models make no fork: nobody holds anything across one.
#[cfg(loom)]
pub(crate) fn fork_caller() -> ForkCaller {
    ForkCaller::Wait
}

impl RawSpin {
    /// The fork's `prepare` handler, holding this lock: marks it held across the fork.
    pub(crate) fn hold_for_fork(&self) {
        self.locked.store(FORK_HELD, Ordering::Relaxed);
    }

    /// True while some thread holds the lock (or a fork's `prepare` does): for a fork
    /// child, where no thread of its own can.
    #[cfg(not(loom))]
    pub(crate) fn is_held(&self) -> bool {
        self.locked.load(Ordering::Relaxed) != 0
    }

    /// True when the lock's holder is the forking thread, which entered it while its own
    /// fork's `prepare` handler holds it (a program's fork handler allocating inside the
    /// fork): for that holder, to tell that it is inside its fork.
    #[cfg(not(loom))]
    pub(crate) fn is_entered_for_fork(&self) -> bool {
        self.locked.load(Ordering::Relaxed) == FORK_ENTERED
    }

    /// The fork's `parent` or `child` handler: releases the lock if [`RawSpin::hold_for_fork`]
    /// marked it (a lock made during the fork, by a program's fork handler, is left to its
    /// holder).
    pub(crate) fn release_fork_hold(&self) {
        let _ = self
            .locked
            .compare_exchange(FORK_HELD, 0, Ordering::Release, Ordering::Relaxed);
    }
}

impl RawSpin {
    const_unless_loom! {
        pub(crate) fn new() -> Self {
            RawSpin {
                locked: AtomicU8::new(0),
            }
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
            loop {
                match self.locked.load(Ordering::Relaxed) {
                    0 => break,
                    #[cfg(not(loom))]
                    FORK_HELD => match fork_caller() {
                        ForkCaller::Enter => {
                            // The forking thread holds it (its `prepare` handler); only
                            // it changes it until its `parent` or `child` handler.
                            self.locked.store(FORK_ENTERED, Ordering::Relaxed);
                            return;
                        }
                        ForkCaller::Retry => break,
                        ForkCaller::Wait => {}
                    },
                    _ => {}
                }
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
        // An entered fork hold goes back to the hold (only its thread reads it so).
        let after = match self.locked.load(Ordering::Relaxed) {
            FORK_ENTERED => FORK_HELD,
            _ => 0,
        };
        self.locked.store(after, Ordering::Release);
    }
}

/// The allocator's lock.
pub(crate) type SpinLock<T> = lock_api::Mutex<RawSpin, T>;

/// The pool's lock: the spin lock in a private instance; in a shared one a robust,
/// process-shared pthread mutex (it lives in the region), so that a holder that dies (kill
/// -9) does not wedge the region: the next locker is told (`EOWNERDEAD`), makes the mutex
/// consistent and raises `owner_died`, and the caller repairs what the dead holder left
/// half done before it uses the guarded state ([`RawPoolLock::take_owner_died`]).
///
/// Outside a shared instance this costs the slow paths one test of `robust`. (A
/// process-shared mutex never allocates; a waiter sleeps in the kernel.)
#[cfg(not(loom))]
#[repr(C)]
pub(crate) struct RawPoolLock {
    spin: RawSpin,
    /// 1 when the mutex is used (set once, before the lock is shared).
    robust: AtomicU8,
    /// 1 while a locker found the previous holder dead and nobody repaired since.
    owner_died: AtomicU8,
    mutex: core::cell::UnsafeCell<libc::pthread_mutex_t>,
}

// SAFETY: the mutex is a process-shared pthread mutex, made for concurrent use; the rest is
// atomics.
#[cfg(not(loom))]
unsafe impl Sync for RawPoolLock {}
// SAFETY: as above.
#[cfg(not(loom))]
unsafe impl Send for RawPoolLock {}

#[cfg(not(loom))]
impl RawPoolLock {
    /// Makes the lock robust and process-shared: initialises the mutex in place. Returns
    /// false when the C library refuses (the lock then stays a spin lock).
    ///
    /// # Safety
    /// Nobody uses the lock yet, and it stays at this address (it is in shared memory).
    pub(crate) unsafe fn make_robust(&self) -> bool {
        // SAFETY: the attribute object is ours; the mutex is initialised in place before
        // anyone uses it (caller).
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = core::mem::zeroed();
            if libc::pthread_mutexattr_init(&mut attr) != 0 {
                return false;
            }
            let ok = libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED)
                == 0
                && libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST) == 0
                && libc::pthread_mutex_init(self.mutex.get(), &attr) == 0;
            libc::pthread_mutexattr_destroy(&mut attr);
            if ok {
                self.robust.store(1, Ordering::Release);
            }
            ok
        }
    }

    /// [`RawSpin::hold_for_fork`] for a private pool's lock (a robust one is never held
    /// across a fork).
    pub(crate) fn hold_for_fork(&self) {
        if !self.is_robust() {
            self.spin.hold_for_fork();
        }
    }

    /// [`RawSpin::is_held`] for a private pool's lock.
    pub(crate) fn is_held(&self) -> bool {
        !self.is_robust() && self.spin.is_held()
    }

    /// [`RawSpin::is_entered_for_fork`] for a private pool's lock.
    pub(crate) fn is_entered_for_fork(&self) -> bool {
        !self.is_robust() && self.spin.is_entered_for_fork()
    }

    /// [`RawSpin::release_fork_hold`] for a private pool's lock.
    pub(crate) fn release_fork_hold(&self) {
        if !self.is_robust() {
            self.spin.release_fork_hold();
        }
    }

    /// After a lock: true (once) when the previous holder died holding it; the caller
    /// must bring what the lock guards back to a consistent state before using it.
    pub(crate) fn take_owner_died(&self) -> bool {
        self.owner_died.load(Ordering::Relaxed) != 0
            && self.owner_died.swap(0, Ordering::AcqRel) != 0
    }

    fn is_robust(&self) -> bool {
        self.robust.load(Ordering::Relaxed) != 0
    }

    /// Handles a pthread result of a lock attempt: true when the lock is now held.
    fn acquired(&self, r: libc::c_int) -> bool {
        match r {
            0 => true,
            libc::EOWNERDEAD => {
                // SAFETY: we hold the mutex (EOWNERDEAD hands it over).
                unsafe { libc::pthread_mutex_consistent(self.mutex.get()) };
                self.owner_died.store(1, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }
}

// SAFETY: the spin lock's argument when not robust; when robust, pthread_mutex_lock returns
// 0 or EOWNERDEAD only to the one thread that now holds the mutex, and its unlock orders the
// holder's writes before the next holder's reads (pthread mutexes synchronise memory).
#[cfg(not(loom))]
unsafe impl lock_api::RawMutex for RawPoolLock {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = RawPoolLock {
        spin: RawSpin::new(),
        robust: AtomicU8::new(0),
        owner_died: AtomicU8::new(0),
        mutex: core::cell::UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER),
    };
    type GuardMarker = lock_api::GuardSend;

    fn lock(&self) {
        if !self.is_robust() {
            return self.spin.lock();
        }
        loop {
            // SAFETY: an initialised process-shared mutex.
            let r = unsafe { libc::pthread_mutex_lock(self.mutex.get()) };
            if self.acquired(r) {
                return;
            }
            // ENOTRECOVERABLE cannot happen (every EOWNERDEAD is made consistent); any
            // other error: try again.
            spin_hint(64);
        }
    }

    fn try_lock(&self) -> bool {
        if !self.is_robust() {
            return self.spin.try_lock();
        }
        // SAFETY: an initialised process-shared mutex.
        self.acquired(unsafe { libc::pthread_mutex_trylock(self.mutex.get()) })
    }

    unsafe fn unlock(&self) {
        if !self.is_robust() {
            // SAFETY: forwarded.
            return unsafe { self.spin.unlock() };
        }
        // SAFETY: the caller holds the mutex.
        unsafe { libc::pthread_mutex_unlock(self.mutex.get()) };
    }
}

/// Under loom the pool's lock is the spin lock (the models run in one process).
#[cfg(loom)]
pub(crate) type RawPoolLock = RawSpin;

#[cfg(loom)]
impl RawSpin {
    /// Never: a model's holders do not die.
    pub(crate) fn take_owner_died(&self) -> bool {
        false
    }
}

/// The pool's lock (see [`RawPoolLock`]).
pub(crate) type PoolLock<T> = lock_api::Mutex<RawPoolLock, T>;

/// Builds a [`PoolLock`] (robust only once [`RawPoolLock::make_robust`] ran).
#[cfg(not(loom))]
pub(crate) const fn pool_lock<T>(value: T) -> PoolLock<T> {
    lock_api::Mutex::const_new(<RawPoolLock as lock_api::RawMutex>::INIT, value)
}

/// Builds a [`PoolLock`] (under loom, the spin lock).
#[cfg(loom)]
pub(crate) fn pool_lock<T>(value: T) -> PoolLock<T> {
    lock_api::Mutex::const_new(RawSpin::new(), value)
}

const_unless_loom! {
    /// Builds a [`SpinLock`] (const outside loom).
    pub(crate) fn spin_lock<T>(value: T) -> SpinLock<T> {
        lock_api::Mutex::const_new(RawSpin::new(), value)
    }
}

/// Runs a loom model, with at most 5 preemptions unless `LOOM_MAX_PREEMPTIONS` says
/// otherwise (the block layer's models and the spin lock's also pass with 10).
#[cfg(all(loom, test))]
pub(crate) fn model(f: impl Fn() + Sync + Send + 'static) {
    model_bounded(5, f);
}

/// Runs a loom model with at most `preemptions` preemptions unless `LOOM_MAX_PREEMPTIONS`
/// says otherwise, and room for the branches of a model that builds a pool (every atomic
/// access is a branch of loom's path; a pool's set-up makes a few thousand).
#[cfg(all(loom, test))]
pub(crate) fn model_bounded(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(preemptions);
    }
    if std::env::var_os("LOOM_MAX_BRANCHES").is_none() {
        builder.max_branches = 100_000;
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
