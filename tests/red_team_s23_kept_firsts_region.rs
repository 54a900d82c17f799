//! Red-team attack of session 23 on the firsts a block emptied in place keeps (RED-132's
//! fix: the local list's first on the local list, the remote list's as a kept first of
//! count 0 in the remote word) in a named region whose process is killed while a block
//! keeps them. A child process creates the region file; its thread O makes objects of
//! class A, the child's main thread F frees most of them (pushed at once: the last, `x`,
//! is the remote list's first), O frees the others (`y`, the last, is the local list's
//! first) and takes slow paths of class B with no decay delay until its idle look empties
//! the block in place (both firsts kept); then the child is killed (`kill -9`), O's heap
//! with it. The test's process opens the file: the open check must accept the block (a
//! kept first is no damage), a double free of `x` and of `y` must be refused (`try_free`,
//! naming the pointer and size) before and after `verify` takes the dead heap over, and
//! fresh objects must be handed out once each. Before the kill, the child's own
//! `try_free` of each must be refused as a double free (the kept firsts at work: on main
//! 23df1ec, before RED-132's fix, `x`'s was not, in release builds). A test that found a defect is `#[ignore]`d with
//! its number (RED-n) and the exact failure.

mod red_team_common;
mod red_team_s22_common;

use cohort::{CreateOptions, Place, RegionOptions, Retention, SharedCohort};
use red_team_common::{ended_unreaped, in_child, kill9, open_region, region_path, shared_words};
use red_team_s22_common::{fresh_objects_once, make, unmake, Object};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;
use test_support::raw_thread;

cohort::lifetime_classes! {
    enum Life { A, B }
}

/// Objects O makes; O frees the first `OWNERS` of them, F the others.
const OBJECTS: usize = 300;
const OWNERS: usize = 5;

/// The child's part: the region created at `path`, the block emptied in place with both
/// firsts kept, `x` (F's last free) and `y` (O's last) written to `words[1..3]`, then
/// `words[0]` set; it waits to be killed.
fn keep_both_firsts_and_wait(
    path: &std::path::Path,
    size: usize,
    words: &[std::sync::atomic::AtomicU64],
) {
    // The child is killed, never leaves: its region and names are its own for good.
    let what: &'static str = Box::leak(format!("size {size}, in the child").into_boxed_str());
    let region: &'static SharedCohort<Life> = Box::leak(Box::new(
        SharedCohort::<Life>::create(
            Place::File(path),
            CreateOptions::from_region(RegionOptions::new(64 << 20)),
        )
        .expect("create the region"),
    ));
    region.set_retention(Retention {
        delay: Duration::ZERO,
        ..Retention::DEFAULT
    });
    let a: &'static cohort::Cohort<Life> = region;
    let (made_tx, made) = mpsc::channel::<Vec<Object>>();
    let (freed_tx, freed) = mpsc::channel::<()>();
    let (emptied_tx, emptied) = mpsc::channel::<()>();
    raw_thread::spawn(move || {
        let all: Vec<Object> = (0..OBJECTS)
            .map(|i| make(a, size, Life::A, i as u8, what))
            .collect();
        made_tx.send(all.clone()).expect("F");
        freed.recv().expect("F");
        all[..OWNERS]
            .iter()
            .for_each(|&o| unmake(a, o, Life::A, what));
        for _ in 0..200 {
            let other: Vec<Object> = (0..300)
                .map(|i| make(a, 1000, Life::B, i as u8, what))
                .collect();
            other.into_iter().for_each(|o| unmake(a, o, Life::B, what));
        }
        emptied_tx.send(()).expect("F");
        // O keeps its heap until the kill.
        loop {
            std::thread::park();
        }
    });
    let all = made.recv().expect("O");
    all[OWNERS..]
        .iter()
        .for_each(|&o| unmake(a, o, Life::A, what));
    freed_tx.send(()).expect("O");
    emptied.recv().expect("O");
    let (x, y) = (all[OBJECTS - 1].0, all[OWNERS - 1].0);
    // The block keeps both firsts: F's double frees of either are refused now (nothing
    // changed), as they must be after the kill.
    for (i, slot) in [(3, x), (4, y)] {
        // SAFETY: a double free, refused before anything changes (else the test fails).
        let refused = unsafe { a.try_free(slot as *mut u8, size, Life::A) };
        let double = matches!(refused, Err(m) if m.problem == cohort::Problem::DoubleFree);
        words[i].store(u64::from(double), Ordering::Relaxed);
    }
    words[1].store(x as u64, Ordering::Relaxed);
    words[2].store(y as u64, Ordering::Relaxed);
    words[0].store(1, Ordering::Release);
    loop {
        std::thread::park();
    }
}

/// One case: objects of `size`.
fn case(size: usize) {
    let what = format!("size {size}");
    let path = region_path(&format!("s23-kept-firsts-{size}"));
    let words = shared_words(5);
    let child = in_child(60, || keep_both_firsts_and_wait(&path, size, words));
    while words[0].load(Ordering::Acquire) == 0 {
        if let Some(ended) = ended_unreaped(child) {
            panic!("{what}: the child ended before the block was emptied: {ended:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    kill9(child);
    assert_eq!(
        (
            words[3].load(Ordering::Relaxed),
            words[4].load(Ordering::Relaxed)
        ),
        (1, 1),
        "{what}: in the child, before the kill, try_free of F's last free and of O's last \
         free after the block was emptied in place: 1 = refused as a double free"
    );
    let (x, y) = (
        words[1].load(Ordering::Relaxed) as usize,
        words[2].load(Ordering::Relaxed) as usize,
    );
    let region = open_region::<Life>(&path)
        .unwrap_or_else(|e| panic!("{what}: the open refused the region: {e:?}"));
    let a = &*region;
    // Refused, naming the slot, nothing changed: a double free, or (the take-over gave
    // the emptied block back, past the carved end too) a free into no block of the size.
    let refused = |stage: &str| {
        for (slot, name) in [(x, "F's last free"), (y, "O's last free")] {
            // SAFETY: a double free, refused before anything changes (else the test fails).
            match unsafe { a.try_free(slot as *mut u8, size, Life::A) } {
                Err(m) if (m.ptr, m.size) == (slot, size) => {}
                other => panic!("{what}, {name} {stage}: try_free: {other:?}"),
            }
        }
    };
    refused("before the take-over");
    // SAFETY: no other thread uses the region meanwhile; the walk takes the dead child's
    // heap over.
    let verified = unsafe { a.verify() };
    assert!(verified.is_ok(), "{what}: verify: {verified:?}");
    refused("after the take-over");
    fresh_objects_once(a, &[size], 3 * OBJECTS, Life::A, &what);
    drop(region);
    let _ = std::fs::remove_file(&path);
}

/// Guard of RED-132's fix in a region file: both kept firsts survive a kill -9 and the
/// next opener's check, and their double frees are reported.
#[test]
fn a_killed_processs_kept_firsts_pass_the_open_check_and_catch_double_frees() {
    for size in [64usize, 1000] {
        case(size);
    }
}
