//! Red-team attack (session 19) on `FORK_UNSURE` (`remote.rs`): with `membarrier` refused
//! after its registration (a seccomp filter installed once the process runs), the fork's
//! prepare handler cannot be sure it waited out a batch's holder, so the child empties
//! every batch without pushing its chains ("their slots stay counted in use there: lost to
//! the child, never handed out twice"). The forking thread's own batch is emptied too,
//! though its holder is the forking thread itself, inside `fork`, in no batch's call. The
//! child then holds slots it freed before the fork as in use for ever; in checked mode
//! their live bits are clear (the free cleared them), which `verify` accepts only once a
//! dead holder's heap was taken over. Each case runs in a process of its own (this test
//! binary again): a seccomp filter cannot be removed.

mod common;

use cohort::Cohort;
use common::seccomp::refuse_membarrier;
use std::sync::mpsc;

cohort::lifetime_classes! {
    enum Life { A }
}

const CASE: &str = "COHORT_RED_TEAM_MEMBARRIER_FORK_CASE";
const SIZE: usize = 1024;
const OBJECTS: usize = 256;

/// The case: another thread allocates `OBJECTS` objects and hands them to this thread,
/// which frees them (remote frees: its own batch keeps chains once membarrier is
/// registered); the other thread exits (cleanly: no heap is a dead holder's); this thread
/// sandboxes itself (`sandbox`) and forks. The child frees nothing more and checks
/// `verify` and `is_empty`. Prints "done" when the child exited 0.
fn case(sandbox: bool) {
    let a: &'static Cohort<Life> = Box::leak(Box::new(Cohort::<Life>::new()));
    let (objects_tx, objects) = mpsc::channel();
    let (freed_tx, freed) = mpsc::channel::<()>();
    let owner = std::thread::spawn(move || {
        let made: Vec<usize> = (0..OBJECTS)
            .map(|_| a.malloc(SIZE, Life::A) as usize)
            .collect();
        objects_tx.send(made).unwrap();
        // Alive while the other thread frees into its blocks (remote frees).
        freed.recv().unwrap();
    });
    for p in objects.recv().unwrap() {
        // SAFETY: live objects of `a`, handed over, freed once.
        unsafe { a.free(p as *mut u8, SIZE, Life::A) };
    }
    freed_tx.send(()).unwrap();
    owner.join().unwrap();
    if sandbox {
        refuse_membarrier();
    }
    let pid = common::processes::in_child(10, || {
        let empty = a.is_empty();
        // SAFETY: the child's only thread.
        let verified = unsafe { a.verify() };
        assert!(
            empty && verified.is_ok(),
            "the child: is_empty {empty} (live {}), verify {verified:?}",
            a.stats().small.live
        );
    });
    let status = common::processes::wait_status(pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the fork child failed: status {status:#x}"
    );
    // The parent goes on: its batch is pushed at its next flush.
    assert!(a.is_empty());
    println!("done");
}

/// Runs the case in a process of its own: its standard output and error.
fn run(test: &str, sandbox: bool) -> (bool, String) {
    let out = common::processes::rerun(test, &[(CASE, if sandbox { "1" } else { "0" })]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("panicked") || l.contains("child") || l.contains("cohort"))
        .collect();
    (
        out.status.success() && stdout.contains("done"),
        format!("{:?} {said:?}", out.status),
    )
}

/// RED-90: on main 97872eb the child of a thread whose own batch held chains, forking under
/// a filter refusing membarrier, fails `verify` in a debug (checked) build (a slot in use
/// with its live bit clear, not free-listed) and `is_empty` in any build: the prepare
/// handler marks the forking thread's own batch `FORK_UNSURE`, which no other thread could
/// have been changing, and the child drops its chains.
#[test]
fn a_fork_without_membarrier_keeps_the_forking_threads_own_frees() {
    if let Ok(case_text) = std::env::var(CASE) {
        case(case_text == "1");
        return;
    }
    let (ok, said) = run(
        "a_fork_without_membarrier_keeps_the_forking_threads_own_frees",
        true,
    );
    assert!(ok, "{said}");
}

/// Guard: the same with membarrier allowed (the batch is held for sure, and the child's
/// thread pushes it): the child verifies and is empty.
#[test]
fn guard_a_fork_with_membarrier_keeps_the_forking_threads_own_frees() {
    if let Ok(case_text) = std::env::var(CASE) {
        case(case_text == "1");
        return;
    }
    let (ok, said) = run(
        "guard_a_fork_with_membarrier_keeps_the_forking_threads_own_frees",
        false,
    );
    assert!(ok, "{said}");
}
