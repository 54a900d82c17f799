//! Red-team attacks of session 13 on regions that keep their memory (`prefault`: no
//! allocation takes a page fault afterwards) against the decay and the idle look, which
//! give emptied blocks back elsewhere: a burst freed by the owner or by another thread,
//! slow paths with the delay at zero for a while, then the burst again: its writes must
//! take no page fault. A test that found a defect is `#[ignore]`d with its number (RED-n),
//! its owner and the exact failure. The tests of this file take turns (faults are counted
//! for the process).

use cohort::{Cohort, RegionOptions, Retention};
use std::time::Duration;
use test_support::serial;

cohort::lifetime_classes! { enum Life { A, B } }

/// Minor page faults of the calling thread so far.
fn faults() -> i64 {
    // SAFETY: getrusage into a zeroed struct.
    unsafe {
        let mut u: libc::rusage = core::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut u);
        u.ru_minflt
    }
}

const N: usize = 32 << 10; // 32 MiB of 1 KiB objects

fn burst(a: &Cohort<Life>) -> Vec<usize> {
    (0..N)
        .map(|_| {
            let p = a.malloc(1024, Life::A);
            assert!(!p.is_null());
            // SAFETY: live, 1 KiB.
            unsafe { p.write_bytes(9, 1024) };
            p as usize
        })
        .collect()
}

fn free_all(a: &Cohort<Life>, ps: Vec<usize>) {
    for p in ps {
        // SAFETY: live, freed once.
        unsafe { a.free(p as *mut u8, 1024, Life::A) };
    }
}

fn second_burst_faults(elsewhere: bool) -> i64 {
    let _serial = serial();
    let a = Cohort::<Life>::with_options(&RegionOptions::new(128 << 20).prefault(true)).unwrap();
    a.set_retention(Retention {
        delay: Duration::ZERO,
        ..Retention::DEFAULT
    });
    let ps = burst(&a);
    if elsewhere {
        std::thread::scope(|s| {
            s.spawn(|| free_all(&a, ps)).join().unwrap();
        });
    } else {
        free_all(&a, ps);
    }
    // Slow paths (looks and decays) for a while: medium calls of class B.
    for _ in 0..200 {
        let q = a.malloc(100 << 10, Life::B);
        assert!(!q.is_null());
        // SAFETY: live, freed once.
        unsafe { a.free(q, 100 << 10, Life::B) };
        std::thread::sleep(Duration::from_millis(1));
    }
    // The list of pointers is made (and its pages touched) before the count starts.
    let mut ps = vec![1usize; N];
    let start = faults();
    for p in ps.iter_mut() {
        let q = a.malloc(1024, Life::A);
        assert!(!q.is_null());
        // SAFETY: live, 1 KiB.
        unsafe { q.write_bytes(9, 1024) };
        *p = q as usize;
    }
    let f = faults() - start;
    free_all(&a, ps);
    f
}

#[test]
fn a_prefaulted_regions_burst_freed_by_its_owner_takes_no_fault_again() {
    let f = second_burst_faults(false);
    assert!(
        f < 16,
        "{f} page faults writing 32 MiB again in a prefaulted region"
    );
}

#[test]
fn a_prefaulted_regions_burst_freed_by_another_thread_takes_no_fault_again() {
    let f = second_burst_faults(true);
    assert!(f < 16, "{f} page faults writing 32 MiB again in a prefaulted region (the first burst freed by another thread)");
}
