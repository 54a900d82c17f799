//! Lifetime classes as a Rust API: handles, releasing a class, compact, stats, verify.

use allocator_api2::boxed::Box as Box2;
use allocator_api2::vec::Vec as Vec2;
use cohort::Cohort;
use std::alloc::Layout;

// Helper threads stopped however a test ends.
#[path = "common/threads.rs"]
mod threads;

cohort::lifetime_classes! {
    enum Life { Frame, Request, Long }
}

#[test]
fn handles_serve_allocator_api2_collections() {
    let a: Cohort<Life> = Cohort::new();
    let frame = a.handle(Life::Frame);
    let mut v = Vec2::new_in(frame);
    for i in 0..10_000u64 {
        v.push(i);
    }
    assert_eq!(v.iter().sum::<u64>(), 10_000 * 9_999 / 2);
    let b = Box2::new_in([7u8; 100], a.handle(Life::Long));
    let mut map =
        hashbrown::HashMap::with_hasher_in(std::hash::RandomState::new(), a.handle(Life::Request));
    for i in 0..1000 {
        map.insert(i, i * 2);
    }
    assert_eq!(map[&500], 1000);
    let s = a.stats();
    let lives: std::collections::BTreeSet<usize> = s.heads.iter().map(|h| h.life).collect();
    assert_eq!(lives.into_iter().collect::<Vec<_>>(), vec![0, 1, 2], "{s}");
    drop((v, b, map));
    assert!(a.is_empty());
}

/// The former name of `Cohort::handle`, `class`, still gives the same handle for a release.
#[test]
#[allow(deprecated)]
fn the_former_name_of_handle_still_works() {
    let a: Cohort<Life> = Cohort::new();
    assert_eq!(
        format!("{:?}", a.handle(Life::Long)),
        format!("{:?}", a.handle(Life::Long))
    );
    let mut v = Vec2::new_in(a.handle(Life::Frame));
    v.push(1u32);
    drop(v);
    assert!(a.is_empty());
}

#[test]
fn grow_stays_in_place_within_a_class() {
    use allocator_api2::alloc::Allocator;
    let a: Cohort<Life> = Cohort::new();
    let h = a.handle(Life::Frame);
    let l = Layout::from_size_align(20, 4).unwrap();
    let p = h.allocate(l).unwrap();
    assert_eq!(p.len(), 24, "the usable size is the stride");
    let l24 = Layout::from_size_align(24, 4).unwrap();
    // SAFETY: p was allocated with l; 24 is in its fitting range.
    let q = unsafe { h.grow(p.cast(), l, l24) }.unwrap();
    assert_eq!(q.cast::<u8>(), p.cast::<u8>());
    let l40 = Layout::from_size_align(40, 4).unwrap();
    // SAFETY: q holds 24 bytes with l24.
    let r = unsafe { h.grow_zeroed(q.cast(), l24, l40) }.unwrap();
    // SAFETY: r holds 40 bytes; 24.. were zeroed.
    assert!(
        unsafe { std::slice::from_raw_parts(r.cast::<u8>().as_ptr().add(24), 16) }
            .iter()
            .all(|&b| b == 0)
    );
    // Freed with any size of the fitting range.
    // SAFETY: r holds 40 bytes.
    unsafe { h.deallocate(r.cast(), Layout::from_size_align(37, 4).unwrap()) };
    assert!(a.is_empty());
}

#[test]
fn release_class_frees_everything_of_the_class_at_once() {
    let a: Cohort<Life> = Cohort::new();
    let long: Vec<_> = (0..1000)
        .map(|i| (a.malloc(64, Life::Long), i as u8))
        .collect();
    for &(p, b) in &long {
        // SAFETY: 64 bytes each.
        unsafe { p.write_bytes(b, 64) };
    }
    let before = a.stats().small.resident_bytes;
    for size in [8, 24, 100, 1000, 3000] {
        for _ in 0..20_000 {
            let p = a.malloc(size, Life::Request);
            // SAFETY: size bytes.
            unsafe { p.write_bytes(0xEE, size) };
        }
    }
    let t = a.malloc(1, Life::Request);
    assert!(!t.is_null());
    let grown = a.stats().small.resident_bytes;
    assert!(grown > before + (50 << 20), "{grown} vs {before}");
    // SAFETY: no Request allocation is used after this.
    let r = unsafe { a.release_class(Life::Request) };
    assert_eq!(r.slots, 100_001);
    assert_eq!(r.left_to_other_threads, 0);
    let s = a.stats();
    assert!(
        s.heads
            .iter()
            .all(|h| h.life != Life::Request as usize || h.live == 0),
        "{s}"
    );
    assert!(
        s.small.resident_bytes < before + (10 << 20),
        "RSS dropped: {} -> {}",
        grown,
        s.small.resident_bytes
    );
    // The long-lived class is intact and the allocator verifies.
    for &(p, b) in &long {
        // SAFETY: still live.
        assert!(unsafe { std::slice::from_raw_parts(p, 64) }
            .iter()
            .all(|&x| x == b));
    }
    // SAFETY: no other thread uses `a`.
    unsafe { a.verify() }.unwrap();
    // The class works again, from the released blocks.
    let p = a.malloc(24, Life::Request);
    // SAFETY: just allocated.
    unsafe { a.free(p, 24, Life::Request) };
    for (p, _) in long {
        // SAFETY: allocated above.
        unsafe { a.free(p, 64, Life::Long) };
    }
    assert!(a.is_empty());
}

#[test]
fn release_while_another_thread_uses_another_class() {
    let a: Cohort<Life> = Cohort::new();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let worker = s.spawn(|| {
            // Churns the Long class (allocations with patterns) while the main thread
            // releases Request over and over.
            let mut live: Vec<(usize, u8)> = Vec::new();
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i = i.wrapping_add(1);
                let p = a.malloc(48, Life::Long);
                // SAFETY: 48 bytes.
                unsafe { p.write_bytes(i as u8, 48) };
                live.push((p as usize, i as u8));
                if live.len() > 5000 {
                    let (p, b) = live.swap_remove((i as usize * 7) % live.len());
                    // SAFETY: live, 48 bytes.
                    assert!(unsafe { std::slice::from_raw_parts(p as *const u8, 48) }
                        .iter()
                        .all(|&x| x == b));
                    // SAFETY: allocated above.
                    unsafe { a.free(p as *mut u8, 48, Life::Long) };
                }
            }
            for (p, _) in live {
                // SAFETY: allocated above.
                unsafe { a.free(p as *mut u8, 48, Life::Long) };
            }
        });
        // Stops the worker however this test ends (a failed assertion panics here).
        let stop_worker = threads::StopOnDrop(&stop);
        for round in 0..50 {
            for k in 0..2000 {
                let size = 16 + (k * 13 + round) % 2000;
                let p = a.malloc(size, Life::Request);
                // SAFETY: size bytes.
                unsafe { p.write_bytes(1, size) };
            }
            // SAFETY: no Request allocation is used after this; the other thread only uses
            // Long.
            let r = unsafe { a.release_class(Life::Request) };
            assert_eq!(r.slots, 2000);
        }
        drop(stop_worker);
        // Joined explicitly: the scope's own wait ends when the closure returns, before the
        // thread's exit hooks (which hand its heap to the pool) have run; verify must not
        // race them.
        worker.join().unwrap();
    });
    // SAFETY: the other thread has exited.
    unsafe { a.verify() }.unwrap();
    assert!(a.is_empty(), "{}", a.stats());
}

#[test]
fn scope_releases_the_class_and_its_threads_blocks() {
    let mut a: Cohort<Life> = Cohort::new();
    let sum = a.scope_exclusive(Life::Frame, |a, frame| {
        let mut v = Vec2::new_in(frame);
        v.extend(0..100_000u64);
        std::thread::scope(|s| {
            s.spawn(|| {
                // A scoped thread allocates in the class too (and exits before the release).
                for _ in 0..10_000 {
                    let p = a.malloc(32, Life::Frame);
                    assert!(!p.is_null());
                }
            })
            // Joined explicitly, so that its exit hooks have run before the verify below
            // (the scope's own wait ends before them).
            .join()
            .unwrap();
        });
        v.iter().sum::<u64>()
    });
    assert_eq!(sum, 100_000 * 99_999 / 2);
    assert!(a.is_empty(), "{}", a.stats());
    a.verify_exclusive().unwrap();
}

#[test]
#[should_panic(expected = "live allocations")]
fn scope_refuses_a_class_with_live_allocations() {
    let mut a: Cohort<Life> = Cohort::new();
    let _p = a.malloc(10, Life::Frame);
    a.scope_exclusive(Life::Frame, |_, _| ());
}

#[test]
fn compact_gives_empty_blocks_back() {
    let a: Cohort<Life> = Cohort::new();
    let v: Vec<_> = (0..200_000).map(|_| a.malloc(100, Life::Frame)).collect();
    for &p in &v {
        // SAFETY: 100 bytes.
        unsafe { p.write_bytes(3, 100) };
    }
    for p in v {
        // SAFETY: allocated above.
        unsafe { a.free(p, 100, Life::Frame) };
    }
    let c = a.compact();
    assert!(c.blocks >= 1);
    assert!(c.resident_after < 64 << 10, "{c:?}");
    // The emptied blocks kept for reuse were resident until compact.
    assert!(c.resident_before > 4 << 20, "{c:?}");
    assert_eq!(a.stats().retained_empty_blocks, 0);
}

#[test]
fn verify_catches_a_corrupted_block() {
    let a: Cohort<Life> = Cohort::new();
    let v: Vec<_> = (0..100).map(|_| a.malloc(64, Life::Long)).collect();
    for &p in v.iter().step_by(3) {
        // SAFETY: allocated above.
        unsafe { a.free(p, 64, Life::Long) };
    }
    // SAFETY: single-threaded.
    let ok = unsafe { a.verify() }.unwrap();
    assert_eq!(ok.live, 100 - 34);
    // A stray write into a free slot breaks its link (a use after free).
    let freed = v[3];
    // SAFETY: deliberately corrupting our own test allocator's free slot.
    unsafe { freed.cast::<u32>().write(0x12345) };
    // SAFETY: single-threaded.
    let err = unsafe { a.verify() }.unwrap_err();
    assert!(err.problem.contains("not a handed-out slot"), "{err}");
    assert_eq!(err.block, a.block_of(freed, 64).unwrap());
    assert!(err.to_string().contains("stride 64 B"), "{err}");
    // A header overwrite is caught too.
    let base = err.block as *mut u32;
    // SAFETY: as above: the block header's magic word (bytes 44..48), deliberately.
    unsafe { base.add(11).write(0xdead) };
    // SAFETY: single-threaded.
    let err = unsafe { a.verify() }.unwrap_err();
    assert!(err.problem.contains("magic"), "{err}");
    std::mem::forget(a); // its blocks are corrupt: never touch them again
}

#[test]
fn stats_display_reads_at_a_glance() {
    let a: Cohort<Life> = Cohort::new();
    let _v: Vec<_> = (0..1000).map(|_| a.malloc(24, Life::Request)).collect();
    let _w = a.malloc(100_000, Life::Long);
    let _x = a.malloc(3 << 20, Life::Long);
    let s = a.stats();
    assert_eq!(s.small.live, 1000);
    assert_eq!(s.small.live_bytes, 1000 * 32);
    assert_eq!((s.medium_allocations, s.medium_bytes), (1, 100_352));
    assert_eq!(s.large_allocations, 1);
    let text = s.to_string();
    assert!(
        text.contains("stride")
            && text.contains("1000")
            && text.contains("large: 1")
            && text.contains("medium: 1 allocations, 98.0 KiB in 1 blocks"),
        "{text}"
    );
}

/// The crate re-exports the allocator-api2 its handles implement, with its `Vec` and
/// `Box`: a user needs no dependency of their own (whose version could differ).
#[test]
fn the_reexported_collections_take_handles() {
    let a: Cohort<Life> = Cohort::new();
    let mut v: cohort::Vec<u32, _> = cohort::Vec::new_in(a.handle(Life::Frame));
    v.extend(0..100);
    let b: cohort::allocator_api2::boxed::Box<u64, _> =
        cohort::Box::new_in(9, a.handle(Life::Long));
    assert_eq!(v.iter().sum::<u32>() as u64 + *b, 4959);
}

static STATIC: Cohort<Life> = Cohort::new();
cohort::static_class!(RequestOfStatic = STATIC, Life::Request);

/// The crate's zero-size handle: a box of it is one pointer, it allocates in the class its
/// type names (statistics say so), and any copy, on any thread, frees what another made.
#[test]
fn static_handles_are_zero_size() {
    use cohort::StaticHandle;
    type H = StaticHandle<RequestOfStatic>;
    assert_eq!(size_of::<H>(), 0);
    assert_eq!(size_of::<Box2<u64, H>>(), size_of::<usize>());
    let boxes: Vec<Box2<[u8; 48], H>> = (0..100u8)
        .map(|i| Box2::new_in([i; 48], H::new()))
        .collect();
    let stats = STATIC.stats();
    let request = stats.classes.iter().find(|c| c.life_name == "Request");
    let live = request.map_or(0, |c| c.small_live);
    assert_eq!(live, 100);
    std::thread::spawn(move || {
        for (i, b) in boxes.into_iter().enumerate() {
            assert_eq!(*b, [i as u8; 48]);
        }
    })
    .join()
    .unwrap();
    assert!(STATIC.is_empty());
    assert!(format!("{:?}", H::new()).contains("Request"));
}

/// Stats per lifetime class count large allocations in their class (a 100 000-element
/// `Vec` in `Frame` is not "Frame: 0 live"), with names, std's `"global"` class apart;
/// the totals match; the table prints them.
#[test]
fn stats_per_class_count_large_allocations_with_names() {
    use std::alloc::GlobalAlloc;
    let a: Cohort<Life> = Cohort::new();
    let mut big = Vec2::with_capacity_in(200_000, a.handle(Life::Frame));
    big.extend(0..200_000u64);
    let small = Box2::new_in(5u32, a.handle(Life::Frame));
    let req = Vec2::<u8, _>::with_capacity_in(20_000, a.handle(Life::Request));
    let l = Layout::from_size_align(50_000, 8).unwrap();
    // SAFETY: a non-zero size.
    let g = unsafe { GlobalAlloc::alloc(&a, l) };
    let s = a.stats();
    let by_name = |n: &str| *s.classes.iter().find(|c| c.life_name == n).unwrap();
    let frame = by_name("Frame");
    assert_eq!((frame.life, frame.small_live), (0, 1), "{s}");
    assert_eq!(frame.large_allocations, 1, "{s}");
    assert!(frame.large_bytes >= 1_600_000, "{s}");
    assert_eq!(frame.live(), 2);
    assert!(frame.live_bytes() >= 1_600_004);
    let request = by_name("Request");
    assert_eq!(
        (
            request.life,
            request.medium_allocations,
            request.medium_bytes,
            request.small_live
        ),
        (1, 1, 20_480, 0)
    );
    let global = by_name("global");
    assert_eq!((global.life, global.medium_allocations), (3, 1), "{s}");
    assert_eq!(global.live_bytes(), 51_200, "{s}");
    assert!(s.classes.iter().all(|c| c.life_name != "Long"), "{s}");
    let large: usize = s.classes.iter().map(|c| c.large_allocations).sum();
    let large_bytes: usize = s.classes.iter().map(|c| c.large_bytes).sum();
    assert_eq!((large, large_bytes), (s.large_allocations, s.large_bytes));
    let small_live: usize = s.classes.iter().map(|c| c.small_live).sum();
    assert_eq!(small_live, s.small.live);
    // The large column shows the mapping's length, page-rounded (1.5 MiB with 4 KiB or
    // 64 KiB pages).
    let text = s.to_string();
    let shown = format!("{:.1} MiB", frame.large_bytes as f64 / (1024.0 * 1024.0));
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("Frame") && l.contains(&shown)),
        "{shown} in {text}"
    );
    drop((big, small, req));
    // SAFETY: allocated above with `l`.
    unsafe { GlobalAlloc::dealloc(&a, g, l) };
    assert!(a.is_empty());
}

/// `Released`, `Compacted` and `Verified` print as sentences.
#[test]
fn results_display_as_sentences() {
    let mut a: Cohort<Life> = Cohort::new();
    let p = a.malloc(100, Life::Request);
    let q = a.malloc(100_000, Life::Request);
    let r = a.malloc(3 << 20, Life::Request);
    assert!(!p.is_null() && !q.is_null() && !r.is_null());
    let v = a.verify_exclusive().unwrap();
    assert_eq!(
        v.to_string(),
        format!(
            "consistent: {} blocks in use ({} live slots), {} empty blocks kept",
            v.blocks, v.live, v.empty_blocks
        )
    );
    // SAFETY: nothing of `Request` is used after this.
    let r = unsafe { a.release_class(Life::Request) };
    assert_eq!(
        r.to_string(),
        "released 2 blocks (1 slots), 1 medium and 1 large allocations"
    );
    let c = a.compact();
    assert!(
        c.to_string().starts_with(&format!(
            "gave back {} empty blocks and {} cached large mappings: resident ",
            c.blocks, c.large_mappings
        )),
        "{c}"
    );
}
