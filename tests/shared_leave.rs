//! A shared instance's leave (its drop in one process) while other threads of the process
//! hold heaps of it: those heaps become ORPHANED and each goes back to the region at its
//! thread's next look-up of a heap or at its exit, with its blocks and its reference to the
//! process's mapping, which the last of them unmaps.

mod common;

use cohort::Cohort;
use common::processes::{in_child, kill_once_set, mappings, wait_ok};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;
use test_support::raw_thread;

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

/// A long-lived worker allocates in each of 50 shared instances that the main thread then
/// drops: each instance's mapping goes at the worker's next join, not at its exit (before
/// the fix: 50 more mappings, each with the worker's live heap and its blocks). In a child
/// of its own: the count of mappings is the process's.
#[test]
fn a_shared_instance_dropped_beside_a_long_lived_thread_leaves_no_mapping() {
    const ROUNDS: usize = 50;
    let child = in_child(120, || {
        let (to_worker, work) = mpsc::channel::<Option<usize>>();
        let (done, finished) = mpsc::channel::<bool>();
        let worker = raw_thread::spawn(move || {
            while let Ok(Some(at)) = work.recv() {
                // SAFETY: the main thread drops the instance only after our answer.
                let a = unsafe { &*(at as *const Cohort<Life>) };
                let mut ok = true;
                for size in [16, 64, 700, 3000] {
                    let p = a.malloc(size, Life::Short);
                    ok &= !p.is_null();
                    if !p.is_null() {
                        // SAFETY: allocated above with this size and class.
                        unsafe { a.free(p, size, Life::Short) };
                    }
                }
                done.send(ok).unwrap();
            }
        });
        let before = mappings();
        for round in 0..ROUNDS {
            let a = Box::new(Cohort::<Life>::shared_anonymous(8 << 20).expect("a region"));
            to_worker
                .send(Some(&*a as *const Cohort<Life> as usize))
                .unwrap();
            assert!(finished.recv().unwrap(), "round {round}: a null allocation");
            drop(a);
        }
        let more = mappings() as i64 - before as i64;
        assert!(
            more <= 10,
            "{ROUNDS} instances dropped: {more} more mappings"
        );
        to_worker.send(None).unwrap();
        worker.join().unwrap();
    });
    wait_ok(child);
}

/// A process whose leave orphaned a thread's heap (the thread lives on, holding a live
/// object) and which is then killed: a survivor takes the orphaned heap over as any dead
/// process's.
#[test]
fn a_dead_processs_orphaned_heap_is_taken_over() {
    let a = Cohort::<Life>::shared_anonymous(16 << 20).expect("a shared region");
    let flag = a.calloc(8, Life::Long).cast::<AtomicU64>();
    assert!(!flag.is_null());
    // SAFETY: 8 zeroed bytes, aligned, live for the test.
    let flag = unsafe { &*flag };
    let at = &a as *const Cohort<Life> as usize;
    let child = in_child(60, move || {
        let (held, holding) = mpsc::channel::<()>();
        raw_thread::spawn(move || {
            // SAFETY: the child's copy of the instance, dropped only after our answer
            // (and this thread never uses it again).
            let a = unsafe { &*(at as *const Cohort<Life>) };
            assert!(!a.malloc(64, Life::Short).is_null());
            held.send(()).unwrap();
            loop {
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        holding.recv().unwrap();
        // SAFETY: the child's own copy of the instance, used by no thread any more: its
        // drop is the child's leave, which orphans the thread's heap.
        unsafe { core::ptr::drop_in_place(at as *mut Cohort<Life>) };
        flag.store(1, Ordering::Release);
        loop {
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    kill_once_set(child, flag);
    assert_eq!(a.reap_dead_processes(), 1, "the child's orphaned heap");
    // SAFETY: nobody else uses the region.
    unsafe { a.verify() }.expect("verifies");
}
