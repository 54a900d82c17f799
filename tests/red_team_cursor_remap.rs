//! Red-team attacks of session 16 on heaps a region keeps between its views (a thread's
//! heap parked at its exit, a join's at its leave, with their blocks, cursors and free
//! slots) when the region's memory is mapped at another address for the next view: the
//! region in an anonymous file, formatted at one address, left, and attached again at
//! another address of the same process (the first mapping gone). The threads and joins of
//! the second view adopt the parked heaps: every object they get must lie in the second
//! mapping, apart from the objects kept from the first view (whose bytes stay), and the
//! region verifies. A test that found a defect is `#[ignore]`d with its number (RED-n), its
//! owner and the exact failure.

#[allow(dead_code)]
#[path = "common/memory.rs"]
mod memory;
mod red_team_common;

use cohort::{Cohort, RegionOptions};
use memory::{map_aligned, memfd};
use red_team_common::isolated;

cohort::lifetime_classes! { enum Life { A } }

const CAPACITY: usize = 32 << 20;
const SIZES: [usize; 4] = [16, 64, 200, 1000];

/// The byte an object `off` bytes into the mapping is filled with (the same in every
/// mapping of the region).
fn byte_of(off: usize) -> u8 {
    (off >> 4) as u8 | 1
}

/// Allocates `n` objects through `malloc`, fills each, frees every other one through
/// `free` (its free slots stay with the heap); returns the kept ones as offsets from `base`.
fn churn(
    n: usize,
    base: usize,
    malloc: impl Fn(usize) -> *mut u8,
    free: impl Fn(*mut u8, usize),
) -> Vec<(usize, usize)> {
    let mut kept = Vec::new();
    for i in 0..n {
        let size = SIZES[i % SIZES.len()];
        let p = malloc(size);
        assert!(!p.is_null(), "{size} B");
        // SAFETY: `size` bytes of ours.
        unsafe { p.write_bytes(byte_of(p as usize - base), size) };
        if i % 2 == 0 {
            free(p, size);
        } else {
            kept.push((p as usize - base, size));
        }
    }
    kept
}

#[test]
fn heaps_parked_by_a_view_serve_the_next_view_at_another_address() {
    isolated(60, |report| {
        let f = Cohort::<Life>::footprint(CAPACITY).expect("footprint");
        let fd = memfd(f.bytes);
        let first = map_aligned(fd, f.bytes);
        let base1 = first as usize;
        // SAFETY: a fresh mapping of ours, unused.
        let a = unsafe { Cohort::<Life>::format_in(first, f.bytes, &RegionOptions::new(CAPACITY)) }
            .expect("formatted");
        let mut kept = Vec::new();
        // Threads that exit (their heaps parked) and joins left (theirs parked), each with
        // free slots on its cursors and lists.
        std::thread::scope(|s| {
            for _ in 0..3 {
                let threads = s.spawn(|| {
                    churn(
                        2000,
                        base1,
                        |n| a.malloc(n, Life::A),
                        // SAFETY: live objects of this thread, freed once.
                        |p, n| unsafe { a.free(p, n, Life::A) },
                    )
                });
                kept.extend(threads.join().expect("a thread of the first view"));
            }
        });
        for group in 0..3 {
            let j = a.join(group).expect("a join");
            kept.extend(churn(
                2000,
                base1,
                |n| j.malloc(n, Life::A),
                // SAFETY: live objects of this join, freed once.
                |p, n| unsafe { j.free(p, n, Life::A) },
            ));
            j.leave();
        }
        drop(a);
        let second = map_aligned(fd, f.bytes);
        let base2 = second as usize;
        // SAFETY: the first mapping, nobody's any more (the first view is gone).
        assert_eq!(unsafe { libc::munmap(first.cast(), f.bytes) }, 0);
        // SAFETY: the region formatted above, in the file, mapped for the driver's life.
        let b = unsafe { Cohort::<Life>::attach_in(second, f.bytes, CAPACITY) }.expect("attached");
        for &(off, size) in &kept {
            // SAFETY: a kept object, at its offset in the second mapping.
            let bytes = unsafe { std::slice::from_raw_parts((base2 + off) as *const u8, size) };
            if bytes.iter().any(|&x| x != byte_of(off)) {
                report.fail(&format!(
                    "a kept {size}-byte object at offset {off:#x} changed"
                ));
            }
        }
        let mut got: Vec<(usize, usize)> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        (0..4000)
                            .map(|i| (b.malloc(SIZES[i % 4], Life::A) as usize, SIZES[i % 4]))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().expect("a thread of the second view"))
                .collect()
        });
        for group in 0..3 {
            let j = b.join(group).expect("a join");
            got.extend((0..4000).map(|i| (j.malloc(SIZES[i % 4], Life::A) as usize, SIZES[i % 4])));
            j.leave();
        }
        if let Some(&(p, size)) = got
            .iter()
            .find(|&&(p, size)| p < base2 || p + size > base2 + f.bytes)
        {
            report.fail(&format!(
                "a {size}-byte object at {p:#x} outside the second mapping {base2:#x} (the \
                 first was at {base1:#x})"
            ));
        }
        let mut all: Vec<(usize, usize)> = kept.iter().map(|&(off, n)| (base2 + off, n)).collect();
        all.extend(&got);
        all.sort_unstable();
        if let Some(w) = all.windows(2).find(|w| w[0].0 + w[0].1 > w[1].0) {
            report.fail(&format!("{:#x} overlaps {:#x}", w[0].0, w[1].0));
        }
        // SAFETY: the driver's other threads have ended.
        if let Err(e) = unsafe { b.verify() } {
            report.fail(&format!("verify: {e}"));
        }
        for (p, size) in all {
            // SAFETY: live objects of the region, freed once.
            unsafe { b.free(p as *mut u8, size, Life::A) };
        }
        if !b.is_empty() {
            report.fail(&format!("not empty: {:?}", b.stats()));
        }
    });
}
