//! The pool lock: taking it ([`Pool::lock`] and its kinds) gives a [`PoolGuard`], the state
//! and a named region's write in progress together, and repairs a dead holder's half-done
//! work first ([`Pool::repair`]).
//!
//! Invariants: while a [`PoolGuard`] lives, its thread alone reads or writes [`PoolState`]
//! (of every process of the instance); a named region's write seal marks the write open
//! from the guard's making to its drop, and the end mark is written before the lock is
//! released; `lock_count` (plus the medium paths' `MediumCounts::locks`) counts the counted
//! acquisitions.

use super::*;

/// The pool lock held: the pool's state, and a named region's write in progress (its end
/// mark is written when the guard drops, before the lock is released: fields drop in
/// order of declaration, and the end mark is in [`Writing`]'s drop, run first).
pub(crate) struct PoolGuard<'a> {
    _writing: Writing<'a>,
    st: MutexGuard<'a, RawPoolLock, PoolState>,
}

impl core::ops::Deref for PoolGuard<'_> {
    type Target = PoolState;
    #[inline]
    fn deref(&self) -> &PoolState {
        &self.st
    }
}

impl core::ops::DerefMut for PoolGuard<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut PoolState {
        &mut self.st
    }
}

impl Pool {
    /// Takes the pool lock.
    #[inline]
    pub(crate) fn lock(&self) -> PoolGuard<'_> {
        self.ensure_here();
        self.lock_count.fetch_add(1, Ordering::Relaxed);
        self.lock_uncounted()
    }

    /// Takes the pool lock, repairing as [`Pool::lock`] does, without counting it in
    /// `lock_count` (stats, verify and settings: not the paths that count measures).
    pub(crate) fn lock_uncounted(&self) -> PoolGuard<'_> {
        self.ensure_here();
        self.guarded(self.state.lock())
    }

    /// Takes the pool lock, counting the acquisition under it (`MediumCounts::locks`, which
    /// stats add to `lock_count`) rather than with an atomic read-modify-write of its own:
    /// for the medium paths, which take it on every call.
    #[inline]
    pub(crate) fn lock_medium(&self) -> PoolGuard<'_> {
        let mut st = self.lock_uncounted();
        st.medium_counts.locks += 1;
        st
    }

    /// Takes the pool lock if it is free.
    pub(crate) fn try_lock(&self) -> Option<PoolGuard<'_>> {
        self.ensure_here();
        let st = self.state.try_lock()?;
        self.lock_count.fetch_add(1, Ordering::Relaxed);
        Some(self.guarded(st))
    }

    /// The lock just taken as a guard: a write of a named region's state begins (and ends
    /// when the guard drops, before the lock is released), after which a dead holder's
    /// half-done work is repaired.
    fn guarded<'a>(&'a self, st: MutexGuard<'a, RawPoolLock, PoolState>) -> PoolGuard<'a> {
        let mut st = PoolGuard {
            _writing: self.writing(),
            st,
        };
        self.after_lock(&mut st);
        st
    }

    /// A write of the state area without the pool lock (a heap's lists, a `returned`
    /// stack, a medium cache, a remote batch's push, a promotion record): marked in a
    /// named region's write seal now and when the result drops (see [`write_seal`]).
    #[inline]
    pub(crate) fn writing(&self) -> Writing<'_> {
        Writing::begin(self.write_seal.as_ref())
    }

    /// Just locked: when the previous holder died holding the lock (a shared pool's robust
    /// lock says so), repairs what it may have left half done ([`Pool::repair`]).
    #[inline]
    fn after_lock(&self, st: &mut PoolState) {
        // SAFETY: we hold the lock just taken.
        if unsafe { self.state.raw() }.take_owner_died() {
            self.repair(st);
        }
    }
}
