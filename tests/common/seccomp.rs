//! A seccomp filter for the tests of what cohort does without `membarrier`.

/// Installs, for the calling thread and the threads it spawns from now on, a seccomp
/// filter under which `membarrier` fails with `ENOSYS` (every other call is allowed).
pub fn refuse_membarrier() {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let filter = [
        // The system call's number: `seccomp_data.nr`, at offset 0.
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_membarrier as u32,
        },
        stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with integer arguments; the filter program lives across the call,
    // which copies it.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &program as *const libc::sock_fprog,
            ),
            0,
            "seccomp filter refused"
        );
    }
    // SAFETY: membarrier takes integers (MEMBARRIER_CMD_QUERY: 0).
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, 0, 0, 0) };
    assert_eq!(rc, -1, "membarrier still allowed");
}
