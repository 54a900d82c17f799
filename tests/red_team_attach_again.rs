//! Red-team attacks of session 15 on a region in the caller's memory left and attached
//! again in the same process (`format_in`, drop, `attach_in`) while a thread that used the
//! first view still runs: its heap is orphaned by the drop (its objects live, its cursor
//! holding the fast path's allocations), and it leaves the heap into the region at its
//! exit, after the second view has served other threads. Every object stays whole and
//! counted once, no slot is handed out twice, and `verify` passes. A test that found a
//! defect is `#[ignore]`d with its number (RED-n), its owner and the exact failure.

mod common;

use cohort::{Cohort, RegionOptions};
use common::memory::private_aligned;
use std::collections::HashSet;
use std::sync::mpsc;

cohort::lifetime_classes! {
    enum Life { A }
}

const MIB: usize = 1 << 20;
const N: usize = 300;
const SIZES: [usize; 3] = [64, 1000, 40_000];
/// Objects of each size per call of [`fill`]: `N` times this.
const TIMES: [usize; 3] = [10, 10, 1];

/// The byte an object at `p` is filled with.
fn byte_of(p: usize, salt: u8) -> u8 {
    (p >> 6) as u8 ^ salt
}

/// `N` times [`TIMES`] objects of each of [`SIZES`], each filled with [`byte_of`] it.
fn fill(a: &Cohort<Life>, salt: u8) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (&size, &times) in SIZES.iter().zip(&TIMES) {
        for _ in 0..N * times {
            let p = a.malloc(size, Life::A);
            assert!(!p.is_null(), "{size} B");
            // SAFETY: `size` bytes of ours.
            unsafe { p.write_bytes(byte_of(p as usize, salt), size) };
            out.push((p as usize, size));
        }
    }
    out
}

fn whole(objects: &[(usize, usize)], salt: u8, what: &str) {
    for &(p, size) in objects {
        // SAFETY: live objects of ours.
        let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, size) };
        assert!(
            bytes.iter().all(|&b| b == byte_of(p, salt)),
            "{what}: the {size}-byte object at {p:#x} changed"
        );
    }
}

fn distinct(sets: &[&[(usize, usize)]]) {
    let mut seen = HashSet::new();
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for set in sets {
        for &(p, size) in *set {
            assert!(seen.insert(p), "{p:#x} handed out twice");
            spans.push((p, size));
        }
    }
    spans.sort_unstable();
    for w in spans.windows(2) {
        assert!(
            w[0].0 + w[0].1 <= w[1].0,
            "{:#x} overlaps {:#x}",
            w[0].0,
            w[1].0
        );
    }
}

#[test]
fn a_region_attached_again_while_a_thread_of_the_first_view_runs_stays_whole() {
    let capacity = 64 * MIB;
    let f = Cohort::<Life>::footprint(capacity).unwrap();
    let mem = private_aligned(f.bytes);
    // SAFETY: ours, unused, mapped for the process's life.
    let a = unsafe { Cohort::<Life>::format_in(mem, f.bytes, &RegionOptions::new(capacity)) }
        .expect("formatted");
    let (to_main, from_worker) = mpsc::channel();
    let (to_worker, from_main) = mpsc::channel::<()>();
    let a_at = &a as *const Cohort<Life> as usize;
    let worker = std::thread::spawn(move || {
        // SAFETY: the instance lives until the main thread has our objects (it drops it
        // only after the first message); we use it no more after.
        let a = unsafe { &*(a_at as *const Cohort<Life>) };
        let objects = fill(a, 0x11);
        // Every other object freed again: the cursors and local lists hold slots.
        let mut kept = Vec::new();
        for (k, &(p, size)) in objects.iter().enumerate() {
            if k % 2 == 0 {
                // SAFETY: live, freed once.
                unsafe { a.free(p as *mut u8, size, Life::A) };
            } else {
                kept.push((p, size));
            }
        }
        to_main.send(kept).unwrap();
        // Runs on (its heap orphaned by the drop) until told to exit.
        from_main.recv().unwrap();
    });
    let first = from_worker.recv().unwrap();
    drop(a);
    // SAFETY: the region formatted above, mapped for the process's life.
    let a = unsafe { Cohort::<Life>::attach_in(mem, f.bytes, capacity) }.expect("attached again");
    whole(&first, 0x11, "after the attach");
    let second = std::thread::scope(|s| s.spawn(|| fill(&a, 0x22)).join().unwrap());
    let third = fill(&a, 0x33);
    distinct(&[&first, &second, &third]);
    // The worker leaves its heap (of the first view) at its exit.
    to_worker.send(()).unwrap();
    worker.join().unwrap();
    let fourth = std::thread::scope(|s| s.spawn(|| fill(&a, 0x44)).join().unwrap());
    distinct(&[&first, &second, &third, &fourth]);
    whole(&first, 0x11, "after the worker's exit");
    whole(&second, 0x22, "after the worker's exit");
    whole(&third, 0x33, "after the worker's exit");
    // SAFETY: no other thread uses the instance.
    let v = unsafe { a.verify() }.expect("verifies");
    let live = first.len() + second.len() + third.len() + fourth.len();
    assert_eq!(v.live, live, "every object counted once");
    for set in [&first, &second, &third, &fourth] {
        for &(p, size) in set.iter() {
            // SAFETY: live, freed once.
            unsafe { a.free(p as *mut u8, size, Life::A) };
        }
    }
    assert!(a.is_empty());
    // SAFETY: as above.
    unsafe { a.verify() }.expect("verifies empty");
}
