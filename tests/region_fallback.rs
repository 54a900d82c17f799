//! Small requests that a full fixed region serves from mappings of their own
//! ([`RegionOptions::fallback`]): every call that takes such a slot back (free, try_free,
//! the unsized forms, every resize, `allocation_at`) treats it as the region treats a slot of
//! its blocks: in place within its size class, and misuse (another size class, another
//! lifetime class) reported in every build and with every page size.

use cohort::{Cohort, Problem, RegionOptions};
use std::alloc::Layout;

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

const MIB: usize = 1 << 20;
/// Large sizes (above the medium ones, 1 MiB), for a grown fallback slot.
const GROWN: usize = 3 * MIB + 1000;
const SHRUNK: usize = 3 * MIB / 2;

/// A 4 MiB fixed region that falls back, filled by one run (returned): every small request
/// after this is a mapping of its own.
fn full_fallback() -> (Cohort<Life>, *mut u8) {
    let a = Cohort::<Life>::with_options(&RegionOptions::new(4 * MIB).fallback(true))
        .expect("a fixed region that falls back");
    let run = a.malloc(4 * MIB, Life::Long);
    assert!(a.in_region(run), "the run fills the region");
    (a, run)
}

/// A small request of `size` bytes served by a fallback mapping, its bytes set to `byte`.
fn fallback_slot(a: &Cohort<Life>, size: usize, byte: u8) -> *mut u8 {
    let p = a.malloc(size, Life::Short);
    assert!(
        !p.is_null() && !a.in_region(p),
        "{size} B: a mapping of its own"
    );
    // SAFETY: `size` bytes of ours.
    unsafe { p.write_bytes(byte, size) };
    p
}

/// True when the `len` bytes at `p` all read `byte`.
///
/// # Safety
/// `p` holds `len` readable bytes.
unsafe fn all(p: *const u8, len: usize, byte: u8) -> bool {
    // SAFETY: forwarded contract.
    unsafe { std::slice::from_raw_parts(p, len) }
        .iter()
        .all(|&b| b == byte)
}

/// RED-31: a resize within the size class of a fallback slot stays in place, in a release
/// build too, where the check of the old slot took every pointer outside the region for a
/// foreign one ("the large allocation there maps 4096 B ..., which size 194 ... do not
/// match", a false report of a legitimate call).
#[test]
fn a_fallback_slot_resized_within_its_size_class_stays_in_place() {
    let (a, run) = full_fallback();
    for size in [29, 71, 100, 194, 238, 1000, 3000] {
        let (probe, usable) = a.malloc_at_least(size, Life::Short);
        // SAFETY: allocated just above; freed with the usable size it was given.
        unsafe { a.free(probe, usable, Life::Short) };
        let p = fallback_slot(&a, size, 5);
        let grown = (size + 1).min(usable);
        // SAFETY: each call names the slot's size and class; the slot stays in its class.
        unsafe {
            let q = a.remalloc(p, size, grown, Life::Short);
            assert_eq!(q, p, "remalloc {size} -> {grown}: in place");
            assert!(all(q, size, 5), "the bytes stay");
            let q = a.recalloc(q, grown, usable, Life::Short);
            assert_eq!(q, p, "recalloc {grown} -> {usable}: in place");
            assert!(all(q.add(grown), usable - grown, 0), "the tail reads zero");
            a.free(q, usable, Life::Short);
        }
        // The `Layout` form.
        let layout = Layout::from_size_align(size, 8).unwrap();
        let usable = a.usable_size(layout);
        let p = a.alloc(layout, Life::Short);
        assert!(!p.is_null() && !a.in_region(p));
        // SAFETY: p is live with `layout`, then with its usable size.
        unsafe {
            let q = a.realloc(p, layout, usable, Life::Short);
            assert_eq!(q, p, "realloc {size} -> {usable}: in place");
            a.dealloc(q, Layout::from_size_align(usable, 8).unwrap(), Life::Short);
        }
    }
    // SAFETY: allocated by `full_fallback`.
    unsafe { a.free(run, 4 * MIB, Life::Long) };
    assert!(a.is_empty(), "{:?}", a.stats());
}

/// The same resizes through a handle's `Allocator` (a collection growing in place).
#[test]
fn a_handle_grows_a_fallback_slot_within_its_size_class_in_place() {
    use cohort::allocator_api2::alloc::Allocator;
    let (a, run) = full_fallback();
    let h = a.handle(Life::Short);
    let small = Layout::from_size_align(100, 8).unwrap();
    let p = h.allocate(small).expect("a fallback slot").cast::<u8>();
    assert!(!a.in_region(p.as_ptr()));
    let usable = a.usable_size(small);
    let bigger = Layout::from_size_align(usable, 8).unwrap();
    // SAFETY: p is live with `small`; then with `bigger`.
    unsafe {
        let q = h.grow_zeroed(p, small, bigger).expect("in place");
        assert_eq!(q.cast::<u8>(), p);
        h.deallocate(p, bigger);
        a.free(run, 4 * MIB, Life::Long);
    }
    assert!(a.is_empty(), "{:?}", a.stats());
}

/// A fallback slot grown past the small sizes becomes a large allocation (remapped), which
/// shrinks by a remap: the large table's mapped bytes follow the mapping exactly (a shrink
/// that kept the old length in the table later unmapped the pages past the new end, which
/// the kernel had handed to another mapping by then: found by the storm on a full fixed
/// region while RED-31 was being fixed).
#[test]
fn a_fallback_slot_grown_to_large_and_shrunk_keeps_the_large_table_exact() {
    let (a, run) = full_fallback();
    let in_runs = a.stats().large_bytes;
    let p = fallback_slot(&a, 100, 3);
    // SAFETY: p is live with 100 bytes; each result is live with the size it was given.
    unsafe {
        let q = a.remalloc(p, 100, GROWN, Life::Short);
        assert!(!q.is_null() && all(q, 100, 3));
        let grown = a.allocation_at(q).expect("live");
        assert!(grown.large && grown.usable >= GROWN, "{grown:?}");
        q.write_bytes(4, GROWN);
        let r = a.remalloc(q, GROWN, SHRUNK, Life::Short);
        assert!(!r.is_null() && all(r, SHRUNK, 4));
        let shrunk = a.allocation_at(r).expect("live");
        assert!(shrunk.usable < grown.usable, "{shrunk:?}");
        assert_eq!(
            a.stats().large_bytes,
            in_runs + shrunk.usable,
            "remapped: the mapping is the new length"
        );
        let cached = a.stats().large_cached_bytes;
        a.free(r, SHRUNK, Life::Short);
        assert_eq!(
            a.stats().large_cached_bytes,
            cached + shrunk.usable,
            "cached as mapped"
        );
        a.free(run, 4 * MIB, Life::Long);
    }
    assert!(a.is_empty(), "{:?}", a.stats());
}

/// The size class and lifetime class a `Problem::FallbackMismatch` names.
fn fallback_mismatch(m: &cohort::Misuse) -> (usize, usize) {
    match m.problem {
        Problem::FallbackMismatch { class, life, .. } => (class, life),
        _ => panic!("not a fallback slot's mismatch: {m}"),
    }
}

/// RED-23: a fallback slot named with the size of another size class is misuse, reported
/// in every build and with every page size, as in the region (the large table kept no
/// class, and accepted any size whose stride rounds to the same pages: with 64 KiB pages,
/// large sizes too). A rejected call changes nothing.
#[test]
fn a_fallback_slot_freed_or_resized_as_another_class_is_reported_and_left_live() {
    let (a, run) = full_fallback();
    let p = fallback_slot(&a, 100, 9);
    let found = a.allocation_at(p).expect("live");
    assert_eq!(found.life, Life::Short as usize);
    assert!(!found.large, "a small request, freed as one: {found:?}");
    assert!(
        found.usable >= 100 && found.usable < 4096,
        "its class's stride: {found:?}"
    );
    assert_eq!(a.block_of(p, 100), None, "a mapping of its own: no block");
    let slot = found.usable;
    // Other size classes (16, 200, 3000, 4096: the same page count as the slot's mapping
    // with 4 KiB pages), a medium size (of the mapping's length with 64 KiB pages), a large
    // one, and the right size in the wrong lifetime class.
    let wrong = [
        (16, Life::Short),
        (200, Life::Short),
        (3000, Life::Short),
        (4096, Life::Short),
        (20_000, Life::Short),
        (GROWN, Life::Short),
        (100, Life::Long),
    ];
    for (size, life) in wrong {
        // SAFETY: each call is misuse, reported before anything changes.
        let m = unsafe { a.try_free(p, size, life) }.expect_err("misuse");
        assert_eq!((m.ptr, m.size), (p as usize, size), "{m}");
        let (class, made_life) = fallback_mismatch(&m);
        assert_eq!(made_life, Life::Short as usize, "{m}");
        assert!(
            m.to_string()
                .contains(&format!("size class {class} (stride {slot} B)")),
            "{m}"
        );
        for call in ["free", "remalloc", "recalloc"] {
            // SAFETY: misuse, reported by a panic before anything changes.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
                match call {
                    "free" => a.free(p, size, life),
                    "remalloc" => drop(a.remalloc(p, size, 50_000, life)),
                    _ => drop(a.recalloc(p, size, size + 1, life)),
                }
            }));
            assert!(
                r.is_err(),
                "{call} of a {slot} B fallback slot as {size} B {life:?}"
            );
        }
        assert_eq!(a.allocation_at(p), Some(found), "left live");
        // SAFETY: p holds 100 bytes of ours.
        assert!(unsafe { all(p, 100, 9) }, "untouched");
    }
    // SAFETY: the right size and class, then the unsized free of another slot.
    unsafe {
        a.try_free(p, 100, Life::Short).expect("the right free");
        let q = fallback_slot(&a, 3000, 1);
        a.free_unsized(q)
            .expect("found from the address, freed as its class");
        a.free(run, 4 * MIB, Life::Long);
    }
    assert!(a.is_empty(), "{:?}", a.stats());
}

/// The other way: in a region that falls back, a large allocation (a mapping of its own)
/// named with a small size is a large allocation's mismatch, not a fallback slot's free.
#[test]
fn a_large_allocation_freed_with_a_small_size_in_a_falling_back_region_is_reported() {
    let (a, run) = full_fallback();
    let big = a.malloc(GROWN, Life::Short);
    assert!(!big.is_null() && !a.in_region(big));
    for size in [100, 3000, 4096] {
        // SAFETY: misuse, reported before anything changes.
        let m = unsafe { a.try_free(big, size, Life::Short) }.expect_err("misuse");
        assert!(matches!(m.problem, Problem::LargeMismatch { .. }), "{m}");
        // SAFETY: misuse, reported by a panic before anything changes.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
            a.free(big, size, Life::Short)
        }));
        assert!(r.is_err(), "a free of the large allocation as {size} B");
    }
    // SAFETY: its size and class.
    unsafe {
        a.free(big, GROWN, Life::Short);
        a.free(run, 4 * MIB, Life::Long);
    }
    assert!(a.is_empty(), "{:?}", a.stats());
}

/// RED-37, RED-23 for medium sizes: a medium request the full region served from a
/// mapping of its own keeps its granule count; a free of another granule count (or another
/// lifetime class) is misuse as in the region, the right ones free it (sized, unsized), and
/// a resize keeps what its free must name.
#[test]
fn a_medium_request_served_from_a_mapping_is_freed_by_its_granules_only() {
    let (a, run) = full_fallback();
    let p = a.malloc(20_000, Life::Short);
    assert!(!p.is_null() && !a.in_region(p));
    let found = a.allocation_at(p).expect("live");
    assert_eq!((found.usable, found.large), (20_480, false), "{found:?}");
    for (size, life) in [
        (17_000, Life::Short),
        (22_000, Life::Short),
        (20_000, Life::Long),
    ] {
        // SAFETY: misuse, reported before anything changes.
        let m = unsafe { a.try_free(p, size, life) }.expect_err("misuse");
        assert!(
            matches!(m.problem, Problem::WrongRun { usable: 20_480, .. }),
            "{m}"
        );
    }
    // SAFETY: the right sizes and class; each result live with the size it was given.
    unsafe {
        a.try_free(p, 18_500, Life::Short)
            .expect("the same granules");
        let q = a.malloc(20_000, Life::Short);
        let r = a.remalloc(q, 20_000, 40_000, Life::Short);
        assert!(!r.is_null() && !a.in_region(r));
        let grown = a.allocation_at(r).expect("live");
        assert_eq!((grown.usable, grown.large), (40_960, false), "{grown:?}");
        let m = a
            .try_free(r, 20_000, Life::Short)
            .expect_err("the old size no more");
        assert!(
            matches!(m.problem, Problem::WrongRun { usable: 40_960, .. }),
            "{m}"
        );
        a.free_unsized(r).expect("found from the address");
        a.free(run, 4 * MIB, Life::Long);
    }
    assert!(a.is_empty(), "{:?}", a.stats());
}

/// The forms without a size find a fallback slot's class from its entry: `realloc_unsized`
/// keeps it in place within its class, moves it to another, and `free_unsized` frees what
/// it made.
#[test]
fn the_unsized_forms_resize_and_free_a_fallback_slot_as_its_class() {
    let (a, run) = full_fallback();
    let p = fallback_slot(&a, 100, 6);
    let slot = a.allocation_at(p).expect("live").usable;
    // SAFETY: p is live; each result is live after its call.
    unsafe {
        let q = a.realloc_unsized(p, slot, 8).expect("ours");
        assert_eq!(q, p, "within its class: in place");
        let r = a.realloc_unsized(q, 3000, 8).expect("ours");
        assert!(
            !r.is_null() && all(r, 100, 6),
            "moved to another class, bytes kept"
        );
        let moved = a.allocation_at(r).expect("live");
        assert!(moved.usable >= 3000 && !moved.large, "{moved:?}");
        assert_eq!(a.allocation_at(p), None, "the old slot was freed");
        a.free_unsized(r).expect("ours");
        a.free(run, 4 * MIB, Life::Long);
    }
    assert!(a.is_empty(), "{:?}", a.stats());
}
