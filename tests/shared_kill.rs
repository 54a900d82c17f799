//! kill -9 of processes in the middle of heavy allocation in a shared region, over many
//! kill points: a victim child allocates, frees, and frees objects other processes left in
//! an exchange (remote frees), endlessly, until the parent kills it at a random moment
//! (often inside a slow path, holding the pool's lock). A survivor child does the same
//! meanwhile and is told to stop at the end. After each kill the parent takes over the
//! dead child's heaps, allocates and checks that nothing it holds was handed out again,
//! and every few kills verifies the whole region. At the end: every survivor's objects are
//! intact, the region verifies, and what is still live is bounded by what the dead
//! children could hold.

mod common;

use cohort::Cohort;
use common::processes::{self, wait_status};
use std::sync::atomic::{AtomicU64, Ordering};

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

/// Kill points: victims killed, one per round.
const KILLS: usize = if cfg!(debug_assertions) { 60 } else { 300 };
/// The most objects a child holds at once (its own, plus one taken from the exchange).
const CHILD_HOLDS: usize = 64;
/// Exchange slots: objects deposited by one process for any other to free.
const EXCHANGE: usize = 64;
const TIMEOUT: u32 = 120;

#[repr(C)]
struct Mailbox {
    /// `offset << 16 | size` of a deposited object (offset from the mailbox), 0 when empty.
    exchange: [AtomicU64; EXCHANGE],
    /// Rounds the victim of the current round has done (it starts at 0 each round).
    progress: AtomicU64,
    /// Set to 1 when the survivor must stop.
    stop: AtomicU64,
    /// Victims that held a heap (counted after their first allocation returned; a victim
    /// killed before, in its first join, holds none: it may die taking over another dead
    /// process's heap, which is then counted once, by whoever finishes the take-over).
    joined: AtomicU64,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn random_size(r: &mut Rng) -> usize {
    match r.below(10) {
        0 => 1 + r.below(2),
        1..=5 => 8 + r.below(120),
        6..=8 => 128 + r.below(2000),
        _ => 2048 + r.below(14000),
    }
}

fn byte(tag: u64, i: usize) -> u8 {
    (tag.wrapping_mul(0x9E37_79B9) as usize + i) as u8
}

/// # Safety
/// `p` is writable for `size` bytes.
unsafe fn fill(p: *mut u8, size: usize, tag: u64) {
    for i in 0..size {
        // SAFETY: caller.
        unsafe { p.add(i).write(byte(tag, i)) };
    }
}

/// # Safety
/// `p` is readable for `size` bytes.
unsafe fn intact(p: *const u8, size: usize, tag: u64) -> bool {
    // SAFETY: caller.
    (0..size).all(|i| unsafe { p.add(i).read() } == byte(tag, i))
}

/// What a child does until killed (or, the survivor, told to stop): allocate, pattern,
/// check, free its own objects; deposit some in the exchange; free what others deposited.
fn churn(c: &Cohort<Life>, mb: &Mailbox, seed: u64, count_progress: bool) {
    let base = mb as *const Mailbox as u64;
    let mut r = Rng(seed | 1);
    let mut held: Vec<(*mut u8, usize, u64)> = Vec::new();
    let mut n = 0u64;
    let mut joined = false;
    while mb.stop.load(Ordering::Relaxed) == 0 {
        n += 1;
        if count_progress {
            mb.progress.store(n, Ordering::Relaxed);
        }
        match r.below(8) {
            0..=3 if held.len() < CHILD_HOLDS - 1 => {
                let size = random_size(&mut r);
                let life = if r.below(3) == 0 {
                    Life::Long
                } else {
                    Life::Short
                };
                let p = c.malloc(size, life);
                assert!(!p.is_null(), "out of memory");
                if count_progress && !joined {
                    joined = true;
                    mb.joined.fetch_add(1, Ordering::Relaxed);
                }
                let tag = r.next() << 1 | (life == Life::Long) as u64;
                // SAFETY: fresh, of `size` bytes.
                unsafe { fill(p, size, tag) };
                held.push((p, size, tag));
            }
            4 | 5 if !held.is_empty() => {
                let (p, size, tag) = held.swap_remove(r.below(held.len()));
                // SAFETY: ours, live, freed once.
                unsafe { check_and_free(c, p, size, tag) };
            }
            6 if !held.is_empty() => {
                // Deposit an object (Short class, any size) for another process.
                let i = r.below(held.len());
                if held[i].2 & 1 == 0 {
                    let slot = &mb.exchange[r.below(EXCHANGE)];
                    let (p, size, _) = held[i];
                    let word = (p as u64 - base) << 16 | size as u64;
                    if slot
                        .compare_exchange(0, word, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                    {
                        held.swap_remove(i);
                    }
                }
            }
            _ => {
                // Free what another process deposited: a remote free.
                let word = mb.exchange[r.below(EXCHANGE)].swap(0, Ordering::AcqRel);
                if word != 0 {
                    let (p, size) = ((base + (word >> 16)) as *mut u8, (word & 0xffff) as usize);
                    // SAFETY: deposited by its owner, taken by us alone.
                    unsafe { c.free(p, size, Life::Short) };
                }
            }
        }
    }
    for (p, size, tag) in held {
        // SAFETY: ours, live, freed once.
        unsafe { check_and_free(c, p, size, tag) };
    }
}

/// Checks the pattern of a child's object (`tag`'s low bit says its lifetime class) and
/// frees it.
///
/// # Safety
/// `p` is a live allocation of `size` bytes of the caller's, freed by no one else.
unsafe fn check_and_free(c: &Cohort<Life>, p: *mut u8, size: usize, tag: u64) {
    let life = if tag & 1 == 1 {
        Life::Long
    } else {
        Life::Short
    };
    // SAFETY: the caller's guarantee.
    unsafe {
        assert!(intact(p, size, tag), "an object of ours was overwritten");
        c.free(p, size, life);
    }
}

fn fork_child(f: impl FnOnce()) -> libc::pid_t {
    processes::in_child(TIMEOUT, f)
}

#[test]
fn kill_9_at_many_points_leaves_the_region_usable_and_consistent() {
    kill_rounds();
}

/// Every heap a killed process held is taken over (counted by the region's recoveries:
/// the victims' that held one, and the survivor's, which exits with `_exit` while joined).
///
/// Found by CI (release, 300 kill points, once): `Recoveries { lock_repairs: 43,
/// heaps_reaped: 299 }` against 300 kills. The cause was this test's count, not the
/// region: a victim killed in its first join holds no heap yet (its heap is published, with
/// its holder word written, only at the end of the join; before that it may be taking over
/// another dead process's heap, which the next reaper finishes and counts once). So the
/// bound is the victims that held a heap, counted by the victims themselves.
#[test]
fn every_killed_processs_heap_is_taken_over() {
    let (rec, joined) = kill_rounds();
    assert!(
        rec.heaps_reaped > joined,
        "every heap of the {joined} victims that held one, and the survivor's, was taken \
         over: {rec:?}"
    );
}

/// Runs the kill rounds and checks what must hold whatever the kill points: nothing handed
/// out twice, the survivor's objects intact, `verify` passing, and no more left live than
/// the dead could hold. Returns the region's recoveries, and how many victims held a heap.
fn kill_rounds() -> (cohort::Recoveries, u64) {
    let c = Cohort::<Life>::shared_anonymous(4 << 30).expect("a shared region");
    let mb = c.calloc(size_of::<Mailbox>(), Life::Long).cast::<Mailbox>();
    assert!(!mb.is_null());
    // SAFETY: zeroed (valid atomics), shared with the children through the region.
    let mbr = unsafe { &*mb };
    let survivor = {
        let c = &c;
        fork_child(move || churn(c, mbr, 0x5EED, false))
    };
    let mut rng = Rng(0xC0FFEE);
    // The parent's objects: (address, size, tag), never handed out twice.
    let mut mine: Vec<(*mut u8, usize, u64)> = Vec::new();
    for round in 0..KILLS {
        mbr.progress.store(0, Ordering::Relaxed);
        let victim = {
            let c = &c;
            fork_child(move || churn(c, mbr, round as u64 * 7919 + 1, true))
        };
        // Kill once the victim has started, after a random number of its steps.
        let steps = 1 + rng.below(if round % 3 == 0 { 50 } else { 5000 }) as u64;
        while mbr.progress.load(Ordering::Relaxed) < steps {
            std::hint::spin_loop();
        }
        // SAFETY: our own child.
        unsafe { libc::kill(victim, libc::SIGKILL) };
        let status = wait_status(victim);
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
            "the victim of round {round} failed before it was killed: {status:#x}"
        );
        c.reap_dead_processes();
        // The parent goes on: allocations never overlap what it holds.
        for _ in 0..20 {
            let size = random_size(&mut rng);
            let p = c.malloc(size, Life::Long);
            assert!(!p.is_null(), "out of memory in round {round}");
            let tag = rng.next();
            // SAFETY: fresh.
            unsafe { fill(p, size, tag) };
            mine.push((p, size, tag));
        }
        for _ in 0..10 {
            let (p, size, tag) = mine.swap_remove(rng.below(mine.len()));
            // SAFETY: ours, freed once.
            unsafe {
                assert!(
                    intact(p, size, tag),
                    "round {round}: an object was handed out twice"
                );
                c.free(p, size, Life::Long);
            }
        }
        for &(p, size, tag) in &mine {
            // SAFETY: ours, live.
            assert!(
                unsafe { intact(p, size, tag) },
                "round {round}: overwritten"
            );
        }
    }
    mbr.stop.store(1, Ordering::Relaxed);
    let status = wait_status(survivor);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the survivor failed: {status:#x}"
    );
    c.reap_dead_processes();
    for (p, size, tag) in mine.drain(..) {
        // SAFETY: ours, freed once.
        unsafe {
            assert!(intact(p, size, tag));
            c.free(p, size, Life::Long);
        }
    }
    // What the exchange still holds was deposited and never taken: free it.
    for slot in &mbr.exchange {
        let word = slot.swap(0, Ordering::Relaxed);
        if word != 0 {
            let p = (mb as u64 + (word >> 16)) as *mut u8;
            // SAFETY: a deposited object, freed once.
            unsafe { c.free(p, (word & 0xffff) as usize, Life::Short) };
        }
    }
    let joined = mbr.joined.load(Ordering::Relaxed);
    // SAFETY: the mailbox, freed once.
    unsafe { c.free(mb.cast(), size_of::<Mailbox>(), Life::Long) };
    // SAFETY: every other process is gone.
    let v = unsafe { c.verify() }.expect("the region verifies after the kills");
    let live = c.stats().small.live;
    let rec = c.recoveries();
    eprintln!(
        "{KILLS} kill points ({joined} victims held a heap): {live} slots left live by the \
         dead, {v:?}, {rec:?}"
    );
    assert!(
        live <= KILLS * CHILD_HOLDS,
        "{live} slots leaked, more than the dead could hold ({})",
        KILLS * CHILD_HOLDS
    );
    (rec, joined)
}
