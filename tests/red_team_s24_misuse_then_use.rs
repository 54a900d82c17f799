//! Red-team attacks on what follows a reported misuse of a medium or large allocation: the
//! direct API panics (the README: misuse "is reported with the pointer, size and class";
//! "a rejected resize changes nothing"), so a caller that catches the panic goes on with
//! the instance. Each misuse (a wrong size, a wrong lifetime class, a double free, an
//! interior pointer, a resize with a wrong old size or class) is made on each kind of instance (private, a reservation, a region, a
//! region shared with children); then this thread and another allocate, free and resize
//! medium and large allocations, `compact`, `stats` and `verify` run, and everything is
//! freed: no call may hang (a lock left held by the unwinding), fault, or find damage, and
//! the instance must end empty. Each case runs in a child process under an alarm.

mod red_team_common;

use cohort::{Cohort, RegionOptions};
use red_team_common::{in_child, wait};
use std::panic::{catch_unwind, AssertUnwindSafe};

cohort::lifetime_classes! { enum Life { A, B } }

const MIB: usize = 1 << 20;

fn instance(kind: &str) -> Cohort<Life> {
    match kind {
        "private" => Cohort::new(),
        "reservation" => Cohort::with_reservation(64 * MIB),
        "region" => Cohort::with_options(&RegionOptions::new(64 * MIB)).expect("region"),
        _ => Cohort::shared_anonymous_with(&RegionOptions::new(64 * MIB)).expect("shared"),
    }
}

/// Allocates, writes, checks and frees medium and large allocations in both classes,
/// resizing some between the ranges.
fn churn(a: &Cohort<Life>, seed: usize) {
    let mut live = Vec::new();
    for round in 0..40 {
        let size = [20_000, 100_000, 700_000, 3 * MIB, 40_000, 2 * MIB + 1][(round + seed) % 6];
        let life = if round % 3 == 0 { Life::B } else { Life::A };
        let p = a.malloc(size, life);
        assert!(!p.is_null(), "malloc({size}) in a region with room");
        // SAFETY: `size` bytes are p's.
        unsafe { p.write_bytes(round as u8, size) };
        live.push((p, size, life, round as u8));
        if round % 4 == 3 {
            let (p, size, life, b) = live.remove(0);
            let new = size / 2 + 30_000;
            // SAFETY: live with (size, life).
            let q = unsafe { a.remalloc(p, size, new, life) };
            assert!(!q.is_null(), "remalloc({size} -> {new})");
            let kept = size.min(new);
            // SAFETY: q holds `new` bytes.
            let bad = (0..kept)
                .step_by(997)
                .find(|&i| unsafe { q.add(i).read() } != b);
            assert!(bad.is_none(), "remalloc({size} -> {new}) lost byte {bad:?}");
            // SAFETY: as above.
            unsafe { q.write_bytes(b, new) };
            live.push((q, new, life, b));
        }
        if live.len() > 6 {
            let (p, size, life, b) = live.remove(0);
            // SAFETY: live with (size, life), freed once.
            unsafe {
                assert_eq!(p.add(size - 1).read(), b, "byte overwritten");
                a.free(p, size, life);
            }
        }
    }
    for (p, size, life, _) in live {
        // SAFETY: live with (size, life), freed once.
        unsafe { a.free(p, size, life) };
    }
}

/// Makes misuse `case` on an allocation of `size` (which stays live, or is freed by the
/// case itself where the misuse is its second free); returns whether it was reported and
/// the allocation still to free.
fn misuse(a: &Cohort<Life>, case: &str, size: usize) -> (bool, Option<*mut u8>) {
    let p = a.malloc(size, Life::A);
    assert!(!p.is_null());
    // SAFETY: `size` bytes are p's.
    unsafe { p.write_bytes(0x77, size) };
    let mut left = Some(p);
    // SAFETY: the misuse under test (each is reported before anything changes).
    let outcome = catch_unwind(AssertUnwindSafe(|| unsafe {
        match case {
            "wrong size" => a.free(p, size * 3, Life::A),
            "wrong class" => a.free(p, size, Life::B),
            "interior" => a.free(p.add(8192), size - 8192, Life::A),
            "resize wrong size" => {
                a.remalloc(p, size * 3, size * 4, Life::A);
            }
            "resize wrong class" => {
                a.remalloc(p, size, size * 2, Life::B);
            }
            _ => {
                a.free(p, size, Life::A);
                left = None;
                a.free(p, size, Life::A);
            }
        }
    }));
    (outcome.is_err(), left)
}

fn one_case(kind: &str, case: &str, size: usize) {
    let a = instance(kind);
    // Something live of each kind, in this thread, before the misuse.
    let keep: Vec<(usize, *mut u8)> = [64, 30_000, 4 * MIB]
        .into_iter()
        .map(|n| (n, a.malloc(n, Life::A)))
        .collect();
    let (reported, left) = misuse(&a, case, size);
    assert!(reported, "{kind}, {case} of {size}: not reported");
    if let Some(p) = left {
        // SAFETY: live with its size and class (the misuse changed nothing).
        unsafe {
            assert_eq!(p.add(size - 1).read(), 0x77, "the allocation changed");
            a.free(p, size, Life::A);
        }
    }
    churn(&a, 0);
    // In a fork child: a thread started without std's locks (`raw_thread`).
    test_support::raw_thread::scope(|s| {
        s.spawn(|| churn(&a, 1));
        churn(&a, 2);
    });
    a.compact();
    let _ = a.stats();
    for (n, p) in keep {
        // SAFETY: live with (n, A).
        unsafe { a.free(p, n, Life::A) };
    }
    // SAFETY: no other thread uses `a` now.
    let v = unsafe { a.verify() };
    assert!(v.is_ok(), "{kind}, {case} of {size}: verify: {v:?}");
    assert!(a.is_empty(), "{kind}, {case} of {size}: {}", a.stats());
}

#[test]
fn medium_and_large_misuse_leaves_every_kind_of_instance_usable() {
    let mut wrong = Vec::new();
    for kind in ["private", "reservation", "region", "shared"] {
        for size in [40_000usize, 300_000, 3 * MIB] {
            for case in [
                "wrong size",
                "wrong class",
                "interior",
                "resize wrong size",
                "resize wrong class",
                "double free",
            ] {
                let child = in_child(30, || one_case(kind, case, size));
                let ended = wait(child);
                if ended != Ok(0) {
                    wrong.push(format!("{kind}, {case} of {size}: {ended:?}"));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "cases whose child failed (Ok(1): a panic, its message above; Err(14): a hang): \
         {wrong:#?}"
    );
}
