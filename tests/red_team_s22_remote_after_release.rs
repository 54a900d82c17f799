//! Red-team attack of session 22 on the every-build check of a double free of the slot
//! freed last onto a block's cross-thread list, after the block was emptied in place by
//! `release_class` or by the idle look. Thread F frees every object of the block the main
//! thread O made (remote frees: the last one, `x`, is the first of F's chain, or of the
//! block's remote list once pushed) and waits; O releases the class (F's chain pushed
//! first, the block emptied in place, as RED-62's sibling keeps the owner's list's first),
//! or takes slow paths of another class with no decay delay until the idle look resets the
//! block; then F frees `x` again. The README
//! promises a report in every build for the slot freed last onto the list the free would
//! push it on (for another thread's free, the block's cross-thread list or the owner's);
//! unreported, `x` is on the emptied block's remote list while its bump window holds it
//! too: handed out twice. A test that found a defect is `#[ignore]`d with its number
//! (RED-n) and the exact failure.

mod red_team_s22_common;

use cohort::{set_misuse_hook, Cohort, Misuse, Problem};
use red_team_s22_common::{double_free_verdict, make, raise, unmake, without_decay_delay, Object};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;

cohort::lifetime_classes! {
    enum Life { A, B }
}

/// How O empties the block in place.
#[derive(Clone, Copy, Debug)]
enum Emptied {
    /// `release_class`.
    Release,
    /// The idle look of O's slow paths of another class (no decay delay), 200 rounds.
    Idle,
}

/// Frees of O's own among F's (the block's local list then holds slots too).
#[derive(Clone, Copy, Debug, PartialEq)]
enum OwnerFrees {
    /// None: F frees every object.
    None,
    /// O frees the first 5 objects before F frees the others.
    Before,
    /// O frees the first 5 objects after F freed the others (before the block is emptied).
    After,
}

/// One case: `n` objects of `size`; `pushed`: F pushes its chain itself (`stats`) before
/// the block is emptied. The failure, if any, with how often `x` was handed out among the
/// objects made after.
fn case(size: usize, n: usize, pushed: bool, emptied: Emptied) -> Result<(), String> {
    case_with(size, n, pushed, emptied, OwnerFrees::None, false)
}

/// [`case`], O freeing objects of its own as `owner` says, in a shared-anonymous region
/// (`shared`: remote frees pushed at once) or a private instance.
fn case_with(
    size: usize,
    n: usize,
    pushed: bool,
    emptied: Emptied,
    owner: OwnerFrees,
    shared: bool,
) -> Result<(), String> {
    let what = format!(
        "size {size}, {n} objects, chain pushed before {emptied:?}: {pushed}, O's frees: \
         {owner:?}, shared: {shared}"
    );
    let a = without_decay_delay::<Life>(shared);
    let all: Vec<Object> = (0..n)
        .map(|i| make(&a, size, Life::A, i as u8, &what))
        .collect();
    let x = all[n - 1];
    let (os, objects) = all.split_at(if owner == OwnerFrees::None { 0 } else { 5 });
    if owner == OwnerFrees::Before {
        os.iter().for_each(|&o| unmake(&a, o, Life::A, &what));
    }
    let (freed_tx, freed) = mpsc::channel::<()>();
    let (released_tx, released) = mpsc::channel::<()>();
    let caught: Option<Misuse> = std::thread::scope(|s| {
        let (a, objects, what) = (&a, objects, &what);
        let f = s.spawn(move || {
            let mine = a.malloc(24, Life::B);
            for &o in objects {
                unmake(a, o, Life::A, what);
            }
            if pushed {
                let _ = a.stats();
            }
            freed_tx.send(()).expect("main");
            released.recv().expect("main");
            let before = set_misuse_hook(Some(raise));
            // SAFETY: deliberately a double free of the slot F freed last.
            let twice = catch_unwind(AssertUnwindSafe(|| unsafe {
                a.free(x.0 as *mut u8, size, Life::A)
            }));
            set_misuse_hook(before);
            // SAFETY: allocated above, freed once.
            unsafe { a.free(mine, 24, Life::B) };
            twice
                .err()
                .map(|e| *e.downcast::<Misuse>().expect("the hook's Misuse"))
        });
        freed.recv().expect("F");
        if owner == OwnerFrees::After {
            os.iter().for_each(|&o| unmake(a, o, Life::A, what));
        }
        match emptied {
            Emptied::Release => {
                // SAFETY: every object of A is dead (F's frees returned), nobody uses A
                // meanwhile.
                let _ = unsafe { a.release_class(Life::A) };
            }
            Emptied::Idle => {
                for _ in 0..200 {
                    let other: Vec<Object> = (0..300)
                        .map(|i| make(a, 1000, Life::B, i as u8, what))
                        .collect();
                    other.into_iter().for_each(|o| unmake(a, o, Life::B, what));
                }
            }
        }
        released_tx.send(()).expect("F");
        f.join().expect("F")
    });
    // Reported: the instance is whole after. Unreported: the block hands `x` out again
    // from its bump window and from its remote list.
    if caught
        .as_ref()
        .is_some_and(|m| m.ptr == x.0 && m.problem == Problem::DoubleFree)
    {
        whole_after(&a, size, n, &what)?;
    }
    double_free_verdict(a, (x.0, size), Life::A, n, caught, &what)
}

/// After the reported double free, the instance is whole: `verify` passes (the block keeps
/// the slots freed last until its next allocation), and `n` objects made again (`x` among
/// them: the block's first allocation forgot the kept slots) are freed by another thread
/// with no report, after which the instance verifies and is empty.
fn whole_after(a: &Cohort<Life>, size: usize, n: usize, what: &str) -> Result<(), String> {
    let verify = |when: &str| {
        // SAFETY: no other thread uses `a` now.
        unsafe { a.verify() }
            .map(drop)
            .map_err(|e| format!("{what}: verify {when}: {e}"))
    };
    verify("after the report")?;
    let again: Vec<Object> = (0..n)
        .map(|i| make(a, size, Life::A, i as u8, what))
        .collect();
    let before = set_misuse_hook(Some(raise));
    let freed = std::thread::scope(|s| {
        s.spawn(|| {
            catch_unwind(AssertUnwindSafe(|| {
                again.iter().for_each(|&o| unmake(a, o, Life::A, what))
            }))
        })
        .join()
        .expect("the freeing thread")
    });
    set_misuse_hook(before);
    if let Err(e) = freed {
        return Err(match e.downcast::<Misuse>() {
            Ok(m) => format!("{what}: a free of an object made again was reported: {m}"),
            Err(_) => format!("{what}: the frees of the objects made again panicked"),
        });
    }
    verify("after the objects made again were freed")?;
    match a.is_empty() {
        true => Ok(()),
        false => Err(format!("{what}: not empty at the end")),
    }
}

/// RED-131 (every build without checked mode: the reset of a block emptied in place,
/// src/block.rs `KEPT_FREED`, with the remote paths' double-free checks): after a release
/// empties the block in place, the slot another thread freed last onto its cross-thread
/// list is on no list, so that thread's double free of it passes unreported, and the slot
/// is handed out twice. Fails on lead 9356bc8 and 25fb9a6, and before the remote free's
/// change (7a08554), release-tests: all 8 cases, e.g. `size 64, 10 objects, chain pushed
/// before Release: false: the double free of 0x7ef078000280 was not reported; handed out 2
/// times among the next 134400 objects (all live)`. A debug build reports it (checked
/// mode). Fixed: the reset keeps the remote list's first slot when the local list is empty
/// (as RED-62's fix keeps the local list's) until the block's next allocation.
#[test]
fn a_remote_double_free_of_the_remote_lists_first_after_a_release_is_reported() {
    assert_eq!(
        failures(&[false, true], Emptied::Release),
        Vec::<String>::new()
    );
}

/// RED-131's sibling on the idle look's reset: there F's chain must have been pushed
/// before (a pending slot keeps the block in use), and the idle look collects the remote
/// list before it resets the block. Fails on lead 25fb9a6, release-tests: 3 of the 4
/// cases, e.g. `size 1000, 10 objects, chain pushed before Idle: true: the double free of
/// 0x7ca766002800 was not reported; handed out 2 times among the next 8600 objects (all
/// live)`. A debug build reports it. Fixed with RED-131.
#[test]
fn a_remote_double_free_of_the_remote_lists_first_after_an_idle_reset_is_reported() {
    assert_eq!(failures(&[true], Emptied::Idle), Vec::<String>::new());
}

/// The failures of the cases of sizes 64 and 1000, 10 and 300 objects, with F's chain
/// pushed before or not as `pushed` lists.
fn failures(pushed: &[bool], emptied: Emptied) -> Vec<String> {
    let mut failures = Vec::new();
    for size in [64usize, 1000] {
        for n in [10usize, 300] {
            for &pushed in pushed {
                if let Err(e) = case(size, n, pushed, emptied) {
                    failures.push(e);
                }
            }
        }
    }
    failures
}

/// RED-132 (RED-131's fix, `Header::reset` in src/block/life.rs, keeps the remote list's
/// first only when the local list is empty): here O freed objects of its own too (before
/// F's frees, or after), so the reset keeps the local list's first, and F's double free of
/// the slot it freed last onto the remote list passes unreported. A private instance and a
/// shared-anonymous region (remote frees pushed at once). Fails on main cc9ee23,
/// release-tests: 28 of the 32 cases (all but the private idle look's with the chain
/// pending), e.g. `size 64, 300 objects, chain pushed before Idle: true, O's frees: Before,
/// shared: false: the double free of 0x7d436a404b00 was not reported; handed out 2 times
/// among the next 134400 objects (all live)` (the release cases saw it once among theirs).
/// A debug build reports it. Fixed: the reset keeps both firsts, the local list's in
/// `local` and the remote list's in the remote word (a kept first, of count 0), until the
/// block's next allocation. The 32 cases in four tests (private or shared, emptied by a
/// release or the idle look), which the harness runs side by side: one test of them all
/// took 50 s of a debug run alone.
#[test]
fn a_remote_double_free_after_a_release_is_reported_when_the_owner_freed_some_too() {
    assert_eq!(
        owner_freed_some_too(false, Emptied::Release),
        Vec::<String>::new()
    );
}

/// RED-132's cases in a private instance emptied by the idle look.
#[test]
fn a_remote_double_free_after_an_idle_reset_is_reported_when_the_owner_freed_some_too() {
    assert_eq!(
        owner_freed_some_too(false, Emptied::Idle),
        Vec::<String>::new()
    );
}

/// RED-132's cases in a shared-anonymous region emptied by a release.
#[test]
fn a_remote_double_free_after_a_release_in_a_shared_region_is_reported_when_the_owner_freed_some_too(
) {
    assert_eq!(
        owner_freed_some_too(true, Emptied::Release),
        Vec::<String>::new()
    );
}

/// RED-132's cases in a shared-anonymous region emptied by the idle look.
#[test]
fn a_remote_double_free_after_an_idle_reset_in_a_shared_region_is_reported_when_the_owner_freed_some_too(
) {
    assert_eq!(
        owner_freed_some_too(true, Emptied::Idle),
        Vec::<String>::new()
    );
}

/// The failures of RED-132's cases in a shared region or not, emptied as `emptied` says:
/// O frees 5 objects before F's frees or after, of sizes 64 and 1000, 300 objects, F's
/// chain pushed before or not.
fn owner_freed_some_too(shared: bool, emptied: Emptied) -> Vec<String> {
    let mut failures = Vec::new();
    for owner in [OwnerFrees::Before, OwnerFrees::After] {
        for size in [64usize, 1000] {
            for pushed in [false, true] {
                if let Err(e) = case_with(size, 300, pushed, emptied, owner, shared) {
                    failures.push(e);
                }
            }
        }
    }
    failures
}
