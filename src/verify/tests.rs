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

/// Writes `damage(pool, state)` into a fresh allocator's pool state (one object allocated),
/// runs `verify` and returns what it said (a panic is the test's failure), after `repair`.
fn verify_with_state(
    a: &Cohort,
    damage: impl FnOnce(&crate::pool::Pool, &mut crate::pool::PoolState) -> u64,
    repair: impl FnOnce(&crate::pool::Pool, &mut crate::pool::PoolState, u64),
) -> String {
    let p = a.malloc(1000, ());
    assert!(!p.is_null());
    // SAFETY: no other thread (or process) uses `a`.
    assert!(unsafe { a.verify() }.is_ok());
    let pool = a.core.pool_if_any().expect("a pool");
    let saved = damage(pool, &mut pool.lock_uncounted());
    // SAFETY: as above.
    let said = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { a.verify() }));
    repair(pool, &mut pool.lock_uncounted(), saved);
    // SAFETY: allocated above with this size and class.
    unsafe { a.free(p, 1000, ()) };
    match said {
        Ok(Ok(v)) => format!("nothing found: {v:?}"),
        Ok(Err(e)) => e.problem,
        Err(_) => "verify panicked".into(),
    }
}

/// A carved-unit count past the region's units (damaged state of a shared region) is
/// reported, not walked (the unit table ends at the region's units).
#[test]
fn a_carved_count_beyond_the_region_is_reported() {
    let a: Cohort = Cohort::new();
    let said = verify_with_state(
        &a,
        |pool, st| {
            let units = pool.region.unit_count();
            st.region.swap_bump(units + 1000) as u64
        },
        |_, st, saved| {
            st.region.swap_bump(saved as usize);
        },
    );
    assert!(said.contains("carved"), "{said}");
}

/// A shared region's heap registry entry naming anything but its heap's slot (damaged
/// state) is reported, and nothing reads through it (`verify` takes over dead processes'
/// heaps first, which reads every registered heap).
#[test]
fn a_damaged_heap_registry_entry_is_reported() {
    let a: Cohort = Cohort::shared_anonymous(4 << 21).expect("a shared region");
    let said = verify_with_state(
        &a,
        |pool, _| pool.registry_entry(1).swap(0x7fff_ffff_f000, Ordering::AcqRel),
        |pool, _, saved| {
            pool.registry_entry(1).store(saved, Ordering::Release);
        },
    );
    assert!(said.contains("registry"), "{said}");
}

/// A shared region with an abandoned heap (a join that allocated and left), then
/// `damage(pool, state, abandoned head)` written into its pool state: what `verify` says.
fn verify_with_abandoned(damage: impl FnOnce(&crate::pool::Pool, &mut crate::pool::PoolState, u64)) -> String {
    let a: Cohort = Cohort::shared_anonymous(4 << 21).expect("a shared region");
    // The calling thread's heap first (so that it adopts nothing below), then an explicit
    // join's heap, parked on the abandoned list when it leaves.
    let p = a.malloc(64, ());
    assert!(!p.is_null());
    // SAFETY: allocated above with this size and class.
    unsafe { a.free(p, 64, ()) };
    let join = a.join(0).expect("a join");
    let q = join.malloc(64, ());
    assert!(!q.is_null());
    // SAFETY: allocated above with this size and class.
    unsafe { join.free(q, 64, ()) };
    join.leave();
    let pool = a.core.pool_if_any().expect("a pool");
    let head = pool.lock_uncounted().abandoned;
    assert_ne!(head, 0, "the exited thread's heap is abandoned");
    verify_with_state(
        &a,
        |pool, st| {
            damage(pool, st, head);
            0
        },
        |pool, st, _| {
            st.abandoned = head;
            // SAFETY: the abandoned heap's record, owned by the lock we hold.
            unsafe { (*pool.record_at(head)).next_abandoned = 0 };
        },
    )
}

/// The abandoned heaps' list (which the next joining thread walks) naming no heap's slot,
/// or linking a heap to itself (damaged state of a shared region), is reported.
#[test]
fn a_damaged_abandoned_heaps_list_is_reported() {
    let said = verify_with_abandoned(|_, st, _| st.abandoned = 0x7fff_ffff_f000);
    assert!(said.contains("abandoned"), "{said}");
    let said = verify_with_abandoned(|pool, _, head| {
        // SAFETY: the abandoned heap's record, owned by the lock the caller holds.
        unsafe { (*pool.record_at(head)).next_abandoned = head };
    });
    assert!(said.contains("abandoned"), "{said}");
}

/// A join's block, emptied and kept (the join left: its empty block went to the pool's
/// kept empty blocks), then `next` written over that block's link on the kept list: what
/// `verify` says.
fn verify_with_kept_link(next: impl FnOnce(u32) -> u32) -> String {
    let a: Cohort = Cohort::new();
    // The calling thread's block first (so that it takes no kept block below).
    let p = a.malloc(1000, ());
    assert!(!p.is_null());
    let join = a.join(0).expect("a join");
    let q = join.malloc(1000, ());
    assert!(!q.is_null());
    // SAFETY: allocated above with this size and class.
    unsafe { join.free(q, 1000, ()) };
    join.leave();
    let pool = a.core.pool_if_any().expect("a pool");
    let unit = {
        let st = pool.lock_uncounted();
        assert_eq!(crate::pool::Pool::retained_blocks(&st), 1, "the join's block is kept");
        st.retained_list().first_unit()
    };
    let said = verify_with_state(
        &a,
        |pool, _| u64::from(pool.units().links(unit)[0].swap(next(unit), Ordering::Relaxed)),
        |pool, _, saved| pool.units().links(unit)[0].store(saved as u32, Ordering::Relaxed),
    );
    // SAFETY: allocated above with this size and class.
    unsafe { a.free(p, 1000, ()) };
    said
}

/// The list of kept empty blocks (which the next block taken from the pool pops) linking
/// beyond the region, or to itself, is reported.
#[test]
fn a_damaged_kept_empty_blocks_list_is_reported() {
    let said = verify_with_kept_link(|_| 0x00ff_fff0);
    assert!(said.contains("kept empty blocks"), "{said}");
    let said = verify_with_kept_link(|unit| unit);
    assert!(said.contains("kept empty blocks"), "{said}");
}
