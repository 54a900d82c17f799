//! Red-team attacks of session 22 on the remote free's quick way as a program's
//! `#[global_allocator]` reaches it (`__rust_dealloc` of an object another thread
//! allocated): three threads in a ring hand each other boxed, patterned objects and drop
//! them (every pattern checked before the drop); and double frees that must abort naming
//! the pointer, each made while the block's chain in the freeing thread's batch holds
//! slots (the quick way takes the free, and must compare): the chain's first after ten
//! frees, the block's remote list's first (a chain pushed by `stats`), the owner's local
//! list's first (the owner alive, its free the last thing it did). Each double free runs in
//! a child process (a misuse through `GlobalAlloc` aborts). A test that found a defect is
//! `#[ignore]`d with its number (RED-n) and the exact failure.

mod red_team_s22_common;

use red_team_s22_common::{from_a_live_owner, ring_channels};
use std::alloc::{alloc, dealloc, Layout};
use std::hint::black_box;
use test_support::{child_case, misuse_unnamed};

cohort::lifetime_classes! { enum Life { Mine } }

#[global_allocator]
static A: cohort::Cohort<Life> = cohort::Cohort::new();

/// The layout of the double-free cases' objects.
const L16: Layout = match Layout::from_size_align(16, 8) {
    Ok(l) => l,
    Err(_) => panic!("layout"),
};

const CHILD_ENV: &str = "COHORT_RED_S22_GLOBAL_REMOTE";

/// The objects of a round: sizes of every chain limit, and a medium one.
const SIZES: [usize; 8] = [8, 16, 40, 100, 500, 3000, 9000, 30_000];
const WORKERS: usize = 3;
const ROUNDS: usize = if cfg!(debug_assertions) { 30 } else { 150 };
const PER_ROUND: usize = 300;

fn pattern(p: usize, i: usize, tag: u8) -> u8 {
    ((p >> 4) as u8).wrapping_add(i as u8).wrapping_mul(5) ^ tag
}

/// A boxed object of `n` bytes, patterned with `tag` (the pattern's first byte is the tag
/// itself, so the check needs nothing else).
fn object(n: usize, tag: u8) -> Box<[u8]> {
    let mut b = vec![0u8; n].into_boxed_slice();
    let p = b.as_ptr() as usize;
    for (i, x) in b.iter_mut().enumerate() {
        *x = pattern(p, i, tag);
    }
    b
}

/// Panics unless `b` holds the pattern of tag `tag`.
fn check(b: &[u8], tag: u8, what: &str) {
    let p = b.as_ptr() as usize;
    if let Some(i) = (0..b.len()).find(|&i| b[i] != pattern(p, i, tag)) {
        panic!(
            "{what}: the object at {p:#x} ({} B, tag {tag}) changed at byte {i}",
            b.len()
        );
    }
}

/// Three threads in a ring: each round, each boxes [`PER_ROUND`] objects for the next
/// and checks and drops the previous one's (remote frees through `__rust_dealloc`),
/// keeping some objects of its own made between the drops.
#[test]
fn boxed_objects_dropped_by_other_threads_keep_their_patterns() {
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        let ring = ring_channels::<(u8, Vec<Box<[u8]>>)>(WORKERS, 2);
        for (w, (to_next, from_prev)) in ring.into_iter().enumerate() {
            handles.push(s.spawn(move || {
                let mut own: std::collections::VecDeque<(u8, Box<[u8]>)> = Default::default();
                for round in 0..ROUNDS {
                    let what = format!("worker {w}, round {round}");
                    let tag = (w * ROUNDS + round) as u8;
                    let batch = (0..PER_ROUND)
                        .map(|i| object(SIZES[(i * 3 + round + w) % SIZES.len()], tag))
                        .collect();
                    to_next.send((tag, batch)).expect("the next worker is gone");
                    let (theirs_tag, theirs) = from_prev.recv().expect("the previous is gone");
                    for (j, b) in theirs.into_iter().enumerate() {
                        check(&b, theirs_tag, &what);
                        drop(b);
                        if j % 4 == 0 {
                            own.push_back((tag, object(SIZES[j % SIZES.len()], tag)));
                        }
                        if j % 3 == 0 && own.len() > 30 {
                            let (t, b) = own.pop_front().expect("own");
                            check(&b, t, &what);
                        }
                    }
                }
                for (t, b) in own {
                    check(&b, t, &format!("worker {w}, at the end"));
                }
            }));
        }
        for h in handles {
            if let Err(e) = h.join() {
                std::panic::resume_unwind(e);
            }
        }
    });
}

/// Objects of 16 bytes made by a thread that stays alive, in one block: their addresses;
/// `free_first`: that thread freed the first itself ([`from_a_live_owner`]).
fn owners(free_first: bool) -> Vec<usize> {
    let make = || {
        // SAFETY: a non-zero size.
        (0..40)
            .map(|_| black_box(unsafe { alloc(L16) }) as usize)
            .collect()
    };
    let free_it: fn(usize) = |p| {
        // SAFETY: allocated by `make`, freed once (here).
        unsafe { dealloc(p as *mut u8, L16) }
    };
    from_a_live_owner(make, |&p| p, free_first.then_some(free_it))
}

/// The child's side: one case, which must abort at its last free.
fn run(case: &str) {
    let free = |p: usize| {
        // SAFETY: a live object of the owner, handed over, freed once.
        unsafe { dealloc(black_box(p as *mut u8), L16) }
    };
    let same = match case {
        // The chain's first: ten frees, the last one again.
        "chain first" => {
            let same = owners(false);
            same[..10].iter().copied().for_each(free);
            same[9]
        }
        // The remote list's first: freed, pushed, then a chain of two with room.
        "remote first" => {
            let same = owners(false);
            free(same[0]);
            let _ = A.stats();
            free(same[1]);
            free(same[2]);
            same[0]
        }
        // The local list's first: the owner freed it, then a chain of two with room.
        "local first" => {
            let same = owners(true);
            free(same[1]);
            free(same[2]);
            same[0]
        }
        _ => unreachable!("{case}"),
    };
    eprintln!("child: misusing {:p}", same as *mut u8);
    // SAFETY: deliberately a double free: the process must abort.
    unsafe { dealloc(black_box(same as *mut u8), L16) };
    eprintln!("child: the misuse returned");
}

/// The child side: runs only when the parent re-executes this test binary.
#[test]
fn global_remote_double_free_child() {
    if let Some(case) = child_case(CHILD_ENV) {
        run(&case);
    }
}

/// Every case aborts with cohort's message naming the pointer, and never returns.
#[test]
fn double_frees_the_quick_way_meets_abort_naming_the_pointer() {
    let failures: Vec<String> = ["chain first", "remote first", "local first"]
        .into_iter()
        .filter_map(|case| misuse_unnamed("global_remote_double_free_child", CHILD_ENV, case))
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}
