//! Collected results: medians, spread, ratios to System, and the CSV / markdown / SVG output.

use super::groups::{Bars, GROUPS};
use super::plot;
use super::Workload;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Column order. "cohort (classes)" and "cohort (release_class)" are cohort's own lifetime-class
/// API in the lifetime table; "cohort (global)" (through `std::alloc`), "cohort (called)"
/// (behind calls never inlined), "cohort (two instances)" and "cohort (direct API)" are
/// cohort again in the instruction counts.
pub const ALLOCATORS: [&str; 12] = [
    "system",
    "mimalloc",
    "jemalloc",
    "snmalloc",
    "cohort",
    "cohort (classes)",
    "cohort (release_class)",
    "cohort (global)",
    "cohort (called)",
    "cohort (two instances)",
    "cohort (direct API)",
    "cohort (shared region)",
];

/// Every value of one metric: per allocator, one value per run.
struct Metric {
    group: &'static str,
    row: String,
    unit: String,
    values: BTreeMap<usize, Vec<f64>>,
}

/// Per-operation instruction counts from iai-callgrind.
struct IaiRow {
    op: String,
    /// Allocator column -> (measured total, net per operation).
    counts: BTreeMap<usize, (f64, f64)>,
}

#[derive(Default)]
pub struct Results {
    metrics: Vec<Metric>,
    iai: Vec<IaiRow>,
    failures: Vec<(String, String, String)>,
    /// Text under a group's table, by group name.
    notes: BTreeMap<&'static str, String>,
}

/// How the suite ran, for the report header.
pub struct Setup {
    pub runs: usize,
    pub scale: f64,
    pub elapsed: Duration,
}

struct Stats {
    median: f64,
    spread: f64,
}

fn stats(v: &[f64]) -> Stats {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    let spread = if median != 0.0 {
        (s[n - 1] - s[0]) / median.abs() * 100.0
    } else {
        0.0
    };
    Stats { median, spread }
}

fn column(alloc: &str) -> usize {
    ALLOCATORS
        .iter()
        .position(|a| *a == alloc)
        .unwrap_or_else(|| panic!("unknown allocator {alloc}"))
}

/// Three significant digits, no exponent.
fn num(v: f64) -> String {
    let digits = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else if v.abs() >= 1.0 {
        2
    } else {
        3
    };
    format!("{v:.digits$}")
}

impl Results {
    /// The metric `row` of `group`, added (with its unit) when new.
    fn metric(&mut self, group: &'static str, row: String, unit: &str) -> &mut Metric {
        let at = self
            .metrics
            .iter()
            .position(|m| m.group == group && m.row == row);
        let i = at.unwrap_or_else(|| {
            self.metrics.push(Metric {
                group,
                row,
                unit: unit.to_string(),
                values: BTreeMap::new(),
            });
            self.metrics.len() - 1
        });
        &mut self.metrics[i]
    }

    /// The instruction-count row of `op`, added when new.
    fn iai_row(&mut self, op: String) -> &mut IaiRow {
        let at = self.iai.iter().position(|r| r.op == op);
        let i = at.unwrap_or_else(|| {
            self.iai.push(IaiRow {
                op,
                counts: BTreeMap::new(),
            });
            self.iai.len() - 1
        });
        &mut self.iai[i]
    }

    pub fn add(&mut self, wl: &Workload, alloc: &str, metric: &str, unit: &str, value: f64) {
        let alloc = match wl.arg {
            "classes" => "cohort (classes)",
            "release" => "cohort (release_class)",
            _ => alloc,
        };
        let row = format!("{}{metric}", wl.label);
        self.metric(wl.group, row, unit)
            .values
            .entry(column(alloc))
            .or_default()
            .push(value);
    }

    /// Sets the text printed under `group`'s table (markdown, ending with a newline).
    pub fn note(&mut self, group: &'static str, text: String) {
        self.notes.insert(group, text);
    }

    pub fn fail(&mut self, alloc: &str, workload: &str, why: String) {
        eprintln!("FAILED: {workload} with {alloc}: {why}");
        self.failures.push((alloc.into(), workload.into(), why));
    }

    pub fn failed(&self, alloc: &str, workload: &str) -> bool {
        self.failures
            .iter()
            .any(|(a, w, _)| a == alloc && w == workload)
    }

    /// Stores the iai counts; the `noop` allocator's count is the baseline subtracted.
    pub fn set_iai(&mut self, counts: Vec<(String, String, f64)>, ops: f64) {
        let noop: BTreeMap<&str, f64> = counts
            .iter()
            .filter(|(a, _, _)| a == "noop")
            .map(|(_, op, n)| (op.as_str(), *n))
            .collect();
        for (alloc, op, n) in counts.iter().filter(|(a, _, _)| a != "noop") {
            let base = noop.get(op.as_str()).copied().unwrap_or(0.0);
            let alloc = match alloc.as_str() {
                "cohort_global" => "cohort (global)",
                "cohort_called" => "cohort (called)",
                "cohort_two" => "cohort (two instances)",
                "cohort_direct" => "cohort (direct API)",
                "cohort_shared" => "cohort (shared region)",
                other => other,
            };
            self.iai_row(iai_label(op))
                .counts
                .insert(column(alloc), (*n, (n - base) / ops));
        }
    }

    /// Writes results.csv, iai.csv, results.md and the plots; returns the markdown.
    pub fn write(&self, dir: &Path, setup: &Setup) -> std::io::Result<String> {
        let mut csv =
            String::from("group,metric,unit,allocator,median,spread_pct,ratio_to_system,runs\n");
        let mut md = header(setup);
        for g in GROUPS {
            let metrics: Vec<&Metric> = self.metrics.iter().filter(|m| m.group == g.name).collect();
            if metrics.is_empty() {
                continue;
            }
            let _ = write!(md, "\n### {}\n\n{}\n\n", g.title, g.what);
            let mut table = Table::new(&["metric", "unit"], |c| {
                metrics.iter().any(|m| m.values.contains_key(c))
            });
            for m in &metrics {
                // No ratio to a System median of 0 (nor to a missing one).
                let system = m
                    .values
                    .get(&0)
                    .map(|v| stats(v).median)
                    .filter(|&sys| sys != 0.0);
                table.row(&[&m.row, &m.unit], |c| {
                    let v = m.values.get(&c)?;
                    let s = stats(v);
                    let ratio = system.map(|sys| s.median / sys);
                    let runs: Vec<String> = v.iter().map(|x| x.to_string()).collect();
                    let ratio_csv = ratio.map(|r| r.to_string()).unwrap_or_default();
                    let _ = writeln!(
                        csv,
                        "{},{},{},{},{},{:.1},{ratio_csv},{}",
                        g.name,
                        m.row,
                        m.unit,
                        ALLOCATORS[c],
                        s.median,
                        s.spread,
                        runs.join(";")
                    );
                    let mut text = format!("{} ±{:.0}%", num(s.median), s.spread);
                    if let (Some(r), true) = (ratio, c != 0) {
                        let _ = write!(text, " ({}×)", num(r));
                    }
                    let bar = match g.bars {
                        Bars::Ratios => ratio,
                        Bars::Values => Some(s.median),
                    };
                    Some((text, bar))
                });
            }
            let file = format!("{}.svg", g.name);
            let svg = dir.join(&file);
            let plotted = match g.bars {
                Bars::Ratios => {
                    let x_desc =
                        "ratio to System's figure in the same run (< 1: less time or memory)";
                    table.finish(&svg, g.title, x_desc, Some((1.0, "System = 1")))?
                }
                Bars::Values => {
                    let x_desc = format!("{} (medians)", metrics[0].unit);
                    table.finish(&svg, g.title, &x_desc, None)?
                }
            };
            md.push_str(&plotted);
            if let Some(note) = self.notes.get(g.name) {
                let _ = write!(md, "\n{note}");
            }
            let _ = writeln!(md, "\n![{}]({file})", g.title);
            if g.timeline {
                let file = format!("{}-timeline.svg", g.name);
                timeline(&metrics, g.title).write(&dir.join(&file))?;
                let _ = writeln!(md, "\n![{} against time]({file})", g.title);
            }
        }
        if !self.iai.is_empty() {
            md.push_str(&self.iai_table(dir)?);
        }
        if !self.failures.is_empty() {
            md.push_str("\n### Failures\n\n");
            for (a, w, why) in &self.failures {
                let _ = writeln!(md, "- `{w}` with {a}: {why}");
            }
        }
        std::fs::write(dir.join("results.csv"), csv)?;
        std::fs::write(dir.join("results.md"), &md)?;
        Ok(md)
    }

    /// The results a run wrote to `dir` (results.csv and iai.csv, as [`Results::write`]
    /// writes them), to draw the plots again without running the suite. A metric of a group
    /// this report no longer has is skipped.
    pub fn read(dir: &Path) -> std::io::Result<Results> {
        let mut results = Results::default();
        let csv = std::fs::read_to_string(dir.join("results.csv"))?;
        for line in csv.lines().skip(1) {
            // group,metric,unit,allocator,median,spread_pct,ratio_to_system,runs (the metric
            // may hold commas: the fields around it are counted from both ends).
            let f: Vec<&str> = line.split(',').collect();
            let Some(group) = GROUPS.iter().find(|g| g.name == f[0]) else {
                continue;
            };
            let n = f.len();
            let row = f[1..n - 6].join(",");
            let runs = f[n - 1].split(';').filter_map(|v| v.parse().ok());
            results
                .metric(group.name, row, f[n - 6])
                .values
                .insert(column(f[n - 5]), runs.collect());
        }
        if let Ok(iai) = std::fs::read_to_string(dir.join("iai.csv")) {
            // operation,allocator,total_instructions,net_per_operation (the operation may hold
            // commas).
            for line in iai.lines().skip(1) {
                let f: Vec<&str> = line.split(',').collect();
                let n = f.len();
                let op = f[..n - 3].join(",");
                let (Ok(total), Ok(net)) = (f[n - 2].parse(), f[n - 1].parse()) else {
                    continue;
                };
                results
                    .iai_row(op)
                    .counts
                    .insert(column(f[n - 3]), (total, net));
            }
        }
        Ok(results)
    }

    fn iai_table(&self, dir: &Path) -> std::io::Result<String> {
        let mut md = String::from(
            "\n### Instruction counts (iai-callgrind)\n\nInstructions per operation through \
             `GlobalAlloc` on a static instance, after a warm-up, net of the same loop run on \
             an allocator that does nothing and returns an opaque pointer (see \
             `benches/iai.rs`). \"cohort (global)\" is cohort as the `#[global_allocator]`, \
             called through `std::alloc` (the binary is built with LTO, which inlines the \
             `__rust_alloc` shim); \"cohort (called)\" is cohort behind calls that are never \
             inlined, as `__rust_alloc` runs in a program built without LTO (the C allocators \
             are always calls); \"cohort (two instances)\" adds a malloc+free pair in a \
             second instance to every allocation, as a thread alternating between a global \
             allocator and a lifetime-class instance runs (so its rows count two pairs); \
             \"cohort (direct API)\" calls `Cohort::alloc` and `Cohort::dealloc` (whose free \
             also accepts a null pointer) instead of `GlobalAlloc`; \"cohort (shared \
             region)\" is an instance in a region shared with fork children \
             (`Cohort::shared_anonymous`). snmalloc has no column: it cannot start under \
             valgrind (it reserves more address space than valgrind gives a process). Exact \
             and repeatable: not noisy.\n\n",
        );
        let mut csv = String::from("operation,allocator,total_instructions,net_per_operation\n");
        let mut table = Table::new(&["operation"], |c| {
            self.iai.iter().any(|r| r.counts.contains_key(c))
        });
        for r in &self.iai {
            table.row(&[&r.op], |c| {
                let (total, net) = r.counts.get(&c)?;
                let _ = writeln!(csv, "{},{},{total},{net}", r.op, ALLOCATORS[c]);
                Some((format!("{net:.1}"), Some(*net)))
            });
        }
        let title = "Instructions per operation";
        md.push_str(&table.finish(
            &dir.join("iai.svg"),
            title,
            "instructions per operation, net of an allocator that does nothing",
            None,
        )?);
        md.push_str("\n![Instructions per operation](iai.svg)\n");
        std::fs::write(dir.join("iai.csv"), csv)?;
        Ok(md)
    }
}

/// A markdown table with one column per allocator that has figures, collecting the same
/// figures as plot series.
struct Table {
    md: String,
    cols: Vec<usize>,
    rows: Vec<String>,
    /// Per allocator column: its name, its column, its figures by row.
    series: Vec<(String, usize, Vec<Option<f64>>)>,
}

impl Table {
    /// `heads`: the leading column titles; `present(c)`: whether allocator column `c` has data.
    fn new(heads: &[&str], present: impl Fn(&usize) -> bool) -> Self {
        let cols: Vec<usize> = (0..ALLOCATORS.len()).filter(present).collect();
        let mut md = String::from("|");
        for h in heads.iter().chain(cols.iter().map(|&c| &ALLOCATORS[c])) {
            let _ = write!(md, " {h} |");
        }
        md.push_str("\n|");
        md.push_str(&"---|".repeat(heads.len()));
        md.push_str(&"---:|".repeat(cols.len()));
        md.push('\n');
        let series = cols
            .iter()
            .map(|&c| (ALLOCATORS[c].to_string(), c, vec![]))
            .collect();
        Table {
            md,
            cols,
            rows: vec![],
            series,
        }
    }

    /// One row: `heads` (the first names the row in the plot), then `cell(c)` for each
    /// allocator column: its text and plotted value, `None` when it has no figure.
    fn row(
        &mut self,
        heads: &[&str],
        mut cell: impl FnMut(usize) -> Option<(String, Option<f64>)>,
    ) {
        self.rows.push(heads[0].to_string());
        self.md.push('|');
        for h in heads {
            let _ = write!(self.md, " {h} |");
        }
        for (k, &c) in self.cols.iter().enumerate() {
            let (text, value) = cell(c).unwrap_or_else(|| ("–".into(), None));
            let _ = write!(self.md, " {text} |");
            self.series[k].2.push(value);
        }
        self.md.push('\n');
    }

    /// Draws the plot to `svg` and returns the markdown. With a `reference` (ratios to
    /// System: its line at 1), System's own bars, all 1, are left out of the plot.
    fn finish(
        self,
        svg: &Path,
        title: &str,
        x_desc: &str,
        reference: Option<(f64, &str)>,
    ) -> std::io::Result<String> {
        let series: Vec<_> = self
            .series
            .into_iter()
            .filter(|s| reference.is_none() || s.1 != 0)
            .collect();
        let chart = plot::Chart {
            title,
            x_desc,
            rows: &self.rows,
            series: &series,
            reference,
        };
        chart.write(svg)?;
        Ok(self.md)
    }
}

/// The rows of `metrics` named "... at N ms" as one line per allocator: (N, median).
fn timeline<'a>(metrics: &[&Metric], title: &'a str) -> plot::Timeline<'a> {
    let mut series: BTreeMap<usize, Vec<(f64, f64)>> = BTreeMap::new();
    let mut unit = String::new();
    for m in metrics {
        let Some(ms) = m
            .row
            .rsplit_once(" at ")
            .and_then(|(_, t)| t.strip_suffix(" ms"))
            .and_then(|t| t.parse::<f64>().ok())
        else {
            continue;
        };
        unit.clone_from(&m.unit);
        for (&c, v) in &m.values {
            series.entry(c).or_default().push((ms, stats(v).median));
        }
    }
    let series = series
        .into_iter()
        .map(|(c, mut points)| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (ALLOCATORS[c].to_string(), c, points)
        })
        .collect();
    plot::Timeline {
        title,
        y_desc: unit,
        series,
    }
}

fn iai_label(op: &str) -> String {
    match op {
        "Batch" => "100 mallocs of 64 B, then 100 frees (per pair)".into(),
        "Realloc" => "realloc 20 B <-> 24 B, same class (per call)".into(),
        "Calloc" => "calloc + free, 64 B".into(),
        _ => match op.strip_prefix("Pair(").and_then(|s| s.strip_suffix(')')) {
            Some(size) => format!("malloc + free, {size} B"),
            None => op.into(),
        },
    }
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn header(setup: &Setup) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']))
        })
        .unwrap_or("unknown");
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    // SAFETY: gnu_get_libc_version returns a pointer to a static NUL-terminated string.
    let glibc = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
    let commit = std::env::var("COHORT_BENCH_COMMIT").unwrap_or_else(|_| {
        let dir = env!("CARGO_MANIFEST_DIR");
        sh("git", &["-C", dir, "describe", "--always", "--dirty"])
    });
    format!(
        "## Results\n\n{} — cohort {commit} — {} CPUs ({}), Linux {}, glibc {}, {}. \
         {} process runs per figure, scale {}, suite time {:.0} s.\n\n\
         Each cell: median ±spread (max − min over the runs, in % of the median), then the \
         ratio of medians to System measured in the same run (< 1: less time or memory than \
         System).\n",
        sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        nproc,
        cpu,
        sh("uname", &["-r"]),
        glibc.to_string_lossy(),
        sh("rustc", &["--version"]),
        setup.runs,
        setup.scale,
        setup.elapsed.as_secs_f64()
    )
}
