//! Red-team attacks on what follows a heap's hand-over to the pool (its thread's exit, a
//! join's leave, a region left by its last process and opened again) now that the
//! hand-over keeps a block's remote list as it is (RED-140's fix): the list is collected
//! by whoever next allocates from the block. Legitimate use afterwards must hand every slot
//! out once, keep every live object whole, verify, and end empty:
//!
//! - the owner exits (or leaves its join) while other threads free its objects, so remote
//!   frees race the hand-over; then threads allocate from the pool's blocks, free, compact,
//!   release;
//! - a file region whose blocks hold remote lists at rest (the last process left after its
//!   owner thread exited) is opened again by another process, which frees the live objects,
//!   is refused the double free of the slot freed last, and allocates until every slot is
//!   handed out.
//!
//! Sizes: a 4-byte slot (its link fills it), 8, 64, 1000 and 16 KiB (128 slots a block).

mod red_team_common;
mod red_team_s22_common;

use cohort::{Cohort, CreateOptions, OpenOptions, Place, SharedCohort};
use red_team_common::{in_child, shared_words, wait};
use red_team_s22_common::{check, make, unmake, Object};
use std::collections::HashSet;
use std::sync::mpsc;
use std::time::Duration;

cohort::lifetime_classes! { enum Life { A, B } }

const SIZES: [usize; 5] = [4, 8, 64, 1000, 16384];

/// Objects of `size` that fill about `blocks` blocks.
fn count_for(size: usize, blocks: usize) -> usize {
    // A debug build (every free fully checked) makes a tenth as many.
    let most = if cfg!(debug_assertions) {
        6_000
    } else {
        60_000
    };
    ((2 << 20) / size.max(8) * blocks).min(most)
}

/// Allocates objects of `size` in class A until `n`, checking each is not live already
/// (`live`, to which it is added); the new objects.
fn fresh(
    a: &Cohort<Life>,
    size: usize,
    n: usize,
    tag: u8,
    live: &mut HashSet<usize>,
    what: &str,
) -> Vec<Object> {
    (0..n)
        .map(|_| {
            let o = make(a, size, Life::A, tag, what);
            assert!(live.insert(o.0), "{what}: {:#x} handed out while live", o.0);
            o
        })
        .collect()
}

/// Owner O makes `n` objects and hands them to two freers, which free all but every
/// seventh at once while O exits (or its join leaves): remote frees race the hand-over.
/// Returns the objects kept live.
fn handed_over_amid_frees(
    a: &Cohort<Life>,
    size: usize,
    n: usize,
    join: bool,
    what: &str,
) -> Vec<Object> {
    let (tx0, rx0) = mpsc::channel::<Vec<Object>>();
    let (tx1, rx1) = mpsc::channel::<Vec<Object>>();
    let (kept_tx, kept_rx) = mpsc::channel::<Vec<Object>>();
    std::thread::scope(|s| {
        for rx in [rx0, rx1] {
            let kept_tx = kept_tx.clone();
            s.spawn(move || {
                let objects = rx.recv().expect("O");
                let mut kept = Vec::new();
                for (i, o) in objects.into_iter().enumerate() {
                    if i % 7 == 3 {
                        kept.push(o);
                    } else {
                        unmake(a, o, Life::A, what);
                    }
                }
                kept_tx.send(kept).expect("main");
            });
        }
        drop(kept_tx);
        s.spawn(move || {
            if join {
                let j = a.join(1).expect("a join");
                let all: Vec<Object> = (0..n)
                    .map(|i| {
                        let p = j.malloc(size, Life::A) as usize;
                        assert_ne!(p, 0, "{what}: the join's malloc");
                        red_team_s22_common::patterned(p, size, i as u8)
                    })
                    .collect();
                let (first, second) = all.split_at(n / 2);
                tx0.send(first.to_vec()).expect("F0");
                tx1.send(second.to_vec()).expect("F1");
                j.leave();
            } else {
                let all: Vec<Object> = (0..n)
                    .map(|i| make(a, size, Life::A, i as u8, what))
                    .collect();
                let (first, second) = all.split_at(n / 2);
                tx0.send(first.to_vec()).expect("F0");
                tx1.send(second.to_vec()).expect("F1");
                // Exits at once: the hand-over races the freers.
            }
        });
    });
    kept_rx.iter().flatten().collect()
}

/// After the hand-over: two threads allocate as many objects again (each handed out once,
/// none over a kept one), a release of class B and a compact run meanwhile, everything is
/// freed by the other thread, and the instance verifies and is empty.
fn use_after(a: &Cohort<Life>, size: usize, n: usize, kept: Vec<Object>, what: &str) {
    let live: std::sync::Mutex<HashSet<usize>> =
        std::sync::Mutex::new(kept.iter().map(|o| o.0).collect());
    let made: Vec<Vec<Object>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2u8)
            .map(|t| {
                let live = &live;
                s.spawn(move || {
                    let mut mine = HashSet::new();
                    let objects = fresh(a, size, n / 2, 100 + t, &mut mine, what);
                    let b = a.malloc(size, Life::B);
                    // SAFETY: class B, only this thread's object: a release of B frees it.
                    unsafe { a.free(b, size, Life::B) };
                    let mut all = live.lock().unwrap();
                    for o in &objects {
                        assert!(all.insert(o.0), "{what}: {:#x} handed out twice", o.0);
                    }
                    objects
                })
            })
            .collect();
        a.compact();
        let _ = a.stats();
        hs.into_iter()
            .map(|h| h.join().expect("allocator thread"))
            .collect()
    });
    for o in &kept {
        check(*o, what);
    }
    // Each thread's objects freed by another thread (remote frees), the kept ones by main.
    std::thread::scope(|s| {
        for objects in made.iter().rev() {
            s.spawn(move || {
                for o in objects {
                    unmake(a, *o, Life::A, what);
                }
            });
        }
    });
    for o in kept {
        unmake(a, o, Life::A, what);
    }
    a.compact();
    // SAFETY: no other thread uses `a` now.
    let v = unsafe { a.verify() };
    assert!(v.is_ok(), "{what}: verify: {v:?}");
    assert!(a.is_empty(), "{what}: {}", a.stats());
}

#[test]
fn hand_overs_amid_remote_frees_then_every_use() {
    for shared in [false, true] {
        for join in [false, true] {
            for size in SIZES {
                let what = format!("size {size}, join {join}, shared {shared}");
                let a = if shared {
                    Cohort::<Life>::shared_anonymous(256 << 20).expect("shared anonymous")
                } else {
                    Cohort::<Life>::new()
                };
                let n = count_for(size, 2);
                for round in 0..3 {
                    let what = format!("{what}, round {round}");
                    let kept = handed_over_amid_frees(&a, size, n, join, &what);
                    use_after(&a, size, n, kept, &what);
                }
            }
        }
    }
}

fn region_path(tag: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("cohort-red24-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// A file region left with remote lists on blocks its exited owner handed over, opened
/// again by another process: the live objects are freed there, the slot freed last onto a
/// remote list is refused a second free, every slot is handed out once, and the region
/// verifies with no block damaged.
#[test]
fn a_region_left_with_handed_over_remote_lists_opens_and_serves() {
    for size in SIZES {
        let what = format!("file region, size {size}");
        let path = region_path(&format!("handover{size}"));
        let n = count_for(size, 1).min(5000);
        // Words: 0 the count written, 1 the offset freed last, from 2 the live offsets.
        let words = shared_words(n + 2);
        let maker = in_child(60, || {
            let r = SharedCohort::<Life>::create(Place::File(&path), CreateOptions::new(64 << 20))
                .expect("create");
            let a: &Cohort<Life> = &r;
            let (tx, rx) = mpsc::channel::<Vec<Object>>();
            // In a fork child: a thread started without std's locks (`raw_thread`).
            test_support::raw_thread::scope(|s| {
                s.spawn(|| {
                    let all: Vec<Object> = (0..n)
                        .map(|i| make(a, size, Life::A, i as u8, &what))
                        .collect();
                    tx.send(all).expect("F");
                    // O exits: its blocks go to the pool with their remote lists.
                });
            });
            let all = rx.recv().expect("O");
            // F frees every third object (remote frees, pushed at once), the last one last.
            let mut last = 0;
            let mut live = Vec::new();
            for (i, o) in all.into_iter().enumerate() {
                if i % 3 == 0 || i == n - 1 {
                    unmake(a, o, Life::A, &what);
                    last = o.0;
                } else {
                    live.push(o);
                }
            }
            let off = |p: usize| r.offset_of(p as *const u8).expect("in the region").get();
            words[1].store(off(last), std::sync::atomic::Ordering::Relaxed);
            for (i, o) in live.iter().enumerate() {
                words[i + 2].store(off(o.0), std::sync::atomic::Ordering::Relaxed);
            }
            words[0].store(live.len() as u64, std::sync::atomic::Ordering::Release);
            r.leave().expect("leave");
        });
        assert_eq!(wait(maker), Ok(0), "{what}: the maker");
        let user = in_child(60, || {
            let r = SharedCohort::<Life>::open(
                Place::File(&path),
                OpenOptions::new().timeout(Duration::ZERO),
            )
            .expect("open");
            let a: &Cohort<Life> = &r;
            let at = |off: u64| r.ptr(cohort::Off::<u8>::new(off).expect("an offset")) as usize;
            let live_count = words[0].load(std::sync::atomic::Ordering::Acquire) as usize;
            let x = at(words[1].load(std::sync::atomic::Ordering::Relaxed));
            // SAFETY: a double free, refused by try_free (nothing changed).
            let twice = unsafe { a.try_free(x as *mut u8, size, Life::A) };
            assert!(
                twice.is_err(),
                "{what}: the double free of {x:#x} in the opener: {twice:?}"
            );
            let mut live = HashSet::new();
            for i in 0..live_count {
                let p = at(words[i + 2].load(std::sync::atomic::Ordering::Relaxed));
                live.insert(p);
            }
            // Allocate while the live objects stay, then free them and allocate again.
            let first = fresh(a, size, n, 200, &mut live, &what);
            let mut all_live: Vec<usize> = live.iter().copied().collect();
            all_live.retain(|p| !first.iter().any(|o| o.0 == *p));
            for p in all_live {
                // SAFETY: a live object of the maker's, `size` bytes of class A, freed once
                // (its pattern is the maker's: the tag is its index, not checked here).
                unsafe { a.free(p as *mut u8, size, Life::A) };
                live.remove(&p);
            }
            let second = fresh(a, size, n, 201, &mut live, &what);
            for o in first.into_iter().chain(second) {
                unmake(a, o, Life::A, &what);
            }
            let s = a.stats();
            assert_eq!(s.damaged_blocks, 0, "{what}: {s}");
            // SAFETY: no other thread uses the region.
            let v = unsafe { a.verify() };
            assert!(v.is_ok(), "{what}: verify: {v:?}");
            assert!(a.is_empty(), "{what}: {}", a.stats());
            r.leave().expect("leave");
        });
        let ended = wait(user);
        let _ = std::fs::remove_file(&path);
        assert_eq!(ended, Ok(0), "{what}: the opener (its message above)");
    }
}

/// A full region whose objects one thread made and another thread freed (all but every
/// tenth, remote frees) while their maker was alive, then the maker exited: the freed
/// slots sit on the remote lists of blocks the hand-over gave to the pool (RED-140's fix
/// keeps them there). Another thread, or a join, must be served every one of them before
/// the region returns null, in a private reservation and in a region shared with children.
/// (The freeing thread exits first: a live thread that only freed would adopt the maker's
/// heap, RED-151.)
#[test]
fn a_full_region_serves_the_slots_freed_before_its_owners_hand_over() {
    for shared in [false, true] {
        // A debug build leaves out the 8-byte class (two million objects a region).
        let sizes: &[usize] = if cfg!(debug_assertions) {
            &[64, 1000, 16384]
        } else {
            &[8, 64, 1000, 16384]
        };
        for &size in sizes {
            for by_join in [false, true] {
                let what = format!("size {size}, shared {shared}, served to a join {by_join}");
                let a = if shared {
                    Cohort::<Life>::shared_anonymous(16 << 20).expect("shared anonymous")
                } else {
                    Cohort::<Life>::with_reservation(16 << 20)
                };
                let a = &a;
                let (tx, rx) = mpsc::channel::<Vec<Object>>();
                let (freed_tx, freed_rx) = mpsc::channel::<()>();
                // Plain threads: their joins wait for the exit hooks (the hand-over).
                let (kept, freed) = std::thread::scope(|s| {
                    let maker = s.spawn(move || {
                        let mut all = Vec::new();
                        loop {
                            let p = a.try_malloc(size, Life::A) as usize;
                            if p == 0 {
                                break;
                            }
                            all.push(red_team_s22_common::patterned(p, size, 7));
                        }
                        tx.send(all).expect("main");
                        freed_rx.recv().expect("freer");
                    });
                    let what = &what;
                    let freer = s.spawn(move || {
                        let all = rx.recv().expect("maker");
                        let mut kept = Vec::new();
                        let mut freed = 0;
                        for (i, o) in all.into_iter().enumerate() {
                            if i % 10 == 0 {
                                kept.push(o);
                            } else {
                                unmake(a, o, Life::A, what);
                                freed += 1;
                            }
                        }
                        // Pushed (a private instance batches them).
                        let _ = a.stats();
                        (kept, freed)
                    });
                    let got = freer.join().expect("freer");
                    freed_tx.send(()).expect("maker");
                    maker.join().expect("maker");
                    got
                });
                let a: &Cohort<Life> = a;
                let mut live: HashSet<usize> = kept.iter().map(|o| o.0).collect();
                let mut got = Vec::new();
                let join = by_join.then(|| a.join(1).expect("a join"));
                loop {
                    let p = match &join {
                        Some(j) => j.try_malloc(size, Life::A),
                        None => a.try_malloc(size, Life::A),
                    } as usize;
                    if p == 0 {
                        break;
                    }
                    assert!(live.insert(p), "{what}: {p:#x} handed out while live");
                    got.push(red_team_s22_common::patterned(p, size, 9));
                }
                // The serving heap needs a block of its own at most beyond the slots freed.
                let per_block = (2 << 20) / size;
                assert!(
                    got.len() + per_block >= freed,
                    "{what}: {} of the {freed} freed slots served before null",
                    got.len()
                );
                for o in kept.iter().chain(&got) {
                    check(*o, &what);
                }
                for o in got {
                    // SAFETY: live, `size` bytes of class A, freed once.
                    unsafe {
                        match &join {
                            Some(j) => j.free(o.0 as *mut u8, size, Life::A),
                            None => a.free(o.0 as *mut u8, size, Life::A),
                        }
                    }
                }
                drop(join);
                for o in kept {
                    unmake(a, o, Life::A, &what);
                }
                // SAFETY: no other thread uses `a`.
                let v = unsafe { a.verify() };
                assert!(v.is_ok(), "{what}: verify: {v:?}");
                assert!(a.is_empty(), "{what}: {}", a.stats());
            }
        }
    }
}

/// A producer process killed with SIGKILL while it churns, and while a freer process frees
/// its objects (remote frees, pushed at once onto its blocks' lists), in a region shared
/// with both: the test's process takes both dead heaps over (`verify`), is refused the
/// freer's double free of the slot it freed last, and is then served every free slot once:
/// no fresh object over a kept one, every kept object whole.
#[test]
fn a_killed_owner_amid_remote_frees_then_every_use() {
    for size in [8usize, 64, 1000, 16384] {
        for round in 0..3 {
            let what = format!("size {size}, round {round}");
            let a = Cohort::<Life>::shared_anonymous(128 << 20).expect("shared anonymous");
            let n = count_for(size, 2).min(20_000);
            // Words: 0 objects written, 1 freer's count, 2 the slot freed last, 3.. objects.
            let words = shared_words(n + 3);
            use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
            let producer = in_child(60, || {
                for i in 0..n {
                    let o = make(&a, size, Life::A, i as u8, &what);
                    words[i + 3].store(o.0 as u64, Relaxed);
                }
                words[0].store(n as u64, Release);
                // Churn until killed: its heap's blocks change state all the time.
                loop {
                    let o = make(&a, size, Life::B, 1, &what);
                    unmake(&a, o, Life::B, &what);
                }
            });
            while words[0].load(Acquire) == 0 {
                assert!(
                    red_team_common::ended_unreaped(producer).is_none(),
                    "{what}: producer"
                );
                std::thread::yield_now();
            }
            let freer = in_child(60, || {
                let mut last = 0;
                for i in 0..n {
                    if i % 7 != 3 {
                        let p = words[i + 3].load(Relaxed) as usize;
                        unmake(&a, (p, size, i as u8), Life::A, &what);
                        last = p;
                        words[1].fetch_add(1, Release);
                    }
                }
                words[2].store(last as u64, Release);
            });
            // Killed once the freer is half way.
            while words[1].load(Acquire) < (n / 2) as u64 {
                assert!(
                    red_team_common::ended_unreaped(freer).is_none(),
                    "{what}: freer"
                );
                std::thread::yield_now();
            }
            red_team_common::kill9(producer);
            assert_eq!(wait(freer), Ok(0), "{what}: the freer");
            // SAFETY: no other thread uses the region now; the walk takes the dead heaps over.
            let v = unsafe { a.verify() };
            assert!(v.is_ok(), "{what}: verify after the deaths: {v:?}");
            let x = words[2].load(Acquire) as usize;
            // SAFETY: a double free, refused by try_free (nothing changed).
            let twice = unsafe { a.try_free(x as *mut u8, size, Life::A) };
            assert!(
                twice.is_err(),
                "{what}: the freer's double free of {x:#x}: {twice:?}"
            );
            let kept: Vec<Object> = (0..n)
                .filter(|i| i % 7 == 3)
                .map(|i| (words[i + 3].load(Relaxed) as usize, size, i as u8))
                .collect();
            let mut live: HashSet<usize> = kept.iter().map(|o| o.0).collect();
            let got = fresh(&a, size, n * 2, 77, &mut live, &what);
            for o in &kept {
                check(*o, &what);
            }
            for o in got.into_iter().chain(kept) {
                unmake(&a, o, Life::A, &what);
            }
            // SAFETY: as above.
            let v = unsafe { a.verify() };
            assert!(v.is_ok(), "{what}: verify at the end: {v:?}");
        }
    }
}
