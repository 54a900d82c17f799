//! Unit tests of the idle looks, through instances (`Cohort`): not under loom, where the
//! crate has none.

use super::{Heap, ENTRIES_PER_CLOCK_READ};
use crate::per_thread::find_own;
use crate::{Cohort, Retention};
use core::alloc::Layout;
use core::time::Duration;

/// An instance with retention delay `delay` whose thread heap (the calling thread's) has
/// an empty current block with pages touched past its header's: 1000 allocations of
/// 512 bytes written, then freed (one slow path, the first allocation's, when the
/// block has no page touched yet).
fn with_idle_block(delay: Duration) -> Cohort<()> {
    let c = Cohort::<()>::new();
    c.set_retention(Retention {
        delay,
        ..Retention::DEFAULT
    });
    let l = Layout::from_size_align(512, 8).unwrap();
    let ptrs: Vec<*mut u8> = (0..1000)
        .map(|_| {
            let p = c.alloc(l, ());
            assert!(!p.is_null());
            // SAFETY: 512 bytes of ours.
            unsafe { p.write_bytes(0x5a, 512) };
            p
        })
        .collect();
    for p in ptrs {
        // SAFETY: allocated above with `l`, freed once.
        unsafe { c.dealloc(p, l, ()) };
    }
    c
}

/// The calling thread's heap of `c` (it allocated there).
fn own_heap(c: &Cohort<()>) -> &Heap {
    // SAFETY: the thread allocated in `c`, so it has a heap there, live while `c` is.
    unsafe { &*find_own(c.core.instance_id()) }
}

/// One thread, two instances (a global allocator and one of the program's own, say),
/// looked at one after the other at the same times: each heap's empty current block
/// gives its pages back after its second look, whichever heap looks first (RED-47: the
/// time of the next look was the thread's, so the heap that looked first at each due
/// time took every look, and the other kept its pages for good).
#[test]
fn each_heap_of_a_thread_looks_on_its_own_time() {
    std::thread::spawn(|| {
        let delay = Duration::from_secs(1);
        let (a, b) = (with_idle_block(delay), with_idle_block(delay));
        let half = delay.as_millis() as u64 / 2;
        // Past every look the allocations' own slow paths made.
        let t0 = crate::decay::now() + 10 * delay.as_millis() as u64;
        let mut given = [0; 2];
        for k in 0..3 {
            for (i, c) in [&a, &b].into_iter().enumerate() {
                given[i] += own_heap(c).give_back_idle_current(t0 + k * half);
            }
        }
        assert!(given[0] > 0 && given[1] > 0, "bytes given back: {given:?}");
    })
    .join()
    .unwrap();
}

/// The same for the slow paths' clock reads (every `ENTRIES_PER_CLOCK_READ`th entry):
/// entries into two heaps in the pattern (a, b, b) read the clock for both. (When the
/// count was the thread's, its period, a multiple of the pattern's length, put every
/// read on the same place in the pattern: one heap never read the clock.) With a delay
/// of 0 a read is a look that gives back every empty current block.
#[test]
fn each_heap_of_a_thread_counts_its_own_entries() {
    std::thread::spawn(|| {
        let (a, b) = (
            with_idle_block(Duration::ZERO),
            with_idle_block(Duration::ZERO),
        );
        let mut given = [0; 2];
        for _ in 0..3 * ENTRIES_PER_CLOCK_READ {
            given[0] += own_heap(&a).look_for_idle();
            given[1] += own_heap(&b).look_for_idle();
            given[1] += own_heap(&b).look_for_idle();
        }
        assert!(given[0] > 0 && given[1] > 0, "bytes given back: {given:?}");
    })
    .join()
    .unwrap();
}

/// Three blocks of 1000-byte objects: the first freed by another thread but for one slot,
/// which its owner frees last (its `used` is then its remote list's length: no slow path),
/// the second by another thread (relisted on the heap's `returned` stack), the third, the
/// current one, by its owner. One look, due, gives the first two to the pool (kept, for
/// its decay) and keeps the current block. Before `Heap::give_listed_empty` the look left
/// both listed: 3 blocks of the class after it, none kept.
#[test]
fn a_look_gives_listed_blocks_with_no_live_slot_to_the_pool() {
    std::thread::spawn(|| {
        let delay = Duration::from_secs(1);
        let c = Cohort::<()>::new();
        c.set_retention(Retention {
            delay,
            ..Retention::DEFAULT
        });
        let l = Layout::from_size_align(1000, 8).unwrap();
        let ps: Vec<usize> = (0..6000).map(|_| c.alloc(l, ()) as usize).collect();
        assert!(ps.iter().all(|&p| p != 0));
        let block = |p: usize| p >> 21;
        let (first, second) = (block(ps[0]), block(ps[ps.len() / 2]));
        let current = block(ps[ps.len() - 1]);
        assert!(first != second && second != current && first != current);
        let free = |p: usize| {
            // SAFETY: allocated above with `l`, freed once.
            unsafe { c.dealloc(p as *mut u8, l, ()) }
        };
        let (remote, local): (Vec<usize>, Vec<usize>) = ps
            .iter()
            .partition(|&&p| p != ps[0] && block(p) == first || block(p) == second);
        std::thread::scope(|s| {
            s.spawn(|| remote.iter().for_each(|&p| free(p)));
        });
        local.iter().for_each(|&p| free(p));
        assert!(c.is_empty());
        let stride_blocks = |c: &Cohort<()>| {
            let s = c.stats();
            (s.heads[0].blocks, s.retained_empty_blocks)
        };
        let (blocks, kept) = stride_blocks(&c);
        // Past every look the allocations' own slow paths made.
        let t = crate::decay::now() + 10 * delay.as_millis() as u64;
        own_heap(&c).give_back_idle_current(t);
        let after = stride_blocks(&c);
        assert_eq!(
            after,
            (1, kept + blocks - 1),
            "(blocks of the class, empty blocks kept) before the look: {:?}, after: {after:?}",
            (blocks, kept)
        );
    })
    .join()
    .unwrap();
}

/// A heap walks its listed blocks at most once per millisecond, whatever the delay: with a
/// delay of 0 every clock read of a slow path is a look, and the walk reads every listed
/// block (a program cycling 64-byte objects with 1000 listed blocks paid 66 ns a pair,
/// against 14 with 10). Two blocks of 1000-byte objects and a current one; after a look at
/// `t`, another thread frees every slot of the first block (no slow path of this heap): a
/// second look at `t` leaves it listed, the one at `t + 1` gives it to the pool. Before, the
/// second look walked the lists again and gave it away.
#[test]
fn with_a_delay_of_0_a_heap_walks_its_listed_blocks_once_per_millisecond() {
    std::thread::spawn(|| {
        let c = Cohort::<()>::new();
        c.set_retention(Retention {
            delay: Duration::ZERO,
            ..Retention::DEFAULT
        });
        let l = Layout::from_size_align(1000, 8).unwrap();
        let ps: Vec<usize> = (0..6000).map(|_| c.alloc(l, ()) as usize).collect();
        assert!(ps.iter().all(|&p| p != 0));
        let block = |p: usize| p >> 21;
        let first = block(ps[0]);
        assert!(
            first != block(ps[ps.len() - 1]),
            "the first block is listed"
        );
        let blocks = |c: &Cohort<()>| c.stats().heads[0].blocks;
        // Past every look the allocations' own slow paths made.
        let t = crate::decay::now() + 10_000;
        own_heap(&c).give_back_idle_current(t);
        let before = blocks(&c);
        let (theirs, ours): (Vec<usize>, Vec<usize>) = ps.iter().partition(|&&p| block(p) == first);
        std::thread::scope(|s| {
            s.spawn(|| {
                for &p in &theirs {
                    // SAFETY: allocated above with `l`, freed once.
                    unsafe { c.dealloc(p as *mut u8, l, ()) };
                }
            });
        });
        // Their last frees reach the block (the statistics push every batch first).
        assert_eq!(blocks(&c), before);
        own_heap(&c).give_back_idle_current(t);
        assert_eq!(blocks(&c), before, "a second walk in the same millisecond");
        own_heap(&c).give_back_idle_current(t + 1);
        assert_eq!(blocks(&c), before - 1, "the next millisecond's walk");
        for &p in &ours {
            // SAFETY: allocated above with `l`, freed once.
            unsafe { c.dealloc(p as *mut u8, l, ()) };
        }
    })
    .join()
    .unwrap();
}
