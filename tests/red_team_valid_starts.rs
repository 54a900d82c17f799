//! Guards (red team, session 20): the interior-pointer checks of the entries that take a
//! pointer without its size (`check_slot_start`, the C sized frees' check;
//! `usable_size_at`; `realloc_unsized`; `free_unsized`) must never take a pointer the
//! allocator handed out for a slot's inside: every small class at its stride and at one
//! byte, with every alignment up to 2 MiB (aligned requests are served from classes whose
//! strides are odd multiples of a power of two, and from medium runs and large mappings),
//! medium and large sizes with and without alignment, in a private instance and in a
//! fixed region (which serves large requests from its own units).
//!
//! Each walk runs in a fork child: a report there leaves with [`REPORTED`] after naming
//! the pointer on standard error.

use cohort::class::CLASSES;
use cohort::{set_misuse_hook, Cohort, Misuse, RegionOptions};
use std::alloc::Layout;
use test_support::say;

#[path = "red_team_common/mod.rs"]
mod red_team_common;
use red_team_common::{in_child, wait};

/// A fork child's exit code: a report (the misuse hook ran).
const REPORTED: i32 = 77;

/// The fork child's misuse hook: names the pointer and leaves with [`REPORTED`].
fn leave(m: &Misuse) {
    say(&format!(
        "reported {:#x} (size {}, life {}): {:?}\n",
        m.ptr, m.size, m.life, m.problem
    ));
    // SAFETY: leaves the fork child at once.
    unsafe { libc::_exit(REPORTED) }
}

/// The (size, align) pairs walked: each small class's stride and one byte, medium and large
/// sizes, each with every power-of-two alignment up to 2 MiB.
fn requests() -> Vec<(usize, usize)> {
    let mut sizes: Vec<usize> = CLASSES.iter().map(|c| c.stride as usize).collect();
    sizes.extend([
        1,
        3,
        24,
        40,
        100,
        1000,
        5000,
        40_000,
        100_000,
        300_000,
        1 << 20,
    ]);
    sizes.extend([(2 << 20) - 64, 2 << 20, (2 << 20) + 1, 5 << 20]);
    let mut out = Vec::new();
    for &size in &sizes {
        for shift in 0..=21 {
            out.push((size, 1usize << shift));
        }
    }
    out
}

/// Allocates each request of [`requests`] from `a`, asks every unsized entry about it, and
/// frees it; panics naming the first wrong answer. A report leaves the child (the hook).
fn walk(a: &Cohort<()>) {
    let mut held = Vec::new();
    for (size, align) in requests() {
        let layout = Layout::from_size_align(size, align).unwrap();
        let p = a.alloc(layout, ());
        if p.is_null() {
            continue;
        }
        assert!(
            (p as usize).is_multiple_of(align),
            "{p:p} for ({size}, {align})"
        );
        a.check_slot_start(p);
        let usable = a.usable_size_at(p).unwrap();
        assert!(
            usable >= size,
            "usable {usable} of ({size}, {align}) at {p:p}"
        );
        // SAFETY: p is a live allocation of `a`; the resize keeps its size and align.
        let q = unsafe { a.realloc_unsized(p, size, align) }.unwrap();
        assert!(
            (q as usize).is_multiple_of(align),
            "{q:p} realloc'd for ({size}, {align})"
        );
        a.check_slot_start(q);
        held.push(q);
    }
    for q in held {
        // SAFETY: live allocations of `a`, freed once.
        unsafe { a.free_unsized(q) }.unwrap();
    }
}

fn run_in_child(build: fn() -> Cohort<()>) {
    let pid = in_child(60, || {
        set_misuse_hook(Some(leave));
        walk(&build());
    });
    assert_eq!(wait(pid), Ok(0), "the walk's child failed (77: a report)");
}

#[test]
fn guard_every_aligned_allocation_of_a_private_instance_passes_the_unsized_entries() {
    let _serial = test_support::serial();
    run_in_child(Cohort::<()>::new);
}

#[test]
fn guard_every_aligned_allocation_of_a_fixed_region_passes_the_unsized_entries() {
    let _serial = test_support::serial();
    run_in_child(|| {
        Cohort::<()>::with_options(&RegionOptions::new(64 << 20)).expect("a 64 MiB region")
    });
}
