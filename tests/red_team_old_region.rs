//! Red-team attack of session 12 on persisted regions across layout changes: a region
//! file written by session 11's code (main 921aec8: block header of 64 bytes, block magic
//! 0xC0408101, state layout 9, region layout 6; made by a debug build, checked mode on)
//! must either open as the region it is (same layouts: it verifies and holds its objects)
//! or be refused with a `RegionError` (another layout, geometry or build), never open as
//! garbage, panic, or crash.
//!
//! The file is `tests/red_team_data/s11_region.crle`, run-length coded (the region is
//! 32 MiB, mostly zeros): after the line `CRLE1`, records `R` (a byte, then how many of it
//! as a u64 LE) and `L` (a length as a u32 LE, then that many bytes). It was made by
//! `SharedCohort::<Life>::create(Place::File(_), CreateOptions::new(32 << 20))` with the
//! `Life` below; in each lifetime class in turn 12 objects of 16, 1000 and 40 000 bytes were
//! allocated and filled with `tag_of(offset)`, every third freed again, root 1 set to the
//! first kept object, then `leave`. [`KEPT`] lists the kept ones.

mod red_team_common;

use red_team_common::*;

cohort::lifetime_classes! { enum Life { A, B } }

/// The objects the file holds: (offset, size), each filled with `tag_of(offset)`.
const KEPT: [(u64, usize); 24] = [
    (8388672, 16),
    (6291520, 16),
    (6291536, 16),
    (8388688, 16),
    (8388704, 16),
    (6291552, 16),
    (6291568, 16),
    (8388720, 16),
    (12583936, 1000),
    (10486784, 1000),
    (10487808, 1000),
    (12584960, 1000),
    (12585984, 1000),
    (10488832, 1000),
    (10489856, 1000),
    (12587008, 1000),
    (16781312, 40000),
    (14684160, 40000),
    (14725120, 40000),
    (16822272, 40000),
    (16863232, 40000),
    (14766080, 40000),
    (14807040, 40000),
    (16904192, 40000),
];

/// The region file coded as above, decoded.
fn decoded(coded: &[u8]) -> Vec<u8> {
    let mut rest = coded
        .strip_prefix(b"CRLE1\n")
        .expect("the fixture's first line");
    let mut out = Vec::new();
    while let Some((&tag, tail)) = rest.split_first() {
        match tag {
            b'R' => {
                let (byte, n) = (tail[0], u64::from_le_bytes(tail[1..9].try_into().unwrap()));
                out.resize(out.len() + n as usize, byte);
                rest = &tail[9..];
            }
            b'L' => {
                let n = u32::from_le_bytes(tail[..4].try_into().unwrap()) as usize;
                out.extend_from_slice(&tail[4..4 + n]);
                rest = &tail[4 + n..];
            }
            _ => panic!("a damaged fixture: record {tag:#x}"),
        }
    }
    out
}

#[test]
fn a_region_file_of_session_11s_layout_opens_whole_or_is_refused() {
    let _serial = serial();
    let coded = include_bytes!("red_team_data/s11_region.crle");
    let bytes = decoded(coded);
    assert_eq!(
        bytes.len(),
        33_558_528,
        "the fixture's length (32 MiB and the header pages)"
    );
    let path = region_path("s11-layout");
    std::fs::write(&path, &bytes).expect("the temporary directory is writable");
    isolated(60, |report| {
        match open_region::<Life>(&path) {
            Ok(r) => {
                // The same layouts: the region as it was left.
                // SAFETY: no other process or thread uses the region.
                unsafe { verify_with_kept(report, &r, &KEPT) };
                let root = r.root::<u8>(1).map(|o| o.get());
                if root != Some(KEPT[0].0) {
                    report.fail(&format!("root 1 reads {root:?}"));
                }
                // New objects never land on kept ones.
                for size in [16, 1000, 40000] {
                    overwritten_by_new_allocations(&r, Life::A, 200, size, []);
                }
                if let Some((off, size)) = changed_object(&r, &KEPT) {
                    report.fail(&format!(
                        "a kept object at {off:#x} ({size} B) was handed out"
                    ));
                }
                if let Err(e) = r.leave() {
                    report.fail(&format!("leave: {e:?}"));
                }
            }
            Err(e) => eprintln!("refused (another layout): {e}"),
        }
    });
    let _ = std::fs::remove_file(&path);
}
