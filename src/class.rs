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

mod head;
mod ratio;
mod request;
#[cfg(test)]
mod tests;

pub(crate) use head::HeadIndex;
pub use ratio::{meets_ratio, ratio_contract_limit, LIMIT_DEN, RATIO_CONTRACT_ROWS};
pub use request::{class_of, malloc_align, medium_granules};
pub(crate) use request::{Lookup, LOOKUP};

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

    /// True when `off` (from the block's base) lies among the block's slots where a free may
    /// write a link: `first <= off < link_limit()`, not in its header area (the header, a
    /// tiny class's run table, the padding up to a first slot aligned past the header), nor
    /// in its tail past the last slot, nor within the last 3 bytes of the last slot, where
    /// a 4-byte link written at `off` would run past the block's end into the next block's
    /// header. No slot starts there, so a free must never write there. A pointer inside a
    /// slot otherwise passes (only [`Class::is_slot`] tells it). Two compares, no multiply:
    /// the check of the free paths that skip `is_slot` in release builds.
    ///
    /// # Examples
    ///
    /// ```
    /// use cohort::class::{class_of, BLOCK_SIZE, CLASSES};
    /// let c = &CLASSES[class_of(48, 16).unwrap()];
    /// let first = c.first as usize;
    /// assert!(c.in_slots(first) && c.in_slots(first + 8) && c.in_slots(c.limit as usize - 4));
    /// assert!(!c.in_slots(0) && !c.in_slots(first - 1) && !c.in_slots(c.limit as usize));
    /// assert!(!c.in_slots(c.limit as usize - 3) && !c.in_slots(BLOCK_SIZE - 4));
    /// let tiny = &CLASSES[class_of(1, 1).unwrap()];
    /// assert!(tiny.in_slots(tiny.limit as usize - 1)); // a tiny slot: no link written there
    /// ```
    #[inline(always)]
    pub const fn in_slots(&self, off: usize) -> bool {
        off >= self.first as usize && off < self.link_limit() as usize
    }

    /// The end of the offsets a free may write a 4-byte link at: `limit - 3` for a class
    /// whose slots hold a link (every slot start `s` has `s + 4 <= s + stride <= limit`),
    /// `limit` for a tiny class (whose frees write no link in the slot).
    #[inline(always)]
    pub const fn link_limit(&self) -> u32 {
        if self.is_tiny() {
            self.limit
        } else {
            self.limit - 3
        }
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
