//! [`RegionError`]: everything that can go wrong creating, opening, leaving or destroying a
//! shared or file-backed region, each case naming what differs.

use core::fmt;
use std::io;
use std::time::Duration;

/// Why a region could not be created, opened, left or destroyed. Every case leaves an
/// existing region as it was (opening never writes to a region it rejects), but
/// [`RegionError::BlocksDamaged`], found after attaching.
#[derive(Debug)]
#[non_exhaustive]
pub enum RegionError {
    /// The name is not usable: empty, holding a NUL byte, longer than 4095 bytes, or (for
    /// shared memory) not of the form `/name` with no other `/`.
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Creating: something of that name exists (and replacing was not asked for).
    AlreadyExists {
        /// The name given.
        name: String,
    },
    /// Opening or destroying: nothing has that name.
    NotFound {
        /// The name given.
        name: String,
    },
    /// Creating: the capacity cannot hold the header, the instance's state and one block
    /// (`minimum` is the least that can), or is too large to address (`minimum` is `None`).
    Capacity {
        /// The capacity asked for, in bytes.
        requested: usize,
        /// The smallest capacity that works, when the request was too small.
        minimum: Option<usize>,
    },
    /// The file (or shared-memory object) is shorter than its header says, or than a
    /// header.
    Truncated {
        /// The bytes it should hold.
        expected: u64,
        /// The bytes it holds.
        found: u64,
    },
    /// Not a cohort region: its first 8 bytes are not the magic number.
    BadMagic {
        /// The first 8 bytes found.
        found: [u8; 8],
    },
    /// A region of another layout version (made by another version of cohort): of the
    /// region's header and offsets (`what` is "region") or of the instance's state in it
    /// ("instance state").
    Version {
        /// Which layout.
        what: &'static str,
        /// The version this code reads.
        expected: u64,
        /// The version found.
        found: u64,
    },
    /// The header's checksum does not match its contents: the header was damaged.
    Corrupt {
        /// The checksum of the contents.
        expected: u64,
        /// The checksum stored.
        found: u64,
    },
    /// The region was made for another number of lifetime classes than the type opening it.
    LifetimeClasses {
        /// The opener's `Lifetime::COUNT`.
        expected: usize,
        /// The region's.
        found: u64,
    },
    /// The region was made for lifetime classes of other names than the type opening it
    /// (as many of them): the header keeps a hash of the names, in index order.
    LifetimeNames {
        /// The hash of the opener's `Lifetime::NAMES`.
        expected: u64,
        /// The region's.
        found: u64,
    },
    /// The region's geometry differs from what this code would make: `field` names the
    /// word (block size, page size, size-class table, checked-build flag, offsets, capacity,
    /// block count).
    Geometry {
        /// Which part of the geometry.
        field: &'static str,
        /// The value this code expects.
        expected: u64,
        /// The value found.
        found: u64,
    },
    /// A root slot holds an offset outside the region.
    Root {
        /// The slot.
        slot: usize,
        /// The offset it holds.
        offset: u64,
        /// The region's capacity.
        capacity: u64,
    },
    /// Opening: the region's bytes may not be of one moment, and allocating from it could
    /// hand out live objects' memory again: a copy of a region file made while a process
    /// had it open, or a file a machine crash left while it was open. Nothing in it is
    /// changed. (Opening the original, in the same boot, is not refused: its processes'
    /// deaths are handled as usual.) Its data can still be read, without its allocator,
    /// through [`crate::SharedCohort::salvage`].
    Unclean {
        /// What was found.
        reason: &'static str,
    },
    /// Opening: the region's state (its pool, lists, registry, unit states and heaps) is
    /// not what its last process left: a byte changed while nobody had it open (damage on
    /// disk, a stray write into the file). Following it could hand out memory twice or
    /// reach a wild address, so it is refused; nothing in it is changed. Remove it and
    /// create it again, or restore it from a copy made while nobody had it open; its data
    /// can still be read through [`crate::SharedCohort::salvage`].
    StateDamaged {
        /// The state's hash when its last process left.
        expected: u64,
        /// The state's hash now.
        found: u64,
    },
    /// Opening: the region's blocks are not what their headers and lists say (a header
    /// names no class or a bump past its block, a list of blocks or a medium run table is
    /// wrong; with [`crate::OpenOptions::check_lists_at_open`], also a free slot's link
    /// that names no free slot of its block, a list that is a cycle or of another length
    /// than the block's counts): bytes of its blocks changed while nobody had it open, past
    /// what the state seal covers. The first process to open a region nobody has open
    /// checks it before anything is allocated, and refuses it rather than follow what it
    /// names (a damaged free slot's link found later, when its block is first taken, takes
    /// that block out of use instead: [`crate::OpenOptions::check_blocks`]). It attached
    /// and left again (its attach table's generation moved on; no seal is written, so the
    /// next opener checks it again); nothing was allocated or freed. Its data can still be
    /// read through [`crate::SharedCohort::salvage`].
    BlocksDamaged {
        /// The damaged block's offset in the region.
        block_offset: u64,
        /// What the check found (its `block` is the address in the refused mapping).
        error: Box<crate::VerifyError>,
    },
    /// Opening: another process (`holder_pid`, alive) kept the region's attach lock, which
    /// an attach or a leave holds for milliseconds, for longer than the opener's timeout
    /// (`waited`): it is stopped, or stuck.
    Busy {
        /// The process holding the lock.
        holder_pid: u64,
        /// How long the opener waited.
        waited: Duration,
    },
    /// Opening: the region did not become ready. Its formatting process died before it
    /// finished (then destroy the region and create it again), or did not finish within the
    /// time allowed, or (creator pid 0) nothing ever wrote its header.
    NotReady {
        /// How long the opener waited.
        waited: Duration,
        /// The formatting process's pid, when its header said (0 when the header was still
        /// unwritten).
        creator_pid: u64,
        /// Whether that process is still running.
        creator_alive: bool,
    },
    /// Opening: this process has the region open already.
    /// A process opens a region once at a time: share the [`crate::SharedCohort`] it has
    /// (it is `Sync`: an `Arc` or a reference), or leave it before opening again.
    AlreadyOpen {
        /// The name given.
        name: String,
    },
    /// The instance could not be built on the region: the region's attach table is full (at most
    /// `ATTACH_SLOTS`, 249, processes have it open at once), its page size is not one cohort supports, the OS
    /// refused memory for this process's view, or the process's instance ids are used up.
    Attach,
    /// Creating or opening: the region's options ([`crate::RegionOptions`]) cannot be had:
    /// one this kind of region cannot have, or one the OS refused (for an opener, the lock
    /// or the huge-page advice its creator asked for, applied to its own mapping).
    Placement(crate::PlacementError),
    /// The OS refused a call.
    Os {
        /// What was being done.
        op: &'static str,
        /// The OS's error.
        error: io::Error,
    },
}

impl From<crate::PlacementError> for RegionError {
    fn from(e: crate::PlacementError) -> RegionError {
        RegionError::Placement(e)
    }
}

impl RegionError {
    /// The error for the OS refusing `op`.
    pub(crate) fn os(op: &'static str, error: io::Error) -> RegionError {
        RegionError::Os { op, error }
    }
}

impl fmt::Display for RegionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionError::InvalidName { name, reason } => {
                write!(f, "invalid region name {name:?}: {reason}")
            }
            RegionError::AlreadyExists { name } => write!(
                f,
                "a region named {name:?} already exists (ask to replace it, or open it)"
            ),
            RegionError::NotFound { name } => write!(f, "no region named {name:?}"),
            RegionError::Capacity {
                requested,
                minimum: Some(minimum),
            } => write!(
                f,
                "a capacity of {requested} bytes is too small: at least {minimum} are needed \
                 (header, instance state and one block)"
            ),
            RegionError::Capacity {
                requested,
                minimum: None,
            } => write!(f, "a capacity of {requested} bytes is too large"),
            RegionError::Truncated { expected, found } => write!(
                f,
                "the region is truncated: {found} bytes where its header needs {expected}"
            ),
            RegionError::BadMagic { found } => write!(
                f,
                "not a cohort region: its magic number is {found:02x?}, not {:02x?}",
                super::header::MAGIC.to_le_bytes()
            ),
            RegionError::Version {
                what,
                expected,
                found,
            } => write!(
                f,
                "the region has {what} layout version {found}; this code reads version {expected}"
            ),
            RegionError::Corrupt { expected, found } => write!(
                f,
                "the region's header is damaged: its checksum is {found:#018x}, its contents \
                 hash to {expected:#018x}"
            ),
            RegionError::LifetimeClasses { expected, found } => write!(
                f,
                "the region has {found} lifetime classes; the opener's type has {expected}"
            ),
            RegionError::LifetimeNames { expected, found } => write!(
                f,
                "the region's lifetime classes have other names (hash {found:#018x}) than the \
                 opener's type's (hash {expected:#018x}), in index order"
            ),
            RegionError::Geometry {
                field,
                expected,
                found,
            } => write!(
                f,
                "the region's {field} is {found}; this code expects {expected}"
            ),
            RegionError::Root {
                slot,
                offset,
                capacity,
            } => write!(
                f,
                "root slot {slot} holds offset {offset:#x}, outside the region's {capacity} bytes"
            ),
            RegionError::Unclean { reason } => {
                write!(f, "the region was not left cleanly and is refused: {reason}")
            }
            RegionError::StateDamaged { expected, found } => write!(
                f,
                "the region's state was damaged while nobody had it open: it hashes to \
                 {found:#018x}, its last process left it hashing to {expected:#018x}"
            ),
            RegionError::BlocksDamaged {
                block_offset,
                error,
            } => {
                write!(
                    f,
                    "the region's blocks were damaged while nobody had it open: block at \
                     offset {block_offset:#x}"
                )?;
                if let Some(c) = error.size_class {
                    write!(f, " (size class {c})")?;
                }
                write!(f, ": {}", error.problem)
            }
            RegionError::Busy { holder_pid, waited } => write!(
                f,
                "process {holder_pid} held the region's attach lock for longer than \
                 {waited:?} (stopped or stuck)"
            ),
            RegionError::NotReady {
                waited,
                creator_pid,
                creator_alive,
            } => {
                write!(f, "the region was not ready after {waited:?}: ")?;
                match (creator_pid, creator_alive) {
                    (0, _) => write!(f, "its header was never written"),
                    (pid, true) => write!(f, "process {pid} is still formatting it"),
                    (pid, false) => write!(
                        f,
                        "process {pid} died while formatting it (destroy it and create it again)"
                    ),
                }
            }
            RegionError::AlreadyOpen { name } => write!(
                f,
                "this process has the region named {name:?} open already (a process opens \
                 a region once at a time: share the SharedCohort it has, or leave it first)"
            ),
            RegionError::Attach => write!(
                f,
                "the allocator instance could not be built on the region (249 processes \
                 have it open, an unsupported page size, out of memory, or no instance id \
                 left)"
            ),
            RegionError::Os { op, error } => write!(f, "{op} failed: {error}"),
            RegionError::Placement(e) => write!(f, "the region's options: {e}"),
        }
    }
}

impl std::error::Error for RegionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RegionError::Os { error, .. } => Some(error),
            RegionError::Placement(e) => Some(e),
            RegionError::BlocksDamaged { error, .. } => Some(&**error),
            _ => None,
        }
    }
}
