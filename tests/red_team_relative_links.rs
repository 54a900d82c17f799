//! Free slots' links relative to the slot: damaged links in a region file at rest, seen
//! after the file is opened again.

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

/// Makes a region file whose one block of `SIZE`-byte slots has 8 slots freed last
/// (the local free list), then writes `link` as the link of the list's first slot, closes
/// the file, opens it again and allocates 64 slots. Returns a description of what went
/// wrong, if anything.
fn damaged(tag: &str, link: impl Fn(u32) -> u32) -> Vec<String> {
    let path = temp_file(tag);
    let place = Place::File(&path);
    let mut offs = Vec::new();
    {
        let r = SharedCohort::<Life>::create(place, CreateOptions::new(64 * MIB)).unwrap();
        let ps: Vec<_> = (0..16).map(|_| r.malloc(SIZE, Life::A)).collect();
        for &p in &ps[8..] {
            // SAFETY: allocated above with this size and class, freed once.
            unsafe { r.free(p, SIZE, Life::A) };
        }
        let last = ps[15];
        let off = (last as usize) % BLOCK;
        // SAFETY: a free slot of ours: its first 4 bytes are its link (the damage).
        unsafe { (last as *mut u32).write_volatile(link(off as u32)) };
        for &p in &ps[..8] {
            offs.push(r.offset_of(p).unwrap());
        }
    }
    let mut out = Vec::new();
    let r = SharedCohort::<Life>::open(place, OpenOptions::new()).unwrap();
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

fn in_child_report(tag: &'static str, link: fn(u32) -> u32) {
    let pid = processes::in_child(60, move || {
        let bad = damaged(tag, link);
        assert!(bad.is_empty(), "{tag}: {bad:?}");
    });
    let status = processes::wait_status(pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{tag}: status {status:#x} (signal {})",
        if libc::WIFSIGNALED(status) {
            libc::WTERMSIG(status)
        } else {
            0
        }
    );
}

/// A zeroed link (a page of the file read as zeros, a torn write, a hole punched): the
/// list must end there or be refused, never loop on one slot. With links relative to the
/// slot, 0 names the slot itself.
#[test]
fn a_zeroed_link_is_never_a_loop() {
    in_child_report("zero", |_| 0);
}

/// Garbage links: the allocation after opening the damaged file must never hand out an
/// address outside the slot's block or in its header (or fault).
#[test]
#[ignore = "RED-77: a garbage free-slot link in a region file at rest is not refused by open: malloc then faults (SIGSEGV: 1 GiB past, or 4 KiB before the block) or hands out the block header's bytes (link to offset 64) as 64-byte slots; verify reports each; every run on main 7b62bf3 and on ddca758"]
fn garbage_links_never_hand_out_memory_outside_the_slots() {
    in_child_report("far", |_| 0x4000_0000);
    in_child_report("back", |off| 0u32.wrapping_sub(off).wrapping_sub(4096));
    in_child_report("header", |off| 64u32.wrapping_sub(off));
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
