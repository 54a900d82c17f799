//! Whole-class operations and the memory the allocator keeps: `release_class` and `scope`
//! against other threads' allocations, `compact`'s counts, out of memory after everything
//! was freed, and blocks emptied after their thread exited.

use cohort::class::{class_of, CLASSES, CLASS_COUNT, MEDIUM_CLASS};
use cohort::Cohort;
use std::alloc::Layout;
use std::sync::{mpsc, Arc};
use std::thread;
use threads::Barrier;

// Helper threads stopped however a test ends.
#[path = "common/threads.rs"]
mod threads;

cohort::lifetime_classes! {
    enum Life { A, B, C }
}

/// The block size of the class of a `malloc(size)`.
fn block_size(size: usize) -> usize {
    CLASSES[class_of(size, common_align(size)).unwrap()].block_size()
}

fn common_align(size: usize) -> usize {
    size.next_power_of_two().min(16)
}

/// A thread allocates `size` bytes in class B and writes 42, then waits while the main
/// thread releases class B (in which it made nothing); the thread's allocation must
/// survive, and must not be handed out again.
fn release_leaves_another_threads_allocation(size: usize) {
    let a = Arc::new(Cohort::<Life>::new());
    let made = Arc::new(Barrier::new(2));
    let released = Arc::new(Barrier::new(2));
    let t = {
        let (a, made, released) = (Arc::clone(&a), Arc::clone(&made), Arc::clone(&released));
        thread::spawn(move || {
            let (_made, _released) = (made.party(), released.party());
            let p = a.malloc(size, Life::B);
            assert!(!p.is_null());
            // SAFETY: a fresh allocation of `size` bytes.
            unsafe { p.write_bytes(42, size) };
            made.wait();
            released.wait();
            // SAFETY: still ours: another thread's release must leave it alone.
            let bytes = unsafe { std::slice::from_raw_parts(p, size) };
            assert!(bytes.iter().all(|&b| b == 42), "{size} B: overwritten");
            // SAFETY: allocated above, freed once.
            unsafe { a.free(p, size, Life::B) };
            p as usize
        })
    };
    let (_made, _released) = (made.party(), released.party());
    made.wait();
    // SAFETY: this thread made nothing in class B.
    let r = unsafe { a.release_class(Life::B) };
    assert_eq!(r.blocks, 0, "{size} B: released {r:?}");
    assert_eq!(r.slots, 0, "{size} B: released {r:?}");
    assert_eq!(r.left_to_other_threads, 1, "{size} B: {r:?}");
    let q = a.malloc(size, Life::B);
    // SAFETY: q is a live allocation of `size` bytes.
    unsafe { q.write_bytes(7, size) };
    released.wait();
    let p = t
        .join()
        .expect("the other thread's allocation was released");
    assert_ne!(p, q as usize, "{size} B: handed out twice");
    // SAFETY: allocated above.
    unsafe { a.free(q, size, Life::B) };
    assert!(a.is_empty());
}

#[test]
fn release_class_leaves_other_threads_tiny_allocations() {
    for size in [1, 2] {
        release_leaves_another_threads_allocation(size);
    }
}

#[test]
fn release_class_leaves_other_threads_small_allocations() {
    release_leaves_another_threads_allocation(64);
}

/// Tiny allocations of an exited thread are released with their class, and the calling
/// thread's own too.
#[test]
fn release_class_frees_tiny_allocations_of_exited_threads_and_the_callers() {
    let a = Arc::new(Cohort::<Life>::new());
    let theirs = {
        let a = Arc::clone(&a);
        thread::spawn(move || {
            for _ in 0..300 {
                assert!(!a.malloc(1, Life::B).is_null());
            }
            300
        })
        .join()
        .unwrap()
    };
    let mine: Vec<_> = (0..10).map(|_| a.malloc(2, Life::B)).collect();
    assert!(mine.iter().all(|p| !p.is_null()));
    assert_eq!(a.stats().small.live, theirs + mine.len());
    // SAFETY: nothing of class B is used after this.
    let r = unsafe { a.release_class(Life::B) };
    assert_eq!(r.slots, theirs + mine.len(), "{r:?}");
    assert_eq!(r.left_to_other_threads, 0);
    assert!(a.is_empty());
    // SAFETY: exclusive use (the other thread has exited).
    unsafe { a.verify() }.unwrap();
}

#[test]
#[should_panic(expected = "live allocations")]
fn scope_refuses_a_class_with_a_live_large_allocation() {
    let mut c = Cohort::<Life>::new();
    let p = c.malloc(100_000, Life::A);
    assert!(!p.is_null());
    c.scope_exclusive(Life::A, |_, _| ());
    // Not reached: the large allocation would be unmapped under its owner.
    // SAFETY: allocated above.
    unsafe { p.read_volatile() };
}

#[test]
fn compact_counts_each_block_once() {
    let a = Cohort::<Life>::new();
    // Four blocks of four classes, each emptied and left current.
    let sizes = [64, 128, 256, 512];
    for size in sizes {
        let p = a.malloc(size, Life::A);
        // SAFETY: allocated just above.
        unsafe { a.free(p, size, Life::A) };
    }
    assert_eq!(a.stats().small.blocks, 4);
    let c = a.compact();
    assert_eq!(c.blocks, 4, "{c:?}");
    assert_eq!(a.stats().small.blocks, 0);
    assert_eq!(a.compact().blocks, 0);
}

/// The reservation holds four blocks; one allocation of each of four classes takes them
/// all; everything is freed: an allocation of a fifth class must succeed (the emptied
/// blocks are reclaimed before the allocator says out of memory).
#[test]
fn emptied_current_blocks_are_reclaimed_before_out_of_memory() {
    let sizes = [144, 304, 464, 624];
    let block = sizes.iter().map(|&s| block_size(s)).max().unwrap();
    let a = Cohort::<Life>::with_reservation(4 * block);
    let layout = |s| Layout::from_size_align(s, 16).unwrap();
    let mut got = Vec::new();
    for s in sizes {
        let p = a.alloc(layout(s), Life::A);
        assert!(!p.is_null(), "{s} B");
        got.push((p, s));
    }
    for (p, s) in got {
        // SAFETY: allocated above.
        unsafe { a.dealloc(p, layout(s), Life::A) };
    }
    assert!(a.is_empty());
    let p = a.alloc(layout(784), Life::A);
    assert!(!p.is_null(), "784 B: null after everything was freed");
    // SAFETY: allocated just above.
    unsafe { a.dealloc(p, layout(784), Life::A) };
    // The same through the pool's lock (tiny classes), and another lifetime class.
    let before: Vec<_> = (0..3)
        .map(|i| a.malloc([100, 300, 500][i], Life::B))
        .collect();
    assert!(before.iter().all(|p| !p.is_null()));
    for (i, p) in before.into_iter().enumerate() {
        // SAFETY: allocated above.
        unsafe { a.free(p, [100, 300, 500][i], Life::B) };
    }
    let t = a.malloc(1, Life::C);
    assert!(!t.is_null(), "1 B: null after everything was freed");
    // SAFETY: allocated just above.
    unsafe { a.free(t, 1, Life::C) };
    assert!(a.is_empty());
}

/// A thread fills blocks with 64-byte objects and exits; the main thread frees them all.
/// The emptied blocks must leave use without a `compact`: at most the pool's bound of
/// empty blocks stays committed.
#[test]
fn blocks_emptied_after_their_thread_exited_leave_use() {
    const BYTES: usize = 8 << 20;
    let a = Arc::new(Cohort::<Life>::new());
    let (tx, rx) = mpsc::channel();
    {
        let a = Arc::clone(&a);
        thread::spawn(move || {
            let v: Vec<usize> = (0..BYTES / 64)
                .map(|_| a.malloc(64, Life::A) as usize)
                .collect();
            tx.send(v).unwrap();
        })
        .join()
        .unwrap();
    }
    let v = rx.recv().unwrap();
    assert!(v.iter().all(|&p| p != 0));
    let before = a.stats();
    assert!(before.small.blocks >= BYTES / block_size(64), "{before}");
    for p in v {
        // SAFETY: allocated by the exited thread, freed once.
        unsafe { a.free(p as *mut u8, 64, Life::A) };
    }
    assert!(a.is_empty());
    let after = a.stats();
    assert_eq!(
        after.small.blocks, 0,
        "emptied blocks still in use: {after}"
    );
    assert_eq!(after.small.resident_bytes, 0, "{after}");
    // An allocation afterwards reuses a kept block, and nothing else is in use.
    let p = a.malloc(64, Life::B);
    let s = a.stats();
    assert_eq!(s.small.blocks, 1, "{s}");
    assert!(s.small.resident_bytes <= block_size(64), "{s}");
    // SAFETY: allocated just above.
    unsafe { a.free(p, 64, Life::B) };
    // SAFETY: the other thread has exited.
    unsafe { a.verify() }.unwrap();
}

/// Objects of one class fill the reservation and are all freed; objects of another class
/// (whatever its block size) must then fill it again.
#[test]
fn a_reservation_emptied_by_one_class_serves_another() {
    let block = block_size(144).max(block_size(64));
    let a = Cohort::<Life>::with_reservation(4 * block);
    let fill = |size: usize| {
        let mut v = Vec::new();
        loop {
            let p = a.malloc(size, Life::A);
            if p.is_null() {
                break v;
            }
            v.push(p);
        }
    };
    let first = fill(144);
    assert!(first.len() * 144 >= block, "{} objects", first.len());
    for &p in &first {
        // SAFETY: allocated above, freed once.
        unsafe { a.free(p, 144, Life::A) };
    }
    assert!(a.is_empty());
    let second = fill(64);
    assert!(
        second.len() * 64 + block >= first.len() * 144,
        "{} objects of 64 B after {} of 144 B",
        second.len(),
        first.len()
    );
    for p in second {
        // SAFETY: allocated above, freed once.
        unsafe { a.free(p, 64, Life::A) };
    }
    assert!(a.is_empty());
}

/// One thread takes a block, empties it and gives it back, over and over (its key flips
/// between a class and "empty"); snapshots running meanwhile must read each header once:
/// no panic, no class out of range, no count above the capacity.
#[test]
fn snapshots_tolerate_blocks_changing_hands() {
    use std::sync::atomic::{AtomicBool, Ordering};
    // Before the fix, 2 runs in 12 of this length panicked (a key read twice, "empty" the
    // second time: class 255).
    const FLIPS: usize = 1500;
    let a = Arc::new(Cohort::<Life>::new());
    let stop = Arc::new(AtomicBool::new(false));
    let per_block = CLASSES[class_of(16 << 10, 16).unwrap()].capacity as usize;
    let flipper = {
        let (a, stop) = (Arc::clone(&a), Arc::clone(&stop));
        thread::spawn(move || {
            // Stops the readers however this thread ends (a failed assertion panics here).
            let _stop = threads::StopOnDrop(&stop);
            // One object more than a block of 16 KiB slots holds: the second block empties
            // when they are freed and goes back to the pool (its key says "empty"), the
            // next round takes it again.
            for n in 0..FLIPS {
                let v: Vec<_> = (0..=per_block)
                    .map(|_| a.malloc(16 << 10, Life::A))
                    .collect();
                for p in v {
                    assert!(!p.is_null());
                    // SAFETY: allocated just above.
                    unsafe { a.free(p, 16 << 10, Life::A) };
                }
                if n % 16 == 0 {
                    a.compact();
                }
            }
        })
    };
    // Two readers: on a loaded machine, more chances to run beside the flipper.
    let reader = |a: Arc<Cohort<Life>>, stop: Arc<AtomicBool>| {
        thread::spawn(move || {
            let mut passes = 0;
            while !stop.load(Ordering::Relaxed) {
                a.for_each_block(|b| {
                    assert!(
                        (b.size_class < CLASS_COUNT || b.size_class == MEDIUM_CLASS) && b.life < 3,
                        "{b:?}"
                    );
                    assert!(b.live <= b.capacity, "{b:?}");
                });
                let s = a.stats();
                assert!(s.small.live <= 2 * per_block, "{s}");
                passes += 1;
            }
            passes
        })
    };
    let readers = [0, 1].map(|_| reader(Arc::clone(&a), Arc::clone(&stop)));
    let passes: usize = readers
        .into_iter()
        .map(|r| r.join().expect("a snapshot panicked"))
        .sum();
    flipper.join().expect("the flipping thread panicked");
    eprintln!("{passes} snapshot passes over {FLIPS} flips");
}

/// A thread that can have no heap (the registry is full) allocates through the pool's
/// lock; another thread's `release_class` must leave those allocations alone too.
#[test]
fn release_class_leaves_allocations_of_threads_without_a_heap() {
    let a = Cohort::<Life>::new();
    let mine = a.malloc(64, Life::B);
    assert!(!mine.is_null());
    let joins: Vec<_> = std::iter::from_fn(|| a.join(0)).collect();
    assert!(joins.len() > 1000, "{} joins", joins.len());
    let made = Barrier::new(2);
    let released = Barrier::new(2);
    thread::scope(|s| {
        let t = s.spawn(|| {
            let (_made, _released) = (made.party(), released.party());
            let sizes = [1, 64, 1000];
            let ps = sizes.map(|size| {
                let p = a.malloc(size, Life::B);
                assert!(!p.is_null());
                // SAFETY: a fresh allocation of `size` bytes.
                unsafe { p.write_bytes(42, size) };
                p
            });
            made.wait();
            released.wait();
            for (p, size) in ps.into_iter().zip(sizes) {
                // SAFETY: still ours: another thread's release must leave it alone.
                let bytes = unsafe { std::slice::from_raw_parts(p, size) };
                assert!(bytes.iter().all(|&b| b == 42), "{size} B: overwritten");
                // SAFETY: allocated above, freed once.
                unsafe { a.free(p, size, Life::B) };
            }
        });
        let (_made, _released) = (made.party(), released.party());
        made.wait();
        // SAFETY: the only allocation of class B this thread made is `mine`, unused after.
        let r = unsafe { a.release_class(Life::B) };
        // New allocations of the class do not land on the other thread's.
        for size in [1, 64, 1000] {
            let q = a.malloc(size, Life::B);
            // SAFETY: a live allocation of `size` bytes.
            unsafe { q.write_bytes(7, size) };
            // SAFETY: allocated just above.
            unsafe { a.free(q, size, Life::B) };
        }
        released.wait();
        t.join().unwrap();
        assert_eq!(r.slots, 1, "{r:?}");
        assert_eq!(r.left_to_other_threads, 3, "{r:?}");
    });
    drop(joins);
    assert!(a.is_empty());
}
