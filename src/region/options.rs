//! Region options: a region's capacity and where its memory comes from and how it
//! behaves, one builder for every backend (a private region, `Cohort::with_options`; a
//! shared-anonymous one, `Cohort::shared_anonymous_with`; memory the caller provides,
//! `Cohort::format_in`; a named shared-memory or file region, `CreateOptions::from_region`).
//!
//! The options are recorded in the region's state ([`RegionOptions::words`]): a process
//! that attaches the region later (opens a named one, `Cohort::attach_in`) keeps memory
//! as its maker asked and applies to its own mapping what is per mapping (the huge-page
//! advice, the lock, the prefault of its page tables). Invariant: every process's view of
//! a region has the backing its recorded options give.
//!
//! What a region shared between processes cannot have is refused before anything is made
//! ([`PlacementError::Unsupported`]): a fallback (a private mapping of one process,
//! which the others could not free), explicit huge pages (not a hugetlbfs object), and for
//! a file transparent huge pages and a NUMA binding (a file's page cache takes neither).
//!
//! Every option is applied to the region's units, in this order, when the region is made,
//! and a refusal is a [`PlacementError`] naming the option and the OS's error: transparent
//! huge pages (`MADV_HUGEPAGE`), the NUMA binding (`mbind`), the commit and the prefault
//! (`MADV_POPULATE_WRITE`), then the lock (`mlock`; as pages are first touched unless
//! prefaulted). A region committed up front (commit, prefault, lock or explicit huge pages)
//! never gives memory back to the OS: a unit given back keeps its pages, so no later
//! allocation takes a page fault, and its use of memory is fixed at creation.

use super::{Backing, GiveBack};
use crate::os::placement;
use core::fmt;

/// Huge pages for a region's units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HugePages {
    /// The system's default (transparent huge pages where `enabled` is `always`).
    #[default]
    Default,
    /// Transparent huge pages asked for (`MADV_HUGEPAGE`): 2 MiB blocks, aligned to their
    /// size, fit them exactly.
    Transparent,
    /// Explicit 2 MiB huge pages (`MAP_HUGETLB`), from the pool the administrator reserves
    /// (`/proc/sys/vm/nr_hugepages`); private regions only. Committed at creation.
    Explicit,
}

/// How a region is made: its capacity, and where its memory comes from and how it
/// behaves (see the module docs of `region::options`). Built by chaining:
///
/// ```
/// use cohort::{Cohort, RegionOptions};
/// let options = RegionOptions::new(16 << 20).prefault(true);
/// let a = Cohort::<()>::with_options(&options).expect("16 MiB, committed and faulted in");
/// let p = a.malloc(5 << 20, ()); // large allocations come from the region too
/// assert!(!p.is_null() && a.in_region(p));
/// // SAFETY: allocated above with this size and class.
/// unsafe { a.free(p, 5 << 20, ()) };
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionOptions {
    capacity: usize,
    commit: bool,
    prefault: bool,
    fallback: bool,
    lock: bool,
    nodes: u64,
    huge: HugePages,
}

impl RegionOptions {
    /// A region of `capacity` bytes of blocks (rounded down to whole 2 MiB units, at least
    /// one): every allocation, large ones included, comes from it, and past it allocation
    /// returns null. Committed as used, given back when freed, by default.
    pub const fn new(capacity: usize) -> RegionOptions {
        RegionOptions {
            capacity,
            commit: false,
            prefault: false,
            fallback: false,
            lock: false,
            nodes: 0,
            huge: HugePages::Default,
        }
    }

    /// Commit the whole capacity at creation (so that overcommit cannot fail it later),
    /// and never give memory back to the OS.
    pub const fn commit(mut self, commit: bool) -> RegionOptions {
        self.commit = commit;
        self
    }

    /// Commit and fault in the whole capacity at creation: after it, no allocation takes a
    /// page fault. Implies [`RegionOptions::commit`].
    pub const fn prefault(mut self, prefault: bool) -> RegionOptions {
        self.prefault = prefault;
        self
    }

    /// When the region is full, serve the request from a private mapping of its own
    /// instead of returning null. Frees, sized or not, find it. For a region one process
    /// uses alone: a private one, or memory the caller formats for this process only
    /// (`Cohort::format_in`; `Cohort::attach_in` then refuses the region). A region shared
    /// between processes refuses it ([`PlacementError::Unsupported`]): another process
    /// could not free such a mapping.
    pub const fn fallback(mut self, fallback: bool) -> RegionOptions {
        self.fallback = fallback;
        self
    }

    /// Lock the region's memory in RAM (`mlock`): its pages as they are first touched, or
    /// all of them at creation with [`RegionOptions::prefault`]. Implies
    /// [`RegionOptions::commit`]. Fails at creation when `RLIMIT_MEMLOCK` is smaller than
    /// the capacity.
    pub const fn lock(mut self, lock: bool) -> RegionOptions {
        self.lock = lock;
        self
    }

    /// Bind the region's memory to the NUMA nodes of `nodes` (bit `n` for node `n`, nodes
    /// below 64; 0: no binding). A node the machine does not have fails at creation.
    pub const fn numa_nodes(mut self, nodes: u64) -> RegionOptions {
        self.nodes = nodes;
        self
    }

    /// Huge pages for the region's units.
    pub const fn huge_pages(mut self, huge: HugePages) -> RegionOptions {
        self.huge = huge;
        self
    }

    /// The capacity asked for, in bytes.
    pub const fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether a full region falls back to private mappings.
    pub const fn falls_back(&self) -> bool {
        self.fallback
    }

    /// True when the region is committed at creation and keeps its memory.
    pub const fn committed(&self) -> bool {
        self.commit || self.prefault || self.lock || matches!(self.huge, HugePages::Explicit)
    }

    /// The huge pages asked for.
    pub const fn huge(&self) -> HugePages {
        self.huge
    }

    /// True when the whole capacity is faulted in at creation.
    pub const fn prefaulted(&self) -> bool {
        self.prefault
    }

    /// True when the region's memory is locked in RAM.
    pub const fn locked(&self) -> bool {
        self.lock
    }

    /// The NUMA nodes the region's memory is bound to (bit `n` for node `n`; 0: none).
    pub const fn nodes(&self) -> u64 {
        self.nodes
    }

    /// The backing of a region made with these options, from the backend's own (a region
    /// mapped writable: nothing to commit).
    pub(crate) fn backing(&self, base: Backing) -> Backing {
        Backing {
            commit: false,
            give_back: if self.committed() {
                GiveBack::Keep
            } else {
                base.give_back
            },
            serves_large: true,
            fresh: base.fresh,
            fallback: self.fallback,
            one_address: base.one_address,
        }
    }

    /// The options as the two words a region's state keeps ([`super::RegionState`]'s
    /// `options`): switches and huge pages in the first (bit 0 set: recorded), the NUMA
    /// nodes in the second. The capacity is the region's own, not kept.
    pub(crate) fn words(&self) -> [u64; 2] {
        let huge = match self.huge {
            HugePages::Default => 0,
            HugePages::Transparent => 1,
            HugePages::Explicit => 2,
        };
        let switches = [self.commit, self.prefault, self.fallback, self.lock];
        let bits = switches
            .iter()
            .enumerate()
            .fold(1 | huge << 5, |w, (i, &on)| w | u64::from(on) << (i + 1));
        [bits, self.nodes]
    }

    /// The options [`RegionOptions::words`] kept, for a region of `capacity` (the
    /// defaults when none were recorded).
    pub(crate) fn from_words(capacity: usize, [bits, nodes]: [u64; 2]) -> RegionOptions {
        let on = |i: u32| bits & 1 << i != 0;
        RegionOptions {
            capacity,
            commit: on(1),
            prefault: on(2),
            fallback: on(3),
            lock: on(4),
            nodes,
            huge: match bits >> 5 & 3 {
                1 => HugePages::Transparent,
                2 => HugePages::Explicit,
                _ => HugePages::Default,
            },
        }
    }

    /// The options a region's state keeps (`words`, see [`RegionOptions::words`]) for a
    /// region of `capacity`; `None` when none were recorded (a region made without
    /// options).
    pub(crate) fn recorded(capacity: usize, words: [u64; 2]) -> Option<RegionOptions> {
        (words[0] & 1 != 0).then(|| RegionOptions::from_words(capacity, words))
    }

    /// Sets `region`'s backing as the options say, over the backend's own `base`: with
    /// `made` (a new region) those options, recorded in its state `st`; else (a region
    /// attached) the options its maker recorded, which it returns (the defaults when none
    /// were: a region made without options).
    ///
    /// # Safety
    /// As [`super::Region::set_backing`]: no other thread of this process uses the region yet.
    pub(crate) unsafe fn adopt(
        region: &super::Region,
        st: &mut super::RegionState,
        base: Backing,
        made: Option<&RegionOptions>,
    ) -> RegionOptions {
        let options = match made {
            Some(o) => {
                st.options = o.words();
                *o
            }
            None => RegionOptions::from_words(region.len(), st.options),
        };
        // SAFETY: the caller's.
        unsafe { region.set_backing(options.backing(base)) };
        options
    }

    /// When the options prefault: faults in what the view keeps outside the region (its
    /// counter table: `fault_in`, which gives the OS's error number), reported as the
    /// prefault's error.
    pub(crate) fn prefault_view(
        &self,
        fault_in: impl FnOnce() -> Result<(), i32>,
    ) -> Result<(), PlacementError> {
        match self.prefault {
            true => fault_in().map_err(|errno| PlacementError::Os {
                what: "prefault",
                errno,
            }),
            false => Ok(()),
        }
    }

    /// Refuses what a region shared between processes cannot have (`file`: one in a
    /// file): a fallback (a private mapping of one process, which the others could not
    /// free), explicit huge pages (a named or anonymous shared object is not on
    /// hugetlbfs); for a file, transparent huge pages and a NUMA binding too (the page
    /// cache of a regular file takes neither: the kernel would ignore them).
    pub(crate) fn check_shared(&self, file: bool) -> Result<(), PlacementError> {
        let refused = if self.fallback {
            Some("fallback (a private mapping would be invisible to the other processes)")
        } else if self.huge == HugePages::Explicit {
            Some("explicit huge pages (the region is not on hugetlbfs)")
        } else if file && self.huge == HugePages::Transparent {
            Some("transparent huge pages for a file (the page cache of a file takes none)")
        } else if file && self.nodes != 0 {
            Some("a NUMA binding for a file (its page cache follows no mapping's policy)")
        } else {
            None
        };
        refused.map_or(Ok(()), |option| Err(PlacementError::Unsupported { option }))
    }

    /// Applies the options to the region's whole mapping `[p, p + len)` (mapped readable
    /// and writable, page aligned): huge pages, the NUMA binding, the prefault and the lock,
    /// in that order.
    ///
    /// # Safety
    /// The range is a mapping of ours that nobody else uses yet.
    pub(crate) unsafe fn apply(&self, p: *mut u8, len: usize) -> Result<(), PlacementError> {
        // SAFETY: forwarded.
        unsafe { self.apply_to_view(p, len, true) }
    }

    /// What a process attaching an existing region made with these options applies to its
    /// own mapping `[p, p + len)` of it: transparent huge pages and the lock are per
    /// mapping, and the prefault faults this process's page tables in (the memory is there
    /// already); the NUMA binding was made once, for every process.
    ///
    /// # Safety
    /// The range is this process's mapping of the region, mapped readable and writable
    /// (others may be using the region: nothing here changes a byte of it).
    pub(crate) unsafe fn apply_attached(
        &self,
        p: *mut u8,
        len: usize,
    ) -> Result<(), PlacementError> {
        // SAFETY: forwarded.
        unsafe { self.apply_to_view(p, len, false) }
    }

    /// [`RegionOptions::apply`], the binding only when `bind`.
    unsafe fn apply_to_view(
        &self,
        p: *mut u8,
        len: usize,
        bind: bool,
    ) -> Result<(), PlacementError> {
        // SAFETY: the caller's range.
        unsafe {
            if self.huge == HugePages::Transparent {
                placement::advise_huge(p, len)
                    .map_err(|errno| PlacementError::HugePages { errno })?;
            }
            if bind && self.nodes != 0 {
                placement::bind(p, len, self.nodes).map_err(|errno| PlacementError::Numa {
                    nodes: self.nodes,
                    errno,
                })?;
            }
            if self.prefault {
                placement::prefault(p, len, !bind).map_err(|errno| PlacementError::Os {
                    what: "prefault",
                    errno,
                })?;
            }
            if self.lock {
                placement::lock(p, len, !self.prefault).map_err(|errno| PlacementError::Lock {
                    bytes: len,
                    limit: placement::memlock_limit(),
                    errno,
                })?;
            }
        }
        Ok(())
    }
}

/// Why a region could not be made with its [`RegionOptions`], or why memory could not be
/// formatted as a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlacementError {
    /// The capacity does not fit in the address space (or holds no block).
    Capacity {
        /// The capacity asked for.
        asked: usize,
    },
    /// The OS refused memory (`what`: the call) with `errno`.
    Os {
        /// The operation refused: "map", "commit", "prefault".
        what: &'static str,
        /// The OS's error number.
        errno: i32,
    },
    /// `mlock` refused `bytes` (`RLIMIT_MEMLOCK` is `limit` bytes).
    Lock {
        /// The bytes to lock.
        bytes: usize,
        /// The soft `RLIMIT_MEMLOCK` (`u64::MAX`: unlimited).
        limit: u64,
        /// The OS's error number (`ENOMEM` or `EPERM`: the limit).
        errno: i32,
    },
    /// `mbind` refused the node set (`EINVAL`: a node the machine does not have; `ENOSYS`:
    /// no NUMA support).
    Numa {
        /// The nodes asked for, bit `n` for node `n`.
        nodes: u64,
        /// The OS's error number.
        errno: i32,
    },
    /// Huge pages refused: `MADV_HUGEPAGE` (`EINVAL`: no transparent huge pages) or
    /// `MAP_HUGETLB` (`ENOMEM`: too few huge pages reserved).
    HugePages {
        /// The OS's error number.
        errno: i32,
    },
    /// Memory given to format is smaller than the footprint of its capacity.
    TooSmall {
        /// The bytes a region of that capacity needs (`Cohort::footprint`).
        needed: usize,
        /// The bytes given.
        given: usize,
    },
    /// Memory given to format is not aligned as a region needs.
    Misaligned {
        /// The alignment a region needs (2 MiB).
        align: usize,
        /// The address given.
        addr: usize,
    },
    /// An option this backend cannot have (named).
    Unsupported {
        /// The option.
        option: &'static str,
    },
    /// The memory given holds no region of this geometry (attaching), or the process has
    /// one of it already, or is out of instance ids.
    Refused,
}

impl fmt::Display for PlacementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let os = |errno: i32| std::io::Error::from_raw_os_error(errno);
        match *self {
            PlacementError::Capacity { asked } => {
                write!(f, "cohort: a region of {asked} bytes does not fit")
            }
            PlacementError::Os { what, errno } => {
                write!(f, "cohort: the OS refused to {what} the region: {}", os(errno))
            }
            PlacementError::Lock { bytes, limit, errno } => write!(
                f,
                "cohort: mlock of {bytes} bytes refused (RLIMIT_MEMLOCK {limit} bytes): {}",
                os(errno)
            ),
            PlacementError::Numa { nodes, errno } => write!(
                f,
                "cohort: mbind to NUMA nodes {nodes:#x} refused: {}",
                os(errno)
            ),
            PlacementError::HugePages { errno } => {
                write!(f, "cohort: huge pages refused: {}", os(errno))
            }
            PlacementError::TooSmall { needed, given } => write!(
                f,
                "cohort: {given} bytes given, a region of this capacity needs {needed}"
            ),
            PlacementError::Misaligned { align, addr } => write!(
                f,
                "cohort: memory at {addr:#x} is not aligned to {align} bytes, as a region needs"
            ),
            PlacementError::Unsupported { option } => {
                write!(f, "cohort: option {option} is not available for this region")
            }
            PlacementError::Refused => write!(
                f,
                "cohort: the memory holds no region of this geometry, or this process has it already"
            ),
        }
    }
}

impl std::error::Error for PlacementError {}
