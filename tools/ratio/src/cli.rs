//! The command line (clap's builder API).

use crate::mix::{self, Entry, Lives};
use crate::region::Made;
use clap::{Arg, ArgAction, ArgMatches, Command};
use cohort::{HugePages, RegionOptions};
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
    /// How the allocator's region is made: the default reservation, a reservation of
    /// `--capacity` bytes, or a fixed region of that capacity with the placement options.
    pub made: Made,
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
                .help(
                    "Leave out the per-block tables, small and medium (the sums stay; JSON: \
                     empty `blocks` and `medium_blocks`)",
                ),
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
                .help("Run in a region of fixed capacity (bytes, KiB or MiB; whole 2 MiB blocks): past it, requests promote or fail. A reservation; with a placement option below, a fixed region made with the options"),
        )
        .args(placement_args())
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

/// The placement options: each makes the region a fixed one (`Cohort::with_options`) of
/// `--capacity` bytes.
fn placement_args() -> [Arg; 6] {
    let switch = |name: &'static str, help: &'static str| {
        Arg::new(name)
            .long(name)
            .action(ArgAction::SetTrue)
            .requires("capacity")
            .help(help)
    };
    [
        switch("commit", "A fixed region, committed at creation (needs --capacity)"),
        switch(
            "prefault",
            "A fixed region, faulted in at creation (needs --capacity)",
        ),
        switch(
            "lock",
            "A fixed region, locked in RAM (mlock; needs --capacity)",
        ),
        switch(
            "fallback",
            "A fixed region whose requests past its capacity get mappings of their own (needs --capacity)",
        ),
        Arg::new("numa")
            .long("numa")
            .value_name("NODES")
            .requires("capacity")
            .help("A fixed region bound to these NUMA nodes, e.g. 0 or 0,1 (needs --capacity)"),
        Arg::new("huge-pages")
            .long("huge-pages")
            .value_name("KIND")
            .value_parser(["transparent", "explicit"])
            .requires("capacity")
            .help("A fixed region in transparent or explicit huge pages (needs --capacity)"),
    ]
}

/// The NUMA node mask of a comma-separated list of node numbers below 64.
fn parse_nodes(list: &str) -> Result<u64, String> {
    list.split(',')
        .try_fold(0u64, |mask, node| match node.trim().parse::<u32>() {
            Ok(n) if n < 64 => Ok(mask | 1 << n),
            _ => Err(format!("--numa: `{node}` is not a node number below 64")),
        })
}

/// How the region is made, from `--capacity` and the placement options.
fn made(m: &ArgMatches) -> Result<Made, String> {
    let capacity = m
        .get_one::<String>("capacity")
        .map(|s| mix::parse_size(s).map_err(|e| format!("--capacity: {e}")))
        .transpose()?;
    let Some(capacity) = capacity else {
        return Ok(Made::Default);
    };
    let nodes = m
        .get_one::<String>("numa")
        .map(|s| parse_nodes(s))
        .transpose()?;
    let huge = m
        .get_one::<String>("huge-pages")
        .map(|kind| match kind.as_str() {
            "explicit" => HugePages::Explicit,
            _ => HugePages::Transparent,
        });
    let switches = ["commit", "prefault", "lock", "fallback"].map(|name| m.get_flag(name));
    if nodes.is_none() && huge.is_none() && !switches.contains(&true) {
        return Ok(Made::Reservation(capacity));
    }
    let [commit, prefault, lock, fallback] = switches;
    Ok(Made::Options(
        RegionOptions::new(capacity)
            .commit(commit)
            .prefault(prefault)
            .lock(lock)
            .fallback(fallback)
            .numa_nodes(nodes.unwrap_or(0))
            .huge_pages(huge.unwrap_or_default()),
    ))
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
        made: made(m)?,
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
        assert_eq!(run("").made, Made::Default);
        let o = run("--capacity 8MiB --label arena");
        assert_eq!(
            (o.made, o.label.as_deref()),
            (Made::Reservation(8 << 20), Some("arena"))
        );
        assert!(matches!(parse("--capacity lots"), Err(m) if m.contains("--capacity")));
        let o =
            run("--capacity 8MiB --prefault --lock --fallback --numa 0,3 --huge-pages transparent");
        let want = RegionOptions::new(8 << 20)
            .prefault(true)
            .lock(true)
            .fallback(true)
            .numa_nodes(0b1001)
            .huge_pages(HugePages::Transparent);
        assert_eq!(o.made, Made::Options(want));
        assert_eq!(
            run("--capacity 4MiB --commit").made,
            Made::Options(RegionOptions::new(4 << 20).commit(true))
        );
        assert!(matches!(parse("--prefault"), Err(m) if m.contains("--capacity")));
        assert!(matches!(parse("--capacity 4MiB --numa 64"), Err(m) if m.contains("--numa")));
        assert!(matches!(parse("--capacity 4MiB --huge-pages big"), Err(m) if m.contains("big")));
        let version = command().render_version();
        assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    }
}
