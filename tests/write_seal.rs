//! The write seal of a named region (`src/pool/write_seal.rs`): every write of the region's
//! state area made outside the fast paths is bracketed by marks (`GEN` bumped into both
//! seal pages before and after), so that a copy of the region file read across it holds
//! a seal above its `GEN` and is refused at open. Here: the writes a test can make happen
//! alone, each checked to move `GEN` in the file.

use cohort::{CreateOptions, Place, SharedCohort};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

mod promote_support;
mod red_team_common;
use promote_support::{fill, free_all, promoted, Life};
use red_team_common::{
    created_and_left, in_child_reporting, isolated, open_region, read_then_kill, restore_over,
    serial, shared_words, wait_ok,
};

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
    let _serial = serial();
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

/// The same free, end to end: a backup of the region file read as `cp` reads it (the header
/// and the state while a process holds two promoted slots of a block, the blocks after it
/// freed one of them), restored over the file after that process was killed. Before the fix
/// it opened (no mark came between its reads), the slot was free in its block and promoted
/// in its record, and the opener's own free of it, handed out again as a 32-byte object,
/// was reported as misuse: `... the opener's free of its 32-byte object at the freed slot
/// is refused: Err(Promoted { stride: 32, source: 4, source_stride: 16 })`. Now the free's
/// marks leave the copy's tail seal above its `GEN`: refused.
#[test]
fn a_backup_read_across_a_free_of_a_promoted_slot_is_refused() {
    let _serial = serial();
    let p = path("promoted-backup");
    isolated(120, |report| {
        created_and_left::<Life>(&p, 8 << 20);
        // [ready, backed up, freed, the freed slot's offset]
        let words = shared_words(4);
        let holder = in_child_reporting(60, report, || {
            let r = open_region::<Life>(&p).expect("open");
            let _kept = fill(&r, 500);
            // Two promoted slots of the 32-byte block: one stays, so the block stays
            // promoting (its record is read by every free of it).
            let (q1, q2) = (r.malloc(16, Life::A), r.malloc(16, Life::A));
            assert!(!q1.is_null() && !q2.is_null() && promoted(&r) == 2);
            words[3].store(r.offset_of(q1).expect("in the region").get(), Relaxed);
            words[0].store(1, Relaxed);
            while words[1].load(Relaxed) == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            // SAFETY: allocated above with this size and class, freed once.
            unsafe { r.free(q1, 16, Life::A) };
            words[2].store(1, Relaxed);
            loop {
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let first = read_then_kill(&p, words, holder, report);
        // The header and the state as read first (up to the blocks: word 12 of the
        // header), the blocks as they are now.
        let blocks = u64::from_le_bytes(first[12 * 8..13 * 8].try_into().unwrap()) as usize;
        restore_over(&p, &first, blocks);
        let opener = in_child_reporting(60, report, || {
            let Ok(r) = open_region::<Life>(&p) else {
                return; // refused: fine
            };
            let freed = words[3].load(Relaxed);
            // The dead holder's blocks go to the pool; the 32-byte block's free list starts
            // with the freed slot.
            for _ in 0..100_000 {
                let q = r.malloc(32, Life::A);
                assert!(!q.is_null(), "the freed slot was never handed out again");
                if r.offset_of(q).expect("in the region").get() == freed {
                    // SAFETY: allocated just now with this size and class.
                    let freed_ok = unsafe { r.try_free(q, 32, Life::A) };
                    assert!(
                        freed_ok.is_ok(),
                        "a backup read across a free of a promoted slot, restored after its \
                         process was killed, opened: the opener's free of its 32-byte object \
                         at the freed slot is refused: {:?}",
                        freed_ok.map_err(|m| m.problem)
                    );
                    return;
                }
            }
            panic!("the freed slot was not handed out again in 100 000 allocations");
        });
        wait_ok(opener, report, "the restored file's opener");
    });
    let _ = std::fs::remove_file(&p);
}
