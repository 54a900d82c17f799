//! Red-team attacks of session 13 on double frees across threads that a release build
//! does not report (the README's every-build check covers the slot freed last onto the
//! list the free pushes on): once such a free has passed, `verify` must still see the
//! damage (a slot on two free lists), so that a program that verifies finds it before the
//! slot is handed out twice. A test that found a defect is `#[ignore]`d with its number
//! (RED-n), its owner and the exact failure.

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
