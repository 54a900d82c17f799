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

/// Which of `addrs` a mapping of the process starts at (a line of `/proc/self/maps`): the
/// kernel's mapping boundaries there. Looked at only at addresses inside a region, so that
/// other tests' mappings, which the kernel may merge with the region's first or last
/// mapping or split off again meanwhile, change nothing.
fn mappings_start_at<const N: usize>(addrs: [usize; N]) -> [bool; N] {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let starts: Vec<usize> = maps
        .lines()
        .filter_map(|l| usize::from_str_radix(l.split('-').next()?, 16).ok())
        .collect();
    addrs.map(|a| starts.contains(&a))
}

/// Two runs of `n` granules, `a` then `b`, of which `a` is written with `byte` and freed
/// (its pages resident and dirty): `(a, b)`. Both start on a page of the pool's page size
/// (a larger one than the kernel's under `COHORT_PAGE_SIZE`, where moves go by whole
/// pages): a run of the granules from the block's metadata to its first page boundary is
/// taken first and kept, for the caller to free ([`free_pad`]).
fn a_freed_run_then_a_taken_one(pool: &TestPool, n: usize, byte: u8) -> (*mut u8, *mut u8) {
    let pad = (os::page_size().max(META_BYTES) - META_BYTES) / GRANULE;
    if pad > 0 {
        assert!(!pool.medium_alloc::<false>(pad, 8, 0).is_null());
    }
    let a = pool.medium_alloc::<false>(n, 8, 0);
    assert_eq!(a as usize % os::page_size(), 0, "a run on a page");
    let b = pool.medium_alloc::<false>(n, 8, 0);
    // SAFETY: a fresh run of `n` granules.
    unsafe { ptr::write_bytes(a, byte, n * GRANULE) };
    pool.medium_free(a, n * GRANULE, 0).unwrap();
    (a, b)
}

/// Frees the run [`a_freed_run_then_a_taken_one`] took before its two, if any: the first
/// run of the block of `b`.
fn free_pad(pool: &TestPool, b: *mut u8) {
    let pad = (os::page_size().max(META_BYTES) - META_BYTES) / GRANULE;
    if pad > 0 {
        let h = pool.block_at(b).unwrap();
        pool.medium_free(h.base().wrapping_add(META_BYTES), pad * GRANULE, 0)
            .unwrap();
    }
}

/// A run's clean pages, taken by a move, hold the dirty pages of a freed run (its bytes,
/// resident: no page faulted in), whose granules read zero and are clean after, the dirty
/// count falls by as many, the range moved into is remembered, and once it is all free and
/// clean again (a purge) it is mapped fresh: the region's mappings are as before.
#[test]
fn a_move_takes_a_freed_runs_pages_and_the_range_heals_once_clean() {
    let pool = TestPool::new(4, 1);
    let n = 256;
    let bytes = n * GRANULE;
    let (a, b) = a_freed_run_then_a_taken_one(&pool, n, 0x5a);
    let edges = [b as usize, b as usize + bytes];
    let before = mappings_start_at(edges);
    let mut st = pool.lock();
    let h = pool.block_at(b).unwrap();
    let g = (b as usize - h.base() as usize) / GRANULE;
    let dirty = st.medium_counts.dirty;
    assert_eq!(pool.move_into(&mut st, h, g, n), n, "the freed run's pages serve the whole run");
    assert_eq!(st.medium_counts.dirty, dirty - n);
    assert_eq!(pool.medium_moved.len(), 1);
    // SAFETY: the runs' pages, mapped.
    unsafe {
        assert_eq!(os::resident_bytes(b, bytes), bytes, "the pages moved in are resident");
        assert_eq!(os::resident_bytes(a, bytes), 0, "the freed run holds no page");
        assert_eq!((*b, *b.add(bytes - 1), *a), (0x5a, 0x5a, 0));
    }
    // SAFETY: a medium block; we hold the lock.
    unsafe { Runs::of(h) }.check().unwrap();
    drop(st);
    assert_eq!(
        mappings_start_at(edges),
        [true, true],
        "the range moved into is a mapping of its own"
    );
    pool.medium_free(b, bytes, 0).unwrap();
    let mut st = pool.lock();
    pool.purge_medium(&mut st, 0);
    assert_eq!(pool.medium_moved.len(), 0, "healed");
    assert_eq!(pool.medium_moved.healed.load(Ordering::Relaxed), 1);
    drop(st);
    // Merged again: the range's edges are the kernel's boundaries no more than before.
    // (Counting the region's mappings failed in CI: another test's mapping beside the
    // region, merged with its first one or not, changes the count.)
    assert_eq!(mappings_start_at(edges), before, "merged again");
}

/// No move into a locked mapping (`mremap` would unlock the mapping it moves pages out of),
/// nor in a region other processes map (its pages are not the process's to move).
#[test]
fn no_move_into_a_locked_mapping_nor_in_a_shared_region() {
    let n = 64;
    let bytes = n * GRANULE;
    for shared in [false, true] {
        let pool = match shared {
            true => TestPool::shared(4, 1, 4096),
            false => TestPool::new(4, 1),
        };
        let (_, b) = a_freed_run_then_a_taken_one(&pool, n, 1);
        // SAFETY: the run's pages, ours.
        let locked = !shared && unsafe { libc::mlock(b.cast(), bytes) } == 0;
        let mut st = pool.lock();
        let h = pool.block_at(b).unwrap();
        let g = (b as usize - h.base() as usize) / GRANULE;
        if shared || locked {
            assert_eq!(pool.move_into(&mut st, h, g, n), 0, "shared {shared}");
        }
        drop(st);
        if locked {
            // SAFETY: as above.
            unsafe { libc::munlock(b.cast(), bytes) };
        }
        pool.medium_free(b, bytes, 0).unwrap();
    }
}

/// A block leaving the medium blocks takes no range of the table with it: the ranges in it
/// are mapped fresh.
#[test]
fn a_block_leaving_the_medium_blocks_heals_its_ranges() {
    let pool = TestPool::new(4, 1);
    let n = 128;
    let bytes = n * GRANULE;
    let (_, b) = a_freed_run_then_a_taken_one(&pool, n, 1);
    let mut st = pool.lock();
    let h = pool.block_at(b).unwrap();
    let g = (b as usize - h.base() as usize) / GRANULE;
    assert_eq!(pool.move_into(&mut st, h, g, n), n);
    drop(st);
    // SAFETY: the run moved into, ours.
    unsafe { ptr::write_bytes(b, 2, bytes) };
    pool.medium_free(b, bytes, 0).unwrap();
    free_pad(&pool, b);
    let mut st = pool.lock();
    assert_eq!(pool.medium_moved.len(), 1, "its pages are dirty: not healed by a free");
    pool.compact_medium(&mut st);
    assert_eq!(pool.medium_moved.len(), 0);
}

/// A move takes only ranges of at least 128 KiB (or a page when larger): a
/// run's clean pages shorter than that are left to fault in (no move made, no range in the
/// table), and a range that long takes a freed run's pages. Before, ranges from 32 KiB were
/// moved: a call and a range of the table each for a quarter of the pages (the short range
/// here was moved: `62 != 0`, and `32 != 0` under
/// `COHORT_PAGE_SIZE=64K`).
#[test]
fn a_move_takes_only_ranges_of_at_least_128_kib() {
    let pool = TestPool::new(4, 1);
    let per_page = (os::page_size() / GRANULE).max(1);
    let least = (128 << 10).max(os::page_size()) / GRANULE;
    let (_, b) = a_freed_run_then_a_taken_one(&pool, 2 * least, 3);
    let mut st = pool.lock();
    let h = pool.block_at(b).unwrap();
    let g = (b as usize - h.base() as usize) / GRANULE;
    let moved = &pool.medium_moved;
    let dirty = st.medium_counts.dirty;
    assert_eq!(pool.move_into(&mut st, h, g, least - per_page), 0, "a page short of the least");
    assert_eq!((moved.moves.load(Ordering::Relaxed), moved.len()), (0, 0));
    assert_eq!(st.medium_counts.dirty, dirty);
    assert_eq!(pool.move_into(&mut st, h, g, least), least);
    assert_eq!((moved.moves.load(Ordering::Relaxed), moved.len()), (1, 1));
    assert_eq!(st.medium_counts.dirty, dirty - least);
    // SAFETY: a medium block; we hold the lock.
    unsafe { Runs::of(h) }.check().unwrap();
    drop(st);
    pool.medium_free(b, 2 * least * GRANULE, 0).unwrap();
    free_pad(&pool, b);
}
