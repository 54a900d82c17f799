//! A resize of the slot freed last is a double free that every build reports (README,
//! "Misuse": a resize checks the old allocation as a free does, before it allocates or
//! copies anything; a free reports the slot freed last onto the list it would push it on):
//! by its owner (the local free list's first), by another thread (the remote list's first,
//! or the first of its batch of remote frees), after the block was emptied in place by a
//! release (the slot kept first), for a resize within the size class (in place) and one
//! to another class (a move), through `remalloc`, `recalloc` and the `Layout` realloc.
//! Before the fix a release build took every in-class one (the slot stayed on the free
//! list and was handed out again while the caller still held it) and reported the moving
//! one only at its free, after the new allocation and the copy.

use cohort::{set_misuse_hook, Cohort, Misuse, Problem};
use std::alloc::Layout;
use std::panic::{catch_unwind, panic_any, AssertUnwindSafe};
use std::sync::Arc;

cohort::lifetime_classes! { enum Life { A } }

/// The ways to resize `p` (64 bytes, live or not) to `new` bytes.
const WAYS: [&str; 3] = ["remalloc", "recalloc", "realloc"];

/// Runs `case(way, new)` for every way of resizing, to a size of the same class (60 bytes:
/// in place) and of another (200: a move), each on an instance of its own.
fn each_resize(mut case: impl FnMut(&str, usize)) {
    for way in WAYS {
        for new in [60, 200] {
            case(way, new);
        }
    }
}

/// The misuse hook: the report is raised as a panic carrying it.
fn raise(m: &Misuse) {
    panic_any(m.clone());
}

/// Resizes `p` from 64 to `new` bytes the way `way` names; the misuse it was reported as,
/// if any.
fn resize(a: &Cohort<Life>, way: &str, p: *mut u8, new: usize) -> Option<Misuse> {
    set_misuse_hook(Some(raise));
    let l = Layout::from_size_align(64, 64).unwrap();
    let got = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: misuse on purpose: `p` may be free; the instance reports it (the test
        // checks that it does).
        unsafe {
            match way {
                "remalloc" => a.remalloc(p, 64, new, Life::A),
                "recalloc" => a.recalloc(p, 64, new, Life::A),
                _ => a.realloc(p, l, new, Life::A),
            }
        }
    }));
    match got {
        Ok(_) => None,
        Err(e) => Some(*e.downcast::<Misuse>().expect("a misuse report")),
    }
}

/// Asserts the resize of `p` (freed last) to `new` bytes `way` was reported as a double
/// free, and that it changed nothing: the small live count is as before.
fn assert_reported(a: &Cohort<Life>, way: &str, p: *mut u8, new: usize, case: &str) {
    let live = a.stats().small.live;
    match resize(a, way, p, new) {
        Some(m) => assert_eq!(
            m.problem,
            Problem::DoubleFree,
            "{case}, {way} to {new}: {m}"
        ),
        None => {
            // The instance took a double free: it is never used again.
            let next: Vec<*mut u8> = (0..64).map(|_| a.malloc(64, Life::A)).collect();
            let times = next.iter().filter(|&&q| q == p).count();
            panic!(
                "{case}: the {way} of the slot freed last to {new} bytes was not reported; \
                 the slot was handed out {times} more times among the next 64 while the \
                 resize gave it back as live"
            );
        }
    }
    assert_eq!(
        a.stats().small.live,
        live,
        "{case}, {way} to {new}: a rejected resize changed the live count"
    );
}

/// The owner frees `p` (the local free list's first) and resizes it.
#[test]
fn the_owners_resize_of_the_slot_it_freed_last_is_reported() {
    each_resize(|way, new| {
        let a = Cohort::<Life>::new();
        let keep = a.malloc(64, Life::A);
        let p = a.malloc(64, Life::A);
        // SAFETY: live, freed once.
        unsafe { a.free(p, 64, Life::A) };
        assert_reported(&a, way, p, new, "the owner's");
        // SAFETY: live.
        unsafe { a.free(keep, 64, Life::A) };
        std::mem::forget(a);
    });
}

/// Another thread frees `p` (its batch's chain's first, or the block's remote list's first
/// once pushed) and resizes it.
#[test]
fn another_threads_resize_of_the_slot_it_freed_last_is_reported() {
    each_resize(|way, new| {
        for flushed in [false, true] {
            let a = Arc::new(Cohort::<Life>::new());
            let keep = a.malloc(64, Life::A);
            let p = a.malloc(64, Life::A) as usize;
            let b = a.clone();
            let way = way.to_string();
            std::thread::spawn(move || {
                // SAFETY: live, freed once.
                unsafe { b.free(p as *mut u8, 64, Life::A) };
                if flushed {
                    // The statistics push every batch to its blocks first.
                    let _ = b.stats();
                }
                let case = format!("another thread's (batch flushed: {flushed})");
                assert_reported(&b, &way, p as *mut u8, new, &case);
            })
            .join()
            .unwrap();
            // SAFETY: live.
            unsafe { a.free(keep, 64, Life::A) };
            std::mem::forget(a);
        }
    });
}

/// The class released (its current block emptied in place, the slot freed last kept first
/// on its local list), then the slot resized.
#[test]
fn a_resize_of_the_slot_freed_last_after_a_release_is_reported() {
    each_resize(|way, new| {
        let a = Cohort::<Life>::new();
        let ps: Vec<*mut u8> = (0..100).map(|_| a.malloc(64, Life::A)).collect();
        for &q in &ps {
            // SAFETY: live, freed once.
            unsafe { a.free(q, 64, Life::A) };
        }
        // SAFETY: nothing of the class is live.
        unsafe { a.release_class(Life::A) };
        assert_reported(&a, way, ps[99], new, "after a release");
        std::mem::forget(a);
    });
}

/// Resizes live slot `p` (64 bytes of `i as u8`) in place to 60 bytes, checks its bytes
/// and frees it.
fn resize_live(a: &Cohort<Life>, i: usize, p: usize) {
    // SAFETY: live, 64 bytes, resized within its class.
    let q = unsafe { a.remalloc(p as *mut u8, 64, 60, Life::A) };
    assert_eq!(q as usize, p, "a live slot resized within its class stays");
    // SAFETY: live, 60 bytes.
    let bytes = unsafe { std::slice::from_raw_parts(q, 60) };
    assert!(bytes.iter().all(|&x| x == i as u8));
    // SAFETY: live, freed once.
    unsafe { a.free(q, 60, Life::A) };
}

/// A live slot still resizes in place, from its owner and from another thread, with its
/// bytes (the check does not take a live slot for a free one).
#[test]
fn a_live_slot_still_resizes() {
    let a = Arc::new(Cohort::<Life>::new());
    let ps: Vec<usize> = (0..200).map(|_| a.malloc(64, Life::A) as usize).collect();
    for (i, &p) in ps.iter().enumerate() {
        // SAFETY: live, 64 bytes.
        unsafe { (p as *mut u8).write_bytes(i as u8, 64) };
    }
    // Some freed, so that the lists' firsts are slots next to live ones.
    for &p in ps.iter().step_by(3) {
        // SAFETY: live, freed once.
        unsafe { a.free(p as *mut u8, 64, Life::A) };
    }
    let live: Vec<(usize, usize)> = ps
        .iter()
        .copied()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .collect();
    let (theirs, ours): (Vec<_>, Vec<_>) = live.into_iter().partition(|(i, _)| i % 2 == 0);
    let b = a.clone();
    std::thread::spawn(move || theirs.into_iter().for_each(|(i, p)| resize_live(&b, i, p)))
        .join()
        .unwrap();
    ours.into_iter().for_each(|(i, p)| resize_live(&a, i, p));
    assert!(a.is_empty());
}
