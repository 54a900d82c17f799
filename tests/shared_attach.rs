//! A process opens a region once at a time: a second opening (of the same name, or by any
//! thread) is refused with [`RegionError::AlreadyOpen`] and leaves the first alone; after
//! the first leaves, the region opens again.

use cohort::{CreateOptions, OpenOptions, Place, RegionError, SharedCohort};
use std::sync::Barrier;

cohort::lifetime_classes! {
    enum Life { Short }
}

/// A shared-memory name unique to this process and `tag`, removed first.
fn name(tag: &str) -> String {
    let n = format!("/cohort-attach-{tag}-{}", std::process::id());
    let _ = SharedCohort::<Life>::remove(Place::SharedMemory(&n));
    n
}

fn open(n: &str) -> Result<SharedCohort<Life>, RegionError> {
    SharedCohort::<Life>::open(Place::SharedMemory(n), OpenOptions::new())
}

#[test]
fn a_second_opening_in_one_process_is_refused_and_the_first_goes_on() {
    let n = name("twice");
    let first = SharedCohort::<Life>::create(Place::SharedMemory(&n), CreateOptions::new(16 << 20))
        .expect("create");
    let p = first.malloc(100, Life::Short);
    assert!(!p.is_null());
    let e = open(&n).expect_err("a second opening");
    assert!(
        matches!(e, RegionError::AlreadyOpen { ref name } if *name == n),
        "{e}"
    );
    assert!(e.to_string().contains("open already"), "{e}");
    // The first goes on, its object intact.
    // SAFETY: 100 bytes, live.
    unsafe { p.write_bytes(7, 100) };
    let q = first.malloc(100, Life::Short);
    assert!(!q.is_null() && q != p);
    // SAFETY: both live, allocated above with this size and class.
    unsafe {
        first.free(p, 100, Life::Short);
        first.free(q, 100, Life::Short);
    }
    first.leave().expect("leave");
    let again = open(&n).expect("opens once the first left");
    assert!(again.is_empty());
    again.destroy().expect("destroy");
}

/// Threads racing to open one region: exactly one opening at a time succeeds, the others
/// are refused as already open (never two instances of one region in the process). Found
/// with it: an opener that read the seals while another attach had bumped the generation
/// but not yet stored it refused the region as a copy (`Unclean`: "its pages are of
/// different moments"), in about one round in 50; processes racing to open are the same
/// case.
#[test]
fn threads_racing_to_open_a_region_get_one_opening() {
    const THREADS: usize = 4;
    let n = name("race");
    SharedCohort::<Life>::create(Place::SharedMemory(&n), CreateOptions::new(16 << 20))
        .expect("create")
        .leave()
        .expect("leave");
    for _ in 0..200 {
        let start = Barrier::new(THREADS);
        let held = Barrier::new(THREADS);
        let got: Vec<Result<(), String>> = std::thread::scope(|s| {
            let all: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        let got = open(&n);
                        // Held until every thread tried.
                        held.wait();
                        match got {
                            Ok(_) => Ok(()),
                            Err(RegionError::AlreadyOpen { .. }) => Err("already open".into()),
                            Err(e) => Err(e.to_string()),
                        }
                    })
                })
                .collect();
            all.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let opened = got.iter().filter(|g| g.is_ok()).count();
        let refused = got
            .iter()
            .filter(|g| g.as_ref().is_err_and(|e| e == "already open"))
            .count();
        assert!(opened == 1 && refused == THREADS - 1, "{got:?}");
    }
    SharedCohort::<Life>::remove(Place::SharedMemory(&n)).expect("remove");
}

/// A fork child that drops its copy of its parent's `SharedCohort` (its own leave) leaves
/// the parent's place in the attach table alone: before the fix it freed the parent's
/// slot and, finding no slot held, sealed the state; the parent's next allocations changed
/// the state after that seal, and another process's open refused the healthy, open region
/// as `StateDamaged`. (The other process is forked before the region exists: a fork child
/// of the parent has the parent's opening, and is refused as `AlreadyOpen`.)
#[test]
fn a_fork_childs_leave_keeps_its_parents_attachment() {
    let n = name("forkleave");
    let mut go = [0; 2];
    // SAFETY: a pipe into a two-int array.
    assert_eq!(unsafe { libc::pipe(go.as_mut_ptr()) }, 0);
    // SAFETY: the child waits for a byte on the pipe, opens the region and exits.
    let opener = unsafe { libc::fork() };
    if opener == 0 {
        let mut byte = 0u8;
        // SAFETY: reads one byte into `byte`.
        unsafe { libc::read(go[0], (&raw mut byte).cast(), 1) };
        let code = match open(&n) {
            Ok(r) => {
                drop(r);
                0
            }
            Err(RegionError::StateDamaged { .. }) => 2,
            Err(_) => 3,
        };
        // SAFETY: _exit has no precondition.
        unsafe { libc::_exit(code) };
    }
    let r = SharedCohort::<Life>::create(Place::SharedMemory(&n), CreateOptions::new(16 << 20))
        .expect("create");
    // SAFETY: the child drops its copy of `r` (its leave) and exits at once.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: the child's own copy of the parent's value, dropped once, here; the
        // parent's stays its own.
        drop(unsafe { core::ptr::read(&r) });
        // SAFETY: _exit has no precondition.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: our own child.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    let live: Vec<_> = (0..100).map(|_| r.malloc(200, Life::Short)).collect();
    // SAFETY: writes one byte from a local.
    assert_eq!(unsafe { libc::write(go[1], [1u8].as_ptr().cast(), 1) }, 1);
    // SAFETY: our own child.
    assert_eq!(unsafe { libc::waitpid(opener, &mut status, 0) }, opener);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "another process could not open the region the parent has open (exit {})",
        libc::WEXITSTATUS(status)
    );
    for p in live {
        // SAFETY: allocated above, freed once.
        unsafe { r.free(p, 200, Life::Short) };
    }
    r.destroy().unwrap();
}
