//! Red-team attacks on `Cohort::scope` on a shared allocator (a `static`): safe code only.

use cohort::allocator_api2::vec::Vec;
use cohort::Cohort;
use std::sync::mpsc::channel;

/// True when the pages of `[p, p + len)` are mapped (msync fails with ENOMEM otherwise).
fn mapped(p: *const u8, len: usize) -> bool {
    let page = p as usize & !4095;
    let len = len + (p as usize - page);
    // SAFETY: msync only inspects the range; an unmapped one is an error, not a fault.
    unsafe { libc::msync(page as *mut libc::c_void, len, libc::MS_ASYNC) == 0 }
}

/// RED-8: two threads each run a scope on one `static` (the pattern the docs sell: workers
/// of a shared allocator, each with a frame). Both scopes are at nesting depth 1, so they
/// allocate in the same hidden class; the release at the end of one unmaps the other's
/// large allocations (the release drains the class's large allocations "whichever thread
/// made them"), while the other scope still holds them: a use after free from safe code.
#[test]
fn a_scope_leaves_another_threads_large_allocations_alone() {
    static A: Cohort = Cohort::new();
    let (live_tx, live_rx) = channel::<()>();
    let (ended_tx, ended_rx) = channel::<()>();
    let still_mapped = std::thread::scope(|s| {
        let worker = s.spawn(move || {
            A.scope(|frame| {
                let mut v: Vec<u8, _> = Vec::with_capacity_in(100_000, frame);
                v.resize(100_000, 0xa5);
                live_tx.send(()).unwrap();
                ended_rx.recv().unwrap();
                let ok = mapped(v.as_ptr(), v.len());
                if !ok {
                    // Freeing it would be a misuse report: the allocator forgot it.
                    std::mem::forget(v);
                }
                ok
            })
        });
        live_rx.recv().unwrap();
        A.scope(|frame| {
            let w: Vec<u8, _> = Vec::with_capacity_in(100_000, frame);
            drop(w);
        });
        ended_tx.send(()).unwrap();
        worker.join().unwrap()
    });
    assert!(
        still_mapped,
        "another thread's scope ending unmapped this scope's live 100 000-byte Vec"
    );
}

/// The most lifetime classes an allocator takes, with scopes nested 8 deep (every scope
/// class): the last hidden class is index 255, whose keys come next to the empty block's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Most(u8);

// SAFETY: index() < COUNT for every value built below.
unsafe impl cohort::Lifetime for Most {
    const COUNT: usize = cohort::MAX_LIFETIME_CLASSES;
    fn index(self) -> usize {
        self.0 as usize
    }
}

#[test]
fn deepest_scopes_of_the_most_lifetime_classes() {
    let a: Cohort<Most> = Cohort::new();
    let sizes = [
        1usize, 2, 3, 8, 24, 100, 1000, 4096, 10000, 16384, 16385, 100_000,
    ];
    fn nest(a: &Cohort<Most>, depth: usize, sizes: &[usize]) -> usize {
        if depth == 8 {
            return 0;
        }
        a.scope(|f| {
            let mut vs: std::vec::Vec<Vec<u8, _>> = std::vec::Vec::new();
            for &s in sizes {
                let mut v = Vec::with_capacity_in(s, f);
                v.resize(s, depth as u8 + 1);
                vs.push(v);
            }
            let inner = nest(a, depth + 1, sizes);
            for v in &vs {
                assert!(
                    v.iter().all(|&b| b == depth as u8 + 1),
                    "depth {depth} corrupted"
                );
            }
            a.verify_exclusive_check();
            inner + vs.len()
        })
    }
    trait Check {
        fn verify_exclusive_check(&self);
    }
    impl Check for Cohort<Most> {
        fn verify_exclusive_check(&self) {
            // SAFETY: no other thread uses this allocator.
            unsafe { self.verify() }.unwrap();
        }
    }
    assert_eq!(nest(&a, 0, &sizes), 8 * sizes.len());
    assert!(a.is_empty(), "{:?}", a.stats());
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        a.scope(|_| {
            a.scope(|_| {
                a.scope(|_| {
                    a.scope(|_| a.scope(|_| a.scope(|_| a.scope(|_| a.scope(|_| a.scope(|_| ()))))))
                })
            })
        })
    }));
    assert!(
        caught.is_err(),
        "a ninth scope open at once must panic (8 scope classes)"
    );
    // After the panic every depth is closed again.
    assert_eq!(nest(&a, 0, &sizes), 8 * sizes.len());
    assert!(a.is_empty());
}
