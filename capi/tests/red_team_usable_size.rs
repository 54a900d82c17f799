//! Red-team attacks on the drop-in `malloc_usable_size`: capi's README says pointers that
//! are not cohort's are "recognised by the region bounds and the large table and handed to
//! glibc", "so no block of one allocator reaches the other's". `malloc_usable_size` asks
//! `Cohort::allocation_at`, whose `None` also means "cohort's memory, but no live
//! allocation starts here" (inside a large mapping or a medium run, inside a freed large
//! mapping the cache keeps): those pointers go to glibc's `malloc_usable_size`, which
//! reads the 8 bytes before them, cohort's memory, as a chunk header.
//!
//! Each case runs in a child process of its own (this test binary again) under
//! `LD_PRELOAD=libcohort.so`, so the process's `malloc` family is cohort's, as a C
//! program's would be. The child writes, 8 bytes before the pointer it asks about, what
//! glibc reads as the header of an mmapped chunk of 1 MiB, and prints the answer. cohort's
//! answer is 0 or its misuse report (an abort with "cohort: " on standard error); glibc's is
//! `1 MiB - 16` (or a fault reading before the pointer).

mod preloaded;

use preloaded::{rerun_case, symbol};
use std::ffi::c_void;

const CASE: &str = "COHORT_RED_TEAM_USABLE_SIZE_CASE";

const LARGE: usize = 4 << 20;

/// What glibc's `malloc_usable_size` reads before a pointer as an mmapped chunk's size
/// field: 1 MiB, with `IS_MMAPPED` (2) set.
const FAKE_HEADER: usize = (1 << 20) | 2;

/// One question, in a process whose malloc is cohort's: prints the answer and exits.
fn ask(case: &str) {
    // SAFETY: the C library's declaration of malloc_usable_size (cohort's, preloaded).
    let usable = unsafe {
        std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void) -> usize>(symbol(
            "malloc_usable_size",
        ))
    };
    // SAFETY: the C library's functions (cohort's, preloaded), no preconditions.
    let probe = unsafe { libc::malloc(100) };
    // SAFETY: a live allocation.
    assert_eq!(unsafe { usable(probe) }, 112, "malloc is not cohort's");
    // SAFETY: each pointer is asked about while its allocation is mapped (the freed large
    // one stays in cohort's cache: 4 MiB is below the cache's bounds); the fake header is
    // written inside the allocation's own bytes.
    let answer = unsafe {
        let (p, at) = match case {
            "inside a large allocation" => (libc::malloc(LARGE), 64 << 10),
            "inside a medium run" => (libc::malloc(100_000), 4096),
            "inside a small slot" => (libc::malloc(64), 16),
            _ => {
                // A large allocation freed: its mapping kept by cohort's cache.
                let p = libc::malloc(LARGE).cast::<u8>();
                assert!(!p.is_null());
                p.add(64 << 10).cast::<usize>().sub(1).write(FAKE_HEADER);
                libc::free(p.cast());
                println!("answer {}", usable(p.add(64 << 10).cast()));
                std::process::exit(0);
            }
        };
        let p = p.cast::<u8>();
        assert!(!p.is_null());
        p.add(at).cast::<usize>().sub(1).write(FAKE_HEADER);
        usable(p.add(at).cast())
    };
    println!("answer {answer}");
    std::process::exit(0);
}

/// Runs `case` of this binary's test `test` in a child under `LD_PRELOAD`; returns a
/// description of what happened when it was neither 0 nor cohort's report.
fn outcome(test: &str, case: &str) -> Option<String> {
    let (reported, answer, out) = rerun_case(test, CASE, case);
    let zero = out.status.success() && answer.as_deref() == Some("0");
    (!reported && !zero).then(|| format!("{case}: {:?}, {answer:?}", out.status))
}

/// RED-79: `malloc_usable_size` of a pointer into cohort's memory where no live allocation
/// starts (inside a live large allocation, inside a medium run in the region, inside a
/// freed large allocation whose mapping the cache keeps) is handed to glibc's
/// `malloc_usable_size`, which reads cohort's bytes before it as a chunk header: on main
/// 53822bb it answers glibc's `1 MiB - 16` from the fake header (or faults). `free` and
/// `realloc` of the same pointers report them (`InsideLarge`, `NotARun`, double free).
#[test]
fn usable_size_never_hands_cohorts_memory_to_the_c_library() {
    if let Ok(case) = std::env::var(CASE) {
        ask(&case);
        return;
    }
    let test = "usable_size_never_hands_cohorts_memory_to_the_c_library";
    let wrong: Vec<String> = [
        "inside a large allocation",
        "inside a medium run",
        "a freed large allocation the cache keeps",
    ]
    .into_iter()
    .filter_map(|case| outcome(test, case))
    .collect();
    assert!(wrong.is_empty(), "the C library answered: {wrong:#?}");
}

/// RED-80: `malloc_usable_size(p + 16)` of a live 64-byte `malloc` answers the slot's
/// stride (64, on main 53822bb) as if the slot started there: a program that trusts it
/// writes 16 bytes into the next slot. (`allocation_at`'s answer "means something only
/// when ptr is the start of a live allocation"; the drop-in passes it on unchecked.)
#[test]
fn usable_size_inside_a_small_slot_is_not_the_slots_stride() {
    if let Ok(case) = std::env::var(CASE) {
        ask(&case);
        return;
    }
    let test = "usable_size_inside_a_small_slot_is_not_the_slots_stride";
    let wrong = outcome(test, "inside a small slot");
    assert!(wrong.is_none(), "{wrong:?}");
}
