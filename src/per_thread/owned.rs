//! The calling thread's list of heaps, one per instance it allocated from: joined on the
//! first allocation, found again by instance or owner token, pruned of dropped instances'
//! heaps, left (abandoned) at the thread's exit.
//!
//! Invariants: every heap on the list (`OWNED`) is this thread's, and the list holds at most
//! one heap per instance; a heap taken off the list is out of the thread's entries in
//! [`super::Current`] too (`forget_heap`).

use super::{empty_slot, make_current, slot_of, CURRENT, NO_TAG, SLOTS};
use crate::heap::Heap;
use crate::heap_handover::{self, adopt_or_create, THREAD_GROUP};
use crate::heap_record::HeapState;
use crate::pool::Pool;
use core::cell::Cell;
use core::ptr;

/// The calling thread's heaps (one per instance it allocated from); its drop is the thread
/// exit hook.
struct Owned {
    first: Cell<*mut Heap>,
}

thread_local! {
    static OWNED: Owned = const { Owned { first: Cell::new(ptr::null_mut()) } };
    // No destructor: true while the thread's first access to OWNED registers its
    // destructor (see `with_owned`).
    static REGISTERING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` on the calling thread's heap list; `None` when the thread can have none: it is
/// exiting (OWNED is gone), or this call came from inside the registration of OWNED's
/// destructor. The thread's first access to OWNED registers it with the C library
/// (`__cxa_thread_atexit_impl`), which allocates with `calloc`: when this allocator is the
/// process's malloc, that allocation comes back here, and taking OWNED again would register
/// again, without end. It is served without a heap instead (the pool's lock).
fn with_owned<R>(f: impl FnOnce(&Owned) -> R) -> Option<R> {
    if REGISTERING.get() {
        return None;
    }
    REGISTERING.set(true);
    let got = OWNED.try_with(|owned| {
        REGISTERING.set(false);
        f(owned)
    });
    REGISTERING.set(false);
    got.ok()
}

impl Drop for Owned {
    fn drop(&mut self) {
        forget_every_entry();
        let mut heap = self.first.replace(ptr::null_mut());
        while !heap.is_null() {
            // SAFETY: heaps on this thread's list are this thread's; read the link before
            // the heap may be released.
            let next = unsafe { (*heap).thread_next };
            // SAFETY: the thread is exiting and uses the heap no more.
            unsafe { heap_handover::abandon(heap) };
            heap = next;
        }
    }
}

/// The calling thread's heap for `instance`, joining one if needed. Null when the thread
/// can have none (it is exiting, the registry is full, or the OS refuses memory): the
/// caller then goes through the pool's lock.
#[cold]
#[inline(never)]
pub(crate) fn join_thread(pool: &Pool, instance: u64) -> *mut Heap {
    let found = with_owned(|owned| {
        let mut heap = find_own(instance);
        if heap.is_null() {
            heap = adopt_or_create(pool, instance, THREAD_GROUP);
            if !heap.is_null() {
                // SAFETY: the heap is ours: fresh or just taken off the abandoned list.
                unsafe { (*heap).thread_next = owned.first.get() };
                owned.first.set(heap);
            }
        }
        heap
    });
    let heap = found.unwrap_or(ptr::null_mut());
    if !heap.is_null() {
        make_current(instance, heap);
    }
    heap
}

/// The calling thread's heap for `instance` if it has one (it never joins one); null
/// otherwise. Heaps of dropped instances (ORPHANED) that the walk meets are unlinked and
/// released: a thread that outlives many instances keeps a short list (a miss walks the
/// whole list, so every join of a new heap prunes it).
pub(crate) fn find_own(instance_wanted: u64) -> *mut Heap {
    with_owned(|owned| {
            let mut at: *mut *mut Heap = owned.first.as_ptr();
            loop {
                // SAFETY: `at` is the list's head or the link of a heap on it; heaps on the
                // thread's list stay mapped until released here or at thread exit, and only
                // this thread touches the links.
                let heap = unsafe { *at };
                if heap.is_null() {
                    return heap;
                }
                // SAFETY: as above.
                let (state, instance, next) =
                    unsafe { ((*heap).state(), (*heap).instance, (*heap).thread_next) };
                if state == HeapState::Orphaned {
                    // SAFETY: as above.
                    unsafe { *at = next };
                    forget_heap(heap);
                    // SAFETY: the instance is gone (ORPHANED): its teardown touches the heap
                    // no more, and it is now on no list and in no entry. A private pool's
                    // is unmapped, a shared pool's left into its region.
                    unsafe { heap_handover::abandon(heap) };
                    continue;
                }
                if instance == instance_wanted {
                    return heap;
                }
                // SAFETY: a mapped heap of the list.
                at = unsafe { ptr::addr_of_mut!((*heap).thread_next) };
            }
        })
        .unwrap_or(ptr::null_mut())
}

/// The first heap of the calling thread's list (the others follow through their
/// `thread_next`), null when it has none. Its first call on a thread registers the list's
/// exit hook, which may allocate: not for a caller holding a pool lock (the fork handlers
/// read it before they lock).
pub(crate) fn own_heaps() -> *mut Heap {
    with_owned(|owned| owned.first.get()).unwrap_or(ptr::null_mut())
}

/// Takes the calling thread's heap of `instance` off its list and out of its entries, and
/// returns it (null when it has none): the thread leaves it (a shared instance's drop).
pub(crate) fn leave_own(instance: u64) -> *mut Heap {
    unlink_own(|heap| heap.instance == instance)
}

/// In a child process after `fork()`: the calling thread forgets its heaps of the shared
/// pool `pool` (they are the parent's, which goes on using them), and joins afresh on its
/// next allocation.
pub(crate) fn forget_pool(pool: &Pool) {
    while !unlink_own(|heap| ptr::eq(heap.pool(), pool)).is_null() {}
}

/// In a fork child whose copy of the process lacks some pools' regions: the calling
/// thread's list becomes `kept` (heaps of its list as the fork's `prepare` read it, in the
/// same order, those whose pools the child has), and every entry of the thread is
/// cleared, without reading any other heap: the heaps not kept stay out of the thread's
/// reach in the child (their blocks kept, as a dead thread's). Returns the list's new
/// first heap.
///
/// # Safety
/// The child's only thread, before anything else reads its list; the heaps of `kept` are
/// mapped.
pub(crate) unsafe fn keep_after_fork(kept: &[*mut Heap]) -> *mut Heap {
    let mut first = ptr::null_mut();
    let mut at: *mut *mut Heap = &mut first;
    for &heap in kept {
        // SAFETY: `at` is `first` or the link of a kept heap, mapped (the caller).
        unsafe {
            *at = heap;
            at = ptr::addr_of_mut!((*heap).thread_next);
        }
    }
    // SAFETY: as above.
    unsafe { *at = ptr::null_mut() };
    let _ = with_owned(|owned| owned.first.set(first));
    forget_every_entry();
    first
}

/// Clears every entry of the calling thread ([`super::Current`]'s recent heaps and slot
/// rows): nothing is found again but through the list.
fn forget_every_entry() {
    let _ = CURRENT.try_with(|c| {
        for recent in &c.recent {
            recent.set(0, ptr::null_mut(), NO_TAG);
        }
        for slot in 0..SLOTS {
            empty_slot(c, slot);
        }
    });
}

/// Takes the first heap of the calling thread's list that `is` accepts off the list and
/// out of the thread's entries, and returns it (null when none).
fn unlink_own(is: impl Fn(&Heap) -> bool) -> *mut Heap {
    with_owned(|owned| {
        let mut at: *mut *mut Heap = owned.first.as_ptr();
        loop {
            // SAFETY: `at` is the list's head or the link of a heap on it; heaps on the
            // thread's list stay mapped while on it, and only this thread touches the links.
            let heap = unsafe { *at };
            // SAFETY: as above.
            if heap.is_null() || is(unsafe { &*heap }) {
                if !heap.is_null() {
                    // SAFETY: as above.
                    unsafe { *at = (*heap).thread_next };
                    forget_heap(heap);
                }
                return heap;
            }
            // SAFETY: a mapped heap of the list.
            at = unsafe { ptr::addr_of_mut!((*heap).thread_next) };
        }
    })
    .unwrap_or(ptr::null_mut())
}

/// Releases the calling thread's heaps of dropped instances (after an instance drop).
pub(crate) fn unmap_orphans() {
    // Instance 0 is never used: the walk meets every heap.
    find_own(0);
}

/// Clears the thread's entries that name `heap`: the recent heaps, and the row of its
/// instance's slot (the thread's only heap of that instance).
fn forget_heap(heap: *mut Heap) {
    // SAFETY: the caller passes a heap still mapped.
    forget_entries(heap, unsafe { (*heap).instance });
}

/// [`forget_heap`] of a heap of `instance`, which it does not read.
fn forget_entries(heap: *mut Heap, instance: u64) {
    let slot = slot_of(instance);
    let _ = CURRENT.try_with(|c| {
        for recent in &c.recent {
            if recent.heap.get() == heap {
                recent.set(0, ptr::null_mut(), NO_TAG);
            }
        }
        if slot != 0 {
            empty_slot(c, slot);
        }
    });
}

/// If the calling thread's heap for `instance` has token `owner`, makes it the thread's
/// current heap and returns it.
pub(crate) fn switch_to_own<'a>(instance: u64, owner: u64) -> Option<&'a Heap> {
    let heap = find_own(instance);
    // SAFETY: find_own returns null or a live heap of the calling thread.
    let hp = unsafe { heap.as_ref() }?;
    if hp.token != owner {
        return None;
    }
    make_current(instance, heap);
    Some(hp)
}

#[cfg(test)]
mod tests {
    use crate::heap::counts::{HEAPS_MAPPED_HERE, HEAPS_UNMAPPED_HERE};
    use crate::Cohort;

    /// The calling thread's heap list.
    fn own_heaps() -> usize {
        let mut n = 0;
        let mut heap = super::OWNED.with(|o| o.first.get());
        while !heap.is_null() {
            n += 1;
            // SAFETY: heaps on the thread's list are mapped.
            heap = unsafe { (*heap).thread_next };
        }
        n
    }

    /// Heaps the calling thread mapped and has not unmapped.
    fn heaps_kept_here() -> usize {
        HEAPS_MAPPED_HERE.with(|n| n.get()) - HEAPS_UNMAPPED_HERE.with(|n| n.get())
    }

    /// One long-lived thread creates, uses and drops many instances: their heaps are
    /// released as they go, not kept (and walked) until the thread exits.
    #[test]
    fn instances_dropped_on_a_long_lived_thread_release_its_heaps() {
        std::thread::spawn(|| {
            for _ in 0..2000 {
                let c = Cohort::<()>::new();
                let p = c.malloc(64, ());
                // SAFETY: just allocated.
                unsafe { c.free(p, 64, ()) };
            }
            assert!(own_heaps() <= 1, "the thread keeps {} heaps", own_heaps());
            assert!(
                heaps_kept_here() <= 1,
                "{} heaps stay mapped",
                heaps_kept_here()
            );
        })
        .join()
        .unwrap();
    }

    /// An instance dropped by another thread: the thread's heap of it is released on its
    /// next join.
    #[test]
    fn heaps_orphaned_by_another_thread_are_released_on_the_next_join() {
        let keep = Cohort::<()>::new();
        let (tx, rx) = std::sync::mpsc::channel::<usize>();
        let (back, done) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            s.spawn(|| {
                for c in rx {
                    // SAFETY: the main thread drops it only after our answer.
                    let c = unsafe { &*(c as *const Cohort<()>) };
                    let p = c.malloc(64, ());
                    // SAFETY: just allocated.
                    unsafe { c.free(p, 64, ()) };
                    back.send(()).unwrap();
                }
                let p = keep.malloc(64, ());
                // SAFETY: just allocated.
                unsafe { keep.free(p, 64, ()) };
                assert!(own_heaps() <= 2, "the thread keeps {} heaps", own_heaps());
            });
            for _ in 0..200 {
                let c = Box::new(Cohort::<()>::new());
                tx.send(&*c as *const Cohort<()> as usize).unwrap();
                done.recv().unwrap();
                drop(c);
            }
            drop(tx);
        });
    }
}
