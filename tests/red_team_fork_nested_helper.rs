//! Red team (session 21): RED-117. A program's fork handler registered before cohort's
//! (RED-100's setting: its `prepare` runs after cohort's, while cohort holds its locks, and
//! its `parent` before cohort's, while it still holds them) forks a helper H, which does its
//! work inside the handler and leaves (`_exit`) without ever returning into the outer fork.
//! Since RED-107's fix, cohort's `child` handler in the child of such a nested fork ends by
//! taking every private instance's locks again, for the outer fork, whose `parent` handler
//! would release them there: in H, which never returns into the outer fork, they stay held
//! for good. H's own thread enters them (it is the thread inside the fork), but a thread H
//! starts waits at its first allocation that needs one (its heap of the instance, a new size
//! class, a large allocation), and so does a thread of H's own child (a daemon's double
//! fork: H forks again inside the handler).
//!
//! Processes: the test's process forks P (`isolated`, under an alarm); P allocates from the
//! private instance [`A`] (so its pool is one of those cohort's `prepare` holds) and forks
//! (the outer fork) with [`AT`] set; the test's handler forks H inside that fork and waits
//! for it at most [`H_WAIT`] seconds (then kills it: "H hung"); the outer fork makes C,
//! which allocates from `A` on its first thread and on a new one. Each process writes what
//! it is doing into words shared with P ([`step`], which allocates nothing), so a failure
//! names the step that hung.
//!
//! This binary uses cohort as its `#[global_allocator]` (as `tests/fork.rs` does): one case
//! allocates through `std`'s `Box`. The cases on `A` start their threads with a bare
//! `pthread_create` ([`on_new_thread`]), so a thread's first allocation is from `A`, not one
//! of the standard library's from the global instance.

#[path = "red_team_common/mod.rs"]
mod red_team_common;

use cohort::Cohort;
use red_team_common::{
    isolated, passes_without_wipe_on_fork, refuse_wipe_on_fork_when_set,
    register_fork_handlers_first, shared_words, wait, wait_at_most, words_read, words_say,
};
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering::SeqCst};

#[global_allocator]
static GLOBAL: Cohort = Cohort::new();

/// The private instance the processes allocate from.
static A: Cohort<()> = Cohort::new();

/// What each allocating thread allocates and frees, one size after the other: small size
/// classes (64 B, 4000 B), medium runs (40 000 B, 1 MiB) and a large allocation (4 MiB,
/// under the large table's lock).
const SIZES: [usize; 5] = [64, 4000, 40_000, 1 << 20, 4 << 20];
/// What P allocates before the outer fork: of no size class of [`SIZES`], so each of those
/// is new to every process.
const P_SIZE: usize = 16;

/// Seconds P's handler waits for H, and H for D, before it calls the child hung (and kills
/// it): bounds against a hang only.
const H_WAIT: u64 = 20;
const D_WAIT: u64 = 10;

/// Which of the test's handlers forks H (cleared by it).
static AT: AtomicU8 = AtomicU8::new(NONE);
const NONE: u8 = 0;
const PREPARE: u8 = 1;
const PARENT: u8 = 2;
/// What H does (a `fn()` as a word, set in P before the outer fork).
static HELPER: AtomicUsize = AtomicUsize::new(0);
/// How H ended, as P's handler saw it.
static H_STATE: AtomicU8 = AtomicU8::new(NOT_FORKED);
const NOT_FORKED: u8 = 0;
const H_EXITED_0: u8 = 1;
const H_FAILED: u8 = 2;

/// The words of the steps (`SLOTS * STEP_WORDS`, a `*const AtomicU64` set in P before the
/// outer fork): a slot of [`STEP_WORDS`] for each thread of H, D and C ([`Who`]), and
/// [`OUTCOME`].
static WORDS: AtomicUsize = AtomicUsize::new(0);
const STEP_WORDS: usize = 16;
const SLOTS: usize = 8;
/// The slots of H's and D's threads, and of C's.
const HELPER_SLOTS: std::ops::Range<usize> = 0..5;
const C_SLOTS: std::ops::Range<usize> = 5..7;
/// The slot where P's handler says how H ended when it did not exit 0.
const OUTCOME: usize = 7;

/// A thread that writes its steps: into the slot of its number, as its name in [`NAMES`].
#[derive(Clone, Copy)]
struct Who(usize);

const H: Who = Who(0);
const H_THREAD: Who = Who(1);
const H_STD_THREAD: Who = Who(2);
const D: Who = Who(3);
const D_THREAD: Who = Who(4);
const C: Who = Who(5);
const C_THREAD: Who = Who(6);
const NAMES: [&str; 7] = [
    "H (forked in the handler)",
    "H's new thread",
    "H's std thread",
    "D (H's child) on its first thread",
    "D's new thread",
    "C (the outer fork's child) on its first thread",
    "C's new thread",
];

extern "C" fn prepare() {
    nest(PREPARE);
}

extern "C" fn parent() {
    nest(PARENT);
}

register_fork_handlers_first!(Some(prepare), Some(parent), None);
refuse_wipe_on_fork_when_set!();

/// Forks H when [`AT`] is `at`: H runs [`HELPER`] and leaves through `_exit`, inside the
/// handler; the handler waits for H at most [`H_WAIT`] seconds and records how it ended.
fn nest(at: u8) {
    if AT.compare_exchange(at, NONE, SeqCst, SeqCst).is_err() {
        return;
    }
    // SAFETY: set in P, before the fork, from a `fn()`.
    let helper: fn() = unsafe { std::mem::transmute::<usize, fn()>(HELPER.load(SeqCst)) };
    // SAFETY: H leaves through `_exit` from inside this handler; the handler reaps it.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: alarm has no preconditions (a child does not inherit its parent's): H
        // does not outlive the test.
        unsafe { libc::alarm(H_WAIT as u32 + 5) };
        helper();
        // SAFETY: leaves H without returning into the outer fork.
        unsafe { libc::_exit(0) };
    }
    let ended = (pid > 0).then(|| wait_at_most(pid, H_WAIT));
    match ended {
        None => fmt_step(OUTCOME, format_args!("the handler's fork of H failed")),
        Some(Some(Ok(0))) => {}
        Some(None) => fmt_step(
            OUTCOME,
            format_args!("H hung: still running {H_WAIT} s after the handler forked it (killed)"),
        ),
        Some(Some(ended)) => fmt_step(
            OUTCOME,
            format_args!("H ended {ended:?} (Err: a signal; 6 an abort, 14 its alarm)"),
        ),
    }
    let state = if ended == Some(Some(Ok(0))) {
        H_EXITED_0
    } else {
        H_FAILED
    };
    H_STATE.store(state, SeqCst);
}

/// Slot `i`'s words.
fn slot_words(i: usize) -> &'static [AtomicU64] {
    let first = WORDS.load(SeqCst) as *const AtomicU64;
    assert!(!first.is_null(), "P sets WORDS first");
    // SAFETY: set in P before the outer fork to `shared_words(SLOTS * STEP_WORDS)`, mapped
    // for the life of P and of its children.
    let all = unsafe { std::slice::from_raw_parts(first, SLOTS * STEP_WORDS) };
    &all[i * STEP_WORDS..][..STEP_WORDS]
}

/// A step's text, formatted without allocating (the allocator may be what hangs), cut at
/// [`STEP_WORDS`] words.
struct Text {
    bytes: [u8; STEP_WORDS * 8],
    len: usize,
}

impl fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..][..n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Writes `what` over slot `i`'s text.
fn fmt_step(i: usize, what: fmt::Arguments) {
    let mut text = Text {
        bytes: [0; STEP_WORDS * 8],
        len: 0,
    };
    let _ = text.write_fmt(what);
    // The whole buffer, zeros after the text: no tail of a longer text stays.
    words_say(
        slot_words(i),
        std::str::from_utf8(&text.bytes).unwrap_or("(not UTF-8)"),
    );
}

/// `who`'s step: writes `what` into its slot.
fn step(who: Who, what: fmt::Arguments) {
    fmt_step(who.0, format_args!("{}: {what}", NAMES[who.0]));
}

/// `who` failed at `what`: writes it into its slot and leaves the process (exit 1).
fn fail(who: Who, what: fmt::Arguments) -> ! {
    step(who, what);
    // SAFETY: leaves the process without its destructors.
    unsafe { libc::_exit(1) };
}

/// The texts of `slots` that were written, each in quotes.
fn last_steps(slots: std::ops::Range<usize>) -> String {
    let texts: Vec<String> = slots
        .map(|i| words_read(slot_words(i)))
        .filter(|t| !t.is_empty())
        .map(|t| format!("'{t}'"))
        .collect();
    texts.join(", ")
}

/// Allocates, writes and frees each of [`SIZES`] from [`A`] on the calling thread.
fn allocate_each(who: Who) {
    for size in SIZES {
        step(
            who,
            format_args!("allocating {size} B from the private instance"),
        );
        let p = A.malloc(size, ());
        if p.is_null() {
            fail(
                who,
                format_args!("{size} B from the private instance: null"),
            );
        }
        // SAFETY: fresh, `size` bytes.
        unsafe { p.write_bytes(1, size) };
        // SAFETY: allocated above with this size and class, freed once.
        unsafe { A.free(p, size, ()) };
    }
    step(who, format_args!("allocated and freed every size"));
}

/// `caller` runs `f(who)` on a new thread, made by a bare `pthread_create` (nothing of the
/// standard library's, which allocates from the global instance), and joins it.
fn on_new_thread(caller: Who, f: fn(Who), who: Who) {
    extern "C" fn start(job: *mut libc::c_void) -> *mut libc::c_void {
        // SAFETY: the pair `on_new_thread` passed, live until it joins this thread.
        let (f, who) = unsafe { *job.cast::<(fn(Who), Who)>() };
        f(who);
        std::ptr::null_mut()
    }
    step(who, format_args!("being started"));
    let mut job = (f, who);
    let mut thread: libc::pthread_t = 0;
    // SAFETY: `start` reads the pair, which lives until the join below.
    let made = unsafe {
        libc::pthread_create(
            &mut thread,
            std::ptr::null(),
            start,
            std::ptr::from_mut(&mut job).cast(),
        )
    };
    if made != 0 {
        fail(caller, format_args!("pthread_create: {made}"));
    }
    step(caller, format_args!("joining {}", NAMES[who.0]));
    // SAFETY: the thread made above, joined once.
    unsafe { libc::pthread_join(thread, std::ptr::null_mut()) };
}

/// H: a thread of its own allocates and frees each size from `A`.
fn thread_allocates() {
    on_new_thread(H, allocate_each, H_THREAD);
}

/// H: forks D (a daemon's double fork, still inside the handler), which allocates each
/// size from `A` on its first thread and then on a new one; H waits for D at most
/// [`D_WAIT`] seconds.
fn forks_a_daemon() {
    step(H, format_args!("forking D"));
    // SAFETY: D leaves through `_exit`; H reaps it.
    let d = unsafe { libc::fork() };
    if d < 0 {
        fail(H, format_args!("its fork of D failed"));
    }
    if d == 0 {
        // SAFETY: alarm has no preconditions: D does not outlive the test.
        unsafe { libc::alarm(D_WAIT as u32 + 5) };
        allocate_each(D);
        on_new_thread(D, allocate_each, D_THREAD);
        // SAFETY: leaves D.
        unsafe { libc::_exit(0) };
    }
    match wait_at_most(d, D_WAIT) {
        Some(Ok(0)) => step(H, format_args!("D exited 0")),
        None => fail(
            H,
            format_args!("D hung: still running {D_WAIT} s after H forked it (killed)"),
        ),
        Some(ended) => fail(H, format_args!("D ended {ended:?}")),
    }
}

/// H: allocates each size from `A` on its own thread (the thread inside the fork; size
/// classes it never used: P allocated only [`P_SIZE`] bytes).
fn allocates_on_its_own_thread() {
    allocate_each(H);
}

/// H: a thread `std::thread::spawn` starts allocates a `Box<[u8]>` of each size through
/// the global allocator (cohort's default instance of this binary).
fn std_thread_allocates() {
    step(H, format_args!("spawning a std thread"));
    let spawned = std::thread::Builder::new().spawn(|| {
        let who = H_STD_THREAD;
        for size in SIZES {
            step(
                who,
                format_args!("a Box of {size} B from the global allocator"),
            );
            let b = std::hint::black_box(vec![1u8; size].into_boxed_slice());
            if b[size - 1] != 1 {
                fail(who, format_args!("its Box of {size} B lost its bytes"));
            }
        }
        step(who, format_args!("allocated and freed every size"));
    });
    let thread = match spawned {
        Ok(thread) => thread,
        Err(e) => fail(H, format_args!("spawn: {e}")),
    };
    step(H, format_args!("joining its std thread"));
    if thread.join().is_err() {
        fail(H, format_args!("its std thread panicked"));
    }
}

/// P: allocates from `A`, then forks with H forked inside the test's handler `at` (H runs
/// `helper`); checks that H exited 0 and that the outer fork's child C allocates from `A`
/// on its first thread and on a new one.
fn nested_helper(at: u8, helper: fn()) {
    isolated(30, |report| {
        let words = shared_words(SLOTS * STEP_WORDS);
        WORDS.store(words.as_ptr() as usize, SeqCst);
        let p = A.malloc(P_SIZE, ());
        assert!(!p.is_null());
        HELPER.store(helper as usize, SeqCst);
        AT.store(at, SeqCst);
        // SAFETY: C leaves through `_exit`.
        let c = unsafe { libc::fork() };
        assert!(c >= 0, "the outer fork");
        if c == 0 {
            // SAFETY: alarm has no preconditions: C does not outlive the test.
            unsafe { libc::alarm(20) };
            allocate_each(C);
            on_new_thread(C, allocate_each, C_THREAD);
            // SAFETY: leaves C.
            unsafe { libc::_exit(0) };
        }
        let c_ended = wait(c);
        match H_STATE.load(SeqCst) {
            NOT_FORKED => report.fail("the handler did not fork H"),
            H_FAILED => report.fail(&format!(
                "{}; last steps: {}",
                words_read(slot_words(OUTCOME)),
                last_steps(HELPER_SLOTS)
            )),
            _ => {}
        }
        if c_ended != Ok(0) {
            report.fail(&format!(
                "C (the outer fork's child) ended {c_ended:?} (Err(14): its alarm, a hang); \
                 last steps: {}",
                last_steps(C_SLOTS)
            ));
        }
        // SAFETY: allocated above with this size and class, freed once.
        unsafe { A.free(p, P_SIZE, ()) };
    });
}

/// The case of the report: an earlier `prepare` handler forks H; a thread H starts
/// allocates and frees each size from the private instance, H joins it and leaves. On main
/// 7a08554: 'H hung: still running 20 s after the handler forked it (killed); last steps:
/// 'H (forked in the handler): joining H's new thread', 'H's new thread: allocating 64 B
/// from the private instance''.
#[test]
fn a_thread_of_a_helper_forked_in_an_earlier_prepare_handler_allocates() {
    nested_helper(PREPARE, thread_allocates);
}

/// A daemon's double fork: H forks D inside the handler; D allocates on its first thread
/// and on a new one. On main 7a08554 D's first thread allocates (it is the thread inside
/// the fork there too) and its new thread hangs: 'H ended Ok(1) ..; last steps: 'H (forked
/// in the handler): D hung: still running 10 s after H forked it (killed)', 'D (H's child)
/// on its first thread: joining D's new thread', 'D's new thread: allocating 64 B from the
/// private instance''.
#[test]
fn a_daemon_forked_by_a_helper_in_an_earlier_prepare_handler_allocates() {
    nested_helper(PREPARE, forks_a_daemon);
}

/// The sibling in an earlier `parent` handler (it runs before cohort's: the fork's window
/// is still open and the locks held). On main 7a08554: 'H hung: still running 20 s after
/// the handler forked it (killed); last steps: 'H (forked in the handler): joining H's new
/// thread', 'H's new thread: allocating 64 B from the private instance''.
#[test]
fn a_thread_of_a_helper_forked_in_an_earlier_parent_handler_allocates() {
    nested_helper(PARENT, thread_allocates);
}

/// Guard (passes on main 7a08554, where H's own thread enters the locks held for the outer
/// fork as the thread inside it): H starts no thread, and allocates size classes new to it,
/// medium runs and a large allocation on its own thread (under the pool's and the large
/// table's locks), which whatever H's locks become after its fork must still allow.
#[test]
fn guard_a_helper_forked_in_an_earlier_prepare_handler_allocates_new_size_classes() {
    nested_helper(PREPARE, allocates_on_its_own_thread);
}

/// The global allocator (cohort's default instance here): a `std` thread H spawns
/// allocates `Box`es. On main 7a08554 the thread hangs before its first step, in the
/// standard library's start of the thread (a free of what the spawning thread allocated
/// takes the thread's first heap: the pool's lock): 'H hung: still running 20 s after the
/// handler forked it (killed); last steps: 'H (forked in the handler): joining its std
/// thread''.
#[test]
fn a_std_thread_of_a_helper_forked_in_an_earlier_prepare_handler_allocates_boxes() {
    nested_helper(PREPARE, std_thread_allocates);
}

/// The cases above where the kernel refuses `MADV_WIPEONFORK` (no fork mark: a child is
/// told by the forks open, `fork_pending`, and the pids).
#[test]
fn without_the_fork_mark_helpers_forked_in_earlier_handlers_allocate() {
    for test in [
        "a_thread_of_a_helper_forked_in_an_earlier_prepare_handler_allocates",
        "a_daemon_forked_by_a_helper_in_an_earlier_prepare_handler_allocates",
        "a_thread_of_a_helper_forked_in_an_earlier_parent_handler_allocates",
        "a_std_thread_of_a_helper_forked_in_an_earlier_prepare_handler_allocates_boxes",
    ] {
        passes_without_wipe_on_fork(test);
    }
}
