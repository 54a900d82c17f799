//! The report as text: at most 80 columns by default (`--wide` adds the columns that do not
//! fit), one precision per kind of column (geometry-kind ratios 7 decimals, cost-kind 3,
//! shares as percentages with 1), and the meaning of every term at the end.

use crate::mix::How;
use crate::report::{self, group, total, Sum};
use crate::table::{bytes, cost, count, geometry, percent, Table};
use crate::Report;
use cohort::class::CLASSES;
use std::collections::BTreeSet;

/// The terms the report uses, defined for a reader without the source.
pub const TERMS: &str = "\
Terms
   block      2 MiB of address space holding the slots of one size class and one
              lifetime class (`block`: its bytes, reserved, not all in RAM)
   class      a size class, by its number in cohort's class table
   stride     a size class's slot size: every request it serves is rounded up
              to it
   life       the lifetime class: the name the mix gives allocations that die
              together (blocks never mix lifetime classes)
   small      a request of at most 16 KiB: a slot in a block
   medium     a request above 16 KiB, up to 1 MiB: a run of 2 KiB granules in
              a medium block (2 MiB, one lifetime class, runs of any length);
              its own tables, with the granule as stride and `runs` the
              allocations
   large      a request above 1 MiB (or a medium one the region could not
              place): its own mapping, no block; counted in the header and the
              totals, not in the block tables
   capacity   the slots a block holds
   live       allocations (slots) in use
   fill       live / capacity
   requested  the bytes the workload asked for, summed over live allocations
   resident   bytes in RAM now (mincore); slots never touched cost no RAM
   rounding   live slot bytes / requested bytes: what rounding each request up
              to its stride costs (1.000: exact fit)
   geometry   block bytes / usable bytes (capacity x stride): what a block's
              header and unusable tail cost, independent of the workload
   occupancy  resident bytes / requested bytes: what each requested byte costs
              in RAM, everything included (`-`: nothing live)
   ratio contract
              cohort's promise, for each range of request sizes, of the largest
              geometry any size class serving those sizes may have (`contract`);
              `cohort` is the geometry of the worst class that serves the range
";

/// The report as text.
pub fn render(r: &Report, blocks: bool, wide: bool) -> String {
    let mut out = header(r);
    out += &r.region.text();
    out += &mix_table(r, wide);
    if blocks {
        out += &blocks_table(r, wide);
        out += &medium_table(r, wide);
    }
    out += &size_class_table(r, wide);
    out += &lifetime_table(r);
    out += &totals(r);
    out += &contract_table(r, wide);
    if !wide {
        out += "\n(--wide adds addresses, capacities, block bytes, geometry and the strides\n\
                serving each row of the ratio table; --json gives everything to programs.)\n";
    }
    if !r.problems.is_empty() {
        out += "\nPROBLEMS (the allocator's reports disagree with the workload)\n";
        for p in &r.problems {
            out += &format!("   {p}\n");
        }
    }
    out += "\n";
    out += TERMS;
    out
}

/// The first lines: what ran, and the counts the tables add up to.
fn header(r: &Report) -> String {
    let allocated: u64 = r.mix.iter().map(|e| e.count as u64).sum();
    let live: u64 = r.live.iter().map(|&l| l as u64).sum();
    let kinds = |s: &report::Snapshot, all: u64| {
        let (medium, large) = (s.medium_count(), s.large.count);
        format!(
            "{} small + {} medium + {} large",
            count(all - medium - large),
            count(medium),
            count(large)
        )
    };
    format!(
        "cohort-ratio: a mix of {} entries; a build phase allocates everything, then a\n\
         free phase frees what each entry does not keep.\n\
         \x20  lifetime classes: {}\n\
         \x20  build phase: {} allocations = {}\n\
         \x20  after frees: {} live        = {}\n\
         \x20  (small allocations live in blocks, medium ones in medium blocks, each\n\
         \x20  kind with tables of its own; large ones have mappings of their own and\n\
         \x20  are counted in the totals)\n",
        r.mix.len(),
        r.lives.names().join(", "),
        count(allocated),
        kinds(&r.build, allocated),
        count(live),
        kinds(&r.end, live),
    )
}

fn mix_table(r: &Report, wide: bool) -> String {
    let mut head = vec!["#", "<entry", "<life", "count", "kept", "live"];
    if wide {
        head.insert(2, "<call");
    }
    let mut t = Table::new(&head);
    for (i, e) in r.mix.iter().enumerate() {
        let mut row = vec![
            (i + 1).to_string(),
            e.to_string(),
            e.life_name.clone(),
            count(e.count as u64),
            format!("{}%", e.keep),
            count(r.live[i] as u64),
        ];
        if wide {
            let call = match e.how {
                How::Layout { align } => format!("alloc(Layout({}, {align}))", e.size),
                How::Malloc => format!("malloc({})", e.size),
            };
            row.insert(2, call);
        }
        t.row(row);
    }
    format!("\nMix\n{}", t.render())
}

fn blocks_table(r: &Report, wide: bool) -> String {
    let end = &r.end.blocks;
    let mut head = vec![
        "class",
        "stride",
        "<life",
        "live",
        "fill",
        "requested",
        "resident",
        "occupancy",
    ];
    if wide {
        head.insert(0, "<base");
        head.insert(5, "capacity");
        head.extend(["block", "geometry"]);
    }
    let mut t = Table::new(&head);
    let mut last_life = None;
    for row in end {
        let b = &row.block;
        if last_life.is_some_and(|l| l != b.life) {
            t.rule();
        }
        last_life = Some(b.life);
        let mut cells = vec![
            b.size_class.to_string(),
            bytes(b.stride as u64),
            r.lives.name(b.life).to_owned(),
            count(b.live as u64),
            percent(report::ratio(b.live as u64, b.capacity as u64)),
            bytes(row.requested),
            bytes(b.resident_bytes as u64),
            cost(report::ratio(b.resident_bytes as u64, row.requested)),
        ];
        if wide {
            cells.insert(0, format!("{:#x}", b.base));
            cells.insert(5, count(b.capacity as u64));
            cells.extend([
                bytes(b.block_bytes as u64),
                geometry(Some(b.geometry_ratio())),
            ]);
        }
        t.row(cells);
    }
    format!(
        "\nBlocks after the free phase ({}; small allocations only)\n{}",
        count(end.len() as u64),
        t.render()
    )
}

/// The medium blocks after the free phase, each with its runs (allocations), live
/// granules and their fill, requested and resident bytes; then their sum.
fn medium_table(r: &Report, wide: bool) -> String {
    let medium = &r.end.medium;
    if medium.is_empty() {
        return String::new();
    }
    let mut head = vec!["<life", "runs"];
    head.extend(live_heads("granules"));
    if wide {
        head.insert(0, "<base");
    }
    let mut t = Table::new(&head);
    let cells = |life: String, runs: u64, s: &Sum| {
        let mut cells = vec![life, count(runs)];
        cells.extend(live_cells(s));
        cells
    };
    for row in medium {
        let b = &row.block;
        let mut one = Sum::default();
        one.add(row);
        let mut c = cells(r.lives.name(b.life).to_owned(), b.runs as u64, &one);
        if wide {
            c.insert(0, format!("{:#x}", b.base));
        }
        t.row(c);
    }
    t.rule();
    let mut c = cells("total".into(), r.end.medium_count(), &total(medium));
    if wide {
        c.insert(0, String::new());
    }
    t.row(c);
    format!(
        "\nMedium blocks after the free phase ({}; runs of {} granules)\n{}",
        count(medium.len() as u64),
        bytes(medium[0].block.stride as u64),
        t.render()
    )
}

/// The headings of [`live_cells`], the first one `live`.
fn live_heads(live: &'static str) -> [&'static str; 6] {
    [
        live,
        "fill",
        "requested",
        "rounding",
        "resident",
        "occupancy",
    ]
}

/// A sum's live slots (or granules) on: live, fill, requested, rounding, resident, occupancy.
fn live_cells(s: &Sum) -> Vec<String> {
    vec![
        count(s.live),
        percent(s.fill()),
        bytes(s.requested),
        cost(s.rounding()),
        bytes(s.resident_bytes),
        cost(s.occupancy()),
    ]
}

fn sum_cells(s: &Sum, wide: bool) -> Vec<String> {
    let mut cells = vec![count(s.blocks)];
    cells.extend(live_cells(s));
    if wide {
        cells.extend([bytes(s.block_bytes), geometry(s.geometry())]);
    }
    cells
}

fn size_class_table(r: &Report, wide: bool) -> String {
    let end = &r.end.blocks;
    let mut head = vec!["stride", "blocks"];
    head.extend(live_heads("live"));
    if wide {
        head.insert(0, "class");
        head.extend(["block", "geometry"]);
    }
    let mut t = Table::new(&head);
    let first = |class: String, stride: String| match wide {
        true => vec![class, stride],
        false => vec![stride],
    };
    for (class, s) in group(end, |b| b.size_class) {
        let mut cells = first(class.to_string(), bytes(CLASSES[class].stride as u64));
        cells.extend(sum_cells(&s, wide));
        t.row(cells);
    }
    t.rule();
    let mut cells = first(String::new(), "total".into());
    cells.extend(sum_cells(&total(end), wide));
    t.row(cells);
    format!(
        "\nBy size class, after the free phase (small allocations only)\n{}",
        t.render()
    )
}

fn lifetime_table(r: &Report) -> String {
    let mut t = Table::new(&[
        "<life",
        "<phase",
        "blocks",
        "live",
        "requested",
        "resident",
        "occupancy",
    ]);
    let before = group(&r.build.blocks, |b| b.life);
    let after = group(&r.end.blocks, |b| b.life);
    let lives: BTreeSet<usize> = before.keys().chain(after.keys()).copied().collect();
    let row = |t: &mut Table, name: String, phase: &str, s: &Sum| {
        t.row(vec![
            name,
            phase.into(),
            count(s.blocks),
            count(s.live),
            bytes(s.requested),
            bytes(s.resident_bytes),
            cost(s.occupancy()),
        ])
    };
    let pair = |t: &mut Table, name: String, a: Sum, b: Sum| {
        row(t, name, "build", &a);
        row(t, String::new(), "end", &b);
    };
    for &l in &lives {
        let (a, b) = (before.get(&l), after.get(&l));
        let name = r.lives.name(l).to_owned();
        pair(
            &mut t,
            name,
            a.copied().unwrap_or_default(),
            b.copied().unwrap_or_default(),
        );
    }
    t.rule();
    pair(
        &mut t,
        "total".into(),
        total(&r.build.blocks),
        total(&r.end.blocks),
    );
    format!(
        "\nBy lifetime class: at the end of the build phase, and at the end (small only)\n{}",
        t.render()
    )
}

fn totals(r: &Report) -> String {
    let small = total(&r.end.blocks);
    let medium = total(&r.end.medium);
    let large = &r.end.large;
    let requested = small.requested + medium.requested + large.requested;
    let resident = small.resident_bytes + medium.resident_bytes + large.mapped;
    format!(
        "\nTotal after the free phase\n\
         \x20  small:  {} live in {} blocks ({} reserved): {} resident\n\
         \x20          for {} requested, occupancy {}\n\
         \x20  medium: {} live in {} medium blocks: {} resident\n\
         \x20          for {} requested, occupancy {}\n\
         \x20  large:  {} live, {} mapped for {} requested\n\
         \x20  all:    {} resident (large counted as mapped) for {} requested,\n\
         \x20          occupancy {}\n",
        count(small.live),
        count(small.blocks),
        bytes(small.block_bytes),
        bytes(small.resident_bytes),
        bytes(small.requested),
        cost(small.occupancy()),
        count(r.end.medium_count()),
        count(medium.blocks),
        bytes(medium.resident_bytes),
        bytes(medium.requested),
        cost(medium.occupancy()),
        count(large.count),
        bytes(large.mapped),
        bytes(large.requested),
        bytes(resident),
        bytes(requested),
        cost(report::ratio(resident, requested)),
    )
}

fn contract_table(r: &Report, wide: bool) -> String {
    let mut head = vec![
        "request size",
        "contract",
        "cohort",
        "stride",
        "slots",
        "<meets",
    ];
    if wide {
        head.splice(3..3, ["class"]);
        head.splice(6..6, ["block", "<strides serving the row"]);
    }
    let mut t = Table::new(&head);
    for row in &r.contract {
        let c = &CLASSES[row.worst_class];
        if !row.in_contract {
            t.rule();
        }
        let size = match row.lo == row.hi {
            true => format!("{} B", row.lo),
            false => format!("{}-{} B", row.lo, row.hi),
        };
        let limit = geometry(Some(row.limit));
        let mut cells = vec![
            size,
            if row.in_contract {
                limit
            } else {
                format!("({limit})")
            },
            geometry(Some(row.worst)),
            format!("{} B", c.stride),
            count(c.capacity as u64),
            if row.ok { "yes" } else { "NO" }.into(),
        ];
        if wide {
            let stride = |i: usize| CLASSES[row.classes[i]].stride;
            let serving = match row.classes.len() {
                1 => format!("1: {} B", stride(0)),
                n => format!("{n}: {} to {} B", stride(0), stride(n - 1)),
            };
            cells.splice(3..3, [row.worst_class.to_string()]);
            cells.splice(6..6, [bytes(c.block_size() as u64), serving]);
        }
        t.row(cells);
    }
    format!(
        "\nThe ratio contract: the largest geometry allowed per request size, beside\n\
         cohort's worst over the size classes serving those sizes\n{}\
         \x20  stride, slots: the size class giving cohort's figure. The last row is beyond\n\
         \x20  the contract's rows: cohort holds it to the contract's last figure.\n",
        t.render()
    )
}
