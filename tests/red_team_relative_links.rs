//! Free slots' links: damaged links in a region file at rest, seen after the file is
//! opened again (RED-76, RED-77), and in a private instance.

#[path = "common/processes.rs"]
#[allow(dead_code)]
mod processes;

use cohort::{CreateOptions, OpenOptions, Place, SharedCohort};
use std::path::PathBuf;

cohort::lifetime_classes! { enum Life { A } }

const MIB: usize = 1 << 20;
const BLOCK: usize = 2 << 20;
const SIZE: usize = 64;

fn temp_file(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("cohort-rl-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// Makes a region file whose one block of `SIZE`-byte slots has its 8 slots allocated
/// last freed (the local free list, past the block's first page, which the state seal
/// covers), leaves it, and writes `link` into the file as the link of the list's first slot
/// (damage at rest: the file's bytes, nobody attached). Returns the file and the offsets
/// of the 92 slots still live.
fn damage(tag: &str, link: impl Fn(u32) -> u32) -> (PathBuf, Vec<cohort::Off<u8>>) {
    use std::os::unix::fs::FileExt;
    let path = temp_file(tag);
    let place = Place::File(&path);
    let mut offs = Vec::new();
    let (at, off) = {
        let r = SharedCohort::<Life>::create(place, CreateOptions::new(64 * MIB)).unwrap();
        let ps: Vec<_> = (0..100).map(|_| r.malloc(SIZE, Life::A)).collect();
        for &p in &ps[92..] {
            // SAFETY: allocated above with this size and class, freed once.
            unsafe { r.free(p, SIZE, Life::A) };
        }
        let last = ps[99];
        let off = (last as usize) % BLOCK;
        assert!(
            off >= 4096,
            "the slot is in the block's first page: {off:#x}"
        );
        for &p in &ps[..92] {
            offs.push(r.offset_of(p).unwrap());
        }
        (r.offset_of(last).unwrap().get(), off as u32)
    };
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&link(off).to_ne_bytes(), at).unwrap();
    drop(file);
    (path, offs)
}

/// [`damage`], then opens the file again and allocates 64 slots. Returns what went wrong,
/// if anything (open refusing the file is right).
fn damaged(tag: &str, link: impl Fn(u32) -> u32) -> Vec<String> {
    let (path, offs) = damage(tag, link);
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
    // SAFETY: no other thread uses the region.
    match unsafe { r.verify() } {
        Ok(v) => out.push(format!("verify found nothing: {v:?}")),
        Err(e) => eprintln!("{tag}: verify: {e}"),
    }
    let live: Vec<usize> = offs.iter().map(|&o| r.ptr(o) as usize).collect();
    let blocks: Vec<usize> = live.iter().map(|p| p & !(BLOCK - 1)).collect();
    let mut got = Vec::new();
    for _ in 0..64 {
        let p = r.malloc(SIZE, Life::A) as usize;
        if p == 0 {
            break;
        }
        if r.offset_of(p as *const u8).is_none() {
            out.push(format!("malloc handed out {p:#x}, outside the region"));
            break;
        }
        if p & !(BLOCK - 1) == blocks[0] && p % BLOCK < 128 {
            out.push(format!("malloc handed out {p:#x}, in the block's header"));
        }
        if got.contains(&p) || live.contains(&p) {
            out.push(format!("malloc handed out {p:#x} twice"));
            break;
        }
        got.push(p);
    }
    std::mem::forget(r);
    let _ = std::fs::remove_file(&path);
    out
}

/// [`damaged`] in a forked child under an alarm: what went wrong, if anything (a fault
/// kills the child).
fn in_child_status(tag: &'static str, link: fn(u32) -> u32) -> Option<String> {
    let pid = processes::in_child(60, move || {
        let bad = damaged(tag, link);
        assert!(bad.is_empty(), "{tag}: {bad:?}");
    });
    let status = processes::wait_status(pid);
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        return None;
    }
    Some(match libc::WIFSIGNALED(status) {
        true => format!("{tag}: killed by signal {}", libc::WTERMSIG(status)),
        false => format!("{tag}: status {status:#x} (see its output)"),
    })
}

/// A damage: its name and the link it writes, from the slot's offset in its block.
type Case = (&'static str, fn(u32) -> u32);

fn in_child_report(cases: &[Case]) {
    let bad: Vec<String> = cases
        .iter()
        .filter_map(|&(tag, link)| in_child_status(tag, link))
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}

/// A zeroed link (a page of the file read as zeros, a torn write, a hole punched): the
/// list must end there or be refused, never loop on one slot. With links relative to the
/// slot, 0 names the slot itself.
#[test]
fn a_zeroed_link_is_never_a_loop() {
    in_child_report(&[("zero", |_| 0)]);
}

/// Garbage links: the allocation after opening the damaged file must never hand out an
/// address outside the slot's block or in its header (or fault).
#[test]
fn garbage_links_never_hand_out_memory_outside_the_slots() {
    in_child_report(&[
        ("far", |_| 0x4000_0000),
        ("back", |off| 0u32.wrapping_sub(off).wrapping_sub(4096)),
        ("header", |off| 64u32.wrapping_sub(off)),
    ]);
}

/// RED-77: with `check_lists_at_open`, every damaged link of a file at rest is refused at
/// open (`RegionError::BlocksDamaged`, naming the block), before anything is allocated, and
/// refused again at the next open (the refused opener writes no seal), however the link is
/// wrong: zeroed (the list ends short of the block's counts), outside the block, into its
/// header, into the next block, off a slot boundary, to itself (a cycle), to a live slot,
/// to a never-used slot (at or above the block's bump).
#[test]
fn every_damaged_link_of_a_file_at_rest_is_refused_at_open() {
    let cases: [Case; 9] = [
        ("r-zero", |_| 0),
        ("r-far", |_| 0x4000_0000),
        ("r-header", |_| 8),
        ("r-next-block", |off| off + BLOCK as u32),
        ("r-unaligned", |off| off - SIZE as u32 + 4),
        ("r-cycle", |off| off),
        ("r-live", |off| off - 8 * SIZE as u32),
        ("r-never-used", |off| off + 4 * SIZE as u32),
        ("r-back", |off| 0u32.wrapping_sub(off).wrapping_sub(4096)),
    ];
    let pid = processes::in_child(120, move || {
        let mut bad = Vec::new();
        for (tag, link) in cases {
            let (path, _) = damage(tag, link);
            for attempt in ["first", "second"] {
                let at_open = OpenOptions::new().check_lists_at_open(true);
                match SharedCohort::<Life>::open(Place::File(&path), at_open) {
                    Err(e @ cohort::RegionError::BlocksDamaged { .. }) => {
                        eprintln!("{tag}: {attempt} open: {e}")
                    }
                    Err(e) => bad.push(format!("{tag}: {attempt} open: another error: {e}")),
                    Ok(r) => {
                        bad.push(format!("{tag}: {attempt} open accepted the file"));
                        std::mem::forget(r);
                        break;
                    }
                }
            }
            let _ = std::fs::remove_file(&path);
        }
        assert!(bad.is_empty(), "{bad:#?}");
    });
    processes::wait_ok(pid);
}

/// The same file left whole opens, its lists checked: the check refuses damage only.
#[test]
fn an_undamaged_file_at_rest_opens_after_the_check() {
    let pid = processes::in_child(60, || {
        let (path, offs) = damage("whole", |off| off - SIZE as u32);
        let r = SharedCohort::<Life>::open(Place::File(&path), OpenOptions::new())
            .expect("the file is whole: the link written is the one it held");
        // SAFETY: no other thread uses the region.
        let v = unsafe { r.verify() }.expect("consistent");
        assert_eq!(v.live, offs.len());
        drop(r);
        let _ = std::fs::remove_file(&path);
    });
    processes::wait_ok(pid);
}

/// `OpenOptions::check_blocks(false)` opens the damaged file unchecked (the caller trusts
/// it): only `verify` finds the damage then.
#[test]
fn an_unchecked_open_leaves_the_damage_to_verify() {
    let pid = processes::in_child(60, || {
        let (path, _) = damage("unchecked", |_| 0x4000_0000);
        let options = OpenOptions::new().check_blocks(false);
        let r = SharedCohort::<Life>::open(Place::File(&path), options).expect("unchecked");
        // SAFETY: no other thread uses the region.
        let found = unsafe { r.verify() }.expect_err("the damaged link");
        assert!(found.problem.contains("0x40000000"), "{found}");
        drop(r);
        let at_open = OpenOptions::new().check_lists_at_open(true);
        let checked = SharedCohort::<Life>::open(Place::File(&path), at_open);
        assert!(
            matches!(checked, Err(cohort::RegionError::BlocksDamaged { .. })),
            "{:?}",
            checked.map(|_| ())
        );
        let _ = std::fs::remove_file(&path);
    });
    processes::wait_ok(pid);
}

/// The same damage in a private instance: a program that writes a 0 into the first word of
/// an object it freed last (a use after free, the commonest stray write) must not make
/// every later allocation of the class the same slot.
#[test]
fn a_zero_written_after_free_never_hands_a_slot_twice() {
    let pid = processes::in_child(60, || {
        let a = cohort::Cohort::<Life>::new();
        let ps: Vec<_> = (0..16).map(|_| a.malloc(SIZE, Life::A)).collect();
        for &p in &ps[8..] {
            // SAFETY: allocated above with this size and class, freed once.
            unsafe { a.free(p, SIZE, Life::A) };
        }
        // SAFETY: the damage under test: a stray 0 into a freed slot's first word.
        unsafe { (ps[15] as *mut u32).write_volatile(0) };
        let mut got: Vec<*mut u8> = ps[..8].to_vec();
        let mut twice = 0;
        // Past the bump window (a page), so that the freed slots are collected.
        for _ in 0..200 {
            let p = a.malloc(SIZE, Life::A);
            if got.contains(&p) {
                twice += 1;
            }
            got.push(p);
        }
        std::mem::forget(a);
        assert_eq!(
            twice, 0,
            "{twice} of 200 allocations handed out a slot again"
        );
    });
    let status = processes::wait_status(pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "status {status:#x}"
    );
}
