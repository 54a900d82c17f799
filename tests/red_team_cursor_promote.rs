//! Red-team attack of session 14 on promotion against the owner's allocation cursor: in a
//! full region, a request of an exhausted size class is served from a free slot of a
//! larger class of its lifetime class, which may be the free slot a stale head's cursor
//! (see `tests/red_team_cursor_paths.rs`) would hand out next. The promoted slot must
//! never be handed out again by the cursor, and every reader must count both. A test that
//! found a defect is `#[ignore]`d with its number (RED-n), its owner and the exact failure.

mod red_team_cursor_common;

use cohort::Cohort;
use red_team_cursor_common::*;
use std::collections::HashSet;

/// A 2-unit region: a stale head of 64-byte slots of A (its block has free slots, in the
/// cursor's window and past it), the other block full of 16-byte slots of A. Then a
/// 16-byte request is promoted into the 64-byte block; the owner goes on allocating 64-byte
/// objects from its cursor.
#[test]
fn a_slot_promoted_into_a_stale_heads_block_is_never_handed_out_again() {
    let a: Cohort<Life> = Cohort::with_reservation(4 << 20);
    let stale = stale_head(&a, Life::A);
    let mut small = Vec::new();
    loop {
        let p = a.try_malloc(16, Life::A);
        if p.is_null() {
            break;
        }
        small.push(p as usize);
    }
    assert!(small.len() > 1000, "setup: {} small objects", small.len());
    let promoted: Vec<usize> = (0..8).map(|_| a.malloc(16, Life::A) as usize).collect();
    assert!(promoted.iter().all(|&p| p != 0), "no promotion");
    let block = stale[0] & !(BLOCK - 1);
    assert!(
        promoted.iter().any(|&p| p & !(BLOCK - 1) == block),
        "setup: nothing promoted into the stale head's block"
    );
    for &p in &promoted {
        // SAFETY: 16 bytes of ours.
        unsafe { (p as *mut u8).write_bytes(tag_of(p), 16) };
    }
    let mut objs = stale.clone();
    let taken: HashSet<usize> = promoted
        .iter()
        .chain(&small)
        .chain(&stale)
        .copied()
        .collect();
    for i in 0..3000 {
        let p = a.malloc(S, Life::A) as usize;
        if p == 0 {
            break;
        }
        assert!(
            !taken.contains(&p),
            "allocation {i} of 64 B handed out {p:#x}, live (promoted: {})",
            promoted.contains(&p)
        );
        fill(p, S);
        objs.push(p);
    }
    let set: HashSet<usize> = objs.iter().copied().collect();
    assert_eq!(set.len(), objs.len(), "a 64-byte slot handed out twice");
    assert_eq!(changed(&objs), None, "a 64-byte object changed");
    for &p in &promoted {
        // SAFETY: 16 bytes of ours.
        let b = unsafe { std::slice::from_raw_parts(p as *const u8, 16) };
        assert!(b.iter().all(|&x| x == tag_of(p)), "promoted {p:#x} changed");
    }
    let live: usize = a.stats().heads.iter().map(|h| h.live).sum();
    assert_eq!(
        live,
        objs.len() + small.len() + promoted.len(),
        "stats' live count"
    );
    // SAFETY: nobody else uses the instance.
    let v = unsafe { a.verify() };
    assert!(v.is_ok(), "verify: {v:?}");
    for p in promoted.into_iter().chain(small) {
        // SAFETY: 16-byte requests, live, freed once with their size.
        unsafe { a.free(p as *mut u8, 16, Life::A) };
    }
    free_all(&a, &objs);
    ends_empty(&a);
}
