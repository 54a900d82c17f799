//! A batch across a fork: the prepare handler takes it over as [`FORK_HELD`] and waits its
//! holder out, so the process is copied with no change half made; the parent and the child
//! give it back. Where the wait cannot be sure (`membarrier` refused since its
//! registration: [`FORK_UNSURE`]), the child empties the batch without pushing its chains.
//!
//! The handler takes the batches of the heaps registered when it walks the pool, under the
//! pool's lock, which it holds across the fork. A heap is registered under that lock too
//! (`Heap::register`): after the fork when its thread is another (it waits for the lock),
//! and, when it is the forking thread itself inside the fork (a program's fork handler's
//! first allocation), with its batch taken for the fork as the walk would have. So while a
//! fork is prepared, every registered heap of a private pool has its batch taken (a heap
//! registered after the walk without the lock left its batch to its holder, or to a flusher
//! on another thread, inside it until the copy: the child's flush of it waited for ever).
//!
//! Invariants: from the prepare handler to the parent or child handler, `flushing ∈
//! {FORK_HELD, FORK_UNSURE}` for every registered batch and nobody but the forking thread
//! (for its own batch, entries whole) touches the entries; in the child, `busy = 0` before
//! the batch is given back; a `FORK_UNSURE` batch's chains are dropped in the child, their
//! slots counted used there (lost to the child, never handed out twice). A batch the child
//! finds neither taken nor free (in use at the copy: `busy` or `flushing` not 0; none, by
//! the above) would be dropped so too and given back (`flushing = wants = 0`), rather than
//! waited for for ever.

use super::*;
use crate::sync::fork_caller;

/// `flushing` while the fork handlers keep the batch.
const FORK_HELD: u32 = 2;
/// `flushing` of a batch the prepare handler took but could not be sure to have waited out
/// (`membarrier` refused since its registration): the child empties it.
pub(super) const FORK_UNSURE: u32 = 3;

/// For a thread that finds a batch's `flushing` at `flushing`: `None` when no fork holds
/// it; else what the thread may do ([`fork_caller`]): the forking thread itself, inside
/// its fork (a program's fork handler registered before cohort's: RED-104), has the
/// batch already; a fork child's thread repairs the child (which gives the batch back)
/// and tries again; any other thread waits.
pub(super) fn held_by_fork(flushing: u32) -> Option<ForkCaller> {
    matches!(flushing, FORK_HELD | FORK_UNSURE).then(fork_caller)
}

impl RemoteBatch {
    /// The fork's prepare handler (and the registration of a heap of the forking thread's
    /// inside the fork: `Heap::register`): takes the batch over (as [`FORK_HELD`]) and
    /// waits the holder out, so that no thread is in the middle of a change to the batch
    /// while the process is copied (a free meanwhile goes straight to its block). Both
    /// processes give it back ([`RemoteBatch::unhold_after_fork`]). `forking_thread_holds`:
    /// the batch's holder is the thread running the handler, which is in no call of the
    /// batch (it is inside `fork`): its entries are whole with no fence, and the child keeps
    /// them.
    pub(crate) fn hold_for_fork(&self, forking_thread_holds: bool) {
        let taken = self.take_over(FORK_HELD);
        debug_assert!(
            taken == Taken::Now,
            "a fork inside a fork holds nothing again"
        );
        if !forking_thread_holds && !fence::heavy() {
            // `membarrier` refused since its registration: a holder may be inside the
            // entries unseen, so the child's copy of them is not trusted
            // ([`RemoteBatch::forget_holder_in_fork_child`]).
            self.flushing.store(FORK_UNSURE, Ordering::Relaxed);
        }
        self.wait_out();
    }

    /// In a fork child, on its only thread, before [`RemoteBatch::unhold_after_fork`]:
    /// clears `busy`. A holder of the parent may have been between its two stores to `busy`
    /// when the process was copied (kept out of the entries by [`RemoteBatch::hold_for_fork`]:
    /// it had seen `wants` or was about to), and no thread of the child will store its 0: a
    /// flush would wait for it for ever. The child's own thread is in no batch's call.
    /// A batch whose entries the child cannot trust is emptied without pushing its chains:
    /// their slots stay counted in use there (lost to the child, never handed out twice).
    /// So is one the prepare handler could not hold for sure ([`FORK_UNSURE`]), and one it
    /// did not take that a thread the child does not have was inside at the copy (none, by
    /// the module docs' invariant: kept as a backstop): its holder (`busy`: a change of the
    /// entries half made) or a flusher (`flushing`: chains pushed and still in their
    /// entries, which a push in the child would hand out twice). Such a batch is given back
    /// too: no thread of the child would, and its flushes would wait for ever.
    pub(crate) fn forget_holder_in_fork_child(&self) {
        let flushing = self.flushing.load(Ordering::Relaxed);
        let in_use_untaken = !matches!(flushing, FORK_HELD | FORK_UNSURE) && self.in_use();
        self.busy.store(0, Ordering::Relaxed);
        if flushing == FORK_UNSURE || in_use_untaken {
            // SAFETY: the child's only thread, in its fork handler: nobody else touches
            // the entries.
            unsafe {
                self.with_entries(|entries| {
                    entries.block = [ptr::null(); ENTRIES];
                })
            };
            self.pending.store(0, Ordering::Relaxed);
        }
        if in_use_untaken {
            self.give_back();
        }
    }

    /// True while a thread is in a call of the batch (its holder, between its two stores to
    /// `busy`) or a flusher has taken it over: for a fork child whose copy no `prepare`
    /// held (its threads but the first are gone, and no call of its first thread is in
    /// progress), where either was made by a thread the child does not have.
    pub(crate) fn in_use(&self) -> bool {
        self.busy.load(Ordering::Relaxed) != 0 || self.flushing.load(Ordering::Relaxed) != 0
    }

    /// After a fork, in the parent and the child: gives the batch back if the prepare
    /// handler took it, or the registration of the forking thread's heap inside the fork
    /// (`Heap::register`).
    pub(crate) fn unhold_after_fork(&self) {
        if matches!(
            self.flushing.load(Ordering::Relaxed),
            FORK_HELD | FORK_UNSURE
        ) {
            self.give_back();
        }
    }
}
