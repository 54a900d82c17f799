//! Red-team attack of session 14 on out of memory for threads that join an instance under
//! an address-space limit (RLIMIT_AS, in a child): their heaps cannot be mapped, so they
//! allocate without one (under the pool lock), free each other's objects, make joins,
//! scopes and remote frees, exit, and the instance must stay consistent, every failure a
//! null (or `None`), never a crash or an abort; once the limit is lifted new threads work
//! as usual. A test that found a defect is `#[ignore]`d with its number (RED-n), its owner
//! and the exact failure.

#[path = "common/processes.rs"]
#[allow(dead_code)]
mod processes;

use cohort::Cohort;
use std::sync::{Arc, Barrier, Mutex};
use test_support::raw_thread;

cohort::lifetime_classes! { enum Life { A, B } }

/// Sets RLIMIT_AS to the address space mapped now plus `extra` bytes.
fn limit_to_now_plus(extra: usize) {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: usize = statm.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let lim = libc::rlimit {
        rlim_cur: (pages * page + extra) as libc::rlim_t,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain setrlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) }, 0);
}

fn lift() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain setrlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) }, 0);
}

/// What each thread does under the limit: every size, filled; a join; a scope; half of
/// its objects handed to the shared list (for another thread to free), the rest freed.
/// `mine` has room for its 400 objects (nothing here allocates from the system allocator,
/// which the limit may refuse). Returns the allocations that failed.
fn work(
    a: &Cohort<Life>,
    t: usize,
    shared: &Mutex<Vec<(usize, usize)>>,
    mut mine: Vec<(usize, usize, Life)>,
) -> usize {
    let mut nulls = 0;
    for (i, size) in [
        1usize,
        2,
        8,
        24,
        64,
        1000,
        4096,
        16384,
        20_000,
        300_000,
        3 << 20,
    ]
    .into_iter()
    .cycle()
    .take(400)
    .enumerate()
    {
        let life = if i % 2 == 0 { Life::A } else { Life::B };
        let p = a.malloc(size, life);
        if !p.is_null() {
            // SAFETY: `size` bytes of ours.
            unsafe { p.write_bytes(t as u8, size) };
            mine.push((p as usize, size, life));
        } else {
            nulls += 1;
        }
    }
    if let Some(j) = a.join(t) {
        let p = j.malloc(64, Life::A);
        if !p.is_null() {
            // SAFETY: allocated above by the join, freed once.
            unsafe { j.free(p, 64, Life::A) };
        }
        j.leave();
    }
    let _ = a.try_scope(|s| {
        let v: cohort::Vec<u64, _> = cohort::Vec::with_capacity_in(100, s);
        v.capacity()
    });
    for (k, (p, size, life)) in mine.into_iter().enumerate() {
        // SAFETY: ours, `size` bytes.
        let b = unsafe { std::slice::from_raw_parts(p as *const u8, size) };
        assert!(
            b.iter().all(|&x| x == t as u8),
            "thread {t}: an object changed"
        );
        if k % 2 == 0 && life == Life::A {
            shared.lock().unwrap().push((p, size));
        } else {
            // SAFETY: ours, freed once.
            unsafe { a.free(p as *mut u8, size, life) };
        }
    }
    nulls
}

/// Four threads, started before the limit, join the instance under it (their heaps cannot
/// be mapped), work, free each other's objects and exit; then the limit is lifted and
/// four more threads work.
#[test]
fn threads_joining_under_an_address_space_limit_get_nulls_and_leave_it_consistent() {
    let child = processes::in_child(60, || {
        let a = Arc::new(Cohort::<Life>::new());
        let first = a.malloc(64, Life::A);
        assert!(!first.is_null());
        let shared = Arc::new(Mutex::new(Vec::with_capacity(8 * 400)));
        let go = Arc::new(Barrier::new(5));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (a, shared, go) = (a.clone(), shared.clone(), go.clone());
                raw_thread::spawn(move || {
                    let mine = Vec::with_capacity(400);
                    let mut theirs = Vec::with_capacity(400);
                    // Started (its stacks mapped) before the limit, then working under it.
                    go.wait();
                    go.wait();
                    let nulls = work(&a, t, &shared, mine);
                    assert!(nulls > 0, "setup: thread {t} met no limit");
                    go.wait();
                    // Each frees what another thread handed over (remote frees).
                    {
                        let mut s = shared.lock().unwrap();
                        let n = s.len() / (4 - t).max(1);
                        theirs.extend(s.drain(..n.min(400)));
                    }
                    for (p, size) in theirs {
                        // SAFETY: live, of class A, freed once.
                        unsafe { a.free(p as *mut u8, size, Life::A) };
                    }
                })
            })
            .collect();
        go.wait();
        limit_to_now_plus(0);
        go.wait();
        go.wait();
        for t in threads {
            t.join().expect("a thread under the limit panicked");
        }
        for (p, size) in shared.lock().unwrap().drain(..) {
            // SAFETY: live, of class A, freed once.
            unsafe { a.free(p as *mut u8, size, Life::A) };
        }
        // SAFETY: live, freed once.
        unsafe { a.free(first, 64, Life::A) };
        // SAFETY: the other threads have exited.
        let v = unsafe { a.verify() };
        assert!(v.is_ok(), "verify under the limit: {v:?}");
        // (The statistics allocate from the system allocator: after the limit.)
        lift();
        assert!(a.is_empty(), "not empty after the threads: {}", a.stats());
        let again: Vec<_> = (0..4)
            .map(|t| {
                let (a, shared) = (a.clone(), shared.clone());
                raw_thread::spawn(move || assert_eq!(work(&a, 10 + t, &shared, Vec::new()), 0))
            })
            .collect();
        for t in again {
            t.join().expect("a thread after the limit panicked");
        }
        for (p, size) in shared.lock().unwrap().drain(..) {
            // SAFETY: live, of class A, freed once.
            unsafe { a.free(p as *mut u8, size, Life::A) };
        }
        // SAFETY: as above.
        let v = unsafe { a.verify() };
        assert!(v.is_ok(), "verify after the limit: {v:?}");
        assert!(a.is_empty(), "not empty at the end: {}", a.stats());
    });
    let status = processes::wait_status(child);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child failed: status {status:#x} (a signal: {})",
        libc::WIFSIGNALED(status)
    );
}
