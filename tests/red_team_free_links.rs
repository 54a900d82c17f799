//! Red-team attacks (session 18) on free-slot links in a region file at rest, beyond the
//! one damage of RED-77 (a garbage link of the local free list's first slot): every link
//! lies in a free slot's first 4 bytes, past the block's first page for most slots, where
//! the state seal does not look. Each case makes a region file, leaves it (or dies with it
//! open), damages the file's bytes with nobody attached, opens it again and allocates:
//! open refusing the file is right; otherwise no allocation may hand out memory outside
//! the block, its header, a live object, or one slot twice. Each case runs in a forked
//! child under an alarm (a fault kills the child, not the test).

#[path = "common/processes.rs"]
#[allow(dead_code)]
mod processes;

use cohort::{CreateOptions, OpenOptions, Place, SharedCohort};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use test_support::raw_thread;

cohort::lifetime_classes! { enum Life { A } }

const MIB: usize = 1 << 20;
const BLOCK: usize = 2 << 20;
const SIZE: usize = 64;
/// Objects made; the last [`FREED`] of them are freed before the damage.
const MADE: usize = 100;
const FREED: usize = 8;

fn temp_file(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("cohort-fl-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// How the freed slots are freed and how the file is left.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Freed {
    /// By their owner (the local free list).
    Locally,
    /// By another thread (the block's remote list).
    Remotely,
    /// By their owner, then the process dies with the region open (no seal written).
    LocallyThenKilled,
}

/// The file offsets of the live and the freed objects of a fresh region file at `path`,
/// made and left (or abandoned) as `how` says.
fn make(path: &Path, how: Freed) -> (Vec<u64>, Vec<u64>) {
    let place = Place::File(path);
    let r = SharedCohort::<Life>::create(place, CreateOptions::new(64 * MIB)).unwrap();
    let ps: Vec<usize> = (0..MADE)
        .map(|_| r.malloc(SIZE, Life::A) as usize)
        .collect();
    let (live, freed) = ps.split_at(MADE - FREED);
    let free = |p: usize| {
        // SAFETY: allocated above with this size and class, freed once.
        unsafe { r.free(p as *mut u8, SIZE, Life::A) }
    };
    match how {
        Freed::Remotely => raw_thread::scope(|s| {
            s.spawn(|| freed.iter().for_each(|&p| free(p)));
        }),
        _ => freed.iter().for_each(|&p| free(p)),
    }
    for &p in freed {
        assert!(
            p % BLOCK >= 4096,
            "a slot in the block's first page: {p:#x}"
        );
    }
    let off = |p: &usize| r.offset_of(*p as *const u8).unwrap().get();
    let out = (
        live.iter().map(off).collect(),
        freed.iter().map(off).collect(),
    );
    if how == Freed::LocallyThenKilled {
        // Dies with the region open: no leave, no seal.
        std::mem::forget(r);
    }
    out
}

/// Makes the file (in a child of its own when the maker dies with it open), damages it
/// with `damage(file, live, freed)`, opens it and allocates: what went wrong, if anything.
fn attack(tag: &str, how: Freed, damage: impl Fn(&std::fs::File, &[u64], &[u64])) -> Vec<String> {
    let path = temp_file(tag);
    let (live, freed) = if how == Freed::LocallyThenKilled {
        // The maker's offsets come back through a file (the maker is another process).
        let list = temp_file(&format!("{tag}-offsets"));
        let pid = processes::in_child(60, || {
            let (live, freed) = make(&path, how);
            let text: Vec<String> = live.iter().chain(&freed).map(|o| o.to_string()).collect();
            std::fs::write(&list, text.join(" ")).unwrap();
            // SAFETY: _exit has no preconditions: the process dies with the region open.
            unsafe { libc::_exit(0) };
        });
        processes::wait_ok(pid);
        let all: Vec<u64> = std::fs::read_to_string(&list)
            .unwrap()
            .split(' ')
            .map(|s| s.parse().unwrap())
            .collect();
        let _ = std::fs::remove_file(&list);
        let (live, freed) = all.split_at(MADE - FREED);
        (live.to_vec(), freed.to_vec())
    } else {
        make(&path, how)
    };
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    damage(&file, &live, &freed);
    drop(file);
    let place = Place::File(&path);
    let r = match SharedCohort::<Life>::open(place, OpenOptions::new()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{tag}: refused at open: {e}");
            let _ = std::fs::remove_file(&path);
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    let live: Vec<usize> = live
        .iter()
        .map(|&o| r.ptr(cohort::Off::<u8>::new(o).unwrap()) as usize)
        .collect();
    let block = live[0] & !(BLOCK - 1);
    let mut got = Vec::new();
    for _ in 0..2 * MADE {
        let p = r.malloc(SIZE, Life::A) as usize;
        if p == 0 {
            break;
        }
        if r.offset_of(p as *const u8).is_none() {
            out.push(format!("malloc handed out {p:#x}, outside the region"));
            break;
        }
        if p & !(BLOCK - 1) == block && p % BLOCK < 4096 && !p.is_multiple_of(SIZE) {
            out.push(format!("malloc handed out {p:#x}, not a slot"));
        }
        if live.contains(&p) {
            out.push(format!("malloc handed out {p:#x}, a live object"));
        }
        if got.contains(&p) {
            out.push(format!("malloc handed out {p:#x} twice"));
            break;
        }
        got.push(p);
    }
    std::mem::forget(r);
    let _ = std::fs::remove_file(&path);
    out
}

/// Runs `attack` in a forked child: `None` when nothing went wrong.
fn in_child(
    tag: &'static str,
    how: Freed,
    damage: fn(&std::fs::File, &[u64], &[u64]),
) -> Option<String> {
    let pid = processes::in_child(60, move || {
        let bad = attack(tag, how, damage);
        assert!(bad.is_empty(), "{tag}: {bad:?}");
    });
    processes::failure(tag, processes::wait_status(pid))
}

/// Writes `link` as the first 4 bytes of every freed slot.
fn every_freed(file: &std::fs::File, freed: &[u64], link: u32) {
    for &o in freed {
        file.write_all_at(&link.to_ne_bytes(), o).unwrap();
    }
}

/// A garbage link (1 GiB into the block) in every slot of a block's remote list: the
/// remote list is taken whole into the allocation list by a collect, off the local list's
/// way.
fn remote_garbage(file: &std::fs::File, _: &[u64], freed: &[u64]) {
    every_freed(file, freed, 0x4000_0000);
}

/// The same garbage in every slot of the local free list of a file whose last process
/// died with it open (its seal is older than its state).
fn unclean_garbage(file: &std::fs::File, _: &[u64], freed: &[u64]) {
    every_freed(file, freed, 0x4000_0000);
}

/// A link that looks right: the freed slots, freed in order, are listed last freed first
/// (`f[7] -> f[6] -> ... -> f[0]`); the first slot's link is made to name a live object `L`
/// of the same block (in bounds, on a slot boundary), and `L`'s first word (its owner's
/// data, which a program may write so) names `f[5]`: the list `f[7], L, f[5], ..., f[0]`
/// has as many slots as the block counts free, every link a slot of the block (`f[6]` is
/// lost). The next allocations hand out `L`, which is live.
fn forged_to_a_live_slot(file: &std::fs::File, live: &[u64], freed: &[u64]) {
    let (head, after) = (freed[FREED - 1], freed[FREED - 3]);
    // Past the block's first page, which the state seal hashes.
    let victim = live[live.len() - 10];
    assert!(victim % BLOCK as u64 >= 4096, "in the first page");
    assert_eq!(victim / BLOCK as u64, head / BLOCK as u64, "one block");
    // (A block's file offset is a multiple of the block size, as its address is.)
    let link = |o: u64| ((o % BLOCK as u64) as u32).to_ne_bytes();
    file.write_all_at(&link(victim), head).unwrap();
    file.write_all_at(&link(after), victim).unwrap();
}

/// Garbage in a block's remote list.
#[test]
fn garbage_in_a_remote_list_at_rest_is_refused_or_harmless() {
    assert_eq!(in_child("remote", Freed::Remotely, remote_garbage), None);
}

/// Garbage in the local list of a file whose last process died with it open.
#[test]
fn garbage_in_a_file_left_unclean_is_refused_or_harmless() {
    assert_eq!(
        in_child("unclean", Freed::LocallyThenKilled, unclean_garbage),
        None
    );
}

/// RED-82: a well-formed link to a live object, the list's length kept. On main 53822bb
/// and on seal's f3cfb82 (whose open walks every list as `verify` does and refuses the
/// remote case above): "malloc handed out 0x...14c0, a live object". No walk of links and
/// counts can tell a live slot from a free one without a record of which slots are live.
#[test]
#[ignore = "RED-82: a free-slot link written at rest that names a live object of the block, the list's length kept, passes the open check (seal f3cfb82's walk) and malloc hands the live object out (main 53822bb too)"]
fn a_link_to_a_live_object_at_rest_is_refused_or_harmless() {
    assert_eq!(
        in_child("forged", Freed::Locally, forged_to_a_live_slot),
        None
    );
}
