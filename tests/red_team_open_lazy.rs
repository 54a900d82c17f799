//! Red-team attack (session 19, RED-93, fixed) on the blocks' lazy check (`pool/check.rs`): a block whose
//! mark is not the check generation is walked where a heap first takes it, with a scratch
//! bitmap mapped for the walk; "a bitmap the OS refuses fails the check (the block is left
//! for a later one)". But the caller takes a failed check for damage: the block is
//! quarantined, for good ("no generation reaches it", in the file), though its lists are
//! whole. A process at its address-space limit (RLIMIT_AS, a cgroup's memory, a full
//! machine) at the moment it takes a block loses that block and its free slots for every
//! process, in every later open.

mod red_team_common;

use cohort::{CreateOptions, OpenOptions, Place, SharedCohort};
use red_team_common::{in_child, region_path, wait};
use std::path::Path;
use std::time::Duration;

cohort::lifetime_classes! { enum Life { A } }

const SIZE: usize = 64;
const OTHER: usize = 1024;
const OBJECTS: usize = 200;

fn open(p: &Path) -> SharedCohort<Life> {
    SharedCohort::<Life>::open(
        Place::File(p),
        OpenOptions::new().timeout(Duration::from_secs(10)),
    )
    .expect("open")
}

/// This process's address space in bytes (`VmSize` of `/proc/self/status`).
fn address_space() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}

fn set_address_space_limit(bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a plain setrlimit of this process.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0);
}

/// Runs `f` in a child under an alarm; panics with how it ended unless it exited 0.
fn in_child_ok(what: &str, f: impl FnOnce()) {
    let pid = in_child(60, f);
    assert_eq!(
        wait(pid),
        Ok(0),
        "{what}: the child failed (see its output)"
    );
}

/// RED-93 (on open's branch, 6ab2cc3): a block whose check could not map its scratch
/// bitmap is quarantined though whole: `damaged_blocks` 1, and the block stays out of use
/// in the next open.
#[test]
fn a_check_the_os_refuses_memory_for_quarantines_nothing() {
    let _serial = red_team_common::serial();
    let p = region_path("open-lazy-oom");
    // A file with a partly freed block of SIZE B slots at rest.
    in_child_ok("fill", || {
        let r = SharedCohort::<Life>::create(Place::File(&p), CreateOptions::new(64 << 20))
            .expect("create");
        let objects: Vec<*mut u8> = (0..OBJECTS).map(|_| r.malloc(SIZE, Life::A)).collect();
        for &q in objects.iter().step_by(2) {
            // SAFETY: allocated above with this size and class, freed once.
            unsafe { r.free(q, SIZE, Life::A) };
        }
        r.leave().expect("leave");
    });
    // A new generation: the block is checked when this process's heap takes it, while
    // the process is at its address-space limit.
    in_child_ok("take at the limit", || {
        let r = open(&p);
        // A heap of the region (a block of another class), made before the limit.
        let other = r.malloc(OTHER, Life::A);
        assert!(!other.is_null());
        set_address_space_limit(address_space());
        let q = r.malloc(SIZE, Life::A);
        set_address_space_limit(libc::RLIM_INFINITY);
        let stats = r.stats();
        assert_eq!(
            stats.damaged_blocks, 0,
            "a whole block quarantined (malloc gave {q:?}): {stats}"
        );
        // SAFETY: no other thread or process uses the region.
        if let Err(e) = unsafe { r.verify() } {
            panic!("verify: {e}");
        }
        r.leave().expect("leave");
    });
    // The next open: the block is whole, and in use again.
    in_child_ok("reopen", || {
        let r = open(&p);
        let _ = r.malloc(SIZE, Life::A);
        let stats = r.stats();
        assert_eq!(stats.damaged_blocks, 0, "in the next open: {stats}");
        r.leave().expect("leave");
    });
    let _ = std::fs::remove_file(&p);
}
