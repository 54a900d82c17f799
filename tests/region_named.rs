//! Named regions (POSIX shared memory, files) made with [`RegionOptions`]
//! ([`CreateOptions::from_region`]): committed (storage allocated at creation, never given
//! back), prefaulted (no page fault after creation), locked (`Locked:` of the mapping),
//! bound to a NUMA node; a process that opens the region later applies the recorded options
//! to its own mapping; what a region shared between processes cannot have is refused before
//! anything is made. No test here forks: `Locked:` is proportional to the processes mapping
//! a page.

mod common;

use cohort::{
    CreateOptions, HugePages, OpenOptions, Place, PlacementError, RegionError, RegionOptions,
    SharedCohort,
};
use common::kernel_view::{memory_policy, smaps_field};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

const MIB: usize = 1 << 20;

fn shm_name(what: &str) -> String {
    format!("/cohort-named-{what}-{}", std::process::id())
}

fn file_path(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!("cohort-named-{what}-{}", std::process::id()))
}

/// Where a POSIX shared-memory object `/name` shows as a file.
fn shm_path(name: &str) -> PathBuf {
    Path::new("/dev/shm").join(&name[1..])
}

/// The bytes of storage (RAM or disk) the object or file at `path` holds.
fn stored(path: &Path) -> u64 {
    std::fs::metadata(path).expect("the region's file").blocks() * 512
}

/// This thread's minor page faults so far.
fn minor_faults() -> i64 {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is ours.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) }, 0);
    u.ru_minflt
}

/// Allocates, writes and frees a 3 MiB run and 2000 small objects in `r`; returns the
/// minor faults it took.
fn use_it(r: &SharedCohort<Life>) -> i64 {
    let mut small = Vec::with_capacity(2000);
    let before = minor_faults();
    let run = r.malloc(3 * MIB, Life::Long);
    assert!(!run.is_null());
    // SAFETY: 3 MiB of ours.
    unsafe { run.write_bytes(7, 3 * MIB) };
    for i in 0..2000 {
        let p = r.malloc(200, Life::Short);
        assert!(!p.is_null());
        // SAFETY: 200 bytes of ours.
        unsafe { p.write_bytes(i as u8, 200) };
        small.push(p);
    }
    let faults = minor_faults() - before;
    // SAFETY: each allocated above with this size and class, freed once.
    unsafe {
        r.free(run, 3 * MIB, Life::Long);
        for p in small {
            r.free(p, 200, Life::Short);
        }
    }
    faults
}

#[test]
fn a_named_region_made_prefaulted_and_locked_takes_no_fault_keeps_its_memory_and_its_opener_too() {
    let name = shm_name("locked");
    let place = Place::SharedMemory(&name);
    let options = RegionOptions::new(16 * MIB).prefault(true).lock(true);
    let r = match SharedCohort::<Life>::create(
        place,
        CreateOptions::from_region(options).replace(true),
    ) {
        Ok(r) => r,
        Err(RegionError::Placement(e @ PlacementError::Lock { .. })) => {
            println!("skipped: this process may not lock 16 MiB ({e})");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let path = shm_path(&name);
    let capacity = r.capacity() as u64;
    assert!(capacity >= 16 * MIB as u64);
    assert!(
        stored(&path) >= capacity,
        "committed: the storage is allocated at creation"
    );
    // The whole mapping is locked and faulted in: nothing faults after a first use of the
    // thread's heap.
    use_it(&r);
    let faults = use_it(&r);
    let p = r.malloc(64, Life::Short);
    println!("minor faults of a use after creation: {faults}");
    assert_eq!(faults, 0, "a prefaulted region takes no page fault");
    assert_eq!(
        smaps_field(p, "Locked") * 1024,
        capacity,
        "the whole region is locked"
    );
    // Freed runs and compacted blocks keep their storage.
    let kept = stored(&path);
    r.compact();
    assert_eq!(stored(&path), kept, "a committed region gives nothing back");
    // SAFETY: allocated above.
    unsafe { r.free(p, 64, Life::Short) };
    r.leave().expect("left");
    // An opener (here the same process, after leaving: one mapping at a time, so that
    // `Locked:` is not shared) applies the recorded options to its own mapping.
    let r = SharedCohort::<Life>::open(place, OpenOptions::new()).expect("opened");
    let p = r.malloc(64, Life::Short);
    assert_eq!(
        smaps_field(p, "Locked") * 1024,
        capacity,
        "the opener locked its mapping"
    );
    assert_eq!(use_it(&r), 0, "and faulted it in");
    r.compact();
    assert_eq!(
        stored(&path),
        kept,
        "and keeps the memory as its creator asked"
    );
    // SAFETY: allocated above.
    unsafe { r.free(p, 64, Life::Short) };
    assert!(r.is_empty());
    r.destroy().expect("destroyed");
}

#[test]
fn a_named_region_made_without_options_gives_freed_memory_back() {
    // The negative control of the test above: the same use frees the run's storage.
    let name = shm_name("plain");
    let place = Place::SharedMemory(&name);
    let r = SharedCohort::<Life>::create(place, CreateOptions::new(64 * MIB).replace(true))
        .expect("made");
    let path = shm_path(&name);
    let run = r.malloc(6 * MIB, Life::Long);
    // SAFETY: 6 MiB of ours.
    unsafe { run.write_bytes(7, 6 * MIB) };
    let used = stored(&path);
    // SAFETY: allocated above.
    unsafe { r.free(run, 6 * MIB, Life::Long) };
    let after = stored(&path);
    println!("storage: {used} bytes with the run, {after} after its free");
    assert!(
        after + 6 * MIB as u64 <= used,
        "the run's storage went back"
    );
    r.destroy().expect("destroyed");
}

#[test]
fn a_file_region_made_committed_holds_its_storage_from_the_start_and_keeps_it() {
    let path = file_path("committed");
    let place = Place::File(&path);
    let options = RegionOptions::new(8 * MIB).commit(true);
    let r = SharedCohort::<Life>::create(place, CreateOptions::from_region(options).replace(true))
        .expect("made");
    let capacity = r.capacity() as u64;
    assert!(
        stored(&path) >= capacity,
        "the file's blocks are allocated at creation"
    );
    let run = r.malloc(3 * MIB, Life::Long);
    assert!(!run.is_null(), "8 MiB of blocks hold a 3 MiB run");
    // SAFETY: 3 MiB of ours, then freed as made.
    unsafe {
        run.write_bytes(1, 3 * MIB);
        r.free(run, 3 * MIB, Life::Long);
    }
    r.compact();
    assert!(stored(&path) >= capacity, "and keeps them");
    r.leave().expect("left");
    let r = SharedCohort::<Life>::open(place, OpenOptions::new()).expect("opened");
    assert_eq!(r.capacity() as u64, capacity);
    r.destroy().expect("destroyed");
}

#[test]
fn a_named_region_bound_to_node_0_reports_that_policy() {
    let name = shm_name("numa");
    let options = RegionOptions::new(8 * MIB).numa_nodes(1);
    let made = SharedCohort::<Life>::create(
        Place::SharedMemory(&name),
        CreateOptions::from_region(options).replace(true),
    );
    let r = match made {
        Ok(r) => r,
        Err(RegionError::Placement(PlacementError::Numa { errno, .. }))
            if errno == libc::ENOSYS =>
        {
            println!("skipped: the kernel has no NUMA support (mbind: ENOSYS)");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let p = r.malloc(3 * MIB, Life::Long);
    // SAFETY: 3 MiB of ours.
    unsafe { p.write_bytes(1, 3 * MIB) };
    let policy = memory_policy(p).expect("get_mempolicy");
    println!(
        "get_mempolicy of a run of a named region: mode {} nodes {:#x}",
        policy.0, policy.1
    );
    assert_eq!(policy, (libc::MPOL_BIND, 1), "bound to node 0");
    // SAFETY: allocated above.
    unsafe { r.free(p, 3 * MIB, Life::Long) };
    r.destroy().expect("destroyed");
}

#[test]
fn options_a_named_region_cannot_have_are_refused_before_anything_is_made() {
    let name = shm_name("refused");
    let path = file_path("refused");
    let base = RegionOptions::new(8 * MIB);
    let cases = [
        (Place::SharedMemory(&name), base.fallback(true), "fallback"),
        (Place::File(&path), base.fallback(true), "fallback"),
        (
            Place::SharedMemory(&name),
            base.huge_pages(HugePages::Explicit),
            "explicit huge pages",
        ),
        (
            Place::File(&path),
            base.huge_pages(HugePages::Explicit),
            "explicit huge pages",
        ),
        (
            Place::File(&path),
            base.huge_pages(HugePages::Transparent),
            "transparent huge pages",
        ),
        (Place::File(&path), base.numa_nodes(1), "NUMA"),
    ];
    for (place, options, said) in cases {
        let e = SharedCohort::<Life>::create(place, CreateOptions::from_region(options))
            .expect_err("refused");
        println!("{place:?}: {e}");
        assert!(
            matches!(
                e,
                RegionError::Placement(PlacementError::Unsupported { .. })
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains(said), "{e}");
        assert!(
            matches!(
                SharedCohort::<Life>::open(place, OpenOptions::new()),
                Err(RegionError::NotFound { .. })
            ),
            "nothing was made"
        );
    }
}
