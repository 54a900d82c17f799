//! The system-call pass: how many system calls each further malloc+free pair of `large:N`
//! makes, counted exactly by `strace -f` in a short pass that is not timed.
//!
//! Each allocator binary runs `large:N` twice under `strace -f`, with P and with 2P pairs
//! (`COHORT_BENCH_PAIRS`, P = [`PASS_BYTES`] / N, at least [`MIN_PAIRS`]), and the calls of
//! its trace are counted from the workload's start on (the process's start-up is left out:
//! its calls vary from run to run). The allocator's first rounds and the workload's own calls
//! are the same in both runs, so `(calls(2P) - calls(P)) / P` is what a pair costs in the
//! steady state, by system call name and in total. Without strace (CI installs nothing for the suite) the pass says
//! so and the rows are left out; a run that fails is reported as a failure of its
//! allocator and workload.

use super::process;
use super::report::Results;
use super::Workload;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Bytes allocated by the shorter run of each size.
const PASS_BYTES: usize = 128 << 20;
/// The fewest pairs of the shorter run.
const MIN_PAIRS: usize = 16;
/// The table the pass fills (`groups.rs`).
const GROUP: &str = "large-syscalls";

/// Pairs of the shorter run for allocations of `size` bytes.
fn pairs(size: usize) -> usize {
    (PASS_BYTES / size).max(MIN_PAIRS)
}

/// Why strace cannot count here, if it cannot.
fn strace_missing() -> Option<String> {
    match Command::new("strace").arg("-V").output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!("`strace -V` exited with {}", out.status)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("no strace here".into()),
        Err(e) => Some(format!("`strace -V`: {e}")),
    }
}

/// The system call a line of `strace -f`'s trace starts, if it starts one: `PID name(args)
/// = result` or `PID name(args <unfinished ...>` (a `<... name resumed>` line, a signal or
/// an exit starts none).
fn call_name(line: &str) -> Option<&str> {
    let line = line.trim_start();
    let call = match line.split_once(' ') {
        Some((pid, rest)) if pid.bytes().all(|b| b.is_ascii_digit()) => rest.trim_start(),
        _ => line,
    };
    let (name, _) = call.split_once('(')?;
    let plain = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    plain.then_some(name)
}

/// System calls by name in `trace`, from the first `getrusage` on: `large_pairs` reads its
/// thread's usage (the faults' baseline) right before its loop, after the process's
/// start-up, whose calls vary from run to run (glibc reads `/proc/self/maps` in as many
/// pieces as it is long).
fn calls_from_start(trace: &str) -> Result<BTreeMap<String, i64>, String> {
    let mut calls: BTreeMap<String, i64> = BTreeMap::new();
    let mut started = false;
    for name in trace.lines().filter_map(call_name) {
        started |= name == "getrusage";
        if started {
            *calls.entry(name.to_string()).or_default() += 1;
        }
    }
    if started {
        Ok(calls)
    } else {
        Err("no getrusage in the trace: the workload's start was not found".into())
    }
}

/// The system calls of one run of workload `arg` of `exe` with `pairs` pairs, by name, from
/// the workload's start on.
fn count(
    exe: &Path,
    arg: &str,
    pairs: usize,
    timeout: Duration,
) -> Result<BTreeMap<String, i64>, String> {
    let file = scratch_file(exe, arg, pairs);
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-e", "signal=none", "-o"])
        .arg(&file)
        .arg(exe)
        .arg(arg)
        .env("COHORT_BENCH_PAIRS", pairs.to_string());
    let run = process::run(cmd, timeout);
    let trace = std::fs::read_to_string(&file);
    let _ = std::fs::remove_file(&file);
    run.map_err(|e| format!("under strace: {e}"))?;
    calls_from_start(&trace.map_err(|e| format!("strace's trace: {e}"))?)
}

/// Where strace writes one run's summary.
fn scratch_file(exe: &Path, arg: &str, pairs: usize) -> PathBuf {
    let exe = exe.file_name().unwrap_or_default().to_string_lossy();
    let arg = arg.replace(':', "-");
    let name = format!("cohort-strace-{}-{exe}-{arg}-{pairs}", std::process::id());
    std::env::temp_dir().join(name)
}

/// System calls per further pair: in total, and by name (the names whose count changed).
struct PerPair {
    total: f64,
    by_name: Vec<(String, f64)>,
}

/// Runs workload `arg` (`large:N`) of `exe` with P and 2P pairs under strace.
fn per_pair(exe: &Path, arg: &str, size: usize, timeout: Duration) -> Result<PerPair, String> {
    let p = pairs(size);
    let short = count(exe, arg, p, timeout)?;
    let long = count(exe, arg, 2 * p, timeout)?;
    let diff = |name: &str| {
        let at = |m: &BTreeMap<String, i64>| m.get(name).copied().unwrap_or(0);
        (at(&long) - at(&short)) as f64 / p as f64
    };
    let by_name: Vec<(String, f64)> = long
        .keys()
        .chain(short.keys())
        .map(|name| (name.clone(), diff(name)))
        .filter(|(_, d)| *d != 0.0)
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .collect();
    Ok(PerPair {
        total: by_name.iter().fold(0.0, |sum, (_, d)| sum + d),
        by_name,
    })
}

/// Runs the pass over the `large:N` workloads among `workloads`, for each allocator, adding
/// rows to [`GROUP`] and the calls behind them as its note (or, without strace, a note under
/// the pairs' own table saying why there are no rows).
pub fn pass(
    workloads: &[&Workload],
    allocators: &[String],
    exes: &HashMap<String, PathBuf>,
    timeout: Duration,
    results: &mut Results,
) {
    let large: Vec<(&Workload, usize)> = workloads
        .iter()
        .filter_map(|wl| Some((*wl, wl.arg.strip_prefix("large:")?.parse().ok()?)))
        .collect();
    if large.is_empty() {
        return;
    }
    if let Some(why) = strace_missing() {
        eprintln!("system calls per pair not measured: {why}");
        let text = format!("System calls per pair: not measured ({why}: install strace).\n");
        results.note(large[0].0.group, text);
        return;
    }
    let mut behind = String::new();
    for (wl, size) in large {
        let row = Workload {
            arg: wl.arg,
            group: GROUP,
            label: wl.label,
        };
        for alloc in allocators {
            let t = std::time::Instant::now();
            match per_pair(&exes[alloc], wl.arg, size, timeout) {
                Ok(calls) => {
                    results.add(&row, alloc, "system calls", "calls/pair", calls.total);
                    if !calls.by_name.is_empty() {
                        let names: Vec<String> = calls
                            .by_name
                            .iter()
                            .map(|(name, n)| format!("`{name}` {n:.3}"))
                            .collect();
                        let _ = writeln!(behind, "- {}{alloc}: {}", wl.label, names.join(", "));
                    }
                }
                Err(e) => results.fail(alloc, &format!("{} (strace)", wl.arg), e),
            }
            eprintln!(
                "[strace] {:<10} {:<9} {:>6.2} s",
                wl.arg,
                alloc,
                t.elapsed().as_secs_f64()
            );
        }
    }
    if behind.is_empty() {
        behind.push_str("No allocator made a system call per pair at any size.\n");
    } else {
        behind.insert_str(0, "Calls per pair by name, where not 0:\n\n");
    }
    results.note(GROUP, behind);
}
