//! Scopes on a region shared between processes: a scope class is one scope's, whichever
//! process opened it (the claims live in the region), and a class whose claimer died is
//! claimed again.

mod common;

use cohort::allocator_api2::alloc::Allocator;
use cohort::Cohort;
use common::processes::{in_child, wait_ok, wait_status};
use std::alloc::Layout;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

cohort::lifetime_classes! {
    enum Life { Short }
}

/// How many scopes `a` opens nested in the calling thread before every scope class is
/// held (each scope allocates in its class while the inner ones open).
fn nested_scopes(a: &Cohort<Life>) -> usize {
    a.try_scope(|s| {
        s.allocate(Layout::new::<[u64; 8]>()).expect("a slot");
        1 + nested_scopes(a)
    })
    .unwrap_or(0)
}

fn wait_for(flag: &AtomicU64, value: u64) {
    while flag.load(Ordering::Acquire) != value {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A child holds one scope open while the parent opens as many as it can: 7 of the 8
/// classes (before the fix: 8, the child's class among them, whose release would have
/// freed the child's scope allocations under it).
#[test]
fn two_processes_never_hold_one_scope_class() {
    let a = Cohort::<Life>::shared_anonymous(64 << 20).expect("a shared region");
    let flag = a.calloc(8, Life::Short).cast::<AtomicU64>();
    assert!(!flag.is_null());
    // SAFETY: 8 zeroed bytes, aligned, live for the test.
    let flag = unsafe { &*flag };
    let child = {
        let a = &a;
        in_child(60, move || {
            a.try_scope(|s| {
                let p = s.allocate(Layout::new::<[u64; 8]>()).expect("a slot");
                let p = p.cast::<u64>().as_ptr();
                // SAFETY: live, 64 bytes.
                unsafe { p.write(0x5C09E) };
                flag.store(1, Ordering::Release);
                wait_for(flag, 2);
                // SAFETY: as above: the parent's scopes did not free it.
                assert_eq!(unsafe { p.read() }, 0x5C09E);
            })
            .expect("a scope class for the child");
        })
    };
    wait_for(flag, 1);
    let opened = nested_scopes(&a);
    flag.store(2, Ordering::Release);
    wait_ok(child);
    assert_eq!(
        opened, 7,
        "scope classes the parent could claim beside the child's one"
    );
    assert_eq!(nested_scopes(&a), 8, "every class is free again");
}

/// A process killed inside a scope leaves its class claimed by a dead process: another
/// claims it again (all 8 classes open), and its scope's release frees what the dead scope
/// left in the class.
#[test]
fn a_scope_class_whose_claimer_died_is_claimed_again() {
    let a = Cohort::<Life>::shared_anonymous(64 << 20).expect("a shared region");
    let flag = a.calloc(8, Life::Short).cast::<AtomicU64>();
    assert!(!flag.is_null());
    // SAFETY: 8 zeroed bytes, aligned, live for the test.
    let flag = unsafe { &*flag };
    let child = {
        let a = &a;
        in_child(60, move || {
            let _ = a.try_scope(|s| {
                s.allocate(Layout::new::<[u64; 8]>()).expect("a slot");
                flag.store(1, Ordering::Release);
                loop {
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
        })
    };
    wait_for(flag, 1);
    // SAFETY: our own child.
    unsafe { libc::kill(child, libc::SIGKILL) };
    assert!(libc::WIFSIGNALED(wait_status(child)));
    assert_eq!(
        nested_scopes(&a),
        8,
        "the dead child's class is claimed again"
    );
    // SAFETY: the flag, freed once; nothing else is live but the dead scope's allocation,
    // which the scope that took its class released.
    unsafe { a.free(flag as *const AtomicU64 as *mut u8, 8, Life::Short) };
    assert!(a.is_empty(), "{:?}", a.stats().small);
}

/// A fork child that ends a scope its parent opened (the child returns from the closure, as
/// a daemon's fork does) leaves the class to the parent: the claim is the parent's, whose
/// scope is still open. Before the fix the child's scope end gave the class back: the
/// parent then opened 8 nested scopes (its own class among them), and their release freed
/// the parent's live scope object.
#[test]
fn a_fork_child_ending_its_parents_scope_leaves_the_class_to_the_parent() {
    let a = Cohort::<Life>::shared_anonymous(64 << 20).expect("a shared region");
    let (opened, kept) = a.scope(|s| {
        let p = s.allocate(Layout::new::<[u64; 8]>()).expect("a slot");
        let p = p.cast::<u64>().as_ptr();
        // SAFETY: live, 64 bytes.
        unsafe { p.write(0x5C09E) };
        // SAFETY: the child only returns from this closure (ending the scope) and exits.
        let child = unsafe { libc::fork() };
        if child == 0 {
            return (usize::MAX, 0);
        }
        assert!(child > 0, "fork");
        wait_ok(child);
        let opened = nested_scopes(&a);
        // SAFETY: as above: live until this scope ends.
        (opened, unsafe { p.read() })
    });
    if opened == usize::MAX {
        // The child, after the scope's end: nothing else of the test runs here.
        // SAFETY: _exit has no precondition.
        unsafe { libc::_exit(0) };
    }
    assert_eq!(
        opened, 7,
        "scope classes beside the parent's own, after the child left"
    );
    assert_eq!(kept, 0x5C09E, "the parent's scope object is intact");
    assert_eq!(nested_scopes(&a), 8, "every class is free again");
}
