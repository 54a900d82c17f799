//! Red-team attacks of session 5 on the stated contracts: each test is a hostile but fair
//! use of a documented promise. A test that found a defect is `#[ignore]`d with its number
//! (RED-n), the symptom and the build, until the fix un-ignores it.

mod common;

use cohort::Cohort;
use common::{fill, mismatch, seed_of};
use std::panic::AssertUnwindSafe;

cohort::lifetime_classes! {
    enum Life { A, B }
}

/// The panic message of `f` (a misuse report), or `None` when it returned.
fn caught(f: impl FnOnce()) -> Option<String> {
    std::panic::catch_unwind(AssertUnwindSafe(f))
        .err()
        .map(|e| e.downcast_ref::<String>().cloned().unwrap_or_default())
}

/// RED-6: the README promises that "a free panics when its size or lifetime class does not
/// match its block" in every build, and `try_free` that it "checks everything before it
/// touches anything". A size of 0 for a live allocation (small or large) matches no block,
/// yet `free` returns silently and `try_free` returns `Ok(())`: the allocation stays live,
/// leaked, with no report. (A zero size is only right for the dangling pointer of a
/// zero-size request, which is never in the region nor in the large table.)
#[test]
#[ignore = "RED-6: every build. free(p, 0, life) of a live allocation returns silently and try_free(p, 0, life) returns Ok(()): misuse unreported, the allocation leaks (owner budget: free.rs free_above_exact; api: api.rs try_free)"]
fn a_free_of_a_live_allocation_with_size_zero_is_reported() {
    let a: Cohort<Life> = Cohort::new();
    for size in [1usize, 8, 64, 1000, 16384, 100_000] {
        let p = a.malloc(size, Life::A);
        assert!(!p.is_null());
        // SAFETY: p holds `size` bytes.
        unsafe { fill(p, seed_of(p, size), size) };
        // SAFETY: the zero size is the misuse under test, to be caught before anything.
        let tried = unsafe { a.try_free(p, 0, Life::A) };
        assert!(
            tried.is_err(),
            "try_free({p:?}, 0) of a live {size}-byte allocation returned {tried:?}"
        );
        // SAFETY: as above.
        let msg = caught(|| unsafe { a.free(p, 0, Life::A) });
        assert!(
            msg.as_deref()
                .is_some_and(|m| m.contains(&format!("{:#x}", p as usize))),
            "free({p:?}, 0) of a live {size}-byte allocation: not reported ({msg:?})"
        );
        // SAFETY: still live: the rejected calls changed nothing.
        assert_eq!(unsafe { mismatch(p, seed_of(p, size), size) }, None);
        // SAFETY: live, freed once with its size.
        unsafe { a.free(p, size, Life::A) };
    }
    // The dangling pointers of zero-size requests still free with size 0.
    for align in [1usize, 8, 4096, 1 << 21] {
        let l = std::alloc::Layout::from_size_align(0, align).unwrap();
        let z = a.alloc(l, Life::B);
        // SAFETY: a zero-size allocation freed with its layout.
        unsafe { a.dealloc(z, l, Life::B) };
        // SAFETY: as above.
        assert_eq!(
            unsafe { a.try_free(a.malloc(0, Life::B), 0, Life::B) },
            Ok(())
        );
    }
    assert!(a.is_empty());
}

/// RED-7: `release_class`'s safety contract lists what a call releases: "small ones made
/// by the calling thread or by a thread that has exited; large ones of any thread". A live
/// thread that allocated through a `Join` and then left it (its allocations stay live:
/// "their frees become remote frees") is neither, so another thread's release, honouring
/// the contract to the letter, must leave those allocations alone. It frees them: the
/// live object's slot is handed out again.
#[test]
#[ignore = "RED-7: every build. release_class on thread T2 frees the live allocations thread T1 made through a Join it then left (abandoned heap = \"exited thread\" to the release), which the safety contract does not list: the slot is handed out again (owner api: release.rs docs or the releasable rule; join.rs leave docs)"]
fn release_class_leaves_a_live_threads_left_join_allocations_alone() {
    let a: Cohort<Life> = Cohort::new();
    let j = a.join(1).expect("join");
    let x = j.malloc(64, Life::A);
    assert!(!x.is_null());
    // SAFETY: 64 bytes.
    unsafe { fill(x, seed_of(x, 64), 64) };
    j.leave();
    // Another thread, which never allocated, releases class A: by the contract it frees
    // small allocations of its own (none) and of exited threads (none).
    let released = std::thread::scope(|s| {
        // SAFETY: the contract: no allocation this call may release (the calling thread's,
        // exited threads', large ones) exists; `x` is the live main thread's.
        s.spawn(|| unsafe { a.release_class(Life::A) })
            .join()
            .unwrap()
    });
    let again = a.join(1).expect("join again");
    let y = again.malloc(64, Life::A);
    // SAFETY: x is live (the main thread never freed it).
    let intact = unsafe { mismatch(x, seed_of(x, 64), 64) }.is_none();
    assert!(
        y != x && intact && released.slots == 0,
        "another thread's release freed the live allocation {x:?} ({released:?}); the next \
         allocation got {y:?}"
    );
    // SAFETY: both live.
    unsafe {
        again.free(y, 64, Life::A);
        a.free(x, 64, Life::A);
    }
}
