//! Red-team attacks of session 13 on `release_class` racing the hand-overs it depends on:
//! joins left and threads exiting (their blocks become an exited thread's, released by any
//! thread's call) while another thread releases the class over and over. Every slot must
//! be released exactly once over all the calls (none twice, none lost), and the instance
//! must end empty and consistent. A test that found a defect is `#[ignore]`d with its
//! number (RED-n), its owner and the exact failure.

use cohort::Cohort;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

// Helper threads stopped however a test ends.
#[path = "common/threads.rs"]
mod threads;

cohort::lifetime_classes! { enum Life { A, B } }

const ROUNDS: usize = 40;
const PER_ROUND: usize = 3000;

/// Sizes cycled by the workers (small classes only: slots are what the count checks).
const SIZES: [usize; 5] = [8, 24, 64, 200, 1000];

/// Runs `worker(i)` for `ROUNDS` rounds on two threads while this thread releases class A
/// until they are done, then once more; checks the released slots add up.
fn race(a: &Cohort<Life>, worker: impl Fn(usize) + Sync) {
    let done = AtomicBool::new(false);
    let released = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let w = &worker;
        let workers: Vec<_> = (0..2)
            .map(|t| {
                s.spawn(move || {
                    for r in 0..ROUNDS {
                        w(t * ROUNDS + r);
                    }
                })
            })
            .collect();
        s.spawn(|| {
            while !done.load(Ordering::Acquire) {
                // SAFETY: class A is only allocated by the workers, whose allocations are
                // never used after their join is left or their thread exits; nobody frees
                // in class A.
                let r = unsafe { a.release_class(Life::A) };
                released.fetch_add(r.slots, Ordering::Relaxed);
            }
        });
        // Stops the releasing thread however this test ends (a failed worker panics here).
        let stop_releases = threads::StopOnDrop(&done);
        for w in workers {
            w.join().unwrap();
        }
        drop(stop_releases);
    });
    // SAFETY: as above; no worker is left.
    let r = unsafe { a.release_class(Life::A) };
    let total = released.load(Ordering::Relaxed) + r.slots;
    assert_eq!(r.left_to_other_threads, 0, "{r:?}");
    assert_eq!(
        total,
        2 * ROUNDS * PER_ROUND,
        "slots released over all calls, against those allocated"
    );
    assert!(a.is_empty(), "{}", a.stats());
}

/// Each round: a join allocates `PER_ROUND` objects of class A (and frees a few of class B
/// of its own), writes them, and is left.
#[test]
fn releases_racing_joins_left_release_each_slot_once() {
    let a: Cohort<Life> = Cohort::new();
    race(&a, |round| {
        let j = a.join(round % 3).expect("a join");
        for i in 0..PER_ROUND {
            let s = SIZES[i % SIZES.len()];
            let p = j.malloc(s, Life::A);
            assert!(!p.is_null());
            // SAFETY: live, `s` bytes.
            unsafe { p.write_bytes(round as u8, s) };
            let q = j.malloc(s, Life::B);
            // SAFETY: allocated just above, freed once.
            unsafe { j.free(q, s, Life::B) };
        }
        j.leave();
    });
    let mut a = a;
    a.verify_exclusive().unwrap();
}

/// Each round: a thread of its own allocates `PER_ROUND` objects of class A, writes them,
/// and exits (its heap handed over at exit).
#[test]
fn releases_racing_thread_exits_release_each_slot_once() {
    let a: Cohort<Life> = Cohort::new();
    race(&a, |round| {
        // Joined by its handle: the thread has exited (its heap handed over) when the join
        // returns, which the end of a scope alone does not wait for.
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..PER_ROUND {
                    let s = SIZES[i % SIZES.len()];
                    let p = a.malloc(s, Life::A);
                    assert!(!p.is_null());
                    // SAFETY: live, `s` bytes.
                    unsafe { p.write_bytes(round as u8, s) };
                }
            })
            .join()
            .unwrap();
        });
    });
    let mut a = a;
    a.verify_exclusive().unwrap();
}
