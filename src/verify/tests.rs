//! `verify` on a damaged list of a lifetime class's blocks (its links live in a table
//! beside the blocks, out of a program's stray writes into a block: damaged here through
//! the pool).

use crate::api::Cohort;
use crate::block::Links;
use crate::sync::Ordering;

/// Allocates an object in a fresh allocator, writes `next(unit)` over the `next` link of
/// its block (unit `unit`) in its lifetime class's list, and returns what `verify` says.
fn verify_with_life_link(next: impl FnOnce(u32) -> u32) -> String {
    let a: Cohort = Cohort::new();
    let p = a.malloc(1000, ());
    assert!(!p.is_null());
    // SAFETY: no other thread uses `a`.
    assert!(unsafe { a.verify() }.is_ok());
    let pool = a.core.pool_if_any().expect("a pool");
    let saved = {
        let _st = pool.lock_uncounted();
        let unit = pool.region.unit_of(p as usize) as u32;
        let link = &pool.life_links().links(unit)[0];
        link.swap(next(unit), Ordering::Relaxed)
    };
    // SAFETY: as above.
    let said = match unsafe { a.verify() } {
        Ok(v) => format!("nothing found: {v:?}"),
        Err(e) => e.problem,
    };
    // Repaired, so that the allocator drops cleanly.
    let unit = pool.region.unit_of(p as usize) as u32;
    pool.life_links().links(unit)[0].store(saved, Ordering::Relaxed);
    // SAFETY: allocated above with this size and class.
    unsafe { a.free(p, 1000, ()) };
    said
}

#[test]
fn a_lifetime_class_list_linking_beyond_the_region_is_reported() {
    let said = verify_with_life_link(|_| 0x00ff_fff0);
    assert!(said.contains("names unit 0xfffff0"), "{said}");
}

#[test]
fn a_lifetime_class_list_linking_to_itself_is_reported() {
    let said = verify_with_life_link(|unit| unit);
    assert!(said.contains("(a cycle)"), "{said}");
}
