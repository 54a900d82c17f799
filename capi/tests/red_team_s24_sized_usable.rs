//! Red-team guard for the drop-in sized frees with a size between the one asked for and the
//! usable size (capi's `free_sized`: "the size given to `malloc`, `calloc` or `realloc`
//! (any size up to the usable size)"), with `aligned_alloc` sizes that are not multiples of
//! their alignment (C17 allows any size), and with the sized and aligned `operator delete`
//! forms, across small, medium and large sizes and every alignment up to 2 MiB. The calls
//! run in a child process (this test binary again) under `LD_PRELOAD=libcohort.so`; the
//! child names each call on standard error before it makes it, so a report names the case.

mod preloaded;

use preloaded::{rerun_case, symbol};
use std::ffi::c_void;

const CASE: &str = "COHORT_RED_TEAM_S24_SIZED_USABLE";

const SIZES: [usize; 22] = [
    1,
    7,
    9,
    17,
    20,
    33,
    100,
    1000,
    4095,
    4097,
    9000,
    16_385,
    40_000,
    100_000,
    300_000,
    (1 << 20) - 100,
    1 << 20,
    (1 << 20) + 1,
    (2 << 20) + 5,
    (4 << 20) - 1,
    4 << 20,
    (16 << 20) + 12_345,
];

const ALIGNS: [usize; 9] = [1, 8, 16, 32, 64, 4096, 8192, 65_536, 1 << 21];

type SizedFree = unsafe extern "C" fn(*mut c_void, usize);
type AlignedSizedFree = unsafe extern "C" fn(*mut c_void, usize, usize);
type AlignedNew = unsafe extern "C" fn(usize, usize) -> *mut c_void;
type SizedAlignedDelete = unsafe extern "C" fn(*mut c_void, usize, usize);

/// Sizes from `asked` to `usable` worth a case: both ends, one past the asked size, the
/// middle.
fn sizes_between(asked: usize, usable: usize) -> Vec<usize> {
    let mut v = vec![asked, usable, (asked + usable) / 2, (asked + 1).min(usable)];
    v.dedup();
    v
}

/// Every case, in this process (cohort's malloc).
fn calls() {
    // SAFETY: each symbol has its C23 or Itanium signature.
    let (free_sized, free_aligned_sized, new_aligned, delete_sized_aligned) = unsafe {
        (
            std::mem::transmute::<*mut c_void, SizedFree>(symbol("free_sized")),
            std::mem::transmute::<*mut c_void, AlignedSizedFree>(symbol("free_aligned_sized")),
            std::mem::transmute::<*mut c_void, AlignedNew>(symbol("_ZnwmSt11align_val_t")),
            std::mem::transmute::<*mut c_void, SizedAlignedDelete>(symbol(
                "_ZdlPvmSt11align_val_t",
            )),
        )
    };
    let sized_delete =
        // SAFETY: `operator delete(void *, size_t)`.
        unsafe { std::mem::transmute::<*mut c_void, SizedFree>(symbol("_ZdlPvm")) };
    // SAFETY: the C library's functions (cohort's, preloaded); each block freed once with a
    // size from the one that made it up to its usable size, and the alignment that made it.
    unsafe {
        let probe = libc::malloc(100);
        assert_eq!(
            libc::malloc_usable_size(probe),
            112,
            "malloc is not cohort's"
        );
        libc::free(probe);
        for &s in &SIZES {
            let usable = {
                let p = libc::malloc(s);
                let u = libc::malloc_usable_size(p);
                libc::free(p);
                u
            };
            assert!(usable >= s, "malloc_usable_size of malloc({s}): {usable}");
            for n in sizes_between(s, usable) {
                eprintln!("malloc({s}), usable {usable}, free_sized {n}");
                let p = libc::malloc(s);
                p.cast::<u8>().write_bytes(1, usable);
                free_sized(p, n);
                eprintln!("malloc({s}), usable {usable}, sized delete {n}");
                let p = libc::malloc(s);
                sized_delete(p, n);
            }
        }
        for align in ALIGNS {
            for &s in &SIZES {
                let p = libc::aligned_alloc(align, s);
                assert!(!p.is_null(), "aligned_alloc({align}, {s})");
                assert_eq!(p as usize % align, 0, "aligned_alloc({align}, {s}): {p:p}");
                let usable = libc::malloc_usable_size(p);
                assert!(
                    usable >= s,
                    "usable size of aligned_alloc({align}, {s}): {usable}"
                );
                libc::free(p);
                for n in sizes_between(s, usable) {
                    eprintln!("aligned_alloc({align}, {s}), usable {usable}, free {n}");
                    let p = libc::aligned_alloc(align, s);
                    p.cast::<u8>().write_bytes(2, usable);
                    free_aligned_sized(p, align, n);
                }
                if align > 1 {
                    eprintln!("operator new({s}, {align}), sized delete {s}");
                    let p = new_aligned(s, align);
                    assert_eq!(p as usize % align, 0, "new({s}, {align}): {p:p}");
                    delete_sized_aligned(p, s, align);
                }
            }
        }
    }
    println!("answer all freed");
}

#[test]
fn sized_frees_up_to_the_usable_size_free_silently() {
    if std::env::var(CASE).is_ok() {
        calls();
        return;
    }
    let (reported, answer, out) =
        rerun_case("sized_frees_up_to_the_usable_size_free_silently", CASE, "1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(6).collect();
    assert!(
        out.status.success() && answer.as_deref() == Some("all freed"),
        "{:?} (cohort's report: {reported}): {tail:#?}",
        out.status
    );
}
