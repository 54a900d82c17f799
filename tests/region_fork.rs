//! A private fixed region ([`Cohort::with_options`]) across `fork`: the child has a copy of
//! it, as of a private instance: its thread goes on with its heaps there (allocating as the
//! parent would, freeing what the parent allocated), the parent sees none of it, and a
//! fork while another thread holds the region's lock leaves the child a lock it can take.
//! (A test binary of its own: its forks would make another test's pages copy-on-write.)

mod common;
mod promote_support;

use cohort::{Cohort, RegionOptions, Retention};
use common::processes::{in_child, wait_ok};
use promote_support::events;

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

const MIB: usize = 1 << 20;
/// A large size (above the medium ones): a run of one unit.
const RUN: usize = MIB + MIB / 2;

#[test]
fn a_fork_child_of_a_private_fixed_region_allocates_as_its_parent_would() {
    // Two units: a block of 64-byte slots (this thread's heap's), and a run: full.
    let a = Cohort::<Life>::with_options(&RegionOptions::new(4 * MIB)).expect("a fixed region");
    let first = a.malloc(64, Life::Short);
    let run = a.malloc(RUN, Life::Long);
    assert!(a.in_region(first) && a.in_region(run));
    assert!(a.malloc(2 * MIB, Life::Long).is_null(), "no unit left");
    let live_before = a.stats().heads.iter().map(|h| h.live).sum::<usize>();
    let (first, run) = (first as usize, run as usize);
    wait_ok(in_child(30, || {
        let got: Vec<*mut u8> = (0..100).map(|_| a.malloc(64, Life::Short)).collect();
        assert!(
            got.iter().all(|&p| !p.is_null() && a.in_region(p)),
            "the child allocates from its copy of the parent's block"
        );
        // SAFETY: each allocated above, or by the parent before the fork (the child's copy
        // of them), freed once.
        unsafe {
            for p in got {
                a.free(p, 64, Life::Short);
            }
            a.free(first as *mut u8, 64, Life::Short);
            a.free(run as *mut u8, RUN, Life::Long);
        }
        assert!(a.is_empty());
        let again = a.malloc(3 * MIB, Life::Long);
        assert!(!again.is_null(), "the freed units serve a run");
        // SAFETY: allocated above.
        unsafe { a.free(again, 3 * MIB, Life::Long) };
    }));
    // The parent's region is its own: nothing the child did shows.
    let live_after = a.stats().heads.iter().map(|h| h.live).sum::<usize>();
    assert_eq!(live_after, live_before);
    assert_eq!(a.stats().large_allocations, 1);
    // SAFETY: allocated above, freed once.
    unsafe {
        a.free(first as *mut u8, 64, Life::Short);
        a.free(run as *mut u8, RUN, Life::Long);
    }
    assert!(a.is_empty());
    // The `&mut self` calls work on a region no other process shares (RED-25).
    let mut a = a;
    a.verify_exclusive().expect("consistent");
    let n = a.scope_exclusive(Life::Short, |_a, short| {
        let mut v = cohort::Vec::new_in(short);
        v.extend_from_slice(&[1u8, 2, 3]);
        v.len()
    });
    assert_eq!(n, 3);
    assert!(a.is_empty());
}

#[test]
fn a_fork_while_another_thread_holds_the_region_s_lock_leaves_the_child_a_lock_it_takes() {
    let a = Cohort::<Life>::with_options(&RegionOptions::new(32 * MIB)).expect("a fixed region");
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        // Takes the region's lock over and over (compact and stats run under it).
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let p = a.malloc(5000, Life::Long);
                a.compact();
                // SAFETY: allocated above.
                unsafe { a.free(p, 5000, Life::Long) };
            }
        });
        // Stops the locking thread however this test ends (a failed child panics here).
        let _stop = common::StopOnDrop(&stop);
        for round in 0..40 {
            // The child needs the lock: a class it never used takes a block from the pool,
            // and compact takes the lock. Before the fix a child that inherited the lock
            // held hung until the alarm killed it.
            wait_ok(in_child(20, || {
                let p = a.malloc(100 + round, Life::Short);
                assert!(!p.is_null());
                a.compact();
                // SAFETY: allocated above.
                unsafe { a.free(p, 100 + round, Life::Short) };
            }));
        }
    });
}

#[test]
fn the_counters_of_a_shared_region_count_every_process_s_events() {
    use std::sync::atomic::{AtomicU32, Ordering};
    const EACH: usize = 20_000;
    let a = Cohort::<Life>::shared_anonymous(64 * MIB).expect("a shared region");
    // The longest delay: the parent's blocks, emptied by the children's frees, stay its own
    // for the whole test. (With the default second, a slow machine's idle look may give them
    // to the pool in between, and the parent's allocations take them back from there.)
    a.set_retention(Retention {
        delay: Retention::MAX_DELAY,
        ..Retention::DEFAULT
    });
    let v: Vec<usize> = (0..2 * EACH)
        .map(|_| a.malloc(1024, Life::Short) as usize)
        .collect();
    assert!(v.iter().all(|&p| p != 0));
    let taken = events(&a, 1024, 0).blocks_taken;
    assert!(taken >= 2, "{taken} blocks");
    // A start line in the region, which both children see.
    let go = a.malloc(64, Life::Long).cast::<AtomicU32>();
    // SAFETY: 64 bytes of the region, ours; an atomic from here on.
    unsafe { go.write(AtomicU32::new(0)) };
    // SAFETY: as above, for the region's life.
    let go = unsafe { &*go };
    // Two processes free half each at once: every free is remote (the parent's heap owns
    // the blocks), counted on the same head by both.
    let children: Vec<_> = v
        .chunks(EACH)
        .map(|half| {
            in_child(60, || {
                while go.load(Ordering::Acquire) == 0 {
                    std::hint::spin_loop();
                }
                for &p in half {
                    // SAFETY: allocated by the parent before the fork, freed once (each
                    // child frees its half).
                    unsafe { a.free(p as *mut u8, 1024, Life::Short) };
                }
            })
        })
        .collect();
    go.store(1, Ordering::Release);
    for child in children {
        wait_ok(child);
    }
    let e = events(&a, 1024, 0);
    println!("after two processes' frees: {e:?}");
    assert_eq!(
        e.remote_frees,
        2 * EACH as u64,
        "region-wide: both children's remote frees, none lost"
    );
    assert_eq!(
        e.blocks_taken, taken,
        "the children took no block of the head"
    );
    // The parent collects them: its next allocations reuse the slots.
    let again: Vec<_> = (0..2 * EACH).map(|_| a.malloc(1024, Life::Short)).collect();
    assert!(again.iter().all(|p| !p.is_null()));
    assert_eq!(
        events(&a, 1024, 0).blocks_taken,
        taken,
        "the freed slots served them"
    );
    // SAFETY: allocated above, freed once.
    unsafe {
        for p in again {
            a.free(p, 1024, Life::Short);
        }
        a.free((go as *const AtomicU32).cast_mut().cast(), 64, Life::Long);
    }
    assert!(a.is_empty());
}
