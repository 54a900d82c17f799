//! Red-team attacks of session 15 (second round) on fork children of a parent whose other
//! threads are in every slow path at the fork: medium pairs through their heap's cache
//! (the 32 KiB run cache's take and put), longer medium runs, large runs, small classes'
//! collects and retires, remote frees, a join (`Cohort::join`) joined and left again and
//! again, short threads that exit (their heaps handed over), a lifetime class released.
//! Each child (and a grandchild now and then) allocates from two threads at once, each
//! object filled with its own byte: no two overlap, every byte stays, `verify` passes before
//! and after all is freed, and a double free (small, cached medium) is refused. A test that
//! found a defect is `#[ignore]`d with its number (RED-n), its owner and the exact failure.

use cohort::Cohort;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use test_support::raw_thread;

// Helper threads stopped however a test ends.
#[path = "common/threads.rs"]
mod threads;

cohort::lifetime_classes! { enum Life { A, B } }

/// Forks of the parent's main thread.
const FORKS: usize = if cfg!(debug_assertions) { 10 } else { 80 };
/// The sizes every thread allocates: small classes, the cached medium pair, a longer
/// medium run, a large run.
const SIZES: [usize; 7] = [16, 64, 1000, 8192, 32768, 40_000, 300_000];

type A = &'static Cohort<Life>;

/// Writes `s` to the standard error (a fork child's: the test harness's capture is lost at its
/// `_exit`).
fn say(s: &str) {
    // SAFETY: writes bytes of `s`.
    unsafe { libc::write(2, s.as_ptr().cast(), s.len()) };
}

fn byte_of(p: usize) -> u8 {
    (p >> 4) as u8 | 1
}

/// `rounds` objects of each size, each filled with [`byte_of`] its address.
fn fill(a: A, rounds: usize) -> Option<Vec<(usize, usize)>> {
    let mut out = Vec::new();
    for r in 0..rounds {
        for &size in &SIZES {
            if size >= 40_000 && !r.is_multiple_of(8) {
                continue;
            }
            let p = a.malloc(size, Life::A);
            if p.is_null() {
                return None;
            }
            // SAFETY: `size` bytes of ours.
            unsafe { p.write_bytes(byte_of(p as usize), size) };
            out.push((p as usize, size));
        }
    }
    Some(out)
}

/// In a fork child (or grandchild): the forking thread and a new thread fill at once; 0
/// when no two objects overlap, every byte stays, double frees are refused and `verify`
/// passes before and after all is freed. `depth` > 0: one more fork inside.
fn child(a: A, depth: u32) -> i32 {
    let (mut all, theirs) = raw_thread::scope(|s| {
        let t = s.spawn(|| fill(a, 300));
        (fill(a, 300), t.join().ok().flatten())
    });
    let (Some(ours), Some(theirs)) = (all.take(), theirs) else {
        return 4;
    };
    let mut objects: Vec<(usize, usize)> = ours.into_iter().chain(theirs).collect();
    objects.sort_unstable();
    if objects.windows(2).any(|w| w[0].0 + w[0].1 > w[1].0) {
        return 2;
    }
    for &(p, size) in &objects {
        // SAFETY: ours, filled.
        let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, size) };
        if bytes.iter().any(|&b| b != byte_of(p)) {
            return 5;
        }
    }
    // SAFETY: the child's other thread has ended.
    if let Err(e) = unsafe { a.verify() } {
        say(&format!("child verify: {e:?}\n"));
        return 3;
    }
    let _ = a.stats();
    if depth > 0 {
        // SAFETY: the grandchild only allocates, verifies and leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = child(a, depth - 1);
            // SAFETY: ends the grandchild without the parent's exit hooks.
            unsafe { libc::_exit(code + 16) };
        }
        let mut status = 0;
        // SAFETY: our child.
        if pid < 0 || unsafe { libc::waitpid(pid, &mut status, 0) } != pid || status != 16 << 8 {
            return 6;
        }
    }
    for (p, size) in objects {
        // SAFETY: live, freed once.
        unsafe { a.free(p as *mut u8, size, Life::A) };
    }
    for size in [64, 32768] {
        let p = a.malloc(size, Life::A);
        // SAFETY: live, freed once; the second is the misuse tried.
        unsafe {
            a.free(p, size, Life::A);
            if a.try_free(p, size, Life::A).is_ok() {
                return 7;
            }
        }
    }
    // SAFETY: single thread.
    match unsafe { a.verify() } {
        Ok(_) => 0,
        Err(e) => {
            say(&format!("child verify after the frees: {e:?}\n"));
            8
        }
    }
}

/// A worker of the parent: every slow path, again and again, until `stop`.
fn churn(a: A, stop: &AtomicBool, remote: &Mutex<Vec<(usize, usize)>>, join: bool) {
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let j = if join { a.join(i % 3) } else { None };
        let mut objs = Vec::new();
        for r in 0..40usize {
            for &size in &SIZES {
                if size >= 40_000 && !r.is_multiple_of(10) {
                    continue;
                }
                let p = match &j {
                    Some(j) => j.malloc(size, Life::A),
                    None => a.malloc(size, Life::A),
                };
                assert!(!p.is_null());
                objs.push((p as usize, size));
            }
        }
        // Half to the other worker (remote frees), half freed here, last first.
        let theirs = objs.split_off(objs.len() / 2);
        let taken = std::mem::replace(&mut *remote.lock().unwrap(), theirs);
        for (p, size) in objs.into_iter().rev().chain(taken) {
            // SAFETY: live, freed once.
            unsafe {
                match &j {
                    Some(j) => j.free(p as *mut u8, size, Life::A),
                    None => a.free(p as *mut u8, size, Life::A),
                }
            }
        }
        if !join && i.is_multiple_of(4) {
            // A short thread: its heap is left at its exit.
            std::thread::scope(|s| {
                s.spawn(|| {
                    let ps: Vec<_> = (0..200).map(|k| a.malloc(SIZES[k % 5], Life::B)).collect();
                    drop(ps);
                });
            });
            // SAFETY: only this worker's short threads allocate in B, and they ended.
            unsafe { a.release_class(Life::B) };
        }
    }
}

/// Forks [`FORKS`] children while the parent's workers churn ([`churn`], through a join
/// when `true`), each child checked by [`child`] (statuses: 2, two objects overlap; 3 or 8,
/// verify failed (its error on the standard error); 4, out of memory; 5, a byte changed;
/// 6, the grandchild failed; 7, a double free was taken; a signal, it crashed or hung).
fn forks_amid(joins: &[bool]) {
    let a: A = Box::leak(Box::new(Cohort::new()));
    let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let remote: &'static Mutex<Vec<(usize, usize)>> = Box::leak(Box::new(Mutex::new(Vec::new())));
    let mut bad = Vec::new();
    std::thread::scope(|s| {
        let workers: Vec<_> = joins
            .iter()
            .map(|&join| s.spawn(move || churn(a, stop, remote, join)))
            .collect();
        // Stops the workers however this test ends (a failed fork panics here).
        let stop_workers = threads::StopOnDrop(stop);
        for round in 0..FORKS {
            // SAFETY: the child only allocates, verifies, forks once and leaves with _exit.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork");
            if pid == 0 {
                // SAFETY: plain alarm: a hung child dies (status: SIGALRM).
                unsafe { libc::alarm(30) };
                let code = child(a, u32::from(round.is_multiple_of(4)));
                // SAFETY: ends the child without running the parent's exit hooks.
                unsafe { libc::_exit(code) };
            }
            let mut status = 0;
            // SAFETY: our child.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            if status != 0 {
                bad.push(status);
            }
        }
        drop(stop_workers);
        for w in workers {
            w.join().unwrap();
        }
    });
    assert!(
        bad.is_empty(),
        "of {FORKS} fork children, {} failed: statuses {:x?}",
        bad.len(),
        bad
    );
    for (p, size) in std::mem::take(&mut *remote.lock().unwrap()) {
        // SAFETY: live, freed once.
        unsafe { a.free(p as *mut u8, size, Life::A) };
    }
    // SAFETY: every other thread has ended.
    unsafe { a.verify() }.expect("verify in the parent");
}

/// A thread of the parent in every slow path of its own heap at the forks: the RED-66 fix
/// (hunt 6c06882: the child takes that heap over as a dead one's, its collect finished by
/// a recount). Passes on hunt-red66 3b3f86d (release-tests, 3 of 3 runs with this worker
/// alone) and on main db5d71d (4 of 4 runs), but not always on main: the lead's debug runs
/// of main 87f7761, 1 of 8 failed (`of 10 fork children, 1 failed: statuses [300]`: the
/// child's verify), RED-66's known limit (src/design.md). Ignored until RED-66's fix lands.
#[test]
fn fork_children_amid_a_threads_slow_paths_keep_objects_whole_and_verify() {
    forks_amid(&[false]);
}

/// A join (`Cohort::join`) held by another thread of the parent, in its slow paths (and
/// joined and left again each round) at the forks.
///
/// RED-70 (owner: hunt): fails on hunt-red66 3b3f86d/d775b33 (merged with main db5d71d,
/// medium b055f64 and channel 23b0a20: release-tests, 3 of 3 runs, 1 or 2 of 80 children):
/// `child verify: VerifyError { .., size_class: Some(4), life: Some(0), problem: "used 43 +
/// free-listed 210 != 252 slots handed out" }` (also `used 2147483668 + free-listed 43 != 63`):
/// the child marks dead only the parent's other threads' thread heaps
/// (`heap_handover::after_fork_in_child`: THREAD_GROUP), so a join another thread was
/// inside a call of at the fork keeps its half-way counts in the child, where nobody will
/// take it over or finish them. Fails the same way on hunt's RED-67 fix c2e433a alone
/// (merged into main db5d71d: 3 of 3 runs, `used 2147483668 + free-listed 43 != 63`, `used
/// 23 + free-listed 0 != 63`): the counts a call left half way at the fork are what the
/// child's verify reads. Passed on main db5d71d (release-tests, 4 of 4 runs), but fails on
/// main 7bed84c + this file (ba396d6) too, the lead's runs: release-tests 3 of 5 runs,
/// `of 80 fork children, 1 failed: statuses [300]` (the child's verify); debug 0 of 2. So
/// it is RED-66's limit for joins (src/design.md), on main as on hunt's branch. Fixed
/// (fork, session 18): the child's fork handler repairs every join's heap in place, which
/// stays the join's (`heap_handover::fork_join`; RED-78 kept fixed). Unit test:
/// `join::tests::a_fork_child_repairs_a_joins_heap_another_thread_was_in_a_call_on`
/// (fails without it: `used 10 + free-listed 1 != 10 slots handed out`).
#[test]
fn fork_children_amid_a_joins_slow_paths_keep_objects_whole_and_verify() {
    forks_amid(&[true]);
}
