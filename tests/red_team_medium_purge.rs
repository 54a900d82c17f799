//! Red-team attack of session 12 on the medium purge (a dirty range's whole free pages
//! found in one step): with a decay delay of 0 every medium call may purge, and runs of
//! odd granule counts leave pages shared by a live run and free granules. A purge must
//! never take a page that holds a live byte, and granules it calls clean must read zero
//! (a zeroed request over them is not written again). Every byte of every live run is
//! checked, not a sample. Run at 4 KiB and at 64 KiB pages (`COHORT_PAGE_SIZE=64K`, where
//! a page holds 32 granules). A test that found a defect is `#[ignore]`d with its number
//! (RED-n), its owner and the exact failure.

mod common;

use cohort::{Cohort, Retention};
use common::{fill, mismatch, nonzero, seed_of};
use std::time::Duration;

cohort::lifetime_classes! { enum Life { A } }

const GRANULE: usize = 2048;

fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn purges_never_take_a_live_byte_and_clean_granules_read_zero() {
    let a = Cohort::<Life>::new();
    a.set_retention(Retention {
        delay: Duration::ZERO,
        ..Retention::DEFAULT
    });
    let mut seed = 0x5eed_1234_9876_abcdu64;
    let mut live: Vec<(*mut u8, usize)> = Vec::new();
    for step in 0..3000 {
        match next(&mut seed) % 8 {
            0..=3 => {
                // 9 to 64 granules, ending anywhere in the last one.
                let granules = 9 + next(&mut seed) as usize % 56;
                let size = granules * GRANULE - next(&mut seed) as usize % GRANULE;
                let zeroed = next(&mut seed).is_multiple_of(2);
                let p = if zeroed {
                    a.calloc(size, Life::A)
                } else {
                    a.malloc(size, Life::A)
                };
                assert!(!p.is_null());
                if zeroed {
                    // SAFETY: `size` bytes of ours.
                    if let Some(at) = unsafe { nonzero(p, size) } {
                        panic!("step {step}: calloc({size}) reads a non-zero byte at {at}");
                    }
                }
                // SAFETY: as above.
                unsafe { fill(p, seed_of(p, size), size) };
                live.push((p, size));
            }
            4..=6 if !live.is_empty() => {
                let (p, size) = live.swap_remove(next(&mut seed) as usize % live.len());
                // SAFETY: live, `size` bytes; then freed once.
                unsafe {
                    if let Some(at) = mismatch(p, seed_of(p, size), size) {
                        panic!("step {step}: a live run of {size} bytes changed at byte {at}");
                    }
                    a.free(p, size, Life::A);
                }
            }
            _ => {
                if next(&mut seed).is_multiple_of(4) {
                    a.compact();
                }
                // A resize within and across granules.
                if let Some(i) = (!live.is_empty()).then(|| next(&mut seed) as usize % live.len()) {
                    let (p, size) = live[i];
                    let new = (size + next(&mut seed) as usize % (8 * GRANULE)).max(16385);
                    // SAFETY: live with `size` bytes.
                    let q = unsafe { a.recalloc(p, size, new, Life::A) };
                    assert!(!q.is_null());
                    // SAFETY: `new` bytes of ours; the first `size` moved.
                    unsafe {
                        if let Some(at) = mismatch(q, seed_of(p, size), size) {
                            panic!("step {step}: recalloc {size} -> {new} lost byte {at}");
                        }
                        if let Some(at) = nonzero(q.add(size), new - size) {
                            panic!(
                                "step {step}: recalloc {size} -> {new}: byte {} not zero",
                                size + at
                            );
                        }
                        fill(q, seed_of(q, new), new);
                    }
                    live[i] = (q, new);
                }
            }
        }
    }
    for (p, size) in live {
        // SAFETY: live, `size` bytes; then freed once.
        unsafe {
            assert_eq!(
                mismatch(p, seed_of(p, size), size),
                None,
                "a live run changed"
            );
            a.free(p, size, Life::A);
        }
    }
    assert!(a.is_empty());
    // SAFETY: no other thread uses `a`.
    unsafe { a.verify() }.expect("verify at the end");
}
