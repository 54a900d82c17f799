//! Reading what a region holds without joining it: the way out of a region that cannot be
//! opened ([`RegionError::Unclean`]: a copy made while it was open, a file a machine crash
//! left; [`RegionError::StateDamaged`]). [`SharedCohort::salvage`] maps the region
//! read-only, checks its header as an opening does (magic, versions, geometry, lifetime
//! classes) and nothing of its attach table or state, and hands out its root slots and
//! the bytes of its blocks, to be copied into a fresh region. Nothing is written: the
//! region stays as it was, and may be removed afterwards.
//!
//! What it reads may be inconsistent (that is why the region was refused): every read is
//! bounded to the blocks, copies bytes (any bytes are valid), and is made with atomic loads
//! (another process may write the region meanwhile: reading it is no data race).
//!
//! Invariant: `[base, base + mapped)` is mapped read-only while the `Salvage` lives, and
//! `blocks` lies within it and within the region's blocks (the tail seal page past them
//! is no data).

use super::error::RegionError;
use super::header::{Header, Layout, READY, ROOT_SLOTS};
use super::mapping::Name;
use super::named::{expected, SharedCohort};
use super::Place;
use crate::lifetime::Lifetime;
use crate::offset::Off;
use crate::os::shared_mem;
use core::sync::atomic::{AtomicU8, Ordering};

/// A region mapped read-only for its data ([`SharedCohort::salvage`]).
pub struct Salvage {
    base: *const u8,
    /// The bytes mapped (the file's length).
    mapped: usize,
    /// The region's blocks: `[blocks_offset, blocks_end)`, within the mapping (empty until
    /// the header checked).
    blocks: (u64, u64),
    /// The region's capacity (header, state, blocks and seals), within the mapping.
    capacity: usize,
}

// SAFETY: a read-only mapping, read through atomics only.
unsafe impl Send for Salvage {}
// SAFETY: as above.
unsafe impl Sync for Salvage {}

impl<L: Lifetime> SharedCohort<L> {
    /// Maps the region `place` read-only, for its data, without joining it: a region that
    /// [`SharedCohort::open`] refuses as [`RegionError::Unclean`] or
    /// [`RegionError::StateDamaged`] (its allocator state cannot be trusted) still gives
    /// its root slots and bytes, to copy into a new region. Nothing is written.
    ///
    /// ```no_run
    /// use cohort::{Place, SharedCohort};
    /// let old = SharedCohort::<()>::salvage(Place::File("/var/lib/app/cache.region".as_ref()))?;
    /// if let Some(root) = old.root::<[u8; 64]>(0) {
    ///     let mut record = [0u8; 64];
    ///     if old.read(root, &mut record) {
    ///         // check `record`, then store it in a fresh region
    ///     }
    /// }
    /// # Ok::<(), cohort::RegionError>(())
    /// ```
    ///
    /// # Errors
    /// [`RegionError::InvalidName`], [`RegionError::NotFound`]; a region that is not one
    /// this code reads: [`RegionError::BadMagic`], [`RegionError::Version`],
    /// [`RegionError::Corrupt`], [`RegionError::LifetimeClasses`],
    /// [`RegionError::LifetimeNames`], [`RegionError::Geometry`],
    /// [`RegionError::Truncated`]; [`RegionError::NotReady`] when its creator never finished
    /// formatting it; [`RegionError::Os`].
    pub fn salvage(place: Place<'_>) -> Result<Salvage, RegionError> {
        let name = place.name()?;
        Salvage::map(&name, &expected::<L>())
    }
}

impl Salvage {
    fn map(name: &Name, expect: &super::header::Expected) -> Result<Salvage, RegionError> {
        // Read only: the copies it exists for are often not writable (a snapshot, a
        // backup of another user, a read-only mount).
        let fd = shared_mem::open_read_only(name.kind, &name.c)
            .map_err(|e| name.os("open the region", e))?;
        let len = fd.len().map_err(|e| RegionError::os("read the region's length", e))?;
        if len < super::header::HEADER_BYTES as u64 {
            return Err(RegionError::Truncated {
                expected: super::header::HEADER_BYTES as u64,
                found: len,
            });
        }
        let map_len = usize::try_from(len).map_err(|_| RegionError::Capacity {
            requested: usize::MAX,
            minimum: None,
        })?;
        let base = shared_mem::map_read_only(&fd, map_len)
            .map_err(|e| RegionError::os("map the region", e))?;
        // From here the mapping is the result's, unmapped by its drop on every error.
        let mut salvage = Salvage {
            base,
            mapped: map_len,
            blocks: (0, 0),
            capacity: 0,
        };
        // SAFETY: at least HEADER_BYTES are mapped, page aligned, read only through it.
        let header = unsafe { Header::at(base) };
        // Each root is checked on its own when read (`Salvage::root`): one damaged root
        // must not hide the others.
        let layout: Layout = super::header::validate_layout(&header.snapshot(), len, expect)?;
        if header.state() != READY {
            let creator = header.creator();
            return Err(RegionError::NotReady {
                waited: core::time::Duration::ZERO,
                creator_pid: creator.0,
                creator_alive: creator.0 != 0 && super::mapping::alive(creator),
            });
        }
        // `validate` checked the layout against the file's length.
        salvage.blocks = (layout.blocks_offset as u64, layout.blocks_end().min(map_len) as u64);
        salvage.capacity = layout.capacity.min(map_len);
        Ok(salvage)
    }

    /// Root slot `slot`: the offset stored there, when it names a place in the blocks.
    ///
    /// # Panics
    /// When `slot >= ROOT_SLOTS`.
    pub fn root<T>(&self, slot: usize) -> Option<Off<T>> {
        assert!(
            slot < ROOT_SLOTS,
            "root slot {slot} does not exist: a region has {ROOT_SLOTS}"
        );
        // SAFETY: the header is mapped while `self` lives (the invariant).
        let off = unsafe { Header::at(self.base) }.root(slot).load(Ordering::Acquire);
        if self.in_blocks(off, 1) {
            Off::new(off)
        } else {
            None
        }
    }

    /// Copies the `size_of_val(out)` bytes at `off` into `out`; false (and `out` as it was)
    /// when they do not lie within the region's blocks.
    pub fn read<T>(&self, off: Off<T>, out: &mut [u8]) -> bool {
        if !self.in_blocks(off.get(), out.len()) {
            return false;
        }
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: within the mapping (checked above); any byte is a valid AtomicU8.
            let at = unsafe { &*self.base.add(off.get() as usize + i).cast::<AtomicU8>() };
            *b = at.load(Ordering::Relaxed);
        }
        true
    }

    /// The region's capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// True when `len` bytes at `off` lie within the blocks.
    fn in_blocks(&self, off: u64, len: usize) -> bool {
        let (lo, hi) = self.blocks;
        off >= lo && off.checked_add(len as u64).is_some_and(|end| end <= hi)
    }
}

/// `Salvage { capacity }`.
impl core::fmt::Debug for Salvage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Salvage")
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl Drop for Salvage {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours (the invariant), unmapped once, here.
        unsafe { shared_mem::unmap_shared(self.base, self.mapped) };
    }
}
