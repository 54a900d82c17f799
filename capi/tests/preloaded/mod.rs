//! What the tests that run this test binary again under `LD_PRELOAD=libcohort.so` share:
//! the library to preload, the process's first definition of a C function, and the re-run
//! of a case under it.

// Each test binary uses some of these.
#![allow(dead_code)]

use std::ffi::{c_void, CString};
use std::os::unix::process::ExitStatusExt;

/// The library a build of this package made: `target/<profile>/libcohort.so` of this
/// test's profile, else the release one, else the debug one (`.ci/capi.sh` builds both
/// before it runs `cargo test -p cohort-c`: a test build of this package does not make its
/// `cdylib`).
pub fn library() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let target = profile.parent().expect("target");
    [
        profile.to_path_buf(),
        target.join("release"),
        target.join("debug"),
    ]
    .into_iter()
    .map(|dir| dir.join("libcohort.so"))
    .find(|lib| lib.exists())
    .expect("libcohort.so: build it first (cargo build -p cohort-c)")
}

/// The process's first definition of the function `name` (the preloaded library's).
pub fn symbol(name: &str) -> *mut c_void {
    let c = CString::new(name).unwrap();
    // SAFETY: a NUL-terminated name.
    let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) };
    assert!(!f.is_null(), "{name} not found");
    f
}

/// Runs this test binary's test `test` again in a child process under
/// `LD_PRELOAD=`[`library`], with `var=case` in its environment (the case it runs): whether
/// it stopped with cohort's report (`SIGABRT`, "cohort: " on standard error), and the line
/// it printed after "answer " (if it did).
pub fn rerun_case(
    test: &str,
    var: &str,
    case: &str,
) -> (bool, Option<String>, std::process::Output) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            test,
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env(var, case)
        .env("LD_PRELOAD", library())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reported = out.status.signal() == Some(libc::SIGABRT) && stderr.contains("cohort: ");
    // (The harness prints "test <name> ... " before the child's line.)
    let answer = String::from_utf8_lossy(&out.stdout)
        .split("answer ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .map(str::to_owned);
    (reported, answer, out)
}
