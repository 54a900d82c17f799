//! Red-team attacks of session 17 on region files cut short or grown at rest: a region
//! file left cleanly, then truncated (to nothing, to its header, to its state, to part of
//! its blocks, a page short of its end) or extended with garbage, is opened (and salvaged)
//! by a process of its own: the open refuses it with an error or opens a working region
//! (objects allocated, written and freed), never kills the process (SIGBUS from a page
//! past the file's end, SIGSEGV) or hangs. A test that found a defect is `#[ignore]`d with
//! its number (RED-n), its owner and the exact failure.

mod red_team_common;

use cohort::{CreateOptions, OpenOptions, Place, SharedCohort};
use red_team_common::{in_child, wait};
use std::path::{Path, PathBuf};
use std::time::Duration;

cohort::lifetime_classes! { enum Life { Short, Long } }

const MIB: u64 = 1 << 20;
const CAPACITY: u64 = 64 * MIB;

fn path(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("cohort-red17-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// A region file of [`CAPACITY`] with objects of several sizes in it (small, medium,
/// large), left cleanly by the process that made it.
fn made(p: &Path) {
    let child = in_child(60, || {
        let r = SharedCohort::<Life>::create(Place::File(p), CreateOptions::new(CAPACITY as usize))
            .expect("create");
        for (i, size) in [16usize, 64, 1000, 40_000, 3 << 20].into_iter().enumerate() {
            for _ in 0..50 {
                let q = r.malloc(size, Life::Long);
                if !q.is_null() {
                    // SAFETY: fresh, `size` bytes.
                    unsafe { q.write_bytes(i as u8 + 1, size) };
                }
            }
        }
        r.leave().expect("leave");
    });
    assert_eq!(wait(child), Ok(0), "making the region file");
}

/// In a process of its own: open `p` (then allocate, write and free in it, and leave) and
/// salvage it (then read its roots). How the process ended.
fn open_and_use(p: &Path) -> red_team_common::Ended {
    wait(in_child(60, || {
        if let Ok(r) =
            SharedCohort::<Life>::open(Place::File(p), OpenOptions::new().timeout(Duration::ZERO))
        {
            for size in [16usize, 64, 1000, 40_000, 3 << 20] {
                let q = r.malloc(size, Life::Short);
                if !q.is_null() {
                    // SAFETY: live, `size` bytes.
                    unsafe {
                        q.write_bytes(0x5a, size);
                        r.free(q, size, Life::Short);
                    }
                }
            }
            let _ = r.leave();
        }
        if let Ok(s) = SharedCohort::<Life>::salvage(Place::File(p)) {
            for slot in 0..cohort::ROOT_SLOTS {
                let _ = s.root::<u8>(slot);
            }
        }
    }))
}

/// A region file cut short at rest (as a full disk, a copy stopped half way or a careless
/// `truncate` leaves it), at every kind of boundary, is refused or works.
#[test]
fn a_truncated_region_file_is_refused_or_works() {
    let mut crashed = Vec::new();
    for len in [
        0,
        1,
        4096,
        8192,
        MIB,
        2 * MIB,
        2 * MIB + 4096,
        4 * MIB,
        CAPACITY / 2,
        CAPACITY - 2 * MIB,
        CAPACITY - 4096,
        CAPACITY - 1,
    ] {
        let p = path(&format!("cut{len}"));
        made(&p);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(len)
            .unwrap();
        let ended = open_and_use(&p);
        if !matches!(ended, Ok(0)) {
            crashed.push(format!("cut to {len} B: {ended:?}"));
        }
        let _ = std::fs::remove_file(&p);
    }
    assert!(
        crashed.is_empty(),
        "an opener of a truncated region file died (Ok: exit code: 1 a panic; Err: signal: 7 \
         SIGBUS, 11 SIGSEGV, 14 SIGALRM a hang): {crashed:#?}"
    );
}

/// A region file grown at rest (garbage appended, or a hole) is refused or works.
#[test]
fn an_extended_region_file_is_refused_or_works() {
    let mut crashed = Vec::new();
    for (extra, garbage) in [
        (4096u64, true),
        (2 * MIB, true),
        (CAPACITY, false),
        (1, true),
    ] {
        let p = path(&format!("grow{extra}{garbage}"));
        made(&p);
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
            if garbage {
                f.write_all(&vec![0xa5u8; extra as usize]).unwrap();
            } else {
                f.set_len(CAPACITY + extra).unwrap();
            }
        }
        let ended = open_and_use(&p);
        if !matches!(ended, Ok(0)) {
            crashed.push(format!("grown by {extra} B (garbage {garbage}): {ended:?}"));
        }
        let _ = std::fs::remove_file(&p);
    }
    assert!(crashed.is_empty(), "{crashed:#?}");
}
