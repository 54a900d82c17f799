//! Regions that outlive and span processes: named shared memory and files, with their
//! lifecycle (create, open, leave, destroy), their header, and references that stay true
//! at any address.
//!
//! A **named region** is one allocator instance laid out in memory that other processes
//! can map: a POSIX shared-memory object ([`Place::SharedMemory`], gone when destroyed or
//! when the machine restarts) or a file ([`Place::File`], which persists). Its layout, from
//! the base (`header` module):
//!
//! ```text
//! [0, HEADER_BYTES)               the header: magic, versions, geometry, state word, creator, root slots
//! [state_offset, + state_len)     the instance's state (pool, registry, heaps), by offsets;
//!                                 state_offset = max(HEADER_BYTES, page size)
//! [.., + seal)                    the middle seal page (seal = state_offset bytes)
//! [blocks_offset, capacity - seal) the blocks, blocks_offset = round_up(state_offset + state_len + seal, BLOCK_SIZE)
//! [capacity - seal, capacity)     the tail seal page
//! ```
//!
//! The header page also holds the attach table (`attach` module): who has the region open,
//! under which boot and file; with the seals it lets an open refuse a copy made while the
//! region was in use, or a file a machine crash left open ([`RegionError::Unclean`]).
//!
//! Each process maps the whole region at a base aligned to `BLOCK_SIZE` that its kernel
//! picks, so the base differs between processes (and between two openings in one
//! process); nothing in the region holds an address: `ptr = base + off` in every mapping.
//!
//! **Lifecycle.** [`SharedCohort::create`] takes the name exclusively (exactly one of
//! racing creators succeeds), sizes and formats the region, and marks it ready;
//! [`SharedCohort::open`] waits (bounded) until it is ready, checks every word of the header
//! against what this code would write and refuses anything else, leaving the region as it
//! was; [`SharedCohort::leave`] (or dropping it) gives this process's heaps back to the
//! region and unmaps it: the region and everything allocated in it stay;
//! [`SharedCohort::destroy`] leaves and deletes the name (the memory goes when the last
//! process unmaps it).
//!
//! **References.** An object in a region refers to another by [`Off<T>`], its offset from
//! the base; [`SharedCohort::ptr`] and [`SharedCohort::offset_of`] convert. The header holds
//! [`ROOT_SLOTS`] root slots: offsets a process that opens the region finds its data by.

mod attach;
mod error;
mod header;
mod mapping;
mod named;
mod salvage;
mod state_sum;

pub use error::RegionError;
pub use header::ROOT_SLOTS;
pub use named::SharedCohort;
pub use salvage::Salvage;

use crate::os::shared_mem::Kind;
use crate::region::options::RegionOptions;
use mapping::Name;
use std::path::Path;
use std::time::Duration;

/// Where a named region lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place<'a> {
    /// POSIX named shared memory: `/name` (one `/`, first), visible to every process of the
    /// machine (of this user, by its permissions) until destroyed or the machine restarts.
    SharedMemory(&'a str),
    /// A file, which holds the region across restarts.
    File(&'a Path),
}

impl Place<'_> {
    fn name(&self) -> Result<Name, RegionError> {
        use std::os::unix::ffi::OsStrExt;
        match self {
            Place::SharedMemory(name) => Name::new(Kind::SharedMemory, name.as_bytes()),
            Place::File(path) => Name::new(Kind::File, path.as_os_str().as_bytes()),
        }
    }
}

/// How [`SharedCohort::create`] makes a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateOptions {
    capacity: usize,
    replace: bool,
    preallocate: bool,
    region: Option<RegionOptions>,
}

impl CreateOptions {
    /// A region of `capacity` bytes (rounded up to whole 2 MiB blocks, never more, plus the
    /// tail seal's page; up to a block less where the state would end just past a block
    /// boundary: [`SharedCohort::capacity`] says what was made): the header and the
    /// instance's state take the first blocks, the rest holds blocks of slots, one per
    /// (size class, lifetime class, process or join) in use at least. The state is several
    /// MiB (its heaps for every process and join, and in a checked build one bit per byte
    /// of the blocks): too small a capacity is [`RegionError::Capacity`], which names the
    /// least that holds one block. The object or file is sized to it at once but takes
    /// memory or disk only where written.
    pub fn new(capacity: usize) -> CreateOptions {
        CreateOptions {
            capacity,
            replace: false,
            preallocate: false,
            region: None,
        }
    }

    /// A region made as `options` say: its blocks hold `options.capacity()` bytes (whole
    /// 2 MiB blocks, at least one; the header and the state come on top), committed,
    /// prefaulted, locked in RAM, bound to NUMA nodes or in transparent huge pages as asked.
    /// Every process that opens the region later applies what is per mapping (the lock,
    /// the huge-page advice, the prefault of its own page tables) and keeps memory as its
    /// creator asked (a committed region never gives memory back). A committed region's
    /// storage is allocated at creation, as [`CreateOptions::preallocate`] does.
    ///
    /// Not available ([`RegionError::Placement`] with
    /// [`PlacementError::Unsupported`](crate::PlacementError::Unsupported), before anything
    /// is created): a fallback (a private mapping would be invisible to the other
    /// processes), explicit huge pages, and for a file transparent huge pages or a NUMA
    /// binding (a file's page cache takes neither).
    ///
    /// ```
    /// use cohort::{CreateOptions, Place, RegionOptions, SharedCohort};
    /// # let name = format!("/cohort-doc-opt-{}", std::process::id());
    /// let options = RegionOptions::new(8 << 20).prefault(true);
    /// let region = SharedCohort::<()>::create(Place::SharedMemory(&name), CreateOptions::from_region(options))?;
    /// let p = region.malloc(100, ()); // no page fault: the region was faulted in
    /// assert!(!p.is_null());
    /// // SAFETY: allocated above with this size and class.
    /// unsafe { region.free(p, 100, ()) };
    /// region.destroy()?;
    /// # Ok::<(), cohort::RegionError>(())
    /// ```
    pub fn from_region(options: RegionOptions) -> CreateOptions {
        CreateOptions {
            capacity: options.capacity(),
            replace: false,
            preallocate: options.committed(),
            region: Some(options),
        }
    }

    /// Whether to delete a region (or any file) of the same name first. Off by default:
    /// creating over an existing name is then [`RegionError::AlreadyExists`]. Processes
    /// that have the old region open keep it (until they leave); the name is the new one's.
    pub fn replace(mut self, replace: bool) -> CreateOptions {
        self.replace = replace;
        self
    }

    /// Whether to allocate the region's whole storage (RAM for shared memory, disk for a
    /// file) when it is created. Off by default: the region is sparse and takes storage
    /// as its pages are first written, and if the storage is full then, the writing
    /// process gets `SIGBUS`. On, a lack of space is [`RegionError::Os`] at creation
    /// instead, and the capacity is taken at once.
    pub fn preallocate(mut self, preallocate: bool) -> CreateOptions {
        self.preallocate = preallocate;
        self
    }
}

/// How [`SharedCohort::open`] joins a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    timeout: Duration,
    cgroup_hint: usize,
    check_blocks: bool,
    check_lists_at_open: bool,
}

impl Default for OpenOptions {
    fn default() -> OpenOptions {
        OpenOptions::new()
    }
}

impl OpenOptions {
    /// Waits at most 5 s for the region's creator, concurrency group 0, checks the blocks
    /// of a region nobody has open.
    pub fn new() -> OpenOptions {
        OpenOptions {
            timeout: Duration::from_secs(5),
            cgroup_hint: 0,
            check_blocks: true,
            check_lists_at_open: false,
        }
    }

    /// Whether the blocks of a region nobody has open are checked (on by default). A free
    /// slot's link damaged while nobody had the region open (past each block's first page,
    /// which the state seal covers) would otherwise be followed by an allocation, which
    /// hands out what it names. On, the first process to open such a region walks its
    /// blocks' headers, the lists of blocks and the medium run tables at once (holding the
    /// region's attach lock: no page past a block's first is read; damage there is
    /// [`RegionError::BlocksDamaged`]), and starts a new check generation: each block's
    /// slot lists are then walked link by link once, by whichever process first takes the
    /// block to allocate from it. A block found damaged then is taken out of use for good
    /// (its slots are never handed out again; its live objects stay readable and may be
    /// freed): [`crate::Cohort::verify`] names it, [`crate::Stats::damaged_blocks`] counts
    /// it, and allocations go on from other blocks. Off, neither is done: for a file the
    /// caller trusts (written by this program and left, on a disk it trusts), whose blocks
    /// are then followed as they are.
    pub fn check_blocks(mut self, check: bool) -> OpenOptions {
        self.check_blocks = check;
        self
    }

    /// With [`OpenOptions::check_blocks`], walk every block's slot lists at the open, before
    /// anything is allocated, and refuse a damaged one with [`RegionError::BlocksDamaged`]
    /// (off by default: the lists are checked block by block when first taken). The walk
    /// reads every free slot's first word (a file not in the page cache is read wherever
    /// it has free slots) while other openers wait: about 0.35 s a GiB of 16-byte slots
    /// half free, 0.05 s a GiB of 1 KiB ones, in the page cache.
    pub fn check_lists_at_open(mut self, at_open: bool) -> OpenOptions {
        self.check_lists_at_open = at_open;
        self
    }

    /// How long to wait for a region that another process is still formatting before
    /// [`RegionError::NotReady`]. A region that is ready is opened at once whatever this
    /// is; a region whose creator died is reported at once.
    pub fn timeout(mut self, timeout: Duration) -> OpenOptions {
        self.timeout = timeout;
        self
    }

    /// The concurrency group of this process's joins ([`SharedCohort::join_group`]):
    /// processes that run on the same cores should pass the same hint, so that a join
    /// adopts the heap a previous one of its group left in the region.
    pub fn cgroup_hint(mut self, hint: usize) -> OpenOptions {
        self.cgroup_hint = hint;
        self
    }
}
