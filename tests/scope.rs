//! `Cohort::scope` on a shared `static`: the release at its end frees exactly the scope's
//! allocations, whatever else runs meanwhile: other threads' scopes,
//! allocations in the caller's own classes (the same thread's included), std's through
//! `GlobalAlloc`, nested scopes, a panic inside the scope. (That nothing built on the
//! handle can leave the scope or its thread is checked by the compile-fail examples of
//! `ClassScope`'s docs.)

mod common;

use cohort::allocator_api2::{boxed::Box, vec::Vec};
use cohort::{Cohort, Lifetime};
use common::threads::Barrier;
use common::{fill, mismatch, seed_of};
use std::alloc::GlobalAlloc;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread;

cohort::lifetime_classes! {
    enum Life { Frame, Long }
}

/// Each test has a static allocator of its own (`static A: Cohort<Life>`): tests run at
/// once, and an allocator has 8 scope classes for all its open scopes.
macro_rules! own_static {
    () => {
        static A: Cohort<Life> = Cohort::new();
    };
}

/// `len` bytes patterned for their address, in a scope's `Vec`.
fn patterned_in<'s>(
    s: cohort::ClassScope<'s, Life>,
    len: usize,
) -> Vec<u8, cohort::ClassScope<'s, Life>> {
    let mut v = Vec::with_capacity_in(len, s);
    // SAFETY: capacity `len`, then every byte written.
    unsafe {
        fill(v.as_mut_ptr(), seed_of(v.as_ptr(), len), len);
        v.set_len(len);
    }
    v
}

fn intact(v: &[u8]) -> bool {
    // SAFETY: `v.len()` bytes.
    unsafe { mismatch(v.as_ptr(), seed_of(v.as_ptr(), v.len()), v.len()) }.is_none()
}

/// Allocations of every kind live across a scope: the caller's classes (`Frame` too, the
/// class whose index is 0), `GlobalAlloc`'s, small and large; the scope's release leaves
/// them all, and frees everything the scope made (the scope's class is empty after).
#[test]
fn a_scope_frees_its_allocations_and_nothing_else() {
    static B: Cohort<Life> = Cohort::new();
    let sizes = [8usize, 24, 100, 1000, 5000, 16 * 1024, 100_000];
    let mut outside = std::vec::Vec::new();
    for &s in &sizes {
        for life in [Life::Frame, Life::Long] {
            let p = B.malloc(s, life);
            // SAFETY: s bytes.
            unsafe { fill(p, seed_of(p, s), s) };
            outside.push((p, s, Some(life)));
        }
        let l = std::alloc::Layout::from_size_align(s, 8).unwrap();
        // SAFETY: a non-zero size.
        let p = unsafe { GlobalAlloc::alloc(&B, l) };
        // SAFETY: s bytes.
        unsafe { fill(p, seed_of(p, s), s) };
        outside.push((p, s, None));
    }
    let made = B.scope(|frame| {
        let vs: std::vec::Vec<_> = sizes.iter().map(|&s| patterned_in(frame, s)).collect();
        let stats = B.stats();
        let scope_1 = stats.classes.iter().find(|c| c.life_name == "scope 1");
        let in_scope = scope_1.map_or(0, |c| c.small_live);
        assert!(vs.iter().all(|v| intact(v)));
        // Small ones are counted per head; the medium one (100 000 B) by its blocks.
        assert_eq!(in_scope, sizes.len() - 1, "{stats}");
        assert_eq!(scope_1.unwrap().medium_allocations, 1, "{stats}");
        // Forgotten: the release frees them anyway.
        core::mem::forget(vs);
        sizes.len()
    });
    assert_eq!(made, sizes.len());
    let s = B.stats();
    assert!(
        s.heads
            .iter()
            .all(|h| !h.life_name.starts_with("scope") || h.live == 0),
        "{s}"
    );
    for &(p, s, life) in &outside {
        // SAFETY: live, s bytes.
        assert_eq!(
            unsafe { mismatch(p, seed_of(p, s), s) },
            None,
            "{s} B in {life:?}"
        );
        let l = std::alloc::Layout::from_size_align(s, 8).unwrap();
        // SAFETY: live, freed as made.
        unsafe {
            match life {
                Some(life) => B.free(p, s, life),
                None => GlobalAlloc::dealloc(&B, p, l),
            }
        }
    }
}

/// Threads run scopes at once, on one static, beside allocations in `Frame`: each
/// release frees its own scope only, never another's live one.
#[test]
fn concurrent_scopes_release_only_their_own() {
    own_static!();
    const THREADS: usize = 4;
    let barrier = Barrier::new(THREADS);
    thread::scope(|sc| {
        for t in 0..THREADS {
            let barrier = &barrier;
            sc.spawn(move || {
                let _party = barrier.party();
                for round in 0..20 {
                    let keep = A.malloc(64, Life::Frame);
                    // SAFETY: 64 bytes.
                    unsafe { fill(keep, seed_of(keep, 64), 64) };
                    A.scope(|frame| {
                        let mut vs = std::vec::Vec::new();
                        for i in 0..50 {
                            vs.push(patterned_in(frame, 16 + (i * 37 + t * 11 + round) % 3000));
                        }
                        let b = Box::new_in([t as u8; 40], frame);
                        // Every thread is inside its scope, then half release while the
                        // others check theirs.
                        barrier.wait();
                        if t % 2 == 0 {
                            barrier.wait();
                        }
                        assert!(vs.iter().all(|v| intact(v)), "thread {t} round {round}");
                        assert_eq!(*b, [t as u8; 40]);
                        if t % 2 == 1 {
                            barrier.wait();
                        }
                    });
                    // SAFETY: live, 64 bytes, then freed once.
                    unsafe {
                        assert_eq!(mismatch(keep, seed_of(keep, 64), 64), None);
                        A.free(keep, 64, Life::Frame);
                    }
                }
            });
        }
    });
}

/// Scopes nest, each in its own class: the inner one's release leaves the outer one's
/// allocations alone. A ninth open scope panics (8 scope classes), and leaves the thread able
/// to open scopes.
#[test]
fn nested_scopes_and_their_limit() {
    own_static!();
    let sum = A.scope(|outer| {
        let v = patterned_in(outer, 3000);
        let inner = A.scope(|inner| {
            let w = patterned_in(inner, 3000);
            let deeper = A.scope(|d| patterned_in(d, 100).len());
            assert!(intact(&w));
            w.len() + deeper
        });
        assert!(
            intact(&v),
            "the inner scope's release freed the outer's allocation"
        );
        v.len() + inner
    });
    assert_eq!(sum, 6100);
    fn nest(depth: usize) -> usize {
        if depth == 10 {
            return 0;
        }
        A.scope(|f| {
            let v = patterned_in(f, 100 * depth);
            let inner = nest(depth + 1);
            assert!(intact(&v));
            v.len() + inner
        })
    }
    let too_deep = catch_unwind(|| nest(1));
    let msg = too_deep.unwrap_err();
    let msg = msg.downcast_ref::<String>().unwrap();
    assert!(msg.contains("all 8 scope classes"), "{msg}");
    assert_eq!(A.scope(|f| patterned_in(f, 10).len()), 10);
    assert!(A.is_empty(), "{}", A.stats());
}

/// A panic inside a scope releases it on the way out (the collections are dropped first)
/// and gives its class back: the next scope holds `"scope 1"` again.
#[test]
fn a_panicking_scope_is_released() {
    own_static!();
    let r = catch_unwind(AssertUnwindSafe(|| {
        A.scope(|frame| {
            let v = patterned_in(frame, 500);
            core::mem::forget(patterned_in(frame, 700));
            assert!(intact(&v));
            panic!("inside the scope");
        })
    }));
    assert!(r.is_err());
    A.scope(|frame| {
        let _v = patterned_in(frame, 10);
        let s = A.stats();
        let names: std::vec::Vec<_> = s
            .heads
            .iter()
            .filter(|h| h.live > 0 && h.life_name.starts_with("scope"))
            .map(|h| h.life_name)
            .collect();
        assert_eq!(names, ["scope 1"], "{s}");
    });
}

/// The scope's class is none of the caller's: `Life::COUNT` classes are the caller's, and
/// releasing each of them during a scope leaves the scope's allocations alone.
#[test]
fn releasing_the_callers_classes_leaves_a_scope_alone() {
    let a: Cohort<Life> = Cohort::new();
    a.scope(|frame| {
        let v = patterned_in(frame, 2000);
        for i in 0..Life::COUNT {
            let life = [Life::Frame, Life::Long][i];
            // SAFETY: nothing of the caller's classes is live on this instance.
            let r = unsafe { a.release_class(life) };
            assert_eq!(r.slots, 0);
        }
        assert!(intact(&v));
    });
    assert!(a.is_empty());
}

/// RED-8: two threads' scopes at once, each with a large allocation: the first to end
/// must unmap only its own, not the other's live one. (Scopes at the same depth once shared
/// a class, and the release drained the class's large allocations.)
#[test]
fn a_scope_leaves_another_threads_large_allocations_alone() {
    own_static!();
    let (made, ended) = (Barrier::new(2), Barrier::new(2));
    thread::scope(|sc| {
        sc.spawn(|| {
            let (_made, _ended) = (made.party(), ended.party());
            A.scope(|frame| {
                let v = patterned_in(frame, 100_000);
                made.wait();
                assert!(intact(&v));
            });
            ended.wait();
        });
        sc.spawn(|| {
            let (_made, _ended) = (made.party(), ended.party());
            A.scope(|frame| {
                let v = patterned_in(frame, 100_000);
                made.wait();
                // The other scope ends now.
                ended.wait();
                assert!(
                    intact(&v),
                    "another thread's scope freed this one's large Vec"
                );
            });
        });
    });
}

/// Eight threads each hold a scope: a ninth scope, on any thread, is refused with
/// [`cohort::ScopesInUse`] (`try_scope`) without running its closure; once one ends, its
/// class serves the next scope, which finds nothing of the previous one's and frees
/// nothing of the others'.
#[test]
fn scopes_past_the_limit_are_refused_until_one_ends() {
    own_static!();
    let (held, checked) = (Barrier::new(9), Barrier::new(9));
    let (ended, last) = (Barrier::new(5), Barrier::new(5));
    thread::scope(|sc| {
        for t in 0..8 {
            let (held, checked, ended, last) = (&held, &checked, &ended, &last);
            sc.spawn(move || {
                let _parties = (held.party(), checked.party(), ended.party(), last.party());
                A.scope(|frame| {
                    let v = patterned_in(frame, 1000 + t * 40_000);
                    held.wait();
                    checked.wait();
                    // Threads 4..8 check theirs after the main thread's scopes reused
                    // the classes of threads 0..4.
                    if t >= 4 {
                        last.wait();
                    }
                    assert!(intact(&v), "thread {t}'s scope was freed under it");
                });
                if t < 4 {
                    ended.wait();
                }
            });
        }
        let _parties = (held.party(), checked.party(), ended.party(), last.party());
        held.wait();
        let mut ran = false;
        assert_eq!(A.try_scope(|_| ran = true), Err(cohort::ScopesInUse));
        assert!(!ran);
        checked.wait();
        ended.wait();
        for i in 0..20 {
            let n = A.try_scope(|f| {
                let big = patterned_in(f, 200_000 + i);
                let small = patterned_in(f, 100 + i);
                assert!(intact(&big) && intact(&small));
                big.len()
            });
            assert_eq!(n, Ok(200_000 + i));
        }
        last.wait();
    });
    assert!(A.is_empty(), "{}", A.stats());
}

/// Scopes on one static racing the allocator-wide calls of other threads: releases of the
/// caller's classes, compact, stats, and GlobalAlloc traffic. Nothing of a live scope is
/// freed (patterns intact), and everything is freed at the end.
#[test]
fn scopes_race_releases_compacts_and_stats() {
    own_static!();
    let stop = std::sync::atomic::AtomicBool::new(false);
    thread::scope(|sc| {
        for t in 0..3usize {
            let stop = &stop;
            sc.spawn(move || {
                let mut round = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || round < 50 {
                    round += 1;
                    A.scope(|frame| {
                        let vs: std::vec::Vec<_> = (0..20)
                            .map(|i| {
                                patterned_in(
                                    frame,
                                    [1, 2, 24, 700, 9000, 20_000][(i + t + round) % 6],
                                )
                            })
                            .collect();
                        std::thread::yield_now();
                        assert!(vs.iter().all(|v| intact(v)), "thread {t} round {round}");
                    });
                }
            });
        }
        sc.spawn(|| {
            // Stops the scoping threads however this thread ends (a failed call panics
            // here).
            let _stop = common::StopOnDrop(&stop);
            for _ in 0..200 {
                let p = A.malloc(48, Life::Long);
                // SAFETY: nothing of `Frame` is live on this thread or exited ones.
                let _ = unsafe { A.release_class(Life::Frame) };
                let _ = A.compact();
                let _ = A.stats();
                // SAFETY: live, 48 bytes.
                unsafe { A.free(p, 48, Life::Long) };
            }
        });
    });
    assert!(A.is_empty(), "{}", A.stats());
}

/// A scope in a thread-local's destructor, after the thread left its heap (cohort's exit
/// hook ran first): its allocations come from blocks shared under the pool's lock by
/// threads without a heap, and its release frees them too (the class is the scope's
/// alone), so nothing is left live once the thread has exited.
#[test]
fn a_scope_of_an_exiting_thread_without_a_heap_is_released() {
    own_static!();
    struct AtExit;
    impl Drop for AtExit {
        fn drop(&mut self) {
            let n = A.scope(|frame| {
                let vs: std::vec::Vec<_> = [1, 2, 24, 3000, 50_000]
                    .iter()
                    .map(|&s| patterned_in(frame, s))
                    .collect();
                assert!(vs.iter().all(|v| intact(v)));
                core::mem::forget(vs);
                5
            });
            assert_eq!(n, 5);
        }
    }
    std::thread_local! {
        static AT_EXIT: AtExit = const { AtExit };
    }
    thread::spawn(|| {
        // Registered first, so its destructor runs after the allocator's exit hook.
        AT_EXIT.with(|_| ());
        let p = A.malloc(64, Life::Long);
        // SAFETY: live, 64 bytes.
        unsafe { A.free(p, 64, Life::Long) };
    })
    .join()
    .unwrap();
    assert!(A.is_empty(), "{}", A.stats());
}

/// A scope inside an explicit join, with the join's allocations (its own heap) and the
/// thread's alongside; the join left inside the scope: the scope's release frees the
/// scope's allocations only (its handle allocates on the thread's heap, never the join's).
#[test]
fn a_scope_inside_a_join() {
    own_static!();
    let j = A.join(7).unwrap();
    let kept = j.malloc(100, Life::Frame);
    // SAFETY: 100 bytes.
    unsafe { fill(kept, seed_of(kept, 100), 100) };
    let n = A.scope(|frame| {
        let v = patterned_in(frame, 700);
        let w = j.malloc(700, Life::Frame);
        // SAFETY: 700 bytes.
        unsafe { fill(w, seed_of(w, 700), 700) };
        j.leave();
        assert!(intact(&v));
        w as usize
    });
    let w = n as *mut u8;
    // SAFETY: both live (the scope freed only its own), then freed once.
    unsafe {
        assert_eq!(mismatch(kept, seed_of(kept, 100), 100), None);
        assert_eq!(mismatch(w, seed_of(w, 700), 700), None);
        A.free(kept, 100, Life::Frame);
        A.free(w, 700, Life::Frame);
    }
    assert!(A.is_empty(), "{}", A.stats());
}

/// Misuse inside a scope (a double free of the scope's own 1-byte and 64-byte slots, a
/// wrong-size free of its large one) panics, and the scope's release on the way out still
/// runs: no lock is left held by the panicking free, and the class is given back.
#[test]
fn misuse_inside_a_scope_panics_and_the_scope_is_still_released() {
    use cohort::allocator_api2::alloc::Allocator;
    use std::alloc::Layout;
    own_static!();
    for (size, wrong) in [(1, 1), (64, 64), (100_000, 300_000)] {
        let r = catch_unwind(AssertUnwindSafe(|| {
            A.scope(|frame| {
                let l = Layout::from_size_align(size, 1).unwrap();
                let p = frame.allocate(l).unwrap().cast::<u8>();
                let _keep = patterned_in(frame, 5000);
                // SAFETY: a live allocation of the scope, freed once; the second free is
                // the misuse under test, which the allocator reports before touching
                // anything (large: a wrong size; small: the slot freed last is first on its
                // block's free list).
                unsafe {
                    frame.deallocate(p, l);
                    frame.deallocate(p, Layout::from_size_align(wrong, 1).unwrap());
                }
            })
        }));
        assert!(r.is_err(), "{size} B: no panic");
        assert_eq!(A.scope(|f| patterned_in(f, 100).len()), 100);
        assert!(A.is_empty(), "{}", A.stats());
    }
}
