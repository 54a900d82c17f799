//! Red-team attacks of session 12 on `release_class` caching its class's large allocations
//! (as their frees would) instead of unmapping them: the released bytes must never reach
//! a zeroed request of another class, every call on a released allocation is misuse and
//! reported, and releases racing other threads' large work keep every other allocation
//! whole. A test that found a defect is `#[ignore]`d with its number (RED-n), its owner
//! and the exact failure.

mod common;

use cohort::{set_misuse_hook, Cohort, Misuse, Retention};
use common::{fill, mismatch, nonzero, seed_of};
use std::alloc::Layout;
use std::panic::{catch_unwind, panic_any, AssertUnwindSafe};
use std::sync::Mutex;
use std::time::Duration;

cohort::lifetime_classes! { enum Life { A, B } }

const MIB: usize = 1 << 20;

/// The misuse hook is one per process: the tests that set it take turns.
static TURN: Mutex<()> = Mutex::new(());

fn raise(m: &Misuse) {
    panic_any(m.clone());
}

/// `f` with the misuse hook raising: the misuse it reported, if any.
fn reported<T>(f: impl FnOnce() -> T) -> Result<T, Misuse> {
    let before = set_misuse_hook(Some(raise));
    let got = catch_unwind(AssertUnwindSafe(f));
    set_misuse_hook(before);
    got.map_err(|e| {
        *e.downcast::<Misuse>()
            .expect("the hook's payload is the Misuse")
    })
}

/// An instance whose large cache keeps up to 1 GiB for a minute: every release is cached.
fn patient() -> Cohort<Life> {
    let a = Cohort::new();
    a.set_retention(Retention {
        large_cache_bytes: 1 << 30,
        large_cache_mappings: 64,
        delay: Duration::from_secs(60),
        ..Retention::DEFAULT
    });
    a
}

/// Large allocations of class A in every shape a release may cache (exact, shrunk within
/// its mapping, grown by small steps with room, aligned to 2 MiB), written all over with
/// 0xA5, then released; requests of class B of the same and other lengths, zeroed in
/// every way, read zero.
#[test]
fn released_large_bytes_never_reach_a_zeroed_request() {
    let a = patient();
    for round in 0..3 {
        let mut made = Vec::new();
        for size in [MIB + 1, 3 * MIB / 2, 3 * MIB, 8 * MIB, 17 * MIB] {
            let p = a.malloc(size, Life::A);
            assert!(!p.is_null());
            // SAFETY: `size` bytes of ours.
            unsafe { p.write_bytes(0xA5, size) };
            made.push(size);
            // Shrunk within its mapping (the tail it wrote stays mapped).
            let q = a.malloc(size + size / 9, Life::A);
            assert!(!q.is_null());
            // SAFETY: as above; then resized as the API allows.
            unsafe {
                q.write_bytes(0xA5, size + size / 9);
                let r = a.remalloc(q, size + size / 9, size, Life::A);
                assert!(!r.is_null());
            }
            // Grown by small steps (mapped with room), written to its end each time.
            let mut g = a.malloc(size, Life::A);
            let mut len = size;
            for _ in 0..8 {
                // SAFETY: live with `len` bytes.
                g = unsafe { a.remalloc(g, len, len + 4096 * 3, Life::A) };
                assert!(!g.is_null());
                len += 4096 * 3;
                // SAFETY: `len` bytes of ours.
                unsafe { g.write_bytes(0xA5, len) };
            }
            let l = Layout::from_size_align(size, 2 * MIB).unwrap();
            let h = a.alloc(l, Life::A);
            assert!(!h.is_null());
            // SAFETY: `size` bytes of ours.
            unsafe { h.write_bytes(0xA5, size) };
        }
        // SAFETY: every allocation of A is dead from here on.
        let released = unsafe { a.release_class(Life::A) };
        assert_eq!(released.large, 4 * made.len(), "round {round}");
        // Zeroed requests of B take the released ranges.
        let mut live = Vec::new();
        for &size in made.iter().rev() {
            for want in [size, size + size / 10, size - size / 10, size / 2 + 1] {
                if want <= MIB {
                    continue;
                }
                let p = a.calloc(want, Life::B);
                assert!(!p.is_null());
                // SAFETY: `want` bytes of ours.
                if let Some(at) = unsafe { nonzero(p, want) } {
                    panic!("round {round}: calloc({want}) after a release of {size}: byte {at} is not zero");
                }
                live.push((p, want, Layout::from_size_align(want, 16).unwrap()));
                let l = Layout::from_size_align(want, 2 * MIB).unwrap();
                let q = a.alloc_zeroed(l, Life::B);
                assert!(!q.is_null());
                // SAFETY: as above.
                if let Some(at) = unsafe { nonzero(q, want) } {
                    panic!("round {round}: alloc_zeroed({want}, 2 MiB) after a release: byte {at} is not zero");
                }
                live.push((q, want, l));
            }
            // A zeroed growth from a small allocation into a released range.
            let s = a.calloc(100, Life::B);
            // SAFETY: live with 100 bytes.
            let g = unsafe { a.recalloc(s, 100, size, Life::B) };
            assert!(!g.is_null());
            // SAFETY: `size` bytes of ours.
            if let Some(at) = unsafe { nonzero(g, size) } {
                panic!(
                    "round {round}: recalloc(100 -> {size}) after a release: byte {at} is not zero"
                );
            }
            live.push((g, size, Layout::from_size_align(size, 16).unwrap()));
        }
        for (p, _, l) in live {
            // SAFETY: live, freed once with its layout.
            unsafe { a.dealloc(p, l, Life::B) };
        }
    }
    assert!(a.is_empty());
}

/// A call on an allocation of `size` bytes at `p`.
type Call = fn(&Cohort<Life>, *mut u8, usize);

/// Every call on a released large allocation is reported: a free, a resize within its
/// pages (after the resizes that left the thread's memo of it), a resize to another
/// length, a free after another class's request took its range.
#[test]
fn calls_on_a_released_large_allocation_are_reported() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let a = patient();
    for size in [MIB + 100, 3 * MIB + 100, 9 * MIB + 100] {
        let calls: [(&str, Call); 5] = [
            ("free", |a, p, size| {
                // SAFETY: misuse under test, reported before anything changes.
                unsafe { a.free(p, size, Life::A) }
            }),
            ("remalloc within its pages", |a, p, size| {
                // SAFETY: as above.
                unsafe { a.remalloc(p, size, size + 8, Life::A) };
            }),
            ("recalloc within its pages", |a, p, size| {
                // SAFETY: as above.
                unsafe { a.recalloc(p, size, size + 8, Life::A) };
            }),
            ("remalloc to twice its length", |a, p, size| {
                // SAFETY: as above.
                unsafe { a.remalloc(p, size, 2 * size, Life::A) };
            }),
            ("free with class B", |a, p, size| {
                // SAFETY: as above.
                unsafe { a.free(p, size, Life::B) }
            }),
        ];
        for (what, call) in calls {
            let p = a.malloc(size, Life::A);
            assert!(!p.is_null());
            // Resized twice within its pages: the second may take the quick way.
            // SAFETY: live, resized within its pages (same address).
            unsafe {
                assert_eq!(a.remalloc(p, size, size + 4, Life::A), p);
                assert_eq!(a.remalloc(p, size + 4, size, Life::A), p);
            }
            // SAFETY: A's allocations are dead from here on (but in the misuse below).
            unsafe { a.release_class(Life::A) };
            if let Ok(()) = reported(|| call(&a, p, size)) {
                panic!("{what} of a released {size}-byte allocation was not reported");
            }
            // Another class's request takes the range (the same length: the cache's
            // first choice); a stale free of it in A is still reported.
            let q = a.malloc(size, Life::B);
            assert!(!q.is_null());
            // SAFETY: `size` bytes of ours.
            unsafe { fill(q, seed_of(q, size), size) };
            if q == p {
                let stale = reported(|| {
                    // SAFETY: misuse under test: A's allocation is gone.
                    unsafe { a.free(p, size, Life::A) }
                });
                assert!(
                    stale.is_err(),
                    "a stale free ({what}) over B's allocation was not reported"
                );
            }
            // SAFETY: live, `size` bytes.
            assert_eq!(
                unsafe { mismatch(q, seed_of(q, size), size) },
                None,
                "{what}: B's bytes"
            );
            // SAFETY: live, freed once.
            unsafe { a.free(q, size, Life::B) };
        }
    }
    assert!(a.is_empty());
}

/// Releases of class A (its large, medium and small allocations) racing another thread's
/// large allocations, resizes and frees in class B, with compactions and stats: B's bytes
/// stay whole, and everything ends empty and consistent.
#[test]
fn releases_race_other_threads_large_work() {
    let owned = patient();
    let a = &owned;
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let stop = &stop;
            s.spawn(move || {
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ t;
                let mut next = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                let mut live: Vec<(*mut u8, usize)> = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match next() % 4 {
                        0 | 1 => {
                            let size = MIB + (next() as usize % (6 * MIB));
                            let p = a.malloc(size, Life::B);
                            assert!(!p.is_null());
                            // SAFETY: `size` bytes of ours.
                            unsafe { fill(p, seed_of(p, size), size) };
                            live.push((p, size));
                        }
                        2 if !live.is_empty() => {
                            let i = next() as usize % live.len();
                            let (p, size) = live[i];
                            let new = if next() % 2 == 0 {
                                size + 4096
                            } else {
                                size + MIB
                            };
                            // SAFETY: live with `size` bytes.
                            let q = unsafe { a.remalloc(p, size, new, Life::B) };
                            assert!(!q.is_null());
                            // SAFETY: the old bytes moved; `new` bytes of ours.
                            unsafe {
                                assert_eq!(
                                    mismatch(q, seed_of(p, size), size),
                                    None,
                                    "remalloc lost bytes"
                                );
                                fill(q, seed_of(q, new), new);
                            }
                            live[i] = (q, new);
                        }
                        _ if !live.is_empty() => {
                            let (p, size) = live.swap_remove(next() as usize % live.len());
                            // SAFETY: live, `size` bytes; then freed once.
                            unsafe {
                                assert_eq!(
                                    mismatch(p, seed_of(p, size), size),
                                    None,
                                    "B's bytes changed"
                                );
                                a.free(p, size, Life::B);
                            }
                        }
                        _ => {}
                    }
                }
                for (p, size) in live {
                    // SAFETY: live, `size` bytes; then freed once.
                    unsafe {
                        assert_eq!(
                            mismatch(p, seed_of(p, size), size),
                            None,
                            "B's bytes changed"
                        );
                        a.free(p, size, Life::B);
                    }
                }
            });
        }
        // Stops the threads however this test ends (a failed assertion panics here).
        let stop_threads = common::StopOnDrop(&stop);
        for round in 0..150 {
            for k in 0..12 {
                let size = match k % 3 {
                    0 => MIB + 1 + k * 40_000,
                    1 => 100_000,
                    _ => 500,
                };
                let p = a.malloc(size, Life::A);
                assert!(!p.is_null());
                // SAFETY: `size` bytes of ours.
                unsafe { p.write_bytes(0xA5, size) };
            }
            // SAFETY: only this thread allocates in A; all of it dead from here on.
            unsafe { a.release_class(Life::A) };
            if round % 10 == 0 {
                a.compact();
            }
            let _ = a.stats();
        }
        drop(stop_threads);
    });
    assert!(a.is_empty());
    // SAFETY: no other thread uses `a` now.
    unsafe { a.verify() }.expect("verify at the end");
}

/// Releases of class A racing two threads that keep up to 1500 large allocations of class
/// B each live (the large table grows and is rebuilt under the release's walk, which
/// takes the lock once per allocation): each release frees all of A's large allocations
/// and nothing of B's (B's first bytes checked), and A has none left after it.
#[test]
fn releases_race_large_table_rebuilds() {
    let owned = patient();
    let a = &owned;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let cycles = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        let mut threads = Vec::new();
        for t in 0..2u64 {
            let (stop, cycles) = (&stop, &cycles);
            threads.push(s.spawn(move || {
                let mut live: Vec<(usize, usize)> = Vec::new();
                let mut round = t;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Grow to 1500 live (rebuilds as the table doubles), then back to 0
                    // (tombstones: rebuilds at the same size).
                    for i in 0..1500 {
                        let size = MIB + 4096 * ((i + round as usize) % 64) + 1;
                        let p = a.malloc(size, Life::B);
                        assert!(!p.is_null());
                        // SAFETY: `size` bytes of ours; its first 8 bytes tag it.
                        unsafe { p.cast::<u64>().write(p as u64 ^ size as u64) };
                        live.push((p as usize, size));
                    }
                    for (p, size) in live.drain(..) {
                        // SAFETY: live, freed once; the tag written above.
                        unsafe {
                            let tag = (p as *const u64).read();
                            assert_eq!(tag, p as u64 ^ size as u64, "B's allocation changed");
                            a.free(p as *mut u8, size, Life::B);
                        }
                    }
                    round += 1;
                    cycles.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }));
        }
        // Stops the threads however this test ends (a failed assertion panics here).
        let stop_threads = common::StopOnDrop(&stop);
        let mut round = 0;
        // Past round 200, until the threads' 6th cycle; or until both have ended (they
        // end only at the stop: a panic ended them, which the scope reports).
        while round < 200
            || (cycles.load(std::sync::atomic::Ordering::Relaxed) < 6
                && !threads.iter().all(|t| t.is_finished()))
        {
            round += 1;
            let n = 20 + round % 30;
            for k in 0..n {
                let p = a.malloc(MIB + 1 + k * 4096, Life::A);
                assert!(!p.is_null());
            }
            // SAFETY: only this thread allocates in A; all of it dead from here on.
            let released = unsafe { a.release_class(Life::A) };
            assert_eq!(released.large, n, "round {round}: released");
            let left = a
                .stats()
                .classes
                .iter()
                .find(|c| c.life_name == "A")
                .map_or(0, |c| c.large_allocations);
            assert_eq!(
                left, 0,
                "round {round}: A's large allocations left after its release"
            );
        }
        drop(stop_threads);
    });
    assert!(a.is_empty());
    // SAFETY: no other thread uses `a` now.
    unsafe { a.verify() }.expect("verify at the end");
}
