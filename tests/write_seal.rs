//! The write seal of a named region (`src/pool/write_seal.rs`): every write of the region's
//! state area made outside the fast paths is bracketed by marks (`GEN` bumped into both
//! seal pages before and after), so that a copy of the region file read across it holds
//! a seal above its `GEN` and is refused at open. Here: the writes a test can make happen
//! alone, each checked to move `GEN` in the file.

use cohort::{CreateOptions, Place, SharedCohort};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

mod promote_support;
use promote_support::{fill, free_all, promoted, Life};

/// The attach table's generation word (`GEN`) in a region file: the header page's byte
/// 2048 (`persist::attach`), whatever the page size.
const GEN_AT: u64 = 2048;

/// `GEN` as the region file holds it now (the region is a shared mapping of the file).
fn gen(f: &File) -> u64 {
    let mut w = [0u8; 8];
    f.read_exact_at(&mut w, GEN_AT).expect("read GEN");
    u64::from_le_bytes(w)
}

/// A path in the temporary directory unique to this process and `tag`, removed first.
fn path(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("cohort-seal-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// A free of a promoted slot clears the slot's bit in its block's promotion record, which
/// lies in the region's state (the unit's record), with no lock; the free itself is a
/// local free that does not empty the block (no slow path, no mark of its own). Unmarked,
/// a copy whose state was read before that free and its blocks after holds the bit set
/// beside a free slot: restored (its process killed), it opens, and while the block holds
/// other promoted slots (its flag stays, its record is read), an ordinary free of that
/// slot once it is handed out again in its block's own class would be reported as misuse
/// (`Problem::Promoted`). Failed before the fix: `GEN` stayed where it was.
#[test]
fn a_free_of_a_promoted_slot_is_marked() {
    let p = path("promoted-free");
    let r =
        SharedCohort::<Life>::create(Place::File(&p), CreateOptions::new(8 << 20)).expect("create");
    // A block of 32-byte slots with room, then every other block full of 16-byte slots
    // (`try_malloc` never promotes).
    let (big, small) = fill(&r, 500);
    let q = r.malloc(16, Life::A);
    assert!(!q.is_null() && promoted(&r) == 1, "malloc(16) is promoted");
    let file = File::open(&p).expect("the region file");
    let before = gen(&file);
    // SAFETY: allocated above with this size and class, freed once.
    unsafe { r.free(q, 16, Life::A) };
    let after = gen(&file);
    assert_eq!(promoted(&r), 0);
    assert!(
        after > before,
        "the free of a promoted slot wrote the region's state (its promotion record) \
         unmarked: GEN {before:#x} before, {after:#x} after"
    );
    free_all(&r, &big, &small);
    r.leave().expect("leave");
    let _ = std::fs::remove_file(&p);
}
