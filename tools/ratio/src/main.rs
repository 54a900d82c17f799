//! `cohort-ratio`: what cohort's memory costs, block by block.
//!
//! ```text
//! cargo run --release -p cohort-ratio                 # the built-in workload
//! cargo run --release -p cohort-ratio -- --help       # options and the mix syntax
//! ```
//!
//! The tool runs a workload (a *mix*: sizes, counts, lifetime classes named by the user, how
//! each is allocated, how many survive; see `mix`) on a private `Cohort` instance, in two
//! phases: a build phase that allocates every entry, interleaved (list entries linked as
//! they go), then a free phase that frees what each entry does not keep. It then reports
//! (`text`; the same as JSON in `export`, an SVG chart of the blocks in `svg`):
//!
//! 1. the counts: allocations in the build phase and live after the free phase, small (in
//!    blocks), medium (runs of granules in medium blocks) and large (own mappings) apart;
//! 2. the mix;
//! 3. every live block after the free phase (stride, lifetime class, live slots, fill,
//!    requested and resident bytes, occupancy), then every medium block (runs, granules,
//!    fill, requested and resident bytes, rounding, occupancy) and their sum;
//! 4. the same sums per size class (with rounding) and per lifetime class (at the end of
//!    the build phase and at the end);
//! 5. the totals: small, medium, large and all;
//! 6. the ratio contract: per range of request sizes, the largest geometry allowed beside
//!    cohort's worst;
//! 7. the meaning of every term (`text::TERMS`).
//!
//! The text fits 80 columns (`--wide` adds the columns that do not). The run is on one
//! thread. The exit status is 1 when the allocator's reports disagree with the workload's
//! own books (live slots per block) or a row of the ratio table fails, 2 on a usage error.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
mod cli;
mod export;
mod json;
mod mix;
mod region;
mod report;
mod svg;
mod table;
mod text;
mod workload;

use mix::{Entry, Lives};
use report::{ContractRow, Snapshot};
use std::io::Write;
use std::process::ExitCode;
use workload::{Life, Run};

/// Everything the report shows.
pub struct Report {
    mix: Vec<Entry>,
    /// The lifetime class names, by index.
    lives: Lives,
    /// Live allocations per entry after the free phase.
    live: Vec<usize>,
    build: Snapshot,
    end: Snapshot,
    contract: Vec<ContractRow>,
    problems: Vec<String>,
    /// The region's options and capacity use after the allocations.
    region: region::RegionUse,
}

/// Runs the mix on a fresh instance and measures it.
/// Writes `text` to standard output and flushes it, the error checked (`print!` panics on
/// a failed write): success, or a clear error and failure.
fn write_out(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cohort-ratio: writing to standard output: {e}");
            ExitCode::FAILURE
        }
    }
}

fn measure(
    mix: Vec<Entry>,
    lives: Lives,
    made: &region::Made,
    label: Option<&str>,
) -> Result<Report, String> {
    let cohort = made.make::<Life>()?;
    if let Some(label) = label {
        cohort.set_label(label);
    }
    let mut run = Run::new(&cohort, &mix)?;
    run.verify()?;
    let build = report::snapshot(&run);
    let region = region::RegionUse::of(&cohort, made);
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
        lives,
        live,
        build,
        end,
        contract: report::contract_table(),
        problems,
        region,
    })
}

fn main() -> ExitCode {
    let matches = match cli::command().try_get_matches() {
        Ok(m) => m,
        // --help and --version print and succeed; usage errors print and exit with 2.
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let opts = match cli::options(&matches) {
        Ok(cli::Parsed::Run(o)) => o,
        Ok(cli::Parsed::Print(text)) => return write_out(&text),
        Err(msg) => {
            eprintln!("cohort-ratio: {msg}");
            return ExitCode::from(2);
        }
    };
    let r = match measure(opts.mix, opts.lives, &opts.made, opts.label.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cohort-ratio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = if opts.json {
        export::to_json(&r, opts.blocks).render()
    } else {
        text::render(&r, opts.blocks, opts.wide)
    };
    if write_out(&report) != ExitCode::SUCCESS {
        return ExitCode::FAILURE;
    }
    if let Some(path) = &opts.svg {
        if let Err(e) = svg::write(&r, path) {
            eprintln!("cohort-ratio: {e}");
            return ExitCode::FAILURE;
        }
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
    use report::{group, total};

    fn small_mix() -> Report {
        let mut lives = Lives::default();
        let mix = mix::parse(
            "24x3000@tree:list,24x3000@tree:keep=0,16x5000@frame:keep=50,20KiBx2@request",
            &mut lives,
        )
        .unwrap();
        measure(mix, lives, &region::Made::Default, None).unwrap()
    }

    #[test]
    fn a_small_mix_measures_consistently() {
        let r = small_mix();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.live, vec![3000, 0, 2500, 2]);
        let end = total(&r.end.blocks);
        assert_eq!(end.live, 5500);
        assert_eq!(end.requested, 3000 * 24 + 2500 * 16);
        // The two 20 KiB allocations are medium: runs in a medium block, no mapping.
        assert_eq!((r.end.medium_count(), r.end.large.count), (2, 0));
        assert_eq!(total(&r.end.medium).requested, 2 * 20 * 1024);
        // The list shares its blocks with the freed garbage of its size class.
        let list_blocks = group(&r.end.blocks, |b| b.life)[&0];
        assert_eq!(list_blocks.live, 3000);
    }

    #[test]
    fn the_header_counts_add_up_to_the_tables() {
        let r = small_mix();
        let out = text::render(&r, true, false);
        // 11 002 allocated = 11 000 small + 2 medium; 5 502 live = 5 500 small + 2 medium.
        let counts = "11,002 allocations = 11,000 small + 2 medium + 0 large";
        assert!(out.contains(&format!("build phase: {counts}")), "{out}");
        let counts = "5,502 live        = 5,500 small + 2 medium + 0 large";
        assert!(out.contains(&format!("after frees: {counts}")), "{out}");
        assert_eq!(total(&r.build.blocks).live, 11_000);
        // The lifetime table's total row of the build phase shows the same 11 000.
        let total_build = out
            .lines()
            .find(|l| l.trim_start().starts_with("total") && l.contains("build"))
            .unwrap();
        assert!(total_build.contains(" 11,000 "), "{total_build}");
    }

    #[test]
    fn the_text_fits_80_columns_and_defines_its_terms() {
        let mut lives = Lives::default();
        let mix = mix::parse(mix::DEFAULT_MIX, &mut lives).unwrap();
        let r = measure(mix, lives, &region::Made::Default, None).unwrap();
        let out = text::render(&r, true, false);
        for line in out.lines() {
            assert!(line.chars().count() <= 80, "{} columns: {line}", line.len());
        }
        assert!(!out.contains("seed"));
        for term in [
            "block",
            "class",
            "stride",
            "life",
            "capacity",
            "live",
            "fill",
            "requested",
            "resident",
            "rounding",
            "geometry",
            "occupancy",
            "ratio contract",
            "medium",
            "large",
        ] {
            let defined = text::TERMS
                .lines()
                .any(|l| l.trim_start().starts_with(term));
            assert!(defined, "`{term}` is not defined in the terms");
        }
        let wide = text::render(&r, true, true);
        assert!(wide.lines().any(|l| l.len() > 80) && wide.contains("0x"));
    }

    #[test]
    fn medium_blocks_have_a_table_and_large_allocations_a_mapping() {
        let mut lives = Lives::default();
        let mix = mix::parse("24x1000@a,100KiBx10@a:keep=50,2MiBx1@b", &mut lives).unwrap();
        let r = measure(mix, lives, &region::Made::Default, None).unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!((r.build.medium_count(), r.build.large.count), (10, 1));
        assert_eq!((r.end.medium_count(), r.end.large.count), (5, 1));
        let medium = total(&r.end.medium);
        assert_eq!(medium.requested, 5 * 100 * 1024);
        // 100 KiB is 50 granules of 2 KiB: exact, and every granule resident.
        assert_eq!(medium.live, 5 * 50);
        assert!(medium.resident_bytes >= medium.requested);
        let out = text::render(&r, true, false);
        assert!(out.contains("Medium blocks after the free phase"), "{out}");
        assert!(out.contains("1,006 live        = 1,000 small + 5 medium + 1 large"));
        let json = export::to_json(&r, true).render();
        assert!(json.contains("\"end_medium\": 5"), "{json}");
        assert!(json.contains("\"runs\": 5"), "{json}");
    }

    #[test]
    fn json_has_a_schema_version_hex_addresses_and_an_empty_block_list() {
        let r = small_mix();
        let with = export::to_json(&r, true).render();
        assert!(with.contains("\"schema_version\": 3"), "{with}");
        assert!(with.contains("\"base\": \"0x"), "{with}");
        assert!(with.contains("\"lifetime_classes\": [\"tree\", \"frame\", \"request\"]"));
        let without = export::to_json(&r, false).render();
        assert!(without.contains("\"blocks\": []"), "{without}");
    }

    #[test]
    fn the_svg_has_a_bar_per_block_and_the_class_names() {
        let r = small_mix();
        let path = std::env::temp_dir().join(format!("cohort-ratio-{}.svg", std::process::id()));
        svg::write(&r, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        for name in ["tree", "frame"] {
            assert!(svg.contains(name), "legend names {name}");
        }
        // Three rectangles per block (reserved, resident, requested), plus the frame's.
        let rects = svg.matches("<rect").count();
        assert!(rects >= 3 * r.end.blocks.len(), "{rects} rectangles");
    }
}
