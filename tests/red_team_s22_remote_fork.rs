//! Red-team attacks of session 22 on remote frees across a fork: thread T makes objects,
//! the main thread M frees half of them (remote frees, some pending in M's batch: the
//! chain's first is M's last free of its block) and forks. The child, whose only thread is
//! M's copy (T's heap has no thread there), frees the rest (the quick way into chains of
//! its copy of M's batch, into blocks of a heap no thread holds), and frees again what M
//! freed last before the fork and what it freed last itself: both reported, nothing
//! changed. Then the child hands out fresh objects (none twice, every pattern whole),
//! verifies and is empty; so is the parent, which does the same. A private instance, a
//! fixed region, private memory formatted as a region. In a shared-anonymous region the
//! child's frees are the parent's: the parent, after the child, finds every object of T
//! freed once. And a child without the thread whose batch holds frees pending must end
//! empty. A test that found a defect is `#[ignore]`d with its number (RED-n) and the exact
//! failure.

mod red_team_common;
mod red_team_s22_common;

use cohort::{set_misuse_hook, Cohort, RegionOptions};
use red_team_common::*;
use red_team_s22_common::*;
use std::sync::{mpsc, Mutex};

cohort::lifetime_classes! {
    enum Life { A, B }
}

/// The hook is one per process: the tests take turns.
static TURN: Mutex<()> = Mutex::new(());

const SIZES: [usize; 6] = [16, 48, 256, 1000, 4000, 20_000];

fn free(a: &Cohort<Life>, o: Object, what: &str) {
    unmake(a, o, Life::A, what);
}

fn again(a: &Cohort<Life>, o: Object, what: &str) {
    double_free_reported(a, o, Life::A, what);
}

/// The last object of each size in `freed` (the slot freed last into its block: the
/// chain's first, or the remote list's).
fn last_of_each_size(freed: &[Object]) -> Vec<Object> {
    SIZES
        .iter()
        .filter_map(|&n| freed.iter().rev().find(|o| o.1 == n).copied())
        .collect()
}

/// The instance after every object was freed: fresh objects are handed out once each and
/// keep their patterns; it verifies and is empty.
fn whole_after(a: &Cohort<Life>, what: &str) {
    fresh_objects_once(a, &SIZES, 2000, Life::A, what);
    // SAFETY: no other thread of this process uses the instance now.
    if let Err(e) = unsafe { a.verify() } {
        panic!("{what}: verify: {e}");
    }
    assert!(a.is_empty(), "{what}: not empty: {:?}", a.stats());
}

/// T's objects freed by M before and after a fork, in both processes (see the module docs);
/// `rounds` forks, each with fresh objects.
fn frees_across_a_fork(a: &Cohort<Life>, name: &str, rounds: usize) {
    let report = Report::new();
    for round in 0..rounds {
        let what = format!("{name}, round {round}");
        let (objects_out, objects) = mpsc::channel::<Vec<Object>>();
        let (finish, finish_in) = mpsc::channel::<()>();
        let t_what = format!("{what}, T");
        std::thread::scope(|s| {
            s.spawn(move || {
                // T: its objects, then one of class B it keeps live until the end (its
                // heap stays in use meanwhile).
                let made: Vec<Object> = (0..600)
                    .map(|i| {
                        make(
                            a,
                            SIZES[(i + round) % SIZES.len()],
                            Life::A,
                            i as u8,
                            &t_what,
                        )
                    })
                    .collect();
                let kept = a.malloc(64, Life::B);
                objects_out.send(made).expect("send");
                finish_in.recv().expect("finish");
                // SAFETY: allocated above, class B, freed once.
                unsafe { a.free(kept, 64, Life::B) };
            });
            let made = objects.recv().expect("T's objects");
            let (before, after) = made.split_at(made.len() / 2);
            // M's own heap, with a live object (the fork's child keeps it).
            let mine = make(a, 100, Life::A, 1, &what);
            for &o in before {
                free(a, o, &what);
            }
            let last_before = last_of_each_size(before);
            let child = in_child_reporting(30, &report, || {
                let what = format!("{what}, child");
                for &o in &last_before {
                    again(a, o, &format!("{what}, M's last free before"));
                }
                for &o in after {
                    free(a, o, &what);
                }
                for o in last_of_each_size(after) {
                    again(a, o, &format!("{what}, the child's last free"));
                }
                free(a, mine, &what);
                // T's heap has no thread here, and holds its object of class B.
                assert!(!a.is_empty(), "{what}: T's object of class B is live");
                whole_after_but_one(a, &what);
            });
            wait_ok(child, &report, &what);
            // The parent: the same frees, its batch as the fork left it.
            for &o in &last_before {
                again(a, o, &format!("{what}, parent, M's last free before"));
            }
            for &o in after {
                free(a, o, &what);
            }
            for o in last_of_each_size(after) {
                again(a, o, &format!("{what}, parent, M's last free"));
            }
            free(a, mine, &what);
            finish.send(()).expect("finish");
        });
        whole_after(a, &format!("{what}, parent"));
    }
}

/// As [`whole_after`], with T's object of class B live.
fn whole_after_but_one(a: &Cohort<Life>, what: &str) {
    fresh_objects_once(a, &SIZES, 2000, Life::A, what);
    // SAFETY: the child's only thread.
    if let Err(e) = unsafe { a.verify() } {
        panic!("{what}: verify: {e}");
    }
    let s = a.stats();
    assert_eq!(
        (s.small.live, s.medium_allocations, s.large_allocations),
        (1, 0, 0),
        "{what}: live objects, wanted T's of class B only: {s:?}"
    );
}

#[test]
fn a_fork_child_frees_another_threads_objects_remotely_and_double_frees_are_reported() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let before = set_misuse_hook(Some(raise));
    frees_across_a_fork(&Cohort::<Life>::new(), "private", 8);
    set_misuse_hook(before);
}

#[test]
fn a_fork_child_frees_another_threads_objects_remotely_in_private_regions() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let capacity = 64 << 20;
    let options = RegionOptions::new(capacity);
    let fixed = Cohort::<Life>::with_options(&options).expect("fixed");
    let f = Cohort::<Life>::footprint(capacity).expect("footprint");
    let mem = aligned_anonymous(f.bytes, f.align, false);
    // SAFETY: ours, unused, mapped for the process's life.
    let formatted = unsafe { Cohort::<Life>::format_in(mem, f.bytes, &options) }.expect("format");
    let before = set_misuse_hook(Some(raise));
    frees_across_a_fork(&fixed, "fixed", 4);
    frees_across_a_fork(&formatted, "formatted", 4);
    set_misuse_hook(before);
}

/// A shared-anonymous region: thread T of the parent makes objects, the child frees them
/// all (remote frees into the blocks of a heap of another process: pushed at once), and
/// frees again the last of each size (reported). The parent then finds them freed: T's
/// blocks' remote lists hold them, a double free of the last is reported, fresh objects
/// are handed out once each, and the region verifies and is empty.
#[test]
fn a_fork_child_frees_the_parents_objects_in_a_shared_region() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let a = Cohort::<Life>::shared_anonymous(64 << 20).expect("shared anonymous");
    let before = set_misuse_hook(Some(raise));
    let report = Report::new();
    for round in 0..6 {
        let what = format!("shared, round {round}");
        let made: Vec<Object> = std::thread::scope(|s| {
            s.spawn(|| {
                (0..600)
                    .map(|i| {
                        make(
                            &a,
                            SIZES[(i + round) % SIZES.len()],
                            Life::A,
                            i as u8,
                            &what,
                        )
                    })
                    .collect()
            })
            .join()
            .expect("T")
        });
        let child = in_child_reporting(30, &report, || {
            let what = format!("{what}, child");
            for &o in &made {
                free(&a, o, &what);
            }
            for o in last_of_each_size(&made) {
                again(&a, o, &what);
            }
        });
        wait_ok(child, &report, &what);
        for o in last_of_each_size(&made) {
            again(&a, o, &format!("{what}, parent"));
        }
        whole_after(&a, &what);
    }
    set_misuse_hook(before);
}

/// Thread T makes objects; thread F frees half of them (pending in F's batch, F waiting)
/// and the main thread M forks. The child has neither T nor F: M frees the other half,
/// then the child must end empty and whole (F's pending frees pushed by its flushes, none
/// lost: no slot stays counted in use) and hand out fresh objects once each. The parent,
/// once F and T have exited, the same.
#[test]
fn a_fork_child_ends_empty_with_frees_pending_in_a_thread_it_does_not_have() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let report = Report::new();
    for (a, name) in [
        (Cohort::<Life>::new(), "private"),
        (
            Cohort::<Life>::with_options(&RegionOptions::new(64 << 20)).expect("fixed"),
            "fixed",
        ),
    ] {
        for round in 0..4 {
            let what = format!("{name}, round {round}");
            let a = &a;
            let made: Vec<Object> = std::thread::scope(|s| {
                s.spawn(|| {
                    (0..600)
                        .map(|i| make(a, SIZES[(i + round) % SIZES.len()], Life::A, i as u8, &what))
                        .collect()
                })
                .join()
                .expect("T")
            });
            let (theirs, ours) = made.split_at(made.len() / 2);
            let (freed_tx, freed) = mpsc::channel::<()>();
            let (go_tx, go) = mpsc::channel::<()>();
            std::thread::scope(|s| {
                let what_f = &what;
                s.spawn(move || {
                    for &o in theirs {
                        free(a, o, what_f);
                    }
                    freed_tx.send(()).expect("main");
                    go.recv().expect("main");
                });
                freed.recv().expect("F");
                let child = in_child_reporting(30, &report, || {
                    let what = format!("{what}, child");
                    for &o in ours {
                        free(a, o, &what);
                    }
                    whole_after(a, &what);
                });
                wait_ok(child, &report, &what);
                go_tx.send(()).expect("F");
            });
            for &o in ours {
                free(a, o, &what);
            }
            whole_after(a, &format!("{what}, parent"));
        }
    }
}
