//! Runs a mix on a private `Cohort` instance: a build phase that allocates every entry,
//! interleaved in proportion to the counts, then a free phase that frees what each entry
//! does not keep. Every allocation is written (a byte pattern; list nodes their link) and
//! checked before it is freed and at the end.

use crate::mix::{Entry, How, LIFE_COUNT};
use cohort::Cohort;
use std::alloc::Layout;
use std::ptr;

cohort::lifetime_classes! {
    /// The tool's lifetime classes: class `i` is the `i`-th name a mix uses (`mix::Lives`).
    pub enum Life { L0, L1, L2, L3, L4, L5, L6, L7 }
}

/// The lifetime classes by index.
const LIVES: [Life; LIFE_COUNT] = [
    Life::L0,
    Life::L1,
    Life::L2,
    Life::L3,
    Life::L4,
    Life::L5,
    Life::L6,
    Life::L7,
];

/// The live allocations of one entry, in allocation order (list order for a list).
pub struct Live {
    /// Each live allocation: its index among the entry's allocations, and its pointer.
    pub ptrs: Vec<(usize, *mut u8)>,
    /// Allocations made in the build phase.
    pub allocated: usize,
}

/// A run of a mix: the allocator and what is live in it.
pub struct Run<'a> {
    /// The allocator the mix ran on.
    pub cohort: &'a Cohort<Life>,
    /// The mix.
    pub mix: &'a [Entry],
    /// Per entry, its live allocations.
    pub live: Vec<Live>,
}

/// The byte written at offset `at` of allocation `i` of entry `e`.
fn pattern(e: usize, i: usize, at: usize) -> u8 {
    (e.wrapping_mul(31) ^ i ^ at.wrapping_mul(7)) as u8
}

/// Bytes at the start of a list node taken by its link.
const LINK: usize = size_of::<*mut u8>();

/// Sets the link of list node `node`.
///
/// # Safety
/// `node` is a live list node (at least a pointer's size, pointer-aligned).
unsafe fn set_link(node: *mut u8, next: *mut u8) {
    // SAFETY: the caller's guarantee.
    unsafe { node.cast::<*mut u8>().write(next) }
}

impl<'a> Run<'a> {
    /// Runs the build phase: every entry allocated, interleaved in proportion to the
    /// counts. Errors when the allocator returns null or misaligned memory.
    pub fn new(cohort: &'a Cohort<Life>, mix: &'a [Entry]) -> Result<Self, String> {
        // The pointers are kept, one per allocation: a count too large for the tool's own
        // memory is refused here, as a clear error, rather than aborting the process.
        let live = mix
            .iter()
            .map(|e| {
                let mut ptrs = Vec::new();
                ptrs.try_reserve_exact(e.count).map_err(|_| {
                    format!(
                        "entry {e}: {} allocations are more than the tool can keep the \
                         pointers of",
                        e.count
                    )
                })?;
                Ok(Live { ptrs, allocated: 0 })
            })
            .collect::<Result<_, String>>()?;
        let mut run = Run { cohort, mix, live };
        // One round per allocation of the largest entry; after round r an entry of count c
        // has made c * r / rounds allocations, so entries interleave finely.
        let rounds = mix.iter().map(|e| e.count).max().unwrap_or(0);
        for r in 1..=rounds {
            for (ei, e) in mix.iter().enumerate() {
                let due = (e.count as u128 * r as u128 / rounds as u128) as usize;
                while run.live[ei].allocated < due {
                    run.alloc_one(ei)?;
                }
            }
        }
        Ok(run)
    }

    fn alloc_one(&mut self, ei: usize) -> Result<(), String> {
        let e = &self.mix[ei];
        let life = LIVES[e.life];
        let p = match e.how {
            How::Layout { align } => {
                let layout = Layout::from_size_align(e.size, align)
                    .map_err(|err| format!("entry {e}: {err}"))?;
                self.cohort.alloc(layout, life)
            }
            How::Malloc => self.cohort.malloc(e.size, life),
        };
        let i = self.live[ei].allocated;
        if p.is_null() {
            return Err(format!(
                "entry {e}: allocation {i} returned null (out of memory)"
            ));
        }
        if !(p as usize).is_multiple_of(e.align()) {
            return Err(format!("entry {e}: {p:p} is not aligned to {}", e.align()));
        }
        let start = if e.list { LINK } else { 0 };
        for at in start..e.size {
            // SAFETY: p holds e.size bytes, ours until freed.
            unsafe { p.add(at).write(pattern(ei, i, at)) };
        }
        if e.list {
            // SAFETY: p and the previous node are live list nodes (the parser checks a
            // node's size and align).
            unsafe {
                set_link(p, ptr::null_mut());
                if let Some(&(_, prev)) = self.live[ei].ptrs.last() {
                    set_link(prev, p);
                }
            }
        }
        self.live[ei].ptrs.push((i, p));
        self.live[ei].allocated += 1;
        Ok(())
    }

    /// Checks allocation `i` of entry `ei` at `p`: its pattern is intact.
    fn check(&self, ei: usize, i: usize, p: *mut u8) -> Result<(), String> {
        let e = &self.mix[ei];
        let start = if e.list { LINK } else { 0 };
        for at in start..e.size {
            // SAFETY: p is a live allocation of e.size bytes.
            let got = unsafe { p.add(at).read() };
            if got != pattern(ei, i, at) {
                return Err(format!(
                    "entry {e}: allocation {i} at {p:p}: byte {at} overwritten"
                ));
            }
        }
        Ok(())
    }

    /// Frees a live allocation of entry `ei`.
    ///
    /// # Safety
    /// `p` is a live allocation of entry `ei`, and is forgotten by the caller.
    unsafe fn free_one(&self, ei: usize, p: *mut u8) {
        let e = &self.mix[ei];
        // SAFETY: p came from this allocator with this entry's size, align (or malloc) and
        // lifetime class, and is freed once (the caller's guarantee).
        unsafe {
            match e.how {
                How::Layout { align } => self.cohort.dealloc(
                    p,
                    Layout::from_size_align_unchecked(e.size, align),
                    LIVES[e.life],
                ),
                How::Malloc => self.cohort.free(p, e.size, LIVES[e.life]),
            }
        }
    }

    /// The free phase: frees what each entry does not keep (unlinking list nodes), checking
    /// each allocation's pattern first, then checks what is left.
    pub fn free_unkept(&mut self) -> Result<(), String> {
        for (ei, e) in self.mix.iter().enumerate() {
            let mut ptrs = std::mem::take(&mut self.live[ei].ptrs);
            for &(i, p) in &ptrs {
                self.check(ei, i, p)?;
                if !e.kept(i) {
                    // SAFETY: live, and dropped from the list by the retain below.
                    unsafe { self.free_one(ei, p) };
                }
            }
            ptrs.retain(|&(i, _)| e.kept(i));
            if e.list {
                let next = ptrs
                    .iter()
                    .skip(1)
                    .map(|&(_, p)| p)
                    .chain([ptr::null_mut()]);
                for (&(_, p), next) in ptrs.iter().zip(next) {
                    // SAFETY: p is a live list node.
                    unsafe { set_link(p, next) };
                }
            }
            self.live[ei].ptrs = ptrs;
        }
        self.verify()
    }

    /// Checks every live allocation's pattern and walks every list from its head.
    pub fn verify(&self) -> Result<(), String> {
        for (ei, e) in self.mix.iter().enumerate() {
            let ptrs = &self.live[ei].ptrs;
            for &(i, p) in ptrs {
                self.check(ei, i, p)?;
            }
            if !e.list {
                continue;
            }
            let mut n = 0;
            let mut p = ptrs.first().map_or(ptr::null_mut(), |&(_, p)| p);
            while !p.is_null() {
                if ptrs.get(n).map(|&(_, q)| q) != Some(p) {
                    return Err(format!("entry {e}: list broken at node {n}"));
                }
                n += 1;
                // SAFETY: p is a live node; its link is the next node or null.
                p = unsafe { p.cast::<*mut u8>().read() };
            }
            if n != ptrs.len() {
                return Err(format!(
                    "entry {e}: list has {n} nodes, {} expected",
                    ptrs.len()
                ));
            }
        }
        Ok(())
    }

    /// Frees everything still live.
    pub fn free_all(mut self) {
        for ei in 0..self.mix.len() {
            for (_, p) in std::mem::take(&mut self.live[ei].ptrs) {
                // SAFETY: live, and taken off the live list.
                unsafe { self.free_one(ei, p) };
            }
        }
    }
}
