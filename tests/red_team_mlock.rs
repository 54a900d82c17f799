//! Red-team attacks of session 9 on a process that locks all its memory
//! (`mlockall(MCL_CURRENT | MCL_FUTURE)`: real-time, audio and security programs do, so
//! that nothing of theirs is ever swapped). Every test runs in a child that first bounds
//! its address space (`RLIMIT_AS`, 1 GiB), which bounds what it can lock: unbounded, a
//! child locked whatever the allocator mapped, and an instance's reservation was
//! populated until the kernel's out-of-memory killer stopped it (23 GB). A test that found a defect is `#[ignore]`d with its number (RED-n), its
//! owner and the exact failure.

mod red_team_common;

use cohort::{Cohort, RegionOptions};
use red_team_common::*;

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

const MIB: usize = 1 << 20;
/// The address space a test child may map at most: what it can lock (and so make
/// resident) is bounded by it.
const SPACE_LIMIT: u64 = 1 << 30;

/// In the calling child: bounds its address space to [`SPACE_LIMIT`] (the lock limit is
/// no bound for root), then locks all its memory, now and future. False when a step is
/// refused (then there is nothing to test).
fn lock_all_memory_bounded() -> bool {
    let limit = libc::rlimit {
        rlim_cur: SPACE_LIMIT,
        rlim_max: SPACE_LIMIT,
    };
    // SAFETY: setrlimit and mlockall have no memory-safety preconditions; the child is the
    // caller's own.
    unsafe {
        libc::setrlimit(libc::RLIMIT_AS, &limit) == 0
            && libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) == 0
    }
}

/// This process's locked memory in KiB (`VmLck` of `/proc/self/status`).
fn locked_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmLck:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The first non-zero byte of the `n` bytes at `p`.
fn nonzero(p: *const u8, n: usize) -> Option<usize> {
    // SAFETY: the callers pass live allocations of at least n bytes.
    unsafe { std::slice::from_raw_parts(p, n) }
        .iter()
        .position(|&b| b != 0)
}

/// Runs `f` in a child that locks all its memory (bounded); fails with what it reported.
fn in_locked_child(f: impl FnOnce(&Report)) {
    let report = Report::new();
    let child = in_child_reporting(60, &report, || {
        if lock_all_memory_bounded() {
            f(&report);
        }
    });
    let ended = wait(child);
    assert_eq!(ended, Ok(0), "{}", report.message());
}

/// RED-45 (every build; owner: lead, the instance's reservation in os.rs / api.rs): a
/// private instance (`Cohort::new()`, the global allocator's kind) reserves its address
/// space (256 GiB, less where the address space is limited) mapped readable (`PROT_READ`,
/// `MAP_NORESERVE`). In a process that has called `mlockall(MCL_FUTURE)` every new mapping
/// is locked, so the kernel populates and locks the whole reservation at the first
/// allocation: unbounded, the process grew to 23 GB (the machine's memory) until the
/// out-of-memory killer took it (dmesg: `Killed process 15993 (zeroing_forms_r)
/// total-vm:306257988kB, anon-rss:23470468kB`); under this test's 1 GiB address space it
/// locks most of that for one 64-byte allocation. glibc's malloc locks what it uses.
/// Wanted: a reservation the lock does not populate (`PROT_NONE` until a unit is carved,
/// for instance). Exact failure: `in a process that locks its memory, Cohort::new()
/// .malloc(64) locked 598280 KiB (null: false)`.
#[test]
fn a_private_instance_locks_little_in_a_process_that_locks_its_memory() {
    in_locked_child(|report| {
        let before = locked_kib();
        let a = Cohort::<Life>::new();
        let p = a.malloc(64, Life::Short);
        let locked = locked_kib().saturating_sub(before);
        if p.is_null() || locked > 64 << 10 {
            report.fail(&format!(
                "in a process that locks its memory, Cohort::new().malloc(64) locked {locked} \
                 KiB (null: {})",
                p.is_null()
            ));
        }
        // SAFETY: allocated above (or null), freed once.
        unsafe { a.free(p, 64, Life::Short) };
    });
}

/// RED-45's fix keeps what a program that locks its memory asked for (session 10): the
/// reservation is not locked, but every block carved from it is, as the program's other
/// mappings are (a real-time program must not fault on its heap). A block of a second
/// lifetime class is carved after the first allocation: the locked memory grows by the
/// block (2 MiB).
#[test]
fn a_private_instance_s_blocks_are_locked_in_a_process_that_locks_its_memory() {
    in_locked_child(|report| {
        let a = Cohort::<Life>::new();
        let p = a.malloc(64, Life::Short);
        let before = locked_kib();
        let q = a.malloc(64, Life::Long);
        let locked = locked_kib().saturating_sub(before);
        if p.is_null() || q.is_null() || locked < 2 << 10 {
            report.fail(&format!(
                "in a process that locks its memory, a new block of a private instance \
                 locked {locked} KiB (null: {})",
                p.is_null() || q.is_null()
            ));
        }
        // SAFETY: allocated above (or null), freed once.
        unsafe {
            a.free(p, 64, Life::Short);
            a.free(q, 64, Life::Long);
        }
    });
}

/// RED-46 (every build; owner: lead, os.rs `decommit`, and its callers): `os::decommit`
/// assumes `MADV_DONTNEED` "cannot fail for a valid range" and ignores its result, and the
/// callers then take the memory for zero: a block or run given back and carved again is
/// fresh (`calloc` skips it), a cached large mapping of 1 MiB or more is "zeroed" by
/// dropping its pages. In a process that locks its memory `MADV_DONTNEED` refuses locked
/// pages (EINVAL), so the memory keeps its last user's bytes and `calloc` hands them out.
/// Made here in a child that locks all its memory (bounded), with a fixed region (its
/// reservation is its capacity): small, medium and large allocations written whole,
/// freed, the memory given back (`compact`), then allocated zeroed; and a full region's
/// fallback mappings reused from the large cache. Wanted: a give-back that failed leaves
/// the memory dirty (or zeroes it). Medium runs freed beside a live one (the purge marks
/// their granules clean) fail too. Exact failure: `with all memory locked: ["fixed:
/// calloc(24) #0 after compact: byte 4", "fixed: calloc(3145728) #0 after compact: byte 0",
/// "fixed: medium calloc(40000) #0 beside a live run: byte 0", "fixed: medium
/// calloc(200000) #0 beside a live run: byte 0", "fallback: calloc(3145728) (its mapping
/// reused: true): byte 0"]`.
#[test]
fn zeroing_forms_read_zero_in_a_process_that_locks_its_memory() {
    in_locked_child(|report| {
        let mut failures = Vec::new();
        let fixed = Cohort::<Life>::with_options(&RegionOptions::new(32 * MIB)).expect("fixed");
        let shared = Cohort::<Life>::shared_anonymous(32 * MIB).expect("shared");
        for (a, what, n) in [24usize, 1000, 16_000, 40_000, 300_000, 3 * MIB]
            .into_iter()
            .flat_map(|n| [(&fixed, "fixed", n), (&shared, "shared", n)])
        {
            let ps: Vec<_> = (0..16).map(|_| a.malloc(n, Life::Long)).collect();
            for &p in &ps {
                if p.is_null() {
                    continue;
                }
                // SAFETY: n bytes of ours, freed once.
                unsafe {
                    p.write_bytes(0xee, n);
                    a.free(p, n, Life::Long);
                }
            }
            let _ = a.compact();
            for i in 0..16 {
                let q = a.calloc(n, Life::Long);
                if q.is_null() {
                    continue;
                }
                let bad = nonzero(q, n);
                // SAFETY: allocated above, freed once.
                unsafe { a.free(q, n, Life::Long) };
                if let Some(at) = bad {
                    failures.push(format!("{what}: calloc({n}) #{i} after compact: byte {at}"));
                    break;
                }
            }
        }
        // Medium runs freed beside a live one (their block stays): a purge gives their
        // pages back and marks them clean.
        for n in [40_000usize, 200_000] {
            let ps: Vec<_> = (0..8).map(|_| fixed.malloc(n, Life::Short)).collect();
            for &p in &ps[1..] {
                // SAFETY: n bytes of ours, freed once.
                unsafe {
                    p.write_bytes(0xcc, n);
                    fixed.free(p, n, Life::Short);
                }
            }
            let _ = fixed.compact();
            for i in 0..7 {
                let q = fixed.calloc(n, Life::Short);
                let bad = nonzero(q, n);
                // SAFETY: allocated above, freed once.
                unsafe { fixed.free(q, n, Life::Short) };
                if let Some(at) = bad {
                    failures.push(format!(
                        "fixed: medium calloc({n}) #{i} beside a live run: byte {at}"
                    ));
                    break;
                }
            }
            // SAFETY: the live one, freed once.
            unsafe { fixed.free(ps[0], n, Life::Short) };
        }
        // A full region that falls back: mappings of its own, cached when freed.
        let b = Cohort::<Life>::with_options(&RegionOptions::new(4 * MIB).fallback(true))
            .expect("fixed, falling back");
        let run = b.malloc(4 * MIB, Life::Long);
        assert!(!run.is_null() && b.in_region(run));
        for n in [100usize, 40_000, 3 * MIB] {
            let p = b.malloc(n, Life::Short);
            assert!(!p.is_null() && !b.in_region(p));
            // SAFETY: n bytes of ours, freed once.
            unsafe {
                p.write_bytes(0xdd, n);
                b.free(p, n, Life::Short);
            }
            let q = b.calloc(n, Life::Short);
            if let Some(at) = nonzero(q, n) {
                failures.push(format!(
                    "fallback: calloc({n}) (its mapping reused: {}): byte {at}",
                    q == p
                ));
            }
            // SAFETY: allocated above, freed once.
            unsafe { b.free(q, n, Life::Short) };
        }
        // SAFETY: the run, freed once.
        unsafe { b.free(run, 4 * MIB, Life::Long) };
        if !failures.is_empty() {
            report.fail(&format!("with all memory locked: {failures:?}"));
        }
    });
}
