//! A region that cannot be opened (a copy made while it was open: `Unclean`) still gives
//! its data read-only through `SharedCohort::salvage`, without a change to its file; bad
//! names, other lifetime classes, garbage and out-of-bounds offsets are clear errors or
//! `None`/`false`.

use cohort::{CreateOptions, Off, OpenOptions, Place, RegionError, SharedCohort, ROOT_SLOTS};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

cohort::lifetime_classes! {
    enum Three { A, B, C }
}

fn temp_file(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("cohort-salvage-{tag}-{}", std::process::id()));
    let _ = fs::remove_file(&p);
    p
}

fn open(path: &Path) -> Result<SharedCohort, RegionError> {
    SharedCohort::open(
        Place::File(path),
        OpenOptions::new().timeout(Duration::from_millis(200)),
    )
}

#[test]
fn an_unclean_copy_gives_its_data_read_only() {
    let (f, copy) = (temp_file("orig"), temp_file("copy"));
    let r = SharedCohort::<()>::create(Place::File(&f), CreateOptions::new(32 << 20)).unwrap();
    let record: [u8; 64] = core::array::from_fn(|i| i as u8 ^ 0x5a);
    let off = r.new_in(record, ()).expect("room");
    r.set_root(3, Some(off));
    // Copied while open: the copy's attach table names the original file.
    fs::copy(&f, &copy).unwrap();
    r.leave().unwrap();
    let refused = open(&copy).expect_err("an unclean copy");
    assert!(matches!(refused, RegionError::Unclean { .. }), "{refused}");
    let before = fs::read(&copy).unwrap();

    let s = SharedCohort::<()>::salvage(Place::File(&copy)).expect("salvaged");
    let root = s.root::<[u8; 64]>(3).expect("the root survives");
    assert_eq!(root.get(), off.get());
    let mut got = [0u8; 64];
    assert!(s.read(root, &mut got));
    assert_eq!(got, record);
    assert!(s.root::<u8>(0).is_none(), "an empty slot");
    // Outside the blocks: refused, `out` untouched.
    let mut big = vec![7u8; s.capacity()];
    assert!(!s.read(root, &mut big));
    assert!(big.iter().all(|&b| b == 7));
    assert!(
        !s.read(Off::<u8>::new(8).unwrap(), &mut got[..1]),
        "the header"
    );
    drop(s);
    assert_eq!(fs::read(&copy).unwrap(), before, "salvage writes nothing");

    // The data goes into a fresh region.
    let fresh = temp_file("fresh");
    let n = SharedCohort::<()>::create(Place::File(&fresh), CreateOptions::new(32 << 20)).unwrap();
    let moved = n.new_in(got, ()).unwrap();
    n.set_root(0, Some(moved));
    n.leave().unwrap();
    let n = open(&fresh).unwrap();
    // SAFETY: the record stored above, nobody else has the region.
    assert_eq!(unsafe { *n.get(n.root::<[u8; 64]>(0).unwrap()) }, record);
    n.destroy().unwrap();
    for p in [&f, &copy] {
        SharedCohort::<()>::remove(Place::File(p)).unwrap();
    }
}

#[test]
fn salvage_refuses_what_is_not_such_a_region() {
    let missing = temp_file("missing");
    let e = SharedCohort::<()>::salvage(Place::File(&missing)).unwrap_err();
    assert!(matches!(e, RegionError::NotFound { .. }), "{e}");
    let garbage = temp_file("garbage");
    fs::write(&garbage, vec![0xa5u8; 1 << 16]).unwrap();
    let e = SharedCohort::<()>::salvage(Place::File(&garbage)).unwrap_err();
    assert!(matches!(e, RegionError::BadMagic { .. }), "{e}");
    fs::write(&garbage, b"short").unwrap();
    let e = SharedCohort::<()>::salvage(Place::File(&garbage)).unwrap_err();
    assert!(matches!(e, RegionError::Truncated { .. }), "{e}");
    fs::remove_file(&garbage).unwrap();
    let f = temp_file("classes");
    SharedCohort::<()>::create(Place::File(&f), CreateOptions::new(32 << 20))
        .unwrap()
        .leave()
        .unwrap();
    let e = SharedCohort::<Three>::salvage(Place::File(&f)).unwrap_err();
    assert!(matches!(e, RegionError::LifetimeClasses { .. }), "{e}");
    let s = SharedCohort::<()>::salvage(Place::File(&f)).unwrap();
    let slot = std::panic::catch_unwind(|| s.root::<u8>(ROOT_SLOTS));
    assert!(slot.is_err(), "a slot past the last panics");
    SharedCohort::<()>::remove(Place::File(&f)).unwrap();
}
