//! The command line (clap's builder API).

use crate::mix::{self, Entry, Lives};
use clap::{Arg, ArgAction, ArgMatches, Command};
use std::path::PathBuf;

/// What the command line asks for.
pub struct Options {
    /// The mix to run (the built-in one when the command line gives none).
    pub mix: Vec<Entry>,
    /// The lifetime class names the mix uses.
    pub lives: Lives,
    /// JSON instead of text.
    pub json: bool,
    /// The per-block table (text) or list (JSON).
    pub blocks: bool,
    /// Every column (text), wider than 80 columns.
    pub wide: bool,
    /// Where to write the per-block SVG chart.
    pub svg: Option<PathBuf>,
    /// A region of fixed capacity, in bytes (`Cohort::with_reservation`).
    pub capacity: Option<usize>,
    /// The allocator's label.
    pub label: Option<String>,
}

const ABOUT: &str = "Runs a mix of allocations on cohort and reports what its memory costs: \
block by block, per size class, per lifetime class and in total, then the ratio contract beside \
cohort's figures. The report ends with the meaning of every term it uses.";

const MIX_HELP: &str = "\
MIX SYNTAX (one entry; entries are separated by commas, or by lines in a file):
    SIZE x COUNT [@LIFE] [:OPTION]...

    SIZE     bytes, or with KiB / MiB (4KiB = 4096)
    COUNT    a number, _ separators allowed, or with k / M (50k = 50,000)
    LIFE     the lifetime class: any name (letters, digits, _ and -), up to 8
             different names in a mix (default: `default`)
    OPTION   malloc      allocate with malloc(size): aligned to the next power of two,
                         so 24 B takes a 32 B slot (default: alloc(Layout), exact fit)
             align=N     the Layout's alignment (default: the largest power of two
                         dividing SIZE, at most 8)
             keep=P%     share still live at the end, the rest freed evenly spread
                         (default 100%)
             list        link the allocations into a singly linked list (a next pointer
                         at the start of each; needs SIZE >= 8)

    Entries are allocated interleaved, in proportion to their counts; then each frees
    what it does not keep. Sizes above 16 KiB are large allocations (own mappings, no
    block): counted in the header and the totals, not in the block tables.

EXAMPLES:
    cohort-ratio --mix 16x100k@frame,24x50k@request,1000x2k@cache:keep=10%
    cohort-ratio --mix 24x200k@tree:list,24x200k@tree:keep=0    # tree and garbage share blocks
    cohort-ratio --mix 24x200k@tree:list,24x200k@temp:keep=0    # ... and apart
    cohort-ratio --mix 24x100k:malloc,24x100k@exact             # malloc vs Layout strides
    cohort-ratio --wide --svg blocks.svg                         # every column, and a chart
    cohort-ratio --print-mix > my.mix; cohort-ratio --mix-file my.mix --json";

/// The command.
pub fn command() -> Command {
    Command::new("cohort-ratio")
        .version(env!("CARGO_PKG_VERSION"))
        .about(ABOUT)
        .after_help(MIX_HELP)
        .arg(
            Arg::new("mix")
                .long("mix")
                .value_name("SPEC")
                .action(ArgAction::Append)
                .help("Entries separated by commas (replaces the built-in mix)"),
        )
        .arg(
            Arg::new("mix-file")
                .long("mix-file")
                .value_name("PATH")
                .action(ArgAction::Append)
                .help("Entries from a file, one or more per line, # comments"),
        )
        .arg(
            Arg::new("json")
                .long("json")
                .action(ArgAction::SetTrue)
                .help("Print the report as JSON (schema_version 2)"),
        )
        .arg(
            Arg::new("no-blocks")
                .long("no-blocks")
                .action(ArgAction::SetTrue)
                .help("Leave out the per-block table (the sums stay; JSON: an empty `blocks`)"),
        )
        .arg(
            Arg::new("wide")
                .long("wide")
                .action(ArgAction::SetTrue)
                .help("Every column (addresses, capacities, block bytes, geometry): wider than 80 columns"),
        )
        .arg(
            Arg::new("svg")
                .long("svg")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Also draw each live block's occupancy, coloured by lifetime class, as SVG"),
        )
        .arg(
            Arg::new("capacity")
                .long("capacity")
                .value_name("SIZE")
                .help("Run in a region of fixed capacity (bytes, KiB or MiB; whole 2 MiB blocks): past it, requests promote or fail"),
        )
        .arg(
            Arg::new("label")
                .long("label")
                .value_name("TEXT")
                .help("The allocator's label, shown in its reports"),
        )
        .arg(
            Arg::new("print-mix")
                .long("print-mix")
                .action(ArgAction::SetTrue)
                .help("Print the built-in mix in the file syntax and exit"),
        )
}

/// What to do: run with these options, or print this text and exit successfully.
pub enum Parsed {
    /// Run the mix.
    Run(Box<Options>),
    /// Print and exit (`--print-mix`).
    Print(String),
}

/// Reads the command line's matches; `Err` is a usage error's message.
pub fn options(m: &ArgMatches) -> Result<Parsed, String> {
    if m.get_flag("print-mix") {
        return Ok(Parsed::Print(mix::DEFAULT_MIX.into()));
    }
    let mut lives = Lives::default();
    let mut entries = Vec::new();
    for spec in m.get_many::<String>("mix").into_iter().flatten() {
        entries.extend(mix::parse(spec, &mut lives).map_err(|e| format!("--mix: {e}"))?);
    }
    for path in m.get_many::<String>("mix-file").into_iter().flatten() {
        let text = std::fs::read_to_string(path).map_err(|e| format!("--mix-file {path}: {e}"))?;
        entries.extend(mix::parse(&text, &mut lives).map_err(|e| format!("{path}: {e}"))?);
    }
    if entries.is_empty() {
        entries = mix::parse(mix::DEFAULT_MIX, &mut lives).expect("the built-in mix parses");
    }
    Ok(Parsed::Run(Box::new(Options {
        mix: entries,
        lives,
        json: m.get_flag("json"),
        blocks: !m.get_flag("no-blocks"),
        wide: m.get_flag("wide"),
        svg: m.get_one::<PathBuf>("svg").cloned(),
        capacity: m
            .get_one::<String>("capacity")
            .map(|s| mix::parse_size(s).map_err(|e| format!("--capacity: {e}")))
            .transpose()?,
        label: m.get_one::<String>("label").cloned(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Parsed, String> {
        let args = std::iter::once("cohort-ratio").chain(line.split_whitespace());
        let m = command()
            .try_get_matches_from(args)
            .map_err(|e| e.to_string())?;
        options(&m)
    }

    fn run(line: &str) -> Options {
        match parse(line) {
            Ok(Parsed::Run(o)) => *o,
            _ => panic!("`{line}` does not run"),
        }
    }

    #[test]
    fn command_line() {
        command().debug_assert();
        let o = run("");
        let mut lives = Lives::default();
        assert_eq!(o.mix, mix::parse(mix::DEFAULT_MIX, &mut lives).unwrap());
        assert!(o.blocks && !o.json && !o.wide && o.svg.is_none());
        let o = run("--json --no-blocks --wide --svg b.svg --mix 16x10@a --mix=8x2@b,4x1@a");
        assert!(o.json && !o.blocks && o.wide);
        assert_eq!(o.svg.as_deref(), Some(std::path::Path::new("b.svg")));
        assert_eq!(o.mix.len(), 3);
        assert_eq!(o.lives.names(), ["a", "b"]);
        assert!(matches!(parse("--print-mix"), Ok(Parsed::Print(_))));
        assert!(matches!(parse("--mix"), Err(m) if m.contains("value")));
        assert!(matches!(parse("--frob"), Err(m) if m.contains("--frob")));
        assert!(matches!(parse("--mix 16x"), Err(m) if m.contains("--mix")));
        let o = run("--capacity 8MiB --label arena");
        assert_eq!(
            (o.capacity, o.label.as_deref()),
            (Some(8 << 20), Some("arena"))
        );
        assert!(matches!(parse("--capacity lots"), Err(m) if m.contains("--capacity")));
        let version = command().render_version();
        assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    }
}
