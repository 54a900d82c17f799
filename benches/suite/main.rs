//! The benchmark runner: `cargo bench -p cohort-benches --bench suite` runs the whole suite.
//!
//! It builds the per-allocator binaries (`benches/alloc_*.rs`), runs every workload of
//! `benches/workloads` in a fresh process per allocator, several times with the allocators in a
//! rotating order, runs the instruction counts (`benches/iai.rs`), and writes CSV, markdown tables
//! and SVG plots to `bench-results/`. Settings, all optional environment variables:
//!
//! - `COHORT_BENCH_RUNS` (5): process runs per workload and allocator; figures are medians.
//! - `COHORT_BENCH_SCALE` (1): scales object counts; 0.05 makes a quick smoke run.
//! - `COHORT_BENCH_ONLY`: comma-separated workload prefixes to run (`churn,list`).
//! - `COHORT_BENCH_ALLOCATORS`: comma-separated subset of `system,mimalloc,jemalloc,snmalloc,cohort`.
//! - `COHORT_BENCH_IAI` (1): 0 skips the instruction counts.
//! - `COHORT_BENCH_STRACE` (1): 0 skips the system-call pass (`syscalls.rs`: the `large:N`
//!   workloads under `strace -f`, not timed; without strace the suite says so and goes on).
//! - `COHORT_BENCH_SHM` (1): 0 skips the shared-memory comparison (`benches/shm/run.sh`:
//!   cohort on a named region beside Boost.Interprocess; its table goes under the others).
//!   It runs too when `COHORT_BENCH_ONLY` names `shm`, and only then if that is set.
//! - `COHORT_BENCH_TIMEOUT` (90): seconds before a workload process is killed.
//! - `COHORT_BENCH_OUT` (`bench-results`): the output folder.
//! - `COHORT_BENCH_COMMIT`: the cohort version named in the report (default: `git describe`).

mod groups;
mod plot;
mod process;
mod report;
mod syscalls;

use report::{Results, ALLOCATORS};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One process invocation: the workload argument, the table it belongs to and its row prefix.
pub struct Workload {
    pub arg: &'static str,
    pub group: &'static str,
    pub label: &'static str,
}

const fn w(arg: &'static str, group: &'static str, label: &'static str) -> Workload {
    Workload { arg, group, label }
}

/// Every workload, in the order they run (see `benches/workloads/lib.rs`).
const WORKLOADS: &[Workload] = &[
    w("churn", "churn", ""),
    w("threads", "threads", ""),
    w("pc", "producer-consumer", ""),
    w("ring", "handover", "lock-free ring: "),
    w("channel", "handover", "sync_channel: "),
    w("list:16", "linked-list", "16 B nodes: "),
    w("list:24", "linked-list", "24 B nodes: "),
    w("ratio:8", "memory-ratio", "8 B: "),
    w("ratio:16", "memory-ratio", "16 B: "),
    w("ratio:24", "memory-ratio", "24 B: "),
    w("ratio:48", "memory-ratio", "48 B: "),
    w("ratio:100", "memory-ratio", "100 B: "),
    w("ratio:1000", "memory-ratio", "1000 B: "),
    w("grow:1", "realloc-growth", "1 B steps: "),
    w("grow:4096", "realloc-growth", "4 KiB steps: "),
    w("vec:1", "vec-growth", "1 B pushes: "),
    w("vec:4096", "vec-growth", "4 KiB extends: "),
    w("large:32768", "large-pairs", "32 KiB: "),
    w("large:262144", "large-pairs", "256 KiB: "),
    w("large:1048576", "large-pairs", "1 MiB: "),
    w("large:8388608", "large-pairs", "8 MiB: "),
    w("medium:400", "medium-churn", "400 live: "),
    w("mlarge:4", "mlarge", "5-25 MiB, 4 threads: "),
    w("burst", "burst", ""),
    w("handoff", "cross-thread", "task hand-off: "),
    w(
        "spread:1000",
        "cross-thread",
        "1-1000 B through a channel: ",
    ),
    w(
        "spread:16000",
        "cross-thread",
        "1-16000 B through a channel: ",
    ),
    w("shortlived", "cross-thread", "short-lived threads: "),
    w("lifetime", "lifetime", ""),
    w("classes", "lifetime", ""),
    w("release", "lifetime", ""),
];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_list(name: &str) -> Option<Vec<String>> {
    let v = std::env::var(name).ok()?;
    Some(v.split(',').map(|s| s.trim().to_string()).collect())
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.arg("bench")
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    cmd
}

/// Builds the allocator binaries and returns their paths by allocator name.
fn build(allocators: &[String]) -> HashMap<String, PathBuf> {
    let mut cmd = cargo();
    cmd.args(["--no-run", "--message-format=json"]);
    for a in allocators {
        cmd.args(["--bench", &format!("alloc_{a}")]);
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo bench --no-run");
    assert!(
        out.status.success(),
        "building the allocator binaries failed"
    );
    let mut paths = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let (Some(name), Some(exe)) = (json_str(line, "name"), json_str(line, "executable")) else {
            continue;
        };
        if let Some(a) = name.strip_prefix("alloc_") {
            paths.insert(a.to_string(), PathBuf::from(exe));
        }
    }
    paths
}

/// The first string value of `"key":"..."` in one line of cargo's JSON (no escapes expected).
fn json_str<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// The measured benchmark of `benches/iai.rs` repeats each operation this many times.
const IAI_OPS: f64 = 1000.0;

/// Runs `benches/iai.rs` and returns `(allocator, operation, instructions)` per benchmark.
fn run_iai() -> Result<Vec<(String, String, f64)>, String> {
    let out = cargo()
        .args(["--bench", "iai"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "cargo bench -p cohort-benches --bench iai: {}",
            out.status
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut counts = Vec::new();
    let mut current = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("iai::fast_paths::") {
            let alloc = rest.split(' ').next().unwrap_or_default().to_string();
            let op = rest
                .split_once("(Op :: ")
                .and_then(|(_, op)| op.strip_suffix(')'))
                .unwrap_or_default()
                .to_string();
            current = Some((alloc, op));
        } else if let (Some(v), Some((alloc, op))) =
            (line.trim().strip_prefix("Instructions:"), current.take())
        {
            let n = v.trim().split('|').next().unwrap_or_default();
            counts.push((alloc, op, n.parse().map_err(|_| format!("bad count {v}"))?));
        }
    }
    Ok(counts)
}

/// Runs `benches/shm/run.sh` (cohort on a named shared-memory region beside
/// Boost.Interprocess, with the suite's runs and scale) writing `shm.md` into `out_dir`;
/// returns that table.
fn run_shm(top: &Path, out_dir: &Path, runs: usize) -> Result<String, String> {
    let status = Command::new("bash")
        .arg(top.join("benches/shm/run.sh"))
        .env("COHORT_BENCH_OUT", out_dir)
        .env("COHORT_BENCH_RUNS", runs.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| format!("bash benches/shm/run.sh: {e}"))?;
    if !status.success() {
        return Err(format!("bash benches/shm/run.sh: {status}"));
    }
    std::fs::read_to_string(out_dir.join("shm.md")).map_err(|e| format!("shm.md: {e}"))
}

/// The markdown section of the shared-memory comparison ([`run_shm`]'s table, or why there
/// is none).
fn shm_section(table: Result<String, String>) -> String {
    let body = table.unwrap_or_else(|e| format!("Not measured: {e}.\n"));
    format!(
        "\n## Shared memory: cohort beside Boost.Interprocess\n\nA named region \
         (`SharedCohort`) against `managed_shared_memory` (`benches/shm`, see below).\n\n{body}"
    )
}

const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
const START: &str = "<!-- results: start (written by the suite) -->";
const END: &str = "<!-- results: end -->";

/// Replaces the results section of benches/README.md (between its markers) with `md`.
fn paste_into_readme(md: &str) {
    let Ok(readme) = std::fs::read_to_string(README) else {
        return;
    };
    let (Some(a), Some(b)) = (readme.find(START), readme.find(END)) else {
        return;
    };
    let md = md.replace("](", "](../bench-results/");
    let text = format!("{}{START}\n{md}\n{}", &readme[..a], &readme[b..]);
    std::fs::write(README, text).expect("write benches/README.md");
}

/// Draws the plots of the results in `dir` again (their markdown and CSV stay as the run
/// wrote them).
fn replot(dir: &Path) {
    let results = Results::read(dir).expect("read results.csv");
    let scratch = std::env::temp_dir().join(format!("cohort-replot-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("create a scratch folder");
    let setup = report::Setup {
        runs: 0,
        scale: 0.0,
        elapsed: Duration::ZERO,
    };
    results.write(&scratch, &setup).expect("draw the plots");
    for entry in std::fs::read_dir(&scratch).expect("read the scratch folder") {
        let path = entry.expect("a scratch file").path();
        if path.extension().is_some_and(|e| e == "svg") {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).expect("copy a plot");
            eprintln!("redrawn: {}", dir.join(path.file_name().unwrap()).display());
        }
    }
    std::fs::remove_dir_all(&scratch).expect("remove the scratch folder");
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches` runs bench targets without `--bench`: not the 10-minute suite.
        eprintln!("the suite runs under `cargo bench -p cohort-benches --bench suite`");
        return;
    }
    // `-- --replot DIR`: the plots drawn again from the CSV files of an earlier run in DIR
    // (cheap: no workload runs), written beside them.
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--replot") {
        let dir = PathBuf::from(args.get(at + 1).expect("--replot DIR"));
        replot(&dir);
        return;
    }
    let started = Instant::now();
    let runs: usize = env_or("COHORT_BENCH_RUNS", 5);
    let scale: f64 = env_or("COHORT_BENCH_SCALE", 1.0);
    let timeout = Duration::from_secs(env_or("COHORT_BENCH_TIMEOUT", 90));
    let allocators = env_list("COHORT_BENCH_ALLOCATORS")
        .unwrap_or_else(|| ALLOCATORS[..5].iter().map(|s| s.to_string()).collect());
    let only = env_list("COHORT_BENCH_ONLY");
    // The repository's top level, above this package.
    let top = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out_dir = PathBuf::from(env_or(
        "COHORT_BENCH_OUT",
        top.join("bench-results").display().to_string(),
    ));
    std::env::set_var("COHORT_BENCH_SCALE", scale.to_string());

    let workloads: Vec<&Workload> = WORKLOADS
        .iter()
        .filter(|w| {
            only.as_ref()
                .is_none_or(|o| o.iter().any(|p| w.arg.starts_with(p.as_str())))
        })
        .collect();
    // Nothing to build when only the shared-memory comparison runs.
    let exes = if workloads.is_empty() {
        HashMap::new()
    } else {
        build(&allocators)
    };
    let mut results = Results::default();
    for run in 0..runs {
        for wl in &workloads {
            for i in 0..allocators.len() {
                // Rotate the order so no allocator always runs first (or after a heavy one).
                let alloc = &allocators[(i + run) % allocators.len()];
                if results.failed(alloc, wl.arg) {
                    continue;
                }
                let t = Instant::now();
                match process::run_workload(&exes[alloc], wl.arg, timeout) {
                    Ok(lines) => {
                        for (metric, unit, v) in lines {
                            results.add(wl, alloc, &metric, &unit, v);
                        }
                    }
                    Err(e) => results.fail(alloc, wl.arg, e),
                }
                eprintln!(
                    "[run {}/{runs}] {:<10} {:<9} {:>6.2} s",
                    run + 1,
                    wl.arg,
                    alloc,
                    t.elapsed().as_secs_f64()
                );
            }
        }
    }
    if env_or("COHORT_BENCH_STRACE", 1) != 0 {
        syscalls::pass(&workloads, &allocators, &exes, timeout, &mut results);
    }
    if env_or("COHORT_BENCH_IAI", 1) != 0 {
        match run_iai() {
            Ok(counts) => results.set_iai(counts, IAI_OPS),
            Err(e) => results.fail("all", "iai", e),
        }
    }
    let setup = report::Setup {
        runs,
        scale,
        elapsed: started.elapsed(),
    };
    std::fs::create_dir_all(&out_dir).expect("create the results folder");
    let mut md = results.write(&out_dir, &setup).expect("write the results");
    let shm_asked = only.as_ref().is_some_and(|o| o.iter().any(|p| p == "shm"));
    if shm_asked || (only.is_none() && env_or("COHORT_BENCH_SHM", 1) != 0) {
        let out_dir = out_dir.canonicalize().expect("the results folder");
        md.push_str(&shm_section(run_shm(top, &out_dir, runs)));
    }
    println!("{md}");
    if std::env::var_os("COHORT_BENCH_OUT").is_none() {
        paste_into_readme(&md);
    }
    eprintln!(
        "suite finished in {:.0} s; results in {}",
        setup.elapsed.as_secs_f64(),
        out_dir.display()
    );
}
