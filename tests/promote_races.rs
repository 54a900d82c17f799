//! Promotion attacked: promoted slots freed by other threads while their owner promotes
//! more and others read stats, compact and look pointers up; wrong sizes racing right
//! ones; a release of the class holding promoted slots; resizes and unsized frees of
//! promoted slots; promotion through `GlobalAlloc`'s layouts.

use cohort::{Cohort, Problem};
use std::alloc::Layout;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

mod promote_support;
use promote_support::{free_all, full_region, promoted, Life};

// Helper threads stopped however a test ends.
#[path = "common/threads.rs"]
mod threads;

/// A pointer sent to another thread.
struct Sent(*mut u8, u64);
// SAFETY: a live allocation handed over whole: only the receiver uses it.
unsafe impl Send for Sent {}

#[test]
fn promoted_slots_freed_by_other_threads_while_the_owner_promotes_more() {
    let (a, big, small) = full_region(10);
    let a = &a;
    let done = &AtomicBool::new(false);
    let freed = &AtomicUsize::new(0);
    const N: u64 = 20_000;
    let mut sent = 0;
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel::<Sent>();
        let rx = &*Box::leak(Box::new(std::sync::Mutex::new(rx)));
        // Two freeing threads: a wrong size first (reported, nothing freed), then the
        // request's own size: remote frees of promoted slots.
        let freeing: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(move || loop {
                    let Ok(Sent(p, i)) = rx.lock().unwrap().recv() else {
                        break;
                    };
                    // SAFETY: a live slot handed over whole.
                    assert_eq!(unsafe { p.cast::<u64>().read() }, i);
                    if i % 3 == 0 {
                        // SAFETY: a wrong size is reported and changes nothing.
                        let m = unsafe { a.try_free(p, 32, Life::A) }.unwrap_err();
                        assert!(matches!(m.problem, Problem::Promoted { .. }), "{m}");
                    }
                    let found = a.allocation_at(p).expect("a live slot is found");
                    assert_eq!(found.usable, 16, "the request's own usable size");
                    // SAFETY: live, freed with its size and class, once.
                    unsafe { a.free(p, 16, Life::A) };
                    freed.fetch_add(1, Ordering::Relaxed);
                })
            })
            .collect();
        // A reader: stats, compact and a release of the other class, all the while; and a
        // thread of its own, whose heap has no block: promotion never takes a slot of
        // another live thread's block.
        let reader = s.spawn(move || {
            assert!(
                a.malloc(16, Life::A).is_null(),
                "no block of this thread's to promote into"
            );
            while !done.load(Ordering::Relaxed) {
                let s = a.stats();
                assert!(s.heads.iter().all(|h| h.promoted <= h.live));
                a.compact();
                // SAFETY: nothing of class B is allocated: its release frees nothing.
                let r = unsafe { a.release_class(Life::B) };
                assert_eq!(r.slots, 0);
            }
        });
        // Stops the reader however this test ends (a failed join panics here).
        let stop_reader = threads::StopOnDrop(done);
        // The owner (this thread, whose heap holds the 32-byte block): promotes, writes a
        // pattern, hands the slot over.
        for i in 0..N {
            let p = a.malloc(16, Life::A);
            if p.is_null() {
                continue; // Every free slot is promoted and not yet freed.
            }
            // SAFETY: 16 bytes of a new allocation.
            unsafe { p.cast::<u64>().write(i) };
            tx.send(Sent(p, i)).unwrap();
            sent += 1;
        }
        drop(tx);
        for t in freeing {
            t.join().unwrap();
        }
        drop(stop_reader);
        reader.join().unwrap();
    });
    assert!(sent > N / 2, "{sent} of {N} requests promoted");
    assert_eq!(freed.load(Ordering::Relaxed), sent as usize);
    assert_eq!(promoted(a), 0, "every promoted slot was freed");
    // SAFETY: every thread has ended.
    unsafe { a.verify() }.expect("consistent");
    free_all(a, &big, &small);
    // SAFETY: as above.
    unsafe { a.verify() }.expect("consistent");
}

#[test]
fn releasing_the_class_frees_promoted_slots_with_their_blocks() {
    let (a, big, small) = full_region(10);
    let promoted_slots: Vec<_> = (0..1000).map(|_| a.malloc(16, Life::A)).collect();
    assert!(promoted_slots.iter().all(|p| !p.is_null()));
    assert_eq!(promoted(&a), 1000);
    let _ = (big, small);
    // SAFETY: every allocation of A is this thread's and none is used after.
    let r = unsafe { a.release_class(Life::A) };
    assert!(r.slots >= 1000 + 10, "{r:?}");
    assert_eq!(promoted(&a), 0);
    // SAFETY: nobody else uses `a`.
    unsafe { a.verify() }.expect("consistent after the release");
    // The blocks serve their own classes again, fast path and all.
    let p = a.malloc(32, Life::A);
    let q = a.malloc(16, Life::A);
    assert!(!p.is_null() && !q.is_null());
    // A 32-byte slot reused in a released block is not taken for a promoted one.
    // SAFETY: allocated above, freed with their sizes.
    unsafe {
        a.try_free(p, 32, Life::A)
            .expect("an unpromoted slot of a released block");
        a.free(q, 16, Life::A);
    }
    // SAFETY: nobody else uses `a`.
    unsafe { a.verify() }.expect("consistent");
}

#[test]
fn promoted_slots_resize_and_free_without_a_size() {
    let (a, big, small) = full_region(10);
    let p = a.malloc(16, Life::A);
    assert!(!p.is_null());
    // SAFETY: 16 bytes of a new allocation.
    unsafe { p.copy_from(b"promoted slot!!?".as_ptr(), 16) };
    // Within its class: in place, still promoted.
    // SAFETY: live, resized with its size and class.
    let q = unsafe { a.remalloc(p, 16, 12, Life::A) };
    assert_eq!(q, p);
    // To another class: moved (promoted again or not), the bytes kept, the old slot freed.
    // SAFETY: as above.
    let r = unsafe { a.remalloc(q, 12, 24, Life::A) };
    assert!(!r.is_null());
    // SAFETY: 12 bytes kept.
    assert_eq!(
        unsafe { std::slice::from_raw_parts(r, 12) },
        b"promoted slo"
    );
    // A wrong old size on a promoted slot is reported by realloc too.
    let s = a.malloc(16, Life::A);
    assert!(!s.is_null());
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: reported before anything changes.
        unsafe { a.remalloc(s, 32, 100, Life::A) }
    }));
    assert!(
        caught.is_err(),
        "realloc of a promoted slot with the block's size"
    );
    // Unsized: found as a 16-byte allocation and freed.
    let found = a.allocation_at(s).unwrap();
    assert_eq!(found.usable, 16);
    // SAFETY: live, freed once.
    unsafe { a.free_unsized(s) }.unwrap();
    // SAFETY: live, freed with its size and class.
    unsafe { a.free(r, 24, Life::A) };
    assert_eq!(promoted(&a), 0);
    // Calloc promotes too, and zeroes the request's bytes.
    let z = a.calloc(16, Life::A);
    assert!(!z.is_null());
    // SAFETY: 16 bytes of a new allocation.
    assert_eq!(unsafe { std::slice::from_raw_parts(z, 16) }, [0; 16]);
    // SAFETY: as above.
    unsafe { a.free(z, 16, Life::A) };
    // Layouts: an 8-byte request of align 8 promotes into a class whose slots keep it.
    let l = Layout::from_size_align(16, 16).unwrap();
    let w = a.alloc(l, Life::A);
    assert!(!w.is_null() && (w as usize).is_multiple_of(16));
    // SAFETY: allocated above with this layout.
    unsafe { a.dealloc(w, l, Life::A) };
    assert!(
        a.try_alloc(l, Life::A).is_null(),
        "try_alloc never promotes"
    );
    free_all(&a, &big, &small);
    // SAFETY: nobody else uses `a`.
    unsafe { a.verify() }.expect("consistent");
}

#[test]
fn a_block_holds_one_source_class_at_a_time() {
    let (a, big, small) = full_region(10);
    // 8-byte requests have their own class: none left either (the region is full), so
    // they promote too, into the same 32-byte block only once the 16-byte ones are gone.
    let p16 = a.malloc(16, Life::A);
    let p8 = a.malloc(8, Life::A);
    assert!(!p16.is_null());
    if !p8.is_null() {
        // Served by another class or block than the 16-byte request's.
        assert_ne!(a.block_of(p8, 8), a.block_of(p16, 16));
        // SAFETY: allocated above.
        unsafe { a.free(p8, 8, Life::A) };
    }
    // SAFETY: allocated above.
    unsafe { a.free(p16, 16, Life::A) };
    let p8 = a.malloc(8, Life::A);
    assert!(
        !p8.is_null(),
        "the block takes 8-byte requests once it holds no 16-byte one"
    );
    // SAFETY: a wrong size, reported.
    assert!(unsafe { a.try_free(p8, 16, Life::A) }.is_err());
    // SAFETY: allocated above.
    unsafe { a.free(p8, 8, Life::A) };
    free_all(&a, &big, &small);
}

#[test]
fn a_unit_reused_by_a_class_of_fewer_slots_leaves_no_stale_promotion_bits() {
    // An 8-byte block (262 136 slots) whose slots past index 65 534 hold promoted 4-byte
    // requests; then the unit serves 32-byte slots (65 534 of them), promoted into again.
    let a: Cohort<Life> = Cohort::with_reservation(4 << 20);
    let eights: Vec<_> = (0..70_000).map(|_| a.malloc(8, Life::A)).collect();
    let mut fours = Vec::new();
    loop {
        let p = a.try_malloc(4, Life::A);
        if p.is_null() {
            break;
        }
        fours.push(p);
    }
    let lifted: Vec<_> = (0..1000).map(|_| a.malloc(4, Life::A)).collect();
    assert!(lifted.iter().all(|p| !p.is_null()));
    assert_eq!(a.block_of(lifted[999], 4), a.block_of(eights[0], 8));
    // SAFETY: every allocation of A is this thread's, none used after.
    unsafe { a.release_class(Life::A) };
    a.compact();
    // The freed units serve 32-byte slots (the lower one first) and 16-byte ones.
    let big: Vec<_> = (0..10).map(|_| a.malloc(32, Life::A)).collect();
    assert_eq!(
        a.block_of(big[0], 32),
        a.block_of(eights[0], 8),
        "the 8-byte block's unit"
    );
    let mut small = Vec::new();
    loop {
        let p = a.try_malloc(16, Life::A);
        if p.is_null() {
            break;
        }
        small.push(p);
    }
    let p = a.malloc(16, Life::A);
    assert_eq!(
        a.block_of(p, 32),
        a.block_of(big[0], 32),
        "promoted into the 32-byte block"
    );
    assert_eq!(promoted(&a), 1);
    // SAFETY: nobody else uses `a`.
    unsafe { a.verify() }.expect("no stale bit of the unit's earlier block");
    // SAFETY: allocated above.
    unsafe { a.free(p, 16, Life::A) };
    free_all(&a, &big, &small);
}
