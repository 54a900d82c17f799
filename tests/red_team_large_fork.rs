//! Red-team attacks of session 13 on large allocations across `fork` while other threads
//! resize theirs (a resize may remap with its entry out of the large table, and the table
//! may grow with its lock dropped): each child, with only the forking thread left, must
//! find the instance consistent, allocate, grow and free large allocations (enough to make
//! the table grow), compact and end with what the parent's threads held untouched by it.
//! A test that found a defect is `#[ignore]`d with its number (RED-n), its owner and the
//! exact failure.

#[path = "common/processes.rs"]
#[allow(dead_code)]
mod processes;

use cohort::Cohort;
use std::sync::atomic::{AtomicBool, Ordering};

// Helper threads stopped however a test ends.
#[path = "common/threads.rs"]
mod threads;

cohort::lifetime_classes! { enum Life { A, B } }

const MIB: usize = 1 << 20;

/// A thread's loop: a large allocation grown and shrunk by remaps (1.5 to 40 MiB), its
/// first and last words checked, until `stop`.
fn resizer(a: &Cohort<Life>, stop: &AtomicBool, seed: usize) {
    let mut size = 2 * MIB;
    let mut p = a.malloc(size, Life::A);
    assert!(!p.is_null());
    let mut i = seed;
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: live, `size` bytes.
        unsafe {
            p.cast::<usize>().write(size);
            p.add(size - 8).cast::<usize>().write(size);
        }
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let next = (3 * MIB / 2) + (i >> 33) % (38 * MIB);
        // SAFETY: live, `size` bytes.
        let q = unsafe { a.remalloc(p, size, next, Life::A) };
        assert!(!q.is_null());
        // SAFETY: live, at least min(size, next) bytes kept.
        assert_eq!(
            unsafe { q.cast::<usize>().read() },
            size,
            "a resize lost the first word"
        );
        p = q;
        size = next;
    }
    // SAFETY: live, freed once.
    unsafe { a.free(p, size, Life::A) };
}

/// In the child: 400 large allocations of class B (the table grows), some grown, all
/// freed; compact; then the instance verifies (the child's only thread).
fn child_work(a: &Cohort<Life>) {
    let mut ps: Vec<(*mut u8, usize)> = (0..400)
        .map(|i| {
            // Below 2 MiB: no huge page to fault in whole (a 4 KiB page per write).
            let s = MIB + 4096 * (1 + i % 100);
            let p = a.malloc(s, Life::B);
            assert!(!p.is_null(), "child: allocation {i} failed");
            // SAFETY: live.
            unsafe { p.write(i as u8) };
            (p, s)
        })
        .collect();
    for (i, (p, s)) in ps.iter_mut().enumerate().step_by(7) {
        // SAFETY: live, `s` bytes.
        let q = unsafe { a.remalloc(*p, *s, *s * 2, Life::B) };
        assert!(!q.is_null());
        // SAFETY: live.
        assert_eq!(unsafe { q.read() }, i as u8);
        *p = q;
        *s *= 2;
    }
    for (p, s) in ps {
        // SAFETY: live, freed once.
        unsafe { a.free(p, s, Life::B) };
    }
    a.compact();
    let _ = a.stats();
    // SAFETY: the child's only thread.
    let v = unsafe { a.verify() };
    assert!(v.is_ok(), "child: verify {v:?}");
}

#[test]
fn children_forked_during_large_resizes_find_the_instance_whole() {
    let a: Cohort<Life> = Cohort::new();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..2 {
            let (a, stop) = (&a, &stop);
            s.spawn(move || resizer(a, stop, t + 1));
        }
        // Stops the resizers however this test ends (a failed child panics here).
        let _stop = threads::StopOnDrop(&stop);
        for round in 0..8 {
            let pid = processes::in_child(20, || child_work(&a));
            let st = processes::wait_status(pid);
            if !(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0) {
                panic!("child {round} failed: status {st:#x}");
            }
        }
    });
    let mut a = a;
    a.verify_exclusive().unwrap();
    assert!(a.is_empty(), "{}", a.stats());
}
