//! Red-team attack on the every-build double-free check of tiny slots (1 and 2 bytes,
//! freed under the pool lock onto their run's list), of 4-byte slots and of large slots
//! (4 and 16 KiB) across hand-overs: another thread
//! frees the last of the owner's tiny objects, the owner's heap is handed to the pool (its
//! thread's exit, its join's leave), and that thread frees the object again. The README
//! promises a report, naming the pointer, size and class, for a free of the slot freed
//! last onto the list the free would push it on; then the instance must hand every slot
//! out once.

mod red_team_s22_common;

use cohort::{set_misuse_hook, Cohort};
use red_team_s22_common::{double_free_reported, make, raise, unmake, Object};
use std::collections::HashSet;

cohort::lifetime_classes! { enum Life { A } }

/// `first`: this thread's first free of the last object comes before the hand-over (else
/// after it).
/// Tiny slots (1, 2), a slot its link fills (4), slots of a few per block (4 KiB, 16 KiB:
/// 512 and 128 a block).
const SIZES: [usize; 5] = [1, 2, 4, 4096, 16384];

fn case(size: usize, n: usize, join: bool, shared: bool, first: bool) {
    let what =
        format!("size {size}, {n} objects, join {join}, shared {shared}, freed first {first}");
    let a = if shared {
        Cohort::<Life>::shared_anonymous(64 << 20).expect("shared anonymous")
    } else {
        Cohort::<Life>::new()
    };
    let all: Vec<Object> = if join {
        let j = a.join(1).expect("a join");
        let all: Vec<Object> = (0..n)
            .map(|i| {
                let p = j.malloc(size, Life::A) as usize;
                assert_ne!(p, 0);
                red_team_s22_common::patterned(p, size, i as u8)
            })
            .collect();
        if first {
            unmake(&a, all[n - 1], Life::A, &what);
        }
        j.leave();
        all
    } else {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<Object>>();
        let (freed_tx, freed_rx) = std::sync::mpsc::channel::<()>();
        let (a, what) = (&a, &what);
        std::thread::scope(|s| {
            let owner = s.spawn(move || {
                tx.send(
                    (0..n)
                        .map(|i| make(a, size, Life::A, i as u8, what))
                        .collect(),
                )
                .expect("main");
                freed_rx.recv().expect("main");
            });
            let all = rx.recv().expect("owner");
            if first {
                unmake(a, all[n - 1], Life::A, what);
            }
            freed_tx.send(()).expect("owner");
            owner.join().expect("owner");
            all
        })
    };
    // The owner's heap was handed over; this thread frees the last object, then again.
    let x = all[n - 1];
    if !first {
        unmake(&a, x, Life::A, &what);
    }
    double_free_reported(&a, x, Life::A, &what);
    let mut live: HashSet<usize> = all[..n - 1].iter().map(|o| o.0).collect();
    let fresh: Vec<Object> = (0..2 * n)
        .map(|_| {
            let o = make(&a, size, Life::A, 5, &what);
            assert!(live.insert(o.0), "{what}: {:#x} handed out twice", o.0);
            o
        })
        .collect();
    for o in fresh.into_iter().chain(all[..n - 1].iter().copied()) {
        unmake(&a, o, Life::A, &what);
    }
    // SAFETY: no other thread uses `a`.
    let v = unsafe { a.verify() };
    assert!(v.is_ok(), "{what}: verify: {v:?}");
    assert!(a.is_empty(), "{what}: {}", a.stats());
}

#[test]
fn a_double_free_after_a_hand_over_is_reported_for_tiny_and_large_slots() {
    set_misuse_hook(Some(raise));
    for shared in [false, true] {
        for join in [false, true] {
            for size in SIZES {
                for n in [1usize, 10, 300] {
                    for first in [false, true] {
                        case(size, n, join, shared, first);
                    }
                }
            }
        }
    }
    set_misuse_hook(None);
}
