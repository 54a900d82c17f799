//! The drop-in's sized frees (C23 `free_sized` and `free_aligned_sized`, the sized `operator
//! delete`) given the right size but a pointer that starts no allocation: inside a small
//! slot, in a small block's header, inside a medium run or a large allocation. Each must
//! abort with cohort's report naming the pointer, in every build, as `free` of the same
//! pointer does: the size matches the block's class, so the block's key cannot tell, and a
//! release build freed an inside pointer onto the block's list.
//!
//! Each case runs in a child process of its own (this test binary again) under
//! `LD_PRELOAD=libcohort.so`, so the process's `malloc` family is cohort's, as a C
//! program's would be.

mod preloaded;

use preloaded::{library, symbol};
use std::ffi::c_void;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

const CASE: &str = "COHORT_SIZED_FREE_INSIDE_CASE";

type FreeSized = unsafe extern "C" fn(*mut c_void, usize);
type FreeAlignedSized = unsafe extern "C" fn(*mut c_void, usize, usize);

/// The process's first definition of `name` (cohort's, preloaded), as a function of type
/// `F`.
///
/// # Safety
/// `F` is the function's C type.
unsafe fn function<F: Copy>(name: &str) -> F {
    let f = symbol(name);
    // SAFETY: a function pointer of the caller's type.
    unsafe { std::mem::transmute_copy::<*mut c_void, F>(&f) }
}

/// One misuse, in a process whose malloc is cohort's: names the pointer on standard error,
/// makes the call and says so if it returns.
fn misuse(case: &str) {
    // SAFETY: the C library's declarations of the functions (cohort's, preloaded).
    let (free_sized, free_aligned_sized, delete_sized, new) = unsafe {
        (
            function::<FreeSized>("free_sized"),
            function::<FreeAlignedSized>("free_aligned_sized"),
            function::<FreeSized>("_ZdlPvm"),
            function::<unsafe extern "C" fn(usize) -> *mut c_void>("_Znwm"),
        )
    };
    // SAFETY: the C library's functions (cohort's, preloaded); each pointer misused lies in
    // a live allocation of cohort's (or its block), as the case says.
    unsafe {
        let usable = function::<unsafe extern "C" fn(*mut c_void) -> usize>("malloc_usable_size");
        let probe = libc::malloc(100);
        assert_eq!(usable(probe), 112, "malloc is not cohort's");
        let p = match case {
            "free_aligned_sized" => libc::aligned_alloc(4096, 4096),
            "sized delete" => new(64),
            "free_sized inside a medium run" => libc::malloc(100_000),
            "free_sized inside a large allocation" => libc::malloc(4 << 20),
            _ => libc::malloc(64),
        }
        .cast::<u8>();
        assert!(!p.is_null());
        let block = (p as usize & !((2 << 20) - 1)) as *mut u8;
        let q = match case {
            "free_sized in a block's header" => block.add(8),
            "free_aligned_sized" => p.add(2048),
            "free_sized inside a medium run" => p.add(4096),
            "free_sized inside a large allocation" => p.add(64 << 10),
            _ => p.add(16),
        };
        eprintln!("child: misusing {q:p}");
        match case {
            "free_aligned_sized" => free_aligned_sized(q.cast(), 4096, 4096),
            "sized delete" => delete_sized(q.cast(), 64),
            "free_sized inside a medium run" => free_sized(q.cast(), 100_000),
            "free_sized inside a large allocation" => free_sized(q.cast(), 4 << 20),
            _ => free_sized(q.cast(), 64),
        }
    }
    eprintln!("child: the misuse returned");
    std::process::exit(0);
}

/// Runs `case` in a child under `LD_PRELOAD`; returns a description of what happened when
/// it was not cohort's report naming the pointer.
fn outcome(case: &str) -> Option<String> {
    let test = "a_sized_free_of_a_pointer_starting_no_allocation_aborts_naming_it";
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CASE, case)
        .env("LD_PRELOAD", library())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let misused = stderr
        .split("child: misusing ")
        .nth(1)
        .and_then(|rest| rest.lines().next());
    let named = misused.is_some_and(|q| stderr.contains(&format!("cohort: bad free of {q}")));
    let reported = out.status.signal() == Some(libc::SIGABRT) && named;
    (!reported).then(|| format!("{case}: {:?}: {stderr}", out.status))
}

/// Before the fix (release library, main 97872eb): the small-slot, header and aligned cases
/// and the sized `delete` returned (the inside pointer went onto the block's list).
#[test]
fn a_sized_free_of_a_pointer_starting_no_allocation_aborts_naming_it() {
    if let Ok(case) = std::env::var(CASE) {
        misuse(&case);
        return;
    }
    let wrong: Vec<String> = [
        "free_sized inside a small slot",
        "free_sized in a block's header",
        "free_aligned_sized",
        "sized delete",
        "free_sized inside a medium run",
        "free_sized inside a large allocation",
    ]
    .into_iter()
    .filter_map(outcome)
    .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}
