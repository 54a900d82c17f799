//! The tests' own waits end when what they wait for can no longer come: a helper thread
//! that loops until a flag is stopped by a guard however its test ends, a wait for helper
//! threads' progress gives up once they have ended, and a wait to kill a child that ended
//! first fails at once. Each of these waited for ever before (a failed test hung instead
//! of failing, and a hung test binary never says what failed).

mod common;

use common::processes::{in_child, kill_after, kill_once_set};
use common::{yield_until, StopOnDrop};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The message of the panic `f` must end in.
fn panic_of(f: impl FnOnce()) -> String {
    let err = catch_unwind(AssertUnwindSafe(f)).expect_err("the wait returned");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn a_helper_that_loops_until_its_flag_is_stopped_when_the_test_panics() {
    let stop = AtomicBool::new(false);
    let rounds = AtomicU64::new(0);
    let message = panic_of(|| {
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    rounds.fetch_add(1, Ordering::Relaxed);
                    std::thread::yield_now();
                }
            });
            let _stop = StopOnDrop(&stop);
            while rounds.load(Ordering::Relaxed) < 10 {
                std::thread::yield_now();
            }
            panic!("a failed check of the test");
        })
    });
    assert_eq!(message, "a failed check of the test");
    assert!(stop.load(Ordering::Relaxed));
}

#[test]
fn a_wait_for_progress_fails_once_the_threads_that_make_it_have_ended() {
    let progress = AtomicU64::new(0);
    let message = panic_of(|| {
        std::thread::scope(|s| {
            let helper = s.spawn(|| {
                progress.fetch_add(1, Ordering::Relaxed);
                // A helper's failed check: it never gets to 2.
            });
            yield_until(
                "the helper's second step",
                || progress.load(Ordering::Relaxed) >= 2,
                || helper.is_finished(),
            );
        })
    });
    assert!(
        message.starts_with("the helper's second step: a thread this progress needs ended"),
        "{message}"
    );
    // Progress made before the end is seen.
    std::thread::scope(|s| {
        let helper = s.spawn(|| progress.store(5, Ordering::Relaxed));
        yield_until(
            "the helper's fifth step",
            || progress.load(Ordering::Relaxed) >= 5,
            || helper.is_finished(),
        );
    });
}

#[test]
fn a_kill_after_steps_fails_when_the_victim_ended_first() {
    let progress = AtomicU64::new(0);
    // Exits at once (as a failed child does), before any step.
    let victim = in_child(30, || {});
    let message = panic_of(|| kill_after(victim, &progress, 10, "the victim of this test"));
    assert!(
        message.starts_with("the victim of this test: the victim ended at step 0 of 10"),
        "{message}"
    );
}

#[test]
fn a_kill_once_set_fails_when_the_child_ended_first() {
    let flag = AtomicU64::new(0);
    let child = in_child(30, || panic!("a failed check of the child"));
    let message = panic_of(|| kill_once_set(child, &flag));
    assert!(
        message.starts_with("the child: the victim ended before it set its flag"),
        "{message}"
    );
    assert!(message.contains("status 0x100"), "exit code 1: {message}");
}
