//! Releases on a region shared between processes free only what the releasing process may
//! free. `scope_exclusive` (`&mut`, which excludes this process's other users only) is
//! refused there: a block passes between processes' heaps (an exited thread's partial
//! blocks go to the pool, where any process's thread takes them), so no release of a
//! class the other processes also use could tell its objects from theirs. `scope`, whose
//! class is its own, frees nothing of theirs either, whether the thread that made them
//! still runs or has exited (its heap abandoned, its objects still its process's), small
//! or large.

mod red_team_common;

use cohort::Cohort;
use red_team_common::*;
use std::sync::atomic::Ordering::Relaxed;
use test_support::raw_thread;

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

const MIB: usize = 1 << 20;

/// Process B's thread allocates small objects and runs of class Short, then exits (its
/// heap is abandoned; B keeps the objects); meanwhile process A's `scope_exclusive` of
/// Short is refused, its `scope` runs (allocating every size), and A allocates again: B's
/// objects keep their bytes. (Before `scope_exclusive` was refused on shared instances,
/// it freed B's exited thread's blocks and runs: `object 2 (3145728 B), made by a thread
/// that has exited, was overwritten after another process's scope_exclusive`.)
#[test]
fn no_safe_release_frees_objects_of_another_processs_exited_thread() {
    isolated(60, |report| {
        const SIZES: [usize; 4] = [64, 3000, 3 * MIB, 5 * MIB];
        let mut a = Cohort::<Life>::shared_anonymous(128 * MIB).expect("a shared region");
        let flags = shared_words(2);
        let (in_scope, allocated) = (&flags[0], &flags[1]);
        let other = {
            let a = &a;
            in_child_reporting(30, report, || {
                while in_scope.load(Relaxed) == 0 {
                    std::hint::spin_loop();
                }
                let objs = raw_thread::scope(|s| {
                    s.spawn(|| {
                        (0..8)
                            .map(|i| {
                                let n = SIZES[i % SIZES.len()];
                                let p = a.malloc(n, Life::Short);
                                assert!(!p.is_null());
                                // SAFETY: fresh, n bytes.
                                unsafe { p.write_bytes(i as u8 + 1, n) };
                                (p as usize, n)
                            })
                            .collect::<Vec<_>>()
                    })
                    .join()
                    .unwrap()
                });
                allocated.store(1, Relaxed);
                while in_scope.load(Relaxed) != 2 {
                    std::hint::spin_loop();
                }
                for (i, &(p, n)) in objs.iter().enumerate() {
                    // SAFETY: live, n bytes.
                    let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, n) };
                    let bad = bytes.iter().position(|&b| b != i as u8 + 1);
                    assert_eq!(
                        bad, None,
                        "object {i} ({n} B), made by a thread that has exited, was \
                         overwritten after another process's scope_exclusive or scope"
                    );
                }
                for (p, n) in objs {
                    // SAFETY: allocated above, freed once.
                    unsafe { a.free(p as *mut u8, n, Life::Short) };
                }
            })
        };
        in_scope.store(1, Relaxed);
        while allocated.load(Relaxed) == 0 {
            std::hint::spin_loop();
        }
        let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            a.scope_exclusive(Life::Short, |_, _| ());
        }));
        let msg = panic_message(&*refused.expect_err("scope_exclusive on a shared region"));
        assert!(
            msg.contains("scope_exclusive") && msg.contains("`scope`"),
            "{msg}"
        );
        let kept = a.scope(|frame| {
            let mut v: cohort::Vec<u8, _> = cohort::Vec::new_in(frame);
            for &n in &SIZES {
                v.resize(n, 0xdd);
            }
            let boxes: Vec<_> = (0..500)
                .map(|i| cohort::Box::new_in([i as u8; 200], frame))
                .collect();
            boxes.len() + v.len()
        });
        assert_eq!(kept, 500 + SIZES[3]);
        // Enough of each size to take whatever the release gave back.
        let mine: Vec<(*mut u8, usize)> = (0..4000)
            .map(|i| SIZES[if i < 8 { i % 4 } else { i % 2 }])
            .map(|n| (a.malloc(n, Life::Short), n))
            .collect();
        for &(p, n) in &mine {
            if !p.is_null() {
                // SAFETY: fresh, n bytes.
                unsafe { p.write_bytes(0xee, n) };
            }
        }
        in_scope.store(2, Relaxed);
        wait_ok(other, report, "the other process");
        for (p, n) in mine {
            if !p.is_null() {
                // SAFETY: allocated above, freed once.
                unsafe { a.free(p, n, Life::Short) };
            }
        }
        assert!(a.is_empty(), "everything freed");
    });
}
