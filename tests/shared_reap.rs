//! Heaps of processes killed while joined to a shared region are taken over by processes
//! whose threads all have heaps already (no join to reap at): when memory runs out, at
//! `compact`, at `release_class` (tests/red_team_shared.rs covers the last).

mod common;

use cohort::Cohort;
use common::processes::{in_child, kill_once_set};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

/// Blocks of the test regions.
const UNITS: usize = 4;

/// A region of [`UNITS`] blocks, one of them taken by the parent's heap (its flag), and a
/// child that joins, takes a block in each of three size classes, frees what it allocated
/// (the empty blocks stay its heap's current ones) and is killed with SIGKILL. Returns the
/// instance once the child is dead.
fn region_after_a_killed_child_held_three_blocks() -> Cohort<Life> {
    let a = Cohort::<Life>::shared_anonymous(UNITS << 21).expect("a shared region");
    let flag = a.calloc(8, Life::Long).cast::<AtomicU64>();
    assert!(!flag.is_null());
    // SAFETY: 8 zeroed bytes, aligned, live for the test.
    let flag = unsafe { &*flag };
    let child = {
        let a = &a;
        in_child(60, move || {
            for size in [64, 1000, 4000] {
                let p = a.malloc(size, Life::Short);
                assert!(!p.is_null());
                // SAFETY: live, `size` bytes.
                unsafe { a.free(p, size, Life::Short) };
            }
            flag.store(1, Ordering::Release);
            loop {
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    kill_once_set(child, flag);
    a
}

/// Before the fix: the parent's 16 KiB allocations got null at once (every block of the
/// region was the parent's flag block or the dead child's current blocks) until something
/// joined or called `reap_dead_processes`.
#[test]
fn an_allocation_about_to_fail_takes_over_dead_processes_heaps_first() {
    let a = region_after_a_killed_child_held_three_blocks();
    let mut got = Vec::new();
    loop {
        let p = a.malloc(16 << 10, Life::Short);
        if p.is_null() {
            break;
        }
        got.push(p);
    }
    assert_eq!(a.recoveries().heaps_reaped, 1, "the dead child's heap");
    assert!(
        got.len() >= (UNITS - 1) * 100,
        "{} allocations of 16 KiB in the {} blocks the dead child left",
        got.len(),
        UNITS - 1
    );
    for p in got {
        // SAFETY: live, 16 KiB, freed once.
        unsafe { a.free(p, 16 << 10, Life::Short) };
    }
}

/// Before the fix: `compact` gave back nothing (the empty blocks were the dead child's
/// heap's current ones).
#[test]
fn compact_takes_over_dead_processes_heaps_and_gives_back_their_empty_blocks() {
    let a = region_after_a_killed_child_held_three_blocks();
    let compacted = a.compact();
    assert_eq!(a.recoveries().heaps_reaped, 1, "the dead child's heap");
    assert!(
        compacted.blocks >= 3,
        "the dead child's three empty blocks: {compacted:?}"
    );
}
