//! Large allocations: each is its own page-rounded mapping with no header. The pool keeps a
//! table of them (address → length, lifetime class), outside the mappings, so that
//! releasing a lifetime class unmaps its large allocations too, a free of an address that
//! is not a live large allocation is caught in every build, and stats count them.
//!
//! The table is an open-addressing hash set with linear probing, in memory mapped from the
//! OS (never the global allocator). Invariants: `len + tombstones < capacity * 3 / 4`
//! after every insert; an address is in at most one live entry; `bytes` is the sum of the
//! live entries' lengths.

use crate::os;
use core::ptr;

const EMPTY: usize = 0;
const TOMB: usize = 1;
const MIN_CAPACITY: usize = 512;

#[derive(Clone, Copy)]
struct Entry {
    /// The mapping's address, or `EMPTY` / `TOMB`.
    addr: usize,
    /// Its mapped length in bytes.
    len: usize,
    /// Its lifetime class.
    life: usize,
}

/// The live large allocations of one allocator instance (guarded by the pool's large lock).
pub(crate) struct LargeTable {
    entries: *mut Entry,
    capacity: usize,
    len: usize,
    tombs: usize,
    /// Mapped bytes of the live entries.
    pub(crate) bytes: usize,
}

// SAFETY: the table owns its mapping; it is only reached through its lock.
unsafe impl Send for LargeTable {}

impl LargeTable {
    pub(crate) const fn new() -> Self {
        LargeTable {
            entries: ptr::null_mut(),
            capacity: 0,
            len: 0,
            tombs: 0,
            bytes: 0,
        }
    }

    /// Live large allocations.
    pub(crate) fn count(&self) -> usize {
        self.len
    }

    fn slot(&self, i: usize) -> Entry {
        debug_assert!(i < self.capacity);
        // SAFETY: i < capacity: inside the table's mapping.
        unsafe { self.entries.add(i).read() }
    }

    fn set(&mut self, i: usize, e: Entry) {
        debug_assert!(i < self.capacity);
        // SAFETY: as in slot; `&mut self` is the only access.
        unsafe { self.entries.add(i).write(e) }
    }

    fn home(&self, addr: usize) -> usize {
        ((addr >> 12).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20) & (self.capacity - 1)
    }

    /// Records a mapping. Returns false when the table cannot grow (out of memory).
    pub(crate) fn insert(&mut self, addr: usize, len: usize, life: usize) -> bool {
        if (self.len + self.tombs + 1) * 4 >= self.capacity * 3 && !self.grow() {
            return false;
        }
        let mut i = self.home(addr);
        loop {
            let e = self.slot(i);
            if e.addr == EMPTY || e.addr == TOMB {
                if e.addr == TOMB {
                    self.tombs -= 1;
                }
                self.set(i, Entry { addr, len, life });
                self.len += 1;
                self.bytes += len;
                return true;
            }
            i = (i + 1) & (self.capacity - 1);
        }
    }

    /// The index of the live entry of `addr`, if any.
    fn find(&self, addr: usize) -> Option<usize> {
        if self.capacity == 0 || addr <= TOMB {
            return None;
        }
        let mut i = self.home(addr);
        loop {
            match self.slot(i).addr {
                EMPTY => return None,
                a if a == addr => return Some(i),
                _ => i = (i + 1) & (self.capacity - 1),
            }
        }
    }

    /// The (length, lifetime class) of the live large allocation starting at `addr`.
    pub(crate) fn get(&self, addr: usize) -> Option<(usize, usize)> {
        self.find(addr)
            .map(|i| (self.slot(i).len, self.slot(i).life))
    }

    /// Removes the mapping at `addr`; returns (length, lifetime class), or `None` when no
    /// live large allocation starts there.
    pub(crate) fn remove(&mut self, addr: usize) -> Option<(usize, usize)> {
        let i = self.find(addr)?;
        let e = self.slot(i);
        self.set(i, Entry { addr: TOMB, ..e });
        self.len -= 1;
        self.tombs += 1;
        self.bytes -= e.len;
        Some((e.len, e.life))
    }

    /// Live large allocations of lifetime class `life`.
    pub(crate) fn count_life(&self, life: usize) -> usize {
        self.live().filter(|&(_, _, l)| l == life).count()
    }

    /// Every live large allocation: (address, length, lifetime class).
    pub(crate) fn live(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        (0..self.capacity)
            .map(|i| self.slot(i))
            .filter(|e| e.addr > TOMB)
            .map(|e| (e.addr, e.len, e.life))
    }

    /// Removes every mapping of lifetime class `life`, passing (address, length) to `f`.
    pub(crate) fn drain_life(&mut self, life: usize, mut f: impl FnMut(usize, usize)) {
        for i in 0..self.capacity {
            let e = self.slot(i);
            if e.addr > TOMB && e.life == life {
                self.remove(e.addr);
                f(e.addr, e.len);
            }
        }
    }

    /// Doubles the table (or rebuilds it at the same size when tombstones fill it).
    fn grow(&mut self) -> bool {
        let capacity = if (self.len + 1) * 2 >= self.capacity {
            (self.capacity * 2).max(MIN_CAPACITY)
        } else {
            self.capacity.max(MIN_CAPACITY)
        };
        let Some(bytes) = capacity.checked_mul(size_of::<Entry>()) else {
            return false;
        };
        let entries = os::map(bytes, os::MIN_PAGE).cast::<Entry>();
        if entries.is_null() {
            return false;
        }
        let old = core::mem::replace(
            self,
            LargeTable {
                entries,
                capacity,
                len: 0,
                tombs: 0,
                bytes: 0,
            },
        );
        for i in 0..old.capacity {
            let e = old.slot(i);
            if e.addr > TOMB {
                self.insert(e.addr, e.len, e.life);
            }
        }
        drop(old);
        true
    }
}

impl LargeTable {
    /// Unmaps every live large allocation (the instance is going away).
    ///
    /// # Safety
    /// None of them is used again.
    pub(crate) unsafe fn unmap_all(&mut self) {
        for i in 0..self.capacity {
            let e = self.slot(i);
            if e.addr > TOMB {
                self.remove(e.addr);
                // SAFETY: a live large allocation, unused from now on (caller).
                unsafe { os::unmap(e.addr as *mut u8, e.len) };
            }
        }
    }
}

impl Drop for LargeTable {
    /// Frees the table's own memory (not the allocations it lists: `grow` drops the old
    /// table after moving them).
    fn drop(&mut self) {
        if !self.entries.is_null() {
            // SAFETY: the table's own mapping, no longer used.
            unsafe { os::unmap(self.entries.cast(), self.capacity * size_of::<Entry>()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growing_keeps_the_allocations_mapped() {
        let mut t = LargeTable::new();
        let live: Vec<*mut u8> = (0..2000)
            .map(|_| os::map(os::MIN_PAGE, os::MIN_PAGE))
            .collect();
        for &p in &live {
            assert!(t.insert(p as usize, os::MIN_PAGE, 0));
            // SAFETY: mapped above; the table grows while earlier ones are live.
            unsafe { p.write(1) };
        }
        for &p in &live {
            // SAFETY: still mapped: growing the table must not unmap them.
            assert_eq!(unsafe { p.read() }, 1);
        }
        // SAFETY: not used again.
        unsafe { t.unmap_all() };
        assert_eq!(t.count(), 0);
    }

    #[test]
    fn insert_remove_grow_and_drain() {
        let mut t = LargeTable::new();
        for i in 1..=5000usize {
            assert!(t.insert(i << 16, i * 4096, i % 3));
        }
        assert_eq!(t.count(), 5000);
        for i in (1..=5000usize).step_by(2) {
            assert_eq!(t.get(i << 16), Some((i * 4096, i % 3)));
            assert_eq!(t.remove(i << 16), Some((i * 4096, i % 3)));
            assert_eq!(t.get(i << 16), None);
            assert_eq!(t.remove(i << 16), None, "a second removal finds nothing");
        }
        assert_eq!(t.count(), 2500);
        let mut drained = 0;
        t.drain_life(1, |addr, len| {
            assert_eq!(len, (addr >> 16) * 4096);
            drained += 1;
        });
        assert_eq!(t.count() + drained, 2500);
        assert!(t.remove(12345 << 16).is_none());
        let expect: usize = (2..=5000usize)
            .step_by(2)
            .filter(|i| i % 3 != 1)
            .map(|i| i * 4096)
            .sum();
        assert_eq!(t.bytes, expect);
    }
}
