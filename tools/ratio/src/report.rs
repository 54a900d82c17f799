//! What the tool measures: a snapshot of the allocator's blocks joined with the live
//! requested bytes in each, sums per size class and lifetime class, and the ratio contract's
//! table computed from cohort's class table.

use crate::workload::Run;
use cohort::class::{
    class_of, malloc_align, medium_granules, ratio_contract_limit, BLOCK_SIZE, CLASSES, LIMIT_DEN,
    MAX_SMALL, MEDIUM_CLASS,
};
use cohort::BlockReport;
use std::alloc::Layout;
use std::collections::{BTreeMap, HashMap};

/// One live block (small or medium): the allocator's report and the tool's own count of
/// what lives in it.
#[derive(Clone, Debug)]
pub struct BlockRow {
    /// What `Cohort::for_each_block` says.
    pub block: BlockReport,
    /// Bytes the workload asked for, summed over the block's live allocations.
    pub requested: u64,
}

/// Large allocations (above the medium sizes, or a medium request the region could not
/// place): no block, their own mappings.
#[derive(Clone, Debug, Default)]
pub struct Large {
    /// Live large allocations.
    pub count: u64,
    /// Bytes asked for.
    pub requested: u64,
    /// Bytes mapped (page-rounded usable sizes).
    pub mapped: u64,
}

/// The allocator's state at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Live small blocks, by lifetime class, size class, then address.
    pub blocks: Vec<BlockRow>,
    /// Live medium blocks, by lifetime class, then address: each allocation a run of
    /// granules (`runs` allocations, `live` granules of `capacity`, `stride` the granule).
    pub medium: Vec<BlockRow>,
    /// Large allocations.
    pub large: Large,
    /// Disagreements between the allocator's reports and the workload's own books.
    pub problems: Vec<String>,
}

impl Snapshot {
    /// Live medium allocations: the runs of the medium blocks.
    pub fn medium_count(&self) -> u64 {
        self.medium.iter().map(|r| r.block.runs as u64).sum()
    }
}

/// Takes a snapshot of `run`'s allocator.
pub fn snapshot(run: &Run) -> Snapshot {
    // Block base -> (requested bytes, allocations), from the workload's live allocations:
    // small ones by their slot's block, medium ones (a run of granules in a medium block,
    // no slot) by the block they lie in.
    let mut ours: HashMap<usize, (u64, usize)> = HashMap::new();
    let mut medium: HashMap<usize, (u64, usize)> = HashMap::new();
    let mut large = Large::default();
    for (e, live) in run.mix.iter().zip(&run.live) {
        for &(_, p) in &live.ptrs {
            let in_medium = medium_granules(e.size, e.align()).is_some() && run.cohort.in_region(p);
            let block = match in_medium {
                true => Some((&mut medium, p as usize & !(BLOCK_SIZE - 1))),
                false => run
                    .cohort
                    .block_of_layout(p, e.size, e.align())
                    .map(|base| (&mut ours, base)),
            };
            match block {
                Some((books, base)) => {
                    let at = books.entry(base).or_default();
                    at.0 += e.size as u64;
                    at.1 += 1;
                }
                None => {
                    large.count += 1;
                    large.requested += e.size as u64;
                    let layout = Layout::from_size_align(e.size, e.align()).expect("parsed");
                    large.mapped += run.cohort.usable_size(layout) as u64;
                }
            }
        }
    }
    let mut blocks = Vec::new();
    let mut medium_blocks = Vec::new();
    let mut problems = Vec::new();
    run.cohort.for_each_block(|b| {
        let (books, rows, reported, what) = match b.size_class == MEDIUM_CLASS {
            true => (&mut medium, &mut medium_blocks, b.runs, "medium block"),
            false => (&mut ours, &mut blocks, b.live, "block"),
        };
        let (requested, count) = books.remove(&b.base).unwrap_or_default();
        if count != reported {
            problems.push(format!(
                "{what} {:#x} (stride {} B, lifetime class {}) reports {reported} live \
                 allocations, the workload has {count} in it",
                b.base, b.stride, b.life
            ));
        }
        rows.push(BlockRow {
            block: *b,
            requested,
        });
    });
    for (base, (_, count)) in ours.into_iter().chain(medium) {
        problems.push(format!(
            "{count} live allocations lie in {base:#x}, which for_each_block does not report"
        ));
    }
    blocks.sort_by_key(|r| (r.block.life, r.block.size_class, r.block.base));
    medium_blocks.sort_by_key(|r| (r.block.life, r.block.base));
    problems.sort();
    Snapshot {
        blocks,
        medium: medium_blocks,
        large,
        problems,
    }
}

/// Sums over a set of blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sum {
    /// Blocks.
    pub blocks: u64,
    /// Slots.
    pub capacity: u64,
    /// Live slots.
    pub live: u64,
    /// Virtual bytes of the blocks.
    pub block_bytes: u64,
    /// Usable bytes: capacity times stride.
    pub usable_bytes: u64,
    /// Bytes resident in RAM.
    pub resident_bytes: u64,
    /// Bytes of the live slots: live times stride.
    pub slot_bytes: u64,
    /// Live requested bytes.
    pub requested: u64,
}

impl Sum {
    /// Adds one block.
    pub fn add(&mut self, r: &BlockRow) {
        let b = &r.block;
        self.blocks += 1;
        self.capacity += b.capacity as u64;
        self.live += b.live as u64;
        self.block_bytes += b.block_bytes as u64;
        self.usable_bytes += b.usable_bytes as u64;
        self.resident_bytes += b.resident_bytes as u64;
        self.slot_bytes += (b.live * b.stride) as u64;
        self.requested += r.requested;
    }

    /// Block bytes / usable bytes: the measure of the ratio contract.
    pub fn geometry(&self) -> Option<f64> {
        ratio(self.block_bytes, self.usable_bytes)
    }

    /// Resident bytes / live requested bytes: what the workload pays per byte it uses.
    pub fn occupancy(&self) -> Option<f64> {
        ratio(self.resident_bytes, self.requested)
    }

    /// Live slot bytes / live requested bytes: the rounding up to a stride.
    pub fn rounding(&self) -> Option<f64> {
        ratio(self.slot_bytes, self.requested)
    }

    /// Live slots / slots.
    pub fn fill(&self) -> Option<f64> {
        ratio(self.live, self.capacity)
    }
}

/// `a / b`, or `None` when `b` is 0.
pub fn ratio(a: u64, b: u64) -> Option<f64> {
    (b != 0).then(|| a as f64 / b as f64)
}

/// Sums of blocks grouped by a key.
pub fn group(blocks: &[BlockRow], key: impl Fn(&BlockReport) -> usize) -> BTreeMap<usize, Sum> {
    let mut out: BTreeMap<usize, Sum> = BTreeMap::new();
    for r in blocks {
        out.entry(key(&r.block)).or_default().add(r);
    }
    out
}

/// The sum of all blocks.
pub fn total(blocks: &[BlockRow]) -> Sum {
    let mut s = Sum::default();
    blocks.iter().for_each(|r| s.add(r));
    s
}

/// The largest request size of the ratio contract's rows (its last row is 4097-8192).
const CONTRACT_MAX: usize = 8192;

/// The ratio contract's rows, (first size, last size): the runs of sizes up to
/// [`CONTRACT_MAX`] that `ratio_contract_limit` gives the same figure (1, 2, 3-4, 5-8, …,
/// 4097-8192).
pub fn contract_rows() -> Vec<(usize, usize)> {
    let mut rows: Vec<(usize, usize)> = Vec::new();
    for size in 1..=CONTRACT_MAX {
        match rows.last_mut() {
            Some((lo, hi)) if ratio_contract_limit(*lo) == ratio_contract_limit(size) => *hi = size,
            _ => rows.push((size, size)),
        }
    }
    rows
}

/// One row of the ratio table.
#[derive(Clone, Debug)]
pub struct ContractRow {
    /// Smallest request size of the row.
    pub lo: usize,
    /// Largest request size of the row.
    pub hi: usize,
    /// True for the contract's rows; false for cohort's small classes above them.
    pub in_contract: bool,
    /// The limit: the contract's figure (cohort keeps the last one above 8 KiB).
    pub limit: f64,
    /// Cohort's worst geometry ratio over the classes serving sizes of the row.
    pub worst: f64,
    /// The class giving it.
    pub worst_class: usize,
    /// The classes serving sizes of the row, ascending.
    pub classes: Vec<usize>,
    /// Whether every such class meets the limit (compared exactly, in integers).
    pub ok: bool,
}

/// The ratio table: for each row, the classes any request of a size in the row can get
/// (`class_of(size, align)` for every alignment up to what `malloc(size)` gives), and the
/// worst of their block bytes / usable bytes.
pub fn contract_table() -> Vec<ContractRow> {
    let beyond = (CONTRACT_MAX + 1, MAX_SMALL);
    let rows = contract_rows()
        .into_iter()
        .map(|r| (r, true))
        .chain([(beyond, false)]);
    rows.map(|((lo, hi), in_contract)| {
        let mut classes: Vec<usize> = (lo..=hi)
            .flat_map(|s| {
                let aligns = (0..=malloc_align(s).trailing_zeros()).map(|k| 1usize << k);
                aligns.filter_map(move |a| class_of(s, a))
            })
            .collect();
        classes.sort_unstable();
        classes.dedup();
        let limit = ratio_contract_limit(lo);
        let geometry = |c: usize| CLASSES[c].block_size() as f64 / CLASSES[c].usable() as f64;
        let worst_class = *classes
            .iter()
            .max_by(|&&a, &&b| geometry(a).total_cmp(&geometry(b)))
            .expect("every row has a class");
        let ok = classes.iter().all(|&c| {
            let (block, usable) = (CLASSES[c].block_size() as u128, CLASSES[c].usable() as u128);
            block * LIMIT_DEN as u128 <= usable * limit as u128
        });
        ContractRow {
            lo,
            hi,
            in_contract,
            limit: limit as f64 / LIMIT_DEN as f64,
            worst: geometry(worst_class),
            worst_class,
            classes,
            ok,
        }
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_table_rows_cover_their_sizes() {
        let rows = contract_rows();
        assert_eq!(rows.len(), 13, "the ratio contract has 13 rows");
        assert_eq!(
            (rows[2], rows[5], rows[12]),
            ((3, 4), (17, 64), (4097, 8192))
        );
        let table = contract_table();
        assert_eq!(table.len(), rows.len() + 1);
        for row in &table {
            for s in [row.lo, row.hi] {
                let c = class_of(s, malloc_align(s)).unwrap();
                assert!(row.classes.contains(&c), "size {s}");
            }
            assert!(row.worst >= 1.0);
        }
        // 1-byte requests get the 1-byte class, and only it.
        assert_eq!(table[0].classes, vec![class_of(1, 1).unwrap()]);
    }
}
