//! Red team (session 22) of the fork handlers' hold of the batches of remote frees: a
//! thread that joins a private pool while another thread forks. Its heap is made without
//! the pool's lock (`Heap::create`, after `adopt` found no abandoned heap) and registered
//! at its end, so it can be registered after cohort's `prepare` handler walked the pool's
//! heaps: that handler holds no batch of it, and the heap's thread, or a flusher on another
//! thread (any thread out of memory, asking for the statistics or a verify), may be inside
//! its batch when the process is copied. The child gets the batch as that thread left it:
//! taken over by a flusher it does not have (`flushing` and `wants` set: its own flush of
//! the batch, at its next verify, statistics or out of memory, waits for ever), or its
//! entries half changed (a chain pushed and still in its entry: pushed again in the
//! child, its slots handed out twice).
//!
//! This is how a fork child of `red_team_claims::fork_children_amid_claims_verify` hung
//! until its alarm in CI: the owner thread's freer is a new thread every round, which makes
//! a heap when the last one's thread has not left it yet, and the claimer flushes every
//! batch each time it finds the region full.
//!
//! The schedule is forced, with no timing: the joining thread is stopped by a seccomp trap
//! at the `mmap` of its heap (the id reserved, nothing registered yet); the fork's
//! `prepare` handler registered before cohort's (it runs after cohort's: cohort holds the
//! pool's lock and the batches of the heaps registered then) lets it go on, registering
//! its heap and freeing slots another thread allocated (a chain pending in its batch), and
//! then lets a third thread ask for the statistics, whose flush takes the batch over and is
//! stopped by a trap at its fence (`membarrier`). The child then verifies and allocates.
//!
//! x86-64 only: the trap's handler makes the `mmap` itself and writes its result where the
//! system call's would have gone (the thread's `rax`).
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

#[path = "red_team_common/mod.rs"]
mod red_team_common;

use cohort::Cohort;
use red_team_common::{in_child, isolated, on_sigsys, register_fork_handlers_first};
use red_team_common::{trap_in_this_thread, wait, Trap};
use std::sync::atomic::{AtomicU8, Ordering::SeqCst};

static PRIVATE: Cohort<()> = Cohort::new();

/// Set for the one fork whose earlier `prepare` handler runs the schedule (cleared by it).
static ARMED: AtomicU8 = AtomicU8::new(0);

/// The joining thread (the freer): [`STOPPED`] in its heap's `mmap`, [`RUNNING`] once let
/// go, [`FREED`] its frees made, [`WAITS`] seen waiting (a `sched_yield`: for a lock) before
/// they were, [`UNSTOPPED`] its frees made with no stop (the setup failed).
static FREER: AtomicU8 = AtomicU8::new(0);
/// The thread that asks for the statistics (the flusher): [`HOLDS`] stopped at the fence of
/// its flush (the batch taken over), [`WAITS`] seen waiting first, [`UNSTOPPED`] done with
/// no stop.
static FLUSHER: AtomicU8 = AtomicU8::new(0);
/// Set by the earlier `prepare` handler: the freer's `mmap`, and the flusher, go on.
static FREER_GO: AtomicU8 = AtomicU8::new(0);
static FLUSHER_GO: AtomicU8 = AtomicU8::new(0);

const STOPPED: u8 = 1;
const RUNNING: u8 = 2;
const FREED: u8 = 3;
const WAITS: u8 = 4;
const HOLDS: u8 = 5;
const UNSTOPPED: u8 = 6;

/// The traps' data ([`on_trap`]): which thread made which call.
const FREER_MMAP: i32 = 1;
const FREER_YIELD: i32 = 2;
const FLUSHER_FENCE: i32 = 3;
const FLUSHER_YIELD: i32 = 4;

/// The flags of a heap's mapping (`os::map`: private, anonymous, not reserved).
const HEAP_MAP_FLAGS: i32 = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;

/// The earlier `prepare` handler (it runs after cohort's): with [`ARMED`], lets the freer
/// register its heap and free, then lets the flusher take the freer's batch over, and
/// returns once both are where the schedule wants them (or seen waiting: the setup failed,
/// which the test reports).
extern "C" fn prepare_first() {
    if ARMED.swap(0, SeqCst) == 0 {
        return;
    }
    FREER_GO.store(1, SeqCst);
    while !matches!(FREER.load(SeqCst), FREED | WAITS) {
        std::thread::yield_now();
    }
    if FREER.load(SeqCst) == WAITS {
        return;
    }
    FLUSHER_GO.store(1, SeqCst);
    while FLUSHER.load(SeqCst) == 0 {
        std::thread::yield_now();
    }
}

register_fork_handlers_first!(Some(prepare_first), None, None);

/// The traps' `SIGSYS`: the freer's first heap `mmap` waits until the earlier `prepare`
/// handler lets it go, and every one is made here (with the same arguments but
/// `MAP_NORESERVE`, which the trap does not match); the flusher's fence stops it for good
/// (the batch taken over); a yield says the thread waits for something.
extern "C" fn on_trap(_: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel's siginfo for this signal.
    let data = unsafe { (*info).si_errno };
    match data {
        FREER_MMAP => {
            if FREER.compare_exchange(0, STOPPED, SeqCst, SeqCst).is_ok() {
                while FREER_GO.load(SeqCst) == 0 {
                    // SAFETY: no preconditions (not trapped on this thread).
                    unsafe { libc::usleep(1000) };
                }
                FREER.store(RUNNING, SeqCst);
            }
            // SAFETY: the context of the trapped `mmap` on this thread.
            unsafe { mmap_for_trapped(context) };
        }
        FREER_YIELD => {
            let _ = FREER.compare_exchange(RUNNING, WAITS, SeqCst, SeqCst);
        }
        FLUSHER_FENCE => {
            FLUSHER.store(HOLDS, SeqCst);
            loop {
                // SAFETY: pause has no preconditions.
                unsafe { libc::pause() };
            }
        }
        _ => {
            let _ = FLUSHER.compare_exchange(0, WAITS, SeqCst, SeqCst);
        }
    }
}

/// Makes the trapped `mmap` whose registers are in `context` (x86-64: arguments in `rdi`,
/// `rsi`, `rdx`, `r10`, `r8`, `r9`), without `MAP_NORESERVE`, and writes its result (or
/// `-errno`) to `rax`, which the interrupted call returns.
///
/// # Safety
/// `context` is the `ucontext_t` of a `SIGSYS` handler's trapped `mmap`.
unsafe fn mmap_for_trapped(context: *mut libc::c_void) {
    // SAFETY: the handler's context (caller).
    let regs = unsafe { &mut (*context.cast::<libc::ucontext_t>()).uc_mcontext.gregs };
    let arg = |r: libc::c_int| regs[r as usize];
    // SAFETY: the arguments cohort passed; a fresh mapping, as the call would have made.
    let p = unsafe {
        libc::mmap(
            arg(libc::REG_RDI) as *mut libc::c_void,
            arg(libc::REG_RSI) as usize,
            arg(libc::REG_RDX) as libc::c_int,
            arg(libc::REG_R10) as libc::c_int & !libc::MAP_NORESERVE,
            arg(libc::REG_R8) as libc::c_int,
            arg(libc::REG_R9) as libc::off_t,
        )
    };
    regs[libc::REG_RAX as usize] = if p == libc::MAP_FAILED {
        -i64::from(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::ENOMEM),
        )
    } else {
        p as i64
    };
}

/// An owner thread allocates 16 slots of 64 bytes and stays (its heap owns their block); a
/// new thread (the freer) frees them, its heap made across the fork's `prepare` handler; a
/// third thread's statistics take the freer's batch over and stop at its fence; the fork's
/// child verifies, allocates a thousand slots (each written and checked) and verifies
/// again. On claimhunt's base 9356bc8 the child hangs in its verify's flush of the freer's
/// batch (a `flushing` its copy keeps for ever) until its alarm: 'the fork child: Err(14)'.
#[test]
fn a_heap_joined_across_prepare_with_its_batch_taken_over_leaves_the_child_whole() {
    isolated(60, |report| {
        on_sigsys(on_trap);
        let (slots_to_freer, slots) = std::sync::mpsc::channel::<Vec<usize>>();
        std::thread::spawn(move || {
            let mine: Vec<usize> = (0..16).map(|_| PRIVATE.malloc(64, ()) as usize).collect();
            slots_to_freer.send(mine).unwrap();
            loop {
                std::thread::park();
            }
        });
        std::thread::spawn(move || {
            let slots = slots.recv().unwrap();
            trap_in_this_thread(&[
                Trap {
                    nr: libc::SYS_mmap,
                    args: &[
                        (2, (libc::PROT_READ | libc::PROT_WRITE) as u32),
                        (3, HEAP_MAP_FLAGS as u32),
                    ],
                    data: FREER_MMAP as u16,
                },
                Trap {
                    nr: libc::SYS_sched_yield,
                    args: &[],
                    data: FREER_YIELD as u16,
                },
            ]);
            for p in slots {
                assert_ne!(p, 0);
                // SAFETY: allocated by the owner with this size and class, freed once.
                unsafe { PRIVATE.free(p as *mut u8, 64, ()) };
            }
            if FREER
                .compare_exchange(RUNNING, FREED, SeqCst, SeqCst)
                .is_err()
            {
                let _ = FREER.compare_exchange(0, UNSTOPPED, SeqCst, SeqCst);
            }
            loop {
                std::thread::park();
            }
        });
        std::thread::spawn(|| {
            while FLUSHER_GO.load(SeqCst) == 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            trap_in_this_thread(&[
                Trap {
                    nr: libc::SYS_membarrier,
                    args: &[],
                    data: FLUSHER_FENCE as u16,
                },
                Trap {
                    nr: libc::SYS_sched_yield,
                    args: &[],
                    data: FLUSHER_YIELD as u16,
                },
            ]);
            let _ = PRIVATE.stats();
            let _ = FLUSHER.compare_exchange(0, UNSTOPPED, SeqCst, SeqCst);
        });
        // The freer stopped in its heap's `mmap` (its first free's join), or done without.
        while !matches!(FREER.load(SeqCst), STOPPED | UNSTOPPED) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if FREER.load(SeqCst) == UNSTOPPED {
            report.fail("setup: the freer's heap was made without the trapped mmap");
        }
        ARMED.store(1, SeqCst);
        let child = in_child(20, || {
            // SAFETY: the child has one thread.
            unsafe { PRIVATE.verify() }.expect("verify in the child");
            let got: Vec<usize> = (0..1000).map(|_| PRIVATE.malloc(64, ()) as usize).collect();
            for (i, &p) in got.iter().enumerate() {
                assert_ne!(p, 0, "allocation {i} in the child");
                // SAFETY: a live 64-byte slot of the child's.
                unsafe { (p as *mut u64).write(p as u64 ^ i as u64) };
            }
            for (i, &p) in got.iter().enumerate() {
                // SAFETY: as above.
                let word = unsafe { (p as *const u64).read() };
                assert_eq!(word, p as u64 ^ i as u64, "slot {p:#x} handed out twice");
                // SAFETY: allocated above with this size and class, freed once.
                unsafe { PRIVATE.free(p as *mut u8, 64, ()) };
            }
            // SAFETY: as above.
            unsafe { PRIVATE.verify() }.expect("verify in the child, after");
        });
        let ended = wait(child);
        let (freer, flusher) = (FREER.load(SeqCst), FLUSHER.load(SeqCst));
        if (freer, flusher) != (FREED, HOLDS) {
            report.fail(&format!(
                "setup: the freer ended at {freer} (3: freed, 4: waited), the flusher at \
                 {flusher} (5: stopped holding the batch, 4: waited, 6: not stopped); the \
                 fork child: {ended:?}"
            ));
        }
        if ended != Ok(0) {
            report.fail(&format!(
                "the fork child: {ended:?} (Ok: exit code, Err: signal; 14 is SIGALRM: it hung)"
            ));
        }
    });
}
