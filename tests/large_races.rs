//! The cache of freed large mappings under contention and under memory pressure: threads
//! allocating, writing, checking and freeing large allocations of similar sizes while
//! another thread compacts, rebounds the cache and releases a lifetime class never see two
//! live allocations share a page; and when the OS refuses a fresh mapping, the cache is given
//! back and the request served.

use cohort::{Cohort, Retention};
use std::sync::atomic::{AtomicU64, Ordering};
use threads::CountOnDrop;

#[path = "common/threads.rs"]
mod threads;
use std::time::Duration;
use test_support::Rng;

cohort::lifetime_classes! {
    enum Life { Kept, Released }
}

const PAGE: usize = 4096;
const WORKERS: u64 = 3;

/// Writes `tag` at every 4 KiB page of `[p, p + len)`.
///
/// # Safety
/// `p` is valid for writes of `len` bytes.
unsafe fn stamp(p: *mut u8, len: usize, tag: u64) {
    for i in (0..len).step_by(PAGE) {
        // SAFETY: i + 8 <= len (len is a multiple of 8 here) (caller).
        unsafe { p.add(i).cast::<u64>().write_unaligned(tag) };
    }
}

/// True when every 4 KiB page of `[p, p + len)` still holds `tag`.
///
/// # Safety
/// `p` is valid for reads of `len` bytes.
unsafe fn stamped(p: *mut u8, len: usize, tag: u64) -> bool {
    // SAFETY: as in stamp (caller).
    (0..len)
        .step_by(PAGE)
        .all(|i| unsafe { p.add(i).cast::<u64>().read_unaligned() } == tag)
}

#[test]
fn reuse_races_with_frees_compact_rebounds_and_release() {
    let a = Cohort::<Life>::new();
    let done = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..WORKERS {
            let (a, done) = (&a, &done);
            s.spawn(move || {
                // Counted however it ends: the other thread loops until every worker has.
                let _counted = CountOnDrop(done);
                let mut rng = Rng::new(t);
                let mut live: Vec<(*mut u8, usize, u64)> = Vec::new();
                for round in 0..3000u64 {
                    // Sizes 64 KiB to 1 MiB in pages: many requests fit others' mappings.
                    let size = rng.range(16, 256) * PAGE - rng.below(8) * 8;
                    let tag = (t << 48) | round;
                    let p = a.malloc(size, Life::Kept);
                    assert!(!p.is_null());
                    // SAFETY: a live allocation of `size` bytes.
                    unsafe { stamp(p, size, tag) };
                    live.push((p, size, tag));
                    if live.len() > 4 || rng.below(2) == 0 {
                        let (p, size, tag) = live.swap_remove(rng.below(live.len()));
                        // SAFETY: live, only this thread wrote it; freed once.
                        unsafe {
                            assert!(
                                stamped(p, size, tag),
                                "{p:?} ({size} bytes) was overwritten"
                            );
                            a.free(p, size, Life::Kept);
                        }
                    }
                }
                for (p, size, tag) in live {
                    // SAFETY: as above.
                    unsafe {
                        assert!(stamped(p, size, tag));
                        a.free(p, size, Life::Kept);
                    }
                }
            });
        }
        let (a, done) = (&a, &done);
        s.spawn(move || {
            let mut i = 0usize;
            while done.load(Ordering::Acquire) < WORKERS {
                match i % 4 {
                    0 => drop(a.compact()),
                    1 => a.set_retention(Retention {
                        large_cache_bytes: (i % 3) << 22,
                        large_cache_mappings: i % 40,
                        empty_block_bytes: (i % 3) << 21,
                        delay: Duration::from_millis((i % 5) as u64),
                    }),
                    2 => {
                        let p = a.malloc(300 << 10, Life::Released);
                        assert!(!p.is_null());
                        // SAFETY: live; released below, never used after.
                        unsafe { stamp(p, 300 << 10, u64::MAX) };
                    }
                    _ => {
                        // SAFETY: the only class-Released allocations are this thread's,
                        // unused.
                        let _ = unsafe { a.release_class(Life::Released) };
                    }
                }
                i += 1;
                std::thread::yield_now();
            }
        });
    });
    // SAFETY: the disturber's last class-Released allocation, if any, is unused.
    let _ = unsafe { a.release_class(Life::Released) };
    assert_eq!(a.stats().large_allocations, 0);
}

/// Resizes racing table rebuilds and releases: threads grow and shrink large allocations
/// of theirs (in place, into cached ranges, and remapped with the large lock dropped, the
/// entry out of the table meanwhile) while another thread makes the large table grow and
/// rebuild (hundreds of allocations of another class, then its release), rebounds the cache
/// (none kept: every resize past its pages remaps) and reads stats: every allocation keeps
/// its bytes, every free and resize of them is accepted, and all ends empty and consistent.
#[test]
fn resizes_race_table_rebuilds_and_releases() {
    let a = Cohort::<Life>::new();
    let done = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (a, done) = (&a, &done);
            s.spawn(move || {
                // Counted however it ends: the other thread loops until both have.
                let _counted = CountOnDrop(done);
                let mut rng = Rng::new(100 + t);
                let mut live: Vec<(*mut u8, usize, u64)> = Vec::new();
                for round in 0..1500u64 {
                    let tag = (t << 48) | round;
                    if live.len() < 2 || (live.len() < 6 && rng.chance(30)) {
                        // 1 MiB and a page to 4 MiB.
                        let size = rng.range(257, 1024) * PAGE - rng.below(8) * 8;
                        let p = a.malloc(size, Life::Kept);
                        assert!(!p.is_null());
                        // SAFETY: a live allocation of `size` bytes.
                        unsafe { stamp(p, size, tag) };
                        live.push((p, size, tag));
                    } else if rng.chance(70) {
                        let i = rng.below(live.len());
                        let (p, size, old_tag) = live[i];
                        let new = match rng.below(4) {
                            // A small step, within its pages or an eighth more.
                            0 => size + rng.below(4) * PAGE + 8,
                            1 => (size * 2).min(6 << 20),
                            // Down, sometimes to a medium size (moved).
                            2 => size / 2 + 8,
                            _ => rng.range(128, 1536) * PAGE,
                        };
                        // SAFETY: live with `size` bytes, this thread's.
                        let q = unsafe { a.remalloc(p, size, new, Life::Kept) };
                        assert!(!q.is_null());
                        // SAFETY: `new` bytes of ours, the first min(size, new) kept.
                        unsafe {
                            let kept = size.min(new) & !7;
                            assert!(stamped(q, kept, old_tag), "a resize lost bytes");
                            stamp(q, new & !7, tag);
                        }
                        live[i] = (q, new, tag);
                    } else {
                        let (p, size, tag) = live.swap_remove(rng.below(live.len()));
                        // SAFETY: live, only this thread wrote it; freed once.
                        unsafe {
                            assert!(stamped(p, size & !7, tag), "{p:?} was overwritten");
                            a.free(p, size, Life::Kept);
                        }
                    }
                }
                for (p, size, tag) in live {
                    // SAFETY: as above.
                    unsafe {
                        assert!(stamped(p, size & !7, tag));
                        a.free(p, size, Life::Kept);
                    }
                }
            });
        }
        let (a, done) = (&a, &done);
        s.spawn(move || {
            let mut cycle = 0usize;
            while cycle < 3 || done.load(Ordering::Acquire) < 2 {
                a.set_retention(Retention {
                    large_cache_bytes: (cycle % 2) << 26,
                    ..Retention::DEFAULT
                });
                // Past 384 entries with the workers' (the table grows), then released
                // (tombstones: rebuilt at its size by later inserts).
                for k in 0..400 {
                    let p = a.malloc((1 << 20) + 1 + k * 8, Life::Released);
                    assert!(!p.is_null());
                    if k % 100 == 0 {
                        let _ = a.stats();
                    }
                }
                // SAFETY: the only class-Released allocations are this thread's, unused.
                let released = unsafe { a.release_class(Life::Released) };
                assert_eq!(released.large, 400, "cycle {cycle}");
                cycle += 1;
            }
        });
    });
    assert!(a.is_empty());
    // SAFETY: no other thread uses `a` now.
    unsafe { a.verify() }.expect("verify at the end");
}

const OOM_CHILD: &str = "COHORT_LARGE_OOM_CHILD";

/// Address space mapped by this process now (`/proc/self/statm`, first field).
fn mapped_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

/// Sets the process's address-space limit (`RLIMIT_AS`) to `bytes`.
fn limit_address_space(bytes: libc::rlim_t) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit for this process.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0);
}

/// The child side of [`a_refused_mapping_gives_the_cache_back_and_tries_again`]: with 48 MiB
/// cached in three ranges of 16 MiB (kept apart by live allocations between them in address
/// order, so that they cannot be joined) and room for only 8 MiB more address space, a 40 MiB request (longer than every
/// cached range, and growing one of them needs more room than that) must succeed.
#[test]
fn refused_mapping_child() {
    if test_support::child_case(OOM_CHILD).is_none() {
        return;
    }
    // The default reservation: large allocations are mappings of their own (a
    // reservation of exact capacity would serve them from its units, uncached).
    let a = Cohort::<Life>::new();
    let mut made: Vec<*mut u8> = (0..5).map(|_| a.malloc(16 << 20, Life::Kept)).collect();
    made.sort();
    // Every other one in address order is freed: a live one lies between any two of them.
    let (cached, apart): (Vec<_>, Vec<_>) = made.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let cached: Vec<*mut u8> = cached.into_iter().map(|(_, &p)| p).collect();
    for &p in &cached {
        assert!(!p.is_null());
        // SAFETY: live, freed once.
        unsafe { a.free(p, 16 << 20, Life::Kept) };
    }
    let s = a.stats();
    assert_eq!((s.large_cached, s.large_cached_bytes), (3, 48 << 20));
    limit_address_space((mapped_bytes() + (8 << 20)) as libc::rlim_t);
    let p = a.malloc(40 << 20, Life::Kept);
    limit_address_space(libc::RLIM_INFINITY);
    assert!(!p.is_null(), "40 MiB refused although 48 MiB were cached");
    assert_eq!(a.stats().large_cached, 0, "the cache was given back");
    // SAFETY: live, freed once.
    unsafe { a.free(p, 40 << 20, Life::Kept) };
    for (_, &q) in apart {
        // SAFETY: live, freed once.
        unsafe { a.free(q, 16 << 20, Life::Kept) };
    }
}

#[test]
fn a_refused_mapping_gives_the_cache_back_and_tries_again() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "refused_mapping_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(OOM_CHILD, "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
