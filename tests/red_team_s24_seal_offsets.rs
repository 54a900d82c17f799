//! Red-team attack on the offsets of a named region at the end of its blocks: a region's
//! last page past its blocks is the tail seal page (design.md: `[capacity - seal,
//! capacity)`), no allocation's. `SharedCohort::offset_of` promises `None` for a pointer
//! "not into the region's blocks", `ptr` (so `get`, `get_mut`, `free_in`, `set_root`,
//! `compare_exchange_root`) panics for a value "not within the region's blocks", and a
//! salvage's `root` and `read` give nothing outside them: a value written there through
//! those calls would overwrite the seal, and the region be refused at its next open.

use cohort::{CreateOptions, Off, OpenOptions, Place, SharedCohort};
use std::panic::{catch_unwind, AssertUnwindSafe};

cohort::lifetime_classes! { enum Life { A } }

const MIB: usize = 1 << 20;

fn path(tag: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("cohort-red24-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// RED-152: on main 6df495a (release-tests) the tail seal page's offsets were taken for
/// the blocks' (11 checks fail): 'offset_of(the seal page's byte at offset 0x800000 of
/// 0x801000): Some(0x800000)', 'ptr(0x800000) accepted', 'set_root(0x800000) accepted'
/// (and at 0x800008, 0x800ff8), 'the salvage's root of the seal page: Some(0x800000)',
/// 'the salvage's read at 0x800000 accepted'.
#[test]
fn the_tail_seal_page_is_not_the_regions_blocks() {
    let p = path("seal");
    let r =
        SharedCohort::<Life>::create(Place::File(&p), CreateOptions::new(8 * MIB)).expect("create");
    let cap = r.capacity() as u64;
    // The blocks are whole 2 MiB units from a 2 MiB-aligned offset, and the seal is one page
    // of the allocator's page size (the OS page, or `COHORT_PAGE_SIZE`'s: 64 KiB in a CI
    // step), less than a unit: the seal page starts where the capacity rounds down to a unit.
    let seal = cap & !(2 * MIB as u64 - 1);
    assert!(cap - seal >= page_size() as u64 && cap - seal < 2 * MIB as u64);
    let mut wrong = Vec::new();
    // The blocks' last word: accepted everywhere.
    let last = Off::<u64>::new(seal - 8).unwrap();
    if catch_unwind(AssertUnwindSafe(|| r.ptr(last))).is_err() {
        wrong.push(format!(
            "ptr({:#x}), the blocks' last word, refused",
            last.get()
        ));
    }
    let q = r.malloc(64, Life::A);
    // SAFETY: a live allocation of the region.
    let base = q as usize - r.offset_of(q).expect("in the blocks").get() as usize;
    // SAFETY: allocated above, freed once.
    unsafe { r.free(q, 64, Life::A) };
    for at in [seal, seal + 8, cap - 8] {
        let got = r.offset_of((base + at as usize) as *const u8).map(Off::get);
        if got.is_some() {
            wrong.push(format!(
                "offset_of(the seal page's byte at offset {at:#x} of {cap:#x}): {got:#x?}"
            ));
        }
        let off = Off::<u64>::new(at).unwrap();
        if catch_unwind(AssertUnwindSafe(|| r.ptr(off))).is_ok() {
            wrong.push(format!("ptr({at:#x}) accepted"));
        }
        if catch_unwind(AssertUnwindSafe(|| r.set_root(1, Some(off)))).is_ok() {
            wrong.push(format!("set_root({at:#x}) accepted"));
        }
    }
    let _ = r.set_root::<u64>(1, None);
    r.leave().expect("leave");
    // A root that names the seal page (a damaged or hostile file: roots are not
    // checksummed) is no offset of the blocks to a salvage.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        // The header's words: the roots start at word 19.
        f.seek(SeekFrom::Start(19 * 8)).unwrap();
        f.write_all(&seal.to_ne_bytes()).unwrap();
    }
    let s = SharedCohort::<Life>::salvage(Place::File(&p)).expect("salvage");
    if let Some(off) = s.root::<u64>(0) {
        wrong.push(format!(
            "the salvage's root of the seal page: Some({:#x})",
            off.get()
        ));
    }
    let mut out = [0u8; 8];
    if s.read(Off::<u64>::new(seal).unwrap(), &mut out) {
        wrong.push(format!("the salvage's read at {seal:#x} accepted"));
    }
    if !s.read(last, &mut out) {
        wrong.push("the salvage's read of the blocks' last word refused".into());
    }
    assert_eq!(s.capacity() as u64, cap, "the salvage's capacity");
    drop(s);
    // The region still opens (nothing written over its seal).
    let again = SharedCohort::<Life>::open(Place::File(&p), OpenOptions::new());
    if let Err(e) = &again {
        wrong.push(format!("open after: {e}"));
    }
    drop(again);
    let _ = std::fs::remove_file(&p);
    assert!(wrong.is_empty(), "{wrong:#?}");
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}
