//! `cohort-ratio`: what cohort's memory costs, block by block.
//!
//! ```text
//! cargo run --release -p cohort-ratio                 # the built-in workload
//! cargo run --release -p cohort-ratio -- --help       # options and the mix syntax
//! ```
//!
//! The tool runs a workload (a *mix*: sizes, counts, lifetime classes, how each is
//! allocated, how many survive; see `mix`) on a private `Cohort` instance, in two phases: a
//! build phase that allocates every entry, interleaved (list entries linked as they go), then
//! a free phase that frees what each entry does not keep. It then reports:
//!
//! 1. **Blocks**: every live block after the free phase, one row each:
//!    - `base`: the block's address;
//!    - `class`, `stride`: the size class and its slot size;
//!    - `life`: the lifetime class;
//!    - `capacity`, `live`, `fill`: slots in the block, live slots, their share;
//!    - `block`: the block's bytes (virtual: reserved address space);
//!    - `requested`: live bytes the workload asked for in the block;
//!    - `resident`: bytes of the block in RAM (`mincore`);
//!    - `geometry`: block bytes / usable bytes (capacity × stride), the measure of the ratio contract;
//!    - `occupancy`: resident bytes / live requested bytes, what each byte in use costs
//!      (`-` for a block with nothing live in it).
//! 2. **By size class**: the same sums per size class, plus `rounding` (live slot bytes /
//!    live requested bytes: what rounding a request up to its stride costs).
//! 3. **By lifetime class**: blocks, resident and requested bytes at the end of the build
//!    phase and after the free phase: the blocks of a class whose allocations died together
//!    empty and leave (a heap keeps its current block of each size class, empty or not).
//! 4. **Totals**, with large allocations (own mappings, no block) counted apart.
//! 5. **Ratio table**: each row of the ratio contract (request sizes 1, 2, 3–4, …, 4097–8192,
//!    and cohort's classes up to 16 KiB) with the contract's figure beside cohort's worst
//!    geometry ratio over the size classes serving those sizes, computed from the class
//!    table.
//!
//! `--json` prints the same for machines. The run is on one thread. The exit status is 1
//! when the allocator's reports disagree with the workload's own books (live slots per
//! block) or a row of the ratio table fails, 2 on a usage error.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
mod json;
mod mix;
mod report;
mod table;
mod workload;

use cohort::class::CLASSES;
use cohort::Cohort;
use json::Json;
use mix::{Entry, How, LIFE_NAMES};
use report::{group, total, ContractRow, Snapshot, Sum};
use std::collections::BTreeMap;
use std::process::ExitCode;
use table::{bytes, count, percent, ratio, Table};
use workload::{Life, Run};

const HELP: &str = "\
cohort-ratio: runs a mix of allocations on cohort and reports what its memory costs,
block by block, per size class, per lifetime class and in total, then the ratio contract
beside cohort's figures.

USAGE:
    cohort-ratio [--mix SPEC]... [--mix-file PATH]... [--json] [--no-blocks]

OPTIONS:
    --mix SPEC        entries separated by commas (replaces the built-in mix)
    --mix-file PATH   entries from a file, one or more per line, # comments
    --json            print the report as JSON
    --no-blocks       leave out the per-block table (the sums stay); --blocks, the
                      default, prints one row per live block
    --print-mix       print the built-in mix in the file syntax and exit
    -h, --help        this text

MIX SYNTAX (one entry):
    SIZE x COUNT [@LIFE] [:OPTION]...

    SIZE     bytes, or with KiB / MiB (4KiB = 4096)
    COUNT    a number, _ separators allowed, or with k / M (50k = 50,000)
    LIFE     lifetime class: frame, request, long, life3 .. life7, or 0 .. 7 (default frame)
    OPTION   malloc      allocate with malloc(size): aligned to the next power of two,
                         so 24 B takes a 32 B slot (default: alloc(Layout), exact fit)
             align=N     the Layout's alignment (default: the largest power of two
                         dividing SIZE, at most 8)
             keep=P%     share still live at the end, the rest freed evenly spread
                         (default 100%)
             list        link the allocations into a singly linked list (a next pointer
                         at the start of each; needs SIZE >= 8)

    Entries are allocated interleaved, in proportion to their counts; then each frees
    what it does not keep. Sizes above 16 KiB are large allocations (own mappings).

EXAMPLES:
    cohort-ratio --mix 16x100000@0,24x50000@1,1000x2k@long:keep=10%
    cohort-ratio --mix 24x200k@long:list,24x200k@long:keep=0     # list and garbage share blocks
    cohort-ratio --mix 24x200k@long:list,24x200k@frame:keep=0    # ... and apart
    cohort-ratio --mix 24x100k:malloc,24x100k@1                  # malloc vs Layout strides
    cohort-ratio --print-mix > my.mix; cohort-ratio --mix-file my.mix --json
";

struct Options {
    mix: Vec<Entry>,
    json: bool,
    blocks: bool,
}

/// Parses the command line; `Err` carries the text to print and whether it is an error.
fn parse_args(args: impl Iterator<Item = String>) -> Result<Options, (String, bool)> {
    let mut mix = Vec::new();
    let (mut json, mut blocks) = (false, true);
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or((format!("{name} needs a value"), true))
        };
        match name.as_str() {
            "-h" | "--help" => return Err((HELP.into(), false)),
            "--print-mix" => return Err((mix::DEFAULT_MIX.into(), false)),
            "--json" => json = true,
            "--no-blocks" => blocks = false,
            "--blocks" => blocks = true,
            "--mix" => {
                mix.extend(mix::parse(&value()?).map_err(|e| (format!("--mix: {e}"), true))?)
            }
            "--mix-file" => {
                let path = value()?;
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| (format!("--mix-file {path}: {e}"), true))?;
                mix.extend(mix::parse(&text).map_err(|e| (format!("{path}: {e}"), true))?);
            }
            _ => return Err((format!("unknown argument `{arg}` (see --help)"), true)),
        }
    }
    if mix.is_empty() {
        mix = mix::parse(mix::DEFAULT_MIX).expect("the built-in mix parses");
    }
    Ok(Options { mix, json, blocks })
}

/// Everything the report shows.
struct Report {
    mix: Vec<Entry>,
    /// Live allocations per entry after the free phase.
    live: Vec<usize>,
    build: Snapshot,
    end: Snapshot,
    contract: Vec<ContractRow>,
    problems: Vec<String>,
}

/// Runs the mix on a fresh instance and measures it.
fn measure(mix: Vec<Entry>) -> Result<Report, String> {
    let cohort = Cohort::<Life>::new();
    let mut run = Run::new(&cohort, &mix)?;
    run.verify()?;
    let build = report::snapshot(&run);
    run.free_unkept()?;
    let end = report::snapshot(&run);
    let live = run.live.iter().map(|l| l.ptrs.len()).collect();
    run.free_all();
    let mut problems: Vec<String> = build
        .problems
        .iter()
        .map(|p| format!("build: {p}"))
        .collect();
    problems.extend(end.problems.iter().map(|p| format!("end: {p}")));
    cohort.for_each_block(|b| {
        if b.live != 0 {
            problems.push(format!(
                "after freeing everything, block {:#x} (stride {} B) still reports {} live slots",
                b.base, b.stride, b.live
            ));
        }
    });
    Ok(Report {
        mix,
        live,
        build,
        end,
        contract: report::contract_table(),
        problems,
    })
}

fn how(e: &Entry) -> String {
    match e.how {
        How::Layout { align } => format!("alloc(Layout({}, {align}))", e.size),
        How::Malloc => format!("malloc({})", e.size),
    }
}

fn sum_cells(s: &Sum) -> Vec<String> {
    vec![
        count(s.blocks),
        count(s.live),
        percent(s.fill()),
        bytes(s.requested),
        ratio(s.rounding(), 3),
        bytes(s.resident_bytes),
        bytes(s.block_bytes),
        ratio(s.geometry(), 7),
        ratio(s.occupancy(), 3),
    ]
}

fn to_text(r: &Report, blocks: bool) -> String {
    let mut out = String::new();
    let allocated: usize = r.mix.iter().map(|e| e.count).sum();
    let live: usize = r.live.iter().sum();
    out += &format!(
        "cohort-ratio: {} entries, {} allocations in the build phase, {} live after the free \
         phase\n\nMix\n",
        r.mix.len(),
        count(allocated as u64),
        count(live as u64)
    );
    let mut t = Table::new(&[
        "#", "<entry", "<call", "<life", "count", "kept", "live", "<list",
    ]);
    for (i, e) in r.mix.iter().enumerate() {
        t.row(vec![
            (i + 1).to_string(),
            e.to_string(),
            how(e),
            LIFE_NAMES[e.life].into(),
            count(e.count as u64),
            format!("{}%", e.keep),
            count(r.live[i] as u64),
            if e.list { "list" } else { "" }.into(),
        ]);
    }
    out += &t.render();

    let end = &r.end.blocks;
    if blocks {
        out += &format!(
            "\nBlocks after the free phase ({})\n",
            count(end.len() as u64)
        );
        let mut t = Table::new(&[
            "<base",
            "class",
            "stride",
            "<life",
            "capacity",
            "live",
            "fill",
            "block",
            "requested",
            "resident",
            "geometry",
            "occupancy",
        ]);
        let mut last_life = None;
        for row in end {
            let b = &row.block;
            if last_life.is_some_and(|l| l != b.life) {
                t.rule();
            }
            last_life = Some(b.life);
            t.row(vec![
                format!("{:#x}", b.base),
                b.size_class.to_string(),
                bytes(b.stride as u64),
                LIFE_NAMES[b.life].into(),
                count(b.capacity as u64),
                count(b.live as u64),
                percent(report::ratio(b.live as u64, b.capacity as u64)),
                bytes(b.block_bytes as u64),
                bytes(row.requested),
                bytes(b.resident_bytes as u64),
                format!("{:.7}", b.geometry_ratio()),
                ratio(report::ratio(b.resident_bytes as u64, row.requested), 3),
            ]);
        }
        out += &t.render();
    }

    out += "\nBy size class, after the free phase\n";
    let head = [
        "blocks",
        "live",
        "fill",
        "requested",
        "rounding",
        "resident",
        "block",
        "geometry",
        "occupancy",
    ];
    let mut t = Table::new(&[&["class", "stride"][..], &head].concat());
    for (class, s) in group(end, |b| b.size_class) {
        let mut cells = vec![class.to_string(), bytes(CLASSES[class].stride as u64)];
        cells.extend(sum_cells(&s));
        t.row(cells);
    }
    let total_end = total(end);
    t.rule();
    t.row([vec!["total".into(), String::new()], sum_cells(&total_end)].concat());
    out += &t.render();

    out += "\nBy lifetime class: end of the build phase -> after the free phase\n";
    let mut t = Table::new(&[
        "<life",
        "blocks",
        "live",
        "requested",
        "resident",
        "occupancy",
    ]);
    let before = group(&r.build.blocks, |b| b.life);
    let after = group(end, |b| b.life);
    let lives: BTreeMap<usize, ()> = before
        .keys()
        .chain(after.keys())
        .map(|&l| (l, ()))
        .collect();
    let arrow = |a: String, b: String| format!("{a} -> {b}");
    let life_row = |name: String, a: &Sum, b: &Sum| {
        vec![
            name,
            arrow(count(a.blocks), count(b.blocks)),
            arrow(count(a.live), count(b.live)),
            arrow(bytes(a.requested), bytes(b.requested)),
            arrow(bytes(a.resident_bytes), bytes(b.resident_bytes)),
            arrow(ratio(a.occupancy(), 3), ratio(b.occupancy(), 3)),
        ]
    };
    for &l in lives.keys() {
        let (a, b) = (
            before.get(&l).copied().unwrap_or_default(),
            after.get(&l).copied(),
        );
        t.row(life_row(LIFE_NAMES[l].into(), &a, &b.unwrap_or_default()));
    }
    t.rule();
    t.row(life_row(
        "total".into(),
        &total(&r.build.blocks),
        &total_end,
    ));
    out += &t.render();

    let large = &r.end.large;
    let all_requested = total_end.requested + large.requested;
    let all_resident = total_end.resident_bytes + large.mapped;
    out += &format!(
        "\nTotal after the free phase\n   small: {} blocks, {} reserved, {} resident for {} \
         requested: occupancy {}, geometry {}\n   large: {} allocations, {} mapped for {} \
         requested\n   all:   {} resident (large counted as mapped) for {} requested: {}\n",
        count(total_end.blocks),
        bytes(total_end.block_bytes),
        bytes(total_end.resident_bytes),
        bytes(total_end.requested),
        ratio(total_end.occupancy(), 3),
        ratio(total_end.geometry(), 7),
        count(large.count),
        bytes(large.mapped),
        bytes(large.requested),
        bytes(all_resident),
        bytes(all_requested),
        ratio(report::ratio(all_resident, all_requested), 3),
    );

    out += "\nRatio table: block bytes / usable bytes, worst over the size classes serving \
            each row\n";
    let mut t = Table::new(&[
        "request size",
        "contract",
        "cohort",
        "class",
        "stride",
        "slots",
        "block",
        "<classes serving the row",
        "<meets",
    ]);
    for row in &r.contract {
        let c = &CLASSES[row.worst_class];
        let stride = |i: usize| CLASSES[row.classes[i]].stride;
        let serving = match row.classes.len() {
            1 => format!("1 stride: {} B", stride(0)),
            n => format!("{n} strides: {} to {} B", stride(0), stride(n - 1)),
        };
        if !row.in_contract {
            t.rule();
        }
        t.row(vec![
            if row.lo == row.hi {
                format!("{} B", row.lo)
            } else {
                format!("{}-{} B", row.lo, row.hi)
            },
            if row.in_contract {
                format!("{}", row.limit)
            } else {
                format!("({})", row.limit)
            },
            format!("{:.7}", row.worst),
            row.worst_class.to_string(),
            format!("{} B", c.stride),
            count(c.capacity as u64),
            bytes(c.block_size() as u64),
            serving,
            if row.ok { "yes" } else { "NO" }.into(),
        ]);
    }
    out += &t.render();
    out += "   class, stride, slots, block: the class giving cohort's figure. The last row is \
            beyond the contract's\n   rows; cohort holds it to the contract's last \
            figure.\n";

    if !r.problems.is_empty() {
        out += "\nPROBLEMS (the allocator's reports disagree with the workload)\n";
        for p in &r.problems {
            out += &format!("   {p}\n");
        }
    }
    out
}

fn sum_json(s: &Sum) -> Json {
    Json::Obj(vec![
        ("blocks", s.blocks.into()),
        ("capacity", s.capacity.into()),
        ("live", s.live.into()),
        ("block_bytes", s.block_bytes.into()),
        ("usable_bytes", s.usable_bytes.into()),
        ("resident_bytes", s.resident_bytes.into()),
        ("slot_bytes", s.slot_bytes.into()),
        ("requested_bytes", s.requested.into()),
        ("fill", s.fill().into()),
        ("rounding_ratio", s.rounding().into()),
        ("geometry_ratio", s.geometry().into()),
        ("occupancy_ratio", s.occupancy().into()),
    ])
}

fn to_json(r: &Report, blocks: bool) -> Json {
    let mix = r.mix.iter().zip(&r.live).map(|(e, &live)| {
        Json::Obj(vec![
            ("entry", e.to_string().into()),
            ("size", e.size.into()),
            ("align", e.align().into()),
            (
                "call",
                if e.how == How::Malloc {
                    "malloc"
                } else {
                    "layout"
                }
                .into(),
            ),
            ("life", e.life.into()),
            ("life_name", LIFE_NAMES[e.life].into()),
            ("count", e.count.into()),
            ("keep_percent", (e.keep as u64).into()),
            ("list", e.list.into()),
            ("live", live.into()),
        ])
    });
    let block_rows = r.end.blocks.iter().map(|row| {
        let b = &row.block;
        Json::Obj(vec![
            ("base", b.base.into()),
            ("size_class", b.size_class.into()),
            ("stride", b.stride.into()),
            ("life", b.life.into()),
            ("life_name", LIFE_NAMES[b.life].into()),
            ("capacity", b.capacity.into()),
            ("live", b.live.into()),
            ("block_bytes", b.block_bytes.into()),
            ("usable_bytes", b.usable_bytes.into()),
            ("resident_bytes", b.resident_bytes.into()),
            ("requested_bytes", row.requested.into()),
            ("geometry_ratio", b.geometry_ratio().into()),
            (
                "occupancy_ratio",
                report::ratio(b.resident_bytes as u64, row.requested).into(),
            ),
        ])
    });
    let by_class = group(&r.end.blocks, |b| b.size_class)
        .into_iter()
        .map(|(c, s)| {
            Json::Obj(vec![
                ("size_class", c.into()),
                ("stride", (CLASSES[c].stride as u64).into()),
                ("end", sum_json(&s)),
            ])
        });
    let (before, after) = (
        group(&r.build.blocks, |b| b.life),
        group(&r.end.blocks, |b| b.life),
    );
    let lives: BTreeMap<usize, ()> = before
        .keys()
        .chain(after.keys())
        .map(|&l| (l, ()))
        .collect();
    let by_life = lives.keys().map(|l| {
        Json::Obj(vec![
            ("life", (*l).into()),
            ("life_name", LIFE_NAMES[*l].into()),
            (
                "build",
                sum_json(&before.get(l).copied().unwrap_or_default()),
            ),
            ("end", sum_json(&after.get(l).copied().unwrap_or_default())),
        ])
    });
    let large = &r.end.large;
    let contract = r.contract.iter().map(|row| {
        Json::Obj(vec![
            ("lo", row.lo.into()),
            ("hi", row.hi.into()),
            ("in_contract", row.in_contract.into()),
            ("contract_ratio", row.limit.into()),
            ("cohort_worst_ratio", row.worst.into()),
            ("worst_size_class", row.worst_class.into()),
            (
                "worst_stride",
                (CLASSES[row.worst_class].stride as u64).into(),
            ),
            (
                "worst_block_bytes",
                CLASSES[row.worst_class].block_size().into(),
            ),
            (
                "strides",
                Json::Arr(
                    row.classes
                        .iter()
                        .map(|&c| (CLASSES[c].stride as u64).into())
                        .collect(),
                ),
            ),
            ("ok", row.ok.into()),
        ])
    });
    let mut out = vec![("mix", Json::Arr(mix.collect()))];
    if blocks {
        out.push(("blocks", Json::Arr(block_rows.collect())));
    }
    out.extend([
        ("by_size_class", Json::Arr(by_class.collect())),
        ("by_lifetime_class", Json::Arr(by_life.collect())),
        ("total_build", sum_json(&total(&r.build.blocks))),
        ("total", sum_json(&total(&r.end.blocks))),
        (
            "large",
            Json::Obj(vec![
                ("count", large.count.into()),
                ("requested_bytes", large.requested.into()),
                ("mapped_bytes", large.mapped.into()),
            ]),
        ),
        ("ratio_table", Json::Arr(contract.collect())),
        (
            "problems",
            Json::Arr(r.problems.iter().map(|p| p.as_str().into()).collect()),
        ),
    ]);
    Json::Obj(out)
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err((msg, false)) => {
            print!("{msg}");
            return ExitCode::SUCCESS;
        }
        Err((msg, true)) => {
            eprintln!("cohort-ratio: {msg}");
            return ExitCode::from(2);
        }
    };
    let r = match measure(opts.mix) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cohort-ratio: {e}");
            return ExitCode::FAILURE;
        }
    };
    if opts.json {
        print!("{}", to_json(&r, opts.blocks).render());
    } else {
        print!("{}", to_text(&r, opts.blocks));
    }
    if r.problems.is_empty() && r.contract.iter().all(|row| row.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> impl Iterator<Item = String> + '_ {
        s.split_whitespace().map(String::from)
    }

    #[test]
    fn command_line() {
        let o = parse_args(args("")).ok().unwrap();
        assert_eq!(o.mix, mix::parse(mix::DEFAULT_MIX).unwrap());
        assert!(o.blocks && !o.json);
        let o = parse_args(args("--json --no-blocks --mix 16x10@1 --mix=8x2,4x1"))
            .ok()
            .unwrap();
        assert!(o.json && !o.blocks);
        assert_eq!(o.mix.len(), 3);
        assert!(matches!(parse_args(args("--help")), Err((_, false))));
        assert!(matches!(parse_args(args("--mix")), Err((m, true)) if m.contains("needs")));
        assert!(matches!(parse_args(args("--frob")), Err((m, true)) if m.contains("unknown")));
        assert!(matches!(parse_args(args("--mix 16x")), Err((m, true)) if m.contains("--mix")));
    }

    #[test]
    fn a_small_mix_measures_consistently() {
        let mix = mix::parse(
            "24x3000@long:list,24x3000@long:keep=0,16x5000@frame:keep=50,\
                              20KiBx2@request",
        )
        .unwrap();
        let r = measure(mix).unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.live, vec![3000, 0, 2500, 2]);
        let end = total(&r.end.blocks);
        assert_eq!(end.live, 5500);
        assert_eq!(end.requested, 3000 * 24 + 2500 * 16);
        assert_eq!(r.end.large.count, 2);
        // The list shares its blocks with the freed garbage of its size class.
        let list_blocks = group(&r.end.blocks, |b| b.life)[&2];
        assert_eq!(list_blocks.live, 3000);
        assert!(to_text(&r, true).contains("Ratio table"));
        assert!(to_json(&r, true).render().contains("\"ratio_table\""));
    }
}
