//! Model-based test of promotion: random operation sequences in a full region, against a
//! plain model of what is live. Every live allocation holds a pattern, checked before it
//! is freed or resized; a new allocation must not overlap a live one and must keep its
//! request's alignment; a free with a wrong size (another class, or the other lifetime
//! class) is reported on promoted and unpromoted slots alike and changes nothing; and the
//! allocator verifies after every sequence, with no promoted slot left once all is freed.

use cohort::{Cohort, Lifetime};
use quickcheck::{Arbitrary, Gen, QuickCheck};
use std::collections::BTreeMap;

cohort::lifetime_classes! {
    enum Life { A, B }
}

/// Sizes of the small classes the full region has blocks of, and of some it has none of.
const SIZES: [usize; 10] = [1, 5, 8, 12, 16, 24, 32, 40, 48, 64];

#[derive(Clone, Debug)]
enum Op {
    Malloc(usize, bool),
    TryMalloc(usize, bool),
    Calloc(usize, bool),
    Free(usize),
    FreeUnsized(usize),
    Realloc(usize, usize),
    WrongFree(usize, usize),
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Op {
        let size = SIZES[usize::arbitrary(g) % SIZES.len()];
        let b = bool::arbitrary(g);
        let i = usize::arbitrary(g);
        match u8::arbitrary(g) % 10 {
            0..=2 => Op::Malloc(size, b),
            3 => Op::TryMalloc(size, b),
            4 => Op::Calloc(size, b),
            5..=6 => Op::Free(i),
            7 => Op::FreeUnsized(i),
            8 => Op::Realloc(i, size),
            _ => Op::WrongFree(i, size),
        }
    }
}

fn life(b: bool) -> Life {
    if b {
        Life::B
    } else {
        Life::A
    }
}

struct Live {
    p: *mut u8,
    size: usize,
    life: Life,
    key: u8,
}

/// # Safety
/// `p` is valid for `len` bytes of writes.
unsafe fn fill(p: *mut u8, len: usize, key: u8) {
    for i in 0..len {
        // SAFETY: the caller's.
        unsafe { p.add(i).write(key ^ i as u8) };
    }
}

/// # Safety
/// `p` is valid for `len` bytes of reads.
unsafe fn holds(p: *const u8, len: usize, key: u8) -> bool {
    // SAFETY: the caller's.
    (0..len).all(|i| unsafe { p.add(i).read() } == key ^ i as u8)
}

/// A 3-unit region made full: a block of 32-byte and one of 64-byte slots of `A` with a
/// few allocations each, and a block of 4 KiB slots of `B` filled until nothing is left.
fn full_region() -> (Cohort<Life>, Vec<(*mut u8, usize, Life)>) {
    let a: Cohort<Life> = Cohort::with_reservation(6 << 20);
    let mut made = Vec::new();
    for _ in 0..4 {
        made.push((a.malloc(32, Life::A), 32, Life::A));
        made.push((a.malloc(64, Life::A), 64, Life::A));
    }
    loop {
        let p = a.try_malloc(4096, Life::B);
        if p.is_null() {
            break;
        }
        made.push((p, 4096, Life::B));
    }
    assert!(made.iter().all(|m| !m.0.is_null()));
    (a, made)
}

fn run(ops: Vec<Op>) -> bool {
    let (a, made) = full_region();
    let mut live: BTreeMap<usize, Live> = BTreeMap::new();
    let mut key = 0u8;
    let pick = |live: &BTreeMap<usize, Live>, i: usize| live.keys().nth(i % live.len()).copied();
    for op in ops {
        key = key.wrapping_add(1);
        let made = match op {
            Op::Malloc(size, b) => Some((a.malloc(size, life(b)), size, life(b), false)),
            Op::TryMalloc(size, b) => Some((a.try_malloc(size, life(b)), size, life(b), false)),
            Op::Calloc(size, b) => Some((a.calloc(size, life(b)), size, life(b), true)),
            Op::Free(i) | Op::FreeUnsized(i) if !live.is_empty() => {
                let at = pick(&live, i).unwrap();
                let m = live.remove(&at).unwrap();
                // SAFETY: a live allocation of the model, `size` bytes long.
                assert!(unsafe { holds(m.p, m.size, m.key) }, "pattern of {:#x}", at);
                if matches!(op, Op::Free(_)) {
                    // SAFETY: live, freed with its size and class, once.
                    unsafe { a.free(m.p, m.size, m.life) };
                } else {
                    // SAFETY: live, freed once.
                    unsafe { a.free_unsized(m.p) }.expect("an unsized free of a live slot");
                }
                None
            }
            Op::Realloc(i, new) if !live.is_empty() => {
                let at = pick(&live, i).unwrap();
                let m = live.remove(&at).unwrap();
                // SAFETY: live, resized with its size and class.
                let q = unsafe { a.remalloc(m.p, m.size, new, m.life) };
                if q.is_null() {
                    // Out of memory: the old allocation is untouched and still live.
                    live.insert(at, m);
                    None
                } else {
                    let kept = m.size.min(new);
                    // SAFETY: the new allocation holds `kept` bytes of the old one.
                    assert!(unsafe { holds(q, kept, m.key) }, "realloc kept the bytes");
                    Some((q, new, m.life, false))
                }
            }
            Op::WrongFree(i, size) if !live.is_empty() => {
                let at = pick(&live, i).unwrap();
                let m = &live[&at];
                let wrong_size = cohort::class::class_of(size, cohort::class::malloc_align(size))
                    != cohort::class::class_of(m.size, cohort::class::malloc_align(m.size));
                let other_life = if m.life.index() == 0 {
                    Life::B
                } else {
                    Life::A
                };
                // SAFETY: a live slot given a wrong size or class: try_free reports it and
                // frees nothing.
                if wrong_size {
                    assert!(
                        unsafe { a.try_free(m.p, size, m.life) }.is_err(),
                        "size {size} for {}",
                        m.size
                    );
                }
                // SAFETY: as above.
                assert!(unsafe { a.try_free(m.p, m.size, other_life) }.is_err());
                None
            }
            _ => None,
        };
        if let Some((p, size, life, zeroed)) = made {
            if p.is_null() {
                continue;
            }
            let align = cohort::class::malloc_align(size).min(4096);
            assert_eq!(p as usize % align, 0, "alignment of a {size}-byte request");
            if zeroed {
                // SAFETY: a new allocation of `size` bytes.
                assert!(
                    (0..size).all(|i| unsafe { p.add(i).read() } == 0),
                    "calloc zeroes"
                );
            }
            let end = p as usize + size;
            if let Some((&before, m)) = live.range(..end).next_back() {
                assert!(
                    before + m.size <= p as usize,
                    "overlap with a live allocation"
                );
            }
            // SAFETY: a new allocation of `size` bytes.
            unsafe { fill(p, size, key) };
            live.insert(p as usize, Live { p, size, life, key });
        }
    }
    // SAFETY: nobody else uses `a`.
    unsafe { a.verify() }.expect("consistent after the sequence");
    for m in live.values() {
        // SAFETY: live, freed with its size and class.
        assert!(unsafe { holds(m.p, m.size, m.key) });
        // SAFETY: as above.
        unsafe { a.free(m.p, m.size, m.life) };
    }
    for &(p, size, life) in &made {
        // SAFETY: made by full_region, freed once.
        unsafe { a.free(p, size, life) };
    }
    let s = a.stats();
    assert_eq!(s.small.live, 0);
    assert!(s.heads.iter().all(|h| h.promoted == 0));
    // SAFETY: nobody else uses `a`.
    unsafe { a.verify() }.expect("consistent when empty");
    true
}

#[test]
fn random_sequences_in_a_full_region_match_the_model() {
    QuickCheck::new()
        .tests(40)
        .quickcheck(run as fn(Vec<Op>) -> bool);
}

#[test]
fn promotion_happens_in_the_model_region() {
    let (a, made) = full_region();
    let p = a.malloc(16, Life::A);
    assert!(!p.is_null());
    assert_eq!(a.stats().heads.iter().map(|h| h.promoted).sum::<usize>(), 1);
    // SAFETY: allocated above.
    unsafe { a.free(p, 16, Life::A) };
    for (p, size, life) in made {
        // SAFETY: made by full_region.
        unsafe { a.free(p, size, life) };
    }
}
