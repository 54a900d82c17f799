//! Red-team guards (session 20, third round) on RED-84's fix (a private reservation has no
//! access past its carved end; every path that reads memory from a pointer compares it
//! with the carved end first): every entry not pinned yet by `red_team_carved_end.rs` and
//! `red_team_carved_sized.rs`, given a pointer past the carved end, must stop the process
//! with cohort's report, never fault: sized frees and resizes of medium and large sizes
//! (paths other than the small fast path), resizes in and out of a size class, `Layout`
//! entries, `GlobalAlloc`, a `Join`'s frees; from an instance with a thread-local slot and
//! from one past the slots (the 16th and later instances).

mod red_team_common;

use cohort::{Cohort, Join};
use red_team_common::unreported;
use std::alloc::{GlobalAlloc, Layout};

cohort::lifetime_classes! {
    enum Life { Short }
}

const UNIT: usize = 2 << 20;

/// One entry given a pointer it does not own.
type Call = fn(&Cohort<Life>, &Join<'_, Life>, *mut u8);

/// The layout of `size` bytes aligned to `align`.
fn l(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

/// Every entry tried, by name.
fn calls() -> Vec<(&'static str, Call)> {
    // SAFETY (each): the misuse under test, which the call must report.
    vec![
        ("free medium", |a, _, q| unsafe {
            a.free(q, 40_000, Life::Short)
        }),
        ("free large", |a, _, q| unsafe {
            a.free(q, 4 << 20, Life::Short)
        }),
        ("try_free medium", |a, _, q| {
            if let Err(e) = unsafe { a.try_free(q, 40_000, Life::Short) } {
                red_team_common::say(&format!("cohort: try_free refused {q:p}: {e}"));
                std::process::abort();
            }
        }),
        ("remalloc in class", |a, _, q| {
            std::hint::black_box(unsafe { a.remalloc(q, 64, 60, Life::Short) });
        }),
        ("remalloc small to small", |a, _, q| {
            std::hint::black_box(unsafe { a.remalloc(q, 64, 200, Life::Short) });
        }),
        ("remalloc small to large", |a, _, q| {
            std::hint::black_box(unsafe { a.remalloc(q, 64, 8 << 20, Life::Short) });
        }),
        ("remalloc medium", |a, _, q| {
            std::hint::black_box(unsafe { a.remalloc(q, 40_000, 50_000, Life::Short) });
        }),
        ("remalloc medium shrink", |a, _, q| {
            std::hint::black_box(unsafe { a.remalloc(q, 50_000, 40_000, Life::Short) });
        }),
        ("remalloc large", |a, _, q| {
            std::hint::black_box(unsafe { a.remalloc(q, 4 << 20, 5 << 20, Life::Short) });
        }),
        ("recalloc", |a, _, q| {
            std::hint::black_box(unsafe { a.recalloc(q, 64, 100, Life::Short) });
        }),
        ("dealloc aligned", |a, _, q| unsafe {
            a.dealloc(q, l(64, 4096), Life::Short)
        }),
        ("dealloc medium", |a, _, q| unsafe {
            a.dealloc(q, l(40_000, 64), Life::Short)
        }),
        ("realloc layout", |a, _, q| {
            std::hint::black_box(unsafe { a.realloc(q, l(64, 8), 300, Life::Short) });
        }),
        ("realloc layout medium", |a, _, q| {
            std::hint::black_box(unsafe { a.realloc(q, l(40_000, 8), 30_000, Life::Short) });
        }),
        ("GlobalAlloc dealloc", |a, _, q| unsafe {
            GlobalAlloc::dealloc(a, q, l(64, 8))
        }),
        ("GlobalAlloc dealloc medium", |a, _, q| unsafe {
            GlobalAlloc::dealloc(a, q, l(40_000, 8))
        }),
        ("GlobalAlloc realloc", |a, _, q| {
            std::hint::black_box(unsafe { GlobalAlloc::realloc(a, q, l(64, 8), 100) });
        }),
        ("Join free", |_, j, q| unsafe { j.free(q, 64, Life::Short) }),
        ("Join free medium", |_, j, q| unsafe {
            j.free(q, 40_000, Life::Short)
        }),
        ("Join dealloc", |_, j, q| unsafe {
            j.dealloc(q, l(64, 64), Life::Short)
        }),
    ]
}

/// Tries every entry on `a` with pointers past its carved end (the next unit's start, a
/// page into it, and 1 GiB on); returns what was not reported.
fn unreported_entries(name: &str, a: &Cohort<Life>) -> Vec<String> {
    let p = a.malloc(64, Life::Short);
    assert!(!p.is_null());
    let next = (p as usize & !(UNIT - 1)) + UNIT;
    let mut failed = Vec::new();
    for q in [next, next + 4096, next + (1 << 30)] {
        let q = q as *mut u8;
        assert!(
            a.in_region(q) && a.allocation_at(q).is_none(),
            "{name}: {q:p}"
        );
        for (call, f) in calls() {
            let outcome = unreported(|| {
                let j = a.join(0).expect("a join");
                f(a, &j, q);
            });
            if let Some(what) = outcome {
                failed.push(format!("{name}, {call}, {q:p}: {what}"));
            }
        }
    }
    // SAFETY: allocated above with this size and class.
    unsafe { a.free(p, 64, Life::Short) };
    failed
}

/// Guard: a fresh default instance (a thread-local slot of its own).
#[test]
fn guard_every_entry_past_the_carved_end_is_reported_not_a_fault() {
    let a = Cohort::<Life>::new();
    let failed = unreported_entries("first instance", &a);
    assert!(failed.is_empty(), "{failed:#?}");
}

/// Guard: the 20th live instance of the process (past the thread-local slots, whose frees
/// take the instance's own route).
#[test]
fn guard_every_entry_past_the_carved_end_of_an_instance_without_a_slot() {
    let many: Vec<Cohort<Life>> = (0..20).map(|_| Cohort::<Life>::new()).collect();
    for a in &many {
        assert!(!a.malloc(8, Life::Short).is_null());
    }
    let failed = unreported_entries("20th instance", many.last().unwrap());
    assert!(failed.is_empty(), "{failed:#?}");
}
