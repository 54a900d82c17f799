//! The heap registry: heap id → [`Link`] of its record (a shared pool's heaps in their
//! slots of the state area), and what the registry tells of a heap or a block's owner.

use super::*;

impl Pool {
    /// The record a link names (null for 0).
    #[inline]
    pub(crate) fn record_at(&self, link: Link) -> *mut HeapRecord {
        if link == 0 {
            ptr::null_mut()
        } else {
            (self.link_base + link as usize) as *mut HeapRecord
        }
    }
    /// The link of `record` (0 for null).
    pub(crate) fn link_of(&self, record: *const HeapRecord) -> Link {
        if record.is_null() {
            0
        } else {
            (record as usize - self.link_base) as Link
        }
    }
    /// The memory for heap `id` of `len` bytes in a shared pool's heap area (zeroed when
    /// fresh); null in a private pool, whose heaps map their own.
    pub(crate) fn heap_slot(&self, id: u32, len: usize) -> *mut u8 {
        if self.heap_area.is_null() {
            return ptr::null_mut();
        }
        assert!(len <= self.heap_stride, "a heap larger than its slot");
        self.slot_of(id)
    }
    /// Heap `id`'s slot in a shared pool's heap area.
    fn slot_of(&self, id: u32) -> *mut u8 {
        self.heap_area.wrapping_add(id as usize * self.heap_stride)
    }
    /// The heap with id `id`, if registered. A shared pool's heap `id` is in slot `id` of
    /// its heap area: an entry naming anything else (damaged state, which `verify` reports:
    /// [`Pool::misregistered`]) is taken for none, never read through.
    pub(crate) fn heap(&self, id: u32) -> *mut HeapRecord {
        if id == 0 || id >= self.max_heaps {
            return ptr::null_mut();
        }
        let link = self.registry_link(id);
        if self.misnames(id, link) {
            return ptr::null_mut();
        }
        self.record_at(link)
    }
    /// Heap `id`'s registry entry (`0 < id < max_heaps`).
    fn registry_link(&self, id: u32) -> Link {
        debug_assert!(id != 0 && id < self.max_heaps);
        // SAFETY: id < max_heaps: inside the registry.
        unsafe { (*self.heaps.add(id as usize)).load(Ordering::Acquire) }
    }
    /// True when `link`, heap `id`'s entry in a shared pool, names neither no heap nor
    /// heap `id`'s slot. (A private pool's heaps are mapped anywhere, in its own process.)
    fn misnames(&self, id: u32, link: Link) -> bool {
        !self.heap_area.is_null() && link != 0 && link != self.link_of(self.slot_of(id).cast())
    }
    /// The first heap id whose registry entry names no heap and not its slot (damaged
    /// state of a shared pool), with the entry.
    pub(crate) fn misregistered(&self) -> Option<(u32, Link)> {
        self.registered_ids()
            .map(|id| (id, self.registry_link(id)))
            .find(|&(id, link)| self.misnames(id, link))
    }
    /// The registered heap whose record `link` names: in a shared pool the heap of the
    /// slot it names, if registered there (null when it names none: damaged state); in a
    /// private one the record it names, unchecked (its heaps are mapped anywhere, in its
    /// own process).
    pub(crate) fn registered_record(&self, link: Link) -> *mut HeapRecord {
        if self.heap_area.is_null() {
            return self.record_at(link);
        }
        let off = self
            .link_base
            .wrapping_add(link as usize)
            .wrapping_sub(self.heap_area as usize);
        let id = u32::try_from(off / self.heap_stride).unwrap_or(0);
        let named = link != 0
            && off.is_multiple_of(self.heap_stride)
            && self.registered_ids().contains(&id)
            && self.registry_link(id) == link;
        if named {
            self.record_at(link)
        } else {
            ptr::null_mut()
        }
    }
    /// The ids heaps may be registered under: every one reserved so far.
    fn registered_ids(&self) -> core::ops::RangeInclusive<u32> {
        let n = self
            .heap_ids
            .load(Ordering::Acquire)
            .min(self.max_heaps - 1);
        1..=n
    }
    /// For `verify`'s tests of damaged state: heap `id`'s registry entry.
    #[cfg(test)]
    pub(crate) fn registry_entry(&self, id: u32) -> &AtomicU64 {
        assert!(id < self.max_heaps);
        // SAFETY: id < max_heaps: inside the registry, which lives as long as the pool.
        unsafe { &*self.heaps.add(id as usize) }
    }
    /// Reserves a new heap id; 0 when the registry is full (then cheaply, with no write).
    pub(crate) fn reserve_id(&self) -> u32 {
        let max = self.max_heaps;
        if self.heap_ids.load(Ordering::Relaxed) >= max - 1 {
            return 0;
        }
        let id = self.heap_ids.fetch_add(1, Ordering::Relaxed) + 1;
        if id >= max {
            self.heap_ids.store(max, Ordering::Relaxed);
            return 0;
        }
        id
    }
    /// Registers `heap` under `id`, from [`Pool::reserve_id`].
    pub(crate) fn publish(&self, id: u32, heap: *mut HeapRecord) {
        debug_assert!(id != 0 && id < self.max_heaps);
        // SAFETY: reserved ids are below max_heaps.
        unsafe { (*self.heaps.add(id as usize)).store(self.link_of(heap), Ordering::Release) };
    }
    /// Every registered heap, for teardown and stats.
    pub(crate) fn registered_heaps(&self) -> impl Iterator<Item = *mut HeapRecord> + '_ {
        self.registered_ids()
            .map(|id| self.heap(id))
            .filter(|h| !h.is_null())
    }
    /// True when blocks with owner `token` belong to a heap whose thread has exited.
    pub(crate) fn owner_is_abandoned(&self, token: u64) -> bool {
        let heap = self.heap((token & 0xffff) as u32);
        // SAFETY: registered heaps stay mapped for the pool's life.
        !heap.is_null() && unsafe { (*heap).token == token && (*heap).is_abandoned() }
    }
    /// True when the heap with id `id` is registered and its thread has exited (the pool
    /// holds it).
    pub(crate) fn heap_is_abandoned(&self, id: u32) -> bool {
        let heap = self.heap(id);
        // SAFETY: registered heaps stay mapped for the pool's life.
        !heap.is_null() && unsafe { (*heap).is_abandoned() }
    }

    /// In a shared pool, before this process writes its process word into the region (a
    /// heap's holder, a scope claim): notes its pid namespace. A process of another
    /// namespace than the creator's marks the region mixed, for good (the mark is stored
    /// before the word, so whoever reads the word sees it: [`Pool::pids_compare`]).
    pub(crate) fn note_namespace(&self) {
        if self.is_shared() && self.pid_ns != os::shared_mem::pid_namespace() {
            self.mixed_ns.store(1, Ordering::SeqCst);
        }
    }

    /// True when the process words in the region compare (every process that wrote one is
    /// of one pid namespace: a pid names a process of its own namespace only), so that a
    /// process may be taken for dead by its word. Read after the word in question. In a
    /// mixed region nobody is taken for dead: a dead process's heaps and scope classes stay
    /// its own (memory kept, never a slot handed out twice).
    pub(crate) fn pids_compare(&self) -> bool {
        self.mixed_ns.load(Ordering::SeqCst) == 0
    }
}
