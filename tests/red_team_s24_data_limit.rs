//! Red-team attacks on running out of memory by `RLIMIT_DATA` (`ulimit -d`, a container's
//! data limit), which Linux applies to private writable mappings and to `mprotect` making
//! a private mapping writable: cohort's reservation is made without access and committed
//! by `mprotect` as units are carved, so the limit is reached in the middle of a run,
//! after the reservation exists, on every kind of slow path (a small block's carve, a
//! medium block, a large mapping, a resize that moves, the promotion records). Every call
//! must return null (never a fault or an abort), what was allocated before must stay
//! whole and be freed, and once the limit is lifted the same instance serves again and
//! verifies. Each case runs in a forked child.

#[path = "common/processes.rs"]
#[allow(dead_code)]
mod processes;

use cohort::Cohort;

cohort::lifetime_classes! { enum Life { A, B } }

const MIB: usize = 1 << 20;

/// The process's private writable memory (`VmData` of /proc/self/status), in bytes.
fn vm_data() -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmData:")).unwrap();
    let kb: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Sets the soft data limit to what is used now plus `extra` bytes (`None`: none).
fn limit(extra: Option<usize>) {
    let lim = libc::rlimit {
        rlim_cur: extra.map_or(libc::RLIM_INFINITY, |e| (vm_data() + e) as libc::rlim_t),
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain setrlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_DATA, &lim) }, 0);
}

fn pattern(p: *mut u8, size: usize) -> u8 {
    (p as usize >> 4) as u8 ^ size as u8
}

type Objects = Vec<(*mut u8, usize, Life)>;

/// Allocates objects of `size` in `life` until null or `max`, each written whole, onto
/// `got` (whose room the caller reserved: the test's own allocations come from the C
/// library, which the limit refuses too); how many it got.
fn until_null(a: &Cohort<Life>, size: usize, life: Life, max: usize, got: &mut Objects) -> usize {
    for n in 0..max {
        let p = a.malloc(size, life);
        if p.is_null() {
            return n;
        }
        // SAFETY: `size` bytes are p's.
        unsafe { p.write_bytes(pattern(p, size), size) };
        assert!(got.len() < got.capacity(), "room reserved");
        got.push((p, size, life));
    }
    max
}

/// Checks and frees every object.
fn check_and_free(a: &Cohort<Life>, got: &mut Objects) {
    for (p, size, life) in got.drain(..) {
        let b = pattern(p, size);
        // SAFETY: live, `size` bytes.
        unsafe {
            assert_eq!(p.read(), b, "{p:p} ({size}) first byte changed");
            assert_eq!(
                p.add(size - 1).read(),
                b,
                "{p:p} ({size}) last byte changed"
            );
            a.free(p, size, life);
        }
    }
}

/// Under a data limit of `extra` bytes more than in use: fills with `sizes` in turn, tries
/// resizes that move, then frees, lifts the limit and checks the instance serves.
fn under_limit(a: &Cohort<Life>, extra: usize) {
    // Something of each kind before the limit.
    let mut before = Vec::with_capacity(9);
    for (s, l) in [(64usize, Life::A), (30_000, Life::A), (3 * MIB, Life::B)] {
        until_null(a, s, l, 3, &mut before);
    }
    assert_eq!(before.len(), 9, "allocations before the limit");
    let mut got = Vec::with_capacity(10_000);
    let mut moved = Vec::with_capacity(10_000);
    let mut again = Vec::with_capacity(14);
    limit(Some(extra));
    let mut nulls = 0;
    for round in 0..3 {
        for size in [16usize, 48, 1000, 20_000, 300_000, 2 * MIB, 5 * MIB] {
            for life in [Life::A, Life::B] {
                if until_null(a, size, life, 200 >> round, &mut got) < 200 >> round {
                    nulls += 1;
                }
            }
        }
    }
    assert!(nulls > 0, "the limit was never reached");
    // Resizes that move (to another class, to medium, to large) under the limit.
    for (p, size, life) in got.drain(..) {
        let new = match size {
            16 => 24,
            48 => 20_000,
            1000 => 3 * MIB,
            _ => {
                moved.push((p, size, life));
                continue;
            }
        };
        let b = pattern(p, size);
        // SAFETY: live with (size, life).
        let q = unsafe { a.remalloc(p, size, new, life) };
        if q.is_null() {
            moved.push((p, size, life));
            continue;
        }
        // SAFETY: q holds `new` bytes, the first min(size, new) copied.
        unsafe {
            assert_eq!(
                q.add(size.min(new) - 1).read(),
                b,
                "remalloc {size} -> {new} lost bytes"
            );
            a.free(q, new, life);
        }
    }
    check_and_free(a, &mut moved);
    let _ = a.stats();
    a.compact();
    limit(None);
    for s in [16usize, 48, 1000, 20_000, 300_000, 2 * MIB, 5 * MIB] {
        until_null(a, s, Life::A, 2, &mut again);
    }
    assert_eq!(again.len(), 14, "after the limit was lifted");
    check_and_free(a, &mut again);
    check_and_free(a, &mut before);
    // SAFETY: no other thread uses `a`.
    let v = unsafe { a.verify() };
    assert!(v.is_ok(), "verify: {v:?}");
    assert!(a.is_empty(), "{}", a.stats());
}

fn in_child(what: &str, f: impl FnOnce()) {
    let pid = processes::in_child(60, f);
    let st = processes::wait_status(pid);
    assert!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "{what}: the child failed (status {st:#x}: {})",
        if libc::WIFSIGNALED(st) {
            format!("signal {}", libc::WTERMSIG(st))
        } else {
            format!("exit {}", libc::WEXITSTATUS(st))
        }
    );
}

#[test]
fn a_data_limit_reached_mid_run_gives_null_and_the_instance_serves_once_lifted() {
    for extra in [MIB, 6 * MIB, 40 * MIB] {
        in_child(&format!("Cohort::new, {extra} B more"), || {
            under_limit(&Cohort::new(), extra)
        });
        in_child(&format!("with_reservation, {extra} B more"), || {
            under_limit(&Cohort::with_reservation(1 << 30), extra)
        });
    }
}
