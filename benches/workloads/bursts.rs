//! Workloads of big buffers and bursts: what an allocator keeps of memory a program has
//! stopped using, and what it costs to get it again.
//!
//! - `mlarge:T`: T threads each repeatedly allocate a buffer of a random size between 5 and
//!   25 MiB, write one byte per 4 KiB page of its first half, and free it (the pattern of
//!   programs that parse or compress large inputs in worker threads). Thread CPU time,
//!   system calls included, and minor page faults per buffer: an allocator that unmaps each
//!   buffer and maps the next pays both every time.
//! - `burst`: one thread allocates 1 GiB of mixed sizes (most objects small, most bytes in
//!   buffers of 64 KiB to 4 MiB), writes every page, frees all of it in random order, then
//!   idles for 5 s doing a little work every 50 ms (a few hundred small pairs and one
//!   64 KiB and one 1 MiB pair: the calls that reach an allocator's slow paths, which is
//!   where allocators without a background thread give memory back). RSS above the
//!   process's RSS before the burst is sampled during the idle time: how fast each
//!   allocator returns a burst's memory, and how far.

use super::{report, thread_cpu_ns, Rng};
use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};
use test_support::{mib, rss};

const PAGE: usize = 4096;

/// Minor page faults of the whole process so far.
fn process_faults() -> i64 {
    super::remote::usage().ru_minflt
}

/// Allocates `size` bytes (align 16) and writes one byte in each 4 KiB page of its first
/// `touched` bytes (at least the first byte); aborts on failure.
fn alloc_pages(size: usize, touched: usize, byte: u8) -> *mut u8 {
    let layout = Layout::from_size_align(size, 16).expect("layout");
    // SAFETY: every size used here is non-zero.
    let p = unsafe { alloc(layout) };
    if p.is_null() {
        handle_alloc_error(layout);
    }
    for at in (0..touched.clamp(1, size)).step_by(PAGE) {
        // SAFETY: at < size: inside the allocation.
        unsafe { p.add(at).write(byte) };
    }
    black_box(p)
}

/// Frees what [`alloc_pages`] returned for `size`.
///
/// # Safety
/// `p` came from `alloc_pages(size, ..)` and is freed once.
unsafe fn free_pages(p: *mut u8, size: usize) {
    let layout = Layout::from_size_align(size, 16).expect("layout");
    // SAFETY: the caller's contract: allocated with this layout, live.
    unsafe { dealloc(p, layout) };
}

/// `threads` threads, `rounds` buffers each (see the module docs).
pub fn large_threads(threads: usize, rounds: usize) {
    let faults = process_faults();
    let cpu: u64 = thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut rng = Rng::new(0x5eed + t as u64);
                    let t0 = thread_cpu_ns();
                    for i in 0..rounds {
                        let size = rng.range(5 << 20, 25 << 20);
                        let p = alloc_pages(size, size / 2, i as u8);
                        // SAFETY: allocated just above with this size, freed once.
                        unsafe { free_pages(p, size) };
                    }
                    thread_cpu_ns() - t0
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    let buffers = (threads * rounds) as f64;
    report("buffer", "ns/buffer", cpu as f64 / buffers);
    report(
        "faults",
        "faults/buffer",
        (process_faults() - faults) as f64 / buffers,
    );
}

/// One object of the burst's mix: 80 % of 16 B-1 KiB, 17 % of 1-64 KiB, 3 % of 64 KiB-4 MiB.
fn burst_size(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..80 => rng.range(16, 1024),
        80..97 => rng.range(1024, 64 << 10),
        _ => rng.range(64 << 10, 4 << 20),
    }
}

/// When RSS is sampled after the burst's frees, in milliseconds.
const SAMPLES_MS: [u64; 10] = [0, 100, 250, 500, 1000, 1500, 2000, 3000, 4000, 5000];
/// How close to the RSS before the burst counts as given back.
const SETTLED_MIB: f64 = 8.0;

/// The burst of `total` bytes (see the module docs).
pub fn burst(total: usize) {
    let mut rng = Rng::new(0xb425);
    // The list is sized and written before the baseline so its own pages are resident.
    let mut live: Vec<(*mut u8, usize)> = vec![(std::ptr::null_mut(), 0); total / 4096 + 1024];
    live.clear();
    let mut idle_rng = Rng::new(0x1d1e);
    // One round of the idle work first, so the baseline holds what the idle time keeps.
    idle_work(&mut idle_rng);
    let baseline = rss();
    let mut bytes = 0;
    while bytes < total {
        let size = burst_size(&mut rng);
        live.push((alloc_pages(size, size, live.len() as u8), size));
        bytes += size;
    }
    let peak = rss();
    for i in rng.permutation(live.len()) {
        let (p, size) = live[i];
        // SAFETY: each entry was allocated above with its size and is freed once.
        unsafe { free_pages(p, size) };
    }
    live.clear();
    let above = |now: usize| mib(now.saturating_sub(baseline));
    report("RSS at the peak", "MiB", above(peak));
    let start = Instant::now();
    let mut settled = None;
    let mut next = 0;
    while next < SAMPLES_MS.len() {
        let at = start.elapsed();
        if at >= Duration::from_millis(SAMPLES_MS[next]) {
            let now = above(rss());
            report(&format!("RSS at {} ms", SAMPLES_MS[next]), "MiB", now);
            if settled.is_none() && now <= SETTLED_MIB {
                settled = Some(SAMPLES_MS[next]);
            }
            next += 1;
            continue;
        }
        idle_work(&mut idle_rng);
        thread::sleep(
            Duration::from_millis(50)
                .min(Duration::from_millis(SAMPLES_MS[next]).saturating_sub(start.elapsed())),
        );
    }
    // Past the last sample: the idle time's end stands for "not within the bound".
    let last = SAMPLES_MS[SAMPLES_MS.len() - 1];
    report(
        &format!("within {SETTLED_MIB} MiB of the start after"),
        "ms",
        settled.unwrap_or(last) as f64,
    );
}

/// The little work of an idle program: 200 small pairs, one 64 KiB and one 1 MiB pair.
fn idle_work(rng: &mut Rng) {
    for _ in 0..200 {
        let size = rng.range(16, 512);
        let p = alloc_pages(size, 1, 1);
        // SAFETY: allocated just above with this size, freed once.
        unsafe { free_pages(p, size) };
    }
    for size in [64 << 10, 1 << 20] {
        let p = alloc_pages(size, 1, 1);
        // SAFETY: as above.
        unsafe { free_pages(p, size) };
    }
}
