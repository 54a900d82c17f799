//! Child processes for the tests of shared regions: a forked child that runs a closure
//! under an alarm and leaves through `_exit`, and the wait for it.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

/// Runs `f` in a forked child, which exits 0 when `f` returns and 1 when it panics (and
/// dies of SIGALRM after `timeout` seconds: a wedged lock fails the test, never hangs it).
/// Returns the child's pid. A child still running a few seconds before its alarm has its
/// threads' stacks written to the test's output by [`wait_status`] (where gdb is
/// installed; a few per test binary, one at a time: [`dump_stacks`]): a hang that shows
/// once in a CI run says where it was.
pub fn in_child(timeout: u32, f: impl FnOnce()) -> libc::pid_t {
    // SAFETY: the child runs `f` and leaves through `_exit`, without the parent's
    // destructors.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: alarm has no preconditions.
        unsafe { libc::alarm(timeout) };
        // A panic's message is written by the hook installed at load ([`CHILD_HOOK`]).
        IN_CHILD.store(true, std::sync::atomic::Ordering::Relaxed);
        // The parent's children are not this child's to wait for.
        for slot in &DEADLINES {
            slot.pid.store(0, Ordering::Relaxed);
        }
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(f));
        // SAFETY: as above.
        unsafe { libc::_exit(if outcome.is_ok() { 0 } else { 1 }) };
    }
    let alarm = u64::from(timeout) * 1000;
    // A short alarm is a test's own bound on a step, not a hang to look into. A child
    // made when every slot is taken is not looked into either.
    if alarm >= 2 * DUMP_BEFORE_ALARM_MS {
        let free = DEADLINES.iter().find(|slot| {
            slot.pid
                .compare_exchange(0, pid, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        });
        if let Some(slot) = free {
            slot.at_ms.store(monotonic_ms() + alarm, Ordering::Release);
        }
    }
    pid
}

/// True in a child of [`in_child`] (set there after the fork): [`CHILD_HOOK`]'s hook writes
/// a panic's message alone.
static IN_CHILD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Installs the panic hook when the test binary is loaded, before any thread runs: in a
/// child of [`in_child`] it writes the panic's message to the standard error itself (the
/// test harness captures the child's output with the parent's, which the child never hands
/// back), without the default hook's backtrace, whose capture takes locks of the unwinder
/// and the loader that another thread of the parent may have held at the fork (a child that
/// failed would hang there instead of saying why); elsewhere it runs the hook it replaced.
/// Not in the child: `set_hook` takes the hook's lock for writing, which a thread of the
/// parent inside a panic (a test's misuse, on purpose) held for reading at the fork: the
/// child would wait for it for ever.
#[used]
#[link_section = ".init_array"]
static CHILD_HOOK: extern "C" fn() = install_child_hook;

extern "C" fn install_child_hook() {
    note_the_dumping_process();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !IN_CHILD.load(std::sync::atomic::Ordering::Relaxed) {
            return previous(info);
        }
        let line = format!("fork child {}: {info}\n", std::process::id());
        // SAFETY: writes from a valid buffer to fd 2.
        unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
    }));
}

/// A child of [`in_child`] to look into if it is still running shortly before its alarm:
/// its pid (0: a free slot) and the time its alarm ends it ([`monotonic_ms`]).
struct Deadline {
    pid: AtomicI32,
    at_ms: AtomicU64,
}

/// The children [`in_child`] made in this process that [`wait_status`] looks into. Slots
/// taken and given back without a lock: a fork child waits for children of its own too,
/// and a lock that another thread of its parent held at the fork would never be released
/// there (a test's child, waiting in a fork handler for a helper of its own, hung so until
/// its alarm when the table was a mutex).
static DEADLINES: [Deadline; 64] = [const {
    Deadline {
        pid: AtomicI32::new(0),
        at_ms: AtomicU64::new(0),
    }
}; 64];

/// The monotonic clock in milliseconds.
fn monotonic_ms() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) },
        0
    );
    now.tv_sec as u64 * 1000 + now.tv_nsec as u64 / 1_000_000
}

/// How long (in milliseconds) before its alarm a child still running has its stacks
/// written out.
const DUMP_BEFORE_ALARM_MS: u64 = 4000;

/// How many children's stacks one test binary writes at the most ([`dump_stacks`]): a
/// hang shows in the first few; more only fill the log (and a gdb each, for seconds).
pub const MOST_STACK_DUMPS: u32 = 3;

/// Seconds one gdb may take before `timeout` ends it.
const GDB_SECS: &str = "30";

/// The process that may write its children's stacks: the test binary's process as its
/// test harness started it, not a fork child of it (its pid differs) nor the binary run
/// again by a test (0 here then). Set at load ([`note_the_dumping_process`]).
static DUMPING_PROCESS: AtomicI32 = AtomicI32::new(0);

/// Stack dumps begun in this process, and the most that ran at once.
static STACK_DUMPS: AtomicU32 = AtomicU32::new(0);
static STACK_DUMPS_AT_ONCE: AtomicU32 = AtomicU32::new(0);

/// Held by the one stack dump that runs ([`dump_stacks`]). Only the dumping process takes
/// it: no fork child does, so a child never finds it held by a thread it lacks.
static ONE_DUMP_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Notes the process at load ([`DUMPING_PROCESS`]): this one, unless its parent runs this
/// same executable (a test ran the binary again: its children are grandchildren of the
/// test binary, which write no stacks).
fn note_the_dumping_process() {
    // SAFETY: getppid and getpid have no preconditions.
    let (parent, own) = unsafe { (libc::getppid(), libc::getpid()) };
    let parents_exe = std::fs::read_link(format!("/proc/{parent}/exe"));
    let rerun = matches!(
        (parents_exe, std::fs::read_link("/proc/self/exe")),
        (Ok(theirs), Ok(ours)) if theirs == ours
    );
    DUMPING_PROCESS.store(if rerun { 0 } else { own }, Ordering::Relaxed);
}

/// The stack dumps this process began, and the most that ran at once.
pub fn stack_dumps() -> (u32, u32) {
    (
        STACK_DUMPS.load(Ordering::SeqCst),
        STACK_DUMPS_AT_ONCE.load(Ordering::SeqCst),
    )
}

/// Writes the stacks of every thread of child `pid`, still running shortly before its
/// alarm, to the standard error (gdb, attached for a moment, under `timeout`); says so
/// when gdb cannot be run, or why no stacks are written: only in the test binary's own
/// process (never in a child's: `DUMPING_PROCESS`), one at a time, at most
/// [`MOST_STACK_DUMPS`] per binary, and only of a child still running once its turn
/// comes. (An incident had 306 gdb processes at once, one per hung child and grandchild.)
fn dump_stacks(pid: libc::pid_t) {
    // SAFETY: getpid has no preconditions.
    if DUMPING_PROCESS.load(Ordering::Relaxed) != unsafe { libc::getpid() } {
        return;
    }
    let _turn = ONE_DUMP_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if waitid_unreaped(pid, libc::WNOHANG).is_some() {
        return;
    }
    let taken = STACK_DUMPS.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
        (n < MOST_STACK_DUMPS).then_some(n + 1)
    });
    if taken.is_err() {
        eprintln!("child {pid} still running shortly before its alarm (no stacks: {MOST_STACK_DUMPS} written already)");
        return;
    }
    let at_once = STACK_DUMPS_IN_PROGRESS.fetch_add(1, Ordering::SeqCst) + 1;
    STACK_DUMPS_AT_ONCE.fetch_max(at_once, Ordering::SeqCst);
    let out = std::process::Command::new("timeout")
        .args([
            GDB_SECS,
            "gdb",
            "-p",
            &pid.to_string(),
            "-batch",
            "-nx",
            "-ex",
            "thread apply all bt",
        ])
        .output();
    STACK_DUMPS_IN_PROGRESS.fetch_sub(1, Ordering::SeqCst);
    match out {
        Ok(out) => eprintln!(
            "child {pid} still running shortly before its alarm; its stacks:\n{}",
            String::from_utf8_lossy(&out.stdout)
        ),
        Err(e) => {
            eprintln!("child {pid} still running shortly before its alarm (timeout gdb: {e})")
        }
    }
}

/// Stack dumps running now ([`dump_stacks`]).
static STACK_DUMPS_IN_PROGRESS: AtomicU32 = AtomicU32::new(0);

/// Waits for child `pid`; returns its wait status.
/// A child of [`in_child`] still running shortly before its alarm has its stacks written
/// to the standard error first ([`dump_stacks`]).
pub fn wait_status(pid: libc::pid_t) -> i32 {
    let deadline = DEADLINES
        .iter()
        .find(|slot| slot.pid.load(Ordering::Acquire) == pid)
        .map(|slot| {
            let at = slot.at_ms.load(Ordering::Acquire);
            slot.pid.store(0, Ordering::Release);
            at
        });
    let mut status = 0;
    if let Some(deadline) = deadline {
        let dump_at = deadline.saturating_sub(DUMP_BEFORE_ALARM_MS);
        loop {
            // SAFETY: polls our own child.
            let got = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            assert!(got == 0 || got == pid, "waitpid({pid}): {got}");
            if got == pid {
                return status;
            }
            if monotonic_ms() >= dump_at {
                dump_stacks(pid);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    status
}

/// Waits for child `pid` and checks that it exited 0.
pub fn wait_ok(pid: libc::pid_t) {
    let status = wait_status(pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child {pid} failed: status {status:#x}"
    );
}

/// Kills child `victim` with SIGKILL once `progress` (which it advances) reaches `steps`,
/// waits for it, and checks that it died of the kill (not before, of a failure). A victim
/// that ends before (a failure of its own, or its alarm) fails the test at once: it would
/// never get there.
pub fn kill_after(
    victim: libc::pid_t,
    progress: &std::sync::atomic::AtomicU64,
    steps: u64,
    what: &str,
) {
    let at = || progress.load(std::sync::atomic::Ordering::Relaxed);
    let mut spins = 0u32;
    while at() < steps {
        // A system call now and then only: the spin's own pace sets where the kill lands.
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(1024) && has_ended(victim) && at() < steps {
            ended_first(victim, what, &format!("at step {} of {steps}", at()));
        }
        std::hint::spin_loop();
    }
    kill_and_reap(victim, what);
}

/// Waits until `flag` is nonzero (the child set it), then kills child `pid` with SIGKILL
/// and waits for it, checking it died of that (not of a failure of its own). A child that
/// ends before it sets the flag fails the test at once.
pub fn kill_once_set(pid: libc::pid_t, flag: &std::sync::atomic::AtomicU64) {
    let set = || flag.load(std::sync::atomic::Ordering::Acquire) != 0;
    while !set() {
        if has_ended(pid) && !set() {
            ended_first(pid, "the child", "before it set its flag");
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    kill_and_reap(pid, "the child");
}

/// True once child `pid` has ended; it is left to be waited for ([`waitid_unreaped`]).
fn has_ended(pid: libc::pid_t) -> bool {
    waitid_unreaped(pid, libc::WNOHANG).is_some()
}

/// `waitid` for child `pid` to end, with `WNOWAIT` and `flags` (`WNOHANG`: returns at
/// once): how it ended, `Ok(exit code)` or `Err(signal)`, leaving it to be waited for;
/// `None` while it runs (or when a signal interrupted the wait).
pub fn waitid_unreaped(pid: libc::pid_t, flags: libc::c_int) -> Option<Result<i32, i32>> {
    // SAFETY: a zeroed siginfo is a valid out-parameter.
    let mut info: libc::siginfo_t = unsafe { core::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOWAIT | flags;
    // SAFETY: our own child; `info` is ours.
    let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
    if r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
        return None;
    }
    assert_eq!(r, 0, "waitid({pid}): {}", std::io::Error::last_os_error());
    // SAFETY: filled by waitid (its pid stays 0 while the child runs).
    let (who, status) = unsafe { (info.si_pid(), info.si_status()) };
    if who == 0 {
        return None;
    }
    Some(if info.si_code == libc::CLD_EXITED {
        Ok(status)
    } else {
        Err(status)
    })
}

/// Reaps child `victim`, which ended before it was to be killed, and fails with how.
fn ended_first(victim: libc::pid_t, what: &str, when: &str) -> ! {
    let status = wait_status(victim);
    panic!("{what}: the victim ended {when}, before it was killed: status {status:#x}");
}

/// Kills child `victim` with SIGKILL, waits for it, and checks that it died of the kill
/// (not before, of a failure of its own).
pub fn kill_and_reap(victim: libc::pid_t, what: &str) {
    // SAFETY: our own child.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let status = wait_status(victim);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "{what}: the victim failed before it was killed: {status:#x}"
    );
}

/// The number of mappings of this process (lines of `/proc/self/maps`).
pub fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .expect("maps")
        .lines()
        .count()
}

/// Runs this test binary's test `test` again in a process of its own (with `--exact`,
/// `--nocapture`, one thread, ignored tests included) with the environment variables
/// `envs` set: for a case that changes its whole process (a seccomp filter, a lock of all
/// memory, a mapping no fork child gets). Returns its output. The process is ended with
/// SIGALRM after [`RERUN_ALARM_SECS`] (`test_support::bounded_output`; its status says
/// so): a hang fails the test, never hangs it.
pub fn rerun(test: &str, envs: &[(&str, &str)]) -> std::process::Output {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command.args([
        "--exact",
        test,
        "--nocapture",
        "--test-threads=1",
        "--include-ignored",
    ]);
    for &(k, v) in envs {
        command.env(k, v);
    }
    test_support::bounded_output(command)
}

/// Seconds a test run again by [`rerun`] may take (the same bound as the shared runs
/// again of `test_support`).
pub const RERUN_ALARM_SECS: u32 = test_support::RERUN_ALARM_SECS;

/// A description of a child's wait `status` unless it exited 0.
pub fn failure(tag: &str, status: i32) -> Option<String> {
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        return None;
    }
    Some(match libc::WIFSIGNALED(status) {
        true => format!("{tag}: killed by signal {}", libc::WTERMSIG(status)),
        false => format!("{tag}: status {status:#x} (see its output)"),
    })
}
