//! Red team (session 22) of the fork handlers' hold of the batches of remote frees: a heap
//! that joins a private pool while a thread forks. Cohort's `prepare` handler holds the
//! pool's lock and takes the batch of every heap registered when it walks the pool. A heap
//! is made without the pool's lock (`Heap::create`, once `adopt` found no abandoned heap),
//! and was registered at its end without it too: one registered after that walk had its
//! batch left to its thread, or to a flusher on another thread (any thread out of memory,
//! asking for the statistics or a verify), which could be inside it when the process was
//! copied. The child got the batch taken over by a flusher it does not have (`flushing`
//! and `wants` set: its next flush of it, at its verify, statistics or out of memory,
//! waited for ever), or its entries half changed. So did a heap the forking thread itself
//! made inside the fork (a program's fork handler's first allocation, RED-105's setting).
//!
//! This is how a fork child of `red_team_claims::fork_children_amid_claims_verify` hung
//! until its alarm in CI: the owner thread's freer is a new thread every round, which
//! makes a heap when the last one's thread has not left it yet, and the claimer flushes
//! every batch each time it finds the region full.
//!
//! The schedule is forced, with no timing. The heap is made by another thread's explicit
//! join, stopped by a seccomp trap at the heap's `mmap` (the id reserved, nothing
//! registered yet), or by the forking thread inside the fork. The fork's `prepare` handler registered before
//! cohort's (it runs after cohort's) lets the other thread go on, or makes the forking
//! thread's heap, and frees 16 slots an owner thread allocated through it; then a third
//! thread asks for the statistics, whose flush takes a batch with frees pending over and
//! is stopped by a trap at its fence (`membarrier`), or waits (the batch held, or its frees
//! pushed). The child frees the slots whose free had not returned at the fork (each
//! returned free is the parent's: in the child it happened or never did), verifies, must
//! end empty (no slot lost in a batch), and allocates a thousand slots, each written and
//! checked.
//!
//! x86-64 only: the trap's handler makes the `mmap` itself and writes its result where the
//! system call's would have gone (the thread's `rax`).
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

#[path = "red_team_common/mod.rs"]
mod red_team_common;

use cohort::Cohort;
use red_team_common::{in_child, isolated, on_sigsys, register_fork_handlers_first};
use red_team_common::{trap_in_this_thread, wait, Report, Trap};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::SeqCst};

static PRIVATE: Cohort<()> = Cohort::new();

/// Which thread frees through a heap made across the fork's start: [`OTHER_THREAD`] or
/// [`FORKING_THREAD`]; 0 outside the one armed fork (cleared by the earlier `prepare`
/// handler).
static ARMED: AtomicU8 = AtomicU8::new(0);
const OTHER_THREAD: u8 = 1;
const FORKING_THREAD: u8 = 2;

/// The owner's slots, for the freeing thread (addresses; 0: not yet).
static SLOTS: [AtomicUsize; SLOT_COUNT] = [const { AtomicUsize::new(0) }; SLOT_COUNT];
const SLOT_COUNT: usize = 16;
/// How many of the slots' frees had returned (in the child: before the fork).
static FREES_RETURNED: AtomicUsize = AtomicUsize::new(0);

/// The other thread that frees (the freer): [`STOPPED`] in its heap's `mmap`, [`RUNNING`]
/// once let go, [`FREED`] its frees made, [`WAITS`] seen waiting (a `sched_yield`: for a
/// lock) before they were, [`UNSTOPPED`] its frees made with no stop (the setup failed).
static FREER: AtomicU8 = AtomicU8::new(0);
/// The thread that asks for the statistics (the flusher): [`HOLDS`] stopped at the fence of
/// its flush (a batch taken over), [`WAITS`] seen waiting first.
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

/// The earlier `prepare` handler (it runs after cohort's), in the armed fork: the freeing
/// thread frees the slots through a heap made now (the other thread, let go from its
/// `mmap`, or this one, the forking thread); then, unless the other thread waits, the
/// flusher goes, and the handler returns once it is stopped or waits.
extern "C" fn prepare_first() {
    match ARMED.swap(0, SeqCst) {
        OTHER_THREAD => {
            FREER_GO.store(1, SeqCst);
            while !matches!(FREER.load(SeqCst), FREED | WAITS) {
                std::thread::yield_now();
            }
            if FREER.load(SeqCst) == WAITS {
                return;
            }
        }
        FORKING_THREAD => free_the_slots(|p| {
            // SAFETY: allocated by the owner with this size and class, freed once.
            unsafe { PRIVATE.free(p, 64, ()) }
        }),
        _ => return,
    }
    FLUSHER_GO.store(1, SeqCst);
    while FLUSHER.load(SeqCst) == 0 {
        std::thread::yield_now();
    }
}

register_fork_handlers_first!(Some(prepare_first), None, None);

/// Frees each of the owner's slots with `free` (remote frees: the owner's block), counting
/// each that returned.
fn free_the_slots(free: impl Fn(*mut u8)) {
    for slot in &SLOTS {
        let p = slot.load(SeqCst);
        assert_ne!(p, 0);
        free(p as *mut u8);
        FREES_RETURNED.fetch_add(1, SeqCst);
    }
}

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

/// The other thread's heap, made across cohort's `prepare` (stopped in its `mmap` before
/// the fork, let go inside it), then the forking thread's own, made inside the fork: each
/// child verifies, ends empty and allocates (see the module docs). On claimhunt's base
/// 9356bc8 the first child hangs in its verify's flush of the freer's batch until its
/// alarm ('the fork child: Err(14)'); with b5f9ee4's repair alone (the child empties a
/// batch a thread was inside) it loses the 16 slots of that batch: 'the child's region is
/// not empty' (freer 3, flusher 5). With the heap registered under the pool's lock but the
/// forking thread's own batch not taken at its registration inside the fork, the second
/// child loses them so (freer 0, flusher 5).
#[test]
fn a_heap_made_across_a_forks_start_leaves_the_child_whole_and_able_to_end_empty() {
    isolated(60, |report| {
        heap_made_across_a_forks_start(OTHER_THREAD, report)
    });
    isolated(60, |report| {
        heap_made_across_a_forks_start(FORKING_THREAD, report)
    });
}

/// The scenario of the module docs, with the slots freed by `freeing` (a thread's name).
fn heap_made_across_a_forks_start(freeing: u8, report: &Report) {
    on_sigsys(on_trap);
    std::thread::spawn(move || {
        for slot in &SLOTS {
            slot.store(PRIVATE.malloc(64, ()) as usize, SeqCst);
        }
        loop {
            std::thread::park();
        }
    });
    while SLOTS[SLOT_COUNT - 1].load(SeqCst) == 0 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    if freeing == OTHER_THREAD {
        std::thread::spawn(|| {
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
            // An explicit join (the heap's `mmap` trapped), then its frees: a free that
            // joined the thread's heap would be in progress at the fork, and in checked
            // mode has its slot marked free already (in the child it is neither live nor
            // free, and no caller could tell whether to free it); an allocation would wait
            // for the pool's lock the fork holds.
            let join = PRIVATE.join(0).expect("a join");
            free_the_slots(|p| {
                // SAFETY: allocated by the owner with this size and class, freed once.
                unsafe { join.free(p, 64, ()) }
            });
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
        // The freer stopped in its heap's `mmap` (its first free's join), or done without.
        while !matches!(FREER.load(SeqCst), STOPPED | UNSTOPPED) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if FREER.load(SeqCst) == UNSTOPPED {
            report.fail("setup: the freer's heap was made without the trapped mmap");
        }
    }
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
    });
    ARMED.store(freeing, SeqCst);
    let child = in_child(20, || {
        for slot in &SLOTS[FREES_RETURNED.load(SeqCst)..] {
            // SAFETY: allocated by the owner with this size and class; its free had not
            // returned at the fork: freed once, here.
            unsafe { PRIVATE.free(slot.load(SeqCst) as *mut u8, 64, ()) };
        }
        // SAFETY: the child has one thread.
        unsafe { PRIVATE.verify() }.expect("verify in the child");
        assert!(
            PRIVATE.is_empty(),
            "the child's region is not empty (a batch's frees lost): {}",
            PRIVATE.stats()
        );
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
    if ended != Ok(0) {
        report.fail(&format!(
            "the fork child: {ended:?} (Ok: exit code, Err: signal; 14 is SIGALRM: it \
             hung); the freer {} (0: the forking thread, 3: freed, 4: waited), the \
             flusher {} (5: stopped holding a batch, 4: waited), {} frees returned \
             before the fork",
            FREER.load(SeqCst),
            FLUSHER.load(SeqCst),
            FREES_RETURNED.load(SeqCst)
        ));
    }
    if FLUSHER.load(SeqCst) == 0 && FREER.load(SeqCst) != WAITS {
        report.fail("setup: the flusher never went");
    }
}
