//! Red-team attacks of session 6 on regions shared between processes (shared-anonymous
//! instances across fork, named regions in files): processes killed with SIGKILL at any
//! moment, and region files whose header is intact but whose state is not. A test that
//! found a defect is `#[ignore]`d with its number (RED-n) and the exact failure, until the
//! fix un-ignores it.

use cohort::{Cohort, CreateOptions, OpenOptions, Place, SharedCohort};
mod red_team_common;

use red_team_common::*;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

/// A child that allocates and frees 1-byte objects for ever: tiny classes are served under
/// the pool's lock, so the child holds it most of the time.
fn churn_tiny(a: &Cohort<Life>, started: &AtomicU64) -> libc::pid_t {
    in_child(60, || loop {
        let p = a.malloc(1, Life::Short);
        assert!(!p.is_null());
        started.fetch_add(1, Ordering::Relaxed);
        // SAFETY: live, 1 byte.
        unsafe { a.free(p, 1, Life::Short) };
    })
}

/// RED-10 (every build; owner shared): a process killed (SIGKILL, the OOM killer) while it
/// holds the pool's lock of a region it shares stops every other process of the region
/// for ever: the lock is a spin lock in the region, held by nobody alive, never recovered.
/// Issue 14 asks for a robust process-shared lock and dead-process detection.
/// Exact failure: `attempt 0: after kill -9 of the churning child, a 1-byte malloc in
/// another process did not return within 5 s (Err(14): 14 is SIGALRM)`.
#[test]
fn a_process_killed_holding_the_pool_lock_does_not_stop_the_others() {
    isolated(60, |report| {
        let a = Cohort::<Life>::shared_anonymous(64 << 20).expect("a shared region");
        // The counter lives in the region, so the driver sees the child's progress.
        let started = a.calloc(8, Life::Long).cast::<AtomicU64>();
        // SAFETY: 8 zeroed bytes, aligned to 8, live until the end.
        let started = unsafe { &*started };
        for attempt in 0..30 {
            let child = churn_tiny(&a, started);
            let at = format!("attempt {attempt}: a new churning child");
            until(
                started,
                started.load(Ordering::Relaxed) + 1000,
                child,
                report,
                &at,
            );
            kill9(child);
            // The survivor allocates and frees (tiny and small), then checks the region.
            let survivor = in_child(30, || {
                let checked = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    for size in [1usize, 2, 64, 64, 1000] {
                        let p = a.malloc(size, Life::Short);
                        assert!(!p.is_null(), "malloc({size}) is null");
                        // SAFETY: live, `size` bytes.
                        unsafe { a.free(p, size, Life::Short) };
                    }
                    // SAFETY: the only process using the region now (the churning child
                    // is dead, the driver waits).
                    unsafe { a.verify() }.map(|_| ()).map_err(|e| e.to_string())
                }));
                match checked {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => report.fail(&format!("verify: {e}")),
                    Err(payload) => {
                        let msg = payload
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        report.fail(&format!("panicked: {msg}"));
                    }
                }
            });
            let ended = wait(survivor);
            if ended != Ok(0) {
                report.fail(&format!(
                    "attempt {attempt}: after kill -9 of the churning child, another process \
                     that allocates 1 to 1000 bytes and verifies the region: {ended:?} (14 is \
                     SIGALRM: it hung for 30 s; 1: it reported {:?})",
                    report.message()
                ));
            }
        }
    });
}

/// RED-11 (every build; owner shared): the heap of a process killed with SIGKILL stays
/// live in the region for ever: its blocks and allocations are nobody's to release or
/// reuse. By the rule threads follow (an exited thread's allocations are released by any
/// thread's `release_class`), a dead process's should be too; issue 14 asks for
/// dead-process detection and adoption. Exact failure: `the dead child's 1000
/// allocations: Released { blocks: 0, slots: 0, left_to_other_threads: 1, large: 0 }`.
#[test]
fn a_killed_processs_allocations_are_released_as_an_exited_threads() {
    isolated(60, |report| {
        let a = Cohort::<Life>::shared_anonymous(64 << 20).expect("a shared region");
        let done = a.calloc(8, Life::Long).cast::<AtomicU64>();
        // SAFETY: 8 zeroed bytes, aligned to 8, live until the end.
        let done = unsafe { &*done };
        let child = in_child(60, || {
            for _ in 0..1000 {
                assert!(!a.malloc(64, Life::Short).is_null());
            }
            done.store(1, Ordering::Release);
            loop {
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        until(done, 0, child, report, "the allocating child");
        kill9(child);
        // SAFETY: nothing of class Short is used after: the only allocations are the dead
        // child's.
        let released = unsafe { a.release_class(Life::Short) };
        if released.slots != 1000 {
            // And from a thread that joins the region after the death (a new heap).
            let later = std::thread::scope(|s| {
                s.spawn(|| {
                    let p = a.malloc(8, Life::Long);
                    // SAFETY: as above; p is live, 8 bytes.
                    unsafe {
                        a.free(p, 8, Life::Long);
                        a.release_class(Life::Short)
                    }
                })
                .join()
                .unwrap()
            });
            report.fail(&format!(
                "the dead child's 1000 allocations, released by a thread with a heap: \
                 {released:?}; then by a thread that joined after the death: {later:?}"
            ));
        }
    });
}

/// A fresh path for a region file of this test.
fn file(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("cohort-red-{tag}-{}", std::process::id()))
}

/// RED-12 (every build; owners shared, persist): a file region whose user was killed
/// while holding the pool's lock keeps the lock word set in the file: every later open of
/// the file, by any process, after any restart, hangs (the lock is never recovered, and
/// opening or the first allocation waits on it) instead of recovering or returning an
/// error. Exact failure: `attempt 0: a process that opens the file after kill -9 of its
/// user, then allocates 1 byte: Err(14) (14 is SIGALRM: it hung)`.
#[test]
fn a_file_region_whose_user_was_killed_holding_the_lock_opens() {
    let path = file("killed");
    let _ = SharedCohort::<Life>::remove(Place::File(&path));
    isolated(200, |report| {
        SharedCohort::<Life>::create(Place::File(&path), CreateOptions::new(16 << 20))
            .expect("create")
            .leave()
            .expect("leave");
        // Progress of the churning user, outside the region.
        let progress = Report::new();
        // SAFETY: the page is zeroed and aligned; its first word is the counter.
        let started = unsafe { &*progress.0.cast::<AtomicU64>() };
        for attempt in 0..30 {
            // Each user is a process of its own that opens the file.
            let user = in_child(60, || {
                let r = SharedCohort::<Life>::open(Place::File(&path), OpenOptions::new())
                    .expect("open");
                loop {
                    let p = r.malloc(1, Life::Short);
                    assert!(!p.is_null());
                    started.fetch_add(1, Ordering::Relaxed);
                    // SAFETY: live, 1 byte.
                    unsafe { r.free(p, 1, Life::Short) };
                }
            });
            let at = format!("attempt {attempt}: the user of the file region");
            until(
                started,
                started.load(Ordering::Relaxed) + 1000,
                user,
                report,
                &at,
            );
            kill9(user);
            let opener = in_child(30, || {
                match SharedCohort::<Life>::open(Place::File(&path), OpenOptions::new()) {
                    Ok(r) => {
                        let p = r.malloc(1, Life::Short);
                        // SAFETY: live, 1 byte.
                        unsafe { r.free(p, 1, Life::Short) };
                        r.leave().expect("leave");
                    }
                    Err(e) => panic!("{e}"),
                }
            });
            let ended = wait(opener);
            if ended != Ok(0) {
                report.fail(&format!(
                    "attempt {attempt}: a process that opens the file after kill -9 of its \
                     user, then allocates 1 byte: {ended:?} (14 is SIGALRM: it hung; 1 an \
                     error or a panic)"
                ));
            }
        }
    });
    let _ = SharedCohort::<Life>::remove(Place::File(&path));
}

/// A region file whose header is intact but whose state area (pool, registry, heap
/// records: everything past the header's page and before the blocks) is garbage (damaged
/// on disk, scribbled by another program) must not crash the process that opens it and
/// allocates: `open` promises to refuse what this code does not read. A guard (passes). The
/// region is 64 MiB: a debug build's state area takes 12 MiB (512 heap slots of 11 classes).
#[test]
fn a_region_file_with_a_garbage_state_area_is_refused_not_followed() {
    let path = file("garbage");
    let _ = SharedCohort::<Life>::remove(Place::File(&path));
    isolated(120, |report| {
        let r = SharedCohort::<Life>::create(Place::File(&path), CreateOptions::new(64 << 20))
            .expect("create");
        for size in [8usize, 64, 1000] {
            assert!(!r.malloc(size, Life::Long).is_null());
        }
        r.leave().expect("leave");
        let bytes = std::fs::read(&path).expect("read the file");
        let mut crashed = Vec::new();
        for (seed, fill) in [(1u64, None), (2, Some(0xffu8)), (3, Some(0x41))] {
            let mut damaged = bytes.clone();
            let mut x = seed;
            // The state area: from the page after the header up to the first block.
            for b in &mut damaged[4096..2 << 20] {
                x = test_support::mix(x);
                *b = fill.unwrap_or(x as u8);
            }
            std::fs::write(&path, &damaged).expect("write the damaged file");
            let opener = in_child(10, || {
                if let Ok(r) = SharedCohort::<Life>::open(Place::File(&path), OpenOptions::new()) {
                    for size in [1usize, 64, 1000] {
                        let p = r.malloc(size, Life::Short);
                        if !p.is_null() {
                            // SAFETY: live, `size` bytes.
                            unsafe { r.free(p, size, Life::Short) };
                        }
                    }
                }
            });
            let ended = wait(opener);
            if !matches!(ended, Ok(0) | Ok(1)) {
                crashed.push(format!(
                    "state filled with {fill:?} (seed {seed}): {ended:?}"
                ));
            }
        }
        if !crashed.is_empty() {
            report.fail(&format!(
                "opening a region file whose state area is garbage (header intact) killed \
                 the opener: {crashed:?} (11 is SIGSEGV, 7 SIGBUS, 14 SIGALRM: a hang)"
            ));
        }
    });
    let _ = SharedCohort::<Life>::remove(Place::File(&path));
}
