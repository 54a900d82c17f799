//! Red-team guard for the drop-in sized frees (C23 `free_sized`, `free_aligned_sized`):
//! every call C23 allows must free without a report. A size is the one given to the call
//! that made the block (`malloc`, `calloc`'s product, `realloc`'s new size; `aligned_alloc`'s
//! alignment and size), whatever the block's class, a shrink or growth in place, a zero size.
//! The calls run in a child process (this test binary again) under
//! `LD_PRELOAD=libcohort.so`, so that the process's `malloc` family is cohort's.

mod preloaded;

use preloaded::{library, symbol};
use std::ffi::c_void;
use std::process::Command;

const CASE: &str = "COHORT_RED_TEAM_SIZED_FREE_VALID";

const SIZES: [usize; 18] = [
    0,
    1,
    8,
    9,
    16,
    24,
    100,
    1000,
    4000,
    4096,
    9000,
    40_000,
    100_000,
    300_000,
    1 << 20,
    (4 << 20) - 1,
    4 << 20,
    (16 << 20) + 12_345,
];

/// Every allowed sized free, in this process (cohort's malloc).
fn valid_calls() {
    // SAFETY: each symbol has C23's signature.
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
    // SAFETY: the C library's functions (cohort's, preloaded), each block freed once with
    // the size (and alignment) that made it.
    unsafe {
        let probe = libc::malloc(100);
        assert_eq!(
            libc::malloc_usable_size(probe),
            112,
            "malloc is not cohort's"
        );
        libc::free(probe);
        for &s in &SIZES {
            eprintln!("malloc({s})");
            let p = libc::malloc(s);
            assert!(!p.is_null());
            free_sized(p, s);
            eprintln!("calloc(3, {s})");
            let p = libc::calloc(3, s);
            assert!(!p.is_null());
            free_sized(p, 3 * s);
        }
        for &old in &SIZES {
            for &new in &SIZES {
                if new == 0 {
                    continue;
                }
                eprintln!("realloc({old} -> {new})");
                let p = libc::malloc(old);
                let q = libc::realloc(p, new);
                assert!(!q.is_null());
                free_sized(q, new);
                // Twice over: a block resized in place and resized again.
                let p = libc::malloc(old);
                let q = libc::realloc(p, new);
                let r = libc::realloc(q, old.max(1));
                assert!(!r.is_null());
                free_sized(r, old.max(1));
            }
        }
        for align in [8usize, 16, 32, 64, 4096, 65_536, 1 << 21] {
            for &s in &SIZES {
                let s = s.div_ceil(align) * align;
                eprintln!("aligned_alloc({align}, {s})");
                let p = libc::aligned_alloc(align, s);
                assert!(!p.is_null());
                free_aligned_sized(p, align, s);
            }
        }
    }
    println!("all freed");
}

#[test]
fn every_sized_free_c23_allows_frees_silently() {
    if std::env::var(CASE).is_ok() {
        valid_calls();
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "every_sized_free_c23_allows_frees_silently",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CASE, "1")
        .env("LD_PRELOAD", library())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(6).collect();
    assert!(
        out.status.success() && stdout.contains("all freed"),
        "{:?}: {tail:#?}",
        out.status
    );
}
