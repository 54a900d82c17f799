//! Red-team attacks of session 13 on running out of address space at an instance's very
//! first allocation (`ulimit -v` below the 256 GiB reservation, as on shared login nodes):
//! every call returns null (never a crash or an abort), and once the limit is raised the
//! same instance serves. Each case runs in a forked child under `RLIMIT_AS`. A test that
//! found a defect is `#[ignore]`d with its number (RED-n), its owner and the exact failure.

#[path = "common/processes.rs"]
#[allow(dead_code)]
mod processes;

use cohort::Cohort;

cohort::lifetime_classes! { enum Life { A } }

/// Sets the soft address-space limit to the mapped size plus `extra` bytes (`None`: none).
fn limit(extra: Option<usize>) {
    let vm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = vm.split_whitespace().next().unwrap().parse().unwrap();
    let lim = libc::rlimit {
        rlim_cur: extra.map_or(libc::RLIM_INFINITY, |e| (pages * 4096 + e) as libc::rlim_t),
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain setrlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) }, 0);
}

fn in_child(what: &str, f: fn()) {
    let pid = processes::in_child(20, f);
    let st = processes::wait_status(pid);
    assert!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "{what}: the child failed (status {st:#x})"
    );
}

/// Every size, small to large, gets null or memory; the instance is usable after the limit
/// is lifted.
fn every_size_then_lifted(a: &Cohort<Life>) {
    let mut got = Vec::new();
    for s in [1usize, 8, 64, 1000, 16384, 100 << 10, 1 << 20, 8 << 20] {
        let p = a.malloc(s, Life::A);
        if !p.is_null() {
            // SAFETY: live, `s` bytes.
            unsafe { p.write_bytes(1, s) };
            got.push((p, s));
        }
        let z = a.calloc(s, Life::A);
        if !z.is_null() {
            got.push((z, s));
        }
    }
    for (p, s) in got.drain(..) {
        // SAFETY: live, freed once.
        unsafe { a.free(p, s, Life::A) };
    }
    limit(None);
    for s in [1usize, 8, 64, 1000, 16384, 100 << 10, 1 << 20, 8 << 20] {
        let p = a.malloc(s, Life::A);
        assert!(!p.is_null(), "size {s}: null after the limit was lifted");
        // SAFETY: live, `s` bytes.
        unsafe {
            p.write_bytes(1, s);
            a.free(p, s, Life::A);
        }
    }
    assert!(a.is_empty());
}

#[test]
fn a_first_allocation_under_a_small_address_space_limit_is_null_then_serves() {
    in_child("Cohort::new under 1 GiB more", || {
        let a: Cohort<Life> = Cohort::new();
        limit(Some(1 << 30));
        every_size_then_lifted(&a);
    });
}

#[test]
fn a_first_allocation_under_a_tiny_address_space_limit_is_null_then_serves() {
    in_child("Cohort::new under 1 MiB more", || {
        let a: Cohort<Life> = Cohort::new();
        limit(Some(1 << 20));
        every_size_then_lifted(&a);
    });
}

#[test]
fn stats_compact_verify_and_scope_under_the_limit_before_any_allocation() {
    in_child("readers under 1 MiB more", || {
        let mut a: Cohort<Life> = Cohort::new();
        limit(Some(1 << 20));
        let _ = a.stats();
        let _ = a.compact();
        assert!(a.verify_exclusive().is_ok());
        assert!(a.is_empty());
        let r = a.try_scope(|f| {
            let v: cohort::Vec<u8, _> = cohort::Vec::new_in(f);
            v.len()
        });
        let _ = r;
        every_size_then_lifted(&a);
    });
}
