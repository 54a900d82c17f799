//! Per-head counters of slow-path events: counted where the events happen, off the fast
//! paths, and shown by `stats`.

use cohort::{Cohort, HeadEvents};

mod promote_support;
use promote_support::{free_all, full_region, Life};

/// The events of the head of `stride` in lifetime class `life`.
fn events(a: &Cohort<Life>, stride: usize, life: usize) -> HeadEvents {
    a.stats()
        .events
        .into_iter()
        .find(|e| e.stride == stride && e.life == life)
        .unwrap_or_default()
}

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
