//! Red-team attacks of session 13 on the idle look giving listed blocks with no live slot
//! to the pool (RED-60's fix): with the decay delay at zero (every slow path looks), a
//! producer allocates objects, written with their address, and hands them to consumers
//! that check and free them, so its listed blocks empty under other threads' frees while
//! it looks; a third thread reads `stats` and compacts. No object may change while live
//! (a block given away under a live slot, or a slot handed out twice), and the instance
//! must end empty and consistent. A test that found a defect is `#[ignore]`d with its
//! number (RED-n), its owner and the exact failure.

use cohort::{Cohort, Retention};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

// Helper threads stopped however a test ends.
#[path = "common/threads.rs"]
mod threads;

cohort::lifetime_classes! { enum Life { A, B } }

const SIZES: [usize; 4] = [16, 64, 256, 1024];

/// Writes `p`'s address over its `s` bytes (as words).
fn stamp(p: *mut u8, s: usize) {
    for i in (0..s).step_by(8) {
        // SAFETY: inside a live allocation of `s` bytes (8-aligned, a multiple of 8).
        unsafe { p.add(i).cast::<usize>().write(p as usize ^ i) };
    }
}

/// The first word of `p`'s `s` bytes that is not as `stamp` wrote it.
fn changed(p: *mut u8, s: usize) -> Option<usize> {
    (0..s)
        .step_by(8)
        // SAFETY: as in `stamp`.
        .find(|&i| unsafe { p.add(i).cast::<usize>().read() } != p as usize ^ i)
}

fn producer_and_consumers(a: &Cohort<Life>, rounds: usize) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let mut senders = Vec::new();
        let mut consumers = Vec::new();
        for _ in 0..2 {
            let (tx, rx) = mpsc::sync_channel::<Vec<(usize, usize)>>(4);
            senders.push(tx);
            consumers.push(s.spawn(move || {
                for batch in rx {
                    for (p, sz) in batch {
                        let p = p as *mut u8;
                        if let Some(i) = changed(p, sz) {
                            panic!("a live object of {sz} B at {p:?} changed at byte {i}");
                        }
                        // SAFETY: live, freed once.
                        unsafe { a.free(p, sz, Life::A) };
                    }
                }
            }));
        }
        let reader = s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let _ = a.stats();
                a.compact();
                std::thread::yield_now();
            }
        });
        // Stops the reader however this test ends (a failed check panics here).
        let stop_reader = threads::StopOnDrop(&stop);
        let mut kept: Vec<(usize, usize)> = Vec::new();
        for round in 0..rounds {
            // Bursts that fill blocks (so that some retire full and others are listed),
            // each half handed to a consumer; a few kept a while by the producer and freed
            // locally (owner frees while remote ones are pending).
            let n = 2000 + (round % 7) * 500;
            let mut batch: Vec<(usize, usize)> = (0..n)
                .map(|i| {
                    let sz = SIZES[(i + round) % SIZES.len()];
                    let p = a.malloc(sz, Life::A);
                    assert!(!p.is_null());
                    stamp(p, sz);
                    (p as usize, sz)
                })
                .collect();
            kept.extend(batch.drain(..n / 10));
            let half = batch.split_off(batch.len() / 2);
            senders[0].send(batch).unwrap();
            senders[1].send(half).unwrap();
            if kept.len() > 3000 {
                for (p, sz) in kept.drain(..) {
                    let p = p as *mut u8;
                    assert_eq!(changed(p, sz), None, "a kept object changed");
                    // SAFETY: live, freed once.
                    unsafe { a.free(p, sz, Life::A) };
                }
            }
            // A slow path of another head now and then: a look.
            let q = a.malloc(100 << 10, Life::B);
            // SAFETY: live, freed once.
            unsafe { a.free(q, 100 << 10, Life::B) };
        }
        for (p, sz) in kept {
            let p = p as *mut u8;
            assert_eq!(changed(p, sz), None, "a kept object changed");
            // SAFETY: live, freed once.
            unsafe { a.free(p, sz, Life::A) };
        }
        drop(senders);
        for c in consumers {
            c.join().unwrap();
        }
        drop(stop_reader);
        reader.join().unwrap();
    });
}

/// The load on `a` with the delay at zero; then `a` must be consistent and empty.
fn run(mut a: Cohort<Life>) {
    a.set_retention(Retention {
        delay: Duration::ZERO,
        ..Retention::DEFAULT
    });
    // Fewer rounds in a debug build (its checks make each one slower).
    producer_and_consumers(&a, if cfg!(debug_assertions) { 120 } else { 400 });
    a.verify_exclusive().unwrap();
    assert!(a.is_empty(), "{}", a.stats());
}

#[test]
fn listed_blocks_emptied_by_consumers_under_looks_lose_nothing() {
    run(Cohort::new());
}

#[test]
fn listed_blocks_emptied_by_consumers_under_looks_lose_nothing_in_a_region() {
    run(Cohort::with_options(&cohort::RegionOptions::new(256 << 20)).unwrap());
}
