//! Red-team attacks of session 17 on a full region's claims: a thread out of memory takes
//! what other live heaps keep free (their returned blocks other threads' frees emptied,
//! their medium caches) while those heaps' owners run. Every object a thread holds keeps
//! the pattern it wrote, none is handed out twice, and the region verifies and ends empty,
//! whatever the claimers meet: an owner waking up mid-claim (its slow paths, its medium
//! cache, its frees), two claimers at once, owners exiting, fork children. A test that
//! found a defect is `#[ignore]`d with its number (RED-n), its owner and the exact failure.
//!
//! Each run is bound by rounds, not time; the region is small (a few blocks beyond what the
//! threads hold), so claims happen throughout.

#[path = "red_team_common/mod.rs"]
mod red_team_common;

use cohort::{Cohort, RegionOptions};
use red_team_common::{in_child, wait, yield_until, CountOnDrop, StopOnDrop};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;

cohort::lifetime_classes! { enum Life { A, B } }

const MIB: usize = 1 << 20;
const SMALL: usize = 64;
const MEDIUM: usize = 32 << 10;

/// The word object `p` of `size` bytes holds at word `i`: its address and owner tag mixed.
fn word(p: usize, tag: u64, i: usize) -> u64 {
    (p as u64 ^ tag.rotate_left(17)).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i as u64
}

/// Writes the pattern of `(p, tag)` into the first and last 64 bytes of the object (all of
/// a small one).
fn fill(p: *mut u8, size: usize, tag: u64) {
    let words = size / 8;
    for i in (0..8).chain(words.saturating_sub(8)..words) {
        // SAFETY: a live object of `size` bytes, 8-aligned.
        unsafe { p.cast::<u64>().add(i).write(word(p as usize, tag, i)) };
    }
}

/// Checks the pattern `fill` wrote; the first differing word, if any.
fn check(p: *mut u8, size: usize, tag: u64) -> Result<(), String> {
    let words = size / 8;
    for i in (0..8).chain(words.saturating_sub(8)..words) {
        // SAFETY: as in `fill`.
        let got = unsafe { p.cast::<u64>().add(i).read() };
        if got != word(p as usize, tag, i) {
            return Err(format!(
                "object {p:p} ({size} B, tag {tag}): word {i} is {got:#x}, not {:#x}",
                word(p as usize, tag, i)
            ));
        }
    }
    Ok(())
}

/// An object a thread holds.
#[derive(Clone, Copy)]
struct Held {
    p: usize,
    size: usize,
    life: usize,
    tag: u64,
}

fn life(i: usize) -> Life {
    if i == 0 {
        Life::A
    } else {
        Life::B
    }
}

/// Checks and frees `objects` through `a`; the first broken pattern, if any.
fn check_and_free(a: &Cohort<Life>, objects: Vec<Held>) -> Result<(), String> {
    let mut first = Ok(());
    for o in objects {
        if let Err(e) = check(o.p as *mut u8, o.size, o.tag) {
            first = first.and(Err(e));
        }
        // SAFETY: allocated with this size and class, freed once.
        unsafe { a.free(o.p as *mut u8, o.size, life(o.life)) };
    }
    first
}

/// Allocates up to `n` objects of `size` in class `life_index`, tagged `tag`, until null.
fn take(a: &Cohort<Life>, n: usize, size: usize, life_index: usize, tag: u64) -> Vec<Held> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        let p = a.malloc(size, life(life_index));
        if p.is_null() {
            break;
        }
        fill(p, size, tag);
        got.push(Held {
            p: p as usize,
            size,
            life: life_index,
            tag,
        });
    }
    got
}

/// What a scenario found: broken objects (or other failures) and how many allocations
/// got null (a scenario with none never claimed).
#[derive(Default)]
struct Found {
    broken: Vec<String>,
    nulls: u64,
}

/// An owner's rounds: fills a block's worth of small objects and more (its blocks retire
/// full), hands them to its freer and idles until they are freed (its returned stack holds
/// blocks other threads emptied: a claimer may take them), frees medium objects into its
/// cache and idles again (a claimer may flush it); every `wake`-th round it works instead
/// of idling, allocating and freeing on its own while the claimers run.
fn owner(
    a: &Cohort<Life>,
    tag: u64,
    rounds: usize,
    to_freer: mpsc::Sender<Vec<Held>>,
    freed: mpsc::Receiver<Result<(), String>>,
    nulls: &AtomicU64,
) -> Result<(), String> {
    for round in 0..rounds {
        let li = round % 2;
        let batch = take(a, 40_000, SMALL, li, tag + round as u64);
        nulls.fetch_add(u64::from(batch.len() < 40_000), Ordering::Relaxed);
        to_freer.send(batch).map_err(|e| e.to_string())?;
        // Meanwhile: a medium object or two, freed into the cache, and own small ones.
        let mediums = take(a, 3, MEDIUM, li, tag + 1000 + round as u64);
        let own = take(a, 500, SMALL, 1 - li, tag + 2000 + round as u64);
        check_and_free(a, mediums)?;
        if round % 3 == 0 {
            check_and_free(a, own)?;
            freed.recv().map_err(|e| e.to_string())??;
        } else {
            freed.recv().map_err(|e| e.to_string())??;
            check_and_free(a, own)?;
        }
    }
    Ok(())
}

/// The freer: checks and frees every batch it gets (remote frees), then says so.
fn freer(
    a: &Cohort<Life>,
    batches: mpsc::Receiver<Vec<Held>>,
    done: mpsc::Sender<Result<(), String>>,
) {
    for batch in batches {
        let r = check_and_free(a, batch);
        if done.send(r).is_err() {
            return;
        }
    }
}

/// A claimer: allocates small and medium objects until null (its out-of-memory path
/// claims), checks them, frees them; `rounds` times.
fn claimer(a: &Cohort<Life>, tag: u64, rounds: usize, nulls: &AtomicU64) -> Result<(), String> {
    for round in 0..rounds {
        let li = round % 2;
        // More than the largest region here holds (20 MiB): every round ends at a null,
        // whatever the other threads hold then.
        let (size, n) = if round % 4 == 3 {
            (MEDIUM, 800)
        } else {
            (SMALL, 400_000)
        };
        let got = take(a, n, size, li, tag + round as u64);
        nulls.fetch_add(u64::from(got.len() < n), Ordering::Relaxed);
        check_and_free(a, got)?;
    }
    Ok(())
}

/// `owners` owner/freer pairs and `claimers` claimers in a region of `capacity`; with
/// `exits`, each owner is a new thread every round (it exits with blocks on its stack and
/// runs in its cache). Returns what they found; checks the region after.
fn scenario(capacity: usize, owners: usize, claimers: usize, rounds: usize, exits: bool) -> Found {
    let a: Cohort<Life> = Cohort::with_options(&RegionOptions::new(capacity)).expect("region");
    let nulls = AtomicU64::new(0);
    let mut found = Found::default();
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for c in 0..claimers {
            let (a, nulls) = (&a, &nulls);
            handles.push(s.spawn(move || claimer(a, 1_000_000 * (c as u64 + 1), rounds, nulls)));
        }
        for o in 0..owners {
            let (a, nulls) = (&a, &nulls);
            handles.push(s.spawn(move || {
                let tag = 100_000_000 * (o as u64 + 1);
                let (per_round, repeats) = if exits { (1, rounds) } else { (rounds, 1) };
                for r in 0..repeats {
                    let (to_freer, batches) = mpsc::channel();
                    let (done, freed) = mpsc::channel();
                    let result = std::thread::scope(|s| {
                        s.spawn(|| freer(a, batches, done));
                        s.spawn(|| {
                            owner(
                                a,
                                tag + 10_000 * r as u64,
                                per_round,
                                to_freer,
                                freed,
                                nulls,
                            )
                        })
                        .join()
                        .expect("owner thread")
                    });
                    result?;
                }
                Ok(())
            }));
        }
        for h in handles {
            if let Err(e) = h.join().expect("a thread panicked") {
                found.broken.push(e);
            }
        }
    });
    found.nulls = nulls.load(Ordering::Relaxed);
    // SAFETY: every thread that used the region has ended.
    if let Err(e) = unsafe { a.verify() } {
        found.broken.push(format!("verify: {e}"));
    }
    if !a.is_empty() {
        found
            .broken
            .push(format!("not empty at the end: {}", a.stats()));
    }
    found
}

fn assert_sound(found: Found, what: &str) {
    assert!(found.broken.is_empty(), "{what}: {:#?}", found.broken);
    assert!(
        found.nulls > 0,
        "{what}: no allocation got null: the region never filled"
    );
}

/// An owner waking up mid-claim: one owner (idle while its freer frees, working every third
/// round while the claimer runs) and one claimer.
#[test]
fn an_owner_waking_mid_claim_keeps_every_object_whole() {
    assert_sound(
        scenario(16 * MIB, 1, 1, 24, false),
        "one owner, one claimer",
    );
}

/// Two claimers at once, against two owners.
#[test]
fn two_claimers_at_once_keep_every_object_whole() {
    assert_sound(
        scenario(20 * MIB, 2, 2, 16, false),
        "two owners, two claimers",
    );
}

/// Owners exiting (each round a new owner thread, which exits with blocks on its returned
/// stack and runs in its medium cache) while two claimers claim.
#[test]
fn owners_exiting_mid_claim_keep_every_object_whole() {
    assert_sound(
        scenario(16 * MIB, 2, 2, 16, true),
        "exiting owners, two claimers",
    );
}

/// Fork children taken while an owner idles with emptied blocks and a claimer claims: each
/// child (one thread: the forking one) fills the region itself (its out-of-memory path
/// claims from its copies of the parent's heaps), checks and frees what it got, and
/// verifies.
#[test]
fn fork_children_amid_claims_verify() {
    let a: Cohort<Life> = Cohort::with_options(&RegionOptions::new(16 * MIB)).expect("region");
    let nulls = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let claimer_rounds = AtomicU64::new(0);
    let mut failures = Vec::new();
    std::thread::scope(|s| {
        let (a, nulls, stop, claimer_rounds) = (&a, &nulls, &stop, &claimer_rounds);
        let c = s.spawn(move || {
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                let claimed = claimer(a, 5_000_000 + round, 1, nulls);
                claimer_rounds.fetch_add(1, Ordering::SeqCst);
                claimed?;
                round += 1;
            }
            Ok::<(), String>(())
        });
        let o = s.spawn(move || {
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                let (to_freer, batches) = mpsc::channel();
                let (done, freed) = mpsc::channel();
                std::thread::scope(|s| {
                    s.spawn(|| freer(a, batches, done));
                    owner(a, 900_000_000 + round * 100, 2, to_freer, freed, nulls)
                })?;
                round += 1;
            }
            Ok::<(), String>(())
        });
        // Stops the claimer and the owner however this test ends (a failed fork or a
        // failed thread panics here).
        let stop_threads = StopOnDrop(stop);
        for i in 0..40 {
            let pid = in_child(60, || {
                let got = take(a, 400_000, SMALL, i % 2, 7_000_000 + i as u64);
                assert!(got.len() < 400_000, "the region never filled in the child");
                check_and_free(a, got).unwrap();
                let got = take(a, 200, MEDIUM, i % 2, 8_000_000 + i as u64);
                check_and_free(a, got).unwrap();
                // SAFETY: the child has one thread.
                unsafe { a.verify() }.expect("verify in the child");
            });
            let ended = wait(pid);
            if ended != Ok(0) {
                failures.push(format!("child {i}: {ended:?} (Ok: exit code, Err: signal)"));
            }
        }
        // A claimer's round ends at a null: one at least before the stop (an event, not
        // the time the children took).
        yield_until(
            "a claimer's first round",
            || claimer_rounds.load(Ordering::SeqCst) != 0,
            || c.is_finished(),
        );
        drop(stop_threads);
        for (what, h) in [("claimer", c), ("owner", o)] {
            if let Err(e) = h.join().expect("a thread panicked") {
                failures.push(format!("{what}: {e}"));
            }
        }
    });
    // SAFETY: every thread that used the region has ended.
    if let Err(e) = unsafe { a.verify() } {
        failures.push(format!("verify: {e}"));
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(nulls.load(Ordering::Relaxed) > 0, "the region never filled");
}

/// An owner in tight medium pairs (its cache's lock-free paths: the run it handed out last
/// freed back, runs kept and taken again) while two claimers fill the region with medium
/// and small objects until null, over and over (each null claims the owner's cache): every
/// object keeps its pattern, nothing is handed out twice, the region verifies and ends
/// empty.
#[test]
fn an_owner_in_its_medium_cache_amid_claims_keeps_every_run_whole() {
    let a: Cohort<Life> = Cohort::with_options(&RegionOptions::new(12 * MIB)).expect("region");
    let nulls = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    // Rounds the claimers have done: the owner goes on until they have done 40 between
    // them (events, not time), and at least 60 000 pairs; or until both have ended (an
    // error or a panic ended them: they end only at the stop, after the owner).
    let rounds = AtomicU64::new(0);
    let claimers_ended = AtomicU64::new(0);
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let (a, nulls, stop, rounds) = (&a, &nulls, &stop, &rounds);
        let claimers_ended = &claimers_ended;
        let owner = s.spawn(move || {
            let mut ring: std::collections::VecDeque<Held> = std::collections::VecDeque::new();
            let mut i = 0u64;
            while i < 60_000
                || (rounds.load(Ordering::Relaxed) < 40
                    && claimers_ended.load(Ordering::SeqCst) < 2)
            {
                i += 1;
                let size = [MEDIUM, 20 << 10, 48 << 10, 64 << 10][i as usize % 4];
                let got = take(a, 1, size, (i % 2) as usize, 3_000_000_000 + i);
                nulls.fetch_add(u64::from(got.is_empty()), Ordering::Relaxed);
                ring.extend(got);
                while ring.len() > 3 {
                    let o = ring.pop_front().expect("an object");
                    check_and_free(a, vec![o])?;
                }
            }
            check_and_free(a, ring.into_iter().collect())
        });
        let claimers: Vec<_> = (0..2u64)
            .map(|c| {
                s.spawn(move || {
                    // Counts this claimer's end, however it ends.
                    let _ended = CountOnDrop(claimers_ended);
                    let mut round = 0;
                    while !stop.load(Ordering::Relaxed) {
                        claimer(a, 4_000_000_000 + c * 1_000_000 + round, 1, nulls)?;
                        let got = take(a, 400, MEDIUM, (round % 2) as usize, 5_000_000_000 + round);
                        nulls.fetch_add(u64::from(got.len() < 400), Ordering::Relaxed);
                        check_and_free(a, got)?;
                        round += 1;
                        rounds.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        // Stops the claimers however this test ends (a panic of the owner panics here).
        let stop_claimers = StopOnDrop(stop);
        let mut results = vec![owner.join().expect("the owner")];
        drop(stop_claimers);
        results.extend(claimers.into_iter().map(|h| h.join().expect("a claimer")));
        results
    });
    let mut broken: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    // SAFETY: every thread that used the region has ended.
    if let Err(e) = unsafe { a.verify() } {
        broken.push(format!("verify: {e}"));
    }
    if !a.is_empty() {
        broken.push(format!("not empty at the end: {}", a.stats()));
    }
    assert!(broken.is_empty(), "{broken:#?}");
    assert!(nulls.load(Ordering::Relaxed) > 0, "the region never filled");
}
