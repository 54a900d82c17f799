//! Red-team attacks on the calls without a size (`usable_size_at`, `allocation_at`,
//! `realloc_unsized`, `free_unsized`: C's `malloc_usable_size`, `realloc` and `free`) on a
//! promoted slot (a 16-byte request served from a 32-byte slot of a full region). The
//! usable size's contract: "any size up to it frees the allocation"; a promoted request's
//! usable size is its own class's stride (`promotion`'s module docs), so the answer is 16,
//! and a sized free with it must be accepted; a resize without a size keeps the bytes and
//! clears the promotion (the region verifies and empties).

use cohort::Cohort;

mod promote_support;
use promote_support::{free_all, full_region, promoted, Life};

fn promoted_slot(a: &Cohort<Life>) -> *mut u8 {
    let before = promoted(a);
    let p = a.malloc(16, Life::A);
    assert!(!p.is_null(), "malloc(16) promotes");
    assert_eq!(promoted(a), before + 1, "the slot is promoted");
    // SAFETY: 16 bytes are the slot's.
    unsafe { (0..16).for_each(|i| p.add(i).write(i as u8 + 1)) };
    p
}

/// Every case ends with the region verified and empty.
fn finish(a: &Cohort<Life>, big: &[*mut u8], small: &[*mut u8], case: &str) {
    free_all(a, big, small);
    assert_eq!(promoted(a), 0, "{case}: promoted slots left");
    // SAFETY: no other thread uses `a`.
    let v = unsafe { a.verify() };
    assert!(v.is_ok(), "{case}: verify: {v:?}");
    assert!(a.is_empty(), "{case}: {}", a.stats());
}

#[test]
fn the_usable_size_of_a_promoted_slot_frees_it() {
    let (a, big, small) = full_region(500);
    let p = promoted_slot(&a);
    let usable = a.usable_size_at(p).expect("a live allocation");
    assert!(usable >= 16, "usable {usable}");
    // SAFETY: any size up to the usable size frees the allocation (its contract).
    let r = unsafe { a.try_free(p, usable, Life::A) };
    assert!(r.is_ok(), "free with the usable size {usable}: {r:?}");
    finish(&a, &big, &small, "usable size");
}

#[test]
fn realloc_unsized_of_a_promoted_slot_keeps_its_bytes_and_clears_the_promotion() {
    for (new, align) in [
        (8usize, 8usize),
        (16, 16),
        (24, 8),
        (32, 32),
        (100, 16),
        (40_000, 16),
    ] {
        let case = format!("realloc_unsized to ({new}, {align})");
        let (a, big, small) = full_region(500);
        let p = promoted_slot(&a);
        // SAFETY: p is live; its size is found from the address.
        let q = unsafe { a.realloc_unsized(p, new, align) }.expect("cohort's");
        if q.is_null() {
            // Out of memory: the old one untouched, freed with its size.
            // SAFETY: p is still live with 16 bytes.
            unsafe { a.free(p, 16, Life::A) };
        } else {
            assert_eq!(q as usize % align, 0, "{case}: {q:p}");
            let kept = new.min(16);
            // SAFETY: q holds `new` bytes.
            let bad = (0..kept).find(|&i| unsafe { q.add(i).read() } != i as u8 + 1);
            assert!(bad.is_none(), "{case}: byte {bad:?} not kept");
            // SAFETY: q is live; its size is found from the address.
            unsafe { a.free_unsized(q) }.expect("cohort's");
        }
        finish(&a, &big, &small, &case);
    }
}

#[test]
fn free_unsized_of_a_promoted_slot_then_its_reuse_by_the_blocks_own_class() {
    let (a, mut big, small) = full_region(500);
    let p = promoted_slot(&a);
    // SAFETY: p is live; its size is found from the address.
    unsafe { a.free_unsized(p) }.expect("cohort's");
    assert_eq!(promoted(&a), 0, "the unsized free cleared the promotion");
    // The 32-byte class takes its slots again (p's among them) and frees them with 32.
    let again: Vec<_> = (0..64).map(|_| a.malloc(32, Life::A)).collect();
    assert!(again.iter().all(|q| !q.is_null()));
    big.extend(again);
    finish(&a, &big, &small, "free_unsized then 32-byte reuse");
}
