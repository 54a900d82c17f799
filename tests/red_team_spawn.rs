//! Red-team attacks of session 11 on subprocesses started by `posix_spawn` (std's
//! `Command`, glibc's `posix_spawn`: a vfork-style clone that shares the parent's memory
//! until it execs, and runs no fork handler) while a named region is open: other threads
//! of the parent work in the region and open and leave another one meanwhile; spawns of a
//! program that does not exist end the child without an exec. After the parent leaves,
//! both regions must open, verify, and hold the parent's tagged objects whole. A test that
//! found a defect is `#[ignore]`d with its number (RED-n), its owner and the exact failure.

mod red_team_common;

use cohort::{CreateOptions, Place, SharedCohort};
use red_team_common::*;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

/// `rounds` times: objects of small and medium sizes allocated in `r`, written, freed.
fn work(r: &SharedCohort<Life>, rounds: usize) {
    for round in 0..rounds {
        let objects: Vec<(*mut u8, usize)> = [24usize, 200, 3000, 30_000, 90_000]
            .iter()
            .map(|&n| {
                let n = n + round % 7;
                let q = r.malloc(n, Life::Short);
                assert!(!q.is_null(), "malloc({n})");
                // SAFETY: n bytes of ours.
                unsafe { q.write_bytes(0xd1, n) };
                (q, n)
            })
            .collect();
        for (q, n) in objects {
            // SAFETY: allocated above, freed once with its size and class.
            unsafe { r.free(q, n, Life::Short) };
        }
    }
}

/// One subprocess through glibc's `posix_spawn` of `path`: its status, or the error the
/// spawn gave.
fn spawn(path: &std::ffi::CStr) -> Result<i32, i32> {
    let pid = posix_spawn_of(path)?;
    let mut status = 0;
    // SAFETY: our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    Ok(status)
}

#[test]
fn subprocesses_spawned_amid_work_and_opens_keep_the_region_openable() {
    let _serial = serial();
    let p = region_path("spawn");
    let other = region_path("spawn-b");
    isolated(240, |report| {
        let r = SharedCohort::<Life>::create(Place::File(&p), CreateOptions::new(64 << 20))
            .expect("create");
        let kept: Vec<(u64, usize)> = (0..64usize)
            .map(|i| {
                let size = 40 + i * 53;
                let q = r.malloc(size, Life::Long);
                assert!(!q.is_null());
                let off = r.offset_of(q).expect("in the region").get();
                // SAFETY: size bytes of ours.
                unsafe { q.write_bytes(tag_of(off), size) };
                (off, size)
            })
            .collect();
        created_and_left::<Life>(&other, 32 << 20);
        let stop = AtomicBool::new(false);
        let (spawns, opens) = (AtomicU64::new(0), AtomicU64::new(0));
        std::thread::scope(|s| {
            for _ in 0..2 {
                let (r, stop) = (&r, &stop);
                s.spawn(move || {
                    while !stop.load(Relaxed) {
                        work(r, 5);
                    }
                });
            }
            let (other, stop, opens) = (&other, &stop, &opens);
            let opener = s.spawn(move || {
                while !stop.load(Relaxed) {
                    let again = open_region::<Life>(other).expect("a thread's open");
                    work(&again, 2);
                    again.leave().expect("a thread's leave");
                    opens.fetch_add(1, Relaxed);
                }
            });
            let spawns = &spawns;
            let spawner = s.spawn(move || {
                for i in 0..300u64 {
                    let status = Command::new("/bin/true").status().expect("spawn /bin/true");
                    assert!(status.success(), "/bin/true: {status}");
                    if i % 3 == 0 {
                        assert!(Command::new("/nonexistent/cohort-red").status().is_err());
                    }
                    spawns.fetch_add(1, Relaxed);
                }
            });
            // Stops the threads however this driver ends (a failed assertion panics here).
            let stop_threads = StopOnDrop(stop);
            for i in 0..300u64 {
                let path = if i % 4 == 3 {
                    c"/nonexistent/cohort-red"
                } else {
                    c"/bin/true"
                };
                match spawn(path) {
                    Ok(status) => assert!(
                        i % 4 == 3 || status == 0,
                        "posix_spawn of /bin/true ended {status:#x}"
                    ),
                    Err(e) => assert_eq!(i % 4, 3, "posix_spawn of /bin/true: {e}"),
                }
                work(&r, 1);
                spawns.fetch_add(1, Relaxed);
            }
            // The spawner ends after its 300 spawns, the opener only at the stop.
            yield_until(
                "the spawns and opens",
                || spawns.load(Relaxed) >= 600 && opens.load(Relaxed) >= 100,
                || opener.is_finished() || (spawner.is_finished() && spawns.load(Relaxed) < 600),
            );
            drop(stop_threads);
        });
        // SAFETY: the threads have ended; nobody else uses the region in this process.
        if let Err(e) = unsafe { r.verify() } {
            report.fail(&format!("verify before the leave: {e:?}"));
        }
        r.leave().expect("leave");
        match open_region::<Life>(&other) {
            Ok(x) => x.destroy().expect("destroy"),
            Err(e) => report.fail(&format!(
                "the region opened and left {} times amid {} spawns cannot be opened: {e}",
                opens.load(Relaxed),
                spawns.load(Relaxed)
            )),
        }
        let r = open_region::<Life>(&p).unwrap_or_else(|e| {
            report.fail(&format!(
                "after {} spawns amid work in it, the region cannot be opened: {e}",
                spawns.load(Relaxed)
            ))
        });
        // SAFETY: nobody else has the region open.
        unsafe { verify_with_kept(report, &r, &kept) };
        r.destroy().expect("destroy");
    });
    let _ = std::fs::remove_file(&p);
    let _ = std::fs::remove_file(&other);
}
