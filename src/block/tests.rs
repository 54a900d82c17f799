//! Unit tests of the block header: geometry, slot lists, counting by role, remote frees.

use super::*;
use crate::class::class_of;
use std::alloc::{alloc_zeroed, dealloc, Layout};

/// A 64-byte-class block in heap memory, owned by token 7, with every slot handed out.
struct TestBlock {
    base: *mut u8,
    layout: Layout,
}

impl TestBlock {
    fn full() -> TestBlock {
        let class = class_of(64, 8).unwrap();
        let c = &CLASSES[class];
        let layout = Layout::from_size_align(c.block_size(), 64).unwrap();
        // SAFETY: a non-zero size.
        let base = unsafe { alloc_zeroed(layout) };
        assert!(!base.is_null());
        // SAFETY: a fresh block-sized allocation, ours alone.
        let h = unsafe { &*Header::init(base, class, 0, 7, true) };
        while h.pop().is_some() || h.refill() {}
        assert_eq!(h.used(), c.capacity);
        TestBlock { base, layout }
    }

    fn h(&self) -> &Header {
        // SAFETY: `full` wrote a header at `base`, which lives as long as `self`.
        unsafe { &*self.base.cast::<Header>() }
    }

    /// Frees slot `i` locally; true when the free needs the slow path.
    fn free(&self, i: u32) -> bool {
        let c = self.h().geometry();
        // SAFETY: slot i is live (every slot was handed out, each freed once here).
        let done = unsafe {
            self.h()
                .push_local(self.base.add((c.first + i * c.stride) as usize))
        };
        assert_ne!(done, LocalFree::AlreadyFree);
        done == LocalFree::Slow
    }
}

impl Drop for TestBlock {
    fn drop(&mut self) {
        // SAFETY: allocated in `full` with this layout.
        unsafe { dealloc(self.base, self.layout) };
    }
}

#[test]
fn a_current_block_never_sends_a_free_to_the_slow_path() {
    let b = TestBlock::full();
    let cap = b.h().capacity();
    b.h().set_role(Role::Current);
    assert!(
        (0..cap).all(|i| !b.free(i)),
        "not even the one that empties it"
    );
    assert_eq!(b.h().used(), 0);
    assert_eq!(b.h().role(), Role::Current);
}

#[test]
fn a_listed_block_sends_exactly_the_emptying_free() {
    let b = TestBlock::full();
    let cap = b.h().capacity();
    b.h().set_role(Role::Listed);
    let slow: Vec<u32> = (0..cap).filter(|&i| b.free(i)).collect();
    assert_eq!(slow, [cap - 1]);
    assert_eq!(b.h().used(), 0);
}

#[test]
fn a_retired_block_sends_exactly_its_first_free() {
    let b = TestBlock::full();
    let cap = b.h().capacity();
    assert!(b.h().try_retire(), "no remote free: it retires");
    assert_eq!(b.h().role(), Role::Full);
    assert!(b.free(3), "the first free brings it back");
    assert_eq!(b.h().used(), cap - 1);
    // What `Heap::free_slow` does: it is listed again.
    assert!(b.h().clear_full());
    b.h().set_role(Role::Listed);
    assert_eq!(b.h().used(), cap - 1, "a role change keeps `used`");
    let slow: Vec<u32> = (0..cap).filter(|&i| i != 3 && b.free(i)).collect();
    assert_eq!(slow, [cap - 1], "then only the emptying free");
}

#[test]
fn freeing_the_slot_freed_last_again_changes_nothing() {
    let b = TestBlock::full();
    let h = b.h();
    h.set_role(Role::Current);
    let c = h.geometry();
    let slot = |i: u32| b.base.wrapping_add((c.first + i * c.stride) as usize);
    assert!(!b.free(5));
    let used = h.used();
    // SAFETY: slot 5 is the first free slot: the call must detect it and do nothing.
    assert_eq!(unsafe { h.push_local(slot(5)) }, LocalFree::AlreadyFree);
    assert_eq!(h.used(), used, "the count is unchanged");
    let pop = || h.pop().or_else(|| h.refill().then(|| h.pop()).flatten());
    assert_eq!(pop().map(|(off, _)| off), Some(c.first + 5 * c.stride));
    assert_eq!(pop(), None, "slot 5 was listed once");
}

#[test]
fn owner_and_key_share_one_word() {
    let b = TestBlock::full();
    let h = b.h();
    let class = class_of(64, 8).unwrap();
    assert_eq!((h.owner(), h.key()), (7, key(class, 0)));
    h.set_owner(1 << 40 | 5);
    assert_eq!((h.owner(), h.key()), (1 << 40 | 5, key(class, 0)));
    assert_eq!(h.owner_key(), (1 << 40 | 5) << 16 | (class as u64 ^ 0xffff));
    h.set_pool_empty();
    assert_eq!((h.owner(), h.key()), (0, EMPTY_KEY));
    assert_eq!(
        h.owner_key(),
        0,
        "an empty block's word is zero, as unused memory"
    );
}

/// Frees slots `from..to` of `b` locally, none of them needing the slow path.
fn free_range(b: &TestBlock, from: u32, to: u32) {
    for i in from..to {
        assert!(!b.free(i));
    }
}

#[test]
fn local_frees_wait_on_their_own_list_until_the_allocation_list_is_spent() {
    let b = TestBlock::full();
    let h = b.h();
    h.set_role(Role::Current);
    h.take_beats();
    free_range(&b, 0, 4);
    assert_eq!(
        h.free.load(Ordering::Relaxed),
        0,
        "the allocation list is apart"
    );
    let c = h.geometry();
    // The collect takes the local list whole, its first slot (freed last) first.
    let pop = || h.pop().or_else(|| h.pop_collected());
    let taken: Vec<u32> = (0..4).map(|_| pop().unwrap().0).collect();
    let expected: Vec<u32> = (0..4).rev().map(|i| c.first + i * c.stride).collect();
    assert_eq!(taken, expected);
    assert_eq!(h.local.load(Ordering::Relaxed), 0);
    assert_eq!(pop(), None, "both lists and the window are empty");
    assert_eq!(h.used(), c.capacity);
}

#[test]
fn the_fast_path_collects_only_while_the_block_has_beats() {
    let b = TestBlock::full();
    let h = b.h();
    h.set_role(Role::Current);
    assert!(h.beats_spent(), "a block starts with none");
    let pop = || h.pop().or_else(|| h.pop_collected());
    free_range(&b, 0, 1);
    assert_eq!(pop(), None, "no beat: the slow path");
    h.take_beats();
    assert_eq!(pop().map(|(off, _)| off), Some(c_off(h, 0)), "collect 1");
    for round in 1..u32::from(BEATS) {
        free_range(&b, round, round + 1);
        assert!(pop().is_some(), "collect {} of {BEATS}", round + 1);
    }
    assert!(h.beats_spent());
    free_range(&b, 5, 6);
    assert_eq!(
        pop(),
        None,
        "beats spent: the slow path, the slot still listed"
    );
    assert_eq!(h.local.load(Ordering::Relaxed), c_off(h, 5));
    assert!(h.refill(), "the slow path's collect");
    assert_eq!(h.pop().map(|(off, _)| off), Some(c_off(h, 5)));
}

fn c_off(h: &Header, i: u32) -> u32 {
    let c = h.geometry();
    c.first + i * c.stride
}

#[test]
fn a_collect_counts_the_slots_it_moves_without_a_walk() {
    let b = TestBlock::full();
    let h = b.h();
    h.set_role(Role::Current);
    free_range(&b, 10, 30);
    assert_eq!(h.collect_freed(), 20);
    assert_eq!(h.local.load(Ordering::Relaxed), 0);
    assert_eq!(h.free.load(Ordering::Relaxed), c_off(h, 29));
    assert_eq!(h.used(), h.capacity() - 20);
}

#[test]
fn a_dead_owners_recount_counts_both_lists() {
    let b = TestBlock::full();
    let h = b.h();
    h.set_role(Role::Current);
    free_range(&b, 0, 8);
    assert_eq!(h.collect_freed(), 8);
    free_range(&b, 8, 11);
    // Died between a pop's list write and its count: `used` one short.
    let cap = h.capacity();
    h.set_used(cap - 11 - 1);
    h.recount_local();
    assert_eq!(
        h.used(),
        cap - 11,
        "8 on the allocation list, 3 on the local one"
    );
}

/// RED-66: an owner that stopped in the middle of a collect of its local free list (a fork
/// child's copy of another thread's heap) left the allocation list made and the local list
/// not yet emptied: both name the same slots (a slow path's collect), or the allocation
/// list the local list's second slot (the quick collect, handing the first out). The
/// recount finishes the collect: each slot is free once, the quick collect's first counted
/// handed out (lost, never handed out twice). Fails without `Header::finish_collect`: the
/// four slots counted on both lists (and so handed out twice): "quick: false, left:
/// (32759, 256), right: (32763, 0)".
#[test]
fn a_recount_finishes_a_collect_stopped_half_way() {
    for quick in [false, true] {
        let b = TestBlock::full();
        let h = b.h();
        let cap = h.capacity();
        free_range(&b, 0, 4);
        let local = h.local.load(Ordering::Relaxed);
        // SAFETY: `local` is a free slot of the block: its first 4 bytes are its link.
        let link = unsafe { b.base.add(local as usize).cast::<u32>().read() };
        // The collect's first store only: the allocation list made, the local list left.
        h.free
            .store(if quick { link } else { local }, Ordering::Relaxed);
        h.recount_local();
        let free = if quick { 3 } else { 4 };
        assert_eq!(
            (h.used(), h.local.load(Ordering::Relaxed)),
            (cap - free, 0),
            "quick: {quick}"
        );
        // Every slot of the allocation list once, none of them the quick collect's first.
        let mut seen = Vec::new();
        while let Some((off, _)) = h.pop() {
            assert!(!seen.contains(&off), "handed out twice");
            assert!(
                !quick || off != local,
                "the quick collect's first handed out again"
            );
            seen.push(off);
        }
        assert_eq!(seen.len() as u32, free);
    }
}

/// A block emptied in place keeps the slot freed last first on its local free list, out of
/// every count, until its next allocation, which takes the slow path and forgets it: the
/// slot is then handed out once, from the bump window (RED-62).
#[test]
fn a_reset_keeps_the_slot_freed_last_until_the_next_allocation() {
    let b = TestBlock::full();
    let h = b.h();
    h.set_role(Role::Current);
    let cap = h.capacity();
    free_range(&b, 0, cap);
    let last = c_off(h, cap - 1);
    h.take_beats();
    h.reset(false);
    assert_eq!(h.local.load(Ordering::Relaxed), last);
    assert_eq!((h.used(), h.live(), h.local_listed()), (0, 0, 0));
    // SAFETY: the kept slot, first on the local list: refused, nothing changed.
    let again = unsafe { h.push_local(b.base.add(last as usize)) };
    assert_eq!(again, LocalFree::AlreadyFree);
    let pop = || h.pop().or_else(|| h.pop_collected());
    assert_eq!(pop(), None, "the next allocation takes the slow path");
    h.drop_kept();
    assert_eq!((h.local.load(Ordering::Relaxed), h.used()), (0, 0));
    assert!(h.refill());
    let mut seen = 0;
    while let Some((off, _)) = h.pop().or_else(|| h.refill().then(|| h.pop()).flatten()) {
        seen += u32::from(off == last);
    }
    assert_eq!((seen, h.used()), (1, cap));
}

/// A release's reset (pages kept) of a block whose slots touched pages marks it: its
/// touched end is the slots' end, for the idle look to give back (RED-65); the look's own
/// reset (pages given back) clears the mark, and a block that never touched a slot is not
/// marked. The mark stays through the next allocation's drop of the kept slot.
#[test]
fn a_release_reset_remembers_the_pages_its_slots_touched() {
    let b = TestBlock::full();
    let h = b.h();
    h.set_role(Role::Current);
    let (first, limit) = (h.geometry().first, h.geometry().limit);
    let cap = h.capacity();
    free_range(&b, 0, cap);
    assert!(h.touched_end() > first);
    h.reset(true);
    assert_eq!(h.bump.load(Ordering::Relaxed), first);
    assert_eq!(h.touched_end(), limit, "the slots' pages may be resident");
    h.drop_kept();
    assert_eq!(h.touched_end(), limit, "kept past the kept slot's drop");
    h.reset(true);
    assert_eq!(h.touched_end(), limit, "a release again: still marked");
    h.reset(false);
    assert_eq!(
        h.touched_end(),
        first,
        "given back by the idle look: unmarked"
    );
    h.reset(true);
    assert_eq!(
        h.touched_end(),
        first,
        "no slot touched since: nothing to remember"
    );
}

/// Block `b` (every slot handed out, role `Current`) with slots `0..10` freed by its owner
/// (the local list's first: slot 9) and `10..20` pushed by another thread (the remote
/// list's first: slot 19), then emptied in place: the offsets of the two firsts.
fn reset_with_both_lists(b: &TestBlock) -> (u32, u32) {
    let h = b.h();
    h.set_role(Role::Current);
    free_range(b, 0, 10);
    for i in 10..20 {
        // SAFETY: slot i is live (handed out, freed once here).
        assert!(!unsafe { h.push_remote(c_off(h, i)) });
    }
    h.take_beats();
    h.reset(false);
    (c_off(h, 9), c_off(h, 19))
}

/// `slot_lists_fault` of `h` as it is (its own `bump`).
fn lists_fault(h: &Header) -> Result<(), crate::pool::check::ListFault> {
    let c = h.geometry();
    let mut words = vec![0usize; (c.capacity as usize).div_ceil(usize::BITS as usize)];
    let seen = bitvec::slice::BitSlice::<usize>::from_slice_mut(&mut words);
    // SAFETY: the test owns the block and its lists.
    unsafe { crate::pool::check::slot_lists_fault(h, c, h.bump.load(Ordering::Relaxed), seen) }
}

/// RED-132: a block emptied in place with slots on both its local and its remote list
/// keeps both firsts until its next allocation: the local list's in `local` (the owner's
/// check refuses it), the remote list's in the remote word as a kept first of count 0
/// (another thread's check, which compares both words, refuses either); nothing counts
/// them and the lists' check accepts the state (a reset again keeps them). The next
/// allocation's drop forgets both, and every slot is then handed out once.
#[test]
fn a_reset_keeps_both_lists_firsts_until_the_next_allocation() {
    let b = TestBlock::full();
    let h = b.h();
    let cap = h.capacity();
    let (local, remote) = reset_with_both_lists(&b);
    let words = || {
        (
            h.local.load(Ordering::Relaxed),
            h.remote.load(Ordering::Relaxed),
        )
    };
    assert_eq!(words(), (local, u64::from(remote)));
    assert_eq!(
        (h.used(), h.live(), h.remote_count(), h.local_listed()),
        (0, 0, 0, 0)
    );
    assert!(h.is_freed_last(local) && h.is_freed_last(remote));
    assert!(!h.is_freed_last(c_off(h, 18)) && !h.is_freed_last(c_off(h, 8)));
    // SAFETY: the kept slot, first on the local list: refused, nothing changed.
    let again = unsafe { h.push_local(b.base.add(local as usize)) };
    assert_eq!(again, LocalFree::AlreadyFree);
    assert_eq!(lists_fault(h), Ok(()));
    h.reset(true);
    assert_eq!(
        words(),
        (local, u64::from(remote)),
        "a reset again keeps both"
    );
    let pop = || h.pop().or_else(|| h.pop_collected());
    assert_eq!(pop(), None, "the next allocation takes the slow path");
    h.drop_kept();
    assert_eq!(words(), (0, 0));
    assert!(!h.is_freed_last(local) && !h.is_freed_last(remote));
    assert_eq!(lists_fault(h), Ok(()));
    let mut seen = vec![0u32; cap as usize];
    while let Some((off, _)) = h.pop().or_else(|| h.refill().then(|| h.pop()).flatten()) {
        seen[((off - h.geometry().first) / h.stride) as usize] += 1;
    }
    assert!(seen.iter().all(|&n| n == 1), "every slot handed out once");
    assert_eq!(h.used(), cap);
}

/// Frees pushed onto a block that keeps a remote first (of slots not live: misuse the
/// checks did not catch) stay on its remote list as they would without it, cut from the
/// kept slot when the next allocation drops it: the list ends where its count says.
#[test]
fn frees_pushed_onto_a_kept_remote_first_are_cut_from_it_at_its_drop() {
    let b = TestBlock::full();
    let h = b.h();
    let (_, remote) = reset_with_both_lists(&b);
    // SAFETY: slots of the block, on no list (never used again: the test's misuse).
    unsafe {
        assert!(!h.push_remote(c_off(h, 30)));
        h.link_slot(c_off(h, 31), c_off(h, 32));
        assert!(!h.push_remote_chain(c_off(h, 31), c_off(h, 32), 2));
    }
    // SAFETY: slot 30 is the last of the chains pushed on the kept first.
    let link = unsafe { b.base.add(c_off(h, 30) as usize).cast::<u32>().read() };
    assert_eq!(link, remote, "the first chain links to the kept first");
    h.drop_kept();
    assert_eq!(h.remote_count(), 3);
    let mut listed = Vec::new();
    let mut off = h.remote.load(Ordering::Relaxed) as u32;
    while off != 0 && listed.len() <= 3 {
        listed.push(off);
        // SAFETY: a slot on the block's remote list.
        off = unsafe { b.base.add(off as usize).cast::<u32>().read() };
    }
    assert_eq!(listed, [c_off(h, 31), c_off(h, 32), c_off(h, 30)]);
}

/// The lists' check refuses a remote word of count 0 naming a slot in a block that keeps
/// none (damage, not a kept first), and a kept first that names no slot.
#[test]
fn the_lists_check_accepts_a_kept_remote_first_only_as_a_reset_leaves_it() {
    let b = TestBlock::full();
    let h = b.h();
    let (_, remote) = reset_with_both_lists(&b);
    h.remote.store(u64::from(remote + 1), Ordering::Relaxed);
    assert_eq!(
        lists_fault(h),
        Err(crate::pool::check::ListFault::NotSlot(
            "the remote word's kept first",
            remote + 1
        ))
    );
    h.remote.store(u64::from(remote), Ordering::Relaxed);
    assert_eq!(lists_fault(h), Ok(()));
    h.drop_kept();
    h.remote.store(u64::from(remote), Ordering::Relaxed);
    assert!(
        lists_fault(h).is_err(),
        "no kept slot: a list of one slot counted 0"
    );
}

/// RED-141: the recount of a block that keeps a reset's firsts (a fork child's repair, a
/// dead holder's take-over) keeps them, and makes the allocation state the reset's again
/// over a stale write-back (an owner stopped between the reset and its cursor's reload,
/// whose cursor still named the old `free`, `bump` and window): the firsts stay refused,
/// nothing is handed out before the next allocation's drop, and then every slot once.
#[test]
fn a_recount_keeps_a_resets_firsts_and_its_allocation_state() {
    let b = TestBlock::full();
    let h = b.h();
    let cap = h.capacity();
    let (local, remote) = reset_with_both_lists(&b);
    let c = h.geometry();
    // The stale cursor's write-back: the block's state before the reset.
    h.free.store(c_off(h, 40), Ordering::Relaxed);
    h.bump.store(c.limit, Ordering::Relaxed);
    h.bump_end.store(c.limit, Ordering::Relaxed);
    h.set_used(cap - 20);
    h.recount_local();
    assert_eq!(
        (
            h.local.load(Ordering::Relaxed),
            h.remote.load(Ordering::Relaxed)
        ),
        (local, u64::from(remote)),
        "both firsts kept"
    );
    assert!(h.is_freed_last(local) && h.is_freed_last(remote));
    assert_eq!(
        (
            h.free.load(Ordering::Relaxed),
            h.bump.load(Ordering::Relaxed),
            h.bump_end.load(Ordering::Relaxed),
            h.used()
        ),
        (0, c.first, c.first, 0),
        "the reset's allocation state"
    );
    assert_eq!(lists_fault(h), Ok(()));
    assert_eq!(h.pop().or_else(|| h.pop_collected()), None);
    h.drop_kept();
    let mut seen = vec![0u32; cap as usize];
    while let Some((off, _)) = h.pop().or_else(|| h.refill().then(|| h.pop()).flatten()) {
        seen[((off - c.first) / h.stride) as usize] += 1;
    }
    assert!(seen.iter().all(|&n| n == 1), "every slot handed out once");
}

/// RED-140: a hand-over to the pool keeps a block's lists as they are: the slot another
/// thread freed last stays the remote list's first (refused), the counts say the listed
/// slots are free, and the next allocation collects the list and hands out its first
/// first.
#[test]
fn a_hand_over_keeps_the_remote_list() {
    let b = TestBlock::full();
    let h = b.h();
    h.set_role(Role::Current);
    for i in 10..20 {
        // SAFETY: slot i is live (handed out, freed once here).
        assert!(!unsafe { h.push_remote(c_off(h, i)) });
    }
    let x = c_off(h, 19);
    h.hand_to_pool();
    assert_eq!(h.owner(), 0);
    assert_eq!((h.remote_count(), h.free.load(Ordering::Relaxed)), (10, 0));
    assert!(h.is_freed_last(x));
    assert_eq!(h.live(), h.capacity() - 10);
    assert_eq!(h.pop(), None);
    assert!(h.refill());
    assert_eq!(h.pop(), Some((x, false)), "the slot freed last first");
    assert!(!h.is_freed_last(x));
}
