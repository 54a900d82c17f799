//! Who has a region open, and whether its bytes are of one moment: the attach table in the
//! header page, and the seals.
//!
//! **The contract.** A region's bytes are consistent when nobody has it open, and while
//! they are in this machine's memory (every process sees the one page cache). A copy of a
//! region file made while a process had it open (`cp`, a backup, a snapshot), or the file
//! a machine crash leaves on disk, holds the pages of different moments: its state does
//! not describe its blocks, and allocating from it would hand out live objects' memory
//! again. Such a file is refused at open ([`RegionError::Unclean`]); nothing is guaranteed
//! of a file region after a machine crash unless every process had left it. A copy made
//! while one process had the region open, restored over the region's own file (same
//! device and inode) after that process was killed, has the attach table of the region a
//! killed process left: it is told apart by the write seal (below).
//!
//! **The attach table** (`ATTACH_OFFSET` bytes into the header page, outside the header's
//! checksum): `GEN`, the attach generation; `BOOT`, `DEV`, `INO`, the boot and the file
//! (device and inode) of the processes attached; `SLOTS`, one word per attached process
//! (its process word, 0 = free). Opening claims a slot (a CAS from 0), after clearing the
//! slots of processes known to be dead (killed: their heaps are reaped as usual) once the
//! boot and the file are found to be the attached ones; leaving
//! writes the region to its file (`msync`) and only then frees the slot and writes the
//! header page, once nothing of the process can write to the region any more (the
//! attachment goes with the last of the process's references to its view: a thread
//! whose heap the leave orphaned gives it back first). A region with an attached slot whose `BOOT` is not this boot's (a crash)
//! or whose `DEV`/`INO` is not this file's (a copy) is refused, even when the slot's
//! process is dead: a file whose last process was killed and that nobody opened again in
//! the same boot is refused after a restart.
//!
//! **The seals.** `GEN` is also kept in the first word of two seal pages: between the
//! state and the blocks, and after the blocks (the file's last page). Every attach and
//! every leave bumps `GEN` and stores it in both seals (`fetch_max`) before it uses the
//! region (and, for a file, writes the three pages to disk first); so does every write of
//! the state area, twice (the **write seal**, `crate::pool::write_seal`: the pool lock's
//! holders, a heap's slow paths, the returned stacks, the medium caches, a remote batch's
//! push, a root's store). In a region in place a seal never exceeds `GEN`; a copy whose
//! header was read before a write and whose last pages after it holds a seal above its
//! `GEN`, and is refused. A seal below `GEN` is a bump in flight (a live writer's, or one
//! killed between its bump and its seal stores, whose slot is still held); with no slot
//! held, the seals equal `GEN` in every region that opens.
//!
//! **The state seal.** The last process to leave writes `SEAL_SUM`, a hash of the state
//! area (the pool, its lists, the registry, the unit states and the heaps: every word an
//! opener follows before it reaches a block) and of the first page of every unit (a
//! block's header and run table, where the lists' links are), then `SEAL_GEN = GEN`. Every attach bumps
//! `GEN` before it changes anything, so `SEAL_GEN = GEN` says nobody has had the region
//! open since the seal was written, and the first process to open it checks that the state
//! still hashes to `SEAL_SUM`: a state whose bytes changed while nobody had it open (a
//! flipped bit on disk, a stray write into the file) is refused
//! ([`RegionError::StateDamaged`]) instead of followed to a wild address. Attaching and
//! leaving take `LOCK` (a process word; a dead holder's lock is taken over: neither side
//! leaves anything half done that the other could misread, since the sum is stored before
//! `SEAL_GEN` and `GEN` is bumped before the region changes). Not checked: a region whose
//! last process died with it open (its seal is older than its `GEN`: the dead process's
//! heaps are reaped as usual), and the rest of the blocks' bytes (object data and the links
//! of free slots). The links are the blocks' check's: an opener that finds no other slot
//! held (after freeing dead processes') keeps `LOCK` past its attach
//! ([`Attachment::holds_lock`]) while it checks the region's block headers and starts a
//! new check generation (`crate::pool`'s `check`), so that nobody allocates from it
//! before; a refusal there ([`Attachment::refuse`]) writes no seal.
//!
//! **Leaves bump too.** A leave bumps `GEN` into the seals before it frees its slot, so a
//! copy read across a leave (its header before, its last pages after) holds two
//! generations as a copy read across an attach does. The last leaver first frees the slots
//! of processes found dead (a fork child that ran another program keeps its parent's
//! attach as a slot of its own: see [`Attachment::claim_in_fork_child`]).
//!
//! Invariants: a slot is nonzero exactly while its process has the region open (or until
//! the process is found dead); `GEN` only grows; `SEAL_MID <= GEN` and `SEAL_TAIL <= GEN`
//! in a region in place, equal once every bump has completed (no slot held: the last
//! leaver frees dead processes' slots before its own bump); `SEAL_GEN = GEN` implies no
//! slot is held and `SEAL_SUM = seal_sum(region)`.

use super::error::RegionError;
use super::header::{Layout, HEADER_BYTES};
use super::state_sum::seal_sum;
use crate::os::shared_mem::{self, Fd};
use crate::pool::WriteSeal;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

/// Where the attach table starts in the header page.
const ATTACH_OFFSET: usize = 2048;
/// The table's words before its slots.
const TABLE_WORDS: usize = 7;
/// Process slots in the table: the most processes that have a region open at once.
pub(crate) const ATTACH_SLOTS: usize = (HEADER_BYTES - ATTACH_OFFSET) / 8 - TABLE_WORDS;
/// How long a leave (or a creator) waits for another process's attach or leave (which
/// hold `LOCK` for the time of a hash of the state: milliseconds) before it goes on
/// without the lock (or answers [`RegionError::Busy`]); an opener waits its timeout.
const LOCK_PATIENCE: Duration = Duration::from_secs(10);

/// The attach table as it lies in the header page.
#[repr(C)]
struct Table {
    gen: AtomicU64,
    boot: AtomicU64,
    dev: AtomicU64,
    ino: AtomicU64,
    /// The process word of the process attaching or leaving, 0 when none.
    lock: AtomicU64,
    /// `GEN` when the state seal was written (see the module docs).
    seal_gen: AtomicU64,
    /// [`seal_sum`] of the region when the seal was written.
    seal_sum: AtomicU64,
    slots: [AtomicU64; ATTACH_SLOTS],
}
const _: () = assert!(ATTACH_OFFSET + size_of::<Table>() <= HEADER_BYTES);
const _: () = assert!(size_of::<Table>() == (TABLE_WORDS + ATTACH_SLOTS) * 8);

impl Table {
    /// Frees the slots of processes known to be dead (killed, or exec'd into another
    /// program: see `shared_mem::is_alive`).
    fn free_dead_slots(&self) {
        for w in self.slots.iter() {
            let holder = w.load(SeqCst);
            if holder != 0 && !shared_mem::is_alive(holder) {
                let _ = w.compare_exchange(holder, 0, SeqCst, SeqCst);
            }
        }
    }
}

/// This process's slot in a region's attach table: freed when dropped.
pub(crate) struct Attachment {
    /// A mapping of its own of the whole region (the region's may be gone when it drops),
    /// for the attach table and the seal.
    page: *mut u8,
    layout: Layout,
    /// The region's file (or shared memory object), for its holes.
    fd: Fd,
    slot: usize,
    word: u64,
    file: bool,
    /// True while this process holds `LOCK` from its attach on: the first process to open
    /// a region nobody had open (its blocks are checked before anyone else attaches, see
    /// [`Attachment::holds_lock`]).
    held: AtomicBool,
    /// True when the opener refused the region after its attach (damaged blocks): its
    /// leave writes no state seal, so that the next opener checks the blocks again.
    refused: AtomicBool,
}

/// `LOCK` held by this process: released when dropped, to the word it held before (0, or
/// a dead holder's: a region refused at open is left byte for byte as it was).
struct SealLock<'a> {
    table: &'a Table,
    me: u64,
    before: u64,
}

impl<'a> SealLock<'a> {
    /// Takes `table`'s lock for `me`, taking it over from a dead holder; waits at most
    /// `patience` for a live one.
    fn take(table: &'a Table, me: u64, patience: Duration) -> Result<SealLock<'a>, RegionError> {
        let started = Instant::now();
        let mut pause = Duration::from_micros(50);
        loop {
            let holder = table.lock.load(SeqCst);
            let free = holder == 0 || !shared_mem::is_alive(holder);
            if free && table.lock.compare_exchange(holder, me, SeqCst, SeqCst).is_ok() {
                return Ok(SealLock {
                    table,
                    me,
                    before: holder,
                });
            }
            let waited = started.elapsed();
            if !free && waited >= patience {
                return Err(RegionError::Busy {
                    holder_pid: shared_mem::pid_of_word(holder),
                    waited,
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }
}

impl Drop for SealLock<'_> {
    fn drop(&mut self) {
        let _ = self
            .table
            .lock
            .compare_exchange(self.me, self.before, SeqCst, SeqCst);
    }
}

/// The words that tell a region's file and boot: `(boot, dev, ino)`.
fn identity(fd: &Fd) -> Result<(u64, u64, u64), RegionError> {
    let boot = shared_mem::boot_id_hash().map_err(|e| RegionError::os("read the boot id", e))?;
    let (dev, ino) = fd
        .identity()
        .map_err(|e| RegionError::os("read the region's file identity", e))?;
    Ok((boot, dev, ino))
}

/// The table of a region mapped at `base`.
///
/// # Safety
/// `base` maps at least [`HEADER_BYTES`] bytes of a region, read-write, for `'a`.
unsafe fn table<'a>(base: *mut u8) -> &'a Table {
    // SAFETY: the caller's mapping; any bits are valid atomics; aligned (page + 2048).
    unsafe { &*base.add(ATTACH_OFFSET).cast::<Table>() }
}

/// The first word of the seal page at `offset`.
///
/// # Safety
/// `base` maps the region of `layout` read-write for `'a`.
unsafe fn seal<'a>(base: *mut u8, offset: usize) -> &'a AtomicU64 {
    // SAFETY: the caller's mapping holds the page; aligned (a page).
    unsafe { &*base.add(offset).cast::<AtomicU64>() }
}

/// Where the mapping of the region of `layout` at `base` holds `GEN` and the two seals,
/// for the region's pool to mark every write of its state (`crate::pool::write_seal`).
///
/// # Safety
/// `base` maps the whole region of `layout`, read-write, while the result is used.
pub(crate) unsafe fn write_seal(base: *mut u8, layout: &Layout) -> WriteSeal {
    // SAFETY: the caller's mapping.
    let t = unsafe { table(base) };
    // SAFETY: as above; the seal pages lie in it.
    let [mid, tail] = seals(layout).map(|o| unsafe { seal(base, o) } as *const AtomicU64);
    WriteSeal {
        gen: &t.gen,
        mid,
        tail,
    }
}

/// The offsets of the two seal pages.
fn seals(layout: &Layout) -> [usize; 2] {
    let page = layout.state_offset;
    [layout.state_offset + layout.state_len, layout.capacity - page]
}

impl Attachment {
    /// Admits this process to the region mapped at `base` (of `layout`, from `fd`):
    /// refuses a region whose seals differ or that is attached under another boot or file;
    /// clears the slots of dead processes; claims a slot; bumps the generation into the
    /// seals (written to disk first for a file). `opening`: how long to wait for another
    /// process's attach or leave (the opener's timeout), `None` for the creator, before
    /// anyone can open it (the state is not formatted yet: no seal is checked).
    ///
    /// # Safety
    /// `base` maps the whole region of `layout`, read-write and shared, while the result
    /// is used to decide anything (the attachment itself maps the header page again).
    pub(crate) unsafe fn admit(
        base: *mut u8,
        layout: &Layout,
        fd: &Fd,
        file: bool,
        opening: Option<Duration>,
    ) -> Result<Attachment, RegionError> {
        // Mapped before anything is claimed: nothing is left to undo if it fails.
        let page = shared_mem::map_shared(fd, layout.capacity, HEADER_BYTES.max(crate::os::page_size()))
            .map_err(|e| RegionError::os("map the region's header", e))?;
        // No slot yet (`ATTACH_SLOTS`): dropped on an error, it only unmaps its view.
        let mut attachment = Attachment {
            page,
            layout: *layout,
            fd: fd
                .try_clone()
                .map_err(|e| RegionError::os("keep the region's descriptor", e))?,
            slot: ATTACH_SLOTS,
            word: shared_mem::process_word(),
            file,
            held: AtomicBool::new(false),
            refused: AtomicBool::new(false),
        };
        // SAFETY: the caller's guarantee.
        attachment.slot = unsafe { attachment.claim(base, layout, fd, opening) }?;
        Ok(attachment)
    }

    /// [`Attachment::admit`]'s checks and claim, under `LOCK`: the slot claimed.
    ///
    /// # Safety
    /// As [`Attachment::admit`].
    unsafe fn claim(
        &self,
        base: *mut u8,
        layout: &Layout,
        fd: &Fd,
        opening: Option<Duration>,
    ) -> Result<usize, RegionError> {
        // SAFETY: the caller's mapping.
        let t = unsafe { table(base) };
        let mut lock = SealLock::take(t, self.word, opening.unwrap_or(LOCK_PATIENCE))?;
        // SAFETY: the caller's mapping holds both seal pages.
        let [mid, tail] = seals(layout).map(|o| unsafe { seal(base, o) });
        // The seals before `GEN`: in a region in place a seal never exceeds `GEN` (it only
        // takes values `GEN` reached), so read in this order they never do either.
        let (mid, tail) = (mid.load(SeqCst), tail.load(SeqCst));
        let gen = t.gen.load(SeqCst);
        if mid > gen || tail > gen {
            return Err(RegionError::Unclean {
                reason: "its pages are of different moments (a copy made while a process had \
                         it open and wrote to it)",
            });
        }
        // Below `GEN`, a seal is a mark in flight: a live writer's, or one killed between
        // its bump and its seal stores (an opener, a leaver, a writer of the state), which
        // leaves its slot held; with no slot held every mark is done, and the seals equal
        // `GEN` unless the pages are of different moments.
        let attached = t.slots.iter().any(|w| w.load(SeqCst) != 0);
        if !attached && (mid != gen || tail != gen) {
            return Err(RegionError::Unclean {
                reason: "its pages are of different moments (a copy made while a process had \
                         it open)",
            });
        }
        if opening.is_some() && t.seal_gen.load(SeqCst) == gen {
            // SAFETY: the caller's mapping holds the state.
            let found = unsafe { seal_sum(base, fd, layout) };
            let expected = t.seal_sum.load(SeqCst);
            if found != expected {
                return Err(RegionError::StateDamaged { expected, found });
            }
        }
        let (boot, dev, ino) = identity(fd)?;
        let me = self.word;
        // `attached` was decided before dead holders' slots are cleared: after a crash, or
        // in a copy, the holders are dead too (their pages, not their slots, are missing).
        if attached && t.boot.load(SeqCst) != boot {
            return Err(RegionError::Unclean {
                reason: "it was open when the machine stopped (it was attached under another \
                         boot): its file may hold pages of different moments",
            });
        }
        if attached && (t.dev.load(SeqCst), t.ino.load(SeqCst)) != (dev, ino) {
            return Err(RegionError::Unclean {
                reason: "it is a copy of a region that a process had open (its attach table \
                         names another file)",
            });
        }
        t.free_dead_slots();
        // Nobody else has it open (every holder left or died): the opener checks the
        // blocks before anyone else attaches, so it keeps `LOCK` until then.
        let alone = t.slots.iter().all(|w| w.load(SeqCst) == 0);
        let Some(slot) = t
            .slots
            .iter()
            .position(|w| w.compare_exchange(0, me, SeqCst, SeqCst).is_ok())
        else {
            return Err(RegionError::Attach);
        };
        t.boot.store(boot, SeqCst);
        t.dev.store(dev, SeqCst);
        t.ino.store(ino, SeqCst);
        // SAFETY: the caller's mapping.
        if let Err(e) = unsafe { self.new_generation(base, layout) } {
            t.slots[slot].store(0, SeqCst);
            return Err(RegionError::os("write the region's attach table to disk", e));
        }
        // The region changed: no dead holder's word needs keeping in the lock.
        lock.before = 0;
        if alone && opening.is_some() {
            // Released by `unlock`, or by the leave of a refused opener.
            core::mem::forget(lock);
            self.held.store(true, SeqCst);
        }
        Ok(slot)
    }

    /// True while this process holds the attach lock it took to open the region: it is
    /// the first to open a region nobody had open (left by every process, or by processes
    /// that died), and no other process can attach before [`Attachment::unlock`]. Its
    /// blocks' bytes are then of the moment its last process left (or died), unchecked by
    /// the state seal past each block's first page.
    pub(crate) fn holds_lock(&self) -> bool {
        self.held.load(SeqCst)
    }

    /// Lets other processes attach (the lock [`Attachment::holds_lock`] says is held),
    /// through the region's mapping at `base` (the attachment's own view is left untouched
    /// until the leave: a page mapped twice counts half in a locked region's figures).
    ///
    /// # Safety
    /// `base` maps the region of this attachment, read-write.
    pub(crate) unsafe fn unlock(&self, base: *mut u8) {
        if self.held.swap(false, SeqCst) {
            // SAFETY: the caller's mapping.
            let t = unsafe { table(base) };
            let _ = t.lock.compare_exchange(self.word, 0, SeqCst, SeqCst);
        }
    }

    /// The opener refuses the region after attaching (its blocks are damaged): its leave
    /// writes no state seal, so the next opener checks the blocks again rather than trust
    /// a seal taken of the damage.
    pub(crate) fn refuse(&self) {
        self.refused.store(true, SeqCst);
    }

    /// Bumps `GEN` and stores it in both seals (see the module docs), then, for a file,
    /// writes the three pages to disk.
    ///
    /// # Safety
    /// `base` maps the whole region of `layout`, read-write and shared.
    unsafe fn new_generation(&self, base: *mut u8, layout: &Layout) -> std::io::Result<()> {
        let offsets = seals(layout);
        // SAFETY: the caller's mapping.
        unsafe { write_seal(base, layout) }.mark();
        if self.file {
            for at in [0, offsets[0], offsets[1]] {
                // SAFETY: a page of the caller's mapping (every offset is a page multiple).
                unsafe { shared_mem::sync(base.add(at), layout.state_offset) }?;
            }
        }
        Ok(())
    }

    /// In a fork child, on its copy of its parent's attachment (the fork handlers, while
    /// the child's thread is its only one): the child has the region open as its parent
    /// had it, so it claims a slot of its own under `LOCK` and bumps the generation (one
    /// mark, no system call: nothing is written to disk, the parent's slot already is, and
    /// the last leave writes the region), as an opener does (without an opener's checks:
    /// the child's mapping is the live region). Its parent's leave then finds the child's
    /// slot held and writes no seal, and the child's own leave (its copy of the view
    /// released) frees the child's slot and seals the region if it is the last. A child
    /// that runs another program or ends without leaving keeps its slot until a leaver,
    /// an opener or another child frees dead processes' slots: with every slot held, a
    /// child frees those first; one that still finds none works without one, as before
    /// this existed: its parent's seal may then not cover what the child writes.
    pub(crate) fn claim_in_fork_child(&mut self) {
        if self.slot >= ATTACH_SLOTS {
            return; // the parent held no slot: nothing to take over
        }
        let me = shared_mem::process_word();
        // SAFETY: the attachment's own mapping of the region.
        let t = unsafe { table(self.page) };
        // Without the lock (a live holder that does not let go) the slot is claimed all the
        // same: the generation bump alone keeps any seal from being checked.
        let _lock = SealLock::take(t, me, LOCK_PATIENCE).ok();
        let claim = || {
            t.slots
                .iter()
                .position(|w| w.compare_exchange(0, me, SeqCst, SeqCst).is_ok())
        };
        // The parent's hold of the lock (an open in progress in another thread) is not
        // the child's.
        self.held.store(false, SeqCst);
        self.word = me;
        self.slot = claim()
            .or_else(|| {
                t.free_dead_slots();
                claim()
            })
            .unwrap_or(ATTACH_SLOTS);
        // SAFETY: the attachment's own mapping of the whole region, read-write and shared.
        unsafe { write_seal(self.page, &self.layout) }.mark();
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        // SAFETY: the attachment's own mapping of the header page and the state.
        let t = unsafe { table(self.page) };
        // A fork child's copy of its parent's attachment: the slot is the parent's, which
        // has the region open still (the child never claimed one of its own).
        let ours = shared_mem::same_process(shared_mem::process_word(), self.word);
        if self.slot < ATTACH_SLOTS && ours {
            // Without the lock (a live holder that does not let go) the slot is freed all
            // the same and no seal is written: the next opener finds none to check. A
            // refused first opener still holds it from its attach.
            let lock = match self.held.swap(false, SeqCst) {
                true => Some(SealLock {
                    table: t,
                    me: self.word,
                    before: 0,
                }),
                false => SealLock::take(t, self.word, LOCK_PATIENCE).ok(),
            };
            if lock.is_some() {
                // Processes that died with a slot (a fork child that wrote to the region
                // and ended without leaving) do not keep the last leaver from sealing.
                // Freed before this leave's bump: one that died in a mark of its own
                // (its seal stores not made) bumped before it, so the bump below brings
                // the seals to `GEN` again.
                t.free_dead_slots();
            }
            // A leave is a moment of the region too: `GEN` is bumped into both seals, so
            // a copy whose header was read before the leave and whose later pages after
            // it holds two generations and is refused. Done while the slot is held: a
            // leaver killed between the bump and the seal stores is a dead holder with a
            // slot, whose half-done stores the next opener excuses (see `claim`).
            // SAFETY: the attachment's own mapping of the whole region, read-write, shared.
            let _ = unsafe { self.new_generation(self.page, &self.layout) };
            let _ = t.slots[self.slot].compare_exchange(self.word, 0, SeqCst, SeqCst);
            let refused = self.refused.load(SeqCst);
            if lock.is_some() && !refused && t.slots.iter().all(|w| w.load(SeqCst) == 0) {
                // SAFETY: the attachment's view maps the region.
                let sum = unsafe { seal_sum(self.page, &self.fd, &self.layout) };
                t.seal_sum.store(sum, SeqCst);
                t.seal_gen.store(t.gen.load(SeqCst), SeqCst);
            }
        }
        // SAFETY: the attachment's own mapping, unmapped once, here.
        unsafe {
            if self.file {
                let _ = shared_mem::sync(self.page, HEADER_BYTES);
            }
            shared_mem::unmap_shared(self.page, self.layout.capacity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table in memory of this process, zeroed.
    fn table_in(words: &mut [u64; TABLE_WORDS + ATTACH_SLOTS]) -> &Table {
        // SAFETY: the array is as large as a table, aligned to 8, and only used as one.
        unsafe { &*words.as_mut_ptr().cast::<Table>() }
    }

    #[test]
    fn the_lock_is_taken_over_from_a_dead_holder_and_waited_for_from_a_live_one() {
        let mut words = [0u64; TABLE_WORDS + ATTACH_SLOTS];
        let t = table_in(&mut words);
        let me = shared_mem::process_word();
        // Pid 0 is no process's.
        let dead = shared_mem::word_of(0, 0, 1);
        t.lock.store(dead, SeqCst);
        let held = SealLock::take(t, me, Duration::ZERO).expect("a dead holder's lock");
        assert_eq!(t.lock.load(SeqCst), me);
        let patience = Duration::from_millis(30);
        match SealLock::take(t, me, patience) {
            Err(RegionError::Busy { holder_pid, waited }) => {
                assert_eq!(holder_pid, shared_mem::pid() as u64);
                assert!(waited >= patience);
            }
            other => panic!("a live holder's lock: {:?}", other.map(|_| ())),
        }
        drop(held);
        assert_eq!(t.lock.load(SeqCst), dead, "released to the word it held before");
    }
}
