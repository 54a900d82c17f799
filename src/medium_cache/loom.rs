//! Loom models of the start bytes by which a heap's cache holds medium runs (the parent's
//! module docs), on a real [`Starts`] and a real [`MediumCache`]: the owner's take of a held
//! run by a load and a store ([`Starts::unhold_owned`], a pool no other process uses)
//! against another thread's free of the same run; the compare-and-swap take
//! ([`Starts::unhold`], a pool shared between processes) against a reaper's flush of the
//! holder's cache (a holder wrongly thought dead); and why the load and the store are not
//! enough there. Run with `.ci/loom.sh`.
//!
//! Every model names a mutation of `src/` that makes it fail (each was tried, then undone).

use super::{MediumCache, Starts, HELD};
use crate::medium_block::GRANULES;
use crate::sync::{model, AtomicU8, Ordering};
use loom::sync::Arc;
use loom::thread;

/// The run's first granule, length and lifetime class, and its entry's offset.
const G: usize = 40;
const N: usize = 16;
const LIFE: usize = 0;
const OFF: u64 = 40 * 2048;

/// A medium block's start bytes, built inside a model.
struct Bytes(Box<[AtomicU8; GRANULES]>);

impl Bytes {
    fn new() -> Arc<Bytes> {
        Arc::new(Bytes(Box::new(core::array::from_fn(|_| AtomicU8::new(0)))))
    }

    fn starts(&self) -> &Starts {
        // SAFETY: an array of the bytes' type and length (`Starts` is `repr(C)` over it).
        unsafe { &*(&*self.0 as *const [AtomicU8; GRANULES]).cast::<Starts>() }
    }

    /// The run's byte now.
    fn byte(&self) -> u8 {
        self.0[G].load(Ordering::Acquire)
    }
}

/// A live run of [`N`] granules at [`G`], freed into `cache` (held).
fn held_in(cache: &MediumCache) -> Arc<Bytes> {
    let b = Bytes::new();
    b.starts().set_live(G, N);
    assert!(cache.put(OFF, N, LIFE, || b.starts().hold(G, N)));
    b
}

/// What another thread's free of the run did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Freed {
    /// Into its own cache (a hold).
    Held,
    /// The locked free (its byte to 0).
    Locked,
    /// Neither: not a live run of its length (reported as misuse).
    Refused,
}

/// Another thread's free of the run: into its cache, else the locked free.
fn free_by_another(b: &Bytes) -> Freed {
    if b.starts().hold(G, N) {
        Freed::Held
    } else if b.starts().change(G, N, 0) {
        Freed::Locked
    } else {
        Freed::Refused
    }
}

/// In a pool no other process uses, the cache's heap takes its held run back by a load and
/// a store while another thread frees the same run (a double free racing the take): the
/// free changes the byte only once the take has made it live again (then it frees the
/// run the take handed out, as a free by the caller would), never while it is held, so
/// the take always succeeds and its store never overwrites another change.
/// Mutation: `Starts::change` comparing the byte without its `HELD` bit (a locked free
/// of a held run) fails it ('the run handed out and freed at once').
#[test]
fn owned_take_races_another_threads_free_of_the_held_run() {
    model(|| {
        let cache = MediumCache::new();
        let b = held_in(&cache);
        let other = {
            let b = b.clone();
            thread::spawn(move || free_by_another(&b))
        };
        let took = cache.take(N, LIFE, 1, |_| b.starts().unhold_owned(G, N));
        let freed = other.join().unwrap();
        assert_eq!(took, Some(OFF), "only its heap changes a held byte");
        let want = match freed {
            Freed::Refused => N as u8,
            Freed::Held => N as u8 | HELD,
            Freed::Locked => 0,
        };
        assert_eq!(
            b.byte(),
            want,
            "the run handed out and freed at once ({freed:?})"
        );
    });
}

/// Inside a model: a run held in a cache, taken back by its holder with `unhold` while a
/// reaper flushes the cache (`Starts::unhold`, then the locked free's `change` to 0):
/// whether the holder took it, whether the reaper freed it, and its byte after both.
fn holder_against_reaper(unhold: fn(&Starts, usize, usize) -> bool) -> (bool, bool, u8) {
    let cache = MediumCache::new();
    let b = held_in(&cache);
    let reaper = {
        let b = b.clone();
        thread::spawn(move || b.starts().unhold(G, N) && b.starts().change(G, N, 0))
    };
    let took = cache
        .take(N, LIFE, 1, |_| unhold(b.starts(), G, N))
        .is_some();
    let flushed = reaper.join().unwrap();
    (took, flushed, b.byte())
}

/// In a pool shared between processes a heap's cache may be flushed by a reaper while its
/// holder still runs (a holder wrongly thought dead): the flush takes the run back
/// (`unhold`) and frees it (`change` to 0), the holder takes it back for an allocation
/// (`unhold`), both by compare-and-swaps: exactly one of them gets the run.
/// Mutation: `Starts::unhold` by a load and a store (`unhold_owned`'s) fails it ('both took
/// the run').
#[test]
fn compare_and_swap_take_races_a_reapers_flush() {
    model(|| {
        let (took, flushed, byte) = holder_against_reaper(Starts::unhold);
        assert!(!(took && flushed), "both took the run");
        assert!(took || flushed, "neither took the run");
        assert_eq!(byte, if took { N as u8 } else { 0 });
    });
}

/// Why a pool shared between processes keeps the compare-and-swap take: with the load and
/// the store, some schedule of the same race lets both the holder and the reaper take the
/// run (the holder then hands out a run the reaper freed).
#[test]
fn a_load_and_store_take_loses_to_a_reapers_flush() {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    static BOTH: AtomicBool = AtomicBool::new(false);
    model(|| {
        if let (true, true, _) = holder_against_reaper(Starts::unhold_owned) {
            BOTH.store(true, Relaxed);
        }
    });
    assert!(BOTH.load(Relaxed), "no schedule let both take the run");
}
