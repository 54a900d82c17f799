//! A region file whose bytes may not be of one moment is refused at open
//! (`RegionError::Unclean`): a copy made while a process had the region open, a file left
//! open when the machine stopped (attached under another boot), a file whose seals hold two
//! generations. A refused file is left as it was; a cleanly left region and its copies open.

use cohort::{CreateOptions, OpenOptions, Place, RegionError, SharedCohort};
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the attach table starts in a region file: the generation, the boot, the device,
/// the inode, then the process slots.
const TABLE: u64 = 2048;

fn temp_file(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("cohort-unclean-{tag}-{}", std::process::id()));
    let _ = fs::remove_file(&p);
    p
}

/// A region file created and cleanly left.
fn left_region(tag: &str) -> PathBuf {
    let f = temp_file(tag);
    SharedCohort::<()>::create(Place::File(&f), CreateOptions::new(32 << 20))
        .unwrap()
        .leave()
        .unwrap();
    f
}

fn open(path: &Path) -> Result<SharedCohort, RegionError> {
    SharedCohort::open(
        Place::File(path),
        OpenOptions::new().timeout(Duration::from_millis(200)),
    )
}

fn word(path: &Path, at: u64) -> u64 {
    let bytes = fs::read(path).unwrap();
    u64::from_le_bytes(bytes[at as usize..at as usize + 8].try_into().unwrap())
}

fn patch(path: &Path, at: u64, value: u64) {
    let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&value.to_le_bytes()).unwrap();
}

fn assert_unclean(r: Result<SharedCohort, RegionError>, what: &str) {
    match r {
        Err(e @ RegionError::Unclean { .. }) => assert!(e.to_string().contains("refused"), "{e}"),
        Err(e) => panic!("{what}: {e}"),
        Ok(_) => panic!("{what}: opened"),
    }
}

#[test]
fn a_copy_made_while_the_region_is_open_is_refused_and_one_made_after_it_was_left_opens() {
    let (f, copy) = (temp_file("copy"), temp_file("copy-of"));
    let r = SharedCohort::<()>::create(Place::File(&f), CreateOptions::new(32 << 20)).unwrap();
    let p = r.malloc(100, ());
    assert!(!p.is_null());
    fs::copy(&f, &copy).unwrap();
    let before = fs::read(&copy).unwrap();
    assert_unclean(
        open(&copy),
        "a copy made while a process had the region open",
    );
    assert_eq!(
        fs::read(&copy).unwrap(),
        before,
        "a refused file is left as it was"
    );
    r.leave().unwrap();
    fs::copy(&f, &copy).unwrap();
    let c = open(&copy).expect("a copy of a cleanly left region");
    assert!(!c.is_empty(), "the copy holds the object");
    // SAFETY: nobody else uses the copy.
    assert!(unsafe { c.verify() }.is_ok());
    c.leave().unwrap();
    let r = open(&f).expect("the original");
    r.destroy().unwrap();
    SharedCohort::<()>::remove(Place::File(&copy)).unwrap();
}

#[test]
fn a_file_left_open_under_another_boot_is_refused() {
    let f = left_region("boot");
    // What a machine crash leaves: a slot still held, the boot another one.
    let held = word(&f, TABLE + 32);
    assert_eq!(held, 0, "a cleanly left region holds no slot");
    patch(&f, TABLE + 32, 12345 << 42);
    patch(&f, TABLE + 8, word(&f, TABLE + 8) ^ 1);
    assert_unclean(open(&f), "a file left open under another boot");
    SharedCohort::<()>::remove(Place::File(&f)).unwrap();
}

#[test]
fn a_file_whose_seals_hold_two_generations_is_refused() {
    let f = left_region("seal");
    let gen = word(&f, TABLE);
    assert!(gen >= 1, "an attach bumps the generation");
    patch(&f, TABLE, gen + 1);
    assert_unclean(open(&f), "seals of another generation than the header's");
    patch(&f, TABLE, gen);
    open(&f).expect("the seals agree again").destroy().unwrap();
}
