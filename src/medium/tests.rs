//! Unit tests of `crate::medium`: which dirty granules a purge gives back.

use super::*;
use crate::pool::test_pool::TestPool;

/// Of two ranges of dirty granules as long, a purge that needs only one gives back the one
/// in the block freed into longest ago (last on its list), which no request took since,
/// and keeps the one freed last (the likelier to serve the next request). Before, the walk
/// went from the first block and gave back the one freed last.
#[test]
fn a_purge_gives_back_the_longest_unused_of_ranges_as_short_first() {
    purge_order_with_full_blocks(0);
}

/// The same with more medium blocks than a purge records (`SEEN`, 4 in unit tests): its
/// passes walk the lists instead, to the same result.
#[test]
fn a_purge_of_more_blocks_than_it_records_gives_back_as_much_in_the_same_order() {
    purge_order_with_full_blocks(super::purge::SEEN + 1);
}

/// Of two ranges of dirty granules as long, a purge that needs only one gives back the one
/// in the block freed into longest ago (last on its list), which no request took since,
/// and keeps the one freed last; with `full` more blocks holding one live run each, first
/// on the list (allocated last: nothing to give back).
fn purge_order_with_full_blocks(full: usize) {
    let pool = TestPool::new(16 + full, 1);
    let n = 256;
    // Two blocks, each a run of n granules and two runs filling the rest.
    let rest = (MAX_RUN - n) / 2;
    assert_eq!(n + 2 * rest, MAX_RUN);
    let [old, old_rest, old_end, new, new_rest, new_end] =
        [n, rest, rest, n, rest, rest].map(|k| pool.medium_alloc::<false>(k, 8, 0));
    // A full block: runs of the longest medium size and the rest.
    let halves = [MAX_MEDIUM / GRANULE, MAX_RUN - MAX_MEDIUM / GRANULE];
    let fulls: Vec<(*mut u8, usize)> = (0..full)
        .flat_map(|_| halves.map(|k| (pool.medium_alloc::<false>(k, 8, 0), k)))
        .collect();
    assert!(fulls.iter().all(|(p, _)| !p.is_null()));
    let blocks: std::collections::BTreeSet<usize> = fulls.iter().map(|&(p, _)| pool.block_at(p).unwrap().base() as usize).collect();
    assert_eq!(blocks.len(), full, "a block each");
    let (old_block, new_block) = (pool.block_at(old).unwrap(), pool.block_at(new).unwrap());
    assert!(!ptr::eq(old_block, new_block));
    for p in [old, new] {
        pool.medium_free(p, n * GRANULE, 0).unwrap();
    }
    let mut st = pool.lock();
    assert_eq!(st.medium_counts.dirty, 2 * n, "no purge yet");
    // Half of one range is needed: whole pages of it go back (with 64 KiB pages, all
    // but the part sharing a page with the metadata or the next run).
    pool.purge_medium(&mut st, 2 * n - n / 2);
    // SAFETY: medium blocks; we hold the lock.
    let dirty = |h| unsafe { Runs::of(h) }.dirty();
    assert_eq!(dirty(new_block), n, "the range freed last stays");
    assert!(dirty(old_block) <= n / 4, "{} dirty", dirty(old_block));
    drop(st);
    for p in [old_rest, old_end, new_rest, new_end] {
        pool.medium_free(p, rest * GRANULE, 0).unwrap();
    }
    for (p, k) in fulls {
        pool.medium_free(p, k * GRANULE, 0).unwrap();
    }
}
