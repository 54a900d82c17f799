//! A block's header through its life: written when the pool hands the block out, handed
//! to the pool, kept empty or emptied in place, and what a thread that does not own the
//! block may read of it; and the never-written header of heads without a block.

use super::*;

/// A block as [`Header::snapshot`] read it.
#[derive(Clone, Copy)]
pub(crate) struct Snapshot {
    /// The owning heap's token, 0 for the pool.
    pub owner: u64,
    pub class: usize,
    pub life: usize,
    /// `CLASSES[class]`.
    pub geometry: &'static Class,
    /// `live + |remote|`, at most the capacity.
    pub used: u32,
    /// At most the capacity.
    pub live: u32,
    /// [`Header::holder`].
    pub holder: u32,
    /// `used` as counted (wrapping: a current block's header lacks its cursor's
    /// allocations), and the remote list's length, for [`Snapshot::with_taken`].
    counted: u32,
    remote: u32,
}

impl Snapshot {
    /// True when the header's owner-and-key word `word` names the block this snapshot read
    /// (its owner, class and lifetime class; the [`PROMOTING`] flag aside).
    pub(crate) fn is_word(&self, word: u64) -> bool {
        let key = word_key(word);
        (word & !PROMOTING) >> 16 == self.owner
            && key_class(key) == self.class
            && key_life(key) == self.life
    }

    /// The snapshot of a current block whose owner's cursor counts `taken` allocations its
    /// header lacks (`crate::heap::counted_snapshot`).
    pub(crate) fn with_taken(mut self, taken: u32) -> Snapshot {
        let used = self.counted.wrapping_add(taken);
        self.counted = used;
        self.live = used.saturating_sub(self.remote).min(self.geometry.capacity);
        self.used = used.min(self.geometry.capacity);
        self
    }
}

impl Header {
    /// Writes a fresh header for `class`/`life` at `base`, owned by `owner`; `fresh` says
    /// the block's memory reads zero (just carved), else it holds a header (a block kept
    /// empty for reuse). (A tiny class's block needs its run table written too: see
    /// `tiny::init_runs`.)
    ///
    /// # Safety
    /// `base` is a committed block of [`BLOCK_SIZE`] bytes that nobody else uses until this
    /// returns (other threads may still read its header's atomics), reading zero when
    /// `fresh`, else holding a header.
    pub(crate) unsafe fn init(
        base: *mut u8,
        class: usize,
        life: usize,
        owner: u64,
        fresh: bool,
    ) -> *mut Header {
        // A class without slots (a medium block, `crate::medium_block`) gets no bump
        // window: its header's slot fields stay 0, so a pop never succeeds.
        let (stride, first, limit) = CLASSES
            .get(class)
            .map_or((0, 0, 0), |c| (c.stride, c.first, c.limit));
        let h = base.cast::<Header>();
        // Under loom a header's atomics are objects of the model checker, which memory fresh
        // from the OS does not hold: they are built first. (Outside loom its zero bytes
        // already are a header: integers, atomics and cells all read 0.)
        #[cfg(loom)]
        if fresh {
            // SAFETY: the block is ours (caller); its memory holds no header to drop.
            unsafe { ptr::write(h, Header::sentinel()) };
        }
        // SAFETY: the block is ours and its first bytes hold a header, or zeros, which are
        // one (above). Its plain fields are read by its owner only, and it has none yet.
        unsafe {
            ptr::addr_of_mut!((*h).stride).write(stride);
            ptr::addr_of_mut!((*h).magic).write(MAGIC);
        }
        // The atomics are stored one by one, not written with the header as one value:
        // another thread may still read them (a remote free looks at the block it freed
        // into after its push, and the block may have been emptied, given back and taken
        // again meanwhile), and an atomic's load must not race a plain write.
        // SAFETY: as above.
        let hr = unsafe { &*h };
        hr.free.store(0, Ordering::Relaxed);
        hr.local.store(0, Ordering::Relaxed);
        hr.bump.store(first, Ordering::Relaxed);
        hr.bump_end
            .store(window_end(first, limit), Ordering::Relaxed);
        hr.count.store(0, Ordering::Relaxed);
        hr.role.store(Role::Listed as u8, Ordering::Relaxed);
        for link in &hr.links {
            link.store(NONE, Ordering::Relaxed);
        }
        hr.returned_next.store(NONE, Ordering::Relaxed);
        hr.flags.set(if fresh { FRESH } else { 0 });
        hr.beats.set(0);
        hr.holder.store(NO_HOLDER, Ordering::Relaxed);
        hr.remote.store(0, Ordering::Relaxed);
        // The owner and key last (until then the block reads as empty, kept by the pool,
        // or as zeros): Release, so a reader that reads them (`Header::snapshot`, Acquire)
        // reads the counts above, not those of the block's previous life.
        hr.owner_key
            .store(owner_word(owner, key(class, life)), Ordering::Release);
        h
    }

    /// Owner only: gives the block to the pool, empty: owner 0 and [`EMPTY_KEY`] (frees of
    /// stale pointers then fail the key check), held by nobody.
    pub(crate) fn set_pool_empty(&self) {
        self.owner_key
            .store(owner_word(0, EMPTY_KEY), Ordering::Relaxed);
        self.set_holder(NO_HOLDER);
    }

    /// Owner (or pool-lock holder) only, under the pool lock, for a block on no list: hands
    /// it to the pool as a listed block (it was current, or retired `FULL` and relisted by a
    /// remote free), its allocations the pool's (a heap's tiny block; a [`HEAPLESS`] block
    /// relisted from the pool's returned stack stays theirs). Its three slot lists stay as
    /// they are: the first of the local list and of the remote list are the slots the
    /// double-free checks of a free compare (the owner's last, another thread's last), so
    /// the hand-over keeps
    ///
    /// `local' == local`, `remote' == remote`, `free' == free`,
    ///
    /// and whoever next allocates from the block (a heap that takes it, a thread without a
    /// heap) collects the remote list on its slow path, popping its first at once (RED-140:
    /// a hand-over that collected it left that slot first on the allocation list, where no
    /// check looks, and another thread's double free of it was taken). The slots a reset
    /// kept ([`KEPT_FREED`]) are dropped: no slot of such a block is live (the caller gives
    /// it away, and its key then refuses every free of it). The caller lists the block, or
    /// gives it away when no slot is live (`live == used - |remote|`: the slots on the
    /// remote list count as free).
    ///
    /// The owner word is stored first, then a Release fence, then the counts (the role's
    /// bias): a reader that read the old owner and any count written here reads the new
    /// owner when it reads the word again after an Acquire fence
    /// (`crate::heap::counted_snapshot`), so it never takes counts half written for the old
    /// owner's; one that reads the new owner reads the block under the pool lock, which the
    /// caller holds.
    pub(crate) fn hand_to_pool(&self) {
        self.drop_kept();
        self.set_owner(0);
        fence(Ordering::Release);
        self.set_role(Role::Listed);
        if self.holder() != HEAPLESS {
            self.set_holder(NO_HOLDER);
        }
    }

    /// Owner only, for an owner that died at any step of an allocation or a free (a
    /// shared region's holder killed; its heir is the new owner): makes `used` agree with
    /// the allocation and local free lists, `used == slots handed out - |free| - |local|`
    /// (a slot popped but not counted is then in use: lost, never handed out twice). A
    /// broken list (a link off the block's slots or past `bump`, or a cycle, or more slots
    /// on both than were handed out) is emptied: its slots are lost too. Not for tiny blocks
    /// (`crate::tiny::recount`).
    ///
    /// A block that keeps the slots a reset kept ([`KEPT_FREED`]: set last by the reset,
    /// cleared first by [`Header::drop_kept`]) has no live slot and keeps them (RED-141: a
    /// repair that dropped them let the owner's double free of its last slot through, and
    /// handed that slot out twice); its allocation state is made the reset's again
    /// (`free == 0`, `bump == bump_end == first`, no beat, `used == 0`), which an owner
    /// stopped between the reset and the reload of its cursor would otherwise leave
    /// overwritten by the stale cursor's write-back.
    pub(crate) fn recount_local(&self) {
        let c = self.geometry();
        if !c.is_tiny() && self.flags.get() & KEPT_FREED != 0 {
            self.free.store(0, Ordering::Relaxed);
            self.bump.store(c.first, Ordering::Relaxed);
            self.bump_end.store(c.first, Ordering::Relaxed);
            self.beats.set(0);
            self.set_used(0);
            return;
        }
        let bump = self.bump.load(Ordering::Relaxed);
        if c.is_tiny() || bump < c.first || bump > c.limit {
            return;
        }
        self.finish_collect(bump);
        let handed_out = (bump - c.first) / c.stride;
        let on_free = self.count_list(&self.free, bump, handed_out);
        let on_local = self.count_list(&self.local, bump, handed_out - on_free);
        self.set_used(handed_out - on_free - on_local);
    }

    /// [`Header::recount_local`]'s first step: a collect of the local free list its owner
    /// stopped in the middle of is finished. A collect makes the allocation list first,
    /// then empties the local list (`Header::collect_freed_in`, `Header::take_collected`),
    /// so stopped between the two it leaves the allocation list named by the local list's
    /// first slot (a slow path's collect) or by that slot's link (the quick collect, which
    /// hands that slot out: it is counted handed out, lost). Two disjoint lists never meet
    /// so (the allocation list is not empty), so the local list goes only then. Without
    /// this, both lists would be counted and their slots handed out twice.
    fn finish_collect(&self, bump: u32) {
        let (free, local) = (
            self.free.load(Ordering::Relaxed),
            self.local.load(Ordering::Relaxed),
        );
        if free == 0 || local == 0 || !self.is_slot(local as usize) || local >= bump {
            return;
        }
        // SAFETY: `local` is a slot of this block below `bump` (checked above), whose first
        // four bytes hold its link.
        let link = unsafe { self.base().add(local as usize).cast::<u32>().read() };
        if free == local || free == link {
            self.local.store(0, Ordering::Relaxed);
        }
    }

    /// [`Header::recount_local`]'s walk of the list whose head is `head`: its length, at
    /// most `most`, every link a slot of the block below `bump`; a list that breaks that is
    /// emptied (0).
    fn count_list(&self, head: &AtomicU32, bump: u32, most: u32) -> u32 {
        let c = self.geometry();
        let (mut n, mut off) = (0, head.load(Ordering::Relaxed));
        while off != 0 {
            if !c.is_slot(off as usize) || off >= bump || n >= most {
                head.store(0, Ordering::Relaxed);
                return 0;
            }
            n += 1;
            // SAFETY: `off` is a slot of this block below `bump` (checked above), whose first
            // four bytes hold its link.
            off = unsafe { self.base().add(off as usize).cast::<u32>().read() };
        }
        n
    }

    /// Who holds the allocations of a pool-owned block, for `release_class`: the id of the
    /// heap that allocates from it (tiny blocks, which the pool owns but serves per heap),
    /// [`HEAPLESS`] (threads without a heap allocated from it), or [`NO_HOLDER`] (the pool:
    /// allocations of exited threads). Meaningless while a heap owns the block.
    pub(crate) fn holder(&self) -> u32 {
        self.holder.load(Ordering::Relaxed)
    }

    /// Under the pool lock, for a pool-owned block: see [`Header::holder`].
    pub(crate) fn set_holder(&self, holder: u32) {
        self.holder.store(holder, Ordering::Relaxed);
    }

    /// Owner only: empties the block in place (its slots are all dead), keeping its class,
    /// lifetime class and owner; its memory stays committed, so it is no longer fresh. The
    /// slots freed last stay where the free paths' double-free checks compare them until
    /// the block's next allocation ([`KEPT_FREED`]): with `L` and `R` the local and the
    /// remote list's firsts at the reset (0: empty),
    ///
    /// `local == (L != 0 ? L : R)`, `remote == (L != 0 ? R : 0)` (a count of 0: a **kept
    /// first**, not a list),
    ///
    /// so the owner's check (the local list's first) sees a double free of `L` (or of `R`
    /// when it freed none), and another thread's (both words' firsts,
    /// [`Header::is_freed_last`]) a double free of either: `L`, or `R`, the slot it freed
    /// last into the block (RED-131, RED-132). No kept slot's link is read: no list the
    /// owner takes slots from holds it. With `pages_kept` (a release: the pages its slots
    /// touched stay resident) a block that touched pages past its first slot is marked
    /// [`TOUCHED`], so that its heap's idle look gives them back; without (the idle look,
    /// which gave them back), the mark goes.
    pub(crate) fn reset(&self, pages_kept: bool) {
        let c = self.geometry();
        let local_first = self.local.load(Ordering::Relaxed);
        // The remote list's first is its word's low half (0: empty; no slot is at offset 0),
        // or the first an earlier reset kept there.
        let remote_first = self.remote.load(Ordering::Relaxed) as u32;
        let (kept_local, kept_remote) = match local_first {
            0 => (remote_first, 0),
            local => (local, remote_first),
        };
        let touched = pages_kept && self.touched_end() > c.first;
        let touched = if touched { TOUCHED } else { 0 };
        // No slot is live, so none is promoted.
        self.set_promoting(false);
        self.free.store(0, Ordering::Relaxed);
        self.bump.store(c.first, Ordering::Relaxed);
        self.set_used(0);
        self.remote.store(u64::from(kept_remote), Ordering::Relaxed);
        self.returned_next.store(NONE, Ordering::Relaxed);
        if kept_local == 0 {
            self.flags.set(touched);
            self.bump_end
                .store(window_end(c.first, c.limit), Ordering::Relaxed);
        } else {
            // The next allocation takes the slow path (an empty window, no beat for a
            // collect), which drops the kept slots before it hands any out.
            self.local.store(kept_local, Ordering::Relaxed);
            self.flags.set(KEPT_FREED | touched);
            self.bump_end.store(c.first, Ordering::Relaxed);
            self.beats.set(0);
        }
    }

    /// Owner only: forgets the slots a reset kept ([`KEPT_FREED`]: the local free list's,
    /// and the remote word's kept first, [`Header::forget_kept_remote`]), before the block
    /// hands a slot out or leaves its head: they are never-used slots, and no slot is live,
    /// so `used` is 0. Nothing to do for a block that keeps none.
    pub(crate) fn drop_kept(&self) {
        let flags = self.flags.get();
        if flags & KEPT_FREED != 0 {
            self.flags.set(flags & !KEPT_FREED);
            self.local.store(0, Ordering::Relaxed);
            self.set_used(0);
            self.forget_kept_remote();
        }
    }

    /// The first slot of the local free list as a list of free slots: 0 for a block whose
    /// local list holds only the slots a reset kept ([`KEPT_FREED`]), never-used ones. For
    /// readers that count slots (`verify`).
    pub(crate) fn local_listed(&self) -> u32 {
        if self.flags.get() & KEPT_FREED != 0 {
            0
        } else {
            self.local.load(Ordering::Relaxed)
        }
    }

    /// What a thread that does not own the block may read of it at once, consistently: the
    /// owner-and-key word is loaded once and the class, lifetime class and geometry derive
    /// from that value, so a block changing hands meanwhile (given back, taken by another
    /// class) yields either its old or its new identity, never a mix. `None` for an empty
    /// block kept by the pool, or a key naming no class. The counts are a moment's view
    /// (`live` is clamped to the capacity).
    pub(crate) fn snapshot(&self) -> Option<Snapshot> {
        // Acquire: pairs with the Release of the owner word's stores (`Header::init`,
        // `Header::set_owner`): the counts written before them are read with them.
        let word = self.owner_key_acquire();
        let key = word_key(word);
        let class = key_class(key);
        if key == EMPTY_KEY || class >= CLASSES.len() {
            return None;
        }
        let geometry = &CLASSES[class];
        let role = Role::of_byte(self.role.load(Ordering::Relaxed));
        let used = self
            .count
            .load(Ordering::Relaxed)
            .wrapping_sub(role.bias(geometry.capacity));
        let remote = self.remote_count();
        let live = used.saturating_sub(remote).min(geometry.capacity);
        Some(Snapshot {
            owner: (word & !PROMOTING) >> 16,
            class,
            life: key_life(key),
            geometry,
            used: used.min(geometry.capacity),
            live,
            holder: self.holder(),
            counted: used,
            remote,
        })
    }
}

impl Header {
    const_unless_loom! {
    /// The never-written block behind [`crate::heap::EMPTY_BLOCK`].
    pub(crate) fn sentinel() -> Header {
        Header {
            owner_key: AtomicU64::new(owner_word(0, EMPTY_KEY)),
            free: AtomicU32::new(0),
            bump: AtomicU32::new(0),
            bump_end: AtomicU32::new(0),
            stride: 0,
            count: AtomicU32::new(0),
            local: AtomicU32::new(0),
            links: [AtomicU32::new(NONE), AtomicU32::new(NONE)],
            returned_next: AtomicU32::new(NONE),
            magic: 0,
            flags: OwnerCell::new(0),
            role: AtomicU8::new(Role::Listed as u8),
            beats: OwnerCell::new(0),
            holder: AtomicU32::new(NO_HOLDER),
            remote: AtomicU64::new(0),
            #[cfg(loom)]
            _loom: core::cell::UnsafeCell::new(()),
        }
    }
    }
}
