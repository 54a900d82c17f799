//! Red-team attacks of session 11 on medium sizes against their decay: dirty-first
//! placement and emptied medium blocks kept listed until a purge leaves them clean, with a
//! delay of zero (every medium call may purge) and the retention changed under the threads'
//! feet (delay 0 and 1 ms, no kept empty blocks and the default), while threads allocate,
//! zero, grow, shrink and free medium runs (cached sizes up to 64 KiB and longer ones) and
//! another compacts and releases its own class. Every byte must stay, every zeroed byte
//! must read zero, and the instance must end empty and consistent. Run at 4 KiB and at
//! 64 KiB pages (`COHORT_PAGE_SIZE=64K`). A test that found a defect is `#[ignore]`d with
//! its number (RED-n), its owner and the exact failure.

use cohort::{Cohort, Retention};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

// Helper threads stopped however a test ends.
#[path = "common/threads.rs"]
mod threads;

cohort::lifetime_classes! { enum Life { Work, Other } }

const KIB: usize = 1 << 10;

fn step(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// A medium length: half within the per-heap cache's 64 KiB, half up to 1 MiB.
fn medium_len(seed: &mut u64) -> usize {
    match step(seed) % 2 {
        0 => 16 * KIB + 1 + step(seed) as usize % (48 * KIB),
        _ => 64 * KIB + step(seed) as usize % (960 * KIB),
    }
}

/// The offset of the first byte of `[0, n)` at `p` that is not `b` (every 509th and the
/// last are read: a debug build reads megabytes slowly).
fn first_other(p: *const u8, n: usize, b: u8) -> Option<usize> {
    (0..n)
        .step_by(509)
        .chain([n - 1])
        // SAFETY: the callers pass live allocations of at least n bytes.
        .find(|&i| unsafe { p.add(i).read() } != b)
}

fn worker(a: &Cohort<Life>, t: u64) {
    let mut seed = 0xdec0_0000_u64 + t * 0x1_0000_0001;
    let tag = 0x20 + t as u8;
    let mut live: Vec<(usize, usize)> = Vec::new();
    for i in 0..2000 {
        let r = step(&mut seed) % 8;
        if live.len() < 12 && r < 4 {
            let n = medium_len(&mut seed);
            let zeroed = r == 0;
            let p = if zeroed {
                a.calloc(n, Life::Work)
            } else {
                a.malloc(n, Life::Work)
            };
            assert!(!p.is_null(), "thread {t} step {i}: alloc({n})");
            if zeroed {
                if let Some(k) = first_other(p, n, 0) {
                    panic!("thread {t} step {i}: calloc({n}) byte {k} is not zero");
                }
            }
            // SAFETY: n bytes of ours.
            unsafe { p.write_bytes(tag, n) };
            live.push((p as usize, n));
        } else if let Some(k) = (!live.is_empty()).then(|| step(&mut seed) as usize % live.len()) {
            let (p, n) = live.swap_remove(k);
            let p = p as *mut u8;
            if let Some(at) = first_other(p, n, tag) {
                panic!("thread {t} step {i}: a live {n}-byte run changed at {at}");
            }
            if r < 6 {
                let m = medium_len(&mut seed);
                let zeroed = r == 4;
                // SAFETY: live, n bytes of Work, resized once.
                let q = unsafe {
                    if zeroed {
                        a.recalloc(p, n, m, Life::Work)
                    } else {
                        a.remalloc(p, n, m, Life::Work)
                    }
                };
                assert!(!q.is_null(), "thread {t} step {i}: resize {n} -> {m}");
                if let Some(at) = first_other(q, n.min(m), tag) {
                    panic!("thread {t} step {i}: resize {n} -> {m} lost byte {at}");
                }
                if zeroed && m > n {
                    // SAFETY: m bytes of ours.
                    let grown = unsafe { q.add(n) };
                    if let Some(at) = first_other(grown, m - n, 0) {
                        panic!(
                            "thread {t} step {i}: recalloc {n} -> {m} byte {} not zero",
                            n + at
                        );
                    }
                }
                // SAFETY: m bytes of ours.
                unsafe { q.write_bytes(tag, m) };
                live.push((q as usize, m));
            } else {
                // SAFETY: live, freed once with its size and class.
                unsafe { a.free(p, n, Life::Work) };
            }
        }
    }
    for (p, n) in live {
        // SAFETY: live, freed once with its size and class.
        unsafe { a.free(p as *mut u8, n, Life::Work) };
    }
}

/// Three workers; a thread that changes the retention over and over; a thread that
/// allocates runs of class Other, compacts and releases Other.
#[test]
fn medium_runs_keep_their_bytes_while_the_decay_and_the_retention_change_under_them() {
    let a = Cohort::<Life>::new();
    let zero = Retention {
        delay: Duration::ZERO,
        ..Retention::DEFAULT
    };
    a.set_retention(zero);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..3)
            .map(|t| {
                s.spawn({
                    let a = &a;
                    move || worker(a, t)
                })
            })
            .collect();
        s.spawn(|| {
            let mut k = 0u32;
            while !stop.load(Relaxed) {
                let r = match k % 3 {
                    0 => zero,
                    1 => Retention {
                        delay: Duration::from_millis(1),
                        empty_block_bytes: 0,
                        ..Retention::DEFAULT
                    },
                    _ => Retention::DEFAULT,
                };
                a.set_retention(r);
                k += 1;
                std::thread::yield_now();
            }
        });
        s.spawn(|| {
            let mut seed = 0x07e5_u64;
            while !stop.load(Relaxed) {
                for _ in 0..4 {
                    let n = medium_len(&mut seed);
                    let p = a.malloc(n, Life::Other);
                    if !p.is_null() {
                        // SAFETY: n bytes of ours.
                        unsafe { p.write_bytes(0xee, n) };
                    }
                }
                let _ = a.compact();
                // SAFETY: every allocation of Other is this thread's, and dead.
                unsafe { a.release_class(Life::Other) };
            }
        });
        // Stops the two threads however this test ends (a failed worker panics here).
        let stop_threads = threads::StopOnDrop(&stop);
        for w in workers {
            w.join().expect("a worker");
        }
        drop(stop_threads);
    });
    // SAFETY: every allocation of Other is dead.
    unsafe { a.release_class(Life::Other) };
    // SAFETY: no other thread uses the instance.
    let v = unsafe { a.verify() };
    assert!(v.is_ok(), "{v:?}");
    assert!(a.is_empty(), "not empty at the end: {}", a.stats());
}
