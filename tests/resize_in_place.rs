//! A resize that stays within its allocation's granules (medium) or pages (large) takes no
//! lock: a medium run of at most 127 granules is checked by its byte in its block's starts,
//! a longer one and a large allocation by the calling thread's memo of the last one it
//! resized, valid while no change that would make it otherwise happened in the process
//! (`src/resize.rs`). A loop of one-byte growths (`Vec::reserve_exact(1)`) takes that path
//! for all but one step a granule or a page. These tests: the loop keeps every byte, and
//! every misuse a locked resize reports is still reported on those paths.

use cohort::Cohort;

mod common;
use common::misuse_message;

cohort::lifetime_classes! {
    enum Life { A, B }
}

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// One-byte growths from 1 byte to 3 MiB (small classes, medium runs short and long, large
/// mappings), each new byte written; every byte checked at the end and at every MiB.
#[test]
fn one_byte_growths_through_every_range_keep_every_byte() {
    let a = Cohort::<Life>::new();
    let byte = |i: usize| (i % 251) as u8;
    let mut p = a.malloc(1, Life::A);
    // SAFETY: one byte of ours.
    unsafe { p.write(byte(0)) };
    for size in 1..3 * MIB {
        // SAFETY: `p` is live with `size` bytes; the new byte is written after.
        p = unsafe { a.remalloc(p, size, size + 1, Life::A) };
        assert!(!p.is_null());
        // SAFETY: `size + 1` bytes of ours.
        unsafe { p.add(size).write(byte(size)) };
        if (size + 1) % MIB == 0 {
            // SAFETY: as above.
            let held = unsafe { std::slice::from_raw_parts(p, size + 1) };
            assert!(
                held.iter().enumerate().all(|(i, &b)| b == byte(i)),
                "at {size}"
            );
        }
    }
    // SAFETY: as above.
    let held = unsafe { std::slice::from_raw_parts(p, 3 * MIB) };
    assert!(held.iter().enumerate().all(|(i, &b)| b == byte(i)));
    // SAFETY: live with 3 MiB.
    unsafe { a.free(p, 3 * MIB, Life::A) };
    assert!(a.is_empty(), "{:?}", a.stats());
}

/// The recalloc form zeroes what it adds within the pages or granules too.
#[test]
fn a_recalloc_within_the_same_pages_or_granules_reads_zero() {
    let a = Cohort::<Life>::new();
    for (start, end) in [
        (40 * KIB, 42 * KIB),
        (600 * KIB, 602 * KIB),
        (2 * MIB, 2 * MIB + 8 * KIB),
    ] {
        let mut p = a.malloc(start, Life::A);
        // SAFETY: `start` bytes of ours.
        unsafe { p.write_bytes(0xAB, start) };
        for size in start..end {
            // SAFETY: live with `size` bytes; the new byte is dirtied after the check.
            unsafe {
                p = a.recalloc(p, size, size + 1, Life::A);
                assert_eq!(
                    p.add(size).read(),
                    0,
                    "recalloc to {} read a byte",
                    size + 1
                );
                p.add(size).write(0xCD);
            }
        }
        // SAFETY: live with `end` bytes.
        unsafe { a.free(p, end, Life::A) };
    }
    assert!(a.is_empty());
}

/// Resizes `p` (live as `old` in `Life::A`, resized once within its granules or pages so
/// that the thread's memo names it) and checks that each misuse is reported: another
/// lifetime class, a size of other granules or pages, then after its free, a resize of it.
fn misuse_is_reported(a: &Cohort<Life>, old: usize) {
    let p = a.malloc(old, Life::A);
    // SAFETY: live with `old` bytes; grown by one byte within its granules or pages.
    let p = unsafe { a.remalloc(p, old, old + 1, Life::A) };
    let old = old + 1;
    // SAFETY (every call below): misuse, reported before anything changes.
    let msg = misuse_message(|| unsafe {
        a.remalloc(p, old, old + 1, Life::B);
    });
    assert!(!msg.is_empty(), "another lifetime class, {old}");
    let msg = misuse_message(|| unsafe {
        a.remalloc(p, old / 2, old / 2 + 1, Life::A);
    });
    assert!(!msg.is_empty(), "half the size, {old}");
    // SAFETY: live with `old` bytes, freed once.
    unsafe { a.free(p, old, Life::A) };
    let msg = misuse_message(|| unsafe {
        a.remalloc(p, old, old + 1, Life::A);
    });
    assert!(!msg.is_empty(), "a resize after the free, {old}");
}

#[test]
fn misuse_of_a_short_medium_run_is_reported_on_the_lock_free_path() {
    misuse_is_reported(&Cohort::<Life>::new(), 100 * KIB);
}

#[test]
fn misuse_of_a_long_medium_run_is_reported_on_the_lock_free_path() {
    misuse_is_reported(&Cohort::<Life>::new(), 600 * KIB);
}

#[test]
fn misuse_of_a_large_allocation_is_reported_on_the_lock_free_path() {
    misuse_is_reported(&Cohort::<Life>::new(), 3 * MIB);
}

/// A long medium run the thread resized (its memo names it), freed, and another run of
/// other granules made at its address: a resize that names the old run's size is misuse,
/// reported (the free changed what the memo was taken against), and one naming the new
/// run's size is not.
#[test]
fn a_long_run_freed_and_made_again_at_its_address_is_not_taken_for_the_old_one() {
    let a = Cohort::<Life>::new();
    let old = 600 * KIB;
    let p = a.malloc(old, Life::A);
    // SAFETY: live with `old` bytes, grown within its granules, then freed.
    unsafe {
        let q = a.remalloc(p, old, old + 1, Life::A);
        assert_eq!(q, p);
        a.free(p, old + 1, Life::A);
    }
    let shorter = 500 * KIB;
    let q = a.malloc(shorter, Life::A);
    assert_eq!(q, p, "the freed run's place (first fit)");
    // SAFETY: misuse, reported before anything changes.
    let msg = misuse_message(|| unsafe {
        a.remalloc(q, old + 1, old + 2, Life::A);
    });
    assert!(!msg.is_empty());
    // SAFETY: live with `shorter` bytes.
    unsafe {
        let r = a.remalloc(q, shorter, shorter + 1, Life::A);
        assert_eq!(r, q);
        a.free(r, shorter + 1, Life::A);
    }
    assert!(a.is_empty());
}
