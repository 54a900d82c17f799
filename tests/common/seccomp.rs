//! Seccomp filters for the tests: of what cohort does without `membarrier` or without
//! `madvise(MADV_WIPEONFORK)`, and a thread stopped at a chosen system call.

/// Installs, for the calling thread and the threads it spawns from now on, a seccomp
/// filter under which `membarrier` fails with `ENOSYS` (every other call is allowed).
pub fn refuse_membarrier() {
    let mut filter = [
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
    install(&mut filter);
    // SAFETY: membarrier takes integers (MEMBARRIER_CMD_QUERY: 0).
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, 0, 0, 0) };
    assert_eq!(rc, -1, "membarrier still allowed");
}

/// Installs, as [`refuse_membarrier`], a filter under which `madvise(.., MADV_WIPEONFORK)`
/// fails with `EINVAL`, as on a kernel before Linux 4.14 (other advice is allowed). No
/// allocation: a constructor may call it before any allocator is set up.
#[allow(dead_code)]
pub fn refuse_wipe_on_fork() {
    let jump_to_allow_unless = |k: u32, skip: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt: 0,
        jf: skip,
        k,
    };
    let load = |offset: u32| stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset);
    let mut filter = [
        // The system call's number: `seccomp_data.nr`, at offset 0.
        load(0),
        jump_to_allow_unless(libc::SYS_madvise as u32, 3),
        // The low half of `seccomp_data.args[2]` (arguments from offset 16, 8 bytes each).
        load(16 + 2 * 8),
        jump_to_allow_unless(libc::MADV_WIPEONFORK as u32, 1),
        stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::EINVAL as u32,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    install(&mut filter);
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

/// A filter instruction without jumps.
fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

/// Installs the seccomp filter program `filter` for the calling thread and the threads it
/// spawns from now on.
fn install(filter: &mut [libc::sock_filter]) {
    let program = libc::sock_fprog {
        len: filter.len() as u16,
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

/// A system call [`trap_in_this_thread`] stops: number `nr`, whose arguments `args` (index,
/// value of the argument's low 32 bits) all match; the `SIGSYS` it raises carries `data`
/// in `si_errno`.
#[allow(dead_code)]
pub struct Trap<'a> {
    pub nr: libc::c_long,
    pub args: &'a [(usize, u32)],
    pub data: u16,
}

/// Installs, for the calling thread alone (and the threads it spawns from now on), a
/// seccomp filter under which each of `traps` does not run but raises `SIGSYS` in the
/// thread (`SECCOMP_RET_TRAP`: the program's `SIGSYS` handler, [`on_sigsys`], gets the
/// trap's `data` in `si_errno`); every other call runs. A test's way to stop a thread at a
/// chosen system call, whatever locks it holds there, with no timing.
#[allow(dead_code)]
pub fn trap_in_this_thread(traps: &[Trap]) {
    // Compares with `k`; a mismatch jumps to the next trap's first instruction, `next`,
    // from instruction `at`.
    let jeq = |k: u32, at: usize, next: usize| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt: 0,
        jf: (next - at - 1) as u8,
        k,
    };
    let load = |offset: u32| stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset);
    let mut filter = Vec::new();
    for trap in traps {
        let next = filter.len() + 2 + 2 * trap.args.len() + 1;
        // `seccomp_data`: the call's number at offset 0, its arguments from offset 16
        // (8 bytes each, the low half first).
        filter.push(load(0));
        filter.push(jeq(trap.nr as u32, filter.len(), next));
        for &(index, value) in trap.args {
            filter.push(load(16 + 8 * index as u32));
            filter.push(jeq(value, filter.len(), next));
        }
        filter.push(stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_TRAP | u32::from(trap.data),
        ));
    }
    filter.push(stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW));
    install(&mut filter);
}

/// Makes `handler` this process's `SIGSYS` handler (with `SA_SIGINFO`: see
/// [`trap_in_this_thread`]).
#[allow(dead_code)]
pub fn on_sigsys(handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)) {
    // SAFETY: a zeroed sigaction is a valid start; the handler is a plain function.
    unsafe {
        let mut action: libc::sigaction = core::mem::zeroed();
        action.sa_sigaction = handler as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGSYS, &action, core::ptr::null_mut()),
            0
        );
    }
}
