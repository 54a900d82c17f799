//! A shared-anonymous instance across fork: parent and children allocate in the same
//! instance, write patterns, hand offsets to each other through a mailbox allocated in the
//! region, free each other's objects (remote frees across processes), and the parent
//! verifies the whole region at the end. Each child runs under an `alarm`, so a lock a dead
//! or absent holder keeps turns into a failure, not a hang.

use cohort::Cohort;
use std::panic::AssertUnwindSafe;
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

/// Runs `f` in a child process, which exits 0 when `f` returns and 1 when it panics.
fn in_child(f: impl FnOnce()) -> libc::pid_t {
    // SAFETY: the child runs `f` and leaves through `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: alarm has no preconditions.
        unsafe { libc::alarm(CHILD_TIMEOUT) };
        let ok = std::panic::catch_unwind(AssertUnwindSafe(f)).is_ok();
        // SAFETY: leaves the child without running the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    pid
}

fn wait_ok(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child {pid} failed: status {status:#x}"
    );
}

#[test]
fn fork_children_allocate_free_each_other_and_verify() {
    let c = Cohort::<Life>::shared_anonymous(1 << 30).expect("a shared region");
    let mailbox = c.malloc(size_of::<Mailbox>(), Life::Long).cast::<Mailbox>();
    assert!(!mailbox.is_null());
    // SAFETY: fresh, large enough; zeroed below.
    unsafe { std::ptr::write_bytes(mailbox.cast::<u8>(), 0, size_of::<Mailbox>()) };
    // SAFETY: initialised above; the atomics are shared with the children through the
    // region.
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
fn a_large_allocation_is_refused_in_a_shared_region() {
    let c = Cohort::<()>::shared_anonymous(8 << 20).expect("a shared region");
    assert!(c.malloc(4 << 20, ()).is_null(), "large: refused");
    let p = c.malloc(64, ());
    assert!(!p.is_null(), "small: served");
    // SAFETY: allocated above.
    unsafe { c.free(p, 64, ()) };
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
    let q = c.malloc(64, ());
    assert_eq!(
        q as usize,
        p as usize + 64,
        "the parent's block is untouched"
    );
    // SAFETY: allocated above.
    unsafe {
        c.free(p, 64, ());
        c.free(q, 64, ());
    }
}
