//! Unit tests of the pool: taking blocks, the retained bound, partial lists, adoption.

use super::*;
use crate::class::class_of;
use crate::region::UNUSED;

use super::test_pool::TestPool;

/// A pool over 16 units, for 2 lifetime classes.
fn test_pool() -> TestPool {
    TestPool::new(16, 2)
}

/// A heap token no registered heap has: relisting finds no heap for it.
const TOKEN: u64 = 1 << 16 | 9;

fn class64() -> usize {
    class_of(64, 8).unwrap()
}

/// Takes a slot of `h` as its owner would (the fast path's pop, else a refill).
fn take_slot(h: &Header) -> u32 {
    h.pop()
        .or_else(|| h.refill().then(|| h.pop()).flatten())
        .unwrap()
        .0
}

fn of_life(pool: &Pool, st: &PoolState, life: usize) -> Vec<usize> {
    pool.blocks_of_life(st, life)
        .map(|h| h.base() as usize)
        .collect()
}

#[test]
fn taken_blocks_are_fresh_and_listed_under_their_lifetime_class() {
    let pool = test_pool();
    let mut st = pool.lock();
    let a = pool.take_block(&mut st, class64(), 0, TOKEN).unwrap();
    let b = pool.take_block(&mut st, class64(), 1, TOKEN).unwrap();
    assert!(a.is_fresh() && b.is_fresh());
    assert_eq!((a.owner(), a.class(), a.life()), (TOKEN, class64(), 0));
    assert_eq!(of_life(&pool, &st, 0), [a.base() as usize]);
    assert_eq!(of_life(&pool, &st, 1), [b.base() as usize]);
    assert_eq!(pool.blocks(&st).count(), 2);
}

#[test]
fn emptied_blocks_are_retained_up_to_the_bound_then_given_back() {
    // A bound the test pool's 16 units hold with room to pass it (the default, RETAIN_EMPTY,
    // is 128 blocks).
    const RETAIN_EMPTY: usize = 8;
    let pool = test_pool();
    let mut st = pool.lock();
    let retention = crate::decay::Retention {
        empty_block_bytes: RETAIN_EMPTY * crate::class::BLOCK_SIZE,
        ..crate::decay::Retention::DEFAULT
    };
    pool.set_empty_retention(&mut st, &retention);
    let blocks: Vec<&Header> = (0..RETAIN_EMPTY + 2)
        .map(|_| pool.take_block(&mut st, class64(), 0, TOKEN).unwrap())
        .collect();
    for h in &blocks {
        pool.give_empty(&mut st, h);
    }
    assert_eq!(Pool::retained_blocks(&st), RETAIN_EMPTY);
    assert!(
        of_life(&pool, &st, 0).is_empty(),
        "empty blocks are in no class"
    );
    let mut given_back = blocks[RETAIN_EMPTY..].iter();
    let r = &pool.region;
    assert!(given_back.all(|h| r.unit_state(r.unit_of(h.base() as usize)) == UNUSED));
    // A retained block serves any class and lifetime class; it is no longer fresh.
    let tiny = pool.take_block(&mut st, 0, 1, TOKEN).unwrap();
    assert!(!tiny.is_fresh());
    assert_eq!(Pool::retained_blocks(&st), RETAIN_EMPTY - 1);
    assert_eq!(of_life(&pool, &st, 1), [tiny.base() as usize]);
    assert_eq!(pool.give_back_retained(&mut st), RETAIN_EMPTY - 1);
    assert_eq!(pool.blocks(&st).count(), 1);
}

#[test]
fn an_adopted_block_with_live_slots_is_listed_and_taken_again() {
    let pool = test_pool();
    let mut st = pool.lock();
    let h = pool.take_block(&mut st, class64(), 1, TOKEN).unwrap();
    take_slot(h);
    // Its heap's thread exits: the pool adopts it.
    pool.adopt_block(&mut st, h);
    assert_eq!(
        (h.owner(), h.role(), h.holder()),
        (0, Role::Listed, NO_HOLDER)
    );
    let head = HeadIndex::new(class64(), 1);
    assert_eq!(
        st.partial(head).first(pool.units()).map(Header::base),
        Some(h.base())
    );
    // The next heap that needs a block of the head takes it, not a new one.
    let again = pool.take_block(&mut st, class64(), 1, TOKEN + 1).unwrap();
    assert_eq!(again.base(), h.base());
    assert_eq!(again.owner(), TOKEN + 1);
    assert!(st.partial(head).is_empty());
    assert_eq!(pool.blocks(&st).count(), 1);
}

#[test]
fn an_adopted_empty_block_is_kept_empty() {
    let pool = test_pool();
    let mut st = pool.lock();
    let h = pool.take_block(&mut st, class64(), 0, TOKEN).unwrap();
    pool.adopt_block(&mut st, h);
    assert_eq!(Pool::retained_blocks(&st), 1);
    assert!(st.partial(HeadIndex::new(class64(), 0)).is_empty());
    assert!(of_life(&pool, &st, 0).is_empty());
}

#[test]
fn heaps_skip_heapless_blocks_and_prefer_freed_slots() {
    let pool = test_pool();
    let mut st = pool.lock();
    let head = HeadIndex::new(class64(), 0);
    let [heapless, untouched, freed] =
        [(); 3].map(|_| pool.take_block(&mut st, class64(), 0, TOKEN).unwrap());
    for h in [heapless, untouched, freed] {
        take_slot(h);
        take_slot(h);
        pool.adopt_block(&mut st, h);
    }
    heapless.set_holder(HEAPLESS);
    // A remote free into `freed`: it has a slot that was used before.
    // SAFETY: the slot is live and given up here.
    unsafe { freed.push_remote(freed.geometry().first) };
    assert!(freed.has_freed_slots() && !untouched.has_freed_slots());
    let listed: Vec<_> = st
        .partial(head)
        .iter(pool.units())
        .map(Header::base)
        .collect();
    assert_eq!(listed, [freed.base(), untouched.base(), heapless.base()]);
    // `freed` first would be taken first anyway: list it last to see the preference.
    for h in [freed, untouched, heapless] {
        st.partial(head).remove(pool.units(), h);
    }
    for h in [freed, untouched, heapless] {
        st.partial(head).push(pool.units(), h);
    }
    let got = pool.take_block(&mut st, class64(), 0, TOKEN).unwrap();
    assert_eq!(got.base(), freed.base(), "the block with freed slots");
    let got = pool.take_block(&mut st, class64(), 0, TOKEN).unwrap();
    assert_eq!(got.base(), untouched.base());
    let got = pool.take_block(&mut st, class64(), 0, TOKEN).unwrap();
    assert!(got.is_fresh(), "never the heapless block: a new one");
    assert_eq!(
        st.partial(head).first(pool.units()).map(Header::base),
        Some(heapless.base())
    );
}

#[test]
fn a_full_block_freed_into_comes_back_through_the_returned_stack() {
    let pool = test_pool();
    let head = HeadIndex::new(class64(), 0);
    let h = {
        let mut st = pool.lock();
        // A pool-owned block (what threads without a heap allocate from), filled and
        // retired under the lock.
        let h = pool.take_block(&mut st, class64(), 0, 0).unwrap();
        let first = take_slot(h);
        while h.pop().is_some() || h.advance_window() {}
        assert!(h.try_retire());
        drop(st);
        // A free from another thread clears FULL and relists it (lock-free).
        // SAFETY: the slot is live and given up here.
        assert!(unsafe { h.push_remote(first) });
        pool.relist(h);
        h
    };
    let mut st = pool.lock();
    assert!(st.partial(head).is_empty());
    // The next block taken for the head reclaims it, with its free slot.
    let got = pool.take_block(&mut st, class64(), 0, TOKEN).unwrap();
    assert_eq!(got.base(), h.base());
    assert_eq!(got.live(), got.capacity() - 1);
}

/// A lock holder that died left the pool's lists half updated (here: a partial list and a
/// lifetime-class list lost their blocks, the kept empty blocks their count, and a carved
/// unit was never initialised): the repair rebuilds them all from the blocks' headers, and
/// gives the uninitialised unit back.
#[test]
fn repair_rebuilds_the_lock_guarded_lists_from_the_blocks() {
    let pool = TestPool::shared(8, 1, 4096);
    let mut st = pool.lock();
    let head = HeadIndex::new(class64(), 0);
    // A pool-owned block with a live slot, on its partial list; a heap's block; an empty
    // kept block.
    let owned = pool.take_block(&mut st, class64(), 0, TOKEN).unwrap();
    let kept = pool.take_block(&mut st, class64(), 0, 0).unwrap();
    let listed = pool.take_block(&mut st, class64(), 0, 0).unwrap();
    take_slot(listed);
    st.partial(head).push(pool.units(), listed);
    pool.give_empty(&mut st, kept);
    // A unit carved, never initialised.
    let (raw, _) = pool.region.carve(&mut st.region).unwrap();
    // The dead holder's half-done work.
    *st.partial(head) = BlockList::new();
    *st.of_life_mut(0) = BlockList::new();
    st.retained_count = 0;
    assert_eq!(pool.repair(&mut st), 2, "two blocks in use");
    let partial: Vec<_> = st
        .partial(head)
        .iter(pool.units())
        .map(|h| h.base())
        .collect();
    assert_eq!(partial, [listed.base()], "the pool's block is listed again");
    let mut in_use = of_life(&pool, &st, 0);
    in_use.sort_unstable();
    let mut expect = vec![listed.base() as usize, owned.base() as usize];
    expect.sort_unstable();
    assert_eq!(
        in_use, expect,
        "both blocks in use are on their class's list"
    );
    assert_eq!(Pool::retained_blocks(&st), 1, "the empty block is kept");
    assert_eq!(
        pool.region.unit_state(pool.region.unit_of(raw as usize)),
        UNUSED
    );
    assert_eq!(pool.lock_repairs.load(Ordering::Relaxed), 1);
}

/// RED-10: a lock holder killed after a free emptied a pool-owned tiny block (and before
/// it gave the block away) leaves that block in use with no slot used. The repair gives
/// it away; before the fix it unlinked it from its lifetime class's list twice, which
/// tripped `BlockList::remove`'s assertion (debug) or emptied the list (release: the
/// class's other blocks were lost to `release_class`).
#[test]
fn repair_gives_away_an_emptied_tiny_block_and_keeps_the_rest_of_its_class() {
    let pool = TestPool::shared(8, 1, 4096);
    let mut st = pool.lock();
    let head = HeadIndex::new(class64(), 0);
    let other = pool.take_block(&mut st, class64(), 0, 0).unwrap();
    take_slot(other);
    st.partial(head).push(pool.units(), other);
    let tiny = pool.take_block(&mut st, 0, 0, 0).unwrap();
    assert!(tiny.geometry().is_tiny() && tiny.used() == 0);
    assert_eq!(pool.repair(&mut st), 2, "two blocks in use");
    assert_eq!(
        of_life(&pool, &st, 0),
        [other.base() as usize],
        "the class's block in use stays on its list; the empty tiny block leaves it"
    );
    assert_eq!(
        Pool::retained_blocks(&st),
        1,
        "the empty tiny block is kept"
    );
}

/// A lock holder killed inside a medium call left the medium lists and counts half
/// updated (here: every list emptied, every count zeroed): the repair rebuilds both from
/// the blocks' run tables, and the runs free again afterwards. (The kill -9 test of
/// tests/medium_regions.rs reaches a repair only when a kill lands under the lock.)
#[test]
fn repair_rebuilds_the_medium_lists_and_counts_from_the_run_tables() {
    use crate::medium_block::MediumCounts;
    let pool = TestPool::shared(8, 2, 4096);
    let runs = [(8, 0), (40, 1), (3, 1), (500, 0)];
    let ptrs: Vec<_> = runs
        .iter()
        .map(|&(n, life)| pool.medium_alloc::<false>(n, 8, life))
        .collect();
    assert!(ptrs.iter().all(|p| !p.is_null()));
    let mut st = pool.lock();
    let counts = st.medium_counts;
    let lists: Vec<Vec<_>> = (0..2)
        .map(|l| {
            st.medium_list(l)
                .iter(pool.units())
                .map(|h| h.base())
                .collect()
        })
        .collect();
    assert!(counts.live >= 551 && counts.blocks >= 2, "{counts:?}");
    // The dead holder's half-done work.
    for l in 0..2 {
        *st.medium(l) = BlockList::new();
    }
    st.medium_counts = MediumCounts {
        purged: counts.purged,
        locks: counts.locks,
        ..MediumCounts::new()
    };
    assert_eq!(
        pool.repair(&mut st),
        counts.blocks,
        "the medium blocks are in use"
    );
    let rebuilt = st.medium_counts;
    assert_eq!(
        (rebuilt.live, rebuilt.runs, rebuilt.blocks, rebuilt.dirty),
        (counts.live, counts.runs, counts.blocks, counts.dirty),
    );
    for (l, list) in lists.iter().enumerate() {
        let mut found: Vec<_> = st
            .medium_list(l)
            .iter(pool.units())
            .map(|h| h.base())
            .collect();
        let mut want = list.clone();
        found.sort_unstable();
        want.sort_unstable();
        assert_eq!(
            found, want,
            "lifetime class {l}'s medium blocks are listed again"
        );
    }
    drop(st);
    for (&p, &(n, life)) in ptrs.iter().zip(&runs) {
        pool.medium_free(p, n * crate::class::GRANULE, life)
            .expect("a live run frees after the repair");
    }
    assert_eq!(pool.lock().medium_counts.live, 0);
}

/// A pool's view starts [`place::VIEW_COLOUR`] bytes into its page, its fields the medium
/// cache's paths read first: none of them shares a cache set with the first bytes of the
/// pages of a page-aligned allocation. And it keeps whether other processes use its region.
#[test]
fn a_pool_view_starts_past_its_pages_first_line() {
    let private = TestPool::new(1, 1);
    let shared = TestPool::shared(2, 1, 4096);
    for (pool, process_shared) in [(&*private, false), (&*shared, true)] {
        let at = pool as *const Pool as usize;
        assert_eq!(at % os::MIN_PAGE, place::VIEW_COLOUR);
        assert_eq!(pool.is_process_shared(), process_shared);
        for field in [
            ptr::addr_of!(pool.region) as usize,
            ptr::addr_of!(pool.write_seal) as usize,
            &pool.medium_given as *const AtomicU64 as usize,
        ] {
            assert!(
                field % os::MIN_PAGE >= 64,
                "a hot field on a page's first line"
            );
        }
    }
}

/// A private reservation's view maps no bitmap for the blocks' check (no check generation
/// starts there), where every view mapped 255 KiB more, which a process that
/// locks its future mappings locked for each instance (session 20, before this: both views
/// had it). A view of a region laid out as a shared one has it, past the view.
#[test]
fn only_a_view_of_a_shared_layout_maps_the_checks_bitmap() {
    let private = TestPool::new(1, 1);
    let shared = TestPool::shared(2, 1, 4096);
    assert!(private.check_scratch.is_null());
    assert!(!shared.check_scratch.is_null());
    assert_eq!(
        place::view_len(true) - place::view_len(false),
        check::SCRATCH_WORDS * size_of::<usize>()
    );
}
