//! The local free list apart from the allocation list (src/block.rs): a program cycling
//! objects through its current block still enters the slow path now and then (the
//! heartbeat), and a nearly full current block does not make every allocation a collect.
//! Counted with the heads' slow-path events (`Stats::events`), which are exact.

use cohort::class::{class_of, CLASSES};
use cohort::Cohort;
use std::alloc::Layout;

/// The slow-path allocations counted on the head of `size`-byte objects.
fn alloc_slow(a: &Cohort, size: usize) -> u64 {
    let class = class_of(size, 8).unwrap();
    a.stats()
        .events
        .iter()
        .filter(|e| e.size_class == class)
        .map(|e| e.alloc_slow)
        .sum()
}

/// The crate's `BEATS`: collects of the local free list between two slow paths.
const BEATS: u64 = 4;
/// Allocates and frees `n` objects of layout `l`, `n` times over.
fn cycle(a: &Cohort, l: Layout, n: usize, rounds: usize) {
    let mut v = Vec::with_capacity(n);
    for _ in 0..rounds {
        v.extend((0..n).map(|_| a.alloc(l, ())));
        assert!(v.iter().all(|p| !p.is_null()));
        for p in v.drain(..) {
            // SAFETY: allocated above, freed once.
            unsafe { a.dealloc(p, l, ()) };
        }
    }
}

/// A loop of 100 objects of 64 B reuses its slots through collects of the local free
/// list, at most `BEATS` (4) of which pass before a slow path: the heartbeat that runs the
/// decay (RED-52). With one list, such a loop never left the fast paths.
#[test]
fn a_loop_in_the_current_block_enters_the_slow_path_every_few_collects() {
    let a: Cohort = Cohort::new();
    let l = Layout::from_size_align(64, 8).unwrap();
    cycle(&a, l, 100, 10);
    let before = alloc_slow(&a, 64);
    let rounds = 3200;
    cycle(&a, l, 100, rounds);
    let slow = alloc_slow(&a, 64) - before;
    // One collect per round (each takes the 100 slots freed since the last): BEATS quick
    // ones, then one on the slow path.
    let rounds = rounds as u64;
    assert!(
        slow >= rounds / (BEATS + 1) && slow <= rounds / BEATS + 4,
        "{slow} slow paths in {rounds} rounds"
    );
    // SAFETY: no other thread uses `a`.
    unsafe { a.verify() }.unwrap();
}

/// A current block filled to its last slot, then a few of its slots freed: cycling one
/// object through it would make every allocation a collect of those few slots, and every
/// `BEATS + 1`-th a slow path. The slow path gives it beats in proportion to the few slots
/// its collects take (or takes a listed block with more), so that its slow paths come
/// about once per `BEATS` collects of 16 slots (`FEW_SLOTS`): once per `BEATS * 16 + 1`
/// allocations at most.
#[test]
fn a_nearly_full_block_does_not_make_every_allocation_a_collect() {
    for (size, free) in [(16, 1), (16, 15), (1024, 3)] {
        let a: Cohort = Cohort::new();
        let l = Layout::from_size_align(size, 8).unwrap();
        let cap = CLASSES[class_of(size, 8).unwrap()].capacity as usize;
        let mut kept: Vec<_> = (0..cap).map(|_| a.alloc(l, ())).collect();
        let step = cap / free;
        for i in 0..free {
            let p = std::mem::replace(&mut kept[i * step], std::ptr::null_mut());
            // SAFETY: allocated above, freed once.
            unsafe { a.dealloc(p, l, ()) };
        }
        let before = alloc_slow(&a, size);
        cycle(&a, l, 1, 10_000);
        let slow = alloc_slow(&a, size) - before;
        let most = 10_000 / (BEATS * 16 + 1) + 4;
        assert!(
            slow <= most,
            "{size} B, {free} free: {slow} slow paths in 10000 pairs (at most {most})"
        );
        // SAFETY: no other thread uses `a`.
        unsafe { a.verify() }.unwrap();
        for p in kept.into_iter().filter(|p| !p.is_null()) {
            // SAFETY: allocated above, freed once.
            unsafe { a.dealloc(p, l, ()) };
        }
        assert!(a.is_empty());
    }
}

fn raise(m: &cohort::Misuse) {
    std::panic::panic_any(m.clone());
}

/// A double free of the slot freed last is reported in every build (the free fast path
/// compares the slot with the local free list's first) also when the slow path then
/// leaves the block: a nearly full block whose beats are spent is listed with its few
/// freed slots for a listed block with more, and those must stay on its local free list. (Before: the slow path moved
/// them to the allocation list first, and in a build without checked mode the double free
/// went unreported, the slot then twice on the block's lists.)
#[test]
fn the_slot_freed_last_stays_detectable_when_the_slow_path_leaves_its_block() {
    for size in [16, 1024] {
        let a: Cohort = Cohort::new();
        let l = Layout::from_size_align(size, 8).unwrap();
        let block_of = |p: *mut u8| p as usize & !((2 << 20) - 1);
        let cap = CLASSES[class_of(size, 8).unwrap()].capacity as usize;
        // Two blocks filled; 100 slots of the first freed: it is listed with 100 free.
        let mut kept: Vec<_> = (0..2 * cap).map(|_| a.alloc(l, ())).collect();
        let first = block_of(kept[0]);
        for p in kept.drain(..100) {
            // SAFETY: allocated above, freed once.
            unsafe { a.dealloc(p, l, ()) };
        }
        let cap = kept.len();
        let full = block_of(kept[cap - 1]);
        assert!(full != first && kept[cap - cap / 2..].iter().all(|&p| block_of(p) == full));
        // One slot cycled through the full block until the slow path leaves it.
        let mut last = kept[cap - 1];
        // SAFETY: allocated above, freed once.
        unsafe { a.dealloc(last, l, ()) };
        let mut moved = None;
        for _ in 0..100 {
            let p = a.alloc(l, ());
            if block_of(p) != full {
                moved = Some(p);
                break;
            }
            last = p;
            // SAFETY: just allocated, freed once.
            unsafe { a.dealloc(p, l, ()) };
        }
        let moved = moved.expect("the slow path leaves the nearly full block");
        assert_eq!(
            block_of(moved),
            first,
            "for the listed block with more free slots"
        );
        let before = cohort::set_misuse_hook(Some(raise));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: misuse under test: `last` was freed above and is still free; it is
            // reported before anything changes.
            unsafe { a.dealloc(last, l, ()) };
        }));
        cohort::set_misuse_hook(before);
        assert!(
            caught.is_err(),
            "{size} B: a double free of the slot freed last was not reported"
        );
        // SAFETY: no other thread uses `a`.
        unsafe { a.verify() }.expect("the reported double free changed nothing");
        // SAFETY: live, each freed once (the last slot of `kept` was freed above).
        unsafe {
            a.dealloc(moved, l, ());
            for &p in &kept[..cap - 1] {
                a.dealloc(p, l, ());
            }
        }
        assert!(a.is_empty());
    }
}
