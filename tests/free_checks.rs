//! What a free checks in every build (release included): a wrong size or lifetime class, a
//! pointer that is not the allocator's, an immediate double free. Each case is misuse that
//! must be reported (a panic from the direct API, an abort through `GlobalAlloc`) without
//! touching any other allocation.

use std::alloc::{GlobalAlloc, Layout};

mod common;
use common::misuse_message;
use test_support::{abort_in_child, child_case};

cohort::lifetime_classes! {
    enum Life { A, B, C }
}

/// Regression (issue 9, item 2): an object in the second half of a block freed with the size
/// of a class whose block was smaller masked into the middle of the block and read user
/// data as a header; zeroed data passed the key check and the tiny free path wrote into live
/// objects.
#[test]
fn a_wrong_size_never_reads_user_memory_as_a_header() {
    let a: cohort::Cohort<Life> = cohort::Cohort::new();
    let n = (1 << 20) / 8 + 1000;
    let v: Vec<*mut u8> = (0..n).map(|_| a.malloc(8, Life::A)).collect();
    for &p in &v {
        assert!(!p.is_null());
        // SAFETY: a live 8-byte allocation.
        unsafe { p.cast::<u64>().write(0) };
    }
    let last = *v.last().unwrap();
    let msg = misuse_message(|| {
        // SAFETY: deliberately wrong: the allocation is 8 bytes (the check must catch it).
        unsafe { a.free(last, 1, Life::A) }
    });
    assert!(msg.contains("size 1"), "{msg}");
    for &p in &v {
        // SAFETY: still live.
        assert_eq!(unsafe { p.cast::<u64>().read() }, 0, "an object changed");
    }
    for &p in &v {
        // SAFETY: live 8-byte allocations of class A, freed once.
        unsafe { a.free(p, 8, Life::A) };
    }
    assert!(a.is_empty());
}

/// Siblings of item 2: every small size freed with every other small size's class, at
/// every position of a filled block, is reported and changes nothing.
#[test]
fn every_wrong_small_size_is_reported() {
    let a: cohort::Cohort<Life> = cohort::Cohort::new();
    let sizes = [
        1usize, 2, 4, 8, 16, 24, 64, 72, 200, 1024, 1100, 4096, 16384,
    ];
    for &real in &sizes {
        let objs: Vec<*mut u8> = (0..64).map(|_| a.calloc(real, Life::B)).collect();
        for &wrong in &sizes {
            if cohort::class::class_of(wrong, cohort::class::malloc_align(wrong))
                == cohort::class::class_of(real, cohort::class::malloc_align(real))
            {
                continue;
            }
            let p = objs[37];
            let msg = misuse_message(|| {
                // SAFETY: deliberately wrong size (the check must catch it).
                unsafe { a.free(p, wrong, Life::B) }
            });
            assert!(
                msg.contains("cohort: bad free"),
                "{real} freed as {wrong}: {msg}"
            );
        }
        for &p in &objs {
            // SAFETY: live allocations of `real` bytes in B.
            unsafe {
                assert!(std::slice::from_raw_parts(p, real).iter().all(|&b| b == 0));
                a.free(p, real, Life::B);
            }
        }
    }
    assert!(a.is_empty());
    let mut a = a;
    a.verify_exclusive()
        .expect("consistent after the reported misuse");
}

/// A wrong lifetime class is reported, and says that it is the lifetime class that differs.
#[test]
fn a_wrong_lifetime_class_is_reported() {
    let a: cohort::Cohort<Life> = cohort::Cohort::new();
    let p = a.malloc(48, Life::A);
    let msg = misuse_message(|| {
        // SAFETY: deliberately wrong lifetime class.
        unsafe { a.free(p, 48, Life::C) }
    });
    assert!(msg.contains("lifetime class"), "{msg}");
    // SAFETY: the correct free.
    unsafe { a.free(p, 48, Life::A) };
    assert!(a.is_empty());
}

/// Hardening: a pointer outside the instance's memory (the stack, another allocator's heap,
/// another instance) is reported, not dereferenced.
#[test]
fn foreign_pointers_are_reported() {
    let a: cohort::Cohort<Life> = cohort::Cohort::new();
    let other: cohort::Cohort<Life> = cohort::Cohort::new();
    let keep = a.malloc(16, Life::A); // the instance exists
    let mut on_stack = [0u64; 4];
    let from_libc = Box::into_raw(Box::new([0u8; 16])).cast::<u8>();
    let from_other = other.malloc(16, Life::A);
    for p in [on_stack.as_mut_ptr().cast::<u8>(), from_libc, from_other] {
        let msg = misuse_message(|| {
            // SAFETY: deliberately foreign (the check must catch it).
            unsafe { a.free(p, 16, Life::A) }
        });
        assert!(msg.contains("not from this allocator"), "{p:?}: {msg}");
    }
    // Addresses that map to nothing at all.
    for p in [0x10usize, 0x7fff_0000_0000, usize::MAX - 4095] {
        let msg = misuse_message(|| {
            // SAFETY: deliberately foreign (the check must catch it).
            unsafe { a.free(p as *mut u8, 16, Life::A) }
        });
        assert!(msg.contains("not from this allocator"), "{p:#x}: {msg}");
    }
    // SAFETY: the allocations above, freed correctly.
    unsafe {
        drop(Box::from_raw(from_libc.cast::<[u8; 16]>()));
        other.free(from_other, 16, Life::A);
        a.free(keep, 16, Life::A);
    }
    assert!(a.is_empty() && other.is_empty());
}

/// Hardening: freeing the same slot twice in a row is reported in every build (the slot is
/// not handed out twice).
#[test]
fn an_immediate_double_free_is_reported() {
    let a: cohort::Cohort<Life> = cohort::Cohort::new();
    for size in [4, 16, 100, 3000] {
        let keep = a.malloc(size, Life::A);
        let p = a.malloc(size, Life::A);
        // SAFETY: the first free is correct.
        unsafe { a.free(p, size, Life::A) };
        let msg = misuse_message(|| {
            // SAFETY: deliberately freed twice.
            unsafe { a.free(p, size, Life::A) }
        });
        assert!(msg.contains("double free"), "{size}: {msg}");
        let q = a.malloc(size, Life::A);
        let r = a.malloc(size, Life::A);
        assert_ne!(q, r, "a slot handed out twice");
        // SAFETY: live allocations, freed once.
        unsafe {
            a.free(q, size, Life::A);
            a.free(r, size, Life::A);
            a.free(keep, size, Life::A);
        }
    }
    assert!(a.is_empty());
}

/// A child process run for one case of [`global_allocator_misuse_aborts`].
fn global_misuse(case: &str) {
    static G: cohort::Cohort = cohort::Cohort::new();
    let l8 = Layout::from_size_align(8, 8).unwrap();
    // SAFETY (every case): deliberate misuse, which must abort the process.
    unsafe {
        match case {
            "wrong-size" => {
                let v: Vec<*mut u8> = (0..(1 << 20) / 8 + 1000)
                    .map(|_| GlobalAlloc::alloc_zeroed(&G, l8))
                    .collect();
                GlobalAlloc::dealloc(
                    &G,
                    *v.last().unwrap(),
                    Layout::from_size_align(1, 1).unwrap(),
                );
            }
            "large-as-small" => {
                let p = GlobalAlloc::alloc(&G, Layout::from_size_align(100_000, 8).unwrap());
                GlobalAlloc::dealloc(&G, p, Layout::from_size_align(64, 8).unwrap());
            }
            "huge-calloc-as-1" => {
                let p = GlobalAlloc::alloc_zeroed(
                    &G,
                    Layout::from_size_align(4 << 20, 1 << 20).unwrap(),
                );
                GlobalAlloc::dealloc(&G, p, Layout::from_size_align(1, 1).unwrap());
            }
            _ => unreachable!(),
        }
    }
    // Not reached when the misuse is caught.
    std::process::exit(0);
}

/// Through `GlobalAlloc` the same misuse aborts with the message (it must not unwind), and
/// never crashes with SIGSEGV.
#[test]
fn global_allocator_misuse_aborts() {
    const CASE: &str = "COHORT_FREE_CHECKS_CASE";
    if let Some(case) = child_case(CASE) {
        global_misuse(&case);
        return;
    }
    for case in ["wrong-size", "large-as-small", "huge-calloc-as-1"] {
        let stderr = abort_in_child("global_allocator_misuse_aborts", CASE, case);
        assert!(stderr.contains("cohort: bad free"), "{case}: {stderr}");
    }
}
