//! Red-team attacks of session 9 on medium allocations (16 KiB to 1 MiB): frees with the
//! size of another medium size, another class, or a pointer inside a run, in every free
//! form; medium allocations, resizes and frees racing `release_class` of another class,
//! `compact`, `stats` and `for_each_block`, in each kind of instance; a process killed -9
//! in the middle of medium work in a region shared with its parent. A test that found a
//! defect is `#[ignore]`d with its number (RED-n), its owner and the exact failure.

mod red_team_common;

use cohort::{Cohort, RegionOptions};
use core::alloc::Layout;
use red_team_common::*;
use std::sync::atomic::Ordering::Relaxed;

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

const MIB: usize = 1 << 20;

/// A xorshift step.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// A medium size: above 16 KiB, at most 1 MiB, odd ones included.
fn medium_size(seed: &mut u64, max: usize) -> usize {
    (16 << 10) + 1 + (next(seed) as usize % (max - (16 << 10)))
}

/// The usable size of `size` bytes at alignment 8.
fn usable(a: &Cohort<Life>, size: usize) -> usize {
    a.usable_size(Layout::from_size_align(size, 8).unwrap())
}

/// The first of the `n` bytes at `p` that is not `byte`, looking at every 61st byte and
/// the last (a debug build checks whole megabytes slowly).
fn holds(p: *const u8, n: usize, byte: u8) -> Option<usize> {
    // SAFETY: the callers pass live allocations of at least n bytes.
    let got = unsafe { std::slice::from_raw_parts(p, n) };
    (0..n)
        .step_by(61)
        .chain(n.checked_sub(1))
        .find(|&i| got[i] != byte)
}

/// Each medium size freed through `try_free` with every wrong size (one whose usable size
/// differs, small, medium and large), the other lifetime class, a pointer inside the run
/// or one byte in: each is an error and leaves the allocation whole; then the right free
/// works, and a second is an error.
fn wrong_frees(a: &Cohort<Life>, what: &str) {
    let sizes = [
        16385,
        20000,
        32768,
        40000,
        100_000,
        262_144,
        600_000,
        MIB - 1,
        MIB,
    ];
    for &s in &sizes {
        let p = a.malloc(s, Life::Short);
        assert!(!p.is_null(), "{what}: malloc({s})");
        // SAFETY: s bytes of ours.
        unsafe { p.write_bytes(0x5c, s) };
        let mut wrong: Vec<usize> = vec![8, 4096, 16384, 2 * MIB, 3 * MIB];
        wrong.extend(sizes.iter().copied());
        wrong.extend([s + 2048, s.saturating_sub(2048), s + 4096, s - s / 3]);
        for w in wrong {
            if w == 0 || usable(a, w) == usable(a, s) {
                continue;
            }
            // SAFETY (of the call): a wrong size is reported and nothing is freed.
            let r = unsafe { a.try_free(p, w, Life::Short) };
            assert!(
                r.is_err(),
                "{what}: a {s}-byte allocation freed as {w} bytes was accepted"
            );
        }
        // SAFETY (of the calls): misuse, reported.
        unsafe {
            assert!(
                a.try_free(p, s, Life::Long).is_err(),
                "{what}: {s} freed as Long"
            );
            for inside in [1, 8, 2048, 4096, (s / 2) & !2047] {
                if inside > 0 && inside < s {
                    assert!(
                        a.try_free(p.add(inside), s - inside, Life::Short).is_err(),
                        "{what}: {s} freed at +{inside}"
                    );
                }
            }
        }
        assert_eq!(
            holds(p, s, 0x5c),
            None,
            "{what}: the {s}-byte allocation after misuse"
        );
        // SAFETY: the allocation, freed once with its size.
        unsafe {
            assert_eq!(
                a.try_free(p, s, Life::Short),
                Ok(()),
                "{what}: the right free of {s}"
            );
            assert!(
                a.try_free(p, s, Life::Short).is_err(),
                "{what}: {s} freed twice"
            );
        }
    }
    assert!(a.is_empty(), "{what}: empty at the end");
}

#[test]
fn medium_frees_with_wrong_sizes_classes_and_pointers_are_misuse_in_every_instance() {
    wrong_frees(&Cohort::<Life>::new(), "private");
    let fixed = Cohort::<Life>::with_options(&RegionOptions::new(64 * MIB)).expect("fixed");
    wrong_frees(&fixed, "fixed");
    let shared = Cohort::<Life>::shared_anonymous(64 * MIB).expect("shared");
    wrong_frees(&shared, "shared-anonymous");
}

/// Two threads allocate, fill, resize (within the medium range and across to small and
/// large) and free medium allocations of class Short, checking their bytes, while a third
/// allocates medium allocations of class Long and releases the class, and a fourth runs
/// `compact`, `stats` and `for_each_block` without pause. Nothing of Short is lost or
/// changed, and the instance ends empty and consistent.
fn churn_beside_release(a: &Cohort<Life>, what: &str) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..2u64)
            .map(|t| {
                let stop = &stop;
                s.spawn(move || {
                    let mut seed = 0x1234_5678_9abc_def1 ^ ((t + 1) * 0x9e37_79b9);
                    let byte = 0x40 + t as u8;
                    let mut live: Vec<(usize, usize)> = Vec::new();
                    for i in 0..400 {
                        let r = next(&mut seed) % 10;
                        if live.len() < 6 && r < 5 {
                            let n = medium_size(&mut seed, MIB);
                            let p = if r == 0 {
                                a.calloc(n, Life::Short)
                            } else {
                                a.malloc(n, Life::Short)
                            };
                            assert!(!p.is_null(), "{what}: malloc({n})");
                            if r == 0 {
                                assert_eq!(holds(p, n, 0), None, "{what}: calloc({n})");
                            }
                            // SAFETY: n bytes of ours.
                            unsafe { p.write_bytes(byte, n) };
                            live.push((p as usize, n));
                        } else if !live.is_empty() {
                            let k = next(&mut seed) as usize % live.len();
                            let (p, n) = live.swap_remove(k);
                            let p = p as *mut u8;
                            assert_eq!(holds(p, n, byte), None, "{what}: {n} bytes at step {i}");
                            if r < 8 {
                                let to = match next(&mut seed) % 4 {
                                    0 => 1 + next(&mut seed) as usize % (16 << 10),
                                    1 => MIB + 1 + next(&mut seed) as usize % MIB,
                                    _ => medium_size(&mut seed, MIB),
                                };
                                // SAFETY: live, n bytes of Short.
                                let q = unsafe { a.remalloc(p, n, to, Life::Short) };
                                assert!(!q.is_null(), "{what}: remalloc {n} -> {to}");
                                assert_eq!(
                                    holds(q, n.min(to), byte),
                                    None,
                                    "{what}: remalloc {n} -> {to} kept"
                                );
                                // SAFETY: to bytes of ours.
                                unsafe { q.write_bytes(byte, to) };
                                live.push((q as usize, to));
                            } else {
                                // SAFETY: live, n bytes of Short, freed once.
                                unsafe { a.free(p, n, Life::Short) };
                            }
                        }
                    }
                    for (p, n) in live {
                        assert_eq!(
                            holds(p as *const u8, n, byte),
                            None,
                            "{what}: {n} bytes at the end"
                        );
                        // SAFETY: live, freed once.
                        unsafe { a.free(p as *mut u8, n, Life::Short) };
                    }
                    let _ = stop;
                })
            })
            .collect();
        s.spawn(|| {
            let mut seed = 0x0bad_cafe_u64;
            while !stop.load(Relaxed) {
                for _ in 0..3 {
                    let n = medium_size(&mut seed, MIB);
                    let p = a.malloc(n, Life::Long);
                    if !p.is_null() {
                        // SAFETY: n bytes of ours.
                        unsafe { p.write_bytes(0xee, n) };
                    }
                }
                // SAFETY: every allocation of Long is this thread's, and dead.
                unsafe { a.release_class(Life::Long) };
            }
        });
        s.spawn(|| {
            while !stop.load(Relaxed) {
                let _ = a.compact();
                let _ = a.stats();
                let mut blocks = 0;
                a.for_each_block(|_| blocks += 1);
            }
        });
        // Stops the two threads however this test ends (a failed worker panics here).
        let stop_threads = StopOnDrop(&stop);
        for w in workers {
            w.join().expect("a worker");
        }
        drop(stop_threads);
    });
    // SAFETY: every allocation of Long is dead (the releasing thread ended).
    unsafe { a.release_class(Life::Long) };
    // SAFETY: no other thread uses the instance.
    let v = unsafe { a.verify() };
    assert!(v.is_ok(), "{what}: {v:?}");
    assert!(
        a.is_empty(),
        "{what}: not empty at the end: {:?}",
        a.stats()
    );
}

#[test]
fn medium_churn_beside_release_class_compact_and_stats_keeps_every_byte() {
    churn_beside_release(&Cohort::<Life>::new(), "private");
    let fixed = Cohort::<Life>::with_options(&RegionOptions::new(128 * MIB)).expect("fixed");
    churn_beside_release(&fixed, "fixed");
    let shared = Cohort::<Life>::shared_anonymous(128 * MIB).expect("shared");
    churn_beside_release(&shared, "shared-anonymous");
}

/// A child process allocates, resizes and frees medium allocations of both classes in a
/// region shared with its parent (keeping at most four of at most 256 KiB) and is killed
/// -9 at a random moment, thirty times; after each kill the parent reaps it, the region
/// verifies, and the parent's own medium allocations work and keep their bytes; at the
/// end, with both classes released, the region is empty.
#[test]
fn a_process_killed_in_the_middle_of_medium_work_leaves_the_region_consistent() {
    isolated(120, |report| {
        let a = Cohort::<Life>::shared_anonymous(256 * MIB).expect("shared");
        let progress = shared_words(1);
        let mut seed = 0xfeed_f00d_u64;
        for round in 0..30 {
            progress[0].store(0, Relaxed);
            let child = in_child_reporting(60, report, || {
                let mut seed = 0x5151_u64 + round;
                let mut live: Vec<(usize, usize, Life)> = Vec::new();
                loop {
                    let life = if next(&mut seed).is_multiple_of(2) {
                        Life::Short
                    } else {
                        Life::Long
                    };
                    if live.len() < 4 {
                        let n = medium_size(&mut seed, 256 << 10);
                        let p = if n.is_multiple_of(3) {
                            a.calloc(n, life)
                        } else {
                            a.malloc(n, life)
                        };
                        assert!(!p.is_null(), "the child's malloc({n})");
                        // SAFETY: n bytes of ours.
                        unsafe { p.write_bytes(0x77, n) };
                        live.push((p as usize, n, life));
                    } else {
                        let (p, n, life) = live.swap_remove(next(&mut seed) as usize % 4);
                        if n.is_multiple_of(2) {
                            let to = medium_size(&mut seed, 256 << 10);
                            // SAFETY: live, n bytes of `life`.
                            let q = unsafe { a.remalloc(p as *mut u8, n, to, life) };
                            assert!(!q.is_null());
                            live.push((q as usize, to, life));
                        } else {
                            // SAFETY: live, freed once.
                            unsafe { a.free(p as *mut u8, n, life) };
                        }
                    }
                    progress[0].fetch_add(1, Relaxed);
                }
            });
            until(
                &progress[0],
                50 + next(&mut seed) % 2000,
                child,
                report,
                "the medium worker",
            );
            kill9(child);
            a.reap_dead_processes();
            // SAFETY: no other process or thread uses the region now.
            if let Err(e) = unsafe { a.verify() } {
                report.fail(&format!("round {round}: verify after kill -9: {e}"));
            }
            let mine: Vec<_> = (0..8)
                .map(|i| {
                    let n = 20_000 + i * 60_000;
                    let p = a.malloc(n, Life::Short);
                    if p.is_null() {
                        report.fail(&format!("round {round}: the parent's malloc({n}) is null"));
                    }
                    // SAFETY: n bytes of ours.
                    unsafe { p.write_bytes(i as u8 + 1, n) };
                    (p, n, i as u8 + 1)
                })
                .collect();
            for (p, n, b) in mine {
                if let Some(at) = holds(p, n, b) {
                    report.fail(&format!(
                        "round {round}: the parent's {n} bytes changed at {at}"
                    ));
                }
                // SAFETY: live, freed once.
                unsafe { a.free(p, n, Life::Short) };
            }
        }
        // What the killed children left is dead: both classes released, nothing is live.
        // SAFETY: no process uses anything of either class any more.
        unsafe {
            a.release_class(Life::Short);
            a.release_class(Life::Long);
        }
        // SAFETY: no other process or thread uses the region now.
        let verified = unsafe { a.verify() };
        if verified.is_err() || !a.is_empty() {
            report.fail(&format!(
                "after 30 kills ({:?}) and the release of both classes: {verified:?}, {:?}",
                a.recoveries(),
                a.stats()
            ));
        }
    });
}

/// Every unit of `a` written with 0xff through large and medium allocations, all freed;
/// then medium `calloc`s (every one read whole) until the region is full or 300 are live,
/// and `recalloc`s that grow a run in place over granules a previous user wrote: every
/// byte past the old size reads zero.
fn medium_zeroes_after_garbage(a: &Cohort<Life>, what: &str) {
    let mut dirty = Vec::new();
    for n in [4 * MIB, 3 * MIB, MIB, 600_000, 100_000, 20_000] {
        // At most 48 MiB written (an unbounded instance never says null).
        while dirty.iter().map(|&(_, n)| n).sum::<usize>() < 48 * MIB {
            let p = a.malloc(n, Life::Long);
            if p.is_null() {
                break;
            }
            // SAFETY: n bytes of ours.
            unsafe { p.write_bytes(0xff, n) };
            dirty.push((p, n));
        }
    }
    for (p, n) in dirty.drain(..) {
        // SAFETY: live, freed once.
        unsafe { a.free(p, n, Life::Long) };
    }
    let mut seed = 0xabcd_u64;
    let mut live = Vec::new();
    while live.len() < 300 {
        let n = medium_size(&mut seed, MIB);
        let p = a.calloc(n, Life::Short);
        if p.is_null() {
            break;
        }
        // SAFETY: n bytes of ours.
        let bytes = unsafe { std::slice::from_raw_parts(p, n) };
        let bad = bytes.iter().position(|&b| b != 0);
        assert_eq!(bad, None, "{what}: calloc({n}) #{} at {p:p}", live.len());
        live.push((p, n));
    }
    assert!(live.len() > 8, "{what}: only {} medium callocs", live.len());
    for (p, n) in live.drain(..) {
        // SAFETY: live, freed once.
        unsafe { a.free(p, n, Life::Short) };
    }
    // A run freed dirty, taken again smaller, grown in place by recalloc.
    for (old, new) in [
        (20_000, 60_000),
        (17_000, 18_000),
        (300_000, 1 << 20),
        (40_961, 40_962),
    ] {
        let p = a.malloc(new, Life::Short);
        assert!(!p.is_null());
        // SAFETY: new bytes of ours.
        unsafe { p.write_bytes(0xcd, new) };
        // SAFETY: live, freed once.
        unsafe { a.free(p, new, Life::Short) };
        let q = a.malloc(old, Life::Short);
        assert!(!q.is_null());
        // SAFETY: old bytes of ours.
        unsafe { q.write_bytes(0x11, old) };
        // SAFETY: live, old bytes of Short.
        let r = unsafe { a.recalloc(q, old, new, Life::Short) };
        assert!(!r.is_null());
        // SAFETY: new bytes of ours.
        let bytes = unsafe { std::slice::from_raw_parts(r, new) };
        assert!(
            bytes[..old].iter().all(|&b| b == 0x11),
            "{what}: recalloc {old} -> {new} kept"
        );
        let bad = bytes[old..].iter().position(|&b| b != 0);
        assert_eq!(
            bad.map(|i| i + old),
            None,
            "{what}: recalloc {old} -> {new} (in place: {})",
            r == q
        );
        // SAFETY: live, freed once.
        unsafe { a.free(r, new, Life::Short) };
    }
    assert!(a.is_empty(), "{what}: empty at the end");
}

#[test]
fn medium_zeroing_forms_read_zero_in_every_region_after_garbage() {
    medium_zeroes_after_garbage(&Cohort::<Life>::new(), "private");
    for (options, what) in [
        (RegionOptions::new(32 * MIB), "fixed"),
        (RegionOptions::new(32 * MIB).commit(true), "committed"),
        (RegionOptions::new(32 * MIB).prefault(true), "prefaulted"),
    ] {
        let a = Cohort::<Life>::with_options(&options).expect(what);
        medium_zeroes_after_garbage(&a, what);
    }
    let shared = Cohort::<Life>::shared_anonymous(32 * MIB).expect("shared");
    medium_zeroes_after_garbage(&shared, "shared-anonymous");
    let f = Cohort::<Life>::footprint(32 * MIB).expect("footprint");
    let mem = aligned_anonymous(f.bytes, f.align, true);
    // SAFETY: the aligned part of the mapping: garbage before it is formatted.
    unsafe { mem.write_bytes(0xa5, f.bytes) };
    // SAFETY: f.bytes of memory nobody uses, aligned, this region's for the process.
    let caller = unsafe { Cohort::<Life>::format_in(mem, f.bytes, &RegionOptions::new(32 * MIB)) }
        .expect("format_in");
    medium_zeroes_after_garbage(&caller, "caller memory");
    core::mem::forget(caller);
}

/// `free_unsized` (sizes found from the address) of a pointer inside a medium allocation,
/// of a freed one, and twice: each is an error or the process aborts with its message,
/// never a free; `allocation_at` finds nothing inside a run. Each case runs in a child
/// (an abort is one of the two right answers).
#[test]
fn unsized_frees_inside_or_after_a_medium_allocation_never_free() {
    let a = Cohort::<Life>::new();
    for (case, size) in [(0, 100_000), (1, 100_000), (2, 40_000), (3, MIB)] {
        let report = Report::new();
        let child = in_child_reporting(10, &report, || {
            let p = a.malloc(size, Life::Short);
            assert!(!p.is_null());
            // SAFETY: size bytes of ours.
            unsafe { p.write_bytes(0x6d, size) };
            // SAFETY (of the calls): misuse, reported (Err) or aborting; never a free.
            let r = unsafe {
                match case {
                    0 => a.free_unsized(p.add(2048)),
                    1 => a.free_unsized(p.add(4096)),
                    2 => {
                        a.free_unsized(p).expect("the right unsized free");
                        a.free_unsized(p)
                    }
                    _ => a.free_unsized(p.add((size / 2) & !2047)),
                }
            };
            assert!(r.is_err(), "case {case}: the misuse freed something");
            if case != 2 {
                assert_eq!(a.allocation_at(p.wrapping_add(2048)), None, "inside a run");
                let q = a.malloc(size, Life::Short);
                assert_ne!(q, p.wrapping_add(2048), "handed out inside a live run");
                assert_eq!(holds(p, size, 0x6d), None, "case {case}: changed");
            }
        });
        let ended = wait(child);
        assert!(
            ended == Ok(0) || ended == Err(libc::SIGABRT),
            "case {case}: {ended:?}: {}",
            report.message()
        );
    }
}

/// Medium allocations in a file region: a child process allocates them (every medium size
/// class of granules, both lifetime classes), fills them and leaves; the parent opens the
/// region, finds every byte, resizes some in place and across, frees all, leaves; the
/// region opens again (its seal holds), verifies and is empty.
#[test]
fn medium_allocations_in_a_file_region_cross_processes_and_leaves() {
    use cohort::{CreateOptions, OpenOptions, Place, SharedCohort};
    let path = std::env::temp_dir().join(format!("cohort-red9-medium-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let place = Place::File(&path);
    let open = || SharedCohort::<Life>::open(place, OpenOptions::new()).expect("open");
    SharedCohort::<Life>::create(place, CreateOptions::new(160 * MIB))
        .expect("create")
        .leave()
        .expect("leave");
    const N: usize = 40;
    let offs = shared_words(N);
    let report = Report::new();
    let child = in_child_reporting(30, &report, || {
        let r = open();
        for (i, w) in offs.iter().enumerate() {
            let n = (16 << 10) + 1 + i * 26_000;
            let life = if i % 3 == 0 { Life::Long } else { Life::Short };
            let p = r.malloc(n, life);
            assert!(!p.is_null(), "the child's malloc({n})");
            // SAFETY: n bytes of ours.
            unsafe { p.write_bytes(i as u8 + 1, n) };
            w.store(r.offset_of(p).expect("in the region").get(), Relaxed);
        }
        r.leave().expect("the child's leave");
    });
    let ended = wait(child);
    assert_eq!(ended, Ok(0), "{}", report.message());
    let r = open();
    for (i, w) in offs.iter().enumerate() {
        let n = (16 << 10) + 1 + i * 26_000;
        let life = if i % 3 == 0 { Life::Long } else { Life::Short };
        let off = cohort::Off::<u8>::new(w.load(Relaxed)).expect("an offset");
        let p = r.ptr(off);
        assert_eq!(holds(p, n, i as u8 + 1), None, "object {i} of {n} B");
        let to = match i % 4 {
            0 => n + 2048,
            1 => n / 2 + (16 << 10),
            2 => 100,
            _ => n,
        };
        // SAFETY: live, n bytes of `life`, made by the child.
        let q = unsafe { r.remalloc(p, n, to, life) };
        assert!(!q.is_null());
        assert_eq!(
            holds(q, n.min(to), i as u8 + 1),
            None,
            "object {i} resized {n} -> {to}"
        );
        // SAFETY: live, freed once.
        unsafe { r.free(q, to, life) };
    }
    r.leave().expect("leave");
    let r = open();
    // SAFETY: nobody else has the region open.
    let v = unsafe { r.verify() };
    let empty = r.is_empty();
    r.destroy().expect("destroy");
    assert!(v.is_ok() && empty, "{v:?}, empty: {empty}");
}

/// Medium runs freed by one thread (kept in its heap's cache, if it has one) while the
/// main thread releases their lifetime class, compacts, and allocates runs of the same
/// lengths and class; the first thread then allocates those lengths again: no run is
/// handed out twice, no byte changes; and two threads freeing the same run at once: exactly
/// one free happens, the other is misuse. The instance ends empty and consistent.
#[test]
fn medium_runs_freed_by_other_threads_around_a_release_stay_apart() {
    let owned = Cohort::<Life>::new();
    let a = &owned;
    let sizes = [20_000, 32 * 1024, 40_000, 64 * 1024];
    let runs: Vec<(usize, usize)> = (0..32)
        .map(|i| {
            let n = sizes[i % sizes.len()];
            (a.malloc(n, Life::Short) as usize, n)
        })
        .collect();
    let (go_tx, go) = std::sync::mpsc::channel::<()>();
    let (freed_tx, freed) = std::sync::mpsc::channel::<()>();
    let (done_tx, done) = std::sync::mpsc::channel::<Vec<(usize, usize)>>();
    std::thread::scope(|s| {
        s.spawn(move || {
            // A heap of this thread's own first.
            let mine = a.malloc(100, Life::Long);
            for &(p, n) in &runs {
                // SAFETY: the main thread's runs, handed over, freed once.
                unsafe { a.free(p as *mut u8, n, Life::Short) };
            }
            freed_tx.send(()).expect("freed");
            go.recv().expect("go");
            // The same lengths again (a cache, if any, serves them).
            let again: Vec<(usize, usize)> = runs
                .iter()
                .map(|&(_, n)| {
                    let q = a.malloc(n, Life::Short);
                    assert!(!q.is_null());
                    // SAFETY: n bytes of ours.
                    unsafe { q.write_bytes(0x5a, n) };
                    (q as usize, n)
                })
                .collect();
            // SAFETY: allocated above, freed once.
            unsafe { a.free(mine, 100, Life::Long) };
            done_tx.send(again).expect("done");
        });
        freed.recv().expect("freed");
        // SAFETY: every Short allocation is dead (freed by the other thread), and no thread
        // allocates or frees in Short while this runs.
        unsafe { a.release_class(Life::Short) };
        // Free pages go back (a purge must leave runs another heap keeps alone).
        let _ = a.compact();
        let mains: Vec<(usize, usize)> = (0..64)
            .map(|i| {
                let n = sizes[i % sizes.len()];
                let q = a.malloc(n, Life::Short);
                assert!(!q.is_null());
                // SAFETY: n bytes of ours.
                unsafe { q.write_bytes(0xa5, n) };
                (q as usize, n)
            })
            .collect();
        go_tx.send(()).expect("go");
        let again = done.recv().expect("done");
        let mut all: Vec<(usize, usize)> = mains.iter().chain(&again).copied().collect();
        all.sort();
        for w in all.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "overlapping medium runs: {w:x?}");
        }
        for &(q, n) in &mains {
            assert_eq!(
                holds(q as *const u8, n, 0xa5),
                None,
                "a run of the main thread changed"
            );
            // SAFETY: live, freed once.
            unsafe { a.free(q as *mut u8, n, Life::Short) };
        }
        for &(q, n) in &again {
            assert_eq!(
                holds(q as *const u8, n, 0x5a),
                None,
                "a run of the other thread changed"
            );
        }
        // Two threads free each run at once: one free, one misuse report.
        for (q, n) in again {
            let outcomes: Vec<bool> = std::thread::scope(|s2| {
                let racers: Vec<_> = (0..2)
                    .map(|_| {
                        s2.spawn(move || {
                            // SAFETY (of the call): at most one of the two frees is right;
                            // the other is misuse, reported without a change.
                            unsafe { a.try_free(q as *mut u8, n, Life::Short) }.is_ok()
                        })
                    })
                    .collect();
                racers
                    .into_iter()
                    .map(|r| r.join().expect("a racer"))
                    .collect()
            });
            let freed = outcomes.iter().filter(|&&ok| ok).count();
            assert_eq!(
                freed, 1,
                "a {n}-byte run freed by two threads at once: {outcomes:?}"
            );
        }
    });
    // SAFETY: no other thread uses the instance.
    let v = unsafe { a.verify() };
    assert!(v.is_ok(), "{v:?}");
    assert!(a.is_empty(), "{:?}", a.stats());
}
