//! `Cohort::usable_size_at`: the usable size of the live allocation starting at a pointer,
//! found from the address (the C library's `malloc_usable_size` answers with it). Valid
//! pointers get their usable size and foreign ones `Problem::Foreign`; a pointer into
//! cohort's memory that starts no live allocation aborts with a report naming it, because
//! a caller told "foreign" would ask another allocator, which reads cohort's bytes. The
//! unsized resize takes the same checks (a resize inside a slot used to free the inside
//! pointer, putting it on the block's free list).

use cohort::class::{CLASSES, GRANULE, MAX_MEDIUM, MAX_SMALL};
use cohort::{Cohort, Problem};

cohort::lifetime_classes! {
    enum Life { A, B }
}

const CHILD_ENV: &str = "COHORT_USABLE_SIZE_CHILD";

#[test]
fn every_live_allocation_answers_its_usable_size_and_foreign_memory_is_refused() {
    let a = Cohort::<Life>::new();
    let mut sizes: Vec<usize> = CLASSES.iter().map(|c| c.stride as usize).collect();
    sizes.extend([
        1,
        7,
        100,
        MAX_SMALL + 1,
        100_000,
        MAX_MEDIUM,
        MAX_MEDIUM + 1,
        3 << 20,
    ]);
    for &size in &sizes {
        let p = a.malloc(size, Life::B);
        let usable = a.usable_size_at(p).expect("live");
        assert!(usable >= size, "size {size}: {usable}");
        assert_eq!(
            Some(usable),
            a.allocation_at(p).map(|f| f.usable),
            "size {size}"
        );
        if size > MAX_SMALL && size <= MAX_MEDIUM {
            assert_eq!(usable, size.next_multiple_of(GRANULE), "size {size}");
        }
        // SAFETY: the answer's bytes are the allocation's: written, then freed with the
        // usable size (any size up to it frees).
        unsafe {
            p.write_bytes(0x5a, usable);
            a.free(p, usable, Life::B);
        }
    }
    assert_eq!(a.usable_size_at(core::ptr::null()), Ok(0));
    let other = Box::new([7u8; 64]);
    let err = a.usable_size_at(other.as_ptr()).unwrap_err();
    assert_eq!(err.problem, Problem::Foreign);
    assert_eq!(*other, [7u8; 64]);
    assert!(a.is_empty());
}

/// The child side of [`a_pointer_into_cohorts_memory_starting_nothing_aborts`].
#[test]
fn usable_size_child() {
    let Some(case) = test_support::child_case(CHILD_ENV) else {
        return;
    };
    let a = Cohort::<Life>::new();
    let keep = a.malloc(64, Life::A);
    let (p, misuse) = match case.as_str() {
        "inside a small slot" | "realloc inside a small slot" => {
            let p = a.malloc(64, Life::A);
            (p, p.wrapping_add(16))
        }
        "inside a medium run" => {
            let p = a.malloc(100_000, Life::A);
            (p, p.wrapping_add(4096))
        }
        "inside a large allocation" => {
            let p = a.malloc(4 << 20, Life::A);
            (p, p.wrapping_add(64 << 10))
        }
        "a freed large allocation" => {
            let p = a.malloc(4 << 20, Life::A);
            // SAFETY: live, freed once: its mapping stays in the cache.
            unsafe { a.free(p, 4 << 20, Life::A) };
            (core::ptr::null_mut(), p)
        }
        _ => panic!("unknown case {case}"),
    };
    eprintln!("child: asking about {:#x}", misuse as usize);
    let answer = if case.starts_with("realloc") {
        // SAFETY: the misuse under test (reported before anything is changed).
        unsafe { a.realloc_unsized(misuse, 200, 8) }.map(|q| q as usize)
    } else {
        a.usable_size_at(misuse)
    };
    eprintln!("child: the misuse returned {answer:?}");
    // SAFETY: (not reached when the misuse is reported) live allocations of this instance.
    unsafe {
        a.free(keep, 64, Life::A);
        if !p.is_null() {
            a.free_unsized(p).unwrap();
        }
    }
}

/// A pointer inside a small slot, a medium run or a large allocation, or into a freed
/// large mapping the cache keeps, is cohort's memory starting no live allocation: the size
/// query and the unsized resize abort naming it (before this check the query answered the
/// slot's stride for an inside pointer, and `Problem::Foreign` for the others, which the C
/// library's `malloc_usable_size` then read as its own chunk).
#[test]
fn a_pointer_into_cohorts_memory_starting_nothing_aborts() {
    for (case, says) in [
        (
            "inside a small slot",
            "not the start of a slot (stride 64 B)",
        ),
        ("realloc inside a small slot", "not the start of a slot"),
        ("inside a medium run", "cohort: "),
        (
            "inside a large allocation",
            "inside the large allocation at",
        ),
        ("a freed large allocation", "cohort: "),
    ] {
        let stderr = test_support::abort_in_child("usable_size_child", CHILD_ENV, case);
        assert!(stderr.contains(says), "{case}: {stderr}");
        assert!(!stderr.contains("misuse returned"), "{case}: {stderr}");
    }
}
