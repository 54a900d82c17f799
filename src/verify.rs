//! `verify`: walks every block and every list and checks the invariants of
//! [`crate::block`], [`crate::pool`] and [`crate::heap`].
//!
//! Per block: header magic and key; `bump_end <= limit` and the stride copy; `first <=
//! bump <= limit` on a slot boundary; the free lists and the remote list are made of slots
//! below `bump`, are acyclic and disjoint; `used == handed out - |free list|`; `|remote
//! list|` matches the remote count; in checked mode a slot's live bit is set exactly when
//! the slot is live. Per list: every block on a heap's or the pool's list has the list's
//! key and owner and is not `FULL`; a heap's tiny blocks are pool-owned and held by the
//! heap, the pool's blocks by no heap; links are symmetric. The lifetime classes' lists of
//! blocks in use hold every block in use once, under its own lifetime class; the kept empty
//! blocks' list every block without a key once, `retained_count` of them. First, the state
//! the walks start from: the carved count, the heap registry, the abandoned heaps' list.
//!
//! Damage is reported, never followed: every list link is checked to name a carved block
//! before it is read through, and a list walk stops after `carved` steps (the region's
//! carved units: a longer list holds a block twice, a cycle), so `verify` costs
//! `O(carved + free-listed slots)` whatever the metadata holds (`lists`).
//!
//! The walk holds the pool lock: a thread's exit hands its heap to the pool under that
//! lock (`Heap::abandon` takes it before it touches the heap), so no heap changes hands
//! mid-walk, even when the thread's exit hooks run after its spawner stopped waiting (a
//! `std::thread::scope` ends before them). Nothing under the lock allocates (the allocator
//! may be the global one): a fault is recorded as plain data and worded after the unlock.

use crate::api::Cohort;
use crate::block::{Header, Role, Snapshot, MAGIC};
use crate::class::CLASSES;
use crate::label::{Label, LabelTag};
use crate::lifetime::{self, Lifetime};
use crate::medium::is_medium;
use crate::medium_block::{MediumCounts, Runs};
use crate::medium_cache::Starts;
use crate::pool::check::{slot_lists_fault, ListFault};
use crate::pool::{Pool, PoolState, EMPTY_KEY};
use crate::sync::Ordering;
use bitvec::slice::BitSlice;
use core::fmt;
use lists::{check_lists, check_retained, check_state, lists_fault, Carved};

mod lists;

/// What [`Cohort::verify`] found wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    /// The block's base address.
    pub block: usize,
    /// Its size class, when the header names a valid one.
    pub size_class: Option<usize>,
    /// Its lifetime class, when the header names a valid one.
    pub life: Option<usize>,
    /// What is wrong.
    pub problem: String,
    /// The allocator's label ([`Cohort::set_label`]), empty when it has none.
    pub label: Label,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cohort{}: verify: block {:#x}", LabelTag(self.label), self.block)?;
        if let (Some(c), Some(l)) = (self.size_class, self.life) {
            write!(
                f,
                " (size class {c}, stride {} B, lifetime class {l})",
                CLASSES[c].stride
            )?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for VerifyError {}

/// What [`Cohort::verify`] walked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verified {
    /// Blocks in use checked.
    pub blocks: usize,
    /// Empty blocks kept for reuse.
    pub empty_blocks: usize,
    /// Live slots counted.
    pub live: usize,
}

/// "consistent: 10 blocks in use (1000 live slots), 2 empty blocks kept".
impl fmt::Display for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "consistent: {} blocks in use ({} live slots), {} empty blocks kept",
            self.blocks, self.live, self.empty_blocks
        )
    }
}

impl<L: Lifetime> Cohort<L> {
    /// Checks every block and list of this allocator; returns what it walked, or the first
    /// problem found with the block it is in.
    ///
    /// Cost: proportional to the blocks and their free slots. Allocates a scratch bitmap
    /// through the global allocator before walking. Holds the pool lock while it walks
    /// (threads that exit meanwhile wait for it). In an instance shared between processes,
    /// it first takes over the heaps of processes that died (as `compact` does): their
    /// half-done work is recovered, not reported.
    ///
    /// # Safety
    /// No other thread allocates or frees through this allocator while it runs (it reads
    /// the heaps and free lists other threads own). [`Cohort::verify_exclusive`] is the safe
    /// form.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = cohort::Cohort::<()>::new();
    /// let p = a.malloc(64, ());
    /// // SAFETY: no other thread uses `a`.
    /// let v = unsafe { a.verify() }.expect("consistent");
    /// assert_eq!(v.live, 1);
    /// // SAFETY: allocated above with this size and class.
    /// unsafe { a.free(p, 64, ()) };
    /// ```
    pub unsafe fn verify(&self) -> Result<Verified, VerifyError> {
        // SAFETY: the caller's.
        unsafe { self.verify_to(Depth::Lists) }
    }

    /// The check of a region's blocks at its open by the first process to open it when
    /// nobody has it open (`crate::persist`): with `lists`, [`Cohort::verify`]; else its
    /// walk of the headers and the lists of blocks only (`O(carved blocks)`, no page past a
    /// block's first read), then a new check generation, so that each block's slot lists
    /// are checked when a heap first takes it (`crate::pool`'s `check`).
    ///
    /// # Safety
    /// As [`Cohort::verify`], and no other process has the region open.
    pub(crate) unsafe fn check_at_open(&self, lists: bool) -> Result<Verified, VerifyError> {
        let depth = if lists { Depth::Lists } else { Depth::Headers };
        // SAFETY: the caller's.
        let verified = unsafe { self.verify_to(depth) }?;
        if let (false, Some(pool)) = (lists, self.core.pool_if_any()) {
            pool.new_check_generation();
        }
        Ok(verified)
    }

    /// [`Cohort::verify`], each block read to `depth`.
    ///
    /// # Safety
    /// As [`Cohort::verify`].
    unsafe fn verify_to(&self, depth: Depth) -> Result<Verified, VerifyError> {
        let Some(pool) = self.core.pool_if_any() else {
            return Ok(Verified::default());
        };
        // Pending remote frees are counted where they go: their blocks' remote lists (but
        // those of a batch whose flush was refused stay pending: RED-113).
        // In a fork child whose repair has not run (a program's earlier child handler
        // verifies), the repair first: it marks the heaps `reap_dead` takes over (RED-114).
        crate::fork::repair_pending_child();
        let unpushed = !self.core.flush_batches_all_pushed();
        // A process that died mid-allocation left its heap's work half done (a slot taken
        // and not yet counted, a block between lists): not damage. Its heaps are taken over
        // first, as any survivor's slow path would (nothing in a private pool).
        crate::heap_handover::reap_dead(pool);
        let max_slots = CLASSES
            .iter()
            .map(|c| c.capacity as usize)
            .max()
            .unwrap_or(0);
        let mut seen = vec![0usize; max_slots.div_ceil(usize::BITS as usize)];
        let (walked, runs) = {
            let st = pool.lock_uncounted();
            // Damaged state is reported before anything walks what it counts.
            let walked = check_state(pool, &st).and_then(|()| {
                // The heads' cursors to their blocks: the headers are the truth then.
                for heap in crate::heap::registered(pool) {
                    // SAFETY: registered heaps stay mapped; verify's contract and the pool
                    // lock keep them still.
                    unsafe { (*heap).sync_cursors(pool) };
                }
                walk(pool, &st, BitSlice::from_slice_mut(&mut seen), depth, unpushed)
            });
            let runs = walked.as_ref().map_or(Ok(()), |_| pool.region.check_runs(&st.region));
            (walked, runs)
        };
        let verified = walked.map_err(|f| f.into_error(pool.life_count, self.label()))?;
        // The runs of the region's units (large allocations inside it).
        runs.map_err(|fault| VerifyError {
            block: pool.region.unit_addr(fault.unit()) as usize,
            size_class: None,
            life: None,
            problem: fault.to_string(),
            label: self.label(),
        })?;
        Ok(verified)
    }

    /// [`Cohort::verify`], with `&mut self` proving nobody else uses the allocator.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut a = cohort::Cohort::<()>::new();
    /// let p = a.malloc(64, ());
    /// println!("{}", a.verify_exclusive().unwrap());
    /// // SAFETY: allocated above with this size and class.
    /// unsafe { a.free(p, 64, ()) };
    /// ```
    ///
    /// # Panics
    /// On an instance shared between processes: `&mut self` excludes no other process
    /// (call [`Cohort::verify`] when none uses the region).
    pub fn verify_exclusive(&mut self) -> Result<Verified, VerifyError> {
        self.core.assert_one_process(
            "verify_exclusive",
            "call the unsafe `verify` when no other process uses the region",
        );
        // SAFETY: `&mut self`: no other thread can use this allocator meanwhile.
        unsafe { self.verify() }
    }
}

/// Under the pool lock, in a pool other processes use: whether the lists `compact`
/// follows (the pool's, and those of `heap`, the caller's) are whole, link by link (see
/// `lists::lists_fault`). `compact` leaves them alone when not (a stray write of another
/// process damaged them since this one attached); `verify` names the damage. Always true
/// in a pool no other process uses (nobody else writes its state).
pub(crate) fn lists_whole(pool: &Pool, st: &PoolState, heap: Option<&crate::heap::Heap>) -> bool {
    !pool.is_process_shared() || lists_fault(pool, st, heap).is_none()
}

/// What is wrong with a block, as plain data (worded by [`Fault::into_error`] once the
/// pool lock is dropped).
#[derive(Clone, Copy)]
enum Problem {
    Magic(u32),
    Key(u16),
    Life(usize, usize),
    Window {
        bump_end: u32,
        stride: u32,
    },
    Bump(u32),
    Lists(ListFault),
    LiveBit {
        off: usize,
        free_listed: bool,
    },
    ListedEmptyOrFull(&'static str),
    ListedOwner(&'static str, u64),
    BackLink(&'static str),
    HeapTiny {
        heap: u32,
        holder: u32,
    },
    HeapRole {
        role: Role,
        says: Role,
    },
    PoolRole(Role),
    PoolHead(usize),
    PoolHolder(u32),
    LifeList(usize),
    LifeLists {
        listed: usize,
        in_use: usize,
    },
    Medium(&'static str),
    MediumList(usize),
    MediumCounts,
    PromotedSlot {
        slot: usize,
        free_listed: bool,
    },
    PromotedCount {
        bits: usize,
        count: usize,
    },
    PromotedSource(Option<usize>),
    Link {
        what: &'static str,
        unit: u32,
    },
    Cycle(&'static str),
    Carved {
        carved: usize,
        units: usize,
    },
    Registry {
        id: u32,
        link: u64,
    },
    Abandoned {
        link: u64,
        what: &'static str,
    },
    Kept(u16),
    KeptCount {
        listed: usize,
        count: usize,
        empty: usize,
    },
}

/// A problem and the block it is in, as read when it was found.
#[derive(Clone, Copy)]
struct Fault {
    block: usize,
    geometry: Option<(usize, usize)>,
    problem: Problem,
}

impl Fault {
    fn new(h: &Header, problem: Problem) -> Fault {
        Fault {
            block: h.base() as usize,
            geometry: h.snapshot().map(|b| (b.class, b.life)),
            problem,
        }
    }

    /// The error for an allocator of `life_count` lifetime classes (its lifetime class as
    /// reports number it, see [`crate::lifetime`]).
    fn into_error(self, life_count: usize, label: Label) -> VerifyError {
        let (size_class, life) = self.geometry.unzip();
        let life = life.map(|l| if l < life_count { lifetime::reported(l, life_count) } else { l });
        let c = size_class.map(|c| &CLASSES[c]);
        let (first, limit, stride) = c.map_or((0, 0, 0), |c| (c.first, c.limit, c.stride));
        let problem = match self.problem {
            Problem::Magic(m) => format!("header magic {m:#x}, expected {MAGIC:#x}"),
            Problem::Key(key) => format!("header key {key:#x} names no size class"),
            Problem::Life(life, count) => format!("lifetime class {life} of {count}"),
            Problem::Window { bump_end, stride: copy } => format!(
                "header bump end/stride {bump_end}/{copy} past the class's limit {limit} or not its stride {stride}"
            ),
            Problem::Bump(bump) => {
                format!("bump offset {bump} is not a slot boundary in [{first}, {limit}]")
            }
            Problem::Lists(fault) => list_problem(fault),
            Problem::LiveBit { off, free_listed } => format!(
                "slot at offset {off:#x} is {} but its checked-mode live bit says {}",
                if free_listed { "free" } else { "live" },
                if free_listed { "live" } else { "free" }
            ),
            Problem::ListedEmptyOrFull(what) => format!("{what} lists an empty or FULL block"),
            Problem::ListedOwner(what, owner) => {
                format!("{what} lists a block owned by {owner:#x}")
            }
            Problem::BackLink(what) => {
                format!("{what}: the next block's prev link does not point back")
            }
            Problem::HeapTiny { heap, holder } => {
                format!("heap {heap} lists a tiny block held by {holder}")
            }
            Problem::HeapRole { role, says } => {
                format!("a heap holds it as {role:?} but its role says {says:?}")
            }
            Problem::PoolRole(role) => format!("the pool lists it as {role:?}"),
            Problem::PoolHead(head) => format!("the pool lists it under head {head}"),
            Problem::PoolHolder(holder) => format!("the pool lists it, held by heap {holder}"),
            Problem::LifeList(life) => format!("the list of lifetime class {life}'s blocks holds it"),
            Problem::LifeLists { listed, in_use } => format!(
                "the lifetime classes' lists hold {listed} blocks, {in_use} are in use"
            ),
            Problem::Medium(what) => format!("medium block: {what}"),
            Problem::MediumList(life) => {
                format!("the medium list of lifetime class {life} holds it")
            }
            Problem::MediumCounts => {
                "the medium blocks' counts differ from the pool's sums".into()
            }
            Problem::PromotedSlot { slot, free_listed } => format!(
                "slot {slot} is marked promoted but is {}",
                if free_listed { "free" } else { "never used" }
            ),
            Problem::PromotedCount { bits, count } => format!(
                "{bits} slots are marked promoted, the promotion record counts {count}"
            ),
            Problem::Link { what, unit } => {
                format!("{what}: a link names unit {unit:#x}, no carved block")
            }
            Problem::Cycle(what) => {
                format!("{what}: longer than the region's carved blocks (a cycle)")
            }
            Problem::Carved { carved, units } => {
                format!("the region's state counts {carved} units carved, it has {units}")
            }
            Problem::Registry { id, link } => {
                format!("the heap registry's entry {id} names {link:#x}, not heap {id}'s slot")
            }
            Problem::Abandoned { link, what } => {
                format!("the abandoned heaps' list: link {link:#x} {what}")
            }
            Problem::Kept(key) => format!("the kept empty blocks' list holds it, of key {key:#x}"),
            Problem::KeptCount { listed, count, empty } => format!(
                "the kept empty blocks' list holds {listed} blocks, its count says {count}, {empty} blocks are empty"
            ),
            Problem::PromotedSource(source) => format!(
                "the promotion record's source class {source:?} is not a smaller class"
            ),
        };
        VerifyError {
            block: self.block,
            size_class,
            life,
            problem,
            label,
        }
    }
}

/// A block's slot lists' fault, worded.
fn list_problem(fault: ListFault) -> String {
    match fault {
        ListFault::NotSlot(list, off) => {
            format!("{list} links to offset {off:#x}, not a handed-out slot")
        }
        ListFault::Twice(off) => format!(
            "slot at offset {off:#x} is twice on the free lists (a cycle or a double free)"
        ),
        ListFault::RunList => "a run list leaves its run or is longer than it".into(),
        ListFault::Bump(bump) => format!("never-used boundary {bump:#x} is not a slot boundary"),
        ListFault::ListedLive(off) => format!(
            "slot at offset {off:#x} is free but its checked-mode live bit says live"
        ),
        ListFault::RemoteCount(n, count) => {
            format!("remote list holds {n} slots, its count says {count}")
        }
        ListFault::Counts {
            used,
            free,
            handed_out,
        } => format!("used {used} + free-listed {free} != {handed_out} slots handed out"),
    }
}

/// Fails with `problem` in block `h` unless `ok`.
fn ensure(ok: bool, h: &Header, problem: Problem) -> Result<(), Fault> {
    if ok {
        Ok(())
    } else {
        Err(Fault::new(h, problem))
    }
}

/// How far [`walk`] reads each block.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Depth {
    /// Its header and first page only (a medium block's run table is there): geometry,
    /// and the lists of blocks; no slot's link (the open of a region nobody has open,
    /// whose slot lists the lazy check takes: `crate::pool`'s `check`).
    Headers,
    /// Everything, every free slot's link too.
    Lists,
}

/// Under the pool lock: every block, then every list.
/// `unpushed`: a batch of remote frees could not be pushed (see [`check_block`]).
fn walk(
    pool: &Pool,
    st: &PoolState,
    seen: &mut BitSlice<usize>,
    depth: Depth,
    unpushed: bool,
) -> Result<Verified, Fault> {
    let mut out = Verified::default();
    let mut last = None;
    let mut medium = MediumCounts::new();
    for h in pool.blocks(st) {
        last = Some(h);
        // The header's identity is read once (see `Header::snapshot`).
        let key = h.key();
        ensure(h.magic == MAGIC, h, Problem::Magic(h.magic))?;
        if is_medium(h) {
            out.live += check_medium(h, &mut medium)?;
            out.blocks += 1;
            continue;
        }
        match h.snapshot() {
            Some(b) if key != EMPTY_KEY => {
                out.live += check_block(pool, h, &b, seen, depth, unpushed)?;
                out.blocks += 1;
            }
            _ => {
                ensure(key == EMPTY_KEY, h, Problem::Key(key))?;
                out.empty_blocks += 1;
            }
        }
    }
    let carved = Carved::new(pool, st);
    check_lists(pool, st, carved)?;
    let mut listed = 0;
    for life in 0..pool.life_count {
        let what = "a lifetime class's list";
        carved.walk(st.of_life(life), pool.life_links(), what, |h| {
            let of_life = h.snapshot().is_some_and(|b| b.life == life)
                || (is_medium(h) && h.life() == life);
            listed += 1;
            ensure(of_life, h, Problem::LifeList(life))
        })?;
        carved.walk(st.medium_list(life), pool.units(), "a medium list", |h| {
            let ok = is_medium(h) && h.life() == life && carved.links_back(pool.units(), h);
            medium.blocks += 1;
            ensure(ok, h, Problem::MediumList(life))
        })?;
    }
    check_retained(pool, st, carved, out.empty_blocks)?;
    let sums = st.medium_counts;
    let counted = (medium.live, medium.dirty, medium.runs, medium.blocks);
    if counted != (sums.live, sums.dirty, sums.runs, 2 * sums.blocks) {
        if let Some(h) = last {
            return Err(Fault::new(h, Problem::MediumCounts));
        }
    }
    if listed != out.blocks {
        let in_use = out.blocks;
        // The error names the last block walked: no one block is to blame.
        if let Some(h) = last {
            return Err(Fault::new(h, Problem::LifeLists { listed, in_use }));
        }
    }
    Ok(out)
}

/// A medium block: its run table's invariants (`crate::medium_block`); adds its counts to
/// `sums` (its blocks once, here; once more from its list). Returns its live runs.
fn check_medium(h: &Header, sums: &mut MediumCounts) -> Result<usize, Fault> {
    // SAFETY: a medium block (its key); the walk holds the pool lock.
    let runs = unsafe { Runs::of(h) };
    let (live_runs, live) = runs.check().map_err(|e| Fault::new(h, Problem::Medium(e)))?;
    let starts = Starts::of(h);
    starts.check(runs).map_err(|e| Fault::new(h, Problem::Medium(e)))?;
    sums.live += live;
    sums.dirty += runs.dirty();
    sums.runs += live_runs;
    sums.blocks += 1;
    // Runs heaps' caches hold are free memory, no allocations.
    Ok(live_runs - starts.held().0)
}

/// One block in use, `b` as read once (its geometry is never read again): geometry, then
/// (with [`Depth::Lists`]) lists and counts. Returns its live slots. `unpushed`: a batch of
/// another thread's remote frees could not be pushed, so a slot in use whose checked-mode
/// live bit is clear may be one of its pending frees, not damage.
fn check_block(
    pool: &Pool,
    h: &Header,
    b: &Snapshot,
    seen: &mut BitSlice<usize>,
    depth: Depth,
    unpushed: bool,
) -> Result<usize, Fault> {
    let c = b.geometry;
    ensure(
        b.life < pool.life_count,
        h,
        Problem::Life(b.life, pool.life_count),
    )?;
    let bump_end = h.bump_end.load(Ordering::Relaxed);
    let window = c.is_tiny() || (bump_end <= c.limit && h.stride == c.stride);
    let stride = h.stride;
    ensure(window, h, Problem::Window { bump_end, stride })?;
    let bump = h.bump.load(Ordering::Relaxed);
    let on_boundary = bump >= c.first && bump <= c.limit && (bump - c.first).is_multiple_of(c.stride);
    ensure(on_boundary, h, Problem::Bump(bump))?;
    if depth == Depth::Headers {
        return Ok(b.live as usize);
    }
    let handed_out = ((bump - c.first) / c.stride) as usize;
    // SAFETY: verify's contract and the pool lock: nobody touches the block meanwhile;
    // `bump` is a slot boundary (checked above).
    unsafe { slot_lists_fault(h, c, bump, seen) }.map_err(|f| Fault::new(h, Problem::Lists(f)))?;
    if h.is_promoting() {
        check_promoted(pool, h, b, handed_out, seen)?;
    }
    if let Some(bits) = crate::live_bits::LiveBits::of(&pool.region) {
        // A process that died in the middle of a free cleared the slot's live bit and
        // never listed it: in a region whose dead processes were taken over, a slot in use
        // whose bit is clear is one of theirs (lost, never handed out again). So is a slot
        // freed into a batch of another thread's that could not be pushed (`unpushed`:
        // `membarrier` refused since its registration), pending until that thread pushes.
        let dead_freed = unpushed || pool.heaps_reaped.load(Ordering::Relaxed) > 0;
        for i in 0..handed_out {
            let off = (c.first + i as u32 * c.stride) as usize;
            let free_listed = seen[i];
            let bit = bits.is_live(h.base() as usize + off);
            let lost = dead_freed && !bit && !free_listed;
            ensure(bit != free_listed || lost, h, Problem::LiveBit { off, free_listed })?;
        }
    }
    Ok(b.live as usize)
}

/// A block that may hold promoted slots (see [`crate::promotion`]): every slot marked
/// promoted is handed out and not free-listed (`seen`), the record counts them, and its
/// source is a smaller class (when any is marked).
fn check_promoted(
    pool: &Pool,
    h: &Header,
    b: &Snapshot,
    handed_out: usize,
    seen: &BitSlice<usize>,
) -> Result<(), Fault> {
    let mut bits = 0;
    let mut bad = None;
    let (count, source) = crate::promotion::for_each_promoted(&pool.region, h, |slot| {
        bits += 1;
        if bad.is_none() && (slot >= handed_out || seen[slot]) {
            let free_listed = slot < handed_out;
            bad = Some(Problem::PromotedSlot { slot, free_listed });
        }
    });
    if let Some(problem) = bad {
        return Err(Fault::new(h, problem));
    }
    ensure(bits == count, h, Problem::PromotedCount { bits, count })?;
    let smaller = source.is_some_and(|s| s < b.class);
    ensure(count == 0 || smaller, h, Problem::PromotedSource(source))
}

#[cfg(test)]
mod tests;
