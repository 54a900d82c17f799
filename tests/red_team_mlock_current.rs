//! Red-team attack (session 18) on a process that locks its memory after an instance
//! reserved its address space: `mlockall(MCL_CURRENT | MCL_FUTURE)` at the start of a
//! program's work (real-time, audio and security programs do), once anything was allocated
//! (with cohort as the global allocator, anything at all). The kernel populates and locks
//! every accessible mapping that exists at `MCL_CURRENT`: a reservation mapped readable
//! (as it was) cost page tables for all of it (256 GiB by default: 512 MiB of them); one
//! without access past its carved end costs only what is carved. Here the reservation is 1
//! GiB (`COHORT_RESERVE`), in a process of its own (this test binary again).

#[path = "common/processes.rs"]
#[allow(dead_code)]
mod processes;

use cohort::Cohort;

const CASE: &str = "COHORT_RED_TEAM_MLOCK_CURRENT_CASE";

/// A field of `/proc/self/status`, in kB.
fn status_kb(key: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with(key)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// In the process of its own: an instance allocates, then the process locks its memory.
/// Prints what the lock cost.
fn case() {
    let a = Cohort::<()>::new();
    let p = a.malloc(64, ());
    assert!(!p.is_null());
    let (pte, locked, resident) = (status_kb("VmPTE"), status_kb("VmLck"), status_kb("VmRSS"));
    // SAFETY: no preconditions.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    if rc != 0 {
        // Without the privilege the lock limit refuses it (this test binary's own
        // mappings are above a modest limit): nothing to tell.
        println!(
            "skipped: mlockall refused ({})",
            std::io::Error::last_os_error()
        );
        return;
    }
    println!(
        "mlockall done; page tables +{} kB, locked +{} kB, resident +{} kB",
        status_kb("VmPTE") - pte,
        status_kb("VmLck") - locked,
        status_kb("VmRSS").saturating_sub(resident)
    );
    // The instance goes on.
    // SAFETY: allocated above with this size and class, freed once.
    unsafe { a.free(p, 64, ()) };
    assert!(!a.malloc(1000, ()).is_null());
}

/// RED-84: on main 53822bb (as root with `CAP_IPC_LOCK`, which the lock limit does not
/// bound) `mlockall` populates and locks the whole 1 GiB reservation ("cost 2076 kB of page
/// tables and locked 1136448 kB"; at
/// `COHORT_RESERVE=4G`: 2.4 s, +8.3 MB of page tables, 4.26 GB locked; the default 256
/// GiB would take 512 MiB of page tables). Without the privilege the lock limit refuses
/// the call before anything is locked, and the test says nothing (skipped). Wanted: the
/// lock costs about what the program uses: under 1 MiB of page tables and 64 MiB made
/// resident. (Not `VmLck`: it counts a locked mapping without access too, the reservation
/// past the carved end, which costs neither page tables nor memory.)
#[test]
fn locking_current_memory_does_not_lock_the_reservation() {
    if std::env::var_os(CASE).is_some() {
        case();
        return;
    }
    let Some(number) = costs("locking_current_memory_does_not_lock_the_reservation", "1G") else {
        return;
    };
    let (pte, resident) = (number("page tables +"), number("resident +"));
    assert!(
        pte < 1024 && resident < 64 << 10,
        "locking the process's memory cost {pte} kB of page tables and made {resident} kB \
         resident"
    );
}

/// Runs test `name`'s case in a process of its own with a reservation of `reserve`
/// (`COHORT_RESERVE`): what the lock cost, by the name of each figure of its report
/// (`None` when the case was skipped: no privilege to lock).
fn costs(name: &str, reserve: &str) -> Option<impl Fn(&str) -> u64> {
    let out = processes::rerun(name, &[(CASE, "1"), ("COHORT_RESERVE", reserve)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}: {stdout}", out.status);
    if stdout.contains("skipped") {
        return None;
    }
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("mlockall ").map(|(_, rest)| rest.to_string()))
        .expect("the child's report");
    Some(move |after: &str| -> u64 {
        let rest = line.split(after).nth(1).unwrap();
        rest.trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    })
}

/// A sibling of RED-84 that costs memory rather than page tables: a private reservation's
/// promotion records (32 KiB per 2 MiB unit, beside the region) were mapped read-write
/// whole, and `mlockall(MCL_CURRENT)` populated all of them: with a 16 GiB reservation,
/// 262 MiB resident for one 64-byte allocation (4 GiB at the default 256 GiB; checked
/// mode's shadow of the region, a bit per byte, 8 times that). Now only the carved units'
/// records (and shadow) are accessible, the rest reserved without access.
#[test]
fn locking_current_memory_populates_no_table_of_units_never_carved() {
    if std::env::var_os(CASE).is_some() {
        case();
        return;
    }
    let name = "locking_current_memory_populates_no_table_of_units_never_carved";
    let Some(number) = costs(name, "16G") else {
        return;
    };
    let resident = number("resident +");
    assert!(
        resident < 64 << 10,
        "locking the process's memory made {resident} kB resident"
    );
}
