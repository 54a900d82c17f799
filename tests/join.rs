//! Explicit joins with concurrency-group hints.

use cohort::Cohort;

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

#[test]
fn a_join_allocates_frees_and_leaves() {
    let a: Cohort<Life> = Cohort::new();
    let j = a.join(3).unwrap();
    let ptrs: Vec<_> = (0..10_000)
        .map(|i| (j.malloc(40, Life::Short), i as u8))
        .collect();
    for &(p, b) in &ptrs {
        // SAFETY: 40 bytes each.
        unsafe { p.write_bytes(b, 40) };
    }
    // Half freed by the join (local), half by the allocator itself on this thread, which
    // does not own the join's blocks (remote frees).
    for (k, &(p, b)) in ptrs.iter().enumerate() {
        // SAFETY: live, 40 bytes.
        assert!(unsafe { std::slice::from_raw_parts(p, 40) }
            .iter()
            .all(|&x| x == b));
        // SAFETY: allocated above, freed once.
        unsafe {
            if k % 2 == 0 {
                j.free(p, 40, Life::Short);
            } else {
                a.free(p, 40, Life::Short);
            }
        }
    }
    let z = j.calloc(5000, Life::Long);
    // SAFETY: 5000 zeroed bytes.
    assert!(unsafe { std::slice::from_raw_parts(z, 5000) }
        .iter()
        .all(|&x| x == 0));
    // SAFETY: allocated above.
    unsafe { j.free(z, 5000, Life::Long) };
    j.leave();
    assert!(a.is_empty(), "{}", a.stats());
    // SAFETY: single-threaded now.
    unsafe { a.verify() }.unwrap();
}

#[test]
fn the_blocks_a_join_left_are_reused() {
    let a: Cohort<Life> = Cohort::new();
    let j = a.join(7).unwrap();
    let keep = j.malloc(64, Life::Long);
    let first = j.malloc(64, Life::Short);
    // SAFETY: allocated above.
    unsafe { j.free(first, 64, Life::Short) };
    drop(j);
    // The left join's blocks went to the pool: the next join's first allocation of the
    // class takes the freed slot's block.
    let other = a.join(8).unwrap();
    let again = a.join(7).unwrap();
    let p = again.malloc(64, Life::Short);
    assert_eq!(a.block_of(p, 64), a.block_of(first, 64));
    // SAFETY: allocated above; `keep` is freed through another join (a remote free).
    unsafe {
        again.free(p, 64, Life::Short);
        other.free(keep, 64, Life::Long);
    }
    drop((other, again));
    assert!(a.is_empty());
}

#[test]
fn joins_move_between_threads() {
    let a: Cohort<Life> = Cohort::new();
    let joins: Vec<_> = (0..4).map(|g| a.join(g).unwrap()).collect();
    std::thread::scope(|s| {
        for (g, j) in joins.into_iter().enumerate() {
            let a = &a;
            s.spawn(move || {
                let mut live = Vec::new();
                for i in 0..20_000usize {
                    let size = 1 + (i * 31 + g) % 700;
                    let p = j.malloc(size, Life::Short);
                    // SAFETY: size bytes.
                    unsafe { p.write_bytes(g as u8, size) };
                    live.push((p as usize, size));
                    if live.len() > 100 {
                        let (p, size) = live.swap_remove(i % live.len());
                        // SAFETY: live with this size.
                        assert!(unsafe { std::slice::from_raw_parts(p as *const u8, size) }
                            .iter()
                            .all(|&x| x == g as u8));
                        // SAFETY: allocated above.
                        unsafe { j.free(p as *mut u8, size, Life::Short) };
                    }
                }
                // Whatever is left is freed by the allocator from this thread after the join
                // left: remote frees into pool-owned blocks.
                j.leave();
                for (p, size) in live {
                    // SAFETY: allocated above.
                    unsafe { a.free(p as *mut u8, size, Life::Short) };
                }
            });
        }
    });
    assert!(a.is_empty(), "{}", a.stats());
    // SAFETY: the threads have exited.
    unsafe { a.verify() }.unwrap();
}

/// Regression (found by the red team): a left join's heap was adopted only by a join with the
/// same hint (or by a thread), so joins that each brought a new hint mapped a new heap every
/// time and, after 16 383 join/leave cycles, the registry was full and `join` returned None
/// while as many abandoned heaps sat idle. (It takes that many cycles: a few seconds in
/// release, over a minute in a debug build, so it runs in the release tests only.)
#[test]
#[cfg_attr(debug_assertions, ignore = "slow in debug builds: run with --release")]
fn joins_with_new_hints_reuse_left_heaps() {
    let a: Cohort = Cohort::new();
    for i in 0..(1usize << 14) + 100 {
        let j = a
            .join(i)
            .unwrap_or_else(|| panic!("join {i} refused: the registry is full"));
        let p = j.malloc(64, ());
        assert!(!p.is_null());
        // SAFETY: live, freed once.
        unsafe { j.free(p, 64, ()) };
        j.leave();
    }
    assert!(a.is_empty());
}

#[test]
fn a_join_formats_its_instance_and_heap() {
    let a: Cohort<Life> = Cohort::new();
    let j = a.join(1).unwrap();
    let s = format!("{j:?}");
    assert!(s.starts_with("Join { instance: "), "{s}");
    assert!(s.contains("heap: ") && s.contains("token: 0x"), "{s}");
    let k = a.join(2).unwrap();
    assert_ne!(format!("{k:?}"), s, "two joins, two heaps");
}
