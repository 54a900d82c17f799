//! The misuse hook (`cohort::set_misuse_hook`): called with the `Misuse` as a value before
//! every report, the direct API's panic and `GlobalAlloc`'s abort; a hook that unwinds
//! gives `catch_unwind` callers the value, except where the report must abort.

use cohort::{set_misuse_hook, Cohort, Misuse, Problem};
use std::alloc::{GlobalAlloc, Layout};
use std::panic::{catch_unwind, panic_any, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use test_support::{abort_in_child, child_case};

/// The hook is one per process: the tests that set it take turns.
static TURN: Mutex<()> = Mutex::new(());
/// What the counting hook saw: the last misuse's pointer and size, and how many.
static SEEN_PTR: AtomicUsize = AtomicUsize::new(0);
static SEEN_SIZE: AtomicUsize = AtomicUsize::new(0);
static SEEN: AtomicUsize = AtomicUsize::new(0);

fn count(m: &Misuse) {
    SEEN_PTR.store(m.ptr, Ordering::SeqCst);
    SEEN_SIZE.store(m.size, Ordering::SeqCst);
    SEEN.fetch_add(1, Ordering::SeqCst);
}

fn raise(m: &Misuse) {
    panic_any(m.clone());
}

#[test]
fn a_hook_that_unwinds_hands_the_misuse_to_catch_unwind() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let a = Cohort::<()>::new();
    let p = a.malloc(24, ());
    let before = set_misuse_hook(Some(raise));
    // SAFETY: p is live; the wrong size is reported and nothing is freed.
    let caught = catch_unwind(AssertUnwindSafe(|| unsafe { a.free(p, 4000, ()) }));
    set_misuse_hook(before);
    let m = caught
        .expect_err("a wrong size is reported")
        .downcast::<Misuse>()
        .expect("the hook's payload is the Misuse");
    assert_eq!((m.ptr, m.size, m.life), (p as usize, 4000, 0));
    assert!(matches!(m.problem, Problem::WrongBlock { .. }), "{m}");
    // SAFETY: still live (the misuse freed nothing), with its own size.
    unsafe { a.free(p, 24, ()) };
    assert!(a.is_empty());
}

#[test]
fn a_hook_that_returns_is_followed_by_the_usual_panic_and_can_be_removed() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let a = Cohort::<()>::new();
    let p = a.malloc(100, ());
    let before = set_misuse_hook(Some(count));
    let seen = SEEN.load(Ordering::SeqCst);
    // SAFETY: as above: reported, nothing freed.
    let caught = catch_unwind(AssertUnwindSafe(|| unsafe { a.free(p, 1, ()) }));
    let message = *caught.expect_err("reported").downcast::<String>().unwrap();
    assert!(message.contains("bad free"), "{message}");
    assert_eq!(SEEN.load(Ordering::SeqCst), seen + 1);
    assert_eq!(SEEN_PTR.load(Ordering::SeqCst), p as usize);
    assert_eq!(SEEN_SIZE.load(Ordering::SeqCst), 1);
    // Removed: the next report does not call it.
    let mine = set_misuse_hook(before).expect("the hook set above");
    assert_eq!(mine as usize, count as fn(&Misuse) as usize);
    // SAFETY: as above.
    let _ = catch_unwind(AssertUnwindSafe(|| unsafe { a.free(p, 1, ()) }));
    assert_eq!(SEEN.load(Ordering::SeqCst), seen + 1);
    // SAFETY: still live, its own size.
    unsafe { a.free(p, 100, ()) };
}

#[test]
fn try_free_returns_the_misuse_without_calling_the_hook() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let a = Cohort::<()>::new();
    let p = a.malloc(64, ());
    let before = set_misuse_hook(Some(count));
    let seen = SEEN.load(Ordering::SeqCst);
    // SAFETY: p is live; try_free checks before it frees.
    let err = unsafe { a.try_free(p, 5000, ()) }.expect_err("wrong size");
    set_misuse_hook(before);
    assert_eq!(err.ptr, p as usize);
    assert_eq!(SEEN.load(Ordering::SeqCst), seen);
    // SAFETY: still live, its own size.
    unsafe { a.free(p, 64, ()) };
}

/// Through `GlobalAlloc` the report aborts even when the hook unwinds, and the hook ran.
#[test]
fn an_unwinding_hook_cannot_stop_globalallocs_abort() {
    const VAR: &str = "COHORT_MISUSE_HOOK_CASE";
    if let Some(case) = child_case(VAR) {
        fn say_and_raise(m: &Misuse) {
            eprintln!("hook saw {:#x} size {}", m.ptr, m.size);
            panic_any(m.clone());
        }
        set_misuse_hook(Some(say_and_raise));
        let a = Cohort::<()>::new();
        let layout = Layout::from_size_align(48, 8).unwrap();
        // SAFETY: a valid layout; the dealloc below gives a wrong one on purpose.
        let p = unsafe { GlobalAlloc::alloc(&a, layout) };
        assert_eq!(case, "wrong size");
        // SAFETY: p is live; the wrong layout is the misuse under test (it aborts).
        unsafe { GlobalAlloc::dealloc(&a, p, Layout::from_size_align(3000, 8).unwrap()) };
        unreachable!("GlobalAlloc's misuse report returned");
    }
    let stderr = abort_in_child(
        "an_unwinding_hook_cannot_stop_globalallocs_abort",
        VAR,
        "wrong size",
    );
    assert!(
        stderr.contains("hook saw 0x") && stderr.contains("size 3000"),
        "{stderr}"
    );
    assert!(stderr.contains("cohort: bad free"), "{stderr}");
}
