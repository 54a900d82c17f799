//! Red-team guards (session 19) on the reservation past what is carved: the region is
//! readable everywhere (design: a free reads any in-region pointer's header, and memory
//! that reads zero is an empty block owned by nobody), so a pointer into the region past
//! every carved block, asked about or freed without its size, is refused or reported with
//! a message, never a fault; and a block one process or thread carves is readable at once
//! by every other user of the region: a thread of the same process asking about or
//! freeing its objects while it carves more, and a process forked before the carve (a
//! shared region), freeing the carver's objects and asking their sizes. They pass on main
//! (a reservation mapped readable whole) and pin that down for a change that protects the
//! reservation past its carved end (RED-84).

mod red_team_common;

use cohort::{Cohort, RegionOptions};
use red_team_common::{hand_over_to_a_fork_child, say, unreported};

cohort::lifetime_classes! {
    enum Life { Short }
}

const UNIT: usize = 2 << 20;

/// The last unit of `a`'s region (from a block of its own): carved by nothing below.
fn last_unit(a: &Cohort<Life>) -> *mut u8 {
    let p = a.malloc(64, Life::Short);
    let mut unit = (p as usize) & !(UNIT - 1);
    while a.in_region((unit + UNIT) as *const u8) {
        unit += UNIT;
    }
    // SAFETY: allocated above with this size and class.
    unsafe { a.free(p, 64, Life::Short) };
    unit as *mut u8
}

/// The instances the address-only calls are tried on: the default reservation, a
/// private fixed region, a shared one.
fn instances() -> Vec<(&'static str, Cohort<Life>)> {
    vec![
        ("default", Cohort::<Life>::new()),
        (
            "fixed 64 MiB",
            Cohort::<Life>::with_options(&RegionOptions::new(64 << 20)).unwrap(),
        ),
        (
            "shared anonymous 64 MiB",
            Cohort::<Life>::shared_anonymous_with(&RegionOptions::new(64 << 20)).unwrap(),
        ),
    ]
}

/// `allocation_at` of pointers past the carved end (a unit's start, its header's bytes,
/// a slot-like offset, the region's last byte) answers `None`, and the region still works.
#[test]
fn guard_allocation_at_past_the_carved_end_answers_none() {
    for (name, a) in instances() {
        let unit = last_unit(&a);
        for off in [0, 8, 64, 4096, 100_000, UNIT - 1] {
            let q = unit.wrapping_add(off);
            assert!(a.in_region(q), "{name}: {q:p}");
            assert_eq!(a.allocation_at(q), None, "{name}: offset {off}");
        }
        let p = a.malloc(100, Life::Short);
        assert!(!p.is_null(), "{name}");
        // SAFETY: allocated above with this size and class.
        unsafe { a.free(p, 100, Life::Short) };
        assert!(a.is_empty(), "{name}");
    }
}

/// Each address-only call that takes a pointer it must own, given one past the carved
/// end, stops the process with cohort's message (SIGABRT), never a fault.
#[test]
fn guard_a_free_or_size_query_past_the_carved_end_is_reported_not_a_fault() {
    type Call = fn(&Cohort<Life>, *mut u8);
    let calls: [(&str, Call); 5] = [
        // SAFETY (each): the misuse under test, which the call reports.
        ("free_unsized", |a, q| drop(unsafe { a.free_unsized(q) })),
        ("usable_size_at", |a, q| drop(a.usable_size_at(q))),
        ("realloc_unsized", |a, q| {
            drop(unsafe { a.realloc_unsized(q, 10, 8) })
        }),
        ("free (sized)", |a, q| unsafe { a.free(q, 64, Life::Short) }),
        ("try_free", |a, q| {
            if let Err(e) = unsafe { a.try_free(q, 64, Life::Short) } {
                say(&format!("cohort: try_free refused {q:p}: {e}"));
                std::process::abort();
            }
        }),
    ];
    let mut failed = Vec::new();
    for (name, a) in instances() {
        let unit = last_unit(&a);
        // A page into the last unit: past its header, where a slot of many classes starts.
        let q = unit.wrapping_add(4096);
        for (call, f) in calls {
            if let Some(what) = unreported(|| f(&a, q)) {
                failed.push(format!("{name}, {call}: {what}"));
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// A thread carves block after block (a new size class at each step, each a block of its
/// own) and hands each object over at once; the other thread asks its size, finds it, and
/// frees it without its size (a remote free into a block carved a moment before).
#[test]
fn guard_a_block_another_thread_just_carved_is_readable_at_once() {
    for (name, a) in instances() {
        let sizes: Vec<usize> = (1..=24).map(|i| i * 640).collect();
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, usize)>(0);
            let a = &a;
            s.spawn(move || {
                for &size in &sizes {
                    let p = a.malloc(size, Life::Short);
                    assert!(!p.is_null(), "{name}: {size}");
                    // SAFETY: `size` bytes of ours.
                    unsafe { p.write_bytes(0x5a, size) };
                    tx.send((p as usize, size)).unwrap();
                }
            });
            for (p, size) in rx {
                let p = p as *mut u8;
                let found = a.allocation_at(p).expect("found");
                assert!(found.usable >= size, "{name}: {size} {found:?}");
                assert!(a.usable_size_at(p).unwrap() >= size, "{name}");
                // SAFETY: handed over, live, freed once.
                unsafe { a.free_unsized(p) }.unwrap();
            }
        });
        assert!(a.is_empty(), "{name}");
    }
}

/// A child forked before its parent carves: the parent carves blocks (sizes it never
/// used, a medium and a large allocation) and hands their offsets over through shared
/// words; the child, whose mapping of the region was made before those blocks were carved,
/// finds each object, asks its size and frees it without its size; the parent's region
/// then is empty and verifies.
#[test]
fn guard_a_fork_child_frees_what_its_parent_carved_after_the_fork() {
    let a = Cohort::<Life>::shared_anonymous_with(&RegionOptions::new(64 << 20)).unwrap();
    let sizes = [3000usize, 5000, 9000, 13_000, 200_000, 3 << 20];
    hand_over_to_a_fork_child(
        &sizes,
        |size| {
            let p = a.malloc(size, Life::Short);
            if !p.is_null() {
                // SAFETY: `size` bytes of ours.
                unsafe { p.write_bytes(0x6b, size) };
            }
            p
        },
        |p, size| {
            let found = a.allocation_at(p).expect("found in the child");
            assert!(found.usable >= size, "{size}: {found:?}");
            assert!(a.usable_size_at(p).unwrap() >= size);
            // SAFETY: the parent's object, handed over, freed once.
            assert!(unsafe { std::slice::from_raw_parts(p, size) }
                .iter()
                .all(|&b| b == 0x6b));
            // SAFETY: as above.
            unsafe { a.free_unsized(p) }.unwrap();
        },
    );
    assert!(a.is_empty());
    // SAFETY: no other thread or process uses the region now.
    if let Err(e) = unsafe { a.verify() } {
        panic!("verify: {e}");
    }
}
