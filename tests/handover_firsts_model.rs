//! A random model of the every-build double-free check across hand-overs (RED-140,
//! RED-141): three explicit joins and short-lived threads allocate objects of class A,
//! which anyone frees (the owner's frees go on the local list, the others' on the
//! cross-thread list: the test's thread, another join, a thread about to exit); joins
//! leave (and new ones join), threads exit, the test's thread compacts, a join churns
//! class B (its slow paths run the idle look, which with no decay delay empties idle
//! blocks of class A in place), and now and then every join leaves and class A is
//! released. After every step
//! (its pending remote frees flushed by `stats`), the slot freed last into each block, if
//! no allocation came from that block since, is freed again by the test's thread, with
//! `try_free` and with `free` (which owns no block of class A: another thread's free): it must be refused,
//! naming the slot and its size (README: the slot freed last onto the list the free would
//! push it on, whoever owns the block now). Every object made is checked against the live
//! ones (never handed out twice) and keeps its pattern; correct frees are never refused (a
//! join's or the test's thread's free panics on misuse). At the end every object left is
//! checked and freed, `verify` passes, fresh objects are handed out once, and the instance
//! is empty.
//!
//! Before RED-140's fix a hand-over (a leave, an exit) collected the remote list of a
//! block whose own lists were empty, and a release build accepted the second free of its
//! first: see the test's doc for the failures it had.

mod red_team_s22_common;

use cohort::{set_misuse_hook, Cohort, Join, Misuse};
use red_team_s22_common::{
    check, fresh_objects_once, made_by, patterned, raise, without_decay_delay, Object,
};
use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use test_support::Rng;

cohort::lifetime_classes! {
    enum Life { A, B }
}

/// The sizes of class A's objects: four size classes (an 8-byte slot, whose link fills half
/// of it; 128 slots a block at 16 KiB).
const SIZES: [usize; 4] = [8, 64, 1000, 16384];
/// Joins alive at once.
const JOINS: usize = 3;
/// Steps of one seed.
const STEPS: usize = 240;
/// The blocks' size: a block's index is an address shifted by this.
const BLOCK_SHIFT: u32 = 21;

/// Who made or freed an object.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Join(usize),
    Test,
    Thread,
}

/// The model: the live objects, and per block the slot freed last into it since its last
/// allocation (with its size and who freed it).
struct Model {
    live: Vec<Object>,
    addresses: HashSet<usize>,
    last_free: HashMap<usize, (usize, usize, Who)>,
    tag: u8,
}

impl Model {
    fn new() -> Model {
        Model {
            live: Vec::new(),
            addresses: HashSet::new(),
            last_free: HashMap::new(),
            tag: 0,
        }
    }

    /// Records object `o`, just made: it must not be live already.
    fn made(&mut self, o: Object, what: &str) -> Result<(), String> {
        if !self.addresses.insert(o.0) {
            return Err(format!("{what}: {o:x?} handed out while live"));
        }
        self.last_free.remove(&(o.0 >> BLOCK_SHIFT));
        self.live.push(o);
        Ok(())
    }

    /// Records that slot `p` of block `p >> BLOCK_SHIFT` was handed out (class B's
    /// objects: no longer its block's last free to check).
    fn handed_out(&mut self, p: usize) {
        self.last_free.remove(&(p >> BLOCK_SHIFT));
    }

    /// Takes live object `i` out, freed by `by`.
    fn freed(&mut self, i: usize, by: Who) -> Object {
        let o = self.live.swap_remove(i);
        self.addresses.remove(&o.0);
        self.last_free.insert(o.0 >> BLOCK_SHIFT, (o.0, o.1, by));
        o
    }

    fn next_tag(&mut self) -> u8 {
        self.tag = self.tag.wrapping_add(1);
        self.tag
    }
}

/// One step's operation.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// Join `j` makes an object.
    Make(usize),
    /// A live object is freed by join `j` (`Some`) or by the test's thread.
    Free(Option<usize>),
    /// Join `j` leaves; a new join takes its place.
    Leave(usize),
    /// A thread makes objects, frees some of them and one live object, and exits.
    ThreadExit,
    /// The test's thread compacts, and reads every block (`for_each_block`).
    Compact,
    /// Join `j` makes and frees class B objects (its slow paths run the idle look).
    Churn(usize),
    /// Every join leaves, class A is released (every live object of it dies: all were
    /// made by threads that exited or joins that left), and new joins come.
    Release,
}

fn random_op(rng: &mut Rng) -> Op {
    let j = rng.below(JOINS);
    match rng.below(100) {
        0..=39 => Op::Make(j),
        40..=54 => Op::Free(Some(j)),
        55..=74 => Op::Free(None),
        75..=79 => Op::Leave(j),
        80..=84 => Op::ThreadExit,
        85..=89 => Op::Compact,
        90..=98 => Op::Churn(j),
        _ => Op::Release,
    }
}

/// One seed of the model in a private instance or a shared-anonymous region. The failure,
/// if any (the instance is then forgotten: a slot freed twice corrupts it).
fn run(seed: u64, shared: bool) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let a: Cohort<Life> = without_decay_delay(shared);
    let mut model = Model::new();
    let mut joins: Vec<Join<'_, Life>> = (0..JOINS).map(|_| a.join(1).expect("a join")).collect();
    for step in 0..STEPS {
        let op = random_op(&mut rng);
        let what = format!("seed {seed}, shared: {shared}, step {step}, {op:?}");
        match op {
            Op::Make(j) => {
                let size = SIZES[rng.below(SIZES.len())];
                let tag = model.next_tag();
                let o = made_by(&joins[j], size, Life::A, tag, &what);
                model.made(o, &what)?;
            }
            Op::Free(by) => {
                if model.live.is_empty() {
                    continue;
                }
                let i = rng.below(model.live.len());
                let who = by.map_or(Who::Test, Who::Join);
                let o = model.freed(i, who);
                check(o, &what);
                let (p, size, _) = o;
                match by {
                    // SAFETY: a live object of `size` bytes of class A, freed once.
                    Some(j) => unsafe { joins[j].free(p as *mut u8, size, Life::A) },
                    // SAFETY: as above.
                    None => unsafe { a.free(p as *mut u8, size, Life::A) },
                }
            }
            Op::Leave(j) => {
                let left = std::mem::replace(&mut joins[j], a.join(1).expect("a join"));
                left.leave();
            }
            Op::ThreadExit => thread_exit(&a, &mut rng, &mut model, &what)?,
            Op::Compact => {
                let _ = a.compact();
                // Every block's counts read as a snapshot (none may be refused or crash).
                a.for_each_block(|b| assert!(b.live <= b.capacity, "{what}: {b:?}"));
            }
            Op::Churn(j) => {
                let size = [100usize, 1000][rng.below(2)];
                let others: Vec<usize> = (0..300)
                    .map(|_| joins[j].malloc(size, Life::B) as usize)
                    .collect();
                for &p in &others {
                    assert_ne!(p, 0, "{what}: the join's malloc({size})");
                    model.handed_out(p);
                    // SAFETY: just made, `size` bytes of class B, freed once.
                    unsafe { joins[j].free(p as *mut u8, size, Life::B) };
                }
            }
            Op::Release => {
                joins.clear();
                model.live.clear();
                model.addresses.clear();
                // SAFETY: no object of class A is used after (the model forgot them), and
                // no other thread uses the instance.
                let released = unsafe { a.release_class(Life::A) };
                if released.left_to_other_threads != 0 {
                    return Err(format!("{what}: {released:?}"));
                }
                joins.extend((0..JOINS).map(|_| a.join(1).expect("a join")));
            }
        }
        // Every pending remote free pushed on its block's list.
        let _ = a.stats();
        if let Err(e) = last_frees_refused(&a, &model, &what) {
            std::mem::forget(joins);
            std::mem::forget(a);
            return Err(e);
        }
    }
    let what = format!("seed {seed}, shared: {shared}, at the end");
    for o in model.live.drain(..) {
        check(o, &what);
        let (p, size, _) = o;
        // SAFETY: a live object of `size` bytes of class A, freed once.
        unsafe { a.free(p as *mut u8, size, Life::A) };
    }
    drop(joins);
    // SAFETY: no other thread uses the instance.
    let verified = unsafe { a.verify() };
    assert!(verified.is_ok(), "{what}: verify: {verified:?}");
    fresh_objects_once(&a, &SIZES, 2000, Life::A, &what);
    assert!(a.is_empty(), "{what}: objects left: {:?}", a.stats());
    Ok(())
}

/// A thread makes a few objects of one size, frees some of them (its own blocks: local
/// frees) and one live object of the model's (a cross-thread free), and exits: its heap
/// goes to the pool.
fn thread_exit(
    a: &Cohort<Life>,
    rng: &mut Rng,
    model: &mut Model,
    what: &str,
) -> Result<(), String> {
    let size = SIZES[rng.below(SIZES.len())];
    let n = rng.range(1, 40);
    let keep: Vec<bool> = (0..n).map(|_| rng.chance(50)).collect();
    let other = (!model.live.is_empty()).then(|| rng.below(model.live.len()));
    let first_tag = model.next_tag();
    // The model's object the thread frees, taken out first (its free is the thread's).
    let other = other.map(|i| model.freed(i, Who::Thread));
    // The thread's objects in order, with whether it freed each (in that order, after the
    // model's object).
    let made: Vec<Object> = std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(o) = other {
                check(o, what);
                // SAFETY: a live object of the model's, freed once.
                unsafe { a.free(o.0 as *mut u8, o.1, Life::A) };
            }
            let made: Vec<Object> = (0..n)
                .map(|i| {
                    let p = a.malloc(size, Life::A) as usize;
                    assert_ne!(p, 0, "{what}: the thread's malloc({size})");
                    patterned(p, size, first_tag.wrapping_add(i as u8))
                })
                .collect();
            for (o, &kept) in made.iter().zip(&keep) {
                if !kept {
                    check(*o, what);
                    // SAFETY: made above, freed once.
                    unsafe { a.free(o.0 as *mut u8, size, Life::A) };
                }
            }
            made
        })
        .join()
        .expect("the thread")
    });
    for &o in &made {
        model.made(o, what)?;
    }
    // Its frees, in the order it made them (after the allocations, which the loop above
    // recorded).
    for (o, &kept) in made.iter().zip(&keep) {
        if !kept {
            let i = model
                .live
                .iter()
                .position(|l| l.0 == o.0)
                .expect("made above");
            model.freed(i, Who::Thread);
        }
    }
    Ok(())
}

/// The test's thread frees again the slot freed last into each block (no allocation from
/// it since), with `try_free` and with `free`: each must be refused, naming the slot and
/// its size. (`try_free` also compares the first of the block's allocation list, where a
/// hand-over that collected the remote list left the slot: `free` does not.)
fn last_frees_refused(a: &Cohort<Life>, model: &Model, what: &str) -> Result<(), String> {
    for &(x, size, by) in model.last_free.values() {
        let failed = |how: &str, got: String| {
            format!(
                "{what}: {how} of {x:#x} ({size} bytes, the block's last free, by {by:?}) \
                 {got}"
            )
        };
        // SAFETY: a double free: refused, nothing changed (else the test fails).
        match unsafe { a.try_free(x as *mut u8, size, Life::A) } {
            Err(m) if (m.ptr, m.size) == (x, size) => {}
            other => return Err(failed("try_free", format!("returned {other:?}"))),
        }
        // SAFETY: as above; the hook (`raise`, set by the caller) unwinds.
        let twice = catch_unwind(AssertUnwindSafe(|| unsafe {
            a.free(x as *mut u8, size, Life::A)
        }));
        match twice.map_err(|e| *e.downcast::<Misuse>().expect("the hook's Misuse")) {
            Err(m) if (m.ptr, m.size) == (x, size) => {}
            Err(m) => return Err(failed("free", format!("was reported as {m}"))),
            Ok(()) => return Err(failed("free", "was not reported".to_string())),
        }
    }
    Ok(())
}

/// The model over 16 seeds in a private instance and 8 in a shared-anonymous region (half
/// as many in a debug build).
/// Before RED-140's fix (main c2d9a66, release-tests) 22 of the 24 seeds failed at a
/// join's leave, e.g. `seed 0, shared: false, step 57, Leave(0): free of 0x7ee360400040 (8
/// bytes, the block's last free, by Test) was not reported` (`try_free` refused them all:
/// it compares the allocation list's first too). 300 private and 100 shared seeds pass
/// with the fix (release-tests, 99 s on a loaded machine).
#[test]
fn the_last_free_of_every_block_is_refused_across_hand_overs() {
    let before = set_misuse_hook(Some(raise));
    let mut failures = Vec::new();
    // A debug build (every free fully checked) runs half as many.
    let (private_seeds, shared_seeds) = if cfg!(debug_assertions) {
        (8, 4)
    } else {
        (16, 8)
    };
    for (shared, seeds) in [(false, 0..private_seeds), (true, 100..100 + shared_seeds)] {
        for seed in seeds {
            if let Err(e) = run(seed, shared) {
                failures.push(e);
            }
        }
    }
    set_misuse_hook(before);
    assert!(
        failures.is_empty(),
        "{} failures: {failures:#?}",
        failures.len()
    );
}
