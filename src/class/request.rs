//! Which class serves a request: the fast paths' table ([`Lookup`]) and [`class_of`] above
//! it; the medium granules of a request ([`medium_granules`]); `malloc`'s alignment
//! ([`malloc_align`]).
//!
//! Invariants: `by_size[s] = min { c : stride(c) >= s }` for `0 < s < TABLE_LEN`; for a
//! small request, `class_of(size, align) = min { c : stride(c) >= size, stride(c) %
//! align == 0 }` (below `TABLE_LEN`, `by_size` of the size rounded up to `align`, since
//! there the smallest stride at least `s` is a multiple of every power of two dividing
//! `s`); `class_of` is `None` exactly for large requests (above `MAX_SMALL`, aligned above
//! `MAX_SMALL_ALIGN`, a zero size).

use super::{min, EXACT_MAX, GRANULE, MAX_MEDIUM, MAX_SMALL, MAX_SMALL_ALIGN, TABLE, TABLE_LEN};

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
