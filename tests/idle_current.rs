//! A current block that stays empty gives its touched pages back on the owner's slow paths
//! (after two looks half a delay apart), stays usable, and is left alone while any slot of
//! it is live or when its region keeps its memory. Residency comes from `mincore`.

mod common;

use cohort::{Cohort, RegionOptions, Retention};
use common::kernel_view::resident_pages;
use std::thread::sleep;
use std::time::Duration;

cohort::lifetime_classes! { enum Life { A } }

const SIZE: usize = 512;
/// 500 KiB of one class: one block's worth of touched pages, all in the current block.
const COUNT: usize = 1000;
/// The kernel's page, `mincore`'s unit.
const PAGE: usize = 4096;

fn short_delay() -> Retention {
    Retention {
        delay: Duration::from_millis(40),
        ..Retention::DEFAULT
    }
}

/// `COUNT` objects of `SIZE`, each written whole with its index; returns them and the
/// range their pages span.
fn fill(a: &Cohort<Life>) -> (Vec<*mut u8>, usize, usize) {
    let ptrs: Vec<*mut u8> = (0..COUNT)
        .map(|i| {
            let p = a.malloc(SIZE, Life::A);
            assert!(!p.is_null());
            // SAFETY: SIZE bytes of ours.
            unsafe { p.write_bytes(i as u8, SIZE) };
            p
        })
        .collect();
    let lo = ptrs.iter().map(|&p| p as usize).min().unwrap();
    let hi = ptrs.iter().map(|&p| p as usize).max().unwrap() + SIZE;
    (ptrs, lo, hi)
}

/// The first address past the header's page of the block at `lo`'s objects: the
/// allocator's page (`COHORT_PAGE_SIZE`: one page of a request aligned past every small
/// and medium size is the page size itself).
fn past_header_page(a: &Cohort<Life>, lo: usize) -> usize {
    let page = a.usable_size(std::alloc::Layout::from_size_align(1, 8192).unwrap());
    lo.next_multiple_of(page.max(PAGE))
}

/// One large allocation and its free: a slow path of the calling thread.
fn slow_path(a: &Cohort<Life>) {
    let p = a.malloc(4 << 20, Life::A);
    assert!(!p.is_null());
    // SAFETY: live, freed once.
    unsafe { a.free(p, 4 << 20, Life::A) };
}

/// Slow paths every 25 ms until `done` or 2 s (generous: the looks need two delays at most).
fn slow_paths_until(a: &Cohort<Life>, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..80 {
        sleep(Duration::from_millis(25));
        slow_path(a);
        if done() {
            return true;
        }
    }
    false
}

#[test]
fn an_empty_current_block_gives_its_pages_back_and_serves_again() {
    let a = Cohort::<Life>::new();
    a.set_retention(short_delay());
    let (ptrs, lo, hi) = fill(&a);
    // The objects share one block with the header, whose page stays.
    let first_page = past_header_page(&a, lo);
    assert!(resident_pages(first_page, hi) > 100);
    for &p in ptrs.iter().rev() {
        // SAFETY: allocated above with this size and class, freed once.
        unsafe { a.free(p, SIZE, Life::A) };
    }
    assert!(
        slow_paths_until(&a, || resident_pages(first_page, hi) == 0),
        "{} of the empty block's pages still resident",
        resident_pages(first_page, hi)
    );
    // The block serves again, from never-used slots: calloc reads zero, and every object
    // keeps its own bytes.
    let again: Vec<*mut u8> = (0..COUNT).map(|_| a.calloc(SIZE, Life::A)).collect();
    for (i, &p) in again.iter().enumerate() {
        assert!(!p.is_null());
        // SAFETY: SIZE bytes of ours.
        let bytes = unsafe { std::slice::from_raw_parts(p, SIZE) };
        assert!(
            bytes.iter().all(|&b| b == 0),
            "calloc'd object {i} is not zero"
        );
        // SAFETY: as above.
        unsafe { p.write_bytes(i as u8, SIZE) };
    }
    for (i, &p) in again.iter().enumerate() {
        // SAFETY: as above.
        let bytes = unsafe { std::slice::from_raw_parts(p, SIZE) };
        assert!(
            bytes.iter().all(|&b| b == i as u8),
            "object {i} overwritten"
        );
        // SAFETY: allocated above with this size and class, freed once.
        unsafe { a.free(p, SIZE, Life::A) };
    }
    // SAFETY: no other thread uses the instance.
    unsafe { a.verify() }.expect("the instance verifies");
}

#[test]
fn a_block_with_one_live_slot_keeps_its_pages_and_bytes() {
    let a = Cohort::<Life>::new();
    a.set_retention(short_delay());
    let (ptrs, lo, hi) = fill(&a);
    let first_page = past_header_page(&a, lo);
    // One object in the middle stays live; every other one is freed.
    let kept = COUNT / 2;
    for (i, &p) in ptrs.iter().enumerate().filter(|&(i, _)| i != kept) {
        // SAFETY: allocated with this size and class, freed once.
        unsafe { a.free(p, SIZE, Life::A) };
        let _ = i;
    }
    let resident = resident_pages(first_page, hi);
    // Ten looks' worth of slow paths: nothing may go.
    assert!(!slow_paths_until(&a, || resident_pages(first_page, hi) < resident));
    // SAFETY: the kept object is live.
    let bytes = unsafe { std::slice::from_raw_parts(ptrs[kept], SIZE) };
    assert!(
        bytes.iter().all(|&b| b == kept as u8),
        "the live object changed"
    );
    // SAFETY: allocated with this size and class, freed once.
    unsafe { a.free(ptrs[kept], SIZE, Life::A) };
    // SAFETY: no other thread uses the instance.
    unsafe { a.verify() }.expect("the instance verifies");
}

#[test]
fn a_region_committed_up_front_keeps_its_idle_blocks() {
    let options = RegionOptions::new(64 << 20).commit(true);
    let a = Cohort::<Life>::with_options(&options).expect("a committed region");
    a.set_retention(short_delay());
    let (ptrs, lo, hi) = fill(&a);
    let first_page = past_header_page(&a, lo);
    for &p in &ptrs {
        // SAFETY: allocated with this size and class, freed once.
        unsafe { a.free(p, SIZE, Life::A) };
    }
    let resident = resident_pages(first_page, hi);
    assert!(!slow_paths_until(&a, || resident_pages(first_page, hi) < resident));
}

#[test]
fn with_a_zero_delay_an_empty_current_block_goes_at_the_first_look() {
    let a = Cohort::<Life>::new();
    a.set_retention(Retention {
        delay: Duration::ZERO,
        ..Retention::DEFAULT
    });
    let (ptrs, lo, hi) = fill(&a);
    let first_page = past_header_page(&a, lo);
    for &p in &ptrs {
        // SAFETY: allocated with this size and class, freed once.
        unsafe { a.free(p, SIZE, Life::A) };
    }
    slow_path(&a);
    assert_eq!(resident_pages(first_page, hi), 0);
}
