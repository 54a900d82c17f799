//! Red-team attacks of session 14 on the owner's allocation cursor across processes: a
//! fork child of a process whose threads hold stale heads (fast-path objects only, the
//! header saying empty: see `tests/red_team_cursor_paths.rs`), a region shared with
//! children, and a file region opened by several processes at different addresses, whose
//! holders leave or are killed with SIGKILL while their cursors hold objects. Every reader
//! of every process must count those objects, none may be handed out again, and their
//! bytes (a byte of their place in their block: the same in every mapping) must stay. A
//! test that found a defect is `#[ignore]`d with its number (RED-n), its owner and the
//! exact failure.

mod red_team_common;
mod red_team_cursor_common;

use cohort::{Cohort, CreateOptions, Off, Place, SharedCohort};
use red_team_common::{
    in_child, in_child_reporting, isolated, kill9, open_region, panic_message, region_path, serial,
    shared_words, until, wait_ok, Report,
};
use red_team_cursor_common::*;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use test_support::raw_thread;

/// Runs `f`, failing `report` with its panic's message.
fn reporting(report: &Report, what: &str, f: impl FnOnce()) {
    if let Err(e) = std::panic::catch_unwind(AssertUnwindSafe(f)) {
        report.fail(&format!("{what}: {}", panic_message(&*e)));
    }
}

/// A thread that makes a stale head in `a` and parks until `go` is sent; then frees nothing
/// and exits. Returns its objects.
fn parked_stale_head(
    a: &Arc<Cohort<Life>>,
) -> (Vec<usize>, mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let a2 = a.clone();
    let worker = std::thread::spawn(move || {
        tx.send(stale_head(&a2, Life::A)).unwrap();
        let _ = go_rx.recv();
    });
    (rx.recv().unwrap(), go_tx, worker)
}

/// A fork child of a process whose main thread and a parked worker both hold stale heads:
/// the child counts both, hands out neither, frees the worker's (whose thread it lacks)
/// and releases its own class; the parent is unchanged.
#[test]
fn a_fork_child_counts_and_keeps_every_threads_stale_head() {
    let a = Arc::new(Cohort::<Life>::new());
    let (theirs, go, worker) = parked_stale_head(&a);
    let mine = stale_head(&a, Life::A);
    let mut all = theirs.clone();
    all.extend(&mine);
    let child = in_child(30, || {
        counted(&a, &all, true, "in the child");
        hands_out_apart(&a, &all, 3000, "the child's allocations");
        free_all(&a, &theirs);
        counted(&a, &mine, true, "the child freed the worker's");
        // SAFETY: the child uses none of its class A objects after.
        let r = unsafe { a.release_class(Life::A) };
        assert_eq!(r.slots, mine.len(), "the child's release: {r:?}");
        ends_empty(&a);
    });
    assert_eq!(red_team_common::wait(child), Ok(0), "the child failed");
    counted(&a, &all, true, "the parent after the child");
    hands_out_apart(&a, &all, 3000, "the parent's allocations");
    go.send(()).unwrap();
    worker.join().unwrap();
    counted(&a, &all, true, "after the worker's exit");
    free_all(&a, &all);
    ends_empty(&a);
}

/// Words shared with the children: `[0]` a holder is ready, `[1]` it leaves now, `[2..2 +
/// N]` its objects (and in a shared region another `N`), `[2 + N]` the reader counted them,
/// `[3 + N]` the holder is gone.
const WORDS: usize = 2 + 2 * N;
const READ: usize = 2 + N;
const GONE: usize = 3 + N;
/// The holder's address of its first object.
const HOLDER_AT: usize = 4 + N;

/// A region shared with forked children: a child makes two stale heads (its main thread's,
/// and an exited thread's, handed over inside the region), is counted by the parent while
/// it lives, then is killed; the parent takes its heap over, and neither the parent nor a
/// second child hands its objects out again.
#[test]
fn a_killed_childs_stale_heads_in_a_shared_region_are_counted_and_kept() {
    isolated(90, |report| {
        let a = Arc::new(Cohort::<Life>::shared_anonymous(64 << 20).expect("a region"));
        let words = shared_words(WORDS);
        let child = in_child_reporting(60, report, || {
            let a2 = a.clone();
            let exited = raw_thread::spawn(move || stale_head(&a2, Life::A))
                .join()
                .unwrap();
            let objs: Vec<usize> = exited.into_iter().chain(stale_head(&a, Life::A)).collect();
            for (w, p) in words[2..].iter().zip(&objs) {
                w.store(*p as u64, Ordering::Relaxed);
            }
            words[0].store(1, Ordering::Release);
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        until(&words[0], 0, child, report, "the child's stale heads");
        let objs: Vec<usize> = words[2..]
            .iter()
            .map(|w| w.load(Ordering::Relaxed) as usize)
            .collect();
        reporting(report, "while the child lives", || {
            assert_eq!(changed(&objs), None, "an object changed");
            assert_eq!(stats_live(&a, Life::A), objs.len(), "stats' live count");
            assert_eq!(reported_live(&a, Life::A), objs.len(), "block reports");
        });
        kill9(child);
        reporting(report, "after the kill", || {
            a.reap_dead_processes();
            counted(&a, &objs, true, "after the kill");
        });
        let second = in_child_reporting(60, report, || {
            hands_out_apart(&a, &objs, 3000, "a second child");
        });
        wait_ok(second, report, "the second child");
        reporting(report, "the driver at the end", || {
            hands_out_apart(&a, &objs, 3000, "the driver");
            counted(&a, &objs, true, "at the end");
            free_all(&a, &objs);
            ends_empty(&a);
        });
    });
}

/// A child that opens region file `p` (its own mapping, at its own address), makes a
/// stale head and reports the objects' offsets in `words`, then leaves when told (or
/// waits to be killed).
fn file_holder(p: &std::path::Path, words: &'static [AtomicU64], report: &Report) -> i32 {
    in_child_reporting(60, report, || {
        let r = open_region::<Life>(p).expect("the holder's open");
        let objs = stale_head(&r, Life::A);
        for (w, q) in words[2..].iter().zip(&objs) {
            let off = r.offset_of(*q as *const u8).expect("an offset").get();
            w.store(off, Ordering::Relaxed);
        }
        words[HOLDER_AT].store(objs[0] as u64, Ordering::Relaxed);
        words[0].store(1, Ordering::Release);
        while words[1].load(Ordering::Acquire) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        r.leave().expect("the holder's leave");
    })
}

/// The objects at the offsets in `words[2..]`, in `r`'s mapping.
fn objects_of(r: &SharedCohort<Life>, words: &[AtomicU64]) -> Vec<usize> {
    words[2..2 + N]
        .iter()
        .map(|w| r.ptr(Off::<u8>::new(w.load(Ordering::Relaxed)).expect("an offset")) as usize)
        .collect()
}

/// A file region: a holder process with a stale head is counted by another process that
/// has the region open at another address; then the holder leaves (`kill`: is killed),
/// and the other process, then a third opener, count the objects, keep them whole and
/// never hand them out, and free them.
fn a_file_holders_stale_head(tag: &str, kill: bool) {
    let _serial = serial();
    let p = region_path(tag);
    isolated(90, |report| {
        SharedCohort::<Life>::create(Place::File(&p), CreateOptions::new(64 << 20))
            .expect("create")
            .leave()
            .expect("leave");
        let words = shared_words(WORDS);
        let holder = file_holder(&p, words, report);
        until(&words[0], 0, holder, report, "the holder's stale head");
        let reader = in_child_reporting(60, report, || {
            // Address space taken first, so that the reader maps the region elsewhere than
            // the holder (a forked sibling would get the same address).
            let _shift = red_team_common::aligned_anonymous(256 << 20, BLOCK, false);
            let r = open_region::<Life>(&p).expect("the reader's open");
            let objs = objects_of(&r, words);
            let theirs = words[HOLDER_AT].load(Ordering::Relaxed) as usize;
            assert_ne!(
                objs[0], theirs,
                "setup: the reader maps the region where the holder does"
            );
            assert_eq!(changed(&objs), None, "an object changed");
            assert_eq!(
                stats_live(&r, Life::A),
                N,
                "the reader's stats while the holder lives"
            );
            assert_eq!(reported_live(&r, Life::A), N, "the reader's block reports");
            words[READ].store(1, Ordering::Release);
            // Set by the driver, this child's parent (bounded by this child's alarm).
            while words[GONE].load(Ordering::Acquire) == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            if kill {
                r.reap_dead_processes();
            }
            counted(&r, &objs, true, "the reader after the holder");
            hands_out_apart(&r, &objs, 3000, "the reader");
            r.leave().expect("the reader's leave");
        });
        until(&words[READ], 0, reader, report, "the reader's counts");
        if kill {
            kill9(holder);
        } else {
            words[1].store(1, Ordering::Release);
            wait_ok(holder, report, "the holder");
        }
        words[GONE].store(1, Ordering::Release);
        wait_ok(reader, report, "the reader");
        let last = in_child_reporting(60, report, || {
            let r = open_region::<Life>(&p).expect("the last open");
            let objs = objects_of(&r, words);
            counted(&r, &objs, true, "the last opener");
            hands_out_apart(&r, &objs, 3000, "the last opener");
            free_all(&r, &objs);
            ends_empty(&r);
            r.leave().expect("the last leave");
        });
        wait_ok(last, report, "the last opener");
    });
    let _ = std::fs::remove_file(&p);
}

#[test]
fn a_file_holders_stale_head_after_its_leave() {
    a_file_holders_stale_head("cursor-leave", false);
}

#[test]
fn a_file_holders_stale_head_after_its_kill() {
    a_file_holders_stale_head("cursor-kill", true);
}

/// Objects a ring of the killed child publishes (`words[1 + i]`, nonzero while live).
const RING: usize = 48;
/// Kill rounds (fewer in a debug build).
const KILLS: u64 = if cfg!(debug_assertions) { 12 } else { 60 };

/// A child that allocates 1 KiB objects for ever (a slow path every few allocations: four
/// to a 4 KiB page), each filled with its tag and published in a ring of `words` before
/// the one it replaces is unpublished and freed; `words[0]` counts its steps. `exiting`:
/// every four steps run on a new thread, which exits (its heap handed over) after them:
/// joined, so that the next starts only once it is gone. The end of a scope waits only for
/// its threads' closures, not for their thread-local destructors (where a thread hands its
/// heap over): on a loaded machine (or one CPU) up to 127 exited threads were still there,
/// each holding a block of its own, and the 128th found the 256 MiB region full ('out of
/// memory', reported by the driver as 'the child made no progress in 5 s').
fn ring_child(
    a: &Cohort<Life>,
    words: &'static [AtomicU64],
    report: &Report,
    exiting: bool,
) -> i32 {
    in_child_reporting(60, report, || {
        let step = |i: usize| {
            let p = a.malloc(1024, Life::A) as usize;
            assert!(p != 0, "out of memory");
            // SAFETY: ours, 1 KiB.
            unsafe { (p as *mut u8).write_bytes(tag_of(p), 1024) };
            let slot = &words[1 + i % RING];
            let old = slot.swap(p as u64, Ordering::AcqRel) as usize;
            if old != 0 {
                // SAFETY: a live object of ours, freed once.
                unsafe { a.free(old as *mut u8, 1024, Life::A) };
            }
            words[0].store(i as u64 + 1, Ordering::Release);
        };
        let mut i = 0usize;
        loop {
            if exiting {
                // The join waits for the thread's end, its destructors included.
                let ended = raw_thread::scope(|s| s.spawn(|| (i..i + 4).for_each(step)).join());
                if let Err(panic) = ended {
                    std::panic::resume_unwind(panic);
                }
                i += 4;
            } else {
                step(i);
                i += 1;
            }
        }
    })
}

/// A process killed at random moments of a loop of 1 KiB allocations and frees in a
/// region shared with its parent (`exiting`: run by threads that exit every four steps):
/// after each kill the parent (reaping the dead heap) and a fresh child allocate 2000
/// objects each, none at an object the dead child had published, whose bytes stay;
/// `verify` passes (a kill leaks at most the object in flight).
fn killed_rounds(exiting: bool) {
    isolated(240, |report| {
        let a = Cohort::<Life>::shared_anonymous(256 << 20).expect("a region");
        let mut seed = 0x5eed_c0de_u64;
        for round in 0..KILLS {
            let words = shared_words(1 + RING);
            let child = ring_child(&a, words, report, exiting);
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            until(
                &words[0],
                100 + seed % 3000,
                child,
                report,
                "the ring child",
            );
            kill9(child);
            let published: Vec<usize> = words[1..]
                .iter()
                .map(|w| w.load(Ordering::Acquire) as usize)
                .filter(|&p| p != 0)
                .collect();
            let check = |who: &str| {
                let mut mine = Vec::new();
                for _ in 0..2000 {
                    let p = a.malloc(1024, Life::A) as usize;
                    assert!(p != 0, "{who}: out of memory");
                    assert!(
                        !published.contains(&p),
                        "round {round}: {who} was handed the dead child's live object {p:#x}"
                    );
                    mine.push(p);
                }
                for &p in &published {
                    // SAFETY: the dead child's live object, 1 KiB.
                    let b = unsafe { std::slice::from_raw_parts(p as *const u8, 1024) };
                    assert!(
                        b.iter().all(|&x| x == tag_of(p)),
                        "round {round}: {who}: the dead child's object {p:#x} changed"
                    );
                }
                for p in mine {
                    // SAFETY: allocated above, freed once.
                    unsafe { a.free(p as *mut u8, 1024, Life::A) };
                }
            };
            reporting(report, "the driver", || {
                a.reap_dead_processes();
                check("the driver");
            });
            let fresh = in_child_reporting(60, report, || check("a fresh child"));
            wait_ok(fresh, report, "the fresh child");
            reporting(report, "the driver's verify", || {
                // SAFETY: no other process uses the region now.
                let v = unsafe { a.verify() };
                assert!(v.is_ok(), "round {round}: verify after the kill: {v:?}");
            });
            // The dead child's objects go (they are nobody's now).
            for p in published {
                // SAFETY: live, 1 KiB, freed once.
                unsafe { a.free(p as *mut u8, 1024, Life::A) };
            }
        }
    });
}

#[test]
fn a_child_killed_in_its_slow_paths_leaves_its_published_objects_alone() {
    killed_rounds(false);
}

/// The same with the child's threads exiting (their heaps handed over) all the time: a
/// kill may land in a hand-over, which the reaper finishes.
#[test]
fn a_child_killed_amid_thread_exits_leaves_its_published_objects_alone() {
    killed_rounds(true);
}
