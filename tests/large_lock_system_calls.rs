//! The large lock (a spin lock every large call takes) is never held across a system call:
//! a resize's `mremap`, the large table's growth (its new mapping, and the old one's
//! unmap), a free's or a release's unmaps. Held, every other thread's large call spins
//! through the call.
//!
//! This binary interposes `mmap`, `mremap` and `munmap` (the allocator calls the C
//! library's): on the thread armed to, each call first has another thread free an address
//! that is no allocation of the instance with a large size (a check under the large lock
//! that changes nothing), and records whether that was refused within 10 s (at once unless
//! the lock is held across the call; held, it waits until the call returns). The wait is a
//! bound, not a timing: nothing else holds the lock.

use cohort::class::MAX_MEDIUM;
use cohort::{Cohort, Retention};
use std::cell::Cell;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

cohort::lifetime_classes! { enum Life { A, B } }

std::thread_local! {
    /// The instance whose large lock the interposed calls probe on this thread.
    static PROBE: Cell<Option<&'static Cohort<Life>>> = const { Cell::new(None) };
}

/// Calls the probe saw made with the large lock held, and calls it probed.
static HELD: AtomicUsize = AtomicUsize::new(0);
static PROBED: AtomicUsize = AtomicUsize::new(0);

/// A page that is no allocation of any instance.
#[repr(align(4096))]
struct Page {
    _bytes: [u8; 4096],
}
static FOREIGN: Page = Page { _bytes: [0; 4096] };

/// On a thread armed to, has another thread free [`FOREIGN`] with a large size (refused
/// after a look under the large lock) and counts the call as made under the lock when that
/// waits past 10 s; then the call goes on.
fn probe() {
    let Some(a) = PROBE.try_with(|p| p.take()).ok().flatten() else {
        return;
    };
    PROBED.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel();
    let prober = std::thread::spawn(move || {
        let p = ptr::from_ref(&FOREIGN).cast::<u8>().cast_mut();
        // SAFETY: no allocation of `a`: refused, nothing changed.
        assert!(unsafe { a.try_free(p, 3 << 20, Life::B) }.is_err());
        let _ = tx.send(());
    });
    if rx.recv_timeout(Duration::from_secs(10)).is_err() {
        HELD.fetch_add(1, Ordering::Relaxed);
    }
    // The call goes on (the prober finishes once the lock is free).
    let _ = PROBE.try_with(|p| p.set(Some(a)));
    drop(prober);
}

/// The C library's `mmap`, interposed (see the module docs).
///
/// # Safety
/// As `mmap(2)`.
#[no_mangle]
pub unsafe extern "C" fn mmap(
    addr: *mut libc::c_void,
    len: libc::size_t,
    prot: libc::c_int,
    flags: libc::c_int,
    fd: libc::c_int,
    off: libc::off_t,
) -> *mut libc::c_void {
    probe();
    // SAFETY: as the caller's mmap.
    unsafe { libc::syscall(libc::SYS_mmap, addr, len, prot, flags, fd, off) as *mut libc::c_void }
}

/// The C library's `mremap`, interposed (its optional fifth argument passed on as it came).
///
/// # Safety
/// As `mremap(2)`.
#[no_mangle]
pub unsafe extern "C" fn mremap(
    addr: *mut libc::c_void,
    old: libc::size_t,
    new: libc::size_t,
    flags: libc::c_int,
    to: *mut libc::c_void,
) -> *mut libc::c_void {
    probe();
    // SAFETY: as the caller's mremap.
    unsafe { libc::syscall(libc::SYS_mremap, addr, old, new, flags, to) as *mut libc::c_void }
}

/// The C library's `munmap`, interposed.
///
/// # Safety
/// As `munmap(2)`.
#[no_mangle]
pub unsafe extern "C" fn munmap(addr: *mut libc::c_void, len: libc::size_t) -> libc::c_int {
    probe();
    // SAFETY: as the caller's munmap.
    unsafe { libc::syscall(libc::SYS_munmap, addr, len) as libc::c_int }
}

/// An instance whose large cache keeps nothing (every resize past its pages remaps, every
/// free unmaps), leaked for the probes' threads.
fn uncached() -> &'static Cohort<Life> {
    let a: &'static Cohort<Life> = Box::leak(Box::new(Cohort::new()));
    a.set_retention(Retention {
        large_cache_bytes: 0,
        ..Retention::DEFAULT
    });
    a
}

/// Runs `f` with this thread's system calls probed on `a`: (calls made under the large
/// lock, calls probed).
fn probed(a: &'static Cohort<Life>, f: impl FnOnce()) -> (usize, usize) {
    let _turn = test_support::serial();
    let (held, probed) = (HELD.load(Ordering::Relaxed), PROBED.load(Ordering::Relaxed));
    PROBE.with(|p| p.set(Some(a)));
    f();
    PROBE.with(|p| p.set(None));
    (
        HELD.load(Ordering::Relaxed) - held,
        PROBED.load(Ordering::Relaxed) - probed,
    )
}

/// Writes `p`'s pattern on the first word of each 4 KiB of its `size` bytes.
///
/// # Safety
/// `p` is valid for writes of `size` bytes, aligned to 8.
unsafe fn tag(p: *mut u8, size: usize, seed: usize) {
    for at in (0..size.saturating_sub(7)).step_by(4096) {
        // SAFETY: in bounds (caller).
        unsafe { p.add(at).cast::<usize>().write(seed ^ at) };
    }
}

/// True when `p`'s first `size` bytes still hold the pattern [`tag`] wrote with `seed`.
///
/// # Safety
/// `p` is valid for reads of `size` bytes, aligned to 8.
unsafe fn tagged(p: *const u8, size: usize, seed: usize) -> bool {
    (0..size.saturating_sub(7))
        .step_by(4096)
        // SAFETY: in bounds (caller).
        .all(|at| unsafe { p.add(at).cast::<usize>().read() } == seed ^ at)
}

/// A large allocation grown and shrunk past its pages (no cached range to take: remapped):
/// neither `mremap` runs with the large lock held.
#[test]
fn a_large_resize_remaps_without_the_large_lock() {
    let a = uncached();
    let (small, big) = (2 << 20, 64 << 20);
    let p = a.malloc(small, Life::A);
    assert!(!p.is_null());
    // SAFETY: `small` bytes of ours.
    unsafe { tag(p, small, 0x5eed) };
    let mut q = p;
    let (held, probed) = probed(a, || {
        // SAFETY: live with `small` bytes; then with `big`.
        unsafe {
            q = a.remalloc(p, small, big, Life::A);
            assert!(!q.is_null());
            assert!(tagged(q, small, 0x5eed), "the grown allocation's bytes");
            q = a.remalloc(q, big, small, Life::A);
            assert!(!q.is_null());
        }
    });
    assert!(probed >= 2, "{probed} calls probed");
    assert_eq!(
        held, 0,
        "{held} of {probed} system calls of a large resize ran with the large lock held \
         (another thread's large free waited 10 s)"
    );
    // SAFETY: live with `small` bytes (the shrink kept them); then freed once.
    unsafe {
        assert!(tagged(q, small, 0x5eed), "the shrunk allocation's bytes");
        a.free(q, small, Life::A);
    }
}

/// The large table grows (a new mapping for its slots, the old one unmapped) when an
/// allocation reaches its fill bound: neither with the large lock held.
#[test]
fn the_large_table_grows_without_the_large_lock() {
    let a = uncached();
    let size = MAX_MEDIUM + (64 << 10);
    // The table starts with 512 slots and grows at 3/4 (384 entries): an allocation from
    // the 300th on is probed, until one makes three calls (its own mapping, the table's
    // new one and the old one's unmap).
    let mut live: Vec<*mut u8> = (0..300).map(|_| a.malloc(size, Life::A)).collect();
    assert!(live.iter().all(|p| !p.is_null()));
    let mut probed = 0;
    while probed < 3 && live.len() < 500 {
        let held;
        (held, probed) = self::probed(a, || live.push(a.malloc(size, Life::A)));
        assert!(!live.last().unwrap().is_null());
        assert_eq!(
            held,
            0,
            "{held} of {probed} system calls of allocation {} ran with the large lock held",
            live.len()
        );
    }
    assert!(probed >= 3, "the table did not grow");
    for p in live {
        // SAFETY: allocated above, freed once.
        unsafe { a.free(p, size, Life::A) };
    }
    assert!(a.is_empty());
}
