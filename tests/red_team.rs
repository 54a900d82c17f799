//! Red-team attacks on the misuse checks, out of memory, instance lifecycle and races: each
//! test is a hostile but fair use. A test that found a defect is `#[ignore]`d with the
//! defect, the symptom and the build named, until the fix un-ignores it.

mod common;

use cohort::class::{class_of, MAX_SMALL};
use cohort::{Cohort, Lifetime};
use common::{fill, malloc_align, mismatch, seed_of};
use std::alloc::{GlobalAlloc, Layout};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

cohort::lifetime_classes! {
    enum Life { A, B, C }
}

const CHECKED: bool = cfg!(debug_assertions);

/// Silences the panic hook for the expected panics (thousands of them).
fn quiet() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let s = info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_default();
            if !s.starts_with("cohort: ") {
                prev(info);
            }
        }));
    });
}

/// The panic message of `f`, or `None` when it returned.
fn caught(f: impl FnOnce()) -> Option<String> {
    quiet();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => None,
        Err(e) => Some(
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
        ),
    }
}

/// Asserts that `f` panics with a misuse report naming `p` and `size`.
fn assert_reported(what: &str, p: *const u8, size: usize, f: impl FnOnce()) -> String {
    let msg = caught(f).unwrap_or_else(|| panic!("{what}: {p:?} size {size}: not reported"));
    assert!(
        msg.contains(&format!("{:#x}", p as usize)) && msg.contains(&format!("size {size}")),
        "{what}: the report does not name the pointer and size: {msg}"
    );
    msg
}

/// Live objects with a pattern, to check that misuse corrupted nothing.
struct Witnesses<'a, L: Lifetime> {
    a: &'a Cohort<L>,
    objs: Vec<(*mut u8, usize, L)>,
}

impl<'a, L: Lifetime> Witnesses<'a, L> {
    fn new(a: &'a Cohort<L>, sizes: &[usize], lives: &[L]) -> Self {
        let mut objs = Vec::new();
        for &s in sizes {
            for &l in lives {
                let p = a.malloc(s, l);
                assert!(!p.is_null());
                // SAFETY: p holds s bytes.
                unsafe { fill(p, seed_of(p, s), s) };
                objs.push((p, s, l));
            }
        }
        Witnesses { a, objs }
    }

    fn check(&self, what: &str) {
        for &(p, s, _) in &self.objs {
            // SAFETY: live, s bytes.
            let bad = unsafe { mismatch(p, seed_of(p, s), s) };
            assert_eq!(bad, None, "{what}: live object {p:?} ({s} B) changed");
        }
    }
}

impl<L: Lifetime> Drop for Witnesses<'_, L> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        self.check("at the end");
        for &(p, s, l) in &self.objs {
            // SAFETY: live allocations of a with size s and class l.
            unsafe { self.a.free(p, s, l) };
        }
    }
}

const WITNESS_SIZES: &[usize] = &[1, 2, 8, 16, 24, 48, 64, 100, 1000, 4096, 16384, 100_000];

/// One size of each small size class (malloc's alignment), the smallest that maps to it.
fn class_representatives() -> Vec<(usize, usize)> {
    let mut reps: Vec<(usize, usize)> = Vec::new();
    for s in 1..=MAX_SMALL {
        let c = class_of(s, malloc_align(s)).unwrap();
        if !reps.iter().any(|&(_, rc)| rc == c) {
            reps.push((s, c));
        }
    }
    reps
}

/// Every pair of small size classes: an allocation of one freed with a size of the other is
/// reported with pointer and size, in every build, and nothing else changes; so is every
/// lifetime-class mismatch, and a large size.
#[test]
fn every_pair_of_classes_wrong_size_is_reported() {
    let mut a: Cohort<Life> = Cohort::new();
    let w = Witnesses::new(&a, WITNESS_SIZES, &[Life::A, Life::B, Life::C]);
    let reps = class_representatives();
    for &(s, _) in &reps {
        let p = a.malloc(s, Life::B);
        // SAFETY: s bytes.
        unsafe { fill(p, seed_of(p, s), s) };
        for &(t, _) in reps.iter().filter(|&&(t, _)| t != s) {
            // SAFETY: deliberately wrong size.
            assert_reported("wrong class", p, t, || unsafe { a.free(p, t, Life::B) });
        }
        for l in [Life::A, Life::C] {
            // SAFETY: deliberately wrong lifetime class.
            assert_reported("wrong life", p, s, || unsafe { a.free(p, s, l) });
        }
        // SAFETY: deliberately a large size.
        assert_reported("large size", p, 100_000, || unsafe {
            a.free(p, 100_000, Life::B)
        });
        // SAFETY: the allocation is intact.
        assert_eq!(unsafe { mismatch(p, seed_of(p, s), s) }, None);
        // SAFETY: the right size and class.
        unsafe { a.free(p, s, Life::B) };
    }
    w.check("after the wrong-size frees");
    drop(w);
    a.verify_exclusive().expect("consistent after the misuse");
    assert!(a.is_empty());
}

/// Sizes 1..=20000: any size up to the usable size frees; the usable size plus one is
/// reported (another class or large).
#[test]
fn every_size_one_past_the_usable_size_is_reported() {
    let mut a: Cohort<Life> = Cohort::new();
    let w = Witnesses::new(&a, WITNESS_SIZES, &[Life::A]);
    let step = if CHECKED { 7 } else { 1 };
    for s in (1..=20_000).step_by(step) {
        let (p, u) = a.malloc_at_least(s, Life::A);
        assert!(u >= s && !p.is_null());
        // SAFETY: u bytes usable.
        unsafe { fill(p, seed_of(p, u), u) };
        // SAFETY: deliberately one past the usable size.
        assert_reported("usable + 1", p, u + 1, || unsafe {
            a.free(p, u + 1, Life::A)
        });
        if s > 1 {
            // SAFETY: deliberately a size below the allocation's class (when it differs).
            let below = s - 1;
            if class_of(below, malloc_align(below)) != class_of(s, malloc_align(s)) {
                assert_reported("size - 1", p, below, || unsafe {
                    a.free(p, below, Life::A)
                });
            }
        }
        // SAFETY: intact; any size from s to u frees it.
        assert_eq!(unsafe { mismatch(p, seed_of(p, u), u) }, None);
        unsafe { a.free(p, s + (u - s) / 2, Life::A) };
    }
    w.check("after the sweep");
    drop(w);
    a.verify_exclusive().expect("consistent after the misuse");
    assert!(a.is_empty());
}

/// The Layout forms: every size to 20000 with every power-of-two align to 64 KiB, freed with
/// an align that changes the class: reported, and the allocation is aligned and intact.
#[test]
fn layout_sizes_and_aligns_wrong_align_is_reported() {
    let mut a: Cohort<Life> = Cohort::new();
    let w = Witnesses::new(&a, WITNESS_SIZES, &[Life::C]);
    let step = if CHECKED { 97 } else { 13 };
    for s in (1..=20_000).step_by(step) {
        for shift in 0..=16 {
            let align = 1usize << shift;
            let l = Layout::from_size_align(s, align).unwrap();
            let p = a.alloc(l, Life::C);
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0, "{l:?}");
            let u = a.usable_size(l);
            // SAFETY: u bytes usable.
            unsafe { fill(p, seed_of(p, u), u) };
            let other = Layout::from_size_align(s, if align > 1 { align / 2 } else { 64 }).unwrap();
            if class_of(s, other.align()) != class_of(s, align) {
                // (Two large layouts of the same size map the same bytes: only a class
                // change is a misuse.)
                // SAFETY: deliberately the wrong align.
                assert_reported("wrong align", p, s, || unsafe {
                    a.dealloc(p, other, Life::C)
                });
            }
            // SAFETY: deliberately one past the usable size.
            assert_reported("layout usable + 1", p, u + 1, || unsafe {
                a.dealloc(p, Layout::from_size_align(u + 1, align).unwrap(), Life::C)
            });
            // SAFETY: intact, the right layout (usable size).
            assert_eq!(unsafe { mismatch(p, seed_of(p, u), u) }, None, "{l:?}");
            unsafe { a.dealloc(p, Layout::from_size_align(u, align).unwrap(), Life::C) };
        }
    }
    w.check("after the layout sweep");
    drop(w);
    a.verify_exclusive().expect("consistent after the misuse");
    assert!(a.is_empty());
}

/// Pointers that are not this instance's: libc's, the stack's, another instance's, a dropped
/// instance's, a zero-size allocation's dangling pointer freed with a size: reported in
/// every build, small and large sizes.
#[test]
fn foreign_pointers_are_reported() {
    let mut a: Cohort<Life> = Cohort::new();
    let w = Witnesses::new(&a, WITNESS_SIZES, &[Life::A, Life::B, Life::C]);
    let other: Cohort<Life> = Cohort::new();
    let mut stack = [0u64; 64];
    // SAFETY: plain libc allocation, freed below.
    let libc_p = unsafe { libc::malloc(64) } as *mut u8;
    let dropped = {
        let d: Cohort<Life> = Cohort::new();
        d.malloc(64, Life::A)
    };
    let ptrs = [
        libc_p,
        stack.as_mut_ptr().cast::<u8>(),
        other.malloc(64, Life::A),
        other.malloc(100_000, Life::A),
        dropped,
        8 as *mut u8,
        usize::MAX as *mut u8,
        (usize::MAX - 4095) as *mut u8,
    ];
    for &p in &ptrs {
        for size in [1, 2, 8, 64, 1000, 16384, 100_000] {
            // SAFETY: deliberately a foreign pointer.
            assert_reported("foreign", p, size, || unsafe { a.free(p, size, Life::A) });
        }
        let l = Layout::from_size_align(64, 64).unwrap();
        // SAFETY: deliberately a foreign pointer.
        assert_reported("foreign layout", p, 64, || unsafe {
            a.dealloc(p, l, Life::A)
        });
        // SAFETY: deliberately a foreign pointer.
        assert_reported("foreign remalloc", p, 64, || unsafe {
            a.remalloc(p, 64, 128, Life::A);
        });
    }
    w.check("after the foreign frees");
    // SAFETY: the libc allocation, and other's.
    unsafe {
        libc::free(libc_p.cast());
        other.free(ptrs[2], 64, Life::A);
        other.free(ptrs[3], 100_000, Life::A);
    }
    drop(w);
    a.verify_exclusive().expect("consistent after the misuse");
    assert!(a.is_empty() && other.is_empty());
}

/// The region's base address of `a` (its first block), from a live pointer.
fn block_base(p: *const u8) -> usize {
    p as usize & !((2 << 20) - 1)
}

/// Wild pointers inside the region: a never-carved block, its header, a given-back block's
/// slot. Reported in every build.
#[test]
fn wild_pointers_inside_the_region_are_reported() {
    let mut a: Cohort<Life> = Cohort::new();
    let w = Witnesses::new(&a, WITNESS_SIZES, &[Life::A, Life::B, Life::C]);
    let p = a.malloc(64, Life::A);
    let base = block_base(p);
    // Far into the reservation: never carved.
    for wild in [
        base + (64 << 20) + 64,
        base + (64 << 20),
        base + (64 << 20) + 4096,
    ] {
        let wp = wild as *mut u8;
        for size in [1, 2, 8, 16, 64, 4096, 16384] {
            // SAFETY: deliberately a wild pointer.
            assert_reported("never carved", wp, size, || unsafe {
                a.free(wp, size, Life::A)
            });
        }
    }
    w.check("after the wild frees");
    // SAFETY: live.
    unsafe { a.free(p, 64, Life::A) };
    drop(w);
    a.verify_exclusive().expect("consistent after the misuse");
    assert!(a.is_empty());
}

/// The slot of a block given back (emptied and compacted): a stale free is reported in
/// every build (the block reads as empty), not pushed onto a block.
#[test]
fn a_free_into_a_given_back_block_is_reported() {
    let a: Cohort<Life> = Cohort::new();
    let n = 3 * (2 << 20) / 256;
    let v: Vec<*mut u8> = (0..n).map(|_| a.malloc(256, Life::B)).collect();
    for &p in &v {
        // SAFETY: live.
        unsafe { a.free(p, 256, Life::B) };
    }
    a.compact();
    let w = Witnesses::new(&a, WITNESS_SIZES, &[Life::A, Life::C]);
    for &p in [v[0], v[n / 2], v[n - 1]].iter() {
        // SAFETY: deliberately a stale pointer.
        assert_reported("given back", p, 256, || unsafe { a.free(p, 256, Life::B) });
    }
    w.check("after the stale frees");
    drop(w);
    assert!(a.is_empty());
    let s = a.stats();
    assert_eq!(s.small.live, 0);
}

/// Interior pointers and the block header: caught in checked mode; in release, documented
/// as undetectable (only the checked build is asserted).
#[test]
fn interior_and_header_pointers_in_checked_mode() {
    if !CHECKED {
        return;
    }
    let a: Cohort<Life> = Cohort::new();
    let w = Witnesses::new(&a, WITNESS_SIZES, &[Life::A, Life::B, Life::C]);
    for s in [8usize, 16, 24, 64, 100, 1000, 4096] {
        let p = a.malloc(s, Life::A);
        let base = block_base(p) as *mut u8;
        for q in [
            p.wrapping_add(1),
            p.wrapping_add(s / 2),
            base,
            base.wrapping_add(8),
        ] {
            // SAFETY: deliberately not a slot.
            assert_reported("interior", q, s, || unsafe { a.free(q, s, Life::A) });
        }
        // SAFETY: live.
        unsafe { a.free(p, s, Life::A) };
    }
    w.check("after the interior frees");
}

/// Double frees: immediate ones in every build (local, remote, tiny, large); later ones in
/// checked mode.
#[test]
fn double_frees_are_reported() {
    let a: Arc<Cohort<Life>> = Arc::new(Cohort::new());
    let w = Witnesses::new(&a, WITNESS_SIZES, &[Life::A, Life::B, Life::C]);
    for s in [1usize, 2, 8, 24, 64, 1000, 16384, 100_000] {
        // Local, immediate.
        let p = a.malloc(s, Life::A);
        // SAFETY: live, then deliberately freed again.
        unsafe { a.free(p, s, Life::A) };
        assert_reported("immediate local", p, s, || unsafe { a.free(p, s, Life::A) });
        // Remote, immediate, on the same remote thread (remote then local, and local then
        // remote: see the tests below).
        let keep = a.malloc(s, Life::B); // keeps the block from emptying
        let q = a.malloc(s, Life::B) as usize;
        let a2 = a.clone();
        let msg = std::thread::spawn(move || {
            let qp = q as *mut u8;
            // SAFETY: live, then deliberately freed again.
            unsafe { a2.free(qp, s, Life::B) };
            caught(|| unsafe { a2.free(qp, s, Life::B) })
        })
        .join()
        .unwrap();
        assert!(msg.is_some(), "remote twice: {q:#x} size {s}: not reported");
        // Not immediate: checked mode only.
        if CHECKED {
            let x = a.malloc(s, Life::C);
            let y = a.malloc(s, Life::C);
            // SAFETY: live, then deliberately freed again after another free.
            unsafe { a.free(x, s, Life::C) };
            unsafe { a.free(y, s, Life::C) };
            assert_reported("later", x, s, || unsafe { a.free(x, s, Life::C) });
        }
        // SAFETY: live.
        unsafe { a.free(keep, s, Life::B) };
    }
    w.check("after the double frees");
    drop(w);
    assert!(a.is_empty());
}

/// Resizes with a wrong old size or class (small, large, across) are rejected before
/// anything changes, through remalloc, recalloc and the Layout realloc.
#[test]
fn resizes_with_a_wrong_old_allocation_change_nothing() {
    let mut a: Cohort<Life> = Cohort::new();
    let w = Witnesses::new(&a, WITNESS_SIZES, &[Life::A, Life::B, Life::C]);
    let sizes = [1usize, 2, 8, 24, 100, 1000, 4000, 16384, 100_000, 300_000];
    for &s in &sizes {
        let p = a.malloc(s, Life::A);
        // SAFETY: s bytes.
        unsafe { fill(p, seed_of(p, s), s) };
        let before = a.stats();
        for &wrong in sizes.iter().filter(|&&t| {
            class_of(t, malloc_align(t)) != class_of(s, malloc_align(s))
                || (t > MAX_SMALL && s > MAX_SMALL && t.div_ceil(4096) != s.div_ceil(4096))
        }) {
            for &new in &[1usize, 64, 5000, 200_000] {
                // SAFETY: deliberately wrong old size.
                assert_reported("remalloc", p, wrong, || unsafe {
                    a.remalloc(p, wrong, new, Life::A);
                });
                assert_reported("recalloc", p, wrong, || unsafe {
                    a.recalloc(p, wrong, new, Life::A);
                });
                let l = Layout::from_size_align(wrong, malloc_align(wrong)).unwrap();
                assert_reported("realloc", p, wrong, || unsafe {
                    a.realloc(p, l, new, Life::A);
                });
            }
        }
        // SAFETY: deliberately wrong class.
        assert_reported("remalloc life", p, s, || unsafe {
            a.remalloc(p, s, 2 * s + 5000, Life::B);
        });
        let after = a.stats();
        assert_eq!(before.small.live, after.small.live, "size {s}");
        assert_eq!(
            before.large_allocations, after.large_allocations,
            "size {s}"
        );
        // SAFETY: intact.
        assert_eq!(unsafe { mismatch(p, seed_of(p, s), s) }, None, "size {s}");
        unsafe { a.free(p, s, Life::A) };
    }
    w.check("after the resizes");
    drop(w);
    a.verify_exclusive().expect("consistent after the misuse");
    assert!(a.is_empty());
}

/// Joins: a join's free checks as the direct API does.
#[test]
fn join_misuse_is_reported() {
    let a: Cohort<Life> = Cohort::new();
    let w = Witnesses::new(&a, WITNESS_SIZES, &[Life::A, Life::B, Life::C]);
    let j = a.join(0).expect("a join");
    for s in [1usize, 2, 8, 64, 1000, 100_000] {
        let p = j.malloc(s, Life::A);
        // Past the usable size (a large one is whole pages, 64 KiB on some kernels).
        let wrong = a.usable_size(Layout::from_size_align(s, 1).unwrap()) + 20_000;
        // SAFETY: deliberately wrong.
        assert_reported("join wrong size", p, wrong, || unsafe {
            j.free(p, wrong, Life::A)
        });
        assert_reported("join wrong life", p, s, || unsafe { j.free(p, s, Life::B) });
        // SAFETY: live.
        unsafe { j.free(p, s, Life::A) };
        assert_reported("join double free", p, s, || unsafe {
            j.free(p, s, Life::A)
        });
        let mut x = 0u64;
        let xp = (&mut x as *mut u64).cast::<u8>();
        assert_reported("join stack", xp, s, || unsafe { j.free(xp, s, Life::A) });
    }
    j.leave();
    w.check("after the join misuse");
}

/// allocator_api2 handles: deallocate, grow and shrink with a wrong old layout panic and
/// change nothing.
#[test]
fn handle_misuse_is_reported() {
    use allocator_api2::alloc::Allocator;
    let a: Cohort<Life> = Cohort::new();
    let w = Witnesses::new(&a, WITNESS_SIZES, &[Life::A, Life::B, Life::C]);
    let h = a.handle(Life::A);
    let hb = a.handle(Life::B);
    for s in [1usize, 8, 24, 100, 1000, 16384, 100_000] {
        let l = Layout::from_size_align(s, 8.min(s.next_power_of_two())).unwrap();
        let p = h.allocate(l).unwrap().cast::<u8>();
        // SAFETY: s bytes.
        unsafe { fill(p.as_ptr(), seed_of(p.as_ptr(), s), s) };
        // Past the usable size (a large one is whole pages, 64 KiB on some kernels).
        let wrong = Layout::from_size_align(a.usable_size(l) + 20_000, l.align()).unwrap();
        let grown = Layout::from_size_align(s * 3 + 200_000, l.align()).unwrap();
        let pp = p.as_ptr();
        // SAFETY: deliberately wrong.
        assert_reported("handle dealloc", pp, wrong.size(), || unsafe {
            h.deallocate(p, wrong)
        });
        assert_reported("handle other class", pp, s, || unsafe {
            hb.deallocate(p, l)
        });
        let _ = caught(|| {
            // SAFETY: deliberately wrong old layout.
            let _ = unsafe { h.grow(p, wrong, grown) };
        })
        .expect("grow with a wrong old layout");
        let _ = caught(|| {
            // SAFETY: deliberately wrong class.
            let _ = unsafe { hb.grow(p, l, grown) };
        })
        .expect("grow from another class's handle");
        if s > 1 {
            let _ = caught(|| {
                // SAFETY: deliberately wrong old layout.
                let _ = unsafe { h.shrink(p, wrong, Layout::from_size_align(1, 1).unwrap()) };
            })
            .expect("shrink with a wrong old layout");
        }
        // SAFETY: intact.
        assert_eq!(unsafe { mismatch(pp, seed_of(pp, s), s) }, None, "size {s}");
        unsafe { h.deallocate(p, l) };
    }
    w.check("after the handle misuse");
}

/// Frees `p` (size `s`, class `life`) of `a` on a new thread, which then exits.
fn free_on_another_thread(a: &Arc<Cohort<Life>>, p: *mut u8, s: usize, life: Life) {
    let a2 = a.clone();
    let q = p as usize;
    std::thread::spawn(move || {
        // SAFETY: the caller's live allocation.
        unsafe { a2.free(q as *mut u8, s, life) }
    })
    .join()
    .unwrap();
}

/// An immediate double free whose first free was remote (another thread) and second local
/// (the owner): the slot is the one freed last, which the README says every build reports.
/// If it is not reported, the slot is on both lists and is handed out twice.
#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "RED-1: release only. A slot freed by another thread, then by its owner, is not reported (the local push checks only the local list's first slot); the slot is then on both lists"
)]
fn immediate_double_free_remote_then_local_is_reported() {
    let a: Arc<Cohort<Life>> = Arc::new(Cohort::new());
    for s in [8usize, 64, 1000, 16384] {
        let keep = a.malloc(s, Life::A);
        let q = a.malloc(s, Life::A);
        free_on_another_thread(&a, q, s, Life::A);
        assert_reported("remote then local", q, s, || unsafe {
            a.free(q, s, Life::A)
        });
        // SAFETY: live.
        unsafe { a.free(keep, s, Life::A) };
    }
    assert!(a.is_empty());
}

/// The other order: freed by the owner, then again by another thread.
#[test]
fn immediate_double_free_local_then_remote_is_reported() {
    let a: Arc<Cohort<Life>> = Arc::new(Cohort::new());
    for s in [8usize, 64, 1000, 16384] {
        let keep = a.malloc(s, Life::A);
        let q = a.malloc(s, Life::A);
        // SAFETY: live.
        unsafe { a.free(q, s, Life::A) };
        let a2 = a.clone();
        let qq = q as usize;
        let msg =
            std::thread::spawn(move || caught(|| unsafe { a2.free(qq as *mut u8, s, Life::A) }))
                .join()
                .unwrap();
        assert!(
            msg.is_some(),
            "local then remote, size {s}: {q:?} not reported"
        );
        // SAFETY: live.
        unsafe { a.free(keep, s, Life::A) };
    }
    assert!(a.is_empty());
}

/// What an unreported remote-then-local double free does in release: the slot is handed
/// out twice (two live allocations at one address).
#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "RED-1 consequence: release only. After the unreported remote-then-local double free, one slot is handed out twice (two live allocations at one address)"
)]
fn remote_then_local_double_free_hands_a_slot_out_twice() {
    let a: Arc<Cohort<Life>> = Arc::new(Cohort::new());
    let s = 64;
    let keep = a.malloc(s, Life::A);
    let q = a.malloc(s, Life::A);
    free_on_another_thread(&a, q, s, Life::A);
    if caught(|| unsafe { a.free(q, s, Life::A) }).is_some() {
        unsafe { a.free(keep, s, Life::A) };
        return; // reported: nothing more to see
    }
    let got: Vec<*mut u8> = (0..40_000).map(|_| a.malloc(s, Life::A)).collect();
    test_support::assert_distinct(&got);
}

/// Runs `f` in a forked child (bounded by an alarm); returns its wait status: `Ok(code)` for
/// an exit, `Err(signal)` for a signal. The child writes nothing through Rust's allocator
/// before `f`.
fn in_child(f: impl FnOnce()) -> Result<i32, i32> {
    // SAFETY: the child runs only `f` (cohort and libc calls), then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: bounds the child; `_exit` skips the parent's atexit handlers.
        unsafe { libc::alarm(20) };
        let r = catch_unwind(AssertUnwindSafe(f));
        // SAFETY: ends the child.
        unsafe { libc::_exit(if r.is_ok() { 0 } else { 101 }) };
    }
    let mut status = 0;
    // SAFETY: our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else {
        Err(libc::WTERMSIG(status))
    }
}

/// GlobalAlloc misuse of every kind aborts (SIGABRT): never returns, unwinds or SIGSEGVs.
#[test]
fn global_alloc_misuse_aborts() {
    let lay = |s: usize, a: usize| Layout::from_size_align(s, a).unwrap();
    type Case = (&'static str, Layout, fn(*mut u8) -> *mut u8, Layout);
    let same: fn(*mut u8) -> *mut u8 = |p| p;
    let interior: fn(*mut u8) -> *mut u8 = |p| p.wrapping_add(8);
    let never_carved: fn(*mut u8) -> *mut u8 = |p| (block_base(p) + (64 << 20) + 64) as *mut u8;
    let mut cases: Vec<Case> = vec![
        ("small as other small", lay(8, 8), same, lay(64, 8)),
        ("small as tiny", lay(8, 8), same, lay(1, 1)),
        ("tiny as small", lay(1, 1), same, lay(8, 8)),
        ("small as large", lay(64, 8), same, lay(100_000, 8)),
        ("large as small", lay(100_000, 8), same, lay(64, 8)),
        (
            "large as other large",
            lay(100_000, 8),
            same,
            lay(300_000, 8),
        ),
        ("small align", lay(24, 8), same, lay(24, 16)),
        ("never carved", lay(64, 8), never_carved, lay(64, 8)),
        (
            "large interior",
            lay(100_000, 8),
            |p| p.wrapping_add(4096),
            lay(100_000, 8),
        ),
    ];
    if CHECKED {
        cases.push(("interior", lay(64, 8), interior, lay(64, 8)));
    }
    let mut failures = Vec::new();
    for (name, l, wild, wrong) in cases.iter().cloned() {
        for op in ["dealloc", "realloc", "realloc-huge"] {
            let r = in_child(|| {
                let g: Cohort = Cohort::new();
                // SAFETY: deliberately wrong (the child must abort).
                unsafe {
                    let p = GlobalAlloc::alloc(&g, l);
                    let q = wild(p);
                    match op {
                        "dealloc" => GlobalAlloc::dealloc(&g, q, wrong),
                        "realloc" => {
                            GlobalAlloc::realloc(&g, q, wrong, 5000);
                        }
                        _ => {
                            GlobalAlloc::realloc(&g, q, wrong, isize::MAX as usize - 10);
                        }
                    }
                }
            });
            if r != Err(libc::SIGABRT) {
                failures.push(format!("{name} {op}: {r:?}"));
            }
        }
    }
    for op in ["stack", "libc", "double", "other instance"] {
        let r = in_child(|| {
            let g: Cohort = Cohort::new();
            let h: Cohort = Cohort::new();
            let l = lay(64, 8);
            let mut x = [0u64; 8];
            // SAFETY: deliberately wrong (the child must abort).
            unsafe {
                let _ = GlobalAlloc::alloc(&g, l);
                match op {
                    "stack" => GlobalAlloc::dealloc(&g, x.as_mut_ptr().cast(), l),
                    "libc" => GlobalAlloc::dealloc(&g, libc::malloc(64).cast(), l),
                    "double" => {
                        let p = GlobalAlloc::alloc(&g, l);
                        GlobalAlloc::dealloc(&g, p, l);
                        GlobalAlloc::dealloc(&g, p, l);
                    }
                    _ => GlobalAlloc::dealloc(&g, GlobalAlloc::alloc(&h, l), l),
                }
            }
        });
        if r != Err(libc::SIGABRT) {
            failures.push(format!("{op}: {r:?}"));
        }
    }
    assert!(failures.is_empty(), "not an abort: {failures:#?}");
}

/// Requests no allocation can have are null through GlobalAlloc, and a failed realloc
/// leaves the old allocation intact.
#[test]
fn global_alloc_huge_requests_are_null() {
    let g: Cohort = Cohort::new();
    let huge = [
        isize::MAX as usize - 4095,
        isize::MAX as usize,
        (isize::MAX as usize) / 2 + 1,
    ];
    for &s in &huge {
        for align in [1usize, 8, 4096, 1 << 16] {
            let Ok(l) = Layout::from_size_align(s & !(align - 1), align) else {
                continue;
            };
            // SAFETY: non-zero sizes.
            unsafe {
                assert!(GlobalAlloc::alloc(&g, l).is_null(), "{l:?}");
                assert!(GlobalAlloc::alloc_zeroed(&g, l).is_null(), "{l:?}");
            }
        }
    }
    for s in [8usize, 1000, 100_000] {
        let l = Layout::from_size_align(s, 8).unwrap();
        // SAFETY: non-zero size; p is live with l.
        unsafe {
            let p = GlobalAlloc::alloc(&g, l);
            fill(p, seed_of(p, s), s);
            for &n in &huge {
                assert!(
                    GlobalAlloc::realloc(&g, p, l, n - 8).is_null(),
                    "{s} -> {n}"
                );
            }
            assert_eq!(mismatch(p, seed_of(p, s), s), None);
            GlobalAlloc::dealloc(&g, p, l);
        }
    }
    assert!(g.is_empty());
}

/// Fills a small reservation with a mix of sizes and classes until null, checks that every
/// null leaves the instance consistent (`verify_exclusive`) and usable: after freeing
/// everything, every size class can allocate again (up to a whole block).
#[test]
fn small_reservations_out_of_memory_stay_consistent() {
    let reps = class_representatives();
    for (round, &reservation) in [4usize << 20, 6 << 20, 8 << 20].iter().enumerate() {
        let mut a: Cohort<Life> = Cohort::with_reservation(reservation);
        let mut rng = common::Rng::new(round as u64);
        let mut live: Vec<(*mut u8, usize, Life)> = Vec::new();
        for phase in 0..6 {
            let mut nulls = 0;
            while nulls < 50 {
                let (s, _) = reps[rng.below(reps.len())];
                let l = [Life::A, Life::B, Life::C][rng.below(3)];
                let p = a.malloc(s, l);
                if p.is_null() {
                    nulls += 1;
                    continue;
                }
                // SAFETY: s bytes.
                unsafe { fill(p, seed_of(p, s), s) };
                live.push((p, s, l));
            }
            a.verify_exclusive()
                .unwrap_or_else(|e| panic!("reservation {reservation}, phase {phase}: {e:?}"));
            for &(p, s, _) in &live {
                // SAFETY: live.
                assert_eq!(unsafe { mismatch(p, seed_of(p, s), s) }, None);
            }
            // Free a random half (or everything on even phases).
            let mut keep = Vec::new();
            for (p, s, l) in live.drain(..) {
                if phase % 2 == 1 && rng.chance(50) {
                    keep.push((p, s, l));
                } else {
                    // SAFETY: live.
                    unsafe { a.free(p, s, l) };
                }
            }
            live = keep;
            a.verify_exclusive().unwrap();
        }
        for (p, s, l) in live.drain(..) {
            // SAFETY: live.
            unsafe { a.free(p, s, l) };
        }
        assert!(a.is_empty());
        // Everything free: each class gets a block's worth without compact().
        for &(s, _) in &reps {
            let p = a.malloc(s, Life::C);
            assert!(
                !p.is_null(),
                "reservation {reservation}: size {s} null after freeing all"
            );
            // SAFETY: live.
            unsafe { a.free(p, s, Life::C) };
        }
        a.verify_exclusive().unwrap();
    }
}

/// Out of address space (RLIMIT_AS in a child): large and small allocations fail with null,
/// never a crash or abort, and the instance stays consistent and usable.
#[test]
fn rlimit_as_out_of_memory_is_null_and_consistent() {
    let r = in_child(|| {
        let mut a: Cohort<Life> = Cohort::with_reservation(32 << 20);
        let first = a.malloc(64, Life::A);
        assert!(!first.is_null());
        // Cap the address space a little above what is mapped now.
        let mut vm = 0usize;
        if let Ok(s) = std::fs::read_to_string("/proc/self/statm") {
            vm = s
                .split_whitespace()
                .next()
                .unwrap()
                .parse::<usize>()
                .unwrap()
                * 4096;
        }
        let lim = libc::rlimit {
            rlim_cur: (vm + (48 << 20)) as libc::rlim_t,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: plain setrlimit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) }, 0);
        let mut large = Vec::new();
        loop {
            let p = a.malloc(1 << 20, Life::B);
            if p.is_null() {
                break;
            }
            // SAFETY: 1 MiB.
            unsafe { fill(p, seed_of(p, 1 << 20), 1 << 20) };
            large.push(p);
        }
        let mut small = Vec::new();
        let mut nulls = 0;
        let mut rng = common::Rng::new(5);
        while nulls < 100 {
            let s = rng.range(1, 16384);
            let p = a.calloc(s, Life::C);
            if p.is_null() {
                nulls += 1;
            } else {
                small.push((p, s));
            }
        }
        // A huge Layout realloc fails and keeps the old allocation.
        // SAFETY: live allocation of size 1 MiB.
        let q = unsafe { a.remalloc(large[0], 1 << 20, 8 << 20, Life::B) };
        assert!(q.is_null(), "remalloc past the limit");
        a.verify_exclusive().unwrap();
        for &p in &large {
            // SAFETY: live.
            assert_eq!(unsafe { mismatch(p, seed_of(p, 1 << 20), 1 << 20) }, None);
            unsafe { a.free(p, 1 << 20, Life::B) };
        }
        for &(p, s) in &small {
            // SAFETY: live.
            unsafe { a.free(p, s, Life::C) };
        }
        // SAFETY: live.
        unsafe { a.free(first, 64, Life::A) };
        assert!(a.is_empty());
        a.verify_exclusive().unwrap();
        let p = a.malloc(1 << 20, Life::A);
        assert!(!p.is_null(), "large after freeing everything");
        // SAFETY: live.
        unsafe { a.free(p, 1 << 20, Life::A) };
    });
    assert_eq!(r, Ok(0), "child: exit code or signal");
}

/// An instance dropped while another thread (alive, with a heap of it, and live objects
/// that vanish with it) goes on: that thread then allocates from new instances (one may
/// take the dropped one's address and region) and exits; nothing crashes, and the new
/// instances' objects stay intact.
#[test]
fn instances_dropped_under_a_live_thread() {
    use std::sync::mpsc;
    let (to_worker, from_main) = mpsc::channel::<Option<Arc<Cohort<Life>>>>();
    let (to_main, from_worker) = mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        let mut kept: Vec<(Arc<Cohort<Life>>, *mut u8)> = Vec::new();
        while let Ok(Some(a)) = from_main.recv() {
            // Objects in the instance (left live: they vanish when it drops).
            for s in [1usize, 2, 64, 5000, 100_000] {
                let p = a.malloc(s, Life::A);
                assert!(!p.is_null());
                // SAFETY: s bytes.
                unsafe { fill(p, seed_of(p, s), s) };
            }
            let p = a.malloc(48, Life::B);
            // SAFETY: 48 bytes.
            unsafe { fill(p, seed_of(p, 48), 48) };
            // Check and free the previous instance's survivor (still alive: we hold it).
            if let Some((b, q)) = kept.pop() {
                // SAFETY: live, 48 bytes.
                assert_eq!(unsafe { mismatch(q, seed_of(q, 48), 48) }, None);
                unsafe { b.free(q, 48, Life::B) };
            }
            if kept.is_empty() {
                kept.push((a.clone(), p));
            } else {
                unreachable!();
            }
            drop(a);
            to_main.send(()).unwrap();
        }
        for (b, q) in kept {
            // SAFETY: live.
            unsafe { b.free(q, 48, Life::B) };
        }
    });
    let rounds = if CHECKED { 200 } else { 1000 };
    for _ in 0..rounds {
        let a: Arc<Cohort<Life>> = Arc::new(Cohort::new());
        let mine = a.malloc(64, Life::A);
        to_worker.send(Some(a.clone())).unwrap();
        from_worker.recv().unwrap();
        // SAFETY: live.
        unsafe { a.free(mine, 64, Life::A) };
        drop(a); // the worker may still hold it (kept): dropped there, or here
    }
    to_worker.send(None).unwrap();
    worker.join().unwrap();
}

/// Threads that exit with live objects (small, tiny, large, in several classes); main frees
/// them all afterwards: the instance is empty, consistent, and compact gives everything
/// back.
#[test]
fn threads_exit_with_live_objects() {
    let mut a: Cohort<Life> = Cohort::new();
    let mut objs: Vec<(usize, usize, Life)> = Vec::new();
    for t in 0..16u64 {
        let got = std::thread::scope(|sc| {
            sc.spawn(|| {
                let mut rng = common::Rng::new(t);
                let mut v = Vec::new();
                for _ in 0..2000 {
                    let s = common::random_size(&mut rng, 200_000);
                    let l = [Life::A, Life::B, Life::C][rng.below(3)];
                    let p = a.malloc(s, l);
                    assert!(!p.is_null());
                    // SAFETY: s bytes.
                    unsafe { fill(p, seed_of(p, s), s) };
                    if rng.chance(30) {
                        // SAFETY: live.
                        unsafe { a.free(p, s, l) };
                    } else {
                        v.push((p as usize, s, l));
                    }
                }
                v
            })
            .join()
            .unwrap()
        });
        objs.extend(got);
    }
    a.verify_exclusive().unwrap();
    for &(p, s, l) in &objs {
        let p = p as *mut u8;
        // SAFETY: live.
        assert_eq!(unsafe { mismatch(p, seed_of(p, s), s) }, None);
        unsafe { a.free(p, s, l) };
    }
    assert!(a.is_empty());
    a.verify_exclusive().unwrap();
    a.compact();
    let s = a.stats();
    assert_eq!(s.small.live, 0);
    assert_eq!(s.large_allocations, 0);
}

/// Thousands of instances, on two threads at once, each used (every class, several sizes)
/// and dropped; some dropped with live objects.
#[test]
fn thousands_of_instances() {
    let n = if CHECKED { 1000 } else { 3000 };
    std::thread::scope(|sc| {
        for t in 0..2u64 {
            sc.spawn(move || {
                let mut rng = common::Rng::new(t);
                for i in 0..n {
                    let a: Cohort<Life> = Cohort::new();
                    let mut v = Vec::new();
                    for _ in 0..8 {
                        let s = common::random_size(&mut rng, 100_000);
                        let p = a.malloc(s, Life::B);
                        assert!(!p.is_null(), "instance {i}");
                        // SAFETY: s bytes.
                        unsafe { fill(p, seed_of(p, s), s) };
                        v.push((p, s));
                    }
                    for &(p, s) in &v {
                        // SAFETY: live.
                        assert_eq!(unsafe { mismatch(p, seed_of(p, s), s) }, None);
                        if i % 2 == 0 {
                            unsafe { a.free(p, s, Life::B) };
                        }
                    }
                    if i % 2 == 0 {
                        assert!(a.is_empty());
                    }
                }
            });
        }
    });
}

/// Explicit joins: many held at once on one thread, objects freed through other joins and
/// the instance, joins left in a shuffled order, with live objects.
#[test]
fn many_joins_cross_frees_and_leaves() {
    let mut a: Cohort<Life> = Cohort::new();
    let mut rng = common::Rng::new(9);
    let mut objs: Vec<(*mut u8, usize, Life)> = Vec::new();
    {
        let mut joins: Vec<_> = (0..300).map(|i| a.join(i).expect("join")).collect();
        for round in 0..4 {
            for j in &joins {
                for _ in 0..20 {
                    let s = common::random_size(&mut rng, 50_000);
                    let l = [Life::A, Life::B, Life::C][rng.below(3)];
                    let p = j.malloc(s, l);
                    assert!(!p.is_null());
                    // SAFETY: s bytes.
                    unsafe { fill(p, seed_of(p, s), s) };
                    objs.push((p, s, l));
                }
                // Free some objects of other joins through this one.
                for _ in 0..10 {
                    if objs.is_empty() {
                        break;
                    }
                    let (p, s, l) = objs.swap_remove(rng.below(objs.len()));
                    // SAFETY: live.
                    assert_eq!(unsafe { mismatch(p, seed_of(p, s), s) }, None);
                    unsafe { j.free(p, s, l) };
                }
            }
            // Leave a third of the joins, in a shuffled order.
            for _ in 0..joins.len() / 3 {
                let j = joins.swap_remove(rng.below(joins.len()));
                j.leave();
            }
            let _ = round;
        }
    }
    a.verify_exclusive().unwrap();
    for &(p, s, l) in &objs {
        // SAFETY: live.
        assert_eq!(unsafe { mismatch(p, seed_of(p, s), s) }, None);
        unsafe { a.free(p, s, l) };
    }
    assert!(a.is_empty());
    a.verify_exclusive().unwrap();
}

/// A thread exits, with live objects and a heap of an instance, while another thread drops
/// that instance (the last reference): in either order, nothing crashes or hangs.
#[test]
fn instance_drop_races_thread_exit() {
    let rounds = if CHECKED { 150 } else { 400 };
    for i in 0..rounds {
        let a: Arc<Cohort<Life>> = Arc::new(Cohort::new());
        let p = a.malloc(32, Life::C);
        let a2 = a.clone();
        let t = std::thread::spawn(move || {
            for s in [1usize, 2, 16, 64, 3000, 70_000] {
                assert!(!a2.malloc(s, Life::A).is_null());
            }
            let q = a2.malloc(128, Life::B);
            // SAFETY: live.
            unsafe { a2.free(q, 128, Life::B) };
            drop(a2);
        });
        if i % 2 == 0 {
            std::thread::yield_now();
        }
        // SAFETY: live.
        unsafe { a.free(p, 32, Life::C) };
        drop(a);
        t.join().unwrap();
    }
}

/// A thread keeps running after the instances it has heaps in were dropped, then only
/// frees and allocates in its own long-lived instance and exits (its exit meets the dropped
/// instances' heaps).
#[test]
fn thread_exit_after_its_instances_dropped() {
    use common::threads::Barrier;
    let keep: Arc<Cohort<Life>> = Arc::new(Cohort::new());
    for _ in 0..20 {
        let doomed: Vec<Arc<Cohort<Life>>> = (0..8).map(|_| Arc::new(Cohort::new())).collect();
        let b = Arc::new(Barrier::new(2));
        let (d2, b2, k2) = (doomed.clone(), b.clone(), keep.clone());
        let t = std::thread::spawn(move || {
            let _party = b2.party();
            for a in &d2 {
                assert!(!a.malloc(64, Life::A).is_null());
                assert!(!a.malloc(1, Life::A).is_null());
            }
            let mine = k2.malloc(200, Life::B);
            drop(d2);
            b2.wait(); // main drops the instances
            b2.wait();
            // SAFETY: live.
            unsafe { k2.free(mine, 200, Life::B) };
            let q = k2.malloc(200, Life::B);
            unsafe { k2.free(q, 200, Life::B) };
        });
        let _party = b.party();
        b.wait();
        drop(doomed);
        // Another instance may take a dropped one's place.
        let fresh: Cohort<Life> = Cohort::new();
        let f = fresh.malloc(64, Life::A);
        b.wait();
        t.join().unwrap();
        // SAFETY: live.
        unsafe { fresh.free(f, 64, Life::A) };
        assert!(fresh.is_empty());
    }
    assert!(keep.is_empty());
}

/// While two threads allocate and free patterned objects in classes A and B, another runs
/// stats, for_each_block, compact, verify-free snapshots and release_class of class C (its
/// own objects), and creates and drops other instances: every object keeps its pattern.
#[test]
fn snapshots_and_drops_race_allocation() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let a: Cohort<Life> = Cohort::new();
    let stop = AtomicBool::new(false);
    let iters = if CHECKED { 20_000 } else { 100_000 };
    std::thread::scope(|sc| {
        for t in 0..2u64 {
            let (a, stop) = (&a, &stop);
            sc.spawn(move || {
                // The first worker to end stops the snapshot thread, however it ends (a
                // failed check panics here).
                let _stop = common::StopOnDrop(stop);
                let mut rng = common::Rng::new(100 + t);
                let mut v: Vec<(*mut u8, usize, Life)> = Vec::new();
                for _ in 0..iters {
                    if v.len() < 500 && rng.chance(55) {
                        let s = common::random_size(&mut rng, 70_000);
                        let l = if rng.chance(50) { Life::A } else { Life::B };
                        let p = a.malloc(s, l);
                        assert!(!p.is_null());
                        // SAFETY: s bytes.
                        unsafe { fill(p, seed_of(p, s), s) };
                        v.push((p, s, l));
                    } else if !v.is_empty() {
                        let (p, s, l) = v.swap_remove(rng.below(v.len()));
                        // SAFETY: live.
                        assert_eq!(unsafe { mismatch(p, seed_of(p, s), s) }, None);
                        unsafe { a.free(p, s, l) };
                    }
                }
                for (p, s, l) in v {
                    // SAFETY: live.
                    assert_eq!(unsafe { mismatch(p, seed_of(p, s), s) }, None);
                    unsafe { a.free(p, s, l) };
                }
            });
        }
        let (a, stop) = (&a, &stop);
        sc.spawn(move || {
            let mut rng = common::Rng::new(7);
            while !stop.load(Ordering::Relaxed) {
                let _ = a.stats();
                let mut n = 0;
                a.for_each_block(|b| {
                    assert!(b.stride > 0);
                    n += 1;
                });
                let _ = a.compact();
                for _ in 0..50 {
                    let s = common::random_size(&mut rng, 40_000);
                    assert!(!a.malloc(s, Life::C).is_null());
                }
                // SAFETY: this thread's class-C objects are never used again; the others
                // make nothing in class C.
                let _ = unsafe { a.release_class(Life::C) };
                let other: Cohort<Life> = Cohort::new();
                assert!(!other.malloc(100, Life::A).is_null());
                drop(other);
            }
        });
    });
    assert!(a.is_empty());
}

/// fork while threads allocate in a shared instance and create and drop instances: the
/// child (bounded by an alarm) allocates in the shared instance, a new one, and frees its
/// inherited objects; it must not hang or crash.
#[test]
fn fork_while_instances_come_and_go() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static SHARED: Cohort<Life> = Cohort::new();
    let stop = AtomicBool::new(false);
    let forks = if CHECKED { 40 } else { 100 };
    let mut bad = Vec::new();
    std::thread::scope(|sc| {
        let stop = &stop;
        sc.spawn(move || {
            let mut rng = common::Rng::new(3);
            while !stop.load(Ordering::Relaxed) {
                let a: Cohort<Life> = Cohort::new();
                let s = common::random_size(&mut rng, 100_000);
                let p = a.malloc(s, Life::A);
                let q = SHARED.malloc(s, Life::B);
                // SAFETY: live.
                unsafe {
                    a.free(p, s, Life::A);
                    SHARED.free(q, s, Life::B);
                }
            }
        });
        // Stops the thread however this test ends (a failed fork panics here).
        let stop_thread = common::StopOnDrop(stop);
        for i in 0..forks {
            let mine = SHARED.malloc(24, Life::C);
            // SAFETY: 24 bytes.
            unsafe { fill(mine, seed_of(mine, 24), 24) };
            let r = in_child(|| {
                // SAFETY: inherited live object.
                assert_eq!(unsafe { mismatch(mine, seed_of(mine, 24), 24) }, None);
                unsafe { SHARED.free(mine, 24, Life::C) };
                let fresh: Cohort<Life> = Cohort::new();
                for s in [1usize, 2, 24, 5000, 100_000] {
                    let p = SHARED.malloc(s, Life::A);
                    let q = fresh.malloc(s, Life::A);
                    assert!(!p.is_null() && !q.is_null());
                    // SAFETY: live.
                    unsafe {
                        SHARED.free(p, s, Life::A);
                        fresh.free(q, s, Life::A);
                    }
                }
                assert!(fresh.is_empty());
            });
            if r != Ok(0) {
                bad.push((i, r));
            }
            // SAFETY: live in the parent.
            unsafe { SHARED.free(mine, 24, Life::C) };
        }
        drop(stop_thread);
    });
    assert!(
        bad.is_empty(),
        "children failed (fork, status; Err(14) is the alarm): {bad:?}"
    );
}

/// scope: collections of every size (tiny, small, large) built by the handle on the calling
/// thread and on scoped threads that exit inside; other classes' live objects keep their
/// patterns; afterwards the class is empty and the instance consistent; a live allocation
/// of the class made before (small, tiny or large) makes scope panic before anything.
#[test]
fn scope_releases_only_its_class() {
    use allocator_api2::vec::Vec as AVec;
    let mut a: Cohort<Life> = Cohort::new();
    let w: Vec<(usize, usize, Life)> = WITNESS_SIZES
        .iter()
        .flat_map(|&s| [Life::A, Life::C].map(|l| (s, l)))
        .map(|(s, l)| {
            let p = a.malloc(s, l);
            // SAFETY: s bytes.
            unsafe { fill(p, seed_of(p, s), s) };
            (p as usize, s, l)
        })
        .collect();
    for round in 0..3 {
        let n = a.scope_exclusive(Life::B, |c, h| {
            let mut total = 0;
            // Joined explicitly: verify_exclusive follows (RED-5).
            std::thread::scope(|sc| {
                let handles: Vec<_> = (0..2)
                    .map(|t| {
                        sc.spawn(move || {
                            let mut v: AVec<AVec<u8, _>, _> = AVec::new_in(h);
                            for i in 0..200usize {
                                let len = [1, 2, 7, 100, 5000, 70_000][(i + t) % 6];
                                let mut x = AVec::with_capacity_in(len, h);
                                x.resize(len, i as u8);
                                v.push(x);
                            }
                            std::mem::forget(v); // released with the class
                        })
                    })
                    .collect();
                for j in handles {
                    j.join().unwrap();
                }
            });
            let mut v: AVec<u64, _> = AVec::new_in(h);
            for i in 0..100_000u64 {
                v.push(i);
            }
            total += v.len();
            let raw = c.malloc(3, Life::B);
            assert!(!raw.is_null());
            total
        });
        assert_eq!(n, 100_000, "round {round}");
        a.verify_exclusive().unwrap();
    }
    for &(p, s, _) in &w {
        let p = p as *mut u8;
        // SAFETY: live.
        assert_eq!(unsafe { mismatch(p, seed_of(p, s), s) }, None);
    }
    for s in [1usize, 64, 100_000] {
        let p = a.malloc(s, Life::B);
        let msg = caught(|| a.scope_exclusive(Life::B, |_, _| ()));
        assert!(
            msg.is_some(),
            "scope with a live {s}-byte allocation did not panic"
        );
        // SAFETY: live (the scope changed nothing).
        unsafe { a.free(p, s, Life::B) };
    }
    for &(p, s, l) in &w {
        // SAFETY: live.
        unsafe { a.free(p as *mut u8, s, l) };
    }
    assert!(a.is_empty());
}

/// Release build probe: freeing a block's header address (offset 0 or 8) with the block's
/// own size and class. Checked mode reports it; in release it is documented as
/// undetectable (not a slot), but it must not corrupt other live objects.
#[test]
fn header_address_free_in_release() {
    let a: Cohort<Life> = Cohort::new();
    let w = Witnesses::new(&a, WITNESS_SIZES, &[Life::A, Life::B, Life::C]);
    let p = a.malloc(64, Life::A);
    let base = block_base(p) as *mut u8;
    let r = caught(|| unsafe { a.free(base, 64, Life::A) });
    if r.is_none() {
        eprintln!("release: the header address free was not reported");
    }
    w.check("after the header free");
    let got: Vec<*mut u8> = (0..40_000).map(|_| a.malloc(64, Life::A)).collect();
    assert!(
        !got.contains(&base),
        "the block's header address was handed out as a slot"
    );
}

/// Large allocations aligned above a page keep their alignment through every resize (the
/// Layout realloc, GlobalAlloc's, a handle's grow and shrink), and their contents.
#[test]
fn large_alignment_survives_resizes() {
    use allocator_api2::alloc::Allocator;
    let a: Cohort<Life> = Cohort::new();
    let mut bad = Vec::new();
    for shift in 13..=22 {
        let align = 1usize << shift;
        for &(from, to) in &[
            (100usize, 1usize << 20),
            (20_000, 9 << 20),
            (3 << 20, 64 << 20),
            (64 << 20, 5 << 20),
            (1 << 20, 100),
        ] {
            let l = Layout::from_size_align(from, align).unwrap();
            let p = a.alloc(l, Life::A);
            assert_eq!(p as usize % align, 0);
            // SAFETY: from bytes.
            unsafe { fill(p, seed_of(p, 0), from.min(4096)) };
            // SAFETY: live with l.
            let q = unsafe { a.realloc(p, l, to, Life::A) };
            assert!(!q.is_null());
            if !(q as usize).is_multiple_of(align) {
                bad.push(format!("realloc {from} -> {to} align {align}: {q:?}"));
            }
            // SAFETY: the moved contents.
            assert_eq!(
                unsafe { mismatch(q, seed_of(p, 0), from.min(to).min(4096)) },
                None
            );
            let l2 = Layout::from_size_align(to, align).unwrap();
            // SAFETY: live with l2.
            let r = unsafe { a.realloc(q, l2, from, Life::A) };
            // SAFETY: live with l.
            unsafe { a.dealloc(r, l, Life::A) };
            // GlobalAlloc (its own lifetime class, std's) from `to` back to `from`.
            // SAFETY: a non-zero size; then live with l2; then live with l.
            unsafe {
                let g = GlobalAlloc::alloc(&a, l2);
                assert!(!g.is_null());
                let r = GlobalAlloc::realloc(&a, g, l2, from);
                if !(r as usize).is_multiple_of(align) {
                    bad.push(format!(
                        "GlobalAlloc realloc {to} -> {from} align {align}: {r:?}"
                    ));
                }
                GlobalAlloc::dealloc(&a, r, l);
            }
            // Handle grow.
            let h = a.handle(Life::B);
            let hp = h.allocate(l).unwrap();
            // SAFETY: live with l.
            let g = unsafe {
                h.grow(
                    hp.cast(),
                    l,
                    Layout::from_size_align(from.max(to), align).unwrap(),
                )
            }
            .unwrap();
            if !(g.cast::<u8>().as_ptr() as usize).is_multiple_of(align) {
                bad.push(format!(
                    "handle grow {from} -> {} align {align}",
                    from.max(to)
                ));
            }
            // SAFETY: live.
            unsafe {
                h.deallocate(
                    g.cast(),
                    Layout::from_size_align(from.max(to), align).unwrap(),
                )
            };
        }
    }
    assert!(bad.is_empty(), "misaligned after a resize: {bad:#?}");
    assert!(a.is_empty());
}

// RED-3 (joins with a new hint every time filled the registry): fixed; its regression test
// is tests/join.rs `joins_with_new_hints_reuse_left_heaps`.

/// The same with one hint: the left heap is adopted, the registry never fills.
#[test]
fn joins_left_with_one_hint_reuse_their_heap() {
    let a: Cohort<Life> = Cohort::new();
    let n = if CHECKED { 2000 } else { (1usize << 14) + 100 };
    for i in 0..n {
        let j = a.join(7).unwrap_or_else(|| panic!("join {i} refused"));
        let p = j.malloc(64, Life::A);
        // SAFETY: live.
        unsafe { j.free(p, 64, Life::A) };
        j.leave();
    }
    assert!(a.is_empty());
}

/// Every pair of size classes the Layout forms reach (exact-fit strides, every align): an
/// allocation of one freed with a layout of the other is reported, in every build.
#[test]
fn every_pair_of_layout_classes_wrong_layout_is_reported() {
    let mut a: Cohort<Life> = Cohort::new();
    let w = Witnesses::new(&a, WITNESS_SIZES, &[Life::A, Life::B, Life::C]);
    let mut reps: Vec<(Layout, usize)> = Vec::new();
    for shift in 0..=12 {
        for s in 1..=MAX_SMALL {
            let c = class_of(s, 1 << shift).unwrap();
            if !reps.iter().any(|&(_, rc)| rc == c) {
                reps.push((Layout::from_size_align(s, 1 << shift).unwrap(), c));
            }
        }
    }
    assert!(reps.len() > 100, "{} classes", reps.len());
    for &(l, _) in &reps {
        let p = a.alloc(l, Life::B);
        // SAFETY: l.size() bytes.
        unsafe { fill(p, seed_of(p, l.size()), l.size()) };
        for &(m, _) in reps.iter().filter(|&&(m, _)| m != l) {
            // SAFETY: deliberately the wrong layout.
            assert_reported("wrong layout", p, m.size(), || unsafe {
                a.dealloc(p, m, Life::B)
            });
        }
        // SAFETY: intact; the right layout.
        assert_eq!(unsafe { mismatch(p, seed_of(p, l.size()), l.size()) }, None);
        unsafe { a.dealloc(p, l, Life::B) };
    }
    w.check("after the wrong layouts");
    drop(w);
    a.verify_exclusive().expect("consistent after the misuse");
    assert!(a.is_empty());
}

/// Objects of exited threads freed by several threads at once, while others allocate the
/// same classes (blocks emptied by remote frees are given back and taken again): every
/// object keeps its pattern and the instance ends empty and consistent.
#[test]
fn exited_threads_objects_freed_concurrently_while_others_allocate() {
    let mut a: Cohort<Life> = Cohort::new();
    for round in 0..3u64 {
        let objs: Vec<(usize, usize)> = std::thread::scope(|sc| {
            sc.spawn(|| {
                let mut rng = common::Rng::new(round);
                (0..if CHECKED { 20_000 } else { 60_000 })
                    .map(|_| {
                        let s = [8usize, 64, 200, 1000][rng.below(4)];
                        let p = a.malloc(s, Life::A);
                        // SAFETY: s bytes.
                        unsafe { fill(p, seed_of(p, s), s) };
                        (p as usize, s)
                    })
                    .collect()
            })
            .join()
            .unwrap()
        });
        let chunks: Vec<&[(usize, usize)]> = objs.chunks(objs.len() / 2 + 1).collect();
        // The threads are joined explicitly: the scope alone returns before their exit
        // is done (RED-5), and verify_exclusive follows.
        std::thread::scope(|sc| {
            let mut handles = Vec::new();
            for (t, chunk) in chunks.iter().enumerate() {
                let a = &a;
                handles.push(sc.spawn(move || {
                    let mut rng = common::Rng::new(50 + t as u64);
                    let mut mine = Vec::new();
                    for &(p, s) in chunk.iter() {
                        let p = p as *mut u8;
                        // SAFETY: live.
                        assert_eq!(unsafe { mismatch(p, seed_of(p, s), s) }, None);
                        unsafe { a.free(p, s, Life::A) };
                        if rng.chance(20) {
                            let s = [8usize, 64, 200, 1000][rng.below(4)];
                            let q = a.malloc(s, Life::A);
                            // SAFETY: s bytes.
                            unsafe { fill(q, seed_of(q, s), s) };
                            mine.push((q, s));
                        }
                    }
                    for (q, s) in mine {
                        // SAFETY: live.
                        assert_eq!(unsafe { mismatch(q, seed_of(q, s), s) }, None);
                        unsafe { a.free(q, s, Life::A) };
                    }
                }));
            }
            for h in handles {
                h.join().unwrap();
            }
        });
        assert!(a.is_empty(), "round {round}");
        a.verify_exclusive().unwrap();
    }
}

/// Cross-thread resizes: a thread resizes (in its class and across classes, small and
/// large) objects another thread made, in place and by copy; all contents survive.
#[test]
fn cross_thread_resizes() {
    let a: Cohort<Life> = Cohort::new();
    let sizes = [1usize, 2, 8, 24, 64, 500, 3000, 16384, 20_000, 200_000];
    let objs: Vec<(usize, usize)> = std::thread::scope(|sc| {
        sc.spawn(|| {
            sizes
                .iter()
                .flat_map(|&s| (0..50).map(move |_| s))
                .map(|s| {
                    let p = a.malloc(s, Life::C);
                    // SAFETY: s bytes.
                    unsafe { fill(p, seed_of(p, 0), s) };
                    (p as usize, s)
                })
                .collect()
        })
        .join()
        .unwrap()
    });
    let mut rng = common::Rng::new(11);
    for (p, s) in objs {
        let new = sizes[rng.below(sizes.len())] + rng.below(3);
        // SAFETY: live, made by another thread.
        let q = unsafe { a.recalloc(p as *mut u8, s, new, Life::C) };
        assert!(!q.is_null());
        let keep = s.min(new);
        // SAFETY: the copied prefix, then the zeroed tail.
        assert_eq!(
            unsafe { mismatch(q, seed_of(p as *mut u8, 0), keep) },
            None,
            "{s} -> {new}"
        );
        assert_eq!(
            unsafe { common::nonzero(q.add(keep), new - keep) },
            None,
            "{s} -> {new}"
        );
        unsafe { a.free(q, new, Life::C) };
    }
    assert!(a.is_empty());
}

/// A small reservation: blocks that other live threads emptied (their current blocks,
/// nothing live in them) are theirs until they exit or call `compact` (the documented
/// sizing rule of `with_reservation`): once they have, another thread's allocation succeeds.
// RED-4 (every build): found as "allocation is null while is_empty()" with two idle live
// threads holding four empty current blocks of an 8 MiB reservation. A thread's current
// blocks are used without synchronisation by its fast paths, so no other thread can take
// them: documented as the sizing rule; this test checks the two ways they come back.
#[test]
fn empty_blocks_of_other_live_threads_come_back_when_they_compact_or_exit() {
    use common::threads::Barrier;
    for exit in [false, true] {
        let a: Cohort<Life> = Cohort::with_reservation(8 << 20);
        let b = Barrier::new(3);
        std::thread::scope(|sc| {
            let threads: Vec<_> = [(0usize, Life::A), (1, Life::B)]
                .into_iter()
                .map(|(t, l)| {
                    let (a, b) = (&a, &b);
                    sc.spawn(move || {
                        let _party = b.party();
                        let sizes = [64usize, 128, 256, 512];
                        for &s in &sizes[t * 2..t * 2 + 2] {
                            let p = a.malloc(s, l);
                            assert!(!p.is_null());
                            // SAFETY: live.
                            unsafe { a.free(p, s, l) };
                        }
                        b.wait(); // everything is free; the thread stays alive
                        if !exit {
                            a.compact();
                            b.wait(); // compacted; main allocates
                            b.wait();
                        }
                    })
                })
                .collect();
            let _party = b.party();
            b.wait();
            assert!(a.is_empty());
            if exit {
                // Joined explicitly: a scope's own wait can end before the threads' exit
                // hooks have given their blocks back.
                for t in threads {
                    t.join().unwrap();
                }
                allocate_two_blocks_worth(&a);
            } else {
                b.wait();
                // Panics only after the last wait, so a failure cannot hang the threads.
                let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    allocate_two_blocks_worth(&a)
                }));
                b.wait();
                got.unwrap();
            }
        });
    }
}

/// One 1024 B and one 2048 B allocation of class C in an 8 MiB reservation whose other
/// blocks are empty: both succeed.
fn allocate_two_blocks_worth(a: &Cohort<Life>) {
    let p = a.malloc(1024, Life::C);
    let q = a.malloc(2048, Life::C);
    assert!(!p.is_null() && !q.is_null(), "out of memory: {p:?} {q:?}");
    // SAFETY: live.
    unsafe {
        a.free(p, 1024, Life::C);
        a.free(q, 2048, Life::C);
    }
}

/// The single-thread control of the test above: the same classes used and freed by the
/// allocating thread itself do not cause out of memory (issue 9 item 10's fix).
#[test]
fn own_empty_blocks_do_not_cause_out_of_memory() {
    let a: Cohort<Life> = Cohort::with_reservation(8 << 20);
    for (s, l) in [
        (64usize, Life::A),
        (128, Life::A),
        (256, Life::B),
        (512, Life::B),
    ] {
        let p = a.malloc(s, l);
        assert!(!p.is_null());
        // SAFETY: live.
        unsafe { a.free(p, s, l) };
    }
    let p = a.malloc(1024, Life::C);
    let q = a.malloc(2048, Life::C);
    assert!(!p.is_null() && !q.is_null(), "{p:?} {q:?}");
    // SAFETY: live.
    unsafe {
        a.free(p, 1024, Life::C);
        a.free(q, 2048, Life::C);
    }
}

/// calloc, alloc_zeroed and recalloc read zero whatever was there before: blocks emptied
/// and reused by another class (retained, not given back), slots reused, a large allocation
/// shrunk in place and grown again.
#[test]
fn zeroed_memory_is_zero_after_reuse() {
    let a: Cohort<Life> = Cohort::new();
    let mut bad = Vec::new();
    // Fill blocks of several classes with 0xff, free everything (the blocks stay retained).
    let (rounds, blocks) = if CHECKED { (1, 1) } else { (3, 3) };
    for round in 0..rounds {
        for (s, l) in [
            (64usize, Life::A),
            (1000, Life::B),
            (16, Life::C),
            (1, Life::A),
            (2, Life::B),
        ] {
            let n = blocks * (2 << 20) / s.max(8);
            let v: Vec<*mut u8> = (0..n).map(|_| a.malloc(s, l)).collect();
            for &p in &v {
                // SAFETY: s bytes.
                unsafe { p.write_bytes(0xff, s) };
            }
            for &p in &v {
                // SAFETY: live.
                unsafe { a.free(p, s, l) };
            }
        }
        // Now every zeroing form, in other classes and lifetimes.
        for (s, l) in [
            (24usize, Life::C),
            (64, Life::B),
            (48, Life::A),
            (8, Life::B),
            (2, Life::C),
            (1, Life::B),
            (4096, Life::A),
        ] {
            let n = (blocks - blocks / 3) * (2 << 20) / s.max(8);
            let mut v = Vec::new();
            for i in 0..n {
                let p = if i % 2 == 0 {
                    a.calloc(s, l)
                } else {
                    a.alloc_zeroed(Layout::from_size_align(s, 1).unwrap(), l)
                };
                // SAFETY: s bytes.
                if let Some(at) = unsafe { common::nonzero(p, s) } {
                    bad.push(format!(
                        "round {round}: zeroed {s} B in {l:?}: byte {at} of {p:?}"
                    ));
                    break;
                }
                v.push((p, i % 2 == 0));
            }
            for (p, c) in v {
                // SAFETY: live.
                unsafe {
                    if c {
                        a.free(p, s, l)
                    } else {
                        a.dealloc(p, Layout::from_size_align(s, 1).unwrap(), l)
                    }
                }
            }
        }
    }
    // recalloc within a class over a dirty tail.
    for (small, big) in [
        (10usize, 16usize),
        (17, 24),
        (100, 128),
        (3000, 4096),
        (1, 1),
    ] {
        let p = a.malloc(big, Life::A);
        // SAFETY: big bytes.
        unsafe { p.write_bytes(0xee, big) };
        unsafe { a.free(p, big, Life::A) };
        let q = a.malloc(small, Life::A);
        // SAFETY: q is live, small bytes; grows within its class.
        let r = unsafe { a.recalloc(q, small, big, Life::A) };
        if let Some(at) = unsafe { common::nonzero(r.add(small), big - small) } {
            bad.push(format!(
                "recalloc {small} -> {big}: byte {} dirty",
                small + at
            ));
        }
        unsafe { a.free(r, big, Life::A) };
    }
    // A large allocation shrunk in place, then grown back with recalloc.
    for (big, mid) in [
        (1usize << 20, 100_000usize),
        (300_000, 20_000),
        (5 << 20, 1 << 20),
    ] {
        let p = a.malloc(big, Life::B);
        // SAFETY: big bytes.
        unsafe { p.write_bytes(0xdd, big) };
        let q = unsafe { a.remalloc(p, big, mid, Life::B) };
        let r = unsafe { a.recalloc(q, mid, big, Life::B) };
        if let Some(at) = unsafe { common::nonzero(r.add(mid), big - mid) } {
            bad.push(format!(
                "large recalloc {big} -> {mid} -> {big}: byte {} dirty",
                mid + at
            ));
        }
        unsafe { a.free(r, big, Life::B) };
        // And a large calloc where a large allocation was.
        let p = a.malloc(big, Life::B);
        unsafe { p.write_bytes(0xcc, big) };
        unsafe { a.free(p, big, Life::B) };
        let z = a.calloc(big, Life::B);
        if let Some(at) = unsafe { common::nonzero(z, big) } {
            bad.push(format!("large calloc {big}: byte {at} dirty"));
        }
        unsafe { a.free(z, big, Life::B) };
    }
    assert!(bad.is_empty(), "{bad:#?}");
    assert!(a.is_empty());
}

/// Resizes to and from zero bytes: a resize to 0 frees the old allocation (nothing leaks)
/// and returns a pointer that a size-0 free accepts; a resize from a zero-size allocation
/// allocates.
#[test]
fn resizes_to_and_from_zero() {
    let a: Cohort<Life> = Cohort::new();
    for s in [1usize, 2, 8, 100, 5000, 100_000] {
        let p = a.malloc(s, Life::A);
        // SAFETY: live.
        let z = unsafe { a.remalloc(p, s, 0, Life::A) };
        // SAFETY: a zero-size result.
        unsafe { a.free(z, 0, Life::A) };
        assert!(a.is_empty(), "remalloc {s} -> 0 leaked");
        let l = Layout::from_size_align(s, 8).unwrap();
        let p = a.alloc(l, Life::B);
        let z = unsafe { a.realloc(p, l, 0, Life::B) };
        unsafe { a.dealloc(z, Layout::from_size_align(0, 8).unwrap(), Life::B) };
        assert!(a.is_empty(), "realloc {s} -> 0 leaked");
        let d = a.malloc(0, Life::C);
        assert!(!d.is_null());
        let q = unsafe { a.remalloc(d, 0, s, Life::C) };
        assert!(!q.is_null());
        unsafe { a.free(q, s, Life::C) };
        let d = a.alloc(Layout::from_size_align(0, 64).unwrap(), Life::C);
        let q = unsafe { a.realloc(d, Layout::from_size_align(0, 64).unwrap(), s, Life::C) };
        assert_eq!(q as usize % 64.min(s.next_power_of_two()), 0);
        unsafe { a.dealloc(q, Layout::from_size_align(s, 64).unwrap(), Life::C) };
        assert!(a.is_empty(), "size {s}");
    }
}

/// fork while other threads run compact, stats, for_each_block, release_class (of their
/// own class), large allocations and joins: the child (alarm-bounded) runs each of those
/// itself and must neither hang nor crash.
#[test]
fn fork_during_snapshots_compact_and_release() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static SHARED: Cohort<Life> = Cohort::new();
    let stop = AtomicBool::new(false);
    let forks = if CHECKED { 30 } else { 80 };
    let mut bad = Vec::new();
    std::thread::scope(|sc| {
        let stop = &stop;
        sc.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = SHARED.stats();
                SHARED.for_each_block(|_| {});
                let _ = SHARED.compact();
                let v: Vec<*mut u8> = (0..200)
                    .map(|i| SHARED.malloc(1 + i * 37, Life::C))
                    .collect();
                let _ = v;
                // SAFETY: this thread's class-C objects are never used again; nobody else
                // uses class C.
                let _ = unsafe { SHARED.release_class(Life::C) };
            }
        });
        sc.spawn(move || {
            let mut rng = common::Rng::new(1);
            while !stop.load(Ordering::Relaxed) {
                let s = rng.range(20_000, 3 << 20);
                let p = SHARED.malloc(s, Life::A);
                let j = SHARED.join(rng.below(4)).unwrap();
                let q = j.malloc(300, Life::A);
                // SAFETY: live.
                unsafe {
                    SHARED.free(p, s, Life::A);
                    j.free(q, 300, Life::A);
                }
                j.leave();
            }
        });
        // Stops the threads however this test ends (a failed fork panics here).
        let stop_threads = common::StopOnDrop(stop);
        for i in 0..forks {
            let r = in_child(|| {
                let _ = SHARED.stats();
                SHARED.for_each_block(|_| {});
                let _ = SHARED.compact();
                let p = SHARED.malloc(1 << 20, Life::B);
                let q = SHARED.malloc(1, Life::B);
                let j = SHARED.join(0).expect("join in the child");
                let r = j.malloc(64, Life::B);
                // SAFETY: live.
                unsafe {
                    SHARED.free(p, 1 << 20, Life::B);
                    SHARED.free(q, 1, Life::B);
                    j.free(r, 64, Life::B);
                }
                j.leave();
                let _ = SHARED.compact();
            });
            if r != Ok(0) {
                bad.push((i, r));
            }
        }
        drop(stop_threads);
    });
    assert!(
        bad.is_empty(),
        "children failed (fork, status; Err(14) is the alarm): {bad:?}"
    );
}

/// `MAX_LIFETIME_CLASSES` lifetime classes (the most an instance takes, 251: the header's
/// 8-bit index holds 5 hidden classes beside them), each lifetime index as a u8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Many(u8);

// SAFETY: index() < COUNT for every value.
unsafe impl Lifetime for Many {
    const COUNT: usize = cohort::MAX_LIFETIME_CLASSES;
    fn index(self) -> usize {
        self.0 as usize
    }
}

/// The last lifetime class with the last size classes (the key's largest values): misuse
/// between neighbouring lifetime classes is reported, release and scope of the last class
/// work, and nothing reads as an empty block.
#[test]
fn the_last_lifetime_classes() {
    const LAST: u8 = (cohort::MAX_LIFETIME_CLASSES - 1) as u8;
    let mut a: Cohort<Many> = Cohort::new();
    let reps = class_representatives();
    let mut live = Vec::new();
    for life in [0u8, 1, 127, LAST - 1, LAST] {
        for &(s, _) in reps.iter().rev().take(6).chain(reps.iter().take(3)) {
            let p = a.malloc(s, Many(life));
            assert!(!p.is_null());
            // SAFETY: s bytes.
            unsafe { fill(p, seed_of(p, s), s) };
            let other = Many(if life == LAST { 0 } else { life + 1 });
            assert_reported("neighbour life", p, s, || unsafe { a.free(p, s, other) });
            live.push((p, s, life));
        }
    }
    a.verify_exclusive().unwrap();
    assert!(
        caught(|| a.scope_exclusive(Many(LAST), |_, _| ())).is_some(),
        "scope with live objects of the class must panic"
    );
    for &(p, s, life) in &live {
        // SAFETY: live.
        assert_eq!(unsafe { mismatch(p, seed_of(p, s), s) }, None);
        unsafe { a.free(p, s, Many(life)) };
    }
    assert!(a.is_empty());
    let got = a.scope_exclusive(Many(LAST), |c, _| {
        let p = c.malloc(16384, Many(LAST));
        let q = c.malloc(1, Many(LAST));
        !p.is_null() && !q.is_null()
    });
    assert!(got);
    assert!(a.is_empty());
    a.verify_exclusive().unwrap();
}

/// A join moves between threads (it is Send): made on one thread that then exits, used on
/// others in turn, left on a last one; its objects are freed locally, remotely and after
/// it left; the instance ends empty and consistent.
#[test]
fn joins_move_between_threads() {
    let mut a: Cohort<Life> = Cohort::new();
    let mut objs: Vec<(usize, usize)> = Vec::new();
    std::thread::scope(|sc| {
        let mut j = sc.spawn(|| a.join(3).expect("join")).join().unwrap();
        for t in 0..6u64 {
            let (jj, got, freed) = sc
                .spawn(move || {
                    let mut rng = common::Rng::new(t);
                    let mut got = Vec::new();
                    for _ in 0..500 {
                        let s = common::random_size(&mut rng, 40_000);
                        let p = j.malloc(s, Life::A);
                        // SAFETY: s bytes.
                        unsafe { fill(p, seed_of(p, s), s) };
                        got.push((p as usize, s));
                    }
                    // Free half of them here, through the join.
                    let freed: Vec<(usize, usize)> = got.split_off(got.len() / 2);
                    for &(p, s) in &freed {
                        // SAFETY: live.
                        unsafe { j.free(p as *mut u8, s, Life::A) };
                    }
                    (j, got, freed.len())
                })
                .join()
                .unwrap();
            assert_eq!(freed, 250);
            j = jj;
            // Some of the older objects freed by this thread (remote for the join's heap).
            for (p, s) in objs.drain(..objs.len() / 3) {
                let p = p as *mut u8;
                // SAFETY: live.
                assert_eq!(unsafe { mismatch(p, seed_of(p, s), s) }, None);
                unsafe { a.free(p, s, Life::A) };
            }
            objs.extend(got);
        }
        sc.spawn(move || j.leave()).join().unwrap();
    });
    a.verify_exclusive().unwrap();
    for (p, s) in objs {
        let p = p as *mut u8;
        // SAFETY: live.
        assert_eq!(unsafe { mismatch(p, seed_of(p, s), s) }, None);
        unsafe { a.free(p, s, Life::A) };
    }
    assert!(a.is_empty());
    a.verify_exclusive().unwrap();
}

/// Handle resizes that change the alignment (the Allocator contract allows it): the result
/// honours the new alignment, keeps the contents, and grow_zeroed zeroes past the old size
/// even where the caller wrote up to the returned (usable) length.
#[test]
fn handle_resizes_that_change_the_alignment() {
    use allocator_api2::alloc::Allocator;
    let a: Cohort<Life> = Cohort::new();
    let h = a.handle(Life::C);
    let mut bad = Vec::new();
    let sizes = [1usize, 8, 24, 100, 3000, 16384, 20_000, 100_000];
    for &s in &sizes {
        for &t in &sizes {
            for &(oa, na) in &[
                (1usize, 4096usize),
                (8, 1 << 16),
                (4096, 8),
                (1 << 16, 1),
                (16, 32),
            ] {
                let old = Layout::from_size_align(s, oa).unwrap();
                let new = Layout::from_size_align(t, na).unwrap();
                let p = h.allocate(old).unwrap();
                let len = p.len();
                let pp = p.cast::<u8>().as_ptr();
                // SAFETY: the returned length is ours.
                unsafe { pp.write_bytes(0xab, len) };
                // SAFETY: live with old.
                let q = unsafe {
                    if t >= s {
                        h.grow_zeroed(p.cast(), old, new)
                    } else {
                        h.shrink(p.cast(), old, new)
                    }
                }
                .unwrap();
                let qp = q.cast::<u8>().as_ptr();
                if !(qp as usize).is_multiple_of(na) {
                    bad.push(format!("{old:?} -> {new:?}: {qp:?} misaligned"));
                }
                let keep = s.min(t);
                // SAFETY: keep bytes copied.
                if (0..keep).any(|i| unsafe { qp.add(i).read() } != 0xab) {
                    bad.push(format!("{old:?} -> {new:?}: contents lost"));
                }
                if t > s {
                    // SAFETY: grown part.
                    if let Some(at) = unsafe { common::nonzero(qp.add(s), t - s) } {
                        bad.push(format!("{old:?} -> {new:?}: byte {} not zero", s + at));
                    }
                }
                if q.len() < t {
                    bad.push(format!("{old:?} -> {new:?}: length {}", q.len()));
                }
                // SAFETY: live with new.
                unsafe { h.deallocate(q.cast(), new) };
            }
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
    assert!(a.is_empty());
}

/// Hostile reservations: zero, one byte, not a block multiple, the whole address space.
/// Small allocations are null (or work), never a panic; frees of what was given work; the
/// instance stays consistent.
#[test]
fn hostile_reservations() {
    for r in [
        0usize,
        1,
        4095,
        (2 << 20) + 1,
        (3 << 20) - 1,
        usize::MAX,
        usize::MAX / 2,
        1 << 47,
    ] {
        let mut a: Cohort<Life> = Cohort::with_reservation(r);
        let mut live = Vec::new();
        for s in [1usize, 2, 64, 16384, 100_000] {
            let p = a.malloc(s, Life::A);
            if !p.is_null() {
                // SAFETY: s bytes.
                unsafe { fill(p, seed_of(p, s), s) };
                live.push((p, s));
            }
        }
        a.verify_exclusive()
            .unwrap_or_else(|e| panic!("reservation {r}: {e:?}"));
        for (p, s) in live {
            // SAFETY: live.
            assert_eq!(unsafe { mismatch(p, seed_of(p, s), s) }, None);
            unsafe { a.free(p, s, Life::A) };
        }
        assert!(a.is_empty());
        let _ = a.compact();
        let _ = a.stats();
    }
}

/// `verify_exclusive` right after a `std::thread::scope` whose threads used the instance:
/// the scope returns once the closures finish, before the threads' exit (their heaps'
/// teardown, which gives blocks back) is done, so `&mut self` does not exclude the exiting
/// threads. verify must still be right (Ok, never a panic or a spurious error).
// RED-5 (seen in debug, every build by reading): verify_exclusive ran concurrently with an
// exiting thread's teardown and panicked "index out of bounds: the len is 163 but the index
// is 255" at block.rs `Header::geometry`, from `is_slot` in verify's list walk
// (check_block re-reads the header's class after the snapshot; the block was given back
// meanwhile). First seen in exited_threads_objects_freed_concurrently_while_others_allocate.
// Fixed: verify walks under the pool lock, which an exit takes before it touches its heap,
// and reads a block's geometry once.
#[test]
fn verify_exclusive_after_a_scope_of_threads() {
    let mut a: Cohort<Life> = Cohort::new();
    let reps = class_representatives();
    let rounds = if CHECKED { 200 } else { 1000 };
    let mut failures = Vec::new();
    for round in 0..rounds {
        std::thread::scope(|sc| {
            for t in 0..2 {
                let (a, reps) = (&a, &reps);
                sc.spawn(move || {
                    // Many blocks, all emptied: the exit gives them back.
                    let v: Vec<(*mut u8, usize)> = reps
                        .iter()
                        .skip(t)
                        .step_by(2)
                        .flat_map(|&(s, _)| (0..3).map(move |_| s))
                        .map(|s| (a.malloc(s, Life::A), s))
                        .collect();
                    for (p, s) in v {
                        // SAFETY: live.
                        unsafe { a.free(p, s, Life::A) };
                    }
                });
            }
        });
        match catch_unwind(AssertUnwindSafe(|| a.verify_exclusive())) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => failures.push(format!("round {round}: {e:?}")),
            Err(_) => failures.push(format!("round {round}: verify panicked")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
