//! Fork children of a parent whose threads are inside calls of explicit joins
//! (`Cohort::join`) at the fork, RED-70's fix under load: a join handed between two threads
//! through a mutex, each freeing what the other allocated; a thread using two joins of one
//! group in turn, each freeing the other's objects, whose calls panic now and then (a
//! double free reported and caught); while the main thread forks. In each child the shared
//! join goes on when its mutex is free in the copy (no thread of the parent held it), on a
//! thread of the child, and a grandchild is forked now and then while that thread is
//! inside calls of the join. No two objects overlap, every byte stays, `verify` passes in
//! every child and grandchild, before and after all is freed. (The child's fork handler
//! repairs every join's heap in place, and the join goes on with it.)

use cohort::{Cohort, Join};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, TryLockError};
use test_support::raw_thread;
use test_support::{apart_and_whole, fork_children, say};

// Helper threads stopped however a test ends.
#[path = "common/threads.rs"]
mod threads;

cohort::lifetime_classes! { enum Life { A } }

type A = &'static Cohort<Life>;
type Objects = Vec<(usize, usize)>;

/// Forks of the parent's main thread.
const FORKS: usize = if cfg!(debug_assertions) { 8 } else { 60 };
/// Sizes: small classes, the cached medium pair.
const SIZES: [usize; 5] = [16, 64, 1000, 8192, 32768];

/// A join shared by threads (one at a time, through the mutex) and the objects allocated
/// through it, not yet freed.
struct Shared {
    join: Option<Join<'static, Life>>,
    objects: Objects,
}

/// `n` objects of [`SIZES`] in turn from `malloc`, from the `k`th size on
/// ([`test_support::fill`]); `malloc` is an allocator's, of this test's.
fn fill(n: usize, k: usize, malloc: impl Fn(usize) -> *mut u8) -> Option<Objects> {
    // SAFETY: every `malloc` of the callers allocates through a join or the instance.
    unsafe { test_support::fill(n, &SIZES, k, malloc) }
}

/// Frees `objects` through `free`.
fn free_all(objects: Objects, free: impl Fn(*mut u8, usize)) {
    for (p, size) in objects {
        free(p as *mut u8, size);
    }
}

/// 0 when `a` verifies, else `code` with the error on the standard error.
fn verified(a: A, code: i32, when: &str) -> i32 {
    // SAFETY: the calling process's other threads have ended (the callers').
    match unsafe { a.verify() } {
        Ok(_) => 0,
        Err(e) => {
            say(&format!("{when}: verify: {e:?}\n"));
            code
        }
    }
}

/// A thread of the parent: takes the shared join in turn with another, frees half the
/// objects (the other thread's among them) and allocates as many, until `stop`.
fn hand_off(a: A, shared: &Mutex<Shared>, stop: &AtomicBool) {
    let mut round = 0;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let mut s = shared.lock().unwrap();
        let Shared { join, objects } = &mut *s;
        let j = join.get_or_insert_with(|| a.join(1).expect("a join"));
        let half = objects.len() / 2;
        free_all(objects.drain(..half).collect(), |p, size| {
            // SAFETY: live objects, freed once.
            unsafe { j.free(p, size, Life::A) }
        });
        objects.extend(fill(48, round, |size| j.malloc(size, Life::A)).expect("memory"));
    }
}

/// A thread of the parent with two joins of one group: each allocates, the other frees
/// what it allocated, and now and then a free through a join is a double free, reported
/// (a panic inside the join's call) and caught; until `stop`.
fn panicking(a: A, stop: &AtomicBool) {
    let (j, k) = (a.join(2).expect("a join"), a.join(2).expect("a join"));
    let mut round = 0usize;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let mine = fill(16, round, |size| j.malloc(size, Life::A)).expect("memory");
        let theirs = fill(16, round + 1, |size| k.malloc(size, Life::A)).expect("memory");
        // SAFETY: live objects, each freed once, through the other join.
        free_all(mine, |p, size| unsafe { k.free(p, size, Life::A) });
        // SAFETY: as above.
        free_all(theirs, |p, size| unsafe { j.free(p, size, Life::A) });
        if round.is_multiple_of(8) {
            let p = j.malloc(48, Life::A);
            // SAFETY: live, freed once; the second free is the misuse, refused before it
            // changes anything (the slot is the block's first free one).
            unsafe { j.free(p, 48, Life::A) };
            // SAFETY: as above.
            let again = panic::catch_unwind(AssertUnwindSafe(|| unsafe { j.free(p, 48, Life::A) }));
            assert!(again.is_err(), "a double free through a join was taken");
        }
    }
}

/// In a fork child (or grandchild, `depth` 0): the shared join, if its mutex is free in
/// the copy, goes on on a new thread of the child (allocating, and freeing the parent's
/// objects it held), beside the forking thread's allocations through its thread heap and
/// a join of its own; with `depth` > 0, a grandchild is forked while that thread is inside
/// the join's calls. Statuses: 2, objects overlap; 3 or 8, verify failed; 4, out of
/// memory; 5, a byte changed; 6, the grandchild failed; 9, the mutex poisoned.
fn child(a: A, shared: &Mutex<Shared>, depth: u32) -> i32 {
    let (join, mut theirs) = match shared.try_lock() {
        Ok(mut s) => (s.join.take(), std::mem::take(&mut s.objects)),
        Err(TryLockError::WouldBlock) => (None, Vec::new()),
        Err(TryLockError::Poisoned(_)) => return 9,
    };
    // SAFETY: the objects the shared join's threads allocated and filled, live.
    let status = unsafe { apart_and_whole(&mut theirs) };
    if status != 0 {
        return status;
    }
    let busy = AtomicBool::new(true);
    let (joined, ours, grandchild) = raw_thread::scope(|s| {
        let t = s.spawn(|| {
            let j = join.unwrap_or_else(|| a.join(1).expect("a join"));
            // The parent's objects freed through it, and objects of its own, again and
            // again while the grandchild forks.
            free_all(theirs, |p, size| {
                // SAFETY: live objects, freed once.
                unsafe { j.free(p, size, Life::A) }
            });
            let mut out = Vec::new();
            let mut round = 0;
            while round < 8 || busy.load(Ordering::Relaxed) {
                round += 1;
                let mut got = fill(64, round, |size| j.malloc(size, Life::A))?;
                free_all(got.split_off(32), |p, size| {
                    // SAFETY: live objects, freed once.
                    unsafe { j.free(p, size, Life::A) }
                });
                out.extend(got);
            }
            Some((j, out))
        });
        let own = a.join(3).expect("a join");
        let ours = fill(300, 0, |size| own.malloc(size, Life::A))
            .zip(fill(300, 1, |size| a.malloc(size, Life::A)))
            .map(|(mut x, y)| {
                x.extend(y);
                (own, x)
            });
        let grandchild = (depth > 0).then(|| {
            let none = Mutex::new(Shared {
                join: None,
                objects: Vec::new(),
            });
            fork_children(1, 60, |_| child(a, &none, 0)).is_empty()
        });
        busy.store(false, Ordering::Relaxed);
        (t.join().ok().flatten(), ours, grandchild)
    });
    if grandchild == Some(false) {
        return 6;
    }
    let (Some((j, joined)), Some((own, ours))) = (joined, ours) else {
        return 4;
    };
    let mut all: Objects = joined.iter().chain(&ours).copied().collect();
    // SAFETY: the child's live objects, filled.
    let status = unsafe { apart_and_whole(&mut all) };
    if status != 0 {
        return status;
    }
    let status = verified(a, 3, "child");
    if status != 0 {
        return status;
    }
    // SAFETY: live objects, each freed once (through any join or the instance).
    free_all(joined, |p, size| unsafe { own.free(p, size, Life::A) });
    // SAFETY: as above.
    free_all(ours, |p, size| unsafe { j.free(p, size, Life::A) });
    drop((j, own));
    verified(a, 8, "child after the frees")
}

/// Forks [`FORKS`] children while two threads hand a join to each other and a third uses
/// two joins whose calls panic now and then ([`hand_off`], [`panicking`]): every child (and
/// grandchild) checked by [`child`]; statuses as its, or a signal (a crash or a hang).
#[test]
fn fork_children_amid_joins_in_calls_handed_off_and_panicking_verify() {
    let quiet = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        let misuse = info
            .payload()
            .downcast_ref::<String>()
            .is_some_and(|m| m.contains("double free"));
        if !misuse {
            quiet(info);
        }
    }));
    // Not on a worker's stack: the child reuses that memory.
    let a: A = Box::leak(Box::new(Cohort::new()));
    let shared: &'static Mutex<Shared> = Box::leak(Box::new(Mutex::new(Shared {
        join: None,
        objects: Vec::new(),
    })));
    let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let bad = std::thread::scope(|s| {
        let workers = [
            s.spawn(|| hand_off(a, shared, stop)),
            s.spawn(|| hand_off(a, shared, stop)),
            s.spawn(|| panicking(a, stop)),
        ];
        // Stops the workers however this test ends (a failed fork panics here).
        let stop_workers = threads::StopOnDrop(stop);
        let bad = fork_children(FORKS, 60, |round| {
            child(a, shared, u32::from(round.is_multiple_of(4)))
        });
        drop(stop_workers);
        for w in workers {
            w.join().unwrap();
        }
        bad
    });
    assert!(
        bad.is_empty(),
        "of {FORKS} fork children, {} failed: statuses {:x?}",
        bad.len(),
        bad
    );
    let mut s = shared.lock().unwrap();
    let j = s.join.take().expect("the shared join");
    let mut objects = std::mem::take(&mut s.objects);
    // SAFETY: the parent's live objects, filled.
    assert_eq!(
        unsafe { apart_and_whole(&mut objects) },
        0,
        "the parent's objects"
    );
    // SAFETY: live objects, freed once.
    free_all(objects, |p, size| unsafe { j.free(p, size, Life::A) });
    drop(j);
    // SAFETY: every other thread has ended.
    unsafe { a.verify() }.expect("verify in the parent");
    assert!(a.is_empty(), "{:?}", a.stats());
}
