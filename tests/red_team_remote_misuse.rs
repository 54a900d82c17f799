//! Red-team attacks of session 11 on misuse freed from another thread: a thread frees
//! another thread's objects (remote frees, pending in its batch) and, between them, frees
//! with a wrong size (another size class), a wrong lifetime class, twice, or (checked
//! builds) an interior pointer or a slot in the middle of a pending chain. Every misuse must
//! be reported with the pointer, size and lifetime class given, at every state of the
//! block's pending chain (none, with room, full), and leave the allocator whole: the
//! objects freed right after, `verify` and `is_empty` pass. Small, medium and large sizes.

mod red_team_common;

use cohort::{set_misuse_hook, Cohort, Misuse, Problem, RegionOptions};
use std::panic::{catch_unwind, panic_any, AssertUnwindSafe};
use std::sync::Mutex;

cohort::lifetime_classes! {
    enum Life { A, B }
}

/// The hook is one per process: the tests take turns.
static TURN: Mutex<()> = Mutex::new(());

/// True in builds that check every free (debug builds, or the `checked` feature).
const CHECKED: bool = cfg!(debug_assertions);

fn raise(m: &Misuse) {
    panic_any(m.clone());
}

/// Runs `f`, a free that must be reported, and returns the misuse.
fn reported(what: &str, f: impl FnOnce()) -> Misuse {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => panic!("{what}: not reported"),
        Err(payload) => *payload
            .downcast::<Misuse>()
            .unwrap_or_else(|_| panic!("{what}: the payload is not the hook's Misuse")),
    }
}

/// Asserts the report names `p`, `size` and `life`.
fn names(what: &str, m: &Misuse, p: *mut u8, size: usize, life: usize) {
    assert_eq!(
        (m.ptr, m.size, m.life),
        (p as usize, size, life),
        "{what}: the report names another pointer, size or class: {m}"
    );
}

/// Another size class than `size`'s, of the small sizes.
fn other_size(size: usize) -> usize {
    if size > 2000 {
        24
    } else {
        size * 4 + 100
    }
}

/// Thread O allocates `n` objects of `size` (class A) and thread F frees them, one by one
/// (each a remote free). Before each free, F tries the misuse the object allows: a wrong
/// size, the wrong lifetime class; after it, the same free again (a double free of the
/// pending chain's first); in checked builds also an interior pointer of the next object
/// and a double free of the object freed two frees before (inside the pending chain).
fn misuse_between_remote_frees(a: &Cohort<Life>, size: usize, n: usize) {
    let objects: Vec<usize> = (0..n)
        .map(|_| {
            let p = a.malloc(size, Life::A);
            assert!(!p.is_null(), "malloc({size})");
            // SAFETY: a fresh allocation of size bytes.
            unsafe { p.write_bytes(0x5a, size) };
            p as usize
        })
        .collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            // F's own heap first: remote frees batch on the caller's heap.
            let mine = a.malloc(24, Life::B);
            assert!(!mine.is_null());
            for (i, &q) in objects.iter().enumerate() {
                let p = q as *mut u8;
                let wrong = other_size(size);
                let what = format!("size {size}, object {i}, freed as {wrong}");
                // SAFETY: deliberately the wrong size: reported, nothing freed.
                let m = reported(&what, || unsafe { a.free(p, wrong, Life::A) });
                names(&what, &m, p, wrong, 0);
                if size <= 2000 {
                    match m.problem {
                        Problem::WrongBlock {
                            class, block_class, ..
                        } => assert_ne!(Some(class), block_class, "{what}: {m}"),
                        _ => panic!("{what}: {m}"),
                    }
                }
                let what = format!("size {size}, object {i}, freed as class B");
                // SAFETY: deliberately the wrong lifetime class.
                let m = reported(&what, || unsafe { a.free(p, size, Life::B) });
                names(&what, &m, p, size, 1);
                if CHECKED && i + 1 < objects.len() && size < 1 << 20 {
                    let next = (objects[i + 1] as *mut u8).wrapping_add(1);
                    let what = format!("size {size}, object {}, interior", i + 1);
                    // SAFETY: deliberately not an allocation's start.
                    let m = reported(&what, || unsafe { a.free(next, size, Life::A) });
                    names(&what, &m, next, size, 0);
                }
                // SAFETY: O's live object, handed over, freed once.
                unsafe { a.free(p, size, Life::A) };
                let what = format!("size {size}, object {i}, freed again at once");
                // SAFETY: deliberately a double free.
                let m = reported(&what, || unsafe { a.free(p, size, Life::A) });
                names(&what, &m, p, size, 0);
                if CHECKED && i >= 2 {
                    let old = objects[i - 2] as *mut u8;
                    let what = format!("size {size}, object {}, freed again later", i - 2);
                    // SAFETY: deliberately a double free.
                    let m = reported(&what, || unsafe { a.free(old, size, Life::A) });
                    names(&what, &m, old, size, 0);
                }
            }
            // SAFETY: allocated above, freed once.
            unsafe { a.free(mine, 24, Life::B) };
        });
    });
    // Every object of O is free: the allocator must say so, and be whole.
    // SAFETY: F has ended; nobody else allocates or frees meanwhile.
    if let Err(e) = unsafe { a.verify() } {
        panic!("size {size}: verify after the remote misuse: {e}");
    }
    assert!(
        a.is_empty(),
        "size {size}: not empty after every object was freed"
    );
    let again: Vec<*mut u8> = (0..n).map(|_| a.malloc(size, Life::A)).collect();
    let mut seen: Vec<usize> = again.iter().map(|&p| p as usize).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(
        seen.len(),
        n,
        "size {size}: an object handed out twice after the misuse"
    );
    for p in again {
        // SAFETY: allocated above, freed once.
        unsafe { a.free(p, size, Life::A) };
    }
}

#[test]
fn small_objects_freed_wrongly_from_another_thread_are_reported_at_every_chain_state() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let before = set_misuse_hook(Some(raise));
    let a: Cohort<Life> = Cohort::new();
    for size in [8usize, 16, 24, 64, 200, 1000, 4000] {
        misuse_between_remote_frees(&a, size, 300);
    }
    set_misuse_hook(before);
}

#[test]
fn medium_and_large_allocations_freed_wrongly_from_another_thread_are_reported() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let before = set_misuse_hook(Some(raise));
    let a: Cohort<Life> = Cohort::new();
    for (size, n) in [(40_000usize, 40), (100_000, 20), (400_000, 6), (3 << 20, 3)] {
        misuse_between_remote_frees(&a, size, n);
    }
    set_misuse_hook(before);
}

/// Thread F frees objects of instance X made by the main thread (remote frees, pending in
/// F's batch of X) and stays alive, idle, while the main thread drops X and makes instance
/// Y, which may take X's addresses, and fills objects of Y. Then F allocates and frees in Y
/// and exits (its batches are pushed). X's pending frees must never reach Y's blocks: Y's
/// objects keep their bytes, Y verifies, and hands out no object twice.
#[test]
fn pending_remote_frees_of_a_dropped_instance_never_reach_the_next_one() {
    use std::sync::{mpsc, Arc};
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    for round in 0..10 {
        let x: Arc<Cohort<Life>> = Arc::new(Cohort::new());
        let objects: Vec<(usize, usize)> = (0..600)
            .map(|i| {
                let n = [16usize, 64, 200, 1000, 4000][i % 5];
                (x.malloc(n, Life::A) as usize, n)
            })
            .collect();
        let (freed_tx, freed) = mpsc::channel::<()>();
        let (y_tx, y_rx) = mpsc::channel::<Arc<Cohort<Life>>>();
        let xf = Arc::clone(&x);
        let f = std::thread::spawn(move || {
            let mine = xf.malloc(24, Life::B);
            for &(p, n) in &objects {
                // SAFETY: live objects of the main thread, handed over, freed once.
                unsafe { xf.free(p as *mut u8, n, Life::A) };
            }
            // SAFETY: allocated above, freed once.
            unsafe { xf.free(mine, 24, Life::B) };
            drop(xf);
            freed_tx.send(()).expect("freed");
            let y = y_rx.recv().expect("y");
            let more: Vec<(usize, usize)> = (0..2000)
                .map(|i| {
                    let n = [16usize, 64, 200, 1000, 4000][i % 5];
                    (y.malloc(n, Life::A) as usize, n)
                })
                .collect();
            for (p, n) in more {
                // SAFETY: allocated above, freed once.
                unsafe { y.free(p as *mut u8, n, Life::A) };
            }
        });
        freed.recv().expect("freed");
        drop(x);
        let y: Arc<Cohort<Life>> = Arc::new(Cohort::new());
        let kept: Vec<(usize, usize)> = (0..3000)
            .map(|i| {
                let n = [16usize, 64, 200, 1000, 4000][i % 5];
                let p = y.malloc(n, Life::A);
                // SAFETY: a fresh allocation of n bytes.
                unsafe { p.write_bytes((i % 251) as u8, n) };
                (p as usize, n)
            })
            .collect();
        y_tx.send(Arc::clone(&y)).expect("send y");
        f.join().expect("F");
        for (i, &(p, n)) in kept.iter().enumerate() {
            // SAFETY: live objects of n bytes.
            let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, n) };
            assert!(
                bytes.iter().all(|&b| b == (i % 251) as u8),
                "round {round}: object {i} of Y ({n} B at {p:#x}) was overwritten"
            );
        }
        let mut seen: Vec<usize> = kept.iter().map(|&(p, _)| p).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(
            seen.len(),
            kept.len(),
            "round {round}: Y handed an object out twice"
        );
        // SAFETY: F has ended; nobody else uses Y.
        if let Err(e) = unsafe { y.verify() } {
            panic!("round {round}: Y's verify: {e}");
        }
        for (p, n) in kept {
            // SAFETY: allocated above, freed once.
            unsafe { y.free(p as *mut u8, n, Life::A) };
        }
        assert!(y.is_empty(), "round {round}: Y not empty");
    }
}

/// As the private instance's tests, in the private regions of the region format (a fixed
/// region of `with_options`, with and without a fallback, and private caller memory of
/// `format_in`), whose heaps may batch their remote frees: small and medium sizes.
#[test]
fn objects_of_private_fixed_regions_freed_wrongly_from_another_thread_are_reported() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let capacity = 64 << 20;
    let f = Cohort::<Life>::footprint(capacity).expect("footprint");
    let mem = red_team_common::aligned_anonymous(f.bytes, f.align, false);
    let options = RegionOptions::new(capacity);
    let regions = [
        Cohort::<Life>::with_options(&options).expect("fixed"),
        Cohort::<Life>::with_options(&options.fallback(true)).expect("fallback"),
        // SAFETY: ours, unused, mapped for the process's life.
        unsafe { Cohort::<Life>::format_in(mem, f.bytes, &options) }.expect("formatted"),
    ];
    let before = set_misuse_hook(Some(raise));
    for a in &regions {
        for (size, n) in [
            (16usize, 300),
            (64, 300),
            (1000, 300),
            (4000, 100),
            (100_000, 10),
        ] {
            misuse_between_remote_frees(a, size, n);
        }
    }
    set_misuse_hook(before);
}

/// As the private instance's tests, in a shared region (whose heaps never batch: a remote
/// free is a lock-free push on the block's remote list), small and medium sizes.
#[test]
fn objects_of_a_shared_region_freed_wrongly_from_another_thread_are_reported() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let path = std::env::temp_dir().join(format!("cohort-red11-remote-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let r = cohort::SharedCohort::<Life>::create(
        cohort::Place::File(&path),
        cohort::CreateOptions::new(64 << 20),
    )
    .expect("create");
    let before = set_misuse_hook(Some(raise));
    for (size, n) in [(16usize, 300), (200, 300), (4000, 100), (100_000, 10)] {
        misuse_between_remote_frees(&r, size, n);
    }
    set_misuse_hook(before);
    r.destroy().expect("destroy");
    let _ = std::fs::remove_file(&path);
}
