//! Red-team guards of session 7 on shared regions: misuse across processes (wrong size,
//! wrong class, interior pointers, double frees, pointers of another region) is reported as
//! in a private instance, and a region that runs out of memory answers null, never a crash.

mod red_team_common;

use cohort::{Cohort, Misuse};
use core::alloc::Layout;
use red_team_common::*;

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

/// Whether `r` is a reported misuse naming `p`.
fn names(r: &Result<(), Misuse>, p: *mut u8) -> bool {
    matches!(r, Err(m) if m.to_string().contains(&format!("{p:p}")))
}

/// A process frees another's allocations with a wrong size, a wrong lifetime class, an
/// interior pointer (checked builds) and twice: each is reported and changes nothing; the
/// right free works.
#[test]
fn misuse_of_another_processs_allocation_is_reported() {
    isolated(60, |report| {
        let a = Cohort::<Life>::shared_anonymous(32 << 20).expect("a shared region");
        let p = a.malloc(64, Life::Short);
        let q = a.malloc(64, Life::Short);
        assert!(!p.is_null() && !q.is_null());
        let child = in_child(20, || {
            let mut wrong = Vec::new();
            // SAFETY: each call is a misuse that must be reported and change nothing, or
            // the right free of a live allocation.
            unsafe {
                let cases: [(&str, *mut u8, usize, Life); 3] = [
                    ("size 128", p, 128, Life::Short),
                    ("class Long", p, 64, Life::Long),
                    ("size 4096", p, 4096, Life::Short),
                ];
                for (what, at, size, life) in cases {
                    let r = a.try_free(at, size, life);
                    if !names(&r, at) {
                        wrong.push(format!("{what}: {r:?}"));
                    }
                }
                if cfg!(debug_assertions) {
                    let r = a.try_free(p.add(8), 64, Life::Short);
                    if r.is_ok() {
                        wrong.push("interior pointer: Ok".into());
                    }
                }
                if let Err(e) = a.try_free(p, 64, Life::Short) {
                    wrong.push(format!("the right free: {e}"));
                }
                if cfg!(debug_assertions) {
                    let r = a.try_free(p, 64, Life::Short);
                    if !names(&r, p) {
                        wrong.push(format!("a double free: {r:?}"));
                    }
                }
            }
            assert!(wrong.is_empty(), "{wrong:?}");
        });
        if wait(child) != Ok(0) {
            report.fail("a misuse across processes was not reported (the child's panic above)");
        }
        // SAFETY: q is live; p was freed once by the child.
        unsafe { a.free(q, 64, Life::Short) };
        // SAFETY: the only process using the region now.
        if let Err(e) = unsafe { a.verify() } {
            report.fail(&format!("verify after the misuses: {e}"));
        }
        if !a.is_empty() {
            report.fail(&format!("not empty after every free: {}", a.stats()));
        }
    });
}

/// A pointer of one region freed into another region of the same process (or into a
/// private instance) is foreign: reported.
#[test]
fn a_pointer_of_another_region_is_foreign() {
    let a = Cohort::<Life>::shared_anonymous(8 << 20).expect("region a");
    let b = Cohort::<Life>::shared_anonymous(8 << 20).expect("region b");
    let private = Cohort::<Life>::new();
    let p = a.malloc(64, Life::Short);
    assert!(!p.is_null());
    // SAFETY: misuses that must be reported and change nothing.
    unsafe {
        let r = b.try_free(p, 64, Life::Short);
        assert!(names(&r, p), "region b freeing region a's pointer: {r:?}");
        let r = private.try_free(p, 64, Life::Short);
        assert!(
            names(&r, p),
            "a private instance freeing region a's pointer: {r:?}"
        );
        a.free(p, 64, Life::Short);
    }
    assert!(a.is_empty() && b.is_empty());
}

/// Fills a small region with one size until it answers null (never a crash), frees it all,
/// and does it again: the memory comes back.
fn fill_and_empty(a: &Cohort<Life>, size: usize, life: Life) -> usize {
    let mut live = Vec::new();
    loop {
        let p = a.malloc(size, life);
        if p.is_null() {
            break;
        }
        // SAFETY: fresh, `size` bytes.
        unsafe { p.write_bytes(0x5a, size) };
        live.push(p);
        assert!(
            live.len() < 1 << 24,
            "a 4 MiB region never ran out of {size}-byte slots"
        );
    }
    let n = live.len();
    for p in live {
        // SAFETY: allocated above, freed once.
        unsafe { a.free(p, size, life) };
    }
    n
}

/// A region that runs out of memory answers null for every size, alignment and form, and
/// works again when freed; requests no allocation can have (huge sizes, alignments up to
/// 1 GiB) are null too and keep the old allocation; growth past the largest size class is
/// served by the region's units or null, and keeps the old bytes.
#[test]
fn a_full_region_answers_null_and_recovers() {
    let a = Cohort::<Life>::shared_anonymous(4 << 20).expect("a shared region");
    for size in [8usize, 64, 1000, 4096, 16 << 10] {
        let first = fill_and_empty(&a, size, Life::Short);
        assert!(first > 0, "no {size}-byte allocation at all");
        let second = fill_and_empty(&a, size, Life::Long);
        assert!(second >= first / 2, "size {size}: {first} then {second}");
        assert!(a.is_empty(), "size {size}: {}", a.stats());
    }
    // Full of 16 KiB allocations: no block is left for the tiny classes either.
    let mut big = Vec::new();
    loop {
        let p = a.malloc(16 << 10, Life::Long);
        if p.is_null() {
            break;
        }
        big.push(p);
    }
    for size in [1usize, 2, 8] {
        let p = a.malloc(size, Life::Short);
        assert!(
            p.is_null(),
            "a {size}-byte allocation in a region full of 16 KiB ones"
        );
    }
    for p in big {
        // SAFETY: allocated above, freed once.
        unsafe { a.free(p, 16 << 10, Life::Long) };
    }
    for size in [1usize, 2] {
        let p = a.malloc(size, Life::Short);
        assert!(
            !p.is_null(),
            "a {size}-byte allocation once the region is free again"
        );
        // SAFETY: allocated above.
        unsafe { a.free(p, size, Life::Short) };
    }
    let p = a.malloc(100, Life::Short);
    assert!(!p.is_null());
    // SAFETY: live, 100 bytes.
    unsafe { p.write_bytes(7, 100) };
    for size in [usize::MAX, usize::MAX / 2, isize::MAX as usize, 1 << 40] {
        assert!(a.malloc(size, Life::Short).is_null(), "malloc({size})");
        assert!(a.calloc(size, Life::Short).is_null(), "calloc({size})");
        // SAFETY: p is live with 100 bytes.
        let r = unsafe { a.remalloc(p, 100, size, Life::Short) };
        assert!(r.is_null(), "remalloc(100 -> {size})");
    }
    // Growth past the largest size class: a run of the region's units since regions serve
    // large allocations (null only when no unit is free); the old allocation is kept either
    // way.
    // SAFETY: p is live with 100 bytes.
    let r = unsafe { a.remalloc(p, 100, 100_000, Life::Short) };
    let p = if r.is_null() {
        p
    } else {
        // SAFETY: r is live with 100 000 bytes, its first 100 the old ones.
        unsafe {
            assert!((0..100).all(|i| *r.add(i) == 7), "the grown copy");
            r.add(100).write_bytes(9, 100_000 - 100);
            a.remalloc(r, 100_000, 100, Life::Short)
        }
    };
    assert!(!p.is_null(), "shrinking back to 100 bytes");
    for shift in 13..=30 {
        let l = Layout::from_size_align(64, 1 << shift).unwrap();
        let q = a.alloc(l, Life::Short);
        if !q.is_null() {
            assert_eq!(q as usize % (1 << shift), 0, "align {}", 1usize << shift);
            // SAFETY: allocated above.
            unsafe { a.dealloc(q, l, Life::Short) };
        }
    }
    // SAFETY: p is still live: every failed resize kept it.
    unsafe {
        assert!(
            (0..100).all(|i| *p.add(i) == 7),
            "a failed resize changed the old bytes"
        );
        a.free(p, 100, Life::Short);
    }
    // SAFETY: nobody else uses the region.
    unsafe { a.verify() }.expect("verifies");
    assert!(a.is_empty());
}

/// Shared-anonymous regions of every size from 0 to `usize::MAX`: a region (rounded to at
/// least one block) that works, or `None`; never a crash, a hang or an abort.
#[test]
fn shared_anonymous_regions_of_any_size_are_some_and_work_or_none() {
    for bytes in [0usize, 1, 1 << 40, 1 << 46, usize::MAX / 2, usize::MAX] {
        let a = Cohort::<Life>::shared_anonymous(bytes);
        assert!(a.is_some() || bytes > 1 << 30, "{bytes:#x}: none");
        assert!(a.is_none() || bytes < 1 << 56, "{bytes:#x}: a region");
        if let Some(a) = a {
            let p = a.malloc(64, Life::Short);
            assert!(!p.is_null(), "{bytes:#x}: no 64 bytes");
            // SAFETY: allocated above.
            unsafe { a.free(p, 64, Life::Short) };
        }
    }
}

/// Offsets name a place, not a region: a pointer of another region has no offset in this
/// one (`offset_of` is `None`), and an offset past this region's blocks, misaligned for its
/// type or in the header and state is refused by `ptr` with a message, never turned into
/// an address outside the blocks.
#[test]
fn offsets_of_another_region_or_out_of_bounds_are_refused() {
    use cohort::{CreateOptions, Off, Place, SharedCohort};
    let names: Vec<String> = (0..2)
        .map(|i| format!("/cohort-red7-off-{i}-{}", std::process::id()))
        .collect();
    let regions: Vec<SharedCohort<Life>> = names
        .iter()
        .map(|n| {
            let _ = SharedCohort::<Life>::remove(Place::SharedMemory(n));
            SharedCohort::create(Place::SharedMemory(n), CreateOptions::new(64 << 20))
                .expect("create")
        })
        .collect();
    let (a, b) = (&regions[0], &regions[1]);
    let p = a.malloc(64, Life::Short);
    let off = a.offset_of(p).expect("in a");
    assert_eq!(
        b.offset_of(p),
        None,
        "a pointer of region a has an offset in region b"
    );
    assert_eq!(a.offset_of(a.ptr(off)), Some(off));
    let cap = a.capacity() as u64;
    for bad in [8u64, 4096, cap - 4, cap, u64::MAX - 7, off.get() + 1] {
        let at = Off::<u64>::new(bad).unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| a.ptr(at)));
        assert!(caught.is_err(), "ptr({bad:#x}) gave an address");
    }
    // SAFETY: allocated above.
    unsafe { a.free(p, 64, Life::Short) };
    for (r, n) in regions.into_iter().zip(&names) {
        assert!(r.is_empty());
        r.destroy().unwrap_or_else(|e| panic!("{n}: {e}"));
    }
}

/// A process resizes another's allocations (in place within a size class, to other
/// classes, to 1 and 2 bytes and back, zeroed growth): the contents move with them, and the
/// first process frees the results.
#[test]
fn resizes_of_another_processs_allocations_keep_their_bytes() {
    const SIZES: [usize; 6] = [1, 2, 20, 64, 3000, 16 << 10];
    isolated(60, |report| {
        let a = Cohort::<Life>::shared_anonymous(64 << 20).expect("a shared region");
        let objs: Vec<*mut u8> = SIZES
            .iter()
            .map(|&s| {
                let p = a.malloc(s, Life::Short);
                assert!(!p.is_null());
                // SAFETY: fresh, s bytes.
                unsafe { p.write_bytes(s as u8, s) };
                p
            })
            .collect();
        let out = red_team_common::shared_words(SIZES.len());
        let child = in_child_reporting(30, report, || {
            for (i, (&p, &s)) in objs.iter().zip(&SIZES).enumerate() {
                let new = SIZES[(i + 2) % SIZES.len()];
                // SAFETY: the parent's live allocation of s bytes, class Short.
                let q = unsafe { a.recalloc(p, s, new, Life::Short) };
                assert!(!q.is_null(), "recalloc {s} -> {new}");
                // SAFETY: q holds `new` bytes.
                let bytes = unsafe { std::slice::from_raw_parts(q, new) };
                let kept = s.min(new);
                assert!(
                    bytes[..kept].iter().all(|&b| b == s as u8),
                    "{s} -> {new}: bytes lost"
                );
                assert!(
                    bytes[kept..].iter().all(|&b| b == 0),
                    "{s} -> {new}: growth not zero"
                );
                out[i].store(q as u64, std::sync::atomic::Ordering::Relaxed);
            }
        });
        wait_ok(child, report, "the resizing process");
        for (i, w) in out.iter().enumerate() {
            let new = SIZES[(i + 2) % SIZES.len()];
            let q = w.load(std::sync::atomic::Ordering::Relaxed) as *mut u8;
            // SAFETY: the child's result, live, `new` bytes of class Short.
            unsafe { a.free(q, new, Life::Short) };
        }
        a.reap_dead_processes();
        // SAFETY: the only process using the region now.
        if let Err(e) = unsafe { a.verify() } {
            report.fail(&format!("verify: {e}"));
        }
        if !a.is_empty() {
            report.fail(&format!("not empty: {}", a.stats()));
        }
    });
}

/// `stats` and `is_empty` from a process that never allocated count another process's live
/// objects exactly (small and tiny, after local and remote frees), and `is_empty` is true
/// exactly when everything is freed.
#[test]
fn stats_from_another_process_count_live_objects_exactly() {
    isolated(60, |report| {
        let a = Cohort::<Life>::shared_anonymous(64 << 20).expect("a shared region");
        let flags = red_team_common::shared_words(3);
        let owner = in_child_reporting(30, report, || {
            let mut live = Vec::new();
            for i in 0..3000usize {
                let size = [1usize, 2, 24, 64, 500][i % 5];
                let p = a.malloc(size, if i % 2 == 0 { Life::Short } else { Life::Long });
                assert!(!p.is_null());
                live.push((p, size, i % 2 == 0));
            }
            // Free every third, locally.
            let mut kept = Vec::new();
            for (i, o) in live.into_iter().enumerate() {
                if i % 3 == 0 {
                    let life = if o.2 { Life::Short } else { Life::Long };
                    // SAFETY: allocated above, freed once.
                    unsafe { a.free(o.0, o.1, life) };
                } else {
                    kept.push(o);
                }
            }
            flags[0].store(kept.len() as u64, std::sync::atomic::Ordering::Release);
            while flags[1].load(std::sync::atomic::Ordering::Acquire) == 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            for (p, size, short) in kept {
                let life = if short { Life::Short } else { Life::Long };
                // SAFETY: allocated above, freed once.
                unsafe { a.free(p, size, life) };
            }
            flags[2].store(1, std::sync::atomic::Ordering::Release);
            loop {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        });
        red_team_common::until(&flags[0], 0, owner, report, "the owner");
        let kept = flags[0].load(std::sync::atomic::Ordering::Acquire) as usize;
        let counter = in_child_reporting(10, report, || {
            let s = a.stats();
            // The driver's three flag words are not in the region: only the owner's.
            assert_eq!(
                s.small.live, kept,
                "live objects seen from another process: {s}"
            );
            assert!(!a.is_empty());
        });
        wait_ok(
            counter,
            report,
            "a counting process while the owner's objects live",
        );
        flags[1].store(1, std::sync::atomic::Ordering::Release);
        red_team_common::until(&flags[2], 0, owner, report, "the owner's frees");
        let counter = in_child_reporting(10, report, || {
            let s = a.stats();
            assert_eq!(s.small.live, 0, "after every free: {s}");
            assert!(a.is_empty(), "after every free: {s}");
        });
        wait_ok(
            counter,
            report,
            "a counting process after the owner freed all",
        );
        red_team_common::kill9(owner);
    });
}
