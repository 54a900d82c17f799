//! Per-head counters of slow-path events: counted where the events happen, off the fast
//! paths, and shown by `stats`.

use cohort::Cohort;

mod promote_support;
use promote_support::{events, free_all, full_region, Life};

#[test]
fn slow_path_events_are_counted_per_head() {
    let a: Cohort<Life> = Cohort::new();
    assert!(
        a.stats().events.is_empty(),
        "nothing before the first allocation"
    );
    // Two blocks and a bit of 16-byte slots: a block taken per block, a slow-path entry
    // per bump window (a page) at most, and then some.
    let per_block = 131_068;
    let v: Vec<_> = (0..per_block + 1000)
        .map(|_| a.malloc(16, Life::A))
        .collect();
    let e = events(&a, 16, 0);
    assert_eq!(e.blocks_taken, 2, "{e:?}");
    let windows = (per_block + 1000) as u64 * 16 / 4096;
    assert!(
        e.alloc_slow >= windows && e.alloc_slow <= windows + 8,
        "{e:?}, {windows} pages"
    );
    assert_eq!(
        (e.free_slow, e.remote_frees, e.blocks_given_back, e.promoted),
        (0, 0, 0, 0)
    );
    // The other lifetime class is a head of its own.
    let b = a.malloc(16, Life::B);
    assert_eq!(events(&a, 16, 1).blocks_taken, 1);
    // Frees by another thread: remote, one each.
    // (Slots of the current block: the first, full one stays all local.)
    let last = v.len() - 100;
    let first: Vec<usize> = v[last..].iter().map(|&p| p as usize).collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            for &p in &first {
                // SAFETY: allocated above, freed once.
                unsafe { a.free(p as *mut u8, 16, Life::A) };
            }
        });
    });
    assert_eq!(events(&a, 16, 0).remote_frees, 100);
    // This thread frees the rest: the full first block is relisted by its first local
    // free and given back when empty (both slow), the current one never goes slow.
    for &p in &v[..last] {
        // SAFETY: as above.
        unsafe { a.free(p, 16, Life::A) };
    }
    let e = events(&a, 16, 0);
    assert_eq!((e.free_slow, e.blocks_given_back), (2, 1), "{e:?}");
    let shown = a.stats().to_string();
    assert!(
        shown.contains("alloc slow") && shown.contains("promoted"),
        "{shown}"
    );
    // SAFETY: allocated above.
    unsafe { a.free(b, 16, Life::B) };
}

#[test]
fn promotions_are_counted_on_the_requests_head() {
    let (a, big, small) = full_region(10);
    let before = events(&a, 16, 0);
    let p: Vec<_> = (0..50).map(|_| a.malloc(16, Life::A)).collect();
    assert!(p.iter().all(|p| !p.is_null()));
    assert_eq!(events(&a, 16, 0).promoted - before.promoted, 50);
    assert_eq!(events(&a, 32, 0).promoted, 0);
    // try_malloc never promotes: not counted.
    assert!(a.try_malloc(16, Life::A).is_null());
    assert_eq!(events(&a, 16, 0).promoted - before.promoted, 50);
    for q in p {
        // SAFETY: allocated above.
        unsafe { a.free(q, 16, Life::A) };
    }
    free_all(&a, &big, &small);
}

/// Frees of the 32-byte head's blocks that took the slow path, over `pairs` allocations
/// and frees of 32 bytes by this thread (its current block: the one that held promoted
/// slots).
fn slow_frees_of_pairs(a: &Cohort<Life>, pairs: usize) -> u64 {
    let before = events(a, 32, 0).free_slow;
    let v: Vec<_> = (0..pairs).map(|_| a.malloc(32, Life::A)).collect();
    assert!(v.iter().all(|p| !p.is_null()));
    for p in v {
        // SAFETY: allocated above, freed once.
        unsafe { a.free(p, 32, Life::A) };
    }
    events(a, 32, 0).free_slow - before
}

#[test]
fn a_block_whose_last_promoted_slot_its_owner_freed_takes_the_fast_path_again() {
    let (a, big, small) = full_region(10);
    let p = a.malloc(16, Life::A);
    assert!(!p.is_null());
    assert_eq!(promote_support::promoted(&a), 1);
    // While the block holds a promoted slot, each of its frees is checked (slow).
    assert_eq!(slow_frees_of_pairs(&a, 100), 100);
    // SAFETY: allocated above, freed once with its own size.
    unsafe { a.free(p, 16, Life::A) };
    assert_eq!(promote_support::promoted(&a), 0);
    assert_eq!(
        slow_frees_of_pairs(&a, 1000),
        0,
        "the owner's free of the last promoted slot clears the block's flag"
    );
    free_all(&a, &big, &small);
    // SAFETY: nothing else uses it.
    unsafe { a.verify() }.expect("consistent");
}

#[test]
fn a_block_whose_last_promoted_slot_another_thread_freed_takes_the_fast_path_again() {
    let (a, big, small) = full_region(10);
    let p = a.malloc(16, Life::A) as usize;
    assert_ne!(p, 0);
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: allocated above, freed once with its own size.
            unsafe { a.free(p as *mut u8, 16, Life::A) };
        });
    });
    assert_eq!(promote_support::promoted(&a), 0);
    // The owner's alloc slow path collects the remote free and clears the flag: a few
    // pages of slots take it through the slow path, and frees after it are fast. (The
    // frees before it, of slots allocated while the flag was set, are the slow ones.)
    let v: Vec<_> = (0..2000).map(|_| a.malloc(32, Life::A)).collect();
    assert!(v.iter().all(|q| !q.is_null()));
    assert_eq!(
        slow_frees_of_pairs(&a, 1000),
        0,
        "the flag is cleared once collected"
    );
    for q in v {
        // SAFETY: allocated above, freed once.
        unsafe { a.free(q, 32, Life::A) };
    }
    free_all(&a, &big, &small);
    // SAFETY: nothing else uses it.
    unsafe { a.verify() }.expect("consistent");
}
