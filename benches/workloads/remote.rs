//! Workloads where objects are freed by another thread than the one that allocated them, or
//! outlive it. The first three report the memory they keep resident: the process's peak RSS
//! (`getrusage`'s `ru_maxrss`, the whole process: binary, runtime and allocator included)
//! and the minor page faults taken during the workload.
//!
//! - `handoff`: two worker threads pass tasks to each other, as the workers of an async
//!   runtime do when a task is woken on another worker; the worker that receives a task
//!   drops it (its buffers were allocated by the other worker) and allocates the next one.
//! - `spread:N`: a producer thread sends `Vec<u8>`s of 1 to N bytes through a 64-slot
//!   channel to a consumer thread that drops them: few objects live, many size classes.
//! - `shortlived`: threads that each build a batch of objects and exit; the main thread
//!   keeps the batches of the last few threads alive, so objects outlive their thread.
//! - `ring`, `channel`: a producer thread allocates 64-byte objects one at a time and hands
//!   each to a consumer thread that frees it, through a lock-free ring or
//!   `std::sync::mpsc::sync_channel`: the time a cross-thread free costs (not RSS).

use super::{alloc_touch, layout_for, report, thread_cpu_ns, Rng};
use std::alloc::dealloc;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread;
use std::time::{Duration, Instant};

/// Usage of the whole process so far.
pub(super) fn usage() -> libc::rusage {
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable rusage; RUSAGE_SELF is a constant Linux supports.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    assert_eq!(rc, 0, "getrusage");
    u
}

/// Runs `f` and reports the process's peak RSS and the minor faults taken during `f`.
fn measured(f: impl FnOnce()) {
    let before = usage();
    f();
    let after = usage();
    report("peak RSS", "MiB", after.ru_maxrss as f64 / 1024.0);
    report(
        "minor page faults",
        "faults",
        (after.ru_minflt - before.ru_minflt) as f64,
    );
}

/// A task of the `handoff` workload: a few buffers of varied sizes, as a future's state
/// holds.
struct Task {
    hops_left: usize,
    state: Vec<u8>,
    name: String,
    /// Each box its own allocation, on purpose: more objects crossing threads.
    #[allow(clippy::vec_box)]
    children: Vec<Box<[u64; 4]>>,
}

impl Task {
    fn new(hops_left: usize, rng: &mut Rng) -> Box<Task> {
        let state = vec![hops_left as u8; 16 + rng.below(2048)];
        let name = format!("task {hops_left}");
        let children = (0..rng.below(4)).map(|i| Box::new([i as u64; 4])).collect();
        Box::new(Task {
            hops_left,
            state,
            name,
            children,
        })
    }

    fn check(&self) -> bool {
        self.state.iter().all(|&b| b == self.hops_left as u8)
            && self.name.len() > 5
            && self
                .children
                .iter()
                .enumerate()
                .all(|(i, c)| c[3] == i as u64)
    }
}

/// Tasks in flight per worker in `handoff`.
const TASKS_PER_WORKER: usize = 128;

/// Two workers, each with an inbox holding every task in flight (so a send never blocks):
/// a received task is checked and dropped, and unless it has done its hops, its successor
/// (allocated here) goes to the other worker. `None` tells a worker to stop.
pub fn handoff(hops: usize) {
    let hops_per_task = (hops / (2 * TASKS_PER_WORKER)).max(1);
    let live = AtomicUsize::new(2 * TASKS_PER_WORKER);
    let capacity = 2 * TASKS_PER_WORKER + 1;
    let (tx0, rx0) = sync_channel::<Option<Box<Task>>>(capacity);
    let (tx1, rx1) = sync_channel::<Option<Box<Task>>>(capacity);
    let worker = |seed: u64, inbox: Receiver<Option<Box<Task>>>, other: SyncSender<_>| {
        let live = &live;
        move || {
            let mut rng = Rng::new(seed);
            for _ in 0..TASKS_PER_WORKER {
                other
                    .send(Some(Task::new(hops_per_task, &mut rng)))
                    .unwrap();
            }
            while let Some(task) = inbox.recv().unwrap() {
                assert!(task.check(), "a task's buffers changed in flight");
                let hops_left = task.hops_left - 1;
                drop(task);
                if hops_left > 0 {
                    other.send(Some(Task::new(hops_left, &mut rng))).unwrap();
                } else if live.fetch_sub(1, Ordering::AcqRel) == 1 {
                    // The last task: both workers stop (the other one may be waiting).
                    let _ = other.send(None);
                    break;
                }
            }
        }
    };
    measured(|| {
        thread::scope(|s| {
            s.spawn(worker(1, rx0, tx1));
            s.spawn(worker(2, rx1, tx0));
        });
    });
}

/// A `Vec<u8>` of 1 to `max_size` bytes, every byte written, per message through a
/// 64-slot channel; the consumer checks and drops it.
pub fn spread(max_size: usize, n: usize) {
    measured(|| {
        let (tx, rx) = sync_channel::<Vec<u8>>(64);
        let consumer = thread::spawn(move || {
            for v in rx {
                assert!(v[0] == v.len() as u8 && v[v.len() - 1] == v.len() as u8);
            }
        });
        let mut rng = Rng::new(max_size as u64);
        for _ in 0..n {
            let len = 1 + rng.below(max_size);
            tx.send(vec![len as u8; len]).unwrap();
        }
        drop(tx);
        consumer.join().unwrap();
    });
}

/// Threads alive at once in `shortlived`, and batches the main thread keeps.
const SHORT_THREADS: usize = 2;
const KEPT_BATCHES: usize = 8;
pub const BATCH_OBJECTS: usize = 20_000;

/// `threads` threads, `SHORT_THREADS` at a time, each allocating `BATCH_OBJECTS` objects of
/// 16 to 512 bytes that it hands to the main thread before it exits; the main thread keeps
/// the last `KEPT_BATCHES` batches (the older ones are freed, by a thread that did not
/// allocate them).
pub fn shortlived(threads: usize) {
    measured(|| {
        let mut kept: std::collections::VecDeque<Vec<Vec<u8>>> = Default::default();
        for round in 0..threads.div_ceil(SHORT_THREADS) {
            let handles: Vec<_> = (0..SHORT_THREADS)
                .map(|t| {
                    let seed = (round * SHORT_THREADS + t) as u64 + 1;
                    thread::spawn(move || {
                        let mut rng = Rng::new(seed);
                        (0..BATCH_OBJECTS)
                            .map(|_| {
                                let len = 16 + rng.below(497);
                                vec![len as u8; len]
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                kept.push_back(h.join().unwrap());
                if kept.len() > KEPT_BATCHES {
                    let old = kept.pop_front().unwrap();
                    assert!(old.iter().all(|v| v[v.len() - 1] == v.len() as u8));
                }
            }
        }
    });
}

/// Slots of the `ring` workload's ring, and of the `channel` workload's channel.
const HANDOVER_SLOTS: usize = 1024;

/// A bounded single-producer single-consumer ring of pointers, lock-free: `head` counts the
/// slots taken, `tail` the slots filled; slot `i % N` holds the `i`-th pointer.
struct Ring {
    slots: Box<[AtomicPtr<u8>]>,
    head: AtomicUsize,
    tail: AtomicUsize,
}

impl Ring {
    fn new(n: usize) -> Ring {
        Ring {
            slots: (0..n)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
        }
    }

    /// Producer only: false when the ring is full.
    fn push(&self, p: *mut u8) -> bool {
        let tail = self.tail.load(Ordering::Relaxed);
        if tail - self.head.load(Ordering::Acquire) == self.slots.len() {
            return false;
        }
        self.slots[tail % self.slots.len()].store(p, Ordering::Relaxed);
        self.tail.store(tail + 1, Ordering::Release);
        true
    }

    /// Consumer only: the oldest pointer, or `None` when the ring is empty.
    fn pop(&self) -> Option<*mut u8> {
        let head = self.head.load(Ordering::Relaxed);
        if head == self.tail.load(Ordering::Acquire) {
            return None;
        }
        let p = self.slots[head % self.slots.len()].load(Ordering::Relaxed);
        self.head.store(head + 1, Ordering::Release);
        Some(p)
    }
}

/// Reports a hand-over run of `n` objects: wall time and each side's thread CPU time
/// (hand-over and waiting included) per object, and their sum.
fn report_handover(n: usize, wall: Duration, producer_cpu: u64, consumer_cpu: u64) {
    let n = n as f64;
    report("wall", "ns/object", wall.as_nanos() as f64 / n);
    report(
        "CPU, both threads",
        "ns/object",
        (producer_cpu + consumer_cpu) as f64 / n,
    );
    report("producer CPU", "ns/object", producer_cpu as f64 / n);
    report("consumer CPU", "ns/object", consumer_cpu as f64 / n);
}

/// One producer thread allocates `n` 64-byte objects one at a time, writes them and pushes
/// each on a lock-free ring of [`HANDOVER_SLOTS`]; a consumer thread pops, checks and frees
/// them (every free a cross-thread free). A full or empty ring makes its side yield.
pub fn ring(n: usize) {
    let layout = layout_for(64);
    let ring = Ring::new(HANDOVER_SLOTS);
    let start = Instant::now();
    let (producer_cpu, consumer_cpu) = thread::scope(|s| {
        let ring = &ring;
        let consumer = s.spawn(move || {
            let t0 = thread_cpu_ns();
            for i in 0..n {
                let p = loop {
                    match ring.pop() {
                        Some(p) => break p,
                        None => thread::yield_now(),
                    }
                };
                // SAFETY: the producer allocated `p` with `layout`, wrote `i` into its first
                // byte and gave it up by pushing it.
                unsafe { check_and_free(p, i, layout) };
            }
            thread_cpu_ns() - t0
        });
        let t0 = thread_cpu_ns();
        for i in 0..n {
            let p = alloc_touch(layout, i as u8);
            while !ring.push(p) {
                thread::yield_now();
            }
        }
        let producer = thread_cpu_ns() - t0;
        (producer, consumer.join().unwrap())
    });
    report_handover(n, start.elapsed(), producer_cpu, consumer_cpu);
}

/// As [`ring`], through `std::sync::mpsc::sync_channel` of [`HANDOVER_SLOTS`] (whose own
/// bookkeeping allocates nothing per message).
pub fn channel(n: usize) {
    let layout = layout_for(64);
    let (tx, rx) = sync_channel::<Object>(HANDOVER_SLOTS);
    let start = Instant::now();
    let consumer = thread::spawn(move || {
        let t0 = thread_cpu_ns();
        for (i, Object(p)) in rx.into_iter().enumerate() {
            // SAFETY: the producer allocated `p` with `layout`, wrote `i` into its first byte
            // and gave it up by sending it.
            unsafe { check_and_free(p, i, layout) };
        }
        thread_cpu_ns() - t0
    });
    let t0 = thread_cpu_ns();
    for i in 0..n {
        tx.send(Object(alloc_touch(layout, i as u8)))
            .expect("consumer alive");
    }
    drop(tx);
    let producer_cpu = thread_cpu_ns() - t0;
    let consumer_cpu = consumer.join().unwrap();
    report_handover(n, start.elapsed(), producer_cpu, consumer_cpu);
}

/// The consumer's side of a hand-over: checks object `i`'s first byte and frees it.
///
/// # Safety
/// `p` is a live allocation with `layout` whose first byte was written with `i as u8`,
/// given up by its producer.
unsafe fn check_and_free(p: *mut u8, i: usize, layout: std::alloc::Layout) {
    // SAFETY: the caller's contract.
    unsafe {
        assert_eq!(p.read(), i as u8, "an object changed in flight");
        dealloc(p, layout);
    }
}

/// A pointer sent to another thread, which frees it.
struct Object(*mut u8);

// SAFETY: the object is owned by whoever holds the value; the sender gives it up.
unsafe impl Send for Object {}
