//! Red-team guard (session 19) on the remote free's quick way (`free/remote.rs`,
//! `remote.rs`): a thread's batch keeps a chain of pending frees for a block; the block's
//! owner thread exits (its blocks go to the pool: owner 0) and, later, another thread's heap
//! takes the block from the pool; the freeing thread goes on freeing into the block all
//! along (while its owner lives, while the pool owns it, while the new owner allocates
//! from it). Every
//! slot must come back exactly once: the region verifies, is empty once everything is
//! freed, and hands out no slot twice. Passes on main 97872eb; pins down the quick way's
//! owner tests for changes to them.

use cohort::Cohort;
use std::collections::HashSet;
use std::sync::mpsc;

cohort::lifetime_classes! {
    enum Life { A }
}

const SIZE: usize = 64;
/// Objects the exiting owner makes (one block's worth and some: several chains).
const OBJECTS: usize = 600;

#[test]
fn guard_frees_into_a_block_whose_owner_exited_come_back_once() {
    let a: &'static Cohort<Life> = Box::leak(Box::new(Cohort::<Life>::new()));
    // The owner: allocates, hands its objects over, and exits when told.
    let (made_tx, made_rx) = mpsc::channel::<Vec<usize>>();
    let (exit_tx, exit) = mpsc::channel::<()>();
    let owner = std::thread::spawn(move || {
        made_tx
            .send(
                (0..OBJECTS)
                    .map(|_| a.malloc(SIZE, Life::A) as usize)
                    .collect(),
            )
            .unwrap();
        exit.recv().unwrap();
    });
    let made = made_rx.recv().unwrap();
    let (step_tx, step) = mpsc::channel::<usize>();
    let (done_tx, done) = mpsc::channel::<()>();
    // The freeing thread: frees in three parts, as told.
    let objects = made.clone();
    let freeing = std::thread::spawn(move || {
        let mut at = 0;
        for upto in step {
            for &p in &objects[at..upto] {
                // SAFETY: live objects of `a`, handed over, freed once.
                unsafe { a.free(p as *mut u8, SIZE, Life::A) };
            }
            at = upto;
            done_tx.send(()).unwrap();
        }
    });
    // Part 1 while the owner lives (the freeing thread's batch keeps chains of its
    // blocks); the owner exits (its blocks go to the pool); part 2 while the pool owns them.
    step_tx.send(OBJECTS / 4).unwrap();
    done.recv().unwrap();
    exit_tx.send(()).unwrap();
    owner.join().unwrap();
    step_tx.send(OBJECTS / 3).unwrap();
    done.recv().unwrap();
    // This thread takes blocks of the class from the pool (the owner's, partly freed).
    let mine: Vec<usize> = (0..OBJECTS / 3)
        .map(|_| a.malloc(SIZE, Life::A) as usize)
        .collect();
    // Part 2 while this thread's heap owns the block; part 3 the rest.
    step_tx.send(2 * OBJECTS / 3).unwrap();
    done.recv().unwrap();
    step_tx.send(OBJECTS).unwrap();
    done.recv().unwrap();
    drop(step_tx);
    freeing.join().unwrap();
    // Every live object distinct from every other.
    let live: HashSet<usize> = mine.iter().copied().collect();
    assert_eq!(live.len(), mine.len(), "a slot handed out twice");
    for &p in &mine {
        // SAFETY: allocated above with this size and class, freed once.
        unsafe { a.free(p as *mut u8, SIZE, Life::A) };
    }
    assert!(a.is_empty(), "{}", a.stats());
    // SAFETY: no other thread uses the instance.
    if let Err(e) = unsafe { a.verify() } {
        panic!("verify: {e}");
    }
    // Everything comes back once: a full refill hands out distinct slots.
    let again: Vec<usize> = (0..2 * OBJECTS)
        .map(|_| a.malloc(SIZE, Life::A) as usize)
        .collect();
    let distinct: HashSet<usize> = again.iter().copied().collect();
    assert_eq!(distinct.len(), again.len(), "a slot handed out twice");
    for &p in &again {
        // SAFETY: allocated above with this size and class, freed once.
        unsafe { a.free(p as *mut u8, SIZE, Life::A) };
    }
    assert!(a.is_empty());
}
