//! Size classes and block geometry, computed at compile time.
//!
//! The bottom layer: it uses no other module of the crate.
//!
//! A **size class** is a slot stride. [`CLASSES`] lists them in increasing stride:
//!
//! - strides 1 and 2: *tiny* classes, whose slots cannot hold a 32-bit free-list link (see
//!   `tiny`);
//! - stride 4, then every multiple of 8 up to 1 KiB (exact fit);
//! - then eight classes per doubling (each at most 1/8 above the previous) up to
//!   [`MAX_SMALL`].
//!
//! A request (size, align) maps to the smallest class whose stride is at least the size and
//! a multiple of the align ([`class_of`]). Every class has its own block geometry
//! ([`Class`]) in a block of [`BLOCK_SIZE`] (2 MiB) bytes, the same for every class, which
//! keeps `block bytes / usable bytes` within the ratio contract ([`ratio_contract_limit`])
//! for every class. One block size for all classes means that any pointer into a block masks to
//! that block's own header, whatever size a free names: a wrong size is caught by the
//! header's key and never makes a free read user memory as a header.
//!
//! Invariants, checked by `const` assertions below (a bad table does not compile):
//!
//! - `first + capacity * stride == limit <= BLOCK_SIZE`
//! - `first >= HEADER_SIZE (+ run table for tiny classes)`, `first % slot_align == 0`,
//!   `stride % slot_align == 0`: every slot is aligned to `slot_align`, the largest power
//!   of two (at most 4096) dividing the stride.
//! - `block_size * LIMIT_DEN <= capacity * stride * ratio_contract_limit(stride)`: the ratio
//!   contract (invariant 1 of [`crate::design`]).
//! - strides are strictly increasing.
//! - `odd_inverse * (stride >> tz) == 1 (mod 2^32)`, `tz = stride.trailing_zeros()`:
//!   with `d = off - first (mod 2^32)`, `slot_index(off) = rotr32(d * odd_inverse, tz)`
//!   is `d / stride` when `stride` divides `d` and `d < capacity * stride`, and at least
//!   `capacity` otherwise (see [`Class::slot_index`]): a slot start is told with one
//!   multiply, one rotate and one compare, no division.

/// Bytes of the block header that starts every block.
pub const HEADER_SIZE: usize = 64;
/// log2 of the block size (2 MiB), the same for every class.
pub const BLOCK_SHIFT: u32 = 21;
/// The block size: every block of every class is this many bytes, aligned to it.
pub const BLOCK_SIZE: usize = 1 << BLOCK_SHIFT;
/// The largest stride of a small class; larger requests are large allocations.
pub const MAX_SMALL: usize = 16 * 1024;
/// The largest alignment a small class serves; larger alignments are large allocations.
pub const MAX_SMALL_ALIGN: usize = 4096;
/// The largest medium request: sizes above [`MAX_SMALL`] up to this one (aligned to at most
/// [`MAX_SMALL_ALIGN`]) are runs of granules in medium blocks (see [`medium_granules`]);
/// larger ones are large allocations.
pub const MAX_MEDIUM: usize = 1 << 20;
/// The unit a medium request is rounded up to: at most 1/8 of any medium size
/// (`GRANULE * 8 <= MAX_SMALL`), so a medium allocation's usable size is at most 1/8 above
/// its size.
pub const GRANULE: usize = 2048;
/// The key class of a medium block: no size class has it (`MEDIUM_CLASS >= CLASS_COUNT`),
/// nor the empty key's (`0xff`). [`crate::BlockReport::size_class`] of a medium block.
pub const MEDIUM_CLASS: usize = 0xfe;
const _: () = assert!(GRANULE * 8 <= MAX_SMALL && MAX_SMALL_ALIGN.is_multiple_of(GRANULE));
/// The largest stride of the exact-fit grid (every multiple of 8 up to it is a stride).
const EXACT_MAX: usize = 1024;
/// The fast paths' table serves sizes below this bound (a power of two).
const TABLE_LEN: usize = 2048;
/// Number of size classes.
pub const CLASS_COUNT: usize = 3 + EXACT_MAX / 8 + 8 * 4;

/// One size class and its block geometry. All offsets are from the block's base.
///
/// 32 bytes (a power of two): indexing [`CLASSES`] is a shift, which the fast paths that
/// read a slot's stride (calloc's zeroing) count on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(align(32))]
pub struct Class {
    /// Slot size in bytes.
    pub stride: u32,
    /// Offset of slot 0.
    pub first: u32,
    /// Number of slots in a block.
    pub capacity: u32,
    /// Offset one past the last slot: `first + capacity * stride`.
    pub limit: u32,
    /// Alignment every slot has: the largest power of two dividing `stride`, at most 4096.
    pub slot_align: u32,
    /// Tiny classes: slots per run (a run's free list uses links of `stride` bytes).
    pub run_len: u32,
    /// Tiny classes: number of runs (each has the `stride`-byte link to its first free slot
    /// in the run table after the header).
    pub runs: u32,
    /// The inverse of the stride's odd part modulo 2^32: `odd_inverse * (stride >>
    /// stride.trailing_zeros()) == 1 (mod 2^32)`, which [`Class::slot_index`] multiplies by.
    pub odd_inverse: u32,
}

impl Class {
    /// The block size in bytes: [`BLOCK_SIZE`], whatever the class.
    ///
    /// # Examples
    ///
    /// ```
    /// use cohort::class::{class_of, BLOCK_SIZE, CLASSES};
    /// let c = &CLASSES[class_of(100, 8).unwrap()];
    /// assert_eq!(c.block_size(), BLOCK_SIZE);
    /// ```
    #[inline(always)]
    pub const fn block_size(&self) -> usize {
        BLOCK_SIZE
    }

    /// True for the classes whose slots are too small for a 32-bit link.
    ///
    /// # Examples
    ///
    /// ```
    /// use cohort::class::{class_of, CLASSES};
    /// assert!(CLASSES[class_of(1, 1).unwrap()].is_tiny());
    /// assert!(!CLASSES[class_of(8, 8).unwrap()].is_tiny());
    /// ```
    #[inline(always)]
    pub const fn is_tiny(&self) -> bool {
        self.stride < 4
    }

    /// Usable bytes of one block: `capacity * stride`.
    ///
    /// # Examples
    ///
    /// ```
    /// use cohort::class::{class_of, CLASSES};
    /// let c = &CLASSES[class_of(48, 16).unwrap()];
    /// assert_eq!(c.usable(), c.capacity as usize * 48);
    /// ```
    pub const fn usable(&self) -> usize {
        self.capacity as usize * self.stride as usize
    }

    /// True when `off` (from the block's base) is the start of a slot.
    ///
    /// # Examples
    ///
    /// ```
    /// use cohort::class::{class_of, CLASSES};
    /// let c = &CLASSES[class_of(48, 16).unwrap()];
    /// let first = c.first as usize;
    /// assert!(c.is_slot(first) && c.is_slot(first + 48) && !c.is_slot(first + 8));
    /// ```
    #[inline]
    pub const fn is_slot(&self, off: usize) -> bool {
        off < self.limit as usize && self.slot_index(off as u32) < self.capacity
    }

    /// The index of the slot starting at `off` (from the block's base), `(off - first) /
    /// stride`; at least `capacity` when no slot starts there (before `first`, at or past
    /// `limit`, or inside a slot). No division: with `stride = o * 2^t`, `o` odd, and `d =
    /// off - first (mod 2^32)`, the result is `rotr32(d * odd_inverse, t)`. Multiplying by
    /// the odd `odd_inverse` and rotating are both one-to-one on 32-bit words, and they take
    /// each multiple `q * stride < 2^32` to `q` (`q * stride * odd_inverse = q * 2^t (mod
    /// 2^32)`, below 2^32): so the `M = ceil(2^32 / stride)` multiples take the values
    /// `0..M` and every other `d` a value at least `M > capacity` (`capacity * stride <=
    /// BLOCK_SIZE`). One multiply, one rotate (its count the stride's trailing zeros).
    ///
    /// # Examples
    ///
    /// ```
    /// use cohort::class::{class_of, CLASSES};
    /// let c = &CLASSES[class_of(48, 16).unwrap()];
    /// assert_eq!(c.slot_index(c.first + 2 * 48), 2);
    /// assert!(c.slot_index(c.first + 2 * 48 + 16) >= c.capacity); // inside slot 2
    /// assert!(c.slot_index(c.first - 16) >= c.capacity && c.slot_index(c.limit) >= c.capacity);
    /// ```
    #[inline(always)]
    pub const fn slot_index(&self, off: u32) -> u32 {
        let d = off.wrapping_sub(self.first);
        d.wrapping_mul(self.odd_inverse)
            .rotate_right(self.stride.trailing_zeros())
    }
}

/// The inverse of odd `o` modulo 2^32, by Newton's iteration `x <- x * (2 - o * x)`, which
/// doubles the correct low bits: `o * o = 1 (mod 8)` starts it at 3 bits, four steps reach
/// 48 >= 32.
const fn odd_inverse(o: u32) -> u32 {
    let mut x = o;
    let mut i = 0;
    while i < 4 {
        x = x.wrapping_mul(2u32.wrapping_sub(o.wrapping_mul(x)));
        i += 1;
    }
    x
}

/// Denominator of the ratio limits: a limit is `num / LIMIT_DEN`.
pub const LIMIT_DEN: u64 = 10_000_000;

/// The rows of the ratio contract: (first size, last size) of each row. Every size of a row
/// has the same limit, [`ratio_contract_limit`].
pub const RATIO_CONTRACT_ROWS: [(usize, usize); 13] = [
    (1, 1),
    (2, 2),
    (3, 4),
    (5, 8),
    (9, 16),
    (17, 64),
    (65, 128),
    (129, 256),
    (257, 512),
    (513, 1024),
    (1025, 2048),
    (2049, 4096),
    (4097, 8192),
];

/// The ratio contract: for requests of `size` bytes, the worst `block bytes / usable bytes`
/// a block may have, times [`LIMIT_DEN`]. The contract's rows end at 8 KiB
/// ([`RATIO_CONTRACT_ROWS`]); above, cohort holds its classes to the last row's figure.
///
/// # Examples
///
/// ```
/// use cohort::class::{ratio_contract_limit, LIMIT_DEN};
/// // A 64-byte request may lose at most this fraction of a block.
/// let limit = ratio_contract_limit(64) as f64 / LIMIT_DEN as f64;
/// assert!(limit > 1.0 && limit < 1.01);
/// ```
pub const fn ratio_contract_limit(size: usize) -> u64 {
    match size {
        0..=1 => 10_240_000,
        2 => 10_002_300,
        3..=4 => 10_000_340,
        5..=8 => 10_000_380,
        9..=16 => 10_000_458,
        17..=64 => 10_000_600,
        65..=128 => 10_001_000,
        129..=256 => 10_002_400,
        257..=512 => 10_005_000,
        513..=1024 => 10_010_000,
        1025..=2048 => 10_020_000,
        2049..=4096 => 10_040_000,
        _ => 10_080_000,
    }
}

/// The strides, in increasing order.
const fn stride_at(i: usize) -> usize {
    match i {
        0 => 1,
        1 => 2,
        2 => 4,
        _ if i < 3 + EXACT_MAX / 8 => (i - 2) * 8,
        _ => {
            // Eight classes per doubling above EXACT_MAX.
            let j = i - (3 + EXACT_MAX / 8);
            let base = EXACT_MAX << (j / 8);
            base + (j % 8 + 1) * (base / 8)
        }
    }
}

const fn min(a: usize, b: usize) -> usize {
    if a < b {
        a
    } else {
        b
    }
}

const fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

/// Geometry of a tiny class: runs of `2^(8*stride) - 1` slots (the all-ones link is the end
/// of a run's list), and per run the `stride`-byte link to its first free slot.
const fn tiny_geometry(stride: usize) -> Class {
    let block = BLOCK_SIZE;
    let run_len = (1usize << (8 * stride)) - 1;
    let avail = block - HEADER_SIZE;
    // runs * stride (heads) + slots * stride <= avail, runs = ceil(slots / run_len).
    let mut runs = (avail / stride).div_ceil(run_len + 1);
    loop {
        let slots = avail / stride - runs;
        if slots.div_ceil(run_len) <= runs {
            break;
        }
        runs += 1;
    }
    let first = HEADER_SIZE + runs * stride;
    let capacity = (block - first) / stride;
    Class {
        stride: stride as u32,
        first: first as u32,
        capacity: capacity as u32,
        limit: (first + capacity * stride) as u32,
        slot_align: stride as u32,
        run_len: run_len as u32,
        runs: runs as u32,
        odd_inverse: odd_inverse((stride >> stride.trailing_zeros()) as u32),
    }
}

const fn geometry(stride: usize) -> Class {
    if stride < 4 {
        return tiny_geometry(stride);
    }
    let block = BLOCK_SIZE;
    let slot_align = min(1 << stride.trailing_zeros(), MAX_SMALL_ALIGN);
    let first = round_up(HEADER_SIZE, slot_align);
    let capacity = (block - first) / stride;
    Class {
        stride: stride as u32,
        first: first as u32,
        capacity: capacity as u32,
        limit: (first + capacity * stride) as u32,
        slot_align: slot_align as u32,
        run_len: 0,
        runs: 0,
        odd_inverse: odd_inverse((stride >> stride.trailing_zeros()) as u32),
    }
}

/// True when the geometry meets the ratio contract for every size the class serves (the
/// worst is its largest size, the stride itself, whose row is the strictest it meets).
///
/// # Examples
///
/// ```
/// use cohort::class::{meets_ratio, CLASSES};
/// assert!(CLASSES.iter().all(meets_ratio));
/// ```
pub const fn meets_ratio(c: &Class) -> bool {
    let block = c.block_size() as u64;
    let usable = c.usable() as u64;
    block * LIMIT_DEN <= usable * ratio_contract_limit(c.stride as usize)
}

const fn build_classes() -> [Class; CLASS_COUNT] {
    let mut out = [geometry(8); CLASS_COUNT];
    let mut i = 0;
    while i < CLASS_COUNT {
        out[i] = geometry(stride_at(i));
        i += 1;
    }
    out
}

/// The size-class table.
pub static CLASSES: [Class; CLASS_COUNT] = build_classes();
const TABLE: [Class; CLASS_COUNT] = build_classes();

/// `out[size]` is the class of the smallest stride at least `size`, for sizes 1 to
/// `TABLE_LEN - 1`; `out[0]` is class 0 (which a zero size never reaches: see
/// [`Lookup::class_of_multiple`]).
const fn build_by_size() -> [u8; TABLE_LEN] {
    let mut out = [0u8; TABLE_LEN];
    let mut size = 1;
    let mut class = 0;
    while size < TABLE_LEN {
        while (TABLE[class].stride as usize) < size {
            class += 1;
        }
        out[size] = class as u8;
        size += 1;
    }
    out
}

/// The fast paths' class table. The fast paths read a thread-local copy
/// ([`crate::per_thread`]), addressed from the thread pointer they load anyway: a table in
/// the binary costs one more instruction per look-up in position-independent code.
///
/// One table serves both look-ups because, below `TABLE_LEN`, the smallest stride at least
/// `s` is a multiple of every power of two dividing `s` (below 1 KiB every multiple of 8 is
/// a stride, above it every stride is a multiple of 128, and the multiples of 256 and 512
/// below 2 KiB are strides): the class of (size, align) is the class of `size` rounded up
/// to a multiple of `align`.
#[repr(C)]
pub(crate) struct Lookup {
    /// `by_size[s]` is the class of the smallest stride at least `s`, for `0 < s <
    /// TABLE_LEN`.
    by_size: [u8; TABLE_LEN],
}

/// The table's values.
pub(crate) const LOOKUP: Lookup = Lookup {
    by_size: build_by_size(),
};

impl Lookup {
    /// [`class_of`] for requests that round to less than 2 KiB (`None` above): one table
    /// load after `(size - 1) | (align - 1)`, the size rounded up to a multiple of `align`,
    /// less one. `None` also for a zero size, which wraps.
    #[inline(always)]
    pub(crate) fn exact_class(&self, size: usize, align: usize) -> Option<usize> {
        let rounded_m1 = size.wrapping_sub(1) | (align - 1);
        if rounded_m1 < TABLE_LEN - 1 {
            // SAFETY: rounded_m1 + 1 < TABLE_LEN, the table's length.
            Some(unsafe { *self.by_size.get_unchecked(rounded_m1 + 1) } as usize)
        } else {
            None
        }
    }

    /// The fast paths' look-up: [`class_of`] for a size below 2 KiB that is a multiple of
    /// its align, as the size of every Rust type is (`None` for any other request, which
    /// [`class_of`] serves). A multiple of its align needs no rounding, so the test and the
    /// index are the size itself: one `lea`, one `or` and one `test` decide (size below
    /// `TABLE_LEN` and no bit of `align - 1` set in it), where rounding costs one more and a
    /// separate bound two. A zero size passes (every align divides it) and gets class 0:
    /// callers handle it before or after (the alloc paths never see it; the free path's
    /// compare fails for it, since class 0 blocks are the pool's, into the cold path, which
    /// tests the size).
    #[inline(always)]
    pub(crate) fn class_of_multiple(&self, size: usize, align: usize) -> Option<usize> {
        if size & ((align - 1) | !(TABLE_LEN - 1)) == 0 {
            // SAFETY: size < TABLE_LEN, the table's length.
            Some(unsafe { *self.by_size.get_unchecked(size) } as usize)
        } else {
            None
        }
    }
}

/// The geometry of class `class`, without a bounds check (for the fast paths).
///
/// # Safety
/// `class < CLASS_COUNT`: it came from [`class_of`].
#[inline(always)]
pub(crate) unsafe fn geometry_unchecked(class: usize) -> &'static Class {
    debug_assert!(class < CLASS_COUNT);
    // SAFETY: in bounds by the caller's guarantee.
    unsafe { TABLE.get_unchecked(class) }
}

// The compile-time geometry checks.
const _: () = {
    let mut i = 0;
    while i < CLASS_COUNT {
        let c = &TABLE[i];
        let stride = c.stride as usize;
        assert!(c.capacity > 1, "a block holds at least two slots");
        assert!(c.first as usize >= HEADER_SIZE + (c.runs * c.stride) as usize);
        assert!(c.first as usize + c.capacity as usize * stride == c.limit as usize);
        assert!(c.limit as usize <= BLOCK_SIZE);
        assert!(c.first.is_multiple_of(c.slot_align) && c.stride.is_multiple_of(c.slot_align));
        assert!(meets_ratio(c), "a class misses the ratio contract");
        let odd = c.stride >> c.stride.trailing_zeros();
        assert!(odd.wrapping_mul(c.odd_inverse) == 1, "slot_index's inverse");
        assert!(c.slot_index(c.first) == 0 && c.slot_index(c.limit - c.stride) == c.capacity - 1);
        if i > 0 {
            assert!(TABLE[i - 1].stride < c.stride);
        }
        if c.is_tiny() {
            assert!((c.capacity as usize).div_ceil(c.run_len as usize) <= c.runs as usize);
        }
        i += 1;
    }
    assert!(TABLE[CLASS_COUNT - 1].stride as usize == MAX_SMALL);
    assert!(CLASS_COUNT <= 255, "a class index fits the header's u8");
    assert!(MEDIUM_CLASS >= CLASS_COUNT && MEDIUM_CLASS < 0xff);
    assert!(size_of::<Class>().is_power_of_two());
};

/// A head's index: a (size class, lifetime class) pair as one number, `life * CLASS_COUNT +
/// class`, the position of its head in the arrays of `CLASS_COUNT * life_count` heads that
/// heaps and the pool keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeadIndex(usize);

impl HeadIndex {
    /// The head of size class `class` and lifetime class `life`.
    #[inline(always)]
    pub(crate) const fn new(class: usize, life: usize) -> HeadIndex {
        HeadIndex(life * CLASS_COUNT + class)
    }

    /// The index itself.
    #[inline(always)]
    pub(crate) const fn get(self) -> usize {
        self.0
    }

    /// The size class.
    pub(crate) const fn class(self) -> usize {
        self.0 % CLASS_COUNT
    }

    /// The lifetime class.
    pub(crate) const fn life(self) -> usize {
        self.0 / CLASS_COUNT
    }

    /// How many heads `life_count` lifetime classes have.
    pub(crate) const fn count(life_count: usize) -> usize {
        CLASS_COUNT * life_count
    }

    /// Every head of `life_count` lifetime classes, in index order.
    pub(crate) fn all(life_count: usize) -> impl Iterator<Item = HeadIndex> {
        (0..Self::count(life_count)).map(HeadIndex)
    }

    /// The heads of lifetime class `life`, one per size class.
    pub(crate) fn of_life(life: usize) -> impl Iterator<Item = HeadIndex> {
        (0..CLASS_COUNT).map(move |class| HeadIndex::new(class, life))
    }
}

/// The class index serving a request of `size` bytes aligned to `align`, or `None` when the
/// request is large (above [`MAX_SMALL`] or aligned above [`MAX_SMALL_ALIGN`]).
///
/// `align` must be a power of two; any size is accepted (a zero size or one that overflows
/// when rounded up to `align` is large: the large path refuses it).
///
/// # Examples
///
/// ```
/// use cohort::class::{class_of, CLASSES};
/// assert_eq!(CLASSES[class_of(24, 8).unwrap()].stride, 24);
/// assert_eq!(class_of(100_000, 8), None); // large
/// ```
#[inline]
pub fn class_of(size: usize, align: usize) -> Option<usize> {
    match LOOKUP.exact_class(size, align) {
        Some(class) => Some(class),
        None => class_of_above_table(size.wrapping_sub(1) | (align - 1), align),
    }
}

/// `rounded_m1` is the size rounded up to a multiple of `align`, minus one (it never
/// overflows: a size near `usize::MAX` stays near it, and is large).
#[inline]
fn class_of_above_table(rounded_m1: usize, align: usize) -> Option<usize> {
    if rounded_m1 >= MAX_SMALL || align > MAX_SMALL_ALIGN {
        return None;
    }
    let rounded = rounded_m1 + 1;
    // rounded in (2^e, 2^(e+1)]: the classes of that doubling step by 2^e / 8.
    let e = usize::BITS - 1 - (rounded - 1).leading_zeros();
    let step = 1usize << (e - 3);
    let k = (rounded - (1 << e)).div_ceil(step);
    let mut class = 3 + EXACT_MAX / 8 + (e as usize - 10) * 8 + (k - 1);
    // Above 128-byte alignment a stride may not be a multiple of align; the next power of
    // two always is, so this ends within eight steps.
    while !(TABLE[class].stride as usize).is_multiple_of(align) {
        class += 1;
    }
    Some(class)
}

/// The granules of a medium request: `Some(ceil(size / GRANULE))` when `size` is above
/// [`MAX_SMALL`] and at most [`MAX_MEDIUM`] and `align` at most [`MAX_SMALL_ALIGN`] (a
/// power of two); `None` for any other request (small or large).
///
/// # Examples
///
/// ```
/// use cohort::class::{medium_granules, GRANULE, MAX_MEDIUM, MAX_SMALL};
/// assert_eq!(medium_granules(MAX_SMALL + 1, 4096), Some(MAX_SMALL / GRANULE + 1));
/// assert_eq!(medium_granules(MAX_MEDIUM, 8), Some(MAX_MEDIUM / GRANULE));
/// assert_eq!((medium_granules(MAX_SMALL, 8), medium_granules(MAX_MEDIUM + 1, 8)), (None, None));
/// assert_eq!(medium_granules(100_000, 8192), None); // aligned above a page: large
/// ```
#[inline]
pub fn medium_granules(size: usize, align: usize) -> Option<usize> {
    (size > MAX_SMALL && size <= MAX_MEDIUM && align <= MAX_SMALL_ALIGN)
        .then(|| size.div_ceil(GRANULE))
}

/// The alignment `malloc(size)` guarantees: the next power of two of `size`, at most 4096.
///
/// # Examples
///
/// ```
/// use cohort::class::malloc_align;
/// assert_eq!((malloc_align(24), malloc_align(100), malloc_align(100_000)), (32, 128, 4096));
/// ```
#[inline(always)]
pub fn malloc_align(size: usize) -> usize {
    // Capped before rounding: `next_power_of_two` overflows above 2^63.
    min(size, MAX_SMALL_ALIGN).next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_and_align_maps_to_the_smallest_fitting_class() {
        for align_shift in 0..=13 {
            let align = 1usize << align_shift;
            for size in 1..=MAX_SMALL + 64 {
                let got = class_of(size, align);
                let want = (0..CLASS_COUNT).find(|&i| {
                    let s = CLASSES[i].stride as usize;
                    s >= size && s.is_multiple_of(align) && align <= MAX_SMALL_ALIGN
                });
                assert_eq!(got, want, "size {size} align {align}");
                if let Some(c) = got {
                    assert!(CLASSES[c].slot_align as usize >= align);
                }
            }
        }
    }

    /// Both table look-ups agree with the smallest fitting class wherever they answer, and
    /// answer exactly where they say: `exact_class` for every request that rounds below
    /// 2 KiB, `class_of_multiple` for every size below 2 KiB that is a multiple of its align
    /// (and a zero size, as class 0).
    #[test]
    fn the_table_look_ups_answer_as_class_of() {
        for align_shift in 0..=13 {
            let align = 1usize << align_shift;
            for size in 0..=2 * TABLE_LEN {
                let want = class_of(size, align);
                let exact = LOOKUP.exact_class(size, align);
                let rounds_below = size > 0 && size.div_ceil(align) * align < TABLE_LEN;
                assert_eq!(exact.is_some(), rounds_below, "size {size} align {align}");
                if exact.is_some() {
                    assert_eq!(exact, want, "size {size} align {align}");
                }
                let multiple = LOOKUP.class_of_multiple(size, align);
                let is_multiple = size.is_multiple_of(align) && size < TABLE_LEN;
                assert_eq!(multiple.is_some(), is_multiple, "size {size} align {align}");
                match multiple {
                    Some(class) if size == 0 => assert_eq!(class, 0),
                    Some(_) => assert_eq!(multiple, want, "size {size} align {align}"),
                    None => {}
                }
            }
        }
    }

    #[test]
    fn strides_cover_the_specified_grid() {
        let strides: Vec<usize> = CLASSES.iter().map(|c| c.stride as usize).collect();
        assert_eq!(&strides[..3], &[1, 2, 4]);
        for s in (8..=1024).step_by(8) {
            assert!(strides.contains(&s), "exact-fit stride {s}");
        }
        for w in strides.windows(2) {
            assert!(w[1] > w[0]);
            if w[0] >= 1024 {
                assert!(
                    w[1] * 8 <= w[0] * 9,
                    "{} -> {} more than 1/8 apart",
                    w[0],
                    w[1]
                );
            }
        }
        assert_eq!(*strides.last().unwrap(), MAX_SMALL);
    }

    #[test]
    fn malloc_alignment_contract() {
        for size in 1..=MAX_SMALL {
            let align = malloc_align(size);
            let c = &CLASSES[class_of(size, align).unwrap()];
            assert!(c.slot_align as usize >= align, "size {size}");
            assert!(align >= size.next_power_of_two().min(4096));
        }
    }

    #[test]
    fn huge_and_zero_sizes_are_large_without_overflow() {
        for size in [0, usize::MAX, usize::MAX - 4095, (1 << 63) + 1, 1 << 63] {
            assert_eq!(
                malloc_align(size),
                if size == 0 { 1 } else { MAX_SMALL_ALIGN }
            );
            for align in [1, 8, 4096, 1 << 21, 1 << 63] {
                assert_eq!(class_of(size, align), None, "{size}, {align}");
            }
        }
    }

    #[test]
    fn a_head_index_names_its_pair() {
        let heads: Vec<HeadIndex> = HeadIndex::all(3).collect();
        assert_eq!(heads.len(), HeadIndex::count(3));
        for (i, h) in heads.iter().enumerate() {
            assert_eq!(h.get(), i);
            assert_eq!(HeadIndex::new(h.class(), h.life()), *h);
        }
        let life_1: Vec<HeadIndex> = HeadIndex::of_life(1).collect();
        assert_eq!(life_1.len(), CLASS_COUNT);
        assert!(life_1.iter().all(|h| h.life() == 1));
        assert_eq!(life_1[0].get(), CLASS_COUNT);
    }

    /// `slot_index` answers as the division it replaces at every offset of the block (and
    /// past it) where it can differ: every offset of the first three and the last three
    /// slots, everything before `first` and from the last slot to the block's end, and one
    /// offset in each slot between (a multiple of the stride, or one off it by each of the
    /// slot's residues in turn).
    #[test]
    fn slot_index_is_the_division_without_one() {
        for c in CLASSES.iter() {
            let (first, stride, limit) = (c.first as usize, c.stride as usize, c.limit as usize);
            let divided = |off: usize| {
                (off >= first && off < limit && (off - first).is_multiple_of(stride))
                    .then(|| ((off - first) / stride) as u32)
            };
            let ends = (0..first + 3 * stride).chain(limit - 3 * stride..BLOCK_SIZE + stride);
            let middle = (3..c.capacity as usize - 3).map(|i| first + i * stride + i % stride);
            for off in ends.chain(middle) {
                let index = c.slot_index(off as u32);
                match divided(off) {
                    Some(q) => assert_eq!(index, q, "stride {stride} offset {off}"),
                    None => assert!(index >= c.capacity, "stride {stride} offset {off}"),
                }
                assert_eq!(
                    c.is_slot(off),
                    divided(off).is_some(),
                    "stride {stride} offset {off}"
                );
            }
            // Offsets that wrap past 2^32 are never slots.
            assert!(!c.is_slot(first + (1 << 32)) && !c.is_slot(usize::MAX));
        }
    }

    #[test]
    fn geometry_is_consistent() {
        for c in CLASSES.iter() {
            assert_eq!(c.first + c.capacity * c.stride, c.limit);
            assert!(c.limit as usize <= c.block_size());
            // No further slot fits: the tail is smaller than a stride.
            assert!((c.block_size() - c.limit as usize) < c.stride as usize);
        }
    }
}
