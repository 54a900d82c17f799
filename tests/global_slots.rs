//! The global allocator's path to a thread's heap: `GlobalAlloc::alloc` finds the heap
//! through the instance's thread-local slot (src/per_thread.rs), with no instance compare.
//! The first instances of a process have slots of their own, the others share an empty one;
//! this file is a process of its own, so its first instances are the ones with slots, and
//! it makes more than there are slots.

use cohort::Cohort;
use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashSet;
use std::thread;

/// More instances than the thread-local slots (16).
const INSTANCES: usize = 24;

/// The base of the block holding `p` (blocks are 2 MiB, aligned to their size).
fn block(p: *mut u8) -> usize {
    p as usize & !((2 << 20) - 1)
}

/// The blocks of each instance.
fn blocks(all: &[Cohort]) -> Vec<HashSet<usize>> {
    all.iter()
        .map(|c| {
            let mut set = HashSet::new();
            c.for_each_block(|b| {
                set.insert(b.base);
            });
            set
        })
        .collect()
}

/// Every allocation made through `GlobalAlloc` on instance `i` is in a block of that
/// instance.
fn check_own(blocks: &[HashSet<usize>], i: usize, p: *mut u8) {
    assert!(!p.is_null());
    assert!(
        blocks[i].contains(&block(p)),
        "instance {i}'s allocation {p:?} is not in its blocks"
    );
}

/// Instances used in turn through `GlobalAlloc` (alloc and alloc_zeroed) on several
/// threads, allocations held live across the turns: each comes from the instance asked.
#[test]
fn instances_used_in_turn_through_global_alloc_each_allocate_their_own() {
    let all: Vec<Cohort> = (0..INSTANCES).map(|_| Cohort::new()).collect();
    thread::scope(|s| {
        for t in 0..3 {
            let all = &all;
            s.spawn(move || {
                let mut live = Vec::new();
                for round in 0..50 {
                    for (i, c) in all.iter().enumerate() {
                        let size = [16, 8, 48, 200, 1024, 5000][(round + i + t) % 6];
                        let l = Layout::from_size_align(size, 8).unwrap();
                        // SAFETY: a non-zero layout; freed once below with it.
                        let p = unsafe {
                            if round % 2 == 0 {
                                GlobalAlloc::alloc(c, l)
                            } else {
                                GlobalAlloc::alloc_zeroed(c, l)
                            }
                        };
                        assert!(!p.is_null());
                        // SAFETY: p is ours, `size` bytes.
                        unsafe { p.write_bytes(i as u8, size) };
                        live.push((i, p, l));
                    }
                }
                let blocks = blocks(all);
                for &(i, p, _) in &live {
                    check_own(&blocks, i, p);
                }
                for (i, p, l) in live {
                    // SAFETY: allocated above with this layout, written with this byte.
                    unsafe {
                        assert_eq!(*p, i as u8);
                        GlobalAlloc::dealloc(&all[i], p, l);
                    }
                }
            });
        }
    });
}

/// A thread keeps allocating through `GlobalAlloc` on new instances after one it used was
/// dropped by another thread (its heap of it orphaned, its slot's row stale until the
/// thread's next join): the new instances get slots of their own and allocate correctly.
#[test]
fn global_alloc_goes_on_after_an_instance_dropped_elsewhere() {
    let l = Layout::from_size_align(16, 8).unwrap();
    thread::spawn(move || {
        let old = Box::new(Cohort::<()>::new());
        // SAFETY: a non-zero layout, freed with it.
        unsafe { GlobalAlloc::dealloc(&*old, GlobalAlloc::alloc(&*old, l), l) };
        thread::spawn(move || drop(old)).join().unwrap();
        for _ in 0..4 {
            let all: Vec<Cohort> = (0..2).map(|_| Cohort::new()).collect();
            for (i, c) in all.iter().enumerate() {
                // SAFETY: a non-zero layout; freed once, with it.
                unsafe {
                    let p = GlobalAlloc::alloc(c, l);
                    check_own(&blocks(&all), i, p);
                    GlobalAlloc::dealloc(c, p, l);
                }
            }
        }
    })
    .join()
    .unwrap();
}

/// Frees through `GlobalAlloc` of another thread's objects, by a thread whose slot holds its
/// own heap of the instance (so the free path decides "remote" from the slot, without a
/// search), while the owner lives: the objects go back to their owner's blocks, every slot
/// is handed out once afterwards, and nothing stays live.
#[test]
fn global_frees_of_another_threads_objects_are_remote() {
    let c: Cohort = Cohort::new();
    let l = Layout::from_size_align(16, 8).unwrap();
    let alloc = |n: usize| -> Vec<usize> {
        // SAFETY: a non-zero layout; each pointer is freed once, with it, below.
        (0..n)
            .map(|_| unsafe { GlobalAlloc::alloc(&c, l) } as usize)
            .collect()
    };
    let free = |ptrs: &[usize]| {
        for &p in ptrs {
            // SAFETY: allocated by `alloc` with this layout, freed once.
            unsafe { GlobalAlloc::dealloc(&c, p as *mut u8, l) };
        }
    };
    let (to_freer, from_owner) = std::sync::mpsc::channel::<Vec<usize>>();
    let (to_owner, from_freer) = std::sync::mpsc::channel::<Vec<usize>>();
    let (alloc, free) = (&alloc, &free);
    thread::scope(|s| {
        s.spawn(move || {
            for _ in 0..3 {
                to_freer.send(alloc(20_000)).unwrap();
                // Churn on the same blocks while the other thread frees into them.
                for _ in 0..200_000 {
                    free(&alloc(1));
                }
                let theirs = from_freer.recv().unwrap();
                let mine = alloc(20_000);
                let all: HashSet<usize> = theirs.iter().chain(&mine).copied().collect();
                assert_eq!(
                    all.len(),
                    theirs.len() + mine.len(),
                    "a slot handed out twice"
                );
                free(&mine);
                to_freer.send(theirs).unwrap();
            }
        });
        s.spawn(move || {
            // This thread's own heap of the instance, in its slot.
            free(&alloc(1));
            for _ in 0..3 {
                free(&from_owner.recv().unwrap());
                to_owner.send(alloc(20_000)).unwrap();
                free(&from_owner.recv().unwrap());
            }
        });
    });
    let stats = c.stats();
    assert_eq!(stats.small.live, 0, "{stats:?}");
}
