//! Red-team attacks of session 13 on double frees of the slot freed last (which the
//! README's every-build check reports) after the block left its owner's ordinary use: a
//! release that emptied it in place, the owner's exit, a fork; and on double frees across
//! threads that a release build does not report: once such a free has passed, `verify`
//! must still see the damage (a slot on two free lists). A test that found a defect is
//! `#[ignore]`d with its number (RED-n), its owner and the exact failure.

#[path = "common/processes.rs"]
#[allow(dead_code)]
mod processes;

use cohort::Cohort;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

cohort::lifetime_classes! { enum Life { A } }

/// Frees `p` on a new thread; true when the free was reported.
fn free_elsewhere(a: &Arc<Cohort<Life>>, p: *mut u8, s: usize) -> bool {
    let a2 = a.clone();
    let q = p as usize;
    std::thread::spawn(move || {
        // SAFETY: under test: the caller's allocation, or a double free.
        catch_unwind(AssertUnwindSafe(|| unsafe {
            a2.free(q as *mut u8, s, Life::A)
        }))
        .is_err()
    })
    .join()
    .unwrap()
}

/// Frees `p` here; true when the free was reported.
fn free_here(a: &Cohort<Life>, p: *mut u8, s: usize) -> bool {
    // SAFETY: under test: the caller's allocation, or a double free.
    catch_unwind(AssertUnwindSafe(|| unsafe { a.free(p, s, Life::A) })).is_err()
}

/// `first` frees the slot, then `second` frees it again; unless the second free was
/// reported, `verify` must fail.
fn verify_sees(s: usize, first: &str, second: &str) -> Result<(), String> {
    let a: Arc<Cohort<Life>> = Arc::new(Cohort::new());
    let keep = a.malloc(s, Life::A);
    let q = a.malloc(s, Life::A);
    let free = |who: &str| match who {
        "owner" => free_here(&a, q, s),
        _ => free_elsewhere(&a, q, s),
    };
    assert!(!free(first), "a valid free reported");
    if free(second) {
        // SAFETY: live.
        unsafe { a.free(keep, s, Life::A) };
        return Ok(());
    }
    // SAFETY: no other thread uses the instance now.
    let v = unsafe { a.verify() };
    // The instance took a double free: it is never used again.
    std::mem::forget(a);
    match v {
        Err(_) => Ok(()),
        Ok(v) => Err(format!(
            "size {s}: a double free ({first}, then {second}) passed unreported and verify \
             passed: {v:?}"
        )),
    }
}

#[test]
fn verify_sees_a_remote_then_local_double_free() {
    for s in [8usize, 64, 1000, 16384] {
        verify_sees(s, "other", "owner").unwrap();
    }
}

#[test]
fn verify_sees_a_local_then_remote_double_free() {
    for s in [8usize, 64, 1000, 16384] {
        verify_sees(s, "owner", "other").unwrap();
    }
}

#[test]
fn verify_sees_a_remote_then_remote_double_free_from_two_threads() {
    for s in [8usize, 64, 1000, 16384] {
        verify_sees(s, "other", "other").unwrap();
    }
}

/// 300 objects of 64 B of class A allocated and freed on this thread (the block empty, the
/// last one freed last), then the class released (the block emptied in place). Returns the
/// slot freed last.
fn emptied_in_place(a: &Cohort<Life>) -> usize {
    let ps: Vec<*mut u8> = (0..300).map(|_| a.malloc(64, Life::A)).collect();
    assert!(ps.iter().all(|p| !p.is_null()));
    for &q in &ps {
        // SAFETY: allocated above, freed once.
        unsafe { a.free(q, 64, Life::A) };
    }
    // SAFETY: nothing of the class is live.
    unsafe { a.release_class(Life::A) };
    ps[299] as usize
}

/// No slot among the next 400 objects of 64 B is handed out twice.
fn hands_out_once(a: &Cohort<Life>) {
    let next: Vec<*mut u8> = (0..400).map(|_| a.malloc(64, Life::A)).collect();
    test_support::assert_distinct(&next);
}

/// The owner's block emptied in place (release), then the owner exits (its heap handed
/// over): a double free of the slot freed last, by another thread, is reported (the block
/// went back to the pool empty), and nothing is handed out twice.
#[test]
fn a_double_free_after_a_release_and_the_owners_exit_is_reported() {
    let a: Arc<Cohort<Life>> = Arc::new(Cohort::new());
    let a2 = a.clone();
    let p = std::thread::spawn(move || emptied_in_place(&a2))
        .join()
        .unwrap();
    if !free_here(&a, p as *mut u8, 64) {
        std::mem::forget(a);
        panic!("the double free after the owner's release and exit was not reported");
    }
    hands_out_once(&a);
}

/// The owner's block emptied in place (release), then a fork: the child's double free of
/// the slot freed last is reported, and the child hands nothing out twice.
#[test]
fn a_double_free_after_a_release_in_a_forked_child_is_reported() {
    let a: Cohort<Life> = Cohort::new();
    let p = emptied_in_place(&a);
    let pid = processes::in_child(10, || {
        // `try_free`, not a free that panics: a panic in the child of this multithreaded
        // test process takes std's locks (a backtrace's, with RUST_BACKTRACE set), which
        // another test's thread may have held at the fork (the child then hung until its
        // alarm under load).
        // SAFETY: under test: a double free, returned as a misuse (nothing is freed).
        let reported = unsafe { a.try_free(p as *mut u8, 64, Life::A) }.is_err();
        assert!(
            reported,
            "the child's double free of the slot freed last before the fork was not reported"
        );
        hands_out_once(&a);
    });
    processes::wait_ok(pid);
    hands_out_once(&a);
}

/// The owner frees a slot (another stays live, so the block is not empty) and exits: its
/// heap is handed over with the local free list as it was. Another thread's double free of
/// that slot (the slot freed last onto the owner's list) is reported, and nothing is
/// handed out twice after.
#[test]
fn a_double_free_of_the_slot_an_exited_owner_freed_last_is_reported() {
    let a: Arc<Cohort<Life>> = Arc::new(Cohort::new());
    let a2 = a.clone();
    let (keep, p) = std::thread::spawn(move || {
        let keep = a2.malloc(64, Life::A);
        let p = a2.malloc(64, Life::A);
        // SAFETY: allocated above, freed once.
        unsafe { a2.free(p, 64, Life::A) };
        (keep as usize, p as usize)
    })
    .join()
    .unwrap();
    if !free_here(&a, p as *mut u8, 64) {
        std::mem::forget(a);
        panic!("the double free of the slot an exited owner freed last was not reported");
    }
    hands_out_once(&a);
    // SAFETY: live, freed once.
    unsafe { a.free(keep as *mut u8, 64, Life::A) };
}

/// A block emptied in place (release) with the slot freed last kept for the check, then a
/// second double free of that slot: every reader sees an empty instance, before and after
/// `compact`, and allocation goes on handing each slot out once.
#[test]
fn a_block_emptied_in_place_is_empty_to_every_reader() {
    let mut a: Cohort<Life> = Cohort::new();
    let p = emptied_in_place(&a);
    let again = free_here(&a, p as *mut u8, 64);
    let check = |a: &mut Cohort<Life>, when: &str| {
        let v = a.verify_exclusive();
        assert!(v.is_ok(), "{when}: verify {v:?}");
        assert_eq!(v.unwrap().live, 0, "{when}");
        assert!(a.is_empty(), "{when}: not empty");
        let live: usize = a.stats().heads.iter().map(|h| h.live).sum();
        assert_eq!(live, 0, "{when}: stats");
    };
    if again {
        check(&mut a, "after the release");
        a.compact();
        check(&mut a, "after compact");
    }
    hands_out_once(&a);
}
