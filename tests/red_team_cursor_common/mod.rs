//! Helpers of the red-team tests on the owner's allocation cursor: stale heads (see
//! `tests/red_team_cursor_paths.rs`), objects filled with a byte of their place in their
//! block (the same in every mapping of a shared region), and the readers that must count
//! them.
#![allow(dead_code)]

use cohort::Cohort;
use std::collections::HashSet;

pub const BLOCK: usize = 2 << 20;

pub fn tag_of(p: usize) -> u8 {
    ((p & (BLOCK - 1)) as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .to_le_bytes()[7]
        | 1
}

cohort::lifetime_classes! { pub enum Life { A, B } }

/// The size of the stale heads' objects (a 64-byte slot: a 4 KiB page's bump window holds
/// dozens).
pub const S: usize = 64;
/// Objects per stale head.
pub const N: usize = 12;

/// Slow-path allocations of the (S, life) head so far.
pub fn slow_events(a: &Cohort<Life>, life: Life) -> u64 {
    a.stats()
        .events
        .iter()
        .filter(|e| e.stride == S && e.life == life as usize)
        .map(|e| e.alloc_slow)
        .sum()
}

pub fn fill(p: usize, size: usize) {
    // SAFETY: a live allocation of `size` bytes (callers).
    unsafe { (p as *mut u8).write_bytes(tag_of(p), size) };
}

/// The first of `objs` (each `S` bytes, filled by [`fill`]) whose bytes changed.
pub fn changed(objs: &[usize]) -> Option<usize> {
    objs.iter().copied().find(|&p| {
        // SAFETY: live objects of S bytes (callers).
        let b = unsafe { std::slice::from_raw_parts(p as *const u8, S) };
        b.iter().any(|&x| x != tag_of(p))
    })
}

/// Makes a stale head of class `life` on the calling thread through `malloc` (see the
/// module): allocates until an allocation takes the slow path (which leaves the header
/// the truth), then `N` objects on the fast path (retried when a window ended among
/// them), then frees the first ones. Returns the `N` objects, filled.
pub fn stale_head_with(
    a: &Cohort<Life>,
    life: Life,
    malloc: impl Fn() -> *mut u8,
    free: impl Fn(*mut u8),
) -> Vec<usize> {
    for _ in 0..8 {
        let mut prefix = Vec::new();
        let start = slow_events(a, life);
        while slow_events(a, life) == start {
            assert!(prefix.len() < 100_000, "setup: no slow path");
            let p = malloc();
            assert!(!p.is_null());
            prefix.push(p);
        }
        let before = slow_events(a, life);
        let objs: Vec<usize> = (0..N).map(|_| malloc() as usize).collect();
        assert!(objs.iter().all(|&p| p != 0));
        let fast = slow_events(a, life) == before;
        prefix.into_iter().for_each(&free);
        if fast {
            objs.iter().for_each(|&p| fill(p, S));
            return objs;
        }
        objs.iter().for_each(|&p| free(p as *mut u8));
    }
    panic!("setup: no run of {N} fast-path allocations of {S} bytes in 8 tries");
}

pub fn stale_head(a: &Cohort<Life>, life: Life) -> Vec<usize> {
    stale_head_with(
        a,
        life,
        || a.malloc(S, life),
        // SAFETY: the setup's own allocations, freed once.
        |p| unsafe { a.free(p, S, life) },
    )
}

/// Small live objects of `life` as the statistics count them.
pub fn stats_live(a: &Cohort<Life>, life: Life) -> usize {
    a.stats()
        .heads
        .iter()
        .filter(|h| h.life == life as usize)
        .map(|h| h.live)
        .sum()
}

/// Live slots of `life` as the block reports count them.
pub fn reported_live(a: &Cohort<Life>, life: Life) -> usize {
    let mut live = 0;
    a.for_each_block(|b| {
        if b.life == life as usize && b.stride == S {
            live += b.live;
        }
    });
    live
}

/// The objects `objs` (class A) are whole and counted by every reader: statistics, block
/// reports, `is_empty`, and (`verify_too`: nobody else uses the instance) `verify`.
pub fn counted(a: &Cohort<Life>, objs: &[usize], verify_too: bool, what: &str) {
    assert_eq!(changed(objs), None, "{what}: a live object changed");
    assert_eq!(
        stats_live(a, Life::A),
        objs.len(),
        "{what}: stats' live count"
    );
    assert_eq!(
        reported_live(a, Life::A),
        objs.len(),
        "{what}: block reports"
    );
    assert!(!a.is_empty(), "{what}: is_empty with {} live", objs.len());
    if verify_too {
        // SAFETY: the callers' threads do not use the instance meanwhile.
        let v = unsafe { a.verify() };
        match v {
            Ok(v) => assert_eq!(v.live, objs.len(), "{what}: verify's live count"),
            Err(e) => panic!("{what}: verify: {e:?}"),
        }
    }
}

/// `m` new objects of class A on the calling thread: none is one of `live`, none twice,
/// and `live` stays whole while they are written; freed again.
pub fn hands_out_apart(a: &Cohort<Life>, live: &[usize], m: usize, what: &str) {
    let old: HashSet<usize> = live.iter().copied().collect();
    let new: Vec<usize> = (0..m).map(|_| a.malloc(S, Life::A) as usize).collect();
    let mut seen = HashSet::new();
    for &p in &new {
        assert!(p != 0, "{what}: null");
        assert!(
            !old.contains(&p),
            "{what}: a live object {p:#x} handed out again"
        );
        assert!(seen.insert(p), "{what}: {p:#x} handed out twice");
        fill(p, S);
    }
    assert_eq!(changed(live), None, "{what}: a live object changed");
    for p in new {
        // SAFETY: allocated above, freed once.
        unsafe { a.free(p as *mut u8, S, Life::A) };
    }
}

/// Frees `objs` (class A) on the calling thread.
pub fn free_all(a: &Cohort<Life>, objs: &[usize]) {
    assert_eq!(changed(objs), None, "a live object changed before its free");
    for &p in objs {
        // SAFETY: live objects of class A, freed once.
        unsafe { a.free(p as *mut u8, S, Life::A) };
    }
}

/// The end of a test: everything freed, the instance empty and consistent.
pub fn ends_empty(a: &Cohort<Life>) {
    // SAFETY: nobody else uses the instance now.
    let v = unsafe { a.verify() };
    assert!(v.is_ok(), "verify at the end: {v:?}");
    assert!(a.is_empty(), "not empty at the end: {:?}", a.stats().small);
}
