//! Red-team attacks of session 13 on the large cache's promise that a steady loop pays no
//! page fault per iteration: loops that alternate sizes, grow a buffer, ask for zeroed
//! memory, or free on another thread. A test that found a defect is `#[ignore]`d with its
//! number (RED-n), its owner and the exact failure. The tests of this file take turns
//! (page faults are counted for the process).

use cohort::Cohort;
use test_support::serial;

cohort::lifetime_classes! { enum Life { A } }

const MIB: usize = 1 << 20;

/// Minor page faults of the process so far.
fn faults() -> i64 {
    // SAFETY: getrusage into a zeroed struct.
    unsafe {
        let mut u: libc::rusage = core::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u.ru_minflt
    }
}

/// Writes one byte per 4 KiB of `[p, p + len)`.
fn touch(p: *mut u8, len: usize) {
    for i in (0..len).step_by(4096) {
        // SAFETY: inside a live allocation of `len` bytes.
        unsafe { p.add(i).write(1) };
    }
}

/// Runs `round` 50 times; returns the faults of the last 40 rounds.
fn faults_of(a: &Cohort<Life>, mut round: impl FnMut(&Cohort<Life>)) -> i64 {
    for _ in 0..10 {
        round(a);
    }
    let start = faults();
    for _ in 0..40 {
        round(a);
    }
    faults() - start
}

fn check(f: i64, pages: i64, what: &str) {
    assert!(
        f < pages,
        "{f} page faults in 40 rounds of {what} ({pages} pages touched a round)"
    );
}

#[test]
fn a_loop_alternating_two_large_sizes_pays_no_fault_per_iteration() {
    let _serial = serial();
    let a = Cohort::<Life>::new();
    let f = faults_of(&a, |a| {
        let p = a.malloc(4 * MIB, Life::A);
        let q = a.malloc(6 * MIB, Life::A);
        assert!(!p.is_null() && !q.is_null());
        touch(p, 4 * MIB);
        touch(q, 6 * MIB);
        // SAFETY: live, freed once.
        unsafe {
            a.free(p, 4 * MIB, Life::A);
            a.free(q, 6 * MIB, Life::A);
        }
    });
    check(f, 2560, "a 4 MiB and a 6 MiB buffer");
}

#[test]
fn a_loop_of_sizes_between_the_medium_and_2_mib_pays_no_fault_per_iteration() {
    let _serial = serial();
    let a = Cohort::<Life>::new();
    let f = faults_of(&a, |a| {
        let s = 1536 << 10;
        let p = a.malloc(s, Life::A);
        assert!(!p.is_null());
        touch(p, s);
        // SAFETY: live, freed once.
        unsafe { a.free(p, s, Life::A) };
    });
    check(f, 384, "a 1.5 MiB buffer");
}

#[test]
fn a_loop_of_zeroed_large_buffers_pays_no_fault_per_iteration() {
    let _serial = serial();
    let a = Cohort::<Life>::new();
    let f = faults_of(&a, |a| {
        let p = a.calloc(4 * MIB, Life::A);
        assert!(!p.is_null());
        // SAFETY: a zeroed allocation of 4 MiB.
        assert_eq!(unsafe { p.add(4096).read() }, 0);
        touch(p, 4 * MIB);
        // SAFETY: live, freed once.
        unsafe { a.free(p, 4 * MIB, Life::A) };
    });
    check(f, 1024, "a zeroed 4 MiB buffer");
}

#[test]
fn a_loop_growing_a_large_buffer_pays_no_fault_per_iteration() {
    let _serial = serial();
    let a = Cohort::<Life>::new();
    let f = faults_of(&a, |a| {
        let p = a.malloc(3 * MIB, Life::A);
        assert!(!p.is_null());
        touch(p, 3 * MIB);
        // SAFETY: live, 3 MiB.
        let q = unsafe { a.remalloc(p, 3 * MIB, 5 * MIB, Life::A) };
        assert!(!q.is_null());
        touch(q, 5 * MIB);
        // SAFETY: live, freed once.
        unsafe { a.free(q, 5 * MIB, Life::A) };
    });
    check(f, 1280, "a 3 MiB buffer grown to 5 MiB");
}

#[test]
fn a_loop_freeing_large_buffers_on_another_thread_pays_no_fault_per_iteration() {
    let _serial = serial();
    let a = Cohort::<Life>::new();
    let f = faults_of(&a, |a| {
        let p = a.malloc(4 * MIB, Life::A) as usize;
        assert_ne!(p, 0);
        touch(p as *mut u8, 4 * MIB);
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: live, freed once.
                unsafe { a.free(p as *mut u8, 4 * MIB, Life::A) }
            });
        });
    });
    check(f, 1024, "a 4 MiB buffer freed by another thread");
}
