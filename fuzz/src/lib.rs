//! What the fuzz targets share: the lifetime classes, decoders from fuzz input to sizes and
//! alignments, the byte pattern every live object carries, a model of what is live, and the
//! single-threaded operation interpreter (targets `api` and `oom`).
//!
//! Only correct usage is generated: every free, resize and release passes what the API's
//! contract asks (a size in the usable range, the allocation's lifetime class and align),
//! so any panic is a defect of the allocator, or of this harness.
//!
//! Checks, beside the allocator's own (checked mode is on in cargo fuzz's default build):
//! every new allocation is aligned as promised, non-null unless memory may run out, and
//! overlaps no live object; zeroed forms read zero; every live object keeps its pattern
//! until it is freed, resized or released (checked then, and after every release, scope and
//! compact); a release frees exactly what its contract says (the model counts what it
//! expects) and leaves the rest intact; `stats()` and `verify()` count what the model
//! holds; at the end everything is freed and `is_empty()` must hold.

use allocator_api2::alloc::{AllocError, Allocator};
use allocator_api2::boxed::Box as HBox;
use allocator_api2::vec::Vec as HVec;
use arbitrary::{Arbitrary, Unstructured};
use cohort::class::{class_of, malloc_align, CLASSES, CLASS_COUNT, MAX_SMALL};
use cohort::{ClassHandle, Cohort, Join};
use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;
use std::ptr::NonNull;

cohort::lifetime_classes! {
    /// The fuzzed lifetime classes.
    pub enum Life { A, B, C }
}

/// Every lifetime class, by index.
pub const LIVES: [Life; 3] = [Life::A, Life::B, Life::C];

/// The lifetime class a fuzz byte names.
pub fn life(i: u8) -> Life {
    LIVES[i as usize % LIVES.len()]
}

/// A request size decoded from the input: zero, the tiny classes, every small class (with
/// class and page boundaries favoured), and large sizes up to about 3.3 MiB (rarely above
/// 256 KiB: every byte of a live object is written and checked).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Size {
    pick: u8,
    raw: u32,
}

impl Size {
    /// The size in bytes.
    pub fn get(self) -> usize {
        let r = self.raw as usize;
        match self.pick % 32 {
            0 | 1 => 0,
            2 | 3 => 1 + r % 2,
            4..=11 => 1 + r % 128,
            12..=15 => 1 + r % 1024,
            16..=19 => 1 + r % MAX_SMALL,
            // A class's stride, one below or one above.
            20 | 21 => (CLASSES[r % CLASS_COUNT].stride as usize + (r >> 16) % 3).saturating_sub(1),
            22 => MAX_SMALL - 1 + r % 3,
            23..=27 => MAX_SMALL + r % (240 << 10),
            28 => (256 << 10) + r % (3 << 20),
            // Around a page multiple.
            _ => ((1 + r % 64) << 12) - 1 + (r >> 8) % 3,
        }
    }
}

/// An alignment decoded from the input: 1 B to 64 KiB.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Align(u8);

impl Align {
    /// The alignment in bytes.
    pub fn get(self) -> usize {
        1 << (self.0 % 17)
    }
}

// ---- Files of the region targets ----

/// A file `cohort-fuzz-NAME-PID` in a RAM-backed folder when there is one (`/dev/shm`),
/// else in the temporary directory.
pub fn scratch_file(name: &str) -> std::path::PathBuf {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("cohort-fuzz-{name}-{}", std::process::id()))
}

// ---- Switches for a run ----

/// Whether checks or operations tagged `tag` are switched off for this run: the
/// comma-separated tags of `COHORT_FUZZ_SKIP` (to fuzz past a known, unfixed defect; the
/// tags are listed in `.ci/fuzz.sh`). Empty by default: everything runs.
pub fn skip(tag: &str) -> bool {
    static TAGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    TAGS.get_or_init(|| {
        std::env::var("COHORT_FUZZ_SKIP")
            .unwrap_or_default()
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect()
    })
    .iter()
    .any(|t| t == tag)
}

/// Whether `COHORT_FUZZ_TRACE` is set: every operation is printed before it runs (to
/// read what a crashing input does).
pub fn tracing() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("COHORT_FUZZ_TRACE").is_some())
}

// ---- The pattern ----

// The pattern of object `id`: its first 8 bytes are `id` (little-endian), then byte `i` is
// `TABLE[phase(id) + i % PERIOD]`, a table of random bytes repeated with a period of 4 KiB
// from a phase the id picks. Writes and checks are copies and comparisons of whole chunks
// (memcpy, bcmp): the fuzzer's comparison tracing would otherwise cost a call per byte.

const PERIOD: usize = 4096;

fn table() -> &'static [u8; 2 * PERIOD] {
    static TABLE: std::sync::OnceLock<[u8; 2 * PERIOD]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        std::array::from_fn(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
    })
}

fn phase(id: u64) -> usize {
    (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52) as usize % PERIOD
}

/// Byte `i` of object `id`'s pattern.
fn pattern_byte(id: u64, i: usize) -> u8 {
    if i < 8 {
        id.to_le_bytes()[i]
    } else {
        table()[phase(id) + i % PERIOD]
    }
}

/// Calls `f(offset, expected bytes)` over `len` bytes of object `id`'s pattern, in pieces.
fn pieces(len: usize, id: u64, mut f: impl FnMut(usize, &[u8]) -> bool) -> bool {
    let head = id.to_le_bytes();
    let n = len.min(8);
    if !f(0, &head[..n]) {
        return false;
    }
    let (t, ph) = (table(), phase(id));
    let mut at = n;
    while at < len {
        let from = ph + at % PERIOD;
        let k = (len - at).min(ph + PERIOD - from);
        if !f(at, &t[from..from + k]) {
            return false;
        }
        at += k;
    }
    true
}

/// Writes object `id`'s pattern over `len` bytes at `p`.
///
/// # Safety
/// `p` is valid for `len` bytes of writes.
pub unsafe fn fill(p: *mut u8, len: usize, id: u64) {
    pieces(len, id, |at, want| {
        // SAFETY: inside the caller's range; the table is not the object.
        unsafe { std::ptr::copy_nonoverlapping(want.as_ptr(), p.add(at), want.len()) };
        true
    });
}

/// The first byte of `len` at `p` that differs from object `id`'s pattern.
///
/// # Safety
/// `p` is valid for `len` bytes of reads, all initialised.
pub unsafe fn first_bad(p: *const u8, len: usize, id: u64) -> Option<usize> {
    if len == 0 {
        return None;
    }
    // SAFETY: the caller's range.
    let got = unsafe { std::slice::from_raw_parts(p, len) };
    if pieces(len, id, |at, want| got[at..at + want.len()] == *want) {
        return None;
    }
    (0..len).find(|&i| got[i] != pattern_byte(id, i))
}

/// The first non-zero byte in `from..to` at `p`.
///
/// # Safety
/// `p` is valid for `to` bytes of reads, all initialised.
pub unsafe fn first_nonzero(p: *const u8, from: usize, to: usize) -> Option<usize> {
    static ZEROS: [u8; PERIOD] = [0; PERIOD];
    if from >= to {
        return None;
    }
    // SAFETY: the caller's range, initialised.
    let bytes = unsafe { std::slice::from_raw_parts(p.add(from), to - from) };
    let mut at = from;
    for chunk in bytes.chunks(PERIOD) {
        if *chunk != ZEROS[..chunk.len()] {
            return chunk.iter().position(|&b| b != 0).map(|i| at + i);
        }
        at += chunk.len();
    }
    None
}

/// Element `k` of collection `id`.
fn word(id: u64, k: usize) -> u64 {
    id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (k as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)
}

// ---- The model ----

/// How an object was allocated, which says how it may be freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The malloc family: freed with a size, aligned to `malloc_align(size)`.
    Malloc,
    /// The `Layout` forms (or a handle, or `GlobalAlloc` in class A), with this align.
    Layout(usize),
}

impl Kind {
    /// The align a request of `size` of this kind has.
    pub fn align(self, size: usize) -> usize {
        match self {
            Kind::Malloc => malloc_align(size),
            Kind::Layout(a) => a,
        }
    }
}

/// Which heap made an object (what `release_class` decides by).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A thread's own heap (the thread's index in the target).
    Thread(usize),
    /// An explicit join, by serial number.
    Join(u64),
}

/// A live object.
#[derive(Clone, Copy, Debug)]
pub struct Obj {
    /// Where it is.
    pub ptr: *mut u8,
    /// The size asked for: the pattern covers these bytes.
    pub size: usize,
    /// The usable size: any size from `size` to it may be given back.
    pub usable: usize,
    /// How it was allocated.
    pub kind: Kind,
    /// Its lifetime class.
    pub life: Life,
    /// Its pattern's seed.
    pub id: u64,
    /// The heap that made it.
    pub origin: Origin,
}

// SAFETY: an Obj is a record of an allocation; the threads target hands it between threads
// the way a program hands the allocation itself.
unsafe impl Send for Obj {}

impl Obj {
    /// The align its requests have.
    pub fn align(&self) -> usize {
        self.kind.align(self.size)
    }

    /// Its size class, `None` when large or of size 0.
    pub fn class(&self) -> Option<usize> {
        if self.size == 0 {
            return None;
        }
        class_of(self.size, self.align())
    }

    /// An allocation outside a small block: a medium run or a large allocation.
    pub fn is_large(&self) -> bool {
        self.size > 0 && self.class().is_none()
    }

    /// A slot of a small block.
    pub fn is_small(&self) -> bool {
        self.class().is_some()
    }

    /// A slot of a tiny (1- or 2-byte) class.
    pub fn is_tiny(&self) -> bool {
        self.class().is_some_and(|c| CLASSES[c].is_tiny())
    }

    /// A size to give back: from `size` to `usable`, as `slack` picks.
    pub fn fit_size(&self, slack: u32) -> usize {
        self.size + slack as usize % (self.usable - self.size + 1)
    }

    /// The layout to give back with size `size`.
    pub fn layout(&self, size: usize) -> Layout {
        Layout::from_size_align(size, self.align()).expect("a valid layout")
    }

    /// Panics unless the object still holds its pattern.
    pub fn check(&self, when: &str) {
        // SAFETY: a live object holds `size` bytes, written with its pattern.
        if let Some(at) = unsafe { first_bad(self.ptr, self.size, self.id) } {
            panic!(
                "corruption {when}: byte {at} of live object {self:?} (block {:#x}) changed",
                self.ptr as usize & !(2usize << 20).wrapping_sub(1)
            );
        }
    }
}

/// What the target expects to be live.
#[derive(Default)]
pub struct Model {
    /// Live objects the model tracks (handles' collections are tracked by [`Borrowed`]).
    pub objs: Vec<Obj>,
    /// Start -> (end, id) of every live object of non-zero size: the overlap check.
    ranges: BTreeMap<usize, (usize, u64)>,
    /// Per lifetime class: objects that a release may or may not have freed (a class
    /// released while an explicit join holds blocks of it). They are not touched again
    /// and cleared by the next release of the class with no join held.
    pub unknown: [usize; 3],
    next_id: u64,
    /// Bytes of the live objects.
    pub bytes: usize,
    /// Join serial numbers, never reused in an input.
    next_join: u64,
}

impl Model {
    /// A fresh pattern seed.
    pub fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Records a new allocation after checking its alignment, its zeroing when `zeroed`
    /// and that it overlaps nothing live; writes its pattern.
    pub fn admit(&mut self, o: Obj, zeroed: bool, what: &str) {
        assert!(!o.ptr.is_null(), "{what}: admit a null pointer");
        assert_eq!(
            o.ptr as usize % o.align(),
            0,
            "{what}: {o:?} is not aligned to {}",
            o.align()
        );
        assert!(
            o.usable >= o.size,
            "{what}: usable size below the size: {o:?}"
        );
        if zeroed {
            // SAFETY: a fresh allocation of `size` bytes.
            if let Some(at) = unsafe { first_nonzero(o.ptr, 0, o.size) } {
                panic!("{what}: byte {at} of zeroed {o:?} is not zero");
            }
        }
        self.insert_range(&o, what);
        // SAFETY: a fresh allocation of `size` bytes, ours.
        unsafe { fill(o.ptr, o.size, o.id) };
        self.bytes += o.size;
        self.objs.push(o);
    }

    fn insert_range(&mut self, o: &Obj, what: &str) {
        if o.size == 0 {
            return;
        }
        let (start, end) = (o.ptr as usize, o.ptr as usize + o.size);
        if let Some((&s, &(e, id))) = self.ranges.range(..end).next_back() {
            assert!(
                e <= start,
                "{what}: new {o:?} overlaps live object {id} at {s:#x}..{e:#x}"
            );
        }
        self.ranges.insert(start, (end, o.id));
    }

    /// Takes object `i` out of the model (it is being freed, resized or released).
    pub fn take(&mut self, i: usize) -> Obj {
        let o = self.objs.swap_remove(i);
        if o.size > 0 {
            self.ranges.remove(&(o.ptr as usize));
        }
        self.bytes -= o.size;
        o
    }

    /// Puts back an object taken out whose free or resize failed (out of memory).
    pub fn put_back(&mut self, o: Obj, what: &str) {
        o.check(what);
        self.insert_range(&o, what);
        self.bytes += o.size;
        self.objs.push(o);
    }

    /// The index of the object `pick` names, if any is live.
    pub fn pick(&self, pick: u16) -> Option<usize> {
        (!self.objs.is_empty()).then(|| pick as usize % self.objs.len())
    }

    /// Checks every live object's pattern.
    pub fn check_all(&self, when: &str) {
        for o in &self.objs {
            o.check(when);
        }
    }

    /// Checks every live pattern: the model's objects and the collections `b` holds.
    pub fn check_held(&self, b: &Borrowed<'_>, when: &str) {
        self.check_all(when);
        b.check_all(when);
    }

    /// `stats()` and `verify()` against the model and the collections `b` holds.
    pub fn bookkeeping(&self, c: &Cohort<Life>, b: &Borrowed<'_>, when: &str) {
        let (ms, ml) = self.counts(None);
        let (bs, bl) = b.counts(None);
        check_bookkeeping(c, ms + bs, ml + bl, self.unknown.iter().sum(), when);
    }

    /// A fresh join serial number.
    pub fn new_join(&mut self) -> u64 {
        self.next_join += 1;
        self.next_join
    }

    /// Live (small, large) objects, in `life` or in all classes.
    pub fn counts(&self, life: Option<Life>) -> (usize, usize) {
        let of = |o: &&Obj| life.is_none_or(|l| o.life == l);
        let small = self.objs.iter().filter(of).filter(|o| o.is_small()).count();
        let large = self.objs.iter().filter(of).filter(|o| o.is_large()).count();
        (small, large)
    }
}

/// Checks `stats()` against what is expected live, and `verify()` (with `exclusive`: no
/// other thread uses the allocator). Counts are exact unless some objects are `unknown`.
pub fn check_bookkeeping(c: &Cohort<Life>, small: usize, large: usize, unknown: usize, when: &str) {
    let s = c.stats();
    if unknown == 0 {
        assert_eq!(s.small.live, small, "{when}: stats() live small objects");
    } else {
        assert!(
            s.small.live >= small,
            "{when}: stats() counts {} < {small}",
            s.small.live
        );
    }
    // The model's "large" is every allocation outside a small block: medium runs (16 KiB
    // up to 1 MiB, counted apart by stats) and large allocations.
    assert_eq!(
        s.medium_allocations + s.large_allocations,
        large,
        "{when}: stats() medium and large allocations"
    );
    for h in &s.heads {
        assert!(h.live <= h.capacity, "{when}: stats() head {h:?}");
    }
    // SAFETY: single-threaded callers only (the threads target calls it between rounds).
    match unsafe { c.verify() } {
        // verify counts a medium block's live runs among its live slots.
        Ok(v) if unknown == 0 => assert_eq!(
            v.live,
            small + s.medium_allocations,
            "{when}: verify() live slots and medium runs"
        ),
        Ok(_) => {}
        Err(e) => panic!("{when}: verify: {e}"),
    }
}

// ---- Collections on handles ----

type Handle<'c> = ClassHandle<'c, Life>;

/// A boxed value of one of a few sizes (1, 32 and 3000 bytes).
enum Boxed<'c> {
    Byte(HBox<u8, Handle<'c>>),
    Words(HBox<[u64; 4], Handle<'c>>),
    Page(HBox<[u8; 3000], Handle<'c>>),
}

struct TrackedBox<'c> {
    b: Boxed<'c>,
    id: u64,
    life: Life,
    origin: Origin,
}

impl TrackedBox<'_> {
    fn check(&self, when: &str) {
        let ok = match &self.b {
            Boxed::Byte(b) => **b == self.id as u8,
            Boxed::Words(b) => (0..4).all(|k| b[k] == word(self.id, k)),
            // SAFETY: 3000 bytes of the box.
            Boxed::Page(b) => unsafe { first_bad(b.as_ptr(), 3000, self.id) }.is_none(),
        };
        assert!(
            ok,
            "corruption {when}: box {} in class {:?} changed",
            self.id, self.life
        );
    }
}

struct TrackedVec<'c> {
    v: HVec<u64, Handle<'c>>,
    id: u64,
    life: Life,
    /// The heap that made its buffer (the last thread that moved it).
    origin: Origin,
}

impl TrackedVec<'_> {
    fn check(&self, when: &str) {
        if let Some(k) = (0..self.v.len()).find(|&k| self.v[k] != word(self.id, k)) {
            panic!(
                "corruption {when}: element {k} of vec {} (capacity {}, class {:?}) changed",
                self.id,
                self.v.capacity(),
                self.life
            );
        }
    }

    fn large(&self) -> bool {
        self.v.capacity() > 0 && class_of(self.v.capacity() * 8, 8).is_none()
    }
}

/// What borrows the allocator: explicit joins and handle collections. Dropped (the
/// collections freed after their check, the joins left) before a `scope`, which needs the
/// allocator exclusively, and at the end of an input.
#[derive(Default)]
pub struct Borrowed<'c> {
    joins: Vec<(u64, Join<'c, Life>)>,
    vecs: Vec<TrackedVec<'c>>,
    boxes: Vec<TrackedBox<'c>>,
}

impl<'c> Borrowed<'c> {
    /// Checks every collection.
    pub fn check_all(&self, when: &str) {
        self.vecs.iter().for_each(|v| v.check(when));
        self.boxes.iter().for_each(|b| b.check(when));
    }

    /// Live (small, large) allocations of the collections, in `life` or in all classes.
    pub fn counts(&self, life: Option<Life>) -> (usize, usize) {
        let of = |l: Life| life.is_none_or(|x| x == l);
        let vecs = self
            .vecs
            .iter()
            .filter(|v| of(v.life) && v.v.capacity() > 0);
        let large = vecs.clone().filter(|v| v.large()).count();
        let small = vecs.count() - large + self.boxes.iter().filter(|b| of(b.life)).count();
        (small, large)
    }

    /// Settles the collections of `life` before a release: those `fate` says are freed
    /// or unknown are forgotten (their memory is, or may be, freed by the release). Returns
    /// the (small, large) allocations of the freed ones and the count of unknown ones.
    pub fn settle(
        &mut self,
        life: Life,
        fate: impl Fn(Origin, bool) -> Fate,
    ) -> (usize, usize, usize) {
        let (mut small, mut large, mut unknown) = (0, 0, 0);
        let mut count = |f: Fate, is_large: bool| match f {
            Fate::Freed if is_large => large += 1,
            Fate::Freed => small += 1,
            Fate::Unknown => unknown += 1,
            Fate::Kept => {}
        };
        let mut vecs = Vec::new();
        for v in std::mem::take(&mut self.vecs) {
            if v.life != life || v.v.capacity() == 0 {
                vecs.push(v);
                continue;
            }
            v.check("before a release");
            let tiny = false; // 8-byte elements: never a tiny class
            let f = fate(v.origin, tiny);
            count(f, v.large());
            match f {
                Fate::Kept => vecs.push(v),
                _ => std::mem::forget(v.v),
            }
        }
        self.vecs = vecs;
        let mut boxes = Vec::new();
        for b in std::mem::take(&mut self.boxes) {
            if b.life != life {
                boxes.push(b);
                continue;
            }
            b.check("before a release");
            let f = fate(b.origin, matches!(b.b, Boxed::Byte(_)));
            count(f, false);
            match f {
                Fate::Kept => boxes.push(b),
                _ => std::mem::forget(b.b),
            }
        }
        self.boxes = boxes;
        (small, large, unknown)
    }

    /// Forgets every collection of `life` (a scope released them).
    fn forget_life(&mut self, life: Life) {
        self.settle(life, |_, _| Fate::Freed);
    }

    /// Frees every collection (after its check) and leaves every join.
    pub fn finish(mut self) {
        self.check_all("at the end");
        self.vecs.clear();
        self.boxes.clear();
        self.joins.clear();
    }

    /// The serial numbers of the joins held.
    pub fn held_joins(&self) -> Vec<u64> {
        self.joins.iter().map(|j| j.0).collect()
    }

    fn join(&self, pick: u8) -> Option<&(u64, Join<'c, Life>)> {
        (!self.joins.is_empty()).then(|| &self.joins[pick as usize % self.joins.len()])
    }
}

// ---- Operations ----

/// One operation of the single-threaded targets. Indices (`pick`) select among what is
/// live, modulo its count; operations on nothing are skipped.
#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    /// `malloc`, `calloc` (`zeroed`) or `malloc_at_least` (`at_least`).
    Malloc {
        size: Size,
        life: u8,
        zeroed: bool,
        at_least: bool,
    },
    /// `alloc` or `alloc_zeroed`; with `global`, a round trip through `GlobalAlloc` (its
    /// hidden global class: alloc or alloc_zeroed, checked, dealloc), never a kept object.
    Alloc {
        size: Size,
        align: Align,
        life: u8,
        zeroed: bool,
        global: bool,
    },
    /// An allocator handle's `allocate` / `allocate_zeroed`.
    HandleAlloc {
        size: Size,
        align: Align,
        life: u8,
        zeroed: bool,
    },
    /// `count * 4 + 1` mallocs (or `alloc`s with `align`) of one size: fills blocks.
    Many {
        size: Size,
        align: Align,
        life: u8,
        count: u8,
        layout: bool,
    },
    /// Frees an object through the API `how` picks among those its kind allows.
    Free { pick: u16, slack: u32, how: u8 },
    /// Frees `count` objects, every `step`-th.
    FreeMany {
        pick: u16,
        count: u8,
        step: u8,
        slack: u32,
    },
    /// `remalloc` / `recalloc` (malloc kind) or `realloc`. (`global` is unused since
    /// `GlobalAlloc` allocates in the hidden global class, where no kept object lies; kept so
    /// that the corpus decodes as before.)
    Resize {
        pick: u16,
        slack: u32,
        size: Size,
        zeroed: bool,
        global: bool,
    },
    /// A handle's `grow`, `grow_zeroed` or `shrink`, to another align maybe.
    HandleResize {
        pick: u16,
        slack: u32,
        size: Size,
        align: Align,
        zeroed: bool,
        keep_align: bool,
    },
    /// A request too large for any address space: must return null and change nothing.
    Huge {
        which: u8,
        how: u8,
        pick: u16,
        life: u8,
    },
    /// A new `Vec<u64>` on a handle.
    VecNew { life: u8, capacity: u8 },
    /// Pushes `n` elements (`try_reserve` first).
    VecPush { pick: u8, n: u16 },
    /// Truncates to `keep` elements and shrinks the capacity.
    VecShrink { pick: u8, keep: u16 },
    /// Drops a vec.
    VecDrop { pick: u8 },
    /// A new box on a handle.
    BoxNew { life: u8, kind: u8 },
    /// Drops a box.
    BoxDrop { pick: u8 },
    /// `Cohort::join(group)` (at most three held).
    JoinNew { group: u8 },
    /// Leaves a join.
    JoinLeave { pick: u8 },
    /// `Join::malloc` / `calloc`, or `Join::alloc` when `layout`.
    JoinAlloc {
        pick: u8,
        size: Size,
        align: Align,
        life: u8,
        zeroed: bool,
        layout: bool,
    },
    /// `release_class`; unless `keep_joins`, every join is left first.
    Release { life: u8, keep_joins: bool },
    /// `scope(life, ..)` over the next `len % 32` operations (skipped when the class has
    /// live objects, or nested).
    Scope { life: u8, len: u8 },
    /// A second allocator beside the first: `n % 16 + 1` mallocs in each, alternating,
    /// half of the second's freed, then the second dropped with the rest live.
    Second { n: u8, size: Size, life: u8 },
    /// `compact()`.
    Compact,
    /// Every pattern, `stats()` and `verify()`.
    Check,
}

/// Limits of one target.
pub struct Config {
    /// Whether allocation may return null (a small reservation).
    pub may_fail: bool,
    /// Requests above this are reduced modulo it.
    pub max_size: usize,
    /// Live bytes the model allows; allocations past it are skipped.
    pub budget: usize,
}

/// The interpreter of [`Op`]s on one allocator (single-threaded).
pub struct Runner<'m> {
    /// The model.
    pub m: &'m mut Model,
    /// The limits.
    pub cfg: &'m Config,
    /// The thread running the operations (its `Origin::Thread` number).
    pub me: usize,
    /// The threads alive now (`me` among them when it is a target's thread).
    pub alive: Vec<usize>,
    /// Small allocations the collections hold (set at the start of each operation).
    pub collections_small: usize,
    /// Large allocations held by the borrowed collections (they take units of a
    /// reservation too).
    pub collections_large: usize,
}

/// What a release does to an allocation of its class, by its contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Freed: made by the releasing thread, by a join left before, or large.
    Freed,
    /// Left alone: made by another live thread, or by a join held across the release.
    Kept,
    /// Either: made by an exited thread (whose heap another thread may have adopted since)
    /// or by a join left before a release that kept joins (same), or tiny in a held join.
    Unknown,
}

fn huge_sizes() -> [usize; 6] {
    [
        usize::MAX,
        usize::MAX - 4095,
        (1 << 63) + 1,
        isize::MAX as usize,
        1 << 62,
        1 << 48,
    ]
}

impl<'m> Runner<'m> {
    /// A runner for thread `me` of the threads `alive`.
    pub fn new(m: &'m mut Model, cfg: &'m Config, me: usize, alive: Vec<usize>) -> Self {
        Runner {
            m,
            cfg,
            me,
            alive,
            collections_small: 0,
            collections_large: 0,
        }
    }
}

impl Runner<'_> {
    fn size(&self, s: Size) -> usize {
        let s = s.get();
        if s > self.cfg.max_size {
            s % (self.cfg.max_size + 1)
        } else {
            s
        }
    }

    fn affordable(&self, size: usize) -> bool {
        self.m.bytes + size <= self.cfg.budget
    }

    /// The size `s` decodes to, when the live bytes allowed afford it (`None`: the
    /// operation is skipped).
    fn afford(&self, s: Size) -> Option<usize> {
        let size = self.size(s);
        self.affordable(size).then_some(size)
    }

    /// The record of a new allocation this thread made: `ptr` from a request of `size`
    /// bytes of `kind` in `life`, `usable` bytes usable, with a fresh pattern seed.
    fn made_here(
        &mut self,
        ptr: *mut u8,
        size: usize,
        usable: usize,
        kind: Kind,
        life: Life,
    ) -> Obj {
        Obj {
            ptr,
            size,
            usable,
            kind,
            life,
            id: self.m.new_id(),
            origin: Origin::Thread(self.me),
        }
    }

    /// Records a new allocation, or accepts a null when out of memory is possible.
    fn got(&mut self, o: Obj, zeroed: bool, what: &str) {
        if o.ptr.is_null() {
            assert!(
                self.cfg.may_fail,
                "{what}: null for {} bytes of {:?}",
                o.size, o.kind
            );
            self.null_is_justified(o.size, o.align(), what);
            return;
        }
        self.m.admit(o, zeroed, what);
    }

    /// With nothing live, a small request must not fail (empty blocks must be reclaimed
    /// before null is returned). Large allocations count: they take whole units of a
    /// reservation, which may leave no room for a block.
    fn null_is_justified(&self, size: usize, align: usize, what: &str) {
        let small = size > 0 && class_of(size, align).is_some();
        let (small_live, large_live) = self.m.counts(None);
        let nothing_live =
            small_live + large_live + self.collections_small + self.collections_large == 0
                && self.m.unknown == [0; 3];
        // (`join-oom`: a join's allocation does not reclaim the thread heap's empty blocks.)
        let known = skip("oom-empty") || (what.starts_with("join") && skip("join-oom"));
        if small && nothing_live && !known {
            panic!("{what}: null for a small request ({size} B, align {align}) with nothing live");
        }
    }

    /// Runs one operation.
    pub fn exec<'c>(&mut self, c: &'c Cohort<Life>, b: &mut Borrowed<'c>, op: &Op) {
        if tracing() {
            eprintln!("op {op:?}");
        }
        (self.collections_small, self.collections_large) = b.counts(None);
        match *op {
            Op::Malloc {
                size,
                life: l,
                zeroed,
                at_least,
            } => {
                let Some(size) = self.afford(size) else {
                    return;
                };
                let l = life(l);
                let (ptr, usable) = if at_least {
                    c.malloc_at_least(size, l)
                } else if zeroed {
                    (c.calloc(size, l), usable(c, size, malloc_align(size)))
                } else {
                    (c.malloc(size, l), usable(c, size, malloc_align(size)))
                };
                let o = self.made_here(ptr, size, usable, Kind::Malloc, l);
                self.got(o, zeroed && !at_least, "malloc");
            }
            Op::Alloc {
                size,
                align,
                life: l,
                zeroed,
                global,
            } => {
                let Some(size) = self.afford(size) else {
                    return;
                };
                let (align, l) = (align.get(), life(l));
                let layout = Layout::from_size_align(size, align).unwrap();
                if global && size > 0 {
                    // GlobalAlloc allocates in the allocator's hidden global class, which no
                    // call naming a `Life` reaches (a release of A must not free it): a
                    // round trip here, never a kept object.
                    // SAFETY: a non-zero size; the allocation is freed once, with its layout.
                    unsafe {
                        let p = if zeroed {
                            GlobalAlloc::alloc_zeroed(c, layout)
                        } else {
                            GlobalAlloc::alloc(c, layout)
                        };
                        if p.is_null() {
                            return;
                        }
                        assert_eq!(p as usize % align, 0, "GlobalAlloc::alloc alignment");
                        if zeroed {
                            let bytes = std::slice::from_raw_parts(p, size);
                            assert!(bytes.iter().all(|&b| b == 0), "GlobalAlloc::alloc_zeroed");
                        }
                        p.write_bytes(0xa5, size);
                        GlobalAlloc::dealloc(c, p, layout);
                    }
                    return;
                }
                let ptr = if zeroed {
                    c.alloc_zeroed(layout, l)
                } else {
                    c.alloc(layout, l)
                };
                let o = self.made_here(ptr, size, c.usable_size(layout), Kind::Layout(align), l);
                self.got(o, zeroed, "alloc");
            }
            Op::HandleAlloc {
                size,
                align,
                life: l,
                zeroed,
            } => {
                let Some(size) = self.afford(size) else {
                    return;
                };
                let (align, l) = (align.get(), life(l));
                let layout = Layout::from_size_align(size, align).unwrap();
                let h = c.handle(l);
                let r = if zeroed {
                    h.allocate_zeroed(layout)
                } else {
                    h.allocate(layout)
                };
                let (ptr, usable) = match r {
                    Ok(s) => (s.as_ptr().cast::<u8>(), s.len()),
                    Err(AllocError) => (std::ptr::null_mut(), 0),
                };
                if !ptr.is_null() {
                    assert_eq!(usable, c.usable_size(layout), "allocate: slice length");
                }
                let o = self.made_here(ptr, size, usable, Kind::Layout(align), l);
                self.got(o, zeroed, "handle allocate");
            }
            Op::Many {
                size,
                align,
                life: l,
                count,
                layout,
            } => {
                let (size, l) = (self.size(size), life(l));
                let kind = if layout {
                    Kind::Layout(align.get())
                } else {
                    Kind::Malloc
                };
                for _ in 0..count as usize * 4 + 1 {
                    if !self.affordable(size) {
                        return;
                    }
                    let a = kind.align(size);
                    let ptr = match kind {
                        Kind::Malloc => c.malloc(size, l),
                        Kind::Layout(_) => c.alloc(Layout::from_size_align(size, a).unwrap(), l),
                    };
                    let o = self.made_here(ptr, size, usable(c, size, a), kind, l);
                    let failed = ptr.is_null();
                    self.got(o, false, "many");
                    if failed {
                        return;
                    }
                }
            }
            Op::Free { pick, slack, how } => {
                if let Some(i) = self.m.pick(pick) {
                    let o = self.m.take(i);
                    free_obj(c, b, &o, slack, how);
                }
            }
            Op::FreeMany {
                pick,
                count,
                step,
                slack,
            } => {
                for k in 0..count as usize {
                    let Some(i) = self
                        .m
                        .pick(pick.wrapping_add((k * (step as usize + 1)) as u16))
                    else {
                        return;
                    };
                    let o = self.m.take(i);
                    free_obj(c, b, &o, slack, k as u8);
                }
            }
            Op::Resize {
                pick,
                slack,
                size,
                zeroed,
                global: _,
            } => {
                let Some(i) = self.m.pick(pick) else { return };
                let Some(new) = self.afford(size) else { return };
                let o = self.m.take(i);
                let fit = o.fit_size(slack);
                o.check("before a resize");
                // SAFETY: a live object of this allocator, given back with a fitting size.
                let q = unsafe {
                    match o.kind {
                        Kind::Malloc if zeroed => c.recalloc(o.ptr, fit, new, o.life),
                        Kind::Malloc => c.remalloc(o.ptr, fit, new, o.life),
                        Kind::Layout(_) => c.realloc(o.ptr, o.layout(fit), new, o.life),
                    }
                };
                self.resized(
                    c,
                    o,
                    fit,
                    q,
                    new,
                    o.kind,
                    zeroed && o.kind == Kind::Malloc,
                    "resize",
                );
            }
            Op::HandleResize {
                pick,
                slack,
                size,
                align,
                zeroed,
                keep_align,
            } => {
                let Some(i) = self.m.pick(pick) else { return };
                if !matches!(self.m.objs[i].kind, Kind::Layout(_)) {
                    return;
                }
                let Some(new) = self.afford(size) else { return };
                let o = self.m.take(i);
                let fit = o.fit_size(slack);
                o.check("before a handle resize");
                let align = if keep_align { o.align() } else { align.get() };
                let new_layout = Layout::from_size_align(new, align).unwrap();
                let h = c.handle(o.life);
                let p = NonNull::new(o.ptr).unwrap();
                // SAFETY: a live object of this allocator and class, with a fitting layout;
                // grow only grows, shrink only shrinks.
                let r = unsafe {
                    if new >= fit && zeroed {
                        h.grow_zeroed(p, o.layout(fit), new_layout)
                    } else if new >= fit {
                        h.grow(p, o.layout(fit), new_layout)
                    } else {
                        h.shrink(p, o.layout(fit), new_layout)
                    }
                };
                let q = match r {
                    Ok(s) => {
                        assert_eq!(
                            s.len(),
                            c.usable_size(new_layout),
                            "grow/shrink: slice length"
                        );
                        s.as_ptr().cast::<u8>()
                    }
                    Err(AllocError) => std::ptr::null_mut(),
                };
                if zeroed && new >= fit && !q.is_null() {
                    // Bytes past the old block's usable size are zero (grow_zeroed's contract).
                    // SAFETY: the new block holds `new` bytes.
                    if let Some(at) = unsafe { first_nonzero(q, o.usable.min(new), new) } {
                        panic!("grow_zeroed: byte {at} of {new} not zero (from {o:?})");
                    }
                }
                self.resized(
                    c,
                    o,
                    fit,
                    q,
                    new,
                    Kind::Layout(align),
                    false,
                    "handle resize",
                );
            }
            Op::Huge { .. } if skip("huge") => {}
            Op::Huge {
                which,
                how,
                pick,
                life: l,
            } => self.huge(c, b, which, how, pick, life(l)),
            Op::VecNew { life: l, capacity } => {
                if b.vecs.len() < 4 {
                    let mut v = HVec::new_in(c.handle(life(l)));
                    if v.try_reserve(capacity as usize).is_err() {
                        assert!(self.cfg.may_fail, "vec: try_reserve failed");
                    }
                    let id = self.m.new_id();
                    let origin = Origin::Thread(self.me);
                    b.vecs.push(TrackedVec {
                        v,
                        id,
                        life: life(l),
                        origin,
                    });
                }
            }
            Op::VecPush { pick, n } => {
                if b.vecs.is_empty() {
                    return;
                }
                let k = pick as usize % b.vecs.len();
                let t = &mut b.vecs[k];
                let n = (n as usize).min((1 << 15) - t.v.len());
                t.check("before a push");
                if t.v.try_reserve(n).is_err() {
                    assert!(self.cfg.may_fail, "vec: try_reserve({n}) failed");
                    t.check("after a failed reserve");
                    return;
                }
                let at = t.v.len();
                let before = t.v.as_ptr();
                t.v.extend((at..at + n).map(|i| word(t.id, i)));
                if t.v.as_ptr() != before {
                    t.origin = Origin::Thread(self.me);
                }
            }
            Op::VecShrink { pick, keep } => {
                // shrink_to_fit aborts when its allocation fails (it has no fallible form):
                // not where memory may run out.
                if b.vecs.is_empty() || self.cfg.may_fail {
                    return;
                }
                let k = pick as usize % b.vecs.len();
                let t = &mut b.vecs[k];
                t.check("before a shrink");
                t.v.truncate(keep as usize);
                let before = t.v.as_ptr();
                t.v.shrink_to_fit();
                if t.v.as_ptr() != before {
                    t.origin = Origin::Thread(self.me);
                }
                t.check("after a shrink");
            }
            Op::VecDrop { pick } => {
                if !b.vecs.is_empty() {
                    let t = b.vecs.swap_remove(pick as usize % b.vecs.len());
                    t.check("before a drop");
                }
            }
            Op::BoxNew { life: l, kind } => {
                if b.boxes.len() >= 16 {
                    return;
                }
                let (h, id) = (c.handle(life(l)), self.m.new_id());
                let boxed = match kind % 3 {
                    0 => HBox::try_new_in(id as u8, h).map(Boxed::Byte),
                    1 => {
                        HBox::try_new_in(std::array::from_fn(|k| word(id, k)), h).map(Boxed::Words)
                    }
                    _ => {
                        let mut page = [0u8; 3000];
                        // SAFETY: 3000 bytes.
                        unsafe { fill(page.as_mut_ptr(), 3000, id) };
                        HBox::try_new_in(page, h).map(Boxed::Page)
                    }
                };
                match boxed {
                    Ok(bx) => b.boxes.push(TrackedBox {
                        b: bx,
                        id,
                        life: life(l),
                        origin: Origin::Thread(self.me),
                    }),
                    Err(_) => assert!(self.cfg.may_fail, "box: allocation failed"),
                }
            }
            Op::BoxDrop { pick } => {
                if !b.boxes.is_empty() {
                    let t = b.boxes.swap_remove(pick as usize % b.boxes.len());
                    t.check("before a drop");
                }
            }
            Op::JoinNew { group } => {
                if b.joins.len() < 3 {
                    match c.join(group as usize % 4) {
                        Some(j) => b.joins.push((self.m.new_join(), j)),
                        None => assert!(self.cfg.may_fail, "join failed"),
                    }
                }
            }
            Op::JoinLeave { pick } => {
                if !b.joins.is_empty() {
                    let (_, j) = b.joins.swap_remove(pick as usize % b.joins.len());
                    j.leave();
                }
            }
            Op::JoinAlloc {
                pick,
                size,
                align,
                life: l,
                zeroed,
                layout,
            } => {
                let Some(&(serial, ref j)) = b.join(pick) else {
                    return;
                };
                let Some(size) = self.afford(size) else {
                    return;
                };
                let l = life(l);
                let (ptr, kind, zeroed) = if layout {
                    let a = align.get();
                    (
                        j.alloc(Layout::from_size_align(size, a).unwrap(), l),
                        Kind::Layout(a),
                        false,
                    )
                } else if zeroed {
                    (j.calloc(size, l), Kind::Malloc, true)
                } else {
                    (j.malloc(size, l), Kind::Malloc, false)
                };
                let o = Obj {
                    origin: Origin::Join(serial),
                    ..self.made_here(ptr, size, usable(c, size, kind.align(size)), kind, l)
                };
                self.got(o, zeroed, "join alloc");
            }
            Op::Release {
                life: l,
                keep_joins,
            } => self.release(c, b, life(l), keep_joins),
            Op::Scope { .. } => {} // run() handles scopes at the top level
            Op::Second { n, size, life: l } => {
                let (size, l) = (self.size(size).min(MAX_SMALL), life(l));
                let other: Cohort<Life> = Cohort::new();
                let mut theirs = Vec::new();
                for k in 0..n as usize % 16 + 1 {
                    let p = other.malloc(size, l);
                    assert!(!p.is_null(), "second instance: malloc({size}) null");
                    let id = self.m.new_id();
                    // SAFETY: a fresh allocation of `size` bytes.
                    unsafe { fill(p, size, id) };
                    theirs.push((p, id));
                    if !self.affordable(size) {
                        continue;
                    }
                    let ptr = c.malloc(size, l);
                    let usable = usable(c, size, malloc_align(size));
                    let o = Obj {
                        ptr,
                        size,
                        usable,
                        kind: Kind::Malloc,
                        life: l,
                        id: id + (1 << 40),
                        origin: Origin::Thread(self.me),
                    };
                    self.got(o, false, "malloc beside a second instance");
                    if k % 2 == 1 {
                        let (p, id) = theirs.swap_remove(k / 2 % theirs.len());
                        // SAFETY: a live allocation of `size` bytes of the other instance.
                        unsafe {
                            assert_eq!(
                                first_bad(p, size, id),
                                None,
                                "second instance: object changed"
                            );
                            other.free(p, size, l);
                        }
                    }
                }
                for &(p, id) in &theirs {
                    // SAFETY: live allocations of `size` bytes of the other instance.
                    assert_eq!(
                        unsafe { first_bad(p, size, id) },
                        None,
                        "second instance: object changed"
                    );
                }
                drop(other);
                self.m.check_all("after dropping a second instance");
            }
            Op::Compact => {
                c.compact();
                self.m.check_held(b, "after compact");
            }
            Op::Check => {
                self.m.check_held(b, "at a check");
                self.m.bookkeeping(c, b, "at a check");
            }
        }
    }

    /// After a resize of `o` (given back as `fit` bytes) to `new` bytes: `q` is the result.
    #[allow(clippy::too_many_arguments)]
    fn resized(
        &mut self,
        c: &Cohort<Life>,
        o: Obj,
        fit: usize,
        q: *mut u8,
        new: usize,
        kind: Kind,
        zeroed: bool,
        what: &str,
    ) {
        if q.is_null() {
            assert!(self.cfg.may_fail, "{what}: null resizing {o:?} to {new}");
            // The old allocation is still live (and counts as such for the check).
            self.m.put_back(o, "after a failed resize");
            self.null_is_justified(new, kind.align(new), what);
            return;
        }
        let kept = o.size.min(new);
        // SAFETY: the new allocation holds `new` bytes, the first `kept` copied.
        if let Some(at) = unsafe { first_bad(q, kept, o.id) } {
            panic!("{what}: byte {at} not carried over from {o:?} to {q:?} ({new} B)");
        }
        if zeroed && new > fit {
            // SAFETY: as above.
            if let Some(at) = unsafe { first_nonzero(q, fit, new) } {
                panic!("{what}: byte {at} of recalloc {o:?} -> {new} B not zero");
            }
        }
        let origin = if q == o.ptr {
            o.origin
        } else {
            Origin::Thread(self.me)
        };
        let n = Obj {
            ptr: q,
            size: new,
            usable: usable(c, new, kind.align(new)),
            kind,
            origin,
            ..o
        };
        self.m.admit(n, false, what);
    }

    fn huge(&mut self, c: &Cohort<Life>, b: &Borrowed<'_>, which: u8, how: u8, pick: u16, l: Life) {
        let size = huge_sizes()[which as usize % 6];
        let align = 1usize << (which % 17);
        // The largest size a Layout of `align` allows, or `size` when below.
        let lsize = size.min(isize::MAX as usize + 1 - align);
        let layout = Layout::from_size_align(lsize, align).unwrap();
        let null =
            |p: *mut u8, what: &str| assert!(p.is_null(), "{what} of {size} B returned {p:?}");
        match how % 8 {
            0 => null(c.malloc(size, l), "malloc"),
            1 => null(c.calloc(size, l), "calloc"),
            2 => assert_eq!(
                c.malloc_at_least(size, l),
                (std::ptr::null_mut(), 0),
                "malloc_at_least of {size} B"
            ),
            3 => null(c.alloc(layout, l), "alloc"),
            4 => null(c.alloc_zeroed(layout, l), "alloc_zeroed"),
            // SAFETY: a non-zero size.
            5 => null(
                unsafe { GlobalAlloc::alloc(c, layout) },
                "GlobalAlloc::alloc",
            ),
            6 => match b.join(which) {
                Some((_, j)) => null(j.malloc(size, l), "Join::malloc"),
                None => null(
                    c.handle(l)
                        .allocate(layout)
                        .map_or(std::ptr::null_mut(), |s| s.as_ptr().cast()),
                    "allocate",
                ),
            },
            _ => {
                let Some(i) = self.m.pick(pick) else { return };
                let o = self.m.objs[i];
                o.check("before a huge resize");
                let fit = o.size;
                // SAFETY: a live object, given back with its size.
                let q = unsafe {
                    match o.kind {
                        Kind::Malloc if which.is_multiple_of(2) => {
                            c.remalloc(o.ptr, fit, size, o.life)
                        }
                        Kind::Malloc => c.recalloc(o.ptr, fit, size, o.life),
                        Kind::Layout(a) => c.realloc(
                            o.ptr,
                            o.layout(fit),
                            size.min(isize::MAX as usize + 1 - a),
                            o.life,
                        ),
                    }
                };
                null(q, "resize");
                o.check("after a failed huge resize");
            }
        }
    }

    /// What a release by this thread does to an allocation from `origin`.
    pub fn fate(&self, origin: Origin, tiny: bool, held: &[u64], keep_joins: bool) -> Fate {
        match origin {
            Origin::Thread(t) if t == self.me => Fate::Freed,
            // (Tiny blocks are shared by all threads: with the `tiny-release` switch off, a
            // release may free other threads' tiny objects, issue 9 item 1.)
            Origin::Thread(t) if self.alive.contains(&t) && tiny && skip("tiny-release") => {
                Fate::Unknown
            }
            Origin::Thread(t) if self.alive.contains(&t) => Fate::Kept,
            Origin::Thread(_) => Fate::Unknown,
            Origin::Join(s) if keep_joins && held.contains(&s) && !tiny => Fate::Kept,
            Origin::Join(_) if keep_joins => Fate::Unknown,
            Origin::Join(_) => Fate::Freed,
        }
    }

    /// `release_class(l)`: frees what its contract says, and nothing else.
    pub fn release<'c>(
        &mut self,
        c: &'c Cohort<Life>,
        b: &mut Borrowed<'c>,
        l: Life,
        keep_joins: bool,
    ) {
        if !keep_joins {
            b.joins.clear();
        }
        let held: Vec<u64> = b.joins.iter().map(|j| j.0).collect();
        let unknown_before = self.m.unknown[l as usize];
        let (mut slots, mut large, unknown) =
            b.settle(l, |origin, tiny| self.fate(origin, tiny, &held, keep_joins));
        let mut unknown_now = unknown;
        let mut i = 0;
        while i < self.m.objs.len() {
            let o = self.m.objs[i];
            if o.life != l || o.size == 0 {
                i += 1;
                continue;
            }
            o.check("before a release");
            if o.is_large() {
                large += 1;
            } else {
                match self.fate(o.origin, o.is_tiny(), &held, keep_joins) {
                    Fate::Freed => slots += 1,
                    Fate::Kept => {
                        if tracing() {
                            eprintln!("release {l:?} keeps {o:?} (tiny: {})", o.is_tiny());
                        }
                        i += 1;
                        continue;
                    }
                    Fate::Unknown => unknown_now += 1,
                }
            }
            self.m.take(i);
        }
        self.m.unknown[l as usize] += unknown_now;
        if tracing() {
            eprintln!(
                "release {l:?}: expecting {slots} slots, {large} large, {unknown_now} unknown"
            );
        }
        // SAFETY: no other thread runs; every object the release may free was taken out of
        // the model and the collections it may free forgotten.
        let r = unsafe { c.release_class(l) };
        // The model's "large" is every allocation outside a small block: the release counts
        // medium runs apart from large mappings.
        assert_eq!(
            r.large + r.medium,
            large,
            "release_class({l:?}): medium and large allocations freed ({r:?})"
        );
        if unknown_before == 0 && unknown_now == 0 {
            assert_eq!(
                r.slots, slots,
                "release_class({l:?}): live slots freed ({r:?})"
            );
        }
        if !keep_joins && self.alive.iter().all(|&t| t == self.me) {
            self.m.unknown[l as usize] = 0;
        }
        self.m.check_held(b, "after a release");
        self.m.bookkeeping(c, b, "after a release");
    }
}

/// The usable size of a request of `size` bytes aligned to `align`.
pub fn usable(c: &Cohort<Life>, size: usize, align: usize) -> usize {
    c.usable_size(Layout::from_size_align(size, align).unwrap())
}

/// Frees object `o` (taken out of the model) through the API `how` picks among those its
/// kind allows, after checking its pattern.
pub fn free_obj(c: &Cohort<Life>, b: &Borrowed<'_>, o: &Obj, slack: u32, how: u8) {
    o.check("before a free");
    let fit = o.fit_size(slack);
    // SAFETY: a live object of this allocator, given back with a fitting size, its class
    // and (Layout kind) its align.
    unsafe {
        match (o.kind, how % 4, b.join(how / 4)) {
            (Kind::Malloc, 1, Some((_, j))) => j.free(o.ptr, fit, o.life),
            (Kind::Malloc, _, _) => c.free(o.ptr, fit, o.life),
            (Kind::Layout(_), 1, Some((_, j))) => j.dealloc(o.ptr, o.layout(fit), o.life),
            (Kind::Layout(_), 2, _) => {
                let p = NonNull::new(o.ptr).unwrap();
                c.handle(o.life).deallocate(p, o.layout(fit))
            }
            (Kind::Layout(_), _, _) => c.dealloc(o.ptr, o.layout(fit), o.life),
        }
    }
}

/// Runs one input of a single-threaded target on a fresh allocator (`reservation` bytes
/// when given): the operations, then everything freed and checked.
///
/// The operations run on a thread of their own, so that an input does not depend on what
/// earlier inputs left in the fuzzer thread's thread-locals (heaps of dropped instances);
/// [`Op::Second`] covers instances dropped while their thread lives on.
pub fn run(data: &[u8], cfg: &Config, reservation: Option<usize>) {
    let Ok(ops) = Vec::<Op>::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    std::thread::scope(|s| {
        s.spawn(|| run_ops(&ops, cfg, reservation));
    });
}

fn run_ops(ops: &[Op], cfg: &Config, reservation: Option<usize>) {
    let mut cohort: Cohort<Life> = match reservation {
        Some(bytes) => Cohort::with_reservation(bytes),
        None => Cohort::new(),
    };
    let mut m = Model::default();
    let mut at = 0;
    while at < ops.len() {
        // A stretch of operations up to the next scope.
        {
            let c = &cohort;
            let mut b = Borrowed::default();
            let mut r = Runner::new(&mut m, cfg, 0, vec![0]);
            while at < ops.len() && !matches!(ops[at], Op::Scope { .. }) {
                r.exec(c, &mut b, &ops[at]);
                at += 1;
            }
            b.finish();
        }
        let Some(Op::Scope { life: l, len }) = ops.get(at).cloned() else {
            break;
        };
        if tracing() {
            eprintln!("scope {:?} over {} ops", life(l), len % 32);
        }
        at += 1;
        let inner = &ops[at..(at + len as usize % 32).min(ops.len())];
        at += inner.len();
        let l = life(l);
        if m.objs.iter().any(|o| o.life == l && o.size > 0) || m.unknown[l as usize] > 0 {
            continue; // scope asks for a class with nothing live
        }
        cohort.scope_exclusive(l, |c, _h| {
            let mut b = Borrowed::default();
            let mut r = Runner::new(&mut m, cfg, 0, vec![0]);
            for op in inner {
                // A release of the scope's class inside it is allowed; a nested scope is not.
                r.exec(c, &mut b, op);
            }
            b.forget_life(l);
            b.finish();
        });
        // Everything of the class made in the scope is gone.
        m.objs.retain(|o| o.life != l || o.size == 0);
        let objs = std::mem::take(&mut m.objs);
        m.ranges.clear();
        m.bytes = 0;
        for o in objs {
            m.put_back(o, "after a scope");
        }
        m.unknown[l as usize] = 0;
        m.bookkeeping(&cohort, &Borrowed::default(), "after a scope");
    }
    finish(&cohort, &mut m);
}

/// The end of an input: everything checked and freed, released if unknown, then the
/// allocator must be empty and consistent.
pub fn finish(c: &Cohort<Life>, m: &mut Model) {
    m.bookkeeping(c, &Borrowed::default(), "at the end");
    let b = Borrowed::default();
    while let Some(i) = m.pick(0) {
        let o = m.take(i);
        free_obj(c, &b, &o, o.id as u32, (o.id >> 8) as u8);
    }
    for l in LIVES {
        if m.unknown[l as usize] > 0 {
            // SAFETY: nothing of the class is live in the model.
            unsafe { c.release_class(l) };
            m.unknown[l as usize] = 0;
        }
    }
    check_bookkeeping(c, 0, 0, 0, "after freeing everything");
    assert!(
        c.is_empty(),
        "not empty after freeing everything: {:?}",
        c.stats().small
    );
    c.compact();
    check_bookkeeping(c, 0, 0, 0, "after the last compact");
}
