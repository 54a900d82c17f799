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
