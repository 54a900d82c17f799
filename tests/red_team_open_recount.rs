//! Red-team attack (session 19, second round) on the open check of region files (RED-77;
//! lazily since open's 3343a5e): a free slot's link damaged at rest is found by a walk of
//! its block's lists, each link a slot of the block below `bump`, met once, and the lists'
//! lengths agreeing with the counts (`used + free-listed == handed out`). A link damaged to
//! name a *live* slot of the block (whose first bytes, an object's, read 0: the list ends
//! there) passes every one of those tests when the counts still agree: in a release build
//! (no live bits) the live slot is handed out again.
//!
//! - A dead process's heap (it held the block as its current one) is taken over first
//!   (`SharedCohort::reap_dead_processes`, or any call that reaps), and the take-over
//!   recounts the block from its lists (`Header::recount_local`: `used = handed out -
//!   listed`), so the counts agree with whatever list the damage left.
//! - In a file closed cleanly, a damage that keeps the list's length (the link of the
//!   list's second-to-last slot, which named the last) agrees with the counts as it is.
//!
//! A checked (debug) build's live bits catch both (the block is quarantined).

mod red_team_common;

use cohort::{CreateOptions, OpenOptions, Place, SharedCohort};
use red_team_common::{in_child, shared_words, wait};
use std::sync::atomic::Ordering::Relaxed;

cohort::lifetime_classes! { enum Life { A } }

const BLOCK: u64 = 2 << 20;
const SIZE: usize = 64;
/// Objects allocated (one block's first slots), and freed from the `FREED`-th on.
const MADE: usize = 100;
const FREED: usize = 92;
/// The live object the damaged link names.
const NAMED: usize = 10;

/// A region file whose block of `SIZE` B slots has objects `0..FREED` live and the others
/// freed (its local list: `MADE - 1`, ..., `FREED`), left by a process that dies holding
/// its heap (`dies`: it leaves without dropping anything) or closes it; then, at rest, the
/// link of the list's slot `damaged` made to name the live object `NAMED`. Returns the
/// path and the live objects' offsets.
fn damaged_file(tag: &str, dies: bool, damaged: usize) -> (std::path::PathBuf, Vec<u64>) {
    let path = std::env::temp_dir().join(format!("cohort-red-link-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let offsets = shared_words(MADE);
    let pid = in_child(60, || {
        let r = SharedCohort::<Life>::create(Place::File(&path), CreateOptions::new(64 << 20))
            .expect("create");
        let ps: Vec<_> = (0..MADE).map(|_| r.malloc(SIZE, Life::A)).collect();
        for (i, &p) in ps.iter().enumerate() {
            offsets[i].store(r.offset_of(p).unwrap().get(), Relaxed);
        }
        for &p in &ps[FREED..] {
            // SAFETY: allocated above with this size and class, freed once.
            unsafe { r.free(p, SIZE, Life::A) };
        }
        if dies {
            std::mem::forget(r);
        }
    });
    assert_eq!(wait(pid), Ok(0));
    let offs: Vec<u64> = offsets.iter().map(|o| o.load(Relaxed)).collect();
    let block = offs[0] & !(BLOCK - 1);
    assert!(offs.iter().all(|&o| o & !(BLOCK - 1) == block), "one block");
    assert!(
        offs[FREED] - block >= 4096,
        "the freed slots past the first page"
    );
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let link = (offs[NAMED] - block) as u32;
    file.write_all_at(&link.to_ne_bytes(), offs[damaged])
        .unwrap();
    (path, offs[..FREED].to_vec())
}

/// Opens the file in a child, reaps the dead, allocates every slot the block has (its
/// never-used ones come first) and a few more: fails naming the live objects handed out
/// again. An open refused for the damage (`BlocksDamaged`: the check at open) is right.
fn handed_out_again(path: &std::path::Path, live: &[u64]) -> Result<(), String> {
    let pid = in_child(60, || {
        let r = match SharedCohort::<Life>::open(Place::File(path), OpenOptions::new()) {
            Ok(r) => r,
            Err(e) if format!("{e:?}").contains("BlocksDamaged") => return,
            Err(e) => panic!("open: {e:?}"),
        };
        r.reap_dead_processes();
        let again: Vec<u64> = (0..(BLOCK as usize / SIZE) + 16)
            .filter_map(|_| r.offset_of(r.malloc(SIZE, Life::A)).map(|o| o.get()))
            .filter(|o| live.contains(o))
            .collect();
        std::mem::forget(r);
        assert!(
            again.is_empty(),
            "live objects handed out again: {again:x?}"
        );
    });
    let ended = wait(pid);
    let _ = std::fs::remove_file(path);
    (ended == Ok(0))
        .then_some(())
        .ok_or(format!("the opener failed: {ended:?} (its message above)"))
}

/// RED-99, a dead holder's block: on lead e393384 (the check at open) and open's 3343a5e
/// (the lazy check), release-tests, the live object `NAMED` is handed out again (debug:
/// lead refuses the open, open's quarantines the block). Expected: the block found
/// damaged, or its lists' slots alone handed out.
#[test]
#[ignore = "RED-99: a dead heap's take-over recounts a block from a link damaged at rest to a live slot; the open check then trusts it (release)"]
fn a_link_damaged_at_rest_to_a_live_slot_of_a_dead_holders_block_is_not_followed() {
    let (path, live) = damaged_file("dead", true, MADE - 1);
    handed_out_again(&path, &live).unwrap();
}

/// RED-99, a file closed cleanly: the same, with the damage keeping the list's length.
#[test]
#[ignore = "RED-99: a link damaged at rest to a live slot, the list's length kept, passes the open check (release)"]
fn a_link_damaged_at_rest_to_a_live_slot_keeping_the_lists_length_is_not_followed() {
    let (path, live) = damaged_file("clean", false, FREED + 1);
    handed_out_again(&path, &live).unwrap();
}
