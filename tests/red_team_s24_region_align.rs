//! Red-team attacks on alignments above a unit (2 MiB) in regions that other processes map
//! at addresses of their own (named regions, caller memory attached with `attach_in`).
//! Every view of such a region lies at a base aligned to 2 MiB only (design.md: "each
//! process maps the whole region at a base aligned to `BLOCK_SIZE` of its kernel's
//! choosing", and `ptr = base + off`), so an allocation aligned to 4 MiB in one view is
//! aligned to 2 MiB only in a view whose base is 2 MiB past a multiple of 4 MiB: no offset
//! keeps such an alignment in every process, and the region must refuse it (null; `None`
//! from `SharedCohort::new_in`), as it refuses a size no allocation can have. Regions
//! every user maps at one address (private ones, a shared-anonymous one its fork children
//! inherit, caller memory mapped privately) serve it, aligned.

mod common;

use cohort::allocator_api2::alloc::Allocator;
use cohort::{Cohort, CreateOptions, Place, RegionOptions, SharedCohort};
use common::memory::{map_aligned, memfd, private_aligned};
use core::alloc::Layout;
use core::ptr::NonNull;

cohort::lifetime_classes! { enum Life { A } }

const MIB: usize = 1 << 20;

/// A value aligned past a unit.
#[repr(C, align(4194304))]
struct Over4M([u8; 64]);

/// A value aligned to a unit exactly.
#[repr(C, align(2097152))]
struct Unit2M([u8; 8]);

fn path(tag: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("cohort-red24-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// What is wrong with `a`'s answers to requests aligned past a unit, when it must refuse
/// them (`refuses`) or serve them aligned.
fn past_a_unit(a: &Cohort<Life>, kind: &str, refuses: bool) -> Vec<String> {
    let mut wrong = Vec::new();
    for align in [4 * MIB, 8 * MIB, 64 * MIB] {
        for size in [64usize, 3 * MIB] {
            let layout = Layout::from_size_align(size, align).unwrap();
            let p = a.alloc(layout, Life::A);
            match (p.is_null(), refuses) {
                (false, true) => wrong.push(format!("{kind}: alloc({layout:?}) served {p:p}")),
                (true, false) => wrong.push(format!("{kind}: alloc({layout:?}) refused")),
                (false, false) if !(p as usize).is_multiple_of(align) => {
                    wrong.push(format!("{kind}: alloc({layout:?}): {p:p} misaligned"))
                }
                _ => {}
            }
            if !p.is_null() {
                // SAFETY: live with `layout`.
                unsafe { a.dealloc(p, layout, Life::A) };
            }
        }
    }
    // A large allocation grown in place to an alignment past a unit: refused too (the
    // run's address may happen to be aligned in this view).
    let h = a.handle(Life::A);
    let old = Layout::from_size_align(3 * MIB, 4096).unwrap();
    let runs: Vec<NonNull<u8>> = (0..2)
        .map(|_| h.allocate(old).expect("room").cast())
        .collect();
    let new = Layout::from_size_align(3 * MIB + 1, 4 * MIB).unwrap();
    for p in runs {
        let aligned_here = (p.as_ptr() as usize).is_multiple_of(4 * MIB);
        // SAFETY: live with `old`; `new` is no smaller.
        match unsafe { h.grow(p, old, new) } {
            Ok(q) if refuses => {
                wrong.push(format!(
                    "{kind}: grow of {p:p} (aligned here: {aligned_here}) to {new:?} served {:p}",
                    q.cast::<u8>().as_ptr()
                ));
                // SAFETY: live with `new`.
                unsafe { h.deallocate(q.cast(), new) };
            }
            Ok(q) => {
                if !(q.cast::<u8>().as_ptr() as usize).is_multiple_of(4 * MIB) {
                    wrong.push(format!("{kind}: grow to {new:?}: misaligned"));
                }
                // SAFETY: live with `new`.
                unsafe { h.deallocate(q.cast(), new) };
            }
            Err(_) => {
                if !refuses {
                    wrong.push(format!("{kind}: grow to {new:?} refused"));
                }
                // SAFETY: a failed grow leaves p live with `old`.
                unsafe { h.deallocate(p, old) };
            }
        }
    }
    // Up to a unit, every region serves, aligned.
    for align in [8192usize, MIB, 2 * MIB] {
        let layout = Layout::from_size_align(100, align).unwrap();
        let p = a.alloc(layout, Life::A);
        if p.is_null() || !(p as usize).is_multiple_of(align) {
            wrong.push(format!("{kind}: alloc({layout:?}): {p:p}"));
        } else {
            // SAFETY: live with `layout`.
            unsafe { a.dealloc(p, layout, Life::A) };
        }
    }
    // SAFETY: no other thread uses `a`.
    if let Err(e) = unsafe { a.verify() } {
        wrong.push(format!("{kind}: verify: {e}"));
    }
    if !a.is_empty() {
        wrong.push(format!("{kind}: not empty: {}", a.stats()));
    }
    wrong
}

/// RED-150: a named region served 4 MiB alignments by the address of this process's view,
/// whose base is aligned to 2 MiB only: `new_in` of a 4 MiB-aligned type returned an offset
/// that `ptr` (so `get`, `free_in`, `set_root`) of the same process refused, with "offset
/// 0xa00000 is not that of a 4194304-byte, 4194304-aligned value in this region's blocks",
/// whenever the view's base was not 4 MiB aligned; and another process maps any such
/// allocation misaligned.
#[test]
fn a_named_region_refuses_alignments_past_a_unit() {
    // A 4 MiB-aligned value passed by value needs stack frames aligned to it (a debug
    // build keeps them): a thread with room for a few.
    std::thread::Builder::new()
        .stack_size(64 * MIB)
        .spawn(named_region_past_a_unit)
        .unwrap()
        .join()
        .unwrap();
}

fn named_region_past_a_unit() {
    let p = path("align");
    let r = SharedCohort::<Life>::create(Place::File(&p), CreateOptions::new(64 * MIB))
        .expect("create");
    let mut wrong = past_a_unit(&r, "named region", true);
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        r.new_in(Over4M([3; 64]), Life::A)
            .map(|off| (off, r.ptr(off)))
    }));
    match got {
        Ok(None) => {}
        Ok(Some((off, q))) => wrong.push(format!(
            "new_in of a 4 MiB-aligned value: offset {:#x} at {q:p}",
            off.get()
        )),
        Err(_) => wrong.push("new_in of a 4 MiB-aligned value: its offset refused by ptr".into()),
    }
    // A unit's alignment is kept by every view: served, and its offset is accepted.
    match r.new_in(Unit2M([2; 8]), Life::A) {
        None => wrong.push("new_in of a 2 MiB-aligned value: None".into()),
        Some(off) => {
            let q = r.ptr(off);
            if !(q as usize).is_multiple_of(2 * MIB) || off.get() % (2 * MIB) as u64 != 0 {
                wrong.push(format!(
                    "2 MiB-aligned value at {q:p}, offset {:#x}",
                    off.get()
                ));
            }
            // SAFETY: made by new_in above in class A, freed once.
            unsafe { r.free_in(off, Life::A) };
        }
    }
    let _ = r.leave();
    let _ = std::fs::remove_file(&p);
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// RED-150 in caller memory: shared memory formatted at a base 2 MiB past a multiple of
/// 4 MiB (where another process may attach it at a multiple of 4 MiB) refuses alignments
/// past a unit; memory mapped privately (no other process maps it) serves them.
#[test]
fn caller_memory_refuses_alignments_past_a_unit_unless_private() {
    let f = Cohort::<Life>::footprint(64 * MIB).expect("fits");
    let fd = memfd(f.bytes + 4 * MIB);
    let mem = map_aligned(fd, f.bytes + 4 * MIB);
    // 2 MiB past a multiple of 4 MiB.
    let base = if (mem as usize).is_multiple_of(4 * MIB) {
        // SAFETY: within the mapping.
        unsafe { mem.add(2 * MIB) }
    } else {
        mem
    };
    // SAFETY: the mapping is ours, unused, `f.bytes` long from `base`.
    let shared = unsafe { Cohort::<Life>::format_in(base, f.bytes, &RegionOptions::new(64 * MIB)) }
        .expect("format");
    let mut wrong = past_a_unit(&shared, "shared caller memory", true);
    drop(shared);
    let private = private_aligned(f.bytes);
    // SAFETY: as above.
    let mine =
        unsafe { Cohort::<Life>::format_in(private, f.bytes, &RegionOptions::new(64 * MIB)) }
            .expect("format");
    wrong.extend(past_a_unit(&mine, "private caller memory", false));
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Regions every user maps at one address keep serving alignments past a unit.
#[test]
fn regions_at_one_address_serve_alignments_past_a_unit() {
    let mut wrong = Vec::new();
    let options = RegionOptions::new(96 * MIB);
    wrong.extend(past_a_unit(
        &Cohort::with_reservation(96 * MIB),
        "reservation",
        false,
    ));
    wrong.extend(past_a_unit(
        &Cohort::with_options(&options).unwrap(),
        "fixed region",
        false,
    ));
    let shared = Cohort::shared_anonymous_with(&options).unwrap();
    wrong.extend(past_a_unit(&shared, "shared anonymous", false));
    assert!(wrong.is_empty(), "{wrong:#?}");
}
