//! The per-heap medium cache: freed medium runs a heap keeps for its next requests of the
//! same length, so that a steady alloc/free pair of a medium size takes no lock.
//!
//! A cached run stays a run of its block (its granules used, its length in the run table):
//! the block and the pool see it as allocated, so no other request takes it, no purge
//! gives its pages back and its block never empties. What marks it cached is its byte in the
//! block's [`Starts`], the one part of a medium block's metadata read and written without
//! the pool lock:
//!
//! - `starts[g] = n` when a live run of `n <= STARTS_MAX` granules starts at granule `g`;
//! - `starts[g] = n | HELD` when that run is in a heap's cache (free memory, not an
//!   allocation);
//! - `starts[g] = 0` otherwise (no run starts at `g`, or a longer one, never cached).
//!
//! Each change of a run's byte is one compare-and-swap, so one party wins each race: a free
//! into a cache holds the run (`n → n | HELD`), and the locked paths that free or resize a
//! run swap its `n` away too, so a run freed twice at once is freed once and reported once;
//! only the cache's own heap takes a held run back (`n | HELD → n`: its allocation, or its
//! flush under the pool lock when its thread leaves it or its holder died), or a thread
//! out of memory that claimed the cache (its flush under the pool lock, holding the
//! cache's guard: see [`MediumCache`]). Nothing else
//! ever frees a held run: a release of its lifetime class leaves it (it is no allocation),
//! so a cache never points at a run that was freed and reused. One change needs no
//! compare-and-swap: in a pool no other process uses, no heap is reaped (a holder's death
//! is another process's to find), so the cache's own heap is the only party that changes
//! a held byte while it holds the cache's guard (a claimer changes held bytes only while
//! it holds the guard, and drains the entries first), and its allocation takes the run
//! back by a load and a store (`Starts::unhold_owned`); in a pool shared between processes a reaper may flush the
//! cache of a holder wrongly thought dead while it runs, and both sides keep the
//! compare-and-swap (the loom models in `loom.rs`).
//!
//! **The lent run.** A cache remembers the run it handed out last, with the pool's count of
//! medium blocks given away read while it held the run (`PoolShared::medium_given`, kept in
//! the state beside the heaps, so a view attached again or a fork child reads the count the
//! record was taken against): while that count stays the same, the run's block is still
//! medium of its lifetime class, so a free of that run (in a pool no other process uses)
//! checks it by its start byte alone, reading neither its unit's state nor its block's
//! header. Those lie on the first cache line of a page, which the first bytes of
//! every page of a page-aligned allocation share: a steady pair that writes each page of
//! its run would evict them every time.
//!
//! Invariants: a cache entry `(off, n, life)` of a heap names a run whose byte is
//! `n | HELD`, `0 < n <= CACHED_MAX`, in a medium block of lifetime class `life`; a byte with
//! `HELD` belongs to at most one cache entry (one, but for a holder killed between its hold
//! and its count: that run stays held, never reused, and is reported by no check); a
//! cache's lent run `(off, n, life)` recorded with count `c`: while `medium_given = c`, the
//! block at `off` is a medium block of lifetime class `life`; under the
//! lock, `starts[g] & !HELD = n` for every live run `[g, g + n)` with `n <= STARTS_MAX`, and 0
//! at every other granule.

use crate::block::Header;
use crate::class::HEADER_SIZE;
use crate::medium_block::{At, Runs, GRANULES, META_BYTES};
use crate::sync::{const_unless_loom, AtomicU8, Ordering};
use core::cell::Cell;

/// The mark of a run held by a heap's cache, in its byte of [`Starts`].
pub(crate) const HELD: u8 = 0x80;
/// The longest run [`Starts`] records (longer ones have byte 0).
pub(crate) const STARTS_MAX: usize = (HELD - 1) as usize;
/// The longest run a cache keeps, in granules (64 KiB).
pub(crate) const CACHED_MAX: usize = 32;
/// Runs one heap's cache keeps at most.
pub(crate) const CACHE_SLOTS: usize = 8;

/// A medium block's byte per granule (see the module docs), after its [`Runs`].
#[repr(C)]
pub(crate) struct Starts([AtomicU8; GRANULES]);

// (Under loom an atomic is larger than its value; no model makes medium blocks.)
#[cfg(not(loom))]
const _: () = assert!(HEADER_SIZE + size_of::<Runs>() + size_of::<Starts>() <= META_BYTES);
const _: () = assert!(CACHED_MAX <= STARTS_MAX);

/// Changes of this process's medium runs that their bytes do not show (a run longer than
/// [`STARTS_MAX`] granules resized or freed, a block's bytes written afresh or rebuilt):
/// each adds one, under the pool's lock. While it stays the same, a run longer than
/// `STARTS_MAX` that a thread saw live is still live as it was, in a region no other
/// process uses, which lets a resize within its granules skip the lock (`resize`'s memo).
/// Core atomics even under loom (no model makes medium blocks).
pub(crate) static LONG_CHANGES: core::sync::atomic::AtomicU64 =
    core::sync::atomic::AtomicU64::new(0);

/// One more change [`LONG_CHANGES`] counts, before the bytes change.
fn long_change() {
    LONG_CHANGES.fetch_add(1, core::sync::atomic::Ordering::AcqRel);
}

/// The byte of a live run of `n` granules.
fn byte_of(n: usize) -> u8 {
    if n <= STARTS_MAX {
        n as u8
    } else {
        0
    }
}

impl Starts {
    /// The starts of the medium block at `base` (a block's base whose first
    /// [`META_BYTES`] are committed: a medium block's, or one being made medium).
    ///
    /// # Safety
    /// As above; the bytes are atomics, so any number of references may read and write
    /// them at once.
    pub(crate) unsafe fn of_base<'a>(base: *mut u8) -> &'a Starts {
        // SAFETY: inside the block's metadata (the assertion above), committed (caller);
        // atomics, shared.
        unsafe { &*base.add(HEADER_SIZE + size_of::<Runs>()).cast::<Starts>() }
    }

    /// The starts of medium block `h`.
    pub(crate) fn of(h: &Header) -> &Starts {
        // SAFETY: a block's header is at its base, whose metadata is committed while the
        // block is in use.
        unsafe { Starts::of_base(h.base()) }
    }

    /// Every byte 0: a block made medium, no run live.
    pub(crate) fn init(&self) {
        long_change();
        for b in &self.0 {
            b.store(0, Ordering::Relaxed);
        }
    }

    /// Under the lock: records the live run of `n` granules just taken at `g`.
    pub(crate) fn set_live(&self, g: usize, n: usize) {
        self.0[g].store(byte_of(n), Ordering::Release);
    }

    /// Under the lock: the live run of `n` granules at `g` becomes `m` granules long (0:
    /// freed). False when its byte is not the live run's (a cache holds it: it is free),
    /// having changed nothing.
    pub(crate) fn change(&self, g: usize, n: usize, m: usize) -> bool {
        if n > STARTS_MAX || m > STARTS_MAX {
            long_change();
        }
        self.0[g]
            .compare_exchange(byte_of(n), byte_of(m), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// True when a live run of `n` granules starts at `g` and no cache holds it: its byte
    /// is `n` (only for `0 < n <= STARTS_MAX`: a longer run's byte is 0, and false). Read
    /// without the lock, as a free into a cache reads it.
    pub(crate) fn is_live(&self, g: usize, n: usize) -> bool {
        n > 0 && n <= STARTS_MAX && self.0[g].load(Ordering::Acquire) == n as u8
    }

    /// True when no run of at most [`STARTS_MAX`] granules starts at `g` (its byte is 0).
    pub(crate) fn is_clear(&self, g: usize) -> bool {
        self.0[g].load(Ordering::Acquire) == 0
    }

    /// True when a cache holds the run at `g`.
    pub(crate) fn is_held(&self, g: usize) -> bool {
        self.0[g].load(Ordering::Acquire) & HELD != 0
    }

    /// A free into a cache: marks the live run of `n <= CACHED_MAX` granules at `g` held.
    /// False when no live run of `n` granules starts at `g` (or a cache holds it already),
    /// having changed nothing.
    pub(crate) fn hold(&self, g: usize, n: usize) -> bool {
        debug_assert!(n > 0 && n <= CACHED_MAX);
        self.0[g]
            .compare_exchange(n as u8, n as u8 | HELD, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// The cache's heap takes the held run of `n` granules at `g` back: a live run again.
    /// False when the byte is not that (a damaged entry), having changed nothing.
    pub(crate) fn unhold(&self, g: usize, n: usize) -> bool {
        n <= CACHED_MAX
            && self.0[g]
                .compare_exchange(n as u8 | HELD, n as u8, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// As [`Starts::unhold`], by a load and a store, in a pool no other process uses: there
    /// nothing but the cache's own heap changes a held byte (no holder is reaped: only a
    /// pool shared between processes reaps a dead one's heap, whose flush would race this
    /// take; every other change of a byte is a compare-and-swap that expects a live run's
    /// byte, never a held one's), so no compare-and-swap is needed to win a race.
    pub(crate) fn unhold_owned(&self, g: usize, n: usize) -> bool {
        let b = &self.0[g];
        let held = n <= CACHED_MAX && b.load(Ordering::Acquire) == n as u8 | HELD;
        if held {
            b.store(n as u8, Ordering::Release);
        }
        held
    }

    /// The held runs: (how many, their granules).
    pub(crate) fn held(&self) -> (usize, usize) {
        self.0.iter().fold((0, 0), |(runs, granules), b| {
            match b.load(Ordering::Relaxed) {
                b if b & HELD != 0 => (runs + 1, granules + usize::from(b & !HELD)),
                _ => (runs, granules),
            }
        })
    }

    /// Under the lock, after a repair rebuilt `runs`: every byte made what the run table
    /// says, a held run's mark kept (its cache names it).
    pub(crate) fn recount(&self, runs: &Runs) {
        long_change();
        for (g, b) in self.0.iter().enumerate() {
            let want = match runs.at(g) {
                At::Start(n) => byte_of(n),
                _ => 0,
            };
            let held = b.load(Ordering::Relaxed) & HELD != 0 && want != 0;
            b.store(if held { want | HELD } else { want }, Ordering::Relaxed);
        }
    }

    /// Under the lock: checks the bytes against `runs` (the module docs' invariant).
    pub(crate) fn check(&self, runs: &Runs) -> Result<(), &'static str> {
        for (g, b) in self.0.iter().enumerate() {
            let want = match runs.at(g) {
                At::Start(n) => byte_of(n),
                _ => 0,
            };
            let b = b.load(Ordering::Relaxed);
            if b & !HELD != want || (b & HELD != 0 && want == 0) {
                return Err("a run's start byte disagrees with the run table");
            }
        }
        Ok(())
    }
}

/// One run a cache keeps: its offset in the region, its length, its lifetime class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Cached {
    pub(crate) off: u64,
    pub(crate) granules: u32,
    pub(crate) life: u32,
}

/// A heap's medium cache (see the module docs): its heap's alone, but for a dead holder's
/// reaper and the heap's leave, which flush it under the pool lock, and another thread's
/// out-of-memory path, which flushes it under the pool lock once it holds `guard` (the
/// claim, `crate::heap_handover::claim`). Offsets, never addresses: a heap in a region's
/// state area may be flushed by another process.
///
/// **The guard.** `count` and `entries` are plain cells; two parties change them: the
/// heap's holder (the owner) on its lock-free medium paths, and a claimer, another thread
/// that holds the pool lock. Each takes `guard` from [`FREE`] with one compare-and-swap
/// (Acquire) before it reads or writes them and stores [`FREE`] (Release) after: the
/// owner [`OWNER`] ([`MediumCache::enter`]), the claimer [`CLAIMED`]
/// ([`MediumCache::claim`]). Neither waits: an owner that finds the cache claimed serves
/// its request from the pool under the lock (its free too) as though the cache were
/// empty, or full; a claimer that finds the owner inside leaves the cache alone. So
/// `guard = OWNER ⇒` only the owner touches the entries, `guard = CLAIMED ⇒` only the
/// claimer does, each Release store happens before the next taker's work, and a claimer
/// holds the pool lock throughout (`guard = CLAIMED ⇒` the pool lock is held): the paths
/// that flush under the lock (the leave, a reaper's flush, the owner's `compact`) never
/// meet a claimer, and the fork handlers, which hold the lock, never see one.
#[repr(C)]
pub(crate) struct MediumCache {
    count: Cell<u32>,
    /// The heap's medium allocations, counted for [`MediumCache::tick`]. The owner's only.
    allocations: Cell<u32>,
    /// Who may touch `count` and `entries` now: [`FREE`], [`OWNER`] or [`CLAIMED`] (see
    /// the type's docs).
    guard: AtomicU8,
    entries: [Cell<Cached>; CACHE_SLOTS],
    /// The run the cache handed out last ([`MediumCache::lend`]; `granules` 0: none).
    lent: Cell<Cached>,
    /// The pool's count of medium blocks given away when `lent` was recorded.
    lent_given: Cell<u64>,
}

/// A heap's medium allocations between two looks at the clock (`MediumCache::tick`).
pub(crate) const TICK_EVERY: u32 = 32;

/// [`MediumCache`]'s guard: nobody touches the entries.
pub(crate) const FREE: u8 = 0;
/// [`MediumCache`]'s guard: the owner is inside one of its lock-free medium paths.
pub(crate) const OWNER: u8 = 1;
/// [`MediumCache`]'s guard: another thread, holding the pool lock, flushes the cache.
pub(crate) const CLAIMED: u8 = 2;

/// The guard of a cache taken by [`MediumCache::enter`] or [`MediumCache::claim`]: gives
/// it back ([`FREE`], Release) when dropped.
#[must_use]
pub(crate) struct Guarded<'a>(&'a AtomicU8);

impl Drop for Guarded<'_> {
    #[inline]
    fn drop(&mut self) {
        // Release: what its holder did to the entries happens before the next taker's
        // Acquire compare-and-swap.
        self.0.store(FREE, Ordering::Release);
    }
}

impl MediumCache {
    const_unless_loom! {
    /// An empty cache.
    pub(crate) fn new() -> MediumCache {
        MediumCache {
            count: Cell::new(0),
            allocations: Cell::new(0),
            guard: AtomicU8::new(FREE),
            entries: [const {
                Cell::new(Cached {
                    off: 0,
                    granules: 0,
                    life: 0,
                })
            }; CACHE_SLOTS],
            lent: Cell::new(Cached {
                off: 0,
                granules: 0,
                life: 0,
            }),
            lent_given: Cell::new(0),
        }
    }
    }

    /// The owner, before it takes from or puts into the cache without the pool lock: the
    /// guard, unless a claimer holds it (then `None`: the caller goes to the pool as though
    /// the cache kept nothing, or had no room). One compare-and-swap; never waits.
    #[inline]
    pub(crate) fn enter(&self) -> Option<Guarded<'_>> {
        self.take_guard(OWNER)
    }

    /// Another thread, holding the pool lock, before it flushes the cache: the guard, unless
    /// the owner is inside (then `None`: the cache is left as it is). Never waits.
    pub(crate) fn claim(&self) -> Option<Guarded<'_>> {
        self.take_guard(CLAIMED)
    }

    #[inline]
    fn take_guard(&self, who: u8) -> Option<Guarded<'_>> {
        // Acquire: the previous holder's work on the entries (before its Release store)
        // happens before ours.
        self.guard
            .compare_exchange(FREE, who, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| Guarded(&self.guard))
    }

    /// Under the pool lock, when the heap changes hands (its cache just flushed): the
    /// guard is free for the next holder, whatever a holder that died inside its medium
    /// path left in it (a dead process's heap, taken over).
    pub(crate) fn reset_guard(&self) {
        self.guard.store(FREE, Ordering::Release);
    }

    /// Takes a kept run of `granules` granules in lifetime class `life` whose offset is a
    /// multiple of `align` (a power of two: the region starts on a block boundary, so the
    /// run's address is aligned so too), the one kept last first, handing it to `take`
    /// (which makes it live again; false: not taken, dropped from the cache). Returns its
    /// offset.
    #[inline]
    pub(crate) fn take(
        &self,
        granules: usize,
        life: usize,
        align: usize,
        take: impl Fn(u64) -> bool,
    ) -> Option<u64> {
        let count = (self.count.get() as usize).min(CACHE_SLOTS);
        let fits = |e: Cached| {
            e.granules as usize == granules
                && e.life as usize == life
                && e.off & (align as u64 - 1) == 0
        };
        for i in (0..count).rev() {
            let e = self.entries[i].get();
            if fits(e) {
                let got = take(e.off);
                // The last entry fills the gap, then the count drops: a holder killed in
                // between leaves an entry twice (its second take fails) or one taken (it
                // fails too), never a held run in no entry.
                self.entries[i].set(self.entries[count - 1].get());
                self.count.set(count as u32 - 1);
                if got {
                    return Some(e.off);
                }
                return None;
            }
        }
        None
    }

    /// Keeps the run at `off` of `granules` granules in lifetime class `life` if there is
    /// room, once `hold` marked it held (false: not a live run of that length; nothing
    /// kept). Returns whether it was kept.
    #[inline]
    pub(crate) fn put(
        &self,
        off: u64,
        granules: usize,
        life: usize,
        hold: impl FnOnce() -> bool,
    ) -> bool {
        let count = self.count.get() as usize;
        if count >= CACHE_SLOTS || granules > CACHED_MAX {
            return false;
        }
        // The entry first, then the hold, then the count: a holder killed before the count
        // leaves one run held in no entry (never reused), never an entry of a run it did
        // not hold.
        self.entries[count].set(Cached {
            off,
            granules: granules as u32,
            life: life as u32,
        });
        if !hold() {
            return false;
        }
        self.count.set(count as u32 + 1);
        true
    }

    /// Records the run at `off` of `granules` granules in lifetime class `life` that the
    /// cache just handed out, with `given`, the pool's count of medium blocks given away
    /// (`PoolShared::medium_given`) read while the cache held the run (so while its block was
    /// medium of `life`).
    #[inline]
    pub(crate) fn lend(&self, off: u64, granules: usize, life: usize, given: u64) {
        self.lent.set(Cached {
            off,
            granules: granules as u32,
            life: life as u32,
        });
        self.lent_given.set(given);
    }

    /// True when the run at `off` of `granules` granules in lifetime class `life` is the
    /// one [`MediumCache::lend`] recorded last, and `given`, the pool's count of medium
    /// blocks given away now, is the count recorded with it: then its block is still a
    /// medium block of `life` (none left use since). Whether it is a live run, its start
    /// byte tells.
    #[inline]
    pub(crate) fn lent(&self, off: u64, granules: usize, life: usize, given: u64) -> bool {
        let e = self.lent.get();
        e.granules != 0
            && e.off == off
            && e.granules as usize == granules
            && e.life as usize == life
            && self.lent_given.get() == given
    }

    /// Counts a medium allocation of the heap; true every [`TICK_EVERY`]-th, when the
    /// caller looks at the clock for what kept memory is due to go back (a thread whose
    /// medium pairs all hit its cache takes no other slow path that would).
    #[inline]
    pub(crate) fn tick(&self) -> bool {
        let n = self.allocations.get().wrapping_add(1);
        self.allocations.set(n);
        n.is_multiple_of(TICK_EVERY)
    }

    /// Empties the cache, returning what it kept (for the caller to free, under the pool
    /// lock).
    pub(crate) fn drain(&self) -> impl Iterator<Item = Cached> + '_ {
        let count = (self.count.replace(0) as usize).min(CACHE_SLOTS);
        self.entries[..count].iter().map(Cell::get)
    }

    /// Runs kept now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.count.get() as usize
    }
}

#[cfg(all(loom, test))]
mod loom;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_cache_takes_back_what_it_kept_last_first_and_only_its_length_and_class() {
        let c = MediumCache::new();
        assert!(c.put(4096, 16, 0, || true));
        assert!(c.put(8192, 16, 0, || true));
        assert!(!c.put(12288, 16, 0, || false), "a run it could not hold");
        assert!(c.put(16384, 3, 1, || true));
        assert_eq!(c.len(), 3);
        assert_eq!(c.take(16, 1, 1, |_| true), None, "another class");
        assert_eq!(
            c.take(16, 0, 8192, |_| true),
            Some(8192),
            "aligned as asked"
        );
        assert_eq!(c.take(16, 0, 8192, |_| true), None, "4096 is not");
        assert_eq!(c.take(3, 1, 1, |_| true), Some(16384));
        assert_eq!(
            c.take(16, 0, 1, |_| false),
            None,
            "a damaged entry is dropped"
        );
        assert_eq!(c.take(16, 0, 1, |_| true), None, "taken by nothing");
        assert_eq!(c.len(), 0);
        for i in 0..CACHE_SLOTS as u64 {
            assert!(c.put(i * 4096, 1, 0, || true));
        }
        assert!(!c.put(0, 1, 0, || panic!("no room: nothing held")));
        assert!(!c.put(0, CACHED_MAX + 1, 0, || panic!("too long")));
        assert_eq!(c.drain().count(), CACHE_SLOTS);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn the_guard_is_the_owners_or_a_claimers_never_both() {
        let c = MediumCache::new();
        let inside = c.enter().expect("free");
        assert!(c.claim().is_none(), "the owner is inside");
        assert!(c.enter().is_none(), "taken once");
        drop(inside);
        let claimed = c.claim().expect("free again");
        assert!(
            c.enter().is_none(),
            "claimed: the owner goes without its cache"
        );
        assert!(c.claim().is_none());
        drop(claimed);
        let stuck = c.enter().expect("free again");
        core::mem::forget(stuck);
        assert!(c.claim().is_none(), "a holder that never left");
        c.reset_guard();
        assert!(c.claim().is_some(), "free once the heap changes hands");
    }

    #[test]
    fn a_run_is_held_once_and_its_locked_free_fails_while_held() {
        let bytes: Box<[AtomicU8; GRANULES]> = Box::new([const { AtomicU8::new(0) }; GRANULES]);
        // SAFETY: a byte array of the table's size and alignment.
        let s = unsafe { &*(&*bytes as *const [AtomicU8; GRANULES]).cast::<Starts>() };
        s.set_live(5, 16);
        assert!(s.hold(5, 16));
        assert!(!s.hold(5, 16), "held twice");
        assert!(!s.change(5, 16, 0), "a locked free of a held run");
        assert_eq!(s.held(), (1, 16));
        assert!(s.unhold(5, 16));
        assert!(!s.unhold(5, 16));
        assert!(!s.hold(5, 15), "another length");
        assert!(s.change(5, 16, 0));
        assert!(!s.hold(5, 16), "a free run");
        s.set_live(9, 200);
        assert!(s.change(9, 200, 100), "runs longer than the table's are 0");
        assert_eq!(s.held(), (0, 0));
    }
}
