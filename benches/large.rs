//! malloc + touch + free pairs of one large size, in a loop, through a `Cohort` instance:
//! nanoseconds and minor page faults per pair, for 32 KiB, 256 KiB, 1 MiB and 8 MiB, with
//! `malloc` and with `calloc` (which zeroes a reused mapping). Each pair writes one byte per
//! 4 KiB page (what a program filling a buffer pays in faults).
//! System calls per pair: run the binary under `strace -c -f`.
//!
//! `cargo bench -p cohort-benches --bench large`

use std::time::Instant;

cohort::lifetime_classes! {
    enum Life { Buffer }
}

fn minor_faults() -> i64 {
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut usage: libc::rusage = unsafe { core::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_minflt
}

fn main() {
    let a = cohort::Cohort::<Life>::new();
    println!(
        "{:>8} {:>7} {:>8} {:>12} {:>14}",
        "size", "call", "pairs", "ns/pair", "faults/pair"
    );
    let sizes = [
        (32 << 10, 20_000),
        (256 << 10, 5_000),
        (1 << 20, 2_000),
        (8 << 20, 500),
    ];
    for (size, pairs, zeroed) in sizes
        .iter()
        .flat_map(|&(size, pairs)| [(size, pairs, false), (size, pairs, true)])
    {
        let faults = minor_faults();
        let start = Instant::now();
        for i in 0..pairs {
            let p = if zeroed {
                a.calloc(size, Life::Buffer)
            } else {
                a.malloc(size, Life::Buffer)
            };
            assert!(!p.is_null());
            for at in (0..size).step_by(4096) {
                // SAFETY: at < size: inside the allocation.
                unsafe { p.add(at).write(i as u8) };
            }
            // SAFETY: allocated above with this size and class, not used after.
            unsafe { a.free(p, size, Life::Buffer) };
        }
        let ns = start.elapsed().as_nanos() as f64 / pairs as f64;
        let faulted = (minor_faults() - faults) as f64 / pairs as f64;
        let call = if zeroed { "calloc" } else { "malloc" };
        println!(
            "{:>7}K {call:>7} {pairs:>8} {ns:>12.0} {faulted:>14.2}",
            size >> 10
        );
    }
}
