//! A pool in a fork child: the view's reference count reset and its maker told
//! ([`Pool::after_fork_in_child`]), and whether the child has the region's memory at all
//! ([`Pool::check_after_fork`]): a region in caller memory advised `MADV_DONTFORK` or
//! `MADV_WIPEONFORK` is not the child's copy, and the pool is then **lost** here.
//!
//! Invariant: `lost ⇒` nothing of the region is read or written in this process any more
//! (the fork handlers and the instance's drop leave it alone; a call that needs a heap of
//! it aborts: [`Pool::ensure_here`]); `lost` is set only in a fork child, before anything
//! reads the region, and never cleared.

use super::*;

/// [`Pool::ensure_here`]'s report.
#[cold]
#[inline(never)]
fn lost_region(pool: &Pool) -> ! {
    crate::os::abort_with(format_args!(
        "cohort: the region at {:#x} is not in this process: a fork child got no copy of its \
         memory (advised MADV_DONTFORK or MADV_WIPEONFORK); it cannot be used here\n",
        pool.region.base()
    ))
}

impl Pool {
    /// In a child process after `fork()`: the child holds no heap of a shared pool (its
    /// thread forgot the parent's), so the instance's is its only reference; the view's
    /// maker's `in_fork_child` runs (see [`AfterLeave`]). Claimed at the fork, not at the
    /// child's first write: a child may write into its objects (bytes the state seal
    /// covers where they share a page with a block's header) without any allocator call.
    ///
    /// # Safety
    /// Called by the fork handlers in the child, whose thread is its only one.
    pub(crate) unsafe fn after_fork_in_child(&self) {
        self.refs.store(1, Ordering::Relaxed);
        if let Some(after) = self.leave.and_then(|leave| leave.after) {
            // SAFETY: `data` is what the view's maker gave with the function, alive while
            // the view is (it is dropped by `run`, after the view's last reference); the
            // child's thread is its only one (the caller's contract).
            unsafe { (after.in_fork_child)(after.data) };
        }
    }

    /// In a fork child, before anything reads the region: true when the child has the
    /// pool's state (a private pool's is always the child's copy; a region laid out to be
    /// shared may be caller memory the child got no copy of, or a zeroed one); false marks
    /// the pool lost in this process for good ([`Pool::is_lost`]).
    pub(crate) fn check_after_fork(&self) -> bool {
        // `link_base` is the view's: set exactly for a state laid out to be shared.
        let here = self.link_base == 0
            || crate::os::is_mapped(self.shared.cast())
                // SAFETY: the state's page is mapped; its first word is the layout, which
                // only a zeroed copy (`MADV_WIPEONFORK`) reads as anything but this build's.
                && unsafe { (*self.shared).layout } == place::STATE_LAYOUT
                && self.blocks_here();
        if !here {
            self.lost.store(true, Ordering::Relaxed);
            // The free fast path reads a block's header before anything can see the pool
            // lost. Where the child has no copy of the region's memory (`MADV_DONTFORK`: a
            // hole), the range reads zero from now on, as a zeroed copy (`MADV_WIPEONFORK`)
            // does; a zero header is no heap's (its owner-and-key word fails every route's
            // compare and names no owner), so each call goes on to a slow path, which
            // reports the lost region; and no later mapping of the child lands there to be
            // taken for the region. The range is read from the view (`leave`, set for every
            // state laid out to be shared), this process's memory, not the region's.
            // Best effort: where the OS refuses, a free into a hole faults, as it did.
            if let Some(leave) = self.leave {
                os::maps::fill_holes(leave.base as usize, leave.len);
            }
        }
        here
    }

    /// In a fork child that has the state of a region laid out to be shared: true when it
    /// has the rest of the region too (memory advised past the state page, as an RDMA
    /// library registers the objects' part of a buffer): no page of the placement's
    /// mapping missing (`MADV_DONTFORK`), and, in a mapping only this process uses (the
    /// only kind `MADV_WIPEONFORK` applies to), every block's header there (its magic:
    /// `prepare` held the pool's lock across the fork, under which a unit becomes a block
    /// and its header is written). Not known missing is here (`/proc` unreadable).
    fn blocks_here(&self) -> bool {
        let Some(leave) = self.leave else {
            return true;
        };
        if os::maps::has_hole(leave.base as usize, leave.len) {
            return false;
        }
        let r = &self.region;
        self.is_process_shared()
            || (0..r.unit_count()).all(|u| {
                let h = r.unit_addr(u).cast::<Header>();
                // SAFETY: a unit of the region, mapped (no hole); a block's header starts it.
                r.unit_state(u) != BLOCK
                    || unsafe { ptr::addr_of!((*h).magic).read_volatile() } == MAGIC
            })
    }

    /// True in a process that has the pool's view but not its region's state (a fork
    /// child of a process whose region was in caller memory advised `MADV_DONTFORK` or
    /// `MADV_WIPEONFORK`): the fork handlers and the instance's drop leave it alone, and a
    /// call that needs a heap of it aborts ([`Pool::ensure_here`]).
    #[inline]
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Aborts with a message when the pool is lost in this process ([`Pool::is_lost`]): its
    /// region is not this process's to use.
    #[inline]
    pub(crate) fn ensure_here(&self) {
        if self.is_lost() {
            lost_region(self);
        }
    }
}
