//! Model-based test: random operation sequences against a plain model of what is live.
//!
//! Every live allocation is filled with a pattern derived from its id and checked before it
//! is freed or resized; each new allocation is checked against every live one for overlap;
//! the alignment contract and zeroing (calloc, recalloc, alloc_zeroed) are checked.

use cohort::Cohort;
use quickcheck::{Arbitrary, Gen, QuickCheck};
use std::alloc::Layout;
use std::collections::BTreeMap;

cohort::lifetime_classes! {
    enum Life { Frame, Request, Long }
}
const LIVES: [Life; 3] = [Life::Frame, Life::Request, Life::Long];

/// A size drawn across every size class, tiny to large.
#[derive(Clone, Copy, Debug)]
struct Size(usize);

impl Arbitrary for Size {
    fn arbitrary(g: &mut Gen) -> Size {
        let r = u32::arbitrary(g) as usize;
        Size(match r % 10 {
            0 => r % 5,                  // 0..4: zero and the tiny classes
            1..=4 => 1 + r % 128,        // the busiest exact-fit classes
            5..=6 => 1 + r % 1024,       // every exact-fit class
            7..=8 => 1 + r % (16 << 10), // every small class
            _ => (16 << 10) + r % (200 << 10),
        })
    }
}

#[derive(Clone, Debug)]
enum Op {
    Malloc(Size, u8),
    Calloc(Size, u8),
    Alloc(Size, u8, u8),
    AllocZeroed(Size, u8, u8),
    Free(usize),
    Remalloc(usize, Size),
    Recalloc(usize, Size),
    Realloc(usize, Size),
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Op {
        let life = u8::arbitrary(g) % 3;
        let align = u8::arbitrary(g) % 14; // 1 B .. 8 KiB
        match u8::arbitrary(g) % 12 {
            0..=2 => Op::Malloc(Size::arbitrary(g), life),
            3 => Op::Calloc(Size::arbitrary(g), life),
            4 => Op::Alloc(Size::arbitrary(g), life, align),
            5 => Op::AllocZeroed(Size::arbitrary(g), life, align),
            6..=8 => Op::Free(usize::arbitrary(g)),
            9 => Op::Remalloc(usize::arbitrary(g), Size::arbitrary(g)),
            10 => Op::Recalloc(usize::arbitrary(g), Size::arbitrary(g)),
            _ => Op::Realloc(usize::arbitrary(g), Size::arbitrary(g)),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// malloc family: freed with the size, aligned to min(next_pow2(size), 4096).
    Malloc,
    /// Layout family with this align.
    Layout(usize),
}

#[derive(Debug)]
struct Live {
    ptr: *mut u8,
    size: usize,
    life: Life,
    kind: Kind,
    id: u64,
}

fn pattern(id: u64, i: usize) -> u8 {
    (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u8 ^ (i as u8)
}

fn fill(a: &Live) {
    for i in 0..a.size {
        // SAFETY: a.ptr holds a.size bytes.
        unsafe { a.ptr.add(i).write(pattern(a.id, i)) };
    }
}

fn check(a: &Live, upto: usize) {
    for i in 0..upto.min(a.size) {
        // SAFETY: a.ptr holds a.size bytes.
        let got = unsafe { a.ptr.add(i).read() };
        assert_eq!(got, pattern(a.id, i), "pattern of {a:?} broken at byte {i}");
    }
}

fn check_zero(p: *mut u8, from: usize, to: usize) {
    for i in from..to {
        // SAFETY: p holds `to` bytes.
        assert_eq!(
            unsafe { p.add(i).read() },
            0,
            "byte {i} of {p:?} not zeroed"
        );
    }
}

fn expected_align(kind: Kind, size: usize) -> usize {
    match kind {
        Kind::Malloc => size.next_power_of_two().min(4096),
        Kind::Layout(a) => a,
    }
}

struct Model {
    a: Cohort<Life>,
    live: Vec<Live>,
    /// start -> end of every live non-empty allocation.
    ranges: BTreeMap<usize, usize>,
    next_id: u64,
}

impl Model {
    fn add(&mut self, ptr: *mut u8, size: usize, life: Life, kind: Kind, zeroed: bool) {
        assert!(!ptr.is_null(), "allocation of {size} B failed");
        assert_eq!(
            ptr as usize % expected_align(kind, size),
            0,
            "{kind:?} {size} B at {ptr:?}"
        );
        if size > 0 {
            let start = ptr as usize;
            if let Some((&s, &e)) = self.ranges.range(..start + size).next_back() {
                assert!(
                    e <= start || s >= start + size,
                    "[{start:#x}+{size}) overlaps [{s:#x},{e:#x})"
                );
            }
            self.ranges.insert(start, start + size);
        }
        if zeroed {
            check_zero(ptr, 0, size);
        }
        self.next_id += 1;
        let a = Live {
            ptr,
            size,
            life,
            kind,
            id: self.next_id,
        };
        fill(&a);
        self.live.push(a);
    }

    fn take(&mut self, i: usize) -> Option<Live> {
        if self.live.is_empty() {
            return None;
        }
        let a = self.live.swap_remove(i % self.live.len());
        check(&a, a.size);
        if a.size > 0 {
            self.ranges.remove(&(a.ptr as usize));
        }
        Some(a)
    }

    fn free(&mut self, a: Live) {
        // SAFETY: a is live, with the size, life and kind it was allocated with.
        unsafe {
            match a.kind {
                Kind::Malloc => self.a.free(a.ptr, a.size, a.life),
                Kind::Layout(al) => {
                    self.a
                        .dealloc(a.ptr, Layout::from_size_align(a.size, al).unwrap(), a.life)
                }
            }
        }
    }

    fn resize(&mut self, i: usize, new: usize, zero: bool, layout: bool) {
        let Some(a) = self.take(i) else { return };
        let (p, kind) = match (a.kind, layout) {
            (Kind::Layout(al), true) => {
                let l = Layout::from_size_align(a.size, al).unwrap();
                // SAFETY: a is live with this layout.
                (unsafe { self.a.realloc(a.ptr, l, new, a.life) }, a.kind)
            }
            (Kind::Malloc, false) if zero => {
                // SAFETY: a is live, from the malloc family.
                (
                    unsafe { self.a.recalloc(a.ptr, a.size, new, a.life) },
                    Kind::Malloc,
                )
            }
            (Kind::Malloc, false) => {
                // SAFETY: as above.
                (
                    unsafe { self.a.remalloc(a.ptr, a.size, new, a.life) },
                    Kind::Malloc,
                )
            }
            _ => {
                // The op does not apply to this allocation's family: put it back.
                self.ranges.insert(a.ptr as usize, a.ptr as usize + a.size);
                self.live.push(a);
                return;
            }
        };
        assert!(!p.is_null());
        // The kept prefix survived the move.
        let kept = Live { ptr: p, ..a };
        check(
            &Live {
                size: kept.size.min(new),
                ..kept
            },
            new,
        );
        if zero && new > a.size {
            check_zero(p, a.size, new);
        }
        self.add(p, new, a.life, kind, false);
    }

    fn run(&mut self, op: &Op) {
        match *op {
            Op::Malloc(Size(s), l) => {
                let p = self.a.malloc(s, LIVES[l as usize]);
                self.add(p, s, LIVES[l as usize], Kind::Malloc, false);
            }
            Op::Calloc(Size(s), l) => {
                let p = self.a.calloc(s, LIVES[l as usize]);
                self.add(p, s, LIVES[l as usize], Kind::Malloc, true);
            }
            Op::Alloc(Size(s), l, al) | Op::AllocZeroed(Size(s), l, al) => {
                let zero = matches!(op, Op::AllocZeroed(..));
                let layout = Layout::from_size_align(s, 1 << al).unwrap();
                let life = LIVES[l as usize];
                let p = if zero {
                    self.a.alloc_zeroed(layout, life)
                } else {
                    self.a.alloc(layout, life)
                };
                self.add(p, s, life, Kind::Layout(1 << al), zero);
            }
            Op::Free(i) => {
                if let Some(a) = self.take(i) {
                    self.free(a);
                }
            }
            Op::Remalloc(i, Size(s)) => self.resize(i, s, false, false),
            Op::Recalloc(i, Size(s)) => self.resize(i, s, true, false),
            Op::Realloc(i, Size(s)) => self.resize(i, s, false, true),
        }
    }
}

fn run_model(ops: Vec<Op>) -> bool {
    let mut m = Model {
        a: Cohort::new(),
        live: Vec::new(),
        ranges: BTreeMap::new(),
        next_id: 0,
    };
    for op in &ops {
        m.run(op);
    }
    // Everything still live is intact; free it in the model's order.
    while let Some(a) = m.take(0) {
        m.free(a);
    }
    let mut blocks_with_live = 0;
    m.a.for_each_block(|b| blocks_with_live += (b.live > 0) as usize);
    assert_eq!(
        blocks_with_live, 0,
        "a block still counts live slots after every free"
    );
    true
}

#[test]
fn random_operations_match_the_model() {
    QuickCheck::new()
        .tests(200)
        .rng(Gen::new(400))
        .quickcheck(run_model as fn(Vec<Op>) -> bool);
}

#[test]
fn long_sequences_with_churn() {
    // Longer sequences reach block reuse, full blocks and empty-block return.
    QuickCheck::new()
        .tests(8)
        .rng(Gen::new(6000))
        .quickcheck(run_model as fn(Vec<Op>) -> bool);
}
