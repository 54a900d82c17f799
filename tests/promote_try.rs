//! The `try_` forms never promote, on every way in: a join's `try_malloc` / `try_calloc` /
//! `try_alloc`, and [`TryHandle`] over an allocator handle (allocations and resizes that
//! move),
//! where the plain forms promote.

use cohort::allocator_api2::alloc::Allocator;
use cohort::allocator_api2::vec::Vec as HandleVec;
use cohort::{Cohort, TryHandle};
use std::alloc::Layout;

mod promote_support;
use promote_support::{free_all, full_region, promoted, Life};

#[test]
fn a_join_s_try_forms_never_promote_and_its_malloc_does() {
    // The same full region as `full_region`, made through a join's heap.
    let a: Cohort<Life> = Cohort::with_reservation(4 << 20);
    let j = a.join(0).expect("a heap");
    let big: Vec<_> = (0..10).map(|_| j.malloc(32, Life::A)).collect();
    assert!(big.iter().all(|p| !p.is_null()));
    let mut small = Vec::new();
    loop {
        let p = j.try_malloc(16, Life::A);
        if p.is_null() {
            break;
        }
        small.push(p);
    }
    assert!(small.len() > 100_000, "{} 16-byte slots", small.len());
    assert!(j.try_calloc(16, Life::A).is_null());
    let l = Layout::from_size_align(16, 8).unwrap();
    assert!(j.try_alloc(l, Life::A).is_null());
    assert_eq!(promoted(&a), 0, "no try_ form promoted");
    let p = j.malloc(16, Life::A);
    assert!(!p.is_null(), "the join's malloc promotes");
    assert_eq!(promoted(&a), 1);
    let z = j.calloc(16, Life::A);
    // SAFETY: 16 readable bytes.
    assert!(
        !z.is_null()
            && unsafe { std::slice::from_raw_parts(z, 16) }
                .iter()
                .all(|&b| b == 0)
    );
    assert_eq!(promoted(&a), 2);
    // SAFETY: each allocated above with this size and class, freed once.
    unsafe {
        j.free(p, 16, Life::A);
        j.free(z, 16, Life::A);
        for q in small {
            j.free(q, 16, Life::A);
        }
        for q in big {
            j.free(q, 32, Life::A);
        }
    }
    assert!(a.is_empty());
    drop(j);
    // SAFETY: nothing else uses it.
    unsafe { a.verify() }.expect("consistent");
}

#[test]
fn a_try_handle_never_promotes_where_the_handle_does() {
    let (a, big, small) = full_region(10);
    let l8 = Layout::from_size_align(8, 8).unwrap();
    let l16 = Layout::from_size_align(16, 8).unwrap();
    let h = a.handle(Life::A);
    let t = a.try_handle(Life::A);
    assert_eq!(
        size_of_val(&t),
        size_of_val(&h),
        "no larger than the handle"
    );
    assert!(t.allocate(l8).is_err() && t.allocate(l16).is_err());
    assert!(TryHandle(h).allocate_zeroed(l16).is_err());
    // A vector of 2-byte items first takes room for 8: a 16-byte request.
    let mut v = HandleVec::<[u8; 2], _>::new_in(t);
    assert!(
        v.try_reserve(1).is_err(),
        "a collection's growth fails instead"
    );
    assert_eq!(promoted(&a), 0, "nothing promoted");
    let mut w = HandleVec::<[u8; 2], _>::new_in(h);
    assert!(
        w.try_reserve(1).is_ok(),
        "through the handle it is promoted"
    );
    assert_eq!(promoted(&a), 1);
    drop(w);
    assert_eq!(promoted(&a), 0);
    // A resize that moves to a 16-byte request (a 32-byte allocation shrunk to 16 bytes
    // leaves its class): promoted through the handle, refused through the try handle,
    // the allocation staying as it was.
    let l32 = Layout::from_size_align(32, 8).unwrap();
    let p = t
        .allocate(l32)
        .expect("the 32-byte class has free slots")
        .cast::<u8>();
    // SAFETY: 32 bytes of ours.
    unsafe { p.as_ptr().write_bytes(0x5a, 32) };
    // SAFETY: p was allocated by t (h's class) with l32.
    assert!(
        unsafe { t.shrink(p, l32, l16) }.is_err(),
        "the try handle's shrink never promotes"
    );
    assert_eq!(promoted(&a), 0);
    // SAFETY: as above; p is unchanged after the failed shrink.
    let q = unsafe { h.shrink(p, l32, l16) }
        .expect("the handle's shrink promotes")
        .cast::<u8>();
    // SAFETY: 16 bytes of ours, moved.
    assert!(unsafe { std::slice::from_raw_parts(q.as_ptr(), 16) }
        .iter()
        .all(|&b| b == 0x5a));
    assert_eq!(promoted(&a), 1);
    // SAFETY: allocated through the handle with l16.
    unsafe { t.deallocate(q, l16) };
    assert_eq!(promoted(&a), 0);
    drop(v);
    free_all(&a, &big, &small);
    // SAFETY: nothing else uses it.
    unsafe { a.verify() }.expect("consistent");
}
