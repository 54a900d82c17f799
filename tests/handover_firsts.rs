//! Siblings of RED-140 and RED-141 (the every-build double-free check across a change of
//! a block's hands), for the paths their fixes touch:
//!
//! - a fork child's repair of a join's heap (`relist`, `Header::recount_local`) keeps both
//!   firsts a reset kept (the local list's, the join's last free, and the remote word's,
//!   another thread's last): each double free is reported in the child and in the parent,
//!   and the block then hands out fresh objects once;
//! - a thread's exit leaves a block's remote list as it is (`Header::hand_to_pool`) in a
//!   region file, which another process opens with every list checked: the slot another
//!   thread freed last is refused there, and the block's next allocations hand each slot
//!   out once;
//! - after a join's leave (the remote list kept), the objects left are freed by anyone
//!   (correct frees are never refused) and the pool's next allocations from the block
//!   collect the list and hand its slots out once each, the slot freed last first.

mod red_team_common;
mod red_team_s22_common;

use cohort::{
    set_misuse_hook, Cohort, CreateOptions, Join, Misuse, Off, OpenOptions, Place, Problem,
    SharedCohort,
};
use red_team_common::{in_child, shared_words, wait, Report};
use red_team_s22_common::{
    freed_by, fresh_objects_once, idle_look_by, made_by, make, raise, unmake, without_decay_delay,
    Object,
};
use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc;

cohort::lifetime_classes! {
    enum Life { A, B }
}

/// `free` (a join's, or the test's thread's) of slot `x` again: reported as a double free
/// naming it, else the failure.
fn reported(free: impl FnOnce(), x: usize, size: usize, what: &str) -> Result<(), String> {
    let before = set_misuse_hook(Some(raise));
    let twice = catch_unwind(AssertUnwindSafe(free));
    set_misuse_hook(before);
    match twice {
        Err(e) => {
            let m = *e.downcast::<Misuse>().expect("the hook's Misuse");
            match ((m.ptr, m.size, m.life) == (x, size, 0), &m.problem) {
                (true, Problem::DoubleFree) => Ok(()),
                _ => Err(format!(
                    "{what}: the double free of {x:#x}: another report: {m}"
                )),
            }
        }
        Ok(()) => Err(format!(
            "{what}: the double free of {x:#x} was not reported"
        )),
    }
}

/// J makes `count` objects of `size` (class A), all live at once: none is `kept` (a slot
/// a reset kept, freed) nor handed out twice; then checks and frees them.
fn fresh_from(j: &Join<'_, Life>, size: usize, count: usize, kept: &[usize], what: &str) {
    let made: Vec<Object> = (0..count)
        .map(|i| made_by(j, size, Life::A, i as u8, what))
        .collect();
    let mut seen = HashSet::new();
    for o in &made {
        assert!(seen.insert(o.0), "{what}: {:#x} handed out twice", o.0);
        assert!(
            !kept.contains(&o.0),
            "{what}: the kept {:#x} handed out",
            o.0
        );
    }
    made.into_iter().for_each(|o| freed_by(j, o, Life::A, what));
}

/// The checks of one side of the fork: J's double free of `l` (its last free) and the
/// test's thread's of `r` (its last) are reported; then J hands out fresh objects (a few
/// blocks' worth) once each, and `verify` passes.
fn after_the_fork(
    a: &Cohort<Life>,
    j: &Join<'_, Life>,
    (l, r, size): (usize, usize, usize),
    what: &str,
) -> Result<(), String> {
    // SAFETY: deliberately a double free: reported, nothing changed.
    reported(
        || unsafe { j.free(l as *mut u8, size, Life::A) },
        l,
        size,
        what,
    )?;
    // SAFETY: as above.
    reported(
        || unsafe { a.free(r as *mut u8, size, Life::A) },
        r,
        size,
        what,
    )?;
    // A block's worth and more: the kept slots' block first.
    fresh_from(j, size, 2100 * 1024 / size + 16, &[], what);
    // SAFETY: no other thread uses the instance.
    unsafe { a.verify() }
        .map(drop)
        .map_err(|e| format!("{what}: verify: {e:?}"))
}

/// One fork case: J makes `n` objects of `size`, frees all but the last (`l` is the last
/// it frees), the test's thread frees the last (`r`); J's idle look (slow paths of class
/// B with no decay delay) empties the block in place, keeping both firsts; the process
/// forks. The child's checks, then the parent's.
fn fork_case(size: usize, n: usize) -> Result<(), String> {
    let what = format!("size {size}, {n} objects");
    let a: Cohort<Life> = without_decay_delay(false);
    let j = a.join(1).expect("a join");
    let objects: Vec<Object> = (0..n)
        .map(|i| made_by(&j, size, Life::A, i as u8, &what))
        .collect();
    objects[..n - 1]
        .iter()
        .for_each(|&o| freed_by(&j, o, Life::A, &what));
    unmake(&a, objects[n - 1], Life::A, &what);
    // The test's thread's free pushed on the block's remote list.
    let _ = a.stats();
    let firsts = (objects[n - 2].0, objects[n - 1].0, size);
    idle_look_by(&j, Life::B, &what);
    let report = Report::new();
    let child = in_child(30, || {
        if let Err(e) = after_the_fork(&a, &j, firsts, &format!("{what}, in the fork child")) {
            report.fail(&e);
        }
    });
    match wait(child) {
        Ok(0) => {}
        Ok(_) => return Err(report.message()),
        Err(signal) => return Err(format!("{what}: the child died of signal {signal}")),
    }
    after_the_fork(&a, &j, firsts, &format!("{what}, in the parent"))
}

/// A fork child's repair keeps both firsts a reset kept on a join's block: the join's
/// double free of its last free and the test's thread's of its own are reported in the
/// child as in the parent, and the block then hands out fresh objects once each. Before
/// RED-141's fix (main c2d9a66, release-tests) 3 of the 4 cases failed in the child (the
/// repair dropped the kept firsts; the fourth, 10 objects of 64 bytes, touched no page
/// past the first, which the idle look does not empty), e.g. `size 1000, 10 objects, in
/// the fork child: the double free of 0x7f041c002400 was not reported`; a debug build
/// reported them (checked mode).
#[test]
fn a_fork_childs_repair_keeps_both_kept_firsts() {
    let mut failures = Vec::new();
    for size in [64usize, 1000] {
        for n in [10usize, 300] {
            if let Err(e) = fork_case(size, n) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Objects a thread of a region file makes: `n` of `size`.
const REGION_OBJECTS: usize = 40;

/// A region file whose thread made objects, the test's thread freed the last (pushed at
/// once: a region other processes may map), and the thread exited (its block handed to the
/// pool with its remote list as it was); the test's process leaves the region. Another process opens
/// it with every list checked: the double free of the slot freed last is reported, naming
/// it; the block's next allocations hand out each slot once (the slot freed last among
/// them, once); `verify` passes: the open check walks a pool-owned block's remote list as
/// it did when the local list kept it from the hand-over's collect. Before RED-140's fix
/// (main c2d9a66, release-tests) both cases failed: `size 64: the double free of
/// 0x7f0310200a00 was not reported` (and size 1000).
#[test]
fn a_region_file_keeps_a_handed_over_blocks_remote_list() {
    let path = std::env::temp_dir().join(format!("cohort-handover-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let place = Place::File(&path);
    let mut failures = Vec::new();
    // The offset of the slot freed last, from the process that left the file.
    let word = shared_words(1);
    for size in [64usize, 1000] {
        let what = format!("size {size}");
        // The test's process makes the file (no thread is spawned in a fork child: another
        // test's thread may hold std's spawn lock at the fork).
        let r = SharedCohort::<Life>::create(place, CreateOptions::new(64 << 20)).expect("create");
        let (made_tx, made) = mpsc::channel::<Vec<Object>>();
        let (freed_tx, freed) = mpsc::channel::<()>();
        std::thread::scope(|s| {
            let freed_tx = freed_tx;
            let (r, what) = (&r, &what);
            let t = s.spawn(move || {
                let all = (0..REGION_OBJECTS)
                    .map(|i| make(r, size, Life::A, i as u8, what))
                    .collect();
                made_tx.send(all).expect("the test's thread");
                // Exits once the test's thread freed `x`: its heap hands the block over.
                freed.recv().expect("the test's thread");
            });
            let all = made.recv().expect("the thread");
            let x = all[REGION_OBJECTS - 1];
            unmake(r, x, Life::A, what);
            let off = r.offset_of(x.0 as *const u8).expect("in the region");
            word[0].store(off.get(), Ordering::Release);
            freed_tx.send(()).expect("the thread");
            t.join().expect("the thread");
        });
        // The others stay live in the file.
        r.leave().expect("leave");
        let report = Report::new();
        let opener = in_child(60, || {
            let options = OpenOptions::new().check_lists_at_open(true);
            let r = SharedCohort::<Life>::open(place, options).expect("the file opens, checked");
            let off = Off::<u8>::new(word[0].load(Ordering::Acquire)).expect("an offset");
            let x = r.ptr(off) as usize;
            // SAFETY: deliberately a double free: reported, nothing changed.
            let twice = reported(
                || unsafe { r.free(x as *mut u8, size, Life::A) },
                x,
                size,
                &what,
            );
            if let Err(e) = twice {
                report.fail(&e);
            }
            // SAFETY: no other thread uses the region.
            if let Err(e) = unsafe { r.verify() } {
                report.fail(&format!("{what}: verify after the open: {e:?}"));
            }
            fresh_objects_once(&r, &[size], 3 * 2100 * 1024 / size, Life::A, &what);
        });
        match wait(opener) {
            Ok(0) => {}
            Ok(_) => failures.push(report.message()),
            Err(signal) => failures.push(format!("{what}: the opener died of signal {signal}")),
        }
        let _ = std::fs::remove_file(&path);
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// After a join's leave, with the slot the test's thread freed last on the block's remote
/// list and the join's other objects live: those objects are freed by the test's thread
/// and a new join, unrefused; every object made after (by a new join, whose slow path
/// takes the block from the pool and collects the list) is handed out once, and `verify`
/// passes, in a private instance and a shared-anonymous region. Guard: nothing correct is
/// refused now that the next owner, not the hand-over, collects the list (passes before
/// RED-140's fix too).
#[test]
fn a_handed_over_blocks_remote_list_is_collected_by_its_next_owner() {
    for shared in [false, true] {
        for size in [64usize, 1000] {
            let what = format!("size {size}, shared: {shared}");
            let a = if shared {
                Cohort::<Life>::shared_anonymous(64 << 20).expect("shared anonymous")
            } else {
                Cohort::<Life>::new()
            };
            let j = a.join(1).expect("a join");
            let objects: Vec<Object> = (0..20)
                .map(|i| made_by(&j, size, Life::A, i as u8, &what))
                .collect();
            unmake(&a, objects[19], Life::A, &what);
            let _ = a.stats();
            j.leave();
            let next = a.join(1).expect("a join");
            for (i, &o) in objects[..19].iter().enumerate() {
                if i % 2 == 0 {
                    unmake(&a, o, Life::A, &what);
                } else {
                    freed_by(&next, o, Life::A, &what);
                }
            }
            let _ = a.stats();
            fresh_from(&next, size, 3 * 2100 * 1024 / size, &[], &what);
            drop(next);
            // SAFETY: no other thread uses the instance.
            unsafe { a.verify() }.unwrap_or_else(|e| panic!("{what}: verify: {e:?}"));
            assert!(a.is_empty(), "{what}: objects left");
        }
    }
}
