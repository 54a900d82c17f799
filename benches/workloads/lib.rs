//! The timed workloads, shared by the per-allocator bench binaries (`benches/alloc_*.rs`):
//! this package's library, `workloads`.
//!
//! Each binary installs one allocator as the `#[global_allocator]` and calls [`main`], which runs
//! the one workload named on the command line and prints `metric<TAB>unit<TAB>value` lines for
//! the runner (`benches/suite/main.rs`). One workload per process keeps RSS figures clean. Timings are
//! thread CPU time; `COHORT_BENCH_SCALE` (default 1) scales the object counts.
//! `COHORT_BENCH_PAIRS`, when set, is the exact number of pairs of `large:N` (the scale then
//! does not apply): the runner's system-call pass runs the workload with two known counts.

mod bursts;
mod remote;

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::hint::black_box;
use std::ptr;
use std::sync::mpsc::sync_channel;
use std::thread;
use std::time::Instant;
use test_support::{mib, rss, Rng};

/// An allocator with two lifetime classes: short-lived (per request) and long-lived.
pub trait LifetimeApi: Sync {
    /// Allocates `size` bytes in the short- or long-lived class; null on failure.
    fn malloc(&self, size: usize, long: bool) -> *mut u8;
    /// Frees what `malloc(size, long)` returned.
    ///
    /// # Safety
    /// `ptr` came from `self.malloc(size, long)` with the same `size` and `long`, and is live.
    unsafe fn free(&self, ptr: *mut u8, size: usize, long: bool);
    /// Gives free memory back to the operating system, as far as the allocator can.
    fn compact(&self);
    /// Frees every short-lived object at once, if the allocator can; false if it cannot.
    ///
    /// # Safety
    /// No short-lived object is used or freed afterwards, and no other thread allocates
    /// short-lived objects meanwhile.
    unsafe fn release_short(&self) -> bool {
        false
    }
}

/// What an allocator binary supplies beside its `#[global_allocator]`.
pub struct Hooks {
    /// Gives the global allocator's free memory back to the OS (`malloc_trim`, `mi_collect`, ...).
    pub compact: fn(),
    /// The allocator's own lifetime-class API, if it has one.
    pub classes: Option<&'static dyn LifetimeApi>,
}

/// Runs the workload named by the first argument and prints its metrics.
pub fn main(hooks: Hooks) {
    let Some(name) = std::env::args().nth(1).filter(|a| !a.starts_with('-')) else {
        // `cargo bench` runs every bench target with `--bench`: only the runner does work.
        eprintln!("usage: <workload> (see WORKLOADS in benches/suite/main.rs); `cargo bench -p cohort-benches --bench suite` runs them all");
        return;
    };
    let scale: f64 = std::env::var("COHORT_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let count = |n: f64| ((n * scale) as usize).max(1000);
    let (kind, arg) = name.split_once(':').unwrap_or((name.as_str(), "0"));
    let arg: usize = arg.parse().expect("workload argument");
    match kind {
        "churn" => churn(count(3e6) / BATCH),
        "list" => linked_list(arg, count(10e6)),
        "ratio" => memory_ratio(arg, count(4e6)),
        "pc" => producer_consumer(count(10e6)),
        "threads" => threads(count(1e6) / BATCH),
        "grow" => realloc_growth(arg, count(64.0 * 1048576.0)),
        "large" => large_pairs(arg, pairs_or(count(2.0 * 1073741824.0) / arg)),
        "medium" => medium_churn(arg, count(4000.0)),
        "mlarge" => bursts::large_threads(arg.max(1), count(1000.0) / arg.max(1)),
        "burst" => bursts::burst(count(1073741824.0)),
        "handoff" => remote::handoff(count(1e6)),
        "spread" => remote::spread(arg, count(5e5)),
        "ring" => remote::ring(count(10e6)),
        "channel" => remote::channel(count(10e6)),
        "vec" => vec_growth(arg, count(64.0 * 1048576.0)),
        "shortlived" => remote::shortlived(count(4e6) / remote::BATCH_OBJECTS),
        "lifetime" => lifetime(&Global(hooks.compact), count(4e6), false),
        "classes" | "release" => match hooks.classes {
            Some(api) => lifetime(api, count(4e6), kind == "release"),
            None => println!("unsupported"),
        },
        _ => panic!("unknown workload {name}"),
    }
}

/// The pair count `COHORT_BENCH_PAIRS` sets, or `scaled`.
fn pairs_or(scaled: usize) -> usize {
    match std::env::var("COHORT_BENCH_PAIRS") {
        Ok(v) => v.parse().expect("COHORT_BENCH_PAIRS: a pair count"),
        Err(_) => scaled,
    }
}

fn report(metric: &str, unit: &str, value: f64) {
    println!("{metric}\t{unit}\t{value}");
}

/// CPU time consumed by the calling thread, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The layout a Rust type of `size` bytes typically has: the largest power of two dividing the
/// size, at most 16.
pub fn layout_for(size: usize) -> Layout {
    let align = (size & size.wrapping_neg()).clamp(1, 16);
    Layout::from_size_align(size, align).expect("layout")
}

/// Allocates through the global allocator and writes the first byte; aborts on failure.
fn alloc_touch(layout: Layout, byte: u8) -> *mut u8 {
    // SAFETY: every layout used here has a non-zero size.
    let p = unsafe { alloc(layout) };
    if p.is_null() {
        handle_alloc_error(layout);
    }
    // SAFETY: `p` is a fresh allocation of at least one byte.
    unsafe { p.write(byte) };
    p
}

const BATCH: usize = 1000;
const CHURN_SIZES: [usize; 9] = [8, 16, 24, 32, 48, 64, 128, 256, 1024];

/// Allocates `batches` batches of [`BATCH`] objects of `size` bytes, each batch freed in a
/// random order; returns thread CPU ns per malloc+free pair.
fn churn_one(size: usize, batches: usize, orders: &[Vec<usize>]) -> f64 {
    let layout = layout_for(size);
    let mut ptrs = vec![ptr::null_mut::<u8>(); BATCH];
    let mut batch = |order: &[usize]| {
        for (i, p) in ptrs.iter_mut().enumerate() {
            *p = alloc_touch(layout, i as u8);
        }
        for &i in order {
            // SAFETY: `ptrs[i]` was allocated above with `layout` and each index is freed once.
            unsafe { dealloc(ptrs[i], layout) };
        }
    };
    batch(&orders[0]); // warm-up: first-touch page faults are not the allocator's steady state
    let t0 = thread_cpu_ns();
    for b in 0..batches {
        batch(&orders[b % orders.len()]);
    }
    (thread_cpu_ns() - t0) as f64 / (batches * BATCH) as f64
}

/// Churn over every size of [`CHURN_SIZES`]; returns ns per pair for each size.
fn churn_all(batches: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    let orders: Vec<Vec<usize>> = (0..16).map(|_| rng.permutation(BATCH)).collect();
    CHURN_SIZES
        .iter()
        .map(|&size| churn_one(size, batches, &orders))
        .collect()
}

fn churn(batches: usize) {
    let per_size = churn_all(batches, 1);
    for (size, ns) in CHURN_SIZES.iter().zip(&per_size) {
        report(&format!("{size} B"), "ns/pair", *ns);
    }
    report("mean", "ns/pair", mean(&per_size));
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Independent churn on one thread, then on two threads at once: per-pair thread CPU time.
fn threads(batches: usize) {
    let run = |n: u64| -> f64 {
        let handles: Vec<_> = (0..n)
            .map(|t| thread::spawn(move || mean(&churn_all(batches, t + 1))))
            .collect();
        let costs: Vec<f64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        mean(&costs)
    };
    let one = run(1);
    let two = run(2);
    report("1 thread", "ns/pair", one);
    report("2 threads", "ns/pair", two);
    report("2 threads / 1 thread", "x", two / one);
}

/// Pointers handed from the producer to the consumer.
struct Batch(Vec<*mut u8>);
// SAFETY: the batch owns its allocations; only the receiving thread touches them after sending.
unsafe impl Send for Batch {}

/// One thread allocates 64-byte objects, another frees them (the cross-thread free path).
fn producer_consumer(n: usize) {
    let layout = layout_for(64);
    let batches = n / BATCH;
    let (tx, rx) = sync_channel::<Batch>(8);
    let start = Instant::now();
    let consumer = thread::spawn(move || {
        let mut cpu = 0;
        for batch in rx {
            let t0 = thread_cpu_ns();
            for &p in &batch.0 {
                // SAFETY: the producer allocated `p` with `layout` and gave it up by sending it.
                unsafe { dealloc(p, layout) };
            }
            cpu += thread_cpu_ns() - t0;
        }
        cpu
    });
    let mut alloc_cpu = 0;
    for _ in 0..batches {
        let mut batch = Vec::with_capacity(BATCH);
        let t0 = thread_cpu_ns();
        for i in 0..BATCH {
            batch.push(alloc_touch(layout, i as u8));
        }
        alloc_cpu += thread_cpu_ns() - t0;
        tx.send(Batch(batch)).expect("consumer alive");
    }
    drop(tx);
    let free_cpu = consumer.join().unwrap();
    let objects = (batches * BATCH) as f64;
    report(
        "wall",
        "ns/object",
        start.elapsed().as_nanos() as f64 / objects,
    );
    report(
        "malloc (producer CPU)",
        "ns/object",
        alloc_cpu as f64 / objects,
    );
    report(
        "free (consumer CPU)",
        "ns/object",
        free_cpu as f64 / objects,
    );
}

/// A list node of `W + 1` words; `data[0]` of every 8th node points to a 40-byte string.
#[repr(C)]
struct Node<const W: usize> {
    next: *mut Node<W>,
    data: [usize; W],
}

const STRING: usize = 40;

fn linked_list(node_bytes: usize, n: usize) {
    match node_bytes {
        16 => list_run::<1>(n),
        24 => list_run::<2>(n),
        _ => panic!("list node size {node_bytes}: 16 or 24"),
    }
}

fn list_run<const W: usize>(n: usize) {
    let node = Layout::new::<Node<W>>();
    let string = Layout::array::<u8>(STRING).unwrap();
    let rss0 = rss();
    let t0 = thread_cpu_ns();
    let mut head: *mut Node<W> = ptr::null_mut();
    let mut tail: *mut Node<W> = ptr::null_mut();
    for i in 0..n {
        let p = alloc_touch(node, 0).cast::<Node<W>>();
        let mut data = [i; W];
        if i % 8 == 0 {
            let s = alloc_touch(string, 0);
            // SAFETY: `s` is a fresh allocation of STRING bytes.
            unsafe { ptr::write_bytes(s, i as u8, STRING) };
            data[0] = s as usize;
        }
        // SAFETY: `p` is a fresh allocation with `Node<W>`'s layout; `tail`, if not null, is
        // the live last node of the list.
        unsafe {
            p.write(Node {
                next: ptr::null_mut(),
                data,
            });
            if tail.is_null() {
                head = p;
            } else {
                (*tail).next = p;
            }
        }
        tail = p;
    }
    let t1 = thread_cpu_ns();
    let rss = rss().saturating_sub(rss0);
    const PASSES: usize = 10;
    let mut sum = 0usize;
    for _ in 0..PASSES {
        let (mut p, mut i) = (head, 0);
        while !p.is_null() {
            // SAFETY: `p` is a live node of the list built above; string nodes hold a live
            // STRING-byte allocation in `data[0]`.
            unsafe {
                let d = (*p).data;
                sum = sum.wrapping_add(if i % 8 == 0 {
                    *(d[0] as *const u8) as usize
                } else {
                    d[W - 1]
                });
                p = (*p).next;
            }
            i += 1;
        }
    }
    black_box(sum);
    let t2 = thread_cpu_ns();
    let (mut p, mut i) = (head, 0);
    while !p.is_null() {
        // SAFETY: `p` is a live node, freed once after reading its links; string nodes own the
        // string in `data[0]`.
        unsafe {
            let next = (*p).next;
            if i % 8 == 0 {
                dealloc((*p).data[0] as *mut u8, string);
            }
            dealloc(p.cast(), node);
            p = next;
        }
        i += 1;
    }
    let t3 = thread_cpu_ns();
    let n = n as f64;
    report("build", "ns/node", (t1 - t0) as f64 / n);
    report(
        "walk (per pass)",
        "ns/node",
        (t2 - t1) as f64 / n / PASSES as f64,
    );
    report("free", "ns/node", (t3 - t2) as f64 / n);
    report("peak RSS", "B/node", rss as f64 / n);
}

/// `n` live objects of `size` bytes, every byte written: RSS growth over requested bytes.
fn memory_ratio(size: usize, n: usize) {
    let layout = layout_for(size);
    // Written before the baseline so the pointer array's pages are already resident.
    let mut ptrs = vec![layout.align() as *mut u8; n];
    let rss0 = rss();
    for p in ptrs.iter_mut() {
        *p = alloc_touch(layout, 0);
        // SAFETY: `*p` is a fresh allocation of `size` bytes.
        unsafe { ptr::write_bytes(*p, 0xa5, size) };
    }
    let grown = rss().saturating_sub(rss0);
    report("RSS / requested", "x", grown as f64 / (n * size) as f64);
    for &p in &ptrs {
        // SAFETY: each pointer was allocated above with `layout` and is freed once.
        unsafe { dealloc(p, layout) };
    }
}

/// Grows a `Vec<u8>` to `total` bytes, `step` bytes at a time, each step one exact realloc.
fn realloc_growth(step: usize, total: usize) {
    let chunk = vec![7u8; step];
    let mut v: Vec<u8> = Vec::new();
    let t0 = thread_cpu_ns();
    while v.len() < total {
        v.reserve_exact(step);
        v.extend_from_slice(&chunk);
    }
    let cpu = thread_cpu_ns() - t0;
    black_box(&v);
    report("grow", "ns/step", cpu as f64 / (total / step) as f64);
}

/// Rounds of [`vec_growth`].
const VEC_ROUNDS: usize = 4;

/// [`VEC_ROUNDS`] times: a `Vec<u8>` grown from empty to `total` bytes by `step`-byte
/// `extend_from_slice` (by `push` when `step` is 1), as programs grow buffers: `Vec`'s own
/// doubling decides the reallocs; then dropped. Thread CPU time per round, the copies and
/// page faults included.
fn vec_growth(step: usize, total: usize) {
    let chunk = vec![7u8; step];
    let t0 = thread_cpu_ns();
    for round in 0..VEC_ROUNDS {
        let mut v: Vec<u8> = Vec::new();
        if step == 1 {
            for i in 0..total {
                v.push(i as u8);
            }
        } else {
            while v.len() < total {
                v.extend_from_slice(&chunk);
            }
        }
        assert_eq!(v[total / 2], if step == 1 { (total / 2) as u8 } else { 7 });
        black_box(&v);
        black_box(round);
    }
    let cpu = thread_cpu_ns() - t0;
    report("grow", "ms/round", cpu as f64 / 1e6 / VEC_ROUNDS as f64);
}

/// Minor page faults of the calling thread so far.
fn minor_faults() -> i64 {
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    usage.ru_minflt
}

/// `pairs` rounds of: allocate `size` bytes, write one byte per 4 KiB page, free (2 GiB
/// written in all). Thread CPU time and minor page faults per pair.
fn large_pairs(size: usize, pairs: usize) {
    let layout = layout_for(size);
    let (t0, faults) = (thread_cpu_ns(), minor_faults());
    for i in 0..pairs {
        let p = alloc_touch(layout, i as u8);
        for at in (4096..size).step_by(4096) {
            // SAFETY: at < size: inside the allocation.
            unsafe { p.add(at).write(i as u8) };
        }
        // SAFETY: allocated above with this layout, freed once.
        unsafe { dealloc(black_box(p), layout) };
    }
    let cpu = thread_cpu_ns() - t0;
    report("pair", "ns/pair", cpu as f64 / pairs as f64);
    report(
        "faults",
        "faults/pair",
        (minor_faults() - faults) as f64 / pairs as f64,
    );
}

/// The medium sizes' range: uniformly random sizes from just above 16 KiB to 1 MiB.
const MEDIUM_SIZES: (usize, usize) = ((16 << 10) + 1, 1 << 20);

/// `live` allocations of uniformly random sizes from 16 KiB to 1 MiB, every byte written,
/// then `steps` churn steps (one freed at random, one of a new random size allocated and
/// every byte written). RSS growth divided by the bytes requested of the live ones, at the
/// end (after the churn) and at the start (before it); thread CPU time per step (the writes
/// included) and minor page faults per step.
fn medium_churn(live: usize, steps: usize) {
    let mut rng = Rng::new(11);
    let mut objs = vec![(ptr::null_mut::<u8>(), 0usize); live];
    let base = rss();
    let take = |rng: &mut Rng, i: usize| {
        let size = rng.range(MEDIUM_SIZES.0, MEDIUM_SIZES.1);
        let p = alloc_touch(layout_for(size), i as u8);
        // SAFETY: a fresh allocation of `size` bytes.
        unsafe { ptr::write_bytes(p, i as u8, size) };
        (p, size)
    };
    for (i, o) in objs.iter_mut().enumerate() {
        *o = take(&mut rng, i);
    }
    let requested = |objs: &[(*mut u8, usize)]| objs.iter().map(|o| o.1).sum::<usize>() as f64;
    report(
        "start",
        "RSS/requested",
        (rss() - base) as f64 / requested(&objs),
    );
    let (t0, faults) = (thread_cpu_ns(), minor_faults());
    for step in 0..steps {
        let i = rng.below(live);
        let (p, size) = objs[i];
        // SAFETY: live, allocated with this layout.
        unsafe { dealloc(black_box(p), layout_for(size)) };
        objs[i] = take(&mut rng, step);
    }
    let cpu = thread_cpu_ns() - t0;
    let faults = minor_faults() - faults;
    report(
        "end",
        "RSS/requested",
        (rss() - base) as f64 / requested(&objs),
    );
    report("step", "ns/step", cpu as f64 / steps as f64);
    report("faults", "faults/step", faults as f64 / steps as f64);
    for (p, size) in objs {
        // SAFETY: live, allocated with this layout.
        unsafe { dealloc(p, layout_for(size)) };
    }
}

/// The global allocator seen as a one-class [`LifetimeApi`].
struct Global(fn());

impl LifetimeApi for Global {
    fn malloc(&self, size: usize, _long: bool) -> *mut u8 {
        // SAFETY: sizes are non-zero.
        unsafe { alloc(layout_for(size)) }
    }
    unsafe fn free(&self, ptr: *mut u8, size: usize, _long: bool) {
        // SAFETY: the caller passes a live pointer from `malloc(size)`, which used this layout.
        unsafe { dealloc(ptr, layout_for(size)) }
    }
    fn compact(&self) {
        (self.0)()
    }
}

const LIFETIME_SIZES: [usize; 7] = [16, 24, 32, 48, 64, 96, 128];

/// Short- and long-lived objects allocated interleaved (one in 16 lives long), then the
/// short-lived ones freed: RSS at the peak, after the frees and after compaction.
fn lifetime(api: &dyn LifetimeApi, n: usize, release: bool) {
    let mut rng = Rng::new(7);
    // Both arrays are written before the baseline so their pages are already resident.
    let mut short = vec![(ptr::null_mut::<u8>(), 0usize); n];
    let mut long = vec![(ptr::null_mut::<u8>(), 0usize); n / 16 + 1];
    let (mut ns, mut nl, mut live) = (0, 0, 0);
    let rss0 = rss();
    let t0 = thread_cpu_ns();
    for i in 0..n {
        let size = LIFETIME_SIZES[rng.below(LIFETIME_SIZES.len())];
        let is_long = i % 16 == 0;
        let p = api.malloc(size, is_long);
        assert!(!p.is_null(), "out of memory");
        // SAFETY: `p` is a fresh allocation of `size` bytes.
        unsafe { ptr::write_bytes(p, i as u8, size) };
        if is_long {
            long[nl] = (p, size);
            nl += 1;
            live += size;
        } else {
            short[ns] = (p, size);
            ns += 1;
        }
    }
    let t1 = thread_cpu_ns();
    let peak = rss().saturating_sub(rss0);
    let t2 = thread_cpu_ns();
    if release {
        // SAFETY: the short-lived objects are not used after this; this thread is the only
        // one allocating.
        assert!(unsafe { api.release_short() }, "release_short unsupported");
    } else {
        for &(p, size) in &short[..ns] {
            // SAFETY: allocated above as short-lived with this size; freed once.
            unsafe { api.free(p, size, false) };
        }
    }
    let t3 = thread_cpu_ns();
    let after_free = rss().saturating_sub(rss0);
    api.compact();
    let after_compact = rss().saturating_sub(rss0);
    report(
        "malloc (and write)",
        "ns/object",
        (t1 - t0) as f64 / n as f64,
    );
    report(
        "free short-lived",
        "ns/object",
        (t3 - t2) as f64 / ns as f64,
    );
    report("long-lived bytes", "MiB", mib(live));
    report("RSS at peak", "MiB", mib(peak));
    report("RSS after freeing short-lived", "MiB", mib(after_free));
    report("RSS after compaction", "MiB", mib(after_compact));
    report(
        "RSS after compaction / long-lived",
        "x",
        after_compact as f64 / live as f64,
    );
    for &(p, size) in &long[..nl] {
        // SAFETY: allocated above as long-lived with this size; freed once.
        unsafe { api.free(p, size, true) };
    }
}
