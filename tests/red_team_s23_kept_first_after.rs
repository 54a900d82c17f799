//! Red-team attack of session 23 on the firsts a block emptied in place keeps (RED-132's
//! fix: the local list's first on the local list, the remote list's as a kept first of
//! count 0 in the remote word), by what comes between the reset and the block's next
//! allocation. Thread O makes `n` objects of class A; the test's thread F frees all but
//! the first 5 (its chain pushed: `x`, its last, is the remote list's first), O frees the
//! first 5 (`y`, its last, the local list's first) and empties the block in place (its
//! idle look, or `release_class`); then O does one thing of [`After`] and F's `try_free`
//! of `x` and of `y` must be refused (naming the pointer and size; nothing changed), and
//! `verify` must pass (but after the misuse, whose slot it names); then fresh objects must
//! be handed out once each (for [`After::Misuse`] all but the misused slot). In a private instance and a shared-anonymous region. A
//! guard of firsts' e341511 (merged on this branch): passes there, release-tests and
//! debug; on main 23df1ec, before it, release-tests fails with `x`'s try_free accepted.

mod red_team_s22_common;

use cohort::{set_misuse_hook, Cohort};
use red_team_s22_common::{make, raise, unmake, without_decay_delay, Object};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;

cohort::lifetime_classes! {
    enum Life { A, B }
}

/// How O empties the block in place.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Emptied {
    Idle,
    Release,
}

/// What O (or F) does between the reset and the block's next allocation.
#[derive(Clone, Copy, Debug, PartialEq)]
enum After {
    Nothing,
    /// `stats`, `is_empty`, `for_each_block` and `verify` (which must pass).
    Reads,
    /// Its idle look again.
    IdleAgain,
    /// `release_class` of A again (a private instance).
    ReleaseAgain,
    /// F frees the block's second slot again (neither first: a double free the release
    /// checks do not promise to see), pushed onto the kept first: that slot is then the
    /// remote list's first, refused again, and the only one that may be handed out twice.
    Misuse,
    /// O exits (its heap handed to the pool).
    Exit,
}

/// O's idle look: slow paths of class B with no decay delay (20 rounds of 300 objects).
fn churn(a: &Cohort<Life>, what: &str) {
    for _ in 0..20 {
        let other: Vec<Object> = (0..300)
            .map(|i| make(a, 1000, Life::B, i as u8, what))
            .collect();
        other.into_iter().for_each(|o| unmake(a, o, Life::B, what));
    }
}

/// One case; its failure, if any.
fn case(size: usize, emptied: Emptied, after: After, shared: bool) -> Result<(), String> {
    let n = 300;
    let what = format!("size {size}, {emptied:?}, then {after:?}, shared: {shared}");
    let a = without_decay_delay::<Life>(shared);
    let (made_tx, made) = mpsc::channel::<Vec<Object>>();
    let (freed_tx, freed) = mpsc::channel::<()>();
    let (done_tx, done) = mpsc::channel::<()>();
    let (checked_tx, checked) = mpsc::channel::<()>();
    let failure = std::thread::scope(|s| {
        let (a, what) = (&a, &what);
        let mut o = Some(s.spawn(move || {
            let all: Vec<Object> = (0..n)
                .map(|i| make(a, size, Life::A, i as u8, what))
                .collect();
            made_tx.send(all.clone()).expect("F");
            freed.recv().expect("F");
            all[..5].iter().for_each(|&o| unmake(a, o, Life::A, what));
            match emptied {
                Emptied::Idle => churn(a, what),
                // SAFETY: every object of A is dead; nobody uses A meanwhile.
                Emptied::Release => drop(unsafe { a.release_class(Life::A) }),
            }
            match after {
                After::Reads => {
                    let _ = a.stats();
                    let _ = a.is_empty();
                    a.for_each_block(|_| {});
                }
                After::IdleAgain => churn(a, what),
                // SAFETY: as above.
                After::ReleaseAgain => drop(unsafe { a.release_class(Life::A) }),
                _ => {}
            }
            done_tx.send(()).expect("F");
            if after != After::Exit {
                // O keeps its heap until F checked.
                checked.recv().expect("F");
            }
        }));
        let all = made.recv().expect("O");
        all[5..].iter().for_each(|&o| unmake(a, o, Life::A, what));
        let _ = a.stats();
        freed_tx.send(()).expect("O");
        done.recv().expect("O");
        if after == After::Exit {
            o.take().expect("O").join().expect("O");
        }
        // A checked build reports the misuse (nothing pushed); a release build pushes it.
        let pushed = after == After::Misuse && {
            let before = set_misuse_hook(Some(raise));
            // SAFETY: deliberately a double free of a slot neither list has first.
            let ended = catch_unwind(AssertUnwindSafe(|| unsafe {
                a.free(all[1].0 as *mut u8, size, Life::A)
            }));
            set_misuse_hook(before);
            let _ = a.stats();
            ended.is_ok()
        };
        let mut failure = None;
        // After the misuse, the slot freed last onto the remote list is the misused one.
        let remote_first = match pushed {
            true => (all[1].0, "the misused slot, F's last free"),
            false => (all[n - 1].0, "x, F's last free"),
        };
        for (slot, name) in [remote_first, (all[4].0, "y, O's last")] {
            // SAFETY: a double free, refused before anything changes (else the test fails).
            match unsafe { a.try_free(slot as *mut u8, size, Life::A) } {
                Err(m) if (m.ptr, m.size) == (slot, size) => {}
                other => {
                    failure = Some(format!("{what}: try_free of {slot:#x} ({name}): {other:?}"))
                }
            }
        }
        // SAFETY: O waits; nobody else uses the instance. (After the misuse, verify names
        // the misused slot, on the remote list past `bump`: the damage it is for.)
        if !pushed {
            if let Err(e) = unsafe { a.verify() } {
                failure.get_or_insert(format!("{what}: verify: {e:?}"));
            }
        }
        if after != After::Exit {
            checked_tx.send(()).expect("O");
            o.take().expect("O").join().expect("O");
        }
        failure.map(|f| (f, all[1].0))
    });
    if let Some((f, _)) = failure {
        std::mem::forget(a);
        return Err(f);
    }
    // Fresh objects: each handed out once (the misused slot aside).
    // Past the block's old objects (the slots `x` and `y` are among them).
    let mut fresh: Vec<usize> = (0..2 * n)
        .map(|_| a.malloc(size, Life::A) as usize)
        .collect();
    fresh.sort_unstable();
    let twice: Vec<usize> = fresh
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    let allowed = usize::from(after == After::Misuse);
    if twice.len() > allowed {
        std::mem::forget(a);
        return Err(format!("{what}: slots handed out twice: {twice:#x?}"));
    }
    std::mem::forget(a);
    Ok(())
}

#[test]
fn a_blocks_kept_firsts_are_refused_whatever_comes_before_its_next_allocation() {
    let mut failures = Vec::new();
    for shared in [false, true] {
        for size in [64usize, 1000] {
            for after in [
                After::Nothing,
                After::Reads,
                After::IdleAgain,
                After::ReleaseAgain,
                After::Misuse,
                After::Exit,
            ] {
                for emptied in [Emptied::Idle, Emptied::Release] {
                    if shared && (emptied == Emptied::Release || after == After::ReleaseAgain) {
                        continue; // refused on a shared instance
                    }
                    if let Err(e) = case(size, emptied, after, shared) {
                        failures.push(e);
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures: {failures:#?}",
        failures.len()
    );
}
