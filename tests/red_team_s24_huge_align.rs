//! Red-team attacks on requests with huge alignments and sizes near the address space's
//! end through every allocating call: each returns null or an allocation of its layout,
//! never a panic, a fault or a misaligned block, and the instance then verifies and is
//! empty.

use cohort::allocator_api2::alloc::Allocator;
use cohort::{Cohort, RegionOptions};
use core::alloc::{GlobalAlloc, Layout};

cohort::lifetime_classes! { enum Life { A } }

fn instance(kind: &str) -> Cohort<Life> {
    match kind {
        "private" => Cohort::new(),
        "reservation" => Cohort::with_reservation(256 << 20),
        "region" => Cohort::with_options(&RegionOptions::new(256 << 20)).expect("region"),
        _ => Cohort::shared_anonymous_with(&RegionOptions::new(256 << 20)).expect("shared"),
    }
}

#[test]
fn huge_alignments_give_null_or_an_aligned_allocation() {
    for kind in ["private", "reservation", "region", "shared"] {
        huge_alignments_in(kind);
    }
}

fn huge_alignments_in(kind: &str) {
    let a = instance(kind);
    let h = a.handle(Life::A);
    let mut wrong = Vec::new();
    let mut served = 0;
    for shift in [
        12u32, 16, 20, 21, 22, 23, 25, 28, 30, 32, 36, 40, 44, 48, 52, 56, 60, 62,
    ] {
        let align = 1usize << shift;
        for size in [
            1usize,
            8,
            100,
            4096,
            40_000,
            3 << 20,
            align,
            align.wrapping_add(1),
            (isize::MAX as usize) / 2,
            isize::MAX as usize - align + 1,
        ] {
            let Ok(layout) = Layout::from_size_align(size, align) else {
                continue;
            };
            for how in ["alloc", "alloc_zeroed", "global", "handle", "try_alloc"] {
                let p = match how {
                    "alloc" => a.alloc(layout, Life::A),
                    "alloc_zeroed" => a.alloc_zeroed(layout, Life::A),
                    // SAFETY: a non-zero size.
                    "global" => unsafe { GlobalAlloc::alloc(&a, layout) },
                    "handle" => h
                        .allocate(layout)
                        .map_or(core::ptr::null_mut(), |p| p.cast::<u8>().as_ptr()),
                    _ => a.try_alloc(layout, Life::A),
                };
                if p.is_null() {
                    continue;
                }
                served += 1;
                if !(p as usize).is_multiple_of(align) {
                    wrong.push(format!("{kind}: {how} {layout:?}: {p:p}"));
                }
                // SAFETY: the allocation's first and last byte.
                unsafe {
                    p.write(1);
                    p.add(size - 1).write(2);
                }
                // SAFETY: live with `layout`, freed once through the matching call.
                unsafe {
                    match how {
                        "global" => GlobalAlloc::dealloc(&a, p, layout),
                        "handle" => h.deallocate(core::ptr::NonNull::new(p).unwrap(), layout),
                        _ => a.dealloc(p, layout, Life::A),
                    }
                }
            }
        }
    }
    eprintln!("{kind}: {served} served");
    assert!(wrong.is_empty(), "{wrong:#?}");
    // SAFETY: no other thread uses `a`.
    let v = unsafe { a.verify() };
    assert!(v.is_ok(), "{v:?}");
    assert!(a.is_empty(), "{}", a.stats());
}
