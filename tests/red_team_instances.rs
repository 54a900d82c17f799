//! Red-team attacks on many instances used through `GlobalAlloc` at once: every pointer an
//! instance hands out is its own (in its region, or one of its large allocations), whatever
//! the thread did with other instances before, instances dropped meanwhile included.

mod common;

use cohort::Cohort;
use common::{fill, mismatch, seed_of, Rng};
use std::alloc::{GlobalAlloc, Layout};
use std::sync::Arc;

cohort::lifetime_classes! {
    enum Life { A, B }
}

/// One live allocation: its instance's index, address and layout.
struct Obj {
    inst: usize,
    p: usize,
    layout: Layout,
}

/// Allocates through `a`'s `GlobalAlloc` and checks the pointer is `a`'s own.
fn alloc_from(a: &Cohort<Life>, inst: usize, layout: Layout, zeroed: bool) -> Obj {
    // SAFETY: non-zero sizes only.
    let p = unsafe {
        if zeroed {
            GlobalAlloc::alloc_zeroed(a, layout)
        } else {
            GlobalAlloc::alloc(a, layout)
        }
    };
    assert!(!p.is_null(), "instance {inst}: out of memory at {layout:?}");
    let own = a.in_region(p) || a.allocation_at(p).is_some_and(|f| f.large);
    assert!(
        own,
        "instance {inst} handed out {p:?} ({layout:?}), not its own"
    );
    assert_eq!(p as usize % layout.align(), 0);
    // SAFETY: layout.size() bytes.
    unsafe { fill(p, seed_of(p, layout.size()), layout.size()) };
    Obj {
        inst,
        p: p as usize,
        layout,
    }
}

fn free_obj(all: &[Option<Arc<Cohort<Life>>>], o: Obj) {
    let p = o.p as *mut u8;
    // SAFETY: live, layout.size() bytes.
    assert_eq!(
        unsafe { mismatch(p, seed_of(p, o.layout.size()), o.layout.size()) },
        None
    );
    let a = all[o.inst]
        .as_ref()
        .expect("objects die before their instance");
    // SAFETY: allocated by this instance's GlobalAlloc with this layout.
    unsafe { GlobalAlloc::dealloc(&**a, p, o.layout) };
}

fn random_layout(rng: &mut Rng) -> Layout {
    let size = match rng.below(10) {
        0 => rng.range(1, 2),
        1..=6 => rng.range(1, 1024),
        7..=8 => rng.range(1025, 16384),
        _ => rng.range(16385, 100_000),
    };
    let top = if rng.chance(10) { 14 } else { 5 };
    let align = 1 << rng.below(top);
    Layout::from_size_align(size, align).unwrap()
}

/// 40 instances over the run (ids past any small per-instance table), each used through
/// `GlobalAlloc` by three threads in turn with the direct API of other instances between
/// calls; instances are dropped (after their objects are freed, on whichever thread) and
/// new ones made, so a thread's state keeps meeting dropped instances. Every pointer must
/// be the allocating instance's own, and every object keeps its pattern.
#[test]
fn many_instances_through_global_alloc_hand_out_only_their_own_memory() {
    let mut all: Vec<Option<Arc<Cohort<Life>>>> = Vec::new();
    let mut rng = Rng::new(11);
    for round in 0..10 {
        // Four new instances per round; the two oldest live ones are dropped.
        for _ in 0..4 {
            all.push(Some(Arc::new(Cohort::new())));
        }
        let live: Vec<usize> = (0..all.len()).filter(|&i| all[i].is_some()).collect();
        let objs = std::thread::scope(|s| {
            let handles: Vec<_> = (0..3)
                .map(|t| {
                    let all = &all;
                    let live = &live;
                    let seed = round * 10 + t;
                    s.spawn(move || {
                        let mut rng = Rng::new(seed as u64);
                        let mut mine: Vec<Obj> = Vec::new();
                        for _ in 0..3000 {
                            let inst = live[rng.below(live.len())];
                            let a = all[inst].as_ref().unwrap();
                            match rng.below(10) {
                                0..=4 => {
                                    let z = rng.chance(20);
                                    mine.push(alloc_from(a, inst, random_layout(&mut rng), z));
                                }
                                5..=7 if !mine.is_empty() => {
                                    let o = mine.swap_remove(rng.below(mine.len()));
                                    free_obj(all, o);
                                }
                                _ => {
                                    // The direct API of this instance (the thread's last
                                    // used heap changes), then of another.
                                    let q = a.malloc(48, Life::B);
                                    assert!(a.in_region(q));
                                    // SAFETY: just allocated.
                                    unsafe { a.free(q, 48, Life::B) };
                                }
                            }
                        }
                        mine
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect::<Vec<Obj>>()
        });
        // Objects outlive their threads; half are freed here, on another thread.
        let (now, later): (Vec<Obj>, Vec<Obj>) = objs.into_iter().partition(|_| rng.chance(50));
        for o in now {
            free_obj(&all, o);
        }
        std::thread::scope(|s| {
            let all = &all;
            s.spawn(move || later.into_iter().for_each(|o| free_obj(all, o)));
        });
        for i in live.iter().take(2) {
            let a = all[*i].take().unwrap();
            assert!(a.is_empty());
            drop(a);
        }
    }
    // The main thread allocates again from the survivors after all those drops.
    for (i, a) in all.iter().enumerate() {
        if let Some(a) = a {
            let o = alloc_from(a, i, Layout::from_size_align(64, 8).unwrap(), false);
            free_obj(&all, o);
            assert!(a.is_empty());
        }
    }
}
