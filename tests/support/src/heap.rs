//! Checks and loads that tests of an allocator share, given its calls as closures (this
//! crate does not depend on cohort): every address handed out once ([`assert_distinct`]),
//! and a burst of objects written whole, then freed ([`burst`]).

/// Panics when an address repeats in `handed_out` (live allocations, none freed meanwhile):
/// a slot handed out twice.
pub fn assert_distinct(handed_out: &[*mut u8]) {
    let mut sorted = handed_out.to_vec();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), handed_out.len(), "a slot handed out twice");
}

/// A burst: `count` objects of `size` bytes from `alloc`, each written whole (`0x5a`, so its
/// pages are resident), then each given to `free`, in the order allocated.
///
/// # Safety
/// `alloc` returns a pointer to `size` writable bytes of a live allocation of its own (the
/// burst panics on null), and `free(p)` frees what `alloc` returned as `p`.
pub unsafe fn burst(
    count: usize,
    size: usize,
    mut alloc: impl FnMut() -> *mut u8,
    mut free: impl FnMut(*mut u8),
) {
    let ps: Vec<*mut u8> = (0..count)
        .map(|_| {
            let p = alloc();
            assert!(!p.is_null(), "an allocation of the burst failed");
            // SAFETY: `size` writable bytes of a live allocation (caller).
            unsafe { p.write_bytes(0x5a, size) };
            p
        })
        .collect();
    for p in ps {
        free(p);
    }
}

/// What [`rounds_until_resident`] saw: the rounds it ran, how long it took, and the
/// process's resident size at the end.
#[derive(Clone, Copy, Debug)]
pub struct Rounds {
    /// Rounds run.
    pub rounds: u64,
    /// Time from the call to the end.
    pub elapsed: std::time::Duration,
    /// The resident size at the end ([`crate::rss`]).
    pub resident: usize,
}

impl Rounds {
    /// True when the resident size came down to `goal` bytes.
    pub fn reached(&self, goal: usize) -> bool {
        self.resident <= goal
    }
}

/// Runs `round` every `pause` until the process's resident size ([`crate::rss`]) is at most
/// `goal` bytes or `limit` has passed since the call: a program's later work while what it
/// freed should go back to the OS. The bound is the program's pace, not the machine's: when
/// a loaded machine makes fewer than the `limit / pause` rounds that `limit` stands for
/// (sleeps overshoot; a 2 ms pace made 371 rounds in 3 s at a load of 14 instead of about
/// 1 400), the rounds go on until that many have run, for at most 10 times `limit`: the
/// allocator's give-back is driven by its calls (its slow paths read the clock), so fewer
/// calls than the pace asks for would fail a correct allocator.
pub fn rounds_until_resident(
    goal: usize,
    limit: std::time::Duration,
    pause: std::time::Duration,
    mut round: impl FnMut(),
) -> Rounds {
    let start = std::time::Instant::now();
    let mut rounds = 0;
    let paced_rounds = (limit.as_nanos() / pause.as_nanos().max(1)) as u64;
    let in_bound = |elapsed: std::time::Duration, rounds: u64| {
        elapsed < limit || (rounds < paced_rounds && elapsed < limit * 10)
    };
    while crate::rss() > goal && in_bound(start.elapsed(), rounds) {
        std::thread::sleep(pause);
        round();
        rounds += 1;
    }
    Rounds {
        rounds,
        elapsed: start.elapsed(),
        resident: crate::rss(),
    }
}
