//! Red-team guard (session 18) on RED-70's repair (a fork child's handler makes every
//! explicit join's heap of a private pool whole in place): a thread of the parent works
//! through a join in tight loops (small classes, the cached medium pair, an uncached
//! medium size, a large size; frees of its own), recording each live object in a table of
//! atomics after its allocation and clearing it before its free; the main thread forks
//! while it works. Each child goes on with that very join (the thread that was inside a
//! call of it is gone): the objects the table holds keep their bytes, and nothing the
//! child allocates through the join, or through the instance, overlaps them or each
//! other; the child frees everything and `verify` passes. The `_amid_releases` tests
//! also have the worker allocate zeroed (`calloc`), and a second thread of the parent at
//! the same time allocate in class B through its thread heap, resize (`remalloc`,
//! `recalloc`) and release the class (`release_class`) in a loop, so that forks land
//! inside those calls too.

#[path = "common/processes.rs"]
#[allow(dead_code)]
mod processes;

use cohort::{Cohort, Join, RegionOptions};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

// Helper threads stopped however a test ends.
#[path = "common/threads.rs"]
mod threads;

cohort::lifetime_classes! { enum Life { A, B } }

/// Sizes: small classes, the cached medium pair, an uncached medium size, a large one.
const SIZES: [usize; 7] = [16, 64, 1000, 8192, 32768, 200_000, 3 << 20];
/// Entries of the table of live objects.
const SLOTS: usize = 256;
const FORKS: usize = if cfg!(debug_assertions) { 6 } else { 24 };

/// The table: `(address, size)` of each recorded live object, 0 when empty.
struct Table([(AtomicUsize, AtomicUsize); SLOTS]);

fn byte(p: usize) -> u8 {
    (p >> 4) as u8 ^ 0x5a
}

/// Writes the object's pattern: its first, middle and last bytes, and a byte every 64 KiB.
fn stamp(p: usize, size: usize) {
    for at in (0..size).step_by(64 << 10).chain([size / 2, size - 1]) {
        // SAFETY: inside the live object.
        unsafe { ((p + at) as *mut u8).write(byte(p)) };
    }
}

fn stamped(p: usize, size: usize) -> bool {
    // SAFETY: inside the live object.
    (0..size)
        .step_by(64 << 10)
        .chain([size / 2, size - 1])
        .all(|at| unsafe { ((p + at) as *const u8).read() } == byte(p))
}

/// The parent's worker: random allocations and frees through `join` until `stop`.
fn work(join: &Join<'_, Life>, table: &Table, stop: &AtomicBool) {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while !stop.load(Relaxed) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x % SLOTS as u64) as usize;
        let (at, sz) = &table.0[i];
        let p = at.load(Relaxed);
        if p == 0 {
            let size = SIZES[(x >> 20) as usize % SIZES.len()];
            let q = if x & (1 << 40) != 0 {
                join.calloc(size, Life::A)
            } else {
                join.malloc(size, Life::A)
            } as usize;
            assert_ne!(q, 0);
            stamp(q, size);
            sz.store(size, Relaxed);
            at.store(q, Relaxed);
        } else {
            let size = sz.load(Relaxed);
            at.store(0, Relaxed);
            // SAFETY: a live object of the join, recorded by this thread, freed once.
            unsafe { join.free(p as *mut u8, size, Life::A) };
        }
    }
}

/// The parent's second thread (the `_amid_releases` tests): allocations in class B through
/// its thread heap, resized, then the class released, until `stop`.
fn release_loop(a: &Cohort<Life>, stop: &AtomicBool) {
    let mut round = 0usize;
    while !stop.load(Relaxed) {
        for k in 0..24 {
            let size = SIZES[(round + k) % SIZES.len()];
            let p = a.malloc(size, Life::B);
            assert!(!p.is_null());
            if k % 3 == 0 {
                // SAFETY: live, of this size and class; the result is left to the release.
                unsafe { a.remalloc(p, size, size / 2 + 1, Life::B) };
            } else if k % 3 == 1 {
                // SAFETY: as above.
                unsafe { a.recalloc(p, size, size + 100, Life::B) };
            }
        }
        // SAFETY: nothing of class B is used after (the children allocate it afresh).
        unsafe { a.release_class(Life::B) };
        round += 1;
    }
}

/// In the child: the join goes on. Returns what went wrong.
fn child(a: &Cohort<Life>, join: &Join<'_, Life>, table: &Table) -> Vec<String> {
    let mut bad = Vec::new();
    let live: Vec<(usize, usize)> = table
        .0
        .iter()
        .map(|(p, s)| (p.load(Relaxed), s.load(Relaxed)))
        .filter(|&(p, _)| p != 0)
        .collect();
    for &(p, size) in &live {
        if !stamped(p, size) {
            bad.push(format!("recorded object {p:#x} ({size} B) lost its bytes"));
        }
    }
    let mut mine: Vec<(usize, usize, bool)> = Vec::new();
    for round in 0..210 {
        let size = SIZES[round % SIZES.len()];
        let through_join = round % 3 != 0;
        let p = if through_join {
            join.malloc(size, Life::A)
        } else {
            a.malloc(size, Life::B)
        } as usize;
        if p == 0 {
            bad.push(format!("malloc({size}) null"));
            break;
        }
        let overlaps = |&(q, s): &(usize, usize)| p < q + s && q < p + size;
        if let Some(o) = live.iter().find(|o| overlaps(o)) {
            bad.push(format!(
                "{p:#x} ({size} B) overlaps the recorded live object {o:x?}"
            ));
            break;
        }
        if let Some(o) = mine.iter().find(|&&(q, s, _)| overlaps(&(q, s))) {
            bad.push(format!("{p:#x} ({size} B) overlaps the child's {o:x?}"));
            break;
        }
        stamp(p, size);
        mine.push((p, size, through_join));
    }
    for &(p, size) in &live {
        // SAFETY: live objects of the join, freed once.
        unsafe { join.free(p as *mut u8, size, Life::A) };
    }
    for (p, size, through_join) in mine {
        if !stamped(p, size) {
            bad.push(format!("the child's {p:#x} ({size} B) lost its bytes"));
        }
        // SAFETY: allocated above with this size and class, freed once.
        unsafe {
            if through_join {
                join.free(p as *mut u8, size, Life::A);
            } else {
                a.free(p as *mut u8, size, Life::B);
            }
        }
    }
    // SAFETY: the child's only thread.
    if let Err(e) = unsafe { a.verify() } {
        bad.push(format!("verify: {e:?}"));
    }
    bad
}

/// Forks [`FORKS`] children while a thread works through a join of `a` (and, with
/// `releases`, another runs [`release_loop`]); each child goes on with that join
/// ([`child`]). Returns the first failure.
fn forks_amid_join_calls(a: &Cohort<Life>, releases: bool) -> Option<String> {
    let table = Table(std::array::from_fn(|_| {
        (AtomicUsize::new(0), AtomicUsize::new(0))
    }));
    let stop = AtomicBool::new(false);
    // Boxed: its address stays while the worker, which owns it, runs.
    let join = Box::new(a.join(1).expect("join"));
    let join_at = &*join as *const Join<'_, Life> as usize;
    let (table, stop) = (&table, &stop);
    std::thread::scope(|s| {
        s.spawn(move || work(&join, table, stop));
        if releases {
            s.spawn(move || release_loop(a, stop));
        }
        // Stops the threads however this test ends (a failed fork panics here).
        let stop_threads = threads::StopOnDrop(stop);
        let mut first = None;
        for k in 0..FORKS {
            // Let the worker run a little between forks (a bounded spin, no clock).
            for _ in 0..(k % 7 + 1) * 20_000 {
                std::hint::spin_loop();
            }
            let pid = processes::in_child(30, || {
                // SAFETY: the join lives in the parent's frame, copied into the child; the
                // thread that used it is not in the child: this thread is its only user.
                let join = unsafe { &*(join_at as *const Join<'_, Life>) };
                let bad = child(a, join, table);
                if !bad.is_empty() {
                    // Straight to fd 2: the harness's capture of this thread's output is
                    // never printed by a child.
                    let text = format!("child {k}: {bad:#?}\n");
                    // SAFETY: a valid buffer.
                    unsafe { libc::write(2, text.as_ptr().cast(), text.len()) };
                    // SAFETY: _exit has no preconditions.
                    unsafe { libc::_exit(2) };
                }
            });
            let status = processes::wait_status(pid);
            if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
                first = Some(format!("child {k}: status {status:#x}"));
                break;
            }
        }
        drop(stop_threads);
        first
    })
}

#[test]
fn a_fork_child_goes_on_with_a_join_another_thread_was_using_default_instance() {
    let a = Cohort::<Life>::new();
    assert_eq!(forks_amid_join_calls(&a, false), None);
}

#[test]
fn a_fork_child_goes_on_with_a_join_another_thread_was_using_in_a_region() {
    let a = Cohort::<Life>::with_options(&RegionOptions::new(2 << 30)).expect("region");
    assert_eq!(forks_amid_join_calls(&a, false), None);
}

#[test]
fn a_fork_child_goes_on_with_a_join_amid_releases_default_instance() {
    let a = Cohort::<Life>::new();
    assert_eq!(forks_amid_join_calls(&a, true), None);
}

#[test]
fn a_fork_child_goes_on_with_a_join_amid_releases_in_a_region() {
    let a = Cohort::<Life>::with_options(&RegionOptions::new(2 << 30)).expect("region");
    assert_eq!(forks_amid_join_calls(&a, true), None);
}
