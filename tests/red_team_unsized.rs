//! Red-team attacks on the frees and resizes without a size (`Cohort::free_unsized`,
//! `Cohort::realloc_unsized`: C's `free(p)` and `realloc(p, n)` in libcohort).

use cohort::{Cohort, Problem};
use test_support::{abort_in_child, child_case};

const CASE: &str = "COHORT_RED_TEAM_UNSIZED_CASE";

/// A pointer in the allocator's region whose block no longer holds allocations: the first
/// 64-byte slot of a block whose every slot was freed (the block went back to the pool,
/// kept empty for reuse or given back to the OS). Returns the instance and the pointer.
fn stale_pointer_in_region() -> (Cohort, *mut u8) {
    let a: Cohort = Cohort::new();
    let ptrs: Vec<*mut u8> = (0..70_000).map(|_| a.malloc(64, ())).collect();
    assert!(ptrs.iter().all(|p| !p.is_null()));
    let first = ptrs[0];
    let block = first as usize & !((2 << 20) - 1);
    for &p in &ptrs {
        if p as usize & !((2 << 20) - 1) == block {
            // SAFETY: live, freed once.
            unsafe { a.free(p, 64, ()) };
        }
    }
    assert!(a.in_region(first), "the pointer is in the region");
    (a, first)
}

fn unsized_misuse(case: &str) {
    let (a, p) = stale_pointer_in_region();
    // The allocator's own memory: the misuse (a double free) must be reported, never
    // answered `Foreign` (which tells a caller, libcohort's free above all, to hand the
    // pointer to the C library's allocator).
    // SAFETY: the misuse under test.
    let got = unsafe {
        match case {
            "free" => a.free_unsized(p).map(|()| p),
            _ => a.realloc_unsized(p, 100, 16),
        }
    };
    if let Err(m) = &got {
        if m.problem == Problem::Foreign {
            println!("answered Foreign for its own memory: {m}");
        }
    }
    // Not reached when the misuse is caught (it aborts).
    std::process::exit(0);
}

/// RED-9 (fixed by capi 6985b36; failed before it): `free_unsized` documents `Problem::Foreign` "when `ptr` is not in this
/// allocator's memory ... the caller may hand the pointer to the allocator it came from".
/// A pointer inside the region whose block was emptied (a double free, or a wild pointer
/// into cohort's memory) gets `Foreign` too, so libcohort's `free(p)` and `realloc(p, n)`
/// hand cohort's own memory to glibc's `__libc_free` / `__libc_realloc`, which read the
/// 16 bytes before `p` (the previous slot's user data) as a chunk header: glibc's "invalid
/// pointer" abort at best, a forged chunk silently taken into glibc's heap at worst,
/// instead of cohort's report. `in_region(p)` already tells it apart (two instructions).
#[test]
fn an_unsized_free_of_cohort_memory_is_never_foreign() {
    if let Some(case) = child_case(CASE) {
        unsized_misuse(&case);
        return;
    }
    for case in ["free", "realloc"] {
        let stderr = abort_in_child(
            "an_unsized_free_of_cohort_memory_is_never_foreign",
            CASE,
            case,
        );
        assert!(stderr.contains("cohort: "), "{case}: {stderr}");
    }
}

const INSIDE_CASE: &str = "COHORT_RED_TEAM_UNSIZED_INSIDE_CASE";

/// A pointer inside a large allocation (a mapping of its own, outside the region), not at
/// its start, freed or resized without its size: live, or its mapping freed and kept in
/// the cache of large mappings. Not reached when the misuse is reported (it aborts).
fn inside_large_misuse(case: &str) {
    let a: Cohort = Cohort::new();
    const LEN: usize = 4 << 20;
    let p = a.malloc(LEN, ());
    assert!(
        !p.is_null() && !a.in_region(p),
        "a large allocation outside the region"
    );
    // SAFETY: inside the allocation.
    let inside = unsafe { p.add(64 << 10) };
    // SAFETY: the misuse under test.
    let got = unsafe {
        match case {
            "free" => a.free_unsized(inside),
            "realloc" => a.realloc_unsized(inside, 100, 16).map(|_| ()),
            _ => {
                a.free(p, LEN, ());
                a.free_unsized(inside)
            }
        }
    };
    println!("{case}: {:?}", got.map_err(|m| m.problem));
    std::process::exit(0);
}

/// RED-74 (a sibling of RED-9): a pointer inside a live large allocation, not at its start,
/// is this allocator's memory, yet `free_unsized` and `realloc_unsized` answer
/// `Problem::Foreign`, which their docs
/// give only for memory that is not this allocator's and which tells the caller to hand the
/// pointer to the allocator it came from: libcohort's `free(p + 65536)` of a `malloc(4 MiB)`
/// calls glibc's `__libc_free` on cohort's mapping, which reads the 16 bytes before it (the
/// caller's data) as a chunk header ("free(): invalid pointer" at best; a header that reads
/// as a mapped chunk makes glibc unmap that range of cohort's mapping). A medium
/// allocation's inside pointer and a large run's in a region are reported ("inside a
/// medium allocation", `NotLarge`), and so is one inside a freed mapping the cache keeps
/// (the third case, which passes on main).
#[test]
fn a_pointer_inside_a_large_mapping_is_never_foreign() {
    if let Some(case) = child_case(INSIDE_CASE) {
        inside_large_misuse(&case);
        return;
    }
    let mut foreign = Vec::new();
    for case in ["free", "realloc", "cached"] {
        let args = [
            "--exact",
            "a_pointer_inside_a_large_mapping_is_never_foreign",
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ];
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(args)
            .env(INSIDE_CASE, case)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !stderr.contains("cohort: ") {
            foreign.push(format!(
                "{case}: {} ({:?})",
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .find_map(|l| l
                        .split_once(&format!("{case}: "))
                        .map(|(_, r)| r.to_owned()))
                    .unwrap_or_default(),
                out.status
            ));
        }
    }
    assert!(foreign.is_empty(), "not reported: {foreign:#?}");
}
