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
        self.heap_area.wrapping_add(id as usize * self.heap_stride)
    }
    /// The heap with id `id`, if registered.
    pub(crate) fn heap(&self, id: u32) -> *mut HeapRecord {
        if id == 0 || id >= self.max_heaps {
            return ptr::null_mut();
        }
        // SAFETY: id < max_heaps: inside the registry.
        self.record_at(unsafe { (*self.heaps.add(id as usize)).load(Ordering::Acquire) })
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
        let n = self
            .heap_ids
            .load(Ordering::Acquire)
            .min(self.max_heaps - 1);
        (1..=n).map(|id| self.heap(id)).filter(|h| !h.is_null())
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
