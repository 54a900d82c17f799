use crate::class::{CLASSES, GRANULE, MAX_MEDIUM, MAX_SMALL};
use crate::{Cohort, Problem};
use core::alloc::{GlobalAlloc, Layout};

crate::lifetime_classes! {
    enum Life { A, B }
}

#[test]
fn every_class_medium_and_large_size_is_found_and_freed_without_its_size() {
    let a = Cohort::<Life>::new();
    let mut sizes: Vec<usize> = CLASSES.iter().map(|c| c.stride as usize).collect();
    sizes.extend([MAX_SMALL + 1, 100_000, MAX_MEDIUM, MAX_MEDIUM + 1, 3 << 20]);
    for &size in &sizes {
        for life in [Life::A, Life::B] {
            let p = a.malloc(size, life);
            let found = a.allocation_at(p).expect("found");
            assert_eq!(found.life, life as usize, "size {size}");
            assert_eq!(found.large, size > MAX_MEDIUM, "size {size}");
            assert!(found.usable >= size, "size {size}: {found:?}");
            if size > MAX_SMALL && size <= MAX_MEDIUM {
                assert_eq!(found.usable, size.next_multiple_of(GRANULE), "size {size}");
            }
            // SAFETY: allocated just above.
            unsafe { a.free_unsized(p) }.unwrap();
        }
    }
    assert!(a.is_empty());
}

#[test]
fn a_pointer_of_another_allocator_is_refused_with_nothing_changed() {
    let a = Cohort::<()>::new();
    let keep = a.malloc(64, ());
    let other = Box::new([7u8; 64]);
    let p = Box::into_raw(other).cast::<u8>();
    assert_eq!(a.allocation_at(p), None);
    // SAFETY: not this allocator's: refused.
    let err = unsafe { a.free_unsized(p) }.unwrap_err();
    assert_eq!(err.problem, Problem::Foreign);
    // SAFETY: as above.
    let err = unsafe { a.realloc_unsized(p, 128, 16) }.unwrap_err();
    assert_eq!(err.problem, Problem::Foreign);
    // SAFETY: the box's own pointer, unchanged.
    let back = unsafe { Box::from_raw(p.cast::<[u8; 64]>()) };
    assert_eq!(*back, [7u8; 64]);
    // SAFETY: allocated above.
    unsafe { a.free(keep, 64, ()) };
    // SAFETY: null does nothing.
    unsafe { a.free_unsized(core::ptr::null_mut()) }.unwrap();
}

#[test]
fn realloc_without_size_keeps_contents_and_class_across_small_and_large() {
    let a = Cohort::<Life>::new();
    let mut p = a.malloc(10, Life::B);
    // SAFETY: 10 bytes allocated.
    unsafe { core::ptr::write_bytes(p, 0x5a, 10) };
    let mut len = 10;
    for new in [24, 1000, 5000, 40_000, 3 << 20, 100, 7] {
        // SAFETY: p is live, of this allocator.
        let q = unsafe { a.realloc_unsized(p, new, 16) }.unwrap();
        assert!(!q.is_null());
        assert_eq!(q as usize % 16, 0);
        for i in 0..len.min(new) {
            // SAFETY: q holds at least min(len, new) bytes.
            assert_eq!(unsafe { *q.add(i) }, 0x5a, "byte {i} after {len} -> {new}");
        }
        // SAFETY: q holds new bytes.
        unsafe { core::ptr::write_bytes(q, 0x5a, new) };
        assert_eq!(a.allocation_at(q).unwrap().life, Life::B as usize);
        (p, len) = (q, new);
    }
    // SAFETY: live.
    unsafe { a.free_unsized(p) }.unwrap();
    assert!(a.is_empty());
}

#[test]
fn an_aligned_large_allocation_of_one_page_is_freed_and_resized_as_large() {
    let a = Cohort::<()>::new();
    // Large only through its alignment: its mapping is a single page.
    let layout = Layout::from_size_align(100, 8192).unwrap();
    // SAFETY: a non-zero layout.
    let p = unsafe { GlobalAlloc::alloc(&a, layout) };
    assert_eq!(p as usize % 8192, 0);
    let found = a.allocation_at(p).unwrap();
    assert!(found.large && found.usable == a.usable_size(layout), "{found:?}");
    // SAFETY: live; 100 bytes.
    unsafe { p.write_bytes(3, 100) };
    // SAFETY: live.
    let q = unsafe { a.realloc_unsized(p, 200, 16) }.unwrap();
    // SAFETY: q holds 200 bytes, the first 100 copied.
    assert_eq!(unsafe { *q.add(99) }, 3);
    // SAFETY: live.
    unsafe { a.free_unsized(q) }.unwrap();
    assert!(a.is_empty());
}
