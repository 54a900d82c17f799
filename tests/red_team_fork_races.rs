//! Red-team attacks of session 11 on the fork claim (a fork child of a process that has a
//! named region open claims an attach slot of its own in the fork handler): forks from
//! several threads while other threads of the same process open and leave the region,
//! and children that work in it and then `_exit`, exec, leave, or open it again
//! themselves. After the parent leaves, the region must open, verify, and hold the
//! parent's tagged objects whole. A test that found a defect is `#[ignore]`d with its
//! number (RED-n), its owner and the exact failure. The tests of this file run one at a
//! time, each in a driver process of its own.

mod red_team_common;

use cohort::{CreateOptions, Place, SharedCohort};
use red_team_common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Small and medium objects allocated, written and freed in `r`.
fn churn(r: &SharedCohort<Life>, seed: &mut u64, n: usize) {
    let mut live = Vec::new();
    for _ in 0..n {
        let size = match next(seed) % 4 {
            0 => 24 + next(seed) as usize % 200,
            1 => 1000 + next(seed) as usize % 3000,
            _ => 20_000 + next(seed) as usize % 60_000,
        };
        let q = r.malloc(size, Life::Short);
        assert!(!q.is_null(), "malloc({size})");
        // SAFETY: `size` bytes of ours.
        unsafe { q.write_bytes(0xee, size) };
        live.push((q, size));
    }
    for (q, size) in live {
        // SAFETY: allocated above, freed once with its size and class.
        unsafe { r.free(q, size, Life::Short) };
    }
}

/// The driver's report, shared by its threads.
struct Shared<'a>(&'a Report);
// SAFETY: the report is a page of shared memory written only by `Report::fail`, which ends
// the process; any thread may do that.
unsafe impl Sync for Shared<'_> {}

/// How a fork child ends.
fn end_child(r: &SharedCohort<Life>, how: u64, seed: &mut u64) {
    match how {
        // Ends at once (a subprocess that failed to exec, a crashed helper).
        0 => {}
        // Runs another program.
        1 => {
            let argv = [c"/bin/true".as_ptr(), core::ptr::null()];
            // SAFETY: a NUL-terminated path and argument list.
            unsafe { libc::execv(c"/bin/true".as_ptr(), argv.as_ptr()) };
        }
        // Leaves the region (its copy of the view goes, as at a program's end).
        2 => {
            // SAFETY: the child's copy of the parent's value, dropped once, here; the
            // parent's threads do not exist in the child.
            drop(unsafe { core::ptr::read(r) });
        }
        // Forks a grandchild that works in the region and ends at once, then leaves.
        _ => {
            let mut grand_seed = next(seed);
            let grandchild = in_child(20, || churn(r, &mut grand_seed, 20));
            assert_eq!(wait(grandchild), Ok(0), "the grandchild");
            // SAFETY: as above.
            drop(unsafe { core::ptr::read(r) });
        }
    }
}

/// Two threads fork children in a loop (each child works in the region the process has
/// open, then ends one of four ways), while two other threads open the region again, work
/// in it and leave, over and over; the main thread keeps tagged objects. Then every thread
/// stops, the main thread leaves, and the region must open, verify and hold the objects.
#[test]
fn forks_from_many_threads_amid_opens_and_leaves_keep_the_region_openable() {
    let _serial = serial();
    let p = region_path("forkraces");
    let others = [region_path("forkraces-b"), region_path("forkraces-c")];
    // The alarms catch hangs only: a run takes 40 to 180 s at a load of 10 to 20 (the
    // openers live as long as the main loop), so they are well past that.
    isolated(420, |report| {
        let r = SharedCohort::<Life>::create(Place::File(&p), CreateOptions::new(128 << 20))
            .expect("create");
        let mut kept = Vec::new();
        for i in 0..64usize {
            let size = 40 + i * 37;
            let q = r.malloc(size, Life::Long);
            assert!(!q.is_null());
            let off = r.offset_of(q).unwrap().get();
            // SAFETY: `size` bytes of ours.
            unsafe { q.write_bytes(tag_of(off), size) };
            kept.push((off, size));
        }
        // Two other regions, which two threads of this process open and leave over and
        // over (a process opens a region once at a time).
        for o in &others {
            SharedCohort::<Life>::create(Place::File(o), CreateOptions::new(32 << 20))
                .expect("create")
                .leave()
                .expect("leave");
        }
        // Two processes open and leave the region itself over and over.
        let quit = shared_words(2);
        let openers: Vec<_> = (0..2u64)
            .map(|t| {
                // SAFETY: the child's copy of the parent's value, dropped once, here: it
                // leaves the region at once, as a program that opens it by name would not
                // have it.
                in_child_reporting(360, report, || {
                    drop(unsafe { core::ptr::read(&r) });
                    let mut seed = 0xabcd_u64 ^ (t << 40);
                    while quit[0].load(Relaxed) == 0 {
                        let again = open_region::<Life>(&p).expect("an opener process's open");
                        churn(&again, &mut seed, 10);
                        again.leave().expect("an opener process's leave");
                        quit[1].fetch_add(1, Relaxed);
                    }
                })
            })
            .collect();
        let stop = AtomicBool::new(false);
        let forks = AtomicU64::new(0);
        let opens = AtomicU64::new(0);
        let shared = Shared(report);
        std::thread::scope(|s| {
            let mut threads = Vec::new();
            for t in 0..2u64 {
                let (r, stop, forks, shared) = (&r, &stop, &forks, &shared);
                threads.push(s.spawn(move || {
                    let report = shared.0;
                    let mut seed = 0x1234_5678_9abc_def1 ^ (t << 32);
                    while !stop.load(Relaxed) {
                        let how = next(&mut seed) % 4;
                        let mut child_seed = next(&mut seed);
                        let child = in_child_reporting(30, report, || {
                            churn(r, &mut child_seed, 30);
                            end_child(r, how, &mut child_seed);
                        });
                        wait_ok(child, report, &format!("a fork child (ending {how})"));
                        forks.fetch_add(1, Relaxed);
                    }
                }));
            }
            for (t, other) in others.iter().enumerate() {
                let (stop, opens, shared) = (&stop, &opens, &shared);
                threads.push(s.spawn(move || {
                    let report = shared.0;
                    let mut seed = 0x0f0f_1234_u64 ^ ((t as u64) << 40);
                    while !stop.load(Relaxed) {
                        let again = open_region::<Life>(other)
                            .unwrap_or_else(|e| report.fail(&format!("a thread's open: {e}")));
                        churn(&again, &mut seed, 10);
                        again
                            .leave()
                            .unwrap_or_else(|e| report.fail(&format!("a thread's leave: {e}")));
                        opens.fetch_add(1, Relaxed);
                    }
                }));
            }
            // Stops the threads however this driver ends (a failed churn panics here).
            let stop_threads = StopOnDrop(&stop);
            let mut seed = 0x5eed_u64;
            while forks.load(Relaxed) < 400
                || opens.load(Relaxed) < 300
                || quit[1].load(Relaxed) < 150
            {
                // The threads end only at the stop: one that ended panicked.
                assert!(
                    !threads.iter().any(|t| t.is_finished()),
                    "a forking or opening thread ended (a panic: see above)"
                );
                churn(&r, &mut seed, 10);
                std::thread::yield_now();
            }
            drop(stop_threads);
        });
        quit[0].store(1, Relaxed);
        for o in openers {
            wait_ok(o, report, "an opener process");
        }
        r.leave().expect("leave");
        for o in &others {
            match open_region::<Life>(o) {
                Ok(x) => x.destroy().expect("destroy"),
                Err(e) => report.fail(&format!(
                    "a region this process opened and left over and over while its other \
                     threads forked cannot be opened: {e}"
                )),
            }
        }
        let r = open_region::<Life>(&p).unwrap_or_else(|e| {
            let _ = std::fs::remove_file(&p);
            report.fail(&format!(
                "after {} forks from two threads amid {} opens and leaves of other regions by two \
                 others and {} of this one by two processes, the region cannot be opened: {e}",
                forks.load(Relaxed),
                opens.load(Relaxed),
                quit[1].load(Relaxed)
            ))
        });
        // SAFETY: no other process has the region open.
        unsafe { verify_with_kept(report, &r, &kept) };
        r.destroy().expect("destroy");
    });
    let _ = std::fs::remove_file(&p);
    for o in &others {
        let _ = std::fs::remove_file(o);
    }
}
