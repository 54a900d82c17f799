//! Promotion against try-allocate: in a region with no block left to carve, a request whose
//! size class has no free slot is served from the next larger size class of its lifetime
//! class that has one; the free with the request's own size works and is checked, and a
//! wrong size is caught on promoted and unpromoted slots alike.

use cohort::{Cohort, Lifetime, Misuse, Problem};

mod promote_support;
use promote_support::{free_all, full_region, Life};

/// The figures of the head of `stride` in lifetime class `life`: (live, capacity,
/// promoted).
fn head<L: Lifetime>(a: &Cohort<L>, stride: usize, life: usize) -> (usize, usize, usize) {
    a.stats()
        .heads
        .iter()
        .find(|h| h.stride == stride && h.life == life)
        .map_or((0, 0, 0), |h| (h.live, h.capacity, h.promoted))
}

#[test]
fn an_exhausted_class_is_served_from_the_next_larger_class_with_a_free_slot() {
    let (a, big, small) = full_region(500);
    let (live, capacity, promoted) = head(&a, 32, 0);
    let free_before = capacity - live;
    println!(
        "before: 16 B class full ({} live), 32 B blocks {live} live of {capacity}: {free_before} free slots, {promoted} promoted",
        small.len()
    );
    assert_eq!(promoted, 0);
    assert!(free_before > 60_000, "the 32-byte block has free slots");
    assert!(
        a.try_malloc(16, Life::A).is_null(),
        "try_malloc does not promote"
    );
    let p = a.malloc(16, Life::A);
    assert!(!p.is_null(), "malloc(16) promotes instead of failing");
    assert_eq!(
        p as usize % 16,
        0,
        "the promoted slot keeps the request's alignment"
    );
    let (live, _, promoted) = head(&a, 32, 0);
    println!(
        "after malloc(16): 32 B blocks {live} live of {capacity}: {} free slots, {promoted} promoted",
        capacity - live
    );
    assert_eq!((capacity - live, promoted), (free_before - 1, 1));
    // SAFETY: the slot is ours, 16 bytes at least.
    unsafe { p.write_bytes(0x5a, 16) };
    // SAFETY: allocated above with this size and class.
    unsafe { a.free(p, 16, Life::A) };
    let (live, _, promoted) = head(&a, 32, 0);
    assert_eq!((capacity - live, promoted), (free_before, 0));
    free_all(&a, &big, &small);
}

#[test]
fn a_request_whose_lifetime_class_has_no_larger_slot_is_still_null() {
    let (a, big, small) = full_region(500);
    assert!(
        a.malloc(16, Life::B).is_null(),
        "no block of B to promote into"
    );
    free_all(&a, &big, &small);
}

#[test]
fn many_promoted_slots_are_freed_with_their_own_size_and_reused() {
    let (a, big, small) = full_region(10);
    let promoted: Vec<_> = (0..5000).map(|_| a.malloc(16, Life::A)).collect();
    assert!(promoted.iter().all(|p| !p.is_null()));
    for (i, &p) in promoted.iter().enumerate() {
        // SAFETY: a live slot of 16 bytes at least.
        unsafe { p.cast::<u64>().write(i as u64) };
    }
    assert_eq!(head(&a, 32, 0).2, 5000);
    for (i, &p) in promoted.iter().enumerate() {
        // SAFETY: as above.
        assert_eq!(unsafe { p.cast::<u64>().read() }, i as u64);
    }
    // SAFETY: nobody else uses `a`.
    unsafe { a.verify() }.expect("consistent with promoted slots");
    for &p in promoted.iter().step_by(2) {
        // SAFETY: allocated above with this size and class, freed once.
        unsafe { a.free(p, 16, Life::A) };
    }
    assert_eq!(head(&a, 32, 0).2, 2500);
    // 32-byte requests reuse the slots the promoted frees gave back.
    let again: Vec<_> = (0..2500).map(|_| a.malloc(32, Life::A)).collect();
    assert!(again.iter().all(|p| !p.is_null()));
    // SAFETY: nobody else uses `a`.
    unsafe { a.verify() }.expect("consistent");
    for &p in promoted.iter().skip(1).step_by(2) {
        // SAFETY: as above.
        unsafe { a.free(p, 16, Life::A) };
    }
    for &p in &again {
        // SAFETY: allocated above with this size and class, freed once.
        unsafe { a.free(p, 32, Life::A) };
    }
    assert_eq!(head(&a, 32, 0).2, 0);
    free_all(&a, &big, &small);
    // SAFETY: nobody else uses `a`.
    unsafe { a.verify() }.expect("consistent");
}

/// The misuse a free of `p` with `size` reports, if any (nothing is freed when it does).
fn misuse(a: &Cohort<Life>, p: *mut u8, size: usize, life: Life) -> Option<Misuse> {
    // SAFETY: try_free changes nothing when it reports misuse; the callers pass live
    // pointers and expect the report.
    unsafe { a.try_free(p, size, life) }.err()
}

#[test]
fn a_wrong_size_is_caught_on_promoted_and_unpromoted_slots() {
    let (a, big, small) = full_region(500);
    let p = a.malloc(16, Life::A);
    assert!(!p.is_null());
    // The promoted slot freed with the block's size.
    let m = misuse(&a, p, 32, Life::A).expect("a promoted slot freed as 32 bytes");
    assert!(
        matches!(
            m.problem,
            Problem::Promoted {
                source_stride: 16,
                ..
            }
        ),
        "{m}"
    );
    assert!(m.to_string().contains("promoted"), "{m}");
    // An unpromoted 32-byte slot of the same block freed as 16 bytes.
    let m = misuse(&a, big[3], 16, Life::A).expect("a 32-byte slot freed as 16 bytes");
    assert!(matches!(m.problem, Problem::NotPromoted { .. }), "{m}");
    // Other sizes and the other lifetime class.
    assert!(misuse(&a, p, 48, Life::A).is_some());
    assert!(misuse(&a, p, 8, Life::A).is_some());
    assert!(misuse(&a, p, 16, Life::B).is_some());
    assert!(misuse(&a, big[3], 32, Life::B).is_some());
    // An interior pointer.
    assert!(misuse(&a, p.wrapping_add(8), 16, Life::A).is_some());
    // The panicking free reports it too, and frees nothing.
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: reported, nothing freed.
        unsafe { a.free(p, 32, Life::A) }
    }));
    let msg = *caught.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("promoted into it"), "{msg}");
    // The right frees still work, once.
    assert!(misuse(&a, p, 16, Life::A).is_none());
    // The block held no other promoted slot: the owner's free cleared its flag, and the
    // second free is a plain 16-byte free of a 32-byte block.
    let m = misuse(&a, p, 16, Life::A).expect("a double free of a promoted slot");
    assert!(
        matches!(
            m.problem,
            Problem::NotPromoted { .. } | Problem::DoubleFree | Problem::WrongBlock { .. }
        ),
        "{m}"
    );
    // SAFETY: nobody else uses `a`.
    unsafe { a.verify() }.expect("misuse changed nothing");
    free_all(&a, &big, &small);
}
