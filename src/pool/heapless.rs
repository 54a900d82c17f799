//! Slots served under the pool lock: threads without a heap (from [`HEAPLESS`] blocks) and
//! tiny slots (see the pool's module docs, "Holders").

use super::check::Trust;
use super::*;

impl Pool {
    /// Under the lock, for a thread without a heap: takes a slot of (class, life) from a
    /// pool-owned block, which becomes [`HEAPLESS`] (see the module docs). Before saying
    /// out of memory, gives every empty block the pool holds back to the OS and tries
    /// again. Returns the slot and whether it reads zero.
    pub(crate) fn alloc_locked(
        &self,
        st: &mut PoolState,
        class: usize,
        life: usize,
    ) -> Option<(*mut u8, bool)> {
        self.alloc_heapless(st, class, life).or_else(|| {
            (self.give_back_empty(st) > 0).then(|| self.alloc_heapless(st, class, life))?
        })
    }

    pub(super) fn alloc_heapless(
        &self,
        st: &mut PoolState,
        class: usize,
        life: usize,
    ) -> Option<(*mut u8, bool)> {
        let head = HeadIndex::new(class, life);
        loop {
            let h = match st.partial(head).first(self.units()) {
                // SAFETY: a pool-owned block, under the lock; its lists are followed next.
                Some(h) => match unsafe { self.block_trusted(st, h) } {
                    Trust::Whole => h,
                    Trust::Damaged => {
                        st.partial(head).remove(self.units(), h);
                        self.quarantine(st, h);
                        continue;
                    }
                },
                None => {
                    let h = self.take_block(st, class, life, 0)?;
                    st.partial(head).push(self.units(), h);
                    h
                }
            };
            h.set_holder(HEAPLESS);
            let got = if h.geometry().is_tiny() {
                // SAFETY: tiny blocks are pool-owned; we hold the lock.
                unsafe { tiny::pop(h) }
            } else {
                h.pop().or_else(|| h.refill().then(|| h.pop()).flatten())
            };
            if let Some((off, zeroed)) = got {
                if h.geometry().is_tiny() && h.used() == h.capacity() {
                    // A full tiny block is on no list; `free_tiny` lists it again.
                    st.partial(head).remove(self.units(), h);
                }
                return Some((h.base().wrapping_add(off as usize), zeroed));
            }
            // Full: it leaves the list; frees find it again through `free_tiny` (tiny) or
            // its remote list (collected when it is next adopted).
            st.partial(head).remove(self.units(), h);
            if !h.geometry().is_tiny() && !h.try_retire() {
                st.partial(head).push(self.units(), h);
            }
        }
    }

    /// Under the lock: frees a slot of a pool-owned tiny block.
    ///
    /// # Safety
    /// `off` is a live slot of tiny block `h`.
    pub(crate) unsafe fn free_tiny(&self, st: &mut PoolState, h: &Header, off: u32) {
        // SAFETY: the caller guarantees the slot; we hold the lock that owns tiny blocks.
        let used = unsafe { tiny::push(h, off) };
        if used == h.capacity() {
            // It was full and off every list: back on its holder's.
            self.tiny_list(st, h).push(self.units(), h);
        } else if used == 1 {
            self.tiny_list(st, h).remove(self.units(), h);
            self.give_empty(st, h);
        }
    }

    /// Under the lock: the list a tiny block with a free slot is on: its holder heap's
    /// tiny head, else the pool's partial list. A block whose holder's thread has exited
    /// (it was full when the heap was abandoned, so on no list) becomes the pool's.
    pub(super) fn tiny_list<'a>(&self, st: &'a mut PoolState, h: &Header) -> &'a mut BlockList {
        let holder = h.holder();
        if holder != NO_HOLDER && holder != HEAPLESS {
            let heap = self.heap(holder);
            if !heap.is_null() && !self.heap_is_abandoned(holder) {
                // SAFETY: registered heaps stay mapped; a live heap's tiny heads are
                // touched only under the pool lock, which `st` proves we hold.
                return unsafe { (*heap).tiny_list(h.class(), h.life()) };
            }
            h.set_holder(NO_HOLDER);
        }
        st.partial(HeadIndex::new(h.class(), h.life()))
    }
}
