//! The entries that take a pointer without its size (`Cohort::free_unsized`, the C `free`;
//! `realloc_unsized`, the C `realloc`; `usable_size_at`, the C `malloc_usable_size`) given
//! a pointer into cohort's memory that starts no allocation: inside a small slot (`p + k`,
//! `k` not a multiple of the stride), in a block's header or a tiny block's run table,
//! past a block's last slot, inside a medium run or a large allocation. Each must abort
//! with a report naming the pointer, in every build: the unsized free used to check the
//! slot start in checked builds only, and in a release build freed the inside pointer onto
//! the block's list, so that the next allocation of its class overlapped a live slot.
//!
//! Each misuse runs in a fork child of the test (it aborts the process): a misuse hook
//! there leaves with [`NAMED`] when the report names the child's pointer (and, inside a
//! small block, says it is not a slot's start), with [`OTHER`] when it names something
//! else; a child whose call returns leaves with [`RETURNED`].

use cohort::class::{CLASSES, GRANULE};
use cohort::{set_misuse_hook, Cohort, Misuse, Problem, RegionOptions};
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};
use test_support::{abort_in_child, child_case, fork_children, say};

/// A fork child's exit code: the report named its pointer.
const NAMED: i32 = 77;
/// A fork child's exit code: the report named another pointer or problem.
const OTHER: i32 = 78;
/// A fork child's exit code: the call returned.
const RETURNED: i32 = 79;

/// The pointer a fork child's call is given (written before the fork).
static MISUSED: AtomicUsize = AtomicUsize::new(0);
/// The stride a report of [`MISUSED`] must name, 0 when it is not in a small block.
static STRIDE: AtomicUsize = AtomicUsize::new(0);

/// The fork child's misuse hook: leaves with [`NAMED`] or [`OTHER`] before the abort.
fn leave(m: &Misuse) {
    let stride = STRIDE.load(Ordering::SeqCst);
    let named = m.ptr == MISUSED.load(Ordering::SeqCst)
        && (stride == 0 || m.problem == Problem::NotASlot { stride });
    // SAFETY: leaves the fork child at once.
    unsafe { libc::_exit(if named { NAMED } else { OTHER }) }
}

/// An entry taking a pointer without its size.
#[derive(Clone, Copy, Debug)]
enum Entry {
    Free,
    Realloc,
    UsableSize,
}

const ENTRIES: [Entry; 3] = [Entry::Free, Entry::Realloc, Entry::UsableSize];

/// Calls each of `entries` with `p` in a fork child of its own; returns what went wrong (a
/// child that did not leave with [`NAMED`]) as text. `stride`: as [`STRIDE`].
fn misuse(a: &Cohort<()>, entries: &[Entry], p: *mut u8, stride: usize) -> Vec<String> {
    MISUSED.store(p as usize, Ordering::SeqCst);
    STRIDE.store(stride, Ordering::SeqCst);
    let bad = fork_children(entries.len(), 20, |i| {
        // SAFETY: the misuse under test, in a fork child that the report ends.
        let answer = unsafe {
            match entries[i] {
                Entry::Free => a.free_unsized(p).map(|()| 0),
                Entry::Realloc => a.realloc_unsized(p, 24, 8).map(|q| q as usize),
                Entry::UsableSize => a.usable_size_at(p),
            }
        };
        say(&format!("{:?} of {p:p} returned {answer:?}\n", entries[i]));
        RETURNED
    });
    bad.iter()
        .filter(|&&status| status != NAMED << 8)
        .map(|status| format!("{p:p} (stride {stride}): status {status:#x}"))
        .collect()
}

/// The offsets `k` inside a slot of `stride` that are tested: every one up to a stride of
/// 32 bytes; above, 1, 2, 3, `stride - 2`, `stride - 1`, half the stride's largest
/// power-of-two divisor `pow` and the stride less it, and multiples of `pow` (the offsets
/// a test of the alignment alone takes for a slot's start): the first and last three and
/// about four between. (`Class::slot_index`'s own test takes every offset of a slot.)
fn inside_offsets(stride: usize) -> Vec<usize> {
    if stride <= 32 {
        return (1..stride).collect();
    }
    let pow = 1 << stride.trailing_zeros();
    let odd = stride / pow;
    let mut ks = vec![1, 2, 3, stride - 2, stride - 1];
    if pow > 1 {
        ks.extend([pow / 2, stride - pow / 2]);
    }
    let spread = |j: &usize| *j <= 3 || odd - j <= 3 || j.is_multiple_of(odd / 4 + 1);
    ks.extend((1..odd).filter(spread).map(|j| j * pow));
    ks.sort_unstable();
    ks.dedup();
    ks
}

/// Every small class, every tested offset inside a live slot (the second of three allocated
/// in a fresh instance), and the offsets of the block that start no slot: its header, a tiny
/// block's run table, past the last slot. Each entry aborts naming the pointer as not a
/// slot's start, in every build; before the fix `free_unsized` returned in a release build
/// (status 0x4f00, `RETURNED`) for every inside offset.
#[test]
fn a_pointer_inside_a_small_slot_aborts_naming_it_in_every_build() {
    let _serial = test_support::serial();
    let previous = set_misuse_hook(Some(leave));
    let a = Cohort::<()>::new();
    let mut wrong = Vec::new();
    for c in CLASSES.iter() {
        let stride = c.stride as usize;
        let layout = Layout::from_size_align(stride, 1).unwrap();
        let slots: Vec<*mut u8> = (0..3).map(|_| a.alloc(layout, ())).collect();
        let p = slots[1];
        let base = (p as usize & !(cohort::class::BLOCK_SIZE - 1)) as *mut u8;
        let ks = inside_offsets(stride);
        for (i, &k) in ks.iter().enumerate() {
            // Every entry for the first and the last offset, the free for all.
            let ends = i == 0 || i + 1 == ks.len();
            let entries = if ends { &ENTRIES[..] } else { &ENTRIES[..1] };
            wrong.extend(misuse(&a, entries, p.wrapping_add(k), stride));
        }
        let outside = [1, 8, 63, 64, c.first as usize - 1, c.limit as usize];
        let outside = outside
            .into_iter()
            .filter(|&off| off < c.first as usize || off == c.limit as usize)
            .filter(|&off| off < cohort::class::BLOCK_SIZE);
        for off in outside {
            wrong.extend(misuse(&a, &ENTRIES, base.wrapping_add(off), stride));
        }
        for q in slots {
            // SAFETY: allocated above, untouched by the fork children.
            unsafe { a.free_unsized(q) }.unwrap();
        }
    }
    set_misuse_hook(previous);
    assert!(a.is_empty());
    assert!(
        wrong.is_empty(),
        "{} wrong: {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(20)]
    );
}

/// Inside a medium run (at and off granule boundaries), a large allocation (one of a
/// single page, large through its alignment, too), a run of a fixed region's units, and a
/// small slot a full fixed region served from a mapping of its own: the same entries abort
/// naming the pointer (they did before too: the run tables and the large table say no
/// allocation starts there).
#[test]
fn a_pointer_inside_a_medium_run_or_a_large_allocation_aborts_naming_it() {
    let _serial = test_support::serial();
    let previous = set_misuse_hook(Some(leave));
    let mut wrong = Vec::new();
    let a = Cohort::<()>::new();
    let aligned = Layout::from_size_align(100, 8192).unwrap();
    let sizes = [20_000, 100_000, 4 << 20];
    let mut live: Vec<*mut u8> = sizes.iter().map(|&size| a.malloc(size, ())).collect();
    live.push(a.alloc(aligned, ()));
    for &p in &live {
        let usable = a.allocation_at(p).unwrap().usable;
        let ks = [1, 16, 100, GRANULE - 1, GRANULE, 4096, 3 * GRANULE + 8];
        for k in ks.into_iter().filter(|&k| k < usable) {
            wrong.extend(misuse(&a, &ENTRIES, p.wrapping_add(k), 0));
        }
    }
    for p in live {
        // SAFETY: allocated above, untouched by the fork children.
        unsafe { a.free_unsized(p) }.unwrap();
    }
    assert!(a.is_empty());
    const MIB: usize = 1 << 20;
    let fixed = Cohort::<()>::with_options(&RegionOptions::new(4 * MIB).fallback(true)).unwrap();
    let run = fixed.malloc(4 * MIB, ());
    let fallback = fixed.malloc(64, ());
    assert!(fixed.in_region(run) && !fixed.in_region(fallback));
    for k in [1, 16, 4096, MIB] {
        wrong.extend(misuse(&fixed, &ENTRIES, run.wrapping_add(k), 0));
    }
    for k in [1, 16, 63] {
        wrong.extend(misuse(&fixed, &ENTRIES, fallback.wrapping_add(k), 0));
    }
    set_misuse_hook(previous);
    // SAFETY: allocated above, untouched by the fork children.
    unsafe {
        fixed.free_unsized(fallback).unwrap();
        fixed.free_unsized(run).unwrap();
    }
    assert!(fixed.is_empty());
    assert!(wrong.is_empty(), "{wrong:#?}");
}

const CHILD_ENV: &str = "COHORT_FREE_INSIDE_SLOT_CHILD";

/// The child side of [`the_report_of_a_free_inside_a_slot_is_an_abort_naming_the_pointer`].
#[test]
fn free_inside_slot_child() {
    let Some(case) = child_case(CHILD_ENV) else {
        return;
    };
    let a = Cohort::<()>::new();
    let p = a.malloc(64, ());
    let q = p.wrapping_add(case.parse().unwrap());
    eprintln!("child: freeing {q:p}");
    // SAFETY: the misuse under test.
    let answer = unsafe { a.free_unsized(q) };
    eprintln!("child: the misuse returned {answer:?}");
}

/// Without a hook, the report is the abort with a message naming the pointer.
#[test]
fn the_report_of_a_free_inside_a_slot_is_an_abort_naming_the_pointer() {
    for k in ["16", "1", "63"] {
        let stderr = abort_in_child("free_inside_slot_child", CHILD_ENV, k);
        let freed = stderr
            .split("freeing ")
            .nth(1)
            .and_then(|s| s.lines().next());
        let freed = freed.unwrap_or_else(|| panic!("{stderr}"));
        let says = format!("bad free of {freed} (size 0, lifetime class 0): the pointer is not the start of a slot (stride 64 B)");
        assert!(stderr.contains(&says), "{k}: {stderr}");
    }
}

/// `GlobalAlloc::dealloc` and `realloc` (in place and to another class) with a layout of
/// the block's class and a pointer into a small block's header area or tail (below its
/// first slot, or past its last), by a thread that does not own the block: each aborts
/// naming the pointer as no slot's start, in every build, in a fork child of its own
/// (which first frees one of the block's objects or not: a chain of the block pending in
/// its batch, or none), in a private instance and a shared-anonymous region. The owner is a
/// thread of the parent that allocated through `GlobalAlloc` and waits meanwhile. (The
/// other sized entries are `tests/free_header_area.rs`'s.) Before the fix a release build's
/// child reported the block's start as a double free, and the shared region's parent then
/// found its own objects freed.
#[test]
fn global_alloc_frees_into_a_blocks_header_area_or_tail_abort_naming_the_pointer() {
    let _serial = test_support::serial();
    let previous = set_misuse_hook(Some(leave));
    let mut wrong = Vec::new();
    let private = Cohort::<()>::new();
    let shared = Cohort::<()>::shared_anonymous(64 << 20).expect("a shared region");
    for (a, is_private) in [(&private, true), (&shared, false)] {
        for (size, align) in [(1, 1), (8, 8), (24, 8), (48, 16), (128, 128)] {
            let layout = Layout::from_size_align(size, align).unwrap();
            let (objects_tx, objects_rx) = std::sync::mpsc::channel::<Vec<usize>>();
            let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
            std::thread::scope(|s| {
                s.spawn(move || {
                    let objects = (0..4)
                        // SAFETY: a layout of a non-zero size.
                        .map(|_| unsafe { GlobalAlloc::alloc(a, layout) } as usize)
                        .collect();
                    objects_tx.send(objects).expect("send");
                    // Alive until the forks are over (the sender dropped).
                    let _ = done_rx.recv();
                });
                let objects = objects_rx.recv().expect("objects");
                wrong.extend(global_misuses(a, is_private, layout, &objects));
                drop(done_tx);
                for p in objects {
                    // SAFETY: allocated above, freed once (the children's frees were theirs).
                    unsafe { GlobalAlloc::dealloc(a, p as *mut u8, layout) };
                }
            });
        }
        assert!(a.is_empty(), "private {is_private}: not empty");
    }
    set_misuse_hook(previous);
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// [`global_alloc_frees_into_a_blocks_header_area_or_tail_abort_naming_the_pointer`]'s
/// children for the block of `objects` (of `layout`): what went wrong, as text.
fn global_misuses(a: &Cohort<()>, private: bool, layout: Layout, objects: &[usize]) -> Vec<String> {
    let c = &CLASSES[cohort::class::class_of(layout.size(), layout.align()).unwrap()];
    let (first, limit) = (c.first as usize, c.limit as usize);
    let base = objects[0] & !(cohort::class::BLOCK_SIZE - 1);
    let mut offsets = vec![0, 8, first - 1, first - c.slot_align as usize];
    if limit < cohort::class::BLOCK_SIZE {
        offsets.extend([limit, cohort::class::BLOCK_SIZE - 4]);
    }
    offsets.dedup();
    STRIDE.store(c.stride as usize, Ordering::SeqCst);
    let mut wrong = Vec::new();
    for off in offsets {
        let p = (base + off) as *mut u8;
        MISUSED.store(p as usize, Ordering::SeqCst);
        // The chained variant in a private instance only: a shared region's fork children
        // free in the parent's memory (and push each remote free at once: no chain).
        for chained in [false, true]
            .into_iter()
            .filter(|&chained| !chained || private)
        {
            let bad = fork_children(3, 20, |i| {
                if chained {
                    // SAFETY: a live object of this layout, freed once (in this child).
                    unsafe { GlobalAlloc::dealloc(a, objects[1] as *mut u8, layout) };
                }
                // SAFETY: the misuse under test, in a fork child the report ends.
                unsafe {
                    match i {
                        0 => GlobalAlloc::dealloc(a, p, layout),
                        1 => _ = GlobalAlloc::realloc(a, p, layout, layout.size()),
                        _ => _ = GlobalAlloc::realloc(a, p, layout, layout.size() * 4 + 100),
                    }
                }
                say(&format!("GlobalAlloc call {i} of {p:p} returned\n"));
                RETURNED
            });
            wrong.extend(bad.iter().filter(|&&status| status != NAMED << 8).map(|status| {
                format!("private {private} {layout:?} +{off:#x}, chained {chained}: a child's status {status:#x}")
            }));
        }
    }
    wrong
}
