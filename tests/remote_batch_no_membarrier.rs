//! Without `membarrier` (a kernel before 4.14, or a seccomp filter that refuses it, as
//! here) a thread keeps no chain of remote frees: every remote free is pushed to its block
//! at once, so that the quick way of the remote free, whose holder's fence is a compiler
//! fence, never acts where that fence is not enough (`crate::remote`'s module docs: a
//! chain only once the fences are known asymmetric). Its own test binary: the fences'
//! choice is made once per process, at the first remote free, and this test must make it
//! under the filter.

mod common;

use cohort::Cohort;
use common::batches::frees_not_at_their_block_while_the_freer_runs;

cohort::lifetime_classes! {
    enum Life { A }
}

/// Installs, for the calling thread and the threads it spawns from now on, a seccomp
/// filter under which `membarrier` fails with `ENOSYS` (every other call is allowed).
fn refuse_membarrier() {
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

/// Before (a chain kept whatever the fences' mode, its holder's fence a full fence) this
/// read 1 to 8: the freer's last chain pending; the quick way then relied on testing the
/// mode on every remote free.
#[test]
fn without_membarrier_every_remote_free_reaches_its_block_at_once() {
    refuse_membarrier();
    let a = Cohort::<Life>::new();
    assert_eq!(
        frees_not_at_their_block_while_the_freer_runs(&a, Life::A),
        0,
        "slots another thread freed had not reached their block while it ran \
         (a chain kept without membarrier)"
    );
}
