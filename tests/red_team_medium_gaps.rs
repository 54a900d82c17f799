//! Red-team attacks of session 14 on the medium run table's searches (the bitmaps of used
//! and clean granules, and whatever summary of them a search uses to skip words): runs
//! of 33 to 480 granules (above the heaps' 64 KiB caches, so every freed run is free in its
//! table), aligned to a granule (`Layout` align 8) or to a page (`malloc`: 4096), plain or
//! zeroed, grown and shrunk in place or moved, freed here or by another thread, so that
//! free ranges start and end on every side of the tables' 64-granule words. The model
//! knows every block's free granules: a request that fits a gap of a block holding live
//! runs must not take a new block (a search that misses a gap costs a block), no run may
//! overlap a live one (every byte of every live run is checked at its free), a zeroed
//! run reads zero, and `verify` passes at every checkpoint. With the decay delay 0 (purges
//! at every call: clean bits come and go) and the default. A test that found a defect is
//! `#[ignore]`d with its number (RED-n), its owner and the exact failure.

use cohort::class::{medium_granules, GRANULE, MEDIUM_CLASS};
use cohort::{Cohort, Retention};
use std::alloc::Layout;
use std::collections::HashMap;
use std::time::Duration;

cohort::lifetime_classes! { enum Life { A } }

const BLOCK: usize = 2 << 20;
/// Granules a block's header and run table take.
const META: usize = 2;
const GRANULES: usize = BLOCK / GRANULE;

fn step(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// A live run: address, size asked for, `Layout` alignment (0: `malloc`), its byte.
#[derive(Clone, Copy, Debug)]
struct Run {
    p: usize,
    size: usize,
    align: usize,
    tag: u8,
}

impl Run {
    fn granules(&self) -> usize {
        medium_granules(self.size, self.align.max(1)).expect("a medium size")
    }

    fn start(&self) -> (usize, usize) {
        (self.p & !(BLOCK - 1), (self.p & (BLOCK - 1)) / GRANULE)
    }

    /// The first byte of the run that is not `b`.
    fn first_other(&self, b: u8) -> Option<usize> {
        // SAFETY: a live run of `size` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(self.p as *const u8, self.size) };
        bytes.iter().position(|&x| x != b)
    }
}

/// Medium blocks of the instance.
fn medium_blocks(a: &Cohort<Life>) -> usize {
    let mut n = 0;
    a.for_each_block(|b| n += usize::from(b.size_class == MEDIUM_CLASS));
    n
}

/// The medium blocks' resident bytes (the kernel's count), their runs and their number.
fn medium_resident(a: &Cohort<Life>) -> (usize, usize, usize) {
    let (mut resident, mut runs, mut blocks) = (0, 0, 0);
    a.for_each_block(|b| {
        if b.size_class == MEDIUM_CLASS {
            resident += b.resident_bytes;
            runs += b.runs;
            blocks += 1;
        }
    });
    (resident, runs, blocks)
}

/// Resident memory of the medium blocks stays within what the module promises: the live
/// runs, dirty granules up to a 40th of them and 512 KiB, what a free may leave beyond for
/// the next allocation (the longest run), and the parts of pages next to live runs or a
/// block's metadata.
fn within_bound(a: &Cohort<Life>, live: &[Run], what: &str) {
    // The allocator's page (`COHORT_PAGE_SIZE`): a page-aligned request's usable size.
    let page = a.usable_size(Layout::from_size_align(1, 8192).unwrap());
    let bytes: usize = live.iter().map(|r| r.granules() * GRANULE).sum();
    let (resident, runs, blocks) = medium_resident(a);
    let bound = bytes + bytes / 40 + (512 << 10) + (1 << 20) + 2 * page * (runs + blocks);
    assert!(
        resident <= bound,
        "{what}: {resident} B of medium blocks resident for {bytes} B live in {runs} runs \
         ({blocks} blocks): above {bound}"
    );
}

/// Whether a block holding live runs has `n` free granules in a row starting at a multiple
/// of `align` granules.
fn fits(live: &[Run], n: usize, align: usize) -> bool {
    let mut used: HashMap<usize, Vec<bool>> = HashMap::new();
    for r in live {
        let (b, g) = r.start();
        let map = used.entry(b).or_insert_with(|| {
            let mut m = vec![false; GRANULES];
            m[..META].iter_mut().for_each(|x| *x = true);
            m
        });
        map[g..g + r.granules()].iter_mut().for_each(|x| *x = true);
    }
    used.values().any(|m| {
        (META..=GRANULES - n)
            .filter(|s| s % align == 0)
            .any(|s| m[s..s + n].iter().all(|&x| !x))
    })
}

/// A run of `g` granules (the size asked for inside its last granule, or whole).
fn size_of(seed: &mut u64, g: usize) -> usize {
    g * GRANULE - step(seed) as usize % 2 * (1 + step(seed) as usize % (GRANULE - 1))
}

/// Granule counts that put run edges on both sides of the tables' 64-granule words.
fn granules(seed: &mut u64) -> usize {
    match step(seed) % 4 {
        0 => [33, 63, 64, 65, 127, 128, 129, 192][step(seed) as usize % 8],
        1 => 33 + step(seed) as usize % 64,
        _ => 33 + step(seed) as usize % 448,
    }
}

fn free(a: &Cohort<Life>, r: Run, what: &str) {
    if let Some(at) = r.first_other(r.tag) {
        panic!("{what}: the live run {r:?} changed at byte {at}");
    }
    // SAFETY: a live run, freed once with its size, alignment and class.
    unsafe {
        match r.align {
            0 => a.free(r.p as *mut u8, r.size, Life::A),
            al => a.dealloc(
                r.p as *mut u8,
                Layout::from_size_align(r.size, al).unwrap(),
                Life::A,
            ),
        }
    }
}

/// The scenario: `steps` random operations from `seed`; `remote` frees every third run on
/// another thread.
fn gaps(delay: Duration, seed: u64, steps: usize, remote: bool) {
    let a = Cohort::<Life>::new();
    a.set_retention(Retention {
        delay,
        ..Retention::DEFAULT
    });
    let mut seed = seed;
    let mut live: Vec<Run> = Vec::new();
    let mut far: Vec<Run> = Vec::new();
    let mut fitted = 0;
    for i in 0..steps {
        let what = format!("step {i} (delay {delay:?})");
        let r = step(&mut seed) % 10;
        if live.len() < 40 && r < 5 || live.is_empty() {
            let g = granules(&mut seed);
            let size = size_of(&mut seed, g);
            let align = [0, 8, 2048, 4096][step(&mut seed) as usize % 4];
            let zeroed = step(&mut seed).is_multiple_of(3);
            let galign = if align == 0 {
                2
            } else {
                (align / GRANULE).max(1)
            };
            // Runs waiting for the other thread's free are live too.
            let held: Vec<Run> = live.iter().chain(&far).copied().collect();
            let fit = fits(&held, g, galign);
            let before = medium_blocks(&a);
            let p = match (align, zeroed) {
                (0, false) => a.malloc(size, Life::A),
                (0, true) => a.calloc(size, Life::A),
                (al, false) => a.alloc(Layout::from_size_align(size, al).unwrap(), Life::A),
                (al, true) => a.alloc_zeroed(Layout::from_size_align(size, al).unwrap(), Life::A),
            } as usize;
            assert!(p != 0, "{what}: null for {size} B");
            assert_eq!(
                p % if align == 0 { 4096 } else { align },
                0,
                "{what}: {p:#x} misaligned"
            );
            let run = Run {
                p,
                size,
                align,
                tag: (i % 251) as u8 | 1,
            };
            if fit {
                fitted += 1;
                let after = medium_blocks(&a);
                assert!(
                    after <= before,
                    "{what}: {g} granules (align {galign}) fit a gap of a block with live runs, \
                     but the request took a new block ({before} -> {after} medium blocks)"
                );
            }
            if zeroed {
                if let Some(at) = run.first_other(0) {
                    panic!("{what}: a zeroed run of {size} B reads nonzero at byte {at}");
                }
            }
            // SAFETY: ours, `size` bytes.
            unsafe { (p as *mut u8).write_bytes(run.tag, size) };
            live.push(run);
            let held: Vec<Run> = live.iter().chain(&far).copied().collect();
            within_bound(&a, &held, &what);
        } else if r < 7 {
            let k = step(&mut seed) as usize % live.len();
            let old = live.swap_remove(k);
            if let Some(at) = old.first_other(old.tag) {
                panic!("{what}: the live run {old:?} changed at byte {at} before its resize");
            }
            let g = granules(&mut seed);
            let size = size_of(&mut seed, g);
            // SAFETY: a live run, resized once with its size, alignment and class.
            let q = unsafe {
                match old.align {
                    0 => a.remalloc(old.p as *mut u8, old.size, size, Life::A),
                    al => a.realloc(
                        old.p as *mut u8,
                        Layout::from_size_align(old.size, al).unwrap(),
                        size,
                        Life::A,
                    ),
                }
            } as usize;
            assert!(q != 0, "{what}: resize {} -> {size} null", old.size);
            let run = Run { p: q, size, ..old };
            let kept = old.size.min(size);
            // SAFETY: ours, `kept` bytes.
            let bytes = unsafe { std::slice::from_raw_parts(q as *const u8, kept) };
            if let Some(at) = bytes.iter().position(|&x| x != old.tag) {
                panic!("{what}: resize {} -> {size} lost byte {at}", old.size);
            }
            // SAFETY: ours, `size` bytes.
            unsafe { (q as *mut u8).write_bytes(run.tag, size) };
            live.push(run);
        } else {
            let k = step(&mut seed) as usize % live.len();
            let run = live.swap_remove(k);
            if remote && i % 3 == 0 {
                far.push(run);
            } else {
                free(&a, run, &what);
            }
        }
        if far.len() >= 8 {
            std::thread::scope(|s| {
                s.spawn(|| far.drain(..).for_each(|r| free(&a, r, "another thread")));
            });
        }
        if i % 250 == 249 {
            if i % 1000 == 999 {
                a.compact();
            }
            // SAFETY: no other thread uses the instance now.
            if let Err(e) = unsafe { a.verify() } {
                panic!("{what}: verify: {e:?}");
            }
        }
    }
    for r in live.into_iter().chain(far) {
        free(&a, r, "at the end");
    }
    // SAFETY: as above.
    let v = unsafe { a.verify() };
    assert!(v.is_ok(), "verify at the end: {v:?}");
    assert!(a.is_empty(), "not empty at the end");
    // The model's check ran: requests that fit a gap were common.
    assert!(
        fitted > steps / 10,
        "setup: only {fitted} requests fit a gap"
    );
}

const STEPS: usize = if cfg!(debug_assertions) { 1500 } else { 6000 };

#[test]
fn medium_gaps_on_every_side_of_the_table_words_are_found_and_kept_apart() {
    gaps(Duration::from_secs(1), 0x6a95_0001, STEPS, false);
}

#[test]
fn medium_gaps_with_every_call_purging_are_found_and_kept_apart() {
    gaps(Duration::ZERO, 0x6a95_0002, STEPS, false);
}

#[test]
fn medium_gaps_freed_by_another_thread_are_found_and_kept_apart() {
    gaps(Duration::from_millis(1), 0x6a95_0003, STEPS, true);
}
