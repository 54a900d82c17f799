//! One test (at least) per numbered invariant of the crate's design (`cohort::design`,
//! src/design.md), in its order and under its number, then the contracts of the malloc
//! family.

use cohort::class::{class_of, ratio_contract_limit, CLASSES, LIMIT_DEN, RATIO_CONTRACT_ROWS};
use cohort::{BlockReport, Cohort, Retention};
use std::alloc::Layout;
use std::collections::HashMap;

mod common;
use common::misuse_message;

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

fn blocks<L: cohort::Lifetime>(a: &Cohort<L>) -> HashMap<usize, BlockReport> {
    let mut m = HashMap::new();
    a.for_each_block(|b| {
        m.insert(b.base, *b);
    });
    m
}

/// Invariant 1: every class serving a size of a row meets the row's ratio.
#[test]
fn invariant_1_every_row_of_the_ratio_contract_holds() {
    for (lo, hi) in RATIO_CONTRACT_ROWS {
        let limit = ratio_contract_limit(lo);
        // Every class serving a size of the row, through either API (align 1 = exact fit,
        // malloc's power-of-two alignment).
        for size in lo..=hi {
            for align in [1, size.next_power_of_two().min(4096)] {
                let c = &CLASSES[class_of(size, align).unwrap()];
                let block = c.block_size() as u64;
                let usable = (c.capacity * c.stride) as u64;
                assert!(
                    block * LIMIT_DEN <= usable * limit,
                    "row {lo}-{hi}: stride {} has ratio {:.7} > {:.7}",
                    c.stride,
                    block as f64 / usable as f64,
                    limit as f64 / LIMIT_DEN as f64
                );
            }
        }
    }
}

/// Invariant 2: consecutive allocations of a class are one stride apart.
#[test]
fn invariant_2_slots_are_packed_with_no_header() {
    let a: Cohort = Cohort::new();
    for (size, align) in [(24, 8), (8, 8), (40, 8), (100, 4), (1, 1), (2, 2), (4, 4)] {
        let l = Layout::from_size_align(size, align).unwrap();
        let stride = a.usable_size(l);
        assert_eq!(
            stride,
            size.next_multiple_of(align.max(if size > 4 { 8 } else { 1 }))
        );
        let ptrs: Vec<_> = (0..1000).map(|_| a.alloc(l, ()) as usize).collect();
        for w in ptrs.windows(2) {
            assert_eq!(
                w[1] - w[0],
                stride,
                "{size} B slots are packed with no header"
            );
        }
        for p in ptrs {
            // SAFETY: allocated above with l.
            unsafe { a.dealloc(p as *mut u8, l, ()) };
        }
    }
}

/// Invariant 3: one mask finds the block of every allocation, whatever its class.
#[test]
fn invariant_3_the_header_is_found_by_one_mask() {
    let a: Cohort<Life> = Cohort::new();
    let mut live = Vec::new();
    for size in [1, 2, 3, 8, 24, 48, 64, 200, 1000, 3000, 8192, 16384] {
        for _ in 0..100 {
            live.push((a.malloc(size, Life::Long), size));
        }
    }
    let bs = blocks(&a);
    for &(p, size) in &live {
        let base = a.block_of(p, size).unwrap();
        let b = bs.get(&base).expect("the masked address is a block's base");
        assert!(p as usize >= base && (p as usize) < base + b.block_bytes);
        assert!(b.stride >= size && b.life == 1);
    }
    for (p, size) in live {
        // SAFETY: allocated above.
        unsafe { a.free(p, size, Life::Long) };
    }
}

/// Invariant 4: free-list links are block offsets and no header word is an address.
#[test]
fn invariant_4_links_and_headers_hold_offsets_not_addresses() {
    let a: Cohort = Cohort::new();
    let l = Layout::from_size_align(64, 8).unwrap();
    let ptrs: Vec<_> = (0..5000).map(|_| a.alloc(l, ())).collect();
    for &p in ptrs.iter().step_by(2) {
        // SAFETY: allocated above.
        unsafe { a.dealloc(p, l, ()) };
    }
    let bs = blocks(&a);
    let lo = *bs.keys().min().unwrap();
    let hi = bs.values().map(|b| b.base + b.block_bytes).max().unwrap();
    // A freed slot's link is an offset inside its block, never an address.
    for &p in ptrs.iter().step_by(2) {
        // SAFETY: the slot is free but its block is mapped; reading its link word is a plain
        // read of our own memory.
        let link = unsafe { (p as *const u32).read() } as usize;
        assert!(link < 1 << 22, "link {link:#x} is a block offset");
    }
    // No header word is an address inside the region.
    for b in bs.values() {
        for w in 0..8 {
            // SAFETY: the first 64 bytes of a block are its header.
            let word = unsafe { (b.base as *const u64).add(w).read() } as usize;
            assert!(
                !(lo..hi).contains(&word),
                "header word {word:#x} is an address"
            );
        }
    }
    for &p in ptrs.iter().skip(1).step_by(2) {
        // SAFETY: allocated above and not freed yet.
        unsafe { a.dealloc(p, l, ()) };
    }
}

/// Invariant 5: every allocation's block holds its size class and lifetime class.
#[test]
fn invariant_5_blocks_never_mix_heads() {
    let a: Cohort<Life> = Cohort::new();
    let mut live = Vec::new();
    for i in 0..4000usize {
        let size = 1 + (i * 7919) % 3000;
        let life = if i % 3 == 0 { Life::Short } else { Life::Long };
        live.push((a.malloc(size, life), size, life));
    }
    let bs = blocks(&a);
    for &(p, size, life) in &live {
        let b = bs[&a.block_of(p, size).unwrap()];
        let class = class_of(size, size.next_power_of_two().min(4096)).unwrap();
        assert_eq!((b.size_class, b.life), (class, life as usize));
    }
    for (p, size, life) in live {
        // SAFETY: allocated above.
        unsafe { a.free(p, size, life) };
    }
}

/// Invariant 6: after local, remote and tiny frees, `verify` finds every slot counted once
/// and its live count is the allocations still held.
#[test]
fn invariant_6_every_slot_is_counted_once() {
    let mut a: Cohort<Life> = Cohort::new();
    let mut mine = Vec::new();
    for i in 0..20_000usize {
        let size = [1, 2, 8, 24, 64, 200, 1000, 4000][i % 8];
        let life = if i % 5 == 0 { Life::Long } else { Life::Short };
        mine.push((a.malloc(size, life) as usize, size, life));
    }
    // Every third allocation is freed by another thread (remote frees), every third by
    // this one (local frees), the rest stay live.
    let (remote, rest): (Vec<_>, Vec<_>) =
        mine.into_iter().enumerate().partition(|(i, _)| i % 3 == 0);
    let (local, live): (Vec<_>, Vec<_>) = rest.into_iter().partition(|(i, _)| i % 3 == 1);
    std::thread::scope(|s| {
        s.spawn(|| {
            for &(_, (p, size, life)) in &remote {
                // SAFETY: allocated above, freed once, here.
                unsafe { a.free(p as *mut u8, size, life) };
            }
        });
    });
    for &(_, (p, size, life)) in &local {
        // SAFETY: allocated above, freed once.
        unsafe { a.free(p as *mut u8, size, life) };
    }
    let v = a.verify_exclusive().expect("the lists and counts agree");
    assert_eq!(v.live, live.len());
    assert_eq!(a.stats().small.live, live.len());
    for (_, (p, size, life)) in live {
        // SAFETY: allocated above, not freed yet.
        unsafe { a.free(p as *mut u8, size, life) };
    }
    assert_eq!(a.verify_exclusive().unwrap().live, 0);
}

/// Fills four blocks of 1000-byte slots (the first three retire `FULL`), frees a slot of
/// the first locally (it is listed again) and one of the second from another thread (it
/// comes back through the returned stack), and checks with `verify` that every block's role
/// matches where its heap keeps it, before and after the heap takes its returned blocks.
fn fill_free_and_verify(a: &mut Cohort<Life>, per_block: usize) {
    let held: Vec<usize> = (0..per_block * 4)
        .map(|_| a.malloc(1000, Life::Short) as usize)
        .collect();
    let (ours, theirs): (Vec<_>, Vec<_>) = held
        .iter()
        .enumerate()
        .partition(|(i, _)| (i / per_block).is_multiple_of(2));
    // SAFETY (both frees): allocated above, each freed once.
    unsafe { a.free(*ours[0].1 as *mut u8, 1000, Life::Short) };
    let remote = *theirs[0].1;
    std::thread::scope(|s| {
        s.spawn(|| unsafe { a.free(remote as *mut u8, 1000, Life::Short) });
    });
    a.verify_exclusive().expect("roles match places");
    // Allocating again lists the returned blocks and reuses the freed slots.
    let again: Vec<usize> = (0..2)
        .map(|_| a.malloc(1000, Life::Short) as usize)
        .collect();
    a.verify_exclusive()
        .expect("roles match places after reuse");
    let freed = [*ours[0].1, remote];
    let rest = held.into_iter().filter(|p| !freed.contains(p));
    for p in rest.chain(again) {
        // SAFETY: allocated above and not freed yet.
        unsafe { a.free(p as *mut u8, 1000, Life::Short) };
    }
}

/// Invariant 7: the roles (`Current`, `Listed`, `Full`) match where the heap keeps each
/// block, after blocks retire full and come back by local and remote frees.
#[test]
fn invariant_7_the_role_matches_the_place() {
    let mut a: Cohort<Life> = Cohort::new();
    let per_block = CLASSES[class_of(1000, 1024).unwrap()].capacity as usize;
    fill_free_and_verify(&mut a, per_block);
    assert_eq!(a.verify_exclusive().unwrap().live, 0);
}

/// Invariant 8: every block is in one place: the heaps' blocks, the blocks an exited
/// thread left to the pool (small and tiny, with live allocations), empty blocks retained.
#[test]
fn invariant_8_every_block_is_in_one_place() {
    let mut a: Cohort<Life> = Cohort::new();
    let left = std::thread::scope(|s| {
        s.spawn(|| {
            (0..3000)
                .map(|i| {
                    let size = [1, 2, 64, 1000][i % 4];
                    (a.malloc(size, Life::Long) as usize, size)
                })
                .collect::<Vec<_>>()
        })
        .join()
        .unwrap()
    });
    // The thread has exited (joined): its blocks are the pool's now.
    let per_block = CLASSES[class_of(1000, 1024).unwrap()].capacity as usize;
    fill_free_and_verify(&mut a, per_block);
    let v = a.verify_exclusive().expect("every block in one place");
    assert_eq!(v.live, left.len());
    for (p, size) in left {
        // SAFETY: allocated by the exited thread, freed once.
        unsafe { a.free(p as *mut u8, size, Life::Long) };
    }
    let v = a.verify_exclusive().unwrap();
    assert_eq!(v.live, 0);
    assert!(v.empty_blocks >= 1, "emptied blocks are retained: {v:?}");
}

fn lock_acquisitions(a: &Cohort) -> u64 {
    a.stats().lock_acquisitions
}

/// Invariant 9: local malloc/free pairs and remote frees take no lock.
#[test]
fn invariant_9_the_fast_paths_take_no_lock() {
    let a: Cohort = Cohort::new();
    let l = Layout::from_size_align(16, 8).unwrap();
    // Warm up: the heap and its current block exist.
    let keep: Vec<_> = (0..10).map(|_| a.alloc(l, ())).collect();
    let before = a.stats().lock_acquisitions;
    for _ in 0..100_000 {
        let p = a.alloc(l, ());
        // SAFETY: allocated just above.
        unsafe { a.dealloc(p, l, ()) };
    }
    assert_eq!(
        a.stats().lock_acquisitions,
        before,
        "malloc/free pairs took the pool lock"
    );
    // Frees from another thread are lock-free pushes (batched per block). The thread's
    // first one joins its heap, as a first allocation would: not counted.
    let ptrs: Vec<usize> = (0..1000).map(|_| a.alloc(l, ()) as usize).collect();
    let (before, after) = std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: allocated above, freed once, here.
            unsafe { a.dealloc(ptrs[0] as *mut u8, l, ()) };
            let before = lock_acquisitions(&a);
            for &p in &ptrs[1..] {
                // SAFETY: allocated above, freed once, here.
                unsafe { a.dealloc(p as *mut u8, l, ()) };
            }
            (before, lock_acquisitions(&a))
        })
        .join()
        .unwrap()
    });
    assert_eq!(after, before, "remote frees took the pool lock");
    for p in keep {
        // SAFETY: allocated above.
        unsafe { a.dealloc(p, l, ()) };
    }
}

/// Invariant 10: a block's untouched pages cost no RSS, and calloc does not write fresh memory.
#[test]
fn invariant_10_memory_is_committed_when_carved_and_calloc_skips_fresh_memory() {
    let a: Cohort = Cohort::new();
    let p = a.malloc(16, ());
    let s = a.stats();
    assert_eq!(
        s.small.block_bytes,
        CLASSES[class_of(16, 16).unwrap()].block_size()
    );
    assert!(
        s.small.resident_bytes <= 8192,
        "one slot touched: {} B resident",
        s.small.resident_bytes
    );
    // 16 MiB of calloc'd pages: fresh from the OS, so never written and never resident.
    let big: Vec<_> = (0..4000).map(|_| a.calloc(4096, ())).collect();
    let s = a.stats();
    assert!(
        s.small.resident_bytes < 1 << 20,
        "calloc touched fresh pages: {} B",
        s.small.resident_bytes
    );
    for &q in &big {
        // SAFETY: calloc'd 4096 bytes.
        assert!(unsafe { std::slice::from_raw_parts(q, 4096) }
            .iter()
            .all(|&b| b == 0));
    }
    for q in big {
        // SAFETY: allocated above.
        unsafe {
            q.write_bytes(0xAB, 4096);
            a.free(q, 4096, ());
        }
    }
    // Reused (dirty) slots are zeroed by calloc.
    let q = a.calloc(4096, ());
    // SAFETY: calloc'd 4096 bytes.
    assert!(unsafe { std::slice::from_raw_parts(q, 4096) }
        .iter()
        .all(|&b| b == 0));
    // SAFETY: allocated above.
    unsafe {
        a.free(q, 4096, ());
        a.free(p, 16, ());
    }
}

/// Invariant 11: exhaustion and impossible sizes return null; freeing makes room.
#[test]
fn invariant_11_out_of_memory_is_a_null_return() {
    let a: Cohort = Cohort::with_reservation(8 << 20);
    let mut live = Vec::new();
    loop {
        let p = a.malloc(1000, ());
        if p.is_null() {
            break;
        }
        live.push(p);
        assert!(live.len() < 10_000, "an 8 MiB reservation never ran out");
    }
    assert!(live.len() > 1000, "only {} allocations fit", live.len());
    assert!(a.malloc(1000, ()).is_null());
    // Freeing makes room again.
    for p in live.drain(..100) {
        // SAFETY: allocated above.
        unsafe { a.free(p, 1000, ()) };
    }
    let p = a.malloc(1000, ());
    assert!(!p.is_null());
    live.push(p);
    for p in live {
        // SAFETY: allocated above.
        unsafe { a.free(p, 1000, ()) };
    }
    // Requests the OS cannot map.
    assert!(a.malloc(usize::MAX / 2, ()).is_null());
    assert!(a.malloc((1 << 47) + 4096, ()).is_null());
    assert!(a
        .alloc(Layout::from_size_align(1 << 47, 1 << 20).unwrap(), ())
        .is_null());
}

/// Invariant 12: a free whose size or lifetime class does not match its block is reported,
/// and changes nothing.
#[test]
fn invariant_12_a_wrong_size_or_class_is_caught_in_every_build() {
    let a: Cohort<Life> = Cohort::new();
    let p = a.malloc(24, Life::Short);
    // SAFETY (of both frees): deliberately wrong; the allocator must reject them before
    // touching anything.
    let msg = misuse_message(|| unsafe { a.free(p, 200, Life::Short) });
    assert!(
        msg.contains(&format!("{:#x}", p as usize)) && msg.contains("size 200"),
        "{msg}"
    );
    assert!(
        msg.contains("stride 32"),
        "names what the block holds: {msg}"
    );
    let msg = misuse_message(|| unsafe { a.free(p, 24, Life::Long) });
    assert!(
        msg.contains("lifetime class 1") && msg.contains("lifetime class 0"),
        "{msg}"
    );
    // The allocation is intact and frees normally.
    // SAFETY: allocated above, not freed (the bad frees changed nothing).
    unsafe { a.free(p, 24, Life::Short) };
}

/// Invariant 12, checked mode: double, foreign and interior frees are reported.
#[test]
#[cfg_attr(
    not(any(debug_assertions, feature = "checked")),
    ignore = "needs checked mode"
)]
fn invariant_12_checked_mode_catches_double_foreign_and_interior_frees() {
    let a: Cohort = Cohort::new();
    let p = a.malloc(64, ());
    let q = a.malloc(64, ());
    // SAFETY: p is live; freed once here.
    unsafe { a.free(p, 64, ()) };
    // SAFETY (of the frees below): deliberately wrong, rejected before any change.
    let msg = misuse_message(|| unsafe { a.free(p, 64, ()) });
    assert!(
        msg.contains("double free") && msg.contains(&format!("{:#x}", p as usize)),
        "{msg}"
    );
    let boxed = Box::into_raw(Box::new([0u8; 64])) as *mut u8;
    let msg = misuse_message(|| unsafe { a.free(boxed, 64, ()) });
    assert!(msg.contains("not from this allocator"), "{msg}");
    // SAFETY: boxed came from Box::into_raw above.
    drop(unsafe { Box::from_raw(boxed as *mut [u8; 64]) });
    let msg = misuse_message(|| unsafe { a.free(q.add(8), 64, ()) });
    assert!(msg.contains("not the start of a slot"), "{msg}");
    // Tiny classes too.
    let t = a.malloc(1, ());
    // SAFETY: t is live; freed once.
    unsafe { a.free(t, 1, ()) };
    let msg = misuse_message(|| unsafe { a.free(t, 1, ()) });
    assert!(
        msg.contains("already freed"),
        "its block emptied and left: {msg}"
    );
    let t = a.malloc(1, ());
    let u = a.malloc(1, ());
    // SAFETY: t is live; freed once.
    unsafe { a.free(t, 1, ()) };
    let msg = misuse_message(|| unsafe { a.free(t, 1, ()) });
    assert!(msg.contains("double free"), "{msg}");
    // SAFETY: u is live.
    unsafe { a.free(u, 1, ()) };
    // SAFETY: q is live.
    unsafe { a.free(q, 64, ()) };
}

/// Invariant 12, through `try_free`: every misuse the allocator detects comes back as an
/// error naming it, in every build, and changes nothing; a correct call frees.
#[test]
fn invariant_12_try_free_returns_misuse_and_changes_nothing() {
    use cohort::Problem;
    let a: Cohort<Life> = Cohort::new();
    let problem = |r: Result<(), cohort::Misuse>| r.expect_err("misuse").problem;
    let p = a.malloc(24, Life::Short);
    let q = a.malloc(24, Life::Short);
    let t = a.malloc(1, Life::Short);
    let big = a.malloc(1_100_000, Life::Short);
    let boxed = Box::into_raw(Box::new([0u8; 64])) as *mut u8;
    let live = a.stats().small.live;
    // SAFETY (every call): misuse the checks reject changes nothing; correct calls free
    // each allocation once.
    unsafe {
        assert!(matches!(
            problem(a.try_free(p, 200, Life::Short)),
            Problem::WrongBlock {
                block_class: Some(_),
                ..
            }
        ));
        let m = a.try_free(p, 24, Life::Long).unwrap_err();
        assert!(matches!(
            m.problem,
            Problem::WrongBlock { block_life: 0, .. }
        ));
        assert_eq!((m.ptr, m.size, m.life), (p as usize, 24, 1));
        assert!(m.to_string().contains("lifetime class 1"), "{m}");
        let e: &dyn std::error::Error = &m;
        assert!(e.to_string().starts_with("cohort: bad free of "), "{e}");
        assert_eq!(
            problem(a.try_free(boxed, 64, Life::Short)),
            Problem::Foreign
        );
        assert!(matches!(
            problem(a.try_free(p.add(8), 24, Life::Short)),
            Problem::NotASlot { stride: 32 }
        ));
        assert!(matches!(
            problem(a.try_free(big, 24, Life::Short)),
            Problem::LargeMismatch { .. }
        ));
        assert!(matches!(
            problem(a.try_free(big, 1_200_000, Life::Short)),
            Problem::LargeMismatch { .. }
        ));
        assert_eq!(
            problem(a.try_free(p, 1_100_000, Life::Short)),
            Problem::NotLarge
        );
        assert_eq!(a.stats().small.live, live, "nothing changed");
        assert_eq!(a.stats().large_allocations, 1);
        // Double frees: the slot freed last, locally and from another thread, and tiny.
        assert_eq!(a.try_free(p, 24, Life::Short), Ok(()));
        assert_eq!(problem(a.try_free(p, 24, Life::Short)), Problem::DoubleFree);
        let q_at = q as usize;
        std::thread::scope(|s| {
            s.spawn(|| {
                let q = q_at as *mut u8;
                assert_eq!(a.try_free(q, 24, Life::Short), Ok(()));
                assert_eq!(problem(a.try_free(q, 24, Life::Short)), Problem::DoubleFree);
            });
        });
        let t2 = a.malloc(1, Life::Short);
        assert_eq!(a.try_free(t, 1, Life::Short), Ok(()));
        assert_eq!(problem(a.try_free(t, 1, Life::Short)), Problem::DoubleFree);
        assert_eq!(a.try_free(big, 1_100_000, Life::Short), Ok(()));
        // Its mapping is cached now: a second free is a double free.
        assert_eq!(
            problem(a.try_free(big, 1_100_000, Life::Short)),
            Problem::DoubleFree
        );
        assert_eq!(a.try_free(std::ptr::null_mut(), 24, Life::Short), Ok(()));
        assert_eq!(a.try_free(t2, 1, Life::Short), Ok(()));
        drop(Box::from_raw(boxed as *mut [u8; 64]));
    }
    assert!(a.is_empty());
    // SAFETY: single-threaded now.
    unsafe { a.verify() }.unwrap();
}

/// Invariant 13: of many blocks emptied at once, at most the instance's bound stay
/// committed for reuse (8 blocks here; by default 128, which would take this test 256 MiB);
/// `compact` gives those back too.
#[test]
fn invariant_13_at_most_the_bound_of_empty_blocks_are_retained() {
    const RETAIN_EMPTY: usize = 8;
    let a: Cohort = Cohort::new();
    a.set_retention(Retention {
        empty_block_bytes: RETAIN_EMPTY << 21,
        ..Retention::DEFAULT
    });
    let per_block = CLASSES[class_of(1024, 1024).unwrap()].capacity as usize;
    let v: Vec<_> = (0..per_block * 20).map(|_| a.malloc(1024, ())).collect();
    assert!(a.stats().small.blocks >= 20);
    for p in v {
        // SAFETY: allocated above, freed once.
        unsafe { a.free(p, 1024, ()) };
    }
    let s = a.stats();
    assert_eq!(
        s.retained_empty_blocks, RETAIN_EMPTY,
        "the bound, reached: {s}"
    );
    assert!(
        s.small.blocks <= 1,
        "only the current block stays in use: {s}"
    );
    assert_eq!(a.compact().blocks, RETAIN_EMPTY + s.small.blocks);
    assert_eq!(a.stats().retained_empty_blocks, 0);
}

/// Invariant 14: one instance's pointer freed into another is foreign to it, in every
/// build (tokens and regions are the instance's own).
#[test]
fn invariant_14_a_pointer_of_another_instance_is_foreign() {
    let a: Cohort = Cohort::new();
    let b: Cohort = Cohort::new();
    let p = a.malloc(64, ());
    let q = b.malloc(64, ());
    // SAFETY: deliberately wrong; rejected before anything changes.
    let msg = misuse_message(|| unsafe { b.free(p, 64, ()) });
    assert!(msg.contains("not from this allocator"), "{msg}");
    // SAFETY: allocated above, freed once each.
    unsafe {
        a.free(p, 64, ());
        b.free(q, 64, ());
    }
    assert!(a.is_empty() && b.is_empty());
}

/// Invariant 14: a thread that alternates between two instances (a global allocator and a
/// lifetime-class instance, say) frees locally into both: its two last heaps' tags are at
/// hand, and neither matches the other's blocks.
#[test]
fn invariant_14_a_thread_alternating_two_instances_frees_locally_into_both() {
    let mut a: Cohort = Cohort::new();
    let mut b: Cohort = Cohort::new();
    let l = Layout::from_size_align(32, 8).unwrap();
    let (lock_a, lock_b) = (a.stats().lock_acquisitions, b.stats().lock_acquisitions);
    let keep = (a.alloc(l, ()), b.alloc(l, ()));
    let warm = (a.stats().lock_acquisitions, b.stats().lock_acquisitions);
    assert!(warm.0 > lock_a && warm.1 > lock_b, "each joined a heap");
    for i in 0..10_000u32 {
        let p = a.alloc(l, ());
        // SAFETY: p holds 32 bytes.
        unsafe { p.cast::<u32>().write(i) };
        let q = b.alloc(l, ());
        // SAFETY: q holds 32 bytes; p is live.
        unsafe {
            q.cast::<u32>().write(!i);
            assert_eq!(p.cast::<u32>().read(), i);
            a.dealloc(p, l, ());
        }
        // SAFETY: q is live and freed once.
        unsafe {
            assert_eq!(q.cast::<u32>().read(), !i);
            b.dealloc(q, l, ());
        }
    }
    // Every free was local (on the fast path, or local after all on the heap the thread
    // did not use last): none counted remote.
    for (name, c) in [("a", &a), ("b", &b)] {
        let remote: u64 = c.stats().events.iter().map(|e| e.remote_frees).sum();
        assert_eq!(remote, 0, "{name}'s frees counted remote");
    }
    assert_eq!(
        (a.stats().lock_acquisitions, b.stats().lock_acquisitions),
        warm,
        "alternating took a pool lock"
    );
    // SAFETY: allocated above, freed once.
    unsafe {
        a.dealloc(keep.0, l, ());
        b.dealloc(keep.1, l, ());
    }
    a.verify_exclusive().unwrap();
    b.verify_exclusive().unwrap();
}

/// Invariant 15: a release frees the caller's and exited threads' allocations of the class,
/// leaves a live thread's, and leaves other classes alone.
#[test]
fn invariant_15_a_release_frees_the_callers_and_exited_threads_blocks_only() {
    use std::sync::mpsc::channel;
    let a: Cohort<Life> = Cohort::new();
    let exited = std::thread::scope(|s| {
        s.spawn(|| {
            let held: Vec<_> = (0..100)
                .map(|_| a.malloc(64, Life::Short) as usize)
                .collect();
            held.len()
        })
        .join()
        .unwrap()
    });
    let mine: Vec<_> = (0..200).map(|_| a.malloc(64, Life::Short)).collect();
    let long = a.malloc(64, Life::Long);
    let (ready, wait_ready) = channel();
    let (released, wait_released) = channel::<()>();
    std::thread::scope(|s| {
        let a = &a;
        s.spawn(move || {
            let p = a.malloc(64, Life::Short);
            // SAFETY: p holds 64 bytes.
            unsafe { p.write_bytes(0x5A, 64) };
            ready.send(()).unwrap();
            wait_released.recv().unwrap();
            // SAFETY: p is this live thread's: the release left it.
            assert!(unsafe { std::slice::from_raw_parts(p, 64) }
                .iter()
                .all(|&b| b == 0x5A));
            // SAFETY: allocated above, freed once.
            unsafe { a.free(p, 64, Life::Short) };
        });
        wait_ready.recv().unwrap();
        // SAFETY: nothing released is used again; the other thread does not allocate or
        // free in Short until the release is done.
        let r = unsafe { a.release_class(Life::Short) };
        assert_eq!(r.slots, mine.len() + exited, "{r:?}");
        assert_eq!(r.left_to_other_threads, 1, "{r:?}");
        released.send(()).unwrap();
    });
    assert_eq!(a.stats().small.live, 1, "only the Long allocation is left");
    // SAFETY: allocated above; Long was not released.
    unsafe { a.free(long, 64, Life::Long) };
    assert!(a.is_empty());
}

/// Invariant 16: scopes open at once hold distinct scope classes (two threads' scopes are
/// never one class), and a ninth open scope is refused; each release frees all of its own
/// class (large allocations included) and nothing of the others'.
#[test]
fn invariant_16_a_scope_class_is_one_scopes() {
    use common::threads::Barrier;
    static A: Cohort<Life> = Cohort::new();
    let (open, checked) = (Barrier::new(8), Barrier::new(8));
    let names = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..8u8 {
            let (open, checked, names) = (&open, &checked, &names);
            s.spawn(move || {
                let (_open, _checked) = (open.party(), checked.party());
                A.scope(|frame| {
                    let mut v = cohort::Vec::with_capacity_in(50_000, frame);
                    v.resize(50_000, t);
                    let b = cohort::Box::new_in(t, frame);
                    let life = A.allocation_at(&*b).unwrap().life;
                    names.lock().unwrap().push(life);
                    open.wait();
                    if t == 0 {
                        assert_eq!(A.try_scope(|_| ()), Err(cohort::ScopesInUse));
                    }
                    checked.wait();
                    assert!(
                        v.iter().all(|&x| x == t) && *b == t,
                        "scope {t} freed under it"
                    );
                });
            });
        }
    });
    let mut names = names.into_inner().unwrap();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 8, "two open scopes shared a class: {names:?}");
    assert!(A.is_empty(), "{}", A.stats());
}

// ---- The contracts of the malloc family ----

#[test]
fn zero_size_requests_are_dangling_and_free_is_a_no_op() {
    let a: Cohort = Cohort::new();
    let p = a.malloc(0, ());
    assert!(!p.is_null());
    assert!(!a.calloc(0, ()).is_null());
    let l = Layout::from_size_align(0, 64).unwrap();
    let q = a.alloc(l, ());
    assert_eq!(q as usize, 64, "a zero-size layout gets layout.dangling()");
    // SAFETY: zero-size allocations; freeing them does nothing.
    unsafe {
        a.free(p, 0, ());
        a.dealloc(q, l, ());
    }
    assert_eq!(a.malloc_at_least(0, ()).1, 0);
    assert_eq!(
        a.stats().small.blocks,
        0,
        "zero-size requests take no memory"
    );
}

#[test]
fn remalloc_stays_in_place_within_a_class_and_copies_the_prefix() {
    let a: Cohort = Cohort::new();
    let p = a.malloc(20, ());
    // SAFETY (whole test): every pointer is live when used and freed once.
    unsafe {
        p.write_bytes(7, 20);
        assert_eq!(
            a.remalloc(p, 20, 32, ()),
            p,
            "20 and 32 B share the 32 B class"
        );
        let q = a.remalloc(p, 32, 5000, ());
        assert_ne!(q, p);
        assert!(std::slice::from_raw_parts(q, 20).iter().all(|&b| b == 7));
        // Large to large keeps the contents (mremap).
        q.write_bytes(9, 5000);
        let r = a.remalloc(q, 5000, 100_000, ());
        let r = a.remalloc(r, 100_000, 300_000, ());
        assert!(std::slice::from_raw_parts(r, 5000).iter().all(|&b| b == 9));
        let r = a.remalloc(r, 300_000, 40_000, ());
        assert!(std::slice::from_raw_parts(r, 5000).iter().all(|&b| b == 9));
        a.free(r, 40_000, ());
    }
}

#[test]
fn remalloc_shrinking_does_not_overflow_the_new_slot() {
    // Copying the old size when shrinking would overflow the new slot.
    let a: Cohort = Cohort::new();
    let l16 = 16;
    // SAFETY (whole test): every pointer is live when used and freed once.
    unsafe {
        let big = a.malloc(1000, ());
        big.write_bytes(1, 1000);
        let small = a.remalloc(big, 1000, 10, ());
        // The slot after `small` in its block belongs to a neighbour: allocate and pattern it.
        let neighbour = a.malloc(l16, ());
        neighbour.write_bytes(0x5A, l16);
        assert!(std::slice::from_raw_parts(small, 10)
            .iter()
            .all(|&b| b == 1));
        let again = a.remalloc(a.malloc(1000, ()), 1000, 10, ());
        assert!(std::slice::from_raw_parts(neighbour, l16)
            .iter()
            .all(|&b| b == 0x5A));
        a.free(again, 10, ());
        a.free(small, 10, ());
        a.free(neighbour, l16, ());
    }
}

#[test]
fn recalloc_shrinking_does_not_underflow_and_growing_zeroes() {
    // Zeroing `new - old` bytes when shrinking would underflow into a huge memset.
    let a: Cohort = Cohort::new();
    // SAFETY (whole test): every pointer is live when used and freed once.
    unsafe {
        let p = a.malloc(500, ());
        p.write_bytes(3, 500);
        let q = a.recalloc(p, 500, 100, ());
        assert!(std::slice::from_raw_parts(q, 100).iter().all(|&b| b == 3));
        // Grows in place (100 and 128 share a class): the grown bytes were 3s and are zeroed.
        let q = a.recalloc(q, 100, 128, ());
        assert!(std::slice::from_raw_parts(q.add(100), 28)
            .iter()
            .all(|&b| b == 0));
        let r = a.recalloc(q, 128, 3000, ());
        assert!(std::slice::from_raw_parts(r, 100).iter().all(|&b| b == 3));
        assert!(std::slice::from_raw_parts(r.add(128), 3000 - 128)
            .iter()
            .all(|&b| b == 0));
        a.free(r, 3000, ());
    }
}

#[test]
fn malloc_at_least_range_maps_to_one_class() {
    let a: Cohort = Cohort::new();
    for size in [1, 3, 5, 20, 100, 1000, 5000, 16000, 17000, 100_000] {
        let (p, usable) = a.malloc_at_least(size, ());
        assert!(usable >= size);
        // SAFETY: p holds `usable` bytes; freed once with a size in [size, usable].
        unsafe {
            p.write_bytes(1, usable);
            a.free(p, usable, ());
        }
        let (p, _) = a.malloc_at_least(size, ());
        // SAFETY: as above, with the requested size.
        unsafe { a.free(p, size, ()) };
    }
    assert_eq!(a.stats().small.live, 0);
    assert_eq!(a.stats().large_allocations, 0);
}

#[test]
fn alignment_contract() {
    let a: Cohort = Cohort::new();
    for size in (1..20_000).step_by(37) {
        let p = a.malloc(size, ());
        assert_eq!(
            p as usize % size.next_power_of_two().min(4096),
            0,
            "malloc({size})"
        );
        // SAFETY: allocated above.
        unsafe { a.free(p, size, ()) };
        for align in [1, 8, 16, 64, 256, 4096, 8192, 1 << 16] {
            let l = Layout::from_size_align(size, align).unwrap();
            let p = a.alloc(l, ());
            assert_eq!(p as usize % align, 0, "alloc({size}, {align})");
            // SAFETY: allocated above with l.
            unsafe { a.dealloc(p, l, ()) };
        }
    }
}

#[test]
fn empty_blocks_return_to_the_pool_and_are_reused_by_other_classes() {
    let a: Cohort<Life> = Cohort::new();
    let mut v: Vec<_> = (0..100_000).map(|_| a.malloc(64, Life::Short)).collect();
    let peak = a.stats().small.blocks;
    assert!(peak >= 3, "6.4 MB of 64 B slots span several blocks");
    for p in v.drain(..) {
        // SAFETY: allocated above.
        unsafe { a.free(p, 64, Life::Short) };
    }
    let s = a.stats();
    assert!(s.small.blocks <= 1, "only the current block stays: {s}");
    assert!(s.retained_empty_blocks >= 1);
    // Another class and lifetime takes the emptied blocks before new ones.
    let w: Vec<_> = (0..20_000).map(|_| a.malloc(200, Life::Long)).collect();
    let mut reused = 0;
    let bs = blocks(&a);
    assert!(bs.len() <= peak + 1);
    for b in bs.values() {
        reused += (b.life == 1) as usize;
    }
    assert!(reused >= 3);
    for p in w {
        // SAFETY: allocated above.
        unsafe { a.free(p, 200, Life::Long) };
    }
}

#[test]
fn tiny_blocks_fill_empty_and_refill() {
    // More 1-byte slots than one block holds, freed in an order that empties runs unevenly.
    let a: Cohort = Cohort::new();
    for size in [1usize, 2] {
        let cap = CLASSES[class_of(size, size).unwrap()].capacity as usize;
        let mut v: Vec<_> = (0..cap + 1000).map(|_| a.malloc(size, ())).collect();
        assert!(v.iter().all(|p| !p.is_null()));
        assert_eq!(a.stats().small.blocks, 2);
        // Free the last 1500 (the second block empties, the first is no longer full), then
        // fill again: the first block's freed slots come back before a new block.
        for p in v.drain(cap - 500..) {
            // SAFETY: allocated above.
            unsafe { a.free(p, size, ()) };
        }
        for _ in 0..500 {
            v.push(a.malloc(size, ()));
        }
        let s = a.stats();
        assert_eq!(s.small.live, cap);
        for p in v.drain(..).step_by(1) {
            // SAFETY: allocated above, each once.
            unsafe { a.free(p, size, ()) };
        }
        assert_eq!(a.stats().small.live, 0);
    }
}

#[test]
fn frees_after_using_another_instance_still_empty_blocks() {
    // A thread that uses two allocators (say, the global one and a lifetime-class one)
    // frees its own blocks locally whichever it used last, so emptied blocks go back.
    let a: Cohort = Cohort::new();
    let b: Cohort = Cohort::new();
    let v: Vec<_> = (0..100_000).map(|_| a.malloc(64, ())).collect();
    let peak = a.stats().small.blocks;
    assert!(peak >= 3);
    let q = b.malloc(8, ());
    for (i, p) in v.into_iter().enumerate() {
        if i % 1000 == 0 {
            // Keep switching: every 1000th free, touch the other allocator.
            // SAFETY: q is live in b; a fresh one replaces it.
            unsafe { b.free(b.malloc(8, ()), 8, ()) };
        }
        // SAFETY: allocated above.
        unsafe { a.free(p, 64, ()) };
    }
    let s = a.stats();
    assert!(s.small.blocks <= 1, "the emptied blocks left: {s}");
    // SAFETY: allocated above.
    unsafe { b.free(q, 8, ()) };
}

#[test]
fn kept_blocks_of_one_size_serve_classes_of_another() {
    let a: Cohort = Cohort::new();
    let l16 = Layout::from_size_align(16, 8).unwrap();
    // Every class has blocks of one size, so a kept block serves any class.
    assert!(CLASSES.iter().all(|c| c.block_size() == 2 << 20));
    // Fill and empty a few blocks: they are kept for reuse.
    let v: Vec<_> = (0..400_000).map(|_| a.alloc(l16, ())).collect();
    let big: Vec<(usize, usize)> = blocks(&a)
        .values()
        .map(|b| (b.base, b.block_bytes))
        .collect();
    for p in v {
        // SAFETY: allocated above.
        unsafe { a.dealloc(p, l16, ()) };
    }
    assert!(a.stats().retained_empty_blocks >= 2);
    // Another class takes them instead of new address space.
    let l200 = Layout::from_size_align(200, 8).unwrap();
    let w: Vec<_> = (0..10_000).map(|_| a.alloc(l200, ())).collect();
    let inside = |p: usize| big.iter().any(|&(b, n)| (b..b + n).contains(&p));
    assert!(
        w.iter().all(|&p| inside(p as usize)),
        "200-byte slots in the kept blocks of 16-byte slots"
    );
    for p in w {
        // SAFETY: allocated above.
        unsafe { a.dealloc(p, l200, ()) };
    }
    // SAFETY: single-threaded.
    unsafe { a.verify() }.unwrap();
}

#[test]
fn invariant_17_a_promoted_slot_is_freed_as_its_request() {
    let a: Cohort<Life> = Cohort::with_reservation(4 << 20);
    let big = a.malloc(32, Life::Short);
    let mut small = Vec::new();
    loop {
        let p = a.try_malloc(16, Life::Short);
        if p.is_null() {
            break;
        }
        small.push(p);
    }
    // The 16-byte class is full and no block is left: promoted into the 32-byte block.
    let p = a.malloc(16, Life::Short);
    assert_eq!(a.block_of(p, 32), a.block_of(big, 32));
    let promoted = |a: &Cohort<Life>| a.stats().heads.iter().map(|h| h.promoted).sum::<usize>();
    assert_eq!(promoted(&a), 1);
    // SAFETY: each wrong free is reported and changes nothing.
    unsafe {
        assert!(
            a.try_free(p, 32, Life::Short).is_err(),
            "the block's own size"
        );
        assert!(
            a.try_free(p, 16, Life::Long).is_err(),
            "another lifetime class"
        );
        assert!(
            a.try_free(big, 16, Life::Short).is_err(),
            "an unpromoted slot as 16 B"
        );
    }
    // SAFETY: single-threaded.
    unsafe { a.verify() }.unwrap();
    // SAFETY: the right free, once; then everything else.
    unsafe {
        a.try_free(p, 16, Life::Short).unwrap();
        assert!(a.try_free(p, 16, Life::Short).is_err(), "freed already");
        a.free(big, 32, Life::Short);
        for q in small {
            a.free(q, 16, Life::Short);
        }
    }
    assert_eq!(promoted(&a), 0);
    // SAFETY: single-threaded.
    unsafe { a.verify() }.unwrap();
}

/// Invariant 18: a medium free is accepted exactly when the pointer starts a
/// live run and the size rounds to its granules, in its lifetime class; anything else is
/// reported and changes nothing.
#[test]
fn invariant_18_a_medium_free_is_checked_against_its_run_table() {
    let mut a = Cohort::<Life>::new();
    for n in [9, 10, 100, 512] {
        let size = n * cohort::class::GRANULE;
        let p = a.malloc(size, Life::Short);
        // SAFETY (of each call): a rejected call changes nothing; p stays live until the
        // accepted one.
        unsafe {
            for k in 1..n {
                let inside = a
                    .try_free(p.add(k * cohort::class::GRANULE), size, Life::Short)
                    .unwrap_err();
                assert_eq!(
                    inside.problem,
                    cohort::Problem::NotARun,
                    "granule {k} of {n}"
                );
            }
            for wrong in [size - cohort::class::GRANULE, size + 1] {
                if wrong > cohort::class::MAX_SMALL {
                    let e = a.try_free(p, wrong, Life::Short).unwrap_err();
                    assert!(
                        matches!(e.problem, cohort::Problem::WrongRun { .. }),
                        "{n}, {wrong}: {e}"
                    );
                }
            }
            let e = a.try_free(p, size, Life::Long).unwrap_err();
            assert!(matches!(e.problem, cohort::Problem::WrongRun { .. }), "{e}");
            // The smallest size of the run frees it.
            a.try_free(p, size - cohort::class::GRANULE + 1, Life::Short)
                .unwrap();
        }
    }
    assert!(a.is_empty());
    a.verify_exclusive().expect("consistent");
}
