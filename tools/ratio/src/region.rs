//! The region the mix ran in: how it was made (its capacity, its placement options as
//! the region records them, its label), how much of its capacity the mix used, with the
//! slow-path events and promotions cohort counted (`Stats::events`).

use crate::json::Json;
use cohort::{Cohort, HugePages, Lifetime, RegionOptions, Stats};

/// How the allocator's region is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Made {
    /// The default reservation (`Cohort::new`).
    Default,
    /// A reservation of this many bytes (`Cohort::with_reservation`).
    Reservation(usize),
    /// A fixed region made with these options (`Cohort::with_options`).
    Options(RegionOptions),
}

impl Made {
    /// A fresh allocator in such a region; the option the OS refused, as text.
    pub fn make<L: Lifetime>(&self) -> Result<Cohort<L>, String> {
        match self {
            Made::Default => Ok(Cohort::new()),
            Made::Reservation(bytes) => Ok(Cohort::with_reservation(*bytes)),
            Made::Options(o) => Cohort::with_options(o).map_err(|e| format!("the region: {e}")),
        }
    }
}

/// The placement options of `o` as `name` (a switch) or `name=value`, in the order the
/// command line takes them: what a region made with them records.
fn placement_names(o: &RegionOptions) -> Vec<String> {
    let mut names = Vec::new();
    if o.committed() && !o.prefaulted() && !o.locked() && o.huge() != HugePages::Explicit {
        names.push("commit".to_string());
    }
    let switches = [
        (o.prefaulted(), "prefault"),
        (o.locked(), "lock"),
        (o.falls_back(), "fallback"),
    ];
    names.extend(switches.iter().filter(|s| s.0).map(|s| s.1.to_string()));
    if o.nodes() != 0 {
        let nodes: Vec<String> = (0..64)
            .filter(|n| o.nodes() & 1 << n != 0)
            .map(|n| n.to_string())
            .collect();
        names.push(format!("numa={}", nodes.join(",")));
    }
    match o.huge() {
        HugePages::Default => {}
        HugePages::Transparent => names.push("huge-pages=transparent".into()),
        HugePages::Explicit => names.push("huge-pages=explicit".into()),
    }
    names
}

/// The region's options and capacity use, read after the mix's allocations.
#[derive(Clone, Debug, Default)]
pub struct RegionUse {
    /// The allocator's label (`--label`), empty when none.
    pub label: String,
    /// The options the region was made with, as `name=value` (name alone for a switch).
    pub options: Vec<String>,
    /// Its capacity in bytes.
    pub capacity: usize,
    /// Blocks of 2 MiB it can hold.
    pub blocks: usize,
    /// Blocks carved so far.
    pub carved: usize,
    /// Blocks holding allocations.
    pub in_use: usize,
    /// Empty blocks kept for reuse.
    pub kept_empty: usize,
    /// Units (2 MiB) held by large allocations.
    pub in_large: usize,
    /// Live slots holding promoted requests.
    pub promoted_live: usize,
    /// Requests served by promotion so far.
    pub promoted: u64,
    /// Slow-path entries of allocations and of frees, remote frees, blocks taken from the
    /// pool and given back, summed over the heads.
    pub alloc_slow: u64,
    pub free_slow: u64,
    pub remote_frees: u64,
    pub blocks_taken: u64,
    pub blocks_given_back: u64,
}

impl RegionUse {
    /// What `cohort`'s stats say, with how its region was made (`made`) and the placement
    /// options the region records.
    pub fn of<L: Lifetime>(cohort: &Cohort<L>, made: &Made) -> RegionUse {
        let s: Stats = cohort.stats();
        let mut options = Vec::new();
        match (made, cohort.region_options()) {
            (_, Some(o)) => {
                options.push(format!("fixed capacity={}", o.capacity()));
                options.extend(placement_names(&o));
            }
            (Made::Reservation(c), None) => options.push(format!("capacity={c}")),
            (_, None) => options.push("reservation=default".into()),
        }
        if !s.label.is_empty() {
            options.push(format!("label={}", s.label));
        }
        let sum = |f: fn(&cohort::HeadEvents) -> u64| s.events.iter().map(f).sum::<u64>();
        RegionUse {
            label: s.label.as_str().into(),
            options,
            capacity: s.region_bytes,
            blocks: s.region_bytes / (2 << 20),
            carved: s.carved_blocks,
            in_use: s.small.blocks,
            kept_empty: s.retained_empty_blocks,
            in_large: s.run_units,
            promoted_live: s.heads.iter().map(|h| h.promoted).sum(),
            promoted: sum(|e| e.promoted),
            alloc_slow: sum(|e| e.alloc_slow),
            free_slow: sum(|e| e.free_slow),
            remote_frees: sum(|e| e.remote_frees),
            blocks_taken: sum(|e| e.blocks_taken),
            blocks_given_back: sum(|e| e.blocks_given_back),
        }
    }

    /// The share of the region's units in use (blocks, kept or holding slots, and large
    /// allocations), in percent.
    pub fn use_percent(&self) -> f64 {
        100.0 * (self.in_use + self.kept_empty + self.in_large) as f64 / self.blocks.max(1) as f64
    }

    /// The text section (lines within 80 columns).
    pub fn text(&self) -> String {
        format!(
            "\nREGION (after the allocations)\n   options: {}\n   capacity {} MiB = {} \
             blocks; {} carved so far\n   {} in use + {} kept empty + {} in large \
             allocations = {:.1}% used\n   \
             promotion: {} live slots hold promoted requests ({} so far)\n   slow paths: {} \
             alloc, {} free, {} remote frees\n   blocks: {} taken from the pool, {} given \
             back\n",
            wrap(&self.options, "   options: ".len(), 80),
            self.capacity >> 20,
            self.blocks,
            self.carved,
            self.in_use,
            self.kept_empty,
            self.in_large,
            self.use_percent(),
            self.promoted_live,
            self.promoted,
            self.alloc_slow,
            self.free_slow,
            self.remote_frees,
            self.blocks_taken,
            self.blocks_given_back,
        )
    }

    /// The JSON object.
    pub fn json(&self) -> Json {
        Json::Obj(vec![
            ("label", self.label.as_str().into()),
            (
                "options",
                Json::Arr(self.options.iter().map(|o| o.as_str().into()).collect()),
            ),
            ("capacity_bytes", self.capacity.into()),
            ("blocks", self.blocks.into()),
            ("carved_blocks", self.carved.into()),
            ("blocks_in_use", self.in_use.into()),
            ("empty_blocks_kept", self.kept_empty.into()),
            ("units_in_large", self.in_large.into()),
            ("use_percent", self.use_percent().into()),
            ("promoted_live", self.promoted_live.into()),
            ("promoted", self.promoted.into()),
            ("alloc_slow", self.alloc_slow.into()),
            ("free_slow", self.free_slow.into()),
            ("remote_frees", self.remote_frees.into()),
            ("blocks_taken", self.blocks_taken.into()),
            ("blocks_given_back", self.blocks_given_back.into()),
        ])
    }
}

/// `words` joined by spaces in lines of at most `width` columns, the first starting after
/// `indent` columns and the others indented by as many (a word longer than a line gets one
/// of its own).
fn wrap(words: &[String], indent: usize, width: usize) -> String {
    let mut out = String::new();
    let mut column = indent;
    for (i, w) in words.iter().enumerate() {
        if i > 0 && column + 1 + w.chars().count() > width {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', indent));
            column = indent;
        } else if i > 0 {
            out.push(' ');
            column += 1;
        }
        out.push_str(w);
        column += w.chars().count();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_filled_by_large_allocations_shows_them_in_its_capacity_use() {
        let a = Cohort::<()>::with_reservation(8 << 20);
        let large: Vec<_> = (0..2).map(|_| a.malloc(3 << 20, ())).collect();
        assert!(large.iter().all(|p| !p.is_null()));
        assert!(a.malloc(3 << 20, ()).is_null(), "the capacity is used up");
        let r = RegionUse::of(&a, &Made::Reservation(8 << 20));
        assert_eq!((r.blocks, r.in_use, r.in_large), (4, 0, 4));
        assert!((r.use_percent() - 100.0).abs() < 1e-9);
        let text = r.text();
        assert!(
            text.contains("0 in use + 0 kept empty + 4 in large allocations = 100.0% used"),
            "{text}"
        );
        assert!(r.json().render().contains("\"units_in_large\": 4"));
        for p in large {
            // SAFETY: allocated above with this size and class, freed once.
            unsafe { a.free(p, 3 << 20, ()) };
        }
        assert_eq!(RegionUse::of(&a, &Made::Reservation(8 << 20)).in_large, 0);
    }

    #[test]
    fn a_full_fixed_region_shows_its_capacity_use_and_promotions() {
        let a = Cohort::<()>::with_reservation(4 << 20);
        a.set_label("arena");
        let big = a.malloc(32, ());
        let mut small = Vec::new();
        loop {
            let p = a.try_malloc(16, ());
            if p.is_null() {
                break;
            }
            small.push(p);
        }
        let promoted: Vec<_> = (0..10).map(|_| a.malloc(16, ())).collect();
        let r = RegionUse::of(&a, &Made::Reservation(4 << 20));
        assert_eq!((r.blocks, r.carved, r.in_use), (2, 2, 2));
        assert_eq!((r.promoted_live, r.promoted), (10, 10));
        assert!((r.use_percent() - 100.0).abs() < 1e-9);
        assert!(r.blocks_taken >= 2 && r.alloc_slow >= 1);
        let text = r.text();
        assert!(
            text.contains("options: capacity=4194304 label=arena"),
            "{text}"
        );
        assert!(
            text.contains("10 live slots hold promoted requests"),
            "{text}"
        );
        let json = r.json().render();
        assert!(json.contains("\"promoted_live\": 10"), "{json}");
        // SAFETY: each allocated above with these sizes, freed once.
        unsafe {
            for p in promoted.into_iter().chain(small) {
                a.free(p, 16, ());
            }
            a.free(big, 32, ());
        }
    }

    #[test]
    fn a_fixed_region_shows_the_placement_options_it_records_beside_capacity_and_label() {
        let options = RegionOptions::new(4 << 20).commit(true).fallback(true);
        let made = Made::Options(options);
        let a = made.make::<()>().expect("a fixed region");
        a.set_label("placed");
        let run = a.malloc(4 << 20, ());
        assert!(a.in_region(run), "the run fills the region");
        let small = a.malloc(100, ());
        assert!(
            !small.is_null() && !a.in_region(small),
            "a fallback mapping"
        );
        let r = RegionUse::of(&a, &made);
        assert_eq!(
            r.options,
            [
                "fixed capacity=4194304",
                "commit",
                "fallback",
                "label=placed"
            ]
        );
        let text = r.text();
        assert!(
            text.contains("options: fixed capacity=4194304 commit fallback label=placed"),
            "{text}"
        );
        assert!(
            text.contains("0 in use + 0 kept empty + 2 in large allocations"),
            "{text}"
        );
        let json = r.json().render();
        assert!(json.contains("\"commit\", \"fallback\""), "{json}");
        // SAFETY: allocated above with these sizes, freed once.
        unsafe {
            a.free(small, 100, ());
            a.free(run, 4 << 20, ());
        }
        // Every option, as the region records it (those this machine may refuse are
        // named from the options alone).
        let every = RegionOptions::new(8 << 20)
            .prefault(true)
            .lock(true)
            .fallback(true)
            .numa_nodes(0b101)
            .huge_pages(HugePages::Transparent);
        assert_eq!(
            placement_names(&every),
            [
                "prefault",
                "lock",
                "fallback",
                "numa=0,2",
                "huge-pages=transparent"
            ]
        );
        let long: Vec<String> = ["fixed capacity=8388608".to_string()]
            .into_iter()
            .chain(placement_names(&every))
            .chain(["label=a-label-of-thirty-two-bytes-long".to_string()])
            .collect();
        let wrapped = wrap(&long, 12, 80);
        assert!(wrapped.lines().count() > 1, "{wrapped}");
        for (i, line) in wrapped.lines().enumerate() {
            let columns = line.chars().count() + if i == 0 { 12 } else { 0 };
            assert!(columns <= 80, "{columns} columns: {line}");
        }
        let words = |s: &str| s.split_whitespace().count();
        assert_eq!(
            words(&wrapped),
            long.iter().map(|w| words(w)).sum::<usize>()
        );
    }
}
