//! The quick collect of the remote list: when the allocation fast path finds the current
//! block's allocation list and bump window empty and its local free list empty too, but
//! other threads' frees waiting on its remote list, it takes that list (one swap, a beat
//! spent) instead of going down the slow path. A producer whose objects another thread
//! frees (a channel's consumer) then enters the slow path once per `BEATS + 1` collects,
//! as a thread that frees its own objects does. Counted in the allocator's slow-path
//! events, not in time.

use cohort::Cohort;

cohort::lifetime_classes! { enum Life { A } }

/// The alloc slow paths of the 64-byte class so far.
fn slow_paths(a: &Cohort<Life>) -> u64 {
    a.stats()
        .events
        .iter()
        .filter(|e| e.stride == 64)
        .map(|e| e.alloc_slow)
        .sum()
}

/// Rounds of 32 objects of 64 bytes, each round's freed by a thread of its own (its frees
/// reach the block's remote list when it exits): from the second window on, every round's
/// objects come from the previous round's frees. Before the quick collect took the remote
/// list, each round entered the slow path to collect them (100 rounds: 100 slow paths);
/// now one round in `BEATS + 1` (5) does.
#[test]
fn a_producer_whose_objects_another_thread_frees_collects_them_without_the_slow_path() {
    const ROUNDS: u64 = 100;
    let a = Cohort::<Life>::new();
    let before = slow_paths(&a);
    for _ in 0..ROUNDS {
        let ps: Vec<usize> = (0..32)
            .map(|_| {
                let p = a.malloc(64, Life::A);
                assert!(!p.is_null());
                // SAFETY: 64 bytes, just allocated.
                unsafe { p.write_bytes(0xA5, 64) };
                p as usize
            })
            .collect();
        std::thread::scope(|s| {
            s.spawn(|| {
                for &p in &ps {
                    // SAFETY: allocated above with this size and class, freed once.
                    unsafe { a.free(p as *mut u8, 64, Life::A) };
                }
            });
        });
    }
    let slow = slow_paths(&a) - before;
    assert!(
        slow <= ROUNDS / 4,
        "{slow} slow paths in {ROUNDS} rounds whose objects another thread freed"
    );
    // SAFETY: no other thread uses `a`.
    let v = unsafe { a.verify() }.expect("consistent");
    assert_eq!(v.live, 0);
}
