//! Red-team attacks of session 22 on remote frees pending in a batch against a release
//! whose flush takes the batch over while its holder is adding to it the quick way: two
//! workers hand each other objects of class A without pause (remote frees, chains filled
//! and pushed), and each round also free objects of class B that the main thread made
//! (pending in their batches). Once both say their B frees returned, the main thread
//! releases class B (every batch pushed first, the workers' included, while they go on
//! with class A), then makes B objects again, which may take the released blocks, as may
//! the workers' A objects. Every object keeps its pattern until its free, none is handed
//! out twice; at the end the instance verifies and is empty. A private instance and a
//! fixed region. A test that found a defect is `#[ignore]`d with its number (RED-n) and
//! the exact failure.

mod red_team_s22_common;

use cohort::{Cohort, RegionOptions};
use red_team_s22_common::{make, ring_channels, unmake, Object};
use std::sync::mpsc;

cohort::lifetime_classes! {
    enum Life { A, B }
}

const SIZES: [usize; 7] = [16, 48, 128, 512, 1000, 4000, 12_000];
const ROUNDS: usize = if cfg!(debug_assertions) { 20 } else { 80 };
/// A objects per hand-over (several per round).
const PER_SWAP: usize = 150;
const SWAPS_PER_ROUND: usize = 6;
const B_PER_WORKER: usize = 300;

/// A worker: each round frees the B objects it is given (and says so), then swaps
/// [`SWAPS_PER_ROUND`] bags of A objects with the other worker.
fn worker(
    a: &Cohort<Life>,
    w: usize,
    b_objects: mpsc::Receiver<Vec<Object>>,
    b_freed: mpsc::Sender<()>,
    (to_other, from_other): (mpsc::SyncSender<Vec<Object>>, mpsc::Receiver<Vec<Object>>),
    name: &str,
) {
    for round in 0..ROUNDS {
        let what = format!("{name}, worker {w}, round {round}");
        for o in b_objects.recv().expect("B objects") {
            unmake(a, o, Life::B, &what);
        }
        b_freed.send(()).expect("main");
        for swap in 0..SWAPS_PER_ROUND {
            let tag = (round * SWAPS_PER_ROUND + swap) as u8 ^ (w as u8) << 7;
            let mine: Vec<Object> = (0..PER_SWAP)
                .map(|i| make(a, SIZES[(i + swap + w) % SIZES.len()], Life::A, tag, &what))
                .collect();
            to_other.send(mine).expect("the other worker");
            for o in from_other.recv().expect("the other worker") {
                unmake(a, o, Life::A, &what);
            }
        }
    }
}

fn release_amid_quick_frees(a: &Cohort<Life>, name: &str) {
    std::thread::scope(|s| {
        let mut to_workers = Vec::new();
        let (b_freed, b_freed_in) = mpsc::channel::<()>();
        for (w, ring) in ring_channels(2, 2).into_iter().enumerate() {
            let (tx, rx) = mpsc::channel::<Vec<Object>>();
            to_workers.push(tx);
            let b_freed = b_freed.clone();
            s.spawn(move || worker(a, w, rx, b_freed, ring, name));
        }
        for round in 0..ROUNDS {
            let what = format!("{name}, main, round {round}");
            // Every bag made before any is sent: all live at once, none overlaps another.
            let bags: Vec<Vec<Object>> = (0..to_workers.len())
                .map(|_| {
                    (0..B_PER_WORKER)
                        .map(|i| make(a, SIZES[i % SIZES.len()], Life::B, round as u8, &what))
                        .collect()
                })
                .collect();
            let mut all: Vec<Object> = bags.concat();
            all.sort_unstable();
            for w in all.windows(2) {
                assert!(
                    w[0].0 + w[0].1 <= w[1].0,
                    "{what}: overlapping B objects: {w:x?}"
                );
            }
            for (tx, bag) in to_workers.iter().zip(bags) {
                tx.send(bag).expect("worker");
            }
            for _ in &to_workers {
                b_freed_in.recv().expect("a worker's B frees");
            }
            // SAFETY: every B object is dead (the workers' frees returned; the main thread
            // made and keeps none), and no thread allocates or frees in B meanwhile.
            unsafe { a.release_class(Life::B) };
        }
    });
    // SAFETY: every other thread has ended.
    if let Err(e) = unsafe { a.verify() } {
        panic!("{name}: verify: {e}");
    }
    assert!(a.is_empty(), "{name}: not empty: {:?}", a.stats());
}

#[test]
fn a_release_amid_quick_remote_frees_pushes_every_pending_free_once() {
    release_amid_quick_frees(&Cohort::<Life>::new(), "private");
}

#[test]
fn a_release_amid_quick_remote_frees_in_a_fixed_region_pushes_every_pending_free_once() {
    let a = Cohort::<Life>::with_options(&RegionOptions::new(128 << 20)).expect("fixed");
    release_amid_quick_frees(&a, "fixed");
}
