//! fork(): the instance list's lock and every instance's pool and large-table locks are taken
//! before the fork and released after it in both processes, so the child never inherits a
//! lock held by a thread it does not have, nor an instance half initialised (initialisation
//! runs under the list's lock).
//!
//! Invariant: the list holds exactly the pools of the instances alive in the process (an
//! instance pushes its pool when it creates it, under the list's lock, and unregisters it
//! when it drops), linked through `Pool::fork_next` (a field of the process's view).
//!
//! A shared pool's locks are not taken: they live in the region, where the parent's
//! threads (and other processes) go on using them, and the child never inherits a hold of
//! them (the holder is still the parent's thread, which releases it). The child instead
//! forgets the heaps its thread held of every shared pool: they stay the parent's, and the
//! child joins afresh on its first allocation. A region laid out as a shared one but
//! mapped privately (a private fixed region: `Pool::private`) is a private pool here: the
//! child has a copy of it, its locks are taken and released as a private pool's, and the
//! child's thread goes on with its heaps of it. An explicit join the child inherits
//! ([`crate::Join`]) compares its birth generation with the process's [`generation`] on
//! every call and takes a heap of its own in the child ([`crate::join`]).
//!
//! Invariant: [`generation`] is the number of forks between the process and its first
//! ancestor that loaded this library: equal in two processes only if neither descends from
//! the other by a fork, and never equal in a parent and a child of it.

use crate::heap::{registered, Heap};
use crate::heap_handover;
use crate::os;
use crate::per_thread;
use crate::pool::Pool;
use crate::sync::{set_fork_caller, spin_hint, spin_lock, ForkCaller, RawSpin, SpinLock};
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use core::ptr;
use lock_api::MutexGuard;

pub(crate) struct List {
    /// The first pool (the others follow through `Pool::fork_next`).
    first: *mut Pool,
    /// How many pools were pushed: the last `Pool::fork_serial` given.
    pushed: u64,
    /// The forking thread's heaps, copied by [`prepare`] for [`child`].
    forking: ForkingHeaps,
}
// SAFETY: the list is only touched under its lock.
unsafe impl Send for List {}

/// The most heaps of the forking thread's list [`prepare`] copies.
const COPIED: usize = 64;

/// The forking thread's list of heaps as [`prepare`] read it, in the parent, where every
/// heap is mapped: each heap with its pool and the pool's `fork_serial`, in list order (`heaps[i + 1]` is
/// `heaps[i].thread_next`), its first [`COPIED`]. A child whose copy of the process lacks
/// a pool's region ([`Pool::check_after_fork`]) rebuilds its thread's list from it,
/// reading nothing of the heaps it leaves out (and forgetting the thread's entries: the
/// heaps past the copy, and those made inside the fork, stay out of the thread's reach
/// there, their blocks kept as a dead thread's).
struct ForkingHeaps {
    heaps: [(*mut Heap, *const Pool, u64); COPIED],
    len: usize,
}

static INSTANCES: SpinLock<List> = spin_lock(List {
    first: ptr::null_mut(),
    pushed: 0,
    forking: ForkingHeaps {
        heaps: [(ptr::null_mut(), ptr::null(), 0); COPIED],
        len: 0,
    },
});
/// See [`generation`]: incremented in every child, by the `child` handler.
static GENERATION: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The process's fork generation (see the module docs): a value recorded before a fork
/// differs from this in the child.
#[inline(always)]
pub(crate) fn generation() -> u64 {
    GENERATION.load(core::sync::atomic::Ordering::Relaxed)
}
/// Whether the fork handlers are registered: `pid << 2 | state`, where `state` is
/// [`NONE`], [`REGISTERING`] (by process `pid`) or [`DONE`]. A fork child inherits the
/// word: when its parent's registration had completed `pthread_atfork` before the fork,
/// the handlers run in the child and [`child`] stores [`DONE`]; otherwise the child sees
/// its parent's `REGISTERING`, which nobody in the child will finish, and registers itself.
static REGISTERED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The thread inside [`ensure_registered`]'s `pthread_atfork` call (0: none). Only that
/// thread stores its id, and only it can read its own id here.
static REGISTERING_THREAD: core::sync::atomic::AtomicI32 = core::sync::atomic::AtomicI32::new(0);

/// Handlers not registered / being registered / registered.
const NONE: u64 = 0;
const REGISTERING: u64 = 1;
const DONE: u64 = 2;

/// Registers the fork handlers (when not yet: [`ensure_registered`]), then takes the
/// instance list's lock. The handlers are registered outside the lock: `pthread_atfork`
/// waits for a fork in progress, whose `prepare` waits for the lock.
pub(crate) fn lock_list() -> MutexGuard<'static, RawSpin, List> {
    ensure_registered();
    INSTANCES.lock()
}

/// The handlers' registration when the library is loaded (an ELF constructor), before the
/// program's `main` and before any code the program runs registers its own: POSIX runs
/// `prepare` handlers in the reverse order of their registration and `parent` and `child`
/// handlers in that order, so cohort's `prepare` runs after every handler registered
/// later and its `parent` and `child` before them, and those handlers may allocate from
/// cohort (its locks are free then, and the child is repaired). Registering at the first
/// instance instead left every handler registered before it running while cohort's locks
/// were held (RED-89: a fork hung). [`lock_list`] still registers, for a loader that runs
/// no constructors. A handler registered before the library loaded (another library's
/// constructor) that allocates from cohort inside a fork is not supported.
///
/// The entry's priority (the section's suffix, sorted by the static linker before the
/// entries without one) puts it before the program's own constructors of the default
/// priority when the library is linked statically into a C program (RED-97); in a shared
/// library, the loader runs it before the program's constructors anyway.
#[cfg(all(not(loom), target_os = "linux"))]
#[used]
#[link_section = ".init_array.00101"]
static REGISTER_AT_LOAD: extern "C" fn() = register_at_load;

#[cfg(all(not(loom), target_os = "linux"))]
extern "C" fn register_at_load() {
    ensure_registered();
}

/// Registers the fork handlers once per process; other threads wait until they are. The
/// registering thread itself goes on at once: `pthread_atfork` may allocate (the C
/// library grows its list of handlers with `malloc`, which may be cohort's), and that
/// allocation comes back here (RED-96); the handlers are then registered when the outer
/// call returns, before this thread can fork.
fn ensure_registered() {
    use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
    let mut round = 0;
    let mut seen = REGISTERED.load(Acquire);
    loop {
        let me = (os::shared_mem::pid() as u64) << 2;
        let takes = match seen & 3 {
            DONE => break,
            // A fork child of a process that was registering: its registration ended
            // with the parent (see `REGISTERED`).
            REGISTERING if seen & !3 != me => true,
            NONE => true,
            // REGISTERING by this process: by this thread, inside `pthread_atfork`?
            _ if REGISTERING_THREAD.load(Relaxed) == os::shared_mem::thread_id() => break,
            _ => false,
        };
        if takes {
            match REGISTERED.compare_exchange(seen, me | REGISTERING, AcqRel, Acquire) {
                Ok(_) => {
                    set_fork_caller(&FORK_CALLER_FN);
                    FORK_PID.store(os::shared_mem::pid(), Relaxed);
                    make_fork_mark();
                    REGISTERING_THREAD.store(os::shared_mem::thread_id(), Relaxed);
                    os::at_fork(prepare, parent, child);
                    REGISTERING_THREAD.store(0, Relaxed);
                    REGISTERED.store(DONE, Release);
                    break;
                }
                Err(now) => seen = now,
            }
            continue;
        }
        spin_hint(round);
        round += 1;
        seen = REGISTERED.load(Acquire);
    }
}

/// Adds a fresh pool to the list (whose lock the caller holds).
pub(crate) fn push(list: &mut List, pool: *mut Pool) {
    list.pushed += 1;
    // SAFETY: the pool is fresh and ours; the list lock guards `fork_next`.
    // SAFETY: as above.
    unsafe {
        (*pool).fork_next = list.first;
        (*pool).fork_serial = list.pushed;
    }
    list.first = pool;
}

pub(crate) fn unregister(pool: *mut Pool) {
    let mut list = INSTANCES.lock();
    let mut at: *mut *mut Pool = &mut list.first;
    // SAFETY: every pool on the list is live until unregistered here.
    unsafe {
        while !(*at).is_null() {
            if *at == pool {
                *at = (*pool).fork_next;
                return;
            }
            at = &mut (**at).fork_next;
        }
    }
}

/// True when a pool of the list is a shared region's with token tag `tag`.
pub(crate) fn has_tag(list: &List, tag: u64) -> bool {
    let mut found = false;
    for_each_here(list, |pool| found |= pool.is_shared() && pool.tag == tag);
    found
}

fn for_each(list: &List, mut f: impl FnMut(&Pool)) {
    let mut p = list.first;
    while !p.is_null() {
        // SAFETY: pools on the list are live.
        let pool = unsafe { &*p };
        f(pool);
        p = pool.fork_next;
    }
}

/// [`for_each`] over the pools whose regions this process has (not [`Pool::is_lost`]).
fn for_each_here(list: &List, mut f: impl FnMut(&Pool)) {
    for_each(list, |pool| {
        if !pool.is_lost() {
            f(pool);
        }
    });
}

/// True when `heap` is on the calling thread's list of heaps, from its first, `own`: a
/// heap the thread holds. The whole list, not [`ForkingHeaps`]' copy of its first
/// [`COPIED`] (RED-94).
fn on_thread_list(own: *mut Heap, heap: *mut Heap) -> bool {
    let mut at = own;
    while !at.is_null() {
        if at == heap {
            return true;
        }
        // SAFETY: the calling thread's list, in the parent: its heaps are mapped, and only
        // this thread changes the links.
        at = unsafe { (*at).thread_next };
    }
    false
}

/// [`prepare`]'s copy of the forking thread's list of heaps, from its first, `own`.
fn copy_forking_heaps(own: *mut Heap) -> ForkingHeaps {
    let mut copy = ForkingHeaps {
        heaps: [(ptr::null_mut(), ptr::null(), 0); COPIED],
        len: 0,
    };
    let mut heap = own;
    while !heap.is_null() && copy.len < COPIED {
        // SAFETY: the calling thread's list: its heaps are mapped, and only this thread
        // changes the links.
        let h = unsafe { &*heap };
        copy.heaps[copy.len] = (heap, ptr::from_ref(h.pool()), h.pool().fork_serial);
        copy.len += 1;
        heap = h.thread_next;
    }
    copy
}

/// The `prepare` handler: reads the forking thread's heaps (first, since a thread's first
/// read of its list may allocate), takes the instance list's lock, records them
/// ([`ForkingHeaps`]: the child's only thread goes on with them, and the other threads'
/// heaps are dead in the child) and takes every listed pool's two locks, and keeps them
/// (the guards are forgotten) across the fork.
///
/// # Safety
/// Called only by `fork()` (registered with `pthread_atfork`), which calls [`parent`] or
/// [`child`] after it: nothing else releases the locks it keeps.
unsafe extern "C" fn prepare() {
    if in_own_window() {
        // A fork inside this thread's fork (a program's `prepare` handler registered
        // before cohort's runs after it, or its `parent` handler before cohort's, and
        // either may fork: RED-102, RED-103): the locks are held already, by this thread,
        // and stay so until the outer fork's handler; taking them again would wait for
        // ourselves. The nested fork's child repairs as any child ([`child`]); its
        // `parent` handler only counts the nesting down.
        FORK_DEPTH.fetch_add(1, Relaxed);
        return;
    }
    // A fork made by a program's child handler that runs before cohort's (in a child not
    // repaired yet): the repair first, which may rebuild the thread's list (a child lacking
    // a region: RED-120, the list read before it ran through the missing memory).
    repair_pending_child();
    let own = per_thread::own_heaps();
    let mut list = INSTANCES.lock();
    // Under the list's lock, which the fork keeps: another thread's fork at the same time
    // stores its own after this one's child has its copy.
    list.forking = copy_forking_heaps(own);
    for_each_here(&list, |pool| {
        if !pool.is_process_shared() {
            core::mem::forget(pool.state.lock());
            core::mem::forget(pool.large.lock());
            // SAFETY: `raw` only: the locks are held, by this thread, and stay so.
            unsafe {
                pool.state.raw().hold_for_fork();
                pool.large.raw().hold_for_fork();
            }
            // No batch of remote frees is half changed in the copy. Heaps are registered
            // under the pool's lock (`Heap::register`): none is registered after this walk
            // but the forking thread's own, whose batch its registration takes.
            for heap in registered(pool) {
                let forking_thread_holds = on_thread_list(own, heap);
                // SAFETY: a private pool's registered heaps stay mapped for its life.
                unsafe { (*heap).remote.hold_for_fork(forking_thread_holds) };
            }
        }
    });
    // SAFETY: `raw` only: held by this thread, and stays so.
    unsafe { INSTANCES.raw().hold_for_fork() };
    core::mem::forget(list);
    // From here until the `parent` or `child` handler, a program's fork handler on this
    // thread may enter the locks held (`fork_caller`).
    FORK_THREAD.store(os::shared_mem::thread_id(), Release);
}

/// A word in a page the kernel gives a fork child zeroed (`MADV_WIPEONFORK`), set to 1 when
/// the page is made and by every child's repair ([`mark_repaired`]): 0 exactly in a fork
/// child not repaired yet, whatever the child's pid (a child in a new pid namespace may have
/// its parent's: RED-115), and whichever process made the fork (a nested fork's child that
/// goes on into the outer fork makes that fork's child without a [`prepare`] of its own:
/// RED-107, RED-117). Null where the kernel refuses `MADV_WIPEONFORK` (before Linux 4.14):
/// the pids tell then ([`FORK_PID`]). Made before the handlers are registered
/// ([`ensure_registered`]).
static FORK_MARK: core::sync::atomic::AtomicPtr<core::sync::atomic::AtomicU64> =
    core::sync::atomic::AtomicPtr::new(ptr::null_mut());

/// Maps [`FORK_MARK`]'s page (left null when the OS refuses).
fn make_fork_mark() {
    let page = os::map(os::MIN_PAGE, os::MIN_PAGE);
    if page.is_null() {
        return;
    }
    // SAFETY: our fresh private mapping; the advice only zeroes a child's copy.
    if unsafe { libc::madvise(page.cast(), os::MIN_PAGE, libc::MADV_WIPEONFORK) } != 0 {
        // SAFETY: mapped above, nothing in it.
        unsafe { os::unmap(page, os::MIN_PAGE) };
        return;
    }
    // SAFETY: our fresh mapping, a page: room for the word, aligned.
    unsafe { (*page.cast::<core::sync::atomic::AtomicU64>()).store(1, Relaxed) };
    FORK_MARK.store(page.cast(), Release);
}

/// Records that this process is repaired (or, at registration, never forked): sets
/// [`FORK_MARK`]'s word and [`FORK_PID`], which a fork child's copy then differs from.
fn mark_repaired() {
    FORK_PID.store(os::shared_mem::pid(), Relaxed);
    // SAFETY: null or the mark's page, mapped for the life of the process.
    if let Some(mark) = unsafe { FORK_MARK.load(Acquire).as_ref() } {
        mark.store(1, Relaxed);
    }
}

/// True when this process is a fork child whose repair ([`child`]) has not run: a fork was
/// open in the process that forked ([`fork_pending`]), and this process's copy of
/// [`FORK_MARK`] was wiped, or, without the mark, its pid is not the one that process
/// recorded (a child in a new pid namespace may have its parent's pid: RED-116; the `child`
/// handler itself does not need the pids, [`repair_due`]). A child made by a fork that runs no handlers
/// (`_Fork`, a bare `clone`) is not one: no repair is pending there (RED-119: a repair
/// asked long after such a fork took its live threads' heaps for dead ones), and such a
/// child is not supported (it keeps its parent's heaps of a shared region).
fn forked_since_prepare() -> bool {
    fork_pending() && mark_wiped().unwrap_or_else(pid_changed)
}

/// For the `child` handler, which runs only in a fork child: true unless the repair ran
/// in this process already ([`fork_caller`] or [`repair_pending_child`] ran it first): the
/// repair sets the mark, and leaves no fork open but those the process goes on through.
/// Without the mark, a repaired process going on through forks is told from its unrepaired
/// child by the pids (as in [`forked_since_prepare`]); the child handler of a prepared
/// fork needs none (RED-116).
fn repair_due() -> bool {
    fork_pending() && mark_wiped().unwrap_or_else(|| FORK_THREAD.load(Relaxed) != 0 || pid_changed())
}

/// Whether this process's copy of [`FORK_MARK`] is wiped (a fork child not repaired yet);
/// `None` where there is no mark (the kernel refused `MADV_WIPEONFORK`).
fn mark_wiped() -> Option<bool> {
    // SAFETY: null or the mark's page, mapped for the life of the process.
    unsafe { FORK_MARK.load(Acquire).as_ref() }.map(|mark| mark.load(Relaxed) == 0)
}

/// Without the mark: whether this process's pid is not the one its registration or its
/// last repair recorded ([`FORK_PID`]).
fn pid_changed() -> bool {
    FORK_PID.load(Relaxed) != os::shared_mem::pid()
}

/// How many forks around it a repaired child of a fork made inside others (see [`prepare`])
/// still goes on through: the handler that forked returns into the fork around it, whose
/// kernel fork then copies this process and whose `parent` handler runs here, and so on
/// out to the outermost (RED-107; two and three deep: RED-121). Its children by those forks
/// are repaired too, though no [`prepare`] of cohort's ran here for them ([`child`]).
/// Invariant: the forks open in this process are the [`GOING_ON`] ones, and inside them
/// (when `FORK_THREAD != 0`) `1 + FORK_DEPTH` prepared ones, the innermost last.
static GOING_ON: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// Whether a fork is open in this process (see [`GOING_ON`]): its child, copied from this
/// image, is to be repaired. A child of a fork that runs no handlers (`_Fork`) made outside
/// them is not (RED-119).
fn fork_pending() -> bool {
    FORK_THREAD.load(Relaxed) != 0 || GOING_ON.load(Relaxed) != 0
}

/// The thread inside a fork whose [`prepare`] holds the locks (from the end of [`prepare`]
/// to the end of [`parent`] or [`child`]; 0: none). Invariant: `FORK_THREAD != 0` exactly
/// while (in a child: in the parent's image) the locks [`prepare`] took are held for a
/// fork.
static FORK_THREAD: core::sync::atomic::AtomicI32 = core::sync::atomic::AtomicI32::new(0);
/// The process's pid, recorded at registration and by every repair ([`mark_repaired`]).
static FORK_PID: core::sync::atomic::AtomicI32 = core::sync::atomic::AtomicI32::new(0);
/// How many forks the thread in [`FORK_THREAD`] made inside its own (from their
/// [`prepare`] to their [`parent`]); 0 outside. Only that thread changes it, and a child's
/// repair sets it to 0.
static FORK_DEPTH: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// True when the calling thread is the one inside a fork of this process (between the
/// end of its [`prepare`] and its [`parent`]).
fn in_own_window() -> bool {
    FORK_THREAD.load(Acquire) == os::shared_mem::thread_id() && !forked_since_prepare()
}

/// In a fork child whose repair has not run yet (a program's child handler, registered
/// before cohort's, runs first and calls cohort): runs it now ([`fork_caller`]'s way: on
/// the child's first thread, another stopped). For the calls that take over the heaps a
/// fork left (statistics, verify) before they lock anything: the repair is what marks
/// those heaps (RED-114: a heap whose thread the fork stopped inside a write of its
/// counts was counted twice, and verify called it damage).
pub(crate) fn repair_pending_child() {
    if forked_since_prepare() {
        let _ = fork_caller();
    }
}

/// [`fork_caller`], for the locks to ask (`crate::sync`'s `set_fork_caller`).
static FORK_CALLER_FN: fn() -> ForkCaller = fork_caller;

/// What a thread that finds a lock held across a fork may do (RED-100: POSIX runs the
/// `prepare` handlers registered before cohort's after it, and their `parent` and `child`
/// handlers before cohort's, and a library loaded before cohort registers its handlers
/// first; such a handler may allocate): the forking thread enters the lock (cohort's
/// state is whole: its own `prepare` only holds it); a fork child's only thread runs the
/// child's repair ([`child`]) at once, which releases every lock, and tries again; any
/// other thread waits.
fn fork_caller() -> ForkCaller {
    if forked_since_prepare() {
        // A fork child whose repair has not run (`child` marks it done). The repair reads
        // and changes the forking thread's own state: it must run on that thread, the
        // child's first (whose id is the child's pid). Another thread can only be one a
        // program's child handler started before cohort's ran (RED-111): stopped, rather
        // than repair with its state (the first thread's heaps would be taken for a dead
        // thread's).
        let (thread, pid) = (os::shared_mem::thread_id(), os::shared_mem::pid());
        if thread != pid {
            os::abort_with(format_args!(
                "cohort: thread {thread} of fork child {pid} called the allocator before \
                 cohort's fork child handler ran (a thread a fork handler registered before \
                 cohort's started): not supported"
            ));
        }
        // SAFETY: the child's first thread, the only one that was copied, here.
        unsafe { child() };
        return ForkCaller::Retry;
    }
    if FORK_THREAD.load(Acquire) == os::shared_mem::thread_id() {
        ForkCaller::Enter
    } else {
        ForkCaller::Wait
    }
}

/// Releases the locks [`prepare`] kept.
///
/// # Safety
/// [`prepare`] ran in this process (or, in a child, in the parent before the fork) and its
/// locks were not released since: they are held, by the calling thread or by the parent's
/// image of it.
unsafe fn unlock_all() {
    // SAFETY: `prepare` locked the list and every pool in this process (parent) or in
    // the parent's image (child, where that thread is the only one).
    unsafe {
        let list = &*INSTANCES.data_ptr();
        for_each_here(list, |pool| {
            if !pool.is_process_shared() {
                // As in `prepare`: the registered heaps are mapped.
                for heap in registered(pool) {
                    (*heap).remote.unhold_after_fork();
                }
                pool.large.raw().release_fork_hold();
                pool.state.raw().release_fork_hold();
            }
        });
        INSTANCES.raw().release_fork_hold();
    }
}

/// In a child whose copy holds no lock for the fork (see [`child`]): a lock held there, or
/// a batch of remote frees in use, was held by a thread the child does not have, which left
/// what it guards half changed; the child stops with a message rather than wait for it for
/// ever (RED-118: the process that forked, itself the child of a fork made inside a fork
/// handler, had started threads before it went on into the outer fork, and no `prepare` of
/// cohort's ran for that fork).
fn stop_if_a_lock_is_held() {
    // SAFETY: `raw` only to read whether the lock is held; nothing unlocks it.
    let list_held = unsafe { INSTANCES.raw() }.is_held();
    let mut pool_held = false;
    if !list_held {
        // SAFETY: the child's only thread; the list's pools are live (a pool leaves the
        // list under its lock, not held).
        let list = unsafe { &*INSTANCES.data_ptr() };
        for_each_here(list, |pool| {
            if pool.is_process_shared() {
                return;
            }
            // SAFETY: `raw` only to read whether the locks are held.
            pool_held |= unsafe { pool.state.raw().is_held() || pool.large.raw().is_held() };
            // A batch of remote frees in use: taken over by a flusher (RED-118's sibling:
            // the child's flushes would wait for it for ever), or its holder inside it.
            for heap in registered(pool) {
                // SAFETY: a private pool's registered heaps stay mapped for its life.
                pool_held |= unsafe { (*heap).remote.in_use() };
            }
        });
    }
    if list_held || pool_held {
        os::abort_with(format_args!(
            "cohort: fork child {}: a lock or a batch of remote frees of cohort's was held at \
             the fork by another thread of the process that forked, which had not prepared \
             for it (itself the child of a fork made inside a fork handler, it went on into \
             the outer fork with other threads running): not supported",
            os::shared_mem::pid()
        ));
    }
}

/// The `parent` handler: releases the locks [`prepare`] kept.
///
/// # Safety
/// Called only by `fork()` in the parent, after [`prepare`].
unsafe extern "C" fn parent() {
    if repair_due() {
        // Not the process that prepared: a copy of it made inside the fork by a fork that
        // runs no handlers (`_Fork` in a program's earlier fork handler), not repaired yet
        // (RED-122): the repair, as in a child of this fork (which is done here), and it
        // releases the locks.
        // SAFETY: a child of the process that prepared, on its first thread (the copy's
        // only one: a fork inside the fork's handlers, which run on the forking thread).
        unsafe { child() };
        return;
    }
    if FORK_THREAD.load(Relaxed) == 0 {
        // Nothing held: one of the forks a repaired child of a nested fork goes on through
        // ends here (see `GOING_ON`).
        let going_on = GOING_ON.load(Relaxed);
        GOING_ON.store(going_on.saturating_sub(1), Relaxed);
        return;
    }
    if FORK_DEPTH.load(Relaxed) > 0 {
        // The end of a fork inside this thread's own (see `prepare`): the outer fork's
        // `parent` or `child` handler releases the locks.
        FORK_DEPTH.fetch_sub(1, Relaxed);
        return;
    }
    // Before the locks are released: a fork another thread starts once they are stores
    // its own thread here.
    FORK_THREAD.store(0, Release);
    // SAFETY: see unlock_all.
    unsafe { unlock_all() }
}

/// The `child` handler: in private pools, marks the heaps of the parent's other threads
/// dead (those of the threads the child does not have, and those whose thread or join was
/// exiting at the fork: `heap_handover::after_fork_in_child`; the forking thread's stay
/// its own, and so do the joins, which the child's thread may carry) and repairs each
/// join's heap in place (another thread may have been inside a call of it:
/// `heap_handover::repair_joins_in_child`); clears the batches' `busy` (no thread of the
/// child is in one: `RemoteBatch::forget_holder_in_fork_child`); makes the calling thread
/// forget its heaps of shared pools (the parent's); then releases the locks [`prepare`]
/// kept. The dead heaps are taken over later, by the child's first call that reaps dead
/// holders' heaps (`heap_handover::reap_dead`: `verify`, a thread's join, a release that
/// leaves blocks to other threads, out of memory; and the statistics and block reports,
/// `heap_handover::reap_forsaken`: a thread stopped inside a write of its counts leaves
/// them half moved), not here: a fork followed by `exec`
/// pays nothing for them (for the joins' heaps, a walk of their heads and of the blocks).
///
/// # Safety
/// Called only by `fork()` in the child, after [`prepare`] in the parent, while the
/// calling thread is the child's only one.
unsafe extern "C" fn child() {
    if !repair_due() {
        // Ran already, from a lock a program's earlier child handler took (`fork_caller`)
        // or from the statistics or verify (`repair_pending_child`).
        return;
    }
    // Whether the locks are held in this copy: they are in a child of a `prepare`d fork
    // (the parent's thread held them). They are not in the child of a process that was
    // itself the child of a fork made inside another (see `prepare`) and went on into the
    // outer fork (the handler that forked returned into it): that process's repair
    // released them and took none again (RED-117: a helper process forked in a program's
    // fork handler may never return into the outer fork, and its threads and children
    // would wait for ever), and its `parent` handler has nothing to release (see
    // `parent`). Such a child is repaired all the same: its mark is wiped (RED-107).
    let held = FORK_THREAD.swap(0, Relaxed) != 0;
    // The forks this process goes on through: those open in the image but the one that
    // made it, the innermost (see `GOING_ON`).
    let going_on = match held {
        true => FORK_DEPTH.swap(0, Relaxed) + GOING_ON.load(Relaxed),
        false => GOING_ON.load(Relaxed).saturating_sub(1),
    };
    if !held {
        stop_if_a_lock_is_held();
    }
    // The child's only thread: nobody reads it concurrently.
    GENERATION.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    // The handlers run: they are registered in the child (whatever its parent's word says:
    // it may have been forked between `pthread_atfork` and the store of `DONE`).
    REGISTERED.store(DONE, core::sync::atomic::Ordering::Release);
    // SAFETY: `prepare` locked the list; this thread is the child's only one.
    let list = unsafe { &*INSTANCES.data_ptr() };
    let mut lost = false;
    for_each(list, |pool| lost |= !pool.is_lost() && !pool.check_after_fork());
    // The thread's list as it is: a program's fork handler that ran after cohort's
    // `prepare` may have made a heap (its first allocation from an instance: RED-105) or
    // dropped an instance (RED-106) since `prepare` copied it.
    let mut own = per_thread::own_heaps();
    if lost {
        // Before anything walks the thread's list, which runs through its heaps, some of
        // them in memory this child does not have: the list becomes the copy's heaps of
        // pools still listed (not dropped inside the fork) and not lost; every entry of
        // the thread is forgotten (the copy does not know a heap made inside the fork,
        // which the entries may name: it is the parent's then, as another thread's).
        // A pool is still listed when one with its serial is (a pool made inside the fork
        // where a dropped one was has another: RED-112).
        let mut kept = [ptr::null_mut(); COPIED];
        let mut len = 0;
        for &(heap, pool, serial) in &list.forking.heaps[..list.forking.len] {
            let mut here = false;
            for_each_here(list, |p| here |= ptr::eq(p, pool) && p.fork_serial == serial);
            if here {
                kept[len] = heap;
                len += 1;
            }
        }
        // SAFETY: the child's only thread; `kept` are heaps of its list as `prepare` read
        // it, in that order, of pools listed and here: mapped.
        own = unsafe { per_thread::keep_after_fork(&kept[..len]) };
    }
    for_each_here(list, |pool| {
        if pool.is_process_shared() {
            per_thread::forget_pool(pool);
            // SAFETY: the fork child's handler, on its only thread.
            unsafe { pool.after_fork_in_child() };
        } else {
            // SAFETY: the fork child's handler, on its only thread; `own` is its heap list,
            // read before the fork.
            unsafe { heap_handover::after_fork_in_child(pool, own) };
            // SAFETY: as above, after the marks (a join's heap its join was leaving is
            // forsaken, not repaired).
            unsafe { heap_handover::repair_joins_in_child(pool) };
            for heap in registered(pool) {
                // SAFETY: as in `prepare`: the registered heaps are mapped.
                unsafe { (*heap).remote.forget_holder_in_fork_child() };
            }
        }
    });
    if held {
        // SAFETY: see unlock_all.
        unsafe { unlock_all() };
    }
    if going_on > 0 {
        // This process may go on into the outer fork, whose child a lost region then
        // rebuilds from the copy of the thread's list: this process's, as `prepare`
        // would have made it.
        let own = per_thread::own_heaps();
        INSTANCES.lock().forking = copy_forking_heaps(own);
    }
    GOING_ON.store(going_on, Relaxed);
    mark_repaired();
}
