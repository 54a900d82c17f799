//! Multi-threaded stress test.
//!
//! Rounds of worker threads allocate objects of random sizes (every size class from 1 B to
//! 16 KiB, some large ones), in three lifetime classes, through every allocation call of the
//! API (malloc, calloc, malloc_at_least, remalloc, recalloc, and the `Layout` forms). Every
//! live object carries a pattern derived from its pointer and size, checked before it is
//! freed or resized. About a quarter of the objects pass through a shared transfer array and
//! are freed by another thread, and threads end (and new ones start) while objects they
//! allocated live on in that array. Between rounds the main thread checks every block's live
//! count against the objects it knows to be live.
//!
//! Another test runs snapshots (`stats`, `for_each_block`), `compact` and `release_class`
//! of a class the workers do not use, over and over, while workers allocate, free and exit.
//!
//! The objects under test come from a local `Cohort`; the test's own bookkeeping (Vecs,
//! Boxes, the HashMap) uses the system allocator.
//!
//! `COHORT_STRESS_SOAK=<seconds>` runs rounds for that long instead of the default count;
//! `COHORT_STRESS_SOAK=x<scale>` (for example `x10`) multiplies rounds and operations.

mod common;

use cohort::Cohort;
use common::objects::{self, check_accounting, Transfer};
use common::Rng;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

cohort::lifetime_classes! {
    /// A: short-lived, B: medium, C: long-lived (survives its thread).
    enum Life { A, B, C }
}

const LIVES: [Life; 3] = [Life::A, Life::B, Life::C];
/// How many objects a thread keeps per lifetime class before it frees one.
const KEEP: [usize; 3] = [8, 256, 2048];
const LARGE_MAX: usize = 1 << 20;
const TRANSFER_SLOTS: usize = 1024;

type Obj = objects::Obj<Life>;
type Tester<'a> = objects::Tester<'a, Life>;

struct Shared {
    a: Cohort<Life>,
    transfer: Transfer<Life, TRANSFER_SLOTS>,
}

/// One worker thread: `ops` random operations, then it leaves its long-lived objects in the
/// transfer array (freeing what it finds there) and exits.
fn worker(shared: &Shared, seed: u64, ops: usize) {
    let mut t = Tester::new(&shared.a, seed, LARGE_MAX);
    let mut local: [Vec<Obj>; 3] = Default::default();
    for _ in 0..ops {
        let which = [0, 0, 0, 0, 0, 1, 1, 1, 2, 2][t.rng.below(10)];
        match t.rng.below(100) {
            0..=54 => {
                let o = t.alloc(LIVES[which]);
                local[which].push(o);
                if local[which].len() > KEEP[which] {
                    let i = t.rng.below(local[which].len());
                    t.free(local[which].swap_remove(i));
                }
            }
            55..=69 => {
                if !local[which].is_empty() {
                    let i = t.rng.below(local[which].len());
                    t.free(local[which].swap_remove(i));
                }
            }
            70..=79 => {
                if !local[which].is_empty() {
                    let i = t.rng.below(local[which].len());
                    local[which][i] = t.resize(local[which][i]);
                }
            }
            _ => {
                // Hand an object to whichever thread next visits the slot; free what was
                // there (a cross-thread free) or keep it.
                let mine = (!local[which].is_empty()).then(|| {
                    let i = t.rng.below(local[which].len());
                    local[which].swap_remove(i)
                });
                let slot = t.rng.below(TRANSFER_SLOTS);
                if let Some(theirs) = shared.transfer.swap(slot, mine) {
                    if t.rng.chance(50) {
                        t.free(theirs);
                    } else {
                        Tester::check(&theirs, "transfer");
                        local[theirs.life as usize].push(theirs);
                    }
                }
            }
        }
    }
    // Thread exit: the short-lived die, half the medium ones too, the rest live on.
    for o in local[0].drain(..) {
        t.free(o);
    }
    let [_, medium, long] = local;
    let mut survivors = Vec::new();
    for o in medium.into_iter().chain(long) {
        if o.life == Life::B && t.rng.chance(50) {
            t.free(o);
        } else {
            survivors.push(o);
        }
    }
    for o in survivors {
        let slot = t.rng.below(TRANSFER_SLOTS);
        if let Some(theirs) = shared.transfer.swap(slot, Some(o)) {
            t.free(theirs);
        }
    }
}

enum Budget {
    Rounds(usize),
    Until(Instant),
}

/// Rounds and operations per thread per round, from `COHORT_STRESS_SOAK`.
fn budget(rounds: usize, ops: usize) -> (Budget, usize) {
    match std::env::var("COHORT_STRESS_SOAK") {
        Ok(v) if v.starts_with('x') => {
            let scale: usize = v[1..].parse().expect("COHORT_STRESS_SOAK=x<scale>");
            (Budget::Rounds(rounds * scale), ops * scale)
        }
        Ok(v) => {
            let secs: u64 = v.parse().expect("COHORT_STRESS_SOAK=<seconds>");
            (
                Budget::Until(Instant::now() + Duration::from_secs(secs)),
                ops,
            )
        }
        Err(_) => (Budget::Rounds(rounds), ops),
    }
}

/// Runs rounds of `threads` workers on one allocator; returns the number of rounds.
fn run(threads: usize, rounds: usize, ops: usize, seed: u64) -> usize {
    let (budget, ops) = budget(rounds, ops);
    let shared = Arc::new(Shared {
        a: Cohort::new(),
        transfer: Transfer::new(),
    });
    let mut rng = Rng::new(seed);
    let mut round = 0;
    loop {
        match budget {
            Budget::Rounds(n) if round >= n => break,
            Budget::Until(t) if round > 0 && Instant::now() >= t => break,
            _ => {}
        }
        let start = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (shared, start) = (Arc::clone(&shared), Arc::clone(&start));
                let thread_seed = rng.next_u64();
                // Uneven lengths: some threads exit while the others still free into their
                // blocks.
                let n = ops / 2 + rng.below(ops / 2 + 1);
                thread::Builder::new()
                    .name(format!("stress-{round}-{i}"))
                    .spawn(move || {
                        start.wait();
                        worker(&shared, thread_seed, n);
                    })
                    .unwrap()
            })
            .collect();
        for h in handles {
            h.join().expect("a worker thread panicked");
        }
        let mut live = take_quiescent(&shared, round);
        // The main thread frees some of them (their threads have exited) and puts the rest
        // back for the next round's threads.
        let mut t = Tester::new(&shared.a, rng.next_u64(), LARGE_MAX);
        for (i, o) in live.drain(..).enumerate() {
            if t.rng.chance(25) {
                t.free(o);
            } else {
                assert!(shared.transfer.swap(i, Some(o)).is_none());
            }
        }
        round += 1;
    }
    free_the_rest(&shared);
    round
}

/// Between rounds (every other thread has exited, the transfer array holds every live
/// object): takes the objects, checks the blocks' counts against them and verifies.
fn take_quiescent(shared: &Shared, round: usize) -> Vec<Obj> {
    let live = shared.transfer.take_all();
    check_accounting(&shared.a, &live);
    // SAFETY: the workers have exited; only this thread uses the allocator now.
    if let Err(e) = unsafe { shared.a.verify() } {
        panic!("round {round}: {e:?}");
    }
    live
}

/// At the end: frees what is left in the transfer array; nothing is live then.
fn free_the_rest(shared: &Shared) {
    let t = Tester::new(&shared.a, 0, LARGE_MAX);
    for o in shared.transfer.take_all() {
        t.free(o);
    }
    check_accounting(&shared.a, &[]);
}

#[test]
fn stress_four_threads_in_rounds() {
    let rounds = run(4, 6, 12_000, 1);
    eprintln!("stress: {rounds} rounds of 4 threads");
}

/// More threads than cores, short-lived: heaps are abandoned and adopted all the time.
#[test]
fn stress_thread_churn() {
    let rounds = run(8, 16, 1_500, 2);
    eprintln!("churn: {rounds} rounds of 8 threads");
}

/// Blocks of stride `stride` that hold or held objects (empty blocks kept for reuse are not
/// reported).
fn blocks_of_stride(a: &Cohort<Life>, stride: usize) -> usize {
    let mut n = 0;
    a.for_each_block(|b| n += usize::from(b.stride == stride));
    n
}

/// A patterned 64-byte object of lifetime class `life`.
fn alloc64(a: &Cohort<Life>, life: Life) -> Obj {
    let p = a.malloc(64, life);
    assert!(!p.is_null(), "malloc(64) returned null");
    let seed = common::seed_of(p, 64);
    // SAFETY: a fresh allocation of 64 bytes.
    unsafe { common::fill(p, seed, 64) };
    Obj {
        ptr: p,
        size: 64,
        free_size: 64,
        align: 0,
        life,
        seed,
    }
}

/// One thread allocates, another frees: the producer's blocks fill up, leave their head as
/// FULL and must come back through the consumer's remote frees. If they did not, the
/// producer would need a new block for every 16 Ki objects (25 over the run).
#[test]
fn producer_consumer_reuses_blocks() {
    const OBJECTS: usize = 400_000;
    let a = Arc::new(Cohort::<Life>::new());
    let (tx, rx) = std::sync::mpsc::sync_channel::<Obj>(4096);
    let producer = {
        let a = Arc::clone(&a);
        thread::spawn(move || {
            for _ in 0..OBJECTS {
                tx.send(alloc64(&a, Life::B)).unwrap();
            }
        })
    };
    let consumer = {
        let a = Arc::clone(&a);
        thread::spawn(move || {
            let t = Tester::new(&a, 6, LARGE_MAX);
            rx.into_iter().map(|o| t.free(o)).count()
        })
    };
    producer.join().expect("producer panicked");
    assert_eq!(consumer.join().expect("consumer panicked"), OBJECTS);
    check_accounting(&a, &[]);
    let blocks = blocks_of_stride(&a, 64);
    eprintln!("producer/consumer: {blocks} blocks of 64-byte slots");
    assert!(
        blocks <= 4,
        "{blocks} blocks of 64-byte slots for at most 4097 live objects"
    );
}

/// Threads allocate and exit while their objects live on; the main thread frees them. The
/// exited threads' blocks (the FULL ones kept by their abandoned heaps among them) must be
/// reused by the next round's threads, not replaced by new blocks every round.
#[test]
fn blocks_of_exited_threads_are_reused() {
    const ROUNDS: usize = 30;
    const PER_THREAD: usize = 40_000; // 2.5 MB of 64-byte objects: 3 blocks per thread.
    let a = Arc::new(Cohort::<Life>::new());
    let mut most = 0;
    for _ in 0..ROUNDS {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let a = Arc::clone(&a);
                thread::spawn(move || {
                    (0..PER_THREAD)
                        .map(|_| alloc64(&a, Life::C))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let live: Vec<Obj> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        check_accounting(&a, &live);
        let t = Tester::new(&a, 0, LARGE_MAX);
        for o in live {
            t.free(o);
        }
        // SAFETY: the threads have exited; only this thread uses the allocator now.
        unsafe { a.verify() }.unwrap();
        most = most.max(blocks_of_stride(&a, 64));
    }
    check_accounting(&a, &[]);
    eprintln!("exited threads: at most {most} blocks of 64-byte slots");
    assert!(
        most <= 12,
        "{most} blocks of 64-byte slots for at most 80 000 live objects"
    );
}

/// A thread fills blocks and exits; frees from another thread take two of its FULL blocks
/// out of FULL state (onto its abandoned heap's `returned` stack); when a running thread
/// needs a block, the pool reclaims both and lists the one it does not hand out.
/// `verify` then checks the pool's lists (keys, owners, links, roles).
#[test]
fn relisted_blocks_of_exited_threads_are_listed_by_the_pool() {
    use cohort::class::{class_of, CLASSES};
    use std::alloc::Layout;
    let a = Arc::new(Cohort::<()>::new());
    let l = Layout::from_size_align(64, 64).unwrap();
    let cap = CLASSES[class_of(64, 64).unwrap()].capacity as usize;
    // This thread joins a heap first, so it does not adopt the other thread's.
    let first = a.alloc(l, ()) as usize;
    let filler = {
        let a = Arc::clone(&a);
        // Two full blocks and most of a third.
        thread::spawn(move || {
            (0..3 * cap - 10)
                .map(|_| a.alloc(l, ()) as usize)
                .collect::<Vec<_>>()
        })
    };
    let objects = filler.join().unwrap();
    assert!(objects.iter().all(|&p| p != 0));
    // One object of each FULL block, freed from this thread: remote frees that relist.
    for &p in [objects[0], objects[cap]].iter() {
        // SAFETY: allocated above, freed once.
        unsafe { a.dealloc(p as *mut u8, l, ()) };
    }
    // This thread fills its block and the exited thread's current block (from the pool),
    // and needs another: the pool reclaims the two relisted blocks.
    let mine: Vec<usize> = (0..12).map(|_| a.alloc(l, ()) as usize).collect();
    let mine = mine.into_iter().chain([first]);
    // SAFETY: the other thread has exited; only this thread uses the allocator.
    unsafe { a.verify() }.unwrap();
    let freed = [objects[0], objects[cap]];
    let rest = objects.into_iter().filter(|p| !freed.contains(p));
    for p in mine.chain(rest) {
        // SAFETY: allocated above, each freed once.
        unsafe { a.dealloc(p as *mut u8, l, ()) };
    }
    // SAFETY: as above.
    unsafe { a.verify() }.unwrap();
}

/// The largest large object of the snapshot test (a few: patterning is slow in debug).
const CHURN_LARGE_MAX: usize = 64 << 10;

/// A worker of [`snapshots_compact_and_releases_while_threads_allocate`]: random objects of
/// classes A and B, bursts that fill and empty whole blocks (so blocks change hands all
/// the time), and cross-thread frees through the transfer array.
fn churn_worker(shared: &Shared, seed: u64, ops: usize) {
    let mut t = Tester::new(&shared.a, seed, CHURN_LARGE_MAX);
    let mut local: Vec<Obj> = Vec::new();
    for _ in 0..ops {
        let life = [Life::A, Life::B][t.rng.below(2)];
        match t.rng.below(100) {
            0..=49 => {
                local.push(t.alloc(life));
                if local.len() > 512 {
                    let i = t.rng.below(local.len());
                    t.free(local.swap_remove(i));
                }
            }
            50..=64 => {
                if !local.is_empty() {
                    let i = t.rng.below(local.len());
                    t.free(local.swap_remove(i));
                }
            }
            65..=69 => {
                // A burst of one size, freed at once: blocks fill, empty and go back.
                let size = t.rng.range(4096, 16 * 1024);
                let burst: Vec<Obj> = (0..t.rng.range(50, 300))
                    .map(|_| {
                        let p = shared.a.malloc(size, life);
                        assert!(!p.is_null(), "malloc({size}) returned null");
                        let seed = common::seed_of(p, size);
                        // SAFETY: a fresh allocation of `size` bytes.
                        unsafe { common::fill(p, seed, size) };
                        Obj {
                            ptr: p,
                            size,
                            free_size: size,
                            align: 0,
                            life,
                            seed,
                        }
                    })
                    .collect();
                for o in burst {
                    t.free(o);
                }
            }
            _ => {
                let mine = (!local.is_empty()).then(|| {
                    let i = t.rng.below(local.len());
                    local.swap_remove(i)
                });
                let slot = t.rng.below(TRANSFER_SLOTS);
                if let Some(theirs) = shared.transfer.swap(slot, mine) {
                    t.free(theirs);
                }
            }
        }
    }
    for o in local {
        t.free(o);
    }
}

/// What a snapshot must never report, whatever changes under it.
fn check_snapshot(a: &Cohort<Life>) {
    use cohort::class::{CLASS_COUNT, MEDIUM_CLASS};
    let s = a.stats();
    for h in &s.heads {
        assert!(h.size_class < CLASS_COUNT && h.life < 3, "{h:?}");
        assert!(h.live <= h.capacity, "{h:?}");
    }
    a.for_each_block(|b| {
        assert!(
            (b.size_class < CLASS_COUNT || b.size_class == MEDIUM_CLASS) && b.life < 3,
            "{b:?}"
        );
        assert!(b.live <= b.capacity, "{b:?}");
    });
}

/// Snapshots (`stats`, `for_each_block`), `compact` and `release_class` of a class the
/// workers do not use, run over and over by one thread while worker threads allocate, free
/// and exit (their blocks go to the pool, are given back and taken again by other classes).
/// Every object is patterned and checked at free; `verify` runs after each round. Bounded
/// by rounds; `COHORT_STRESS_SOAK` makes it longer as for the other stress tests.
#[test]
fn snapshots_compact_and_releases_while_threads_allocate() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (budget, ops) = budget(3, 500);
    let shared = Arc::new(Shared {
        a: Cohort::new(),
        transfer: Transfer::new(),
    });
    let mut rng = Rng::new(7);
    let mut round = 0;
    let mut snapshots = 0;
    loop {
        match budget {
            Budget::Rounds(n) if round >= n => break,
            Budget::Until(t) if round > 0 && Instant::now() >= t => break,
            _ => {}
        }
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (shared, done) = (Arc::clone(&shared), Arc::clone(&done));
            let seed = rng.next_u64();
            thread::spawn(move || {
                let mut t = Tester::new(&shared.a, seed, CHURN_LARGE_MAX);
                let mut n = 0;
                while !done.load(Ordering::Acquire) {
                    check_snapshot(&shared.a);
                    shared.a.compact();
                    let made: Vec<Obj> =
                        (0..t.rng.range(1, 64)).map(|_| t.alloc(Life::C)).collect();
                    for o in &made {
                        Tester::check(o, "before release");
                    }
                    let nonzero = made.iter().filter(|o| o.size > 0).count();
                    // SAFETY: only this thread uses class C, and drops its objects unused.
                    let r = unsafe { shared.a.release_class(Life::C) };
                    assert_eq!(r.left_to_other_threads, 0, "{r:?}");
                    assert_eq!(r.slots + r.medium + r.large, nonzero, "{r:?}");
                    n += 1;
                }
                n
            })
        };
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let shared = Arc::clone(&shared);
                let seed = rng.next_u64();
                let n = ops / 2 + rng.below(ops / 2 + 1);
                thread::spawn(move || churn_worker(&shared, seed, n))
            })
            .collect();
        for w in workers {
            w.join().expect("a worker panicked");
        }
        done.store(true, Ordering::Release);
        snapshots += watcher.join().expect("the snapshot thread panicked");
        let live = take_quiescent(&shared, round);
        for (i, o) in live.into_iter().enumerate() {
            assert!(shared.transfer.swap(i, Some(o)).is_none());
        }
        round += 1;
    }
    free_the_rest(&shared);
    eprintln!("snapshots: {round} rounds, {snapshots} snapshot passes");
}
