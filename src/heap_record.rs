//! What other threads may touch of a heap: its token, its state, its `returned` stack, its
//! link on the pool's abandoned list and its tiny heads. The pool's registry and abandoned
//! list hold these records, so the pool depends on this module and never on the heap; the
//! heap ([`crate::heap`]) keeps its record as its first field.
//!
//! Who touches what: `token` is written once, before the heap is registered; `holder` and
//! `holder_base` (shared pools) by each taker before the heap is `Live` for it, and by the
//! survivor whose CAS on `holder` claims a dead process's heap; `state` by
//! the transitions of [`HeapState::may_become`] only; `returned` by any thread (lock-free
//! pushes; the owner or the pool lock holder takes all, each with one swap, and a claimer
//! holding the pool lock pushes back what it keeps: `Pool::claim_returned`); `next_abandoned` and the tiny heads
//! under the pool lock only.
//!
//! The state machine, with `→` the legal transitions ([`HeapRecord::transition`]):
//!
//! - `Live → Exiting`: the holder (a thread at exit, or a join) starts to leave; it waits
//!   for the pool lock and touches nothing of the heap until it holds it.
//! - `Exiting → Abandoned`: the leave is done, under the pool lock; the heap is on the
//!   pool's abandoned list.
//! - `Abandoned → Live`: a thread or join adopts it, under the pool lock.
//! - `Live → Orphaned`: the instance is dropped while a thread still holds the heap; that
//!   thread releases it at its next look-up or at exit.
//! - `Exiting → Live`: in a child process after `fork()` (see [`HeapRecord::after_fork_in_child`]).
//! - `Orphaned → Exiting`: in a shared pool only, the orphaned heap's thread (at its next
//!   look-up or exit), or a survivor that claimed it from its dead holder, starts to leave
//!   it into the region, as from `Live`.
//!
//! An `Abandoned` heap is released by the instance's teardown and a private pool's
//! `Orphaned` one by its thread: neither leaves those states otherwise.

use crate::block::BlockList;
use crate::block::BlockStack;
use crate::class::{HeadIndex, CLASSES};
use crate::sync::{AtomicU64, AtomicU8, Ordering};

/// The life-cycle state of a heap (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum HeapState {
    /// A thread or join holds the heap.
    Live = 0,
    /// Its holder is leaving, waiting for the pool lock.
    Exiting = 1,
    /// On the pool's abandoned list, for the next thread or join.
    Abandoned = 2,
    /// Its instance is gone (in a shared pool: this process's instance, its leave); its
    /// thread releases it (in a shared pool: leaves it into the region).
    Orphaned = 3,
}

impl HeapState {
    const ALL: [HeapState; 4] = [
        HeapState::Live,
        HeapState::Exiting,
        HeapState::Abandoned,
        HeapState::Orphaned,
    ];

    /// True when a heap may go from `self` to `to` (the module docs' transitions).
    pub(crate) const fn may_become(self, to: HeapState) -> bool {
        use HeapState::*;
        matches!(
            (self, to),
            (Live, Exiting)
                | (Exiting, Abandoned)
                | (Abandoned, Live)
                | (Live, Orphaned)
                | (Orphaned, Exiting)
                | (Exiting, Live)
        )
    }

    fn from_u8(v: u8) -> HeapState {
        Self::ALL[v as usize]
    }
}

/// The part of a heap other threads may touch (see the module docs).
#[repr(C)]
pub(crate) struct HeapRecord {
    /// `instance << 16 | id`: unique in the process; `Header::owner` of the heap's blocks.
    pub(crate) token: u64,
    state: AtomicU8,
    /// Next heap on the pool's abandoned list (under the pool lock): its link
    /// (`crate::pool::Link`, 0 for none).
    pub(crate) next_abandoned: u64,
    /// Blocks a remote free took out of `FULL` state.
    pub(crate) returned: BlockStack,
    /// In a shared pool: the process holding the heap (its `process_word`: pid and start
    /// time), written by each taker before the heap is `Live` for it; 0 in a private pool.
    /// A survivor that finds it dead claims the heap by a CAS on it.
    pub(crate) holder: AtomicU64,
    /// The holder's address of the region's first unit: the current blocks, addresses in
    /// the holder's mapping, are read by another process relative to it.
    pub(crate) holder_base: AtomicU64,
    /// The heap's partial lists, one per head ([`HeadIndex`]; the tiny ones are the pool
    /// lock's): their offset from this record, in the same mapping (position independent).
    partials: usize,
    /// Loom's atomics, unlike std's, hold no `UnsafeCell`: without this field `&Heap` would
    /// be `Freeze` under loom, and the compiler could assume nothing is written through a
    /// pointer derived from it (it then loses the heads' writes, which follow the heap in
    /// its mapping and are reached from `&Heap`).
    #[cfg(loom)]
    _loom: core::cell::UnsafeCell<()>,
}

impl HeapRecord {
    /// The record of a new heap with token `token` (`Live`), whose partial-list heads are
    /// `partials` bytes after the record.
    pub(crate) fn new(token: u64, partials: usize) -> HeapRecord {
        HeapRecord {
            token,
            state: AtomicU8::new(HeapState::Live as u8),
            next_abandoned: 0,
            holder: AtomicU64::new(0),
            holder_base: AtomicU64::new(0),
            returned: BlockStack::new(),
            partials,
            #[cfg(loom)]
            _loom: core::cell::UnsafeCell::new(()),
        }
    }

    /// The heap's state now.
    pub(crate) fn state(&self) -> HeapState {
        HeapState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Moves the heap from state `from` to `to` if it is in `from`; otherwise changes
    /// nothing and returns the state it is in. Acquire and Release: what the previous
    /// holder wrote before its transition is seen by whoever makes the next one.
    ///
    /// # Panics
    /// When `from → to` is not a legal transition (a bug of the caller; the arguments are
    /// constants at every call, so the check costs nothing).
    #[inline]
    pub(crate) fn transition(&self, from: HeapState, to: HeapState) -> Result<(), HeapState> {
        assert!(from.may_become(to), "no heap goes from {from:?} to {to:?}");
        self.state
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(HeapState::from_u8)
    }

    /// True when the heap's thread has exited and the pool holds the heap.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.state() == HeapState::Abandoned
    }

    /// In a child process after `fork()`, with the pool lock held: a heap whose thread was
    /// exiting at the fork (`Exiting`, waiting for the lock the fork handlers held) has no
    /// thread in the child to finish; it is untouched, so it becomes `Live` again, like the
    /// heaps of the parent's other threads (which no thread of the child uses either).
    /// Otherwise the child's teardown of the instance would wait for it forever.
    pub(crate) fn after_fork_in_child(&self) {
        let _ = self.transition(HeapState::Exiting, HeapState::Live);
    }

    /// The partial list of tiny head (class, life).
    ///
    /// # Safety
    /// `class` is a tiny class and `life` below the pool's lifetime-class count; the caller
    /// holds the pool lock (any thread) and keeps no other reference to the list.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn tiny_list(&self, class: usize, life: usize) -> &mut BlockList {
        debug_assert!(CLASSES[class].is_tiny());
        // SAFETY: in bounds (caller); tiny heads are guarded by the pool lock.
        unsafe { &mut *self.partial_lists().add(HeadIndex::new(class, life).get()) }
    }

    /// The heap's partial lists (see `partials`).
    pub(crate) fn partial_lists(&self) -> *mut BlockList {
        core::ptr::from_ref(self)
            .cast::<u8>()
            .cast_mut()
            .wrapping_add(self.partials)
            .cast()
    }
}

/// `Header::owner_key ^ key` of every block owned by token `token`, whatever its key:
/// the free fast path compares it with one word ([`crate::block::owner_word`]).
#[inline]
pub(crate) const fn owner_tag(token: u64) -> u64 {
    crate::block::owner_word(token, 0)
}

// Not under loom: its atomics exist only inside a model.
#[cfg(not(loom))]
#[cfg(test)]
mod tests {
    use super::HeapRecord;
    use super::HeapState::{self, *};

    fn record_in(state: HeapState) -> HeapRecord {
        let r = HeapRecord::new(1 << 16 | 1, 0);
        match state {
            Live => {}
            Exiting => r.transition(Live, Exiting).unwrap(),
            Abandoned => {
                r.transition(Live, Exiting).unwrap();
                r.transition(Exiting, Abandoned).unwrap();
            }
            Orphaned => r.transition(Live, Orphaned).unwrap(),
        }
        assert_eq!(r.state(), state);
        r
    }

    /// The documented transitions (module docs).
    const LEGAL: [(HeapState, HeapState); 6] = [
        (Live, Exiting),
        (Live, Orphaned),
        (Exiting, Live),
        (Exiting, Abandoned),
        (Abandoned, Live),
        (Orphaned, Exiting),
    ];

    #[test]
    fn the_legal_transitions_are_the_documented_six() {
        let legal: Vec<_> = HeapState::ALL
            .iter()
            .flat_map(|&a| HeapState::ALL.iter().map(move |&b| (a, b)))
            .filter(|&(a, b)| a.may_become(b))
            .collect();
        assert_eq!(legal, LEGAL);
    }

    #[test]
    fn a_legal_transition_from_the_current_state_moves_the_heap() {
        for (from, to) in LEGAL {
            let r = record_in(from);
            assert_eq!(r.transition(from, to), Ok(()));
            assert_eq!(r.state(), to);
        }
    }

    #[test]
    fn a_transition_from_another_state_changes_nothing_and_says_the_state() {
        let r = record_in(Orphaned);
        assert_eq!(r.transition(Live, Exiting), Err(Orphaned));
        assert_eq!(r.state(), Orphaned);
        let r = record_in(Exiting);
        assert_eq!(r.transition(Live, Orphaned), Err(Exiting));
        assert_eq!(r.state(), Exiting);
        let r = record_in(Abandoned);
        assert_eq!(r.transition(Exiting, Live), Err(Abandoned));
        assert!(r.is_abandoned());
    }

    #[test]
    #[should_panic(expected = "no heap goes from Orphaned to Live")]
    fn an_illegal_transition_panics() {
        let _ = record_in(Orphaned).transition(Orphaned, Live);
    }

    #[test]
    #[should_panic(expected = "no heap goes from Abandoned to Exiting")]
    fn an_abandoned_heap_cannot_start_leaving_again() {
        let _ = record_in(Abandoned).transition(Abandoned, Exiting);
    }

    #[test]
    fn the_fork_child_reset_revives_only_exiting_heaps() {
        for (before, after) in [
            (Live, Live),
            (Exiting, Live),
            (Abandoned, Abandoned),
            (Orphaned, Orphaned),
        ] {
            let r = record_in(before);
            r.after_fork_in_child();
            assert_eq!(r.state(), after, "a heap {before:?} at the fork");
        }
    }
}
