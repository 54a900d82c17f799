//! Red-team attacks of session 10 on the attach slots fork children claim in named regions
//! (since RED-32's fix, a fork child of a process that has a region open claims a slot of
//! its own): subprocesses that never leave (exec, `_exit`, kill -9) in a process that keeps
//! the region open, forks from many threads while other processes open and leave. A test
//! that found a defect is `#[ignore]`d with its number (RED-n), its owner and the exact
//! failure (controls: with 0 or 240 subprocesses the same test passes). The tests of this file run one at a time, each in a driver process of its own
//! (a fork child of one test's thread would hold another test's region open).

mod red_team_common;

use cohort::{CreateOptions, Place, SharedCohort};
use red_team_common::*;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

/// RED-48 (every build; owner: seal, persist/attach): a long-running process that has a
/// region open and runs subprocesses (fork + exec, or fork + `_exit`: a server's
/// helpers) gives each child a slot in the fork handler; the children die without
/// leaving, and only an opener or the last leaver frees dead processes' slots, so the
/// process that keeps the region open fills the table (248 slots) with dead ones. From then
/// on a fork child that works in the region gets no slot (`claim_in_fork_child` takes a
/// free one or none, and frees no dead one), and RED-32 is back: the parent leaves, its
/// leave frees the dead slots, finds none held and seals the state; the child goes on
/// working in the region; the next open refuses the healthy region as `StateDamaged`.
///
/// RED-48 (fixed): a fork child now claims its slot lazily, before its first write of the
/// region, and frees dead processes' slots when it finds none free.
#[test]
fn a_worker_forked_after_many_subprocesses_keeps_the_region_openable() {
    let _serial = serial();
    let p = region_path("manyexec");
    isolated(120, |report| {
        let r = SharedCohort::<Life>::create(Place::File(&p), CreateOptions::new(32 << 20))
            .expect("create");
        let keep = r.malloc(100, Life::Long);
        assert!(!keep.is_null());
        // SAFETY: 100 bytes of ours.
        unsafe { keep.write_bytes(7, 100) };
        // A server's day: 300 subprocesses, half exec'd, half ended with _exit.
        for i in 0..300 {
            assert_eq!(subprocess(i % 2 == 0), Ok(0), "the subprocess");
        }
        let go = shared_words(1);
        let worker = in_child_reporting(60, report, || {
            while go[0].load(Relaxed) == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            // The parent has left: the worker goes on in the region it maps.
            let live: Vec<_> = (0..200)
                .map(|i| (r.malloc(24 + i, Life::Short), 24 + i))
                .collect();
            for (q, size) in live {
                assert!(!q.is_null(), "the worker's malloc({size})");
                // SAFETY: allocated above, freed once, with its size and class.
                unsafe { r.free(q, size, Life::Short) };
            }
            // The worker's copy of the view goes, as a program's would at its end.
            // SAFETY: the child's copy of the parent's value, dropped once, here.
            drop(unsafe { core::ptr::read(&r) });
        });
        r.leave().expect("leave");
        go[0].store(1, Relaxed);
        wait_ok(worker, report, "the worker");
        match open_region::<Life>(&p) {
            Ok(r) => {
                // SAFETY: no other process has the region open.
                if let Err(e) = unsafe { r.verify() } {
                    report.fail(&format!("verify: {e:?}"));
                }
                r.destroy().expect("destroy");
            }
            Err(e) => {
                let _ = std::fs::remove_file(&p);
                report.fail(&format!(
                    "after 300 subprocesses (fork + exec /bin/true, fork + _exit) of a process \
                     that kept the region open, a worker it forked then worked in the region \
                     after its parent left; the region cannot be opened: {e}"
                ))
            }
        }
    });
    let _ = std::fs::remove_file(&p);
}

fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// A process keeps a file region open and forks workers (each claims a slot of its own in
/// the fork handler) that allocate, resize and free small and medium objects in it; each
/// worker is killed -9 at a random moment of its work, some after `_exit`ing children of
/// their own. Meanwhile the parent keeps tagged objects, and another process opens and
/// leaves the region now and then. The parent leaves without reaping anything itself (as
/// a program does); the region must then open, verify, hold the parent's objects whole,
/// and release to empty.
#[test]
fn workers_killed_mid_work_in_a_region_their_parent_keeps_open_leave_it_openable() {
    let _serial = serial();
    let p = region_path("killedworkers");
    isolated(60, |report| {
        let r = SharedCohort::<Life>::create(Place::File(&p), CreateOptions::new(128 << 20))
            .expect("create");
        let progress = shared_words(1);
        let mut seed = 0x0bad_cafe_u64;
        let mut kept: Vec<(usize, usize, u8)> = Vec::new();
        for round in 0..24u64 {
            progress[0].store(0, Relaxed);
            let worker = in_child_reporting(60, report, || {
                let mut seed = 0x7777 + round;
                if round % 3 == 0 {
                    assert_eq!(subprocess(false), Ok(0), "the subprocess");
                }
                let mut live: Vec<(usize, usize, Life)> = Vec::new();
                loop {
                    let life = if next(&mut seed).is_multiple_of(2) {
                        Life::Short
                    } else {
                        Life::Long
                    };
                    if live.len() < 8 {
                        let n = match next(&mut seed) % 3 {
                            0 => 8 + next(&mut seed) as usize % 4000,
                            _ => 16_385 + next(&mut seed) as usize % 200_000,
                        };
                        let q = r.malloc(n, life);
                        assert!(!q.is_null(), "the worker's malloc({n})");
                        // SAFETY: n bytes of ours.
                        unsafe { q.write_bytes(0x77, n) };
                        live.push((q as usize, n, life));
                    } else {
                        let (q, n, life) = live.swap_remove(next(&mut seed) as usize % 8);
                        if n % 2 == 0 {
                            let to = 16_385 + next(&mut seed) as usize % 100_000;
                            // SAFETY: live, n bytes of `life`.
                            let q2 = unsafe { r.remalloc(q as *mut u8, n, to, life) };
                            assert!(!q2.is_null());
                            live.push((q2 as usize, to, life));
                        } else {
                            // SAFETY: live, freed once.
                            unsafe { r.free(q as *mut u8, n, life) };
                        }
                    }
                    progress[0].fetch_add(1, Relaxed);
                }
            });
            until(
                &progress[0],
                20 + next(&mut seed) % 1500,
                worker,
                report,
                "the worker",
            );
            kill9(worker);
            // The parent's own work, tagged.
            let n = 100 + (next(&mut seed) as usize % 60_000);
            let q = r.malloc(n, Life::Long);
            if q.is_null() {
                report.fail(&format!("round {round}: the parent's malloc({n}) is null"));
            }
            let tag = round as u8 + 1;
            // SAFETY: n bytes of ours.
            unsafe { q.write_bytes(tag, n) };
            kept.push((q as usize, n, tag));
            if round % 6 == 5 {
                // Another process opens and leaves the region.
                let opener = in_child_reporting(30, report, || {
                    // This child has the parent's view: it leaves it first (its copy
                    // dropped), then opens the region afresh, works and leaves.
                    // SAFETY: the child's copy of the parent's value, dropped once, here.
                    drop(unsafe { core::ptr::read(&r) });
                    let again = open_region::<Life>(&p).expect("the opener's open");
                    let q = again.malloc(30_000, Life::Short);
                    assert!(!q.is_null());
                    // SAFETY: allocated above, freed once.
                    unsafe { again.free(q, 30_000, Life::Short) };
                    again.leave().expect("the opener's leave");
                });
                wait_ok(opener, report, "the opener");
            }
            for &(q, n, tag) in &kept {
                // SAFETY: live, n bytes.
                let bytes = unsafe { std::slice::from_raw_parts(q as *const u8, n) };
                if let Some(at) = bytes.iter().position(|&b| b != tag) {
                    report.fail(&format!(
                        "round {round}: the parent's {n}-byte object {tag} changed at {at}"
                    ));
                }
            }
        }
        let offsets: Vec<_> = kept
            .iter()
            .map(|&(q, n, t)| (r.offset_of(q as *const u8).expect("in the region"), n, t))
            .collect();
        r.leave().expect("leave");
        let r = match open_region::<Life>(&p) {
            Ok(r) => r,
            Err(e) => report.fail(&format!("after 24 workers killed -9: open: {e}")),
        };
        r.reap_dead_processes();
        // SAFETY: no other process has the region open.
        if let Err(e) = unsafe { r.verify() } {
            report.fail(&format!("verify after reopening: {e:?}"));
        }
        for &(off, n, tag) in &offsets {
            let q = r.ptr(off);
            // SAFETY: the parent's live object, n bytes, in the region as mapped now.
            let bytes = unsafe { std::slice::from_raw_parts(q as *const u8, n) };
            if let Some(at) = bytes.iter().position(|&b| b != tag) {
                report.fail(&format!(
                    "reopened: the parent's {n}-byte object {tag} changed at {at}"
                ));
            }
        }
        // SAFETY: nothing of either class is used any more.
        unsafe {
            r.release_class(Life::Short);
            r.release_class(Life::Long);
        }
        // SAFETY: no other process has the region open.
        let v = unsafe { r.verify() };
        if v.is_err() || !r.is_empty() {
            report.fail(&format!(
                "after the release of both classes: {v:?}, {:?}",
                r.stats()
            ));
        }
        r.destroy().expect("destroy");
    });
    let _ = std::fs::remove_file(&p);
}

/// RED-51 (every build; owner: seal, persist/attach + pool's `claim_if_forked`): since a
/// fork child claims its slot lazily, at its first write through the allocator (the pool
/// lock, a write mark, a remote free's push, a root's store), a child that only writes
/// into its objects (plain stores, no allocator call: the commonest use of a region) holds
/// no slot. Its parent's leave then finds no slot held and seals the state, whose hash
/// covers the first page of every unit, slots included; the child's next store into an
/// object in a block's first page changes the hashed bytes; it ends without leaving (exit,
/// no destructor), and the healthy region is refused as `StateDamaged` (RED-32 through a
/// data write). On main, whose children claim in the fork handler, the same test passes.
/// Exact failure on seal 7bda373: `... cannot be opened: the region's state was damaged
/// while nobody had it open: it hashes to 0xe539..., its last process left it hashing to
/// 0xbb7c...`.
#[test]
fn a_fork_child_storing_into_an_object_after_its_parent_left_leaves_the_region_openable() {
    let _serial = serial();
    let p = region_path("forkstore");
    isolated(60, |report| {
        let r = SharedCohort::<Life>::create(Place::File(&p), CreateOptions::new(32 << 20))
            .expect("create");
        let x = r.malloc(64, Life::Long);
        assert!(!x.is_null());
        let off = r.offset_of(x).expect("in the region");
        r.set_root(0, Some(off));
        let in_block = off.get() & ((2 << 20) - 1);
        if in_block >= 4096 {
            report.fail(&format!(
                "premise: the object is {in_block:#x} into its block, not in its first page"
            ));
        }
        // SAFETY: 64 bytes of ours.
        unsafe { x.write_bytes(0xaa, 64) };
        let go = shared_words(1);
        let child = in_child_reporting(30, report, || {
            while go[0].load(Relaxed) == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            // The parent has left: the child updates its object, as programs do.
            // SAFETY: the live object the parent made and handed to the child (its copy).
            unsafe { x.write_bytes(0xbb, 64) };
            // Then it ends (`exit`, with the view in a frame that never returns: no
            // destructor runs), as most programs end.
        });
        r.leave().expect("leave");
        go[0].store(1, Relaxed);
        wait_ok(child, report, "the child");
        match open_region::<Life>(&p) {
            Ok(r) => {
                let root: cohort::Off<u8> = r.root(0).expect("the root");
                // SAFETY: the object stored above; nobody else has the region.
                let bytes = unsafe { std::slice::from_raw_parts(r.ptr(root), 64) };
                if bytes.iter().any(|&b| b != 0xbb) {
                    report.fail("the child's store is lost");
                }
                r.destroy().expect("destroy");
            }
            Err(e) => {
                let _ = std::fs::remove_file(&p);
                report.fail(&format!(
                    "a region whose fork child stored into an object (64 bytes at {:#x}) after its \
                     parent left cannot be opened: {e}",
                    off.get()
                ))
            }
        }
    });
    let _ = std::fs::remove_file(&p);
}

/// RED-51's sibling through the allocator itself: `set_label` of a shared region stores the
/// label into the pool's shared state (hashed by the seal) with no claim, no lock and no
/// write mark. A fork child that labels the region after its parent left (its reports, say)
/// and ends without leaving leaves a healthy region refused as `StateDamaged`.
#[test]
fn a_fork_child_labelling_the_region_after_its_parent_left_leaves_it_openable() {
    let _serial = serial();
    let p = region_path("forklabel");
    isolated(60, |report| {
        let r = SharedCohort::<Life>::create(Place::File(&p), CreateOptions::new(32 << 20))
            .expect("create");
        assert!(!r.malloc(64, Life::Long).is_null());
        let go = shared_words(1);
        let child = in_child_reporting(30, report, || {
            while go[0].load(Relaxed) == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            r.set_label("child's reports");
        });
        r.leave().expect("leave");
        go[0].store(1, Relaxed);
        wait_ok(child, report, "the child");
        match open_region::<Life>(&p) {
            Ok(r) => r.destroy().expect("destroy"),
            Err(e) => {
                let _ = std::fs::remove_file(&p);
                report.fail(&format!(
                    "a region whose fork child set its label after its parent left cannot be \
                     opened: {e}"
                ))
            }
        }
    });
    let _ = std::fs::remove_file(&p);
}
