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
