//! `Cohort::scope` on a shared `static`: the release at its end frees exactly the scope's
//! allocations, whatever else runs meanwhile: other threads' scopes at the same depth,
//! allocations in the caller's own classes (the same thread's included), std's through
//! `GlobalAlloc`, nested scopes, a panic inside the scope. (That nothing built on the
//! handle can leave the scope or its thread is checked by the compile-fail examples of
//! `ClassScope`'s docs.)

mod common;

use cohort::allocator_api2::{boxed::Box, vec::Vec};
use cohort::{Cohort, Lifetime};
use common::{fill, mismatch, seed_of};
use std::alloc::GlobalAlloc;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Barrier;
use std::thread;

cohort::lifetime_classes! {
    enum Life { Frame, Long }
}

static A: Cohort<Life> = Cohort::new();

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
    // A static of its own: the other tests run scopes on `A` meanwhile.
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
        let in_scope: usize = B
            .stats()
            .heads
            .iter()
            .filter(|h| h.life_name == "scope 1")
            .map(|h| h.live)
            .sum();
        assert!(vs.iter().all(|v| intact(v)));
        // Small ones are counted per head; the large one (100 000 B) by the large table.
        assert_eq!(in_scope, sizes.len() - 1, "{}", B.stats());
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

/// Threads run scopes at the same depth (so in the same hidden class) at once, on one
/// static, beside allocations in `Frame`: each release frees its own thread's scope only,
/// never another's live one.
#[test]
fn concurrent_scopes_release_only_their_own() {
    const THREADS: usize = 4;
    let barrier = Barrier::new(THREADS);
    thread::scope(|sc| {
        for t in 0..THREADS {
            let barrier = &barrier;
            sc.spawn(move || {
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
/// allocations alone. A fifth level panics, and leaves the thread able to open scopes.
#[test]
fn nested_scopes_and_their_limit() {
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
    let too_deep =
        catch_unwind(|| A.scope(|_| A.scope(|_| A.scope(|_| A.scope(|_| A.scope(|_| ()))))));
    let msg = too_deep.unwrap_err();
    let msg = msg.downcast_ref::<String>().unwrap();
    assert!(msg.contains("more than 4 scopes"), "{msg}");
    assert_eq!(A.scope(|f| patterned_in(f, 10).len()), 10);
}

/// A panic inside a scope releases it on the way out (the collections are dropped first)
/// and closes its depth: the next scope on the thread is at depth 1 again.
#[test]
fn a_panicking_scope_is_released() {
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

/// Two threads' scopes at the same depth (the same hidden class), each with a large
/// allocation: the first to end must unmap only its own, not the other's live one (the
/// large table drains by class, so it tells the threads apart).
#[test]
fn a_scope_leaves_another_threads_large_allocations_alone() {
    let (made, ended) = (Barrier::new(2), Barrier::new(2));
    thread::scope(|sc| {
        sc.spawn(|| {
            A.scope(|frame| {
                let v = patterned_in(frame, 100_000);
                made.wait();
                assert!(intact(&v));
            });
            ended.wait();
        });
        sc.spawn(|| {
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
