//! Red-team attack of session 12 on `release_class`'s system calls: the large table's lock
//! is never held across one (the large cache's rule: "operations return the ranges to
//! unmap, which the caller unmaps after dropping the large lock"), so that a release of a
//! class with many large allocations does not stall every other thread's large calls for
//! all its unmaps. A test that found a defect is `#[ignore]`d with its number (RED-n), its
//! owner and the exact failure. RED-58 (a release unmapped with the lock held) is fixed:
//! a release takes its class's allocations one per lock hold (`LargeTable::release_next`).
//!
//! This binary interposes `munmap` (the allocator calls the C library's): on the thread
//! armed to, each `munmap` first asks another thread for a large allocation, which needs the
//! large lock, and records whether it got one within 10 s (it gets one at once unless the
//! lock is held across the unmap; held, it waits until the unmap returns). The wait is a
//! bound, not a timing: nothing else holds the lock.

use cohort::{Cohort, Retention};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

cohort::lifetime_classes! { enum Life { A, B } }

std::thread_local! {
    /// The instance whose large lock the interposed `munmap` probes on this thread.
    static PROBE: Cell<Option<&'static Cohort<Life>>> = const { Cell::new(None) };
}

/// Unmaps the probe saw with the large lock held, and unmaps it probed.
static HELD: AtomicUsize = AtomicUsize::new(0);
static PROBED: AtomicUsize = AtomicUsize::new(0);

/// The tests of this binary take turns (the counts above are the process's).
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The C library's `munmap`, interposed (see the module docs).
///
/// # Safety
/// As `munmap(2)`.
#[no_mangle]
pub unsafe extern "C" fn munmap(addr: *mut libc::c_void, len: libc::size_t) -> libc::c_int {
    if let Some(a) = PROBE.try_with(|p| p.take()).ok().flatten() {
        PROBED.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        let prober = std::thread::spawn(move || {
            let p = a.malloc(3 << 20, Life::B);
            assert!(!p.is_null());
            // SAFETY: allocated just above, freed once.
            unsafe { a.free(p, 3 << 20, Life::B) };
            let _ = tx.send(());
        });
        if rx.recv_timeout(Duration::from_secs(10)).is_err() {
            HELD.fetch_add(1, Ordering::Relaxed);
        }
        // The unmap goes on (the prober finishes once the lock is free).
        let _ = PROBE.try_with(|p| p.set(Some(a)));
        // SAFETY: as the caller's munmap.
        let r = unsafe { libc::syscall(libc::SYS_munmap, addr, len) } as libc::c_int;
        drop(prober);
        return r;
    }
    // SAFETY: as the caller's munmap.
    unsafe { libc::syscall(libc::SYS_munmap, addr, len) as libc::c_int }
}

/// A release of a class with large allocations the cache does not keep (a bound of 0):
/// each is unmapped, never with the large lock held.
#[test]
fn a_release_unmaps_its_large_allocations_without_the_large_lock() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let (held_before, probed_before) =
        (HELD.load(Ordering::Relaxed), PROBED.load(Ordering::Relaxed));
    let a: &'static Cohort<Life> = Box::leak(Box::new(Cohort::new()));
    a.set_retention(Retention {
        large_cache_bytes: 0,
        ..Retention::DEFAULT
    });
    // The prober's own allocation takes its mapping now, not under the probe.
    let warm = a.malloc(3 << 20, Life::B);
    let ps: Vec<*mut u8> = (0..4).map(|_| a.malloc(2 << 20, Life::A)).collect();
    assert!(ps.iter().all(|p| !p.is_null()));
    PROBE.with(|p| p.set(Some(a)));
    // SAFETY: A's allocations are dead from here on.
    let released = unsafe { a.release_class(Life::A) };
    PROBE.with(|p| p.set(None));
    assert_eq!(released.large, 4);
    let held = HELD.load(Ordering::Relaxed) - held_before;
    let probed = PROBED.load(Ordering::Relaxed) - probed_before;
    assert!(probed >= 4, "{probed} unmaps probed");
    assert_eq!(
        held, 0,
        "{held} of {probed} unmaps of a release ran with the large lock held (another \
         thread's large allocation waited 10 s)"
    );
    // SAFETY: allocated above, freed once.
    unsafe { a.free(warm, 3 << 20, Life::B) };
}

/// The same rule for a free whose cached range the cache gives up, and for `compact`
/// (guards: these unmap after dropping the lock).
#[test]
fn frees_and_compact_unmap_without_the_large_lock() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let a: &'static Cohort<Life> = Box::leak(Box::new(Cohort::new()));
    a.set_retention(Retention {
        large_cache_bytes: 0,
        ..Retention::DEFAULT
    });
    let warm = a.malloc(3 << 20, Life::B);
    let ps: Vec<*mut u8> = (0..4).map(|_| a.malloc(2 << 20, Life::A)).collect();
    let held_before = HELD.load(Ordering::Relaxed);
    let probed_before = PROBED.load(Ordering::Relaxed);
    PROBE.with(|p| p.set(Some(a)));
    for p in ps {
        // SAFETY: allocated above, freed once.
        unsafe { a.free(p, 2 << 20, Life::A) };
    }
    a.compact();
    PROBE.with(|p| p.set(None));
    let held = HELD.load(Ordering::Relaxed) - held_before;
    let probed = PROBED.load(Ordering::Relaxed) - probed_before;
    assert!(probed >= 4, "{probed} unmaps probed");
    assert_eq!(
        held, 0,
        "{held} of {probed} unmaps of frees ran with the large lock held"
    );
    // SAFETY: allocated above, freed once.
    unsafe { a.free(warm, 3 << 20, Life::B) };
}
