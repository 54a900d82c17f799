//! The heaps' medium caches: a freed medium run of up to 64 KiB is kept by the freeing
//! thread's heap for its next request of that length, with no lock. Tested: a steady
//! pair loop takes no lock; a cached run is free memory (a second free of it is a double
//! free, it is no allocation to the stats, a release of its class leaves it, calloc zeroes
//! it); the cache goes back to the blocks when its thread compacts or exits, or when its
//! process is killed (another process's reap frees it). And medium blocks in the block
//! reports (`for_each_block`).

mod common;

use cohort::{Cohort, Problem};
use common::processes::{in_child, kill_once_set};
use std::sync::atomic::{AtomicU64, Ordering};

cohort::lifetime_classes! {
    enum Life { Frame, Long }
}

const KIB: usize = 1 << 10;

/// Eight medium sizes a cache keeps (20 to 48 KiB), by `i` from 1 to 8.
fn size(i: usize) -> usize {
    16 * KIB + i * 4 * KIB
}

/// The 32 KiB pair loop that a heap's cache serves: after the first pair, no pair takes
/// the pool lock (before the caches: two acquisitions a pair).
#[test]
fn a_steady_32_kib_pair_loop_takes_no_lock() {
    let a = Cohort::<()>::new();
    let pair = || {
        let p = a.malloc(32 * KIB, ());
        assert!(!p.is_null());
        // SAFETY: p holds 32 KiB.
        unsafe {
            p.write_bytes(7, 32 * KIB);
            a.free(p, 32 * KIB, ());
        }
    };
    pair();
    let before = a.stats().lock_acquisitions;
    for _ in 0..1000 {
        pair();
    }
    let taken = a.stats().lock_acquisitions - before;
    // (A look at what is due to go back every 32nd takes it at most once per half delay.)
    assert!(taken <= 4, "{taken} pool lock acquisitions in 1000 pairs");
    assert!(a.is_empty());
    // SAFETY: no other thread uses the instance.
    unsafe { a.verify() }.expect("consistent");
}

/// A run in a cache is free: freeing it again is a double free (reported, nothing
/// changed), it counts as no allocation, the cache hands it out again (calloc zeroed).
#[test]
fn a_cached_run_is_free_memory() {
    let a = Cohort::<Life>::new();
    let p = a.malloc(40 * KIB, Life::Frame);
    // SAFETY: p holds 40 KiB; freed once.
    unsafe {
        p.write_bytes(0xab, 40 * KIB);
        a.free(p, 40 * KIB, Life::Frame);
    }
    assert!(a.is_empty(), "{}", a.stats());
    assert_eq!(a.stats().medium_allocations, 0);
    // SAFETY: a rejected free changes nothing.
    let double = unsafe { a.try_free(p, 40 * KIB, Life::Frame) }.unwrap_err();
    assert_eq!(double.problem, Problem::DoubleFree, "{double}");
    let msg = common::misuse_message(|| unsafe { a.free(p, 40 * KIB, Life::Frame) });
    assert!(msg.contains(&format!("{:#x}", p as usize)), "{msg}");
    // SAFETY: as above.
    assert!(unsafe { a.try_free(p, 40 * KIB, Life::Long) }.is_err());
    assert!(
        a.allocation_at(p).is_none(),
        "a cached run is no allocation"
    );
    // SAFETY: no other thread uses the instance.
    unsafe { a.verify() }.expect("consistent");
    // Another class or length is not served from it; the same is, zeroed by calloc.
    let other = a.malloc(40 * KIB, Life::Long);
    assert_ne!(other, p);
    let q = a.calloc(40 * KIB, Life::Frame);
    assert_eq!(q, p, "the cache serves its run");
    // SAFETY: q holds 40 KiB.
    assert!(unsafe { std::slice::from_raw_parts(q, 40 * KIB) }
        .iter()
        .all(|&b| b == 0));
    assert_eq!(a.stats().medium_allocations, 2);
    // SAFETY: live, freed once.
    unsafe {
        a.free(q, 40 * KIB, Life::Frame);
        a.free(other, 40 * KIB, Life::Long);
    }
    assert!(a.is_empty());
}

/// A release of a class frees its medium allocations and leaves the runs caches hold
/// (free memory of the heaps), which serve again; compact gives every block back.
#[test]
fn release_class_leaves_cached_runs() {
    let a = Cohort::<Life>::new();
    let cached = a.malloc(32 * KIB, Life::Frame);
    let live = a.malloc(32 * KIB, Life::Frame);
    let big = a.malloc(500 * KIB, Life::Frame);
    let keep = a.malloc(64 * KIB, Life::Long);
    // SAFETY: live, freed once.
    unsafe { a.free(cached, 32 * KIB, Life::Frame) };
    // SAFETY: nothing of Frame is used after this, and no other thread uses it.
    let r = unsafe { a.release_class(Life::Frame) };
    assert_eq!(r.medium, 2, "{r}");
    assert_eq!(a.stats().medium_allocations, 1);
    // SAFETY: no other thread uses the instance.
    unsafe { a.verify() }.expect("consistent");
    let again = a.malloc(32 * KIB, Life::Frame);
    assert_eq!(again, cached, "the cache serves its run after the release");
    // SAFETY: again holds 32 KiB; the rest live, freed once.
    unsafe {
        again.write_bytes(1, 32 * KIB);
        a.free(again, 32 * KIB, Life::Frame);
        a.free(keep, 64 * KIB, Life::Long);
    }
    let _ = (live, big);
    assert!(a.is_empty());
    a.compact();
    assert_eq!(a.stats().medium_blocks, 0, "{}", a.stats());
}

/// Runs freed into a thread's cache go back to their blocks when the thread exits (its
/// heap's leave), and those freed by another thread than the allocating one are the
/// freeing thread's to reuse.
#[test]
fn a_threads_cache_goes_back_at_its_exit() {
    let a = Cohort::<Life>::new();
    let made: Vec<usize> = (1..=8)
        .map(|i| a.malloc(size(i), Life::Long) as usize)
        .collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            for (i, &p) in made.iter().enumerate() {
                // SAFETY: live, freed once (by this thread).
                unsafe { a.free(p as *mut u8, size(i + 1), Life::Long) };
            }
            let p = a.malloc(size(1), Life::Long);
            assert_eq!(p as usize, made[0], "the freeing thread's cache serves it");
            // SAFETY: live.
            unsafe { a.free(p, size(1), Life::Long) };
        })
        // The OS thread's join: its exit (the heap's leave) is done.
        .join()
        .unwrap();
    });
    assert!(a.is_empty());
    // SAFETY: no other thread uses the instance.
    unsafe { a.verify() }.expect("consistent");
    // Only the exit's flush lets the blocks empty.
    a.compact();
    assert_eq!(a.stats().medium_blocks, 0, "{}", a.stats());
}

/// The run a thread's cache handed out last, freed by another thread (whose exit gives it
/// back to its block), its block emptied, given away and taken again by the other lifetime
/// class, whose run starts where it did: the first thread's second free of it, with its
/// old class, is misuse (the block is the other class's now: the cache's record of the run
/// it handed out is stale), and nothing of the other class's run is handed out again. In
/// every kind of instance whose cache takes no lock.
#[test]
fn a_lent_run_whose_block_changed_class_is_not_freed_into_the_cache() {
    let n = 32 * KIB;
    let check = |a: &Cohort<Life>, what: &str| {
        let p = a.malloc(n, Life::Frame);
        // SAFETY: live, freed once: into this thread's cache.
        unsafe { a.free(p, n, Life::Frame) };
        let q = a.malloc(n, Life::Frame);
        assert_eq!(q, p, "{what}: the cache hands its run out again");
        let lent = q as usize;
        std::thread::scope(|s| {
            // SAFETY: live, freed once, by another thread: into its cache, which its exit
            // gives back to the block.
            s.spawn(move || unsafe { a.free(lent as *mut u8, n, Life::Frame) });
        });
        assert!(a.is_empty(), "{what}");
        // SAFETY: nothing of Frame is live.
        unsafe { a.release_class(Life::Frame) };
        a.compact();
        let r = a.malloc(n, Life::Long);
        assert_eq!(
            r, q,
            "{what}: the other class's run starts where the lent one did"
        );
        // SAFETY: r holds n bytes.
        unsafe { r.write_bytes(0x5a, n) };
        // SAFETY (of the call): misuse (a second free, of another class's block), which
        // panics having freed nothing. (The plain free: the one a cache serves.)
        let second = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
            a.free(q, n, Life::Frame)
        }));
        assert!(
            second.is_err(),
            "{what}: a stale run freed with its old class"
        );
        let s = a.malloc(n, Life::Frame);
        assert_ne!(s, r, "{what}: the other class's live run handed out again");
        // SAFETY: r holds n bytes.
        let kept = unsafe { std::slice::from_raw_parts(r, n) };
        assert!(
            kept.iter().all(|&b| b == 0x5a),
            "{what}: the other class's run changed"
        );
        // SAFETY: live, freed once.
        unsafe {
            a.free(s, n, Life::Frame);
            a.free(r, n, Life::Long);
        }
        assert!(a.is_empty(), "{what}");
        // SAFETY: no other thread uses the instance.
        unsafe { a.verify() }.expect("consistent");
    };
    check(&Cohort::<Life>::new(), "private");
    let fixed = Cohort::<Life>::with_options(&cohort::RegionOptions::new(64 << 20)).expect("fixed");
    check(&fixed, "fixed");
}

/// A process killed with runs in its heap's cache: another process's reap frees them (its
/// heap's entries are offsets into the region), so its blocks empty and go back.
#[test]
fn a_killed_processs_cache_is_freed_by_the_reap() {
    let c = Cohort::<Life>::shared_anonymous(64 << 20).expect("a shared region");
    let flag = c.calloc(8, Life::Long).cast::<AtomicU64>();
    // SAFETY: zeroed, in the region: shared with the child.
    let flag = unsafe { &*flag };
    let child = {
        let c = &c;
        in_child(30, move || {
            for i in 1..=8 {
                let p = c.malloc(size(i), Life::Frame);
                assert!(!p.is_null());
                // SAFETY: live, freed once.
                unsafe { c.free(p, size(i), Life::Frame) };
            }
            flag.store(1, Ordering::Release);
            loop {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        })
    };
    kill_once_set(child, flag);
    assert!(
        c.stats().medium_blocks > 0,
        "the dead child's cache holds its runs"
    );
    c.reap_dead_processes();
    // SAFETY: the child is dead and no other thread uses the instance.
    unsafe { c.verify() }.expect("consistent");
    assert_eq!(c.stats().medium_allocations, 0);
    c.compact();
    assert_eq!(c.stats().medium_blocks, 0, "{}", c.stats());
    // SAFETY: allocated above.
    unsafe { c.free((flag as *const AtomicU64).cast_mut().cast(), 8, Life::Long) };
}

/// Medium blocks in the block reports: `for_each_block` reports each with its granules
/// (stride, capacity, live) and its live allocations (`runs`: a cached run is none), the
/// stats keep it out of the small heads and count it with the medium allocations.
#[test]
fn for_each_block_reports_medium_blocks() {
    use cohort::class::{GRANULE, MEDIUM_CLASS};
    let a = Cohort::<Life>::new();
    let small = a.malloc(64, Life::Long);
    let p = a.malloc(100_000, Life::Frame);
    let q = a.malloc(40 * KIB, Life::Frame);
    let mut medium = Vec::new();
    a.for_each_block(|b| {
        if b.size_class == MEDIUM_CLASS {
            medium.push(*b);
        }
    });
    assert_eq!(medium.len(), 1, "{medium:?}");
    let b = medium[0];
    assert_eq!((b.stride, b.life, b.runs), (GRANULE, 0, 2), "{b:?}");
    assert_eq!(b.live, 100_000usize.div_ceil(GRANULE) + 20, "{b:?}");
    assert!(
        b.live <= b.capacity && b.capacity * GRANULE == b.usable_bytes,
        "{b:?}"
    );
    assert_eq!(b.base, p as usize & !((2 << 20) - 1));
    let s = a.stats();
    assert!(s.heads.iter().all(|h| h.size_class != MEDIUM_CLASS), "{s}");
    assert_eq!(
        (s.small.blocks, s.medium_blocks, s.medium_allocations),
        (1, 1, 2)
    );
    // SAFETY: live, freed once.
    unsafe { a.free(q, 40 * KIB, Life::Frame) };
    a.for_each_block(|b| {
        if b.size_class == MEDIUM_CLASS {
            assert_eq!((b.runs, b.live), (1, 49), "the cached run is free: {b:?}");
        }
    });
    // SAFETY: live, freed once.
    unsafe {
        a.free(p, 100_000, Life::Frame);
        a.free(small, 64, Life::Long);
    }
    assert!(a.is_empty());
}

/// A thread whose medium pairs all hit its cache (no locked path) still gives back the
/// free medium pages unused for the delay: every 32nd medium allocation looks at the clock.
#[test]
fn cached_pairs_alone_give_back_free_medium_pages_on_the_delay() {
    let a = Cohort::<()>::new();
    let dirty = common::free_medium_memory_on_a_short_delay(&a);
    let pairs = || {
        for _ in 0..64 {
            let p = a.malloc(32 * KIB, ());
            // SAFETY: live, freed once.
            unsafe { a.free(p, 32 * KIB, ()) };
        }
    };
    for _ in 0..3 {
        pairs();
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    pairs();
    let after = a.stats().medium_dirty_bytes;
    assert!(
        after <= 256 * KIB,
        "{dirty} B free and resident before, {after} B after"
    );
    assert!(a.is_empty());
}

/// Medium pairs alone also give back the cached large mappings unused for the delay (an
/// idle program whose only large-ish work is medium takes no large path).
#[test]
fn medium_pairs_alone_give_back_cached_large_mappings_on_the_delay() {
    let a = Cohort::<()>::new();
    a.set_retention(cohort::Retention {
        delay: std::time::Duration::from_millis(40),
        ..cohort::Retention::DEFAULT
    });
    let big = a.malloc(4 << 20, ());
    // SAFETY: live, freed once.
    unsafe { a.free(big, 4 << 20, ()) };
    assert_eq!(a.stats().large_cached, 1, "the freed mapping is cached");
    for _ in 0..4 {
        for _ in 0..64 {
            let p = a.malloc(32 * KIB, ());
            // SAFETY: live, freed once.
            unsafe { a.free(p, 32 * KIB, ()) };
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(a.stats().large_cached, 0, "{}", a.stats());
}
