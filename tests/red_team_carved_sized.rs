//! Red-team guards (session 20) for a bound of the free fast path by the carved end
//! (RED-84's fix: the reservation past the carved end without access, and the sized free
//! comparing a pointer with a copy of the carved length): a block carved a moment before
//! by another thread or process, freed through the *sized* entries (the fast path: `free`
//! with its size, `try_free`, a `Join`'s free), must be freed as any other, its copy of
//! the carved end stale or not. `tests/red_team_carved_end.rs` pins the same for the
//! address-only entries. They pass on main (a reservation readable whole, no bound).

#[path = "red_team_common/mod.rs"]
mod red_team_common;

use cohort::{Cohort, RegionOptions};
use red_team_common::{hand_over_to_a_fork_child, say, unreported};

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

/// Sizes of classes a fresh instance has no block of: each first allocation carves one.
fn fresh_sizes() -> Vec<usize> {
    (1..=24)
        .map(|i| i * 640)
        .chain([40, 72, 136, 200_000])
        .collect()
}

/// How a handed-over object is freed.
#[derive(Clone, Copy, Debug)]
enum SizedFree {
    Free,
    TryFree,
    Join,
    /// Resized (`remalloc` to one byte more, then freed with the new size).
    Remalloc,
}

const WAYS: [SizedFree; 4] = [
    SizedFree::Free,
    SizedFree::TryFree,
    SizedFree::Join,
    SizedFree::Remalloc,
];

/// Frees `p` (`size` bytes of class `Short`) of `a` the way `how` says.
///
/// # Safety
/// `p` is a live allocation of `a` with that size and class, freed once.
unsafe fn sized_free(a: &Cohort<Life>, how: SizedFree, p: *mut u8, size: usize) {
    // SAFETY: the caller's.
    unsafe {
        match how {
            SizedFree::Free => a.free(p, size, Life::Short),
            SizedFree::TryFree => {
                if let Err(e) = a.try_free(p, size, Life::Short) {
                    say(&format!("cohort: try_free refused {p:p}: {e}"));
                    std::process::abort();
                }
            }
            SizedFree::Join => {
                let j = a.join(0).expect("a join");
                j.free(p, size, Life::Short);
            }
            SizedFree::Remalloc => {
                let q = a.remalloc(p, size, size + 1, Life::Short);
                assert!(!q.is_null(), "remalloc of {p:p} ({size})");
                a.free(q, size + 1, Life::Short);
            }
        }
    }
}

/// A thread carves block after block (a class it never used at each step) and hands each
/// object over at once; the other thread frees it with its size.
#[test]
fn guard_a_block_another_thread_just_carved_is_freed_with_its_size() {
    let instances = [
        ("default", Cohort::<Life>::new()),
        (
            "fixed 64 MiB",
            Cohort::<Life>::with_options(&RegionOptions::new(64 << 20)).unwrap(),
        ),
        (
            "shared anonymous 64 MiB",
            Cohort::<Life>::shared_anonymous_with(&RegionOptions::new(64 << 20)).unwrap(),
        ),
    ];
    for (name, a) in &instances {
        for how in WAYS {
            std::thread::scope(|s| {
                let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, usize)>(0);
                s.spawn(move || {
                    for size in fresh_sizes() {
                        let p = a.malloc(size, Life::Short);
                        assert!(!p.is_null(), "{name}: {size}");
                        tx.send((p as usize, size)).unwrap();
                    }
                });
                for (p, size) in rx {
                    // SAFETY: handed over, live, freed once with its size and class.
                    unsafe { sized_free(a, how, p as *mut u8, size) };
                }
            });
            assert!(a.is_empty(), "{name}, {how:?}");
        }
    }
}

/// A child forked before its parent carves frees the parent's new objects with their
/// sizes (its copy of the carved end is the fork's).
#[test]
fn guard_a_fork_child_frees_with_their_sizes_what_its_parent_carved_after_the_fork() {
    for how in WAYS {
        let a = Cohort::<Life>::shared_anonymous_with(&RegionOptions::new(64 << 20)).unwrap();
        let sizes = fresh_sizes();
        hand_over_to_a_fork_child(
            &sizes,
            |size| a.malloc(size, Life::Short),
            // SAFETY: the parent's object, handed over, freed once.
            |p, size| unsafe { sized_free(&a, how, p, size) },
        );
        assert!(a.is_empty(), "{how:?}");
    }
}

/// The sized entries given a pointer at the carved end exactly (the first byte of the unit
/// the region carves next), a page past it, and in checked builds one byte below it (the
/// last byte of the last carved block, past its last slot for most classes): each stops the process with cohort's message
/// (SIGABRT, or the sized free's panic), never a fault. A fresh default instance: its
/// first block is its first unit, the next unit is not carved yet.
#[test]
fn guard_a_sized_free_at_the_carved_end_is_reported_not_a_fault() {
    const UNIT: usize = 2 << 20;
    let a = Cohort::<Life>::new();
    let p = a.malloc(640, Life::Short);
    assert!(!p.is_null());
    let next = ((p as usize & !(UNIT - 1)) + UNIT) as *mut u8;
    assert!(a.in_region(next) && a.allocation_at(next).is_none());
    let mut failed = Vec::new();
    // One byte below only in checked builds: elsewhere the sized entries take a pointer
    // inside a block for a slot's start unchecked (documented), and a release build's free
    // writes its link across the block's end (SIGSEGV on lead 18fd27a, release-tests).
    let below: &[*mut u8] = if cfg!(debug_assertions) {
        &[next.wrapping_sub(1)]
    } else {
        &[]
    };
    for &q in [next, next.wrapping_add(4096)].iter().chain(below) {
        for how in WAYS {
            // SAFETY: the misuse under test, which the call reports.
            if let Some(what) = unreported(|| unsafe { sized_free(&a, how, q, 640) }) {
                failed.push(format!("{q:p}, {how:?}: {what}"));
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}
