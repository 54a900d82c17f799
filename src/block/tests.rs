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
    assert_eq!(h.pop().map(|(off, _)| off), Some(c.first + 5 * c.stride));
    assert_eq!(h.pop(), None, "slot 5 was listed once");
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
