//! Red-team attack (session 19, RED-89, fixed) on the fork handlers' place among the
//! process's others (`fork.rs`): cohort registered its `pthread_atfork` handlers lazily, at
//! the first instance's first pool (now when the library is loaded), and its `prepare` takes every private pool's lock and large-table
//! lock until its `parent` or `child` handler releases them. POSIX runs `prepare` handlers
//! in the reverse order of their registration and `parent`/`child` handlers in that order,
//! so the handlers of a library registered *before* cohort's (a constructor, any code that
//! ran before the program's first instance) run while cohort holds its locks. The C
//! library's own malloc is locked after every handler ran and unlocked before any ran, so
//! handlers that allocate are common; one that allocates from cohort (the global allocator,
//! the drop-in malloc, an instance) on a slow path spins for ever on a lock nobody will
//! release. Each case runs in a process of its own (this test binary again), where the
//! handlers below are registered before the first instance exists.

mod common;

use cohort::Cohort;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

const CASE: &str = "COHORT_RED_TEAM_ATFORK_CASE";

/// The instance the handlers allocate from (null: they do nothing).
static INSTANCE: AtomicPtr<Cohort<()>> = AtomicPtr::new(std::ptr::null_mut());
/// Which handler allocates: 1 prepare, 2 parent, 3 child.
static WHICH: AtomicUsize = AtomicUsize::new(0);
/// The size it allocates.
static SIZE: AtomicUsize = AtomicUsize::new(0);

/// Allocates `SIZE` bytes from `INSTANCE`, writes them and frees them, when `me` is `WHICH`.
fn allocate_in_handler(me: usize) {
    let a = INSTANCE.load(Ordering::Acquire);
    if a.is_null() || WHICH.load(Ordering::Relaxed) != me {
        return;
    }
    // SAFETY: leaked below, never freed.
    let a = unsafe { &*a };
    let size = SIZE.load(Ordering::Relaxed);
    let p = a.malloc(size, ());
    assert!(!p.is_null());
    // SAFETY: `size` bytes of ours, freed once with their size and class.
    unsafe {
        p.write_bytes(0x5a, size);
        a.free(p, size, ());
    }
}

extern "C" fn prepare() {
    allocate_in_handler(1);
}
extern "C" fn parent() {
    allocate_in_handler(2);
}
extern "C" fn child() {
    allocate_in_handler(3);
}

/// The case, in a process whose first instance is made after the handlers above are
/// registered (`before`; else they are registered after it): `which` handler allocates `size` bytes (a large allocation, or a small class
/// the thread has no block of: slow paths, which take the pool's locks). Prints "done"
/// when the fork returned in the parent and the child exited 0; a hang in the parent ends
/// in SIGALRM; a child that does not exit within its bound is killed and reported.
fn case(which: usize, size: usize, before: bool) {
    let register = || {
        // SAFETY: the handlers are plain functions that allocate or do nothing.
        assert_eq!(
            unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) },
            0
        );
    };
    if before {
        register();
    }
    let a: &'static Cohort<()> = Box::leak(Box::new(Cohort::<()>::new()));
    // The first pool: cohort's handlers are registered now.
    let first = a.malloc(64, ());
    assert!(!first.is_null());
    if !before {
        register();
    }
    WHICH.store(which, Ordering::Relaxed);
    SIZE.store(size, Ordering::Relaxed);
    INSTANCE.store(std::ptr::from_ref(a).cast_mut(), Ordering::Release);
    // SAFETY: alarm has no preconditions: a parent stuck in a handler dies of SIGALRM.
    unsafe { libc::alarm(2) };
    // SAFETY: the child only leaves (its handlers ran in fork).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: leaves the child at once.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: as above: the parent is out of `fork`; the child's bound is the loop below.
    unsafe { libc::alarm(0) };
    // Bounded wait (an event bound: 2000 polls of 1 ms), then the child is killed.
    let mut status = 0;
    let mut ended = false;
    for _ in 0..2000 {
        // SAFETY: our own child.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            ended = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    if !ended {
        common::processes::kill_and_reap(pid, "the child");
        panic!("the fork child never left its fork handlers (killed)");
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status:#x}"
    );
    // The parent goes on with the instance.
    // SAFETY: allocated above with this size and class.
    unsafe { a.free(first, 64, ()) };
    println!("done");
}

/// The cases: (name, which handler, size).
const CASES: [(&str, usize, usize); 6] = [
    ("prepare, large", 1, 4 << 20),
    ("prepare, new small class", 1, 3000),
    ("parent, large", 2, 4 << 20),
    ("parent, new small class", 2, 3000),
    ("child, large", 3, 4 << 20),
    ("child, new small class", 3, 3000),
];

/// The test `test`: in a re-run of it, the case asked ([`run_case_if_asked`]); else every
/// case in a process of its own, with the handlers registered `before` cohort's or after,
/// which must all print "done" (the failures listed).
fn every_case_passes(test: &str, before: bool) {
    if run_case_if_asked() {
        return;
    }
    let cases = CASES.iter().map(|&(name, which, size)| {
        (
            name.to_string(),
            format!("{which} {size} {}", before as usize),
        )
    });
    let failed = test_support::failed_cases(test, CASE, cases, &["panicked", "cohort"]);
    assert!(failed.is_empty(), "{failed:#?}");
}

/// The case this process runs, when it is a re-run of the test.
fn run_case_if_asked() -> bool {
    let Ok(case_text) = std::env::var(CASE) else {
        return false;
    };
    let mut words = case_text.split(' ').map(|w| w.parse::<usize>().unwrap());
    let (which, size) = (words.next().unwrap(), words.next().unwrap());
    case(which, size, words.next().unwrap() == 1);
    true
}

/// RED-89: on main 97872eb every case hangs (prepare and parent: the parent dies of
/// SIGALRM inside `fork`; child: the child spins in its handler until killed): a handler
/// registered before cohort's that allocates on a slow path waits for a lock cohort's
/// `prepare` took.
#[test]
fn a_fork_handler_registered_before_cohorts_may_allocate() {
    every_case_passes(
        "a_fork_handler_registered_before_cohorts_may_allocate",
        true,
    );
}

/// Guard: the same handlers registered after cohort's (its `prepare` runs after theirs,
/// its `parent` and `child` before) allocate on the same slow paths and the fork goes on.
#[test]
fn guard_a_fork_handler_registered_after_cohorts_may_allocate() {
    every_case_passes(
        "guard_a_fork_handler_registered_after_cohorts_may_allocate",
        false,
    );
}
