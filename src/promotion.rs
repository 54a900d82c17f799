//! Promotion: a request whose size class has no free slot and no block to carve (the
//! region is full) is served from the next larger size class of the same lifetime class
//! that has a free slot, instead of failing; and what a free of such a **promoted slot**
//! checks.
//!
//! A promoted slot is an ordinary slot of its block (of the larger class, the **target**):
//! nothing is written beside it or in it. What it holds is recorded per block, in its
//! unit's **promotion record** (in the region's state, [`Region::promotion`]): the
//! **source** class whose requests the block holds promoted, their count, and one bit per
//! slot of the block, set while that slot holds a promoted request. While a block may hold
//! promoted slots its owner-and-key word carries [`PROMOTING`], which no heap's tag has:
//! every free of the block misses the free fast path and is checked here, so that
//!
//! - a free with the source class's size (and the block's lifetime class) is right exactly
//!   when the slot's bit is set, and clears it (one atomic step: of two such frees racing,
//!   one is reported);
//! - a free with the block's own class is right exactly when the slot's bit is clear;
//! - anything else is misuse, reported as before.
//!
//! Invariants, for a unit whose block has [`PROMOTING`]:
//! `count = |{slot i : bit(i) = 1}|`, every slot with its bit set is live (handed out and
//! not freed) and was asked for as the source class, and `source < class(block)`; a
//! promoted request's usable size is its own class's stride, never the slot's. A block without [`PROMOTING`] holds no promoted slot, and its
//! record is not read (it is rewritten when the block first promotes again), so emptying,
//! releasing or resetting a block needs no step of its own here: a block's header is
//! rewritten then ([`Header::reset`] clears the flag). Only the block's owner promotes into
//! it (sets bits, counts up, changes the source); any thread's free clears a bit and
//! counts down.
//!
//! The flag is cleared by the owner once the count is 0 again ([`settle`]: at its next free
//! of the block, or at its alloc slow path, which collects the block's remote frees).
//!
//! A block holds promoted requests of one source class at a time: a request of another
//! class goes to another block (or class) while the block's count is not 0.
//!
//! Promotion runs on the alloc slow path only, after the heap's own blocks, the pool's and
//! a compaction all failed; [`without_promotion`] turns it off for a call (the
//! `try_` allocations), and a thread without a heap never promotes.

use crate::block::{header_of, Header, PROMOTING};
use crate::class::{Class, HeadIndex, CLASSES, MAX_SMALL_ALIGN};
use crate::counters::Counter;
use crate::heap::{self, Heap};
use crate::misuse::Problem;
use crate::pool::Pool;
use crate::region::{Region, PROMOTION_WORDS};
use crate::sync::{AtomicU64, Ordering};
use core::cell::Cell;

/// The smallest stride a request is promoted into: a unit's record has a bit per 8 bytes
/// ([`PROMOTION_WORDS`]), so a bit per slot of any class at least this wide.
const MIN_TARGET_STRIDE: u32 = 8;
const _: () = assert!((PROMOTION_WORDS - 1) * 64 * MIN_TARGET_STRIDE as usize >= crate::class::BLOCK_SIZE);
/// The promotion flag is an owner bit above every heap id (`block::PROMOTING` is bit 15 of
/// the owner token).
const _: () = assert!(crate::pool::MAX_HEAPS <= 1 << 15);
const _: () = assert!(PROMOTING == 1 << (16 + 15));

/// The information word of a record: `count | (source + 1) << 32` (0: never promoted).
const SOURCE_SHIFT: u32 = 32;
const COUNT_MASK: u64 = (1 << SOURCE_SHIFT) - 1;

/// The promotion record of one unit: see the module docs.
pub(crate) struct Record<'a> {
    info: &'a AtomicU64,
    bits: &'a [AtomicU64],
}

impl<'a> Record<'a> {
    /// The record of the unit of block `h`, a block of `region`.
    pub(crate) fn of(region: &'a Region, h: &Header) -> Record<'a> {
        let u = region.unit_of(h.base() as usize);
        // SAFETY: the region's state holds PROMOTION_WORDS words per unit, and u is one of
        // its units; they live as long as the region.
        let words = unsafe {
            core::slice::from_raw_parts(region.promotion.add(u * PROMOTION_WORDS), PROMOTION_WORDS)
        };
        Record {
            info: &words[0],
            bits: &words[1..],
        }
    }

    /// The class whose requests the block holds promoted (meaningful while `count > 0`).
    pub(crate) fn source(&self) -> Option<usize> {
        let s = self.info.load(Ordering::Acquire) >> SOURCE_SHIFT;
        (s != 0).then(|| s as usize - 1)
    }

    /// Promoted slots live in the block.
    pub(crate) fn count(&self) -> usize {
        (self.info.load(Ordering::Acquire) & COUNT_MASK) as usize
    }

    /// True when slot `i` holds a promoted request.
    pub(crate) fn is_promoted(&self, i: usize) -> bool {
        self.bits[i / 64].load(Ordering::Acquire) & 1 << (i % 64) != 0
    }

    /// Clears slot `i`'s bit; true when it was set (then the count goes down by one).
    fn take(&self, i: usize) -> bool {
        let mask = 1 << (i % 64);
        let was = self.bits[i / 64].fetch_and(!mask, Ordering::AcqRel) & mask != 0;
        if was {
            self.info.fetch_sub(1, Ordering::AcqRel);
        }
        was
    }

    /// Owner only: starts the record over for a block of `capacity` slots holding
    /// promoted requests of class `source` (none yet).
    fn restart(&self, capacity: usize, source: usize) {
        for w in &self.bits[..capacity.div_ceil(64)] {
            w.store(0, Ordering::Relaxed);
        }
        self.info
            .store((source as u64 + 1) << SOURCE_SHIFT, Ordering::Release);
    }

    /// Owner only: slot `i` now holds a promoted request.
    fn mark(&self, i: usize) {
        self.bits[i / 64].fetch_or(1 << (i % 64), Ordering::AcqRel);
        self.info.fetch_add(1, Ordering::AcqRel);
    }
}

/// The index of the slot at `p` in block `h` (`p` must start a slot).
fn slot_index(h: &Header, p: *mut u8) -> usize {
    let c = h.geometry();
    ((h.offset_of(p) - c.first) / c.stride) as usize
}

/// The largest alignment a request of class `class` can have: its stride's largest power
/// of two divisor (a class serves an alignment only if its stride is a multiple of it), at
/// most [`MAX_SMALL_ALIGN`].
fn align_of(c: &Class) -> u32 {
    (1u32 << c.stride.trailing_zeros()).min(MAX_SMALL_ALIGN as u32)
}

/// The classes a request of class `class` may be promoted into, smallest first: larger,
/// at least [`MIN_TARGET_STRIDE`] wide, and with every slot aligned as the request may
/// need.
pub(crate) fn targets(class: usize) -> impl Iterator<Item = usize> {
    let align = align_of(&CLASSES[class]);
    (class + 1..CLASSES.len()).filter(move |&t| {
        let c = &CLASSES[t];
        c.stride >= MIN_TARGET_STRIDE && c.stride.is_multiple_of(align) && c.first.is_multiple_of(align)
    })
}

thread_local! {
    /// Set while the calling thread's allocation must not promote ([`without_promotion`]).
    static OFF: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` (an allocation) with promotion turned off on the calling thread: a request
/// whose class has no free slot fails (null) rather than taking a larger slot.
pub(crate) fn without_promotion<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            OFF.with(|off| off.set(self.0));
        }
    }
    let _restore = Restore(OFF.with(|off| off.replace(true)));
    f()
}

/// True when the calling thread's allocation may promote.
fn allowed() -> bool {
    !OFF.with(Cell::get)
}

/// The alloc slow path's last resort, on `heap` (the calling thread's, which found no slot
/// of (class, life) and no block to carve): a slot of the smallest class of
/// [`targets`] that has one in this heap's blocks or the pool's, recorded as promoted from
/// `class`. Returns it as the heap's paths do (its address, and whether it reads zero);
/// `None` when no larger class has a free slot either, or promotion is off.
pub(crate) fn alloc(heap: &Heap, class: usize, life: usize) -> Option<(*mut u8, bool)> {
    if !allowed() {
        return None;
    }
    let pool = heap.pool();
    // The pool's lists, read once under its lock: which target heads have partial blocks.
    let mut pooled = [0u64; CLASSES.len().div_ceil(64)];
    {
        let st = pool.lock();
        for t in targets(class) {
            if !st.partial_list(HeadIndex::new(t, life)).is_empty() {
                pooled[t / 64] |= 1 << (t % 64);
            }
        }
    }
    for t in targets(class) {
        // SAFETY: the caller is the heap's owner; t < CLASS_COUNT, life < life_count.
        let current = unsafe { heap::current_block(heap, t, life) };
        let has_current = !core::ptr::eq(current, heap::empty_block());
        // SAFETY: a current block other than the empty one is live and this heap's.
        if has_current && !accepts(pool, unsafe { &*current }, class) {
            continue;
        }
        if !has_current && pooled[t / 64] & 1 << (t % 64) == 0 {
            continue;
        }
        let Some((p, zeroed)) = heap.alloc_from_heads(t, life) else {
            continue;
        };
        // SAFETY: p is a slot the heap just took from its current block of (t, life).
        let h = unsafe { &*header_of(p) };
        if !accepts(pool, h, class) {
            // The block holds another class's promoted requests: the slot goes back (a
            // current block's local free never needs the slow path).
            // SAFETY: p was popped from h just now and is not handed out.
            let undone = unsafe { h.push_local(p) };
            debug_assert_eq!(undone, crate::block::LocalFree::Done);
            continue;
        }
        mark(pool, h, p, class);
        pool.counters
            .add(HeadIndex::new(class, life).get(), Counter::Promoted, 1);
        return Some((p, zeroed));
    }
    None
}

/// True when block `h` (its owner asking) may take a request promoted from `class`: it
/// holds no promoted request of another class.
fn accepts(pool: &Pool, h: &Header, class: usize) -> bool {
    if !h.is_promoting() {
        return true;
    }
    let r = Record::of(&pool.region, h);
    r.count() == 0 || r.source() == Some(class)
}

/// Owner only: records slot `p` of block `h` as holding a request of class `source`, then
/// flags the block (Release: a free that sees the flag sees the record). The record is in
/// the region's state, written without the pool lock: marked (`crate::pool::write_seal`).
fn mark(pool: &Pool, h: &Header, p: *mut u8, source: usize) {
    let _writing = pool.writing();
    let r = Record::of(&pool.region, h);
    if !h.is_promoting() || r.source() != Some(source) {
        // A record not in use (the flag is clear, or its count is 0: `accepts`).
        r.restart(h.capacity() as usize, source);
    }
    r.mark(slot_index(h, p));
    if !h.is_promoting() {
        h.set_promoting(true);
    }
}

/// Owner only (`heap` owns block `h`): clears [`PROMOTING`] once the block holds no
/// promoted slot (its record's count is 0), so that its frees take the fast path again.
/// Only the owner promotes into its block, so the count cannot rise meanwhile; a free
/// that read the flag before it was cleared is checked against the record as before
/// (every bit clear: an ordinary free). Run by the owner's free of a promoting block and
/// by its alloc slow path (which collects the block's remote frees).
pub(crate) fn settle(heap: &Heap, h: &Header) {
    if h.is_promoting() && h.owner() == heap.token && Record::of(&heap.pool().region, h).count() == 0 {
        h.set_promoting(false);
    }
}

/// The check of a free (or resize) of `p` as (`class`, `life`) in block `h`, which has
/// [`PROMOTING`] and a key: right when `p` starts a slot of the block's lifetime class,
/// and either `class` is the block's and the slot is not promoted, or `class` is the
/// source and it is. With `take`, a promoted slot's bit is cleared by the check (a free).
/// `Ok(true)` for a promoted slot.
pub(crate) fn check(
    region: &Region,
    h: &Header,
    p: *mut u8,
    class: usize,
    life: usize,
    take: bool,
) -> Result<bool, Problem> {
    let (block_class, block_life) = (h.class(), h.life());
    let stride = CLASSES[class].stride as usize;
    let wrong = Problem::WrongBlock {
        class,
        stride,
        block_class: Some(block_class),
        block_life,
    };
    if life != block_life {
        return Err(wrong);
    }
    let off = h.offset_of(p) as usize;
    if !h.is_slot(off) {
        return Err(Problem::NotASlot {
            stride: h.geometry().stride as usize,
        });
    }
    let r = Record::of(region, h);
    let i = slot_index(h, p);
    let source = r.source();
    if class == block_class {
        return match source {
            Some(source) if r.is_promoted(i) => Err(Problem::Promoted {
                stride,
                source,
                source_stride: CLASSES[source].stride as usize,
            }),
            _ => Ok(false),
        };
    }
    if source != Some(class) {
        return Err(wrong);
    }
    let promoted = if take { r.take(i) } else { r.is_promoted(i) };
    if promoted {
        Ok(true)
    } else {
        Err(Problem::NotPromoted {
            class,
            stride,
            block_class,
        })
    }
}

/// [`check`] of a free of `p` (`take`): a promoted slot's bit is cleared, a write of the
/// region's state (the unit's record) without the pool lock, so marked
/// (`crate::pool::write_seal`): a free that follows may be a local one, which marks nothing.
pub(crate) fn check_free(
    pool: &Pool,
    h: &Header,
    p: *mut u8,
    class: usize,
    life: usize,
) -> Result<bool, Problem> {
    let _writing = pool.writing();
    check(&pool.region, h, p, class, life, true)
}

/// The class a request for slot `p` of block `h` (a block of `region` with a key) was
/// made with: the source class for a promoted slot, else the block's.
pub(crate) fn class_of_slot(region: &Region, h: &Header, p: *mut u8) -> usize {
    if h.is_promoting() && h.is_slot(h.offset_of(p) as usize) {
        let r = Record::of(region, h);
        if let Some(source) = r.source() {
            if r.is_promoted(slot_index(h, p)) {
                return source;
            }
        }
    }
    h.class()
}

/// Promoted slots live in block `h` (0 unless it has [`PROMOTING`]), and their class.
pub(crate) fn promoted_in(region: &Region, h: &Header) -> (usize, Option<usize>) {
    if !h.is_promoting() {
        return (0, None);
    }
    let r = Record::of(region, h);
    (r.count(), r.source())
}

/// For `verify` (allocates nothing): calls `f` with the index of every slot of block `h`
/// (which has [`PROMOTING`]) whose bit is set, in order, and returns the record's count and
/// source. A bit past the block's slots in its last word is reported too (as a slot index
/// at or past the capacity).
pub(crate) fn for_each_promoted(
    region: &Region,
    h: &Header,
    mut f: impl FnMut(usize),
) -> (usize, Option<usize>) {
    let r = Record::of(region, h);
    // Only the block's own words: `restart` clears those, and bits past them may be left
    // from an earlier block of the unit with more slots (never read).
    let words = (h.capacity() as usize).div_ceil(64);
    for (w, word) in r.bits[..words].iter().enumerate() {
        let mut bits = word.load(Ordering::Acquire);
        while bits != 0 {
            f(w * 64 + bits.trailing_zeros() as usize);
            bits &= bits - 1;
        }
    }
    (r.count(), r.source())
}
