//! Child processes that run this same executable again: an example measuring each
//! allocator in a fresh process, a test whose case must abort the process (misuse through
//! `GlobalAlloc`, which must not unwind). Each is bounded ([`bounded_output`]): a child
//! that hangs is ended with SIGALRM after [`RERUN_ALARM_SECS`], and its test fails
//! instead of hanging.

use crate::raw_thread;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Seconds a run of this executable again may take before [`bounded_output`] ends it with
/// SIGALRM (which [`how_it_ended`] names "hung"): far past any such run's time on a loaded
/// machine, far below a CI run's bound (60 minutes). A hang fails its test, never hangs it.
pub const RERUN_ALARM_SECS: u32 = 900;

/// A command that runs this executable again with `args`.
fn this_executable(args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.args(args);
    cmd
}

/// Runs `cmd` as `Command::output` does (its standard output and error collected, no
/// standard input), and sends it SIGALRM if it still runs [`RERUN_ALARM_SECS`] after its
/// start (a watchdog thread of this process; the child's status then says so). The bound
/// is kept by the parent: the command stays one the standard library starts without
/// `fork` (no `pre_exec`), so the child never copies this process's memory (a fork marks
/// every private page copy-on-write: a test beside it measuring its own page faults saw
/// thousands more).
pub fn bounded_output(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("start the child process");
    let pid = child.id() as libc::pid_t;
    let (ended, ended_seen) = mpsc::channel::<()>();
    // A raw thread: this may run in a fork child (`raw_thread`).
    let watchdog = raw_thread::spawn(move || {
        let bound = Duration::from_secs(u64::from(RERUN_ALARM_SECS));
        if ended_seen.recv_timeout(bound) == Err(mpsc::RecvTimeoutError::Timeout) {
            // SAFETY: kill has no memory preconditions; the child is not reaped yet
            // (`ended` is sent only after its wait).
            unsafe { libc::kill(pid, libc::SIGALRM) };
        }
    });
    let out = child.wait_with_output();
    // The watchdog may have sent its signal between the child's end and here: to a pid
    // just reaped (reused only after the whole pid space wraps).
    drop(ended);
    watchdog.join().expect("the watchdog");
    out.expect("wait for the child process")
}

/// Runs this executable again with `args` (and `var=value` in its environment when given)
/// and waits for it.
fn rerun(args: &[&str], env: Option<(&str, &str)>) -> Output {
    let mut cmd = this_executable(args);
    if let Some((var, value)) = env {
        cmd.env(var, value);
    }
    bounded_output(cmd)
}

/// Runs this executable again with `args` and returns its standard output. Panics with
/// the child's standard error if it fails.
pub fn run_child(args: &[&str]) -> String {
    let out = rerun(args, None);
    assert!(
        out.status.success(),
        "child {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The case this process runs as a child of [`abort_in_child`] (the value of `var`), or
/// `None` in the parent.
pub fn child_case(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

/// Runs the test `test` of this test binary again, alone, in a child process with `var`
/// set to `case` (the test reads it with [`child_case`]); asserts that the child was killed
/// by `SIGABRT` and returns its standard error.
pub fn abort_in_child(test: &str, var: &str, case: &str) -> String {
    let args = ["--exact", test, "--nocapture", "--test-threads=1"];
    let out = rerun(&args, Some((var, case)));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{case}: {:?}, stderr:\n{stderr}",
        out.status
    );
    stderr
}

/// [`abort_in_child`] for a misuse case that writes `child: misusing {pointer}` to its
/// standard error before the misuse and `child: the misuse returned` after it: `None` when
/// the child aborted with cohort's message naming that pointer, never past the misuse;
/// else the failure, with the child's standard error.
pub fn misuse_unnamed(test: &str, var: &str, case: &str) -> Option<String> {
    let stderr = abort_in_child(test, var, case);
    let named = stderr
        .lines()
        .find_map(|l| l.strip_prefix("child: misusing "))
        .is_some_and(|p| stderr.contains("cohort: bad free") && stderr.contains(p));
    (!named || stderr.contains("the misuse returned")).then(|| format!("{case}: {stderr}"))
}

/// Runs the test `test` of this test binary again, alone, in a child process with the
/// variables `remove` taken out of its environment and `vars` set; returns its (stdout,
/// stderr). Panics, showing both, when the child fails.
pub fn test_in_child(test: &str, remove: &[&str], vars: &[(&str, &str)]) -> (String, String) {
    let mut cmd = this_executable(&["--exact", test, "--nocapture", "--test-threads=1"]);
    for var in remove {
        cmd.env_remove(var);
    }
    for (var, value) in vars {
        cmd.env(var, value);
    }
    let out = bounded_output(cmd);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "{test} with {vars:?}: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// How a child process ended, for a failure message: its status (a case's `alarm` named:
/// "hung (SIGALRM)") and the lines of its standard error `stderr` that contain one of
/// `marks`.
pub fn how_it_ended(status: &ExitStatus, stderr: &str, marks: &[&str]) -> String {
    let how = match status.signal() {
        Some(libc::SIGALRM) => "hung (SIGALRM)".to_string(),
        _ => format!("{status:?}"),
    };
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| marks.iter().any(|m| l.contains(m)))
        .collect();
    format!("{how} {said:?}")
}

/// Runs this test binary's test `test` again once per case, alone in a process of its own
/// (`--exact`, `--nocapture`, one thread, ignored tests included), with `var` set to the
/// case's text: for cases that change their whole process (a seccomp filter, fork handlers
/// registered before the first instance). `cases` are (name, text). Returns the failures:
/// each case whose process did not exit 0 having printed "done", as "name: how it ended"
/// ([`how_it_ended`], with the standard error's lines that contain one of `marks`).
pub fn failed_cases(
    test: &str,
    var: &str,
    cases: impl IntoIterator<Item = (String, String)>,
    marks: &[&str],
) -> Vec<String> {
    let args = [
        "--exact",
        test,
        "--nocapture",
        "--test-threads=1",
        "--include-ignored",
    ];
    cases
        .into_iter()
        .filter_map(|(name, text)| {
            let out = rerun(&args, Some((var, &text)));
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let done = out.status.success() && stdout.contains("done");
            (!done).then(|| format!("{name}: {}", how_it_ended(&out.status, &stderr, marks)))
        })
        .collect()
}
