//! Red-team attacks of session 16 on the fork child's handling of joins (`Cohort::join`):
//! which join heaps the child keeps for the forking thread and which it may take over. The
//! forking thread carries two joins (one it made, one another thread made and used, then
//! handed over), while the parent's other threads are parked outside any call, each with a
//! join open (holding pending remote frees and cached blocks) and with joins of the same
//! concurrency groups left before. In each child the forking thread allocates through its
//! two joins while new threads make joins of the same groups and allocate through their
//! thread heaps, all at once: no two objects overlap, every byte stays, and `verify` passes
//! before and after all is freed. A test that found a defect is `#[ignore]`d with its
//! number (RED-n), its owner and the exact failure.

use cohort::{Cohort, Join};
use std::sync::{Barrier, Mutex};
use test_support::raw_thread;

cohort::lifetime_classes! { enum Life { A } }

type A = &'static Cohort<Life>;
type Objects = Vec<(usize, usize)>;

/// Forks of the parent's main thread.
const FORKS: usize = if cfg!(debug_assertions) { 8 } else { 60 };
/// Sizes: small classes, the cached medium pair, a longer medium run.
const SIZES: [usize; 6] = [16, 64, 1000, 8192, 32768, 40_000];
/// Concurrency groups the joins use.
const GROUPS: usize = 3;

/// Writes `s` to the standard error (a fork child's: the harness's capture is lost).
fn say(s: &str) {
    // SAFETY: writes bytes of `s`.
    unsafe { libc::write(2, s.as_ptr().cast(), s.len()) };
}

fn byte_of(p: usize) -> u8 {
    (p >> 4) as u8 | 1
}

/// `n` objects of [`SIZES`] in turn from `malloc`, each filled with [`byte_of`] it; `None`
/// when one is null.
fn fill(n: usize, malloc: impl Fn(usize) -> *mut u8) -> Option<Objects> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let size = SIZES[i % SIZES.len()];
        let p = malloc(size);
        if p.is_null() {
            return None;
        }
        // SAFETY: `size` bytes of ours.
        unsafe { p.write_bytes(byte_of(p as usize), size) };
        out.push((p as usize, size));
    }
    Some(out)
}

/// Frees `objects` through `a`.
fn free_all(a: A, objects: &[(usize, usize)]) {
    for &(p, size) in objects {
        // SAFETY: live objects, freed once.
        unsafe { a.free(p as *mut u8, size, Life::A) };
    }
}

/// 0 when no two of `objects` overlap and each holds its bytes; 2 or 5 otherwise.
fn apart_and_whole(objects: &mut Objects) -> i32 {
    objects.sort_unstable();
    if objects.windows(2).any(|w| w[0].0 + w[0].1 > w[1].0) {
        return 2;
    }
    for &(p, size) in objects.iter() {
        // SAFETY: live objects of ours, filled.
        let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, size) };
        if bytes.iter().any(|&b| b != byte_of(p)) {
            return 5;
        }
    }
    0
}

/// In a fork child: the forking thread allocates through its two joins while one new
/// thread makes joins of every group in turn and another allocates through its thread
/// heap. Statuses: 2, objects overlap; 3 or 8, verify failed; 4, out of memory; 5, a byte
/// changed.
fn child(a: A, joins: &[Join<'static, Life>; 2], before: &Objects) -> i32 {
    let (ours, joined, threaded) = raw_thread::scope(|s| {
        let joined = s.spawn(|| {
            let mut out = Vec::new();
            for g in 0..2 * GROUPS {
                let j = a.join(g % GROUPS)?;
                out.extend(fill(400, |size| j.malloc(size, Life::A))?);
                j.leave();
            }
            Some(out)
        });
        let threaded = s.spawn(|| fill(2400, |size| a.malloc(size, Life::A)));
        let ours = (0..6).try_fold(Vec::new(), |mut out, k| {
            out.extend(fill(400, |size| joins[k % 2].malloc(size, Life::A))?);
            Some(out)
        });
        (
            ours,
            joined.join().ok().flatten(),
            threaded.join().ok().flatten(),
        )
    });
    let (Some(ours), Some(joined), Some(threaded)) = (ours, joined, threaded) else {
        return 4;
    };
    let mut objects: Objects = [&ours, &joined, &threaded, before]
        .into_iter()
        .flatten()
        .copied()
        .collect();
    let status = apart_and_whole(&mut objects);
    if status != 0 {
        return status;
    }
    // SAFETY: the child's other threads have ended.
    if let Err(e) = unsafe { a.verify() } {
        say(&format!("child verify: {e:?}\n"));
        return 3;
    }
    free_all(a, &ours);
    free_all(a, &joined);
    free_all(a, &threaded);
    // SAFETY: single thread.
    match unsafe { a.verify() } {
        Ok(_) => 0,
        Err(e) => {
            say(&format!("child verify after the frees: {e:?}\n"));
            8
        }
    }
}

/// A parked worker of the parent: each round it makes a join of the round's group, fills
/// objects through it, frees the other worker's objects of the last round through it
/// (remote frees, pending in the join's batch) and half of its own, and parks at `park`
/// (the fork happens then) with the join open; after the fork it frees the rest and leaves.
fn worker(a: A, rounds: usize, park: &Barrier, mailbox: &Mutex<Objects>) {
    for round in 0..rounds {
        let j = a
            .join((round + rounds) % GROUPS)
            .expect("a join in the parent");
        let mut mine = fill(600, |size| j.malloc(size, Life::A)).expect("memory in the parent");
        let theirs = std::mem::replace(&mut *mailbox.lock().unwrap(), mine.split_off(300));
        for (p, size) in theirs.into_iter().chain(mine.drain(150..)) {
            // SAFETY: live objects, freed once.
            unsafe { j.free(p as *mut u8, size, Life::A) };
        }
        park.wait(); // parked: the fork
        park.wait(); // the child has ended
        for (p, size) in mine {
            // SAFETY: live objects, freed once.
            unsafe { j.free(p as *mut u8, size, Life::A) };
        }
        j.leave();
    }
}

/// The forking thread's joins (one made here, one made and used by another thread and
/// handed over) are its own in every child, whatever the child does with the joins of the
/// parent's other threads (open at the fork, outside any call) and with the heaps left by
/// joins of the same groups: statuses as [`child`]'s, or a signal (a crash or a hang).
#[test]
fn a_forking_threads_joins_stay_its_own_in_the_child() {
    // Not on a parked thread's stack: the child reuses that memory.
    let a: A = Box::leak(Box::new(Cohort::new()));
    let mailbox: &'static Mutex<Objects> = Box::leak(Box::new(Mutex::new(Vec::new())));
    let park = Barrier::new(3);
    let own = a.join(1).expect("a join");
    let carried = std::thread::spawn(move || {
        let j = a.join(1).expect("a join");
        let objects = fill(300, |size| j.malloc(size, Life::A)).expect("memory");
        (j, objects)
    });
    let (carried, mut before) = carried.join().unwrap();
    before.extend(fill(300, |size| own.malloc(size, Life::A)).expect("memory"));
    let joins = [own, carried];
    let mut bad = Vec::new();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| worker(a, FORKS, &park, mailbox));
        }
        for _ in 0..FORKS {
            park.wait();
            // SAFETY: the child only allocates, verifies and leaves with _exit.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork");
            if pid == 0 {
                // SAFETY: plain alarm: a hung child dies (status: SIGALRM).
                unsafe { libc::alarm(30) };
                let code = child(a, &joins, &before);
                // SAFETY: ends the child without running the parent's exit hooks.
                unsafe { libc::_exit(code) };
            }
            let mut status = 0;
            // SAFETY: our child.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            if status != 0 {
                bad.push(status);
            }
            park.wait();
        }
    });
    assert!(
        bad.is_empty(),
        "of {FORKS} fork children, {} failed: statuses {:x?}",
        bad.len(),
        bad
    );
    let mut all = before.clone();
    all.extend(std::mem::take(&mut *mailbox.lock().unwrap()));
    assert_eq!(apart_and_whole(&mut all), 0, "the parent's objects");
    free_all(a, &all);
    let [own, carried] = joins;
    own.leave();
    carried.leave();
    // SAFETY: every other thread has ended.
    unsafe { a.verify() }.expect("verify in the parent");
    assert!(a.is_empty(), "{:?}", a.stats());
}
