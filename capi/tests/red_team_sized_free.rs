//! Red-team attacks on the drop-in malloc's sized frees (C23 `free_sized`,
//! `free_aligned_sized`; the sized `operator delete` forms take the same path): the
//! README says the caller's size is "checked against the block's key: a wrong size aborts
//! with a message". Each misuse runs in a child process of its own (this test binary again)
//! under `LD_PRELOAD=libcohort.so`, so the process's `malloc` family is cohort's, as a C
//! program's would be; the child must die of `SIGABRT` with cohort's report on standard
//! error.
//!
//! The library is the one `cargo build -p cohort-c` made (`.ci/capi.sh` builds the
//! release and debug libraries before it runs `cargo test -p cohort-c`): a test build of
//! this package does not make its `cdylib`.

mod preloaded;

use preloaded::{library, symbol};
use std::ffi::c_void;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

const CASE: &str = "COHORT_RED_TEAM_SIZED_FREE_CASE";

const LARGE: usize = 4 << 20;

/// One misuse, in a process whose malloc is cohort's; returns when it was not reported
/// (the report aborts).
fn misuse(case: &str) {
    // SAFETY: each symbol has the C signature it is given (the C library's declarations of
    // the drop-in family, C23's for the sized frees).
    let (free_sized, free_aligned_sized) = unsafe {
        (
            std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void, usize)>(symbol(
                "free_sized",
            )),
            std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void, usize, usize)>(
                symbol("free_aligned_sized"),
            ),
        )
    };
    // SAFETY: the C library's functions (cohort's, preloaded), no preconditions.
    let (small, large, aligned_large) = unsafe {
        let probe = libc::malloc(100);
        assert_eq!(
            libc::malloc_usable_size(probe),
            112,
            "malloc is not cohort's"
        );
        (
            libc::malloc(16),
            libc::malloc(LARGE),
            libc::aligned_alloc(4096, LARGE),
        )
    };
    assert!(!small.is_null() && !large.is_null() && !aligned_large.is_null());
    // SAFETY: the misuse under test.
    unsafe {
        match case {
            "small, SIZE_MAX" => free_sized(small, usize::MAX),
            "small, PTRDIFF_MAX" => free_sized(small, isize::MAX as usize),
            "large, 16" => free_sized(large, 16),
            "large, twice its size" => free_sized(large, 2 * LARGE),
            "large, 100000 (a medium size)" => free_sized(large, 100_000),
            "aligned large, (64, 100)" => free_aligned_sized(aligned_large, 64, 100),
            _ => free_sized(small, 100),
        }
    }
    println!("{case}: not reported");
    std::process::exit(0);
}

/// RED-75: `free_sized`/`free_aligned_sized` check the caller's size against the block
/// only for pointers in cohort's region and sizes `malloc` could have been given: a size
/// above `PTRDIFF_MAX` (less a page), or any size with a large allocation (a mapping of
/// its own, outside the region), falls back to the unsized `free(p)`, which finds the size
/// from the address and frees silently. `cohort_free` (the cohort API) reports the same
/// wrong sizes for the same allocations ("the large allocation there maps 4194304 B ...
/// which size 16 ... do not match"). The last case (a small allocation freed with a
/// small wrong size) is reported on main and stays a guard.
#[test]
fn a_sized_free_with_a_wrong_size_is_reported_whatever_the_allocation() {
    if let Ok(case) = std::env::var(CASE) {
        misuse(&case);
        return;
    }
    let cases = [
        "small, SIZE_MAX",
        "small, PTRDIFF_MAX",
        "large, 16",
        "large, twice its size",
        "large, 100000 (a medium size)",
        "aligned large, (64, 100)",
        "small, 100",
    ];
    let mut silent = Vec::new();
    for case in cases {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_sized_free_with_a_wrong_size_is_reported_whatever_the_allocation",
                "--nocapture",
                "--test-threads=1",
                "--include-ignored",
            ])
            .env(CASE, case)
            .env("LD_PRELOAD", library())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.signal() != Some(libc::SIGABRT) || !stderr.contains("cohort: ") {
            silent.push(format!("{case}: {:?}", out.status));
        }
    }
    assert!(silent.is_empty(), "wrong sizes not reported: {silent:#?}");
}
