//! What cohort reads from the environment (`COHORT_RESERVE`, `COHORT_PAGE_SIZE`), each test
//! in child processes of this test binary with the variable set: the reservation an
//! instance made by `Cohort::new` takes, explicit reservations left alone, bad values
//! reported once on standard error with the default used, and the whole allocator correct
//! with a page four or sixteen times the kernel's (as on an arm64 kernel with 16 or 64 KiB
//! pages).

use cohort::{Cohort, Lifetime};
use std::alloc::Layout;

cohort::lifetime_classes! { enum Life { Short, Long } }

/// Set in a child: the name of the case it runs.
const CHILD: &str = "COHORT_ENVIRONMENT_CHILD";

/// Runs `test` of this binary again in a child with `vars` set (and the case name) and
/// returns its (stdout, stderr); panics, showing both, when it fails.
fn child(test: &str, vars: &[(&str, &str)]) -> (String, String) {
    let mut with_case = vars.to_vec();
    with_case.push((CHILD, test));
    test_support::test_in_child(test, &["COHORT_RESERVE", "COHORT_PAGE_SIZE"], &with_case)
}

/// True in the child process (which then runs the case's body).
fn in_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// The value the child printed as `key=value`.
fn printed(stdout: &str, key: &str) -> usize {
    let prefix = format!("{key}=");
    // The test harness prints the test's name on the same line.
    let value = stdout
        .split_whitespace()
        .find_map(|word| word.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key}= in:\n{stdout}"));
    value.parse().unwrap()
}

/// Small allocations of 16 KiB (the largest small class) until null or `cap` of them;
/// returns how many succeeded (they are leaked with their instance).
fn fill_until_null<L: Lifetime>(a: &Cohort<L>, life: L, cap: usize) -> usize {
    let mut n = 0;
    while n < cap && !a.malloc(16 << 10, life).is_null() {
        n += 1;
    }
    n
}

#[test]
fn cohort_reserve_bounds_the_default_reservation() {
    if in_child() {
        let a: Cohort<Life> = Cohort::new();
        println!("slots={}", fill_until_null(&a, Life::Short, 4096));
        return;
    }
    let test = "cohort_reserve_bounds_the_default_reservation";
    for (value, bytes) in [
        ("16M", 16usize << 20),
        ("16MiB", 16 << 20),
        ("32m", 32 << 20),
    ] {
        let (out, err) = child(test, &[("COHORT_RESERVE", value)]);
        let slots = printed(&out, "slots");
        assert!(
            slots * (16 << 10) <= bytes && slots * (16 << 10) >= bytes / 2,
            "COHORT_RESERVE={value}: {slots} slots of 16 KiB"
        );
        assert!(err.is_empty(), "nothing to report: {err}");
    }
    // Without the variable: the default (256 GiB) does not run out at 64 MiB.
    let (out, _) = child(test, &[]);
    assert_eq!(printed(&out, "slots"), 4096);
}

#[test]
fn an_explicit_reservation_ignores_cohort_reserve() {
    if in_child() {
        let a: Cohort<Life> = Cohort::with_reservation(64 << 20);
        println!("slots={}", fill_until_null(&a, Life::Short, 2048));
        return;
    }
    let (out, err) = child(
        "an_explicit_reservation_ignores_cohort_reserve",
        &[("COHORT_RESERVE", "4M")],
    );
    assert_eq!(printed(&out, "slots"), 2048, "32 MiB fit in 64 MiB");
    assert!(err.is_empty(), "{err}");
}

#[test]
fn a_bad_cohort_reserve_is_reported_once_and_the_default_used() {
    if in_child() {
        // Two instances, both initialised: the variable is read (and reported) once.
        let a: Cohort<Life> = Cohort::new();
        let b: Cohort<Life> = Cohort::new();
        println!("slots={}", fill_until_null(&a, Life::Long, 2048));
        println!("b={}", usize::from(!b.malloc(8, Life::Short).is_null()));
        return;
    }
    let test = "a_bad_cohort_reserve_is_reported_once_and_the_default_used";
    for bad in [
        "64X",
        "64 G",
        "1.5G",
        "-1",
        "2M",
        "200T",
        "99999999999999999999G",
    ] {
        let (out, err) = child(test, &[("COHORT_RESERVE", bad)]);
        assert_eq!(printed(&out, "slots"), 2048, "{bad:?}: the default is used");
        assert_eq!(printed(&out, "b"), 1);
        let expected = format!("cohort: COHORT_RESERVE=\"{bad}\" is not a size from 4M to 128T");
        assert_eq!(err.matches(&expected).count(), 1, "{bad:?}: stderr:\n{err}");
        assert!(err.contains("using the default reservation"), "{err}");
    }
}

/// Every kind of allocation, resize, release and check, with patterns verified: run with a
/// page larger than the kernel's.
fn exercise_every_path(a: &Cohort<Life>) {
    let page: usize = std::env::var("COHORT_PAGE_SIZE")
        .ok()
        .map(|v| v.trim_end_matches('K').parse::<usize>().unwrap() << 10)
        .unwrap_or(4096);
    // Large allocations are whole pages of the configured size.
    let (p, usable) = a.malloc_at_least(2_000_000, Life::Long);
    assert!(!p.is_null());
    assert_eq!(
        usable % page,
        0,
        "usable {usable} is whole {page}-byte pages"
    );
    assert!(usable >= 2_000_000 && usable < 2_000_000 + page);
    // SAFETY: p is a live allocation of 2 000 000 bytes (or up to its usable size).
    unsafe { a.free(p, usable, Life::Long) };
    // Medium ones are 2 KiB granules, whatever the page.
    let (p, usable) = a.malloc_at_least(20_000, Life::Long);
    assert!(!p.is_null() && (p as usize).is_multiple_of(4096));
    assert_eq!(usable, 20_480);
    // SAFETY: p is a live allocation of 20 000 bytes (or up to its usable size).
    unsafe {
        p.write_bytes(7, usable);
        a.free(p, usable, Life::Long)
    };

    let mut live: Vec<(*mut u8, usize, u8)> = Vec::new();
    let sizes = [
        1,
        2,
        8,
        24,
        100,
        1000,
        4096,
        16 << 10,
        20_000,
        70_000,
        300_000,
        3 << 20,
    ];
    for round in 0..6u8 {
        for (i, &size) in sizes.iter().enumerate() {
            let p = a.malloc(size, Life::Long);
            assert!(!p.is_null(), "malloc({size})");
            let tag = round.wrapping_mul(31).wrapping_add(i as u8);
            // SAFETY: p holds `size` bytes.
            unsafe { p.write_bytes(tag, size) };
            live.push((p, size, tag));
        }
    }
    // Resizes, in place or moving, keep the contents.
    for entry in live.iter_mut() {
        let (p, size, tag) = *entry;
        let new = if size > 50_000 {
            size / 3 + 1
        } else {
            size * 5 + 70_000
        };
        // SAFETY: (p, size, Long) is live.
        let q = unsafe { a.remalloc(p, size, new, Life::Long) };
        assert!(!q.is_null(), "remalloc({size} -> {new})");
        // SAFETY: q holds `new` bytes, the first min(size, new) copied.
        let kept = unsafe { std::slice::from_raw_parts(q, size.min(new)) };
        assert!(
            kept.iter().all(|&b| b == tag),
            "contents kept {size} -> {new}"
        );
        // SAFETY: q holds `new` bytes.
        unsafe { q.write_bytes(tag, new) };
        *entry = (q, new, tag);
    }
    // Alignments around and above the page.
    for align in [4096, 8192, 1 << 16, 1 << 21] {
        let layout = Layout::from_size_align(5000, align).unwrap();
        let p = a.alloc(layout, Life::Short);
        assert!(
            !p.is_null() && (p as usize).is_multiple_of(align),
            "align {align}"
        );
        // SAFETY: p was allocated with `layout`.
        unsafe { a.dealloc(p, layout, Life::Short) };
    }
    // A lifetime class released whole, its memory given back.
    for i in 0..20_000usize {
        let p = a.malloc(16 + i % 200, Life::Short);
        assert!(!p.is_null());
    }
    // SAFETY: nothing of Life::Short is used after this.
    unsafe { a.release_class(Life::Short) };
    a.compact();
    // SAFETY: no other thread uses the instance.
    unsafe { a.verify() }.expect("verify");
    for (p, size, tag) in live {
        // SAFETY: p holds `size` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(p, size) };
        assert!(
            bytes.iter().all(|&b| b == tag),
            "contents of a {size}-byte allocation"
        );
        // SAFETY: (p, size, Long) is live.
        unsafe { a.free(p, size, Life::Long) };
    }
    a.compact();
    assert!(a.is_empty(), "every allocation was freed");
}

#[test]
fn the_allocator_works_with_a_page_larger_than_the_kernels() {
    if in_child() {
        exercise_every_path(&Cohort::new());
        println!("done=1");
        return;
    }
    let test = "the_allocator_works_with_a_page_larger_than_the_kernels";
    // SAFETY: sysconf has no preconditions.
    let kernel = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    for page in ["16K", "64K"]
        .into_iter()
        .filter(|p| kernel < 16 << 10 || *p == "64K")
    {
        let (out, err) = child(test, &[("COHORT_PAGE_SIZE", page)]);
        assert_eq!(printed(&out, "done"), 1);
        assert!(err.is_empty(), "{page}: {err}");
    }
    // The kernel's own page, for comparison.
    child(test, &[]);
}

#[test]
fn empty_values_are_read_as_unset() {
    if in_child() {
        let a: Cohort<Life> = Cohort::new();
        println!("slots={}", fill_until_null(&a, Life::Long, 2048));
        let (p, usable) = a.malloc_at_least(20_000, Life::Long);
        assert!(!p.is_null());
        println!("usable={usable}");
        return;
    }
    // SAFETY: sysconf has no preconditions.
    let kernel = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let test = "empty_values_are_read_as_unset";
    let (out, err) = child(test, &[("COHORT_RESERVE", ""), ("COHORT_PAGE_SIZE", "")]);
    assert_eq!(printed(&out, "slots"), 2048, "the default reservation");
    assert_eq!(
        printed(&out, "usable"),
        20_000usize.div_ceil(kernel) * kernel,
        "the kernel's page"
    );
    assert!(err.is_empty(), "nothing to report: {err}");
}

#[test]
fn a_bad_cohort_page_size_is_reported_and_the_kernels_page_used() {
    if in_child() {
        let a: Cohort<Life> = Cohort::new();
        let (p, usable) = a.malloc_at_least(20_000, Life::Long);
        assert!(!p.is_null());
        println!("usable={usable}");
        return;
    }
    // SAFETY: sysconf has no preconditions.
    let kernel = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let test = "a_bad_cohort_page_size_is_reported_and_the_kernels_page_used";
    for bad in ["3000", "1K", "512K", "64KB", "lots"] {
        let (out, err) = child(test, &[("COHORT_PAGE_SIZE", bad)]);
        assert_eq!(
            printed(&out, "usable"),
            20_000usize.div_ceil(kernel) * kernel
        );
        let expected = format!("cohort: COHORT_PAGE_SIZE=\"{bad}\" is not a power of two");
        assert_eq!(err.matches(&expected).count(), 1, "{bad:?}: stderr:\n{err}");
    }
}
