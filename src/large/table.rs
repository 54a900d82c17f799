//! The large table: an open-addressing hash set with linear probing of the live large
//! allocations (address → [`Mapping`]), in memory mapped from the OS (never the global
//! allocator), guarded by the pool's large lock.
//!
//! Invariants, with `capacity` the slots, `len` the live entries, `tombs` the tombstones
//! and `reserved` the slots promised to entries taken out for a while (a resize's, which
//! goes back in at its new address after a system call made with the lock dropped):
//! - `(len + tombs + reserved) * 4 < capacity * 3` whenever `capacity > 0`, so an entry
//!   taken out ([`LargeTable::take_out`]) always goes back in ([`LargeTable::put_in`])
//!   without the table growing, however the table changed meanwhile;
//! - an address is in at most one live entry; for every live entry `len <= mapped <= len +
//!   len / 8`; `bytes = Σ mapped` over the live entries;
//! - `span.0 <= addr` and `addr + mapped <= span.1` for every live entry (the span only
//!   widens while the table holds entries, and is empty, `(usize::MAX, 0)`, when it holds
//!   none): a pointer outside it lies in no live allocation ([`LargeTable::containing`]);
//! - the lock is never held across a system call: the table grows into slots mapped with
//!   the lock dropped ([`lock_with_room`]), and its old slots are unmapped after the unlock.
//!   Between two rebuilds (`rebuilds`) every entry keeps its slot.

use super::cache::{self, Evicted};
use super::{unmap_evicted, Kind, Mapping, Request};
use crate::os;
use crate::sync::{PoolLock, RawPoolLock};
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

const EMPTY: usize = 0;
const TOMB: usize = 1;
const MIN_CAPACITY: usize = 512;

/// Live large allocations removed from any table of the process so far (each removal adds
/// one, under its table's lock): while it stays the same, every entry a thread saw live is
/// still live as it was (an entry changes only by its removal), which lets a resize within
/// the same pages skip the lock (`resize`'s memo of the last large allocation resized).
/// Core atomics even under loom (read outside any model's schedule: a hint that only
/// decides between two correct paths).
pub(crate) static REMOVALS: AtomicU64 = AtomicU64::new(0);

/// A slot of the table, in words only (the table's memory starts zeroed: every bit pattern
/// must be a valid entry).
#[derive(Clone, Copy)]
struct Entry {
    /// The mapping's address, or `EMPTY` / `TOMB`.
    addr: usize,
    len: usize,
    mapped: usize,
    life: usize,
    /// The request's kind ([`Kind`]): 0 large; `granules << 2 | 1` medium; `class << 2 | 2`
    /// small.
    kind: usize,
}

impl Entry {
    fn new(addr: usize, m: Mapping) -> Entry {
        Entry {
            addr,
            len: m.len,
            mapped: m.mapped,
            life: m.request.life,
            kind: match m.request.kind {
                Kind::Large => 0,
                Kind::Medium(granules) => granules << 2 | 1,
                Kind::Small(class) => class << 2 | 2,
            },
        }
    }

    fn mapping(&self) -> Mapping {
        Mapping {
            len: self.len,
            mapped: self.mapped,
            request: Request {
                kind: match self.kind & 3 {
                    1 => Kind::Medium(self.kind >> 2),
                    2 => Kind::Small(self.kind >> 2),
                    _ => Kind::Large,
                },
                life: self.life,
            },
        }
    }
}

/// The table's slots: `capacity` (a power of two, or 0 with no memory) entries in a
/// mapping of their own.
pub(crate) struct Slots {
    entries: *mut Entry,
    capacity: usize,
}

impl Slots {
    const NONE: Slots = Slots {
        entries: ptr::null_mut(),
        capacity: 0,
    };

    /// Maps `capacity` empty slots (a system call: never under the large lock); `None`
    /// when out of memory.
    fn map(capacity: usize) -> Option<Slots> {
        let bytes = capacity.checked_mul(size_of::<Entry>())?;
        let entries = os::map(bytes, os::MIN_PAGE).cast::<Entry>();
        if entries.is_null() {
            return None;
        }
        // Its pages are faulted in here, not while the lock is held for the rebuild.
        // SAFETY: a fresh mapping of `bytes` bytes, ours alone.
        unsafe { ptr::write_bytes(entries.cast::<u8>(), 0, bytes) };
        Some(Slots { entries, capacity })
    }

    /// Unmaps the slots (a system call: never under the large lock).
    ///
    /// # Safety
    /// No table uses them.
    unsafe fn unmap(self) {
        if !self.entries.is_null() {
            // SAFETY: the slots' own mapping, no longer used (caller).
            unsafe { os::unmap(self.entries.cast(), self.capacity * size_of::<Entry>()) };
        }
    }
}

/// The live large allocations of one allocator instance (guarded by the pool's large lock).
pub(crate) struct LargeTable {
    slots: Slots,
    len: usize,
    tombs: usize,
    /// Slots promised to entries out of the table ([`LargeTable::take_out`]).
    reserved: usize,
    /// Mapped bytes of the live entries.
    pub(crate) bytes: usize,
    /// Freed mappings kept for reuse.
    pub(super) cache: cache::Cache,
    /// System calls the large paths made (map, unmap, remap), counted where they are decided.
    pub(crate) system_calls: u64,
    /// Rebuilds so far ([`LargeTable::rebuild_into`]): between two, every entry keeps its
    /// slot.
    rebuilds: u64,
    /// Addresses every live entry's mapping lies in: `[span.0, span.1)`.
    span: (usize, usize),
}

/// The span of a table holding no entries.
const NO_SPAN: (usize, usize) = (usize::MAX, 0);

/// The large table under its lock.
pub(crate) type Locked<'a> = lock_api::MutexGuard<'a, RawPoolLock, LargeTable>;

/// A walk of the table that drops its lock between steps ([`LargeTable::release_next`]):
/// the next slot, in the table as it was after `rebuilds` rebuilds.
#[derive(Clone, Copy, Default)]
pub(crate) struct Walk {
    slot: usize,
    rebuilds: u64,
}

// SAFETY: the table owns its slots' mapping; it is only reached through its lock.
unsafe impl Send for LargeTable {}

impl LargeTable {
    pub(crate) const fn new() -> Self {
        LargeTable {
            slots: Slots::NONE,
            len: 0,
            tombs: 0,
            reserved: 0,
            bytes: 0,
            cache: cache::Cache::new(),
            system_calls: 0,
            rebuilds: 0,
            span: NO_SPAN,
        }
    }

    /// Live large allocations.
    pub(crate) fn count(&self) -> usize {
        self.len
    }

    fn capacity(&self) -> usize {
        self.slots.capacity
    }

    fn slot(&self, i: usize) -> Entry {
        debug_assert!(i < self.capacity());
        // SAFETY: i < capacity: inside the slots' mapping.
        unsafe { self.slots.entries.add(i).read() }
    }

    fn set(&mut self, i: usize, e: Entry) {
        debug_assert!(i < self.capacity());
        // SAFETY: as in slot; `&mut self` is the only access.
        unsafe { self.slots.entries.add(i).write(e) }
    }

    fn home(&self, addr: usize) -> usize {
        ((addr >> 12).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20) & (self.capacity() - 1)
    }

    /// True when `n` more entries fit without the table growing.
    pub(crate) fn has_room(&self, n: usize) -> bool {
        (self.len + self.tombs + self.reserved + n) * 4 < self.capacity() * 3
    }

    /// The capacity a rebuild that makes room for `n` more entries needs (the same when
    /// tombstones fill the table, else doubled until they fit); `None` when there is room.
    fn growth_for(&self, n: usize) -> Option<usize> {
        if self.has_room(n) {
            return None;
        }
        let held = self.len + self.reserved + n;
        let mut capacity = self.capacity().max(MIN_CAPACITY);
        if held * 2 >= capacity {
            capacity *= 2;
        }
        while held * 4 >= capacity * 3 {
            capacity *= 2;
        }
        Some(capacity)
    }

    /// Records a live allocation at `addr`; there is room ([`LargeTable::has_room`]`(1)`:
    /// [`lock_with_room`]).
    pub(crate) fn insert(&mut self, addr: usize, mapping: Mapping) {
        debug_assert!(mapping.len <= mapping.mapped);
        debug_assert!(mapping.mapped <= mapping.len + mapping.len / 8);
        // An address is in at most one live entry, and a cached one in none.
        debug_assert!(self.find(addr).is_none() && !self.cache.contains(addr));
        debug_assert!(self.has_room(1), "no room to insert");
        let mut i = self.home(addr);
        loop {
            let e = self.slot(i);
            if e.addr == EMPTY || e.addr == TOMB {
                if e.addr == TOMB {
                    self.tombs -= 1;
                }
                self.set(i, Entry::new(addr, mapping));
                self.len += 1;
                self.bytes += mapping.mapped;
                self.span = (
                    self.span.0.min(addr),
                    self.span.1.max(addr + mapping.mapped),
                );
                return;
            }
            i = (i + 1) & (self.capacity() - 1);
        }
    }

    /// Keeps a slot for an entry to come after the lock is dropped and taken again (a range
    /// the cache handed out, grown by a system call): [`LargeTable::put_in`] then never
    /// needs the table to grow, however it changed meanwhile. There is room
    /// ([`LargeTable::has_room`]`(1)`: [`lock_with_room`]).
    pub(crate) fn reserve(&mut self) {
        debug_assert!(self.has_room(1), "no room to keep");
        self.reserved += 1;
    }

    /// Gives up a slot [`LargeTable::reserve`] kept.
    pub(crate) fn unreserve(&mut self) {
        debug_assert!(self.reserved > 0);
        self.reserved -= 1;
    }

    /// Takes the allocation at `addr` out of the table for a while (a resize that drops the
    /// lock for a system call), keeping its slot ([`LargeTable::reserve`]). `None`, nothing
    /// changed, when no live large allocation starts there.
    pub(crate) fn take_out(&mut self, addr: usize) -> Option<Mapping> {
        let m = self.remove(addr)?;
        self.reserve();
        Some(m)
    }

    /// Records an allocation at `addr` in the slot [`LargeTable::reserve`] kept (for an
    /// allocation taken out: where it was, or where it went).
    pub(crate) fn put_in(&mut self, addr: usize, mapping: Mapping) {
        self.unreserve();
        self.insert(addr, mapping);
    }

    /// The index of the live entry of `addr`, if any.
    fn find(&self, addr: usize) -> Option<usize> {
        if self.capacity() == 0 || addr <= TOMB {
            return None;
        }
        let mut i = self.home(addr);
        loop {
            match self.slot(i).addr {
                EMPTY => return None,
                a if a == addr => return Some(i),
                _ => i = (i + 1) & (self.capacity() - 1),
            }
        }
    }

    /// The live large allocation starting at `addr`.
    pub(crate) fn get(&self, addr: usize) -> Option<Mapping> {
        self.find(addr).map(|i| self.slot(i).mapping())
    }

    /// Removes the allocation at `addr` and returns it, or `None` when no live large
    /// allocation starts there.
    pub(crate) fn remove(&mut self, addr: usize) -> Option<Mapping> {
        let i = self.find(addr)?;
        // Before the entry goes: a resize that read the old count after this would find
        // the entry removed only by its lock (see `REMOVALS`).
        REMOVALS.fetch_add(1, Ordering::AcqRel);
        let e = self.slot(i);
        self.set(i, Entry { addr: TOMB, ..e });
        self.len -= 1;
        self.tombs += 1;
        self.bytes -= e.mapped;
        if self.len == 0 {
            self.span = NO_SPAN;
        }
        Some(e.mapping())
    }

    /// The live large allocation `addr` lies in past its start: its address and mapped
    /// length. For a pointer no allocation starts at (misuse, or another allocator's), so it
    /// walks every slot, unless `addr` is outside the span of the live entries (a pointer
    /// into the C library's heap, or any table with no entries, answers at once).
    pub(crate) fn containing(&self, addr: usize) -> Option<(usize, usize)> {
        if !(self.span.0..self.span.1).contains(&addr) {
            return None;
        }
        (0..self.capacity())
            .map(|i| self.slot(i))
            .find(|e| e.addr > TOMB && addr > e.addr && addr - e.addr < e.mapped)
            .map(|e| (e.addr, e.mapped))
    }

    /// Moves the entries into `fresh` when it is what a rebuild making room for `n` more
    /// needs now ([`LargeTable::growth_for`]); returns the slots to unmap once the lock is
    /// dropped: the old ones, or `fresh` itself when the table needs no rebuild or a larger
    /// one (other threads' inserts since it was sized).
    fn rebuild_into(&mut self, fresh: Slots, n: usize) -> Slots {
        match self.growth_for(n) {
            Some(capacity) if capacity <= fresh.capacity => {}
            _ => return fresh,
        }
        let old = core::mem::replace(&mut self.slots, fresh);
        let (bytes, reserved) = (self.bytes, self.reserved);
        (self.len, self.tombs, self.bytes) = (0, 0, 0);
        for i in 0..old.capacity {
            // SAFETY: i < the old slots' capacity: inside their mapping.
            let e = unsafe { old.entries.add(i).read() };
            if e.addr > TOMB {
                self.insert(e.addr, e.mapping());
            }
        }
        debug_assert_eq!((self.bytes, self.reserved), (bytes, reserved));
        self.rebuilds += 1;
        old
    }

    /// Live large allocations of lifetime class `life`.
    pub(crate) fn count_life(&self, life: usize) -> usize {
        self.live().filter(|&(_, _, l)| l == life).count()
    }

    /// Every live large allocation: (address, length, lifetime class).
    pub(crate) fn live(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        (0..self.capacity())
            .map(|i| self.slot(i))
            .filter(|e| e.addr > TOMB)
            .map(|e| (e.addr, e.len, e.life))
    }

    /// Where a walk of the table stands: the slot to look at next, in the table as it was
    /// after `rebuilds` rebuilds (a rebuild moves the entries: the walk starts again).
    pub(crate) fn walk_from(&self, at: Walk) -> usize {
        if at.rebuilds == self.rebuilds {
            at.slot
        } else {
            0
        }
    }

    /// Removes the first allocation of lifetime class `life` at or after the slot `at`
    /// names ([`LargeTable::walk_from`]) and caches it as its free would at `now`
    /// ([`LargeTable::cache_freed`]: within the cache's bounds). Returns where the walk
    /// goes on and what the cache gave up (to unmap once the lock is dropped: one
    /// allocation per call, so the lock is never held across a system call); `None` when
    /// there is none left.
    pub(crate) fn release_next(
        &mut self,
        life: usize,
        at: Walk,
        now: u64,
    ) -> Option<(Walk, Evicted)> {
        let i = (self.walk_from(at)..self.capacity())
            .find(|&i| self.slot(i).addr > TOMB && self.slot(i).life == life)?;
        let e = self.slot(i);
        self.remove(e.addr);
        let next = Walk {
            slot: i + 1,
            rebuilds: self.rebuilds,
        };
        Some((next, self.cache_freed(e.addr, e.mapped, now)))
    }

    /// Unmaps every live large allocation and every cached mapping (the instance is going
    /// away).
    ///
    /// # Safety
    /// None of the live ones is used again.
    pub(crate) unsafe fn unmap_all(&mut self) {
        for i in 0..self.capacity() {
            let e = self.slot(i);
            if e.addr > TOMB {
                self.remove(e.addr);
                // SAFETY: a live large allocation, unused from now on (caller).
                unsafe { os::unmap(e.addr as *mut u8, e.mapped) };
            }
        }
        let cached = self.drain_cache();
        // SAFETY: cached mappings belong to no allocation: nothing uses them.
        unsafe { unmap_evicted(&cached) };
    }

    /// Grows the table for one more entry with the slots mapped here (tests without a
    /// lock); false when out of memory.
    #[cfg(test)]
    pub(super) fn make_room(&mut self) -> bool {
        let Some(capacity) = self.growth_for(1) else {
            return true;
        };
        let Some(fresh) = Slots::map(capacity) else {
            return false;
        };
        // SAFETY: the old slots, out of the table now.
        unsafe { self.rebuild_into(fresh, 1).unmap() };
        true
    }
}

/// Locks `table` with room for `n` more entries ([`LargeTable::has_room`]): when it must
/// grow, its new slots are mapped with the lock dropped, the entries moved under it, and
/// the old slots unmapped after it (so the lock is never held across a system call, and a
/// rebuild racing other threads' inserts only sizes the next try). `None`, with no lock
/// held, when the new slots cannot be mapped (out of memory).
pub(crate) fn lock_with_room(table: &PoolLock<LargeTable>, n: usize) -> Option<Locked<'_>> {
    loop {
        let large = table.lock();
        let capacity = match large.growth_for(n) {
            None => return Some(large),
            Some(capacity) => capacity,
        };
        drop(large);
        let fresh = Slots::map(capacity)?;
        let spare = table.lock().rebuild_into(fresh, n);
        // SAFETY: out of the table (or never in it): no table uses them.
        unsafe { spare.unmap() };
    }
}

impl Drop for LargeTable {
    /// Frees the table's own memory (not the allocations it lists).
    fn drop(&mut self) {
        let slots = core::mem::replace(&mut self.slots, Slots::NONE);
        // SAFETY: the table's own slots, no longer used.
        unsafe { slots.unmap() };
    }
}

#[cfg(test)]
mod tests;
