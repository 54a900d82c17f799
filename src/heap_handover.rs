//! How heaps change hands: a thread or an explicit join takes one (adopting an abandoned
//! heap, or creating one), leaves it at its exit (its listed blocks go to the pool and the
//! heap waits on the pool's abandoned list for the next taker), and an instance's teardown
//! orphans the heaps of threads still running.
//!
//! The heap's state changes here, by the transitions of [`crate::heap_record`]. The exit
//! path takes the pool lock but never allocates.

use crate::block::BlockList;
use crate::class::{HeadIndex, CLASSES};
use crate::heap::{current_row, empty_block, head_at, registered, Heap};
use crate::heap_record::HeapRecord;
use crate::heap_record::HeapState::{self, Abandoned, Exiting, Live, Orphaned};
use crate::os;
use crate::pool::{Pool, PoolState};
use crate::sync::{spin_hint, Ordering};
use core::ptr;

/// Thread exit, or the leave of an explicit join: hands the heap's listed blocks to
/// the pool and parks the heap on the pool's abandoned list, or releases it if its
/// instance is gone.
///
/// # Safety
/// `heap` is the caller's (its thread's, or its join's), which uses it no more.
pub(crate) unsafe fn abandon(heap: *mut Heap) {
    // SAFETY: heaps stay mapped until released below or by the instance's teardown,
    // which waits for EXITING heaps.
    let hp = unsafe { &*heap };
    if !hp.held_here() {
        // A fork child's copy of a join of its parent's: the heap is the parent's.
        return;
    }
    // EXITING pins the pool: teardown waits for the heap to be ABANDONED. Nothing is
    // done with the heap until the pool lock is held, so that the lock holders (`scope`,
    // the fork handlers) see an EXITING heap untouched.
    if hp.transition(Live, Exiting).is_err() {
        // ORPHANED: the instance is gone and left this heap to its thread. A shared
        // pool's (its holder word is set) is left into the region as a live one: this
        // process's view of the pool stays mapped while the heap holds its reference.
        let shared = hp.holder.load(Ordering::Relaxed) != 0;
        if !shared {
            // SAFETY: nobody else references an orphaned heap.
            unsafe { Heap::unmap(heap) };
            return;
        }
        let left = hp.transition(Orphaned, Exiting);
        debug_assert!(left.is_ok(), "an orphaned heap changed hands: {left:?}");
    }
    #[cfg(test)]
    hooks::EXITING.at(hp.pool());
    let pool = hp.pool();
    // The heap's pending remote frees go to their blocks (before the lock: a flush only
    // tries it).
    // SAFETY: the batch's blocks are this pool's, live while it holds their slots.
    unsafe { hp.remote.flush_own(pool) };
    let mut st = pool.lock();
    hp.drain_returned();
    // SAFETY: the heap is ours, EXITING, and we hold the pool lock.
    unsafe { hand_over(heap, pool, &mut st, false) };
    hp.thread_next_reset();
    // SAFETY: as above.
    unsafe { park(heap, pool, &mut st) };
    // From here on an instance teardown may release the heap (it is ABANDONED), but the
    // guard's unlock below still writes to the pool: teardown takes the pool lock once
    // before the pool is destroyed, so it waits for this unlock. That unlock is the last
    // access to a private pool: the instance's drop may destroy it right after, so
    // whether there is a reference to release (a shared pool's view, which that reference
    // keeps mapped) is read before it.
    let shared = pool.is_shared();
    #[cfg(test)]
    hooks::after_abandoned(pool);
    drop(st);
    #[cfg(test)]
    hooks::UNLOCKED.at(pool);
    if shared {
        // SAFETY: the heap was this process's reference to the shared pool
        // (`adopt_or_create` took it); nothing here uses the pool or the heap after.
        unsafe { Pool::release(pool) };
    }
}

/// Under the pool lock: frees the medium runs `heap`'s cache keeps, and hands the blocks
/// on its heads (current and partial) to the pool; for a `dead` holder's heap, recounts each first ([`crate::block::Header::recount_local`]: the
/// holder may have died in the middle of an allocation or a free). The current blocks are read through the caller's view ([`Heap::current_in`]: the
/// heap may be a dead process's); a partial list is walked forward, never unlinked, and at
/// most once per unit (a dead holder may have left it half linked).
///
/// # Safety
/// The caller holds `heap` (EXITING: its own, or a dead process's it claimed) and the pool
/// lock `st`.
unsafe fn hand_over(heap: *mut Heap, pool: &Pool, st: &mut PoolState, dead: bool) {
    // SAFETY: the caller holds the heap.
    let hp = unsafe { &*heap };
    // The medium runs its cache kept are freed (a dead holder's too: its entries are
    // offsets, each checked against its block).
    #[cfg(not(loom))]
    pool.flush_medium_cache(st, &hp.medium);
    // Its guard free for the next holder (a dead holder may have died inside its medium
    // path; no claimer holds it: claimers hold the pool lock, as we do).
    hp.medium.reset_guard();
    let heads = HeadIndex::count(pool.life_count);
    for i in pool.heads() {
        // SAFETY: i is below the head count; the heap is the caller's.
        let head = unsafe { head_at(heap, heads, i.get()) };
        if let Some(h) = hp.current_in(pool, head.current()) {
            if h.owner() == hp.token {
                // The cursor (offsets, in the heap: a dead holder's too) goes to the block,
                // unless a dead holder stopped while loading it (the header is the truth:
                // written back, a cursor with no `bump` yet would hand out the header and
                // every slot again).
                if !dead || head.cursors.loaded(head.class, h) {
                    head.cursors.sync(head.class, h);
                }
                if dead {
                    h.recount_local();
                }
                pool.adopt_block(st, h);
            }
        }
        head.enter(empty_block());
        // Walked forward, never unlinked: a dead holder may have died in the middle of a
        // removal, leaving a `prev` link to a block it had moved elsewhere (the current
        // block just adopted, say); unlinking through it would write into the list that
        // block is on now. The walk reads each block's `next` before the adoption relinks
        // it, takes only blocks the heap still owns (a half-done move may link one twice)
        // and stops after as many steps as the region has units. A tiny head's blocks are
        // pool-owned with the heap as their holder, and their counts are the lock's.
        let tiny = CLASSES[i.class()].is_tiny();
        let list = core::mem::replace(head.partial, BlockList::new());
        for h in list.iter(pool.units()).take(pool.region.unit_count()) {
            let ours = if tiny {
                h.owner() == 0 && h.holder() == hp.id
            } else {
                h.owner() == hp.token
            };
            if !ours {
                continue;
            }
            if dead && !tiny {
                h.recount_local();
            }
            pool.adopt_block(st, h);
        }
    }
}

/// Under the pool lock: puts `heap` on the pool's abandoned list, ABANDONED.
///
/// # Safety
/// As [`hand_over`], whose work is done.
unsafe fn park(heap: *mut Heap, pool: &Pool, st: &mut PoolState) {
    // SAFETY: the pool lock is held; the abandoned list owns the heap from now on.
    unsafe { (*heap).record.next_abandoned = st.abandoned };
    // SAFETY: as above.
    st.abandoned = pool.link_of(unsafe { ptr::addr_of!((*heap).record) });
    // Only the heap's holder moves an EXITING heap (teardown waits for it).
    // SAFETY: as above.
    let left = unsafe { (*heap).transition(Exiting, Abandoned) };
    debug_assert!(left.is_ok(), "an exiting heap changed hands: {left:?}");
}

/// In a shared pool: finds the heaps held by processes that died (their pid is gone, or
/// names a process with another start time) and abandons them on their holders' behalf,
/// as their exit would have: their listed blocks go to the pool, the heap to the
/// abandoned list for the next taker. A heap one of its blocks was being moved into or out
/// of when its holder died keeps that block: it is retired `FULL` (it comes back through
/// the heap's `returned` when freed into) when nothing is being freed into it; otherwise
/// it stays as it is, held by the heap. Returns how many heaps it took over. In a private
/// pool, the heaps a fork left without a thread in this process ([`FORSAKEN`]) instead.
///
/// Several survivors may run this at once: a heap is taken over by the one whose CAS on
/// its holder word wins.
pub(crate) fn reap_dead(pool: &Pool) -> usize {
    // A privately mapped region is this process's alone (a fork child has a copy, whose
    // heaps recorded the parent as holder: not to be reaped when the parent exits); its
    // dead heaps are those a fork left without a thread.
    if !pool.is_process_shared() {
        return reap_forsaken(pool);
    }
    // The claim below writes this process's word into the region.
    pool.note_namespace();
    let me = os::shared_mem::process_word();
    // The last holder found alive: heaps of one process (its threads') are looked up once
    // in a row.
    let mut alive = me;
    let mut reaped = 0;
    for record in pool.registered_heaps() {
        // SAFETY: registered records stay mapped while the pool does.
        let r = unsafe { &*record };
        let state = r.state();
        if !matches!(state, Live | Exiting | Orphaned) {
            continue;
        }
        let holder = r.holder.load(Ordering::Acquire);
        if holder == 0 || os::shared_mem::same_process(holder, alive) {
            continue;
        }
        // A word of another pid namespace names another process than its pid here.
        if !pool.pids_compare() || os::shared_mem::is_alive(holder) {
            alive = holder;
            continue;
        }
        if r.holder
            .compare_exchange(holder, me, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        // SAFETY: claimed above.
        reaped += usize::from(unsafe { take_over_dead(pool, record, state) });
    }
    reaped
}

/// A heap whose holder is dead, claimed by the caller (its CAS on the holder word won),
/// in state `state`: abandoned on the holder's behalf, as its exit would have (its blocks
/// recounted first: the holder may have died in the middle of any step). Returns false
/// when it changed state meanwhile (nothing done).
///
/// # Safety
/// `record` is a registered heap of `pool` the caller claimed; it holds no pool lock.
unsafe fn take_over_dead(pool: &Pool, record: *mut HeapRecord, state: HeapState) -> bool {
    // SAFETY: registered records stay mapped while the pool does.
    let r = unsafe { &*record };
    // The heap is ours: only a claim moves a dead holder's heap.
    if state != Exiting && r.transition(state, Exiting).is_err() {
        return false;
    }
    let heap = Heap::of(record);
    let mut st = pool.lock();
    for h in r.returned.take_all(pool.units()) {
        h.recount_local();
        pool.adopt_block(&mut st, h);
    }
    // SAFETY: claimed and EXITING; we hold the lock.
    unsafe { hand_over(heap, pool, &mut st, true) };
    retire_strays(pool, &st, heap);
    // SAFETY: as above.
    unsafe { park(heap, pool, &mut st) };
    pool.heaps_reaped.fetch_add(1, Ordering::Relaxed);
    true
}

/// [`HeapRecord::holder`] of a private pool's heap whose holder is dead in this process: a
/// fork child's copy of a heap of its parent's other threads ([`after_fork_in_child`]). No
/// process word has it (its pid would be past every pid), so the heap is held nowhere
/// (`Heap::held_here`).
const FORSAKEN: u64 = u64::MAX;

/// Heaps of private pools marked [`FORSAKEN`] in this process and not yet taken over: 0
/// except in a fork child of a process with other threads, so that [`reap_dead`] costs
/// one load in a private pool otherwise.
static FORSAKEN_LEFT: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// [`reap_dead`] in a private pool: takes over the heaps a fork left without a thread
/// ([`FORSAKEN`]), as a dead process's are (one load when there is none).
pub(crate) fn reap_forsaken(pool: &Pool) -> usize {
    if FORSAKEN_LEFT.load(Ordering::Acquire) == 0 {
        return 0;
    }
    let mut reaped = 0;
    for record in pool.registered_heaps() {
        // SAFETY: registered records stay mapped while the pool does.
        let r = unsafe { &*record };
        let state = r.state();
        if !matches!(state, Live | Exiting) || r.holder.load(Ordering::Acquire) != FORSAKEN {
            continue;
        }
        // One claim per heap (threads of the child may reap at once); the heap is held by
        // nobody from here, as a private pool's heaps are (a taker's own).
        if r.holder
            .compare_exchange(FORSAKEN, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        FORSAKEN_LEFT.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: claimed above.
        reaped += usize::from(unsafe { take_over_dead(pool, record, state) });
    }
    reaped
}

/// Under the pool lock, reaping a dead holder's heap of token `token` whose listed blocks
/// were handed over: blocks it still owns that are not `FULL` were on none of its lists
/// when it died (moved between them). Each is retired `FULL` when no free is under way
/// into it (its remote list is empty), so it comes back through the heap's `returned` like
/// any full block; a block with remote frees stays as it is (a free that took it out of
/// `FULL` pushes it on the heap's `returned`).
///
/// A retire changes the block's role (the bias its count carries): a write of the heap's
/// row of the block's lifetime class, as the owner's retire is (`crate::heap::HeapHead::
/// retire`).
fn retire_strays(pool: &Pool, st: &PoolState, heap: *mut Heap) {
    // SAFETY: the caller claimed the heap: it stays mapped while the pool does.
    let token = unsafe { &*heap }.token;
    for h in pool.blocks(st) {
        if h.owner() != token || h.life() >= pool.life_count {
            continue;
        }
        // The dead holder may have died in the middle of an allocation or a free into it.
        h.recount_local();
        // SAFETY: the heap is the caller's, and the block's lifetime class is below the
        // pool's count (above).
        let row = unsafe { &*current_row(heap, h.life()) };
        let _writing = row.cursors.writing();
        if !h.is_full() && h.try_retire() {
            h.set_role(crate::block::Role::Full);
        }
    }
}

/// In a child process after `fork()`, with the private pool `pool`'s lock held: every heap
/// that was exiting becomes live again ([`HeapRecord::after_fork_in_child`]), and the heaps
/// no thread of the child will use are marked dead ([`FORSAKEN`]), for [`reap_dead`] to
/// take over as a dead process's: those that were exiting (their thread or join was
/// leaving them), and the thread heaps ([`THREAD_GROUP`]) not on the forking thread's list
/// `own` (the parent's other threads'). An explicit join's heap stays its join's: the
/// handler repairs it in place next ([`repair_joins_in_child`]).
///
/// # Safety
/// The fork child's handler, on the child's only thread, holding `pool`'s lock; `own` is
/// the forking thread's heap list (its first heap, the others through `thread_next`).
pub(crate) unsafe fn after_fork_in_child(pool: &Pool, own: *mut Heap) {
    let owned = |heap: *mut Heap| {
        let mut at = own;
        while !at.is_null() {
            if ptr::eq(at, heap) {
                return true;
            }
            // SAFETY: the forking thread's list (the caller's): heaps on it are mapped.
            at = unsafe { (*at).thread_next };
        }
        false
    };
    for record in pool.registered_heaps() {
        // SAFETY: registered heaps stay mapped while the pool lives.
        let r = unsafe { &*record };
        let exiting = r.state() == Exiting;
        r.after_fork_in_child();
        let heap = Heap::of(record);
        // SAFETY: as above; the group is written once, under the lock we hold.
        let thread_heap = unsafe { (*heap).group } == THREAD_GROUP;
        // Counted once: a heap this process's parent marked and never took over is marked
        // already.
        if r.state() == Live
            && (exiting || thread_heap && !owned(heap))
            && r.holder.swap(FORSAKEN, Ordering::AcqRel) != FORSAKEN
        {
            FORSAKEN_LEFT.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A shared instance's leave (its drop in this process), after the calling thread's heap
/// was abandoned: every other heap this process's threads hold of the view `pool` becomes
/// ORPHANED: its thread leaves it into the region (blocks to the pool, the heap to the
/// next taker, its reference to the view released: the last one unmaps the region here)
/// at its next look-up of a heap (any instance's) or at its exit. Nothing here touches a
/// thread's list: those threads may be walking them. Returns how many were orphaned.
///
/// # Safety
/// No thread uses the instance of view `pool` any more (its drop), and the caller holds a
/// reference to the view.
pub(crate) unsafe fn orphan_this_process_heaps(pool: &Pool) -> usize {
    // Under the lock: heaps change hands (their `pool` field is written) under it.
    let _st = pool.lock_uncounted();
    let mut orphaned = 0;
    for heap in registered(pool) {
        // SAFETY: registered heaps stay mapped while the pool does.
        let hp = unsafe { &*heap };
        // A heap another process holds is not read further (its `pool` is an address
        // there); ours may be of another view of the region (opened again meanwhile).
        let ours =
            hp.holder.load(Ordering::Acquire) != 0 && hp.held_here() && ptr::eq(hp.pool(), pool);
        if ours && hp.transition(Live, Orphaned).is_ok() {
            orphaned += 1;
        }
    }
    orphaned
}

/// Instance teardown: makes every heap unreachable from the instance. Heaps of running
/// threads become ORPHANED (the thread releases them at exit); the others are released.
///
/// # Safety
/// The pool is being destroyed and no thread allocates from it any more.
pub(crate) unsafe fn teardown(pool: &Pool) {
    for heap in registered(pool) {
        // SAFETY: registered heaps stay mapped until released here or by their thread.
        let hp = unsafe { &*heap };
        let mut round = 0;
        loop {
            match hp.transition(Live, Orphaned) {
                Ok(()) => break,
                Err(Exiting) => {
                    spin_hint(round);
                    round += 1;
                }
                Err(_) => {
                    // SAFETY: ABANDONED: no thread references it any more.
                    unsafe { Heap::unmap(heap) };
                    break;
                }
            }
        }
    }
    // Every heap is ORPHANED or released now, so no thread starts an abandon; but one
    // that stored ABANDONED may still be about to unlock the pool (see `abandon`).
    // Taking the lock once waits for that unlock, its last access to the pool.
    #[cfg(test)]
    hooks::teardown_goes_on(pool);
    drop(pool.lock());
}

/// A heap for a new thread or join of concurrency group `group`: the abandoned heap of the
/// same group if there is one (its blocks were last used there); else, for a thread, any
/// abandoned heap, and for an explicit join, one a thread left; else a new one; else (no
/// new heap can be had) any abandoned heap.
/// A shared pool's view counts the heap as one of this process's references to it
/// ([`Pool::hold`]; [`abandon`] releases it).
pub(crate) fn adopt_or_create(pool: &Pool, instance: u64, group: usize) -> *mut Heap {
    pool.ensure_here();
    // A shared pool's dead processes' heaps are taken over first: they may be adopted.
    reap_dead(pool);
    let mut heap = adopt(pool, instance, group, false);
    if heap.is_null() {
        heap = Heap::create(pool, instance, group);
    }
    if heap.is_null() {
        // No new heap (the registry is full, or the OS refused): any abandoned heap,
        // whatever its group, rather than none while heaps sit idle (joins that each bring
        // a new hint would otherwise fill the registry and be refused for good).
        heap = adopt(pool, instance, group, true);
    }
    if !heap.is_null() {
        pool.hold();
    }
    heap
}

/// Takes an abandoned heap for a thread or join of `group`, as [`adopt_or_create`] says;
/// with `any`, the first abandoned heap of whatever group. Null when there is none.
fn adopt(pool: &Pool, instance: u64, group: usize, any: bool) -> *mut Heap {
    let mut st = pool.lock();
    // SAFETY: abandoned heaps are owned by the pool lock, which we hold; the walk and the
    // unlink touch only their `next_abandoned` links.
    unsafe {
        let group_of = |link| (*Heap::of(pool.record_at(link))).group;
        let next_of = |link| (*pool.record_at(link)).next_abandoned;
        // The link before the chosen heap's (0: the list's head) and the chosen heap's.
        let (mut before, mut at) = (0, st.abandoned);
        while at != 0 && group_of(at) != group {
            (before, at) = (at, next_of(at));
        }
        if at == 0 {
            (before, at) = (0, st.abandoned);
            while !any && group != THREAD_GROUP && at != 0 && group_of(at) != THREAD_GROUP {
                (before, at) = (at, next_of(at));
            }
        }
        if at == 0 {
            return ptr::null_mut();
        }
        let record = pool.record_at(at);
        let next = (*record).next_abandoned;
        if before == 0 {
            st.abandoned = next;
        } else {
            (*pool.record_at(before)).next_abandoned = next;
        }
        (*record).next_abandoned = 0;
        let heap = Heap::of(record);
        Heap::take_over(heap, pool, instance, group);
        // Abandoned heaps change hands only under the pool lock, which we hold.
        let taken = (*record).transition(Abandoned, Live);
        debug_assert!(taken.is_ok(), "an abandoned heap changed hands: {taken:?}");
        heap
    }
}

/// An explicit join (not tied to the calling thread): a heap of concurrency group `group`.
/// Null when the OS refuses memory or the registry is full.
pub(crate) fn join_explicit(pool: &Pool, instance: u64, group: usize) -> *mut Heap {
    adopt_or_create(pool, instance, group)
}

/// The concurrency group of thread heaps (explicit joins choose theirs).
pub(crate) const THREAD_GROUP: usize = usize::MAX;

#[cfg(test)]
pub(crate) mod hooks {
    use crate::pool::Pool;
    use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

    /// The pool whose exiting thread pauses after storing ABANDONED.
    pub(crate) static PAUSE_POOL: AtomicPtr<Pool> = AtomicPtr::new(core::ptr::null_mut());
    pub(crate) static PAUSED: AtomicBool = AtomicBool::new(false);

    /// Set when the teardown of the paused pool goes on to destroy it.
    pub(crate) static RESUME: AtomicBool = AtomicBool::new(false);

    pub(crate) fn after_abandoned(pool: &Pool) {
        if !core::ptr::eq(PAUSE_POOL.load(Ordering::Acquire), pool) {
            return;
        }
        PAUSED.store(true, Ordering::Release);
        // Bounded: a failing test must not hang.
        for _ in 0..10_000 {
            if RESUME.load(Ordering::Acquire) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// A point of the exit path where the exiting thread of one pool pauses until the test
    /// lets it go (bounded: a failing test must not hang). Compares addresses only: the
    /// pool may be gone when the thread gets there.
    pub(crate) struct Pause {
        pool: AtomicPtr<Pool>,
        paused: AtomicBool,
        go: AtomicBool,
        one_at_a_time: std::sync::Mutex<()>,
    }

    impl Pause {
        const fn new() -> Pause {
            Pause {
                pool: AtomicPtr::new(core::ptr::null_mut()),
                paused: AtomicBool::new(false),
                go: AtomicBool::new(false),
                one_at_a_time: std::sync::Mutex::new(()),
            }
        }

        /// Makes `pool`'s exiting thread pause here, serialising the tests that use this
        /// pause: until the guard drops.
        pub(crate) fn arm(&self, pool: *mut Pool) -> std::sync::MutexGuard<'_, ()> {
            let guard = self.one_at_a_time.lock().unwrap_or_else(|e| e.into_inner());
            self.paused.store(false, Ordering::Release);
            self.go.store(false, Ordering::Release);
            self.pool.store(pool, Ordering::Release);
            guard
        }

        /// The exit path of `pool` is here.
        pub(crate) fn at(&self, pool: *const Pool) {
            if !core::ptr::eq(self.pool.load(Ordering::Acquire), pool) {
                return;
            }
            self.paused.store(true, Ordering::Release);
            for _ in 0..10_000 {
                if self.go.load(Ordering::Acquire) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }

        /// Waits until the armed pool's exiting thread pauses here.
        pub(crate) fn wait_paused(&self) {
            while !self.paused.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
        }

        /// Lets the paused thread go on, and pauses no other.
        pub(crate) fn resume(&self) {
            self.go.store(true, Ordering::Release);
        }

        /// Pauses nobody any more (after the paused thread is gone).
        pub(crate) fn disarm(&self) {
            self.pool.store(core::ptr::null_mut(), Ordering::Release);
        }
    }

    /// After the exiting thread stored EXITING.
    pub(crate) static EXITING: Pause = Pause::new();
    /// Just after the exiting thread's last unlock of the pool lock: an instance drop may
    /// destroy a private pool meanwhile.
    pub(crate) static UNLOCKED: Pause = Pause::new();

    /// The teardown of `pool` is about to wait for the pool lock, or destroyed the pool.
    pub(crate) fn teardown_goes_on(pool: *const Pool) {
        if core::ptr::eq(PAUSE_POOL.load(Ordering::Acquire), pool) {
            RESUME.store(true, Ordering::Release);
        }
    }
}

#[cfg(not(loom))]
mod claim;
#[cfg(not(loom))]
pub(crate) use claim::claim_idle;
#[cfg(not(loom))]
mod fork_join;
#[cfg(not(loom))]
pub(crate) use fork_join::repair_joins_in_child;

#[cfg(all(loom, test))]
mod loom;
#[cfg(all(loom, test))]
mod loom_claim;

// Not under loom: its atomics exist only inside a model.
#[cfg(not(loom))]
#[cfg(test)]
mod tests;
