//! Red-team attacks of session 12 on the owner's local frees (the slots a thread frees
//! into its own blocks), written against the public API only so that they hold for any
//! layout of the block header and of the free lists: the double free of the slot freed
//! last, counts (stats, verify, is_empty) with frees pending in any list, blocks handed
//! over (thread exit, join/leave), fork children and compaction with such frees, and
//! remote frees racing the owner's allocations. A test that found a defect is `#[ignore]`d
//! with its number (RED-n), its owner and the exact failure.

mod common;

use cohort::{set_misuse_hook, Cohort, Misuse};
use common::{fill, mismatch, seed_of};
use std::panic::{catch_unwind, panic_any, AssertUnwindSafe};
use std::sync::Mutex;

cohort::lifetime_classes! { enum Life { A, B } }

/// Sizes over the tiny slots, the exact strides, the 1/8 steps and the largest class.
const SIZES: [usize; 10] = [1, 8, 16, 24, 48, 100, 1000, 3000, 8000, 16384];

/// The misuse hook is one per process: the tests that set it take turns.
static TURN: Mutex<()> = Mutex::new(());

fn raise(m: &Misuse) {
    panic_any(m.clone());
}

/// `f` with the misuse hook raising: the misuse it reported, if any.
fn reported(f: impl FnOnce()) -> Option<Misuse> {
    let before = set_misuse_hook(Some(raise));
    let got = catch_unwind(AssertUnwindSafe(f));
    set_misuse_hook(before);
    got.err().map(|e| {
        *e.downcast::<Misuse>()
            .expect("the hook's payload is the Misuse")
    })
}

/// Allocates `n` objects of `size` in `life`, each filled with its pattern.
fn patterned(a: &Cohort<Life>, size: usize, life: Life, n: usize) -> Vec<usize> {
    (0..n)
        .map(|_| {
            let p = a.malloc(size, life);
            assert!(!p.is_null(), "malloc({size})");
            // SAFETY: `size` fresh bytes.
            unsafe { fill(p, seed_of(p, size), size) };
            p as usize
        })
        .collect()
}

/// Panics when an object of `ps` lost its pattern.
fn assert_whole(ps: &[usize], size: usize, what: &str) {
    for &p in ps {
        // SAFETY: live, `size` bytes.
        let bad = unsafe { mismatch(p as *const u8, seed_of(p as *const u8, size), size) };
        assert_eq!(
            bad, None,
            "{what}: a live {size}-byte object at {p:#x} changed"
        );
    }
}

/// The live small objects of `life` by the stats.
fn live_of(a: &Cohort<Life>, life: Life) -> usize {
    let name = match life {
        Life::A => "A",
        Life::B => "B",
    };
    a.stats()
        .heads
        .iter()
        .filter(|h| h.life_name == name)
        .map(|h| h.live)
        .sum()
}

/// A double free of the slot freed last is reported in every build, whatever happened in
/// between that does not touch it: allocations served from other free slots or from fresh
/// ones, slow paths that gather frees, other frees of other classes.
#[test]
fn a_double_free_of_the_slot_freed_last_is_reported_in_every_build() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let a = Cohort::<Life>::new();
    for size in SIZES {
        // Many objects: several blocks, the current one full.
        let mut ps = patterned(&a, size, Life::A, 3000);
        for case in 0..4 {
            // Frees of a few (the slots freed before the last one).
            for _ in 0..5 {
                let q = ps.pop().unwrap();
                // SAFETY: live, freed once.
                unsafe { a.free(q as *mut u8, size, Life::A) };
            }
            let p = ps.pop().unwrap();
            // SAFETY: live, freed once.
            unsafe { a.free(p as *mut u8, size, Life::A) };
            let mut more = Vec::new();
            match case {
                0 => {}
                // Allocations of the same class: they take free slots (the four freed
                // before `p`, never `p` itself when it is the first to be handed out they
                // take it: then no double free is tried below).
                1 => more = patterned(&a, size, Life::A, 4),
                // Allocations of another class and lifetime class.
                2 => more = patterned(&a, if size < 100 { 200 } else { 24 }, Life::B, 50),
                // A free of another class in between.
                _ => {
                    let o = patterned(&a, 40, Life::B, 1)[0];
                    // SAFETY: live, freed once.
                    unsafe { a.free(o as *mut u8, 40, Life::B) };
                }
            }
            if more.contains(&p) {
                // Handed out again: it is live, not free.
                ps.push(p);
            } else {
                let m = reported(|| {
                    // SAFETY: misuse under test (freed above), reported before anything
                    // changes.
                    unsafe { a.free(p as *mut u8, size, Life::A) }
                });
                assert!(
                    m.is_some(),
                    "a double free of the {size}-byte slot freed last (case {case}) was not \
                     reported"
                );
            }
            let other = if case == 2 {
                if size < 100 {
                    200
                } else {
                    24
                }
            } else {
                size
            };
            let life = if case == 2 { Life::B } else { Life::A };
            for q in more {
                if q != p {
                    // SAFETY: live, freed once.
                    unsafe { a.free(q as *mut u8, other, life) };
                }
            }
        }
        assert_whole(&ps, size, "after the double frees");
        for q in ps {
            // SAFETY: live, freed once.
            unsafe { a.free(q as *mut u8, size, Life::A) };
        }
    }
    // SAFETY: no other thread uses `a`.
    unsafe { a.verify() }.expect("verify after the reported double frees");
    assert!(a.is_empty());
}

/// Frees pending in any list of a block (freed by the owner, by another thread, or both)
/// are counted by stats and verify; the slots come back once each; is_empty sees the end.
#[test]
fn counts_see_every_free_whichever_list_holds_it() {
    let a = Cohort::<Life>::new();
    for size in SIZES {
        let n = 4000;
        let ps = patterned(&a, size, Life::A, n);
        let (mut kept, mut gone) = (Vec::new(), Vec::new());
        for (i, &p) in ps.iter().enumerate() {
            if i % 3 == 0 { &mut gone } else { &mut kept }.push(p);
        }
        // Half of the frees by the owner, half by another thread.
        let (mine, theirs) = gone.split_at(gone.len() / 2);
        for &p in mine {
            // SAFETY: live, freed once.
            unsafe { a.free(p as *mut u8, size, Life::A) };
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                for &p in theirs {
                    // SAFETY: live, freed once (by this thread).
                    unsafe { a.free(p as *mut u8, size, Life::A) };
                }
            });
        });
        assert_eq!(live_of(&a, Life::A), kept.len(), "{size}: live by stats");
        // SAFETY: no other thread uses `a` now.
        let v = unsafe { a.verify() };
        assert!(v.is_ok(), "{size}: verify with pending frees: {v:?}");
        // The freed slots come back, once each, and never over a kept object.
        let again = patterned(&a, size, Life::A, gone.len());
        let mut all: Vec<usize> = again.iter().chain(&kept).copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(
            all.len(),
            again.len() + kept.len(),
            "{size}: a slot handed out twice"
        );
        assert_whole(&kept, size, "after the slots came back");
        assert_whole(&again, size, "the slots that came back");
        assert_eq!(live_of(&a, Life::A), n, "{size}: live by stats after");
        for p in kept.into_iter().chain(again) {
            // SAFETY: live, freed once.
            unsafe { a.free(p as *mut u8, size, Life::A) };
        }
        assert_eq!(live_of(&a, Life::A), 0, "{size}: live by stats at the end");
        assert!(a.is_empty(), "{size}: is_empty at the end");
    }
    // SAFETY: no other thread uses `a`.
    unsafe { a.verify() }.expect("verify at the end");
}

/// A thread that freed some of its objects and exits (or leaves a join) hands its blocks
/// over with those frees: the next owner hands out each freed slot once and no kept one.
#[test]
fn blocks_handed_over_with_pending_frees_keep_their_objects() {
    let a = Cohort::<Life>::new();
    for (round, size) in SIZES.into_iter().enumerate() {
        let by_join = round % 2 == 1;
        let kept: Vec<usize> = std::thread::scope(|s| {
            s.spawn(|| {
                let work = |ps: Vec<usize>, free: &dyn Fn(usize)| {
                    let mut kept = Vec::new();
                    for (i, p) in ps.into_iter().enumerate() {
                        if i % 4 == 1 {
                            free(p);
                        } else {
                            kept.push(p);
                        }
                    }
                    kept
                };
                if by_join {
                    let j = a.join(round).expect("join");
                    let ps = (0..3000)
                        .map(|_| {
                            let p = j.malloc(size, Life::A);
                            assert!(!p.is_null());
                            // SAFETY: fresh, `size` bytes.
                            unsafe { fill(p, seed_of(p, size), size) };
                            p as usize
                        })
                        .collect();
                    let kept = work(ps, &|p| {
                        // SAFETY: live, freed once.
                        unsafe { j.free(p as *mut u8, size, Life::A) }
                    });
                    j.leave();
                    kept
                } else {
                    let ps = patterned(&a, size, Life::A, 3000);
                    work(ps, &|p| {
                        // SAFETY: live, freed once.
                        unsafe { a.free(p as *mut u8, size, Life::A) }
                    })
                }
            })
            .join()
            .unwrap()
        });
        assert_eq!(
            live_of(&a, Life::A),
            kept.len(),
            "{size}: live by stats after the handover"
        );
        // SAFETY: no other thread uses `a`.
        let v = unsafe { a.verify() };
        assert!(v.is_ok(), "{size}: verify after the handover: {v:?}");
        // Another thread takes the blocks over and fills every free slot.
        let again: Vec<usize> = std::thread::scope(|s| {
            s.spawn(|| patterned(&a, size, Life::A, 1000))
                .join()
                .unwrap()
        });
        let mut all: Vec<usize> = again.iter().chain(&kept).copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(
            all.len(),
            again.len() + kept.len(),
            "{size}: a slot handed out twice"
        );
        assert_whole(&kept, size, "after the handover");
        for p in kept.into_iter().chain(again) {
            // SAFETY: live, freed once.
            unsafe { a.free(p as *mut u8, size, Life::A) };
        }
        assert!(a.is_empty(), "{size}: is_empty at the end");
    }
}

/// A fork child of a process whose threads have frees pending in their blocks (one thread
/// freeing at the moment of the fork) allocates no live object and verifies.
#[test]
fn a_fork_child_with_pending_frees_hands_out_no_live_object() {
    let a = Cohort::<Life>::new();
    let size = 48;
    let ps = patterned(&a, size, Life::A, 6000);
    let (mut kept, mut gone) = (Vec::new(), Vec::new());
    for (i, p) in ps.into_iter().enumerate() {
        if i % 3 == 0 { &mut gone } else { &mut kept }.push(p);
    }
    for &p in &gone[..gone.len() / 2] {
        // SAFETY: live, freed once.
        unsafe { a.free(p as *mut u8, size, Life::A) };
    }
    let theirs = &gone[gone.len() / 2..];
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        // A thread churning its own objects (frees pending in its blocks at any moment)
        // and freeing the rest of `gone` remotely, while the main thread forks.
        s.spawn(|| {
            let mut mine = patterned(&a, size, Life::A, 500);
            for &p in theirs {
                // SAFETY: live, freed once (by this thread).
                unsafe { a.free(p as *mut u8, size, Life::A) };
            }
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for p in mine.drain(..250) {
                    // SAFETY: live, freed once.
                    unsafe { a.free(p as *mut u8, size, Life::A) };
                }
                mine.extend(patterned(&a, size, Life::A, 250));
            }
            for p in mine {
                // SAFETY: live, freed once.
                unsafe { a.free(p as *mut u8, size, Life::A) };
            }
        });
        // Stops the churning thread however this test ends (a failed round panics here).
        let _stop = common::StopOnDrop(&stop);
        for round in 0..20 {
            let child = common_child(30, || {
                let again = patterned(&a, size, Life::A, 8000);
                let mut all: Vec<usize> = again.iter().chain(&kept).copied().collect();
                all.sort_unstable();
                all.dedup();
                assert_eq!(
                    all.len(),
                    again.len() + kept.len(),
                    "a slot handed out twice"
                );
                assert_whole(&kept, size, "in the fork child");
                for p in again {
                    // SAFETY: live, freed once.
                    unsafe { a.free(p as *mut u8, size, Life::A) };
                }
            });
            let status = wait(child);
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "round {round}: the fork child failed: status {status:#x}"
            );
        }
    });
    assert_whole(&kept, size, "in the parent");
    for p in kept {
        // SAFETY: live, freed once.
        unsafe { a.free(p as *mut u8, size, Life::A) };
    }
    assert!(a.is_empty());
}

/// Blocks emptied by their owner's frees alone (no slow path after the last free) are
/// empty for `compact`: their memory goes back.
#[test]
fn blocks_emptied_by_local_frees_go_back_on_compact() {
    let a = Cohort::<Life>::new();
    for size in [16, 1000, 8000] {
        let ps = patterned(&a, size, Life::A, (64 << 20) / size);
        let blocks = a.stats().small.blocks;
        assert!(blocks >= 30, "{size}: {blocks} blocks");
        for p in ps {
            // SAFETY: live, freed once.
            unsafe { a.free(p as *mut u8, size, Life::A) };
        }
        assert_eq!(live_of(&a, Life::A), 0);
        a.compact();
        let s = a.stats();
        assert!(
            s.small.blocks <= 2 && s.small.resident_bytes <= 8 << 20,
            "{size}: after freeing every object and compact: {} blocks, {} bytes resident \
             (before: {blocks} blocks)",
            s.small.blocks,
            s.small.resident_bytes
        );
    }
}

/// Remote frees racing the owner's allocations and frees (the owner gathering its own and
/// the remote frees whenever its lists run dry), every object patterned: nothing handed
/// out twice, every count right at the end.
#[test]
fn remote_frees_race_the_owners_own_frees_and_allocations() {
    let owned = Cohort::<Life>::new();
    let a = &owned;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<usize>>(4);
    let sizes = [8, 24, 64, 1000];
    std::thread::scope(|s| {
        s.spawn(move || {
            for batch in rx {
                for (i, p) in batch.into_iter().enumerate() {
                    let size = sizes[i % sizes.len()];
                    assert_whole(&[p], size, "before its remote free");
                    // SAFETY: live, freed once (the owner gave it away).
                    unsafe { a.free(p as *mut u8, size, Life::A) };
                }
            }
        });
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut mine: Vec<(usize, usize)> = Vec::new();
        for _ in 0..300 {
            let mut batch = Vec::new();
            for i in 0..200 {
                let size = sizes[i % sizes.len()];
                let p = patterned(a, size, Life::A, 1)[0];
                batch.push(p);
                let q = patterned(a, size, Life::A, 1)[0];
                mine.push((q, size));
            }
            tx.send(batch).unwrap();
            // The owner frees a random share of its own.
            let mut k = 0;
            while k < mine.len() {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                if rng.is_multiple_of(3) {
                    let (q, size) = mine.swap_remove(k);
                    assert_whole(&[q], size, "before its local free");
                    // SAFETY: live, freed once.
                    unsafe { a.free(q as *mut u8, size, Life::A) };
                } else {
                    k += 1;
                }
            }
        }
        drop(tx);
        for &(q, size) in &mine {
            assert_whole(&[q], size, "at the end");
        }
        for (q, size) in mine {
            // SAFETY: live, freed once.
            unsafe { a.free(q as *mut u8, size, Life::A) };
        }
    });
    assert!(a.is_empty());
    // SAFETY: no other thread uses `a`.
    unsafe { a.verify() }.expect("verify at the end");
}

fn common_child(secs: u32, f: impl FnOnce()) -> libc::pid_t {
    common::processes::in_child(secs, f)
}

fn wait(pid: libc::pid_t) -> i32 {
    common::processes::wait_status(pid)
}

/// The slow-path allocations of slots of `stride` bytes in class `A` so far (the stats'
/// event counter).
fn slow_allocs(a: &Cohort<Life>, stride: usize) -> u64 {
    let s = a.stats();
    s.events
        .iter()
        .filter(|e| e.life_name == "A" && e.stride == stride)
        .map(|e| e.alloc_slow)
        .sum()
}

/// Pairs of a free and an allocation of one size at the edge of a block: the current block
/// full (no free slot, no fresh one), alone or beside blocks with one free slot each. The
/// freed slot is the one the next allocation needs: the pairs must not take the slow path
/// each time (a slow path per pair would cost every loop that frees and allocates one
/// object at a time in a full block). Counted by the stats' events, not timed.
#[test]
fn free_and_allocate_pairs_at_a_full_block_stay_off_the_slow_path() {
    const PAIRS: u64 = 20_000;
    for (size, others) in [(16, 0), (64, 0), (1000, 0), (16, 40), (64, 40), (1000, 40)] {
        let a = Cohort::<Life>::new();
        // `others + 1` blocks filled to their last slot: the current one last.
        let first = patterned(&a, size, Life::A, 1)[0];
        let head = *a.stats().heads.iter().find(|h| h.live == 1).unwrap();
        let (per_block, stride) = (head.capacity, head.stride);
        let mut mine = patterned(&a, size, Life::A, per_block * (others + 1) - 1);
        mine.insert(0, first);
        let current = *mine.last().unwrap() >> 21;
        let blocks: std::collections::HashSet<usize> = mine.iter().map(|&p| p >> 21).collect();
        assert_eq!(
            blocks.len(),
            others + 1,
            "{size}: {per_block} slots a block"
        );
        // One slot freed in each of the others (listed, nearly full).
        let mut freed = std::collections::HashSet::new();
        mine.retain(|&p| {
            let free = p >> 21 != current && freed.insert(p >> 21);
            if free {
                // SAFETY: live, freed once.
                unsafe { a.free(p as *mut u8, size, Life::A) };
            }
            !free
        });
        let before = slow_allocs(&a, stride);
        let mut last = mine.pop().unwrap();
        for _ in 0..PAIRS {
            // SAFETY: live, freed once.
            unsafe { a.free(last as *mut u8, size, Life::A) };
            last = a.malloc(size, Life::A) as usize;
            assert_ne!(last, 0);
        }
        mine.push(last);
        let slow = slow_allocs(&a, stride) - before;
        assert!(
            slow <= PAIRS / 16,
            "{size} B beside {others} nearly full blocks: {slow} of {PAIRS} free-and-allocate \
             pairs took the slow path"
        );
        for q in mine {
            // SAFETY: live, freed once.
            unsafe { a.free(q as *mut u8, size, Life::A) };
        }
        assert!(a.is_empty());
    }
}
