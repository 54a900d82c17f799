//! Red-team attacks of session 13 on medium buffers populated by evidence (a plain
//! request's clean pages faulted in at allocation while freed probes of the same kind of
//! buffer showed the program writes them whole): a program whose use of one kind changes,
//! dense first and sparse after, in the same lifetime class, must not pay the sparse
//! buffers' whole size in resident memory past the populate's credit (`live / 32 + 8 MiB`
//! a kind). A test that found a defect is `#[ignore]`d with its number (RED-n), its owner
//! and the exact failure. The tests of this file take turns (resident sizes are
//! process-wide).

use cohort::{Cohort, Retention};
use std::time::Duration;
use test_support::{rss, serial};

cohort::lifetime_classes! { enum Life { A } }

const MIB: usize = 1 << 20;
const SIZE: usize = 900 << 10;

/// `rounds` buffers of `SIZE` written whole and freed, by this thread or (`elsewhere`) by
/// another; then 200 long-lived buffers of the same size and class, written in their first
/// byte only. Returns the resident growth of the second phase.
fn dense_then_sparse(delay: Option<Duration>, rounds: usize, elsewhere: bool) -> usize {
    let _serial = serial();
    let a = Cohort::<Life>::new();
    if let Some(delay) = delay {
        a.set_retention(Retention {
            delay,
            ..Retention::DEFAULT
        });
    }
    for _ in 0..rounds {
        let p = a.malloc(SIZE, Life::A);
        assert!(!p.is_null());
        // SAFETY: a live allocation of SIZE bytes, written whole.
        unsafe { p.write_bytes(3, SIZE) };
        let s = p as usize;
        let free = |s: usize| {
            // SAFETY: live, freed once.
            unsafe { a.free(s as *mut u8, SIZE, Life::A) }
        };
        if elsewhere {
            std::thread::scope(|t| {
                t.spawn(|| free(s));
            });
        } else {
            free(s);
        }
    }
    let before = rss();
    let long: Vec<*mut u8> = (0..200)
        .map(|_| {
            let p = a.malloc(SIZE, Life::A);
            assert!(!p.is_null());
            // SAFETY: a live allocation of SIZE bytes.
            unsafe { p.write(1) };
            p
        })
        .collect();
    let grown = rss().saturating_sub(before);
    for p in long {
        // SAFETY: live, freed once.
        unsafe { a.free(p, SIZE, Life::A) };
    }
    grown
}

fn check(grown: usize, what: &str) {
    assert!(
        grown <= 40 * MIB,
        "200 medium buffers of 900 KiB written in one byte each, after {what}, made {} MiB \
         resident",
        grown / MIB
    );
}

#[test]
fn sparse_buffers_after_dense_ones_of_the_same_class_stay_mostly_unresident() {
    check(
        dense_then_sparse(None, 100, false),
        "100 of the same class written whole and freed",
    );
}

#[test]
fn sparse_buffers_after_dense_ones_of_the_same_class_stay_mostly_unresident_with_no_delay() {
    check(
        dense_then_sparse(Some(Duration::ZERO), 100, false),
        "100 of the same class written whole and freed (no decay delay)",
    );
}

#[test]
fn sparse_buffers_after_dense_ones_freed_by_another_thread_stay_mostly_unresident() {
    check(
        dense_then_sparse(Some(Duration::ZERO), 100, true),
        "100 of the same class written whole and freed by another thread (no decay delay)",
    );
}
