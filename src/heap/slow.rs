//! A heap's slow paths, run by its owner: allocation when the current block has no slot
//! (the block's remote frees, the next listed block, the partial list, the pool; tiny
//! classes under the pool lock), the free that brings a block back or empties it, the
//! returned blocks listed again, and giving back empty blocks (`compact`).

use super::*;

/// A collect that gives the current block fewer slots than [`few_slots`] leaves it for one
/// of the first listed blocks that has that many free, else stays with more beats (a
/// nearly full block would otherwise make nearly every allocation a collect and every
/// 33rd a slow path). At most this many slots...
const FEW_SLOTS: u32 = 16;
/// ... and at most this many bytes of slots (a block is left with at most 16 KiB of free
/// slots, under 1/128 of it, whatever its stride).
const FEW_BYTES: u32 = 16 << 10;

/// Listed blocks the slow path looks at for one with more free slots than its current
/// block's few.
const LISTED_LOOK: usize = 8;

/// The fewest slots a collect must give block `h` for it to stay current:
/// `clamp(FEW_BYTES / stride, 1, FEW_SLOTS)` (16 up to 1 KiB slots, 1 at 16 KiB).
fn few_slots(h: &Header) -> u32 {
    (FEW_BYTES / h.stride.max(1)).clamp(1, FEW_SLOTS)
}

impl Heap {
    /// The slow path of malloc: the current block of (class, life) has no slot on its
    /// allocation list or in its bump window, and none on its local free list or no beat
    /// left to collect it with. First the heartbeat ([`Heap::beat`]); then finds a slot
    /// (the block's local frees, else its remote ones; when those are few or none, the
    /// first listed blocks if one has more; else the few in place; with none, the next
    /// bump window, then the partial list, the pool), makes its block current and takes
    /// the slot. Before saying out of memory (`None`), gives back every empty block it may ([`compact`]), and those
    /// of `own()` (the calling thread's own heap of the instance, or null), and tries once
    /// more.
    #[cold]
    #[inline(never)]
    pub(crate) fn alloc_slow(
        &self,
        class: usize,
        life: usize,
        own: impl FnOnce() -> *mut Heap,
    ) -> Option<(*mut u8, bool)> {
        self.beat(class, life);
        self.alloc_from_heads(class, life).or_else(|| {
            let pool = self.pool();
            // When this is an explicit join's heap, the calling thread's own heap of the
            // instance may hold empty blocks too (`compact` gives those back).
            let own = own();
            let mut st = pool.lock();
            let mut freed = compact(Some(self), pool, &mut st);
            if !own.is_null() && !ptr::eq(own, self) {
                // SAFETY: the calling thread's own heap: it is its owner, and no reference
                // to its heads is alive (the thread is inside this join's allocation).
                freed += unsafe { (*own).give_back_empty(&mut st) };
            }
            drop(st);
            (freed > 0).then(|| self.alloc_from_heads(class, life))?
        })
    }
    /// [`Heap::alloc_slow`] without the last resort. The current block's allocation state
    /// is its head's cursor throughout (see [`cursor`](super::cursor)): the fast paths'
    /// allocations are counted in its header first, its cursor is written back when it
    /// leaves the head and loaded for the block that becomes current.
    pub(crate) fn alloc_from_heads(&self, class: usize, life: usize) -> Option<(*mut u8, bool)> {
        let pool = self.pool();
        // A write of the state without the pool lock: marked (`crate::pool::write_seal`).
        let _writing = pool.writing();
        // SAFETY: callers are the owning thread, with class < CLASS_COUNT, life < life_count.
        let head = unsafe { self.head(class, life) };
        head.count_taken();
        let cursor = head.state();
        loop {
            if let Some(h) = head.block() {
                if let Some((off, zeroed)) = h.take_in(cursor) {
                    h.count_add(1);
                    return Some((h.base().wrapping_add(off as usize), zeroed));
                }
                // The block's allocation list and bump window are empty, and its local
                // free list too, or its beats are spent: they start again here (the
                // heartbeat ran in `alloc_slow`). A block emptied in place forgets the
                // slot it kept for the double-free check before it hands one out.
                h.drop_kept();
                h.take_beats();
                // Slots freed first (this thread's, else other threads'), then those of
                // the next listed block, then never-used ones: reusing what comes back
                // keeps the touched pages near what is live. Counted before they are
                // moved: a collect is followed by a pop from this block at once, so the
                // slot freed last is never left first on the allocation list, where the
                // free fast path's double-free check (the local list's first slot) would
                // not see it.
                let got = h.freed_waiting_in(cursor);
                let few = few_slots(h);
                if got >= few {
                    head.collect_freed(h);
                    continue;
                }
                self.drain_returned();
                // With a few slots waiting, a listed block is better only with more (one of
                // the first few listed: a bounded look).
                let better = |next: &&Header| {
                    next.has_freed_slots() && (got == 0 || next.free_slots() >= few)
                };
                let next = head
                    .partial
                    .iter(pool.units())
                    .take(LISTED_LOOK)
                    .find(better);
                if let Some(next) = next {
                    // The listed block becomes current; this one keeps its slots for later,
                    // listed, or goes to the pool when none is live (every slot free, on
                    // its lists or never used: no free will come to list it again).
                    head.partial.remove(pool.units(), next);
                    if !self.trusted_or_quarantined(next) {
                        continue;
                    }
                    head.leave();
                    head.set_role(h, Role::Listed);
                    if h.live() == 0 {
                        pool.give_empty(&mut pool.lock(), h);
                    } else {
                        head.partial.push(pool.units(), h);
                    }
                    head.set_role(next, Role::Current);
                    head.enter(next);
                    continue;
                }
                if let Some(times) = (got > 0).then(|| few.div_ceil(got)) {
                    // The few slots (no listed block has more), and not the next bump
                    // window: freed slots are reused before a never-used page is touched,
                    // few or many (moving the window on with each few made a block whose
                    // other threads' frees come back a few at a time touch a page more
                    // per collect, until a collect gave `few`: twice the pages of the
                    // objects in flight at 1 KiB slots). A nearly full block stays
                    // current (density: no block is taken while listed ones have free
                    // slots); its collects, a few slots each, get beats in proportion
                    // (rounded up), so that its slow paths stay one per at least
                    // `BEATS * few` allocations.
                    head.collect_freed(h);
                    h.give_beats(times);
                    continue;
                }
                if h.advance_window_in(cursor) {
                    continue;
                }
                // Written back before the retire: once `FULL`, the block's next owner step
                // is the free that lists it again, which reads its header.
                head.sync();
                if !head.retire(h) {
                    continue;
                }
                head.enter(empty_block());
            }
            self.drain_returned();
            let h = match head.partial.pop(pool.units()) {
                Some(h) => {
                    if !self.trusted_or_quarantined(h) {
                        continue;
                    }
                    h
                }
                None => {
                    let mut st = pool.lock();
                    pool.take_block(&mut st, class, life, self.token)?
                }
            };
            head.set_role(h, Role::Current);
            head.enter(h);
        }
    }
    /// Owner only, for block `h` of its own, taken off its partial list to become current:
    /// whether its lists may be followed ([`Pool::block_trusted`], under the pool lock,
    /// taken only when the block's mark is stale); a damaged one is quarantined
    /// (`crate::pool`'s `check`), and the caller looks for another.
    fn trusted_or_quarantined(&self, h: &Header) -> bool {
        let pool = self.pool();
        if pool.checked_now(h) {
            return true;
        }
        let mut st = pool.lock();
        // SAFETY: the heap owns the block (its partial list), and this is its owner.
        match unsafe { pool.block_trusted(&mut st, h) } {
            Trust::Whole => true,
            Trust::Damaged => {
                pool.quarantine(&mut st, h);
                false
            }
        }
    }
    /// A tiny allocation (1- or 2-byte class) by the owner: a slot from the heap's tiny
    /// blocks of (class, life), under the pool lock (see the module docs). Before saying out
    /// of memory, gives back every empty block it may and tries once more.
    pub(crate) fn alloc_tiny(&self, class: usize, life: usize) -> Option<(*mut u8, bool)> {
        let pool = self.pool();
        let mut st = pool.lock();
        self.alloc_tiny_locked(&mut st, class, life).or_else(|| {
            (compact(Some(self), pool, &mut st) > 0)
                .then(|| self.alloc_tiny_locked(&mut st, class, life))?
        })
    }
    fn alloc_tiny_locked(
        &self,
        st: &mut PoolState,
        class: usize,
        life: usize,
    ) -> Option<(*mut u8, bool)> {
        let pool = self.pool();
        // SAFETY: a tiny head, under the pool lock (`st`); no other reference to it is alive.
        let list = unsafe { self.tiny_list(class, life) };
        loop {
            let h = match list.first(pool.units()) {
                // SAFETY: a tiny block (pool-owned), under the pool lock.
                Some(h) => match unsafe { pool.block_trusted(st, h) } {
                    Trust::Whole => h,
                    Trust::Damaged => {
                        list.remove(pool.units(), h);
                        pool.quarantine(st, h);
                        continue;
                    }
                },
                None => {
                    let h = pool.take_block(st, class, life, 0)?;
                    h.set_holder(self.id);
                    list.push(pool.units(), h);
                    h
                }
            };
            // SAFETY: a tiny block (pool-owned), under the pool lock.
            let got = unsafe { tiny::pop(h) };
            if got.is_none() || h.used() == h.capacity() {
                // Full: on no list until a free (`Pool::free_tiny`) lists it again.
                list.remove(pool.units(), h);
            }
            if let Some((off, zeroed)) = got {
                return Some((h.base().wrapping_add(off as usize), zeroed));
            }
        }
    }
    /// A free by the owner: pushes slot `p` on the block's local list, and takes the slow
    /// path when the block's count says so. Returns false, having done nothing, when the
    /// slot is the first of the list already (a double free, for the caller to report).
    ///
    /// # Safety
    /// `p` is a slot of block `h`, which this heap owns, live or the first of its free list.
    #[must_use]
    pub(crate) unsafe fn free_local(&self, h: &Header, p: *mut u8) -> bool {
        // SAFETY: forwarded.
        match unsafe { h.push_local(p) } {
            LocalFree::Done => true,
            LocalFree::Slow => {
                self.free_slow(h);
                true
            }
            LocalFree::AlreadyFree => false,
        }
    }
    /// The slow path of a local free: `push_local` took the block's count to 0, so the
    /// block was retired `FULL` and this free brings it back, or it is listed and now
    /// empty (see [`Role`]).
    #[cold]
    #[inline(never)]
    pub(crate) fn free_slow(&self, h: &Header) {
        let pool = self.pool();
        // A write of the state without the pool lock: marked (`crate::pool::write_seal`).
        let _writing = pool.writing();
        let counted = HeadIndex::new(h.class(), h.life()).get();
        pool.counters
            .add(counted, crate::counters::Counter::FreeSlow, 1);
        // SAFETY: the block is this heap's, so its key names a head of this heap.
        let head = unsafe { self.head(h.class(), h.life()) };
        match h.role() {
            Role::Full => {
                head.set_role(h, Role::Listed);
                // When a remote free cleared FULL first, it put the block on `returned`.
                if h.clear_full() {
                    head.partial.push(pool.units(), h);
                }
            }
            Role::Listed => {
                head.partial.remove(pool.units(), h);
                let mut st = pool.lock();
                pool.give_empty(&mut st, h);
            }
            Role::Current => unreachable!("a current block's count never reaches 0"),
        }
        self.look_for_idle();
    }
    /// Lists the blocks on `returned` on their heads' partial lists.
    pub(crate) fn drain_returned(&self) {
        let pool = self.pool();
        for h in self.returned.take_all(pool.units()) {
            // SAFETY: returned blocks are owned by this heap; their key names its heads.
            let head = unsafe { self.head(h.class(), h.life()) };
            head.set_role(h, Role::Listed);
            head.partial.push(pool.units(), h);
        }
    }
    /// Owner only, releasing lifetime class `life`: passes every block of the class on this
    /// heap's heads (after listing its returned blocks) to `f`, with `true` for the current
    /// blocks, which stay current (the caller empties them in place, so the next
    /// allocations of the class reuse them with no system call: a request loop releases
    /// its class after every request) and `false` for the others, which leave the heap.
    pub(crate) fn release_life(&self, life: usize, mut f: impl FnMut(&Header, bool)) {
        // A write of the state without the pool lock: marked (`crate::pool::write_seal`).
        let _writing = self.pool().writing();
        self.drain_returned();
        let pool = self.pool();
        for i in HeadIndex::of_life(life) {
            // SAFETY: the owner, a valid class and life.
            let head = unsafe { self.head(i.class(), i.life()) };
            if let Some(h) = head.block() {
                // The header is the truth while `f` empties the block in place; the cursor
                // is read from it again after.
                head.sync();
                {
                    // Emptied in place: its counts and role change together (a write of
                    // the row, as `HeapHead::set_role`'s).
                    let _writing = head.cursors.writing();
                    f(h, true);
                }
                head.load();
            }
            while let Some(h) = head.partial.pop(pool.units()) {
                f(h, false);
            }
        }
    }
    /// Owner only, under the pool lock: gives every block of this heap's heads that holds
    /// no live slot back to the OS, after freeing the medium runs its cache keeps (their
    /// blocks may empty: the caller's `Pool::compact_medium` gives those back). Blocks on
    /// the returned stack (retired full, then freed into by other threads) are listed
    /// first: other threads' frees may have emptied them. Returns how many blocks.
    pub(crate) fn give_back_empty(&self, st: &mut PoolState) -> usize {
        let pool = self.pool();
        self.drain_returned();
        #[cfg(not(loom))]
        pool.flush_medium_cache(st, &self.medium);
        let mut given = 0;
        for i in pool.heads() {
            // SAFETY: the owner; i is below the head count.
            let head = unsafe { head_at(self, self.heads(), i.get()) };
            if let Some(h) = head.block() {
                // Counted in the header before its live slots are.
                head.count_taken();
                if h.live() == 0 {
                    head.leave();
                    head.set_role(h, Role::Listed);
                    pool.give_back_block(st, h);
                    given += 1;
                }
            }
            for h in head.partial.iter(pool.units()) {
                if h.live() == 0 {
                    head.partial.remove(pool.units(), h);
                    pool.give_back_block(st, h);
                    given += 1;
                }
            }
        }
        given
    }
}

/// Under the pool lock: gives back to the OS every empty block the calling thread may:
/// those of its heap `heap` (the calling thread's, if any), the pool's (exited threads'
/// included) and those kept for reuse. What [`crate::Cohort::compact`] does, and the
/// allocation paths' last resort before out of memory. Returns how many, each once.
pub(crate) fn compact(heap: Option<&Heap>, pool: &Pool, st: &mut PoolState) -> usize {
    heap.map_or(0, |h| h.give_back_empty(st)) + pool.give_back_empty(st)
}
