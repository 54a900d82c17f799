//! What the promotion tests share: a full region with free slots in a larger class.
//!
//! Each test binary uses part of it.
#![allow(dead_code)]

use cohort::Cohort;

cohort::lifetime_classes! {
    pub enum Life { A, B }
}

/// A 2-unit region: one block of 32-byte slots of `A` holding `kept` allocations, the
/// other full of 16-byte slots of `A` (filled with `try_malloc`, which never promotes,
/// until it found neither a slot nor a block). Returns the allocator, the 32-byte and the
/// 16-byte allocations.
pub fn full_region(kept: usize) -> (Cohort<Life>, Vec<*mut u8>, Vec<*mut u8>) {
    let a: Cohort<Life> = Cohort::with_reservation(4 << 20);
    let (big, small) = fill(&a, kept);
    (a, big, small)
}

/// Fills the region of `a` as [`full_region`] does: `kept` 32-byte allocations of `A` (a
/// block of 32-byte slots with room), then 16-byte ones of `A` until neither a slot nor a
/// block is left. Returns the 32-byte and the 16-byte allocations.
pub fn fill(a: &Cohort<Life>, kept: usize) -> (Vec<*mut u8>, Vec<*mut u8>) {
    let big: Vec<_> = (0..kept).map(|_| a.malloc(32, Life::A)).collect();
    assert!(big.iter().all(|p| !p.is_null()));
    let mut small = Vec::new();
    loop {
        let p = a.try_malloc(16, Life::A);
        if p.is_null() {
            break;
        }
        small.push(p);
    }
    (big, small)
}

/// Frees everything `full_region` made.
pub fn free_all(a: &Cohort<Life>, big: &[*mut u8], small: &[*mut u8]) {
    for &p in big {
        // SAFETY: allocated by full_region with this size and class, freed once.
        unsafe { a.free(p, 32, Life::A) };
    }
    for &p in small {
        // SAFETY: as above.
        unsafe { a.free(p, 16, Life::A) };
    }
}

/// Live promoted slots of `a`, over every head.
pub fn promoted(a: &Cohort<Life>) -> usize {
    a.stats().heads.iter().map(|h| h.promoted).sum()
}

/// The slow-path events of the head of `stride` in lifetime class `life` (all 0 before
/// any).
pub fn events<L: cohort::Lifetime>(
    a: &Cohort<L>,
    stride: usize,
    life: usize,
) -> cohort::HeadEvents {
    a.stats()
        .events
        .into_iter()
        .find(|e| e.stride == stride && e.life == life)
        .unwrap_or_default()
}
