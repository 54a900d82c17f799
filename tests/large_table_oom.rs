//! The large table at its fill bound when memory runs out: a resize of a large allocation
//! takes its entry out and puts it back (with its new length), and putting it back may
//! need the table to grow, which maps memory. With none to be had, the resize must fail
//! as out of memory (null, the allocation as it was), never leave a live allocation out
//! of the table (its free then reported as misuse, its mapping lost).

use cohort::class::MAX_MEDIUM;
use cohort::Cohort;

/// The bytes of address space the process has mapped (`/proc/self/statm`, first field).
fn mapped_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

/// The child's part (its exit code is the verdict: 0 right; 1 the resized allocation's
/// free was refused; 2 setup failed).
fn child() -> i32 {
    let a: Cohort = Cohort::new();
    let size = MAX_MEDIUM + (64 << 10);
    // The table holds 512 entries and grows at 3/4: 383 live entries leave it one short
    // of growing, which the resize's taking out and putting back then reaches.
    let live: Vec<*mut u8> = (0..383).map(|_| a.malloc(size, ())).collect();
    if live.iter().any(|p| p.is_null()) {
        return 2;
    }
    // No more address space from here on: the table cannot grow.
    let limit = libc::rlimit {
        rlim_cur: mapped_bytes() + 4096,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) } != 0 {
        return 2;
    }
    let p = live[0];
    // Within its pages: in place, no system call for the allocation itself.
    // SAFETY: live with `size` bytes.
    let q = unsafe { a.remalloc(p, size, size + 1, ()) };
    let (q, now) = if q.is_null() {
        (p, size)
    } else {
        (q, size + 1)
    };
    // SAFETY: live with `now` bytes (the resize's, or the old one when it failed).
    match unsafe { a.try_free(q, now, ()) } {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

#[test]
fn a_resize_that_cannot_grow_the_large_table_fails_as_out_of_memory() {
    // SAFETY: the child runs `child` and exits; this test binary has no other test thread.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let code = std::panic::catch_unwind(child).unwrap_or(3);
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child status {status:#x}");
    let code = libc::WEXITSTATUS(status);
    assert_ne!(code, 2, "setup failed");
    assert_eq!(
        code, 0,
        "a large allocation resized while the table could not grow was lost from it: its \
         free was refused (code {code})"
    );
}
