//! Helper threads of the tests that end however the test ends. A helper that runs until a
//! flag is set has the flag set by a guard's drop ([`StopOnDrop`]), and a wait for the
//! helpers' progress gives up once every helper has ended ([`yield_until`]): a failed
//! assertion fails its test instead of leaving it waiting for ever (a hung test binary
//! never says what failed, and a hung CI run reports nothing at all).
//!
//! Invariant: (a test ends, by a return or a panic) ⇒ (every flag it guards is set), so
//! (every helper that loops until its flag has ended) once the test's scope joins it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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
