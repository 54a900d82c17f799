//! The owner's allocation cursor (src/heap/cursor.rs): while a block is current, the
//! allocations of the fast path are counted in the heap's row, not in the block's header,
//! and the block's allocation list and bump pointer are the row's. Every path where a block
//! leaves its head writes the cursor back to the header, and every reader of another
//! thread's (or process's) current block counts what its cursor holds. Each test below
//! takes one such path with objects handed out by the fast path, then checks that the
//! statistics, `verify` and the objects' bytes agree with what is live.

mod common;

use cohort::{Cohort, Retention};
use common::processes::{in_child, kill_and_reap, wait_ok};
use common::{yield_until, StopOnDrop};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

cohort::lifetime_classes! { enum Life { A, B } }

/// Live objects of the small classes, as the statistics count them.
fn stats_live(a: &Cohort<Life>) -> usize {
    a.stats().heads.iter().map(|h| h.live).sum()
}

/// The statistics and `verify` count `n` live objects, and `verify` finds the state
/// consistent.
///
/// # Safety
/// No other thread uses `a` meanwhile (`verify`'s contract).
unsafe fn consistent(a: &Cohort<Life>, n: usize, what: &str) {
    assert_eq!(stats_live(a), n, "{what}: the statistics' live objects");
    // SAFETY: the caller's.
    match unsafe { a.verify() } {
        Ok(v) => assert_eq!(v.live, n, "{what}: verify's live objects"),
        Err(e) => panic!("{what}: verify: {e}"),
    }
}

/// `n` objects of `size` in class `life`, each filled with a byte of its own.
fn fill(a: &Cohort<Life>, n: usize, size: usize, life: Life) -> Vec<usize> {
    (0..n)
        .map(|i| {
            let p = a.malloc(size, life);
            assert!(!p.is_null());
            // SAFETY: `size` bytes, just allocated.
            unsafe { p.write_bytes(i as u8, size) };
            p as usize
        })
        .collect()
}

/// Every object of `fill`'s `ps` from the `from`-th on still holds its byte, at its first
/// and last byte.
fn intact(ps: &[usize], from: usize, size: usize, what: &str) {
    for (i, &p) in ps.iter().enumerate().skip(from) {
        // SAFETY: live objects of `size` bytes.
        let (first, last) = unsafe { (*(p as *const u8), *((p + size - 1) as *const u8)) };
        assert!(
            first == i as u8 && last == i as u8,
            "{what}: object {i} was overwritten"
        );
    }
}

fn free_all(a: &Cohort<Life>, ps: &[usize], size: usize, life: Life) {
    for &p in ps {
        // SAFETY: allocated with this size and class, freed once.
        unsafe { a.free(p as *mut u8, size, life) };
    }
}

/// The bytes of the block holding `p` (every block is this many, aligned to it).
fn block_of(a: &Cohort<Life>, p: usize) -> usize {
    let mut size = 0;
    a.for_each_block(|b| {
        if (b.base..b.base + b.block_bytes).contains(&p) {
            size = b.block_bytes;
        }
    });
    assert!(size.is_power_of_two(), "a block holds {p:#x}");
    p & !(size - 1)
}

/// Objects of `size` until one lands in a second block: the first block was filled and
/// retired `FULL` by the slow path (its cursor written back before the retire).
fn fill_a_block(a: &Cohort<Life>, size: usize) -> (Vec<usize>, usize) {
    let mut ps = fill(a, 1, size, Life::A);
    let first = block_of(a, ps[0]);
    loop {
        let p = a.malloc(size, Life::A) as usize;
        assert_ne!(p, 0);
        ps.push(p);
        if block_of(a, p) != first {
            return (ps, first);
        }
    }
}

/// The slow path retires a full block `FULL`: its header must count the fast path's
/// allocations, or the first free into it does not relist it and the statistics lose them.
#[test]
fn a_block_retired_full_counts_its_fast_path_allocations() {
    let a = Cohort::<Life>::new();
    let (ps, _) = fill_a_block(&a, 1024);
    // SAFETY: no other thread uses `a`.
    unsafe { consistent(&a, ps.len(), "a full block retired") };
    free_all(&a, &ps, 1024, Life::A);
    // SAFETY: as above.
    unsafe { consistent(&a, 0, "everything freed") };
}

/// The slow path leaves a current block for a listed one with more freed slots: the block
/// goes to its partial list, with its cursor written back.
#[test]
fn a_block_left_for_a_listed_one_is_written_back() {
    let a = Cohort::<Life>::new();
    let (mut ps, full) = fill_a_block(&a, 1024);
    // Half the full block's objects freed by the owner: it is listed again, with freed
    // slots the next slow path prefers to the current block's never-used ones.
    let (mut freed, mut kept) = (Vec::new(), Vec::new());
    for (i, &p) in ps.iter().enumerate() {
        if i % 2 == 0 && block_of(&a, p) == full {
            freed.push(p);
        } else {
            kept.push(p);
        }
    }
    free_all(&a, &freed, 1024, Life::A);
    ps = kept;
    // Objects from the second block until one comes from the listed first one: the second
    // block left its head (listed, with live objects) at that slow path.
    let second = block_of(&a, *ps.last().unwrap());
    let mut more = Vec::new();
    loop {
        let p = a.malloc(1024, Life::A) as usize;
        more.push(p);
        if block_of(&a, p) == full {
            break;
        }
        assert!(more.len() < 10_000, "the listed block was never taken");
    }
    assert!(more.len() > 1, "the second block handed out objects first");
    ps.extend(more);
    let in_second = ps.iter().filter(|&&p| block_of(&a, p) == second).count();
    assert!(in_second > 1);
    // SAFETY: no other thread uses `a`.
    unsafe { consistent(&a, ps.len(), "the second block listed") };
    free_all(&a, &ps, 1024, Life::A);
    // SAFETY: as above.
    unsafe { consistent(&a, 0, "everything freed") };
}

/// 64-byte objects of class A in a fresh instance's current block, 128 KiB and more (past
/// the first 64 KiB page), the last 20 of them handed out by the fast path after the slow
/// path moved the bump window on to their page; then every object up to the slow path's
/// freed. The block's header counts no live object then: its cursor counts the 20.
/// Returns every object, and how many were freed (the first ones).
fn only_the_cursor_counts(a: &Cohort<Life>) -> (Vec<usize>, usize) {
    let mut ps = fill(a, 2048, 64, Life::A);
    while *ps.last().unwrap() & 4095 != 20 * 64 {
        let p = a.malloc(64, Life::A);
        assert!(!p.is_null());
        // SAFETY: 64 bytes, just allocated: `fill`'s byte for its index.
        unsafe { p.write_bytes(ps.len() as u8, 64) };
        ps.push(p as usize);
    }
    // The bump window moves on a page (4 KiB) at a time, by the slow path, which hands out
    // the window's first slot.
    let window = *ps.last().unwrap() & !4095;
    let freed = ps.iter().take_while(|&&p| p <= window).count();
    assert_eq!(ps.len() - freed, 20);
    free_all(a, &ps[..freed], 64, Life::A);
    (ps, freed)
}

/// After a path that must keep `only_the_cursor_counts`'s block (`what`): its live objects
/// are intact and counted, and the next 100 objects are none of them.
fn still_counted(a: &Cohort<Life>, ps: &[usize], freed: usize, what: &str) {
    intact(ps, freed, 64, what);
    let live = ps.len() - freed;
    // SAFETY: no other thread uses `a` (the callers' tests).
    unsafe { consistent(a, live, what) };
    let more = fill(a, 100, 64, Life::A);
    let mut all: Vec<usize> = ps[freed..].to_vec();
    all.extend(&more);
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), live + 100, "{what}: an object handed out twice");
}

/// `compact` gives back the current blocks with no live object: one whose header alone
/// counts none (its objects handed out by the fast path) is not one.
#[test]
fn compact_keeps_a_current_block_whose_objects_the_cursor_counts() {
    let a = Cohort::<Life>::new();
    let (ps, freed) = only_the_cursor_counts(&a);
    a.compact();
    still_counted(&a, &ps, freed, "after compact");
}

/// The idle look resets the current blocks empty at its look: one whose header alone
/// counts no live object (its objects handed out by the fast path) is not empty. A block
/// of another class, its objects freed by another thread, is reset meanwhile: the look ran.
#[test]
fn the_idle_look_keeps_a_current_block_whose_objects_the_cursor_counts() {
    let a = Cohort::<Life>::new();
    a.set_retention(Retention {
        delay: Duration::from_millis(0),
        ..Retention::DEFAULT
    });
    let (ps, freed) = only_the_cursor_counts(&a);
    // The witness: 128 KiB of 256-byte objects, freed by another thread.
    let witness = fill(&a, 512, 256, Life::B);
    std::thread::scope(|s| {
        s.spawn(|| free_all(&a, &witness, 256, Life::B));
    });
    let resident_256 = |a: &Cohort<Life>| -> usize {
        a.stats()
            .heads
            .iter()
            .filter(|h| h.stride == 256)
            .map(|h| h.resident_bytes)
            .sum()
    };
    let before = resident_256(&a);
    let start = Instant::now();
    // Slow paths of a third class (each round's objects come back through the local list
    // and a collect) until a look resets the witness.
    while resident_256(&a) >= before && start.elapsed() < Duration::from_secs(10) {
        let qs = fill(&a, 3000, 1000, Life::B);
        free_all(&a, &qs, 1000, Life::B);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(resident_256(&a) < before, "no idle look within 10 s");
    still_counted(&a, &ps, freed, "after the idle look");
}

/// `release_class` empties the current blocks in place: it counts the objects the cursor
/// handed out, and the next allocations start from the emptied block (its cursor read
/// again), each once.
#[test]
fn release_class_counts_and_reloads_the_cursor() {
    let a = Cohort::<Life>::new();
    let _other = fill(&a, 10, 64, Life::B);
    let ps = fill(&a, 300, 64, Life::A);
    // SAFETY: the objects of class A are not used after.
    let released = unsafe { a.release_class(Life::A) };
    assert_eq!(released.slots, ps.len(), "{released:?}");
    let more = fill(&a, 300, 64, Life::A);
    let mut sorted = more.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        300,
        "no object handed out twice after the release"
    );
    // SAFETY: no other thread uses `a`.
    unsafe { consistent(&a, 310, "after the release") };
}

/// Runs `make` on another thread, then `here` on this one while that thread lives
/// (holding its heap), then lets it end: returns what `make` returned (its objects) and
/// what `here` did.
fn while_another_thread_lives<R>(
    a: &Cohort<Life>,
    make: impl FnOnce(&Cohort<Life>) -> Vec<usize> + Send,
    here: impl FnOnce() -> R,
) -> (Vec<usize>, R) {
    let ready = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let t = s.spawn(|| {
            let ps = make(a);
            ready.store(true, Ordering::Release);
            while !done.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(1));
            }
            ps
        });
        // Lets the thread end however `here` ends (a failed check panics there).
        let let_it_end = StopOnDrop(&done);
        yield_until(
            "the other thread's objects",
            || ready.load(Ordering::Acquire),
            || t.is_finished(),
        );
        let r = here();
        drop(let_it_end);
        (t.join().unwrap(), r)
    })
}

/// `release_class` leaves another live thread's current block to it, counted in
/// `left_to_other_threads`: a block whose header alone counts no object (its first object
/// freed, the others handed out by the fast path) holds the cursor's.
#[test]
fn release_class_leaves_another_threads_cursor_objects_to_it() {
    let a = Cohort::<Life>::new();
    let make = |a: &Cohort<Life>| {
        // Within the block's first bump window: the slow path handed out the first.
        let ps = fill(a, 40, 64, Life::A);
        free_all(a, &ps[..1], 64, Life::A);
        ps
    };
    let (ps, (released, live)) = while_another_thread_lives(&a, make, || {
        // SAFETY: this thread has no object of class A; the other thread's are its own.
        (unsafe { a.release_class(Life::A) }, stats_live(&a))
    });
    assert_eq!(
        (released.slots, released.left_to_other_threads),
        (0, 1),
        "{released:?}"
    );
    assert_eq!(live, 39, "the other thread's objects after the release");
    intact(&ps, 1, 64, "the other thread's objects after the release");
    free_all(&a, &ps[1..], 64, Life::A);
    // SAFETY: no other thread uses `a`.
    unsafe { consistent(&a, 0, "everything freed") };
}

/// A thread's exit hands its current blocks to the pool, their cursors written back.
#[test]
fn a_threads_exit_writes_its_cursors_back() {
    let a = Cohort::<Life>::new();
    let ps = std::thread::scope(|s| {
        s.spawn(|| {
            let mut ps = fill(&a, 300, 64, Life::A);
            ps.extend(fill(&a, 30, 1024, Life::A));
            ps
        })
        .join()
        .unwrap()
    });
    // SAFETY: the thread exited.
    unsafe { consistent(&a, 330, "after the owner's exit") };
    free_all(&a, &ps[..300], 64, Life::A);
    free_all(&a, &ps[300..], 1024, Life::A);
    // SAFETY: as above.
    unsafe { consistent(&a, 0, "everything freed") };
}

/// Another live thread's current block: the statistics count its cursor's objects, and a
/// fork child (where that thread is gone and its heap stays its) reads them the same way,
/// verifies, and frees them.
#[test]
fn another_threads_cursor_is_counted_here_and_in_a_fork_child() {
    let a = Cohort::<Life>::new();
    let (ps, (seen, status)) = while_another_thread_lives(
        &a,
        |a| fill(a, 300, 64, Life::A),
        || {
            let seen = stats_live(&a);
            let child = in_child(30, || {
                // SAFETY: the child's only thread.
                unsafe { consistent(&a, 300, "in the fork child") };
            });
            (seen, common::processes::wait_status(child))
        },
    );
    assert_eq!(seen, 300, "another thread's current block");
    assert_eq!(status, 0, "the fork child's check failed");
    let child = in_child(30, || {
        free_all(&a, &ps, 64, Life::A);
        // SAFETY: as above.
        unsafe { consistent(&a, 0, "freed in the fork child") };
    });
    wait_ok(child);
}

/// A process's current blocks in a region shared with it: another process counts their
/// cursors' objects while the owner lives, and takes its heap over when it is killed (the
/// hand-over writes the dead owner's cursors back).
#[test]
fn a_shared_regions_cursors_are_counted_by_another_process_and_written_back_at_a_take_over() {
    let a = Cohort::<Life>::shared_anonymous(64 << 20).expect("a shared region");
    let flag = a.calloc(8, Life::B).cast::<AtomicU64>();
    // SAFETY: 8 zeroed bytes, aligned to 8, live until the end.
    let flag = unsafe { &*flag };
    let child = in_child(60, || {
        let ps = fill(&a, 300, 64, Life::A);
        drop(ps);
        flag.store(1, Ordering::Release);
        loop {
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    while flag.load(Ordering::Acquire) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let seen = stats_live(&a);
    kill_and_reap(child, "the allocating child");
    // One object of this process (the flag), the child's 300.
    assert_eq!(seen, 301, "the live child's current block");
    // SAFETY: nobody else uses the region now; verify takes the dead child's heap over.
    unsafe { consistent(&a, 301, "after the dead child's heap was taken over") };
}
