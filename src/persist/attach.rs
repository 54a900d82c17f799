//! Who has a region open, and whether its bytes are of one moment: the attach table in the
//! header page, and the seals.
//!
//! **The contract.** A region's bytes are consistent when nobody has it open, and while
//! they are in this machine's memory (every process sees the one page cache). A copy of a
//! region file made while a process had it open (`cp`, a backup, a snapshot), or the file
//! a machine crash leaves on disk, holds the pages of different moments: its state does
//! not describe its blocks, and allocating from it would hand out live objects' memory
//! again. Such a file is refused at open ([`RegionError::Unclean`]); nothing is guaranteed
//! of a file region after a machine crash unless every process had left it.
//!
//! **The attach table** (`ATTACH_OFFSET` bytes into the header page, outside the header's
//! checksum): `GEN`, the attach generation; `BOOT`, `DEV`, `INO`, the boot and the file
//! (device and inode) of the processes attached; `SLOTS`, one word per attached process
//! (its process word, 0 = free). Opening claims a slot (a CAS from 0), after clearing the
//! slots of processes known to be dead (killed: their heaps are reaped as usual) once the
//! boot and the file are found to be the attached ones; leaving
//! writes the region to its file (`msync`) and only then frees the slot and writes the
//! header page. A region with an attached slot whose `BOOT` is not this boot's (a crash)
//! or whose `DEV`/`INO` is not this file's (a copy) is refused, even when the slot's
//! process is dead: a file whose last process was killed and that nobody opened again in
//! the same boot is refused after a restart.
//!
//! **The seals.** `GEN` is also kept in the first word of two seal pages: between the
//! state and the blocks, and after the blocks (the file's last page). Every attach bumps
//! `GEN` and stores it in both seals before it uses the region (and, for a file, writes the
//! three pages to disk first). A copy that read the header and a seal on either side of an
//! attach holds two generations, and is refused: `SEAL_HEAD = SEAL_MID = SEAL_TAIL` in
//! every region that opens.
//!
//! Invariants: a slot is nonzero exactly while its process has the region open (or until
//! the process is found dead); `GEN` only grows; after an attach completes the seals equal
//! `GEN`.

use super::error::RegionError;
use super::header::{Layout, HEADER_BYTES};
use crate::os::shared_mem::{self, Fd};
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

/// Where the attach table starts in the header page.
const ATTACH_OFFSET: usize = 2048;
/// Process slots in the table: the most processes that have a region open at once.
pub(crate) const ATTACH_SLOTS: usize = (HEADER_BYTES - ATTACH_OFFSET) / 8 - 4;

/// The attach table as it lies in the header page.
#[repr(C)]
struct Table {
    gen: AtomicU64,
    boot: AtomicU64,
    dev: AtomicU64,
    ino: AtomicU64,
    slots: [AtomicU64; ATTACH_SLOTS],
}
const _: () = assert!(ATTACH_OFFSET + size_of::<Table>() <= HEADER_BYTES);

/// This process's slot in a region's attach table: freed when dropped.
pub(crate) struct Attachment {
    /// A mapping of the header page of its own (the region's may be gone when it drops).
    page: *mut u8,
    slot: usize,
    word: u64,
    file: bool,
}

// SAFETY: the page is a shared mapping owned by the attachment; its words are atomics.
unsafe impl Send for Attachment {}
// SAFETY: as above.
unsafe impl Sync for Attachment {}

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

/// The offsets of the two seal pages.
fn seals(layout: &Layout) -> [usize; 2] {
    let page = layout.state_offset;
    [layout.state_offset + layout.state_len, layout.capacity - page]
}

impl Attachment {
    /// Admits this process to the region mapped at `base` (of `layout`, from `fd`):
    /// refuses a region whose seals differ or that is attached under another boot or file;
    /// clears the slots of dead processes; claims a slot; bumps the generation into the
    /// seals (written to disk first for a file). `is_new`: the creator, before anyone can
    /// open it.
    ///
    /// # Safety
    /// `base` maps the whole region of `layout`, read-write and shared, while the result
    /// is used to decide anything (the attachment itself maps the header page again).
    pub(crate) unsafe fn admit(
        base: *mut u8,
        layout: &Layout,
        fd: &Fd,
        file: bool,
    ) -> Result<Attachment, RegionError> {
        // SAFETY: the caller's mapping.
        let t = unsafe { table(base) };
        let offsets = seals(layout);
        // SAFETY: the caller's mapping holds both seal pages.
        let [mid, tail] = offsets.map(|o| unsafe { seal(base, o) });
        let gen = t.gen.load(SeqCst);
        if mid.load(SeqCst) != gen || tail.load(SeqCst) != gen {
            return Err(RegionError::Unclean {
                reason: "its pages are of different moments (a copy made while a process had \
                         it open)",
            });
        }
        let (boot, dev, ino) = identity(fd)?;
        let me = shared_mem::process_word();
        // Decided before dead holders' slots are cleared: after a crash, or in a copy, the
        // holders are dead too (their pages, not their slots, are what is missing).
        let attached = t.slots.iter().any(|w| w.load(SeqCst) != 0);
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
        for w in t.slots.iter() {
            let holder = w.load(SeqCst);
            if holder != 0 && !shared_mem::is_alive(holder) {
                let _ = w.compare_exchange(holder, 0, SeqCst, SeqCst);
            }
        }
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
        t.gen.fetch_add(1, SeqCst);
        // The last writer of a seal stores the generation it then reads unchanged (see the
        // module docs), so racing attaches leave the seals equal to `GEN`.
        loop {
            let g = t.gen.load(SeqCst);
            mid.store(g, SeqCst);
            tail.store(g, SeqCst);
            if t.gen.load(SeqCst) == g {
                break;
            }
        }
        let page = shared_mem::map_shared(fd, HEADER_BYTES, HEADER_BYTES.max(crate::os::page_size()))
            .map_err(|e| RegionError::os("map the region's header", e));
        let attachment = match page {
            Ok(page) => Attachment {
                page,
                slot,
                word: me,
                file,
            },
            Err(e) => {
                t.slots[slot].store(0, SeqCst);
                return Err(e);
            }
        };
        if file {
            for at in [0, offsets[0], offsets[1]] {
                // SAFETY: a page of the caller's mapping (every offset is a page multiple).
                unsafe { shared_mem::sync(base.add(at), layout.state_offset) }
                    .map_err(|e| RegionError::os("write the region's attach table to disk", e))?;
            }
        }
        Ok(attachment)
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        // SAFETY: the attachment's own mapping of the header page.
        let t = unsafe { table(self.page) };
        let _ = t.slots[self.slot].compare_exchange(self.word, 0, SeqCst, SeqCst);
        // SAFETY: the attachment's own mapping, unmapped once, here.
        unsafe {
            if self.file {
                let _ = shared_mem::sync(self.page, HEADER_BYTES);
            }
            shared_mem::unmap_shared(self.page, HEADER_BYTES);
        }
    }
}
