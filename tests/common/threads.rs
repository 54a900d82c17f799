//! Helper threads of the tests that end however the test ends. A helper that runs until a
//! flag is set has the flag set by a guard's drop ([`StopOnDrop`]), a wait for the
//! helpers' progress gives up once every helper has ended ([`yield_until`]), and a
//! [`Barrier`] is broken by a party's panic: a failed assertion fails its test instead of
//! leaving it waiting for ever (a hung test binary never says what failed, and a hung CI
//! run reports nothing at all).
//!
//! Invariants: (a test ends, by a return or a panic) ⇒ (every flag it guards is set), so
//! (every helper that loops until its flag has ended) once the test's scope joins it;
//! (a party of a [`Barrier`] panicked) ⇒ (every wait of the barrier, then or later, panics).
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

/// Sets its flag when dropped: a test's helper thread that runs until the flag is set is
/// stopped however the test ends (an assertion that fails before the test sets the flag
/// itself would otherwise leave `std::thread::scope`, or a join, waiting for that thread
/// for ever). `drop(guard)` is the test's own stop.
pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        // SeqCst: at least as strong as the store of any test it stands for.
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Adds one to its counter when dropped: a thread counts its own end, however it ends, so
/// that a loop that waits for the progress of such threads sees when they have all ended
/// (their handles being out of its reach).
pub struct CountOnDrop<'a>(pub &'a AtomicU64);

impl Drop for CountOnDrop<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Yields until `reached()` holds. Panics, naming `what`, once `ended()` holds (a thread
/// the progress needs has ended: such threads end only when told to, or once their share
/// is done, so a panic ended it) and `reached()` still does not: the wait would never end.
pub fn yield_until(what: &str, mut reached: impl FnMut() -> bool, mut ended: impl FnMut() -> bool) {
    while !reached() {
        if ended() && !reached() {
            panic!("{what}: a thread this progress needs ended first (a panic: see above)");
        }
        std::thread::yield_now();
    }
}

/// std's `Barrier` that a party's panic breaks: each party holds [`Barrier::party`]'s guard
/// while it takes part, and a guard dropped by a panic makes every wait of the barrier panic
/// (std's would leave the other parties waiting for the one that panicked, for ever).
pub struct Barrier {
    parties: usize,
    state: Mutex<BarrierState>,
    turned: Condvar,
}

/// The parties waiting now, the waits completed (a generation each), and whether a party
/// panicked.
struct BarrierState {
    waiting: usize,
    generation: u64,
    broken: bool,
}

/// A party's hold on a [`Barrier`]: dropped by a panic, it breaks the barrier.
pub struct Party<'a>(&'a Barrier);

impl Drop for Party<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.state().broken = true;
            self.0.turned.notify_all();
        }
    }
}

impl Barrier {
    /// A barrier of `parties` parties.
    pub fn new(parties: usize) -> Self {
        Barrier {
            parties,
            state: Mutex::new(BarrierState {
                waiting: 0,
                generation: 0,
                broken: false,
            }),
            turned: Condvar::new(),
        }
    }

    /// The calling party's hold on the barrier, for as long as it takes part: its panic
    /// meanwhile breaks the barrier.
    pub fn party(&self) -> Party<'_> {
        Party(self)
    }

    /// The state, whoever panicked holding its lock.
    fn state(&self) -> MutexGuard<'_, BarrierState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until every party waits (as std's). Panics once a party has panicked.
    pub fn wait(&self) {
        let mut state = self.state();
        let broken = "a party of the barrier panicked (see above): it will never wait";
        assert!(!state.broken, "{broken}");
        state.waiting += 1;
        if state.waiting == self.parties {
            state.waiting = 0;
            state.generation += 1;
            self.turned.notify_all();
            return;
        }
        let generation = state.generation;
        while state.generation == generation && !state.broken {
            state = self.turned.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if state.generation == generation {
            drop(state);
            panic!("{broken}");
        }
    }
}
