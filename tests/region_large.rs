//! Large allocations inside a region: a shared region (and a fixed one, see
//! `region_fixed.rs`) serves them from runs of its own 2 MiB units, which every process
//! of the region sees and may free by size; a full region refuses them (null); the run's
//! units are told from blocks by their state, so a wrong free of a run is misuse in every
//! build, never a header read from the allocation's bytes.

mod common;

use cohort::{Cohort, Problem};
use common::processes::{in_child, wait_ok};
use std::sync::atomic::{AtomicU64, Ordering};

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

const MIB: usize = 1 << 20;

fn fill(p: *mut u8, len: usize, tag: u8) {
    for i in (0..len).step_by(4096) {
        // SAFETY: the caller's allocation holds `len` bytes.
        unsafe { p.add(i).write(tag ^ (i >> 12) as u8) };
    }
}

fn check(p: *const u8, len: usize, tag: u8) {
    for i in (0..len).step_by(4096) {
        // SAFETY: as in fill.
        assert_eq!(
            unsafe { p.add(i).read() },
            tag ^ (i >> 12) as u8,
            "byte {i}"
        );
    }
}

#[test]
fn a_large_allocation_in_a_shared_region_is_seen_and_freed_by_another_process() {
    let c = Cohort::<Life>::shared_anonymous(32 * MIB).expect("a shared region");
    let mailbox = c.malloc(8, Life::Long).cast::<AtomicU64>();
    // SAFETY: fresh, ours, 8 bytes.
    unsafe { mailbox.write(AtomicU64::new(0)) };
    let p = c.malloc(5 * MIB, Life::Long);
    assert!(!p.is_null(), "a large allocation is served");
    assert!(c.in_region(p), "from the region's own units");
    fill(p, 5 * MIB, 7);
    let s = c.stats();
    assert_eq!((s.large_allocations, s.large_bytes), (1, 5 * MIB));
    let child = in_child(60, || {
        check(p, 5 * MIB, 7);
        // SAFETY: the parent's allocation, freed once, here.
        unsafe { c.free(p, 5 * MIB, Life::Long) };
        let q = c.malloc(3 * MIB, Life::Short);
        assert!(!q.is_null());
        fill(q, 3 * MIB, 9);
        // SAFETY: the mailbox is live in the shared region.
        unsafe { (*mailbox).store(q as u64, Ordering::Release) };
    });
    wait_ok(child);
    // SAFETY: as above.
    let q = unsafe { (*mailbox).load(Ordering::Acquire) } as *mut u8;
    assert!(!q.is_null());
    check(q, 3 * MIB, 9);
    let s = c.stats();
    assert_eq!(
        (s.large_allocations, s.large_bytes),
        (1, 3 * MIB),
        "the child's free and allocation are seen"
    );
    // SAFETY: the child's allocation, freed once; the mailbox too.
    unsafe {
        c.free(q, 3 * MIB, Life::Short);
        c.free(mailbox.cast(), 8, Life::Long);
    }
    assert!(c.is_empty());
    // SAFETY: no other process or thread uses the region.
    unsafe { c.verify() }.expect("the region verifies");
}

#[test]
fn a_full_region_refuses_large_allocations_and_serves_them_again_once_freed() {
    // 8 units of blocks: four runs of two units.
    let c = Cohort::<Life>::shared_anonymous(16 * MIB).expect("a shared region");
    let mut got = Vec::new();
    loop {
        let p = c.malloc(3 * MIB, Life::Short);
        if p.is_null() {
            break;
        }
        fill(p, 3 * MIB, got.len() as u8);
        got.push(p);
        assert!(got.len() <= 4, "the region never grows past its capacity");
    }
    assert_eq!(got.len(), 4);
    assert!(
        c.malloc(64, Life::Short).is_null(),
        "no unit is left for a block either"
    );
    for (i, &p) in got.iter().enumerate() {
        check(p, 3 * MIB, i as u8);
    }
    // SAFETY: allocated above, freed once.
    unsafe { c.free(got.pop().unwrap(), 3 * MIB, Life::Short) };
    let p = c.calloc(4 * MIB, Life::Long);
    assert!(!p.is_null(), "the freed units serve again");
    // SAFETY: 4 MiB of the allocation.
    assert!(
        unsafe { std::slice::from_raw_parts(p, 4 * MIB) }
            .iter()
            .all(|&b| b == 0),
        "calloc of reused units reads zero"
    );
    // SAFETY: allocated above, freed once.
    unsafe {
        c.free(p, 4 * MIB, Life::Long);
        for p in got {
            c.free(p, 3 * MIB, Life::Short);
        }
    }
    assert!(c.is_empty());
    let q = c.malloc(64, Life::Short);
    assert!(!q.is_null(), "the units serve blocks again");
    // SAFETY: allocated above.
    unsafe { c.free(q, 64, Life::Short) };
    // SAFETY: nobody else uses the region.
    unsafe { c.verify() }.expect("the region verifies");
}

#[test]
fn a_run_freed_with_a_wrong_size_class_or_pointer_is_misuse_and_changes_nothing() {
    let c = Cohort::<Life>::shared_anonymous(32 * MIB).expect("a shared region");
    let p = c.malloc(3 * MIB, Life::Long);
    assert!(!p.is_null());
    // Bytes that are not a header, at every unit's start of the run.
    // SAFETY: the allocation's bytes.
    unsafe { p.write_bytes(0xa5, 3 * MIB) };
    let long = Life::Long as usize;
    let mismatch = Problem::LargeMismatch {
        mapped: 3 * MIB,
        life: long,
    };
    // SAFETY: each rejected call changes nothing; the last frees as made.
    unsafe {
        assert_eq!(
            c.try_free(p, 2 * MIB, Life::Long).unwrap_err().problem,
            mismatch
        );
        assert_eq!(
            c.try_free(p, 3 * MIB, Life::Short).unwrap_err().problem,
            mismatch
        );
        assert_eq!(c.try_free(p, 64, Life::Long).unwrap_err().problem, mismatch);
        assert_eq!(
            c.try_free(p.add(2 * MIB), 64, Life::Long)
                .unwrap_err()
                .problem,
            Problem::NotLarge
        );
        assert_eq!(
            c.try_free(p.add(4096), 3 * MIB, Life::Long)
                .unwrap_err()
                .problem,
            Problem::NotLarge
        );
        assert_eq!(
            c.try_free(p.add(2 * MIB), 0, Life::Long)
                .unwrap_err()
                .problem,
            Problem::NotLarge
        );
    }
    // The sized free of a small size on a run's units: reported, in every build.
    let message = common::misuse_message(|| {
        // SAFETY: a misuse the free reports before changing anything.
        unsafe { c.free(p.add(2 * MIB), 48, Life::Long) }
    });
    assert!(message.contains("cohort"), "{message}");
    // SAFETY: as above.
    unsafe { c.try_free(p, 3 * MIB, Life::Long) }.expect("the right free");
    // SAFETY: a double free, reported.
    let again = unsafe { c.try_free(p, 3 * MIB, Life::Long) }.unwrap_err();
    assert_eq!(again.problem, Problem::NotLarge);
    assert!(c.is_empty());
    // SAFETY: nobody else uses the region.
    unsafe { c.verify() }.expect("the region verifies");
}

#[test]
fn a_run_is_found_by_address_resized_in_its_units_and_released_with_its_class() {
    let c = Cohort::<Life>::shared_anonymous(64 * MIB).expect("a shared region");
    let p = c.malloc(3 * MIB, Life::Long);
    fill(p, 3 * MIB, 3);
    let found = c.allocation_at(p).expect("found by address");
    assert_eq!(
        (found.usable, found.life, found.large),
        (3 * MIB, Life::Long as usize, true)
    );
    assert_eq!(
        c.allocation_at(p.wrapping_add(2 * MIB)),
        None,
        "inside a run: no allocation starts there"
    );
    // SAFETY: p is live with 3 MiB; each result is live with its new size.
    let grown = unsafe { c.remalloc(p, 3 * MIB, 4 * MIB - 4096, Life::Long) };
    assert_eq!(grown, p, "resized in place: the same two units");
    let p = grown;
    check(p, 3 * MIB, 3);
    let bytes = c.stats().large_bytes;
    assert!(
        (4 * MIB - 4096..=4 * MIB).contains(&bytes),
        "the new length, page-rounded: {bytes}"
    );
    // SAFETY: as above.
    let q = unsafe { c.remalloc(p, 4 * MIB - 4096, 9 * MIB, Life::Long) };
    assert!(!q.is_null());
    check(q, 3 * MIB, 3);
    // SAFETY: q is live; found from its address.
    unsafe { c.free_unsized(q) }.expect("freed without its size");
    for _ in 0..3 {
        assert!(!c.malloc(3 * MIB, Life::Short).is_null());
    }
    let kept = c.malloc(3 * MIB, Life::Long);
    // SAFETY: no allocation of Short is used after.
    let released = unsafe { c.release_class(Life::Short) };
    assert_eq!(released.large, 3, "{released}");
    let s = c.stats();
    assert_eq!((s.large_allocations, s.large_bytes), (1, 3 * MIB));
    // SAFETY: allocated above.
    unsafe { c.free(kept, 3 * MIB, Life::Long) };
    assert!(c.is_empty());
    // SAFETY: nobody else uses the region.
    unsafe { c.verify() }.expect("the region verifies");
}

#[test]
fn a_large_allocation_in_a_file_region_persists_and_is_freed_after_reopening() {
    use cohort::{CreateOptions, Off, OpenOptions, Place, SharedCohort};
    let path = std::env::temp_dir().join(format!("cohort-region-large-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let region = SharedCohort::<Life>::create(Place::File(&path), CreateOptions::new(64 * MIB))
        .expect("a file region");
    let p = region.malloc(6 * MIB, Life::Long);
    assert!(!p.is_null(), "served from the file's units");
    fill(p, 6 * MIB, 5);
    region.set_root(0, region.offset_of(p));
    region.leave().unwrap();
    let region =
        SharedCohort::<Life>::open(Place::File(&path), OpenOptions::new()).expect("reopened");
    let off: Off<u8> = region.root(0).expect("the root slot");
    let p = region.ptr(off);
    check(p, 6 * MIB, 5);
    let found = region
        .allocation_at(p)
        .expect("found by address after reopening");
    assert_eq!((found.usable, found.large), (6 * MIB, true));
    // SAFETY: the allocation made before the reopening, freed once.
    unsafe { region.free(p, 6 * MIB, Life::Long) };
    region.set_root::<u8>(0, None);
    assert!(region.is_empty());
    // SAFETY: nobody else uses the region.
    unsafe { region.verify() }.expect("the region verifies");
    region.destroy().unwrap();
}
