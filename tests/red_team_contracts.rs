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

/// RED-6 (fixed): the README promises that "a free panics when its size or lifetime class does not
/// match its block" in every build, and `try_free` that it "checks everything before it
/// touches anything". A size of 0 for a live allocation (small or large) matches no block,
/// yet `free` returns silently and `try_free` returns `Ok(())`: the allocation stays live,
/// leaked, with no report. (A zero size is only right for the dangling pointer of a
/// zero-size request, which is never in the region nor in the large table.)
/// Failed before the fix: `try_free(0x7f59b8002040, 0) of a live 1-byte allocation returned
/// Ok(())`.
#[test]

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

/// A call under test, named.
type Try<'a> = (&'static str, Box<dyn FnOnce() + 'a>);

/// RED-6's siblings: every other path that takes a size 0 for "nothing to free" (a
/// resize from size 0 allocates afresh, a join's free, a handle's `deallocate` with a
/// zero-size layout) must report a live or freed allocation given size 0, with its pointer,
/// and change nothing. Failed before the fix: `remalloc(0x7eb8e8002040, size 0) of a live
/// 1-byte allocation: not reported (None)` (it allocated anew and leaked the old one).
#[test]
fn every_other_size_zero_path_reports_an_allocation_given_size_zero() {
    use allocator_api2::alloc::Allocator;
    use core::alloc::Layout;
    let a: Cohort<Life> = Cohort::new();
    let j = a.join(1).expect("join");
    let h = a.handle(Life::A);
    for size in [1usize, 8, 64, 1000, 16384, 100_000] {
        let p = a.malloc(size, Life::A);
        assert!(!p.is_null());
        // SAFETY: p holds `size` bytes.
        unsafe { fill(p, seed_of(p, size), size) };
        let zero = Layout::from_size_align(0, 1).unwrap();
        // SAFETY (every call): the zero old size is the misuse under test, to be caught
        // before anything changes.
        let tries: [Try; 5] = [
            (
                "remalloc",
                Box::new(|| {
                    unsafe { a.remalloc(p, 0, 200, Life::A) };
                }),
            ),
            (
                "recalloc",
                Box::new(|| {
                    unsafe { a.recalloc(p, 0, 20, Life::A) };
                }),
            ),
            (
                "realloc",
                Box::new(|| {
                    unsafe { a.realloc(p, zero, 300, Life::A) };
                }),
            ),
            ("Join::free", Box::new(|| unsafe { j.free(p, 0, Life::A) })),
            (
                "ClassHandle::deallocate",
                Box::new(|| unsafe { h.deallocate(core::ptr::NonNull::new(p).unwrap(), zero) }),
            ),
        ];
        let live = a.stats().small.live;
        for (what, f) in tries {
            let msg = caught(f);
            assert!(
                msg.as_deref()
                    .is_some_and(|m| m.contains(&format!("{:#x}", p as usize))),
                "{what}({p:?}, size 0) of a live {size}-byte allocation: not reported ({msg:?})"
            );
            assert_eq!(
                a.stats().small.live,
                live,
                "{what} of {size} B changed the live count"
            );
        }
        // SAFETY: still live: the rejected calls changed nothing.
        assert_eq!(unsafe { mismatch(p, seed_of(p, size), size) }, None);
        // SAFETY: live, freed once with its size.
        unsafe { a.free(p, size, Life::A) };
        if size <= 16384 {
            // A freed slot given size 0 is no zero-size request's pointer either.
            // SAFETY: rejected before anything changes.
            let msg = caught(|| unsafe { a.free(p, 0, Life::A) });
            assert!(
                msg.is_some(),
                "free({p:?}, 0) of a freed {size}-byte slot: not reported"
            );
        }
    }
    // The dangling pointers of zero-size requests still resize from size 0.
    for align in [1usize, 8, 4096, 1 << 21] {
        let l = Layout::from_size_align(0, align).unwrap();
        let z = a.alloc(l, Life::B);
        // SAFETY: a zero-size allocation, resized from its layout.
        let q = unsafe { a.realloc(z, l, 100, Life::B) };
        assert!(!q.is_null() && (q as usize).is_multiple_of(align.min(4096)));
        // SAFETY: live, 100 bytes.
        unsafe { a.dealloc(q, Layout::from_size_align(100, align).unwrap(), Life::B) };
        // SAFETY: as above.
        let r = unsafe { a.remalloc(a.malloc(0, Life::B), 0, 10, Life::B) };
        // SAFETY: live, 10 bytes; then a zero-size handle allocation freed through it.
        unsafe { a.free(r, 10, Life::B) };
        let d = h.allocate(l).unwrap();
        // SAFETY: a zero-size allocation of the handle.
        unsafe { h.deallocate(d.cast(), l) };
    }
    drop(j);
    assert!(a.is_empty());
}

/// RED-7 (resolved as a contract): a `Join` is a thread of its own to `release_class`. A
/// join that has been left counts as an exited thread (its heap is abandoned, as an
/// exited thread's: the design's "abandoned heap"), so any thread's release of a class
/// frees what was allocated through it, and the docs of `release_class` and `Join::leave`
/// now say so; a join not left counts as a live thread, whose blocks are left alone. The
/// session-5 form of this test held the old contract to its letter ("small ones made by the
/// calling thread or by a thread that has exited"), and failed: `another thread's release
/// freed the live allocation 0x7f19b0000040 (Released { blocks: 1, slots: 1, .. })`.
#[test]
fn release_class_frees_a_left_joins_allocations_and_leaves_a_live_joins_alone() {
    let a: Cohort<Life> = Cohort::new();
    let left = a.join(1).expect("join");
    let x = left.malloc(64, Life::A);
    left.leave();
    // Another size class: a 64-byte allocation could take x's block, which the pool
    // holds now, and with it x (a block's allocations are its heap's, whoever made them).
    let live = a.join(2).expect("join");
    let y = live.malloc(128, Life::A);
    assert!(!x.is_null() && !y.is_null());
    // SAFETY: 128 bytes.
    unsafe { fill(y, seed_of(y, 128), 128) };
    // Another thread, which never allocated, releases class A.
    let released = std::thread::scope(|s| {
        // SAFETY: the contract: the allocations it may release (small ones of the calling
        // thread, of exited threads and of left joins; large ones) are not used after: x.
        s.spawn(|| unsafe { a.release_class(Life::A) })
            .join()
            .unwrap()
    });
    assert_eq!(
        (released.slots, released.left_to_other_threads),
        (1, 1),
        "the left join's allocation released, the live join's block left ({released:?})"
    );
    // SAFETY: y is live (the release left it alone).
    assert_eq!(unsafe { mismatch(y, seed_of(y, 128), 128) }, None);
    // SAFETY: live.
    unsafe { live.free(y, 128, Life::A) };
    drop(live);
    assert!(a.is_empty());
}

static HOOKED: Cohort<Life> = Cohort::new();

/// A named misuse to try.
type Case<'a> = (&'a str, Box<dyn FnOnce()>);

/// A misuse hook that allocates and frees in the instance that reports (a logger writing
/// through the global allocator does): every report must be made with no lock of the
/// instance held, or the hook waits for ever.
fn allocating_hook(_: &cohort::Misuse) {
    for size in [1usize, 2, 24, 3000, 40_000] {
        let p = HOOKED.malloc(size, Life::B);
        assert!(!p.is_null());
        // SAFETY: allocated above.
        unsafe { HOOKED.free(p, size, Life::B) };
    }
}

/// Every kind of misuse (tiny, small and large; wrong size, wrong class, double free,
/// foreign, interior, resizes), reported through a hook that allocates in the reporting
/// instance: each report arrives (the hook runs, then the panic), none deadlocks. In a
/// process of its own (this test binary run again for this test alone: a fork of the
/// multithreaded test process could inherit std's panic-output locks held by another
/// test's thread), killed after 60 s.
#[test]
fn a_misuse_hook_that_allocates_in_the_reporting_instance_never_deadlocks() {
    const CHILD: &str = "COHORT_RED_HOOK_CHILD";
    if std::env::var_os(CHILD).is_some() {
        return misuses_through_an_allocating_hook();
    }
    let log = std::env::temp_dir().join(format!("cohort-red-hook-{}", std::process::id()));
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_misuse_hook_that_allocates_in_the_reporting_instance_never_deadlocks",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("RUST_BACKTRACE", "0")
        // Its reports go to a file: a pipe nobody reads while it runs would fill and stop it.
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > std::time::Duration::from_secs(60) {
            child.kill().unwrap();
            let _ = std::fs::remove_file(&log);
            panic!("the misuses with an allocating hook did not end in 60 s (a deadlock)");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = child.wait().unwrap();
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let tail = &said[said.len().saturating_sub(2000)..];
    assert!(
        status.success(),
        "the misuses with an allocating hook: {status}\n{tail}"
    );
}

/// The body of the test above, in its own process.
fn misuses_through_an_allocating_hook() {
    cohort::set_misuse_hook(Some(allocating_hook));
    let a = &HOOKED;
    let mut missed = Vec::new();
    for size in [1usize, 2, 64, 4000, 100_000] {
        let p = a.malloc(size, Life::A);
        assert!(!p.is_null());
        let mut cases: Vec<Case> = vec![
            // SAFETY (all): misuses that are reported before anything changes.
            (
                "wrong size",
                Box::new(move || unsafe { a.free(p, size * 3 + 1, Life::A) }),
            ),
            (
                "wrong class",
                Box::new(move || unsafe { a.free(p, size, Life::B) }),
            ),
            (
                "resize with a wrong class",
                Box::new(move || unsafe {
                    a.remalloc(p, size, size * 2, Life::B);
                }),
            ),
            (
                "foreign",
                Box::new(move || unsafe { a.free(8 as *mut u8, size, Life::A) }),
            ),
        ];
        if size > 2 && size < 16 << 10 && cfg!(debug_assertions) {
            cases.push((
                "interior",
                Box::new(move || unsafe { a.free(p.add(1), size, Life::A) }),
            ));
        }
        for (what, f) in cases {
            if caught(f).is_none() {
                missed.push(format!("{what} ({size} B): not reported"));
            }
        }
        // SAFETY: live; then a double free, reported.
        unsafe { a.free(p, size, Life::A) };
        if size < 16 << 10 {
            // SAFETY: the slot was freed: a double free, reported before anything changes.
            if caught(|| unsafe { a.free(p, size, Life::A) }).is_none() {
                missed.push(format!("double free ({size} B): not reported"));
            }
        }
    }
    assert!(missed.is_empty(), "{missed:?}");
}
