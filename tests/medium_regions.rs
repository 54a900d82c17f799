//! Medium allocations in every kind of region: private, fixed capacity, caller memory,
//! shared between processes (anonymous, and a file), where a medium block is a unit of the
//! region like any other and runs of units serve only larger requests. Across processes: a
//! medium allocation freed by another process than the one that made it, a holder killed
//! with SIGKILL at many points (often holding the pool lock: every medium call takes it)
//! and the region repaired by the next locker, `verify` run by another process.

mod common;

use cohort::class::{GRANULE, MAX_MEDIUM, MAX_SMALL};
use cohort::{Cohort, CreateOptions, Off, OpenOptions, Place, RegionOptions, SharedCohort};
use common::memory::{garbage_mapping, map_aligned};
use common::processes::{in_child, kill_after, wait_ok, wait_status};
use common::{fill, mismatch, mix, nonzero, Rng};
use std::sync::atomic::{AtomicU64, Ordering};

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

const MIB: usize = 1 << 20;
const TIMEOUT: u32 = 120;
/// Medium sizes: the smallest, one granule's worth past it, an odd one, the largest.
const SIZES: [usize; 4] = [MAX_SMALL + 1, MAX_SMALL + GRANULE + 1, 100_000, MAX_MEDIUM];

/// The pattern seed of an allocation at offset `off` of its region: the same in every
/// process, wherever the region is mapped.
fn seed(off: usize, size: usize) -> u64 {
    mix(off as u64 ^ (size as u64).rotate_left(40))
}

/// Allocates each of [`SIZES`] (and a calloc of each) and a larger request, and checks
/// what serves them: medium sizes from medium blocks in the region (usable size in whole
/// granules, not large, counted as medium), the larger one as a large allocation; then
/// frees everything and verifies.
fn medium_sizes_are_served_by_medium_blocks(c: &Cohort<Life>, what: &str) {
    let mut held = Vec::new();
    for &size in &SIZES {
        for zeroed in [false, true] {
            let p = if zeroed {
                c.calloc(size, Life::Long)
            } else {
                c.malloc(size, Life::Short)
            };
            assert!(
                !p.is_null() && c.in_region(p),
                "{what}: {size} B in the region"
            );
            if zeroed {
                // SAFETY: size bytes of ours.
                assert_eq!(unsafe { nonzero(p, size) }, None, "{what}: calloc({size})");
            }
            let found = c.allocation_at(p).expect("found by address");
            assert_eq!(
                (found.usable, found.large),
                (size.next_multiple_of(GRANULE), false),
                "{what}: {size} B"
            );
            // SAFETY: ours.
            unsafe { fill(p, size as u64, size) };
            held.push((p, size, if zeroed { Life::Long } else { Life::Short }));
        }
    }
    let s = c.stats();
    assert_eq!(s.medium_allocations, 2 * SIZES.len(), "{what}: {s}");
    assert_eq!(
        s.large_allocations, 0,
        "{what}: no run, no mapping for a medium size"
    );
    let big = c.malloc(MAX_MEDIUM + 1, Life::Short);
    assert!(!big.is_null());
    assert!(
        c.allocation_at(big).unwrap().large,
        "{what}: above the medium range"
    );
    assert_eq!(c.stats().large_allocations, 1);
    // SAFETY: nobody else uses the region.
    unsafe { c.verify() }.unwrap_or_else(|e| panic!("{what}: {e}"));
    // SAFETY: each allocated above, freed once.
    unsafe {
        c.free(big, MAX_MEDIUM + 1, Life::Short);
        for (p, size, life) in held {
            assert_eq!(mismatch(p, size as u64, size), None, "{what}: {size} B");
            c.free(p, size, life);
        }
    }
    assert!(c.is_empty(), "{what}");
    // SAFETY: as above.
    unsafe { c.verify() }.unwrap_or_else(|e| panic!("{what}: {e}"));
}

#[test]
fn every_kind_of_region_serves_medium_sizes_from_medium_blocks() {
    medium_sizes_are_served_by_medium_blocks(&Cohort::<Life>::new(), "private");
    let fixed = Cohort::<Life>::with_options(&RegionOptions::new(64 * MIB)).expect("fixed");
    medium_sizes_are_served_by_medium_blocks(&fixed, "fixed capacity");
    let committed = Cohort::<Life>::with_options(&RegionOptions::new(64 * MIB).commit(true))
        .expect("committed");
    medium_sizes_are_served_by_medium_blocks(&committed, "committed up front");
    let shared = Cohort::<Life>::shared_anonymous(64 * MIB).expect("shared");
    medium_sizes_are_served_by_medium_blocks(&shared, "shared anonymous");
    let path = std::env::temp_dir().join(format!("cohort-medium-kinds-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let file = SharedCohort::<Life>::create(Place::File(&path), CreateOptions::new(64 * MIB))
        .expect("a file region");
    medium_sizes_are_served_by_medium_blocks(&file, "file");
    file.destroy().expect("destroyed");
}

/// Caller memory holding garbage: a medium calloc reads zero (its blocks are not fresh),
/// a medium allocation made before a leave is found at its offset in a mapping at another
/// address, in another process, and freed there.
#[test]
fn medium_allocations_in_caller_memory_are_found_by_offset_in_another_process() {
    let f = Cohort::<Life>::footprint(32 * MIB).unwrap();
    // Garbage where the region goes: the state is zeroed by the format, the blocks not.
    let (fd, a) = garbage_mapping(f.bytes);
    // SAFETY: ours, unused, mapped for as long as the instance lives.
    let c = unsafe { Cohort::<Life>::format_in(a, f.bytes, &RegionOptions::new(32 * MIB)) }
        .expect("formatted");
    medium_sizes_are_served_by_medium_blocks(&c, "caller memory");
    let mut offs = Vec::new();
    for &size in &SIZES {
        let p = c.calloc(size, Life::Long);
        // SAFETY: size bytes of ours.
        assert_eq!(
            unsafe { nonzero(p, size) },
            None,
            "calloc({size}) in dirty memory"
        );
        let off = p as usize - a as usize;
        // SAFETY: as above.
        unsafe { fill(p, seed(off, size), size) };
        offs.push((off, size));
    }
    drop(c);
    let child = in_child(TIMEOUT, || {
        let b = map_aligned(fd, f.bytes);
        assert_ne!(a, b);
        // SAFETY: the region formatted above, mapped for as long as the instance lives.
        let c = unsafe { Cohort::<Life>::attach_in(b, f.bytes, 32 * MIB) }.expect("attached");
        for &(off, size) in &offs {
            let p = b.wrapping_add(off);
            let found = c.allocation_at(p).expect("found at its offset");
            assert_eq!(
                (found.usable, found.large),
                (size.next_multiple_of(GRANULE), false)
            );
            // SAFETY: made before the leave, freed once, here.
            unsafe {
                assert_eq!(mismatch(p, seed(off, size), size), None, "{size} B");
                c.free(p, size, Life::Long);
            }
        }
        assert!(c.is_empty());
        // SAFETY: nobody else uses the region.
        unsafe { c.verify() }.expect("verifies at the second address");
    });
    wait_ok(child);
    // SAFETY: the mapping and file are ours, unused now.
    unsafe {
        libc::munmap(a.cast(), f.bytes);
        libc::close(fd);
    }
}

/// A file region: medium allocations made by one process, found through a root by
/// another that opens the file (at its own address), checked and freed there; what that
/// process made is freed by the first after it reopens.
#[test]
fn a_file_regions_medium_allocations_are_freed_by_another_process() {
    let path = std::env::temp_dir().join(format!("cohort-medium-file-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let place = Place::File(&path);
    let region = SharedCohort::<Life>::create(place, CreateOptions::new(64 * MIB)).unwrap();
    let table = region.calloc(SIZES.len() * 8, Life::Long).cast::<u64>();
    for (i, &size) in SIZES.iter().enumerate() {
        let p = region.malloc(size, Life::Short);
        let off = region.offset_of(p).expect("in the region").get() as usize;
        // SAFETY: ours; the table holds SIZES.len() words.
        unsafe {
            fill(p, seed(off, size), size);
            table.add(i).write(off as u64);
        }
    }
    region.set_root(0, region.offset_of(table));
    region.leave().unwrap();
    let child = in_child(TIMEOUT, || {
        let region = SharedCohort::<Life>::open(place, OpenOptions::new()).expect("opened");
        let table: Off<u64> = region.root(0).expect("the root");
        let table = region.ptr(table);
        for (i, &size) in SIZES.iter().enumerate() {
            // SAFETY: the table's words, written before the leave.
            let off = unsafe { table.add(i).read() } as usize;
            let p = region.ptr(Off::<u8>::new(off as u64).unwrap());
            // SAFETY: made by the other process, freed once, here.
            unsafe {
                assert_eq!(mismatch(p, seed(off, size), size), None, "{size} B");
                region.free(p, size, Life::Short);
                let q = region.malloc(size, Life::Long);
                let off = region.offset_of(q).unwrap().get() as usize;
                fill(q, seed(off, size), size);
                table.add(i).write(off as u64);
            }
        }
        region.leave().expect("left");
    });
    wait_ok(child);
    let region = SharedCohort::<Life>::open(place, OpenOptions::new()).expect("reopened");
    let table = region.ptr(region.root::<u64>(0).unwrap());
    assert_eq!(region.stats().medium_allocations, SIZES.len());
    for (i, &size) in SIZES.iter().enumerate() {
        // SAFETY: as above, the other process's allocations, freed once.
        unsafe {
            let off = table.add(i).read() as usize;
            let p = region.ptr(Off::<u8>::new(off as u64).unwrap());
            assert_eq!(mismatch(p, seed(off, size), size), None, "{size} B");
            region.free(p, size, Life::Long);
            table.add(i).write(0);
        }
    }
    // SAFETY: the table, freed once.
    unsafe { region.free(table.cast(), SIZES.len() * 8, Life::Long) };
    region.set_root::<u8>(0, None);
    assert!(region.is_empty());
    // SAFETY: nobody else uses the region.
    unsafe { region.verify() }.expect("verifies");
    region.destroy().unwrap();
}

/// The medium sizes of the kill test: the range's ends and its middle, mostly small ones
/// (a victim's leak is bounded by what it holds).
fn medium_size(r: &mut Rng) -> usize {
    match r.below(8) {
        0 => MAX_SMALL + 1,
        1 => MAX_MEDIUM,
        2 | 3 => r.range(MAX_SMALL + 1, 256 << 10),
        _ => r.range(MAX_SMALL + 1, 64 << 10),
    }
}

/// Bytes patterned at each end of an allocation in the kill test (writing whole
/// allocations would keep the victims out of the lock most of the time).
const ENDS: usize = 512;

/// Fills the first and last [`ENDS`] bytes of `size` at `p` (offset `off` from `base`)
/// with their pattern.
///
/// # Safety
/// `p` is writable for `size` bytes.
unsafe fn mark(p: *mut u8, base: usize, size: usize) {
    let (s, tail) = (seed(p as usize - base, size), size - ENDS);
    // SAFETY: both ends lie in the caller's `size` bytes (`size > 2 * ENDS`).
    unsafe {
        fill(p, s, ENDS);
        fill(p.add(tail), s ^ 1, ENDS);
    }
}

/// True when both ends of `size` at `p` hold their pattern ([`mark`]).
///
/// # Safety
/// `p` is readable for `size` bytes.
unsafe fn marked(p: *const u8, base: usize, size: usize) -> bool {
    let (s, tail) = (seed(p as usize - base, size), size - ENDS);
    // SAFETY: as in `mark`.
    unsafe { mismatch(p, s, ENDS).is_none() && mismatch(p.add(tail), s ^ 1, ENDS).is_none() }
}

/// Objects a child holds at once.
const HOLDS: usize = 12;
/// Exchange slots.
const EXCHANGE: usize = 16;

#[repr(C)]
struct Mailbox {
    /// `offset << 24 | size` of a deposited object (Short class), 0 when empty.
    exchange: [AtomicU64; EXCHANGE],
    /// The current victim's steps.
    progress: AtomicU64,
    stop: AtomicU64,
    /// Set by the parent for a `verify` in another process: the survivor waits, holding
    /// nothing under the lock, and says so in `paused`.
    pause: AtomicU64,
    paused: AtomicU64,
}

/// What a child does until killed (or told to stop): medium allocations and frees with a
/// pattern checked before each free, resizes, deposits for another process to free, and
/// frees of what others deposited.
fn churn(c: &Cohort<Life>, mb: &Mailbox, seed0: u64, count: bool) {
    let base = mb as *const Mailbox as usize;
    let mut r = Rng::new(seed0);
    let mut held: Vec<(*mut u8, usize)> = Vec::new();
    let mut n = 0;
    while mb.stop.load(Ordering::Relaxed) == 0 {
        while mb.pause.load(Ordering::Acquire) == 1 {
            mb.paused.store(1, Ordering::Release);
            std::hint::spin_loop();
        }
        mb.paused.store(0, Ordering::Relaxed);
        n += 1;
        if count {
            mb.progress.store(n, Ordering::Relaxed);
        }
        match r.below(10) {
            0..=3 if held.len() < HOLDS => {
                let size = medium_size(&mut r);
                let p = c.malloc(size, Life::Short);
                assert!(!p.is_null(), "out of memory");
                // SAFETY: fresh.
                unsafe { mark(p, base, size) };
                held.push((p, size));
            }
            4 | 5 if !held.is_empty() => {
                let (p, size) = held.swap_remove(r.below(held.len()));
                // SAFETY: ours, freed once.
                unsafe {
                    assert!(marked(p, base, size));
                    c.free(p, size, Life::Short);
                }
            }
            6 if !held.is_empty() => {
                let i = r.below(held.len());
                let (p, size) = held[i];
                let new = medium_size(&mut r);
                // SAFETY: ours; the result is live with `new` bytes.
                unsafe {
                    assert!(marked(p, base, size));
                    let q = c.remalloc(p, size, new, Life::Short);
                    assert!(!q.is_null(), "out of memory");
                    mark(q, base, new);
                    held[i] = (q, new);
                }
            }
            7 if !held.is_empty() => {
                let i = r.below(held.len());
                let (p, size) = held[i];
                let word = ((p as usize - base) << 24 | size) as u64;
                let slot = &mb.exchange[r.below(EXCHANGE)];
                if slot
                    .compare_exchange(0, word, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    held.swap_remove(i);
                }
            }
            _ => {
                let word = mb.exchange[r.below(EXCHANGE)].swap(0, Ordering::AcqRel) as usize;
                if word != 0 {
                    let (p, size) = ((base + (word >> 24)) as *mut u8, word & 0xff_ffff);
                    // SAFETY: deposited by its maker, taken by us alone: a free from
                    // another process.
                    unsafe {
                        assert!(marked(p, base, size));
                        c.free(p, size, Life::Short);
                    }
                }
            }
        }
    }
    for (p, size) in held {
        // SAFETY: ours, freed once.
        unsafe { c.free(p, size, Life::Short) };
    }
}

/// Victims churning medium allocations in a shared region are killed with SIGKILL at
/// random points (a medium call holds the pool lock for most of its time) while a
/// survivor churns too. After each kill the parent allocates and checks that nothing it
/// holds was handed out again; every few kills another process verifies the region (the
/// lock the victim died holding is repaired by whoever takes it next: the medium blocks'
/// lists and counts are rebuilt from their run tables). At the end: the survivor's and
/// the parent's objects intact, the region verifies, the medium allocations the dead left
/// are bounded by what they could hold, and the region serves the largest medium size.
#[test]
fn kill_9_of_medium_holders_leaves_a_consistent_region() {
    const KILLS: usize = if cfg!(debug_assertions) { 60 } else { 200 };
    let c = Cohort::<Life>::shared_anonymous(1 << 30).expect("a shared region");
    let mb = c.calloc(size_of::<Mailbox>(), Life::Long).cast::<Mailbox>();
    // SAFETY: zeroed (valid atomics), shared with the children through the region.
    let mbr = unsafe { &*mb };
    let base = mb as usize;
    let survivor = {
        let c = &c;
        in_child(TIMEOUT, move || churn(c, mbr, 0x5EED, false))
    };
    let mut rng = Rng::new(0xC0FFEE);
    let mut mine: Vec<(*mut u8, usize)> = Vec::new();
    // Past KILLS, kills go on until one landed under the pool lock (a repair), within a
    // bound: where a kill lands is chance, and the repair's own unit test
    // (`repair_rebuilds_the_medium_lists_and_counts_from_the_run_tables`) does not
    // depend on it.
    let mut rounds = 0;
    while rounds < KILLS || (c.recoveries().lock_repairs == 0 && rounds < 5 * KILLS) {
        let round = rounds;
        rounds += 1;
        mbr.progress.store(0, Ordering::Relaxed);
        let victim = {
            let c = &c;
            in_child(TIMEOUT, move || {
                churn(c, mbr, round as u64 * 7919 + 1, true)
            })
        };
        let steps = 1 + rng.below(if round % 3 == 0 { 20 } else { 400 }) as u64;
        kill_after(victim, &mbr.progress, steps, &format!("round {round}"));
        c.reap_dead_processes();
        for _ in 0..4 {
            let size = medium_size(&mut rng);
            let p = c.malloc(size, Life::Long);
            assert!(!p.is_null(), "out of memory in round {round}");
            // SAFETY: fresh.
            unsafe { mark(p, base, size) };
            mine.push((p, size));
        }
        for _ in 0..2 {
            let (p, size) = mine.swap_remove(rng.below(mine.len()));
            // SAFETY: ours, freed once.
            unsafe {
                assert!(marked(p, base, size), "round {round}: handed out twice");
                c.free(p, size, Life::Long);
            }
        }
        for &(p, size) in &mine {
            // SAFETY: ours, live.
            assert!(
                unsafe { marked(p, base, size) },
                "round {round}: overwritten"
            );
        }
        if round % 8 == 7 {
            // Another process verifies while the survivor waits (verify reads what every
            // heap owns: nobody may allocate meanwhile).
            mbr.pause.store(1, Ordering::Release);
            while mbr.paused.load(Ordering::Acquire) == 0 {
                // A survivor that died (a failed assertion: out of memory, a run handed
                // out twice) never pauses: fail, never hang.
                // SAFETY: waitpid of our own child, without blocking.
                let gone = unsafe { libc::waitpid(survivor, core::ptr::null_mut(), libc::WNOHANG) };
                assert_eq!(
                    gone, 0,
                    "round {round}: the survivor died (see its panic above)"
                );
                std::hint::spin_loop();
            }
            let c = &c;
            wait_ok(in_child(TIMEOUT, move || {
                // SAFETY: the victim is dead, the survivor and the parent wait.
                let v = unsafe { c.verify() }.expect("the region verifies from another process");
                assert!(v.blocks > 0, "{v:?}");
            }));
            mbr.paused.store(0, Ordering::Relaxed);
            mbr.pause.store(0, Ordering::Release);
        }
    }
    mbr.stop.store(1, Ordering::Relaxed);
    let status = wait_status(survivor);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the survivor failed: {status:#x}"
    );
    c.reap_dead_processes();
    for (p, size) in mine.drain(..) {
        // SAFETY: ours, freed once.
        unsafe {
            assert!(marked(p, base, size));
            c.free(p, size, Life::Long);
        }
    }
    for slot in &mbr.exchange {
        let word = slot.swap(0, Ordering::Relaxed) as usize;
        if word != 0 {
            // SAFETY: a deposited object, freed once.
            unsafe {
                c.free(
                    (base + (word >> 24)) as *mut u8,
                    word & 0xff_ffff,
                    Life::Short,
                )
            };
        }
    }
    // SAFETY: the mailbox, freed once.
    unsafe { c.free(mb.cast(), size_of::<Mailbox>(), Life::Long) };
    // SAFETY: every other process is gone.
    let v = unsafe { c.verify() }.expect("the region verifies after the kills");
    let s = c.stats();
    let rec = c.recoveries();
    eprintln!(
        "{rounds} kills: {} medium allocations left by the dead, {v:?}, {rec:?}",
        s.medium_allocations
    );
    assert!(
        s.medium_allocations <= rounds * (HOLDS + 1),
        "{} medium allocations leaked, more than the dead could hold",
        s.medium_allocations
    );
    let p = c.malloc(MAX_MEDIUM, Life::Short);
    assert!(!p.is_null());
    // SAFETY: allocated above.
    unsafe { c.free(p, MAX_MEDIUM, Life::Short) };
    // SAFETY: nobody else uses the region; what the dead left goes with their class.
    let released = unsafe { c.release_class(Life::Short) };
    assert_eq!(released.medium, s.medium_allocations, "{released}");
    assert!(c.is_empty());
    // SAFETY: as above.
    unsafe { c.verify() }.expect("verifies after the release");
}

/// A second process sees the parent's medium allocations: `verify` there checks their
/// blocks and the pool's sums, its stats count them, and its free of one of them is the
/// parent's double free.
#[test]
fn verify_and_double_free_checks_see_another_processs_medium_frees() {
    let c = Cohort::<Life>::shared_anonymous(64 * MIB).expect("a shared region");
    let ps: Vec<_> = SIZES
        .iter()
        .map(|&s| (c.malloc(s, Life::Long), s))
        .collect();
    let blocks_before = c.stats().medium_blocks;
    assert!(blocks_before >= 1);
    let verified = {
        let c = &c;
        let ps = &ps;
        in_child(TIMEOUT, move || {
            // SAFETY: the parent waits for us.
            let v = unsafe { c.verify() }.expect("verifies from another process");
            assert!(v.blocks >= 1, "{v:?}");
            let s = c.stats();
            assert_eq!(s.medium_allocations, SIZES.len(), "{s}");
            // The child frees the first one: a free from another process.
            let (p, size) = ps[0];
            // SAFETY: the parent's allocation, handed to this process, freed once.
            unsafe { c.free(p, size, Life::Long) };
        })
    };
    wait_ok(verified);
    c.reap_dead_processes();
    assert_eq!(c.stats().medium_allocations, SIZES.len() - 1);
    let (p, size) = ps[0];
    // SAFETY: freed by the child: reported, nothing changed.
    let e = unsafe { c.try_free(p, size, Life::Long) }.unwrap_err();
    assert_eq!(e.problem, cohort::Problem::DoubleFree, "{e}");
    for &(p, size) in &ps[1..] {
        // SAFETY: allocated above, freed once.
        unsafe { c.free(p, size, Life::Long) };
    }
    assert!(c.is_empty());
    // SAFETY: nobody else uses the region.
    unsafe { c.verify() }.expect("verifies");
}

cohort::lifetime_classes! {
    enum Seven { C0, C1, C2, C3, C4, C5, C6 }
}

/// With nothing live, a medium request fits a small fixed region whatever the lifetime
/// classes used before left behind: each class's kept empty medium block and the calling
/// thread's empty current blocks are given back before the request says null (RED-29).
#[test]
fn medium_requests_of_many_classes_fit_a_fixed_region_with_nothing_live() {
    use Seven::*;
    let a = Cohort::<Seven>::with_options(&RegionOptions::new(16 * MIB)).expect("fixed");
    for round in 0..3 {
        for sizes in [&[100_000, 64][..], &[MIB, 20_000, 8]] {
            for c in [C0, C1, C2, C3, C4, C5, C6] {
                for &n in sizes {
                    let p = a.malloc(n, c);
                    assert!(
                        !p.is_null(),
                        "round {round}, nothing live: {c:?} malloc({n})"
                    );
                    // SAFETY: live, freed once.
                    unsafe { a.free(p, n, c) };
                }
            }
            assert!(a.is_empty());
        }
    }
    // SAFETY: no other thread uses `a`.
    unsafe { a.verify() }.expect("consistent");
}
