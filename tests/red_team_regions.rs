//! Red-team attacks of session 7 on regions shared between processes: dead-process
//! detection under a hostile environment, fork with joins, scopes across processes.

mod red_team_common;

use cohort::Cohort;
use red_team_common::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

/// Sets this process's open-file limit to `n` (soft and hard).
fn limit_files(n: u64) {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: a plain system call on a local struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
}

/// A counter in the region (so every process sees it), zeroed.
fn counter(a: &Cohort<Life>) -> &AtomicU64 {
    let p = a.calloc(8, Life::Long).cast::<AtomicU64>();
    assert!(!p.is_null());
    // SAFETY: 8 zeroed bytes, aligned to 8, never freed.
    unsafe { &*p }
}

/// A child that joins the region (allocates), says so through `ready`, then sleeps.
fn joined_sleeper(a: &Cohort<Life>, ready: &AtomicU64) -> libc::pid_t {
    in_child(60, || {
        for _ in 0..100 {
            assert!(!a.malloc(64, Life::Short).is_null());
        }
        ready.fetch_add(1, Ordering::Release);
        loop {
            std::thread::sleep(Duration::from_millis(10));
        }
    })
}

#[test]
fn probe_emfile_reaper() {
    isolated(60, |report| {
        let a = Cohort::<Life>::shared_anonymous(64 << 20).expect("a shared region");
        let ready = counter(&a);
        let reaped = counter(&a);
        let sleeper = joined_sleeper(&a, ready);
        until(ready, 0, report, "the sleeper");
        let b = in_child(10, || {
            limit_files(0);
            reaped.store(a.reap_dead_processes() as u64 + 1, Ordering::Release);
        });
        let ended = wait(b);
        kill9(sleeper);
        let n = reaped.load(Ordering::Acquire);
        if n != 1 {
            report.fail(&format!("reaper at EMFILE took over {} live heaps ({ended:?})", n as i64 - 1));
        }
    });
}

#[test]
fn probe_emfile_joiner() {
    isolated(60, |report| {
        let a = Cohort::<Life>::shared_anonymous(64 << 20).expect("a shared region");
        let ready = counter(&a);
        let b = in_child(60, || {
            limit_files(0);
            for _ in 0..100 {
                assert!(!a.malloc(64, Life::Short).is_null());
            }
            ready.fetch_add(1, Ordering::Release);
            loop {
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        until(ready, 0, report, "the joiner");
        let n = a.reap_dead_processes();
        kill9(b);
        if n != 0 {
            report.fail(&format!("a live process that joined at EMFILE had {n} heaps taken over"));
        }
    });
}

/// `n` words of memory shared with the children forked after (outside any region).
fn shared_words(n: usize) -> &'static [AtomicU64] {
    // SAFETY: a fresh shared anonymous mapping, no preconditions.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            n * 8,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    // SAFETY: n zeroed words, mapped for the rest of the process.
    unsafe { std::slice::from_raw_parts(p.cast(), n) }
}

#[test]
fn probe_emfile_double_handout() {
    const N: usize = 20_000;
    isolated(60, |report| {
        let a = Cohort::<Life>::shared_anonymous(256 << 20).expect("a shared region");
        let ready = counter(&a);
        let go = counter(&a);
        let got = shared_words(2 * N);
        let s = in_child(60, || {
            assert!(!a.malloc(64, Life::Short).is_null());
            ready.fetch_add(1, Ordering::Release);
            while go.load(Ordering::Acquire) == 0 {
                std::hint::spin_loop();
            }
            for slot in &got[..N] {
                slot.store(a.malloc(64, Life::Short) as u64, Ordering::Relaxed);
            }
        });
        until(ready, 0, report, "the first process");
        let b = in_child(60, || {
            limit_files(0);
            let joins: Vec<_> = (0..3).map(|_| a.join(0).expect("a join")).collect();
            go.store(1, Ordering::Release);
            for (i, slot) in got[N..].iter().enumerate() {
                slot.store(joins[i % 3].malloc(64, Life::Short) as u64, Ordering::Relaxed);
            }
            std::mem::forget(joins);
        });
        let (es, eb) = (wait(s), wait(b));
        let mut all: Vec<u64> = got.iter().map(|w| w.load(Ordering::Relaxed)).filter(|&p| p != 0).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        if all.len() != n || es != Ok(0) || eb != Ok(0) {
            report.fail(&format!("{} of {n} live allocations handed out twice; {es:?} {eb:?}", n - all.len()));
        }
    });
}

#[test]
fn probe_pidns() {
    isolated(60, |report| {
        let a = Cohort::<Life>::shared_anonymous(64 << 20).expect("a shared region");
        let ready = counter(&a);
        let reaped = counter(&a);
        let sleeper = joined_sleeper(&a, ready);
        until(ready, 0, report, "the sleeper");
        let c = in_child(20, || {
            // SAFETY: plain system calls.
            unsafe {
                if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWPID | libc::CLONE_NEWNS) != 0 {
                    panic!("unshare: {}", std::io::Error::last_os_error());
                }
            }
            let g = in_child(10, || {
                // SAFETY: plain system calls with NUL-terminated strings.
                unsafe {
                    assert_eq!(libc::mount(core::ptr::null(), c"/".as_ptr(), core::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, core::ptr::null()), 0, "private");
                    assert_eq!(libc::mount(c"proc".as_ptr(), c"/proc".as_ptr(), c"proc".as_ptr(), libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, core::ptr::null()), 0, "mount proc: {}", std::io::Error::last_os_error());
                }
                reaped.store(a.reap_dead_processes() as u64 + 1, Ordering::Release);
            });
            assert_eq!(wait(g), Ok(0));
        });
        let ended = wait(c);
        kill9(sleeper);
        let n = reaped.load(Ordering::Acquire);
        if n != 1 {
            report.fail(&format!("a process in another pid namespace took over {} live heaps ({ended:?})", n as i64 - 1));
        }
    });
}

#[test]
fn probe_join_in_child() {
    const N: usize = 200_000;
    isolated(60, |report| {
        let a = Cohort::<Life>::shared_anonymous(256 << 20).expect("a shared region");
        let go = counter(&a);
        let got = shared_words(2 * N);
        let j = a.join(1).expect("a join");
        assert!(!j.malloc(64, Life::Short).is_null());
        let child = in_child(60, || {
            go.fetch_add(1, Ordering::Release);
            while go.load(Ordering::Acquire) < 2 {}
            for slot in &got[..N] {
                slot.store(j.malloc(64, Life::Short) as u64, Ordering::Relaxed);
            }
        });
        while go.load(Ordering::Acquire) < 1 {}
        go.fetch_add(1, Ordering::Release);
        for slot in &got[N..] {
            slot.store(j.malloc(64, Life::Short) as u64, Ordering::Relaxed);
        }
        let ended = wait(child);
        let mut all: Vec<u64> = got.iter().map(|w| w.load(Ordering::Relaxed)).filter(|&p| p != 0).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        if all.len() != n || ended != Ok(0) {
            report.fail(&format!("{} of {n} live allocations handed out twice; child {ended:?}", n - all.len()));
        }
    });
}

#[test]
fn probe_scope_across_processes() {
    isolated(60, |report| {
        let a = Cohort::<Life>::shared_anonymous(64 << 20).expect("a shared region");
        let ready = counter(&a);
        let done = counter(&a);
        let joined = counter(&a);
        let holder = in_child(60, || {
            let mut joins = Vec::new();
            while let Some(j) = a.join(7) {
                joins.push(j);
            }
            joined.store(joins.len() as u64 + 1, Ordering::Release);
            loop {
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        until(joined, 0, report, "the join holder");
        let owner = in_child(30, || {
            a.scope(|frame| {
                let mut v = cohort::Vec::with_capacity_in(1000, frame);
                v.extend(0..1000u64);
                ready.store(1, Ordering::Release);
                while done.load(Ordering::Acquire) == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let bad = v.iter().enumerate().filter(|&(i, &x)| x != i as u64).count();
                assert_eq!(bad, 0, "{bad} of 1000 elements of a live scope's vector were overwritten");
            });
        });
        until(ready, 0, report, "the owner");
        let other = in_child(30, || {
            a.scope(|f| {
                let _ = cohort::Vec::<u64, _>::with_capacity_in(1000, f);
            });
            a.scope(|f| {
                let mut vs = Vec::new();
                for _ in 0..200 {
                    let mut v = cohort::Vec::with_capacity_in(1000, f);
                    v.extend(std::iter::repeat_n(0xdead_beefu64, 1000));
                    vs.push(v);
                }
            });
        });
        let e2 = wait(other);
        done.store(1, Ordering::Release);
        let e1 = wait(owner);
        kill9(holder);
        if (e1, e2) != (Ok(0), Ok(0)) {
            report.fail(&format!("{} joins; owner {e1:?}, other {e2:?}", joined.load(Ordering::Relaxed) - 1));
        }
    });
}
