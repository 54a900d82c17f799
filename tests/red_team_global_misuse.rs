//! Red-team attacks of session 16 on the checks of the fast paths as a program's
//! `#[global_allocator]` calls them (`__rust_alloc` and `__rust_dealloc`, the build the
//! budget counts), at the budget's size (16 bytes) and around it: every misuse the README
//! promises to report in every build must abort with the message naming the pointer, from
//! the owning thread and from another one: a double free, a wrong size (another class,
//! smaller and larger), a wrong align that changes the class, size 0 with a live pointer, a
//! pointer of the stack, of libc, of another instance, of the same instance's own lifetime
//! class (the direct API's), a medium or large allocation freed as 16 bytes, a pointer in a
//! block never carved; in checked builds also an interior pointer and a later double free.
//! Each case runs in a child process (a misuse through `GlobalAlloc` aborts). A test that
//! found a defect is `#[ignore]`d with its number (RED-n), its owner and the exact failure.

use std::alloc::{alloc, dealloc, GlobalAlloc, Layout};
use std::hint::black_box;
use test_support::{child_case, misuse_unnamed};

cohort::lifetime_classes! { enum Life { Mine } }

#[global_allocator]
static A: cohort::Cohort<Life> = cohort::Cohort::new();

/// Another instance, used through `GlobalAlloc` directly.
static OTHER: cohort::Cohort = cohort::Cohort::new();

const CHILD_ENV: &str = "COHORT_RED_GLOBAL_MISUSE";

/// True in builds that check every free (debug builds, or the `checked` feature).
const CHECKED: bool = cfg!(debug_assertions);

fn lay(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

/// A fresh allocation of `layout` through the global allocator, not elided.
fn fresh(layout: Layout) -> *mut u8 {
    // SAFETY: non-zero sizes.
    let p = black_box(unsafe { alloc(layout) });
    assert!(!p.is_null());
    p
}

/// An allocation of 16 bytes by another thread, handed to this one.
fn from_another_thread(layout: Layout) -> *mut u8 {
    let p = std::thread::spawn(move || fresh(layout) as usize)
        .join()
        .unwrap();
    p as *mut u8
}

/// Announces the pointer the misuse passes, then frees it with `layout`.
///
/// # Safety
/// Deliberately wrong: the process must abort.
unsafe fn misuse(p: *mut u8, layout: Layout) {
    eprintln!("child: misusing {p:p}");
    // SAFETY: deliberately wrong (caller).
    unsafe { dealloc(black_box(p), layout) };
}

/// The child's side: one case, which must abort.
fn run(case: &str) {
    let l16 = lay(16, 8);
    // SAFETY (every case): deliberately wrong frees; the process must abort in the last.
    unsafe {
        match case {
            "double" => {
                let p = fresh(l16);
                dealloc(p, l16);
                misuse(p, l16);
            }
            "double later" => {
                let (p, q) = (fresh(l16), fresh(l16));
                dealloc(p, l16);
                dealloc(q, l16);
                misuse(p, l16);
            }
            "larger size" => misuse(fresh(l16), lay(48, 8)),
            "smaller size" => misuse(fresh(l16), lay(8, 8)),
            "size 0" => misuse(fresh(l16), lay(0, 1)),
            "align" => misuse(fresh(lay(24, 16)), lay(24, 8)),
            "interior" => misuse(fresh(l16).wrapping_add(8), l16),
            "stack" => {
                let mut x = [0u64; 4];
                misuse(x.as_mut_ptr().cast(), l16);
            }
            "libc" => misuse(libc::malloc(16).cast(), l16),
            "other instance" => misuse(black_box(GlobalAlloc::alloc(&OTHER, l16)), l16),
            "own lifetime class" => misuse(A.malloc(16, Life::Mine), l16),
            "medium as 16" => misuse(fresh(lay(32768, 8)), l16),
            "large as 16" => misuse(fresh(lay(300_000, 8)), l16),
            "never carved" => {
                let p = fresh(l16) as usize;
                misuse(((p & !((2 << 20) - 1)) + (64 << 20) + 64) as *mut u8, l16);
            }
            "remote double" => {
                let p = from_another_thread(l16);
                dealloc(p, l16);
                misuse(p, l16);
            }
            "remote wrong size" => misuse(from_another_thread(l16), lay(48, 8)),
            "remote other instance" => {
                let p = std::thread::spawn(|| GlobalAlloc::alloc(&OTHER, lay(16, 8)) as usize)
                    .join()
                    .unwrap();
                misuse(p as *mut u8, l16);
            }
            "remote own lifetime class" => {
                let p = std::thread::spawn(|| A.malloc(16, Life::Mine) as usize)
                    .join()
                    .unwrap();
                misuse(p as *mut u8, l16);
            }
            _ => unreachable!("{case}"),
        }
    }
    eprintln!("child: the misuse returned");
}

/// The child side: runs only when the parent re-executes this test binary.
#[test]
fn global_misuse_child() {
    if let Some(case) = child_case(CHILD_ENV) {
        run(&case);
    }
}

/// Every case aborts with cohort's message naming the pointer, and never returns.
#[test]
fn misuse_through_the_global_allocator_aborts_naming_the_pointer() {
    let mut cases = vec![
        "double",
        "larger size",
        "smaller size",
        "size 0",
        "align",
        "stack",
        "libc",
        "other instance",
        "own lifetime class",
        "medium as 16",
        "large as 16",
        "never carved",
        "remote double",
        "remote wrong size",
        "remote other instance",
        "remote own lifetime class",
    ];
    if CHECKED {
        cases.extend(["double later", "interior"]);
    }
    let failures: Vec<String> = cases
        .into_iter()
        .filter_map(|case| misuse_unnamed("global_misuse_child", CHILD_ENV, case))
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}
