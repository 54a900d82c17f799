//! Red team (session 21) of RED-117: a fork made inside a `prepare` handler registered
//! before cohort's, whose child (N) goes on into the outer fork, and which has a thread of
//! its own by then: a library's `child` handler registered after cohort's (the usual way to
//! restart a worker thread in a fork child) starts one in N, since the nested fork runs
//! every handler. RED-117 left N's locks free (its repair releases them and takes none
//! again for the outer fork, which N goes on into without a `prepare` of cohort's), so the
//! outer fork copies N while that thread may hold a lock: N's child (G) inherits the lock
//! held by a thread it does not have.
//!
//! The thread is stopped by a seccomp trap at the `mprotect` that commits a new block's
//! unit (a carve, under the pool's lock), or at the `membarrier` of a flush of another
//! heap's batch of remote frees (the batch taken over: no lock held), or seen waiting for a
//! lock (its `sched_yield`), whichever comes first: no timing. Processes: the test's child P forks with [`NEST`] set
//! (the outer fork); the earlier `prepare` handler forks N inside it; N goes on and the
//! outer fork makes G.

#[path = "red_team_common/mod.rs"]
mod red_team_common;

use cohort::Cohort;
use red_team_common::{in_child, on_sigsys, register_fork_handlers_first, trap_in_this_thread};
use red_team_common::{wait, Trap};
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering::SeqCst};
use test_support::raw_thread;

static PRIVATE: Cohort<()> = Cohort::new();

/// Whether the earlier `prepare` handler forks (cleared by it).
static NEST: AtomicU8 = AtomicU8::new(0);
/// 1 from the nested fork until it returns (the `child` handlers of the nested fork run
/// in N with it set: the later `child` handler starts the thread then).
static IN_NESTED_FORK: AtomicU8 = AtomicU8::new(0);
/// 1 in N once its nested fork returned, and in G (its copy).
static IS_N: AtomicU8 = AtomicU8::new(0);
/// N's thread: 0 not stopped yet, [`WAITS`] seen waiting for a lock, [`HOLDS`] stopped
/// inside a carve or a flush, [`DONE`] its work done with no stop (the setup failed).
static THREAD: AtomicU8 = AtomicU8::new(0);
const WAITS: u8 = 1;
const HOLDS: u8 = 2;
const DONE: u8 = 3;
/// What N's worker does: [`CARVE`] (allocates from a size class with no block) or
/// [`FLUSH`] (asks for the statistics, which flush the other heaps' batches).
static WORK: AtomicU8 = AtomicU8::new(CARVE);
const CARVE: u8 = 0;
const FLUSH: u8 = 1;
/// How N ended, as P's handler saw it (`wait` status, or -1 before).
static N_STATUS: AtomicI32 = AtomicI32::new(-1);

/// The unit a carve commits (`mprotect(unit, 2 MiB, PROT_READ | PROT_WRITE)`).
const UNIT: u32 = 2 << 20;

extern "C" fn prepare_first() {
    if NEST.swap(0, SeqCst) == 0 {
        return;
    }
    IN_NESTED_FORK.store(1, SeqCst);
    // SAFETY: fork in a handler (glibc 2.35 on allows it); N goes on, P reaps it.
    let pid = unsafe { libc::fork() };
    IN_NESTED_FORK.store(0, SeqCst);
    assert!(pid >= 0, "the nested fork");
    if pid == 0 {
        // SAFETY: alarm has no preconditions (not inherited through fork).
        unsafe { libc::alarm(60) };
        // The thread is stopped, holding a lock or waiting for one, before N goes on.
        while THREAD.load(SeqCst) == 0 {
            std::thread::yield_now();
        }
        IS_N.store(1, SeqCst);
        return;
    }
    let mut status = 0;
    // SAFETY: reaps N.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    N_STATUS.store(status, SeqCst);
}

/// In G (before cohort's `child` handler, which may hang there): the alarm that ends G if
/// it hangs.
extern "C" fn child_first() {
    if IS_N.load(SeqCst) == 1 {
        // SAFETY: alarm has no preconditions.
        unsafe { libc::alarm(30) };
    }
}

register_fork_handlers_first!(Some(prepare_first), None, Some(child_first));

/// The later `child` handler: in N, starts a worker thread that allocates.
extern "C" fn child_later() {
    if IN_NESTED_FORK.load(SeqCst) == 1 {
        raw_thread::spawn(worker);
    }
}

/// N's worker: traps its carve's commit, its flush's fence and its yields (see
/// [`on_trap`]), then does its [`WORK`].
fn worker() {
    trap_in_this_thread(&[
        Trap {
            nr: libc::SYS_mprotect,
            args: &[(1, UNIT), (2, (libc::PROT_READ | libc::PROT_WRITE) as u32)],
            data: 1,
        },
        Trap {
            nr: libc::SYS_membarrier,
            args: &[],
            data: 1,
        },
        Trap {
            nr: libc::SYS_sched_yield,
            args: &[],
            data: 2,
        },
    ]);
    if WORK.load(SeqCst) == CARVE {
        assert!(!PRIVATE.malloc(128, ()).is_null());
    } else {
        let _ = PRIVATE.stats();
    }
    let _ = THREAD.compare_exchange(0, DONE, SeqCst, SeqCst);
}

/// The worker's `SIGSYS`: a commit or a fence stops it there for good (it holds the pool's
/// lock, or a batch it took over); a yield says it waits for a lock, and it goes on.
extern "C" fn on_trap(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel's siginfo for this signal.
    let data = unsafe { (*info).si_errno };
    if data == 1 {
        THREAD.store(HOLDS, SeqCst);
        loop {
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
        }
    }
    let _ = THREAD.compare_exchange(0, WAITS, SeqCst, SeqCst);
}

/// P allocates (its instance has a block of 64-byte slots), then forks with the nested
/// fork in the earlier `prepare` handler; N's worker allocates 128-byte slots (a carve),
/// and G 256-byte ones (another carve). G must allocate and leave. On lead 960396d: 'N
/// (the nested child) ended with status 0x1600' (exit 22: the worker was stopped inside
/// its carve, N went on into the outer fork, and G hung until its alarm: the pool's lock
/// held by a thread G does not have). On 7a08554 (RED-107's re-prepare in N) it passes:
/// the worker waits for the lock N's repair took again for the outer fork (exit 10), but
/// there a helper N that never goes on into the outer fork hangs its threads (RED-117).
/// RED-118 (known limit, reported): G's repair finds the lock held by a thread it does not
/// have, in a copy no `prepare` of cohort's held locks for, and stops G with a message
/// (SIGABRT: exit 25) instead of hanging; where the worker did not hold it, G allocates.
#[test]
fn the_outer_forks_child_of_a_nested_child_with_a_thread_allocates_or_is_stopped() {
    nested_child_with_a_worker(CARVE, || !PRIVATE.malloc(256, ()).is_null());
}

/// P makes a batch of remote frees pending on its thread's heap (frees 8 slots another
/// thread allocated), then forks with the nested fork in the earlier `prepare` handler;
/// N's worker asks for the statistics, whose flush takes N's first thread's batch over and
/// is stopped at its fence (`membarrier`): no lock is held, so G's repair (RED-118's check
/// of the locks) lets G go on, with its own batch still taken over (`flushing`, `wants`)
/// by a thread it does not have. G then asks for the statistics, whose flush of G's own
/// batch waits for that flusher. On lead 313b13e: 'N (the nested child) ended with status
/// 0x1600' (exit 22: the worker stopped in its flush; G hung until its alarm, SIGALRM).
/// Expected: G's statistics (exit 20), or G stopped with cohort's report (exit 25), as for
/// a held lock: the repair's check now counts a batch in use as held (RED-118's sibling).
#[test]
fn the_outer_forks_child_of_a_nested_child_whose_thread_flushes_reads_statistics_or_is_stopped() {
    nested_child_with_a_worker(FLUSH, || {
        PRIVATE.stats().heads.iter().all(|h| h.live < 1000)
    });
}

/// P's child of the test allocates (its instance has a block of 64-byte slots; with
/// [`FLUSH`], 8 slots another thread allocated freed: a batch pending), then forks with
/// the nested fork in the earlier `prepare` handler; N's worker does `work` and is stopped
/// ([`on_trap`]); N goes on and G runs `in_g` (true: done). N's exit code tells P how G
/// ended (see the message).
fn nested_child_with_a_worker(work: u8, in_g: fn() -> bool) {
    let pid = in_child(90, || {
        WORK.store(work, SeqCst);
        assert!(!PRIVATE.malloc(64, ()).is_null());
        if work == FLUSH {
            remote_frees_pending();
        }
        on_sigsys(on_trap);
        // SAFETY: a plain function, registered after cohort's handlers.
        unsafe { libc::pthread_atfork(None, None, Some(child_later)) };
        NEST.store(1, SeqCst);
        // SAFETY: every child leaves through `_exit`.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork");
        let in_n = IS_N.load(SeqCst) == 1;
        if child == 0 {
            // C (P's child) or G.
            let done = in_g();
            // SAFETY: leaves the child without its parent's destructors.
            unsafe { libc::_exit(i32::from(!done)) };
        }
        if in_n {
            let code = match wait(child) {
                Ok(0) => 0,
                Ok(_) => 3,
                Err(libc::SIGALRM) => 2,
                Err(libc::SIGABRT) => 5,
                Err(_) => 4,
            };
            // 10 + how N's worker was stopped.
            let code = code + 10 * i32::from(THREAD.load(SeqCst));
            // SAFETY: leaves N.
            unsafe { libc::_exit(code) };
        }
        assert_eq!(wait(child), Ok(0), "the outer child (of P) failed");
        let status = N_STATUS.load(SeqCst);
        assert!(status >= 0, "the nested fork did not run");
        let code = libc::WEXITSTATUS(status);
        assert!(
            libc::WIFEXITED(status) && (code % 10 == 0 || code == 25),
            "N (the nested child) ended with status {status:#x} (exit code: 10 when its \
             worker waited for a lock, 20 when it was stopped inside a carve or a flush, 30 \
             when it was not (the setup failed); plus 2: G hung (SIGALRM), 3: G's work \
             failed, 4: G died of another signal, 5: G was stopped by cohort's report, \
             expected only when the worker held the lock)"
        );
    });
    assert_eq!(wait(pid), Ok(0), "the test's child failed");
}

/// This thread's heap gets a batch of remote frees pending: another thread allocates 8
/// slots and, still alive (its heap owns their block), hands them over; this thread frees
/// them.
fn remote_frees_pending() {
    let (slots, freed) = (std::sync::mpsc::channel(), std::sync::Barrier::new(2));
    raw_thread::scope(|s| {
        s.spawn(|| {
            let mine: Vec<usize> = (0..8).map(|_| PRIVATE.malloc(48, ()) as usize).collect();
            slots.0.send(mine).unwrap();
            freed.wait();
        });
        for p in slots.1.recv().unwrap() {
            assert_ne!(p, 0);
            // SAFETY: allocated by the other thread with this size and class, freed once.
            unsafe { PRIVATE.free(p as *mut u8, 48, ()) };
        }
        freed.wait();
    });
}
