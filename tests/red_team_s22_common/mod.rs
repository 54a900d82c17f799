//! Helpers of session 22's red-team tests on remote frees: patterned objects (every byte a
//! function of the object's address and a tag, checked before the free), double frees that
//! must be reported naming the pointer, size and lifetime class, and fresh objects that
//! must be handed out once each.
#![allow(dead_code)]

use cohort::{Cohort, Join, Lifetime, Misuse, Problem};
use std::panic::{catch_unwind, panic_any, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

/// A live object: address, size, the tag of its pattern.
pub type Object = (usize, usize, u8);

/// The misuse hook of the tests that catch reports: the report as the panic's payload.
pub fn raise(m: &Misuse) {
    panic_any(m.clone());
}

/// The byte an object at `p` made with `tag` holds at index `i`.
pub fn pattern(p: usize, i: usize, tag: u8) -> u8 {
    ((p >> 4) as u8).wrapping_add(i as u8).wrapping_mul(3) ^ tag
}

/// A fresh object of `n` bytes of class `life`, patterned with `tag`.
pub fn make<L: Lifetime>(a: &Cohort<L>, n: usize, life: L, tag: u8, what: &str) -> Object {
    let p = a.malloc(n, life) as usize;
    assert_ne!(p, 0, "{what}: malloc({n})");
    patterned(p, n, tag)
}

/// The object of `n` bytes at `p`, a fresh allocation, patterned with `tag`.
pub fn patterned(p: usize, n: usize, tag: u8) -> Object {
    // SAFETY: the callers pass fresh allocations of n bytes.
    let bytes = unsafe { std::slice::from_raw_parts_mut(p as *mut u8, n) };
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = pattern(p, i, tag);
    }
    (p, n, tag)
}

/// Panics unless the object holds its pattern.
pub fn check((p, n, tag): Object, what: &str) {
    // SAFETY: the callers pass live objects.
    let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, n) };
    if let Some(i) = (0..n).find(|&i| bytes[i] != pattern(p, i, tag)) {
        panic!(
            "{what}: the object at {p:#x} ({n} B, tag {tag}) changed at byte {i}: {:#x}, \
             wanted {:#x}",
            bytes[i],
            pattern(p, i, tag)
        );
    }
}

/// A fresh object of `n` bytes of class `life` from join `j`, patterned with `tag`.
pub fn made_by<L: Lifetime>(j: &Join<'_, L>, n: usize, life: L, tag: u8, what: &str) -> Object {
    let p = j.malloc(n, life) as usize;
    assert_ne!(p, 0, "{what}: the join's malloc({n})");
    patterned(p, n, tag)
}

/// Checks the object's pattern, then frees it through join `j` (class `life`, its class).
pub fn freed_by<L: Lifetime>(j: &Join<'_, L>, o: Object, life: L, what: &str) {
    check(o, what);
    // SAFETY: a live object of o.1 bytes and class `life`, freed once.
    unsafe { j.free(o.0 as *mut u8, o.1, life) };
}

/// Join `j` makes and frees 200 rounds of 300 objects of 1000 bytes of class `other`: its
/// slow paths run its idle look, which in an instance without decay delay empties its idle
/// current blocks of the other classes in place.
pub fn idle_look_by<L: Lifetime + Copy>(j: &Join<'_, L>, other: L, what: &str) {
    for _ in 0..200 {
        let made: Vec<Object> = (0..300)
            .map(|i| made_by(j, 1000, other, i as u8, what))
            .collect();
        made.into_iter().for_each(|o| freed_by(j, o, other, what));
    }
}

/// Checks the object's pattern, then frees it (class `life`, its class).
pub fn unmake<L: Lifetime>(a: &Cohort<L>, o: Object, life: L, what: &str) {
    check(o, what);
    // SAFETY: a live object of o.1 bytes and class `life`, freed once.
    unsafe { a.free(o.0 as *mut u8, o.1, life) };
}

/// Frees `o` (class `life`) again, with [`raise`] as the misuse hook: must be reported
/// naming its pointer, size and class, as a double free, or (the free before emptied the
/// block and gave it back: no heap kept it) as a free into a block of no class.
pub fn double_free_reported<L: Lifetime>(a: &Cohort<L>, o: Object, life: L, what: &str) {
    let (p, n, _) = o;
    // SAFETY: deliberately a double free: reported, nothing changed.
    let ended = catch_unwind(AssertUnwindSafe(|| unsafe {
        a.free(p as *mut u8, n, life)
    }));
    let Err(payload) = ended else {
        panic!("{what}: a double free of {p:#x} ({n} B) was not reported");
    };
    let m = *payload
        .downcast::<Misuse>()
        .unwrap_or_else(|_| panic!("{what}: the payload is not the hook's Misuse"));
    assert_eq!(
        (m.ptr, m.size, m.life),
        (p, n, life.index()),
        "{what}: the report names another pointer, size or class: {m}"
    );
    let block_gone = matches!(
        m.problem,
        Problem::NotMedium { .. }
            | Problem::WrongBlock {
                block_class: None,
                ..
            }
    );
    assert!(
        m.problem == Problem::DoubleFree || block_gone,
        "{what}: the report: {m}"
    );
}

/// The verdict on a double free of the object at `x` (`size` bytes, class `life`) that
/// `caught` says was reported or not: reported, it must name `x`, `size` and `life` as a
/// double free; unreported, the failure says how often `x` is handed out among the
/// objects made after (until a few blocks' worth past it, all kept live; at least `n`),
/// and `a`, which took a double free, is never used again.
pub fn double_free_verdict<L: Lifetime>(
    a: Cohort<L>,
    (x, size): (usize, usize),
    life: L,
    n: usize,
    caught: Option<Misuse>,
    what: &str,
) -> Result<(), String> {
    if let Some(m) = caught {
        let named = (m.ptr, m.size, m.life) == (x, size, life.index());
        return match (named, &m.problem) {
            (true, Problem::DoubleFree) => Ok(()),
            _ => Err(format!("{what}: another report: {m}")),
        };
    }
    let next: Vec<usize> = (0..4 * n.max(2100 * 1024 / size))
        .map(|_| a.malloc(size, life) as usize)
        .collect();
    let times = next.iter().filter(|&&p| p == x).count();
    std::mem::forget(a);
    Err(format!(
        "{what}: the double free of {x:#x} was not reported; handed out {times} times among \
         the next {} objects (all live)",
        next.len()
    ))
}

/// An instance that gives kept memory back with no delay (its idle look empties a current
/// block in place at its first look): a shared-anonymous region (`shared`: remote frees
/// pushed at once) or a private instance.
pub fn without_decay_delay<L: Lifetime>(shared: bool) -> Cohort<L> {
    let a = if shared {
        Cohort::<L>::shared_anonymous(64 << 20).expect("shared anonymous")
    } else {
        Cohort::<L>::new()
    };
    a.set_retention(cohort::Retention {
        delay: std::time::Duration::ZERO,
        ..cohort::Retention::DEFAULT
    });
    a
}

/// Makes `count` objects of class `life` with the sizes of `sizes` in turn, all live at
/// once: none overlaps another; then checks and frees them.
pub fn fresh_objects_once<L: Lifetime>(
    a: &Cohort<L>,
    sizes: &[usize],
    count: usize,
    life: L,
    what: &str,
) {
    let fresh: Vec<Object> = (0..count)
        .map(|i| make(a, sizes[i % sizes.len()], life, i as u8, what))
        .collect();
    let mut sorted = fresh.clone();
    sorted.sort_unstable();
    for w in sorted.windows(2) {
        assert!(
            w[0].0 + w[0].1 <= w[1].0,
            "{what}: overlapping objects handed out: {w:x?}"
        );
    }
    for o in fresh {
        unmake(a, o, life, what);
    }
}

/// The channels of `n` threads in a ring: entry `w` is thread `w`'s, the sender to thread
/// `w + 1` and the receiver from thread `w - 1` (modulo `n`), each holding `bound`
/// messages.
pub fn ring_channels<T>(n: usize, bound: usize) -> Vec<(mpsc::SyncSender<T>, mpsc::Receiver<T>)> {
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::sync_channel(bound)).unzip();
    let mut receivers: Vec<Option<mpsc::Receiver<T>>> = receivers.into_iter().map(Some).collect();
    senders
        .into_iter()
        .enumerate()
        .map(|(w, to_next)| {
            (
                to_next,
                receivers[(w + n - 1) % n].take().expect("receiver"),
            )
        })
        .collect()
}

/// Runs `make` on a thread that stays alive (parked) after it, and returns the objects it
/// made that lie in the block of the first (`address` says where each is). `free_first`:
/// that thread then frees the first of them itself (its local list's first), as the last
/// thing it does, before this returns: nothing it allocates after can take the slot again.
pub fn from_a_live_owner<T: Copy + Send + 'static>(
    make: impl FnOnce() -> Vec<T> + Send + 'static,
    address: fn(&T) -> usize,
    free_first: Option<fn(T)>,
) -> Vec<T> {
    let done: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let (tx, rx) = mpsc::channel::<Vec<T>>();
    let owner = std::thread::spawn(move || {
        let made = make();
        let block = address(&made[0]) >> 21;
        let same: Vec<T> = made
            .into_iter()
            .filter(|o| address(o) >> 21 == block)
            .collect();
        let first = same[0];
        tx.send(same).expect("send");
        if let Some(free) = free_first {
            free(first);
        }
        done.store(true, Ordering::Release);
        loop {
            std::thread::park();
        }
    });
    let same = rx.recv().expect("the owner's objects");
    while !done.load(Ordering::Acquire) {
        // The thread never ends but by a panic (a misuse reported in `free_first`'s free):
        // then it would never be done.
        assert!(
            !owner.is_finished(),
            "the owner thread ended before its free of its first object (a panic: see above)"
        );
        std::thread::yield_now();
    }
    same
}
