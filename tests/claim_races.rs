//! Out of memory in a full region claims what live heaps keep free (their blocks other
//! threads' frees emptied, their medium caches) while those heaps' threads go on using
//! them: no slot or run is ever handed out twice, no live object changes. Every live
//! allocation holds a pattern of its address and its thread, checked at its free.

use cohort::{Cohort, RegionOptions};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc;

const MIB: usize = 1 << 20;
/// Sizes in turn: small ones of two classes, medium ones a cache keeps.
const SIZES: [usize; 5] = [1000, 32768, 4000, 40_000, 64];

/// The byte an object at `p` allocated by thread `who` holds.
fn byte_of(p: usize, who: u8) -> u8 {
    (p >> 6) as u8 ^ who.wrapping_mul(37)
}

/// An allocation of `size` by thread `who`, filled with its pattern; null when full.
fn make(a: &Cohort, size: usize, who: u8) -> Option<(usize, usize, u8)> {
    let p = a.malloc(size, ());
    if p.is_null() {
        return None;
    }
    // SAFETY: `size` bytes of ours.
    unsafe { p.write_bytes(byte_of(p as usize, who), size) };
    Some((p as usize, size, who))
}

/// The allocator and what the claimers wait on: the frees made so far, the threads that
/// allocate (the worker, the filler, the claimers) still running and how many of them wait.
struct Shared {
    a: Cohort,
    frees: AtomicUsize,
    running: AtomicUsize,
    waiting: AtomicUsize,
}

/// Checks the object's pattern and frees it.
fn check_and_free(s: &Shared, (p, size, who): (usize, usize, u8)) {
    // SAFETY: a live object of ours.
    let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, size) };
    if let Some(at) = bytes.iter().position(|&b| b != byte_of(p, who)) {
        panic!(
            "the {size}-byte object at {p:#x} of thread {who} changed at byte {at}: handed out twice"
        );
    }
    // SAFETY: live, freed once.
    unsafe { s.a.free(p as *mut u8, size, ()) };
    s.frees.fetch_add(1, SeqCst);
}

/// Rounds each claimer makes: tries that got memory.
const ROUNDS: usize = 25;

/// Tries that got nothing a claimer may make in all. A claimer tries again only once a
/// thread freed something since its last try began, or when every thread still running
/// waits too (nobody would free; a thread that ended gives its heap back as it exits): so
/// while others run it makes at most one such try per free (fewer than 300 000 in all:
/// the worker's 6000 objects, the filler's 25 rounds of 2200, the claimers' 25 rounds of
/// 4000 at most), whatever the machine's load; a claimer that hits the bound found the
/// region full with every other thread gone.
const MAX_EMPTY_TRIES: usize = 1_000_000;

/// After a claimer's try that got nothing (the region full while the other threads held
/// it; a claim takes no block a live heap lists as its own: the library's
/// `heap_handover::claim`): waits until a thread freed something since `seen` (the frees
/// when the try began), or until every thread still running waits too.
fn wait_for_a_free(s: &Shared, seen: usize) {
    s.waiting.fetch_add(1, SeqCst);
    while s.frees.load(SeqCst) == seen && s.waiting.load(SeqCst) < s.running.load(SeqCst) {
        std::thread::yield_now();
    }
    s.waiting.fetch_sub(1, SeqCst);
}

/// Objects for the freer to free, and whom to tell when it has.
type Handed = (Vec<(usize, usize, u8)>, Option<mpsc::Sender<()>>);

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// In a full 16 MiB region: a worker allocates and frees (its own frees, into its blocks
/// and its medium cache) and hands a share of its objects to a freer thread (remote
/// frees, batched), while two claimers allocate until null, round after round (each null
/// claims from the live heaps, the worker's, the freer's and the other claimer's among
/// them), and free theirs, themselves or (every other round) through the freer. At the end
/// every object was whole at its free and the region is empty and consistent.
///
/// A claimer's try that gets nothing at all is not a round: the other threads may hold the
/// whole region then (the other claimer's round, the filler's objects, those queued to the
/// freer, and what they freed themselves, which stays listed in their heaps), and a claim
/// rightly finds nothing. Counted as a round, such tries let a claimer that ran while the
/// region was held end its 25 rounds in microseconds with nothing (CI: 'the claimers got
/// [0, 1946]'); so it waits for a free of another thread and tries again, and each claimer
/// makes 25 rounds that got memory.
#[test]
fn claims_at_out_of_memory_race_the_heaps_they_take_from() {
    let s: &'static Shared = Box::leak(Box::new(Shared {
        a: Cohort::with_options(&RegionOptions::new(16 * MIB)).expect("fixed"),
        frees: AtomicUsize::new(0),
        running: AtomicUsize::new(4),
        waiting: AtomicUsize::new(0),
    }));
    let a = &s.a;
    let (to_freer, freer_gets) = mpsc::sync_channel::<Handed>(4);
    let freer = std::thread::spawn(move || {
        for (objects, done) in freer_gets {
            for o in objects {
                check_and_free(s, o);
            }
            if let Some(done) = done {
                done.send(()).unwrap();
            }
        }
    });
    let worker_to_freer = to_freer.clone();
    let worker = std::thread::spawn(move || {
        let to_freer = worker_to_freer;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut live: Vec<(usize, usize, u8)> = Vec::new();
        let mut nulls = 0;
        for step in 0..6000 {
            let size = SIZES[rng.below(SIZES.len())];
            match make(a, size, 1) {
                Some(o) => live.push(o),
                None => nulls += 1,
            }
            if live.len() > 40 || (step % 7 == 0 && !live.is_empty()) {
                let o = live.swap_remove(rng.below(live.len()));
                check_and_free(s, o);
            }
            if step % 50 == 49 {
                // A share to the freer: remote frees of the worker's objects.
                let n = live.len() / 3;
                let handed: Vec<_> = live.drain(..n).collect();
                to_freer.send((handed, None)).unwrap();
            }
        }
        for o in live {
            check_and_free(s, o);
        }
        s.running.fetch_sub(1, SeqCst);
        nulls
    });
    let claimers: Vec<_> = (2..4u8)
        .map(|who| {
            let to_freer = to_freer.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ u64::from(who));
                let (mut got, mut empty) = (0, 0);
                let mut round = 0;
                while round < ROUNDS {
                    let seen = s.frees.load(SeqCst);
                    let mut mine = Vec::new();
                    while mine.len() < 4000 {
                        match make(a, SIZES[rng.below(SIZES.len())], who) {
                            Some(o) => mine.push(o),
                            None => break,
                        }
                    }
                    if mine.is_empty() {
                        empty += 1;
                        assert!(
                            empty < MAX_EMPTY_TRIES,
                            "claimer {who}: {empty} tries got nothing ({round} rounds done, \
                             {got} objects): the region stayed full while the others freed"
                        );
                        wait_for_a_free(s, seen);
                        continue;
                    }
                    got += mine.len();
                    if round % 2 == 1 {
                        // Every object freed by the freer: this thread's retired blocks
                        // empty on its returned stack while it allocates on, and the other
                        // claimer's nulls claim them.
                        to_freer.send((mine, None)).unwrap();
                    } else {
                        for o in mine {
                            check_and_free(s, o);
                        }
                    }
                    round += 1;
                }
                s.running.fetch_sub(1, SeqCst);
                (got, empty)
            })
        })
        .collect();
    // A thread that fills the region with 4000-byte objects, has the freer free them all
    // (its retired blocks empty on its returned stack) and goes on with other sizes (its
    // slow paths drain that stack) while the claimers' nulls claim from it.
    let filler = {
        let to_freer = to_freer.clone();
        std::thread::spawn(move || {
            let mut rng = Rng(0x1234_5678_9abc_def1);
            for _ in 0..25 {
                let mut mine = Vec::new();
                while mine.len() < 2000 {
                    match make(a, 4000, 4) {
                        Some(o) => mine.push(o),
                        None => break,
                    }
                }
                let (done, freed) = mpsc::channel();
                to_freer.send((mine, Some(done))).unwrap();
                freed.recv().unwrap();
                for _ in 0..200 {
                    let size = [64, 32768, 200][rng.below(3)];
                    if let Some(o) = make(a, size, 4) {
                        check_and_free(s, o);
                    }
                }
            }
            s.running.fetch_sub(1, SeqCst);
        })
    };
    drop(to_freer);
    let got: Vec<(usize, usize)> = claimers.into_iter().map(|t| t.join().unwrap()).collect();
    filler.join().unwrap();
    let nulls = worker.join().unwrap();
    freer.join().unwrap();
    eprintln!(
        "claimers got (objects, tries that got nothing) {got:?} in {ROUNDS} rounds each; \
         the worker met {nulls} nulls"
    );
    assert!(a.is_empty(), "not empty: {:?}", a.stats());
    // SAFETY: no other thread calls it now.
    unsafe { a.verify() }.expect("consistent");
}
