//! Unit tests of heaps changing hands: exits racing teardown, scope and fork; dead
//! processes' heaps taken over.

use super::hooks;
use crate::Cohort;
use std::sync::atomic::Ordering;

/// Starts a thread that allocates and frees once in `c`, then exits. The caller keeps
/// `c` alive until the thread's allocation is done (the tests wait for its exit hook).
fn allocate_once_and_exit(c: &Cohort<()>) -> std::thread::JoinHandle<()> {
    let shared = c as *const Cohort<()> as usize;
    std::thread::spawn(move || {
        // SAFETY: the caller's promise.
        let c = unsafe { &*(shared as *const Cohort<()>) };
        let p = c.malloc(64, ());
        // SAFETY: just allocated.
        unsafe { c.free(p, 64, ()) };
    })
}

/// A thread exits (its heap becomes ABANDONED) while another drops the instance: the
/// drop must not unmap the pool before the exiting thread has unlocked it.
#[test]
fn drop_waits_for_an_exiting_thread_to_unlock_the_pool() {
    let c = Box::into_raw(Box::new(Cohort::<()>::new()));
    // SAFETY: c lives until the drop below.
    let pool = unsafe { (*c).core.pool() }.unwrap() as *const _ as *mut _;
    hooks::PAUSE_POOL.store(pool, Ordering::Release);
    // SAFETY: c lives until the drop below, after the thread's allocation.
    let t = allocate_once_and_exit(unsafe { &*c });
    while !hooks::PAUSED.load(Ordering::Acquire) {
        std::thread::yield_now();
    }
    // SAFETY: no thread uses the instance any more (the other one is exiting).
    drop(unsafe { Box::from_raw(c) });
    t.join().unwrap();
    hooks::PAUSE_POOL.store(std::ptr::null_mut(), Ordering::Release);
}

/// A thread exits (its heap ABANDONED, the pool lock released) and pauses there while
/// another drops the instance, which destroys the private pool: the rest of the exit must
/// not read the pool (it is unmapped: a read is a SIGSEGV of the whole process).
#[test]
fn an_exit_reads_no_private_pool_after_its_last_unlock() {
    let c = Box::into_raw(Box::new(Cohort::<()>::new()));
    // SAFETY: c lives until the drop below.
    let pool = unsafe { (*c).core.pool() }.unwrap() as *const _ as *mut _;
    let _one = hooks::UNLOCKED.arm(pool);
    // SAFETY: c lives until the drop below, after the thread's allocation.
    let t = allocate_once_and_exit(unsafe { &*c });
    hooks::UNLOCKED.wait_paused();
    // SAFETY: no thread uses the instance any more (the other one is exiting).
    drop(unsafe { Box::from_raw(c) });
    hooks::UNLOCKED.resume();
    t.join().unwrap();
    hooks::UNLOCKED.disarm();
}

/// With every registry id held by a join, a thread without a heap allocates through the
/// pool: it must not map (and unmap) a heap on every allocation.
#[test]
fn a_full_registry_maps_no_heap_per_allocation() {
    let c = Cohort::<()>::new();
    let joins: Vec<_> = (1..crate::pool::MAX_HEAPS)
        .map(|i| c.join(i).expect("a join while the registry has room"))
        .collect();
    assert!(c.join(0).is_none(), "the registry is full");
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..100 {
                let p = c.malloc(64, ());
                assert!(!p.is_null());
                // SAFETY: just allocated.
                unsafe { c.free(p, 64, ()) };
            }
            let mapped = crate::heap::counts::HEAPS_MAPPED_HERE.with(|n| n.get());
            assert_eq!(
                mapped, 0,
                "heaps mapped by a thread that cannot register one"
            );
        });
    });
    drop(joins);
}

/// `scope` (exclusive use, under the pool lock) while a thread that used the instance
/// is exiting: neither waits for the other forever.
#[test]
fn scope_while_a_thread_exits_does_not_deadlock() {
    let mut c = Box::new(Cohort::<()>::new());
    let pool = c.core.pool().unwrap() as *const _ as *mut _;
    let _one = hooks::EXITING.arm(pool);
    let t = allocate_once_and_exit(&c);
    hooks::EXITING.wait_paused();
    let (tx, rx) = std::sync::mpsc::channel();
    let scoper = std::thread::spawn(move || {
        c.scope_exclusive((), |_, _| ());
        tx.send(()).unwrap();
        c
    });
    let finished = rx.recv_timeout(std::time::Duration::from_secs(30));
    hooks::EXITING.resume();
    assert!(
        finished.is_ok(),
        "scope waited forever for the exiting thread"
    );
    t.join().unwrap();
    hooks::EXITING.disarm();
    drop(scoper.join().unwrap());
}

/// fork while a thread is exiting (its heap EXITING, waiting for the pool lock the fork
/// handlers hold): the child, which has no such thread, can still drop the instance.
#[test]
fn fork_while_a_thread_exits_leaves_the_child_able_to_drop_the_instance() {
    let c = Box::new(Cohort::<()>::new());
    let pool = c.core.pool().unwrap() as *const _ as *mut _;
    let _one = hooks::EXITING.arm(pool);
    let t = allocate_once_and_exit(&c);
    hooks::EXITING.wait_paused();
    // SAFETY: the child only drops the instance and exits through _exit; the alarm
    // turns a hang into a failure.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            libc::alarm(10);
            drop(c);
            libc::_exit(0);
        }
    }
    hooks::EXITING.resume();
    let mut status = 0;
    // SAFETY: our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    t.join().unwrap();
    hooks::EXITING.disarm();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child hung dropping the instance (status {status:#x})"
    );
}

/// The holder word of a process that does not exist (pid 0, no process's, with start
/// time 1): a dead holder to `reap_dead`.
const DEAD: u64 = 1;

/// RED-10 (the take-over's side): a holder killed in the middle of taking the first block
/// off a partial list (to make it current) leaves the list's first link moved on and the
/// next block's `prev` link still naming the block it took. The dead-process reaper
/// adopted the current block first, then unlinked the partial list's blocks through that
/// stale link: the list's first link never moved, and the same block was adopted again and
/// again (a cycle in the pool's partial list: handed out twice). Each block of the heap
/// must be adopted once.
#[test]
fn a_dead_holders_half_unlinked_partial_list_is_taken_over_once_per_block() {
    use super::{reap_dead, THREAD_GROUP};
    use crate::block::{BlockList, Header, Role};
    use crate::class::{class_of, HeadIndex};
    use crate::heap::{head_at, Heap};
    use crate::pool::test_pool::TestPool;

    let pool = TestPool::shared(8, 1, Heap::bytes(1));
    let heap = Heap::create(&pool, 1, THREAD_GROUP);
    assert!(!heap.is_null());
    // SAFETY: registered in the pool, which the test keeps.
    let hp = unsafe { &*heap };
    let class = class_of(64, 8).unwrap();
    let take = || {
        let h = pool
            .take_block(&mut pool.lock(), class, 0, hp.token)
            .unwrap();
        h.pop()
            .or_else(|| h.refill().then(|| h.pop()).flatten())
            .unwrap();
        h
    };
    let (a, c): (&Header, &Header) = (take(), take());
    let at = HeadIndex::new(class, 0).get();
    // SAFETY: the test is the heap's holder; i is below the head count.
    let head = unsafe { head_at(heap, HeadIndex::count(1), at) };
    head.partial.push(pool.units(), c);
    head.partial.push(pool.units(), a);
    // The holder moved the list's first link to `c`, made `a` current and died before it
    // cleared `c`'s `prev` link (a BlockList is its first block's unit index).
    // SAFETY: BlockList is `repr(transparent)` over that index.
    unsafe { *(head.partial as *mut BlockList).cast::<u32>() = pool.units().index(c) };
    a.set_role(Role::Current);
    head.enter(a);
    hp.holder.store(DEAD, Ordering::Release);
    assert_eq!(reap_dead(&pool), 1, "the dead holder's heap is taken over");
    let st = pool.lock();
    let mut listed: Vec<usize> = st
        .partial_list(HeadIndex::new(class, 0))
        .iter(pool.units())
        .take(10)
        .map(|h| h.base() as usize)
        .collect();
    listed.sort_unstable();
    let mut expect = vec![a.base() as usize, c.base() as usize];
    expect.sort_unstable();
    assert_eq!(listed, expect, "each block on the pool's partial list once");
}

/// An exited thread's tiny blocks (pool-owned, on its heap's tiny heads) go to the pool
/// with its other blocks: in a pool of one block, a new heap's tiny allocation is served
/// from the block the exited thread's heap held, never null.
#[test]
fn an_exited_heaps_tiny_blocks_serve_other_heaps() {
    use super::{abandon, THREAD_GROUP};
    use crate::heap::Heap;
    use crate::pool::test_pool::TestPool;

    let pool = TestPool::new(1, 1);
    let left = Heap::create(&pool, 1, THREAD_GROUP);
    // SAFETY: registered in the pool, which the test keeps; the test is its holder.
    let p = unsafe { &*left }.alloc_tiny(0, 0).expect("a tiny slot").0;
    // SAFETY: the heap is the test's, used no more.
    unsafe { abandon(left) };
    let other = Heap::create(&pool, 1, THREAD_GROUP);
    // SAFETY: as above.
    let q = unsafe { &*other }.alloc_tiny(0, 0).map(|(q, _)| q);
    assert!(
        q.is_some_and(|q| q != p),
        "a tiny slot from the exited heap's block"
    );
}

/// RED-66's take-over (a fork child's, a dead process's survivor) of a heap whose holder
/// stopped in the middle of making a block current (`HeapHead::enter`: the head names the
/// block first, then its cursor is loaded from the header one word at a time): the cursor
/// is the empty one, or holds the allocation list but no `bump` yet. The take-over wrote
/// that cursor back to the header (`bump` 0, below the first slot), the recount gave up
/// on it, and the block's next taker handed out its header and its live slots again (the
/// red team's fork test of a join's slow paths: a fork child's fill wrote over a block
/// header, and at a pointer read out of a filled slot). Each step of the load: no slot the
/// block handed out, and no byte of its header, is handed out again. Fails without the
/// check of the cursor (`Cursors::loaded`): "stopped after 1 of enter's stores: slot 0x0
/// handed out again".
#[test]
fn a_dead_holder_stopped_making_a_block_current_hands_out_no_slot_twice() {
    use super::{reap_dead, THREAD_GROUP};
    use crate::block::{Role, Word};
    use crate::class::{class_of, HeadIndex};
    use crate::heap::{head_at, Heap};
    use crate::pool::test_pool::TestPool;

    let class = class_of(64, 8).unwrap();
    // The stores of `enter` the holder made before it stopped: the head's current block,
    // then the cursor's allocation list, `bump` and window end.
    for stores in 1..=4 {
        let pool = TestPool::shared(8, 1, Heap::bytes(1));
        let heap = Heap::create(&pool, 1, THREAD_GROUP);
        assert!(!heap.is_null());
        // SAFETY: registered in the pool, which the test keeps.
        let hp = unsafe { &*heap };
        let h = pool
            .take_block(&mut pool.lock(), class, 0, hp.token)
            .unwrap();
        // Ten slots handed out, the even ones freed: on the allocation list, as a block
        // that was current before keeps them.
        let mut live = Vec::new();
        for i in 0..10 {
            let (off, _) = h
                .pop()
                .or_else(|| h.refill().then(|| h.pop()).flatten())
                .unwrap();
            if i % 2 == 0 {
                // SAFETY: a slot of `h` just handed out, freed once.
                let _ = unsafe { h.push_local(h.base().add(off as usize)) };
            } else {
                live.push(off);
            }
        }
        h.collect_freed();
        let at = HeadIndex::new(class, 0).get();
        // SAFETY: the test is the heap's holder; `at` is below the head count.
        let head = unsafe { head_at(heap, HeadIndex::count(1), at) };
        h.set_role(Role::Current);
        // `enter`'s stores, in its order, up to `stores`.
        let (from, to) = (h.state(), head.state());
        head.current
            .store(core::ptr::from_ref(h).cast_mut(), Ordering::Relaxed);
        let words = [
            (to.free(), from.free().get()),
            (to.bump(), from.bump().get()),
            (to.end(), from.end().get()),
        ];
        for (word, value) in &words[..stores - 1] {
            word.store(*value, Ordering::Relaxed);
        }
        hp.holder.store(DEAD, Ordering::Release);
        assert_eq!(reap_dead(&pool), 1, "the dead holder's heap is taken over");
        // The block's next taker: every slot it hands out, once.
        let st = &mut pool.lock();
        let b = pool.take_block(st, class, 0, 7).unwrap();
        assert!(
            core::ptr::eq(b, h),
            "the block itself, from the pool's list"
        );
        let c = b.geometry();
        let mut seen = vec![false; (c.limit / c.stride) as usize + 1];
        while let Some((off, _)) = b.pop().or_else(|| b.refill().then(|| b.pop()).flatten()) {
            let again = off < c.first || live.contains(&off) || seen[(off / c.stride) as usize];
            assert!(
                !again,
                "stopped after {stores} of enter's stores: slot {off:#x} handed out again"
            );
            seen[(off / c.stride) as usize] = true;
        }
    }
}
