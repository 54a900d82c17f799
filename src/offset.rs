//! Typed offsets: references that stay true wherever a region is mapped.
//!
//! A region shared between processes, or kept in a file, sits at a different address in
//! each process that maps it, so a structure stored in it cannot hold pointers. It holds
//! [`Off<T>`] instead: the distance in bytes from the region's base to a `T`. A process
//! turns an offset into a pointer with its own base (`ptr = base + off`) and back
//! (`off = ptr - base`): the equations hold in every mapping, so the same bytes name the
//! same object everywhere.
//!
//! Offset 0 is the region's header, never an object: an `Off<T>` is never 0, so
//! `Option<Off<T>>` is a plain 8-byte word with `None` stored as 0 (a zeroed node reads as
//! "no link").

use core::fmt;
use core::hash::{Hash, Hasher};
use core::marker::PhantomData;
use core::num::NonZeroU64;

/// The offset of a `T` from the base of the region that holds it: see the module docs.
///
/// `Copy`, 8 bytes, holds no address; `Option<Off<T>>` is 8 bytes too. Built by
/// [`SharedCohort::offset_of`](crate::SharedCohort::offset_of) or
/// [`SharedCohort::new_in`](crate::SharedCohort::new_in), turned back into a pointer by
/// [`SharedCohort::ptr`](crate::SharedCohort::ptr).
///
/// A linked list in a region, pushed by one process and walked by any:
///
/// ```
/// use cohort::{CreateOptions, Off, Place, SharedCohort};
///
/// struct Node {
///     next: Option<Off<Node>>,
///     value: u32,
/// }
///
/// # let name = format!("/cohort-doc-off-{}", std::process::id());
/// let region = SharedCohort::<()>::create(Place::SharedMemory(&name), CreateOptions::new(64 << 20))?;
/// for value in 0..3 {
///     let next = region.root::<Node>(0);
///     let node = region.new_in(Node { next, value }, ()).expect("memory");
///     region.set_root(0, Some(node));
/// }
/// let (mut at, mut seen) = (region.root::<Node>(0), Vec::new());
/// while let Some(off) = at {
///     // SAFETY: every link names a live node of this region.
///     let node = unsafe { region.get(off) };
///     seen.push(node.value);
///     at = node.next;
/// }
/// assert_eq!(seen, [2, 1, 0]);
/// # region.destroy()?;
/// # Ok::<(), cohort::RegionError>(())
/// ```
#[repr(transparent)]
pub struct Off<T> {
    bytes: NonZeroU64,
    _to: PhantomData<*const T>,
}

// SAFETY: an offset is a number; it grants no access by itself (turning it into a pointer
// and reading through that is the caller's unsafe act).
unsafe impl<T> Send for Off<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Off<T> {}

impl<T> Off<T> {
    /// The offset `bytes` from a region's base, or `None` for 0 (the header's place).
    pub const fn new(bytes: u64) -> Option<Off<T>> {
        match NonZeroU64::new(bytes) {
            Some(bytes) => Some(Off {
                bytes,
                _to: PhantomData,
            }),
            None => None,
        }
    }

    /// The distance in bytes from the region's base.
    pub const fn get(self) -> u64 {
        self.bytes.get()
    }

    /// The same offset, naming a `U` (a field's type, or a byte view).
    pub const fn cast<U>(self) -> Off<U> {
        Off {
            bytes: self.bytes,
            _to: PhantomData,
        }
    }

    /// The offset of the byte `bytes` further on, or `None` on overflow.
    pub const fn byte_add<U>(self, bytes: u64) -> Option<Off<U>> {
        match self.bytes.get().checked_add(bytes) {
            Some(b) => Off::new(b),
            None => None,
        }
    }
}

impl<T> Clone for Off<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Off<T> {}

impl<T> PartialEq for Off<T> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl<T> Eq for Off<T> {}

impl<T> PartialOrd for Off<T> {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Off<T> {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.bytes.cmp(&other.bytes)
    }
}

impl<T> Hash for Off<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bytes.hash(state);
    }
}

/// `Off(+0x1234)`: the offset in hexadecimal.
impl<T> fmt::Debug for Off<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Off(+{:#x})", self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_optional_offset_is_one_word_and_zero_is_none() {
        assert_eq!(size_of::<Option<Off<[u8; 64]>>>(), 8);
        assert!(Off::<u32>::new(0).is_none());
        let o = Off::<u32>::new(0x40).unwrap();
        assert_eq!(o.get(), 0x40);
        assert_eq!(o.byte_add::<u8>(4).unwrap().get(), 0x44);
        assert!(o.byte_add::<u8>(u64::MAX).is_none());
        assert_eq!(o.cast::<u8>().get(), 0x40);
        assert_eq!(format!("{o:?}"), "Off(+0x40)");
        // SAFETY: 0x40 is a valid non-zero u64: Option<Off> is that word.
        let word: u64 = unsafe { core::mem::transmute(Some(o)) };
        assert_eq!(word, 0x40);
        // SAFETY: an all-zero word is None (the niche of NonZeroU64).
        let none: Option<Off<u32>> = unsafe { core::mem::transmute(0u64) };
        assert!(none.is_none());
    }
}
