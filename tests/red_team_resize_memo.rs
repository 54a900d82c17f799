//! Red-team attacks of session 11 on resizes that stay within their granules or pages
//! (a medium run longer than the starts' bytes can say, a large buffer within its pages):
//! a resize of an allocation its lifetime class's release took back, or that was freed,
//! must be reported as misuse, never answered with the old address. A test that found a
//! defect is `#[ignore]`d with its number (RED-n), its owner and the exact failure.

use cohort::{set_misuse_hook, Cohort, Misuse};
use std::panic::{catch_unwind, panic_any, AssertUnwindSafe};
use std::sync::Mutex;

cohort::lifetime_classes! { enum Life { Short, Long } }

/// The hook is one per process: the tests that set it take turns.
static TURN: Mutex<()> = Mutex::new(());

fn raise(m: &Misuse) {
    panic_any(m.clone());
}

/// `remalloc(p, old, new)` with the misuse hook raising: `Err` when reported.
fn resize_reported(
    a: &Cohort<Life>,
    p: *mut u8,
    old: usize,
    new: usize,
) -> Result<*mut u8, Misuse> {
    let before = set_misuse_hook(Some(raise));
    // SAFETY (of the call, not of its use): misuse under test, which must be reported.
    let got = catch_unwind(AssertUnwindSafe(|| unsafe {
        a.remalloc(p, old, new, Life::Short)
    }));
    set_misuse_hook(before);
    got.map_err(|e| {
        *e.downcast::<Misuse>()
            .expect("the hook's payload is the Misuse")
    })
}

/// An allocation of `size` bytes resized twice within its granules or pages (the second
/// may take the quick path the first made possible), then released with its class; a
/// third resize of it must be reported. `size` covers a long medium run (above 127
/// granules of 2 KiB) and a large buffer.
fn resize_after_release(size: usize) {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let a = Cohort::<Life>::new();
    let p = a.malloc(size, Life::Short);
    assert!(!p.is_null());
    // SAFETY: live, resized within its granules (same address).
    let q = unsafe { a.remalloc(p, size, size + 8, Life::Short) };
    assert_eq!(q, p, "a resize within the granules stays");
    // SAFETY: as above.
    let q = unsafe { a.remalloc(p, size + 8, size + 16, Life::Short) };
    assert_eq!(q, p, "a resize within the granules stays");
    // SAFETY: every allocation of Short is dead (p is not used but in the misuse below).
    unsafe { a.release_class(Life::Short) };
    if let Ok(q) = resize_reported(&a, p, size + 16, size + 24) {
        panic!(
            "a resize of a {size}-byte allocation its class's release took back was not \
             reported: it returned {q:p} (the old address {p:p})"
        );
    }
    // The same after a free.
    let p = a.malloc(size, Life::Short);
    assert!(!p.is_null());
    // SAFETY: live, resized within its granules (same address), then freed once.
    unsafe {
        assert_eq!(a.remalloc(p, size, size + 8, Life::Short), p);
        assert_eq!(a.remalloc(p, size + 8, size + 16, Life::Short), p);
        a.free(p, size + 16, Life::Short);
    }
    if let Ok(q) = resize_reported(&a, p, size + 16, size + 24) {
        panic!("a resize of a freed {size}-byte allocation was not reported: it returned {q:p}");
    }
    // A Long allocation keeps the instance's medium blocks and large table busy.
    let keep = a.malloc(size, Life::Long);
    // SAFETY: live, freed once.
    unsafe { a.free(keep, size, Life::Long) };
}

#[test]
fn a_long_medium_run_resized_after_its_class_was_released_is_misuse() {
    resize_after_release(400_000);
}

#[test]
fn a_large_buffer_resized_after_its_class_was_released_is_misuse() {
    resize_after_release((3 << 20) + 100);
}
