//! Red-team attacks of session 17 on medium allocations (above 16 KiB up to 1 MiB) that
//! resize and churn, the paths that move or recycle their pages: random `remalloc`,
//! `recalloc` and `realloc_unsized` sequences across small, medium and large sizes, with
//! frees and allocations between them, on a default instance and in a small fixed region
//! (out of memory on the way: a failed resize keeps the old allocation); the same with the
//! objects handed between threads (resizes of another thread's medium runs); fork children
//! resizing what they inherited; a process whose address space limit (`RLIMIT_AS`) leaves
//! little room. Every object keeps its bytes: a word at every 4 KiB of it and its last word
//! are its own (a page moved to the wrong place, or not moved, shows); a `recalloc`'s
//! growth reads zero; the instance verifies and ends empty. A test that found a defect is
//! `#[ignore]`d with its number (RED-n), its owner and the exact failure.

mod red_team_common;

use cohort::{Cohort, RegionOptions};
use red_team_common::{in_child, wait};
use std::sync::mpsc;
use test_support::Rng;

cohort::lifetime_classes! { enum Life { A, B } }

const MIB: usize = 1 << 20;
const PAGE: usize = 4096;

/// The word at byte `at` (a multiple of 8) of the object with `seed`.
fn word(seed: u64, at: usize) -> u64 {
    test_support::mix(seed ^ (at as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// The offsets of an object of `size` bytes that carry its pattern: every 4 KiB, and its
/// last whole word.
fn marks(size: usize) -> impl Iterator<Item = usize> {
    let last = (size / 8).saturating_sub(1) * 8;
    (0..size / 8 * 8)
        .step_by(PAGE)
        .chain((size >= 8).then_some(last))
}

/// Writes the pattern of `seed` into `p` (`size` bytes).
fn stamp(p: *mut u8, size: usize, seed: u64) {
    for at in marks(size) {
        // SAFETY: inside the object, 8-aligned (objects here are at least 8-aligned).
        unsafe { p.add(at).cast::<u64>().write(word(seed, at)) };
    }
}

/// The first mark of an object of `size` bytes at `p` that is not `seed`'s.
fn stamped(p: *mut u8, size: usize, seed: u64) -> Result<(), String> {
    stamped_below(p, size, seed, size)
}

/// [`stamped`] for the marks below `limit` only (what a resize to `limit` bytes keeps).
fn stamped_below(p: *mut u8, size: usize, seed: u64, limit: usize) -> Result<(), String> {
    for at in marks(size).filter(|&at| at + 8 <= limit) {
        // SAFETY: as in `stamp`.
        let got = unsafe { p.add(at).cast::<u64>().read() };
        if got != word(seed, at) {
            return Err(format!(
                "{p:p} ({size} B, seed {seed}): word at {at:#x} is {got:#x}, not {:#x}",
                word(seed, at)
            ));
        }
    }
    Ok(())
}

/// `[from, to)` of `p` reads zero, sampled every 256 bytes and at its ends.
fn zeroed(p: *mut u8, from: usize, to: usize) -> Result<(), String> {
    let sample = (from..to).step_by(256).chain((to > from).then_some(to - 1));
    for at in sample {
        // SAFETY: inside the object.
        let b = unsafe { p.add(at).read() };
        if b != 0 {
            return Err(format!(
                "{p:p}: byte {at:#x} of a recalloc's growth {from:#x}..{to:#x} is {b:#x}"
            ));
        }
    }
    Ok(())
}

/// A live object.
#[derive(Clone, Copy, Debug)]
struct Obj {
    p: usize,
    size: usize,
    life: usize,
    seed: u64,
}

fn life(i: usize) -> Life {
    [Life::A, Life::B][i]
}

/// A size mostly medium, sometimes small or large, sometimes on a granule or page edge.
fn size(rng: &mut Rng) -> usize {
    match rng.below(10) {
        0 => rng.range(1, 16 << 10),
        1 => MIB + rng.range(1, 3 * MIB),
        2 => (16 << 10) + 1,
        3 => MIB,
        4 => rng.range(1, 256) * PAGE,
        _ => rng.range((16 << 10) + 1, MIB + 1),
    }
}

/// One step of the churn on `objs`: allocate, free, or resize a random object (by
/// `remalloc`, `recalloc` or `realloc_unsized`). Checks what it touches.
fn step(
    a: &Cohort<Life>,
    rng: &mut Rng,
    objs: &mut Vec<Obj>,
    seed: &mut u64,
) -> Result<(), String> {
    *seed += 1;
    let op = if objs.is_empty() { 0 } else { rng.below(6) };
    match op {
        0 | 1 => {
            let (n, li) = (size(rng), rng.below(2));
            let zero = rng.chance(30);
            let p = if zero {
                a.calloc(n, life(li))
            } else {
                a.malloc(n, life(li))
            };
            if !p.is_null() {
                if zero {
                    zeroed(p, 0, n)?;
                }
                stamp(p, n, *seed);
                objs.push(Obj {
                    p: p as usize,
                    size: n,
                    life: li,
                    seed: *seed,
                });
            }
        }
        2 => {
            let o = objs.swap_remove(rng.below(objs.len()));
            stamped(o.p as *mut u8, o.size, o.seed)?;
            // SAFETY: live, freed once, with its size and class.
            unsafe { a.free(o.p as *mut u8, o.size, life(o.life)) };
        }
        _ => {
            let i = rng.below(objs.len());
            let o = objs[i];
            stamped(o.p as *mut u8, o.size, o.seed)?;
            let n = size(rng);
            let how = rng.below(3);
            // SAFETY: live, resized once, with its size and class.
            let q = unsafe {
                match how {
                    0 => a.remalloc(o.p as *mut u8, o.size, n, life(o.life)),
                    1 => a.recalloc(o.p as *mut u8, o.size, n, life(o.life)),
                    _ => a
                        .realloc_unsized(o.p as *mut u8, n, n.next_power_of_two().min(PAGE))
                        .map_err(|m| format!("realloc_unsized of {o:?}: {m}"))?,
                }
            };
            if q.is_null() {
                // Out of memory: the old one stays as it was.
                return stamped(o.p as *mut u8, o.size, o.seed);
            }
            stamped_below(q, o.size, o.seed, n)
                .map_err(|e| format!("after resizing {o:?} to {n} (how {how}) at {q:p}: {e}"))?;
            if how == 1 && n > o.size {
                zeroed(q, o.size, n)?;
            }
            // realloc_unsized keeps the class the allocation had; with malloc's alignment
            // for its size, it is freed as a malloc of that size.
            stamp(q, n, *seed);
            objs[i] = Obj {
                p: q as usize,
                size: n,
                life: o.life,
                seed: *seed,
            };
        }
    }
    Ok(())
}

/// Checks and frees every object.
fn free_all(a: &Cohort<Life>, objs: Vec<Obj>) -> Result<(), String> {
    let mut first = Ok(());
    for o in objs {
        first = first.and(stamped(o.p as *mut u8, o.size, o.seed));
        // SAFETY: live, freed once.
        unsafe { a.free(o.p as *mut u8, o.size, life(o.life)) };
    }
    first
}

/// `steps` steps of churn with at most `live` objects, then everything freed; the
/// instance verifies and is empty.
fn churn(a: &Cohort<Life>, seed: u64, steps: usize, live: usize) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let mut objs = Vec::new();
    let mut s = seed << 32;
    for _ in 0..steps {
        step(a, &mut rng, &mut objs, &mut s)?;
        while objs.len() > live {
            let o = objs.swap_remove(rng.below(objs.len()));
            stamped(o.p as *mut u8, o.size, o.seed)?;
            // SAFETY: live, freed once.
            unsafe { a.free(o.p as *mut u8, o.size, life(o.life)) };
        }
    }
    free_all(a, objs)
}

fn settled(a: &Cohort<Life>, what: &str) {
    // SAFETY: no other thread uses the instance now.
    unsafe { a.verify() }.unwrap_or_else(|e| panic!("{what}: verify: {e}"));
    assert!(a.is_empty(), "{what}: not empty: {}", a.stats());
}

#[test]
fn medium_resizes_keep_every_page_in_place_on_a_default_instance() {
    let a: Cohort<Life> = Cohort::new();
    for seed in 1..=4 {
        churn(&a, seed, 3000, 40).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
    settled(&a, "default");
}

/// In a region of 24 MiB the churn runs out of memory now and then (large sizes are runs
/// of its units there).
#[test]
fn medium_resizes_keep_every_page_in_place_in_a_full_region() {
    let a: Cohort<Life> = Cohort::with_options(&RegionOptions::new(24 * MIB)).expect("region");
    for seed in 11..=14 {
        churn(&a, seed, 3000, 40).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
    settled(&a, "region");
    let r: Cohort<Life> = Cohort::with_reservation(24 * MIB);
    for seed in 21..=22 {
        churn(&r, seed, 3000, 40).unwrap_or_else(|e| panic!("reservation, seed {seed}: {e}"));
    }
    settled(&r, "reservation");
}

/// Three threads churn, each handing a third of what it holds to the next, which resizes
/// and frees it (resizes of another thread's runs, its cache's among them).
#[test]
fn medium_resizes_of_other_threads_objects_keep_every_page() {
    // A default instance (a private reservation: its free medium pages may move into the
    // runs other threads take) and a region of fixed capacity.
    threads_resize(&Cohort::new(), "default");
    threads_resize(
        &Cohort::with_options(&RegionOptions::new(64 * MIB)).expect("region"),
        "region",
    );
}

fn threads_resize(a: &Cohort<Life>, what: &str) {
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..3).map(|_| mpsc::channel::<Vec<Obj>>()).unzip();
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = rxs
            .into_iter()
            .enumerate()
            .map(|(t, rx)| {
                let tx = txs[(t + 1) % 3].clone();
                s.spawn(move || {
                    let mut rng = Rng::new(100 + t as u64);
                    let mut objs = Vec::new();
                    let mut seed = (t as u64 + 1) << 40;
                    for round in 0..40 {
                        for _ in 0..60 {
                            step(a, &mut rng, &mut objs, &mut seed)?;
                        }
                        let give = objs.split_off(objs.len() * 2 / 3);
                        let _ = tx.send(give);
                        if round > 0 {
                            if let Ok(got) = rx.recv() {
                                objs.extend(got);
                            }
                        }
                        while objs.len() > 30 {
                            let o = objs.swap_remove(rng.below(objs.len()));
                            stamped(o.p as *mut u8, o.size, o.seed)?;
                            // SAFETY: live, freed once.
                            unsafe { a.free(o.p as *mut u8, o.size, life(o.life)) };
                        }
                    }
                    drop(tx);
                    while let Ok(got) = rx.recv() {
                        objs.extend(got);
                    }
                    free_all(a, objs)
                })
            })
            .collect();
        drop(txs);
        handles
            .into_iter()
            .map(|h| h.join().expect("a thread"))
            .collect()
    });
    for (t, r) in results.into_iter().enumerate() {
        r.unwrap_or_else(|e| panic!("{what}, thread {t}: {e}"));
    }
    settled(a, what);
}

/// Fork children of a process in the middle of its churn: each child checks and resizes
/// what it inherited, churns on, frees everything and verifies.
#[test]
fn fork_children_resize_the_medium_objects_they_inherit() {
    // A default instance (its parent moves pages between forks; a child does not) and a
    // region of fixed capacity.
    fork_resize(&Cohort::new(), "default");
    fork_resize(
        &Cohort::with_options(&RegionOptions::new(48 * MIB)).expect("region"),
        "region",
    );
}

fn fork_resize(a: &Cohort<Life>, what: &str) {
    let mut rng = Rng::new(7);
    let mut objs = Vec::new();
    let mut seed = 1 << 50;
    let mut failed = Vec::new();
    for i in 0..20 {
        for _ in 0..100 {
            step(a, &mut rng, &mut objs, &mut seed).unwrap();
        }
        let inherited = objs.clone();
        let pid = in_child(60, || {
            let mut rng = Rng::new(1000 + i);
            let mut objs = inherited;
            let mut seed = (1 << 51) + (i << 20);
            for _ in 0..300 {
                step(a, &mut rng, &mut objs, &mut seed).unwrap();
            }
            free_all(a, objs).unwrap();
            // SAFETY: the child has one thread.
            unsafe { a.verify() }.expect("verify in the child");
        });
        let ended = wait(pid);
        if ended != Ok(0) {
            failed.push(format!("{what}, child {i}: {ended:?}"));
        }
    }
    free_all(a, objs).unwrap();
    settled(a, what);
    assert!(
        failed.is_empty(),
        "{failed:#?} (Ok: exit code, 1 a panic; Err: signal)"
    );
}

/// Under an address space limit a little above what the process maps, medium resizes that
/// need new address space fail cleanly (null, the old allocation kept) or succeed.
#[test]
fn medium_resizes_under_an_address_space_limit_fail_cleanly() {
    let pid = in_child(120, || {
        let a: Cohort<Life> = Cohort::with_reservation(256 * MIB);
        let first = a.malloc(64, Life::A);
        assert!(!first.is_null());
        // The limit: what is mapped now plus 64 MiB.
        let vm = std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| {
                l.strip_prefix("VmSize:")
                    .map(|v| v.trim().trim_end_matches(" kB").parse::<u64>().unwrap())
            })
            .unwrap();
        let limit = vm * 1024 + 64 * MIB as u64;
        let rl = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        // SAFETY: a valid rlimit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) }, 0);
        churn(&a, 77, 3000, 60).unwrap();
        let c: Cohort<Life> = Cohort::new();
        churn(&c, 78, 3000, 60).unwrap();
        // SAFETY: allocated above, freed once.
        unsafe { a.free(first, 64, Life::A) };
        // SAFETY: one thread.
        unsafe { a.verify() }.expect("verify");
    });
    assert_eq!(
        wait(pid),
        Ok(0),
        "the child under RLIMIT_AS failed (Ok(1): a panic, above)"
    );
}
