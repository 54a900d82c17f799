//! Red team (session 18) on RED-77's open check (`check_lists_at_open`, the walk of every
//! link at open): several processes open a damaged region file at rest at the same moment. The first walks the blocks under the attach lock and
//! refuses; the others wait for the lock. None may get in past the check: each is refused
//! (`BlocksDamaged`), or times out (`Busy`), never handed the damaged region.

mod red_team_common;

use cohort::{OpenOptions, Place, RegionError, SharedCohort};
use red_team_common::{garbage_link_file, in_child, shared_words, wait};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;

cohort::lifetime_classes! { enum Life { A } }

const SIZE: usize = 64;
const OPENERS: usize = 4;

/// A region file whose block of `SIZE` B slots has the link of its free list's first slot
/// (past the block's first page) overwritten with garbage while nobody has it open.
fn damaged_file(tag: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("cohort-red-oc-{tag}-{}", std::process::id()));
    garbage_link_file(&path, Life::A, SIZE, None);
    path
}

/// What an opener got: 1 refused as damaged, 2 busy, 3 another error, 4 opened.
fn outcome(result: Result<SharedCohort<Life>, RegionError>) -> u64 {
    match result {
        Err(RegionError::BlocksDamaged { .. }) => 1,
        Err(RegionError::Busy { .. }) => 2,
        Err(_) => 3,
        Ok(r) => {
            std::mem::forget(r);
            4
        }
    }
}

#[test]
fn openers_at_once_of_a_damaged_file_are_all_refused() {
    let words = shared_words(2 + OPENERS);
    let mut bad = Vec::new();
    for round in 0..6 {
        let path = damaged_file(&format!("r{round}"));
        words[0].store(0, Relaxed);
        words[1].store(0, Relaxed);
        let pids: Vec<_> = (0..OPENERS)
            .map(|i| {
                let path = path.clone();
                in_child(30, move || {
                    words[1].fetch_add(1, Relaxed);
                    while words[1].load(Relaxed) < OPENERS as u64 {
                        std::hint::spin_loop();
                    }
                    let got = outcome(SharedCohort::<Life>::open(
                        Place::File(&path),
                        OpenOptions::new().check_lists_at_open(true),
                    ));
                    words[2 + i].store(got, Relaxed);
                    // SAFETY: leaves without the destructors.
                    unsafe { libc::_exit(0) };
                })
            })
            .collect();
        for pid in pids {
            let ended = wait(pid);
            if ended != Ok(0) {
                bad.push(format!("round {round}: an opener ended {ended:?}"));
            }
        }
        let got: Vec<u64> = (0..OPENERS).map(|i| words[2 + i].load(Relaxed)).collect();
        if got.iter().any(|&g| g != 1 && g != 2) {
            bad.push(format!(
                "round {round}: outcomes {got:?} (1 damaged, 2 busy, 3 other error, 4 opened)"
            ));
        }
        let _ = std::fs::remove_file(&path);
    }
    assert!(bad.is_empty(), "{bad:#?}");
}
