//! Loom models of the pool's own protocol, on the pool itself, and the fixtures the models
//! of heaps changing hands use (`crate::heap_handover`'s loom module): a pool of a few units
//! built inside a model, a block whose slots are all handed out, and the check of the pool's
//! invariants (this module's parent's docs) once a model's threads are done.
//!
//! Under loom the pool is the real one: its region, heap registry and lifetime-class links
//! are built with loom's atomics in place (`crate::sync::zeroed_atomics`), and the registry
//! holds [`MAX_HEAPS`](super::MAX_HEAPS) heaps. Run with `.ci/loom.sh`.
//!
//! Every model names a mutation of `src/` that makes it fail (each was tried, then undone).

use super::{Pool, PoolState, RETAIN_EMPTY};
use crate::block::{header_of, key, Header, EMPTY_KEY, FULL, HEAPLESS, NO_HOLDER};
use crate::class::{class_of, MAX_SMALL};
use crate::sync::{model, Ordering};
use loom::sync::Arc;
use loom::thread;

/// Units of a model's region: more than any model takes.
const UNITS: usize = 6;

/// The token of a heap the pool hands blocks to (`instance << 16 | id`; no heap of the
/// registry has it).
pub(crate) const TOKEN: u64 = 1 << 16 | 7;

pub(crate) use super::test_pool::TestPool;

/// A pool of [`UNITS`] units and one lifetime class, built inside a model, for its threads.
pub(crate) fn test_pool() -> Arc<TestPool> {
    Arc::new(TestPool::new(UNITS, 1))
}

/// The block at `base`, for a model's thread (blocks are named by address across threads).
///
/// # Safety
/// `base` is a carved block of a pool the caller keeps alive for `'a`.
pub(crate) unsafe fn block<'a>(base: usize) -> &'a Header {
    // SAFETY: carved units stay mapped for the pool's life (caller).
    unsafe { &*header_of(base as *mut u8) }
}

/// The class of the largest small slots: the fewest slots per block.
pub(crate) fn big_class() -> usize {
    class_of(MAX_SMALL, 8).expect("the largest small class")
}

/// The offset of slot `i` of `h`.
pub(crate) fn slot(h: &Header, i: u32) -> u32 {
    let c = h.geometry();
    assert!(i < c.capacity);
    c.first + i * c.stride
}

/// Fixture, for the block's owner: every never-used slot of `h` is handed out at once, as
/// though allocated one by one (`bump == bump_end == limit`, `used == capacity`): a full
/// block without a loom branch per slot.
pub(crate) fn hand_out_all(h: &Header) {
    let c = h.geometry();
    h.bump.store(c.limit, Ordering::Relaxed);
    h.bump_end.store(c.limit, Ordering::Relaxed);
    h.set_used(c.capacity);
}

/// True when the `FULL` flag of `h` is set.
pub(crate) fn is_full(h: &Header) -> bool {
    h.remote.load(Ordering::Relaxed) & FULL != 0
}

/// Where [`check`] found the pool's blocks (their base addresses).
pub(crate) struct Census {
    /// On the partial lists.
    pub(crate) partial: Vec<usize>,
    /// Kept empty for reuse.
    pub(crate) retained: Vec<usize>,
    /// On the lifetime classes' lists: in use, whoever owns them.
    pub(crate) in_use: Vec<usize>,
}

/// Checks the pool's invariants (the parent module's docs) under the lock, once no other
/// thread of the model runs, and says where the blocks are:
///
/// - a block on `partial[h]` has key `h`, owner 0, holder [`NO_HOLDER`] or [`HEAPLESS`],
///   and no `FULL` flag; it holds a live slot unless a pass over emptied blocks is asked for
///   (`emptied`: "Emptied blocks" in the docs, `live(b) == 0 ⇒ emptied == 1`);
/// - a retained block is empty with key [`EMPTY_KEY`] and owner 0, `retained_count ==
///   |retained| <= RETAIN_EMPTY`;
/// - a block is on at most one of those lists, and a listed block of `partial` is in use;
/// - `of_life[l]` holds the blocks of lifetime class `l`, each once, and `Σ_l |of_life[l]|
///   + |retained|` = the units in state `BLOCK`.
pub(crate) fn check(pool: &Pool) -> Census {
    let st = pool.lock();
    let units = pool.units();
    let emptied = pool.emptied.load(Ordering::Relaxed) != 0;
    let mut partial = Vec::new();
    for head in pool.heads() {
        for h in st.partial_list(head).iter(units) {
            assert_eq!(h.owner(), 0, "a partial block is pool-owned");
            assert_eq!(h.key(), key(head.class(), head.life()), "listed by its key");
            assert!(matches!(h.holder(), NO_HOLDER | HEAPLESS));
            assert!(!is_full(h), "a listed block is not FULL");
            assert!(
                h.live() > 0 || emptied,
                "an emptied block on a partial list, and no pass asked for"
            );
            partial.push(h.base() as usize);
        }
    }
    let retained: Vec<usize> = retained_blocks(pool, &st);
    assert_eq!(retained.len(), Pool::retained_blocks(&st));
    assert!(retained.len() <= RETAIN_EMPTY);
    let mut in_use = Vec::new();
    for life in 0..pool.life_count {
        for h in pool.blocks_of_life(&st, life) {
            assert_eq!(h.life(), life);
            in_use.push(h.base() as usize);
        }
    }
    let mut listed: Vec<usize> = partial.iter().chain(&retained).copied().collect();
    let mut carved: Vec<usize> = in_use.iter().chain(&retained).copied().collect();
    listed.sort_unstable();
    carved.sort_unstable();
    assert!(
        listed.windows(2).all(|w| w[0] != w[1]),
        "a block listed twice"
    );
    assert!(
        carved.windows(2).all(|w| w[0] != w[1]),
        "a block in use and kept empty"
    );
    assert!(partial.iter().all(|b| in_use.contains(b)));
    let mut blocks: Vec<usize> = pool.blocks(&st).map(|h| h.base() as usize).collect();
    blocks.sort_unstable();
    assert_eq!(
        blocks, carved,
        "the units in state BLOCK: in use or kept empty"
    );
    Census {
        partial,
        retained,
        in_use,
    }
}

fn retained_blocks(pool: &Pool, st: &PoolState) -> Vec<usize> {
    st.retained
        .iter(pool.units())
        .map(|h| {
            assert_eq!(
                (h.key(), h.owner()),
                (EMPTY_KEY, 0),
                "a retained block is empty"
            );
            h.base() as usize
        })
        .collect()
}

/// `take_block` against the give-back of a block a remote free emptied: a thread without a
/// heap holds the last live slot of a pool-owned block `b` ([`HEAPLESS`], on its head's
/// partial list) and frees it from another thread ([`Pool::free_remote`]: `b` is empty, so
/// the free gives it back if the lock is free, else flags the pool), while a heap's slow
/// path takes a block of the same head under the lock ([`Pool::take_block`], which gives
/// emptied blocks back first).
///
/// Checks: the pool's invariants ([`check`]): `b` ends kept empty, or taken again (fresh,
/// for the heap), or on its partial list with the pass over emptied blocks asked for; never
/// both in use and kept; the block the heap got is its own and on no pool list.
///
/// Fails with: `after_remote_free` not flagging the pool (`emptied.store(1)` removed: the
/// free finds the lock held, and `b` stays empty on its list with nobody to give it back:
/// "an emptied block on a partial list, and no pass asked for").
/// A thread without a heap allocates one slot of `class`: its block `b` (the pool's,
/// [`HEAPLESS`]) and the slot's offset.
fn heapless_slot(pool: &Pool, class: usize) -> (&'static Header, u32) {
    let (p, _) = pool
        .alloc_locked(&mut pool.lock(), class, 0)
        .expect("a slot");
    // SAFETY: `p` is a slot of a carved block of `pool`, which the model keeps until its
    // end.
    let b = unsafe { block(p as usize) };
    (b, b.offset_of(p))
}

#[test]
fn take_block_races_give_back() {
    model(|| {
        let pool = test_pool();
        let class = big_class();
        let (b, a) = heapless_slot(&pool, class);
        let base = b.base() as usize;
        let freer = {
            let pool = pool.clone();
            thread::spawn(move || {
                // SAFETY: as above; the thread holds the pool.
                let b = unsafe { block(base) };
                // SAFETY: `a` is live, and this thread frees it.
                unsafe { pool.free_remote(b, a) };
            })
        };
        // The freeing thread first (see `crate::block::loom`'s docs).
        thread::yield_now();
        let taken = pool
            .take_block(&mut pool.lock(), class, 0, TOKEN)
            .expect("a block")
            .base() as usize;
        freer.join().unwrap();
        let census = check(&pool);
        // SAFETY: a carved block of `pool`.
        let t = unsafe { block(taken) };
        assert_eq!(t.owner(), TOKEN, "the heap's block");
        assert!(census.in_use.contains(&taken));
        assert!(!census.partial.contains(&taken) && !census.retained.contains(&taken));
        if taken == base {
            assert_eq!(t.used(), 0, "given back empty and taken again, fresh");
        } else {
            assert!(census.retained.contains(&base) || census.partial.contains(&base));
        }
    });
}

/// RED-67: a block kept empty for reuse still holds the counts of its last life (a block
/// emptied by remote frees is given back with `used == |remote|`, neither written again),
/// and a heap's [`Pool::take_block`] writes it a fresh header ([`Header::init`]) while
/// another thread reads the block's counts (the statistics' [`Header::snapshot`], taken
/// without the pool lock). The reader must find the block empty: kept (no snapshot), or
/// taken with no live slot.
///
/// Fails with: the owner word stored first in `Header::init` (as before the fix): a reader
/// that reads the new key, the old count and the new (empty) remote list counts the old
/// life's freed slot live: "a block taken again read 1 live slot".
#[test]
fn statistics_read_a_kept_block_taken_again_empty() {
    model(|| {
        let pool = test_pool();
        let class = big_class();
        // Another thread frees the slot: `b` empties with its slot on its remote list
        // (`used == |remote| == 1`), and goes to the kept empty blocks as it is.
        let (b, a) = heapless_slot(&pool, class);
        let base = b.base() as usize;
        // SAFETY: `a` is live, freed once here.
        unsafe { pool.free_remote(b, a) };
        assert!(check(&pool).retained.contains(&base), "kept empty");
        assert_eq!(b.remote_count(), 1, "its old remote list");
        let reader = thread::spawn(move || {
            // SAFETY: as above.
            let b = unsafe { block(base) };
            b.snapshot().map_or(0, |s| s.live)
        });
        let taken = pool
            .take_block(&mut pool.lock(), class, 0, TOKEN)
            .expect("a block")
            .base() as usize;
        assert_eq!(taken, base, "the kept block, taken again");
        let live = reader.join().unwrap();
        assert_eq!(live, 0, "a block taken again read {live} live slot");
    });
}
