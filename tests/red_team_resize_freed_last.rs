//! Red-team attacks of session 14 on the resize check of a freed allocation (hunt's
//! f41b305: a resize checks the old allocation as a free does, in every build, before
//! anything changes): the siblings its tests leave out. A handle's `grow` and `shrink`
//! (the README names them), the slot freed last by an owner that exited since, before a
//! fork (resized in the child), after the idle look emptied the block in place, tiny slots
//! (1 and 2 bytes, under the pool lock), freed medium runs (cached by the heap or free in
//! their table), freed large allocations (their mapping cached), and a region shared
//! between processes (no batches: a remote free is pushed at once). Each resize must be
//! reported, change nothing (live counts), and leave the slot free: never handed out
//! twice. A test that found a defect is `#[ignore]`d with its number (RED-n), its owner
//! and the exact failure.

use cohort::allocator_api2::alloc::Allocator;
use cohort::{set_misuse_hook, Cohort, Misuse, Retention};
use std::alloc::Layout;
use std::panic::{catch_unwind, panic_any, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::raw_thread;

#[path = "common/processes.rs"]
#[allow(dead_code)]
mod processes;

cohort::lifetime_classes! { enum Life { A, B } }

fn raise(m: &Misuse) {
    panic_any(m.clone());
}

/// The ways to resize an allocation of `old` bytes made by `malloc` (the `Layout` ways
/// with `malloc`'s alignment).
const WAYS: [&str; 6] = [
    "remalloc",
    "recalloc",
    "realloc",
    "grow",
    "grow_zeroed",
    "shrink",
];

/// Resizes `p` from `old` to `new` bytes the way `way` names (the handle's ways only in
/// their direction); true when it was reported as misuse.
fn reported(a: &Cohort<Life>, way: &str, p: usize, old: usize, new: usize) -> bool {
    let align = old.next_power_of_two().min(4096);
    let l = Layout::from_size_align(old, align).unwrap();
    let nl = Layout::from_size_align(new, align).unwrap();
    let p = p as *mut u8;
    let before = set_misuse_hook(Some(raise));
    let got = catch_unwind(AssertUnwindSafe(|| {
        let h = a.handle(Life::A);
        let nn = NonNull::new(p).unwrap();
        // SAFETY: misuse on purpose: `p` is free; the instance must report it before
        // anything changes.
        unsafe {
            match way {
                "remalloc" => a.remalloc(p, old, new, Life::A) as usize,
                "recalloc" => a.recalloc(p, old, new, Life::A) as usize,
                "realloc" => a.realloc(p, l, new, Life::A) as usize,
                "grow" => h
                    .grow(nn, l, nl)
                    .map_or(0, |q| q.as_ptr() as *mut u8 as usize),
                "grow_zeroed" => h
                    .grow_zeroed(nn, l, nl)
                    .map_or(0, |q| q.as_ptr() as *mut u8 as usize),
                _ => h
                    .shrink(nn, l, nl)
                    .map_or(0, |q| q.as_ptr() as *mut u8 as usize),
            }
        }
    }));
    set_misuse_hook(before);
    got.is_err()
}

/// Live allocations of the instance, every kind.
fn live(a: &Cohort<Life>) -> usize {
    a.stats().classes.iter().map(|c| c.live()).sum()
}

/// The new sizes a way is tried with for an allocation of `old` bytes: the same size
/// class (in place) and another, in the way's direction.
fn news(way: &str, old: usize, bigger: usize, smaller: usize) -> Vec<usize> {
    match way {
        "grow" | "grow_zeroed" => vec![old, bigger],
        "shrink" => vec![old, smaller],
        _ => vec![old, bigger, smaller],
    }
}

/// `p` (of `old` bytes, freed) resized every way to `bigger` and `smaller`: each reported,
/// nothing changed, and `p` handed out at most once by the next `m` allocations of `old`.
fn every_way_reported(
    a: &Cohort<Life>,
    p: usize,
    old: usize,
    bigger: usize,
    smaller: usize,
    what: &str,
) {
    for way in WAYS {
        for new in news(way, old, bigger, smaller) {
            let n = live(a);
            if !reported(a, way, p, old, new) {
                let next: Vec<usize> = (0..64).map(|_| a.malloc(old, Life::A) as usize).collect();
                let times = next.iter().filter(|&&q| q == p).count();
                // The instance took a double free: never used again.
                std::mem::forget(next);
                panic!(
                    "{what}: the {way} of the freed {old}-byte allocation {p:#x} to {new} \
                     bytes was not reported (handed out {times} times among the next 64)"
                );
            }
            assert_eq!(
                live(a),
                n,
                "{what}: {way} to {new}: a rejected resize changed the live count"
            );
        }
    }
}

/// The owner frees `p` (the slot it freed last) and exits; another thread resizes it.
#[test]
fn a_resize_of_the_slot_an_exited_owner_freed_last_is_reported() {
    let a = Arc::new(Cohort::<Life>::new());
    let a2 = a.clone();
    let (keep, p) = std::thread::spawn(move || {
        let keep = a2.malloc(64, Life::A) as usize;
        let p = a2.malloc(64, Life::A);
        // SAFETY: live, freed once.
        unsafe { a2.free(p, 64, Life::A) };
        (keep, p as usize)
    })
    .join()
    .unwrap();
    every_way_reported(&a, p, 64, 200, 40, "after the owner's exit");
    // SAFETY: live, freed once.
    unsafe { a.free(keep as *mut u8, 64, Life::A) };
    assert!(a.is_empty());
}

/// The slot freed last before a fork, resized by the child.
#[test]
fn a_resize_of_the_slot_freed_last_before_a_fork_is_reported_in_the_child() {
    let a = Cohort::<Life>::new();
    let keep = a.malloc(64, Life::A);
    let p = a.malloc(64, Life::A);
    // SAFETY: live, freed once.
    unsafe { a.free(p, 64, Life::A) };
    let child = processes::in_child(20, || {
        every_way_reported(&a, p as usize, 64, 200, 40, "in the child");
    });
    processes::wait_ok(child);
    // SAFETY: live, freed once.
    unsafe { a.free(keep, 64, Life::A) };
}

/// The idle look resets the thread's emptied 64-byte block (the slot freed last kept
/// first on its list); the slot is then resized.
#[test]
fn a_resize_of_the_slot_freed_last_after_an_idle_reset_is_reported() {
    let a = Cohort::<Life>::new();
    a.set_retention(Retention {
        delay: Duration::from_millis(40),
        ..Retention::DEFAULT
    });
    let page = a.usable_size(Layout::from_size_align(1, 8192).unwrap());
    let ps: Vec<*mut u8> = (0..3 * page / 64).map(|_| a.malloc(64, Life::A)).collect();
    for &q in &ps {
        // SAFETY: live, freed once.
        unsafe { a.free(q, 64, Life::A) };
    }
    let p = *ps.last().unwrap() as usize;
    let resident = |a: &Cohort<Life>| {
        a.stats()
            .heads
            .iter()
            .filter(|h| h.stride == 64)
            .map(|h| h.resident_bytes)
            .sum::<usize>()
    };
    let before = resident(&a);
    let start = Instant::now();
    while resident(&a) >= before && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
        let qs: Vec<usize> = (0..3000)
            .map(|_| a.malloc(1000, Life::B) as usize)
            .collect();
        std::thread::scope(|s| {
            s.spawn(|| {
                for q in qs {
                    // SAFETY: allocated above, freed once.
                    unsafe { a.free(q as *mut u8, 1000, Life::B) };
                }
            });
        });
    }
    assert!(resident(&a) < before, "setup: no idle reset within 10 s");
    every_way_reported(&a, p, 64, 200, 40, "after an idle reset");
}

/// Tiny slots (1 and 2 bytes, their blocks served under the pool lock): the slot freed
/// last, by its owner and by another thread, resized.
#[test]
fn a_resize_of_a_tiny_slot_freed_last_is_reported() {
    for size in [1usize, 2] {
        let a = Arc::new(Cohort::<Life>::new());
        let keep = a.malloc(size, Life::A) as usize;
        let p = a.malloc(size, Life::A) as usize;
        // SAFETY: live, freed once.
        unsafe { a.free(p as *mut u8, size, Life::A) };
        every_way_reported(&a, p, size, 100, size, &format!("{size} B, the owner's"));
        let q = a.malloc(size, Life::A) as usize;
        let b = a.clone();
        std::thread::spawn(move || {
            // SAFETY: live, freed once.
            unsafe { b.free(q as *mut u8, size, Life::A) };
            every_way_reported(
                &b,
                q,
                size,
                100,
                size,
                &format!("{size} B, another thread's"),
            );
        })
        .join()
        .unwrap();
        // SAFETY: live, freed once.
        unsafe { a.free(keep as *mut u8, size, Life::A) };
    }
}

/// Medium runs freed (one the heap's cache keeps, one above the cache's 64 KiB, free in
/// its table) and large allocations freed (their mappings cached), resized.
#[test]
fn a_resize_of_a_freed_medium_or_large_allocation_is_reported() {
    for (old, bigger, smaller) in [
        (40_000, 60_000, 30_000),
        (300_000, 600_000, 100_000),
        (3 << 20, 5 << 20, 2 << 20),
    ] {
        let a = Cohort::<Life>::new();
        let keep = a.malloc(old, Life::A);
        let p = a.malloc(old, Life::A);
        // SAFETY: ours, `old` bytes; live, freed once.
        unsafe {
            p.write_bytes(7, old);
            a.free(p, old, Life::A);
        }
        every_way_reported(&a, p as usize, old, bigger, smaller, &format!("{old} B"));
        // SAFETY: live, freed once.
        unsafe { a.free(keep, old, Life::A) };
        assert!(a.is_empty());
    }
}

/// A region shared between processes (a remote free is pushed on the block's list at
/// once): the slot freed last by its owner, and by another thread, resized.
#[test]
fn a_resize_of_the_slot_freed_last_in_a_shared_region_is_reported() {
    let child = processes::in_child(30, || {
        let a = Arc::new(Cohort::<Life>::shared_anonymous(32 << 20).expect("a region"));
        let keep = a.malloc(64, Life::A);
        let p = a.malloc(64, Life::A) as usize;
        // SAFETY: live, freed once.
        unsafe { a.free(p as *mut u8, 64, Life::A) };
        every_way_reported(&a, p, 64, 200, 40, "shared, the owner's");
        let q = a.malloc(64, Life::A) as usize;
        let b = a.clone();
        raw_thread::spawn(move || {
            // SAFETY: live, freed once.
            unsafe { b.free(q as *mut u8, 64, Life::A) };
            every_way_reported(&b, q, 64, 200, 40, "shared, another thread's");
        })
        .join()
        .unwrap();
        // SAFETY: live, freed once.
        unsafe { a.free(keep, 64, Life::A) };
    });
    processes::wait_ok(child);
}
