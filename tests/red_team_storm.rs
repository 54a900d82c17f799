//! Red-team storm: every public call of a shared instance at once, from threads that come
//! and go, each object patterned; the instance must end empty and consistent.
//!
//! Each worker owns one lifetime class for `release_class` (its objects of that class never
//! leave it, as the release's contract asks) and shares class `Shared` with the others:
//! objects of it are handed through a bag and freed or resized by whoever takes them.
//! `COHORT_STORM_SECS` sets the run time (default 3 s).

mod common;

use cohort::Cohort;
use common::{fill, mismatch, random_size, seed_of, Rng};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use test_support::raw_thread;

cohort::lifetime_classes! {
    enum Life { W0, W1, W2, Shared }
}

const OWN: [Life; 3] = [Life::W0, Life::W1, Life::W2];

#[derive(Clone, Copy)]
struct Obj {
    p: usize,
    size: usize,
}

impl Obj {
    fn check(&self, what: &str) {
        if self.size > 0 {
            // SAFETY: a live object of `size` bytes.
            let bad = unsafe {
                mismatch(
                    self.p as *const u8,
                    seed_of(self.p as *const u8, self.size),
                    self.size,
                )
            };
            assert_eq!(
                bad, None,
                "{what}: object {:#x} ({} B) changed at byte {bad:?}",
                self.p, self.size
            );
        }
    }
}

fn made(p: *mut u8, size: usize) -> Obj {
    assert!(!p.is_null() || size == 0, "out of memory at {size} B");
    if size > 0 {
        // SAFETY: p holds size bytes.
        unsafe { fill(p, seed_of(p, size), size) };
    }
    Obj {
        p: p as usize,
        size,
    }
}

/// One worker's run until `until`; its requests are at most `cap` bytes (a shared region
/// refuses large allocations).
fn worker(
    a: &Cohort<Life>,
    bag: &Mutex<Vec<Obj>>,
    me: usize,
    seed: u64,
    until: Instant,
    cap: usize,
) {
    let mut rng = Rng::new(seed);
    let random_size = |rng: &mut Rng, max| random_size(rng, max).min(cap);
    let own_life = OWN[me];
    let mut own: Vec<Obj> = Vec::new();
    let mut shared: Vec<Obj> = Vec::new();
    let mut join = None;
    while Instant::now() < until {
        match rng.below(100) {
            0..=24 => {
                let s = random_size(&mut rng, 200_000);
                own.push(made(a.malloc(s, own_life), s));
            }
            25..=34 => {
                let s = random_size(&mut rng, 200_000);
                let p = if rng.chance(50) {
                    a.calloc(s, Life::Shared)
                } else {
                    a.malloc(s, Life::Shared)
                };
                shared.push(made(p, s));
            }
            35..=54 if !own.is_empty() => {
                let o = own.swap_remove(rng.below(own.len()));
                o.check("own free");
                // SAFETY: live, of own_life.
                unsafe { a.free(o.p as *mut u8, o.size, own_life) };
            }
            55..=62 if !own.is_empty() => {
                let i = rng.below(own.len());
                let o = own[i];
                o.check("own resize");
                let n = random_size(&mut rng, 200_000);
                // SAFETY: live, of own_life.
                let q = unsafe { a.remalloc(o.p as *mut u8, o.size, n, own_life) };
                assert!(!q.is_null() || n == 0);
                if n > 0 {
                    let keep = o.size.min(n);
                    let got = Obj {
                        p: q as usize,
                        size: keep,
                    };
                    // The kept prefix has the old pattern at the old address.
                    // SAFETY: q holds n >= keep bytes.
                    let bad = unsafe { mismatch(q, seed_of(o.p as *const u8, o.size), keep) };
                    assert_eq!(bad, None, "remalloc {} -> {n} lost bytes", o.size);
                    let _ = got;
                }
                own[i] = made(q, n);
            }
            63..=70 => {
                // Hand shared objects over, take others'.
                let mut b = bag.lock().unwrap();
                if rng.chance(50) {
                    b.append(&mut shared);
                } else {
                    let take = b.len().min(rng.range(1, 16));
                    let at = b.len() - take;
                    shared.extend(b.drain(at..));
                }
            }
            71..=80 if !shared.is_empty() => {
                let o = shared.swap_remove(rng.below(shared.len()));
                o.check("shared free");
                match (&join, rng.chance(30)) {
                    // SAFETY: live, of Shared.
                    (Some(j), true) => unsafe {
                        cohort::Join::free(j, o.p as *mut u8, o.size, Life::Shared)
                    },
                    // SAFETY: as above.
                    _ => unsafe { a.free(o.p as *mut u8, o.size, Life::Shared) },
                }
            }
            81..=84 if !shared.is_empty() => {
                let i = rng.below(shared.len());
                let o = shared[i];
                o.check("shared resize");
                let n = random_size(&mut rng, 200_000);
                // SAFETY: live, of Shared.
                let q = unsafe { a.recalloc(o.p as *mut u8, o.size, n, Life::Shared) };
                assert!(!q.is_null() || n == 0);
                if n > o.size {
                    // SAFETY: q holds n bytes.
                    let z = unsafe { common::nonzero(q.add(o.size), n - o.size) };
                    assert_eq!(z, None, "recalloc {} -> {n}: the tail is not zero", o.size);
                }
                shared[i] = made(q, n);
            }
            85..=86 => {
                // SAFETY: own_life's objects are this thread's only; they are dropped.
                let r = unsafe { a.release_class(own_life) };
                let _ = r;
                own.clear();
            }
            87..=88 => {
                let _ = a.compact();
            }
            89..=90 => {
                let s = a.stats();
                assert!(s.small.live <= s.small.capacity_bytes);
                let mut n = 0;
                a.for_each_block(|b| {
                    assert!(b.live <= b.capacity);
                    n += 1;
                });
                let _ = n;
            }
            91..=94 => {
                if join.is_none() {
                    join = a.join(rng.below(3));
                } else if rng.chance(50) {
                    join = None; // left, with live objects (their frees become remote)
                } else if let Some(j) = &join {
                    let s = random_size(&mut rng, 40_000);
                    shared.push(made(j.malloc(s, Life::Shared), s));
                }
            }
            _ => {
                let _ = a.is_empty();
            }
        }
    }
    drop(join);
    for o in own.drain(..) {
        o.check("own at exit");
        // SAFETY: live, of own_life.
        unsafe { a.free(o.p as *mut u8, o.size, own_life) };
    }
    // Shared objects stay live past the thread: others free them.
    bag.lock().unwrap().append(&mut shared);
}

fn storm_secs() -> u64 {
    std::env::var("COHORT_STORM_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

/// Rounds of 200 ms until `end`, each with threads of its own running workers `mes`.
fn storm(a: &Cohort<Life>, bag: &Mutex<Vec<Obj>>, mes: &[usize], end: Instant, cap: usize) {
    let stop = AtomicBool::new(false);
    let mut round = 0u64;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        round += 1;
        let until = (Instant::now() + Duration::from_millis(200)).min(end);
        raw_thread::scope(|s| {
            for &me in mes {
                s.spawn(move || worker(a, bag, me, round * 7 + me as u64, until, cap));
            }
        });
    }
}

/// Frees what is left in the bag (checked).
fn free_bag(a: &Cohort<Life>, bag: Mutex<Vec<Obj>>) {
    for o in bag.into_inner().unwrap() {
        o.check("at the end");
        // SAFETY: live, of Shared.
        unsafe { a.free(o.p as *mut u8, o.size, Life::Shared) };
    }
}

#[test]
fn every_call_at_once_from_threads_that_come_and_go() {
    let mut a: Cohort<Life> = Cohort::new();
    let bag = Mutex::new(Vec::new());
    let end = Instant::now() + Duration::from_secs(storm_secs());
    storm(&a, &bag, &[0, 1, 2], end, usize::MAX);
    for o in bag.into_inner().unwrap() {
        o.check("at the end");
        // SAFETY: live, of Shared.
        unsafe { a.free(o.p as *mut u8, o.size, Life::Shared) };
    }
    std::thread::sleep(Duration::from_millis(50)); // the last threads' exit hooks
    a.verify_exclusive().unwrap();
    assert!(a.is_empty(), "{:?}", a.stats());
}

/// The storm on a shared region: threads of this process run workers 0 and 1 while a forked
/// process runs worker 2 (each process hands its `Shared` objects between its own threads;
/// the region's blocks, lists and heaps are shared by all). Sizes up to 16 KiB (a shared
/// region refuses large allocations). The region ends empty and consistent.
#[test]
fn every_call_at_once_on_a_shared_region_from_threads_and_a_forked_process() {
    const CAP: usize = 16 << 10;
    let a = Cohort::<Life>::shared_anonymous(1 << 30).expect("a shared region");
    let end = Instant::now() + Duration::from_secs(storm_secs());
    // SAFETY: the child runs the storm and leaves through `_exit`.
    let child = unsafe { libc::fork() };
    assert!(child >= 0);
    if child == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let bag = Mutex::new(Vec::new());
            storm(&a, &bag, &[2], end, CAP);
            free_bag(&a, bag);
        }))
        .is_ok();
        // SAFETY: leaves the child without the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let bag = Mutex::new(Vec::new());
    storm(&a, &bag, &[0, 1], end, CAP);
    free_bag(&a, bag);
    let mut status = 0;
    // SAFETY: our own child.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the forked worker failed: status {status:#x}"
    );
    a.reap_dead_processes();
    // SAFETY: the forked worker has exited; nothing else uses the region (`verify_exclusive`
    // refuses a region other processes may use).
    unsafe { a.verify() }.unwrap();
    assert!(a.is_empty(), "{:?}", a.stats());
}

/// The storm on a small fixed region that falls back (session 8): the region is full most
/// of the time, so requests are promoted into larger classes, large ones are runs of its
/// units or mappings of their own, small ones fall back to mappings too; every free,
/// resize and release form meets all of them. The region ends empty and consistent.
#[test]
fn every_call_at_once_on_a_full_fixed_region_that_falls_back() {
    let options = cohort::RegionOptions::new(24 << 20).fallback(true);
    let a = Cohort::<Life>::with_options(&options).expect("a fixed region");
    let bag = Mutex::new(Vec::new());
    let end = Instant::now() + Duration::from_secs(storm_secs());
    storm(&a, &bag, &[0, 1, 2], end, usize::MAX);
    free_bag(&a, bag);
    std::thread::sleep(Duration::from_millis(50)); // the last threads' exit hooks
                                                   // SAFETY: the storm's threads have ended (`verify_exclusive` refuses this region: RED-25).
    unsafe { a.verify() }.unwrap();
    assert!(a.is_empty(), "{:?}", a.stats());
}
