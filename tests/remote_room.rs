//! Freeing makes room again (invariant 11) when the frees come from another thread: blocks
//! a thread filled and another thread emptied are given back by the owner's `compact` and
//! reused by the owner's own allocations of another size class when the region is full.
//!
//! A block that fills is retired (on no list of its heap); the first remote free of one of
//! its slots puts it on its owner's returned stack, which the owner lists at its next
//! slow path. Giving back empty blocks must list those first.

use cohort::{Cohort, RegionOptions};

cohort::lifetime_classes! { enum Life { A } }

const MIB: usize = 1 << 20;

/// The fixed-capacity instances the tests fill: one of each kind.
fn full_regions() -> [(&'static str, Cohort<Life>); 2] {
    [
        (
            "with_options",
            Cohort::with_options(&RegionOptions::new(8 * MIB)).expect("an 8 MiB region"),
        ),
        ("with_reservation", Cohort::with_reservation(8 * MIB)),
    ]
}

/// Fills `a` with `size`-byte objects from the calling thread until null; another thread
/// frees them all and exits (its batches flushed at its exit). Returns how many there were.
fn fill_then_free_elsewhere(a: &Cohort<Life>, size: usize) -> usize {
    let mut full = Vec::new();
    loop {
        let p = a.malloc(size, Life::A);
        if p.is_null() {
            break;
        }
        full.push(p as usize);
    }
    let n = full.len();
    std::thread::scope(|s| {
        s.spawn(|| {
            for p in full {
                // SAFETY: the calling thread's objects, handed over, each freed once.
                unsafe { a.free(p as *mut u8, size, Life::A) };
            }
        });
    });
    assert!(a.is_empty(), "{:?}", a.stats());
    n
}

#[test]
fn the_owners_compact_gives_back_blocks_other_threads_emptied() {
    for (name, a) in full_regions() {
        let n = fill_then_free_elsewhere(&a, 64);
        assert!(n > 100_000, "{name}: {n} objects");
        let compacted = a.compact();
        assert!(
            compacted.blocks >= 3,
            "{name}: every filled block is empty: {compacted:?}"
        );
        assert!(
            compacted.resident_after <= compacted.resident_before / 2,
            "{name}: {compacted:?}"
        );
    }
}

#[test]
fn the_owner_reuses_blocks_other_threads_emptied_for_another_size_class() {
    for (name, a) in full_regions() {
        let n = fill_then_free_elsewhere(&a, 64);
        // The same bytes in 128-byte objects: the 64-byte blocks must be given back and
        // taken again (at most the one block the heap keeps per class may be lost).
        let mut got = Vec::new();
        loop {
            let p = a.malloc(128, Life::A);
            if p.is_null() {
                break;
            }
            got.push(p);
        }
        assert!(
            got.len() >= n / 2 / 2,
            "{name}: {} objects of 128 B after {n} of 64 B",
            got.len()
        );
        for p in got {
            // SAFETY: allocated above, each freed once.
            unsafe { a.free(p, 128, Life::A) };
        }
    }
}
