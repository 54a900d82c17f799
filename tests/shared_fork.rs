//! A shared-anonymous instance across fork: parent and children allocate in the same
//! instance, write patterns, hand offsets to each other through a mailbox allocated in the
//! region, free each other's objects (remote frees across processes), and the parent
//! verifies the whole region at the end. Each child runs under an `alarm`, so a lock a dead
//! or absent holder keeps turns into a failure, not a hang.

mod common;

use cohort::Cohort;
use common::processes::{self, wait_ok};
use std::sync::atomic::{AtomicU64, Ordering};

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

const CHILDREN: usize = 4;
/// Objects each process makes for the others.
const PER_CHILD: usize = 200;
const CHILD_TIMEOUT: u32 = 60;

/// The mailbox: per child, `PER_CHILD` (offset, size) pairs of objects it left for the
/// parent, then a word saying it is done. Offsets count from the mailbox itself.
#[repr(C)]
struct Mailbox {
    left: [[[AtomicU64; 2]; PER_CHILD]; CHILDREN],
    /// Objects of the parent each child freed.
    freed: [AtomicU64; CHILDREN],
}

fn size_of_object(i: usize) -> usize {
    [8, 16, 24, 48, 64, 100, 256, 1000, 4000, 16000][i % 10]
}

fn pattern(tag: u64, i: usize) -> u8 {
    (tag as usize * 31 + i * 7) as u8
}

/// Fills `size` bytes at `p` with the pattern of `tag`.
///
/// # Safety
/// `p` is writable for `size` bytes.
unsafe fn fill(p: *mut u8, size: usize, tag: u64) {
    for i in 0..size {
        // SAFETY: caller.
        unsafe { p.add(i).write(pattern(tag, i)) };
    }
}

/// True when `size` bytes at `p` hold the pattern of `tag`.
///
/// # Safety
/// `p` is readable for `size` bytes.
unsafe fn holds(p: *const u8, size: usize, tag: u64) -> bool {
    // SAFETY: caller.
    (0..size).all(|i| unsafe { p.add(i).read() } == pattern(tag, i))
}

fn in_child(f: impl FnOnce()) -> libc::pid_t {
    processes::in_child(CHILD_TIMEOUT, f)
}

/// `q` is the slot after `p` (the heap that served `p` still has its block), and both are
/// freed by `free`.
fn check_next_and_free(p: *mut u8, q: *mut u8, what: &str, free: impl Fn(*mut u8)) {
    assert_eq!(q as usize, p as usize + 64, "{what}");
    free(p);
    free(q);
}

#[test]
fn fork_children_allocate_free_each_other_and_verify() {
    let c = Cohort::<Life>::shared_anonymous(1 << 30).expect("a shared region");
    let mailbox = c.calloc(size_of::<Mailbox>(), Life::Long).cast::<Mailbox>();
    assert!(!mailbox.is_null());
    // SAFETY: zeroed (valid atomics), shared with the children through the region.
    let mb = unsafe { &*mailbox };
    // The parent's objects, some of which each child frees.
    let parents: Vec<(*mut u8, usize)> = (0..CHILDREN * PER_CHILD)
        .map(|i| {
            let size = size_of_object(i);
            let p = c.malloc(size, Life::Short);
            assert!(!p.is_null());
            // SAFETY: fresh, of `size` bytes.
            unsafe { fill(p, size, 1000 + i as u64) };
            (p, size)
        })
        .collect();
    let pids: Vec<_> = (0..CHILDREN)
        .map(|k| {
            let (c, parents) = (&c, &parents);
            in_child(move || {
                // The parent's objects of this child: patterns seen, then freed from here.
                for i in (k..parents.len()).step_by(CHILDREN) {
                    let (p, size) = parents[i];
                    // SAFETY: a live allocation of the parent, this child's to free.
                    unsafe {
                        assert!(holds(p, size, 1000 + i as u64), "parent's object {i}");
                        c.free(p, size, Life::Short);
                    }
                    mb.freed[k].fetch_add(1, Ordering::Relaxed);
                }
                // Objects for the parent, handed over by offset from the mailbox.
                for j in 0..PER_CHILD {
                    let size = size_of_object(j + k);
                    let p = c.malloc(size, Life::Long);
                    assert!(!p.is_null(), "child {k} out of memory");
                    // SAFETY: fresh, of `size` bytes.
                    unsafe { fill(p, size, (k * PER_CHILD + j) as u64) };
                    let off = p as u64 - mailbox as u64;
                    mb.left[k][j][0].store(off, Ordering::Relaxed);
                    mb.left[k][j][1].store(size as u64, Ordering::Release);
                }
                // Churn: allocate and free locally, so the child's heap has partial blocks
                // and a current block when it leaves.
                let mut mine = Vec::new();
                for j in 0..2000 {
                    let size = size_of_object(j);
                    let p = c.malloc(size, Life::Short);
                    assert!(!p.is_null());
                    mine.push((p, size));
                    if j % 3 == 0 {
                        let (p, size) = mine.swap_remove(j % mine.len());
                        // SAFETY: allocated above, freed once.
                        unsafe { c.free(p, size, Life::Short) };
                    }
                }
                for (p, size) in mine {
                    // SAFETY: allocated above, freed once.
                    unsafe { c.free(p, size, Life::Short) };
                }
            })
        })
        .collect();
    // The parent goes on allocating while the children run.
    let mut own = Vec::new();
    for j in 0..3000 {
        let size = size_of_object(j);
        let p = c.malloc(size, Life::Short);
        assert!(!p.is_null());
        // SAFETY: fresh.
        unsafe { fill(p, size, 99_999) };
        own.push((p, size));
    }
    for pid in pids {
        wait_ok(pid);
    }
    for k in 0..CHILDREN {
        assert_eq!(mb.freed[k].load(Ordering::Relaxed), PER_CHILD as u64);
        for j in 0..PER_CHILD {
            let size = mb.left[k][j][1].load(Ordering::Acquire) as usize;
            let off = mb.left[k][j][0].load(Ordering::Relaxed);
            let p = (mailbox as u64 + off) as *mut u8;
            // SAFETY: a child's object, handed to the parent, freed once here.
            unsafe {
                assert!(
                    holds(p, size, (k * PER_CHILD + j) as u64),
                    "child {k}'s {j}"
                );
                c.free(p, size, Life::Long);
            }
        }
    }
    for (p, size) in own {
        // SAFETY: the parent's own, intact, freed once.
        unsafe {
            assert!(holds(p, size, 99_999));
            c.free(p, size, Life::Short);
        }
    }
    // SAFETY: the mailbox, freed once.
    unsafe { c.free(mailbox.cast(), size_of::<Mailbox>(), Life::Long) };
    // SAFETY: no other process or thread uses the instance any more.
    let v = unsafe { c.verify() }.expect("the region verifies");
    assert_eq!(v.live, 0, "every object was freed: {v:?}");
    assert!(c.is_empty());
}

#[test]
fn a_child_does_not_use_the_parents_heap() {
    let c = Cohort::<()>::shared_anonymous(8 << 20).expect("a shared region");
    // The parent's heap has a current block of the 64-byte class.
    let p = c.malloc(64, ());
    // SAFETY: a child allocates and leaves its objects for the parent to see.
    let child = in_child(|| {
        let q = c.malloc(64, ());
        assert!(!q.is_null());
        assert_ne!(
            q as usize & !((2 << 20) - 1),
            p as usize & !((2 << 20) - 1),
            "the child allocated from the parent's current block"
        );
    });
    wait_ok(child);
    check_next_and_free(
        p,
        c.malloc(64, ()),
        "the parent's block is untouched",
        |x| {
            // SAFETY: allocated by this test, freed once.
            unsafe { c.free(x, 64, ()) }
        },
    );
}

/// A child inherits the parent's explicit joins (their heaps are the parent's): dropping
/// its copy of one must leave the parent's heap alone.
#[test]
fn a_child_dropping_its_copy_of_a_parents_join_leaves_the_heap_to_the_parent() {
    let c = Cohort::<()>::shared_anonymous(8 << 20).expect("a shared region");
    let j = c.join(1).expect("a join");
    let p = j.malloc(64, ());
    assert!(!p.is_null());
    let child = in_child(|| {
        // SAFETY: the child's copy of the join, dropped once here (the parent's stays).
        drop(unsafe { std::ptr::read(&j) });
        let q = c.malloc(64, ());
        assert!(!q.is_null());
        // SAFETY: allocated above.
        unsafe { c.free(q, 64, ()) };
    });
    wait_ok(child);
    let what = "the join's heap still has its current block";
    check_next_and_free(p, j.malloc(64, ()), what, |x| {
        // SAFETY: allocated through the join, freed once.
        unsafe { j.free(x, 64, ()) }
    });
    drop(j);
    // SAFETY: nobody else uses the region.
    unsafe { c.verify() }.expect("verifies");
    assert!(c.is_empty());
}
