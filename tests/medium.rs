//! Medium allocations (above 16 KiB up to 1 MiB): runs of 2 KiB granules in medium blocks.
//!
//! A quickcheck model of random medium allocs, frees and resizes with a pattern in every
//! live allocation; threads freeing each other's allocations; every misuse a free can make
//! with a medium size, reported with pointer, size and class and changing nothing; release
//! of a class; no page fault (so no give-back) per pair in steady state; the same under
//! 64 KiB pages (`COHORT_PAGE_SIZE=64K` runs the whole file so).

mod common;

use cohort::class::{GRANULE, MAX_MEDIUM, MAX_SMALL};
use cohort::{Cohort, Problem};
use common::{fill, mismatch, nonzero, seed_of, Rng};
use quickcheck::{Arbitrary, Gen, QuickCheck};
use std::alloc::Layout;
use std::collections::BTreeMap;

cohort::lifetime_classes! {
    enum Life { Frame, Long }
}

/// A medium size, with the ends of the range more likely.
#[derive(Clone, Copy, Debug)]
struct Size(usize);

impl Arbitrary for Size {
    fn arbitrary(g: &mut Gen) -> Size {
        let r = u32::arbitrary(g) as usize;
        Size(match r % 8 {
            0 => MAX_SMALL + 1 + r % 64,
            1 => MAX_MEDIUM - r % 64,
            2..=4 => MAX_SMALL + 1 + r % (64 << 10),
            _ => MAX_SMALL + 1 + r % (MAX_MEDIUM - MAX_SMALL),
        })
    }
}

#[derive(Clone, Debug)]
enum Op {
    Malloc(Size, bool),
    Calloc(Size, bool),
    Alloc(Size, bool),
    Free(usize),
    Remalloc(usize, Size),
    Recalloc(usize, Size),
    FreeUnsized(usize),
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Op {
        let long = bool::arbitrary(g);
        match u8::arbitrary(g) % 10 {
            0..=2 => Op::Malloc(Size::arbitrary(g), long),
            3 => Op::Calloc(Size::arbitrary(g), long),
            4 => Op::Alloc(Size::arbitrary(g), long),
            5..=6 => Op::Free(usize::arbitrary(g)),
            7 => Op::Remalloc(usize::arbitrary(g), Size::arbitrary(g)),
            8 => Op::Recalloc(usize::arbitrary(g), Size::arbitrary(g)),
            _ => Op::FreeUnsized(usize::arbitrary(g)),
        }
    }
}

fn life(long: bool) -> Life {
    if long {
        Life::Long
    } else {
        Life::Frame
    }
}

/// A live allocation of the model: freed with `size` (`align` 0: the malloc family).
#[derive(Clone, Copy, Debug)]
struct Live {
    ptr: *mut u8,
    size: usize,
    align: usize,
    life: Life,
}

struct Model {
    a: Cohort<Life>,
    live: Vec<Live>,
    ranges: BTreeMap<usize, usize>,
}

impl Model {
    fn add(&mut self, l: Live, zeroed: bool) {
        assert!(!l.ptr.is_null(), "{l:?}");
        let align = if l.align == 0 { 4096 } else { l.align };
        assert_eq!(l.ptr as usize % align, 0, "{l:?}");
        let start = l.ptr as usize;
        if let Some((&s, &e)) = self.ranges.range(..start + l.size).next_back() {
            assert!(e <= start, "{l:?} overlaps [{s:#x}, {e:#x})");
        }
        if zeroed {
            // SAFETY: l.ptr holds l.size bytes.
            assert_eq!(unsafe { nonzero(l.ptr, l.size) }, None, "{l:?} not zeroed");
        }
        let found = self.a.allocation_at(l.ptr).expect("found from its address");
        assert_eq!(found.usable, l.size.next_multiple_of(GRANULE), "{l:?}");
        assert_eq!((found.life, found.large), (l.life as usize, false));
        // SAFETY: as above.
        unsafe { fill(l.ptr, seed_of(l.ptr, l.size), l.size) };
        self.ranges.insert(start, start + l.size);
        self.live.push(l);
    }

    fn take(&mut self, i: usize) -> Option<Live> {
        if self.live.is_empty() {
            return None;
        }
        let l = self.live.swap_remove(i % self.live.len());
        // SAFETY: a live allocation of l.size bytes.
        let broken = unsafe { mismatch(l.ptr, seed_of(l.ptr, l.size), l.size) };
        assert_eq!(broken, None, "{l:?}: pattern broken");
        self.ranges.remove(&(l.ptr as usize));
        Some(l)
    }

    fn run(&mut self, op: &Op) {
        let a = &self.a;
        match *op {
            Op::Malloc(Size(size), long) | Op::Calloc(Size(size), long) => {
                let zeroed = matches!(op, Op::Calloc(..));
                let ptr = if zeroed {
                    a.calloc(size, life(long))
                } else {
                    a.malloc(size, life(long))
                };
                self.add(
                    Live {
                        ptr,
                        size,
                        align: 0,
                        life: life(long),
                    },
                    zeroed,
                );
            }
            Op::Alloc(Size(size), long) => {
                let align = 8 << (size % 9); // 8 B .. 2 KiB
                let ptr = a.alloc(Layout::from_size_align(size, align).unwrap(), life(long));
                self.add(
                    Live {
                        ptr,
                        size,
                        align,
                        life: life(long),
                    },
                    false,
                );
            }
            Op::Free(i) => {
                if let Some(l) = self.take(i) {
                    // SAFETY: live, freed as made.
                    unsafe { free(&self.a, l) };
                }
            }
            Op::FreeUnsized(i) => {
                if let Some(l) = self.take(i) {
                    // SAFETY: live.
                    unsafe { self.a.free_unsized(l.ptr) }.unwrap();
                }
            }
            Op::Remalloc(i, Size(size)) | Op::Recalloc(i, Size(size)) => {
                let zeroed = matches!(op, Op::Recalloc(..));
                let Some(l) = self.take(i) else { return };
                let seed = seed_of(l.ptr, l.size);
                // SAFETY: live, of l.size bytes (malloc family or not: both are aligned to
                // a page, which the malloc family's medium requests want).
                let q = unsafe {
                    if zeroed {
                        self.a.recalloc(l.ptr, l.size, size, l.life)
                    } else {
                        self.a.remalloc(l.ptr, l.size, size, l.life)
                    }
                };
                let kept = l.size.min(size);
                // SAFETY: q holds `size` bytes, the first `kept` moved along.
                assert_eq!(unsafe { mismatch(q, seed, kept) }, None, "{l:?} -> {size}");
                if zeroed && size > l.size {
                    // SAFETY: as above.
                    let tail = unsafe { nonzero(q.add(l.size), size - l.size) };
                    assert_eq!(tail, None, "{l:?} -> {size}: grown part not zeroed");
                }
                self.add(
                    Live {
                        ptr: q,
                        size,
                        align: 0,
                        life: l.life,
                    },
                    false,
                );
            }
        }
    }
}

/// Frees `l` as it was made.
///
/// # Safety
/// `l` is live, nothing uses it after.
unsafe fn free(a: &Cohort<Life>, l: Live) {
    // SAFETY: the caller's.
    unsafe {
        if l.align == 0 {
            a.free(l.ptr, l.size, l.life);
        } else {
            a.dealloc(
                l.ptr,
                Layout::from_size_align(l.size, l.align).unwrap(),
                l.life,
            );
        }
    }
}

fn model_holds(ops: Vec<Op>) -> bool {
    let mut m = Model {
        a: Cohort::new(),
        live: Vec::new(),
        ranges: BTreeMap::new(),
    };
    for op in &ops {
        m.run(op);
    }
    m.a.verify_exclusive().expect("consistent");
    let s = m.a.stats();
    assert_eq!(s.medium_allocations, m.live.len(), "{s}");
    let usable: usize = m
        .live
        .iter()
        .map(|l| l.size.next_multiple_of(GRANULE))
        .sum();
    assert_eq!(s.medium_bytes, usable);
    while let Some(l) = m.take(0) {
        // SAFETY: live.
        unsafe { free(&m.a, l) };
    }
    assert!(m.a.is_empty());
    m.a.verify_exclusive().expect("consistent when empty");
    true
}

#[test]
fn a_model_of_medium_allocs_frees_and_resizes_holds() {
    QuickCheck::new()
        .tests(60)
        .quickcheck(model_holds as fn(Vec<Op>) -> bool);
}

/// Every request size from just above the small classes to 1 MiB is rounded to at most
/// 1/8 more, aligned to a page for the malloc family, and freed by any size that rounds to
/// the same granules.
#[test]
fn medium_sizes_round_by_at_most_an_eighth() {
    let a = Cohort::<()>::new();
    for size in (MAX_SMALL + 1..=MAX_MEDIUM)
        .step_by(997)
        .chain([MAX_MEDIUM])
    {
        let (p, usable) = a.malloc_at_least(size, ());
        assert_eq!(p as usize % 4096, 0);
        assert!(
            usable >= size && usable * 8 <= size * 9,
            "{size} -> {usable}"
        );
        assert!(a.in_region(p), "{size}: served from a block");
        // SAFETY: live; any size up to the usable one frees it.
        unsafe { a.free(p, usable, ()) };
    }
    assert!(a.is_empty());
}

/// Threads allocate medium sizes and hand half of them to the next thread, which frees
/// them: every free is checked, nothing is lost or handed out twice.
#[test]
fn threads_free_each_others_medium_allocations() {
    const THREADS: usize = 4;
    static A: Cohort<Life> = Cohort::new();
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS)
        .map(|_| std::sync::mpsc::channel::<(usize, usize)>())
        .unzip();
    let mut receivers = receivers.into_iter();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let to_next = senders[(t + 1) % THREADS].clone();
            let from_prev = receivers.next().unwrap();
            s.spawn(move || {
                let mut rng = Rng::new(t as u64 + 1);
                let mut mine: Vec<(*mut u8, usize)> = Vec::new();
                for round in 0..400 {
                    let size = rng.range(MAX_SMALL + 1, 300 << 10);
                    let p = A.malloc(size, Life::Frame);
                    assert!(!p.is_null());
                    // SAFETY: p holds size bytes.
                    unsafe { fill(p, seed_of(p, size), size) };
                    if round % 2 == 0 {
                        to_next.send((p as usize, size)).unwrap();
                    } else {
                        mine.push((p, size));
                    }
                    while let Ok((q, n)) = from_prev.try_recv() {
                        let q = q as *mut u8;
                        // SAFETY: handed over live, of n bytes.
                        unsafe {
                            assert_eq!(mismatch(q, seed_of(q, n), n), None);
                            A.free(q, n, Life::Frame);
                        }
                    }
                    if mine.len() > 20 {
                        let (q, n) = mine.swap_remove(rng.below(mine.len()));
                        // SAFETY: live, ours.
                        unsafe {
                            assert_eq!(mismatch(q, seed_of(q, n), n), None);
                            A.free(q, n, Life::Frame);
                        }
                    }
                }
                drop(to_next);
                for (q, n) in mine {
                    // SAFETY: live, ours.
                    unsafe { A.free(q, n, Life::Frame) };
                }
                // What the previous thread still sends.
                for (q, n) in from_prev {
                    // SAFETY: handed over live.
                    unsafe { A.free(q as *mut u8, n, Life::Frame) };
                }
            });
        }
        drop(senders);
    });
    assert!(A.is_empty(), "{}", A.stats());
    // SAFETY: no other thread uses A now.
    unsafe { A.verify() }.unwrap();
}

/// Every misuse a free can make with a medium size is reported with the pointer, the size
/// and the class, and changes nothing.
#[test]
fn medium_misuse_is_reported_and_changes_nothing() {
    let a = Cohort::<Life>::new();
    let p = a.malloc(100_000, Life::Frame);
    let q = a.malloc(40_000, Life::Frame);
    let small = a.malloc(64, Life::Frame);
    // SAFETY (of each call): a rejected call changes nothing.
    unsafe {
        let wrong_size = a.try_free(p, 50_000, Life::Frame).unwrap_err();
        assert_eq!((wrong_size.ptr, wrong_size.size), (p as usize, 50_000));
        assert!(matches!(
            wrong_size.problem,
            Problem::WrongRun {
                usable: 100_352,
                ..
            }
        ));
        assert!(
            wrong_size.to_string().contains("100352 usable bytes"),
            "{wrong_size}"
        );
        let wrong_class = a.try_free(p, 100_000, Life::Long).unwrap_err();
        assert!(
            wrong_class.to_string().contains("wrong lifetime class"),
            "{wrong_class}"
        );
        let interior = a.try_free(p.add(4096), 20_000, Life::Frame).unwrap_err();
        assert_eq!(interior.problem, Problem::NotARun);
        let unaligned = a.try_free(p.add(8), 20_000, Life::Frame).unwrap_err();
        assert_eq!(unaligned.problem, Problem::NotARun);
        let small_as_medium = a.try_free(small, 20_000, Life::Frame).unwrap_err();
        assert!(matches!(
            small_as_medium.problem,
            Problem::NotMedium {
                block_class: Some(_),
                ..
            }
        ));
        let medium_as_small = a.try_free(q, 4000, Life::Frame).unwrap_err();
        assert!(matches!(
            medium_as_small.problem,
            Problem::WrongBlock {
                block_class: None,
                ..
            }
        ));
        let large_size = a.try_free(q, 3 << 20, Life::Frame).unwrap_err();
        assert!(
            matches!(large_size.problem, Problem::WrongRun { .. }),
            "{large_size}"
        );
        // Nothing changed: both free as made.
        a.try_free(p, 100_000, Life::Frame).unwrap();
        let double = a.try_free(p, 100_000, Life::Frame).unwrap_err();
        assert_eq!(double.problem, Problem::DoubleFree);
        assert!(double.to_string().contains("100000"), "{double}");
        a.free(q, 40_000, Life::Frame);
        a.free(small, 64, Life::Frame);
    }
    // The panicking free reports the same.
    let r = a.malloc(30_000, Life::Long);
    let msg = common::misuse_message(|| unsafe { a.free(r, 60_000, Life::Long) });
    assert!(
        msg.contains(&format!("{:#x}", r as usize)) && msg.contains("60000"),
        "{msg}"
    );
    // SAFETY: still live.
    unsafe { a.free(r, 30_000, Life::Long) };
    assert!(a.is_empty());
}

/// Releasing a class frees its medium allocations, whichever thread made them, and leaves
/// other classes' alone.
#[test]
fn release_class_frees_the_class_medium_allocations() {
    let a = Cohort::<Life>::new();
    let keep = a.malloc(50_000, Life::Long);
    // SAFETY: keep holds 50 000 bytes.
    unsafe { fill(keep, 7, 50_000) };
    let mut frame: Vec<usize> = (0..20)
        .map(|i| a.malloc(20_000 + i * 30_000, Life::Frame) as usize)
        .collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..5 {
                frame.push(a.malloc(500_000, Life::Frame) as usize);
            }
        });
    });
    assert!(frame.iter().all(|&p| p != 0));
    assert_eq!(a.stats().medium_allocations, 26);
    // SAFETY: nothing of Frame is used after this, and no other thread uses it.
    let r = unsafe { a.release_class(Life::Frame) };
    assert_eq!(r.medium, 25, "{r}");
    assert!(r.blocks >= 2, "{r}");
    let s = a.stats();
    assert_eq!(s.medium_allocations, 1, "{s}");
    // SAFETY: keep is live.
    assert_eq!(unsafe { mismatch(keep, 7, 50_000) }, None);
    // The class serves again.
    let again = a.malloc(700_000, Life::Frame);
    assert!(!again.is_null());
    // SAFETY: live.
    unsafe {
        a.free(again, 700_000, Life::Frame);
        a.free(keep, 50_000, Life::Long);
    }
    assert!(a.is_empty());
    a.compact();
    assert_eq!(a.stats().medium_blocks, 0);
}

/// Minor page faults of the calling thread so far.
fn faults() -> i64 {
    // SAFETY: getrusage writes the struct.
    unsafe {
        let mut u: libc::rusage = core::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut u);
        u.ru_minflt
    }
}

/// A loop of malloc, touch, free of one medium size reuses the same memory: after the first
/// round no page is faulted in again (nothing was given back), at 32 KiB, 256 KiB and 1 MiB.
#[test]
fn a_steady_pair_loop_faults_no_page() {
    let a = Cohort::<()>::new();
    for size in [32 << 10, 256 << 10, MAX_MEDIUM] {
        let pair = || {
            let p = a.malloc(size, ());
            // SAFETY: p holds size bytes.
            unsafe {
                p.write_bytes(1, size);
                a.free(p, size, ());
            }
        };
        pair();
        let before = faults();
        for _ in 0..200 {
            pair();
        }
        let paid = faults() - before;
        assert!(paid < 20, "{size} B: {paid} faults in 200 pairs");
        assert_eq!(a.stats().medium_blocks, 1);
    }
}

/// Churn of random sizes keeps the free resident memory of the medium blocks bounded (so
/// that it adds at most about 3 % to the live medium memory): whole free pages beyond the
/// bound are given back.
#[test]
fn free_resident_memory_stays_bounded_under_churn() {
    let a = Cohort::<()>::new();
    // The allocator's page (`COHORT_PAGE_SIZE`): a page-aligned request's mapping.
    let page = a.usable_size(Layout::from_size_align(1, 8192).unwrap());
    let mut rng = Rng::new(9);
    let mut live: Vec<(*mut u8, usize)> = Vec::new();
    for i in 0..3000 {
        if live.len() < 64 || rng.below(2) == 0 {
            let size = rng.range(MAX_SMALL + 1, MAX_MEDIUM);
            let p = a.malloc(size, ());
            // SAFETY: p holds size bytes.
            unsafe { p.write_bytes(i as u8, size) };
            live.push((p, size));
        } else {
            let (p, n) = live.swap_remove(rng.below(live.len()));
            // SAFETY: live.
            unsafe { a.free(p, n, ()) };
        }
        // The bound (a 40th of the live memory and 512 KiB), what a free may leave beyond
        // it for the next allocation (the longest run), and the parts of pages next to live
        // runs or a block's metadata, which no purge can give back.
        let s = a.stats();
        assert!(
            s.medium_dirty_bytes
                <= s.medium_bytes / 40
                    + (512 << 10)
                    + MAX_MEDIUM
                    + 2 * page * (s.medium_allocations + s.medium_blocks),
            "{s}"
        );
    }
    for (p, n) in live {
        // SAFETY: live.
        unsafe { a.free(p, n, ()) };
    }
    assert!(a.is_empty());
}

/// Free medium memory below the bound goes back on the pool's delay: after a window of
/// it with no use, the medium frees that follow give back what stayed free (all but the
/// memory freed into last), where before it stayed resident for ever.
#[test]
fn free_medium_memory_decays_on_the_delay() {
    let a = Cohort::<()>::new();
    let dirty = common::free_medium_memory_on_a_short_delay(&a);
    // Medium frees look at the clock every 32nd: a pair of 100 000 bytes (above what the
    // heaps' caches keep) frees under the lock every time.
    let pairs = |n: usize| {
        for _ in 0..n {
            let p = a.malloc(100_000, ());
            // SAFETY: live, freed once.
            unsafe { a.free(p, 100_000, ()) };
        }
    };
    for _ in 0..3 {
        pairs(32);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    pairs(32);
    let s = a.stats();
    assert!(
        s.medium_dirty_bytes <= 256 << 10,
        "{dirty} B free and resident before, {} B after the delay: {s}",
        s.medium_dirty_bytes
    );
    assert!(a.is_empty());
}

/// A request takes free granules still resident (dirty) before clean ones, though the
/// clean ones come first: of `x` (given back by a compaction) and `y` (freed after it), a
/// request of `y`'s size takes `y`'s granules, and no page it covers needs a fault.
#[test]
fn a_request_takes_dirty_granules_before_clean_ones() {
    let a = Cohort::<()>::new();
    let size = 512 << 10;
    let [x, y, z] = [0, 1, 2].map(|i| {
        let p = a.malloc(size, ());
        // SAFETY: p holds size bytes.
        unsafe { p.write_bytes(i, size) };
        p
    });
    // SAFETY: live, freed once.
    unsafe { a.free(x, size, ()) };
    a.compact();
    // SAFETY: as above.
    unsafe { a.free(y, size, ()) };
    let before = a.stats().medium_dirty_bytes;
    let p = a.malloc(size, ());
    let taken = before - a.stats().medium_dirty_bytes;
    assert_eq!(
        taken, size,
        "x at {x:?} (clean), y at {y:?} (dirty): took {p:?}"
    );
    assert_eq!(common::kernel_view::resident_bytes(p, size), size);
    // SAFETY: live, freed once.
    unsafe {
        a.free(p, size, ());
        a.free(z, size, ());
    }
    assert!(a.is_empty());
}

/// The free memory of medium blocks that their last free empties is bounded as the rest of
/// the medium blocks' free memory: eight 1 MiB runs (a block each) written and freed leave
/// at most the bound and one run's worth resident, not seven kept empty blocks' worth.
#[test]
fn emptied_medium_blocks_keep_no_more_resident_than_the_bound() {
    let a = Cohort::<()>::new();
    let runs: Vec<*mut u8> = (0..8)
        .map(|i| {
            let p = a.malloc(MAX_MEDIUM, ());
            // SAFETY: p holds MAX_MEDIUM bytes.
            unsafe { p.write_bytes(i, MAX_MEDIUM) };
            p
        })
        .collect();
    for &p in &runs {
        // SAFETY: live, freed once.
        unsafe { a.free(p, MAX_MEDIUM, ()) };
    }
    let resident: usize = runs
        .iter()
        .map(|&p| common::kernel_view::resident_bytes(p, MAX_MEDIUM))
        .sum();
    let s = a.stats();
    assert!(
        resident <= (512 << 10) + MAX_MEDIUM,
        "{resident} B of the freed runs resident: {s}"
    );
    assert!(a.is_empty());
}

/// A plain medium request's pages are left to fault in as the caller writes them: buffers
/// written in one page stay unresident but for that page, in fresh blocks and in clean
/// granules a purge gave back alike (RED-55: when clean granules were faulted in at once,
/// twenty 900 KiB buffers each written in one byte made 18 MiB resident).
#[test]
fn plain_requests_written_in_one_page_stay_unresident() {
    let a = Cohort::<()>::new();
    let size = 900 << 10;
    // The allocator's page (`COHORT_PAGE_SIZE`): what one written byte may bring in.
    let page = a.usable_size(Layout::from_size_align(1, 8192).unwrap());
    let sparse = |a: &Cohort<()>| -> Vec<*mut u8> {
        (0..20)
            .map(|i| {
                let p = a.malloc(size, ());
                // SAFETY: p holds size bytes.
                unsafe { p.write(i) };
                p
            })
            .collect()
    };
    let check = |ps: &[*mut u8], what: &str| {
        for &p in ps {
            let resident = common::kernel_view::resident_bytes(p, size);
            assert!(
                resident <= 2 * page,
                "{what}: {resident} B of {p:?} resident"
            );
        }
    };
    let fresh = sparse(&a);
    check(&fresh, "fresh blocks");
    for p in fresh {
        // SAFETY: live, freed once.
        unsafe { a.free(p, size, ()) };
    }
    // Given back: the blocks' granules read zero again (clean), not resident.
    a.compact();
    let again = sparse(&a);
    check(&again, "granules given back");
    for p in again {
        // SAFETY: live, freed once.
        unsafe { a.free(p, size, ()) };
    }
    assert!(a.is_empty());
}
