//! A seccomp filter for the tests of what cohort does without `membarrier`, or without
//! `madvise(MADV_WIPEONFORK)`.

/// Installs, for the calling thread and the threads it spawns from now on, a seccomp
/// filter under which `membarrier` fails with `ENOSYS` (every other call is allowed).
#[allow(dead_code)]
pub fn refuse_membarrier() {
    refuse(libc::SYS_membarrier, None, libc::ENOSYS);
    // SAFETY: membarrier takes integers (MEMBARRIER_CMD_QUERY: 0).
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, 0, 0, 0) };
    assert_eq!(rc, -1, "membarrier still allowed");
}

/// Installs, as [`refuse_membarrier`], a filter under which `madvise(.., MADV_WIPEONFORK)`
/// fails with `EINVAL`, as on a kernel before Linux 4.14 (other advice is allowed).
#[allow(dead_code)]
pub fn refuse_wipe_on_fork() {
    refuse(
        libc::SYS_madvise,
        Some(libc::MADV_WIPEONFORK as u32),
        libc::EINVAL,
    );
    // SAFETY: a fresh private page of ours, unmapped after.
    unsafe {
        let page = libc::mmap(
            core::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(page, libc::MAP_FAILED);
        let rc = libc::madvise(page, 4096, libc::MADV_WIPEONFORK);
        libc::munmap(page, 4096);
        assert_eq!(rc, -1, "MADV_WIPEONFORK still allowed");
    }
}

/// Installs a filter under which system call `nr` (with its third argument's low 32 bits
/// equal to `third`, when given) fails with `errno`.
fn refuse(nr: libc::c_long, third: Option<u32>, errno: i32) {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    // Jumps to the last statement (allow) from statement `at`, in a filter of `len`.
    let skip_to_allow = |at: usize, len: usize| (len - 1 - (at + 1)) as u8;
    let len = if third.is_some() { 6 } else { 4 };
    let jump_unless = |at: usize, k: u32| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt: 0,
        jf: skip_to_allow(at, len),
        k,
    };
    let load = |offset: u32| stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset);
    // No allocation: a constructor may call this before any allocator is set up.
    let mut filter = [stmt(0, 0); 6];
    filter[0] = load(0); // The system call's number: `seccomp_data.nr`, at offset 0.
    filter[1] = jump_unless(1, nr as u32);
    let mut at = 2;
    if let Some(third) = third {
        // The low half of `seccomp_data.args[2]` (args at offset 16, 8 bytes each).
        filter[2] = load(16 + 2 * 8);
        filter[3] = jump_unless(3, third);
        at = 4;
    }
    filter[at] = stmt(
        libc::BPF_RET | libc::BPF_K,
        libc::SECCOMP_RET_ERRNO | errno as u32,
    );
    filter[at + 1] = stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW);
    assert_eq!(at + 2, len);
    let program = libc::sock_fprog {
        len: len as u16,
        filter: filter.as_mut_ptr(),
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
}
