//! Blocks: the header and the slot lists of one block.
//!
//! A block is [`BLOCK_SIZE`] bytes aligned to its size (see [`crate::region`]); its first
//! [`HEADER_SIZE`](crate::class::HEADER_SIZE) bytes are the [`Header`], the only metadata
//! cohort keeps for the slots in it. Slots start at `class.first` and are `class.stride`
//! apart. Every link is a byte offset from the block's base (offset 0 is the header, so 0
//! means "none"); no absolute address is ever stored (invariant 4 of [`crate::design`]).
//!
//! A slot is in exactly one of five places:
//!
//! - **never used**: at or above `bump` (`bump <= limit`; `bump == limit` when none is
//!   left). When the header's `FRESH` flag is set these bytes read zero. The allocation
//!   fast path takes them only below `bump_end` (the **bump window**, which ends at most a
//!   page past `bump`): the owner moves the window on only when the local and the remote
//!   free lists are both empty ([`Header::refill`], and `crate::heap`'s slow path, which
//!   collects even a few slots rather than move it), so freed slots are reused before a
//!   page the block never used is touched.
//! - **allocation list**: linked from `free` through the slots' first 4 bytes, the slots
//!   the allocation fast path pops ([`Header::pop`]).
//! - **local free list**: linked from `local` the same way, the slots the owner freed since
//!   it last collected them: the free fast path pushes on it ([`Header::push_local`]), and
//!   a collect moves it whole to the allocation list when that list and the bump window are
//!   both empty: out of line on the allocation fast path while the block has **beats**
//!   left ([`Header::pop_collected`]), else on the slow path ([`Header::refill`]), which
//!   gives the beats back ([`BEATS`], or more to a nearly full block whose collects give
//!   a few slots each: `Header::give_beats`). So a program cycling objects through its
//!   current blocks still enters the slow path every few hundred allocations at most, once
//!   per [`BEATS`] + 1 collects of many slots: the heartbeat of the decay (see
//!   `crate::heap`'s idle module). A collect is followed at once by a pop of the slot it
//!   made first (the one freed last), so the slot freed last, while free, is always the
//!   local list's first: the one double free the free fast path checks. A block emptied in
//!   place keeps the firsts of both lists until its next allocation (`KEPT_FREED`: the kept
//!   slots are never-used ones, outside the counts below): with `L` and `R` the local and
//!   the remote list's firsts at the reset, `local == (L != 0 ? L : R)` and `remote == (L
//!   != 0 ? R : 0)`, a **kept first** of count 0 in the remote word ([`Header::reset`]).
//!
//!   Only the owner (the heap whose id is in `owner`, or the pool-lock holder when
//!   `owner == 0`) touches either list.
//! - **remote free list**: linked from the low 32 bits of `remote`, pushed lock-free by any
//!   thread ([`Header::push_remote`]) and taken whole by the owner with one swap, only to
//!   allocate from the block: a collect is followed at once by a pop of its first (the slow
//!   path's, the quick collect's, a refill under the pool lock). No change of hands takes
//!   it ([`Header::hand_to_pool`], a dead holder's recount, a fork child's repair keep it
//!   as it is), so while the slot pushed last is free, `remote as u32 == that slot`: the
//!   one double free another thread's free checks (RED-140), whoever owns the block.
//! - **live**: handed out and not freed.
//!
//! Counts: `used == live + |remote list|` (the owner learns of remote frees only when it
//! collects them), `capacity == live + |remote| + |free| + |local| + (limit - bump) /
//! stride`. The header keeps `count == used + bias` (wrapping), where `bias` follows from
//! the block's [`Role`], which the owner sets, so that the one local free that needs the
//! slow path is the one that takes `count` to 0: the free fast path's accounting is one
//! decrement and its flag.
//!
//! The `remote` word is `offset | count << 32 | FULL`, a list of `count` slots from
//! `offset`, except a kept first: `count == 0 && offset != 0 <=> KEPT_FREED && offset ==
//! R` (the only word of count 0 naming a slot, which no reader takes for a list: the remote
//! paths' check compares it, the owner drops it before any collect, [`Header::drop_kept`],
//! and verify and the open check of a region skip it). `FULL` (bit 63) is set by the owner,
//! with a CAS from an empty list, when it retires a block with no free slot from its head; the
//! next free (local or remote) clears it and lists the block again ([`Header::push_remote`]
//! reports it). Push-and-take-all is ABA-free: a push depends only on the head it links
//! to, and the head it read is still the head when its CAS succeeds.

use crate::class::{Class, BLOCK_SIZE, CLASSES};
use crate::sync::{const_unless_loom, fence, AtomicU32, AtomicU64, AtomicU8, Ordering};
use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ptr;

mod life;
mod list;
mod local;
mod remote;
pub(crate) use life::Snapshot;
pub(crate) use list::{BlockList, BlockStack, Links, Units};
pub(crate) use local::{AllocState, Word};

/// Header `magic`: the layout version of a block header.
pub(crate) const MAGIC: u32 = 0xC040_8102;
/// `remote` flag: the block left its head because it had no free slot.
pub(crate) const FULL: u64 = 1 << 63;
const COUNT_MASK: u64 = (1 << 31) - 1;
/// `flags` bit: memory at and above `bump` reads zero.
pub(crate) const FRESH: u8 = 1;
/// `flags` bit: the block was current and empty at its heap's last look for idle blocks
/// (see [`Header::seen_idle`]).
const IDLE: u8 = 2;
/// `flags` bit: the block was emptied in place ([`Header::reset`]) with a slot on its local
/// or remote free list, and has handed out no slot since. The local free list then holds
/// the slot freed last before the reset (the local list's first, else the remote list's),
/// and the remote word the remote list's first when both lists had slots (a kept first:
/// count 0), with any slot freed since (every one a double free: no slot was live), all of
/// them never-used slots again, so that the free paths' checks still see a double free of
/// either list's first. They are on no allocation path: the bump window is empty and no
/// beat is left, so the next allocation takes the slow path, which forgets them
/// ([`Header::drop_kept`]), as does every move of the block off its head.
const KEPT_FREED: u8 = 4;
/// `flags` bit: the block was emptied in place by a release ([`Header::reset`] with its
/// pages kept) after its slots had touched pages: pages past `bump` may be resident, up to
/// the slots' end ([`Header::touched_end`]), until the idle look of its heap gives them back
/// (its own reset clears the bit), as it gives back those below `bump` of a block emptied by
/// frees.
const TOUCHED: u8 = 8;
/// Collects of its local free list the allocation fast path makes in a block before the
/// next takes the slow path ([`Header::pop`]): a program that cycles objects through its
/// current blocks enters a slow path at least once per this many collects (the decay's
/// heartbeat, `crate::heap`'s idle module), each collect taking every slot freed since the
/// last one. Few, because the heartbeat counts allocations, not time: a program cycling
/// one 64-byte object every 2 ms collects once per 64 allocations (a page's bump window),
/// so it reads the clock every `(BEATS + 1) * 64` allocations: 0.6 s at 4, 4.2 s at 32,
/// which kept a freed burst resident past ten delays of 300 ms (`red_team_heartbeat`).
/// A heartbeat (a clock read and two checks) per five collects costs a few hundredths of
/// an instruction per allocation.
pub(crate) const BEATS: u16 = 4;
/// Header key of an empty block waiting in the pool: no class has index 255.
pub(crate) const EMPTY_KEY: u16 = 0xffff;
/// [`Role::Current`]'s bias: `count` stays within a capacity of it (the header's `used`
/// lacks the allocations its owner's cursor counts, `crate::heap::cursor`, so it may be
/// below 0 by as many), so never reaches 0.
const CURRENT_BIAS: u32 = 1 << 31;
/// An owner-and-key word bit (bit 15 of the owner token, above every heap id: see
/// `crate::promote`) set while the block may hold slots promoted from a smaller size
/// class. No heap's tag has it, so every free of such a block misses the free fast path's
/// compare and is checked on a slow path; [`Header::owner`] leaves it out.
pub(crate) const PROMOTING: u64 = 1 << 31;
/// A list link meaning "no block".
pub(crate) const NONE: u32 = u32::MAX;
/// [`Header::holder`] of a pool-owned block whose allocations are the pool's: those of
/// exited threads (or none).
pub(crate) const NO_HOLDER: u32 = 0;
/// [`Header::holder`] of a pool-owned block that a thread without a heap allocated from
/// (its allocations cannot be told apart from those of other such threads).
pub(crate) const HEAPLESS: u32 = u32::MAX;

/// The header at the start of every block. See the module docs for its invariants.
#[repr(C, align(64))]
pub(crate) struct Header {
    /// `owner << 16 | (key ^ EMPTY_KEY)` ([`owner_word`]), one word so that the free fast
    /// path checks both with one compare ([`Header::owner_key`]). `owner` is the token of
    /// the owning heap ([`crate::heap_record::HeapRecord::token`]: unique in the process), 0 when the
    /// pool owns the block; `key` is `class | life << 8`, what every slot of the block is,
    /// or [`EMPTY_KEY`] while the pool keeps the block empty. The key is stored inverted so
    /// that memory reading zero (a decommitted or never-carved unit) reads as an empty
    /// block owned by nobody: no free can match it. Written only by the owner (or the
    /// pool-lock holder); read by any thread.
    owner_key: AtomicU64,
    /// Allocation list: offset of its first slot, 0 when empty. (Tiny blocks, which have
    /// run lists instead: the lowest run that may have a free slot.)
    pub free: AtomicU32,
    /// Offset of the first never-used slot.
    pub bump: AtomicU32,
    /// End of the bump window: the fast path takes never-used slots below it.
    /// `bump_end <= class.limit`, on a page boundary or at `class.limit`. Owner only.
    pub bump_end: AtomicU32,
    /// `class.stride`, copied for the fast path.
    pub stride: u32,
    /// `used + bias` (wrapping), where `used` counts the slots handed out and not freed
    /// locally (`live + |remote|`) and `bias` is the role's ([`Role::bias`]). Owner only.
    /// See [`Header::set_role`].
    count: AtomicU32,
    /// Local free list: offset of its first slot, 0 when empty. (Unused by tiny blocks.)
    pub local: AtomicU32,
    /// `[next, prev]`: links of the [`BlockList`] the block is on (unit indices, `NONE` for
    /// none).
    links: [AtomicU32; 2],
    /// Link in a [`BlockStack`] (unit index).
    returned_next: AtomicU32,
    pub magic: u32,
    /// `FRESH`, `IDLE`, `KEPT_FREED` and `TOUCHED` bits. Owner only.
    flags: OwnerCell<u8>,
    /// What the block is to its owner ([`Role`], as `role as u8`), whose bias makes `count`
    /// reach 0 exactly on the local free that needs the slow path. Written by the owner
    /// only (an atomic because snapshots read it).
    role: AtomicU8,
    /// Collects of the local free list the allocation fast path may still make before its
    /// next miss takes the slow path ([`Header::pop`]): the heartbeat. Owner only.
    beats: OwnerCell<u16>,
    /// For a pool-owned block (`owner == 0`): whose allocations it holds, which
    /// `release_class` needs to know ([`Header::holder`]). Written under the pool lock; an
    /// atomic because snapshots read it.
    holder: AtomicU32,
    /// The remote free list: `offset | count << 32 | FULL`.
    pub remote: AtomicU64,
    /// Loom's atomics, unlike std's, hold no `UnsafeCell`: without this field `&Header`
    /// would be `Freeze` under loom, and the compiler could assume nothing is written
    /// through a pointer derived from it (it then drops `push_remote`'s slot writes).
    #[cfg(loom)]
    _loom: core::cell::UnsafeCell<()>,
}

/// What [`Header::push_local`] did.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LocalFree {
    /// The slot is on the local free list; nothing else to do.
    Done,
    /// The slot is on the local free list, and the free needs the slow path: `count`
    /// reached 0 (see [`Role`]).
    Slow,
    /// Nothing done: the slot is the first of the local free list (the slot freed last), so
    /// already free.
    AlreadyFree,
}

/// What a block is to its owning heap, which decides which local frees take the slow path
/// (the one that makes `count`, that is `used + bias`, reach 0):
///
/// | role | bias | the free that reaches 0 |
/// |---|---|---|
/// | `Current` (its head's current block) | 2^31 | none (`used < 2^31`) |
/// | `Listed` (on a partial list, or the pool's) | 0 | the one that empties it |
/// | `Full` (retired `FULL`: `used == capacity`) | 1 - capacity | the first one |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Role {
    Listed = 0,
    Current = 1,
    Full = 2,
}

impl Role {
    /// The role stored as `byte` (a zeroed header's 0 is `Listed`, a garbage byte `Full`).
    const fn of_byte(byte: u8) -> Role {
        match byte {
            0 => Role::Listed,
            1 => Role::Current,
            _ => Role::Full,
        }
    }

    /// The bias the role adds to `used` in a block of `capacity` slots (see the table).
    const fn bias(self, capacity: u32) -> u32 {
        match self {
            Role::Current => CURRENT_BIAS,
            Role::Listed => 0,
            Role::Full => 1u32.wrapping_sub(capacity),
        }
    }
}

#[cfg(not(loom))]
const _: () = assert!(size_of::<Header>() == crate::class::HEADER_SIZE);

/// A header field written only by the block's owner (its heap's thread, or the pool-lock
/// holder for pool-owned blocks), after `init`, and read only by the owner. Unlike an
/// atomic, its loads fold into the instructions that use them; unlike a plain field, it may
/// be written while `&Header` references exist.
#[repr(transparent)]
pub(crate) struct OwnerCell<T: Copy>(UnsafeCell<T>);

// SAFETY: see the type's docs: one writer (the owner), and no read races a write in a
// correct program.
unsafe impl<T: Copy + Send> Sync for OwnerCell<T> {}

impl<T: Copy> OwnerCell<T> {
    pub(crate) const fn new(v: T) -> Self {
        OwnerCell(UnsafeCell::new(v))
    }

    #[inline(always)]
    pub(crate) fn get(&self) -> T {
        // SAFETY: no write races this read (the type's contract).
        unsafe { *self.0.get() }
    }

    /// Owner only.
    #[inline(always)]
    pub(crate) fn set(&self, v: T) {
        // SAFETY: the owner is the only writer (the type's contract).
        unsafe { *self.0.get() = v }
    }
}

/// The class index of a header key.
#[inline(always)]
pub(crate) const fn key_class(key: u16) -> usize {
    (key & 0xff) as usize
}

/// The lifetime class index of a header key.
#[inline(always)]
pub(crate) const fn key_life(key: u16) -> usize {
    (key >> 8) as usize
}

/// The key in a header's first word ([`owner_word`]'s inverse for the key).
#[inline(always)]
pub(crate) const fn word_key(word: u64) -> u16 {
    word as u16 ^ EMPTY_KEY
}

/// The header key of a (class, life) pair.
#[inline(always)]
pub(crate) const fn key(class: usize, life: usize) -> u16 {
    (class | life << 8) as u16
}

/// The header's first word for a block of `key` owned by `owner` (0: the pool):
/// `owner << 16 | (key ^ EMPTY_KEY)`. An all-zero word is an empty block owned by nobody.
#[inline(always)]
pub(crate) const fn owner_word(owner: u64, key: u16) -> u64 {
    owner << 16 | (key ^ EMPTY_KEY) as u64
}

impl Header {
    /// True when memory at and above `bump` reads zero.
    #[inline(always)]
    pub(crate) fn is_fresh(&self) -> bool {
        self.flags.get() & FRESH != 0
    }

    /// Owner only: the end (an offset) of the slots whose pages may be resident: `bump`, or
    /// the slots' end for a block a release emptied in place after it touched pages
    /// ([`TOUCHED`]).
    pub(crate) fn touched_end(&self) -> u32 {
        let bump = self.bump.load(Ordering::Relaxed);
        if self.flags.get() & TOUCHED != 0 {
            bump.max(self.geometry().limit)
        } else {
            bump
        }
    }

    /// Owner only, at a look of its heap for idle current blocks: records whether the
    /// block is `empty` now, and returns true when it is and was at the previous look too
    /// (empty at two looks in a row).
    pub(crate) fn seen_idle(&self, empty: bool) -> bool {
        let flags = self.flags.get();
        self.flags
            .set(if empty { flags | IDLE } else { flags & !IDLE });
        empty && flags & IDLE != 0
    }

    /// `owner << 16 | (key ^ EMPTY_KEY)`: the word the free fast path compares (see the
    /// field).
    #[inline(always)]
    pub(crate) fn owner_key(&self) -> u64 {
        self.owner_key.load(Ordering::Relaxed)
    }

    /// `owner_key() ^ k`: the free fast path's owner-and-key word (see the field). On x86-64
    /// one instruction, the load folded into the xor: the compiler keeps an atomic's load an
    /// instruction of its own.
    #[inline(always)]
    pub(crate) fn owner_key_xor(&self, k: u64) -> u64 {
        #[cfg(all(target_arch = "x86_64", not(miri), not(loom)))]
        {
            let mut word = k;
            // SAFETY: reads `owner_key`, a live, aligned `u64`, with one aligned 8-byte load,
            // which is what a relaxed atomic load compiles to: a concurrent store by the
            // block's owner is no data race, and the value read is one the field held.
            unsafe {
                core::arch::asm!(
                    "xor {word}, qword ptr [{header} + {owner_key}]",
                    word = inout(reg) word,
                    header = in(reg) ptr::from_ref(self),
                    owner_key = const core::mem::offset_of!(Header, owner_key),
                    options(readonly, nostack),
                );
            }
            word
        }
        #[cfg(not(all(target_arch = "x86_64", not(miri), not(loom))))]
        {
            self.owner_key() ^ k
        }
    }

    /// `class | life << 8`, or `EMPTY_KEY`.
    #[inline(always)]
    pub(crate) fn key(&self) -> u16 {
        word_key(self.owner_key())
    }

    /// The owning heap's token, 0 when the pool owns the block.
    #[inline]
    pub(crate) fn owner(&self) -> u64 {
        (self.owner_key() & !PROMOTING) >> 16
    }

    /// As [`Header::owner`], with Acquire: pairs with the Release of `try_retire`, so a
    /// remote free that found `FULL` reads the owner that retired the block.
    pub(crate) fn owner_acquire(&self) -> u64 {
        (self.owner_key_acquire() & !PROMOTING) >> 16
    }

    /// [`Header::owner_key`] with Acquire: pairs with the Release of the word's stores
    /// ([`Header::set_owner`], `Header::init`), for readers of the counts written before.
    pub(crate) fn owner_key_acquire(&self) -> u64 {
        self.owner_key.load(Ordering::Acquire)
    }

    /// Owner (or pool-lock holder) only: hands the block to the heap with token `owner`
    /// (0: the pool), keeping its key and its [`PROMOTING`] flag. Release: a reader that
    /// reads the new owner (`Header::snapshot`, Acquire) reads the counts written before,
    /// and, for a heap's take of the block, the sequence its rows had then
    /// (`crate::heap::counted_snapshot`).
    pub(crate) fn set_owner(&self, owner: u64) {
        debug_assert!(owner < 1 << 48 && owner_word(owner, 0) & PROMOTING == 0);
        let promoting = self.owner_key() & PROMOTING;
        self.owner_key
            .store(owner_word(owner, self.key()) | promoting, Ordering::Release);
    }

    /// True while the block may hold promoted slots ([`PROMOTING`]): the promotion map of
    /// its unit is valid (see `crate::promote`).
    #[inline]
    pub(crate) fn is_promoting(&self) -> bool {
        self.owner_key() & PROMOTING != 0
    }

    /// Owner (or pool-lock holder) only: sets or clears [`PROMOTING`], keeping the owner and
    /// the key. Release: a thread that reads the flag sees the promotion map written
    /// before it.
    pub(crate) fn set_promoting(&self, on: bool) {
        let word = self.owner_key() & !PROMOTING;
        let word = if on { word | PROMOTING } else { word };
        self.owner_key.store(word, Ordering::Release);
    }

    /// The class index.
    #[inline(always)]
    pub(crate) fn class(&self) -> usize {
        key_class(self.key())
    }

    /// The lifetime class index.
    #[inline(always)]
    pub(crate) fn life(&self) -> usize {
        key_life(self.key())
    }

    /// The class geometry.
    #[inline(always)]
    pub(crate) fn geometry(&self) -> &'static Class {
        &CLASSES[self.class()]
    }

    /// Slots in the block.
    #[inline]
    pub(crate) fn capacity(&self) -> u32 {
        self.geometry().capacity
    }

    /// Owner only: records what the block is to its owner ([`Role`]), which decides which
    /// local free takes the slow path.
    #[inline]
    pub(crate) fn set_role(&self, role: Role) {
        let used = self.used();
        self.role.store(role as u8, Ordering::Relaxed);
        self.set_used(used);
    }

    /// The block's role (owner only, or with exclusive use).
    pub(crate) fn role(&self) -> Role {
        Role::of_byte(self.role.load(Ordering::Relaxed))
    }

    /// `count - used`: the bias of the block's role.
    fn bias(&self) -> u32 {
        self.role().bias(self.capacity())
    }

    /// Slots handed out and not freed locally: `live + |remote|`. Exact for the owner (a
    /// snapshot by another thread may catch `count` and the role of different moments).
    #[inline]
    pub(crate) fn used(&self) -> u32 {
        self.count.load(Ordering::Relaxed).wrapping_sub(self.bias())
    }

    /// Owner only: sets `used`, keeping the role.
    pub(crate) fn set_used(&self, used: u32) {
        self.count
            .store(used.wrapping_add(self.bias()), Ordering::Relaxed);
    }

    /// The block's base address. Built from the address (exposed provenance: the region's
    /// mapping), not from `&self`, whose provenance covers only the header.
    #[inline(always)]
    pub(crate) fn base(&self) -> *mut u8 {
        (self as *const Header as usize) as *mut u8
    }

    /// The offset of `p`, a pointer into this block.
    #[inline(always)]
    pub(crate) fn offset_of(&self, p: *mut u8) -> u32 {
        (p as usize - self.base() as usize) as u32
    }

    /// True when `off` is the offset of a slot of this block.
    pub(crate) fn is_slot(&self, off: usize) -> bool {
        self.geometry().is_slot(off)
    }

    /// Owner only: takes a slot from the allocation list, else from the never-used slots
    /// of the bump window, and counts it. Returns its offset, and whether its bytes are
    /// known to read zero (a never-used slot of a fresh block). `None` does not mean the
    /// block is full: see [`Header::pop_collected`] (the fast paths' first resort) and
    /// [`Header::refill`]. The header's own allocation state ([`Header::state`]); a
    /// current block's is its owner's cursor (`crate::heap::Cursors`).
    #[inline(always)]
    pub(crate) fn pop(&self) -> Option<(u32, bool)> {
        let got = self.take_in(self.state())?;
        self.count_add(1);
        Some(got)
    }

    /// `count += n` (wrapping), as one read-modify-write instruction: only the owner
    /// writes `count`, so a load and a store suffice (no atomic read-modify-write).
    #[inline(always)]
    pub(crate) fn count_add(&self, n: u32) {
        let c = self.count.load(Ordering::Relaxed);
        self.count.store(c.wrapping_add(n), Ordering::Relaxed);
    }

    /// Owner only: puts the slot `p` on the local free list, unless it is the list's first
    /// slot already (the slot freed last, unless a slow path collected it since: a double
    /// free, the one a check of two instructions catches; checked mode catches all of
    /// them).
    ///
    /// # Safety
    /// `p` is a slot of this block that is live or the first of the local free list.
    #[inline(always)]
    pub(crate) unsafe fn push_local(&self, p: *mut u8) -> LocalFree {
        // SAFETY: the caller's, and `offset_of(p)` is `p`'s offset.
        unsafe { self.push_local_at(self.offset_of(p)) }
    }

    /// [`Header::push_local`] of the slot at offset `off`, computed by the caller (the free
    /// fast path has it from its region-bounds check). The link is written through the
    /// block's base, so that the caller's pointer may be dead: the free fast path masks it
    /// into the header's address in place (one instruction, where keeping it costs a copy
    /// more).
    ///
    /// # Safety
    /// As [`Header::push_local`], for the slot at `base + off`.
    #[inline(always)]
    pub(crate) unsafe fn push_local_at(&self, off: u32) -> LocalFree {
        let first = self.local.load(Ordering::Relaxed);
        if off == first {
            return LocalFree::AlreadyFree;
        }
        // SAFETY: the slot is live (not the first free one), so ours to write (caller), and
        // at least 4 bytes long.
        unsafe { self.base().add(off as usize).cast::<u32>().write(first) };
        self.local.store(off, Ordering::Relaxed);
        if self.count_sub_one() {
            LocalFree::Slow
        } else {
            LocalFree::Done
        }
    }

    /// Owner only: `count -= 1` (wrapping); true when it reaches 0. On x86-64 two
    /// instructions, a decrement of the field in memory and a branch on its flags, where
    /// the compiler makes four of an atomic's load, decrement, store and a test.
    #[inline(always)]
    fn count_sub_one(&self) -> bool {
        #[cfg(all(target_arch = "x86_64", not(miri), not(loom)))]
        {
            // SAFETY: `count` is a live, aligned `u32`, written only by its owner, the
            // calling thread: the decrement's load and store are each one aligned 4-byte
            // access, as a relaxed atomic load and store compile to, so the other threads'
            // atomic loads of it see the old or the new value and race with nothing.
            unsafe {
                core::arch::asm!(
                    "dec dword ptr [{header} + {count}]",
                    "jz {zero}",
                    header = in(reg) ptr::from_ref(self),
                    count = const core::mem::offset_of!(Header, count),
                    zero = label { return true; },
                    options(nostack),
                );
            }
            false
        }
        #[cfg(not(all(target_arch = "x86_64", not(miri), not(loom))))]
        {
            let count = self.count.load(Ordering::Relaxed).wrapping_sub(1);
            self.count.store(count, Ordering::Relaxed);
            count == 0
        }
    }

    /// Live slots: handed out and not freed, locally or remotely. (A snapshot by another
    /// thread than the owner is kept within the capacity.)
    pub(crate) fn live(&self) -> u32 {
        self.used()
            .saturating_sub(self.remote_count())
            .min(self.capacity())
    }
}

/// Bytes of never-used slots a block hands out before it looks for freed ones again: the
/// smallest page, so a fresh block is touched page by page (with larger pages, a page is
/// handed out in a few windows: the window is a touch granularity, not a mapping one).
const WINDOW: u32 = 4096;
#[cfg(not(loom))]
const _: () = assert!(WINDOW as usize == crate::os::MIN_PAGE);

/// The end of the bump window for `bump`: the end of `bump`'s page, at most `limit` (so
/// the window holds the slot at `bump`, if `bump < limit`).
const fn window_end(bump: u32, limit: u32) -> u32 {
    let end = (bump / WINDOW + 1) * WINDOW;
    if end < limit {
        end
    } else {
        limit
    }
}

/// The header of the block holding `p`: one mask, the same for every class (every block
/// is [`BLOCK_SIZE`] bytes, aligned to its size).
#[inline(always)]
pub(crate) fn header_of(p: *mut u8) -> *mut Header {
    ((p as usize) & !(BLOCK_SIZE - 1)) as *mut Header
}

#[cfg(all(loom, test))]
pub(crate) mod loom;

#[cfg(all(test, not(loom)))]
mod tests;
