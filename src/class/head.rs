//! Head indexes: a (size class, lifetime class) pair as one number.
//!
//! Invariants: `index = life * CLASS_COUNT + class`, so `class = index % CLASS_COUNT` and
//! `life = index / CLASS_COUNT`; the heads of `n` lifetime classes are `0..CLASS_COUNT *
//! n`, those of lifetime class `l` are `l * CLASS_COUNT..(l + 1) * CLASS_COUNT`.

use super::CLASS_COUNT;

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
