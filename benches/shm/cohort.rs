//! cohort's shared-memory workloads, beside Boost.Interprocess's (`boost_shm.cpp`, the same
//! workloads, operation sequences and output): run by `run.sh`, or by hand:
//!
//! ```sh
//! cargo bench -p cohort-benches --bench shm_cohort -- churn1 2000000
//! ```
//!
//! - `churn1 OPS`: one process, a window of 10 000 live objects of 16 B to 1 KiB; each step
//!   frees the oldest and allocates one (thread CPU ns per pair).
//! - `churn2 OPS`: the same in two processes at once on one region.
//! - `overhead`: bytes of shared memory per object beyond its size (the object's pages the
//!   kernel allocated, from `st_blocks`), 100 000 objects of 16, 64, 256 and 1024 B.
//! - `prodcons N`: a producer process allocates and writes 64-byte objects and passes their
//!   offsets through a ring in the region to a consumer process, which reads and frees them
//!   (wall ns per object).
//!
//! Every process opens the region by name ([`SharedCohort`]): forked children open it
//! afresh, after the parent has left it.

use cohort::{CreateOptions, Off, OpenOptions, Place, SharedCohort};
use std::sync::atomic::{AtomicU64, Ordering};

const SEGMENT: usize = 512 << 20;
const WINDOW: usize = 10_000;

fn splitmix(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 16 to 1024 bytes, log-uniform (as in `boost_shm.cpp`).
fn churn_size(s: &mut u64) -> usize {
    let r = splitmix(s);
    let shift = 4 + (r % 6) as u32;
    let base = 1usize << shift;
    base + ((r >> 8) as usize % base) + usize::from(shift == 9)
}

fn now_ns(clock: libc::clockid_t) -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes `t`.
    unsafe { libc::clock_gettime(clock, &mut t) };
    t.tv_sec as f64 * 1e9 + t.tv_nsec as f64
}

fn name_of(tag: &str) -> String {
    format!("/cohort-bench-cohort-{tag}-{}", std::process::id())
}

fn create(name: &str) -> SharedCohort {
    let _ = SharedCohort::<()>::remove(Place::SharedMemory(name));
    SharedCohort::create(Place::SharedMemory(name), CreateOptions::new(SEGMENT))
        .expect("the region")
}

fn open(name: &str) -> SharedCohort {
    SharedCohort::open(Place::SharedMemory(name), OpenOptions::new()).expect("the region")
}

/// The churn: thread CPU ns per free + allocate pair.
fn churn(c: &SharedCohort, mut seed: u64, ops: usize) -> f64 {
    let mut ptrs = vec![std::ptr::null_mut::<u8>(); WINDOW];
    let mut sizes = vec![0usize; WINDOW];
    for i in 0..WINDOW {
        sizes[i] = churn_size(&mut seed);
        ptrs[i] = c.malloc(sizes[i], ());
        // SAFETY: at least 16 bytes were allocated.
        unsafe { ptrs[i].write_bytes(1, 8) };
    }
    let t0 = now_ns(libc::CLOCK_THREAD_CPUTIME_ID);
    for i in 0..ops {
        let at = i % WINDOW;
        // SAFETY: allocated above with this size, freed once.
        unsafe { c.free(ptrs[at], sizes[at], ()) };
        sizes[at] = churn_size(&mut seed);
        ptrs[at] = c.malloc(sizes[at], ());
        // SAFETY: a fresh allocation of at least 16 bytes.
        unsafe { ptrs[at].write_volatile(1) };
    }
    let t1 = now_ns(libc::CLOCK_THREAD_CPUTIME_ID);
    for i in 0..WINDOW {
        // SAFETY: as above.
        unsafe { c.free(ptrs[i], sizes[i], ()) };
    }
    (t1 - t0) / ops as f64
}

/// Runs `f` in `n` forked children and waits for them; each writes one f64 to the pipe.
fn in_children(n: usize, f: impl Fn(usize) -> f64) -> Vec<f64> {
    let mut fds = [0; 2];
    // SAFETY: creates a pipe into `fds`.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    for i in 0..n {
        // SAFETY: this process has one thread (the benchmark's), holding no lock.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let v = f(i);
            // SAFETY: writes 8 bytes from `v`, then ends the child at once.
            unsafe {
                libc::write(fds[1], (&v as *const f64).cast(), 8);
                libc::_exit(0);
            }
        }
    }
    let mut out = Vec::new();
    for _ in 0..n {
        let mut status = 0;
        // SAFETY: waits for a child of ours.
        unsafe { libc::wait(&mut status) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "a child failed"
        );
    }
    for _ in 0..n {
        let mut v = 0f64;
        // SAFETY: reads 8 bytes into `v`.
        assert_eq!(
            unsafe { libc::read(fds[0], (&mut v as *mut f64).cast(), 8) },
            8
        );
        out.push(v);
    }
    out
}

/// Bytes of RAM the shared-memory object holds (`st_blocks` of its file in /dev/shm).
fn shm_bytes(name: &str) -> i64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/dev/shm{name}")).map_or(-1, |m| m.blocks() as i64 * 512)
}

/// The ring of `prodcons` in the region: offsets of 64-byte objects.
#[repr(C)]
struct Ring {
    head: AtomicU64,
    tail: AtomicU64,
    slots: [AtomicU64; RING],
}
const RING: usize = 1024;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mode = args.first().map(String::as_str).unwrap_or("");
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(0);
    let name = name_of(mode);
    match mode {
        "churn1" => {
            let c = create(&name);
            println!("churn1_ns_per_pair\t{:.2}", churn(&c, 1, n));
            c.destroy().unwrap();
        }
        "churn2" => {
            create(&name).leave().unwrap();
            let wall0 = now_ns(libc::CLOCK_MONOTONIC);
            let ns = in_children(2, |i| churn(&open(&name), 100 + i as u64, n));
            println!("churn2_ns_per_pair\t{:.2}", (ns[0] + ns[1]) / 2.0);
            println!(
                "churn2_wall_ns_per_pair\t{:.2}",
                (now_ns(libc::CLOCK_MONOTONIC) - wall0) / n as f64
            );
            SharedCohort::<()>::remove(Place::SharedMemory(&name)).unwrap();
        }
        "overhead" => {
            let count = 100_000;
            for size in [16usize, 64, 256, 1024] {
                let name = format!("{name}-{size}");
                let c = create(&name);
                let before = shm_bytes(&name);
                let ptrs: Vec<*mut u8> = (0..count)
                    .map(|_| {
                        let p = c.malloc(size, ());
                        // SAFETY: a fresh allocation of `size` bytes.
                        unsafe { p.write_bytes(0xab, size) };
                        p
                    })
                    .collect();
                let after = shm_bytes(&name);
                println!(
                    "overhead_bytes_per_object:{size}\t{:.2}",
                    (after - before) as f64 / count as f64 - size as f64
                );
                for p in ptrs {
                    // SAFETY: allocated above with this size.
                    unsafe { c.free(p, size, ()) };
                }
                c.destroy().unwrap();
            }
        }
        "prodcons" => {
            {
                let c = create(&name);
                let ring = c
                    .new_in(
                        Ring {
                            head: AtomicU64::new(0),
                            tail: AtomicU64::new(0),
                            slots: [const { AtomicU64::new(0) }; RING],
                        },
                        (),
                    )
                    .unwrap();
                c.set_root(0, Some(ring));
                c.leave().unwrap();
            }
            let wall0 = now_ns(libc::CLOCK_MONOTONIC);
            in_children(2, |role| {
                let c = open(&name);
                // SAFETY: the root names the ring, live for the whole run.
                let r = unsafe { c.get(c.root::<Ring>(0).unwrap()) };
                for i in 0..n as u64 {
                    if role == 0 {
                        let p = c.malloc(64, ()).cast::<u64>();
                        for w in 0..8 {
                            // SAFETY: 64 fresh bytes.
                            unsafe { p.add(w).write(i + w as u64) };
                        }
                        let t = r.tail.load(Ordering::Relaxed);
                        while t - r.head.load(Ordering::Acquire) == RING as u64 {
                            std::thread::yield_now();
                        }
                        let off: Off<u64> = c.offset_of(p).unwrap();
                        r.slots[t as usize % RING].store(off.get(), Ordering::Relaxed);
                        r.tail.store(t + 1, Ordering::Release);
                    } else {
                        let h = r.head.load(Ordering::Relaxed);
                        while r.tail.load(Ordering::Acquire) == h {
                            std::thread::yield_now();
                        }
                        let off = r.slots[h as usize % RING].load(Ordering::Relaxed);
                        r.head.store(h + 1, Ordering::Release);
                        let p = c.ptr(Off::<u64>::new(off).unwrap());
                        // SAFETY: the producer wrote 8 words there before publishing it.
                        let ok = unsafe { p.read() == i && p.add(7).read() == i + 7 };
                        assert!(ok, "object {i} intact");
                        // SAFETY: a 64-byte allocation of the producer, freed once.
                        unsafe { c.free(p.cast(), 64, ()) };
                    }
                }
                0.0
            });
            println!(
                "prodcons_ns_per_object\t{:.2}",
                (now_ns(libc::CLOCK_MONOTONIC) - wall0) / n as f64
            );
            SharedCohort::<()>::remove(Place::SharedMemory(&name)).unwrap();
        }
        _ => {
            eprintln!("usage: shm_cohort churn1|churn2|overhead|prodcons [N]");
            std::process::exit(2);
        }
    }
}
