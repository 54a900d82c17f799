//! `verify`: walks every block and every list and checks the invariants of
//! [`crate::block`], [`crate::pool`] and [`crate::heap`].
//!
//! Per block: units `BLOCK` then `TAIL` for its size; header magic, key, stride copy,
//! `bump_end <= limit`;
//! `first <= bump <= limit` on a slot boundary; the free lists and the remote list are made
//! of slots below `bump`, are acyclic and disjoint; `used == handed out - |free list|`;
//! `|remote list|` matches the remote count; in checked mode a slot's live bit is set exactly
//! when the slot is live. Per list: every block on a heap's or the pool's list has the
//! list's key and owner and is not `FULL`; a heap's tiny blocks are pool-owned and held by
//! the heap, the pool's blocks by no heap; links are symmetric.

use crate::api::Cohort;
use crate::block::{key_class, Header, Role, Snapshot, FULL, HEAPLESS, MAGIC, NONE, NO_HOLDER};
use crate::class::{CLASSES, CLASS_COUNT, UNIT};
use crate::lifetime::Lifetime;
use crate::pool::{Pool, EMPTY_KEY};
use crate::region::{BLOCK, TAIL};
use crate::sync::Ordering;
use bitvec::slice::BitSlice;
use core::fmt;

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
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cohort: verify: block {:#x}", self.block)?;
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

impl<L: Lifetime> Cohort<L> {
    /// Checks every block and list of this allocator; returns what it walked, or the first
    /// problem found with the block it is in.
    ///
    /// Cost: proportional to the blocks and their free slots. Allocates a scratch bitmap
    /// through the global allocator before walking.
    ///
    /// # Safety
    /// No other thread allocates or frees through this allocator while it runs (it reads
    /// the heaps and free lists other threads own). [`Cohort::verify_exclusive`] is the safe
    /// form.
    pub unsafe fn verify(&self) -> Result<Verified, VerifyError> {
        let Some(pool) = self.core.pool_if_any() else {
            return Ok(Verified::default());
        };
        let max_slots = CLASSES
            .iter()
            .map(|c| c.capacity as usize)
            .max()
            .unwrap_or(0);
        let mut seen = vec![0usize; max_slots.div_ceil(usize::BITS as usize)];
        let mut out = Verified::default();
        let st = pool.state.lock();
        let carved = pool.region.carved_units(&st.region);
        drop(st);
        let r = &pool.region;
        let mut u = 0;
        while u < carved {
            match r.unit_state(u) {
                BLOCK => {
                    let h = pool.block(u as u32);
                    // The header's identity is read once (see `Header::snapshot`).
                    let key = h.key();
                    let units = check_units(pool, h, key, u, carved)?;
                    let bits = BitSlice::from_slice_mut(&mut seen);
                    match h.snapshot() {
                        Some(b) if key != EMPTY_KEY => {
                            out.live += check_block(pool, h, &b, bits)?;
                            out.blocks += 1;
                        }
                        _ => out.empty_blocks += 1,
                    }
                    u += units;
                }
                TAIL => {
                    let problem = format!("unit {u} is marked TAIL but follows no block");
                    return Err(error(pool.block(u as u32), problem));
                }
                _ => u += 1,
            }
        }
        check_lists(pool)?;
        Ok(out)
    }

    /// [`Cohort::verify`], with `&mut self` proving nobody else uses the allocator.
    pub fn verify_exclusive(&mut self) -> Result<Verified, VerifyError> {
        // SAFETY: `&mut self`: no other thread can use this allocator meanwhile.
        unsafe { self.verify() }
    }
}

fn error(h: &Header, problem: String) -> VerifyError {
    let b = h.snapshot();
    VerifyError {
        block: h.base() as usize,
        size_class: b.map(|b| b.class),
        life: b.map(|b| b.life),
        problem,
    }
}

/// The block's units: `BLOCK` then `TAIL`s, for header key `key`. Returns the unit count.
fn check_units(
    pool: &Pool,
    h: &Header,
    key: u16,
    u: usize,
    carved: usize,
) -> Result<usize, VerifyError> {
    if h.magic != MAGIC {
        return Err(error(
            h,
            format!("header magic {:#x}, expected {MAGIC:#x}", h.magic),
        ));
    }
    if key != EMPTY_KEY && key_class(key) >= CLASS_COUNT {
        return Err(error(h, format!("header key {key:#x} names no size class")));
    }
    let mut units = 1;
    while u + units < carved && pool.region.unit_state(u + units) == TAIL {
        units += 1;
    }
    if key != EMPTY_KEY && units != CLASSES[key_class(key)].block_size() / UNIT {
        let bytes = CLASSES[key_class(key)].block_size();
        return Err(error(
            h,
            format!("{units} units are marked for a block of {bytes} B"),
        ));
    }
    Ok(units)
}

/// One block in use, `b` as read once: geometry, lists, counts. Returns its live slots.
fn check_block(
    pool: &Pool,
    h: &Header,
    b: &Snapshot,
    seen: &mut BitSlice<usize>,
) -> Result<usize, VerifyError> {
    let life_count = pool.life_count;
    let c = b.geometry;
    if b.life >= life_count {
        return Err(error(
            h,
            format!("lifetime class {} of {life_count}", b.life),
        ));
    }
    let bump_end = h.bump_end.load(Ordering::Relaxed);
    if !c.is_tiny() && (bump_end > c.limit || h.stride != c.stride) {
        return Err(error(
            h,
            format!(
                "header bump end/stride {}/{} past the class's limit {} or not its stride {}",
                bump_end, h.stride, c.limit, c.stride
            ),
        ));
    }
    let bump = h.bump.load(Ordering::Relaxed);
    if bump < c.first || bump > c.limit || (bump - c.first) % c.stride != 0 {
        return Err(error(
            h,
            format!(
                "bump offset {bump} is not a slot boundary in [{}, {}]",
                c.first, c.limit
            ),
        ));
    }
    let handed_out = ((bump - c.first) / c.stride) as usize;
    seen[..c.capacity as usize].fill(false);
    let mut mark = |off: u32, list: &str| -> Result<(), VerifyError> {
        if !h.is_slot(off as usize) || off >= bump {
            return Err(error(
                h,
                format!("{list} links to offset {off:#x}, not a handed-out slot"),
            ));
        }
        let i = ((off - c.first) / c.stride) as usize;
        if seen.replace(i, true) {
            return Err(error(
                h,
                format!(
                    "slot at offset {off:#x} is twice on the free lists (a cycle or a double free)"
                ),
            ));
        }
        Ok(())
    };
    let mut free = 0usize;
    if c.is_tiny() {
        let mut bad = None;
        // SAFETY: verify's contract: nobody touches the block meanwhile.
        let ok = unsafe {
            crate::tiny::for_each_free(h, |off| match mark(off, "a run list") {
                Ok(()) => {
                    free += 1;
                    true
                }
                Err(e) => {
                    bad = Some(e);
                    false
                }
            })
        };
        if let Some(e) = bad {
            return Err(e);
        }
        if !ok {
            return Err(error(
                h,
                "a run list leaves its run or is longer than it".into(),
            ));
        }
    } else {
        free = walk(
            h,
            h.free.load(Ordering::Relaxed),
            &mut mark,
            "the local free list",
        )?;
        let remote = h.remote.load(Ordering::Acquire);
        let n = walk(h, remote as u32, &mut mark, "the remote free list")?;
        if n != h.remote_count() as usize {
            return Err(error(
                h,
                format!(
                    "remote list holds {n} slots, its count says {}",
                    h.remote_count()
                ),
            ));
        }
    }
    let used = h.used() as usize;
    if used + free != handed_out {
        return Err(error(
            h,
            format!("used {used} + free-listed {free} != {handed_out} slots handed out"),
        ));
    }
    let live = b.live as usize;
    if let Some(bits) = crate::live_bits::LiveBits::of(&pool.region) {
        for i in 0..handed_out {
            let p = h.base() as usize + (c.first + i as u32 * c.stride) as usize;
            let bit = bits.is_live(p);
            let free_listed = seen[i];
            if bit == free_listed {
                return Err(error(
                    h,
                    format!(
                        "slot at offset {:#x} is {} but its checked-mode live bit says {}",
                        p - h.base() as usize,
                        if free_listed { "free" } else { "live" },
                        if bit { "live" } else { "free" }
                    ),
                ));
            }
        }
    }
    Ok(live)
}

/// Walks a list of 32-bit offset links from `first`; returns its length.
fn walk(
    h: &Header,
    first: u32,
    mark: &mut impl FnMut(u32, &str) -> Result<(), VerifyError>,
    list: &str,
) -> Result<usize, VerifyError> {
    let mut n = 0;
    let mut off = first;
    while off != 0 {
        mark(off, list)?;
        n += 1;
        // SAFETY: `mark` checked that off is a slot of this block.
        off = unsafe { h.base().add(off as usize).cast::<u32>().read() };
    }
    Ok(n)
}

/// Every heap's and the pool's lists: keys, owners, links, no `FULL` block listed.
fn check_lists(pool: &Pool) -> Result<(), VerifyError> {
    let check = |h: &Header, owner: u64, what: &str| -> Result<(), VerifyError> {
        if h.key() == EMPTY_KEY || h.remote.load(Ordering::Relaxed) & FULL != 0 {
            return Err(error(h, format!("{what} lists an empty or FULL block")));
        }
        if h.owner() != owner {
            return Err(error(
                h,
                format!("{what} lists a block owned by {:#x}", h.owner()),
            ));
        }
        let next = h.next.load(Ordering::Relaxed);
        if next != NONE && pool.block(next).prev.load(Ordering::Relaxed) != pool.unit(h) {
            return Err(error(
                h,
                format!("{what}: the next block's prev link does not point back"),
            ));
        }
        Ok(())
    };
    for heap in crate::heap::registered(pool) {
        // SAFETY: registered heaps stay mapped; verify's contract keeps them still.
        let hp = unsafe { &*heap };
        let mut res = Ok(());
        hp.for_each_listed(|h, current| {
            // A heap's tiny blocks are pool-owned, held by the heap (see `crate::heap`).
            let tiny = h.geometry().is_tiny();
            if res.is_ok() {
                res = check(h, if tiny { 0 } else { hp.token }, "a heap");
            }
            if res.is_ok() && tiny && h.holder() != hp.id {
                let problem = format!("heap {} lists a tiny block held by {}", hp.id, h.holder());
                res = Err(error(h, problem));
            }
            let role = if current { Role::Current } else { Role::Listed };
            if res.is_ok() && h.role() != role {
                res = Err(error(
                    h,
                    format!(
                        "a heap holds it as {role:?} but its role says {:?}",
                        h.role()
                    ),
                ));
            }
        });
        res?;
    }
    let mut st = pool.state.lock();
    for head in 0..CLASS_COUNT * pool.life_count {
        let mut u = *st.partial(head);
        while u != NONE {
            let h = pool.block(u);
            check(h, 0, "the pool")?;
            if h.role() != Role::Listed {
                return Err(error(h, format!("the pool lists it as {:?}", h.role())));
            }
            if h.life() * CLASS_COUNT + h.class() != head {
                return Err(error(h, format!("the pool lists it under head {head}")));
            }
            if h.holder() != NO_HOLDER && h.holder() != HEAPLESS {
                let problem = format!("the pool lists it, held by heap {}", h.holder());
                return Err(error(h, problem));
            }
            u = h.next.load(Ordering::Relaxed);
        }
    }
    Ok(())
}
