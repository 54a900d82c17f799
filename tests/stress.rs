//! Multi-threaded stress test, in the manner of mimalloc's `test-stress`.
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
//! The objects under test come from a local `Cohort`; the test's own bookkeeping (Vecs,
//! Boxes, the HashMap) uses the system allocator.
//!
//! `COHORT_STRESS_SOAK=<seconds>` runs rounds for that long instead of the default count;
//! `COHORT_STRESS_SOAK=x<scale>` (for example `x10`) multiplies rounds and operations.

mod common;

use cohort::Cohort;
use common::{fill, malloc_align, mismatch, nonzero, random_size, seed_of, Rng};
use std::alloc::Layout;
use std::collections::HashMap;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
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

/// One live allocation under test.
#[derive(Clone, Copy, Debug)]
struct Obj {
    ptr: *mut u8,
    /// The size asked for: the bytes that carry the pattern.
    size: usize,
    /// The size to give back at free: between `size` and the usable size.
    free_size: usize,
    /// 0 for the malloc family; the `Layout` align for `alloc`/`alloc_zeroed`.
    align: usize,
    life: Life,
    seed: u64,
}

// SAFETY: an Obj is a description of an allocation; whoever holds it owns the allocation, and
// the allocator allows a free from any thread.
unsafe impl Send for Obj {}

struct Shared {
    a: Cohort<Life>,
    transfer: Vec<AtomicPtr<Obj>>,
}

impl Shared {
    fn new() -> Self {
        Shared {
            a: Cohort::new(),
            transfer: (0..TRANSFER_SLOTS)
                .map(|_| AtomicPtr::new(ptr::null_mut()))
                .collect(),
        }
    }

    /// Puts `obj` (or nothing) in slot `i`; returns what was there.
    fn swap(&self, i: usize, obj: Option<Obj>) -> Option<Obj> {
        let new = obj.map_or(ptr::null_mut(), |o| Box::into_raw(Box::new(o)));
        // AcqRel: the pattern written before the Release is visible to whoever takes it.
        let old = self.transfer[i].swap(new, Ordering::AcqRel);
        // SAFETY: non-null slot values come from Box::into_raw above, each taken once.
        (!old.is_null()).then(|| *unsafe { Box::from_raw(old) })
    }

    fn take_all(&self) -> Vec<Obj> {
        (0..self.transfer.len())
            .filter_map(|i| self.swap(i, None))
            .collect()
    }
}

/// The allocation calls, driven by one thread's PRNG.
struct Tester<'a> {
    a: &'a Cohort<Life>,
    rng: Rng,
}

impl Tester<'_> {
    fn alloc(&mut self, life: Life) -> Obj {
        let size = random_size(&mut self.rng, LARGE_MAX);
        let a = self.a;
        let (ptr, free_size, align, zeroed) = match self.rng.below(100) {
            0..=44 => (a.malloc(size, life), size, 0, false),
            45..=59 => (a.calloc(size, life), size, 0, true),
            60..=74 => {
                let (p, usable) = a.malloc_at_least(size, life);
                assert!(
                    usable >= size,
                    "malloc_at_least({size}) reported usable {usable}"
                );
                (p, self.rng.range(size, usable), 0, false)
            }
            n => {
                let align = 1 << [0, 1, 2, 3, 4, 5, 6, 7, 12, 13][self.rng.below(10)];
                let layout = Layout::from_size_align(size, align).unwrap();
                let usable = a.usable_size(layout);
                assert!(usable >= size, "usable_size({layout:?}) = {usable}");
                let free_size = self.rng.range(size, usable);
                if n < 90 {
                    (a.alloc(layout, life), free_size, align, false)
                } else {
                    (a.alloc_zeroed(layout, life), free_size, align, true)
                }
            }
        };
        assert!(!ptr.is_null(), "allocation of {size} B returned null");
        let want_align = if align == 0 {
            malloc_align(size)
        } else {
            align
        };
        assert_eq!(
            ptr as usize % want_align,
            0,
            "{ptr:?} ({size} B) not aligned to {want_align}"
        );
        if zeroed {
            // SAFETY: a fresh allocation of `size` bytes.
            let nz = unsafe { nonzero(ptr, size) };
            assert_eq!(
                nz, None,
                "zeroed allocation {ptr:?} of {size} B is not zero"
            );
        }
        let seed = seed_of(ptr, size);
        // SAFETY: ours, `size` bytes.
        unsafe { fill(ptr, seed, size) };
        Obj {
            ptr,
            size,
            free_size,
            align,
            life,
            seed,
        }
    }

    fn check(o: &Obj, what: &str) {
        // SAFETY: a live allocation of `o.size` bytes.
        if let Some(at) = unsafe { mismatch(o.ptr, o.seed, o.size) } {
            panic!("{what}: {o:?}: pattern broken at byte {at}");
        }
    }

    fn free(&self, o: Obj) {
        Self::check(&o, "free");
        // SAFETY: a live allocation of this allocator, given back with its class and a size
        // in its usable range.
        unsafe {
            if o.align == 0 {
                self.a.free(o.ptr, o.free_size, o.life);
            } else {
                let l = Layout::from_size_align(o.free_size, o.align).unwrap();
                self.a.dealloc(o.ptr, l, o.life);
            }
        }
    }

    fn resize(&mut self, o: Obj) -> Obj {
        Self::check(&o, "resize");
        let new = random_size(&mut self.rng, LARGE_MAX);
        let zeroing = o.align == 0 && self.rng.chance(40);
        // SAFETY: a live allocation, given back as `free` would.
        let p = unsafe {
            if o.align != 0 {
                let l = Layout::from_size_align(o.free_size, o.align).unwrap();
                self.a.realloc(o.ptr, l, new, o.life)
            } else if zeroing {
                self.a.recalloc(o.ptr, o.free_size, new, o.life)
            } else {
                self.a.remalloc(o.ptr, o.free_size, new, o.life)
            }
        };
        assert!(!p.is_null(), "resize of {o:?} to {new} returned null");
        let align = if o.align == 0 {
            malloc_align(new)
        } else {
            o.align
        };
        assert_eq!(
            p as usize % align,
            0,
            "resized {p:?} ({new} B) not aligned to {align}"
        );
        let kept = o.size.min(new);
        // SAFETY: p holds `new` bytes, of which the first `kept` came from the old object.
        if let Some(at) = unsafe { mismatch(p, o.seed, kept) } {
            panic!("resize of {o:?} to {new} B at {p:?}: old contents lost at byte {at}");
        }
        if zeroing && new > o.free_size {
            // SAFETY: as above.
            let nz = unsafe { nonzero(p.add(o.free_size), new - o.free_size) };
            assert_eq!(
                nz, None,
                "recalloc of {o:?} to {new} B at {p:?}: grown part not zero"
            );
        }
        let seed = seed_of(p, new);
        // SAFETY: ours, `new` bytes.
        unsafe { fill(p, seed, new) };
        Obj {
            ptr: p,
            size: new,
            free_size: new,
            align: o.align,
            life: o.life,
            seed,
        }
    }
}

/// One worker thread: `ops` random operations, then it leaves its long-lived objects in the
/// transfer array (freeing what it finds there) and exits.
fn worker(shared: &Shared, seed: u64, ops: usize) {
    let mut t = Tester {
        a: &shared.a,
        rng: Rng::new(seed),
    };
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
                if let Some(theirs) = shared.swap(slot, mine) {
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
        if let Some(theirs) = shared.swap(slot, Some(o)) {
            t.free(theirs);
        }
    }
}

/// Checks every block's live count against the objects known to be live (quiescent: no
/// thread allocates or frees during the call).
fn check_accounting(a: &Cohort<Life>, live: &[Obj]) {
    let mut want: HashMap<usize, usize> = HashMap::new();
    for o in live.iter().filter(|o| o.size > 0) {
        let base = if o.align == 0 {
            a.block_of(o.ptr, o.size)
        } else {
            a.block_of_layout(o.ptr, o.size, o.align)
        };
        if let Some(base) = base {
            *want.entry(base).or_default() += 1;
        }
    }
    let mut wrong = Vec::new();
    a.for_each_block(|b| {
        let w = want.remove(&b.base).unwrap_or(0);
        if b.live != w {
            wrong.push((b.base, b.stride, b.life, b.live, w));
        }
    });
    assert!(
        wrong.is_empty(),
        "blocks (base, stride, life, live, expected): {wrong:?}"
    );
    assert!(
        want.is_empty(),
        "live objects in blocks for_each_block did not report: {want:?}"
    );
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
    let shared = Arc::new(Shared::new());
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
        // Quiescent: the transfer array holds every live object.
        let mut live = shared.take_all();
        check_accounting(&shared.a, &live);
        // The main thread frees some of them (their threads have exited) and puts the rest
        // back for the next round's threads.
        let mut t = Tester {
            a: &shared.a,
            rng: Rng::new(rng.next_u64()),
        };
        for (i, o) in live.drain(..).enumerate() {
            if t.rng.chance(25) {
                t.free(o);
            } else {
                assert!(shared.swap(i, Some(o)).is_none());
            }
        }
        round += 1;
    }
    let t = Tester {
        a: &shared.a,
        rng: Rng::new(0),
    };
    for o in shared.take_all() {
        t.free(o);
    }
    check_accounting(&shared.a, &[]);
    round
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
