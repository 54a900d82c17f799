//! Red-team attacks of session 12 on the ratio tool's input and output: garbage mixes,
//! garbage mix files and outputs that cannot be written must end in a clear error (a
//! `cohort-ratio:` line on standard error and exit status 1 or 2), never a panic, an abort
//! or a silent success. A test that found a defect is `#[ignore]`d with its number (RED-n)
//! and the exact failure.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs the tool with `args` (and `--no-blocks`: the tables do not matter here).
fn ratio(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cohort-ratio"))
        .args(args)
        .arg("--no-blocks")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the tool starts")
}

/// Asserts that `args` failed with a clear error: exit status 1 or 2 (not a signal, not a
/// panic's 101), and a `cohort-ratio:` line on standard error without a panic message.
fn assert_clear_error(args: &[&str]) {
    let out = ratio(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(1 | 2))
            && err.contains("cohort-ratio:")
            && !err.contains("panicked"),
        "cohort-ratio {args:?}: {:?}, standard error:\n{err}",
        out.status
    );
}

/// A file in the system's temporary directory, unique to this process and `name`.
fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("red_team_ratio_{}_{name}", std::process::id()));
    std::fs::write(&path, bytes).expect("the temporary directory is writable");
    path
}

/// Entries that do not parse, and mix files that are not text or not files, are refused
/// with the entry or the file named.
#[test]
fn garbage_mixes_and_mix_files_are_refused_clearly() {
    for mix in [
        "x",
        "@",
        "8x1@",
        "8x1@a@b",
        "8x1:align=",
        "8x1:align=3",
        "8x1:align=0",
        "8x1:keep=101",
        "8x1:keep=100%%",
        "8x0",
        "0x8",
        "2GiBx1",
        "8x99999999999999999999999",
        "4x1:list",
        "8x1:malloc:align=8",
        "8x1:nonsense",
        "16x1@\u{e9}",
        "a,b,c,d,e,f,g,h,i",
    ] {
        assert_clear_error(&["--mix", mix]);
    }
    let nine: Vec<String> = (0..9).map(|i| format!("8x1@c{i}")).collect();
    assert_clear_error(&["--mix", &nine.join(",")]);
    // Random bytes (a fixed pseudo-random sequence), and a file valid up to a byte that
    // is not UTF-8.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..5000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let noise = temp_file("noise", &noise);
    let half = temp_file("half", b"8x1\n16x2@a\n\xff\xfe\n");
    let text_noise = temp_file("text", b"8x1 x 2 @@ :: ,,, # \n\t\r 3KiBx 7M :keep=%\n");
    for path in [&noise, &half, &text_noise] {
        assert_clear_error(&["--mix-file", path.to_str().unwrap()]);
    }
    let dir = std::env::temp_dir();
    assert_clear_error(&["--mix-file", dir.to_str().unwrap()]);
    assert_clear_error(&["--mix-file", "/nonexistent/red_team.mix"]);
    assert_clear_error(&["--capacity", "0"]);
    assert_clear_error(&["--capacity", "99999999999MiB"]);
    assert_clear_error(&["--capacity", "lots"]);
    for path in [noise, half, text_noise] {
        let _ = std::fs::remove_file(path);
    }
}

/// Requests the allocator cannot serve (a huge alignment, a region too small for the
/// mix) end in the tool's out-of-memory error, naming the entry.
#[test]
fn mixes_the_allocator_cannot_serve_end_in_a_clear_error() {
    assert_clear_error(&["--mix", "16x10:align=4611686018427387904"]);
    assert_clear_error(&["--capacity", "2MiB", "--mix", "8x1M"]);
    assert_clear_error(&["--capacity", "2MiB", "--mix", "1MiBx100"]);
    assert_clear_error(&["--capacity", "4MiB", "--mix", "100KiBx100"]);
    assert_clear_error(&["--capacity", "1"]);
}

/// RED-56: a count the tool cannot hold the pointers of (it keeps one pointer and index
/// per allocation) panics or aborts instead of a clear error. Failure on main 921aec8:
/// `8x18446744073709551615` exits 101 with `panicked at
/// library/alloc/src/raw_vec/mod.rs: capacity overflow`; `8x1000000000000M` the same;
/// `8x1000000M` aborts (SIGABRT) with `memory allocation of 16000000000000 bytes failed`
/// on a machine without that much memory (not asserted here: with overcommit it could
/// start the run).
#[test]

fn a_count_too_large_to_hold_is_refused_clearly() {
    assert_clear_error(&["--mix", "8x18446744073709551615"]);
    assert_clear_error(&["--mix", "8x1000000000000M"]);
    assert_clear_error(&["--mix", "16x10,8x18446744073709551615@other"]);
}

/// RED-57: an SVG that cannot be written is reported as success: `--svg /dev/full` exits
/// 0 with nothing on standard error, although its one write failed with ENOSPC (strace:
/// `write(3, "<svg width=\"900\" ..., 7704) = -1 ENOSPC`). The chart is lost silently.
#[test]

fn an_svg_that_cannot_be_written_is_an_error() {
    if !std::path::Path::new("/dev/full").exists() {
        return;
    }
    assert_clear_error(&["--mix", "8x1", "--svg", "/dev/full"]);
}

/// RED-57 (second half): a report that cannot be written to standard output (a full
/// disk) panics: exit 101, `panicked at library/std/src/io/stdio.rs: failed printing to
/// stdout: No space left on device (os error 28)`, text and JSON alike.
#[test]

fn a_report_that_cannot_be_written_is_a_clear_error() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        return;
    };
    for json in [false, true] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cohort-ratio"));
        cmd.args(["--mix", "8x1", "--no-blocks"])
            .env("RUST_BACKTRACE", "0");
        if json {
            cmd.arg("--json");
        }
        let out = cmd
            .stdout(full.try_clone().unwrap())
            .output()
            .expect("the tool starts");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() == Some(1)
                && err.contains("cohort-ratio:")
                && !err.contains("panicked"),
            "json {json}: {:?}, standard error:\n{err}",
            out.status
        );
    }
}
