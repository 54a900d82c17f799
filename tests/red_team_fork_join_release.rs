//! RED-70's fix under `release_class` and `compact` (RED-78: session 17's fix took every
//! join's heap over in the child as a dead thread's, and this failed every run): the child
//! repairs every join's heap in place, which stays the join's (`heap_handover::fork_join`).
//! The objects a join allocated before the fork stay live in the child, and a join that
//! has not been left is no exited thread's:
//! the child's `release_class` of their class must leave them alone (as the parent's does),
//! and nothing the child allocates afterwards may overlap them.

use cohort::Cohort;
use test_support::raw_thread;
use test_support::{apart_and_whole, fill, fork_children, say};

cohort::lifetime_classes! { enum Life { A, B } }

const SIZES: [usize; 3] = [16, 64, 1000];

/// Allocates `n` objects of class A through the instance (the calling thread's heap).
fn more(a: &Cohort<Life>, n: usize) -> Vec<(usize, usize)> {
    // SAFETY: the instance's malloc.
    unsafe { fill(n, &SIZES, 0, |s| a.malloc(s, Life::A)) }.expect("memory")
}

/// `release_class(A)` (the calling thread's
/// and exited threads' small objects of A; `j`'s are a live join's), then allocates 20 000
/// more and checks `j`'s objects are apart from them and whole. 0 when all is well.
fn release_then_check(
    a: &Cohort<Life>,
    joined: &[(usize, usize)],
    mine: &[(usize, usize)],
    tag: &str,
) -> i32 {
    let _ = mine;
    // SAFETY: nothing of A made by this thread is used after this (its objects `mine` are
    // dropped), and no other thread uses A; `joined` are a live join's.
    let r = unsafe { a.release_class(Life::A) };
    let fresh = more(a, 20000);
    let mut all: Vec<_> = joined.iter().chain(&fresh).copied().collect();
    // SAFETY: live objects of ours.
    let status = unsafe { apart_and_whole(&mut all) };
    if status != 0 {
        say(&format!(
            "{tag}: released {} slots; a join's objects overlapped or changed: status {status}\n",
            r.slots
        ));
    }
    status
}

#[test]
fn the_parents_release_class_leaves_a_live_joins_objects() {
    let a: Cohort<Life> = Cohort::new();
    let j = a.join(1).unwrap();
    // SAFETY: the join's malloc.
    let joined = unsafe { fill(600, &SIZES, 0, |s| j.malloc(s, Life::A)) }.unwrap();
    let mine = more(&a, 600);
    assert_eq!(release_then_check(&a, &joined, &mine, "parent"), 0);
    // SAFETY: no other thread uses `a`.
    unsafe { a.verify() }.unwrap();
    drop(j);
}

#[test]
fn a_fork_childs_release_class_leaves_a_live_joins_objects() {
    let a: &'static Cohort<Life> = Box::leak(Box::new(Cohort::new()));
    let j = a.join(1).unwrap();
    // SAFETY: the join's malloc.
    let joined = unsafe { fill(600, &SIZES, 0, |s| j.malloc(s, Life::A)) }.unwrap();
    let mine = more(a, 600);
    let bad = fork_children(5, 60, |round| {
        // The child goes on with the join first in rounds 1 and 2.
        if round > 0 {
            // SAFETY: the join's malloc and free.
            let p = j.malloc(64, Life::B);
            unsafe { j.free(p, 64, Life::B) };
        }
        if round == 2 {
            a.compact();
        }
        if round == 3 {
            // Another join of the group, made and left.
            let other = a.join(1).unwrap();
            let p = other.malloc(64, Life::B);
            // SAFETY: allocated just above.
            unsafe { other.free(p, 64, Life::B) };
            other.leave();
        }
        if round == 4 {
            // A thread of the child comes and goes.
            raw_thread::spawn(move || {
                let p = a.malloc(64, Life::B);
                // SAFETY: allocated just above.
                unsafe { a.free(p, 64, Life::B) };
            })
            .join()
            .unwrap();
        }
        let status = release_then_check(a, &joined, &mine, &format!("child {round}"));
        if status != 0 {
            return status;
        }
        // SAFETY: the child's only thread.
        match unsafe { a.verify() } {
            Ok(_) => 0,
            Err(e) => {
                say(&format!("child {round}: verify: {e}\n"));
                3
            }
        }
    });
    assert!(bad.is_empty(), "fork children failed: statuses {bad:x?}");
    drop(j);
}

/// Joins dropped in the child before any call there (their heaps are not theirs to leave),
/// new joins of the same group and a thread of the child: the objects the old joins made
/// before the fork stay whole until the new joins free them, nothing overlaps, and `verify`
/// passes before and after.
#[test]
fn joins_dropped_in_a_fork_child_leave_their_objects_to_the_new_ones() {
    let a: &'static Cohort<Life> = Box::leak(Box::new(Cohort::new()));
    let old: Vec<_> = (0..3).map(|g| a.join(g % 2).unwrap()).collect();
    let made: Vec<_> = old
        .iter()
        .map(|j| {
            // SAFETY: the join's malloc.
            unsafe { fill(500, &SIZES, 1, |s| j.malloc(s, Life::B)) }.unwrap()
        })
        .collect();
    let old = std::sync::Mutex::new(Some(old));
    let bad = fork_children(4, 60, |round| {
        // The copies go without a call in the child.
        drop(old.lock().unwrap().take());
        let fresh = raw_thread::scope(|s| {
            let t = s.spawn(|| more(a, 2000));
            let new: Vec<_> = (0..3).map(|g| a.join((g + round) % 2).unwrap()).collect();
            let mut out: Vec<_> = new
                .iter()
                .flat_map(|j| {
                    // SAFETY: the join's malloc.
                    unsafe { fill(1500, &SIZES, 2, |s| j.malloc(s, Life::B)) }.unwrap()
                })
                .collect();
            out.extend(t.join().unwrap());
            let mut all: Vec<_> = out.iter().chain(made.iter().flatten()).copied().collect();
            // SAFETY: live objects of ours.
            let status = unsafe { apart_and_whole(&mut all) };
            // The old joins' objects, freed through the new ones.
            for (k, objects) in made.iter().enumerate() {
                for &(p, size) in objects {
                    // SAFETY: live, made with this size and class before the fork.
                    unsafe { new[k].free(p as *mut u8, size, Life::B) };
                }
            }
            (status, out)
        });
        if fresh.0 != 0 {
            say(&format!(
                "child {round}: overlap or changed bytes: {}\n",
                fresh.0
            ));
            return fresh.0;
        }
        let mut out = fresh.1;
        // SAFETY: live objects of ours.
        let status = unsafe { apart_and_whole(&mut out) };
        if status != 0 {
            return 10 + status;
        }
        // SAFETY: the child's other threads have ended.
        match unsafe { a.verify() } {
            Ok(_) => 0,
            Err(e) => {
                say(&format!("child {round}: verify: {e}\n"));
                3
            }
        }
    });
    assert!(bad.is_empty(), "fork children failed: statuses {bad:x?}");
}
