//! The unit tests of explicit joins: adoption by group, the checks of a join's free, frees
//! across a join and its thread, and joins across a fork (RED-70 with RED-78 kept fixed).

use super::*;

#[test]
fn a_join_adopts_the_heap_its_group_left() {
    let a: Cohort = Cohort::new();
    let j = a.join(7).unwrap();
    let seven = j.heap().unwrap().token;
    j.leave();
    let eight = a.join(8).unwrap();
    assert_ne!(
        eight.heap().unwrap().token,
        seven,
        "another group's heap is not taken"
    );
    let again = a.join(7).unwrap();
    assert_eq!(again.heap().unwrap().token, seven, "the group's own heap is adopted");
}

/// A join's free takes the `Cohort`'s path (one router), so it makes the same checks:
/// a double free of the slot freed last is reported in every build.
#[test]
#[should_panic(expected = "double free")]
fn a_join_reports_a_double_free() {
    let a: Cohort = Cohort::new();
    let j = a.join(1).unwrap();
    let p = j.malloc(64, ());
    // SAFETY: p is live; the second free is the misuse under test, caught before it
    // touches anything.
    unsafe {
        j.free(p, 64, ());
        j.free(p, 64, ());
    }
}

/// And a size of another class than the block's is reported, not pushed on its list.
#[test]
#[should_panic(expected = "size class")]
fn a_join_reports_a_free_with_the_wrong_size() {
    let a: Cohort = Cohort::new();
    let j = a.join(2).unwrap();
    let p = j.malloc(64, ());
    // SAFETY: the wrong size is the misuse under test, caught before anything changes.
    unsafe { j.free(p, 4000, ()) };
}

/// A block of the calling thread's own heap freed through a join is a local free of
/// that heap, and an allocation of the join freed through the `Cohort` a remote one:
/// both come back for reuse.
#[test]
fn frees_across_a_join_and_its_thread_reach_their_owners() {
    let a: Cohort = Cohort::new();
    let j = a.join(3).unwrap();
    let mine = a.malloc(48, ());
    let joins = j.malloc(48, ());
    // SAFETY: both live, each freed once.
    unsafe {
        j.free(mine, 48, ());
        a.free(joins, 48, ());
    }
    // SAFETY: no other thread uses `a`.
    unsafe { a.verify() }.unwrap();
    // The thread's heap reuses its slot once its bump window is spent (a collect of its
    // local free list, whose first slot is the one freed last).
    let window = 4096 / 48 + 1;
    let taken: Vec<*mut u8> = (0..window).map(|_| a.malloc(48, ())).collect();
    assert!(taken.contains(&mine), "the thread's heap reuses its slot");
    for p in taken {
        // SAFETY: live, each freed once.
        unsafe { a.free(p, 48, ()) };
    }
}

/// Runs `f` in a fork child of this process (under a 10 s alarm: a hang fails) and
/// returns the child's wait status; the child leaves through `_exit` with `f`'s code.
fn in_fork_child(f: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child runs `f` (the callers' checks: allocations and `verify` on its
    // only thread) and leaves without the parent's exit hooks.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            libc::alarm(10);
            libc::_exit(f());
        }
    }
    let mut status = 0;
    // SAFETY: our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    status
}

/// Writes `m` to the standard error with one system call (a fork child's).
fn say(m: &str) {
    // SAFETY: writes the bytes of `m`.
    unsafe { libc::write(2, m.as_ptr().cast(), m.len()) };
}

/// 0 when `a` verifies in a fork child, else 3 with the error on the standard error.
fn verify_status(a: &Cohort) -> i32 {
    // SAFETY: the child's other threads, if any, have ended.
    match unsafe { a.verify() } {
        Ok(_) => 0,
        Err(e) => {
            say(&format!("child verify: {e:?}\n"));
            3
        }
    }
}

/// Asserts that the fork child's status is a clean exit with code 0.
fn assert_child_passed(status: i32, codes: &str) {
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child failed (status {status:#x}: {codes})"
    );
}

/// Starts the first steps of a free of slot `p` (of `size` bytes) through a join's heap,
/// as its free does: checked mode's check (its live bit cleared) and the push on the
/// block's local list with the count's decrement. Returns what the push said.
fn free_pushed(a: &Cohort, p: *mut u8, size: usize) -> crate::block::LocalFree {
    use crate::block::header_of;
    use crate::class::class_of;
    use crate::instance::CHECKED;
    if CHECKED {
        let class = class_of(size, 8).unwrap();
        a.core
            .find_misuse::<true>(p, size, class, lifetime::index_of(()))
            .unwrap();
    }
    // SAFETY: `p` is a live slot of a block of the caller's join (the callers').
    let h = unsafe { &*header_of(p) };
    // SAFETY: as above.
    unsafe { h.push_local_at((p as usize - h.base() as usize) as u32) }
}

/// Runs `before` on a new thread with a join of `a` in group `group`, then leaves the
/// join in a mutex (where a fork child finds it, free) and waits; meanwhile forks, and the
/// child runs `child` with the join and what `before` returned; then the thread runs
/// `after` likewise and drops the join. Returns the child's wait status.
fn fork_amid_a_workers_join<T: Clone + Send + 'static>(
    a: &'static Cohort,
    group: usize,
    before: impl FnOnce(&Join<'static>) -> T + Send + 'static,
    after: impl FnOnce(&Join<'static>, T) + Send + 'static,
    child: impl FnOnce(&Join<'static>, T) -> i32,
) -> i32 {
    use std::sync::mpsc::channel;
    use std::sync::Mutex;

    let kept: &'static Mutex<Option<Join<'static>>> = Box::leak(Box::new(Mutex::new(None)));
    let (stopped, in_call) = channel();
    let (go_on, resume) = channel::<()>();
    let worker = std::thread::spawn(move || {
        let j = a.join(group).unwrap();
        let t = before(&j);
        *kept.lock().unwrap() = Some(j);
        stopped.send(t.clone()).unwrap();
        resume.recv().unwrap();
        let j = kept.lock().unwrap().take().unwrap();
        after(&j, t);
    });
    let t = in_call.recv().unwrap();
    let status = in_fork_child(|| child(kept.lock().unwrap().as_ref().unwrap(), t));
    go_on.send(()).unwrap();
    worker.join().unwrap();
    status
}

/// Slot addresses as numbers (sent between threads).
fn addresses(ps: &[*mut u8]) -> Vec<usize> {
    ps.iter().map(|&p| p as usize).collect()
}

/// RED-70: a fork child of a process whose other thread was inside a call of a join
/// (here a local free, the fast path's, stopped between its push on the block's local
/// list and the count's decrement) kept the join's heap as it was, and its verify
/// reported the block (`used 10 + free-listed 1 != 10 slots handed out`; the red team's
/// `red_team_fork_slow_paths` join test saw it in release builds). The child's fork
/// handler repairs the join's heap in place (`heap_handover::repair_joins_in_child`): its
/// verify passes, the heap is still the join's (its token owns the block), and the join
/// goes on in the child on it: the slot the stopped free pushed is free, the others live.
#[test]
fn a_fork_child_repairs_a_joins_heap_another_thread_was_in_a_call_on() {
    use crate::block::header_of;

    let a: &'static Cohort = Box::leak(Box::new(Cohort::new()));
    let stopped = move |j: &Join<'static>| {
        let ps: Vec<*mut u8> = (0..10).map(|_| j.malloc(64, ())).collect();
        // The free's push done, its count's decrement taken back: the step not done.
        let _ = free_pushed(a, ps[0], 64);
        // SAFETY: a live block of the join's.
        unsafe { (*header_of(ps[0])).count_add(1) };
        (j.heap().unwrap().token, addresses(&ps))
    };
    let finished = move |j: &Join<'static>, (_, ps): (u64, Vec<usize>)| {
        // SAFETY: as above; the free's last step, then the rest freed as usual.
        unsafe { (*header_of(ps[0] as *mut u8)).count_add(u32::MAX) };
        for &q in &ps[1..] {
            // SAFETY: live, freed once.
            unsafe { j.free(q as *mut u8, 64, ()) };
        }
    };
    let status = fork_amid_a_workers_join(a, 4, stopped, finished, |j, (token, ps)| {
        let status = verify_status(a);
        if status != 0 {
            return status;
        }
        // SAFETY: a block of the join's, mapped.
        let owner = unsafe { (*header_of(ps[0] as *mut u8)).owner() };
        if owner != token || j.heap().map(|h| h.token) != Some(token) {
            return 4;
        }
        let qs: Vec<*mut u8> = (0..300).map(|_| j.malloc(64, ())).collect();
        if qs.iter().any(|&q| ps[1..].contains(&(q as usize))) {
            return 2;
        }
        for q in qs.into_iter().chain(ps[1..].iter().map(|&p| p as *mut u8)) {
            // SAFETY: live, each freed once.
            unsafe { j.free(q, 64, ()) };
        }
        if !a.is_empty() {
            return 6;
        }
        verify_status(a)
    });
    assert_child_passed(
        status,
        "2, the join handed out a live slot; 3, its verify, on the standard error; 4, the \
         heap is no longer the join's; 6, a slot stayed live",
    );
    // SAFETY: every other thread has ended.
    unsafe { a.verify() }.expect("verify in the parent");
    assert!(a.is_empty());
}

/// RED-70's slow-path sibling: the other thread's free into a `FULL` block of its join
/// stopped where its slow path starts (the push took the count to 0: the block is still
/// `FULL`, a slot on its local list). Unrepaired, the child's join never lists the block
/// again (its later frees never take the count to 0 again), so the block stays in use with
/// none of its slots live. Repaired, the block is listed with its free slot: the child
/// frees everything through the join and no block stays in use.
#[test]
fn a_fork_child_relists_a_full_block_a_joins_free_stopped_in() {
    use crate::block::{header_of, LocalFree};
    use crate::class::{class_of, CLASSES};

    const SIZE: usize = 16 << 10;
    let capacity = CLASSES[class_of(SIZE, 8).unwrap()].capacity as usize;
    let a: &'static Cohort = Box::leak(Box::new(Cohort::new()));
    let stopped = move |j: &Join<'static>| {
        // A block's every slot, and one of the next block: the first is retired `FULL`.
        let ps: Vec<*mut u8> = (0..=capacity).map(|_| j.malloc(SIZE, ())).collect();
        // SAFETY: a block of the join's.
        assert!(unsafe { (*header_of(ps[0])).is_full() }, "the first block is FULL");
        let pushed = free_pushed(a, ps[0], SIZE);
        assert!(matches!(pushed, LocalFree::Slow), "the free takes the slow path");
        addresses(&ps)
    };
    let finished = move |j: &Join<'static>, ps: Vec<usize>| {
        // SAFETY: as above. The free's slow path, then the rest freed as usual.
        j.heap().unwrap().free_slow(unsafe { &*header_of(ps[0] as *mut u8) });
        for &q in &ps[1..] {
            // SAFETY: live, freed once.
            unsafe { j.free(q as *mut u8, SIZE, ()) };
        }
    };
    let status = fork_amid_a_workers_join(a, 5, stopped, finished, |j, ps| {
        let status = verify_status(a);
        if status != 0 {
            return status;
        }
        for &q in &ps[1..] {
            // SAFETY: live, freed once.
            unsafe { j.free(q as *mut u8, SIZE, ()) };
        }
        let small = a.stats().small;
        if small.live != 0 || small.blocks != 0 {
            say(&format!("child: {small:?}\n"));
            return 6;
        }
        verify_status(a)
    });
    assert_child_passed(
        status,
        "3, its verify, on the standard error; 6, a block stayed in use with no live slot",
    );
    // SAFETY: every other thread has ended.
    unsafe { a.verify() }.expect("verify in the parent");
    assert!(a.is_empty());
}

/// RED-70's fix keeps RED-78 fixed: joins in no call at the fork (one another thread of
/// the parent keeps in a mutex the child locks, and the forking thread's own) keep their
/// heaps in the child (the same tokens), the objects they allocated before the fork stay
/// whole, the child's `release_class` leaves them (a live join's: the releasing thread's
/// own heap holds none of them) and its next allocations do not overlap them; the joins
/// free them and the child verifies. Fails with the child taking the joins' heaps over as
/// dead threads' (session 17's landing, reverted): status 4.
#[test]
fn joins_in_no_call_at_the_fork_keep_their_heaps_in_the_child() {
    let a: &'static Cohort = Box::leak(Box::new(Cohort::new()));
    let own = a.join(6).unwrap();
    let ours = own.heap().unwrap().token;
    let mine = own.malloc(48, ());
    // SAFETY: 48 bytes of ours.
    unsafe { mine.write_bytes(0xa5, 48) };
    let made = move |j: &Join<'static>| {
        let p = j.malloc(64, ());
        // SAFETY: 64 bytes of ours.
        unsafe { p.write_bytes(0x5a, 64) };
        (p as usize, j.heap().unwrap().token)
    };
    let freed = move |j: &Join<'static>, (p, _): (usize, u64)| {
        // SAFETY: live, freed once.
        unsafe { j.free(p as *mut u8, 64, ()) };
    };
    let status = fork_amid_a_workers_join(a, 6, made, freed, |j, (p, theirs)| {
        let p = p as *mut u8;
        if j.heap().map(|h| h.token) != Some(theirs) || own.heap().map(|h| h.token) != Some(ours)
        {
            return 4;
        }
        // SAFETY: the thread's own allocations of `()` are none; the joins' are live
        // joins', which the release leaves.
        let r = unsafe { a.release_class(()) };
        if r.slots != 0 {
            say(&format!("child: {r}\n"));
            return 7;
        }
        let qs: Vec<*mut u8> = (0..300).map(|_| a.malloc(64, ())).collect();
        let rs: Vec<*mut u8> = (0..300).map(|_| own.malloc(48, ())).collect();
        if qs.contains(&p) || rs.contains(&mine) {
            return 2;
        }
        // SAFETY: the joins' objects of before the fork, live.
        let whole = unsafe {
            core::slice::from_raw_parts(p, 64).iter().all(|&b| b == 0x5a)
                && core::slice::from_raw_parts(mine, 48).iter().all(|&b| b == 0xa5)
        };
        if !whole {
            return 5;
        }
        // SAFETY: each live, freed once.
        unsafe {
            j.free(p, 64, ());
            own.free(mine, 48, ());
            for q in qs {
                j.free(q, 64, ());
            }
            for r in rs {
                own.free(r, 48, ());
            }
        }
        verify_status(a)
    });
    assert_child_passed(
        status,
        "2, an allocation overlapped a join's object; 3, its verify, on the standard error; \
         4, a join's heap changed; 5, a byte changed; 7, the release freed a join's object",
    );
    // SAFETY: live, freed once.
    unsafe { own.free(mine, 48, ()) };
    drop(own);
    // SAFETY: every other thread has ended.
    unsafe { a.verify() }.expect("verify in the parent");
    assert!(a.is_empty());
}

/// A join dropped in a fork child before any call there gives its heap back as any
/// dropped join does: the next join of its group adopts that heap (the same token), and
/// frees the old join's object of before the fork through it; the child verifies.
#[test]
fn a_join_dropped_in_a_fork_child_gives_its_heap_back() {
    let a: &'static Cohort = Box::leak(Box::new(Cohort::new()));
    let j = a.join(8).unwrap();
    let token = j.heap().unwrap().token;
    let p = j.malloc(64, ());
    let status = in_fork_child(move || {
        drop(j);
        let again = a.join(8).unwrap();
        if again.heap().map(|h| h.token) != Some(token) {
            return 4;
        }
        // SAFETY: live, allocated before the fork; freed once.
        unsafe { again.free(p, 64, ()) };
        drop(again);
        if !a.is_empty() {
            return 6;
        }
        verify_status(a)
    });
    assert_child_passed(
        status,
        "3, its verify, on the standard error; 4, the group's next join took another \
         heap; 6, a slot stayed live",
    );
    // SAFETY: live (the parent's), freed once.
    unsafe { a.free(p, 64, ()) };
}
