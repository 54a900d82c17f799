//! Red-team attack of session 12 on density under churn: a program that keeps a constant
//! number of small objects live, freeing a random one and allocating another at each step,
//! must not grow its blocks far past what the live objects need (the ratio contract's
//! density), whatever its current block's slow path prefers (a fresh block for a nearly
//! full current one). A test that found a defect is `#[ignore]`d with its number (RED-n),
//! its owner and the exact failure.

use cohort::Cohort;

cohort::lifetime_classes! { enum Life { A } }

fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// `live` objects of `size` bytes replaced one at a time (a random one freed, a new one
/// allocated) for `steps` steps; returns (blocks at the end, the fewest blocks that hold
/// `live` slots, the head's resident bytes).
fn churn(size: usize, live: usize, steps: usize) -> (usize, usize, usize) {
    let a = Cohort::<Life>::new();
    let mut seed = 0x0123_4567_89ab_cdefu64 ^ size as u64;
    let mut ps: Vec<usize> = (0..live)
        .map(|_| a.malloc(size, Life::A) as usize)
        .collect();
    assert!(ps.iter().all(|&p| p != 0));
    for _ in 0..steps {
        let i = next(&mut seed) as usize % live;
        // SAFETY: live, freed once.
        unsafe { a.free(ps[i] as *mut u8, size, Life::A) };
        ps[i] = a.malloc(size, Life::A) as usize;
        assert_ne!(ps[i], 0);
    }
    let head = *a
        .stats()
        .heads
        .iter()
        .find(|h| h.live == live)
        .expect("the churned head");
    let per_block = head.capacity / head.blocks;
    for p in ps {
        // SAFETY: live, freed once.
        unsafe { a.free(p as *mut u8, size, Life::A) };
    }
    (head.blocks, live.div_ceil(per_block), head.resident_bytes)
}

/// RED-63 (cursor's nearly-full policy, branch cursor 6780165/de507a1, not on main): green
/// on main eec6e3f (16 B: 4 blocks for 393 216 live objects, 6 MiB resident; 48, 200 and
/// 1000 B: 5, 4 and 4 blocks); on cursor de507a1: `16 B: a churn of 393216 live objects (20
/// replacements each) ends in 2709 blocks (22 MiB resident), where 4 hold them`. Not
/// ignored: the guard cursor's branch must pass.
#[test]
fn a_churn_at_a_constant_live_count_keeps_its_blocks_near_the_fewest() {
    for size in [16, 48, 200, 1000] {
        let live = (6 << 20) / size;
        let (blocks, fewest, resident) = churn(size, live, 20 * live);
        eprintln!(
            "{size} B: {blocks} blocks for {live} live objects (fewest {fewest}), {} MiB \
             resident",
            resident >> 20
        );
        assert!(
            blocks <= 2 * fewest + 1,
            "{size} B: a churn of {live} live objects (20 replacements each) ends in {blocks} \
             blocks ({} MiB resident), where {fewest} hold them",
            resident >> 20
        );
    }
}

/// The same churn in a region of 32 MiB (`with_reservation`): 6 MiB live never runs out of
/// memory (no null), and the blocks stay near the fewest there too.
#[test]
fn a_churn_in_a_small_region_never_runs_out() {
    let a = Cohort::<Life>::with_reservation(32 << 20);
    let (size, live) = (16, (6 << 20) / 16);
    let mut seed = 0x0bad_cafe_f00d_d00du64;
    let mut ps: Vec<usize> = (0..live)
        .map(|_| a.malloc(size, Life::A) as usize)
        .collect();
    assert!(ps.iter().all(|&p| p != 0), "the live set fits");
    for step in 0..20 * live {
        let i = next(&mut seed) as usize % live;
        // SAFETY: live, freed once.
        unsafe { a.free(ps[i] as *mut u8, size, Life::A) };
        ps[i] = a.malloc(size, Life::A) as usize;
        assert_ne!(
            ps[i], 0,
            "step {step}: out of memory with {live} objects of {size} B live in 32 MiB"
        );
    }
    let blocks = a.stats().small.blocks;
    for p in ps {
        // SAFETY: live, freed once.
        unsafe { a.free(p as *mut u8, size, Life::A) };
    }
    assert!(blocks <= 9, "{blocks} blocks for 6 MiB live");
}
