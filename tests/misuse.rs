//! Misuse and hostile requests on the malloc family, realloc and large allocations: a
//! rejected resize changes nothing, huge requests are a null return in every build, recalloc
//! writes only the bytes that may be dirty, a null free does nothing, and every report names
//! what is wrong. Through `GlobalAlloc`, misuse aborts (checked in a child process).

use cohort::{Cohort, Lifetime};
use std::alloc::{GlobalAlloc, Layout};

mod common;
use common::misuse_message;
use test_support::{abort_in_child, child_case, rss};

cohort::lifetime_classes! {
    enum Life { A, B, C }
}

/// Writes `len` bytes of a pattern keyed by `key` at `p`.
///
/// # Safety
/// `p` is valid for `len` bytes of writes.
unsafe fn pattern(p: *mut u8, key: u8, len: usize) {
    for i in 0..len {
        // SAFETY: i < len (caller).
        unsafe { p.add(i).write(key ^ (i % 251) as u8) };
    }
}

/// True when the `len` bytes at `p` hold the pattern of `key`.
///
/// # Safety
/// `p` is valid for `len` bytes of reads.
unsafe fn has_pattern(p: *const u8, key: u8, len: usize) -> bool {
    // SAFETY: i < len (caller).
    (0..len).all(|i| unsafe { p.add(i).read() } == key ^ (i % 251) as u8)
}

/// Live allocations of `a`: (small live slots, large allocations).
fn live<L: Lifetime>(a: &Cohort<L>) -> (usize, usize) {
    let s = a.stats();
    (s.small.live, s.large_allocations)
}

/// Each `remalloc(p, old, new, life)` of `cases` must be rejected with a message naming the
/// pointer and the size, before anything is allocated; returns the messages.
fn assert_rejected(a: &Cohort<Life>, p: *mut u8, cases: &[(usize, usize, Life)]) -> Vec<String> {
    let before = live(a);
    let mut messages = Vec::new();
    for &(old, new, life) in cases {
        let msg = misuse_message(|| {
            // SAFETY: deliberately wrong (the allocator must reject it before any change).
            unsafe { a.remalloc(p, old, new, life) };
        });
        assert!(
            msg.contains(&format!("{:#x}", p as usize)) && msg.contains(&format!("size {old}")),
            "({old}, {new}, {life:?}): {msg}"
        );
        assert_eq!(live(a), before, "({old}, {new}): nothing allocated");
        messages.push(msg);
    }
    messages
}

/// Item 7 of issue 9: a large remalloc with a wrong old size removed the table entry, made
/// and filled a new mapping and lost the old one; the owner's correct free then panicked.
#[test]
fn a_rejected_large_remalloc_keeps_the_allocation() {
    let a: Cohort<Life> = Cohort::new();
    let p = a.malloc(1_100_000, Life::A);
    assert!(!p.is_null());
    // SAFETY: p holds 1 100 000 bytes.
    unsafe { pattern(p, 1, 1_100_000) };
    let cases: [(usize, usize, Life); 4] = [
        (700_000, 1_300_000, Life::A),   // wrong old size, growing by remap
        (1_100_000, 1_300_000, Life::B), // wrong lifetime class
        (2_000_000, 1_090_000, Life::A), // wrong old size, shrinking
        (700_000, 100, Life::A),         // wrong old size, moving to a small class
    ];
    // 1 100 000 bytes rounded up to the page (1 101 824 with 4 KiB pages).
    let maps = format!("maps {} B", large_usable(&a, 1_100_000));
    for msg in assert_rejected(&a, p, &cases) {
        assert!(msg.contains(&maps), "{msg}");
    }
    let msg = misuse_message(|| {
        // SAFETY: deliberately wrong lifetime class.
        unsafe { a.recalloc(p, 1_100_000, 1_300_000, Life::C) };
    });
    assert!(msg.contains("lifetime class 2"), "{msg}");
    // SAFETY: p is intact and still ours: the rejected calls changed nothing.
    unsafe {
        assert!(has_pattern(p, 1, 1_100_000));
        a.free(p, 1_100_000, Life::A);
    }
    assert!(a.is_empty());
}

/// Item 7's sibling: a small realloc with a wrong old size copied the wrong length into a
/// new allocation (or stayed in place) before the free found the mismatch.
#[test]
fn a_rejected_small_remalloc_allocates_and_copies_nothing() {
    let a: Cohort<Life> = Cohort::new();
    let p = a.malloc(24, Life::A);
    // SAFETY: p holds 24 bytes.
    unsafe { pattern(p, 2, 24) };
    let cases: [(usize, usize, Life); 6] = [
        (200, 5000, Life::A),    // to another small class
        (200, 200, Life::A),     // "in place" in the wrong class
        (200, 100_000, Life::A), // to a large allocation
        (24, 5000, Life::B),     // wrong lifetime class
        (24, 24, Life::B),       // wrong lifetime class, same size
        (24, 100_000, Life::C),  // wrong lifetime class, to a large allocation
    ];
    assert_rejected(&a, p, &cases);
    // The Layout form and a handle's grow take the same path.
    let msg = misuse_message(|| {
        // SAFETY: deliberately wrong old layout.
        unsafe { a.realloc(p, Layout::from_size_align(200, 8).unwrap(), 5000, Life::A) };
    });
    assert!(msg.contains("size 200"), "{msg}");
    let msg = misuse_message(|| {
        use allocator_api2::alloc::Allocator;
        let h = a.handle(Life::A);
        let old = Layout::from_size_align(200, 8).unwrap();
        let new = Layout::from_size_align(5000, 64).unwrap();
        // SAFETY: deliberately wrong old layout (a different align takes the copying path).
        let _ = unsafe { h.grow(std::ptr::NonNull::new(p).unwrap(), old, new) };
    });
    assert!(msg.contains("size 200"), "{msg}");
    assert_eq!(live(&a), (1, 0));
    // SAFETY: intact and still ours.
    unsafe {
        assert!(has_pattern(p, 2, 24));
        a.free(p, 24, Life::A);
    }
    assert!(a.is_empty());
}

/// Item 8 of issue 9: huge sizes overflowed (`next_power_of_two`, rounding) and panicked in
/// debug builds where null is promised.
#[test]
fn huge_requests_return_null_in_every_build() {
    let a: Cohort<Life> = Cohort::new();
    let join = a.join(3).unwrap();
    let small = a.malloc(24, Life::A);
    let large = a.malloc(100_000, Life::A);
    let huge = [
        usize::MAX,
        usize::MAX - 4095,
        usize::MAX - 4096,
        (1 << 63) + 1,
        1 << 63,
        isize::MAX as usize,
        isize::MAX as usize - 4095,
    ];
    for size in huge {
        assert!(a.malloc(size, Life::A).is_null(), "{size}");
        assert!(a.calloc(size, Life::A).is_null(), "{size}");
        assert_eq!(a.malloc_at_least(size, Life::A), (std::ptr::null_mut(), 0));
        assert!(join.malloc(size, Life::B).is_null(), "{size}");
        assert!(join.calloc(size, Life::B).is_null(), "{size}");
        assert_eq!(a.block_of(small, size), None, "{size} is large");
        // SAFETY: small and large are live with these sizes; a null return leaves them.
        unsafe {
            assert!(a.remalloc(small, 24, size, Life::A).is_null(), "{size}");
            assert!(a.recalloc(small, 24, size, Life::A).is_null(), "{size}");
            assert!(a.remalloc(large, 100_000, size, Life::A).is_null());
            assert!(a.recalloc(large, 100_000, size, Life::A).is_null());
            let l = Layout::from_size_align(24, 8).unwrap();
            let p = a.alloc(l, Life::A);
            assert!(a.realloc(p, l, size, Life::A).is_null(), "{size}");
            a.dealloc(p, l, Life::A);
        }
    }
    // The largest layouts Layout allows, at every alignment.
    for shift in [0, 12, 13, 21, 40, 62] {
        let align = 1usize << shift;
        let l = Layout::from_size_align(isize::MAX as usize - (align - 1), align).unwrap();
        assert!(a.alloc(l, Life::A).is_null(), "align {align}");
        assert!(a.alloc_zeroed(l, Life::A).is_null(), "align {align}");
        assert!(join.alloc(l, Life::A).is_null(), "align {align}");
        // SAFETY: GlobalAlloc's contract: a non-zero size.
        assert!(unsafe { GlobalAlloc::alloc(&a, l) }.is_null());
    }
    // SAFETY: still live and intact.
    unsafe {
        a.free(small, 24, Life::A);
        a.free(large, 100_000, Life::A);
    }
    drop(join);
    assert!(a.is_empty());
}

/// The usable size of a large allocation of `size` bytes: whole pages of the allocator's
/// page size (the kernel's, or `COHORT_PAGE_SIZE`'s).
fn large_usable<L: Lifetime>(a: &Cohort<L>, size: usize) -> usize {
    a.usable_size(Layout::from_size_align(size, 1).unwrap())
}

/// Bytes of `[p, p + len)` resident in RAM (`mincore`), `p` page aligned.
fn resident(p: *const u8, len: usize) -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let pages = len.div_ceil(page);
    let mut v = vec![0u8; pages];
    // SAFETY: the range is mapped (a live allocation) and `v` holds one byte per page.
    let rc = unsafe { libc::mincore(p as *mut libc::c_void, len, v.as_mut_ptr()) };
    assert_eq!(rc, 0);
    v.iter().filter(|&&b| b & 1 != 0).count() * page
}

/// Item 9 of issue 9: recalloc to a large size wrote zeros over the whole fresh mapping
/// (`recalloc(p, 24, 1 GiB)` made 1 GiB resident).
#[test]
fn recalloc_to_a_large_size_writes_only_what_may_be_dirty() {
    const BIG: usize = 256 << 20;
    let a: Cohort<Life> = Cohort::new();
    // SAFETY (whole test): every pointer is live when used and freed once with its size.
    unsafe {
        // A small allocation moved into a fresh mapping: nothing to zero there.
        let p = a.malloc(24, Life::A);
        pattern(p, 3, 24);
        let before = rss();
        let q = a.recalloc(p, 24, BIG, Life::A);
        assert!(!q.is_null());
        assert!(
            resident(q, BIG) < 1 << 20,
            "{} B resident",
            resident(q, BIG)
        );
        assert!(rss() < before + (4 << 20), "RSS grew by {}", rss() - before);
        assert!(has_pattern(q, 3, 24));
        assert!((24..BIG).step_by(4093).all(|i| *q.add(i) == 0));
        a.free(q, BIG, Life::A);

        // A large allocation grown by remapping: the new pages are fresh, but the tail of
        // its last page is not (dirty it first): that tail must be zeroed.
        let (p, usable) = a.malloc_at_least(100_000, Life::A);
        assert_eq!(usable, large_usable(&a, 100_000));
        p.write_bytes(0xEE, usable);
        pattern(p, 4, 100_000);
        let q = a.recalloc(p, 100_000, BIG, Life::A);
        assert!(!q.is_null());
        assert!(resident(q, BIG) < 1 << 20, "{}", resident(q, BIG));
        assert!(has_pattern(q, 4, 100_000));
        assert!((100_000..usable).all(|i| *q.add(i) == 0), "the old tail");
        assert!((usable..BIG).step_by(4093).all(|i| *q.add(i) == 0));
        // Growing within the last page (no remap): the dirty bytes are zeroed.
        let r = a.remalloc(q, BIG, BIG - 1000, Life::A);
        r.add(BIG - 1000 - 100).write_bytes(0xAB, 100);
        let r = a.recalloc(r, BIG - 1100, BIG, Life::A);
        assert!((BIG - 1100..BIG).all(|i| *r.add(i) == 0));
        a.free(r, BIG, Life::A);

        // A handle's grow_zeroed takes the same path.
        use allocator_api2::alloc::Allocator;
        let h = a.handle(Life::B);
        let l = Layout::from_size_align(24, 8).unwrap();
        let p = h.allocate(l).unwrap().cast::<u8>();
        p.as_ptr().write_bytes(0x77, 24);
        let big = Layout::from_size_align(BIG, 8).unwrap();
        let q = h.grow_zeroed(p, l, big).unwrap();
        assert!(resident(q.cast::<u8>().as_ptr(), BIG) < 1 << 20);
        assert!((24..q.len())
            .step_by(4093)
            .all(|i| *q.cast::<u8>().as_ptr().add(i) == 0));
        h.deallocate(q.cast(), big);
    }
    assert!(a.is_empty());
}

/// Item 14 (c) of issue 9: `free(null, 24)` was undefined behaviour. A null free does
/// nothing, in every free form and at every size.
#[test]
fn a_null_free_does_nothing() {
    let a: Cohort<Life> = Cohort::new();
    let join = a.join(0).unwrap();
    let keep = a.malloc(24, Life::A);
    let null = std::ptr::null_mut();
    for size in [1, 2, 8, 24, 1000, 5000, 16384, 100_000] {
        // SAFETY: a null free is defined: it does nothing.
        unsafe {
            a.free(null, size, Life::A);
            a.free(null, size, Life::C);
            join.free(null, size, Life::B);
            let l = Layout::from_size_align(size, 8).unwrap();
            a.dealloc(null, l, Life::A);
            join.dealloc(null, l, Life::A);
        }
    }
    assert_eq!(live(&a), (1, 0));
    // SAFETY: live.
    unsafe { a.free(keep, 24, Life::A) };
    drop(join);
    assert!(a.is_empty());
}

/// Item 14 (b) of issue 9: `GlobalAlloc::alloc` with size 0 (which its contract forbids)
/// panicked with an overflow in debug builds; it returns null in every build.
#[test]
fn global_alloc_of_size_zero_is_null() {
    let a: Cohort<Life> = Cohort::new();
    for align in [1, 8, 4096, 8192, 1 << 21, 1 << 40, 1 << 63] {
        let l = Layout::from_size_align(0, align).unwrap();
        // SAFETY: outside the contract (size 0); the allocator still must not misbehave.
        unsafe {
            assert!(GlobalAlloc::alloc(&a, l).is_null(), "align {align}");
            assert!(GlobalAlloc::alloc_zeroed(&a, l).is_null(), "align {align}");
        }
    }
    assert!(a.is_empty());
}

/// Item 14 (d) of issue 9: a free with the right size and the wrong lifetime class said
/// "size class 6 … but the block holds size class 6".
#[test]
fn a_wrong_lifetime_class_is_named_as_such() {
    let a: Cohort<Life> = Cohort::new();
    let p = a.malloc(24, Life::A);
    // SAFETY: deliberately wrong lifetime class.
    let msg = misuse_message(|| unsafe { a.free(p, 24, Life::B) });
    assert!(
        msg.contains("lifetime class 1 (B) but the block holds lifetime class 0 (A)"),
        "{msg}"
    );
    assert!(!msg.contains("size class"), "the size is right: {msg}");
    // Both wrong: both named.
    // SAFETY: deliberately wrong size and lifetime class.
    let msg = misuse_message(|| unsafe { a.free(p, 200, Life::C) });
    assert!(
        msg.contains("stride 32") && msg.contains("lifetime class 0 (A)"),
        "{msg}"
    );
    // Large allocations name their class too.
    let q = a.malloc(100_000, Life::A);
    // SAFETY: deliberately wrong lifetime class.
    let msg = misuse_message(|| unsafe { a.free(q, 100_000, Life::C) });
    assert!(
        msg.contains("lifetime class 2 (C)") && msg.contains("lifetime class 0 (A)"),
        "{msg}"
    );
    // SAFETY: both intact.
    unsafe {
        a.free(p, 24, Life::A);
        a.free(q, 100_000, Life::A);
    }
    // Without names (the unit class), indices only.
    let u: Cohort = Cohort::new();
    let p = u.malloc(24, ());
    // SAFETY: deliberately wrong size.
    let msg = misuse_message(|| unsafe { u.free(p, 200, ()) });
    assert!(
        msg.contains("lifetime class 0)") && !msg.contains("(A)"),
        "{msg}"
    );
    // SAFETY: intact.
    unsafe { u.free(p, 24, ()) };
}

/// Item 14 (a) of issue 9: in checked builds a large allocation freed with a small size was
/// reported as "not from this allocator" (and release builds read a header outside the
/// region). Every build names it now.
#[test]
fn a_large_allocation_freed_as_small_is_named() {
    let a: Cohort<Life> = Cohort::new();
    let q = a.malloc(1_100_000, Life::B);
    for size in [1, 100, 5000] {
        // SAFETY: deliberately wrong size.
        let msg = misuse_message(|| unsafe { a.free(q, size, Life::B) });
        assert!(
            msg.contains("large allocation")
                && msg.contains(&format!("maps {} B", large_usable(&a, 1_100_000))),
            "{size}: {msg}"
        );
        assert!(msg.contains("lifetime class 1 (B)"), "{msg}");
    }
    // SAFETY: intact.
    unsafe { a.free(q, 1_100_000, Life::B) };
    assert!(a.is_empty());
}

// ---- Through GlobalAlloc, misuse aborts: each case runs in a child process ----

const CHILD_ENV: &str = "COHORT_MISUSE_CHILD";

/// What a child process does: one `GlobalAlloc` misuse, which must abort.
fn global_misuse(case: &str) {
    static G: Cohort = Cohort::new();
    let l = |size| Layout::from_size_align(size, 8).unwrap();
    // SAFETY (every case): deliberately wrong old layouts; the allocator must abort before
    // returning.
    unsafe {
        let (p, old) = match case {
            "small" => (GlobalAlloc::alloc(&G, l(24)), 200),
            "small-same-class" => (GlobalAlloc::alloc(&G, l(24)), 224),
            "large" => (GlobalAlloc::alloc(&G, l(100_000)), 50_000),
            "large-to-small" => (GlobalAlloc::alloc(&G, l(100_000)), 5000),
            _ => unreachable!("{case}"),
        };
        eprintln!("child: misusing {p:p}");
        let new = if case == "small-same-class" {
            224
        } else {
            300_000
        };
        GlobalAlloc::realloc(&G, p, l(old), new);
    }
    eprintln!("child: the misuse returned");
}

/// The child side: runs only when the parent re-executes this test binary.
#[test]
fn global_misuse_child() {
    if let Some(case) = child_case(CHILD_ENV) {
        global_misuse(&case);
    }
}

/// Item 6 of issue 9: `GlobalAlloc::realloc` with a mismatched old layout unwound (exit 101
/// through a `#[global_allocator]`) where it must abort with the message.
#[test]
fn global_realloc_with_a_wrong_layout_aborts() {
    // "large-to-small": a large allocation given a small old size, outside the region.
    for case in ["small", "small-same-class", "large", "large-to-small"] {
        let stderr = abort_in_child("global_misuse_child", CHILD_ENV, case);
        let ptr = stderr
            .lines()
            .find_map(|l| l.strip_prefix("child: misusing "))
            .unwrap_or_else(|| panic!("{case}: {stderr}"));
        assert!(
            stderr.contains("cohort: bad free of") && stderr.contains(ptr),
            "{case}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{case}: {stderr}");
    }
}

/// `block_of_layout` is safe and takes any `(size, align)`: an alignment that is not a power
/// of two (no `Layout` has one, 0 included) gives `None`, in every build. Before, a debug
/// build panicked on align 0 (`attempt to subtract with overflow` in the class look-up) and
/// any build answered a block for align 3.
#[test]
fn block_of_layout_takes_any_align() {
    let a = Cohort::<Life>::new();
    let p = a.malloc(24, Life::A);
    let block = a.block_of(p, 24);
    assert!(block.is_some());
    for align in [0, 3, 6, 24, usize::MAX] {
        for size in [0, 1, 24, 100_000, usize::MAX] {
            let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                a.block_of_layout(p, size, align)
            }));
            assert_eq!(got.ok(), Some(None), "block_of_layout({size}, {align})");
        }
    }
    assert_eq!(a.block_of_layout(p, 24, 8), block);
    // SAFETY: allocated above with this size and class.
    unsafe { a.free(p, 24, Life::A) };
}
