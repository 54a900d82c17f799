//! The calling thread's state: the heaps it joined (one per instance it allocated from,
//! left at its exit), and the state the fast paths read with one thread-local access: the
//! heap it used last, the one before, one row of current blocks per instance slot, and a
//! copy of the class tables.
//!
//! Invariants: an entry of `recent` names a live heap of its instance, or an instance that
//! is gone (instance ids and tokens are never reused, so a stale entry matches nothing);
//! `recent[0].tag == owner_tag(recent[0].heap.token)` or [`NO_TAG`]; every heap on the
//! thread's list (`OWNED`) is this thread's, and the list holds at most one heap per
//! instance; `rows[0] == EMPTY_ROW`, and for `0 < s < SLOTS`, `rows[s]` is `EMPTY_ROW` or
//! `current_row(heap, life)` of the live heap on the thread's list whose instance id is `s`
//! (`slot_of(id) == s`), for the one lifetime class `life` that instance's
//! [`Instance::alloc_global`](crate::instance::Instance) passes, and `slot_heaps[s]` is
//! null or that heap, with it.

mod owned;

pub(crate) use owned::{
    find_own, forget_pool, keep_after_fork, join_thread, leave_own, own_heaps, switch_to_own, unmap_orphans,
};

use crate::block::Header;
use crate::class::{Lookup, LOOKUP};
use crate::heap::{current_row, Heap, Row as HeapRow, EMPTY_BLOCK};
use crate::heap_record::owner_tag;
use crate::instance_id::MAX_INSTANCES;
use core::cell::Cell;
use core::ptr;

/// One heap the calling thread used: its instance, the heap, and the owner word of its
/// blocks without their key ([`owner_tag`] of its token).
struct RecentHeap {
    instance: Cell<u64>,
    heap: Cell<*mut Heap>,
    tag: Cell<u64>,
}

impl RecentHeap {
    /// An entry naming no heap.
    const fn empty() -> RecentHeap {
        RecentHeap {
            instance: Cell::new(0),
            heap: Cell::new(ptr::null_mut()),
            tag: Cell::new(NO_TAG),
        }
    }

    fn set(&self, instance: u64, heap: *mut Heap, tag: u64) {
        self.instance.set(instance);
        self.heap.set(heap);
        self.tag.set(tag);
    }

    fn swap(&self, other: &RecentHeap) {
        self.instance.swap(&other.instance);
        self.heap.swap(&other.heap);
        self.tag.swap(&other.tag);
    }
}

/// The calling thread's state for the fast paths: the heap it used last (`recent[0]`, the
/// only one the fast paths read), the one it used before in another instance (`recent[1]`:
/// the slow paths swap the two when it matches, so that a thread alternating between two
/// instances, a global allocator and a lifetime-class instance say, finds both without a
/// search), and a
/// copy of the class tables (read-only). The copy is there because the fast paths load the
/// thread pointer anyway: a table beside it is one base register away, while a table in the
/// binary needs its own address computation in position-independent code.
///
/// An entry names a live heap of its instance, or an instance that is gone: instance ids and
/// tokens are never reused, so a stale entry matches nothing.
///
/// `rows` is the global allocator's way to its heap without the instance compare of
/// `recent`: an instance among the first `SLOTS - 1` has a slot of its own (its id:
/// [`slot_of`]), and the thread's entry for that slot points at its heap's row of current
/// blocks, so that a block is two loads from the thread pointer (row, block). An entry with
/// no heap behind it points at [`EMPTY_ROW`], whose blocks' pops fail, so the fast path
/// needs no test for it; slot 0, the slot of every other instance, is always empty.
#[repr(C)]
struct Current {
    recent: [RecentHeap; 2],
    rows: [Cell<Row>; SLOTS],
    /// The heap behind each row (null behind an empty one), for the frees of its blocks
    /// that the fast path (which reads `recent[0]`) passes on.
    slot_heaps: [Cell<*mut Heap>; SLOTS],
    lookup: Lookup,
}

/// A heap's row of current blocks and their cursors, one per size class.
pub(crate) type Row = *const HeapRow;

/// The thread-local slots for instances: ids `1..SLOTS` have their own (see [`Current`]).
pub(crate) const SLOTS: usize = 16;

/// The slot of instance `id`: the id itself when below [`SLOTS`], else 0 (the shared,
/// always empty one). Ids are never reused, so neither is a slot.
#[inline]
pub(crate) const fn slot_of(id: u64) -> usize {
    if id < SLOTS as u64 {
        id as usize
    } else {
        0
    }
}

/// Current blocks for no heap, with empty cursors: every pop on them fails, and writes
/// nothing.
static EMPTY_ROW: HeapRow = HeapRow::empty(&EMPTY_BLOCK);

/// [`EMPTY_ROW`]'s address.
const fn empty_row() -> Row {
    &EMPTY_ROW
}

/// The tag of no heap: `owner_key ^ key` of no block (it would take token `2^48 - 1`,
/// whose heap id `0xffff` is past the registry's).
const NO_TAG: u64 = u64::MAX;

thread_local! {
    // No destructor: readable at any point of the thread's life, even while other thread
    // locals are being destroyed, and read with one TLS access on the fast path.
    static CURRENT: Current = const {
        Current {
            recent: [RecentHeap::empty(), RecentHeap::empty()],
            rows: [const { Cell::new(empty_row()) }; SLOTS],
            slot_heaps: [const { Cell::new(ptr::null_mut()) }; SLOTS],
            lookup: LOOKUP,
        }
    };
}

/// Runs `f` on the calling thread's heap for `instance` if it is the one it used last (the
/// fast path: one thread-local read and a compare); `None` otherwise.
#[inline(always)]
pub(crate) fn with_current<R>(instance: u64, f: impl FnOnce(&Heap) -> Option<R>) -> Option<R> {
    CURRENT.with(|c| {
        let last = &c.recent[0];
        if last.instance.get() == instance {
            // SAFETY: an entry names a live heap of `instance` whenever its instance matches
            // (see `Current`).
            f(unsafe { &*last.heap.get() })
        } else {
            None
        }
    })
}

/// The calling thread's row of current blocks for `slot` ([`slot_of`] an instance's id):
/// the row of its heap of that instance, or [`EMPTY_ROW`]. Two loads from the thread
/// pointer reach a block: the global allocator's fast path
/// ([`Instance::alloc_global`](crate::instance::Instance)).
///
/// # Safety
/// `slot < SLOTS`.
#[inline(always)]
pub(crate) unsafe fn row(slot: usize) -> Row {
    debug_assert!(slot < SLOTS);
    // SAFETY: slot < SLOTS (caller).
    CURRENT.with(|c| unsafe { c.rows.get_unchecked(slot) }.get())
}

/// Points the calling thread's entry for the slot of `instance` at its heap's current
/// blocks of `life`, if the heap it used last is of `instance` (and the instance has a slot
/// of its own). Called by the global allocator's slow path, after the fast path of
/// `recent` made that heap the last used.
///
/// # Safety
/// `life` is below the instance's lifetime-class count, and every call for this instance
/// passes the same `life` (the slot holds one row).
pub(crate) unsafe fn fill_row(instance: u64, life: usize) {
    let slot = slot_of(instance);
    if slot == 0 {
        return;
    }
    let _ = CURRENT.try_with(|c| {
        let last = &c.recent[0];
        if last.instance.get() == instance {
            // SAFETY: the entry names a live heap of `instance` (see `Current`); life is
            // one of its lifetime classes (caller).
            c.rows[slot].set(unsafe { current_row(last.heap.get(), life) });
            c.slot_heaps[slot].set(last.heap.get());
        }
    });
}

/// Empties the thread's entry for `slot`.
fn empty_slot(c: &Current, slot: usize) {
    c.rows[slot].set(empty_row());
    c.slot_heaps[slot].set(ptr::null_mut());
}

/// The calling thread's heap of `instance` if the instance's slot holds it (see
/// `Current`: then it is the thread's only heap of the instance); `None` when the slot is
/// empty (no heap yet, or the shared slot 0), which tells nothing.
#[inline]
pub(crate) fn slot_heap<'a>(instance: u64) -> Option<&'a Heap> {
    // SAFETY: slot_of's answer is below SLOTS.
    unsafe { heap_at(slot_of(instance)) }
}

/// [`slot_heap`] for the slot an instance keeps (its `slot` field: `slot_of` its id, or
/// 0 until its pool exists), with no computation of the slot.
///
/// # Safety
/// `slot < SLOTS`.
#[inline]
pub(crate) unsafe fn heap_at<'a>(slot: usize) -> Option<&'a Heap> {
    debug_assert!(slot < SLOTS);
    CURRENT
        // SAFETY: slot < SLOTS (caller).
        .try_with(|c| unsafe { c.slot_heaps.get_unchecked(slot) }.get())
        .ok()
        // SAFETY: a slot's heap is null or a live heap of the calling thread (see
        // `Current`).
        .and_then(|heap| unsafe { heap.as_ref() })
}

/// The class of a request that rounds below 2 KiB ([`Lookup::exact_class`]), from the
/// thread's tables.
#[inline(always)]
pub(crate) fn exact_class(size: usize, align: usize) -> Option<usize> {
    CURRENT.with(|c| c.lookup.exact_class(size, align))
}

/// The class of a size below 2 KiB that is a multiple of its align
/// ([`Lookup::class_of_multiple`]: class 0 for a zero size), from the thread's tables: the
/// fast paths' look-up.
#[inline(always)]
pub(crate) fn class_of_multiple(size: usize, align: usize) -> Option<usize> {
    CURRENT.with(|c| c.lookup.class_of_multiple(size, align))
}

/// True when `word`, a block's `owner_key` xor the key a free expects, is the calling
/// thread's last used heap's tag: the block is that heap's and holds the freed slot's size
/// and lifetime class. One thread-local compare: the ownership test of the free fast path
/// (`Instance::free_class`, through [`crate::route::ThreadHeap`]); tokens are unique in the
/// process, so no instance check is needed. CURRENT's tag is a live heap's, or [`NO_TAG`],
/// which matches no block.
#[inline(always)]
pub(crate) fn owns(word: u64) -> bool {
    CURRENT.with(|c| c.recent[0].tag.get() == word)
}

/// The calling thread's heap for `instance` if it is the one it used last; else null.
#[inline]
pub(crate) fn current(instance: u64) -> *mut Heap {
    with_current(instance, |h| Some(ptr::from_ref(h).cast_mut())).unwrap_or(ptr::null_mut())
}

/// If the heap the calling thread used before the last one is of `instance`, swaps the two
/// (it becomes the one the fast paths use) and returns true.
pub(crate) fn promote_instance(instance: u64) -> bool {
    CURRENT.with(|c| {
        let hit = c.recent[1].instance.get() == instance;
        if hit {
            c.recent[0].swap(&c.recent[1]);
        }
        hit
    })
}

/// If the heap the calling thread used before the last one owns blocks with owner `token`,
/// swaps the two (as [`promote_instance`]) and returns it: the slow path of a free tries it
/// before a search.
pub(crate) fn promote_owner<'a>(token: u64) -> Option<&'a Heap> {
    CURRENT.with(|c| {
        if c.recent[1].tag.get() != owner_tag(token) {
            return None;
        }
        c.recent[0].swap(&c.recent[1]);
        // SAFETY: the entry's tag matched, so it names a live heap (see `Current`).
        Some(unsafe { &*c.recent[0].heap.get() })
    })
}

/// Makes `heap`, a live heap of the calling thread in `instance`, the one the fast paths
/// use; the previous one, if of another instance, becomes the second entry.
fn make_current(instance: u64, heap: *mut Heap) {
    debug_assert!(instance != 0 && instance < MAX_INSTANCES, "an instance id");
    // SAFETY: the caller passes a live heap.
    let tag = owner_tag(unsafe { (*heap).record.token });
    CURRENT.with(|c| {
        let [first, second] = &c.recent;
        if first.instance.get() != instance {
            second.set(first.instance.get(), first.heap.get(), first.tag.get());
        }
        first.set(instance, heap, tag);
    });
}

/// The slow path of a local free by the thread's current heap (the free fast path
/// does not load the heap).
#[cold]
#[inline(never)]
pub(crate) fn free_slow_current(h: &Header) {
    CURRENT.with(|c| {
        // SAFETY: only called when the first entry's tag matched the block's owner, so
        // its heap is live and owns the block.
        unsafe { (*c.recent[0].heap.get()).free_slow(h) }
    })
}

#[cfg(test)]
mod tests {
    use super::SLOTS;
    use crate::sync::Ordering;
    use crate::Cohort;
    use core::alloc::{GlobalAlloc, Layout};

    /// The calling thread's entry for `slot`.
    fn row_of(slot: usize) -> super::Row {
        super::CURRENT.with(|c| c.rows[slot].get())
    }

    /// Allocates through `GlobalAlloc` (the slot path), checks the pointer is of `c`'s
    /// region and writable, and frees it.
    fn global_pair(c: &Cohort<()>, size: usize) {
        let l = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: a non-zero layout; the pointer is freed once, with it.
        unsafe {
            let p = GlobalAlloc::alloc(c, l);
            assert!(!p.is_null());
            assert!(c.core.bounds.contains(p), "{p:?} is not of the instance");
            p.write_bytes(0xa5, size);
            GlobalAlloc::dealloc(c, p, l);
        }
    }

    /// Instances with slots of their own and instances without (past `SLOTS`), used in
    /// turn through `GlobalAlloc` on one thread: every allocation comes from the instance
    /// asked, whatever the slot holds.
    #[test]
    fn the_global_path_allocates_from_the_instance_asked() {
        std::thread::spawn(|| {
            let all: Vec<Cohort<()>> = (0..2 * SLOTS).map(|_| Cohort::new()).collect();
            for round in 0..3 {
                for c in &all {
                    for size in [8, 16, 24, 100, 1024, 3000] {
                        global_pair(c, size + round);
                    }
                }
            }
            // The ones with a slot got their row filled, the others share slot 0, empty.
            assert_eq!(row_of(0), super::empty_row());
            for c in &all {
                let slot = c.core.slot.load(Ordering::Relaxed) as usize;
                assert_eq!(slot, super::slot_of(c.core.instance_id()));
                if slot != 0 {
                    assert_ne!(row_of(slot), super::empty_row());
                }
            }
        })
        .join()
        .unwrap();
    }

    /// Layouts the fast look-up passes on (a size that is not a multiple of its align, sizes
    /// from 2 KiB) and the ones it serves, through `GlobalAlloc` and `Cohort::free`: every
    /// pointer is aligned, of its class's block, and frees with its layout; a zero size
    /// (outside `GlobalAlloc`'s contract) allocates nothing, and the next allocation works.
    #[test]
    fn every_layout_takes_its_own_class_on_the_global_path() {
        std::thread::spawn(|| {
            let c = Cohort::<()>::new();
            for (size, align) in [(1usize, 8usize), (3, 4), (24, 16), (40, 32), (100, 64), (2047, 1)] {
                for (size, align) in [(size, align), (size.next_multiple_of(align), align)] {
                    let l = Layout::from_size_align(size, align).unwrap();
                    // SAFETY: a non-zero layout; freed once, with it.
                    unsafe {
                        let p = GlobalAlloc::alloc(&c, l);
                        assert!(!p.is_null());
                        assert_eq!(p as usize % align, 0, "{size}, {align}: {p:?}");
                        let a = c.allocation_at(p).expect("a small allocation");
                        let want = crate::class::class_of(size, align).unwrap();
                        assert_eq!(a.usable, crate::class::CLASSES[want].stride as usize);
                        p.write_bytes(0x5a, size);
                        GlobalAlloc::dealloc(&c, p, l);
                    }
                }
            }
            let zero = Layout::from_size_align(0, 8).unwrap();
            // SAFETY: outside the contract (size 0): must give null and change nothing.
            assert!(unsafe { GlobalAlloc::alloc(&c, zero) }.is_null());
            global_pair(&c, 16);
            assert!(c.is_empty());
        })
        .join()
        .unwrap();
    }

    /// A zero-size free through the layout path (class 0, a tiny class) of a live 1-byte
    /// allocation (class 0 too) frees nothing, whatever else it does (a report, from the
    /// zero-size path): the allocation is still live, so its real free is no double free.
    #[test]
    fn a_zero_size_layout_free_of_a_tiny_allocation_frees_nothing() {
        let c = Cohort::<()>::new();
        let one = Layout::from_size_align(1, 1).unwrap();
        let zero = Layout::from_size_align(0, 1).unwrap();
        let p = c.alloc(one, ());
        assert!(!p.is_null());
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: a zero size for a live allocation: misuse, which must free nothing.
            unsafe { c.dealloc(p, zero, ()) }
        }));
        // SAFETY: p is live (the zero-size free freed nothing); freed once, with its layout.
        unsafe { c.dealloc(p, one, ()) };
        assert!(c.is_empty());
    }

    /// A dropped instance's row is emptied with its heap (when the thread drops it, at once;
    /// when another thread does, at the thread's next join), before the heap is unmapped.
    #[test]
    fn a_dropped_instances_row_goes_with_its_heap() {
        std::thread::spawn(|| {
            let c = Box::new(Cohort::<()>::new());
            global_pair(&c, 16);
            let slot = c.core.slot.load(Ordering::Relaxed) as usize;
            let dropped_here = slot != 0;
            if dropped_here {
                assert_ne!(row_of(slot), super::empty_row());
            }
            drop(c);
            assert_eq!(row_of(slot), super::empty_row());

            let (tx, rx) = std::sync::mpsc::channel();
            let d = Box::new(Cohort::<()>::new());
            global_pair(&d, 16);
            let slot = d.core.slot.load(Ordering::Relaxed) as usize;
            let d_addr = &*d as *const Cohort<()> as usize;
            // Dropped by another thread: the heap here is orphaned, still mapped.
            std::thread::spawn(move || {
                // SAFETY: this thread owns the box now; nobody else uses it.
                drop(unsafe { Box::from_raw(d_addr as *mut Cohort<()>) });
                tx.send(()).unwrap();
            });
            std::mem::forget(d);
            rx.recv().unwrap();
            // The next join walks the list and releases the orphan, with its row.
            let e = Cohort::<()>::new();
            global_pair(&e, 16);
            assert_eq!(row_of(slot), super::empty_row());
        })
        .join()
        .unwrap();
    }
}
