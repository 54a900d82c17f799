//! Red-team attacks of session 22 on the remote free's quick way under load: three threads
//! in a ring hand each round's objects to the next, which checks and frees them (remote
//! frees: chains that fill, are pushed when full, when another block needs the entry, at
//! the thread's slow paths), interleaved with allocations and frees of objects of its own
//! (its blocks' local lists, which the quick way's checks read), while a fourth thread asks
//! for `stats`, `compact`, `is_empty` and walks the blocks without pause (flushers taking
//! the batches over). Every live object carries a pattern of its address and its maker's
//! round, checked before its free: a slot handed out twice, a link written into a live
//! object, a chain pushed twice would show. Bound by rounds; at the end the instance
//! verifies and is empty. A private instance, a fixed region, private memory formatted as
//! a region and a shared-anonymous region. A test that found a defect is `#[ignore]`d with
//! its number (RED-n) and the exact failure.

mod red_team_common;
mod red_team_s22_common;

use cohort::{Cohort, RegionOptions};
use red_team_s22_common::{make, ring_channels, unmake, Object};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc;

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

/// Small sizes of every chain limit (stride 4 included), and two medium ones.
const SIZES: [usize; 12] = [
    16, 24, 48, 64, 128, 256, 1000, 2048, 4000, 16, 12_000, 40_000,
];
const WORKERS: usize = 3;
/// Fewer in a debug build (every free checked against the live bits: slow).
const ROUNDS: usize = if cfg!(debug_assertions) { 15 } else { 120 };
const PER_ROUND: usize = 400;

/// Worker `w`: each round makes [`PER_ROUND`] objects of class Short for the next worker,
/// then frees the previous worker's, making and freeing objects of class Long of its own
/// between them.
fn worker(
    a: &Cohort<Life>,
    w: usize,
    to_next: mpsc::SyncSender<Vec<Object>>,
    from_prev: mpsc::Receiver<Vec<Object>>,
    name: &str,
) {
    let mut own: std::collections::VecDeque<Object> = Default::default();
    for round in 0..ROUNDS {
        let what = format!("{name}, worker {w}, round {round}");
        let tag = (w * ROUNDS + round) as u8;
        let batch: Vec<Object> = (0..PER_ROUND)
            .map(|i| {
                make(
                    a,
                    SIZES[(i * 7 + round + w) % SIZES.len()],
                    Life::Short,
                    tag,
                    &what,
                )
            })
            .collect();
        to_next.send(batch).expect("the next worker is gone");
        let theirs = from_prev.recv().expect("the previous worker is gone");
        // Freed in an order that moves between blocks (entries taken by other blocks'
        // chains) and back: odd indices first, then even ones backwards.
        let order = (1..theirs.len())
            .step_by(2)
            .chain((0..theirs.len()).step_by(2).rev());
        for (j, i) in order.enumerate() {
            unmake(a, theirs[i], Life::Short, &what);
            if j % 5 == 0 {
                own.push_back(make(
                    a,
                    SIZES[(j + w) % SIZES.len()],
                    Life::Long,
                    tag,
                    &what,
                ));
            }
            if j % 3 == 0 && own.len() > 20 {
                let o = own.pop_front().expect("own");
                unmake(a, o, Life::Long, &what);
            }
        }
    }
    for o in own {
        unmake(a, o, Life::Long, name);
    }
}

fn ring(a: &Cohort<Life>, name: &str) {
    let done = AtomicUsize::new(0);
    let flushes = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for (w, (to_next, from_prev)) in ring_channels(WORKERS, 2).into_iter().enumerate() {
            let done = &done;
            handles.push(s.spawn(move || {
                let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    worker(a, w, to_next, from_prev, name)
                }));
                done.fetch_add(1, Relaxed);
                if let Err(e) = ended {
                    std::panic::resume_unwind(e);
                }
            }));
        }
        s.spawn(|| {
            while done.load(Relaxed) < WORKERS {
                let _ = a.stats();
                let _ = a.compact();
                let _ = a.is_empty();
                a.for_each_block(|_| {});
                flushes.fetch_add(1, Relaxed);
            }
        });
        for h in handles {
            if let Err(e) = h.join() {
                std::panic::resume_unwind(e);
            }
        }
    });
    // SAFETY: every other thread has ended.
    if let Err(e) = unsafe { a.verify() } {
        panic!("{name}: verify after the ring: {e}");
    }
    assert!(a.is_empty(), "{name}: not empty: {:?}", a.stats());
    assert!(flushes.load(Relaxed) > 0, "{name}: the flusher never ran");
}

#[test]
fn remote_frees_in_a_ring_with_flushers_keep_every_object_whole_private() {
    ring(&Cohort::<Life>::new(), "private");
}

#[test]
fn remote_frees_in_a_ring_with_flushers_keep_every_object_whole_in_private_regions() {
    let capacity = 256 << 20;
    let options = RegionOptions::new(capacity);
    ring(
        &Cohort::<Life>::with_options(&options).expect("fixed"),
        "fixed",
    );
    let f = Cohort::<Life>::footprint(capacity).expect("footprint");
    let mem = red_team_common::aligned_anonymous(f.bytes, f.align, false);
    // SAFETY: ours, unused, mapped for the process's life.
    let formatted = unsafe { Cohort::<Life>::format_in(mem, f.bytes, &options) }.expect("format");
    ring(&formatted, "formatted");
}

#[test]
fn remote_frees_in_a_ring_with_flushers_keep_every_object_whole_in_a_shared_region() {
    ring(
        &Cohort::<Life>::shared_anonymous(256 << 20).expect("shared anonymous"),
        "shared anonymous",
    );
}
