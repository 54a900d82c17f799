//! The lock-guarded lists' tables and the walks over blocks: the partial lists per head and
//! the lifetime classes' lists ([`PoolState::of_life`], linked through [`LifeLinks`]), the
//! medium blocks' lists per lifetime class ([`PoolState::medium`]), every
//! carved block, and the count of blocks a test's walks looked at.

use super::*;

impl Pool {
    /// The links of [`PoolState::of_life`].
    pub(crate) fn life_links(&self) -> LifeLinks<'_> {
        LifeLinks {
            units: self.units(),
            table: self.life_links,
        }
    }
    /// Every block carved from the region: in use, or kept empty (key [`EMPTY_KEY`]), as of
    /// `st` (the caller may drop the lock while it walks: blocks stay mapped).
    pub(crate) fn blocks<'a>(&'a self, st: &PoolState) -> impl Iterator<Item = &'a Header> + 'a {
        let (r, units) = (&self.region, self.units());
        (0..r.carved_units(&st.region))
            .inspect(|_| walked_one())
            .filter(move |&u| r.unit_state(u) == crate::region::BLOCK)
            .map(move |u| units.block(u as u32))
    }
    /// Under the lock: every block of lifetime class `life` in use. The walk reads a
    /// block's link before it yields the block, so the caller may give that block away.
    pub(crate) fn blocks_of_life<'a>(
        &'a self,
        st: &PoolState,
        life: usize,
    ) -> impl Iterator<Item = &'a Header> + 'a {
        st.of_life(life)
            .iter(self.life_links())
            .inspect(|_| walked_one())
    }
    /// Resident bytes of every block, in use or kept empty (one `mincore` per block).
    pub(crate) fn resident_bytes(&self) -> usize {
        let blocks = self.blocks(&self.lock_uncounted());
        // SAFETY: carved blocks are mapped.
        blocks
            .map(|h| unsafe { os::resident_bytes(h.base(), BLOCK_SIZE) })
            .sum()
    }
}

impl PoolState {
    /// The current decay delay in milliseconds (`crate::decay::Decay`): what kept memory
    /// waits unused before it goes back.
    pub(crate) fn decay_delay(&self) -> u64 {
        self.decay.delay()
    }

    /// The pool's partial list of head `head`.
    pub(crate) fn partial(&mut self, head: HeadIndex) -> &mut BlockList {
        // SAFETY: the table holds a list per head and callers pass a head of the pool's
        // lifetime classes (class < CLASS_COUNT, life < life_count).
        unsafe { &mut *self.table(self.partial).add(head.get()) }
    }

    /// As [`PoolState::partial`], to read.
    pub(crate) fn partial_list(&self, head: HeadIndex) -> &BlockList {
        // SAFETY: as in `partial`.
        unsafe { &*self.table(self.partial).add(head.get()) }
    }

    /// The empty blocks kept for reuse.
    pub(crate) fn retained_list(&self) -> &BlockList {
        &self.retained
    }

    /// The blocks of lifetime class `life` in use.
    pub(crate) fn of_life(&self, life: usize) -> &BlockList {
        // SAFETY: the table holds a list per lifetime class; `life < life_count`.
        unsafe { &*self.table(self.of_life).add(life) }
    }

    pub(super) fn of_life_mut(&mut self, life: usize) -> &mut BlockList {
        // SAFETY: as in `of_life`.
        unsafe { &mut *self.table(self.of_life).add(life) }
    }

    /// The medium blocks of lifetime class `life` (see `crate::medium`).
    pub(crate) fn medium(&mut self, life: usize) -> &mut BlockList {
        // SAFETY: the table holds a list per lifetime class; `life < life_count`.
        unsafe { &mut *self.table(self.medium).add(life) }
    }

    /// As [`PoolState::medium`], to read.
    pub(crate) fn medium_list(&self, life: usize) -> &BlockList {
        // SAFETY: as in `medium`.
        unsafe { &*self.table(self.medium).add(life) }
    }

    /// The list table at offset `at` from this state (in the same mapping).
    fn table(&self, at: usize) -> *mut BlockList {
        ptr::from_ref(self)
            .cast::<u8>()
            .cast_mut()
            .wrapping_add(at)
            .cast()
    }
}

#[cfg(test)]
std::thread_local! {
    /// Blocks the calling thread's walks of [`Pool::blocks`] and [`Pool::blocks_of_life`]
    /// looked at: tests check what a walk costs by it.
    pub(crate) static BLOCKS_WALKED: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
}

/// Counts one block walked (`BLOCKS_WALKED`); nothing outside tests.
#[inline(always)]
fn walked_one() {
    #[cfg(test)]
    BLOCKS_WALKED.with(|n| n.set(n.get() + 1));
}

/// The links of the lifetime classes' lists ([`PoolState::of_life`]): `[next, prev]` per
/// unit in a table beside the blocks (a block's header has room for the links of one list
/// only, its head's or the pool's). Touched only under the pool lock.
#[derive(Clone, Copy)]
pub(crate) struct LifeLinks<'a> {
    units: Units<'a>,
    table: *const [AtomicU32; 2],
}

impl<'a> Links<'a> for LifeLinks<'a> {
    fn units(self) -> Units<'a> {
        self.units
    }

    fn links(self, u: u32) -> &'a [AtomicU32; 2] {
        // SAFETY: the table holds an entry per unit of the region, mapped for the pool's
        // life; `u` names a carved unit.
        unsafe { &*self.table.add(u as usize) }
    }
}
