//! The cache of freed large mappings: a steady loop of one large size makes no system call
//! and no page fault after its first round; the byte bound holds under a burst; zeroed
//! requests served from the cache read zero; a free of a cached address is a double free;
//! `compact` and instance drop unmap the cache, `release_class` caches its class's live
//! large allocations as their frees would.
//!
//! System calls are counted two ways: `Stats::large_system_calls` (what the large paths
//! decided to map, unmap or remap) and the calling thread's minor page faults
//! (`getrusage(RUSAGE_THREAD)`), which a fresh mapping per round pays on every page it
//! touches and a reused one does not: the second holds before the cache existed too.

use cohort::class::MAX_MEDIUM;
use cohort::{Cohort, Problem, Retention};
use std::time::Duration;
use test_support::{rss, serial};

cohort::lifetime_classes! {
    enum Life { A, B }
}

// The tests of this file take turns (`serial()`): they read the process's resident size.

/// Minor page faults of the calling thread so far.
fn minor_faults() -> i64 {
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut usage: libc::rusage = unsafe { core::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    assert_eq!(rc, 0);
    usage.ru_minflt
}

/// Writes one byte per 4 KiB page of `len` bytes at `p`.
///
/// # Safety
/// `p` is valid for writes of `len` bytes.
unsafe fn touch(p: *mut u8, len: usize, byte: u8) {
    for i in (0..len).step_by(4096) {
        // SAFETY: i < len (caller).
        unsafe { p.add(i).write(byte) };
    }
}

/// Allocates `size` bytes in `life` and frees them: the address of a mapping now cached.
fn allocated_and_freed(a: &Cohort<Life>, size: usize, life: Life) -> *mut u8 {
    let p = a.malloc(size, life);
    assert!(!p.is_null());
    // SAFETY: a live allocation of (size, life), freed once; only its address is kept.
    unsafe { a.free(p, size, life) };
    p
}

/// An instance with the default bounds and a delay no slow machine reaches within a test
/// (the tests of this file are about the bounds and reuse, not the time).
fn patient() -> Cohort<Life> {
    let a = Cohort::<Life>::new();
    a.set_retention(cache(64 << 20, Duration::from_secs(600)));
    a
}

/// The default retention with a large cache of `bytes` and a delay of `delay`.
fn cache(bytes: usize, delay: Duration) -> Retention {
    Retention {
        large_cache_bytes: bytes,
        delay,
        ..Retention::DEFAULT
    }
}

fn problem(r: Result<(), cohort::Misuse>) -> Problem {
    r.expect_err("misuse reported").problem
}

fn steady_loop_is_free_of_system_calls(size: usize) {
    let _serial = serial();
    let a = patient();
    let first = a.malloc(size, Life::A);
    assert!(!first.is_null());
    // SAFETY: a live allocation of `size` bytes, freed once.
    unsafe {
        touch(first, size, 1);
        a.free(first, size, Life::A);
    }
    let calls = a.stats().large_system_calls;
    let faults = minor_faults();
    for round in 0..1000 {
        let p = a.malloc(size, Life::A);
        assert!(!p.is_null());
        // SAFETY: as above.
        unsafe {
            touch(p, size, round as u8);
            a.free(p, size, Life::A);
        }
    }
    let stats = a.stats();
    assert_eq!(
        stats.large_system_calls - calls,
        0,
        "{size}: system calls in 1000 rounds after the first"
    );
    let faulted = minor_faults() - faults;
    // A fresh mapping per round faults size / 4096 pages a round (16 000 for 64 KiB).
    assert!(
        faulted < 100,
        "{size}: {faulted} page faults in 1000 rounds after the first"
    );
    assert_eq!(stats.large_allocations, 0, "cached mappings are not live");
    assert_eq!((stats.large_cached, stats.large_bytes), (1, 0));
    assert!(a.is_empty());
}

#[test]
fn a_loop_of_just_above_the_medium_sizes_makes_no_system_call_after_the_first_round() {
    steady_loop_is_free_of_system_calls(MAX_MEDIUM + (64 << 10));
}

#[test]
fn a_loop_of_2_mib_makes_no_system_call_after_the_first_round() {
    steady_loop_is_free_of_system_calls(2 << 20);
}

#[test]
fn a_loop_of_varying_large_sizes_makes_no_system_call_and_no_fault_after_the_first_round() {
    let _serial = serial();
    let a = patient();
    // The lengths a program parsing inputs of varying sizes asks for: none within an eighth
    // of another, all below the cache's bound (64 MiB), the longest first.
    let sizes = [13 << 20, 5 << 20, 9 << 20, 7 << 20, 11 << 20, 3 << 20];
    let round = |byte: u8| {
        for &size in &sizes {
            let p = a.malloc(size, Life::A);
            assert!(!p.is_null());
            // SAFETY: a live allocation of `size` bytes, freed once.
            unsafe {
                touch(p, size, byte);
                a.free(p, size, Life::A);
            }
        }
    };
    round(1);
    let calls = a.stats().large_system_calls;
    let faults = minor_faults();
    for r in 0..20 {
        round(r);
    }
    let s = a.stats();
    assert_eq!(
        s.large_system_calls - calls,
        0,
        "system calls in 20 rounds after the first"
    );
    // Mapped afresh, each round would fault 12 032 pages.
    let faulted = minor_faults() - faults;
    assert!(
        faulted < 100,
        "{faulted} page faults in 20 rounds after the first"
    );
    assert!(s.large_cached_bytes <= 13 << 20, "{}", s.large_cached_bytes);
    assert!(a.is_empty());
}

/// The `VmFlags` of the mapping that holds `p` (`/proc/self/smaps`).
fn vm_flags(p: *mut u8) -> Vec<String> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = (lo..hi).contains(&(p as usize));
                continue;
            }
        }
        if let Some(flags) = line.strip_prefix("VmFlags:").filter(|_| inside) {
            return flags.split_whitespace().map(String::from).collect();
        }
    }
    panic!("no mapping holds {p:?}");
}

/// True when the kernel backs mappings advised `MADV_HUGEPAGE` with huge pages.
fn huge_pages_on_advice() -> bool {
    let enabled = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled");
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    enabled.is_ok_and(|e| e.contains("[always]") || e.contains("[madvise]")) && page == 4096
}

#[test]
fn a_fresh_buffer_of_2_mib_or_more_asks_for_huge_pages_and_a_zeroed_one_does_not() {
    let _serial = serial();
    let a = patient();
    // Below 2 MiB: no huge page fits; from 2 MiB: aligned to one, and advised where the
    // kernel backs advised mappings with them.
    let small = a.malloc((1 << 20) + (128 << 10), Life::A);
    let buffer = a.malloc(5 << 20, Life::A);
    let zeroed = a.calloc(5 << 20, Life::A);
    assert!(!small.is_null() && !buffer.is_null() && !zeroed.is_null());
    let huge = huge_pages_on_advice();
    assert!(!vm_flags(small).contains(&"hg".to_string()));
    assert_eq!(
        vm_flags(buffer).contains(&"hg".to_string()),
        huge,
        "{:?}",
        vm_flags(buffer)
    );
    if huge {
        assert_eq!(buffer as usize % (2 << 20), 0, "aligned to a huge page");
    }
    // A zeroed request may be sparse: its pages stay small (its resident size is what it
    // touches).
    assert!(!vm_flags(zeroed).contains(&"hg".to_string()));
    // SAFETY: live, freed once each.
    unsafe {
        a.free(small, (1 << 20) + (128 << 10), Life::A);
        a.free(buffer, 5 << 20, Life::A);
        a.free(zeroed, 5 << 20, Life::A);
    }
}

#[test]
fn a_similar_size_reuses_a_range_as_it_is_and_a_shorter_one_takes_its_head() {
    let _serial = serial();
    let a = patient();
    // The page size (a one-page mapping: large only by its alignment).
    let page = a.usable_size(std::alloc::Layout::from_size_align(1, 8192).unwrap());
    // Above the medium sizes (up to 1 MiB, served from blocks).
    let n = (MAX_MEDIUM / page).max(1) * 16;
    let (long, short, shorter) = (n * page, (n - n / 16) * page, (n - n / 8) * page);
    let p = allocated_and_freed(&a, long, Life::A);
    // 15/16 + 1/8 of it >= 1: reused.
    let q = a.malloc(short, Life::B);
    assert_eq!(q, p, "a 16-page mapping serves 15 pages");
    // The usable size is what the request rounds to: a free must give that size.
    // SAFETY: live; a wrong size changes nothing.
    unsafe {
        assert!(matches!(
            problem(a.try_free(q, long, Life::B)),
            Problem::LargeMismatch { .. }
        ));
        a.free(q, short, Life::B);
    }
    // 14/16 + 1/8 of it < 1: more than an eighth too long, so the request takes its head
    // and its tail stays cached (no system call).
    let calls = a.stats().large_system_calls;
    let r = a.malloc(shorter, Life::A);
    assert_eq!(r, p, "the head of the cached range");
    let s = a.stats();
    assert_eq!(s.large_system_calls, calls);
    assert_eq!((s.large_cached, s.large_cached_bytes), (1, long - shorter));
    assert_eq!(s.large_bytes, shorter);
    // SAFETY: live, freed once.
    unsafe { a.free(r, shorter, Life::A) };
}

#[test]
fn a_request_of_another_length_reuses_a_cached_range_and_its_pages() {
    let _serial = serial();
    let a = Cohort::<Life>::new();
    // Below its bound too: the cache reuses what it holds before it maps more.
    a.set_retention(cache(64 << 20, Duration::from_secs(600)));
    let p = a.malloc(12 << 20, Life::A);
    assert!(!p.is_null());
    // SAFETY: 12 MiB of ours.
    unsafe { touch(p, 12 << 20, 1) };
    // SAFETY: live, freed once.
    unsafe { a.free(p, 12 << 20, Life::A) };
    // 10 MiB: 12 is more than an eighth too long, so 10 MiB of it go, pages and all; the
    // last 2 MiB stay cached.
    let faults = minor_faults();
    let q = a.malloc(10 << 20, Life::B);
    assert_eq!(q, p, "the head of the cached range");
    // SAFETY: 10 MiB of ours.
    unsafe { touch(q, 10 << 20, 2) };
    let trimmed = minor_faults() - faults;
    assert!(
        trimmed < 64,
        "{trimmed} faults touching a cached range's 2560 pages"
    );
    let s = a.stats();
    assert_eq!((s.large_cached, s.large_bytes), (1, 10 << 20));
    assert_eq!(s.large_cached_bytes, 2 << 20);
    // The usable size is the request's: a free with the old length is misuse.
    // SAFETY: live; a wrong size changes nothing.
    unsafe {
        assert!(matches!(
            problem(a.try_free(q, 12 << 20, Life::B)),
            Problem::LargeMismatch { .. }
        ));
        a.free(q, 10 << 20, Life::B);
    }
    // Freed, the 10 MiB join the cached 2 MiB after them: one range of 12 MiB again.
    let s = a.stats();
    assert_eq!((s.large_cached, s.large_cached_bytes), (1, 12 << 20));
    // 14 MiB: the cached 12 MiB grow where they are, or moved with their pages; only the
    // 2 new MiB fault in. A range grows in place only when the address space after it is
    // free; it is not moved where buffers get huge pages (a move to another offset in a
    // huge page breaks them: a fresh mapping faults less), nor with a page above the
    // kernel's (COHORT_PAGE_SIZE: the kernel would move it to an address aligned to its own
    // page only). Then the request gets a fresh mapping and the range stays cached.
    let faults = minor_faults();
    let r = a.malloc(14 << 20, Life::A);
    assert!(!r.is_null());
    // SAFETY: 14 MiB of ours.
    unsafe { touch(r, 14 << 20, 3) };
    let faulted = minor_faults() - faults;
    let page = a.usable_size(std::alloc::Layout::from_size_align(1, 8192).unwrap());
    let s = a.stats();
    if r == q || (page == 4096 && !huge_pages_on_advice()) {
        assert_eq!(s.large_cached, 0, "grown");
        assert!(
            faulted < 1024,
            "{faulted} faults touching a grown range (512 pages are new, 3584 in all)"
        );
    } else if s.large_cached == 1 {
        assert_eq!(
            s.large_cached_bytes,
            12 << 20,
            "the ungrown range stays cached"
        );
    } else {
        assert_eq!(s.large_cached, 0, "moved");
        assert!(page == 4096 && !huge_pages_on_advice());
    }
    // SAFETY: live, freed once.
    unsafe { a.free(r, 14 << 20, Life::A) };
    // Reused for a zeroed request of another length (a head, then grown): it reads zero.
    for len in [9 << 20, 15 << 20] {
        let z = a.calloc(len, Life::A);
        assert!(!z.is_null());
        // SAFETY: `len` bytes of ours, read then written.
        let zero = unsafe { std::slice::from_raw_parts(z, len) }
            .iter()
            .all(|&b| b == 0);
        assert!(zero, "a reused mapping of {len} B for calloc reads zero");
        // SAFETY: as above.
        unsafe { touch(z, len, 4) };
        // SAFETY: live, freed once.
        unsafe { a.free(z, len, Life::A) };
    }
}

#[test]
fn zeroed_requests_from_the_cache_read_zero() {
    let _serial = serial();
    let a = patient();
    let size = MAX_MEDIUM + (64 << 10);
    let dirty = |a: &Cohort<Life>| {
        let p = a.malloc(size, Life::A);
        // SAFETY: a live allocation of `size` bytes, freed once.
        unsafe {
            p.write_bytes(0xAB, size);
            a.free(p, size, Life::A);
        }
        p
    };
    let all_zero = |p: *mut u8, len: usize| {
        // SAFETY: p holds at least len bytes (the callers').
        (0..len).all(|i| unsafe { p.add(i).read() } == 0)
    };
    // calloc of the same size.
    let p = dirty(&a);
    let q = a.calloc(size, Life::A);
    assert_eq!(q, p, "served from the cache");
    assert!(all_zero(q, size));
    // SAFETY: live, freed once.
    unsafe { a.free(q, size, Life::A) };
    // alloc_zeroed of a shorter size within 1/8, then recalloc into the mapping's spare
    // pages (in place: they held the last user's bytes).
    let p = dirty(&a);
    let short = size - (4 << 10);
    let q = a.alloc_zeroed(
        std::alloc::Layout::from_size_align(short, 8).unwrap(),
        Life::A,
    );
    assert_eq!(q, p, "served from the cache");
    assert!(all_zero(q, short));
    // SAFETY: live with (short, A); the result is freed once.
    unsafe {
        q.write_bytes(7, short);
        let r = a.recalloc(q, short, size, Life::A);
        assert_eq!(r, q, "grown in place into the mapping");
        assert!((0..short).all(|i| r.add(i).read() == 7));
        assert!(
            (short..size).all(|i| r.add(i).read() == 0),
            "the grown part reads zero"
        );
        a.free(r, size, Life::A);
    }
    assert!(a.is_empty());
}

#[test]
fn zeroed_requests_from_split_joined_and_grown_ranges_read_zero() {
    let _serial = serial();
    let a = patient();
    let all_zero = |p: *mut u8, len: usize| {
        // SAFETY: p holds at least len bytes (the callers').
        unsafe { std::slice::from_raw_parts(p, len) }
            .iter()
            .all(|&b| b == 0)
    };
    let dirty = |p: *mut u8, len: usize| {
        // SAFETY: p holds at least len bytes (the callers').
        unsafe { p.write_bytes(0xAB, len) }
    };
    let p = a.malloc(12 << 20, Life::A);
    assert!(!p.is_null());
    dirty(p, 12 << 20);
    // SAFETY: live, freed once.
    unsafe { a.free(p, 12 << 20, Life::A) };
    // Two heads split off the dirty range, then a page-aligned head of the rest.
    let x = a.calloc(5 << 20, Life::A);
    let y = a.calloc(5 << 20, Life::B);
    let z = a.alloc_zeroed(
        std::alloc::Layout::from_size_align((1 << 20) + 4096, 4096).unwrap(),
        Life::A,
    );
    assert_eq!(
        (x, y, z),
        (p, p.wrapping_add(5 << 20), p.wrapping_add(10 << 20))
    );
    assert!(all_zero(x, 5 << 20) && all_zero(y, 5 << 20) && all_zero(z, (1 << 20) + 4096));
    dirty(x, 5 << 20);
    dirty(y, 5 << 20);
    dirty(z, (1 << 20) + 4096);
    // SAFETY: live, freed once each: they join the cached rest into one range again.
    unsafe {
        a.free(y, 5 << 20, Life::B);
        a.free(x, 5 << 20, Life::A);
        a.dealloc(
            z,
            std::alloc::Layout::from_size_align((1 << 20) + 4096, 4096).unwrap(),
            Life::A,
        );
    }
    let s = a.stats();
    assert_eq!((s.large_cached, s.large_cached_bytes), (1, 12 << 20));
    // The joined range, whole; then grown past it; then recalloc into a split head's
    // neighbour (in place: the cached tail after it).
    let w = a.calloc(12 << 20, Life::A);
    assert_eq!(w, p);
    assert!(all_zero(w, 12 << 20));
    dirty(w, 12 << 20);
    // SAFETY: live, freed once.
    unsafe { a.free(w, 12 << 20, Life::A) };
    let g = a.calloc(14 << 20, Life::A);
    assert!(!g.is_null() && all_zero(g, 14 << 20));
    dirty(g, 14 << 20);
    // SAFETY: live, freed once.
    unsafe { a.free(g, 14 << 20, Life::A) };
    let h = a.calloc(3 << 20, Life::A);
    assert!(all_zero(h, 3 << 20));
    // SAFETY: live with (3 MiB, A); the result is freed once.
    unsafe {
        h.write_bytes(7, 3 << 20);
        let r = a.recalloc(h, 3 << 20, 9 << 20, Life::A);
        assert!(!r.is_null());
        assert!((0..3 << 20).all(|i| r.add(i).read() == 7));
        assert!(
            all_zero(r.add(3 << 20), 6 << 20),
            "the grown part reads zero"
        );
        a.free(r, 9 << 20, Life::A);
    }
    assert!(a.is_empty());
}

#[test]
fn a_zeroed_loop_faults_only_its_first_round_and_a_sparse_one_stays_sparse() {
    let _serial = serial();
    let a = patient();
    // `vec![0u8; n]` in a loop: zeroed requests of 8 MiB, every page written.
    let size = 8 << 20;
    let round = |byte: u8| {
        let p = a.calloc(size, Life::A);
        assert!(!p.is_null());
        // SAFETY: `size` bytes of ours, read, then written, then freed once.
        unsafe {
            assert!((0..size).step_by(4096).all(|i| p.add(i).read() == 0));
            assert!(p.add(size - 1).read() == 0);
            touch(p, size, byte);
            p.add(size - 1).write(byte);
            a.free(p, size, Life::A);
        }
    };
    round(1);
    let faults = minor_faults();
    for r in 0..20 {
        round(r + 2);
    }
    // Dropped and faulted in again, each round would fault 2048 pages (4 huge ones).
    let faulted = minor_faults() - faults;
    assert!(
        faulted < 20,
        "{faulted} page faults in 20 zeroed rounds after the first"
    );
    // A sparse table: 64 MiB zeroed, 1 MiB of it written, freed, then zeroed again: the
    // zeroing writes what is resident and no more (it reads zero everywhere).
    let table = 64 << 20;
    let p = a.calloc(table, Life::A);
    // SAFETY: `table` bytes of ours, 1 MiB written in its middle, freed once.
    unsafe {
        p.add(table / 2).write_bytes(0xAB, 1 << 20);
        a.free(p, table, Life::A);
    }
    let before = rss();
    let q = a.calloc(table, Life::A);
    assert_eq!(q, p, "the cached range");
    assert!(
        rss() < before + (8 << 20),
        "zeroing made the untouched pages resident"
    );
    // SAFETY: as above.
    unsafe {
        assert!((0..table).step_by(4096).all(|i| q.add(i).read() == 0));
        assert!(std::slice::from_raw_parts(q.add(table / 2), 1 << 20)
            .iter()
            .all(|&b| b == 0));
        a.free(q, table, Life::A);
    }
}

/// A recalloc that grows a large allocation into the cached range after it (its own pages,
/// kept with the last user's bytes) zeroes the new part by residence, as a zeroed request
/// from the cache does: what is resident is written, the rest dropped, so a sparse cached
/// range stays sparse. Failed before: the growth wrote zeros over all of it (36 MiB made
/// resident).
#[test]
fn a_recalloc_into_a_cached_range_reads_zero_and_stays_sparse() {
    let _serial = serial();
    let a = patient();
    let mib = 1 << 20;
    // A sparse 48 MiB table, 1 MiB of it written, freed: cached with its pages.
    let table = 48 * mib;
    let p = a.calloc(table, Life::A);
    assert!(!p.is_null());
    // SAFETY: `table` bytes of ours, 1 MiB written in its middle, freed once.
    unsafe {
        p.add(table / 2).write_bytes(0xAB, mib);
        a.free(p, table, Life::A);
    }
    // 4 MiB: the head of the cached range, written all over; the rest stays cached.
    let b = a.malloc(4 * mib, Life::A);
    assert_eq!(b, p, "the head of the cached range");
    // SAFETY: 4 MiB of ours.
    unsafe { b.write_bytes(0x5A, 4 * mib) };
    let before = rss();
    // SAFETY: allocated above with this size and class.
    let q = unsafe { a.recalloc(b, 4 * mib, 40 * mib, Life::A) };
    let grown = rss().saturating_sub(before);
    assert_eq!(q, b, "grown in place, into the cached rest of the range");
    assert!(
        grown < 8 * mib,
        "the recalloc made {} MiB resident zeroing a sparse cached range",
        grown / mib
    );
    // SAFETY: 40 MiB of ours, freed once.
    unsafe {
        assert!(std::slice::from_raw_parts(q, 4 * mib)
            .iter()
            .all(|&x| x == 0x5A));
        assert!((4 * mib..40 * mib)
            .step_by(4096)
            .all(|i| q.add(i).read() == 0));
        assert!(std::slice::from_raw_parts(q.add(table / 2), mib)
            .iter()
            .all(|&x| x == 0));
        a.free(q, 40 * mib, Life::A);
    }
}

#[test]
fn a_free_of_a_cached_address_is_a_double_free() {
    let _serial = serial();
    let a = patient();
    let p = a.malloc(1_100_000, Life::A);
    // SAFETY: live, freed once; the second free is misuse, reported, changing nothing.
    unsafe {
        assert_eq!(a.try_free(p, 1_100_000, Life::A), Ok(()));
        assert_eq!(a.stats().large_cached, 1);
        assert_eq!(
            problem(a.try_free(p, 1_100_000, Life::A)),
            Problem::DoubleFree
        );
        assert_eq!(problem(a.try_free(p, 24, Life::A)), Problem::DoubleFree);
    }
    let s = a.stats();
    assert_eq!((s.large_cached, s.large_allocations), (1, 0));
    // Reallocating it again works: the double free left the cache as it was.
    let q = a.malloc(1_100_000, Life::A);
    assert_eq!(q, p);
    // SAFETY: live, freed once.
    unsafe { a.free(q, 1_100_000, Life::A) };
}

#[test]
fn a_free_of_an_address_inside_a_joined_range_is_a_double_free() {
    let _serial = serial();
    let a = patient();
    let p = allocated_and_freed(&a, 12 << 20, Life::A);
    let x = a.malloc(5 << 20, Life::A);
    let y = a.malloc(5 << 20, Life::A);
    assert_eq!(
        (x, y),
        (p, p.wrapping_add(5 << 20)),
        "heads of the cached range"
    );
    // SAFETY: live, freed once each; then misuse, reported, changing nothing.
    unsafe {
        a.free(x, 5 << 20, Life::A);
        a.free(y, 5 << 20, Life::A);
        assert_eq!(a.stats().large_cached, 1, "joined into one range");
        assert_eq!(
            problem(a.try_free(y, 5 << 20, Life::A)),
            Problem::DoubleFree
        );
        assert_eq!(
            problem(a.try_free(x, 5 << 20, Life::A)),
            Problem::DoubleFree
        );
    }
    let s = a.stats();
    assert_eq!((s.large_cached, s.large_cached_bytes), (1, 12 << 20));
}

#[test]
fn the_byte_bound_holds_after_a_burst_of_one_gib() {
    let _serial = serial();
    let a = patient();
    let size = 2 << 20;
    let count = 512; // 1 GiB
    let before = rss();
    let ptrs: Vec<*mut u8> = (0..count)
        .map(|i| {
            let p = a.malloc(size, Life::A);
            assert!(!p.is_null());
            // SAFETY: a live allocation of `size` bytes.
            unsafe { touch(p, size, i as u8) };
            p
        })
        .collect();
    assert!(rss() >= before + count * size / 2, "the burst is resident");
    for &p in &ptrs {
        // SAFETY: live, freed once.
        unsafe { a.free(p, size, Life::A) };
    }
    let s = a.stats();
    assert!(s.large_cached_bytes <= 64 << 20, "{}", s.large_cached_bytes);
    let after = rss();
    assert!(
        after <= before + (64 << 20) + (8 << 20),
        "resident {} MiB after the burst, {} MiB before",
        after >> 20,
        before >> 20
    );
    // compact gives the cache back too.
    let compacted = a.compact();
    assert_eq!(compacted.large_mappings, s.large_cached);
    assert_eq!(a.stats().large_cached, 0);
    assert!(rss() <= before + (8 << 20));
}

#[test]
fn a_zero_bound_caches_nothing_and_a_short_delay_decays() {
    let _serial = serial();
    let a = patient();
    allocated_and_freed(&a, 2 << 20, Life::A);
    assert_eq!(a.stats().large_cached, 1);
    a.set_retention(cache(0, Duration::from_secs(1)));
    assert_eq!(a.stats().large_cached, 0, "a zero bound unmaps the cache");
    allocated_and_freed(&a, 2 << 20, Life::A);
    assert_eq!(a.stats().large_cached, 0);
    a.set_retention(cache(64 << 20, Duration::from_millis(10)));
    allocated_and_freed(&a, 2 << 20, Life::A);
    assert_eq!(a.stats().large_cached, 1);
    std::thread::sleep(Duration::from_millis(50));
    // The next large operation (of another size) unmaps what decayed.
    let q = a.malloc(4 << 20, Life::A);
    assert_eq!(a.stats().large_cached, 0, "unused past the delay: unmapped");
    // SAFETY: live, freed once.
    unsafe { a.free(q, 4 << 20, Life::A) };
}

#[test]
fn release_class_caches_live_large_allocations_within_the_bounds() {
    let _serial = serial();
    let a = patient();
    let live: Vec<*mut u8> = (0..4).map(|_| a.malloc(1300 << 10, Life::A)).collect();
    // Cached after the live ones were made (else they would take parts of it).
    allocated_and_freed(&a, 2 << 20, Life::B);
    let before = a.stats();
    // SAFETY: nothing of class A is used after this.
    let released = unsafe { a.release_class(Life::A) };
    assert_eq!(released.large, live.len());
    let s = a.stats();
    assert_eq!(s.large_allocations, 0);
    assert_eq!(
        s.large_system_calls - before.large_system_calls,
        0,
        "released as freed: cached, no unmap (the bound has room)"
    );
    assert_eq!(
        s.large_cached_bytes - before.large_cached_bytes,
        before.large_bytes,
        "every released byte cached"
    );
    // A released address is no live allocation: a free of it is a double free.
    // SAFETY: misuse, reported, changing nothing.
    assert_eq!(
        problem(unsafe { a.try_free(live[0], 1300 << 10, Life::A) }),
        Problem::DoubleFree
    );
    // Within the byte bound: a cache of 3 MiB keeps at most 3 MiB of them.
    let b = Cohort::<Life>::new();
    b.set_retention(cache(3 << 20, Duration::from_secs(600)));
    for _ in 0..4 {
        assert!(!b.malloc(1300 << 10, Life::A).is_null());
    }
    // SAFETY: nothing of class A is used after this.
    assert_eq!(unsafe { b.release_class(Life::A) }.large, 4);
    let s = b.stats();
    assert_eq!(s.large_allocations, 0);
    assert!(
        s.large_cached_bytes <= 3 << 20,
        "{} bytes cached",
        s.large_cached_bytes
    );
    assert!(s.large_cached_bytes > 0);
}

/// A loop that allocates a large buffer in a lifetime class and releases the class (never
/// freeing it one by one) reuses its mapping as a loop of frees does: no system call and no
/// page fault after its first round.
#[test]
fn a_loop_releasing_its_class_makes_no_system_call_after_the_first_round() {
    let _serial = serial();
    let a = patient();
    let size = 2 << 20;
    let round = |i: u8| {
        let p = a.malloc(size, Life::A);
        assert!(!p.is_null());
        // SAFETY: a live allocation of `size` bytes; nothing of class A is used after the
        // release.
        unsafe {
            touch(p, size, i);
            assert_eq!(a.release_class(Life::A).large, 1);
        }
    };
    round(0);
    let calls = a.stats().large_system_calls;
    let faults = minor_faults();
    for i in 1..=100 {
        round(i);
    }
    let calls = a.stats().large_system_calls - calls;
    let faulted = minor_faults() - faults;
    assert_eq!(calls, 0, "system calls in 100 rounds after the first");
    // A fresh mapping per round faults 512 pages a round.
    assert!(
        faulted < 100,
        "{faulted} page faults in 100 rounds after the first"
    );
    assert_eq!(a.stats().large_cached, 1);
}

#[test]
fn dropping_the_instance_unmaps_the_cache() {
    let _serial = serial();
    let before = rss();
    {
        let a = patient();
        let size = 8 << 20;
        let ptrs: Vec<*mut u8> = (0..4).map(|_| a.malloc(size, Life::A)).collect();
        for &p in &ptrs {
            // SAFETY: live, touched, freed once.
            unsafe {
                touch(p, size, 3);
                a.free(p, size, Life::A);
            }
        }
        assert_eq!(a.stats().large_cached_bytes, 4 * size);
        assert!(rss() >= before + 3 * size, "the cache is resident");
    }
    assert!(
        rss() <= before + (4 << 20),
        "dropped: the cache is unmapped"
    );
}

const CHILD_ENV: &str = "COHORT_LARGE_CACHE_CHILD";

/// The child side of [`an_unsized_free_of_a_cached_address_aborts_as_a_double_free`]:
/// runs only when the parent re-executes this test binary.
#[test]
fn unsized_double_free_child() {
    let Some(case) = test_support::child_case(CHILD_ENV) else {
        return;
    };
    let a = patient();
    let p = a.malloc(1_100_000, Life::A);
    // SAFETY: live, freed once; the second free (or realloc) is the misuse under test.
    unsafe {
        a.free(p, 1_100_000, Life::A);
        eprintln!("child: misusing {:#x}", p as usize);
        match case.as_str() {
            "free" => drop(a.free_unsized(p)),
            _ => drop(a.realloc_unsized(p, 2_200_000, 8)),
        }
    }
    eprintln!("child: the misuse returned");
}

/// A free without a size (the C ABI's `free`) of a cached address must abort as a double
/// free: were it called foreign, the C `free` would hand cohort's mapping to another
/// allocator.
#[test]
fn an_unsized_free_of_a_cached_address_aborts_as_a_double_free() {
    for case in ["free", "realloc"] {
        let stderr = test_support::abort_in_child("unsized_double_free_child", CHILD_ENV, case);
        assert!(stderr.contains("double free"), "{case}: {stderr}");
        assert!(!stderr.contains("misuse returned"), "{case}: {stderr}");
    }
}

/// The child side of [`an_unsized_free_inside_a_live_large_allocation_aborts`].
#[test]
fn unsized_inside_child() {
    let Some(case) = test_support::child_case(CHILD_ENV) else {
        return;
    };
    let a = patient();
    let p = a.malloc(4 << 20, Life::A);
    // SAFETY: p is live; p + 64 KiB lies inside it and starts nothing: the misuse under
    // test.
    unsafe {
        let inside = p.add(64 << 10);
        eprintln!("child: misusing {:#x}", inside as usize);
        let answer = match case.as_str() {
            "free" => a.free_unsized(inside).map(drop),
            _ => a.realloc_unsized(inside, 8 << 20, 8).map(drop),
        };
        eprintln!("child: the misuse returned {answer:?}");
    }
}

/// A free or resize without a size of a pointer inside a live large allocation must abort
/// naming it: were it called foreign, the C `free` would hand part of cohort's mapping to
/// another allocator (glibc read the bytes before it as a chunk header and unmapped 72 KiB
/// of the live allocation).
#[test]
fn an_unsized_free_inside_a_live_large_allocation_aborts() {
    for case in ["free", "realloc"] {
        let stderr = test_support::abort_in_child("unsized_inside_child", CHILD_ENV, case);
        assert!(
            stderr.contains("inside the large allocation at"),
            "{case}: {stderr}"
        );
        assert!(!stderr.contains("misuse returned"), "{case}: {stderr}");
    }
}

/// A sized free inside a live large allocation names the allocation it lies in; a
/// pointer just past a live mapping's end, or one past a freed mapping's, is not inside.
#[test]
fn a_sized_free_inside_a_live_large_allocation_names_it() {
    let _serial = serial();
    let a = patient();
    let len = 4 << 20;
    let p = a.malloc(len, Life::A);
    let usable = a.allocation_at(p).unwrap().usable;
    for offset in [1, 4096, 64 << 10, usable - 1] {
        // A large size, a medium one, a small one: each names the allocation.
        for size in [len, 100_000, 16] {
            // SAFETY: misuse, reported, changing nothing.
            let got = problem(unsafe { a.try_free(p.wrapping_add(offset), size, Life::A) });
            assert!(
                matches!(got, Problem::InsideLarge { start, .. } if start == p as usize),
                "offset {offset}, size {size}: {got:?}"
            );
        }
    }
    // SAFETY: live, freed once.
    unsafe { a.free(p, len, Life::A) };
    // SAFETY: misuse, reported, changing nothing.
    let got = problem(unsafe { a.try_free(p.wrapping_add(64 << 10), len, Life::A) });
    assert!(!matches!(got, Problem::InsideLarge { .. }), "{got:?}");
}

/// A free of a cached address with size 0 (the size of a zero-size request, whose pointer
/// frees nothing) is a double free too.
#[test]
fn a_size_zero_free_of_a_cached_address_is_a_double_free() {
    let _serial = serial();
    let a = patient();
    let p = allocated_and_freed(&a, 1_100_000, Life::A);
    // SAFETY: misuse, reported, changing nothing.
    assert_eq!(
        problem(unsafe { a.try_free(p, 0, Life::A) }),
        Problem::DoubleFree
    );
    assert_eq!(a.stats().large_cached, 1);
}
