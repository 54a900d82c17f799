//! Fixed regions ([`Cohort::with_options`]): every allocation, large ones included, comes
//! from the region's capacity, past which allocation is null; a prefaulted region is
//! filled without a single page fault (counted with `getrusage`), and gives nothing back to
//! the OS, so it is filled again without one; `max_expand` grows without overflow.

use cohort::{max_expand, Cohort, RegionOptions};
use test_support::serial;

// The tests of this file take turns (`serial()`): they count the process's page faults and
// look at which addresses are mapped, which another test's mappings would change meanwhile
// (an address unmapped here and mapped again by a parallel test looked like a leak).

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

const MIB: usize = 1 << 20;

/// This thread's minor page faults so far.
fn minor_faults() -> i64 {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is ours.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) }, 0);
    u.ru_minflt
}

/// Fills `a` with `size`-byte objects of `life` until it returns null, writing all of each, and
/// records them in `out` (whose capacity must hold them). Returns how many.
fn fill(a: &Cohort<Life>, size: usize, life: Life, out: &mut Vec<(*mut u8, usize, Life)>) -> usize {
    let mut n = 0;
    loop {
        let p = a.malloc(size, life);
        if p.is_null() {
            return n;
        }
        assert!(a.in_region(p), "every allocation comes from the region");
        // SAFETY: `size` bytes of ours, every page written.
        unsafe { p.write_bytes(n as u8, size) };
        assert!(
            out.len() < out.capacity(),
            "the record must not grow while counting"
        );
        out.push((p, size, life));
        n += 1;
    }
}

fn free_all(a: &Cohort<Life>, out: &mut Vec<(*mut u8, usize, Life)>) {
    for (p, size, life) in out.drain(..) {
        // SAFETY: allocated by `fill` with this size and class, freed once.
        unsafe { a.free(p, size, life) };
    }
}

#[test]
fn a_fixed_region_counts_large_allocations_against_its_capacity() {
    let _serial = serial();
    // 8 units: three runs of 2 units, then the two units left serve blocks.
    let a = Cohort::<Life>::with_options(&RegionOptions::new(16 * MIB)).expect("a fixed region");
    let mut live = Vec::with_capacity(1 << 16);
    assert_eq!(
        fill(&a, 3 * MIB, Life::Long, &mut live),
        4,
        "16 MiB hold four 3 MiB runs"
    );
    assert!(a.malloc(64, Life::Short).is_null(), "and nothing else");
    let s = a.stats();
    assert_eq!((s.large_allocations, s.large_bytes), (4, 12 * MIB));
    // SAFETY: allocated above, freed once.
    unsafe {
        let (p, size, life) = live.pop().unwrap();
        a.free(p, size, life);
    }
    assert!(
        fill(&a, 1000, Life::Short, &mut live) > 0,
        "a freed run's units serve blocks"
    );
    free_all(&a, &mut live);
    assert!(a.is_empty());
    // SAFETY: no other thread uses `a`.
    unsafe { a.verify() }.expect("the region verifies");
}

#[test]
fn a_reservation_counts_large_allocations_against_its_capacity() {
    let _serial = serial();
    // 8 units of address space: four runs of 2 units, and nothing after them.
    let a = Cohort::<Life>::with_reservation(16 * MIB);
    let mut live = Vec::with_capacity(64);
    assert_eq!(
        fill(&a, 3 * MIB, Life::Long, &mut live),
        4,
        "16 MiB hold four 3 MiB allocations"
    );
    assert!(a.malloc(64, Life::Short).is_null(), "and no block");
    assert!(
        a.malloc(20 << 10, Life::Short).is_null(),
        "nor a smaller large one"
    );
    let s = a.stats();
    assert_eq!(
        (s.large_allocations, s.large_bytes, s.run_units),
        (4, 12 * MIB, 8)
    );
    assert_eq!((s.region_bytes, s.carved_blocks), (16 * MIB, 8));
    assert!(
        s.to_string().contains("8 units in large allocations"),
        "{s}"
    );
    // Growing one past its units needs units the region does not have: null, and the
    // allocation stays as it was.
    let (p, size, life) = live[0];
    // SAFETY: allocated by `fill` with this size and class.
    let q = unsafe { a.remalloc(p, size, 5 * MIB, life) };
    assert!(q.is_null(), "no room to grow past the capacity");
    // SAFETY: as above; still live.
    assert_eq!(unsafe { *p.add(size - 1) }, 0);
    // A freed run's units serve blocks and small allocations again.
    // SAFETY: allocated by `fill`, freed once.
    unsafe {
        let (p, size, life) = live.pop().unwrap();
        a.free(p, size, life);
    }
    let mut small = Vec::with_capacity(1 << 18);
    assert!(fill(&a, 1000, Life::Short, &mut small) > 0);
    assert_eq!(a.stats().run_units, 6);
    free_all(&a, &mut small);
    free_all(&a, &mut live);
    assert!(a.is_empty());
    assert_eq!(a.stats().run_units, 0);
    // SAFETY: no other thread uses `a`.
    unsafe { a.verify() }.expect("the reservation verifies");
}

#[test]
fn a_prefaulted_region_is_filled_and_filled_again_without_a_page_fault() {
    let _serial = serial();
    let options = RegionOptions::new(64 * MIB).prefault(true);
    let a = Cohort::<Life>::with_options(&options).expect("a prefaulted region");
    // This thread's heap and the test's own record, touched before counting.
    let mut live = Vec::with_capacity(1 << 18);
    live.resize(live.capacity(), (std::ptr::null_mut(), 0, Life::Short));
    live.clear();
    let warm = a.malloc(100, Life::Short);
    // SAFETY: allocated above.
    unsafe { a.free(warm, 100, Life::Short) };
    for round in 0..2 {
        let before = minor_faults();
        let large = fill(&a, 5 * MIB, Life::Long, &mut live);
        let small = fill(&a, 1000, Life::Short, &mut live) + fill(&a, 48, Life::Long, &mut live);
        let after = minor_faults();
        println!(
            "round {round}: {large} large and {small} small allocations filled 64 MiB; minor faults before {before}, after {after}"
        );
        assert!(
            large >= 10 && small > 1000,
            "the region was filled: {large} large, {small} small"
        );
        assert_eq!(after - before, 0, "no allocation took a page fault");
        free_all(&a, &mut live);
        // Everything empty goes back to the region, which keeps the memory.
        a.compact();
        assert!(a.is_empty());
    }
    // SAFETY: no other thread uses `a`.
    unsafe { a.verify() }.expect("the region verifies");
    drop(a);
    // The same fill of a region that is not prefaulted faults its pages in: the count
    // above can see faults.
    let lazy = Cohort::<Life>::with_options(&RegionOptions::new(64 * MIB)).expect("a lazy region");
    let warm = lazy.malloc(100, Life::Short);
    // SAFETY: allocated above.
    unsafe { lazy.free(warm, 100, Life::Short) };
    let before = minor_faults();
    fill(&lazy, 5 * MIB, Life::Long, &mut live);
    let after = minor_faults();
    println!("not prefaulted: minor faults before {before}, after {after}");
    assert!(after - before >= 10, "each run's pages fault in");
    free_all(&lazy, &mut live);
}

#[test]
fn max_expand_grows_by_the_step_or_to_the_need_and_never_overflows() {
    let _serial = serial();
    assert_eq!(max_expand(0, 0, 0), 0);
    assert_eq!(max_expand(10, 10, 11), 20);
    assert_eq!(max_expand(10, 10, 25), 25);
    assert_eq!(max_expand(10, 10, 10), 10);
    assert_eq!(
        max_expand(10, 0, 11),
        11,
        "a zero step still meets the need"
    );
    assert_eq!(max_expand(usize::MAX - 3, 100, usize::MAX - 1), usize::MAX);
    assert_eq!(max_expand(usize::MAX, usize::MAX, usize::MAX), usize::MAX);
    for max in [0, 1, 7, 1 << 40, usize::MAX / 2, usize::MAX - 1] {
        for delta in [0, 1, 3, max, usize::MAX] {
            for needed in [
                0,
                1,
                max,
                max.saturating_add(1),
                max.saturating_add(delta),
                usize::MAX,
            ] {
                let got = max_expand(max, delta, needed);
                assert!(
                    got >= needed && got >= max,
                    "max_expand({max}, {delta}, {needed}) = {got}"
                );
                assert!(
                    got == max || got == needed || got == max.saturating_add(delta),
                    "max_expand({max}, {delta}, {needed}) = {got}"
                );
            }
        }
    }
}

#[test]
fn a_full_region_that_falls_back_serves_private_mappings_which_every_free_finds() {
    let _serial = serial();
    // 4 units: two runs of 3 MiB fill it.
    let options = RegionOptions::new(8 * MIB).fallback(true);
    let a = Cohort::<Life>::with_options(&options).expect("a fixed region with a fallback");
    let runs: Vec<*mut u8> = (0..2).map(|_| a.malloc(3 * MIB, Life::Long)).collect();
    assert!(runs.iter().all(|&p| !p.is_null() && a.in_region(p)));
    let big = a.malloc(3 * MIB, Life::Long);
    assert!(
        !big.is_null() && !a.in_region(big),
        "large: a mapping of its own once full"
    );
    let small: Vec<*mut u8> = (0..4).map(|_| a.malloc(100, Life::Short)).collect();
    for &p in &small {
        assert!(
            !p.is_null() && !a.in_region(p),
            "small: a mapping of its own once full"
        );
        // SAFETY: 100 bytes of ours.
        unsafe { p.write_bytes(7, 100) };
    }
    assert_eq!(
        a.stats().large_allocations,
        7,
        "every fallback mapping is counted"
    );
    // SAFETY: each allocation is freed once, by each kind of free; the rejected calls
    // change nothing.
    unsafe {
        let wrong = a.try_free(small[0], 100, Life::Long).unwrap_err();
        assert!(
            matches!(wrong.problem, cohort::Problem::FallbackMismatch { .. }),
            "{wrong}"
        );
        let wrong = a.try_free(small[0], 200_000, Life::Short).unwrap_err();
        assert!(
            matches!(wrong.problem, cohort::Problem::FallbackMismatch { .. }),
            "{wrong}"
        );
        a.free(small[0], 100, Life::Short);
        a.try_free(small[1], 100, Life::Short)
            .expect("try_free finds it");
        a.free_unsized(small[2]).expect("the unsized free finds it");
        let q = a.remalloc(small[3], 100, 300, Life::Short);
        assert!(!q.is_null());
        assert_eq!(*q.add(99), 7, "the bytes moved with it");
        a.free(q, 300, Life::Short);
        a.free(big, 3 * MIB, Life::Long);
        for p in runs {
            a.free(p, 3 * MIB, Life::Long);
        }
    }
    assert!(a.is_empty());
    let p = a.malloc(100, Life::Short);
    assert!(a.in_region(p), "room again: from the region");
    // SAFETY: allocated above.
    unsafe { a.free(p, 100, Life::Short) };
    // SAFETY: no other thread uses `a`.
    unsafe { a.verify() }.expect("the region verifies");
}

/// True while `p`'s page is mapped in this process (`mincore` says `ENOMEM` otherwise).
fn is_mapped(p: usize) -> bool {
    let mut vec = 0u8;
    // SAFETY: one page's status byte, into `vec`.
    unsafe { libc::mincore((p & !4095) as *mut libc::c_void, 1, &mut vec) == 0 }
}

#[test]
fn a_falling_back_region_s_fallback_mappings_go_with_it() {
    let _serial = serial();
    // A thread of its own: the region goes when its last heap holder (this thread) exits.
    let (inside, outside) = std::thread::spawn(|| {
        let a = Cohort::<Life>::with_options(&RegionOptions::new(4 * MIB).fallback(true))
            .expect("a fixed region with a fallback");
        let run = a.malloc(3 * MIB, Life::Long);
        let big = a.malloc(3 * MIB, Life::Long);
        assert!(a.in_region(run) && !big.is_null() && !a.in_region(big));
        // SAFETY: 3 MiB of ours each.
        unsafe {
            run.write_bytes(1, 3 * MIB);
            big.write_bytes(2, 3 * MIB);
        }
        (run as usize, big as usize)
    })
    .join()
    .unwrap();
    assert!(!is_mapped(inside), "the region was unmapped");
    assert!(
        !is_mapped(outside),
        "and so was its fallback mapping (not leaked)"
    );
}

#[test]
fn a_large_request_takes_the_units_of_the_callers_empty_blocks() {
    let _serial = serial();
    // Two units: this thread's (empty) 64-byte block keeps one, which a 3 MiB request
    // needs: given back first, as for a small request out of memory.
    for a in [
        Cohort::<Life>::with_reservation(4 * MIB),
        Cohort::<Life>::with_options(&RegionOptions::new(4 * MIB)).expect("a fixed region"),
    ] {
        let p = a.malloc(64, Life::Short);
        // SAFETY: allocated above.
        unsafe { a.free(p, 64, Life::Short) };
        let j = a.join(0).expect("a heap");
        let q = j.malloc(64, Life::Long);
        // SAFETY: allocated above.
        unsafe { j.free(q, 64, Life::Long) };
        // This thread's block and the join's hold both units: the join's request gives
        // back both (its own heap's, and its thread's).
        let big = j.malloc(3 * MIB, Life::Long);
        assert!(!big.is_null(), "the empty blocks' units serve the run");
        // SAFETY: allocated above.
        unsafe { j.free(big, 3 * MIB, Life::Long) };
        drop(j);
        let big = a.malloc(3 * MIB, Life::Long);
        assert!(!big.is_null());
        // SAFETY: allocated above.
        unsafe { a.free(big, 3 * MIB, Life::Long) };
    }
}

#[test]
fn a_recalloc_of_a_fallback_slot_reads_zero_past_its_old_size() {
    let _serial = serial();
    // RED-22: a full region's small request served by a mapping the large cache kept
    // (whose bytes are a previous user's), grown with recalloc.
    let a = Cohort::<Life>::with_options(&RegionOptions::new(4 * MIB).fallback(true))
        .expect("a fixed region that falls back");
    let run = a.malloc(4 * MIB, Life::Long);
    assert!(a.in_region(run), "the run fills the region");
    let dirty: Vec<*mut u8> = (0..8).map(|_| a.malloc(4096, Life::Short)).collect();
    for &q in &dirty {
        assert!(!q.is_null() && !a.in_region(q));
        // SAFETY: 4096 bytes of ours, then freed once (the cache keeps the mapping).
        unsafe {
            q.write_bytes(0xab, 4096);
            a.free(q, 4096, Life::Short);
        }
    }
    let p = a.malloc(100, Life::Short);
    assert!(dirty.contains(&p), "a cached mapping served it");
    // SAFETY: 100 bytes of ours; then grown with its size and class.
    let r = unsafe {
        p.write_bytes(1, 100);
        a.recalloc(p, 100, 3 * MIB, Life::Short)
    };
    assert!(!r.is_null());
    // SAFETY: 3 MiB of ours.
    let got = unsafe { std::slice::from_raw_parts(r, 3 * MIB) };
    assert!(got[..100].iter().all(|&b| b == 1), "the old bytes moved");
    assert_eq!(
        got[100..].iter().position(|&b| b != 0),
        None,
        "past the old size: zero"
    );
    // SAFETY: live, freed once each.
    unsafe {
        a.free(r, 3 * MIB, Life::Short);
        a.free(run, 4 * MIB, Life::Long);
    }
    assert!(a.is_empty());
}
