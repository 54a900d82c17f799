//! Red-team attacks of session 9 on idle current blocks (a current block empty at two
//! looks gives its touched pages back and is reset in place), with the retention delay at
//! zero so that every look takes every empty current block: threads allocating, freeing
//! locally and remotely, zeroing and resizing small objects between large allocations
//! (whose paths look), in private, fixed and shared-anonymous instances. A test that
//! found a defect is `#[ignore]`d with its number (RED-n), its owner and the exact failure.

mod common;

use cohort::{Cohort, RegionOptions, Retention};
use common::kernel_view::resident_pages;
use std::sync::mpsc;
use std::time::Duration;

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

const MIB: usize = 1 << 20;
const SIZES: [usize; 8] = [8, 24, 64, 200, 1000, 3000, 8000, 16000];

fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn holds(p: usize, n: usize, b: u8) -> bool {
    // SAFETY: the callers pass live allocations of at least n bytes.
    unsafe { std::slice::from_raw_parts(p as *const u8, n) }
        .iter()
        .all(|&x| x == b)
}

/// Two threads, each allocating, checking and freeing small objects of every class in
/// bursts (so their current blocks empty between bursts), handing some to the other to
/// free (remote frees), using `calloc` and `remalloc`, with a large allocation between
/// bursts (a large path looks for idle blocks). Every byte is checked; the instance ends
/// empty and consistent.
fn churn_with_idle_looks(a: &Cohort<Life>, what: &str) {
    a.set_retention(Retention {
        delay: Duration::ZERO,
        ..Retention::DEFAULT
    });
    std::thread::scope(|s| {
        let (tx0, rx0) = mpsc::channel::<Vec<(usize, usize, u8)>>();
        let (tx1, rx1) = mpsc::channel::<Vec<(usize, usize, u8)>>();
        for (t, (tx, rx)) in [(tx0, rx1), (tx1, rx0)].into_iter().enumerate() {
            s.spawn(move || {
                let mut seed = 0x1d1e_u64 + t as u64;
                for burst in 0..60 {
                    let byte = (burst as u8).wrapping_mul(7) ^ t as u8 | 1;
                    let mut live: Vec<(usize, usize, u8)> = (0..300)
                        .map(|i| {
                            let n = SIZES[(i + burst) % SIZES.len()];
                            let zeroed = next(&mut seed).is_multiple_of(4);
                            let p = if zeroed {
                                a.calloc(n, Life::Short)
                            } else {
                                a.malloc(n, Life::Short)
                            };
                            assert!(!p.is_null(), "{what}: malloc({n})");
                            if zeroed {
                                assert!(holds(p as usize, n, 0), "{what}: calloc({n})");
                            }
                            // SAFETY: n bytes of ours.
                            unsafe { p.write_bytes(byte, n) };
                            (p as usize, n, byte)
                        })
                        .collect();
                    for e in live.iter_mut().step_by(5) {
                        let to = SIZES[next(&mut seed) as usize % SIZES.len()];
                        // SAFETY: live, e.1 bytes of Short.
                        let q = unsafe { a.remalloc(e.0 as *mut u8, e.1, to, Life::Short) };
                        assert!(!q.is_null());
                        assert!(holds(q as usize, e.1.min(to), e.2), "{what}: remalloc kept");
                        // SAFETY: to bytes of ours.
                        unsafe { q.write_bytes(e.2, to) };
                        *e = (q as usize, to, e.2);
                    }
                    let theirs: Vec<_> = live.split_off(200);
                    let _ = tx.send(theirs);
                    for (p, n, b) in live {
                        assert!(holds(p, n, b), "{what}: {n} bytes changed (burst {burst})");
                        // SAFETY: live, freed once.
                        unsafe { a.free(p as *mut u8, n, Life::Short) };
                    }
                    if let Ok(others) = rx.recv_timeout(Duration::from_secs(5)) {
                        for (p, n, b) in others {
                            assert!(holds(p, n, b), "{what}: a handed-over object changed");
                            // SAFETY: the other thread's, handed over, freed once.
                            unsafe { a.free(p as *mut u8, n, Life::Short) };
                        }
                    }
                    // A large allocation: its path looks for idle current blocks.
                    let big = a.malloc(3 * MIB, Life::Long);
                    assert!(!big.is_null());
                    // SAFETY: allocated above, freed once.
                    unsafe { a.free(big, 3 * MIB, Life::Long) };
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
        }
    });
    // SAFETY: no other thread uses the instance.
    let v = unsafe { a.verify() };
    assert!(v.is_ok(), "{what}: {v:?}");
    assert!(a.is_empty(), "{what}: {:?}", a.stats());
}

#[test]
fn idle_current_blocks_given_back_under_churn_lose_nothing() {
    churn_with_idle_looks(&Cohort::<Life>::new(), "private");
    let fixed = Cohort::<Life>::with_options(&RegionOptions::new(128 * MIB)).expect("fixed");
    churn_with_idle_looks(&fixed, "fixed");
    let shared = Cohort::<Life>::shared_anonymous(128 * MIB).expect("shared");
    churn_with_idle_looks(&shared, "shared-anonymous");
}

/// 1000 objects of 512 bytes written and freed: one current block's touched pages, empty.
/// Returns the range past the block header's page that they spanned.
fn burst(a: &Cohort<Life>) -> (usize, usize) {
    let ptrs: Vec<*mut u8> = (0..1000)
        .map(|i| {
            let p = a.malloc(512, Life::Short);
            assert!(!p.is_null());
            // SAFETY: 512 bytes of ours.
            unsafe { p.write_bytes(i as u8 | 1, 512) };
            p
        })
        .collect();
    let lo = ptrs.iter().map(|&p| p as usize).min().unwrap();
    let hi = ptrs.iter().map(|&p| p as usize).max().unwrap() + 512;
    for &p in &ptrs {
        // SAFETY: allocated above, freed once.
        unsafe { a.free(p, 512, Life::Short) };
    }
    let page = a.usable_size(std::alloc::Layout::from_size_align(1, 8192).unwrap());
    (lo.next_multiple_of(page.max(4096)), hi)
}

/// One large allocation and its free: a large path, which looks for idle current blocks.
fn large_path(a: &Cohort<Life>) {
    let p = a.malloc(4 * MIB, Life::Long);
    assert!(!p.is_null());
    // SAFETY: live, freed once.
    unsafe { a.free(p, 4 * MIB, Life::Long) };
}

/// A thread that uses two instances (a program with a global cohort and one of its own, or
/// two of its own) empties a current block in each, then takes slow paths of both, one
/// after the other, for three seconds. Each instance's empty current block must give its
/// pages back within two delays, as with one instance (`idle_current.rs`).
///
/// RED-47 (fixed): the looks' schedule was per thread, so the instance looked at first after
/// each due time took every look and the other's empty current blocks kept their pages for
/// good; each heap now has its own schedule (`heap::idle::NextLook`).
#[test]
fn a_thread_using_two_instances_gives_back_the_idle_blocks_of_both() {
    let retention = Retention {
        delay: Duration::from_millis(400),
        ..Retention::DEFAULT
    };
    let first = Cohort::<Life>::new();
    let second = Cohort::<Life>::new();
    first.set_retention(retention);
    second.set_retention(retention);
    let (f0, f1) = burst(&first);
    let (s0, s1) = burst(&second);
    assert!(resident_pages(f0, f1) > 100 && resident_pages(s0, s1) > 100);
    // Looks are at most once per half delay (200 ms); 120 rounds of 25 ms are 3 s, more than
    // the two looks a block needs, 7 times over.
    let mut done = false;
    for _ in 0..120 {
        std::thread::sleep(Duration::from_millis(25));
        large_path(&first);
        large_path(&second);
        if resident_pages(f0, f1) == 0 && resident_pages(s0, s1) == 0 {
            done = true;
            break;
        }
    }
    assert!(
        done,
        "after 3 s of slow paths in both instances: the first instance's empty current block \
         has {} pages resident, the second's {} (of {})",
        resident_pages(f0, f1),
        resident_pages(s0, s1),
        (s1 - s0).div_ceil(4096)
    );
}
