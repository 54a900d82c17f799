//! Red-team attacks of session 8 on the size boundaries (small, medium 16 KiB-1 MiB, large)
//! and on medium sizes in the regions that cannot always serve them: every size around each
//! boundary, with every alignment, allocated, measured, resized across the boundaries and
//! freed with any size its usable size allows; medium sizes in a full region that falls
//! back, and in caller memory full of garbage.

use cohort::{Cohort, RegionOptions};
use core::alloc::Layout;

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

const MIB: usize = 1 << 20;
const UNIT: usize = 2 * MIB;

/// Sizes around every boundary of the size ranges (and a page).
fn boundary_sizes() -> Vec<usize> {
    let mut v = Vec::new();
    for b in [4096usize, 16 << 10, 1 << 20, 2 << 20] {
        for d in [-2049isize, -1, 0, 1, 2048] {
            v.push((b as isize + d) as usize);
        }
    }
    v
}

/// Checks that `n` bytes at `p` are `byte`, naming `what`.
fn check(p: *const u8, n: usize, byte: u8, what: &str) {
    // SAFETY: the callers pass live allocations of at least n bytes.
    let got = unsafe { std::slice::from_raw_parts(p, n) };
    let bad = got.iter().position(|&b| b != byte);
    assert_eq!(bad, None, "{what}: byte {bad:?} is not {byte:#x}");
}

/// Every boundary size with every alignment up to a page: the usable size `malloc_at_least`
/// reports is writable and frees the allocation; `recalloc` to every other boundary size
/// keeps the bytes and zeroes the tail; the free with any size from the request to the
/// usable size works; the instance ends empty and verifies.
fn sweep(a: &Cohort<Life>, what: &str) {
    let sizes = boundary_sizes();
    for &n in &sizes {
        let (p, usable) = a.malloc_at_least(n, Life::Short);
        assert!(!p.is_null() && usable >= n, "{what}: malloc_at_least({n})");
        // SAFETY: `usable` bytes of ours.
        unsafe { p.write_bytes(0x11, usable) };
        // SAFETY: live; freed with its usable size.
        unsafe { a.free(p, usable, Life::Short) };
        for align in [8usize, 4096] {
            let l = Layout::from_size_align(n, align).unwrap();
            let p = a.alloc(l, Life::Long);
            assert!(!p.is_null(), "{what}: {l:?}");
            assert!((p as usize).is_multiple_of(align), "{what}: {l:?} at {p:p}");
            let usable = a.usable_size(l);
            assert!(usable >= n, "{what}: usable_size({l:?}) = {usable}");
            // SAFETY: usable bytes of ours.
            unsafe { p.write_bytes(0x22, usable) };
            // SAFETY: live; freed with the largest size its usable size allows.
            unsafe {
                a.dealloc(
                    p,
                    Layout::from_size_align(usable, align).unwrap(),
                    Life::Long,
                )
            };
        }
    }
    let few: Vec<usize> = sizes
        .iter()
        .copied()
        .filter(|n| (n + 1) % 1024 <= 2)
        .collect();
    for &from in &few {
        for &to in &few {
            let p = a.malloc(from, Life::Short);
            assert!(!p.is_null(), "{what}: malloc({from})");
            // SAFETY: from bytes of ours.
            unsafe { p.write_bytes(0x33, from) };
            // SAFETY: live, `from` bytes of Short.
            let q = unsafe { a.recalloc(p, from, to, Life::Short) };
            assert!(!q.is_null(), "{what}: recalloc {from} -> {to}");
            let keep = from.min(to);
            check(
                q,
                keep,
                0x33,
                &format!("{what}: recalloc {from} -> {to} kept"),
            );
            if to > from {
                // SAFETY: `to` bytes of ours.
                check(
                    unsafe { q.add(from) },
                    to - from,
                    0,
                    &format!("{what}: recalloc {from} -> {to} tail"),
                );
            }
            // SAFETY: live, freed once.
            unsafe { a.free(q, to, Life::Short) };
        }
    }
    assert!(a.is_empty(), "{what}: {:?}", a.stats());
    // SAFETY: nobody else uses `a`.
    unsafe { a.verify() }.unwrap_or_else(|e| panic!("{what}: {e}"));
}

#[test]
fn every_boundary_size_and_alignment_resizes_and_frees_in_a_private_instance() {
    sweep(&Cohort::new(), "new()");
}

#[test]
fn every_boundary_size_and_alignment_resizes_and_frees_in_a_fixed_region() {
    let a = Cohort::<Life>::with_options(&RegionOptions::new(64 * MIB)).expect("fixed");
    sweep(&a, "fixed");
    let a =
        Cohort::<Life>::with_options(&RegionOptions::new(64 * MIB).commit(true)).expect("fixed");
    sweep(&a, "fixed, committed");
}

#[test]
fn every_boundary_size_and_alignment_resizes_and_frees_in_a_shared_region() {
    let a = Cohort::<Life>::shared_anonymous(64 * MIB).expect("shared");
    sweep(&a, "shared");
}

/// Medium sizes in a full region that falls back: served by mappings of their own, found
/// by every free form (sized, `try_free`, unsized, by layout, resized across the boundaries)
/// and checked (a wrong size or class is reported, nothing freed).
#[test]
fn medium_sizes_in_a_full_region_that_falls_back_are_freed_by_every_form() {
    let a = Cohort::<Life>::with_options(&RegionOptions::new(2 * UNIT).fallback(true))
        .expect("a fixed region that falls back");
    let run = a.malloc(2 * UNIT, Life::Long);
    assert!(a.in_region(run), "full");
    let sizes = [20_000usize, 100_000, 500_000, MIB];
    let made: Vec<*mut u8> = sizes
        .iter()
        .map(|&n| {
            let p = a.malloc(n, Life::Short);
            assert!(!p.is_null() && !a.in_region(p), "{n}: a fallback mapping");
            // SAFETY: n bytes of ours.
            unsafe { p.write_bytes(0x44, n) };
            p
        })
        .collect();
    // SAFETY: each call is misuse (reported, nothing freed) or the one right free.
    unsafe {
        for (&p, &n) in made.iter().zip(&sizes) {
            assert!(a.try_free(p, n, Life::Long).is_err(), "{n}: wrong class");
            // RED-23: with every page size (a small size's fallback stride may round to the
            // same page count as these: the large table's entry keeps the size class).
            assert!(a.try_free(p, 8, Life::Short).is_err(), "{n}: a small size");
            assert!(
                a.try_free(p, 3 * MIB, Life::Short).is_err(),
                "{n}: a large size"
            );
            check(p, n, 0x44, "after the rejected frees");
        }
        a.free(made[0], sizes[0], Life::Short);
        a.try_free(made[1], sizes[1], Life::Short)
            .expect("try_free");
        a.free_unsized(made[2]).expect("unsized");
        let q = a.remalloc(made[3], sizes[3], 5000, Life::Short);
        assert!(!q.is_null());
        check(q, 5000, 0x44, "shrunk to small");
        let r = a.recalloc(q, 5000, 300_000, Life::Short);
        assert!(!r.is_null());
        check(r, 5000, 0x44, "grown to medium");
        check(r.add(5000), 300_000 - 5000, 0, "grown to medium: tail");
        a.dealloc(r, Layout::from_size_align(300_000, 8).unwrap(), Life::Short);
        a.free(run, 2 * UNIT, Life::Long);
    }
    assert!(a.is_empty(), "{:?}", a.stats());
    // SAFETY: nobody else uses `a`.
    unsafe { a.verify() }.expect("consistent");
}

/// Caller memory full of garbage: medium (and every boundary) `calloc`s read zero, first
/// use and after reuse, since the region's bytes are not known to read zero.
#[test]
fn medium_callocs_read_zero_in_caller_memory_full_of_garbage() {
    let cap = 32 * MIB;
    let f = Cohort::<Life>::footprint(cap).unwrap();
    let raw = vec![0xeeu8; f.bytes + f.align].into_boxed_slice();
    let raw = Box::leak(raw);
    let at = (raw.as_mut_ptr() as usize).next_multiple_of(f.align) as *mut u8;
    // SAFETY: ours (leaked), unused, aligned, as long as the footprint.
    let a = unsafe { Cohort::<Life>::format_in(at, f.bytes, &RegionOptions::new(cap)) }
        .expect("formatted");
    for round in 0..3 {
        for n in boundary_sizes() {
            let p = a.calloc(n, Life::Short);
            assert!(!p.is_null() && a.in_region(p), "calloc({n})");
            check(p, n, 0, &format!("round {round}: calloc({n}) in garbage"));
            // SAFETY: n bytes of ours, dirty for the next round's reuse.
            unsafe { p.write_bytes(0xdd, n) };
            // SAFETY: live, freed once.
            unsafe { a.free(p, n, Life::Short) };
        }
    }
    assert!(a.is_empty());
}

cohort::lifetime_classes! {
    enum Eight { C0, C1, C2, C3, C4, C5, C6, C7 }
}

const SEVEN: [Eight; 7] = [
    Eight::C0,
    Eight::C1,
    Eight::C2,
    Eight::C3,
    Eight::C4,
    Eight::C5,
    Eight::C6,
];

/// Allocates and frees an object of each size of `sizes` in each of seven lifetime
/// classes, in that order; panics naming a null allocation (nothing else is live).
fn use_and_free(a: &Cohort<Eight>, sizes: &[usize]) {
    for &c in &SEVEN {
        for &n in sizes {
            let p = a.malloc(n, c);
            assert!(
                !p.is_null(),
                "with nothing else live, {c:?}: malloc({n}) is null; {} small blocks held",
                a.stats().small.blocks
            );
            // SAFETY: live, freed once.
            unsafe { a.free(p, n, c) };
        }
    }
    assert!(a.is_empty());
}

/// Memory freed is memory again: in a fixed region, each of seven lifetime classes
/// allocates and frees small objects; with nothing live, the whole capacity is allocatable
/// again, as small objects of another class (the small slow path compacts before it gives
/// up) and as one large run (the run's path must too: the calling thread's heap keeps an
/// empty current block per class it used, which holds a unit).
#[test]
fn a_fixed_region_with_nothing_live_serves_its_whole_capacity_again() {
    const CAP: usize = 16 * MIB;
    let a = Cohort::<Eight>::with_options(&RegionOptions::new(CAP)).expect("fixed");
    use_and_free(&a, &[64, 3000]);
    let mut live = Vec::new();
    loop {
        let p = a.try_malloc(1000, Eight::C7);
        if p.is_null() {
            break;
        }
        live.push(p);
    }
    let n = live.len();
    for p in live {
        // SAFETY: live, freed once.
        unsafe { a.free(p, 1000, Eight::C7) };
    }
    assert!(
        n * 1000 > CAP - 2 * UNIT,
        "only {n} objects of 1000 B fit in {} MiB with nothing else live",
        CAP >> 20
    );
    use_and_free(&a, &[64, 3000]);
    let all = a.malloc(CAP - UNIT, Eight::C7);
    assert!(
        !all.is_null(),
        "with nothing live, {} of {} MiB is not one run: {} blocks held empty",
        (CAP - UNIT) >> 20,
        CAP >> 20,
        a.stats().small.blocks
    );
    // SAFETY: live, freed once.
    unsafe { a.free(all, CAP - UNIT, Eight::C7) };
}

/// The same for medium sizes: seven lifetime classes each allocate and free a medium and a
/// small object in a 16 MiB fixed region; nothing is live, so every class's next medium
/// request must be served (empty medium blocks kept for other classes, and the caller's
/// empty blocks, are memory to take back before saying null).
#[test]
fn medium_requests_of_many_classes_fit_a_fixed_region_with_nothing_live() {
    let a = Cohort::<Eight>::with_options(&RegionOptions::new(16 * MIB)).expect("fixed");
    for _ in 0..3 {
        use_and_free(&a, &[100_000, 64]);
        use_and_free(&a, &[MIB, 20_000, 8]);
    }
}
