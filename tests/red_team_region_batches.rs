//! Red-team attacks of session 16 on remote frees in regions made through the region
//! format (`with_options`, `format_in`, `shared_anonymous_with`), whose heaps may keep a
//! thread's frees into other threads' blocks pending in a batch: the frees must be seen
//! whenever the program can look (a region left and attached again, a fork child, a
//! process killed right after its frees returned), never reach memory another view or
//! instance has, and leave no slot handed out twice. A test that found a defect is
//! `#[ignore]`d with its number (RED-n), its owner and the exact failure.

mod red_team_common;

use cohort::{Cohort, RegionOptions};
use red_team_common::{aligned_anonymous, in_child_reporting, wait, Report};
use std::sync::{mpsc, Arc};

cohort::lifetime_classes! {
    enum Life { A, B }
}

const MIB: usize = 1 << 20;
const SIZES: [usize; 5] = [16, 64, 200, 1000, 4000];

/// The byte an object at `p` is filled with.
fn byte_of(p: usize, salt: u8) -> u8 {
    (p >> 4) as u8 ^ salt
}

/// `n` objects of [`SIZES`] in turn, class A, each filled with [`byte_of`] it.
fn make(a: &Cohort<Life>, n: usize, salt: u8) -> Vec<(usize, usize)> {
    (0..n)
        .map(|i| {
            let size = SIZES[i % SIZES.len()];
            let p = a.malloc(size, Life::A);
            assert!(!p.is_null(), "{size} B");
            // SAFETY: `size` bytes of ours.
            unsafe { p.write_bytes(byte_of(p as usize, salt), size) };
            (p as usize, size)
        })
        .collect()
}

/// Every object of `sets` (with its salt) still holds its bytes, and no two overlap.
fn whole_and_apart(sets: &[(&[(usize, usize)], u8)], what: &str) {
    let mut spans = Vec::new();
    for &(set, salt) in sets {
        for &(p, size) in set {
            // SAFETY: live objects of ours.
            let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, size) };
            assert!(
                bytes.iter().all(|&b| b == byte_of(p, salt)),
                "{what}: the {size}-byte object at {p:#x} changed"
            );
            spans.push((p, size));
        }
    }
    spans.sort_unstable();
    for w in spans.windows(2) {
        assert!(
            w[0].0 + w[0].1 <= w[1].0,
            "{what}: {:#x} overlaps {:#x} (a slot handed out twice)",
            w[0].0,
            w[1].0
        );
    }
}

/// Frees every object of `set`.
fn free_all(a: &Cohort<Life>, set: &[(usize, usize)]) {
    for &(p, size) in set {
        // SAFETY: live objects of ours, freed once.
        unsafe { a.free(p as *mut u8, size, Life::A) };
    }
}

/// Asserts `a` verifies and counts `live` objects.
fn counts(a: &Cohort<Life>, live: usize, what: &str) {
    // SAFETY: the callers' other threads make no call meanwhile.
    match unsafe { a.verify() } {
        Ok(v) => assert_eq!(
            v.live, live,
            "{what}: objects counted live (frees that returned before are missing)"
        ),
        Err(e) => panic!("{what}: verify: {e}"),
    }
}

/// A thread of its own (with a heap of its own in `a`) frees `objects` (another thread's:
/// remote frees) and then waits, calling nothing, until `go` says so: its frees may stay
/// pending in its batch meanwhile. Returns once the frees have returned.
fn free_remotely_and_wait(
    a: &'static Cohort<Life>,
    objects: Vec<(usize, usize)>,
    go: mpsc::Receiver<()>,
) -> std::thread::JoinHandle<()> {
    let (freed_tx, freed) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        // A heap of its own (null in a full region: the heap is joined all the same).
        let mine = a.malloc(24, Life::B);
        free_all(a, &objects);
        // SAFETY: allocated above (or null), freed once (a local free).
        unsafe { a.free(mine, 24, Life::B) };
        freed_tx.send(()).expect("freed");
        let _ = go.recv();
    });
    freed.recv().expect("the worker's frees");
    worker
}

/// A region in private caller memory, formatted once and then dropped and attached again
/// 8 times. Each round a worker thread frees 600 of the main thread's objects (remote
/// frees) and stays idle while the main thread drops the view and attaches again: the new
/// view must count only the objects the main thread kept (the worker's frees returned
/// before the drop), serve 3 000 more without overlap, keep every byte when the worker
/// (whose heap the drop orphaned) exits later, and end empty.
#[test]
fn remote_frees_pending_when_a_caller_region_is_left_are_in_it_when_attached_again() {
    let capacity = 64 * MIB;
    let f = Cohort::<Life>::footprint(capacity).expect("footprint");
    let mem = aligned_anonymous(f.bytes, f.align, false);
    // SAFETY: ours, unused, mapped for the process's life.
    let mut a = unsafe { Cohort::<Life>::format_in(mem, f.bytes, &RegionOptions::new(capacity)) }
        .expect("formatted");
    for round in 0..8 {
        // The worker's view outlives the drop below (its heap is orphaned, not freed).
        let view: &'static Cohort<Life> = Box::leak(Box::new(a));
        let freed = make(view, 600, 0x11);
        let kept = make(view, 300, 0x22);
        let (go_tx, go) = mpsc::channel();
        let worker = free_remotely_and_wait(view, freed, go);
        // SAFETY: the leaked view is dropped once, here; the worker calls nothing more
        // on it, and its exit leaves its heap into the region (mapped for the process).
        unsafe { std::ptr::drop_in_place(std::ptr::from_ref(view).cast_mut()) };
        // SAFETY: the region formatted above, mapped for the process's life.
        a = unsafe { Cohort::<Life>::attach_in(mem, f.bytes, capacity) }.expect("attached");
        let what = format!("round {round}, attached again");
        whole_and_apart(&[(&kept, 0x22)], &what);
        counts(&a, kept.len(), &what);
        let more = make(&a, 3000, 0x33);
        whole_and_apart(&[(&kept, 0x22), (&more, 0x33)], &what);
        go_tx.send(()).expect("go");
        worker.join().expect("the worker");
        let what = format!("round {round}, after the worker's exit");
        whole_and_apart(&[(&kept, 0x22), (&more, 0x33)], &what);
        counts(&a, kept.len() + more.len(), &what);
        free_all(&a, &kept);
        free_all(&a, &more);
        assert!(a.is_empty(), "round {round}: not empty: {:?}", a.stats());
    }
}

/// Two private fixed regions (`with_options`, one with a fallback), each in an `Arc` a
/// worker shares: the worker frees 600 of the main thread's objects in X (pending) and
/// waits; the main thread drops X (the worker's clone first) and makes Y, which may take
/// X's addresses, and fills it; then the worker allocates and frees in Y and exits. X's
/// frees must never reach Y: Y's objects keep their bytes and Y verifies and ends empty.
#[test]
fn pending_remote_frees_of_a_dropped_fixed_region_never_reach_the_next_one() {
    for (round, fallback) in (0..8).map(|r| (r, r % 2 == 1)) {
        let options = RegionOptions::new(32 * MIB).fallback(fallback);
        let x: Arc<Cohort<Life>> = Arc::new(Cohort::with_options(&options).expect("x"));
        let freed = make(&x, 600, 0x44);
        let (freed_tx, freed_rx) = mpsc::channel();
        let (y_tx, y_rx) = mpsc::channel::<Arc<Cohort<Life>>>();
        let xf = Arc::clone(&x);
        let worker = std::thread::spawn(move || {
            let mine = xf.malloc(24, Life::B);
            assert!(!mine.is_null());
            free_all(&xf, &freed);
            // SAFETY: allocated above, freed once.
            unsafe { xf.free(mine, 24, Life::B) };
            drop(xf);
            freed_tx.send(()).expect("freed");
            let y = y_rx.recv().expect("y");
            let more = make(&y, 2000, 0x55);
            free_all(&y, &more);
        });
        freed_rx.recv().expect("the worker's frees");
        drop(x);
        let y: Arc<Cohort<Life>> = Arc::new(Cohort::with_options(&options).expect("y"));
        let kept = make(&y, 3000, 0x66);
        y_tx.send(Arc::clone(&y)).expect("send y");
        worker.join().expect("the worker");
        let what = format!("round {round} (fallback {fallback})");
        whole_and_apart(&[(&kept, 0x66)], &what);
        counts(&y, kept.len(), &what);
        free_all(&y, &kept);
        assert!(y.is_empty(), "{what}: not empty: {:?}", y.stats());
    }
}

/// A fork while a worker's remote frees of the main thread's objects may be pending in its
/// batch (the worker idle, in no call): the child must see them (verify counts only the
/// kept objects), serve new objects apart from the kept ones and end empty; the parent too,
/// before and after the worker's exit. In a private fixed region, in private caller memory
/// and in an instance of its own.
#[test]
fn a_fork_child_sees_the_remote_frees_an_idle_thread_holds_pending() {
    let capacity = 64 * MIB;
    let f = Cohort::<Life>::footprint(capacity).expect("footprint");
    let mem = aligned_anonymous(f.bytes, f.align, false);
    let instances: [(&str, &'static Cohort<Life>); 3] = [
        (
            "with_options",
            Box::leak(Box::new(
                Cohort::with_options(&RegionOptions::new(capacity)).expect("fixed"),
            )),
        ),
        (
            "format_in",
            // SAFETY: ours, unused, mapped (and the instance kept) for the process's life.
            Box::leak(Box::new(
                unsafe { Cohort::format_in(mem, f.bytes, &RegionOptions::new(capacity)) }
                    .expect("formatted"),
            )),
        ),
        ("new", Box::leak(Box::new(Cohort::new()))),
    ];
    let report = Report::new();
    for (name, a) in instances {
        for round in 0..6 {
            let what = format!("{name}, round {round}");
            let freed = make(a, 600, 0x77);
            let kept = make(a, 300, 0x78);
            let (go_tx, go) = mpsc::channel();
            let worker = free_remotely_and_wait(a, freed, go);
            let child = in_child_reporting(60, &report, || {
                let what = format!("{what}, child");
                whole_and_apart(&[(&kept, 0x78)], &what);
                counts(a, kept.len(), &what);
                let more = make(a, 3000, 0x79);
                whole_and_apart(&[(&kept, 0x78), (&more, 0x79)], &what);
                free_all(a, &kept);
                free_all(a, &more);
                assert!(a.is_empty(), "{what}: not empty: {:?}", a.stats());
            });
            let ended = wait(child);
            assert_eq!(ended, Ok(0), "{what}: the child: {}", report.message());
            counts(a, kept.len(), &format!("{what}, parent"));
            go_tx.send(()).expect("go");
            worker.join().expect("the worker");
            whole_and_apart(&[(&kept, 0x78)], &what);
            free_all(a, &kept);
            assert!(a.is_empty(), "{what}: parent not empty: {:?}", a.stats());
        }
    }
}

/// Regions other processes use (caller memory mapped shared, `shared_anonymous_with`): a
/// forked child frees 1 000 of the parent's objects (remote frees) and kills itself with
/// SIGKILL as soon as the frees return. Nothing may be lost with it: the parent counts only
/// the objects it kept, and after freeing them the region is empty.
#[test]
fn a_shared_regions_remote_frees_survive_the_freeing_process_killed() {
    let capacity = 64 * MIB;
    let f = Cohort::<Life>::footprint(capacity).expect("footprint");
    let mem = aligned_anonymous(f.bytes, f.align, true);
    let options = RegionOptions::new(capacity);
    let regions: [(&str, Cohort<Life>); 2] = [
        (
            "format_in, shared memory",
            // SAFETY: ours, unused, mapped for the process's life.
            unsafe { Cohort::format_in(mem, f.bytes, &options) }.expect("formatted"),
        ),
        (
            "shared_anonymous_with",
            Cohort::shared_anonymous_with(&options).expect("shared"),
        ),
    ];
    for (name, a) in &regions {
        for round in 0..4 {
            let what = format!("{name}, round {round}");
            let freed = make(a, 1000, 0x0f);
            let kept = make(a, 100, 0xf0);
            let child = red_team_common::in_child(60, || {
                free_all(a, &freed);
                // SAFETY: kill -9 of this process: no exit path runs.
                unsafe { libc::raise(libc::SIGKILL) };
            });
            assert_eq!(wait(child), Err(libc::SIGKILL), "{what}: the child");
            whole_and_apart(&[(&kept, 0xf0)], &what);
            counts(a, kept.len(), &what);
            free_all(a, &kept);
            assert!(a.is_empty(), "{what}: not empty: {:?}", a.stats());
        }
    }
}

/// Fills `a`, a region of fixed capacity, with objects of `size` bytes until it returns null, has
/// a worker thread free them all (remote frees, which may stay pending in its batch; the
/// worker then idle) and allocates as many again with `again_by` (of class A): every one must succeed (the memory is
/// free: its frees returned), then the worker exits and everything is freed. Returns how
/// many of the second allocations were null.
fn nulls_after_another_thread_freed_a_full_region(
    a: &'static Cohort<Life>,
    size: usize,
    again_by: &dyn Fn(usize) -> *mut u8,
) -> usize {
    let mut full = Vec::new();
    loop {
        let p = a.malloc(size, Life::A);
        if p.is_null() {
            break;
        }
        full.push((p as usize, size));
    }
    assert!(full.len() > 100, "the region holds {} objects", full.len());
    let n = full.len();
    let (go_tx, go) = mpsc::channel();
    let worker = free_remotely_and_wait(a, full, go);
    let again: Vec<*mut u8> = (0..n).map(|_| again_by(size)).collect();
    let nulls = again.iter().filter(|p| p.is_null()).count();
    go_tx.send(()).expect("go");
    worker.join().expect("the worker");
    for p in again.into_iter().filter(|p| !p.is_null()) {
        // SAFETY: allocated above, freed once.
        unsafe { a.free(p, size, Life::A) };
    }
    assert!(a.is_empty(), "not empty: {:?}", a.stats());
    nulls
}

/// The regions of [`nulls_after_another_thread_freed_a_full_region`]' rounds whose second
/// allocations met a null.
fn nulls_in(regions: &[(&str, &'static Cohort<Life>)], sizes: &[usize]) -> Vec<String> {
    let mut failures = Vec::new();
    for &(name, a) in regions {
        for (round, &size) in sizes.iter().enumerate() {
            let nulls =
                nulls_after_another_thread_freed_a_full_region(a, size, &|n| a.malloc(n, Life::A));
            if nulls > 0 {
                failures.push(format!("{name}, round {round}, {size} B: {nulls} null"));
            }
        }
    }
    failures
}

/// Out of memory is for memory in use: a full fixed region (`with_options`, private caller
/// memory) whose objects another thread freed serves as many again.
#[test]
fn a_full_fixed_region_serves_again_what_another_thread_freed() {
    let capacity = 8 * MIB;
    let f = Cohort::<Life>::footprint(capacity).expect("footprint");
    let mem = aligned_anonymous(f.bytes, f.align, false);
    let regions: [(&str, &'static Cohort<Life>); 2] = [
        (
            "with_options",
            Box::leak(Box::new(
                Cohort::with_options(&RegionOptions::new(capacity)).expect("fixed"),
            )),
        ),
        (
            "format_in",
            // SAFETY: ours, unused, mapped (and the instance kept) for the process's life.
            Box::leak(Box::new(
                unsafe { Cohort::format_in(mem, f.bytes, &RegionOptions::new(capacity)) }
                    .expect("formatted"),
            )),
        ),
    ];
    let failures = nulls_in(&regions, &[64; 3]);
    assert!(failures.is_empty(), "{failures:?}");
}

/// As above, allocating again through every call of the instance that allocates small
/// objects: `calloc`, `alloc` (a `Layout`), `malloc_at_least`. (A join's `malloc` gets
/// nothing there on main: RED-73, `red_team_full_regions`.)
#[test]
fn a_full_fixed_region_serves_again_through_every_allocation_call() {
    let capacity = 8 * MIB;
    let f = Cohort::<Life>::footprint(capacity).expect("footprint");
    let mem = aligned_anonymous(f.bytes, f.align, false);
    let regions: [(&str, &'static Cohort<Life>); 2] = [
        (
            "with_options",
            Box::leak(Box::new(
                Cohort::with_options(&RegionOptions::new(capacity)).expect("fixed"),
            )),
        ),
        (
            "format_in",
            // SAFETY: ours, unused, mapped (and the instance kept) for the process's life.
            Box::leak(Box::new(
                unsafe { Cohort::format_in(mem, f.bytes, &RegionOptions::new(capacity)) }
                    .expect("formatted"),
            )),
        ),
    ];
    let mut failures = Vec::new();
    for (name, a) in regions {
        let calls: [(&str, &dyn Fn(usize) -> *mut u8); 3] = [
            ("calloc", &|n| a.calloc(n, Life::A)),
            ("alloc", &|n| {
                a.alloc(std::alloc::Layout::from_size_align(n, 8).unwrap(), Life::A)
            }),
            ("malloc_at_least", &|n| a.malloc_at_least(n, Life::A).0),
        ];
        for (call, again_by) in calls {
            let nulls = nulls_after_another_thread_freed_a_full_region(a, 64, again_by);
            if nulls > 0 {
                failures.push(format!("{name}, {call}: {nulls} null"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

/// As above, in an instance of a fixed reservation (`with_reservation`), whose remote
/// frees batch.
///
/// RED-71 (owner: remote): fails on main c654d1c, debug and release-tests, every run:
/// `["with_reservation, round 0: 252 null", "with_reservation, round 1: 252 null", ...]`.
/// The worker's frees returned, but the last chain of each block stays pending in its batch
/// (counted used) while it is idle; the owner's allocation slow path flushes only its own
/// batch, and out of memory it takes over dead heaps (`reap_dead`) but flushes no other
/// heap's batch, so it returns null with the memory free. Wanted: out of memory, flush
/// every batch of the pool (`free::Instance::flush_batches`) and try again.
/// Fixed (remote, session 16): out of memory, the small slow path and a medium or large
/// request's room making push every thread's pending remote frees, then try again.
#[test]
fn a_full_reservation_serves_again_what_another_thread_freed() {
    let a: &'static Cohort<Life> = Box::leak(Box::new(Cohort::with_reservation(8 * MIB)));
    let failures = nulls_in(&[("with_reservation", a)], &[64; 3]);
    assert!(failures.is_empty(), "{failures:?}");
}

/// As above, with medium runs (the 32 KiB pair, and a longer run the run cache takes too),
/// in a fixed region and a fixed reservation: the worker's frees of the owner's runs.
///
/// RED-72 (owner: medium): fails on main c654d1c, every run (debug 2 of 2, release-tests
/// 3 of 3): `["with_options, round 0, 32768 B: 8 null", "with_options, round 1, 40000 B: 1
/// null", "with_reservation, round 0, 32768 B: 8 null", "with_reservation, round 1, 40000
/// B: 1 null"]`. The worker's heap keeps runs it freed (of the owner's blocks) in its medium
/// run cache (8 entries, `medium_cache`), which only that heap takes back, when it
/// allocates or its thread leaves; the owner's out-of-memory path flushes only its own
/// cache, so it returns null while those runs are free (all come back at the worker's exit).
/// Invariant 11 says freeing makes room again. Wanted: out of memory, have the other heaps'
/// cached runs given back, or cache only runs of the heap's own blocks.
/// Fixed (claim, session 17): out of memory claims the caches of other live heaps
/// (`heap_handover::claim`: flushed under the pool lock once their guard is taken).
#[test]
fn a_full_region_serves_again_the_medium_runs_another_thread_freed() {
    let capacity = 8 * MIB;
    let regions: [(&str, &'static Cohort<Life>); 2] = [
        (
            "with_options",
            Box::leak(Box::new(
                Cohort::with_options(&RegionOptions::new(capacity)).expect("fixed"),
            )),
        ),
        (
            "with_reservation",
            Box::leak(Box::new(Cohort::with_reservation(capacity))),
        ),
    ];
    let failures = nulls_in(&regions, &[32768, 40_000, 32768]);
    assert!(failures.is_empty(), "{failures:?}");
}
