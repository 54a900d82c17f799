//! A batch's entries and the chains they keep: entry `i` holds the pending frees of one
//! block, `entry_of(b) = (b / BLOCK_SIZE) % ENTRIES` ([`entry_of`]), as a chain of slots
//! linked through their first 4 bytes; how a free joins a chain ([`free_in`], the quick way
//! [`append_quick`]), and how a chain goes to its block ([`flush_entry`], [`push_chain`]).
//!
//! Invariants (for the thread the batch's exclusion lets touch them): for a used entry
//! `e` (`block` not null), `chain = first -> ... -> last`, `|chain| = limit - left <=
//! limit = chain_limit(stride, asymmetric)`, every slot of the chain counted in its block's
//! `used`, `slots = block + class(block).first`, `slots_len = class(block).link_limit() -
//! class(block).first` (every slot start of the block lies in `[slots, slots +
//! slots_len)`, and a link written there stays inside the block), and
//! `entry_of(e.block)` is the entry's index; `left = 0` only until the block's next free
//! pushes the chain; an unused entry is `UNUSED` (`slots_len = 0`: no pointer lies in its
//! slots).

use super::*;

/// One block's pending frees (see the module docs); `block` null: an unused entry.
#[derive(Clone, Copy)]
struct Pending {
    block: *const Header,
    first: u32,
    last: u32,
    /// `limit(b)`.
    limit: u32,
    /// `limit(b) - |chain(b)|`: the slots the chain still takes (0: full, pushed by the
    /// block's next free).
    left: u32,
    /// The address of the block's first slot (`block + first`).
    slots: usize,
    /// The bytes from the block's first slot to the end of the offsets a link may be
    /// written at (`link_limit - first`: the last slot's end less 3), a word as the address
    /// it is compared with (the quick way's compare takes it from memory).
    slots_len: usize,
}

const UNUSED: Pending = Pending {
    block: ptr::null(),
    first: 0,
    last: 0,
    limit: 0,
    left: 0,
    slots: 0,
    slots_len: 0,
};

/// A batch's entries, field by field: entry `i` is `(block[i], first[i], last[i], limit[i],
/// left[i], slots[i], slots_len[i])`, a [`Pending`]. Kept as one array per field so that the quick way
/// ([`append_quick`]) addresses each field from the batch and the entry's index with no
/// multiplication (an 8-byte and a 4-byte stride) and no register for the entry's address.
pub(super) struct Entries {
    pub(super) block: [*const Header; ENTRIES],
    pub(super) first: [u32; ENTRIES],
    pub(super) left: [u32; ENTRIES],
    pub(super) last: [u32; ENTRIES],
    pub(super) limit: [u32; ENTRIES],
    pub(super) slots: [usize; ENTRIES],
    pub(super) slots_len: [usize; ENTRIES],
}

impl Entries {
    /// Entry `i`.
    #[inline(always)]
    fn get(&self, i: usize) -> Pending {
        Pending {
            block: self.block[i],
            first: self.first[i],
            last: self.last[i],
            limit: self.limit[i],
            left: self.left[i],
            slots: self.slots[i],
            slots_len: self.slots_len[i],
        }
    }

    /// Makes entry `i` `e`.
    #[inline(always)]
    fn set(&mut self, i: usize, e: Pending) {
        self.block[i] = e.block;
        self.first[i] = e.first;
        self.last[i] = e.last;
        self.limit[i] = e.limit;
        self.left[i] = e.left;
        self.slots[i] = e.slots;
        self.slots_len[i] = e.slots_len;
    }
}

crate::sync::const_unless_loom! {
    pub(super) fn new_entries() -> UnsafeCell<Entries> {
        UnsafeCell::new(Entries {
            block: [ptr::null(); ENTRIES],
            first: [0; ENTRIES],
            left: [0; ENTRIES],
            last: [0; ENTRIES],
            limit: [0; ENTRIES],
            slots: [0; ENTRIES],
            slots_len: [0; ENTRIES],
        })
    }
}

/// [`RemoteBatch::free`] on the entries: the slot joins its block's chain in the block's
/// entry; the rest (a full chain, a new chain) out of line.
///
/// # Safety
/// As [`RemoteBatch::free`], with the entries the caller's alone.
#[inline(always)]
pub(super) unsafe fn free_in(
    entries: &mut Entries,
    pending: &AtomicU32,
    pool: &Pool,
    h: &Header,
    off: u32,
) -> BatchFree {
    let block = ptr::from_ref(h);
    let i = entry_of(block);
    if entries.block[i] == block && entries.left[i] > 0 {
        // SAFETY: forwarded.
        return unsafe { append(entries, i, h, off) };
    }
    // SAFETY: forwarded.
    unsafe { free_in_entry(entries, i, pending, pool, h, off) }
}

/// [`RemoteBatch::try_append`] on the entries: block `h`'s chain takes the slot at `p`
/// when it has room (a full one is pushed by [`free_in`]), `p` lies among the block's
/// slots (not in its header area or its tail past the last slot: the general way reports
/// those) and the slot is not already free (as [`append`] tests). False: nothing changed.
///
/// # Safety
/// As [`free_in`], with `p` the slot's address (`off` its offset in `h`).
#[inline(always)]
pub(super) unsafe fn append_quick(entries: &mut Entries, h: &Header, p: *mut u8) -> bool {
    let i = entry_of(ptr::from_ref(h));
    // One test that the entry holds p's block and that p lies among its slots, `p - slots
    // < slots_len` (unsigned): a range of the block's own says which block it is, so it
    // stands for `free_in`'s compare of the block, at one subtraction more. A pointer in
    // the header area or the tail (or within 4 bytes of the last slot's end), where a link
    // written at `p` would overwrite this block's header or the next one's, or a slot handed
    // out there would run past the block's end, goes to the general way, which reports it.
    // (Inside a slot it is not told here: checked mode's test.)
    if (p as usize).wrapping_sub(entries.slots[i]) >= entries.slots_len[i] {
        return false;
    }
    // The same tests as `append`, the header's first: its line is read before the entry's
    // chain (fewer values live at once).
    let off = h.offset_of(p);
    if h.is_freed_last(off) {
        return false;
    }
    let first = entries.first[i];
    if first == off {
        return false;
    }
    // The room, taken in memory with one subtraction whose borrow says the chain was full
    // (`left` 0, put back at once: the entries are the caller's alone, and `left <=
    // limit` holds again when the call returns).
    let (left, full) = entries.left[i].overflowing_sub(1);
    entries.left[i] = left;
    if full {
        entries.left[i] = 0;
        return false;
    }
    // The link written through `p` itself (the slot's first 4 bytes, as `link_slot`
    // writes them): the header's address is not needed past its tests (one register less
    // to save).
    // SAFETY: the slot is the caller's (given up), in block h, and aligned to 4 bytes at
    // least (every stride is a multiple of 4), as `link_slot`'s write needs too.
    unsafe { p.cast::<u32>().write(first) };
    entries.first[i] = off;
    true
}

/// Adds slot `off` to the chain of entry `i`, block `h`'s, unless it is the chain's first
/// or the block's remote or local list's first (already free: [`Header::is_freed_last`]).
///
/// # Safety
/// As [`free_in`], with entry `i` holding block `h`'s chain.
#[inline(always)]
unsafe fn append(entries: &mut Entries, i: usize, h: &Header, off: u32) -> BatchFree {
    let first = entries.first[i];
    if h.is_freed_last(off) || first == off {
        return BatchFree::AlreadyFree;
    }
    // SAFETY: the slot is the caller's (given up), in block h.
    unsafe { h.link_slot(off, first) };
    entries.first[i] = off;
    entries.left[i] -= 1;
    BatchFree::Done
}

/// [`free_in`]'s other cases, for entry `i`, block `h`'s: the slot starts a chain of the
/// block; the entry's chain goes to its block first (block `h`'s, full, or another
/// block's). A slot that is the first of the full chain or of the block's remote list is
/// already free.
///
/// # Safety
/// As [`free_in`], with `i` the entry of block `h`.
#[cold]
#[inline(never)]
unsafe fn free_in_entry(
    entries: &mut Entries,
    i: usize,
    pending: &AtomicU32,
    pool: &Pool,
    h: &Header,
    off: u32,
) -> BatchFree {
    let block = ptr::from_ref(h);
    let e = entries.get(i);
    if (e.block == block && e.first == off) || h.is_freed_last(off) {
        return BatchFree::AlreadyFree;
    }
    let limit = chain_limit(h.stride, fence::is_asymmetric());
    if limit == 1 {
        // SAFETY: forwarded.
        unsafe { push_chain(pool, h, off, off, 1) };
        return BatchFree::Done;
    }
    if !e.block.is_null() {
        // Block h's full chain, or another block's, holds the entry: it goes to its block.
        // SAFETY: the chain's slots are the batch's.
        unsafe { flush_entry(pool, entries, i) };
    }
    // Before any flusher can see the slot freed (see `RemoteBatch::flush`).
    pending.store(1, Ordering::Relaxed);
    // A chain of one slot: its link is written when it is pushed.
    entries.set(
        i,
        Pending {
            block,
            first: off,
            last: off,
            limit,
            left: limit - 1,
            slots: block as usize + h.geometry().first as usize,
            slots_len: (h.geometry().link_limit() - h.geometry().first) as usize,
        },
    );
    BatchFree::Done
}

/// `limit(b)` for a block of slots of `stride` bytes: `clamp(BATCH_BYTES / stride, 1,
/// MAX_CHAIN)` once the fences are known asymmetric (`asymmetric`), else 1 (every free
/// pushed at once, no chain kept): so a batch holds a chain only when the holder's fence
/// may be a compiler fence, which is what lets [`RemoteBatch::try_append`] use it without
/// testing the fences' mode. The caller has made the choice ([`RemoteBatch::enter`]'s
/// fence makes it).
#[inline(always)]
fn chain_limit(stride: u32, asymmetric: bool) -> u32 {
    if asymmetric {
        (BATCH_BYTES / stride).clamp(1, MAX_CHAIN)
    } else {
        1
    }
}

/// The entry a block's chain takes: `entry_of(b) = (b / BLOCK_SIZE) % ENTRIES` (blocks are
/// aligned to their size), so a free finds its block's chain with no search; a block whose
/// entry holds another block's chain pushes that chain first.
#[inline(always)]
pub(super) fn entry_of(block: *const Header) -> usize {
    (block as usize >> BLOCK_SHIFT) % ENTRIES
}

/// Pushes entry `i`'s chain to its block and leaves the entry unused.
///
/// # Safety
/// The caller may touch the entries; entry `i`'s block is a live block of `pool` whose
/// chain slots are the batch's.
pub(super) unsafe fn flush_entry(pool: &Pool, entries: &mut Entries, i: usize) {
    let e = entries.get(i);
    // SAFETY: the block is live (caller).
    let h = unsafe { &*e.block };
    // SAFETY: the chain's slots are the batch's, linked from first to last.
    unsafe { push_chain(pool, h, e.first, e.last, e.limit - e.left) };
    entries.set(i, UNUSED);
}

/// Pushes a chain of `n` slots of block `h` on its remote list, relists the block when it
/// was `FULL` and gives it back when it may now be empty and nobody would notice (as
/// [`Pool::free_remote`] for one slot).
///
/// # Safety
/// As [`Header::push_remote_chain`]; `h` is a live block of `pool`.
pub(super) unsafe fn push_chain(pool: &Pool, h: &Header, first: u32, last: u32, n: u32) {
    // A write of the state without the pool lock: marked (`crate::pool::write_seal`).
    let _writing = pool.writing();
    let head = HeadIndex::new(h.class(), h.life()).get();
    pool.counters.add(head, Counter::RemoteFree, u64::from(n));
    // SAFETY: forwarded.
    if unsafe { h.push_remote_chain(first, last, n) } {
        pool.relist(h);
    }
    pool.after_remote_free(h);
}
