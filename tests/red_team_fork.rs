//! Red-team attacks of session 9 on the fork handlers: forks while another thread holds a
//! region's pool lock, for each kind of region memory a process may fork with. A test that
//! found a defect is `#[ignore]`d with its number (RED-n), its owner and the exact failure.

mod red_team_common;

use cohort::{Cohort, RegionOptions};
use red_team_common::*;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

/// Region capacity of the tests.
const CAP: usize = 64 << 20;
/// Forks per test; each child must allocate within `FORK_CHILD_SECS`.
const FORKS: usize = 100;

/// Forks `FORKS` children while another thread takes `a`'s pool lock over and over
/// (`compact` walks the pool under it); each child allocates (its thread's first
/// allocation in the instance registers a heap under the lock) and frees. Returns how the
/// first child that failed ended, if one did.
fn fork_while_the_lock_is_taken(a: &Cohort<Life>) -> Option<(usize, Ended, String)> {
    // Blocks for `compact` to walk, of several classes and both lifetime classes.
    let kept: Vec<_> = (0..400)
        .map(|i| {
            let size = [16, 64, 200, 1000][i % 4];
            let life = if i % 3 == 0 { Life::Long } else { Life::Short };
            let p = a.malloc(size, life);
            assert!(!p.is_null(), "malloc({size}) in the parent");
            (p as usize, size, life)
        })
        .collect();
    let stop = AtomicBool::new(false);
    let failed = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Relaxed) {
                let _ = a.compact();
            }
        });
        // Stops the thread however this test ends (a failed fork panics here).
        let stop_thread = StopOnDrop(&stop);
        let failed = first_failed_fork(
            FORKS,
            FORK_CHILD_SECS,
            |_| {},
            || {
                for size in [24, 100, 3000, 40_000] {
                    let p = a.malloc(size, Life::Short);
                    assert!(!p.is_null(), "malloc({size}) in the child");
                    // SAFETY: allocated above, freed once with its size and class.
                    unsafe { a.free(p, size, Life::Short) };
                }
            },
        );
        drop(stop_thread);
        failed
    });
    for (p, size, life) in kept {
        // SAFETY: allocated above, freed once with its size and class.
        unsafe { a.free(p as *mut u8, size, life) };
    }
    failed
}

/// The private fixed region (`with_options`): the fork handlers take and release its lock
/// (RED-26's fix made it a private pool for fork), so no child inherits it held.
#[test]
fn a_fork_child_of_a_private_fixed_region_never_inherits_its_lock_held() {
    let a = Cohort::<Life>::with_options(&RegionOptions::new(CAP)).expect("region");
    let failed = fork_while_the_lock_is_taken(&a);
    assert_eq!(
        failed, None,
        "(round, how the child ended: Err(14) is SIGALRM, a hang)"
    );
}

/// RED-34 (every build; owner: fallback, placement; the fork handlers are remote's fork.rs):
/// `format_in` takes memory the caller has, and says nothing of how it is mapped: private
/// memory (a private anonymous or hugetlbfs mapping, a copy-on-write file mapping) is as
/// much the caller's as shared memory. Such a region is built as one shared between
/// processes (`Pool::private` is false for caller memory), so the fork handlers leave its
/// lock alone: they expect the parent's threads to release it in memory the child shares.
/// In private memory the child has a copy of the lock, which stays held by a parent thread
/// it does not have, for ever: the child's first allocation (which registers its heap under
/// the lock) waits without end. Made here with a thread of the parent that takes the lock
/// over and over (`compact`) while the parent forks; the same test on a `with_options`
/// region passes (above). Wanted: caller memory that is not shared (the kernel says so:
/// `/proc/self/maps`, or `mincore`/`madvise` probes) treated as a private region for fork,
/// or `format_in` documented and checked to need shared memory. Exact failure:
/// `Some((13, Err(14), ""))`: child 13 (1, 9 and 34 in other runs) died of SIGALRM after
/// 5 s in its first `malloc`.
#[test]
fn a_fork_child_of_a_region_in_private_caller_memory_never_inherits_its_lock_held() {
    let f = Cohort::<Life>::footprint(CAP).expect("footprint");
    let mem = aligned_anonymous(f.bytes, f.align, false);
    // SAFETY: fresh memory of `f.bytes`, aligned, this region's for the rest of the process.
    let a = unsafe { Cohort::<Life>::format_in(mem, f.bytes, &RegionOptions::new(CAP)) }
        .expect("format_in");
    let failed = fork_while_the_lock_is_taken(&a);
    core::mem::forget(a);
    assert_eq!(
        failed, None,
        "(round, how the child ended: Err(14) is SIGALRM, a hang)"
    );
}

/// Set in the processes [`fork_handlers_register_once_while_threads_fork`] runs itself in.
const REGISTER_RUN: &str = "COHORT_RED_REGISTER_RUN";
/// Fresh processes that race the registration.
const REGISTER_RUNS: usize = 30;

/// The fork handlers are registered by the first instance a process creates. In a fresh
/// process (this test binary run again, so nothing is registered yet), two threads create
/// their first instances while a third forks at once, three times; each child creates an
/// instance of its own, allocates, and forks a grandchild that does the same (the
/// handlers must be registered in the child, by its parent's registration or its own).
/// Every process must finish within its alarm: a registration that the child waits for
/// and nobody finishes hangs it.
#[test]
fn fork_handlers_register_once_while_threads_fork() {
    if std::env::var_os(REGISTER_RUN).is_some() {
        race_the_registration();
        return;
    }
    let exe = std::env::current_exe().expect("the test binary");
    for run in 0..REGISTER_RUNS {
        let mut child = std::process::Command::new(&exe)
            .args([
                "--exact",
                "fork_handlers_register_once_while_threads_fork",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(REGISTER_RUN, "1")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("run the test binary");
        let mut waited = 0;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            waited += 1;
            if waited > 30_000 {
                let _ = child.kill();
                panic!("run {run}: the racing process hung for 30 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert!(
            status.success(),
            "run {run}: the racing process failed: {status}"
        );
    }
}

/// An instance made, used and dropped: the registration's first caller in a process.
fn use_an_instance() {
    let a = Cohort::<Life>::new();
    let p = a.malloc(64, Life::Short);
    assert!(!p.is_null());
    // SAFETY: allocated above, freed once.
    unsafe { a.free(p, 64, Life::Short) };
}

fn race_the_registration() {
    let start = std::sync::Barrier::new(3);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                start.wait();
                use_an_instance();
            });
        }
        s.spawn(|| {
            start.wait();
            for _ in 0..3 {
                let child = in_child(FORK_CHILD_SECS, || {
                    use_an_instance();
                    let grandchild = in_child(FORK_CHILD_SECS, use_an_instance);
                    assert_eq!(wait(grandchild), Ok(0), "the grandchild");
                });
                assert_eq!(wait(child), Ok(0), "a child forked during the registration");
            }
        });
    });
}
