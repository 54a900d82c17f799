//! Red team (session 18) on RED-30's fix: `compact` in a region other processes use checks
//! the lists it follows link by link first and gives nothing back when one is damaged. A
//! second opener (another process keeps the region open, so no seal or open walk checks
//! it) whose only call is `compact` must never die of a signal or a panic, whatever byte of
//! the state a stray write changed: with every holder alive, and with a holder killed
//! (`kill -9`) whose heap `compact` takes over first.

mod red_team_common;

use cohort::{CreateOptions, OpenOptions, Place, SharedCohort};
use red_team_common::*;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering::Relaxed;

cohort::lifetime_classes! {
    enum Two { A, B }
}

const SIZES: [usize; 6] = [1, 8, 64, 200, 1000, 8000];

/// Allocates 600 objects of `SIZES` in both classes in `r`, a quarter freed again; the
/// lowest offset of an allocation.
fn populate(r: &SharedCohort<Two>) -> usize {
    let mut first = usize::MAX;
    for i in 0..600 {
        let size = SIZES[i % SIZES.len()];
        let life = if i % 3 == 0 { Two::B } else { Two::A };
        let p = r.malloc(size, life);
        assert!(!p.is_null());
        first = first.min(r.offset_of(p).unwrap().get() as usize);
        if i % 4 == 0 {
            // SAFETY: allocated above, freed once.
            unsafe { r.free(p, size, life) };
        }
    }
    first
}

/// `attempts` damages (one state byte each, from `seed`) of a region a live holder keeps
/// open (and, with `dead`, one a second holder left by dying after it allocated); each
/// opened by a process whose only call is `compact`. The failures.
fn second_openers_compact(tag: &str, seed: u64, attempts: usize, dead: bool) -> Vec<String> {
    let path =
        std::env::temp_dir().join(format!("cohort-red-compact-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let place = Place::File(&path);
    let words = shared_words(4);
    let mut died = Vec::new();
    let report = Report::new();
    let holder = in_child_reporting(280, &report, || {
        let r = SharedCohort::<Two>::create(place, CreateOptions::new(64 << 20)).expect("create");
        let first = populate(&r);
        words[1].store(first as u64, Relaxed);
        while words[2].load(Relaxed) == 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        r.leave().expect("leave");
    });
    while words[1].load(Relaxed) == 0 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    if dead {
        // A second holder allocates, frees some, and dies holding its heap.
        let victim = in_child(60, || {
            let r = SharedCohort::<Two>::open(place, OpenOptions::new()).expect("open");
            populate(&r);
            words[3].store(1, Relaxed);
            loop {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        });
        while words[3].load(Relaxed) == 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        kill9(victim);
    }
    let first = words[1].load(Relaxed) as usize;
    let state = 4096..(first & !((2 << 20) - 1));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("the file");
    let mut seed = seed;
    for attempt in 0..attempts {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let at = state.start + (seed as usize >> 8) % state.len();
        let byte = seed as u8;
        let mut was = [0u8];
        file.read_exact_at(&mut was, at as u64).expect("read");
        file.write_all_at(&[byte], at as u64).expect("damage");
        let opener = in_child(20, || {
            let Ok(r) = SharedCohort::<Two>::open(place, OpenOptions::new()) else {
                return;
            };
            words[0].fetch_add(1, Relaxed);
            let _ = r.compact();
            // SAFETY: leaves without the destructors (a damaged region's leave may wait).
            unsafe { libc::_exit(0) };
        });
        let ended = wait(opener);
        file.write_all_at(&was, at as u64).expect("restore");
        if ended != Ok(0) {
            died.push(format!(
                "{tag} attempt {attempt}: state byte {:#x} = {byte:#x}: {ended:?}",
                at - state.start
            ));
        }
    }
    let opened = words[0].load(Relaxed) as usize;
    assert!(
        opened > attempts / 2,
        "{tag}: only {opened} of {attempts} openers got in"
    );
    words[2].store(1, Relaxed);
    wait_ok(holder, &report, "the holder");
    let _ = std::fs::remove_file(&path);
    died
}

/// Guard: 300 damages with every holder alive, 300 with a dead holder's heap to take
/// over; passes on fb63234 (3000 of each too).
#[test]
fn a_second_opener_compacting_a_damaged_state_never_dies() {
    let mut died = Vec::new();
    died.extend(second_openers_compact(
        "live",
        0x9e37_79b9_7f4a_7c15,
        300,
        false,
    ));
    died.extend(second_openers_compact(
        "dead",
        0x1234_5678_9abc_def1,
        300,
        true,
    ));
    assert!(
        died.is_empty(),
        "{} died: {:#?}",
        died.len(),
        &died[..died.len().min(10)]
    );
}
