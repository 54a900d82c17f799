//! Loom models of the owner's local free list apart from its allocation list, against
//! remote frees and retirement (see the module docs of [`super`]).

use super::*;

/// The end of a model whose owner ran its slow path to retirement while `remote` freed slot
/// `r` ([`free_remotely`]): exactly one of {the owner took `r` (in `taken`), the push found
/// `FULL` and relisted the block} holds; a relisted block is taken back from `returned`
/// and its slot collected and handed out (added to `taken`), once.
fn remote_slot_back(
    block: &Block,
    returned: &BlockStack,
    remote: thread::JoinHandle<bool>,
    r: u32,
    taken: &mut Vec<u32>,
) {
    let owner_took_r = taken.contains(&r);
    let was_full = remote.join().unwrap();
    assert_eq!(
        owner_took_r, !was_full,
        "exactly one side brings the slot back"
    );
    if was_full {
        assert_eq!(take_all(returned), [block.base]);
        assert_eq!(block.collect_freed(), 1);
        taken.push(block.pop().expect("the relisted block's slot").0);
    }
    assert_eq!(take_all(returned), [], "listed at most once");
}

/// The local free list apart from the allocation list: the owner frees two slots locally
/// (onto `local`) while another thread frees a third remotely; the owner then allocates as
/// `Heap::alloc_slow` does (the fast paths' pop and quick collect, then the slow path's
/// collect of the local list, else the remote list, else retirement).
///
/// Checks: the quick collect takes only the local slots (never the remote list, whose
/// links the owner has not acquired), the remote slot comes back exactly once with its
/// payload, whether the owner collected it or retired the block first (then the free
/// relists it); `used` ends at `capacity`.
///
/// Orderings relied on: as `remote_free_list` (push Release, collect Acquire); the local
/// list is the owner's alone.
///
/// Fails with: `pop_collected` or `collect_freed` taking the remote list into the
/// allocation list while local slots are on it (a slot lost), `collect_local` leaving
/// `local` set after the move (a slot handed out twice), or `collect_remote`'s swap
/// Acquire -> Relaxed.
#[test]
fn collect_races_remote_push() {
    model(|| {
        let block = Arc::new(Block::new(OWNER, 0));
        let returned = Arc::new(BlockStack::new());
        let cap = block.capacity();
        let (a, b, r) = (
            block.slot(cap - 3),
            block.slot(cap - 2),
            block.slot(cap - 1),
        );
        let slots = Arc::new(Slots::new(&[a, b, r]));
        slots.write(&block, r, 1);
        let remote = free_remotely(&block, &slots, &returned, r);
        // SAFETY: `a` and `b` are live and the owner frees them.
        unsafe {
            assert!(!block.free_local(a));
            assert!(!block.free_local(b));
        }
        thread::yield_now();
        let mut taken = Vec::new();
        let take = |taken: &mut Vec<u32>, off: u32| {
            assert!(!taken.contains(&off), "slot {off} handed out twice");
            if off == r {
                slots.check(&block, off, 0xA);
            }
            taken.push(off);
        };
        // The quick collect: the local list, last freed first.
        assert_eq!(block.pop_slot(), Some(b));
        take(&mut taken, b);
        assert_eq!(block.pop_slot(), Some(a));
        take(&mut taken, a);
        // The slow path: the remote list, else retirement (the block full again).
        loop {
            match block.pop_slot() {
                Some(off) => take(&mut taken, off),
                None if block.collect_freed() > 0 => {}
                None if block.try_retire() => break,
                None => {}
            }
        }
        remote_slot_back(&block, &returned, remote, r, &mut taken);
        slots.check(&block, r, 0xA);
        taken.sort_unstable();
        assert_eq!(taken, [a, b, r], "every slot back exactly once");
        assert_eq!(block.used(), cap);
    });
}

/// Retirement with a non-empty local free list: the owner's slow path must collect its
/// local frees before it may retire the block `FULL` (a `FULL` block with free slots on
/// no list would be lost until a free brings it back), while another thread frees a slot
/// remotely.
///
/// Checks: the owner retires only with both lists empty; exactly one of {the owner's
/// collect, the remote push's `FULL`} brings the remote slot back; the local slot is
/// handed out before any retirement; no slot is lost or handed out twice.
///
/// Fails with: the slow path trying `try_retire` before `collect_freed` (the local slot
/// lost with the block `FULL`), or `try_retire` as a plain store.
#[test]
fn retirement_with_a_local_list() {
    model(|| {
        let block = Arc::new(Block::new(OWNER, 0));
        let returned = Arc::new(BlockStack::new());
        let cap = block.capacity();
        let (l, r) = (block.slot(cap - 2), block.slot(cap - 1));
        let slots = Arc::new(Slots::new(&[l, r]));
        slots.write(&block, r, 1);
        let remote = free_remotely(&block, &slots, &returned, r);
        // SAFETY: `l` is live and the owner frees it.
        assert!(!unsafe { block.free_local(l) });
        thread::yield_now();
        // The slow path's steps (`Heap::alloc_from_heads`; its beats spent, the fast path's
        // quick collect is not among them): pop, collect, else retire.
        let mut taken = Vec::new();
        loop {
            match block.pop() {
                Some((off, _)) => {
                    assert!(!taken.contains(&off), "slot {off} handed out twice");
                    taken.push(off);
                }
                None if block.collect_freed() > 0 => {}
                None => {
                    assert_eq!(
                        block.local.load(Ordering::Relaxed),
                        0,
                        "retiring with local frees"
                    );
                    if block.try_retire() {
                        break;
                    }
                }
            }
        }
        assert!(
            taken.contains(&l),
            "the local slot was handed out before retirement"
        );
        remote_slot_back(&block, &returned, remote, r, &mut taken);
        slots.check(&block, r, 0xA);
        taken.sort_unstable();
        assert_eq!(taken, [l, r]);
        assert_eq!(block.used(), cap);
    });
}
