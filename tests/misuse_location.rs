//! Misuse reports point at the caller's line: the public free, dealloc and resize paths
//! (and the handles' `Allocator` methods) are `#[track_caller]` down to the report, so the
//! panic's location is the line of the program that misused the allocator, not a line
//! inside cohort. (A test binary of its own: it installs a panic hook.)

use cohort::allocator_api2::alloc::Allocator;
use cohort::Cohort;
use std::alloc::Layout;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::Mutex;

cohort::lifetime_classes! {
    enum Life { Frame, Long }
}

static WHERE: Mutex<Option<(String, u32)>> = Mutex::new(None);

/// Runs `f`, which must panic, and returns the file and line the panic names.
fn panic_location(f: impl FnOnce()) -> (String, u32) {
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().unwrap();
        *WHERE.lock().unwrap() = Some((at.file().to_owned(), at.line()));
    }));
    let r = catch_unwind(AssertUnwindSafe(f));
    let _ = std::panic::take_hook();
    assert!(r.is_err(), "no panic");
    WHERE.lock().unwrap().take().unwrap()
}

// SAFETY (the unsafe calls below): each is a misuse the allocator detects and reports
// before it touches anything, or a free of a live allocation as made.
#[test]
fn misuse_reports_name_the_callers_line() {
    let a: Cohort<Life> = Cohort::new();
    let here = file!().to_owned();
    for (size, wrong) in [(64, 64), (64, 4096), (100_000, 200_000)] {
        let p = a.malloc(size, Life::Frame);
        // A wrong lifetime class (or size), through `free`.
        let line = line!() + 1;
        let at = panic_location(|| unsafe { a.free(p, wrong, Life::Long) });
        assert_eq!(at, (here.clone(), line), "free of {size} B as {wrong} B");
        let l = Layout::from_size_align(wrong, 8).unwrap();
        let line = line!() + 1;
        let at = panic_location(|| unsafe { a.dealloc(p, l, Life::Long) });
        assert_eq!(at, (here.clone(), line), "dealloc");
        let line = line!() + 3;
        let at = panic_location(|| {
            // SAFETY: rejected before it touches anything (wrong class).
            let _ = unsafe { a.remalloc(p, wrong, 10, Life::Long) };
        });
        assert_eq!(at, (here.clone(), line), "remalloc");
        let h = a.handle(Life::Long);
        let q = NonNull::new(p).unwrap();
        let line = line!() + 1;
        let at = panic_location(|| unsafe { h.deallocate(q, l) });
        assert_eq!(at, (here.clone(), line), "handle deallocate");
        // SAFETY: live, as made.
        unsafe { a.free(p, size, Life::Frame) };
    }
    // A double free.
    let p = a.malloc(24, Life::Frame);
    // SAFETY: live, as made.
    unsafe { a.free(p, 24, Life::Frame) };
    let line = line!() + 1;
    let at = panic_location(|| unsafe { a.free(p, 24, Life::Frame) });
    assert_eq!(at, (here, line), "double free");
}
