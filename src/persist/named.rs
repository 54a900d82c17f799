//! [`SharedCohort`]: an allocator instance on a named region, its lifecycle, its root slots
//! and the conversions between pointers and offsets.

use super::attach::Attachment;
use super::error::RegionError;
use super::header::{self, Expected, Header, Layout, ROOT_SLOTS};
use super::mapping::{Mapping, Name};
use super::{CreateOptions, OpenOptions, Place};
use crate::api::Cohort;
use crate::instance::{self, Instance, Placement, Refused, CHECKED};
use crate::join::Join;
use crate::lifetime::Lifetime;
use crate::offset::Off;
use crate::os;
use crate::os::shared_mem::{self, Kind};
use crate::pool::{place, AfterLeave, Writing};
use crate::region::options::RegionOptions;
use crate::region::Backing;
use core::alloc::Layout as MemLayout;
use core::fmt;
use core::ops::Deref;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;

/// An allocator with lifetime classes `L` whose memory is a named region: POSIX shared
/// memory that other processes open by name, or a file that outlives every process.
///
/// It dereferences to [`Cohort<L>`]: the malloc family, the `Layout` forms, handles,
/// `release_class`, `scope`, `compact`, `stats`, `verify` and joins work as on a private
/// instance, on memory every process of the region sees (a free by another process is a
/// remote free, as by another thread). Objects refer to each other by [`Off<T>`], not by
/// pointer, since each process maps the region at its own address.
///
/// **Copies and crashes.** A file region is consistent only when every process that opened
/// it has left it. Opening refuses, with [`RegionError::Unclean`], a copy of a region file
/// made while a process had it open (`cp`, a backup, a snapshot) and a file that was open
/// when the machine stopped: their pages may be of different moments, and allocating from
/// them would hand out live objects' memory again. After a machine crash nothing is
/// guaranteed of a file region that was open: its allocator is not recovered, but its
/// data can be read ([`SharedCohort::salvage`]: root slots and bytes, read-only) and
/// copied into a new region. A process killed while the others go on is not a crash: the survivors take
/// its heaps over, and the region opens as usual.
///
/// Dropping it (or [`SharedCohort::leave`]) leaves the region: this process's heaps go back
/// to it and it is unmapped; what was allocated stays for the other processes, or for the
/// next one that opens it.
///
/// ```
/// use cohort::{CreateOptions, OpenOptions, Place, SharedCohort};
/// # let name = format!("/cohort-doc-{}", std::process::id());
/// let place = Place::SharedMemory(&name);
/// let region = SharedCohort::<()>::create(place, CreateOptions::new(64 << 20))?;
/// let off = region.new_in(42u64, ()).expect("memory");
/// region.set_root(0, Some(off));
/// region.leave()?;
///
/// // Later (in this process or any other), the value is found through the root.
/// let region = SharedCohort::<()>::open(place, OpenOptions::new())?;
/// let found = region.root::<u64>(0).unwrap();
/// assert_eq!(found, off);
/// // SAFETY: the root names a live u64 of the region.
/// assert_eq!(unsafe { *region.get(found) }, 42);
/// // SAFETY: freed once, with its type and class.
/// unsafe { region.free_in(found, ()) };
/// region.set_root::<u64>(0, None);
/// assert!(region.is_empty());
/// region.destroy()?;
/// # Ok::<(), cohort::RegionError>(())
/// ```
pub struct SharedCohort<L: Lifetime = ()> {
    /// Its view of the region holds the attachment (see `drop_attachment`).
    cohort: Cohort<L>,
    base: *mut u8,
    layout: Layout,
    name: Name,
    cgroup_hint: usize,
}

// SAFETY: `base` addresses the region, mapped for as long as `cohort` lives; the header's
// words are atomics and everything else is the instance's, itself Send and Sync.
unsafe impl<L: Lifetime> Send for SharedCohort<L> {}
// SAFETY: as above.
unsafe impl<L: Lifetime> Sync for SharedCohort<L> {}

impl<L: Lifetime> Deref for SharedCohort<L> {
    type Target = Cohort<L>;

    fn deref(&self) -> &Cohort<L> {
        &self.cohort
    }
}

/// `SharedCohort { name, capacity, base, cohort }`.
impl<L: Lifetime> fmt::Debug for SharedCohort<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedCohort")
            .field("name", &self.name.shown)
            .field("capacity", &self.layout.capacity)
            .field("base", &self.base)
            .field("cohort", &self.cohort)
            .finish()
    }
}

/// Unmaps a named region from this process, writing a file's pages first (a
/// `Placement::unmap`: an instance calls it when this process lets the region go, and has
/// nobody to report a failed write to).
///
/// # Safety
/// `[base, base + len)` is the region's mapping, which nothing of this process uses.
unsafe fn unmap_named(base: *mut u8, len: usize, sync: bool) {
    // SAFETY: the caller's guarantee.
    let _ = unsafe { shared_mem::leave(base, len, sync) };
}

/// Drops a boxed attachment (an [`AfterLeave`]): run when the last of this process's
/// references to the region's view goes, after the region is written and unmapped, so that
/// the slot is freed and the state sealed only when no thread of the process can write to
/// it any more (a thread whose heap the leave orphaned gives it back later, at its next
/// look-up or exit).
///
/// # Safety
/// `data` is a `Box<Attachment>` turned into a raw pointer, dropped once, here.
unsafe fn drop_attachment(data: *mut ()) {
    // SAFETY: the caller's guarantee.
    drop(unsafe { Box::from_raw(data.cast::<Attachment>()) });
}

/// A fork child's copy of the boxed attachment (an [`AfterLeave`]) claims a slot of the
/// child's own (see [`Attachment::claim_in_fork_child`]).
///
/// # Safety
/// `data` is a `Box<Attachment>` turned into a raw pointer, not dropped yet; the calling
/// thread is the fork child's only one, so nothing else reads the attachment meanwhile.
unsafe fn attachment_in_fork_child(data: *mut ()) {
    // SAFETY: the caller's guarantee: a live attachment nobody else touches now.
    unsafe { (*data.cast::<Attachment>()).claim_in_fork_child() };
}

/// The layout `new_in` allocates a `T` with (a zero-sized `T` takes one byte).
fn layout_of<T>() -> MemLayout {
    MemLayout::from_size_align(size_of::<T>().max(1), align_of::<T>())
        .expect("a type's size and alignment make a layout")
}

/// What this build expects of a region for `L`.
pub(super) fn expected<L: Lifetime>() -> Expected {
    Expected {
        life_count: L::COUNT,
        life_names: header::names_hash(L::NAMES),
        inside_count: Cohort::<L>::INSIDE_COUNT,
        checked: CHECKED,
        page_size: os::page_size(),
        state_layout: u64::from(place::STATE_LAYOUT),
        state_len: instance::state_len,
    }
}

impl<L: Lifetime> SharedCohort<L> {
    /// Creates the region `place` and formats an empty allocator in it.
    ///
    /// # Errors
    /// [`RegionError::InvalidName`]; [`RegionError::AlreadyExists`] when something has the
    /// name (unless [`CreateOptions::replace`]); [`RegionError::Capacity`] when the capacity
    /// cannot hold the header, the state and one block; [`RegionError::Attach`] or
    /// [`RegionError::Os`] when memory is refused (the name is then deleted again).
    pub fn create(place: Place<'_>, options: CreateOptions) -> Result<SharedCohort<L>, RegionError> {
        if !os::page_size_supported() {
            return Err(RegionError::Attach);
        }
        let name = place.name()?;
        if let Some(region) = &options.region {
            region.check_shared(name.kind == Kind::File)?;
        }
        let expect = expected::<L>();
        let mapping = Mapping::create(&name, &options, &expect)?;
        match Self::attach(mapping, name, 0, Some(options.region.as_ref()), None) {
            Ok(region) => {
                region.header().publish_ready();
                Ok(region)
            }
            Err((e, name)) => {
                // Openers waiting for it fail at once (its creator is known alive, but the
                // name is gone) or find nothing.
                let _ = name.unlink();
                Err(e)
            }
        }
    }

    /// Opens the region `place`, waiting for its creator to finish formatting it, and joins
    /// it.
    ///
    /// # Errors
    /// [`RegionError::NotFound`] when nothing has the name; [`RegionError::NotReady`]
    /// when its creator died while formatting or did not finish in time; a region that is
    /// not one this code reads, named by what differs: [`RegionError::BadMagic`],
    /// [`RegionError::Version`], [`RegionError::Corrupt`], [`RegionError::LifetimeClasses`], [`RegionError::LifetimeNames`]
    /// (another `L`), [`RegionError::Geometry`], [`RegionError::Truncated`],
    /// [`RegionError::Root`]; [`RegionError::Unclean`] for a copy made while the region was
    /// open, or a file left open by a machine crash (see the type's docs). Such a region is
    /// left exactly as it was. [`RegionError::AlreadyOpen`] when this process has the
    /// region open already: a process opens a region once at a time (share the
    /// `SharedCohort` it has: it is `Sync`).
    pub fn open(place: Place<'_>, options: OpenOptions) -> Result<SharedCohort<L>, RegionError> {
        if !os::page_size_supported() {
            return Err(RegionError::Attach);
        }
        let name = place.name()?;
        let mapping = Mapping::open(&name, &expected::<L>(), options.timeout)?;
        let check = options
            .check_blocks
            .then_some(options.check_lists_at_open);
        Self::attach(mapping, name, options.cgroup_hint, None, check).map_err(|(e, _)| e)
    }

    /// Builds the instance on a mapped region: a new one (`made`: with the options it is
    /// made with, if any), whose state it formats, or one made before, whose recorded
    /// options it applies to this process's mapping (and whose blocks it checks when
    /// `check` says so, `Some(lists at open)`, and nobody else has it open:
    /// [`SharedCohort::check_opened`]).
    fn attach(
        mapping: Mapping,
        name: Name,
        cgroup_hint: usize,
        made: Option<Option<&RegionOptions>>,
        check: Option<bool>,
    ) -> Result<SharedCohort<L>, (RegionError, Name)> {
        let (base, layout, attachment) = mapping.into_raw();
        let attachment = attachment.map(|a| Box::into_raw(Box::new(a)));
        // The instance was not built: the mapping is still ours alone, and so is the
        // attachment (its slot freed after the unmap).
        let unbuilt = || {
            // SAFETY: as said above; called once, on a refusal.
            unsafe {
                shared_mem::unmap_shared(base, layout.capacity);
                if let Some(a) = attachment {
                    drop_attachment(a.cast());
                }
            }
        };
        let is_new = made.is_some();
        if let Some(Some(options)) = made {
            // SAFETY: the new region's whole mapping, which nobody uses before it is
            // published ready.
            if let Err(e) = unsafe { options.apply(base, layout.capacity) } {
                unbuilt();
                return Err((e.into(), name));
            }
        }
        let placement = Placement {
            base,
            len: layout.capacity,
            state_offset: layout.state_offset,
            state_len: layout.state_len,
            blocks_offset: layout.blocks_offset,
            unit_count: layout.unit_count,
            is_new,
            sync_on_leave: name.kind == Kind::File,
            private: false,
            unmap: unmap_named,
            after_leave: attachment.map(|a| AfterLeave {
                run: drop_attachment,
                in_fork_child: attachment_in_fork_child,
                data: a.cast(),
            }),
            // SAFETY: the region's mapping, which the instance keeps until it unmaps it.
            write_seal: Some(unsafe { super::attach::write_seal(base, &layout) }),
        };
        // SAFETY: the mapping is shared, read-write and ours; only `unmap_named` unmaps it
        // once the instance has it. A new region reads zero (just sized) and nobody else
        // uses it before it is published ready; an opened one was published ready by a
        // creator that formatted it with the geometry its header names, which the header's
        // validation found equal to this build's.
        match unsafe { Instance::placed_or_why(placement, Cohort::<L>::INSIDE_COUNT, Cohort::<L>::NAMES) } {
            Ok(core) => {
                let pool = core.pool_if_any().expect("a placed instance has its pool");
                // SAFETY: the instance was just made: no other thread of this process uses it.
                let options = unsafe {
                    RegionOptions::adopt(&pool.region, &mut pool.lock().region, Backing::NAMED, made.flatten())
                };
                // A refusal drops `core`: this process leaves the region again.
                let applied = match is_new {
                    true => Ok(()),
                    // SAFETY: this process's whole mapping of the region.
                    false => unsafe { options.apply_attached(base, layout.capacity) },
                };
                if let Err(e) = applied.and_then(|()| options.prefault_view(|| pool.counters.prefault())) {
                    return Err((e.into(), name));
                }
                let region = SharedCohort {
                    cohort: Cohort::from_core(core),
                    base,
                    layout,
                    name,
                    cgroup_hint,
                };
                // SAFETY: the boxed attachment lives until the last of this process's
                // references to the view goes, which `region` holds until `check_opened`
                // returns (it drops it only on a refusal, after the last use).
                match attachment.map(|a| unsafe { &*a }) {
                    Some(a) if a.holds_lock() && check.is_some() => {
                        region.check_opened(a, check == Some(true))
                    }
                    Some(a) => {
                        // SAFETY: the region's mapping, while `region` lives.
                        unsafe { a.unlock(region.base) };
                        Ok(region)
                    }
                    None => Ok(region),
                }
            }
            Err(why) => {
                unbuilt();
                let e = match why {
                    Refused::AttachedHere => RegionError::AlreadyOpen {
                        name: name.shown.clone(),
                    },
                    Refused::Other => RegionError::Attach,
                };
                Err((e, name))
            }
        }
    }

    /// The first process to open a region nobody had open (`a` holds the attach lock, so
    /// none can attach meanwhile) checks it before anything is allocated from it
    /// ([`Cohort::check_at_open`]): every block's header, the lists of blocks, the medium
    /// run tables and the runs, then a new check generation, so that each block's free
    /// lists are walked link by link when first taken (`crate::pool`'s `check`); with
    /// `lists`, those walks now, as [`Cohort::verify`] does. The state seal covers the
    /// state and each block's first page; this covers the links of free slots past it,
    /// which an allocation would otherwise follow wherever they point (RED-77). A failure
    /// leaves the region again, unsealed (the next opener checks it again), and is
    /// [`RegionError::BlocksDamaged`].
    fn check_opened(
        self,
        a: &Attachment,
        lists: bool,
    ) -> Result<SharedCohort<L>, (RegionError, Name)> {
        // SAFETY: no other thread of this process has the instance yet, and no other
        // process has the region open (`a` holds the attach lock, taken when no slot was
        // held but this process's).
        match unsafe { self.cohort.check_at_open(lists) } {
            Ok(_) => {
                // SAFETY: the region's mapping, while `self` lives.
                unsafe { a.unlock(self.base) };
                Ok(self)
            }
            Err(error) => {
                let block_offset = (error.block as u64).wrapping_sub(self.base as u64);
                a.refuse();
                // The leave releases the lock (the attachment goes with `self`).
                let (_, name) = self.leave_naming();
                let error = Box::new(error);
                Err((RegionError::BlocksDamaged { block_offset, error }, name))
            }
        }
    }

    /// Leaves the region: this process's heaps go back to it, a file's changes are written
    /// to disk, and the region is unmapped. Everything allocated in it stays. Dropping a
    /// `SharedCohort` does the same, without reporting a failed write.
    ///
    /// The calling thread's heap goes back at once. A heap another thread of the process
    /// holds (it allocated in the region and lives on) goes back when that thread next
    /// looks up a heap (a first allocation in any instance) or exits; until the last one
    /// has, the process keeps the region mapped and its place in the region's attach table
    /// (then the file is written once more, and, if it was the last process, the state is
    /// sealed).
    ///
    /// # Errors
    /// [`RegionError::Os`] when writing a file's pages to disk failed.
    pub fn leave(self) -> Result<(), RegionError> {
        self.leave_naming().0
    }

    /// [`SharedCohort::leave`], giving back the region's name.
    fn leave_naming(self) -> (Result<(), RegionError>, Name) {
        let synced = match self.name.kind {
            // SAFETY: the region is mapped while `self` lives.
            Kind::File => unsafe { shared_mem::sync(self.base, self.layout.capacity) }
                .map_err(|e| RegionError::os("write the region to its file", e)),
            Kind::SharedMemory => Ok(()),
        };
        let SharedCohort { cohort, name, .. } = self;
        // The last of this process's references to the view drops the attachment.
        drop(cohort);
        (synced, name)
    }

    /// Leaves the region and deletes its name: other processes that have it open keep it
    /// until they leave; nobody can open it any more.
    ///
    /// # Errors
    /// As [`SharedCohort::leave`]; [`RegionError::NotFound`] when someone else deleted the
    /// name meanwhile.
    pub fn destroy(self) -> Result<(), RegionError> {
        let (left, name) = self.leave_naming();
        let unlinked = name.unlink();
        left.and(unlinked)
    }

    /// Deletes the region `place` without opening it (for a region nobody can open: its
    /// creator died while formatting it, or it is of another version).
    ///
    /// # Errors
    /// [`RegionError::InvalidName`], [`RegionError::NotFound`], [`RegionError::Os`].
    pub fn remove(place: Place<'_>) -> Result<(), RegionError> {
        place.name()?.unlink()
    }

    /// Joins with a heap of this process's concurrency group ([`OpenOptions::cgroup_hint`]).
    pub fn join_group(&self) -> Option<Join<'_, L>> {
        self.cohort.join(self.cgroup_hint)
    }

    /// The region's size in bytes (header, state and blocks).
    pub fn capacity(&self) -> usize {
        self.layout.capacity
    }

    fn header(&self) -> &Header {
        // SAFETY: the region is mapped while `self` lives, with its header at the base.
        unsafe { Header::at(self.base) }
    }

    // ---- Offsets ----

    /// The offset of `p` in the region, or `None` when `p` does not point into the region's
    /// blocks (where every allocation lies).
    pub fn offset_of<T>(&self, p: *const T) -> Option<Off<T>> {
        let off = (p as usize).wrapping_sub(self.base as usize);
        if off < self.layout.blocks_offset || off >= self.layout.capacity {
            return None;
        }
        Off::new(off as u64)
    }

    /// The address of `off` in this process's mapping.
    ///
    /// # Panics
    /// When a `T` at `off` would not lie within the region's blocks or would be misaligned:
    /// an offset from another region, or a damaged one.
    pub fn ptr<T>(&self, off: Off<T>) -> *mut T {
        let at = off.get();
        let (lo, hi) = (self.layout.blocks_offset as u64, self.layout.capacity as u64);
        assert!(
            at >= lo
                && at.checked_add(size_of::<T>() as u64).is_some_and(|end| end <= hi)
                && at.is_multiple_of(align_of::<T>() as u64),
            "offset {at:#x} is not that of a {}-byte, {}-aligned value in this region's blocks \
             [{lo:#x}, {hi:#x})",
            size_of::<T>(),
            align_of::<T>(),
        );
        self.base.wrapping_add(at as usize).cast()
    }

    /// The `T` at `off`.
    ///
    /// # Safety
    /// `off` names a live, initialised `T` of this region that nobody changes while the
    /// reference lives (another process included).
    pub unsafe fn get<T>(&self, off: Off<T>) -> &T {
        // SAFETY: the caller's guarantee; `ptr` checked the bounds and alignment.
        unsafe { &*self.ptr(off) }
    }

    /// The `T` at `off`, mutably.
    ///
    /// # Safety
    /// `off` names a live, initialised `T` of this region that nobody else reads or writes
    /// while the reference lives (another process included).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get_mut<T>(&self, off: Off<T>) -> &mut T {
        // SAFETY: the caller's guarantee; `ptr` checked the bounds and alignment.
        unsafe { &mut *self.ptr(off) }
    }

    /// Allocates a `T` in lifetime class `life`, moves `value` there and returns its offset;
    /// `None` when memory is exhausted, or when `T` is aligned above 2 MiB (each process
    /// maps the region at a base aligned to 2 MiB only: no offset keeps a larger alignment
    /// in every process) (`value` is dropped). `T` should hold no pointer or
    /// reference (other processes see different addresses): offsets instead.
    pub fn new_in<T>(&self, value: T, life: L) -> Option<Off<T>> {
        let p = NonNull::new(self.cohort.alloc(layout_of::<T>(), life))?.cast::<T>();
        // SAFETY: a fresh allocation of T's size and alignment.
        unsafe { p.as_ptr().write(value) };
        self.offset_of(p.as_ptr())
    }

    /// Frees the `T` at `off`, allocated by [`SharedCohort::new_in`] in class `life`, without
    /// running its destructor.
    ///
    /// # Safety
    /// `off` came from `new_in` on this region (in any process) with class `life`, and is
    /// not freed yet; nothing uses the value any more.
    pub unsafe fn free_in<T>(&self, off: Off<T>, life: L) {
        // SAFETY: the caller's guarantee: the allocation of new_in, same layout and class.
        unsafe { self.cohort.dealloc(self.ptr(off).cast(), layout_of::<T>(), life) };
    }

    // ---- Root slots ----

    /// Root slot `slot`: the offset stored there, or `None`. The type is the caller's word:
    /// the slot holds a plain offset.
    ///
    /// # Panics
    /// When `slot >= ROOT_SLOTS`.
    pub fn root<T>(&self, slot: usize) -> Option<Off<T>> {
        Off::new(self.root_word(slot).load(Ordering::Acquire))
    }

    /// Stores `off` in root slot `slot` (Release: a process that reads it sees the data
    /// written before); returns what it held.
    ///
    /// # Panics
    /// When `slot >= ROOT_SLOTS`, or `off` is not an offset of this region's blocks.
    pub fn set_root<T>(&self, slot: usize, off: Option<Off<T>>) -> Option<Off<T>> {
        let new = self.checked_root(off);
        let _writing = self.writing_root();
        Off::new(self.root_word(slot).swap(new, Ordering::AcqRel))
    }

    /// Stores `new` in root slot `slot` if it holds `current`; returns what it held, as
    /// `Ok` when the store happened. For processes racing to publish a structure.
    ///
    /// # Panics
    /// As [`SharedCohort::set_root`].
    pub fn compare_exchange_root<T>(
        &self,
        slot: usize,
        current: Option<Off<T>>,
        new: Option<Off<T>>,
    ) -> Result<Option<Off<T>>, Option<Off<T>>> {
        let (current, new) = (current.map_or(0, Off::get), self.checked_root(new));
        let _writing = self.writing_root();
        self.root_word(slot)
            .compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
            .map(Off::new)
            .map_err(Off::new)
    }

    fn checked_root<T>(&self, off: Option<Off<T>>) -> u64 {
        match off {
            Some(off) => {
                self.ptr(off);
                off.get()
            }
            None => 0,
        }
    }

    /// A root's store in progress: marked as every write of the state is
    /// (`crate::pool::write_seal`), so a copy read across it (its blocks read after the
    /// data the new root names was written, and the old one's freed) is refused.
    fn writing_root(&self) -> Writing<'_> {
        let pool = self.cohort.core.pool_if_any();
        pool.expect("a named region's instance has its pool").writing()
    }

    fn root_word(&self, slot: usize) -> &core::sync::atomic::AtomicU64 {
        assert!(
            slot < ROOT_SLOTS,
            "root slot {slot} does not exist: a region has {ROOT_SLOTS}"
        );
        self.header().root(slot)
    }
}
