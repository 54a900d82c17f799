//! Memory placement options, each proved from what the kernel says about the region's
//! mapping: `mlock` (the `Locked:` line of `/proc/self/smaps`, and the error when
//! `RLIMIT_MEMLOCK` is too small), NUMA binding (`get_mempolicy` of an allocation, and the
//! error for a node the machine does not have), transparent huge pages (`AnonHugePages:`)
//! and explicit huge pages (`MAP_HUGETLB`: `KernelPageSize: 2048 kB`; `.ci/placement.sh`
//! reserves huge pages first when it runs as root). A test skips, saying why, only where
//! the machine cannot do what it tests.

mod common;

use cohort::{Cohort, HugePages, PlacementError, RegionOptions};
use common::kernel_view::{memory_policy, smaps_field};
use common::processes::{in_child, wait_ok};

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

const MIB: usize = 1 << 20;

/// `Locked:` is proportional (a page shared with another process counts half), so the
/// lock is measured in a child of its own: a `fork` by another test's thread would share
/// the parent's locked pages with that test's child and halve the figure (seen in CI:
/// 10 260 of 20 480 kB).
#[test]
fn a_locked_region_is_locked_in_ram() {
    wait_ok(in_child(60, locked_region_is_locked_in_ram));
}

fn locked_region_is_locked_in_ram() {
    let capacity = 16 * MIB;
    let options = RegionOptions::new(capacity).prefault(true).lock(true);
    let a = match Cohort::<Life>::with_options(&options) {
        Ok(a) => a,
        Err(e @ PlacementError::Lock { .. }) => {
            println!("skipped: this process may not lock the region ({e}); the child test below checks the error");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let p = a.malloc(64, Life::Short);
    let locked = smaps_field(p, "Locked");
    let footprint = Cohort::<Life>::footprint(capacity).unwrap().bytes as u64;
    assert_eq!(locked * 1024, footprint, "the whole region is locked");
    // SAFETY: allocated above.
    unsafe { a.free(p, 64, Life::Short) };
    drop(a);
    // Locked as touched: a lazily committed region's blocks are locked when first used.
    let a = Cohort::<Life>::with_options(&RegionOptions::new(capacity).lock(true))
        .expect("lock on fault");
    let p = a.malloc(6 * MIB, Life::Long);
    let before = smaps_field(p, "Locked");
    // SAFETY: 6 MiB of ours.
    unsafe { p.write_bytes(1, 6 * MIB) };
    let after = smaps_field(p, "Locked");
    assert!(
        after >= before + 6 * 1024,
        "the run's pages were locked as written: {before} -> {after} kB"
    );
    // SAFETY: allocated above.
    unsafe { a.free(p, 6 * MIB, Life::Long) };
}

#[test]
fn a_lock_past_rlimit_memlock_is_a_clear_error() {
    let child = in_child(60, || {
        let limit = libc::rlimit {
            rlim_cur: MIB as libc::rlim_t,
            rlim_max: MIB as libc::rlim_t,
        };
        // SAFETY: lowering this process's own limits; as root, dropping to an unprivileged
        // user too (CAP_IPC_LOCK would ignore the limit).
        unsafe {
            assert_eq!(libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit), 0);
            if libc::geteuid() == 0 {
                assert_eq!(libc::setgid(65534), 0);
                assert_eq!(libc::setuid(65534), 0);
            }
        }
        let e = Cohort::<Life>::with_options(&RegionOptions::new(16 * MIB).lock(true))
            .expect_err("16 MiB cannot be locked under a 1 MiB limit");
        println!("{e}");
        match e {
            PlacementError::Lock { limit, errno, .. } => {
                assert_eq!(limit, MIB as u64);
                assert!(errno == libc::ENOMEM || errno == libc::EPERM, "{e}");
                assert!(e.to_string().contains("RLIMIT_MEMLOCK"), "{e}");
            }
            e => panic!("not a lock error: {e}"),
        }
    });
    wait_ok(child);
}

#[test]
fn a_region_bound_to_node_0_reports_that_policy_and_a_missing_node_is_refused() {
    let a = match Cohort::<Life>::with_options(&RegionOptions::new(16 * MIB).numa_nodes(1)) {
        Ok(a) => a,
        Err(PlacementError::Numa { errno, .. }) if errno == libc::ENOSYS => {
            println!("skipped: the kernel has no NUMA support (mbind: ENOSYS)");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let p = a.malloc(3 * MIB, Life::Long);
    // SAFETY: 3 MiB of ours.
    unsafe { p.write_bytes(1, 3 * MIB) };
    let policy = memory_policy(p).expect("get_mempolicy");
    println!(
        "get_mempolicy of a run: mode {} nodes {:#x}",
        policy.0, policy.1
    );
    assert_eq!(policy, (libc::MPOL_BIND, 1), "bound to node 0");
    let q = a.malloc(64, Life::Short);
    assert_eq!(
        memory_policy(q).expect("get_mempolicy"),
        (libc::MPOL_BIND, 1),
        "blocks too"
    );
    // SAFETY: allocated above.
    unsafe {
        a.free(p, 3 * MIB, Life::Long);
        a.free(q, 64, Life::Short);
    }
    let nodes = std::fs::read_to_string("/sys/devices/system/node/possible").unwrap_or_default();
    let missing = 63;
    let e = Cohort::<Life>::with_options(&RegionOptions::new(16 * MIB).numa_nodes(1 << missing))
        .expect_err("a node the machine does not have");
    println!("nodes {}: node {missing}: {e}", nodes.trim());
    assert_eq!(
        e,
        PlacementError::Numa {
            nodes: 1 << missing,
            errno: libc::EINVAL
        }
    );
    // Beside a node it has, too (mbind alone would bind to node 0 and drop node 63).
    let both = 1 | 1 << missing;
    let o = RegionOptions::new(16 * MIB).numa_nodes(both);
    for e in [
        Cohort::<Life>::with_options(&o).expect_err("node 63 beside node 0"),
        Cohort::<Life>::shared_anonymous_with(&o).expect_err("node 63 beside node 0"),
    ] {
        assert_eq!(
            e,
            PlacementError::Numa {
                nodes: both,
                errno: libc::EINVAL
            },
            "{e}"
        );
    }
}

#[test]
fn transparent_huge_pages_back_a_prefaulted_region() {
    let thp =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if thp.is_empty() || thp.contains("[never]") {
        println!(
            "skipped: transparent huge pages are off here ({})",
            thp.trim()
        );
        return;
    }
    let options = RegionOptions::new(32 * MIB)
        .prefault(true)
        .huge_pages(HugePages::Transparent);
    let a = Cohort::<Life>::with_options(&options).expect("a THP region");
    let p = a.malloc(8 * MIB, Life::Long);
    assert!(!p.is_null());
    let huge = smaps_field(p, "AnonHugePages");
    assert!(
        huge >= 2048,
        "at least one 2 MiB huge page backs the region: {huge} kB"
    );
    // SAFETY: allocated above.
    unsafe { a.free(p, 8 * MIB, Life::Long) };
}

#[test]
fn explicit_huge_pages_back_a_region_where_reserved() {
    let options = RegionOptions::new(8 * MIB).huge_pages(HugePages::Explicit);
    let need = Cohort::<Life>::footprint(8 * MIB).unwrap().bytes / (2 * MIB);
    let free = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("HugePages_Free:")
                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    match Cohort::<Life>::with_options(&options) {
        Ok(a) => {
            let p = a.malloc(3 * MIB, Life::Long);
            assert!(!p.is_null());
            // SAFETY: 3 MiB of ours.
            unsafe { p.write_bytes(1, 3 * MIB) };
            assert_eq!(smaps_field(p, "KernelPageSize"), 2048, "2 MiB pages");
            assert!(
                smaps_field(p, "Private_Hugetlb") >= 4096,
                "the run's pages are huge pages"
            );
            // SAFETY: allocated above.
            unsafe { a.free(p, 3 * MIB, Life::Long) };
        }
        Err(PlacementError::HugePages { errno }) if free < need => {
            assert_eq!(errno, libc::ENOMEM, "too few huge pages is ENOMEM");
            println!(
                "skipped: {free} huge pages free, the region needs {need} (run .ci/placement.sh as root to reserve them); the refusal was the clear error ENOMEM"
            );
        }
        Err(e) => panic!("{e} ({free} huge pages free, {need} needed)"),
    }
    let shared = Cohort::<Life>::shared_anonymous_with(&options).unwrap_err();
    assert!(
        matches!(shared, PlacementError::Unsupported { option } if option.starts_with("explicit huge pages")),
        "{shared}"
    );
}
