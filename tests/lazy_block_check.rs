//! The blocks' lazy check (RED-77 without a walk of every link at open): a free slot's link
//! damaged while a region file was at rest is found when a process first takes its block,
//! whichever process that is and whenever, and the block is taken out of use: nothing is
//! handed out of it, `verify` names it, the statistics count it.

mod red_team_common;

use cohort::{CreateOptions, OpenOptions, Place, SharedCohort};
use red_team_common::{damage_at_rest, garbage_link_file, in_child, shared_words, wait};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;

cohort::lifetime_classes! { enum Life { A } }

const BLOCK: usize = 2 << 20;
/// The class whose block is damaged.
const SIZE: usize = 64;
/// Another class, whose block is whole.
const OTHER: usize = 1024;

/// A region file with a block of `SIZE` B slots whose free list's first link is garbage
/// and a whole block of `OTHER` B slots (`garbage_link_file`). Returns the file and the
/// damaged block's offset.
fn damaged_file(tag: &str) -> (PathBuf, u64) {
    let path = std::env::temp_dir().join(format!("cohort-lazy-{tag}-{}", std::process::id()));
    let at = garbage_link_file(&path, Life::A, SIZE, Some(OTHER));
    (path, at & !(BLOCK as u64 - 1))
}

/// Allocates `n` slots of `size` B: none may be outside the region, in block `damaged` (an
/// offset), at one of the live objects `live` (offsets) or handed out twice. Returns what
/// went wrong.
fn allocate_around(
    r: &SharedCohort<Life>,
    size: usize,
    n: usize,
    damaged: u64,
    live: &[u64],
) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..n {
        let p = r.malloc(size, Life::A);
        let problem = match r.offset_of(p).map(|o| o.get()) {
            None => "outside the region",
            Some(off) if off & !(BLOCK as u64 - 1) == damaged => "in the damaged block",
            Some(off) if live.contains(&off) || got.contains(&off) => "handed out twice",
            Some(off) => {
                got.push(off);
                continue;
            }
        };
        return vec![format!("malloc handed out {p:?}, {problem}")];
    }
    Vec::new()
}

/// What a process that has the region open checks once it took the damaged block's
/// class: one block counted damaged, `verify` names it.
fn found(r: &SharedCohort<Life>, damaged: u64) -> Vec<String> {
    let mut bad = Vec::new();
    let stats = r.stats();
    if stats.damaged_blocks != 1 || !stats.to_string().contains("1 blocks found damaged") {
        bad.push(format!("damaged_blocks {}: {stats}", stats.damaged_blocks));
    }
    // SAFETY: no other thread of this process uses the region; the other process waits.
    match unsafe { r.verify() } {
        Ok(v) => bad.push(format!("verify found nothing: {v}")),
        Err(e) => {
            let block = r.offset_of(e.block as *const u8).map(|o| o.get());
            if block != Some(damaged) || !e.problem.contains("0x40000000") {
                bad.push(format!("verify named another block or problem: {e}"));
            }
        }
    }
    bad
}

/// Runs `f` in a child under an alarm; fails with what it reported, or how it died.
fn in_child_ok(f: impl FnOnce() -> Vec<String>) {
    let pid = in_child(60, || {
        let bad = f();
        assert!(bad.is_empty(), "{bad:#?}");
    });
    match wait(pid) {
        Ok(0) => {}
        Ok(status) => panic!("child failed: status {status} (see its output)"),
        Err(signal) => panic!("child killed by signal {signal}"),
    }
}

/// The tests of this binary run one at a time: a fork child of another test made while
/// this one's process has a region open is attached to it as long as it lives, so an open
/// meant to be the first of a region nobody has open would not be, and would start no
/// check generation (once, a CI run saw an adopted heap hand out a slot of the damaged
/// block that way: 'malloc handed out 0xa03240, of the damaged block').
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ALONE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn open(path: &Path) -> SharedCohort<Life> {
    SharedCohort::<Life>::open(Place::File(path), OpenOptions::new()).expect("open")
}

/// The open reads no link: a damaged file opens, another class allocates, and the damage
/// is found when the damaged block's class is first allocated, later.
#[test]
fn damage_in_a_block_taken_later_is_found_when_taken() {
    let _alone = one_at_a_time();
    let (path, damaged) = damaged_file("later");
    in_child_ok(|| {
        let r = open(&path);
        let mut bad = Vec::new();
        let q: Vec<_> = (0..8).map(|_| r.malloc(OTHER, Life::A)).collect();
        if q.iter().any(|p| p.is_null()) || r.stats().damaged_blocks != 0 {
            bad.push("the whole block's class".to_string());
        }
        bad.extend(allocate_around(&r, SIZE, 64, damaged, &[]));
        bad.extend(found(&r, damaged));
        std::mem::forget(r);
        bad
    });
    let _ = std::fs::remove_file(&path);
}

/// Opens the file in one child (the first opener: it starts the check generation), which
/// allocates `SIZE` slots first when `first_takes`, then lets `second` run in another child
/// that opens the region while the first still has it open; the first leaves after.
fn two_processes(tag: &str, first_takes: bool) {
    let (path, damaged) = damaged_file(tag);
    let words = shared_words(2);
    let first = in_child(60, || {
        let r = open(&path);
        let bad = if first_takes {
            allocate_around(&r, SIZE, 64, damaged, &[])
        } else {
            Vec::new()
        };
        words[0].store(1 + u64::from(!bad.is_empty()), Relaxed);
        while words[1].load(Relaxed) == 0 {
            std::hint::spin_loop();
        }
        drop(r);
        assert!(bad.is_empty(), "{bad:#?}");
    });
    while words[0].load(Relaxed) == 0 {
        std::hint::spin_loop();
    }
    in_child_ok(|| {
        let r = open(&path);
        let mut bad = allocate_around(&r, SIZE, 64, damaged, &[]);
        bad.extend(found(&r, damaged));
        std::mem::forget(r);
        bad
    });
    words[1].store(1, Relaxed);
    assert_eq!(wait(first), Ok(0), "the first opener");
    let _ = std::fs::remove_file(&path);
}

/// A second process, attached while the first opener still has the region open, takes
/// the damaged block first: it checks it (the generation is the first opener's).
#[test]
fn damage_is_found_by_a_process_attached_while_the_first_has_it_open() {
    let _alone = one_at_a_time();
    two_processes("second", false);
}

/// The first opener found the damage: a second process attached meanwhile never takes
/// the block (the mark is in the region, for every process), and sees it counted.
#[test]
fn a_block_found_damaged_stays_out_of_use_for_a_second_process() {
    let _alone = one_at_a_time();
    two_processes("shared", true);
}

/// The next open of the file, by a later process, checks the block again (a new
/// generation): found damaged again, never handed out.
#[test]
fn damage_is_found_again_after_every_process_left() {
    let _alone = one_at_a_time();
    let (path, damaged) = damaged_file("again");
    for _ in 0..2 {
        in_child_ok(|| {
            let r = open(&path);
            let mut bad = allocate_around(&r, SIZE, 64, damaged, &[]);
            bad.extend(found(&r, damaged));
            drop(r);
            bad
        });
    }
    let _ = std::fs::remove_file(&path);
}

/// A tiny block (1-byte slots, linked by their index in a run of 255): the first free
/// slot's link damaged at rest to name the slot itself (a cycle) is found when the block
/// is first taken, and no slot is handed out twice.
#[test]
fn a_cycle_in_a_tiny_run_list_is_found_when_taken() {
    let _alone = one_at_a_time();
    let path = std::env::temp_dir().join(format!("cohort-lazy-tiny-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let (at, live) = {
        let r = SharedCohort::<Life>::create(Place::File(&path), CreateOptions::new(64 << 20))
            .expect("create");
        let ps: Vec<_> = (0..300).map(|_| r.malloc(1, Life::A)).collect();
        for &p in &ps[292..] {
            // SAFETY: allocated above with this size and class, freed once.
            unsafe { r.free(p, 1, Life::A) };
        }
        let last = ps[299];
        assert!(last as usize % BLOCK >= 4096, "past the first page");
        let live: Vec<u64> = ps[..292]
            .iter()
            .map(|&p| r.offset_of(p).unwrap().get())
            .collect();
        // The block's first slot is the first allocated, the others follow it.
        assert_eq!(live[291] - live[0], 291, "one block, slots in order");
        (r.offset_of(last).unwrap().get(), live)
    };
    // The slot's index in its run (255 slots a run, from the block's first slot).
    let index = ((at - live[0]) % 255) as u8;
    damage_at_rest(&path, at, |_| [index]);
    let damaged = at & !(BLOCK as u64 - 1);
    in_child_ok(|| {
        let r = open(&path);
        let mut bad = allocate_around(&r, 1, 16, damaged, &live);
        if r.stats().damaged_blocks != 1 {
            bad.push(format!("damaged_blocks {}", r.stats().damaged_blocks));
        }
        std::mem::forget(r);
        bad
    });
    let _ = std::fs::remove_file(&path);
}

/// A block a heap keeps (retired full by a thread that exited, then freed into by another
/// thread: on the exited heap's returned stack), whose remote list's link is damaged at
/// rest, is checked when the heap that adopts the exited one takes it from its own list.
#[test]
fn damage_in_a_block_of_an_adopted_heap_is_found_when_taken() {
    let _alone = one_at_a_time();
    let path = std::env::temp_dir().join(format!("cohort-lazy-heap-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let (at, live) = {
        let r = SharedCohort::<Life>::create(Place::File(&path), CreateOptions::new(64 << 20))
            .expect("create");
        // More than a block's slots: the first block is retired full, kept by the heap.
        let n = 2 * (2 << 20) / SIZE;
        let offs: Vec<u64> = std::thread::scope(|s| {
            s.spawn(|| {
                (0..n)
                    .map(|_| r.offset_of(r.malloc(SIZE, Life::A)).unwrap().get())
                    .collect()
            })
            .join()
            .unwrap()
        });
        let freed = offs[200];
        assert!(freed % BLOCK as u64 >= 4096, "past the first page");
        // SAFETY: allocated by the thread above with this size and class, freed once.
        unsafe { r.free(r.ptr(cohort::Off::<u8>::new(freed).unwrap()), SIZE, Life::A) };
        let live: Vec<u64> = offs.into_iter().filter(|&o| o != freed).collect();
        (freed, live)
    };
    damage_at_rest(&path, at, |_| 0x4000_0000u32.to_ne_bytes());
    let damaged = at & !(BLOCK as u64 - 1);
    in_child_ok(|| {
        let r = open(&path);
        let mut bad = allocate_around(&r, SIZE, 64, damaged, &live);
        bad.extend(found(&r, damaged));
        std::mem::forget(r);
        bad
    });
    let _ = std::fs::remove_file(&path);
}
