//! Red-team attacks of session 10 on the zeroing forms after reuse: `calloc` and `recalloc`
//! must read zero over the whole usable size, and `remalloc`/`recalloc` keep the old bytes,
//! at every size (small classes, medium runs from a heap's cache and from blocks, large
//! mappings from the large cache, trimmed, grown with `mremap` or grown into cached
//! neighbours), in every kind of instance, with the allocator's page
//! (`COHORT_PAGE_SIZE=64K` runs the same tests). Every allocation is written whole with a
//! tag first, so any reuse is dirty. A test that found a defect is `#[ignore]`d with its
//! number (RED-n), its owner and the exact failure.

use cohort::{Cohort, RegionOptions, Retention};
use std::alloc::Layout;
use std::time::Duration;

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

const MIB: usize = 1 << 20;

fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// The malloc family's usable size of a request of `n` bytes.
fn usable(a: &Cohort<Life>, n: usize) -> usize {
    let align = n.next_power_of_two().clamp(1, 4096);
    a.usable_size(Layout::from_size_align(n, align).unwrap())
}

/// The first byte of `[from, to)` at `p` that is not `b` (4 KiB compares at a time: fast in
/// a debug build).
fn first_not(p: *const u8, from: usize, to: usize, b: u8) -> Option<usize> {
    let want = [b; 4096];
    let mut i = from;
    while i < to {
        let n = (to - i).min(4096);
        // SAFETY: the callers pass live allocations of at least `to` bytes.
        let got = unsafe { std::slice::from_raw_parts(p.add(i), n) };
        if got != &want[..n] {
            return got.iter().position(|&x| x != b).map(|k| i + k);
        }
        i += n;
    }
    None
}

/// Sizes at and around every boundary: tiny, small classes, the medium range (the heap
/// cache's longest run, 64 KiB, and past it), the large range.
const SIZES: &[usize] = &[
    1,
    2,
    3,
    8,
    17,
    100,
    1000,
    4096,
    8000,
    16384,
    16385,
    20000,
    32768,
    40000,
    65536,
    65537,
    100_000,
    300_000,
    MIB - 1,
    MIB,
    MIB + 1,
    MIB + MIB / 2,
    2 * MIB,
    3 * MIB + 5,
    5 * MIB,
    9 * MIB,
];

fn a_size(seed: &mut u64) -> usize {
    let base = SIZES[next(seed) as usize % SIZES.len()];
    match next(seed) % 4 {
        0 => base,
        1 => base + (next(seed) as usize % (base / 8 + 1)),
        2 => (base - (next(seed) as usize % (base / 8 + 1))).max(1),
        _ => base + base / 2 + 1,
    }
}

/// A random walk of malloc, calloc, remalloc, recalloc and free over [`SIZES`] in `a`:
/// every allocation is written whole with its tag; `calloc` must read zero over the usable
/// size; a resize must keep `[0, min(old, new))` and (`recalloc`) read zero on
/// `[old, usable(new))`. Returns the first failure.
fn walk(a: &Cohort<Life>, what: &str, seed0: u64, steps: usize) -> Result<(), String> {
    let mut seed = seed0;
    // (pointer, size, life, tag)
    let mut live: Vec<(usize, usize, Life, u8)> = Vec::new();
    let mut tag = 0u8;
    let mut result = Ok(());
    for step in 0..steps {
        let r = next(&mut seed) % 10;
        tag = tag.wrapping_add(1).max(1);
        let life = if next(&mut seed).is_multiple_of(3) {
            Life::Long
        } else {
            Life::Short
        };
        if live.len() < 6 || r < 3 {
            let n = a_size(&mut seed);
            let zero = r.is_multiple_of(2);
            let p = if zero {
                a.calloc(n, life)
            } else {
                a.malloc(n, life)
            };
            if p.is_null() {
                result = Err(format!("{what}: step {step}: alloc({n}) null"));
                break;
            }
            let u = usable(a, n);
            if zero {
                if let Some(i) = first_not(p, 0, u, 0) {
                    result = Err(format!(
                        "{what}: step {step}: calloc({n}) (usable {u}) byte {i} is {:#x}",
                        // SAFETY: i < u, inside the allocation.
                        unsafe { p.add(i).read() }
                    ));
                    break;
                }
            }
            // SAFETY: u usable bytes of ours.
            unsafe { p.write_bytes(tag, u) };
            live.push((p as usize, n, life, tag));
        } else if r < 7 {
            let i = next(&mut seed) as usize % live.len();
            let (p, n, l, t) = live[i];
            let m = a_size(&mut seed);
            let zero = r.is_multiple_of(2);
            // SAFETY: live, of size n and class l.
            let q = unsafe {
                if zero {
                    a.recalloc(p as *mut u8, n, m, l)
                } else {
                    a.remalloc(p as *mut u8, n, m, l)
                }
            };
            if q.is_null() {
                result = Err(format!("{what}: step {step}: resize {n} -> {m} null"));
                break;
            }
            let form = if zero { "recalloc" } else { "remalloc" };
            if let Some(k) = first_not(q, 0, n.min(m), t) {
                result = Err(format!(
                    "{what}: step {step}: {form}({n} -> {m}) lost byte {k} (moved: {})",
                    q as usize != p
                ));
                break;
            }
            let u = usable(a, m);
            if zero {
                if let Some(k) = first_not(q, n.min(u), u, 0) {
                    result = Err(format!(
                        "{what}: step {step}: recalloc({n} -> {m}) (usable {u}, moved: {}) byte {k} is {:#x}",
                        q as usize != p,
                        // SAFETY: k < u, inside the allocation.
                        unsafe { q.add(k).read() }
                    ));
                    break;
                }
            }
            tag = tag.wrapping_add(1).max(1);
            // SAFETY: u usable bytes of ours.
            unsafe { q.write_bytes(tag, u) };
            live[i] = (q as usize, m, l, tag);
        } else {
            let i = next(&mut seed) as usize % live.len();
            let (p, n, l, t) = live.swap_remove(i);
            if let Some(k) = first_not(p as *const u8, 0, usable(a, n), t) {
                result = Err(format!(
                    "{what}: step {step}: a {n}-byte allocation changed at {k}"
                ));
                break;
            }
            // SAFETY: live, freed once with its size and class.
            unsafe { a.free(p as *mut u8, n, l) };
        }
    }
    for (p, n, l, _) in live {
        // SAFETY: live, freed once.
        unsafe { a.free(p as *mut u8, n, l) };
    }
    result
}

/// The walk in a private instance with the default retention, with a large cache small
/// enough to be at its bound (trimmed and grown mappings), and with a zero delay (idle
/// current blocks given back, medium pages purged at once), then in fixed, committed,
/// shared-anonymous and fallback instances.
#[test]
fn zeroing_forms_read_zero_over_the_usable_size_after_dirty_reuse_everywhere() {
    let mut failures = Vec::new();
    let mut run = |a: &Cohort<Life>, what: &str, seed: u64| {
        if let Err(e) = walk(a, what, seed, 1500) {
            failures.push(e);
        }
    };
    run(&Cohort::<Life>::new(), "private", 0x5eed_0001);
    let bounded = Cohort::<Life>::new();
    bounded.set_retention(Retention {
        large_cache_bytes: 12 * MIB,
        large_cache_mappings: 3,
        ..Retention::DEFAULT
    });
    run(&bounded, "private, large cache at 12 MiB / 3", 0x5eed_0002);
    let eager = Cohort::<Life>::new();
    eager.set_retention(Retention {
        delay: Duration::ZERO,
        large_cache_bytes: 24 * MIB,
        large_cache_mappings: 4,
        ..Retention::DEFAULT
    });
    run(&eager, "private, delay 0", 0x5eed_0003);
    let fixed = Cohort::<Life>::with_options(&RegionOptions::new(512 * MIB)).expect("fixed");
    run(&fixed, "fixed", 0x5eed_0004);
    let committed =
        Cohort::<Life>::with_options(&RegionOptions::new(256 * MIB).commit(true)).expect("commit");
    run(&committed, "committed", 0x5eed_0005);
    let shared = Cohort::<Life>::shared_anonymous(512 * MIB).expect("shared");
    run(&shared, "shared-anonymous", 0x5eed_0006);
    let fallback =
        Cohort::<Life>::with_options(&RegionOptions::new(8 * MIB).fallback(true)).expect("fb");
    fallback.set_retention(Retention {
        large_cache_bytes: 12 * MIB,
        large_cache_mappings: 3,
        ..Retention::DEFAULT
    });
    run(
        &fallback,
        "fixed 8 MiB with fallback, bounded cache",
        0x5eed_0007,
    );
    assert!(failures.is_empty(), "{failures:#?}");
}
