//! The batch's asymmetric fences (see [`super`]'s "who touches a batch"): the holder's
//! [`light`] runs on every batched free, the flusher's [`heavy`] on a flush by another
//! thread, so the holder's is the cheap one.
//!
//! With `membarrier` (registered for the process once, the first time either is needed):
//! `light` is a compiler fence (the holder's store to `busy` and its load of `wants` stay
//! in program order), and `heavy` is `membarrier(PRIVATE_EXPEDITED)`, after which every
//! thread of the process that was running has executed a full memory barrier (the others
//! execute one when scheduled): a holder whose load of `wants` missed the flusher's store
//! had made its store to `busy` visible by then. Without it (a kernel before 4.14, a
//! seccomp filter): both are full fences, the textbook form. Under loom, both are
//! sequentially consistent fences, which loom models.

#[cfg(not(loom))]
use crate::os;
use crate::sync::{fence, Ordering};
#[cfg(not(loom))]
use core::sync::atomic::{compiler_fence, AtomicU8};

/// Not decided yet.
#[cfg(not(loom))]
const UNKNOWN: u8 = 0;
/// `membarrier` registered: the fences are asymmetric.
#[cfg(not(loom))]
const ASYMMETRIC: u8 = 1;
/// No `membarrier`: both fences are full fences.
#[cfg(not(loom))]
const SYMMETRIC: u8 = 2;

/// The process's choice: [`UNKNOWN`] until the first fence, then one of the two for the
/// process's life (a fork child keeps its parent's registration and its choice).
#[cfg(not(loom))]
static MODE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// The process's choice, made now if it was not (every thread that makes it makes the same
/// one: the registration's result is the process's).
#[cfg(not(loom))]
#[inline(always)]
fn mode() -> u8 {
    let m = MODE.load(Ordering::Relaxed);
    if m != UNKNOWN {
        return m;
    }
    decide()
}

#[cfg(not(loom))]
#[cold]
#[inline(never)]
fn decide() -> u8 {
    let m = if os::membarrier_register() {
        ASYMMETRIC
    } else {
        SYMMETRIC
    };
    MODE.store(m, Ordering::Relaxed);
    m
}

/// The holder's fence, between its store to `busy` and its load of `wants`: one load and a
/// branch before the compiler fence once the choice is asymmetric; the rest out of line.
#[inline(always)]
pub(super) fn light() {
    #[cfg(not(loom))]
    if MODE.load(Ordering::Relaxed) == ASYMMETRIC {
        compiler_fence(Ordering::SeqCst);
        return;
    }
    light_undecided_or_symmetric();
}

/// True once the fences are asymmetric (the choice is made for the process's life): then
/// [`light_asymmetric`] stands for [`light`]. Under loom, true: both are the model's
/// sequentially consistent fence.
#[inline(always)]
pub(super) fn is_asymmetric() -> bool {
    #[cfg(not(loom))]
    return MODE.load(Ordering::Relaxed) == ASYMMETRIC;
    #[cfg(loom)]
    true
}

/// [`light`] when [`is_asymmetric`] said true: a compiler fence, with nothing out of line
/// (under loom, the sequentially consistent fence).
#[inline(always)]
pub(super) fn light_asymmetric() {
    #[cfg(not(loom))]
    compiler_fence(Ordering::SeqCst);
    #[cfg(loom)]
    fence(Ordering::SeqCst);
}

/// [`light`] before the choice is made, or without `membarrier`.
#[cold]
#[inline(never)]
fn light_undecided_or_symmetric() {
    #[cfg(not(loom))]
    if mode() == ASYMMETRIC {
        compiler_fence(Ordering::SeqCst);
        return;
    }
    fence(Ordering::SeqCst);
}

/// The flusher's fence, between its store to `wants` and its loads of `busy`. False when
/// it could not be made: `membarrier` was registered for the process, and is refused now
/// (a seccomp filter installed since, on the calling thread). No fence of the caller's can
/// stand in for it (holders rely on it), so the caller must then leave the batch alone.
#[must_use]
pub(super) fn heavy() -> bool {
    #[cfg(not(loom))]
    if mode() == ASYMMETRIC {
        // Registering again is harmless (a fork child inherits the registration).
        return os::membarrier() || (os::membarrier_register() && os::membarrier());
    }
    fence(Ordering::SeqCst);
    true
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// The choice is made once and kept; with it, both fences run (on this machine's
    /// kernel: the asymmetric pair).
    #[test]
    fn the_choice_is_made_once_and_both_fences_run() {
        light();
        let m = MODE.load(Ordering::Relaxed);
        assert!(m == ASYMMETRIC || m == SYMMETRIC);
        assert!(heavy());
        light();
        assert_eq!(MODE.load(Ordering::Relaxed), m);
    }
}
