//! Two or three threads handing objects to each other: every object may be freed or
//! resized by a thread other than the one that made it (remote frees), threads exit and
//! are replaced (their heaps abandoned, adopted by later threads, their objects freed by
//! others), and a thread releases a class while the others hold objects of it.
//!
//! Most operations run in lockstep: the main thread hands one operation at a time to a
//! worker and waits for it, so an input replays the same way every time (the operations of
//! the single-threaded targets, run by the worker the input names, on a shared model).
//! `Burst` runs every worker at once for a few steps (allocating, freeing objects the
//! others made, `stats`, `for_each_block`, `compact`, and one worker releasing a class no
//! other touches meanwhile): interleavings vary between runs, the operations do not.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use cohort::Cohort;
use cohort_fuzz::{
    fill, finish, free_obj, skip, tracing, usable, Borrowed, Config, Fate, Kind, Life, Model, Obj,
    Op, Origin, Runner, LIVES,
};
use libfuzzer_sys::fuzz_target;
use std::alloc::Layout;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;
use std::thread::{Scope, ScopedJoinHandle};

const CONFIG: Config = Config {
    may_fail: false,
    max_size: 1 << 20,
    budget: 64 << 20,
};

#[derive(Arbitrary, Debug)]
enum ThreadOp {
    /// Worker `t` runs `op` (a scope is skipped: it needs the allocator exclusively).
    On { t: u8, op: Op },
    /// Worker `t` exits; a new thread takes its place.
    Restart { t: u8 },
    /// Every worker at once, `n % 64 + 1` steps each, from a generator seeded by `seed`;
    /// with `release`, worker 0 releases class C at its step `at` (no other worker touches
    /// class C during the burst).
    Burst {
        seed: u32,
        n: u8,
        release: bool,
        at: u8,
    },
}

type Job<'e> = Box<dyn FnOnce() + Send + 'e>;

struct Worker<'scope, 'e> {
    jobs: Sender<Job<'e>>,
    serial: usize,
    thread: ScopedJoinHandle<'scope, ()>,
}

/// What the workers share: the model and the collections and joins (they move between
/// threads; one worker uses them at a time).
struct Shared<'e> {
    m: Mutex<Model>,
    b: Mutex<Borrowed<'e>>,
    alive: Mutex<Vec<usize>>,
    /// What the workers of a burst still hold at its end.
    returned: Mutex<Vec<Obj>>,
}

static SERIAL: AtomicUsize = AtomicUsize::new(1);

fn spawn<'scope, 'e>(s: &'scope Scope<'scope, 'e>, done: &Sender<()>) -> Worker<'scope, 'e> {
    let (jobs, rx): (Sender<Job<'e>>, Receiver<Job<'e>>) = channel();
    let done = done.clone();
    let thread = s.spawn(move || {
        for job in rx {
            job();
            done.send(()).unwrap();
        }
    });
    Worker {
        jobs,
        serial: SERIAL.fetch_add(1, Ordering::Relaxed),
        thread,
    }
}

/// A small generator for the bursts (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One worker's part of a burst: `steps` steps on its own objects (`mine`, handed to it
/// or made by it); returns what is still live. Class C only with `class_c`.
#[allow(clippy::too_many_arguments)]
fn burst_part(
    c: &Cohort<Life>,
    mut mine: Vec<Obj>,
    mut rng: Rng,
    steps: usize,
    me: usize,
    id_base: u64,
    class_c: bool,
    release_at: Option<usize>,
) -> Vec<Obj> {
    let lives: &[Life] = if class_c { &LIVES } else { &LIVES[..2] };
    for step in 0..steps {
        if release_at == Some(step) {
            // Its own small objects of C and every large one of C are freed; the model's
            // objects of C are settled by the main thread after the burst.
            mine.retain(|o| o.life != Life::C || o.size == 0);
            // SAFETY: no other thread touches class C during this burst, and every object
            // of C this worker holds was dropped above.
            unsafe { c.release_class(Life::C) };
        }
        // compact() is rarer: it reads the residency of every block (mincore).
        match rng.below(20) {
            0..=8 => {
                let size = match rng.below(8) {
                    0 => 1 + rng.below(2),
                    1..=5 => 1 + rng.below(512),
                    6 => 1 + rng.below(16 << 10),
                    _ => (16 << 10) + rng.below(200 << 10),
                };
                let l = lives[rng.below(lives.len())];
                let (ptr, kind) = if rng.below(2) == 0 {
                    (c.malloc(size, l), Kind::Malloc)
                } else {
                    let a = 1 << rng.below(13);
                    (
                        c.alloc(Layout::from_size_align(size, a).unwrap(), l),
                        Kind::Layout(a),
                    )
                };
                assert!(!ptr.is_null(), "burst: allocation of {size} B failed");
                assert_eq!(ptr as usize % kind.align(size), 0, "burst: misaligned");
                let id = id_base + step as u64;
                // SAFETY: a fresh allocation of `size` bytes.
                unsafe { fill(ptr, size, id) };
                let usable = usable(c, size, kind.align(size));
                mine.push(Obj {
                    ptr,
                    size,
                    usable,
                    kind,
                    life: l,
                    id,
                    origin: Origin::Thread(me),
                });
            }
            9..=16 if !mine.is_empty() => {
                let o = mine.swap_remove(rng.below(mine.len()));
                free_obj(
                    c,
                    &Borrowed::default(),
                    &o,
                    rng.next() as u32,
                    rng.next() as u8,
                );
            }
            // Snapshots are rarer still: they read every block's residency too.
            17 if rng.below(4) == 0 && !skip("snapshots") => {
                let s = c.stats();
                for h in &s.heads {
                    assert!(h.live <= h.capacity, "burst: stats() head {h:?}");
                }
                c.for_each_block(|b| assert!(b.live <= b.capacity, "burst: block {b:?}"));
            }
            19 if rng.below(4) == 0 => {
                c.compact();
            }
            _ => {}
        }
    }
    for o in &mine {
        o.check("at the end of a burst");
    }
    mine
}

fn run(ops: &[ThreadOp], threads: usize) {
    let cohort: Cohort<Life> = Cohort::new();
    let c = &cohort;
    let shared = Shared {
        m: Mutex::new(Model::default()),
        b: Mutex::new(Borrowed::default()),
        alive: Mutex::new(Vec::new()),
        returned: Mutex::new(Vec::new()),
    };
    let sh = &shared;
    std::thread::scope(|s| {
        let (done_tx, done) = channel::<()>();
        let mut workers: Vec<Worker<'_, '_>> = (0..threads).map(|_| spawn(s, &done_tx)).collect();
        *sh.alive.lock().unwrap() = workers.iter().map(|w| w.serial).collect();
        for (op_no, op) in ops.iter().enumerate() {
            if tracing() {
                eprintln!("thread op {op:?}");
            }
            match op {
                ThreadOp::On {
                    op: Op::Scope { .. },
                    ..
                } => {}
                ThreadOp::On { t, op } => {
                    let w = &workers[*t as usize % threads];
                    let me = w.serial;
                    let op = op.clone();
                    w.jobs
                        .send(Box::new(move || {
                            let mut m = sh.m.lock().unwrap();
                            let mut b = sh.b.lock().unwrap();
                            let alive = sh.alive.lock().unwrap().clone();
                            let mut r = Runner::new(&mut m, &CONFIG, me, alive);
                            r.exec(c, &mut b, &op);
                        }))
                        .unwrap();
                    done.recv().unwrap();
                }
                ThreadOp::Restart { t } => {
                    let k = *t as usize % threads;
                    let fresh = spawn(s, &done_tx);
                    let old = std::mem::replace(&mut workers[k], fresh);
                    drop(old.jobs);
                    old.thread.join().unwrap();
                    *sh.alive.lock().unwrap() = workers.iter().map(|w| w.serial).collect();
                }
                ThreadOp::Burst {
                    seed,
                    n,
                    release,
                    at,
                } => {
                    let steps = *n as usize % 64 + 1;
                    let release_at = release.then_some(*at as usize % steps);
                    // Hand out objects: every other one of classes A and B, round robin.
                    let mut parts: Vec<Vec<Obj>> = vec![Vec::new(); threads];
                    {
                        let mut m = sh.m.lock().unwrap();
                        let mut i = 0;
                        let mut k = 0;
                        while i < m.objs.len() {
                            if m.objs[i].life == Life::C || (i + *seed as usize).is_multiple_of(2) {
                                i += 1;
                                continue;
                            }
                            parts[k % threads].push(m.take(i));
                            k += 1;
                        }
                    }
                    for (k, (w, mine)) in workers.iter().zip(parts).enumerate() {
                        let rng = Rng(u64::from(*seed) << 8 | k as u64);
                        let me = w.serial;
                        let id_base = 1 << 48 | (op_no as u64) << 24 | (k as u64) << 16;
                        let (class_c, rel) = match k {
                            0 => (true, release_at),
                            _ => (release_at.is_none(), None),
                        };
                        w.jobs
                            .send(Box::new(move || {
                                let left =
                                    burst_part(c, mine, rng, steps, me, id_base, class_c, rel);
                                sh.returned.lock().unwrap().extend(left);
                            }))
                            .unwrap();
                    }
                    for _ in 0..threads {
                        done.recv().unwrap();
                    }
                    let mut m = sh.m.lock().unwrap();
                    if release_at.is_some() {
                        settle_release(&mut m, sh, workers[0].serial);
                    }
                    for o in std::mem::take(&mut *sh.returned.lock().unwrap()) {
                        m.put_back(o, "after a burst");
                    }
                    let b = sh.b.lock().unwrap();
                    m.check_held(&b, "after a burst");
                    m.bookkeeping(c, &b, "after a burst");
                }
            }
        }
        for w in workers {
            drop(w.jobs);
            w.thread.join().unwrap();
        }
    });
    // Every worker has exited: the main thread frees what is left (remote frees into
    // abandoned heaps) and checks that nothing is left.
    let Shared { m, b, .. } = shared;
    b.into_inner().unwrap().finish();
    finish(c, &mut m.into_inner().unwrap());
}

/// The model's objects of class C after worker `releaser` released it during a burst
/// (collections of class C too).
fn settle_release(m: &mut Model, sh: &Shared<'_>, releaser: usize) {
    let alive = sh.alive.lock().unwrap().clone();
    let mut b = sh.b.lock().unwrap();
    let held = b.held_joins();
    let r = Runner::new(m, &CONFIG, releaser, alive);
    let fates: Vec<Fate> =
        r.m.objs
            .iter()
            .map(|o| match o {
                o if o.life != Life::C || o.size == 0 => Fate::Kept,
                o if o.is_large() => Fate::Freed,
                o => r.fate(o.origin, o.is_tiny(), &held, true),
            })
            .collect();
    let mut unknown = 0;
    for (i, f) in fates.iter().enumerate().rev() {
        match f {
            Fate::Kept => r.m.objs[i].check("after a release in a burst"),
            Fate::Freed => drop(r.m.take(i)),
            Fate::Unknown => {
                r.m.take(i);
                unknown += 1;
            }
        }
    }
    r.m.unknown[Life::C as usize] += unknown;
    // Collections of class C follow the same rule (joins are held across the burst).
    let (_, _, u) = b.settle(Life::C, |origin, tiny| r.fate(origin, tiny, &held, true));
    r.m.unknown[Life::C as usize] += u;
}

fuzz_target!(|data: &[u8]| {
    let Some((&t, rest)) = data.split_first() else {
        return;
    };
    let Ok(ops) = Vec::<ThreadOp>::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    run(&ops, 2 + t as usize % 2);
});
