//! The write seal of a named region: every write to the state area (the pool, its lists,
//! the registry, the unit states, the heaps) is bracketed by two **marks**, each of which
//! bumps the region's attach generation `GEN` (in the header page, read first by a copy
//! that reads the file from its start) and stores the new value into the two seal pages
//! with `fetch_max` (the page after the state and the file's last page, read late).
//!
//! Why: a copy of a region file made while a process had it open reads the header and the
//! state before the blocks. When a write to the state came between the two reads, the
//! copy's state does not describe its blocks (units carved, blocks moved between lists, a
//! remote batch pushed after the state was read), and an opener would hand live objects
//! out again. With the marks, such a copy holds a seal greater than its `GEN`:
//!
//! - a write that ends after the copy read `GEN` (at `t0`) and whose end mark's seal store
//!   comes before the copy read the tail seal (at `t2`) leaves `TAIL(t2) > GEN(t0)`;
//! - a write that begins before `t2`, and after `t0`, leaves the same by its begin mark.
//!
//! Left: a single write in flight over the whole copy (begun before `t0`, not ended at
//! `t2`); a writer stopped (`SIGSTOP`) meanwhile changes nothing, so its copy is the region
//! as it would be had that writer been killed.
//!
//! In a region in place, `SEAL <= GEN` always (a seal takes only values `GEN` reached,
//! and `GEN` only grows); a writer killed between its bump and its seal stores leaves a
//! seal below `GEN` until the next mark (see `persist::attach` for what an opener accepts).
//! The fast paths write no mark: they write only a block's own header and slots. A copy
//! across them is **not** told apart (RED-50): it reads a block's header page before the
//! block's later pages, so allocations between the two reads (slots past the first page,
//! from the bump window or the free list) are live in its blocks and free in its header;
//! restored after the process that made them was killed, it opens and hands them out
//! again. Marking them would cost the fast paths (the budget). The contract stays: copy a
//! region's file only while no process has it open (or from a snapshot taken at one
//! moment); a copy made while open is refused whenever a write of the state, an open, a
//! leave or a root's store came between its reads, which any longer-lived program does, but
//! not always. The remote batch's adds write the batch (state) and the freed slot: a copy
//! across one keeps that slot allocated (a leak), while a batch's push to its block is
//! marked.

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

/// Where this process's mapping of a named region holds `GEN` and the two seals.
#[derive(Clone, Copy)]
pub(crate) struct WriteSeal {
    pub(crate) gen: *const AtomicU64,
    pub(crate) mid: *const AtomicU64,
    pub(crate) tail: *const AtomicU64,
}

impl WriteSeal {
    /// One mark (see the module docs): `GEN + 1` into both seals. SeqCst: the state writes
    /// after a begin mark are not seen before it, and those before an end mark are seen
    /// before it.
    #[cold]
    pub(crate) fn mark(&self) {
        // SAFETY: the words lie in the region's mapping, which stays mapped while its pool
        // (which holds this seal) lives.
        let (gen, mid, tail) = unsafe { (&*self.gen, &*self.mid, &*self.tail) };
        let g = gen.fetch_add(1, SeqCst).wrapping_add(1);
        mid.fetch_max(g, SeqCst);
        tail.fetch_max(g, SeqCst);
    }
}

/// A write to a sealed region's state in progress: marked when made and when dropped.
#[must_use = "the end mark is written when the guard drops"]
pub(crate) struct Writing<'a>(Option<&'a WriteSeal>);

impl<'a> Writing<'a> {
    /// Begins a write (a mark), when `seal` is some.
    #[inline]
    pub(crate) fn begin(seal: Option<&'a WriteSeal>) -> Writing<'a> {
        if let Some(s) = seal {
            s.mark();
        }
        Writing(seal)
    }
}

impl Drop for Writing<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(s) = self.0 {
            s.mark();
        }
    }
}
