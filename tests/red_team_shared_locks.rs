//! Red-team attacks of session 10 on the locks a region shared between processes keeps
//! besides its pool lock (RED-10 made that one survive a holder killed with SIGKILL): a
//! process killed while it holds another lock of the region must not stop the others. A
//! test that found a defect is `#[ignore]`d with its number (RED-n), its owner and the
//! exact failure.

mod red_team_common;

use cohort::{Cohort, Retention};
use red_team_common::*;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

/// A process that reads the region's decay delays without pause (a monitor: the large
/// table's lock, then nothing else), or sets its retention, or allocates medium runs (every
/// 32nd looks at the large cache's decay under the same lock).
fn worker(a: &Cohort<Life>, kind: u64, progress: &AtomicU64) -> libc::pid_t {
    in_child(60, || {
        let mut n = 0u64;
        loop {
            match kind {
                0 => {
                    let _ = a.decay_delays();
                }
                1 => a.set_retention(Retention {
                    delay: Duration::from_millis(100 + n % 7),
                    ..Retention::DEFAULT
                }),
                _ => {
                    let p = a.malloc(20_000, Life::Short);
                    assert!(!p.is_null());
                    // SAFETY: live, freed once.
                    unsafe { a.free(p, 20_000, Life::Short) };
                }
            }
            n += 1;
            progress.fetch_add(1, Relaxed);
        }
    })
}

/// RED-49 (every build; owner: large, with the lead: `PoolShared::large`, src/pool.rs and
/// src/large.rs): RED-10 for the large table's lock. A shared region's pool keeps a large
/// table (always empty there: the region serves large allocations from its units) behind a
/// plain spin lock in the region's state, with no dead-holder detection. Every 32nd medium
/// allocation looks at its cache's decay under that lock (`decay_large_cache`), and
/// `stats`, `is_empty`, `compact`, `release_class`, `set_retention`, `retention` and
/// `decay_delays` take it. A process killed -9 while it holds it leaves it held for good,
/// and every later `release_class`, `compact`, `stats`, `is_empty`... of every process spins
/// for ever; in a file region the held word is in the file, so reopening does not help
/// (found first by `workers_killed_mid_work_in_a_region_their_parent_keeps_open_leave_it_openable`
/// in red_team_fork_claims.rs, with medium work alone: 1 run in 8 to 40 of 24 kills; gdb
/// showed the driver in `release_class -> Mutex<RawSpin, LargeTable>::lock -> spin_hint`
/// after the region was reopened). Here the killed process reads `decay_delays` (or sets
/// the retention, or allocates medium runs) without pause, so it holds the lock a good part
/// of the time; up to 300 kills, each followed by a probe process that must finish
/// `compact`, `stats` and `release_class` within 30 s (its alarm; 5 s until session 20, raised so a loaded machine cannot trip it).
#[test]
fn a_process_killed_holding_the_large_table_lock_does_not_stop_the_others() {
    isolated(120, |report| {
        let a = Cohort::<Life>::shared_anonymous(64 << 20).expect("a shared region");
        let progress = shared_words(1);
        for kill in 0..300u64 {
            let kind = kill % 3;
            let before = progress[0].load(Relaxed);
            let child = worker(&a, kind, &progress[0]);
            until(
                &progress[0],
                before + 200 + kill % 97,
                child,
                report,
                "the worker",
            );
            kill9(child);
            let probe = in_child(30, || {
                let _ = a.compact();
                let _ = a.stats();
                // SAFETY: nothing of Short is live (the workers freed every run they made;
                // a killed one's last run is dead by the release's contract).
                unsafe { a.release_class(Life::Short) };
            });
            let ended = wait(probe);
            if ended != Ok(0) {
                report.fail(&format!(
                    "after kill -9 number {kill} of a worker ({}), another process's compact, \
                     stats and release_class: {ended:?} (14 is SIGALRM: it hung for 30 s)",
                    [
                        "reading decay_delays",
                        "setting the retention",
                        "allocating medium runs"
                    ][kind as usize]
                ));
            }
        }
    });
}
