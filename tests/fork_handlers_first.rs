//! Fork handlers a program registered before cohort's (RED-100: another library's
//! constructor, or a program's under `LD_PRELOAD`) that allocate from cohort on slow paths:
//! their `prepare` runs after cohort's, which holds cohort's locks, and their `parent` and
//! `child` before cohort's. The forking thread enters those locks, and a child's first lock
//! runs cohort's child repair at once. This test binary registers its handlers from an
//! ELF constructor of a higher priority than cohort's, so they come first.

mod common;

use cohort::Cohort;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

cohort::lifetime_classes! { enum Life { A, B } }

static ALLOC: Cohort<Life> = Cohort::new();
/// The handlers allocate only while this is set (the harness forks nothing itself, but
/// other tests of this binary may).
static ON: AtomicBool = AtomicBool::new(false);
/// Which fork this is: each fork's handlers use sizes no earlier one used (a size class
/// with no current block: a slow path under the pool lock).
static ROUND: AtomicUsize = AtomicUsize::new(0);

#[used]
#[link_section = ".init_array.00100"]
static REGISTER_FIRST: extern "C" fn() = register_first;

extern "C" fn register_first() {
    // SAFETY: plain functions, valid for the life of the process.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

/// Allocates a small object of a size class no earlier call used and a large one, writes
/// and frees them (`which` spreads the sizes over the three handlers).
fn allocate(which: usize) {
    if !ON.load(SeqCst) {
        return;
    }
    let round = ROUND.load(SeqCst);
    for (size, life) in [
        (24 + 8 * (3 * round + which), Life::A),
        (1 << 20, Life::B),
        (100_000, Life::B),
    ] {
        let p = ALLOC.malloc(size, life);
        assert!(!p.is_null());
        // SAFETY: `size` bytes of ours, freed once with their size and class.
        unsafe {
            p.write_bytes(0x5a, size);
            ALLOC.free(p, size, life);
        }
    }
}

extern "C" fn prepare() {
    allocate(0);
}
extern "C" fn parent() {
    allocate(1);
}
extern "C" fn child() {
    allocate(2);
}

#[test]
fn fork_handlers_registered_before_cohorts_may_allocate() {
    // A hang in the parent's handlers (the failure this guards against) ends the binary.
    // SAFETY: alarm has no preconditions.
    unsafe { libc::alarm(120) };
    let kept: Vec<usize> = (0..100)
        .map(|_| ALLOC.malloc(64, Life::A) as usize)
        .collect();
    ON.store(true, SeqCst);
    for round in 0..8 {
        ROUND.store(round, SeqCst);
        let pid = common::processes::in_child(20, || {
            // SAFETY: the child's only thread.
            let verified = unsafe { ALLOC.verify() };
            assert!(verified.is_ok(), "the child: {verified:?}");
            let p = ALLOC.malloc(4096, Life::B);
            assert!(!p.is_null());
            // SAFETY: ours, freed once.
            unsafe { ALLOC.free(p, 4096, Life::B) };
        });
        common::processes::wait_ok(pid);
    }
    ON.store(false, SeqCst);
    for p in kept {
        // SAFETY: allocated above, freed once.
        unsafe { ALLOC.free(p as *mut u8, 64, Life::A) };
    }
    // SAFETY: no other thread of this binary uses ALLOC.
    let verified = unsafe { ALLOC.verify() };
    assert!(verified.is_ok(), "{verified:?}");
    // SAFETY: as above.
    unsafe { libc::alarm(0) };
}
