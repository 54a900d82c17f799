//! Remote frees are batched per block in the freeing thread's heap and pushed as one chain
//! later: everything that must see every free that returned sees the batched ones (a
//! release, the statistics, `is_empty`, `verify`, `compact`, the freeing thread's exit),
//! and the checks a remote free makes hold for a batched slot (a double free).

mod common;

use cohort::Cohort;
use common::batches::{alloc_n, SIZE};
use common::misuse_message;
use std::collections::HashSet;
use std::sync::mpsc;
use std::thread;

cohort::lifetime_classes! {
    enum Life { Request, Long }
}

/// Runs a thread that frees `ptrs` (allocated by the caller with `SIZE` bytes in class
/// `life`), then waits until the caller, which runs `check` meanwhile, is done (the
/// thread's batch still holds the last frees while `check` runs), then pushes its batch
/// (an alloc slow path) and ends.
fn while_frees_are_pending<R>(
    a: &Cohort<Life>,
    ptrs: &[usize],
    life: Life,
    check: impl FnOnce() -> R,
) -> R {
    thread::scope(|s| {
        let (freed_tx, freed_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        s.spawn(move || {
            for &p in ptrs {
                // SAFETY: allocated by the caller with this size and class, freed once.
                unsafe { a.free(p as *mut u8, SIZE, life) };
            }
            freed_tx.send(()).unwrap();
            // Alive (its batch not flushed by an exit) until the check is done.
            let _ = done_rx.recv();
            // Then an allocation of a size new to the thread (the alloc slow path) pushes
            // what its batch holds, before the caller goes on.
            let p = a.malloc(40, Life::Long);
            // SAFETY: allocated just above.
            unsafe { a.free(p, 40, Life::Long) };
        });
        freed_rx.recv().unwrap();
        let r = check();
        done_tx.send(()).unwrap();
        r
    })
}

/// A whole block of `SIZE`-byte slots of class `life`, allocated by the calling thread:
/// the slots and the block's base.
fn fill_one_block(a: &Cohort<Life>, life: Life) -> (Vec<usize>, usize) {
    let per_block =
        cohort::class::CLASSES[cohort::class::class_of(SIZE, 16).unwrap()].capacity as usize;
    let ptrs = alloc_n(a, life, per_block);
    let block = a.block_of(ptrs[0] as *const u8, SIZE).unwrap();
    assert!(ptrs
        .iter()
        .all(|&p| a.block_of(p as *const u8, SIZE) == Some(block)));
    (ptrs, block)
}

/// Allocates a block's worth of slots again: how many fall outside `block` (0 when every
/// slot freed before came back).
fn refill_outside(a: &Cohort<Life>, n: usize, block: usize) -> (Vec<usize>, usize) {
    let again = alloc_n(a, Life::Request, n);
    let elsewhere = again
        .iter()
        .filter(|&&p| a.block_of(p as *const u8, SIZE) != Some(block))
        .count();
    (again, elsewhere)
}

#[test]
fn the_statistics_and_is_empty_see_batched_frees() {
    let a = Cohort::<Life>::new();
    let ptrs = alloc_n(&a, Life::Request, 3);
    let (empty, live) = while_frees_are_pending(&a, &ptrs, Life::Request, || {
        (a.is_empty(), a.stats().small.live)
    });
    assert_eq!(live, 0, "slots freed by another thread still counted live");
    assert!(empty, "every allocation was freed");
}

#[test]
fn verify_sees_batched_frees() {
    let a = Cohort::<Life>::new();
    let ptrs = alloc_n(&a, Life::Request, 3);
    let v = while_frees_are_pending(&a, &ptrs, Life::Request, || {
        // SAFETY: no other thread allocates or frees meanwhile (the freeing thread waits).
        unsafe { a.verify() }
    });
    assert_eq!(v.expect("consistent").live, 0);
}

/// A release must not empty a block whose freed slots wait in another thread's batch:
/// pushed after the release, they would go on the list of a block whose slots are live
/// again, and be handed out twice.
#[test]
fn a_release_sees_batched_frees_of_its_class() {
    let a = Cohort::<Life>::new();
    let ptrs = alloc_n(&a, Life::Request, 16);
    let mut again = while_frees_are_pending(&a, &ptrs[..3], Life::Request, || {
        // SAFETY: nothing of Request is used after this (the 13 others are dropped with
        // the release; the 3 were freed); no other thread allocates Request.
        let r = unsafe { a.release_class(Life::Request) };
        assert_eq!(r.left_to_other_threads, 0);
        alloc_n(&a, Life::Request, 16)
    });
    // The freeing thread pushed its batch (if still pending) and ended.
    again.extend(alloc_n(&a, Life::Request, 64));
    let distinct: HashSet<_> = again.iter().collect();
    assert_eq!(distinct.len(), again.len(), "a slot handed out twice");
}

/// `compact` gives back a block that batched frees emptied: the block's thread exited
/// (the pool owns it), and another thread freed its slots and is still running.
#[test]
fn compact_gives_back_blocks_that_batched_frees_emptied() {
    let a = Cohort::<Life>::new();
    let keep = a.malloc(SIZE, Life::Long);
    let ptrs = thread::scope(|s| s.spawn(|| alloc_n(&a, Life::Request, 3)).join().unwrap());
    let c = while_frees_are_pending(&a, &ptrs, Life::Request, || a.compact());
    assert!(c.blocks >= 1, "the emptied block was given back: {c:?}");
    // SAFETY: allocated above.
    unsafe { a.free(keep, SIZE, Life::Long) };
}

/// The freeing thread's exit pushes its pending frees: the owner then reuses every slot
/// of its block, and needs no other block.
#[test]
fn a_thread_exit_pushes_its_batched_frees() {
    let a = Cohort::<Life>::new();
    let (first, block) = fill_one_block(&a, Life::Request);
    // Joined by hand: a scope's end waits for the closure only, not for the thread's exit
    // (its thread-local destructors, which push the batch, may run later).
    thread::scope(|s| {
        s.spawn(|| {
            for &p in &first {
                // SAFETY: allocated above, freed once.
                unsafe { a.free(p as *mut u8, SIZE, Life::Request) };
            }
        })
        .join()
        .unwrap();
    });
    let (_, elsewhere) = refill_outside(&a, first.len(), block);
    assert_eq!(
        elsewhere, 0,
        "slots freed before the thread's exit never came back"
    );
}

/// A second free of a slot that waits in the freeing thread's batch is a double free,
/// reported as one (in every build: the batch's last slot of the block is checked).
#[test]
fn a_batched_slot_freed_again_is_a_double_free() {
    let a = Cohort::<Life>::new();
    let ptrs = alloc_n(&a, Life::Request, 2);
    let msg = thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: allocated above, freed once here.
            unsafe { a.free(ptrs[0] as *mut u8, SIZE, Life::Request) };
            misuse_message(|| {
                // SAFETY: none: the double free under test (reported before anything
                // changes).
                unsafe { a.free(ptrs[0] as *mut u8, SIZE, Life::Request) };
            })
        })
        .join()
        .unwrap()
    });
    assert!(msg.contains("double free"), "{msg}");
    // SAFETY: allocated above, freed once.
    unsafe { a.free(ptrs[1] as *mut u8, SIZE, Life::Request) };
    assert!(a.is_empty());
}

/// A shared region's remote frees are never batched: a process killed with `kill -9` right
/// after it freed another process's slots leaves nothing pending (a batch in its memory
/// would be lost with it, and its slots for ever). The owner gets every slot of its block
/// back and needs no other block.
#[test]
fn a_shared_regions_remote_frees_survive_the_freeing_process_killed() {
    let a = Cohort::<Life>::shared_anonymous(64 << 20).expect("a shared region");
    let (first, block) = fill_one_block(&a, Life::Request);
    let child = common::processes::in_child(60, || {
        for &p in &first {
            // SAFETY: allocated by the parent, freed once (here, in the child).
            unsafe { a.free(p as *mut u8, SIZE, Life::Request) };
        }
        // SAFETY: kill -9 of this process: no exit path runs.
        unsafe { libc::raise(libc::SIGKILL) };
    });
    let status = common::processes::wait_status(child);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "the child was killed: status {status:#x}"
    );
    let (again, elsewhere) = refill_outside(&a, first.len(), block);
    assert_eq!(elsewhere, 0, "slots the killed process freed were lost");
    for &p in &again {
        // SAFETY: allocated above, freed once.
        unsafe { a.free(p as *mut u8, SIZE, Life::Request) };
    }
    // SAFETY: no other process or thread uses the region any more.
    unsafe { a.verify() }.expect("the region verifies");
}

/// `try_free` of a slot that waits in the calling thread's batch reports a double free and
/// changes nothing (release builds too: the batch's chain is asked, as the block's lists
/// are).
#[test]
fn try_free_of_a_batched_slot_is_a_double_free() {
    let a = Cohort::<Life>::new();
    let ptrs = alloc_n(&a, Life::Request, 2);
    thread::scope(|s| {
        s.spawn(|| {
            let p = ptrs[0] as *mut u8;
            // SAFETY: allocated above, freed once; the second call is rejected.
            unsafe {
                assert_eq!(a.try_free(p, SIZE, Life::Request), Ok(()));
                let e = a.try_free(p, SIZE, Life::Request).unwrap_err();
                assert_eq!(e.problem, cohort::Problem::DoubleFree);
            }
        })
        .join()
        .unwrap();
    });
    // SAFETY: allocated above, freed once.
    unsafe { a.free(ptrs[1] as *mut u8, SIZE, Life::Request) };
    assert!(a.is_empty());
}

/// Frees spread over more blocks than a batch has entries, in turns (every block's chain
/// meets another block's in its entry, and is pushed early): every slot comes back, and
/// the blocks verify.
#[test]
fn frees_into_more_blocks_than_a_batch_has_entries_all_arrive() {
    let a = Cohort::<Life>::new();
    let blocks: Vec<(Vec<usize>, usize)> =
        (0..11).map(|_| fill_one_block(&a, Life::Request)).collect();
    let bases: HashSet<usize> = blocks.iter().map(|(_, b)| *b).collect();
    assert_eq!(
        bases.len(),
        blocks.len(),
        "each fill took a block of its own"
    );
    let per_block = blocks[0].0.len();
    thread::scope(|s| {
        s.spawn(|| {
            for i in 0..per_block {
                for (ptrs, _) in &blocks {
                    // SAFETY: allocated above with this size and class, freed once.
                    unsafe { a.free(ptrs[i] as *mut u8, SIZE, Life::Request) };
                }
            }
        })
        .join()
        .unwrap();
    });
    assert_eq!(a.stats().small.live, 0, "every slot freed");
    assert!(a.is_empty());
    // SAFETY: no other thread uses `a`.
    unsafe { a.verify() }.expect("the blocks verify");
}

/// A slot that another thread's flush pushed on its block's remote list (its first), freed
/// again while the freeing thread has a newer chain of the block pending: a double free,
/// reported (the quick way, which adds a slot to a pending chain, asks the block's list as
/// the chain's first), and nothing changes.
#[test]
fn a_slot_first_on_its_blocks_remote_list_freed_again_onto_a_pending_chain_is_a_double_free() {
    let a = Cohort::<Life>::new();
    let ptrs = alloc_n(&a, Life::Request, 3);
    let [x, y, z] = [ptrs[0], ptrs[1], ptrs[2]];
    let a = &a;
    let msg = thread::scope(|s| {
        let (freed_tx, freed_rx) = mpsc::channel();
        let (flushed_tx, flushed_rx) = mpsc::channel::<()>();
        let freer = s.spawn(move || {
            // SAFETY: allocated above, each freed once (the last free is the misuse).
            unsafe { a.free(x as *mut u8, SIZE, Life::Request) };
            freed_tx.send(()).unwrap();
            flushed_rx.recv().unwrap();
            // SAFETY: as above.
            unsafe {
                a.free(y as *mut u8, SIZE, Life::Request);
                a.free(z as *mut u8, SIZE, Life::Request);
            }
            misuse_message(|| {
                // SAFETY: none: the double free under test (reported before anything
                // changes).
                unsafe { a.free(x as *mut u8, SIZE, Life::Request) };
            })
        });
        freed_rx.recv().unwrap();
        // The statistics push every batch: `x` goes on its block's remote list, first.
        assert_eq!(a.stats().small.live, 2);
        flushed_tx.send(()).unwrap();
        freer.join().unwrap()
    });
    assert!(msg.contains("double free"), "{msg}");
    assert!(a.is_empty(), "each slot freed once");
    // SAFETY: no other thread uses `a`.
    unsafe { a.verify() }.expect("the blocks verify");
}
