//! Red-team attacks on resizes in a region of fixed capacity that is full: `remalloc`,
//! `recalloc` and `realloc` between small, medium and large sizes when the region has no
//! room left (the README: "out of memory is a null return"; a failed resize leaves the old
//! allocation as it was). After each, every allocation is freed, the instance must verify
//! and be empty, and the region must serve as many whole-unit allocations as a fresh one
//! (nothing the failed resize touched stays taken).

use cohort::{Cohort, RegionOptions};

cohort::lifetime_classes! { enum Life { A, B } }

/// How many resizes returned null (the region was full for them).
static NULLS: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

const MIB: usize = 1 << 20;
const CAPACITY: usize = 16 * MIB;

const SIZES: &[usize] = &[16, 24, 5000, 16_384, 20_000, 300_000, MIB, MIB + 1, 3 * MIB];

fn pattern(i: usize) -> u8 {
    (i as u8).wrapping_mul(29) ^ 0xc3
}

fn instance(kind: &str) -> Cohort<Life> {
    match kind {
        "reservation" => Cohort::with_reservation(CAPACITY),
        _ => Cohort::with_options(&RegionOptions::new(CAPACITY)).expect("region"),
    }
}

/// Takes what room is left with allocations of decreasing sizes (both classes), returned
/// as (pointer, size, class).
fn fill(a: &Cohort<Life>) -> Vec<(*mut u8, usize, Life)> {
    let mut held = Vec::new();
    for size in [2 * MIB, MIB + 4096, 200_000, 20_000, 4096, 64, 16] {
        for life in [Life::A, Life::B] {
            for _ in 0..1_000_000 {
                let p = a.try_malloc(size, life);
                if p.is_null() {
                    break;
                }
                held.push((p, size, life));
            }
        }
    }
    held
}

/// How many 2 MiB allocations the instance serves at once (all freed again).
fn whole_units(a: &Cohort<Life>) -> usize {
    let mut got = Vec::new();
    loop {
        let p = a.malloc(2 * MIB, Life::A);
        if p.is_null() {
            break;
        }
        got.push(p);
    }
    let n = got.len();
    for p in got {
        // SAFETY: allocated above, freed once.
        unsafe { a.free(p, 2 * MIB, Life::A) };
    }
    n
}

/// One resize in a full region: returns what went wrong.
fn resize_when_full(kind: &str, old: usize, new: usize, how: &str) -> Vec<String> {
    let case = format!("{kind}, {how} {old} -> {new}");
    eprintln!("case {case}");
    let mut wrong = Vec::new();
    let a = instance(kind);
    let baseline = whole_units(&a);
    // The Layout forms pair with each other (`malloc(24)` is 32-aligned, a 24-byte
    // layout of alignment 1 takes a 24-byte slot).
    let layout = |n: usize| core::alloc::Layout::from_size_align(n, 1).unwrap();
    let p = if how == "realloc" {
        a.alloc(layout(old), Life::A)
    } else {
        a.malloc(old, Life::A)
    };
    assert!(!p.is_null(), "{case}: the first allocation");
    // SAFETY: `old` bytes are p's.
    unsafe { (0..old).for_each(|i| p.add(i).write(pattern(i))) };
    let held = fill(&a);
    // SAFETY: p is live with `old` in Life::A.
    let q = unsafe {
        match how {
            "remalloc" => a.remalloc(p, old, new, Life::A),
            "recalloc" => a.recalloc(p, old, new, Life::A),
            _ => a.realloc(p, layout(old), new, Life::A),
        }
    };
    if q.is_null() {
        NULLS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }
    let (live, size) = if q.is_null() { (p, old) } else { (q, new) };
    // SAFETY: `live` holds `min(old, size)` bytes of the pattern.
    let bad = (0..old.min(new)).find(|&i| unsafe { live.add(i).read() } != pattern(i));
    if let Some(i) = bad {
        wrong.push(format!("{case}: null {}: byte {i} changed", q.is_null()));
    }
    if !q.is_null() && how == "recalloc" {
        // SAFETY: q holds `new` bytes.
        let nz = (old..new).find(|&i| unsafe { q.add(i).read() } != 0);
        if let Some(i) = nz {
            wrong.push(format!("{case}: byte {i} of the growth not zero"));
        }
    }
    // SAFETY: each allocation is live with its size and class, freed once.
    unsafe {
        if how == "realloc" {
            a.dealloc(live, layout(size), Life::A);
        } else {
            a.free(live, size, Life::A);
        }
        for (p, size, life) in held {
            a.free(p, size, life);
        }
    }
    // SAFETY: no other thread uses `a`.
    if let Err(e) = unsafe { a.verify() } {
        wrong.push(format!("{case}: verify: {e}"));
    }
    if !a.is_empty() {
        wrong.push(format!("{case}: not empty: {}", a.stats()));
    }
    a.compact();
    let after = whole_units(&a);
    if after < baseline {
        wrong.push(format!(
            "{case}: {after} whole units served after, {baseline} before (null: {})",
            q.is_null()
        ));
    }
    wrong
}

#[test]
fn resizes_in_a_full_region_fail_cleanly_or_succeed() {
    let mut wrong = Vec::new();
    for kind in ["reservation", "options"] {
        for &old in SIZES {
            for &new in SIZES {
                if old == new {
                    continue;
                }
                for how in ["remalloc", "recalloc", "realloc"] {
                    wrong.extend(resize_when_full(kind, old, new, how));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{} wrong: {wrong:#?}", wrong.len());
    // Growths past the small sizes find no room: the cases test a full region.
    let nulls = NULLS.load(core::sync::atomic::Ordering::Relaxed);
    eprintln!("{nulls} resizes returned null");
    assert!(nulls >= 100, "only {nulls} resizes found the region full");
}
