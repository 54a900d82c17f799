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

/// The cache shared with a claimer's thread, as a heap is (the heap is reached through a
/// raw pointer; the cache's guard is what makes the claimer's touch of its cells sound),
/// with a loom cell standing for those cells: each side writes it while it holds the
/// guard, so loom reports any access the guard leaves unordered.
struct Shared {
    cache: MediumCache,
    cells: loom::cell::UnsafeCell<u32>,
}

// SAFETY: the model's two threads touch `cache`'s cells only inside its guard (what the
// model checks, through `cells`).
unsafe impl Sync for Shared {}
// SAFETY: as above.
unsafe impl Send for Shared {}

impl Shared {
    /// Notes a touch of the cache's cells (inside the guard).
    fn touch(&self) {
        // SAFETY: loom checks this access against every other one.
        self.cells.with_mut(|v| unsafe { *v += 1 });
    }
}

/// The guard (`MediumCache::enter`, `MediumCache::claim`): the cache's owner takes its held
/// run back for an allocation by a load and a store (`Starts::unhold_owned`, a pool no
/// other process uses), then frees it into the cache again, each inside the guard, while
/// a thread out of memory claims the cache and flushes it (`Starts::unhold`, then the
/// locked free's `change` to 0, as `Pool::flush_medium_cache` does).
///
/// Checks: the guard orders every touch of the cache's cells (loom's cell); the run is
/// never both handed out by the owner and freed by the claimer; at the end it is live
/// (the owner's, which its cache could not keep: claimed), held by the cache with its
/// entry, or free (byte 0) with no entry; the claimer never blocks the owner (each side
/// that finds the other inside goes on without the cache).
///
/// Fails with: `MediumCache::take_guard` storing its value and returning the guard without
/// its compare-and-swap, or `Guarded::drop` storing `FREE` Relaxed (loom, both: 'Causality
/// violation: Concurrent write accesses to `UnsafeCell`').
#[test]
fn the_guard_keeps_a_claim_from_the_owners_take() {
    model(|| {
        let shared = Arc::new(Shared {
            cache: MediumCache::new(),
            cells: loom::cell::UnsafeCell::new(0),
        });
        let b = held_in(&shared.cache);
        let claimer = {
            let (shared, b) = (shared.clone(), b.clone());
            thread::spawn(move || {
                let Some(_claimed) = shared.cache.claim() else {
                    return 0;
                };
                shared.touch();
                let mut freed = 0;
                for e in shared.cache.drain() {
                    assert_eq!(e.off, OFF);
                    if b.starts().unhold(G, N) && b.starts().change(G, N, 0) {
                        freed += 1;
                    }
                }
                freed
            })
        };
        let mut took = false;
        let mut kept = false;
        if let Some(_inside) = shared.cache.enter() {
            shared.touch();
            took = shared
                .cache
                .take(N, LIFE, 1, |_| b.starts().unhold_owned(G, N))
                .is_some();
        }
        if took {
            if let Some(_inside) = shared.cache.enter() {
                shared.touch();
                kept = shared.cache.put(OFF, N, LIFE, || b.starts().hold(G, N));
            }
        }
        let freed = claimer.join().unwrap();
        assert!(!(took && freed > 0 && !kept), "both took the run");
        let entries = shared.cache.drain().count();
        let byte = b.byte();
        match (byte, entries) {
            (0, 0) => assert_eq!(freed, 1, "freed by the claim"),
            (b, 1) if b == N as u8 | HELD => {}
            (b, 0) if b == N as u8 => assert!(took && !kept, "live: the owner's"),
            _ => panic!(
                "byte {byte:#x} with {entries} entries (took {took}, kept {kept}, freed {freed})"
            ),
        }
    });
}
