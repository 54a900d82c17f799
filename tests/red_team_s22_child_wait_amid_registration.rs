//! Red team (session 22) of the test children's table of alarms (`tests/common/processes.rs`):
//! a child of `in_child` that waits for a child of its own (as a test's fork handler waits
//! for a helper it forked) ends, though another thread of the test's process was inside
//! `in_child`'s bookkeeping at the fork. On 9356bc8 that bookkeeping was a `Vec` under a
//! std mutex: a fork while another thread held it left the child a lock no thread would
//! release, and the child's `wait_status` waited for it until its alarm
//! (`red_team_fork_nested_helper`'s daemon test hung so in a whole-binary run).
//!
//! The schedule is forced: this binary's allocator holds the other thread inside its first
//! allocation after it is armed (the mutex's `Vec` growing) until the child was made.

mod common;

use common::processes::{in_child, wait_ok, wait_status};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering::SeqCst};

/// The system allocator, which holds an armed thread inside its first allocation until
/// [`HELD`] says 2.
struct HoldingAllocator;

thread_local! {
    /// Set by the thread to hold inside its next allocation.
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

/// 1 once the armed thread is inside an allocation; 2 lets it go on.
static HELD: AtomicU8 = AtomicU8::new(0);

/// 1 once the armed thread's `in_child` returned.
static REGISTERED: AtomicU8 = AtomicU8::new(0);

impl HoldingAllocator {
    fn hold_if_armed() {
        if ARMED.with(|armed| armed.replace(false)) {
            HELD.store(1, SeqCst);
            while HELD.load(SeqCst) != 2 {
                std::hint::spin_loop();
            }
        }
    }
}

// SAFETY: every call goes to the system allocator, after a wait at most.
unsafe impl GlobalAlloc for HoldingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::hold_if_armed();
        // SAFETY: the caller's layout, as GlobalAlloc::alloc asks.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from System with `layout`, as GlobalAlloc::dealloc asks.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::hold_if_armed();
        // SAFETY: the caller's arguments, as GlobalAlloc::realloc asks.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: HoldingAllocator = HoldingAllocator;

#[test]
fn a_fork_child_waits_for_its_own_child_while_another_thread_registers_one() {
    let registrar = std::thread::spawn(|| {
        ARMED.with(|armed| armed.set(true));
        // An alarm long enough for the child to be looked into (registered in the table).
        let child = in_child(10, || {});
        ARMED.with(|armed| armed.set(false));
        REGISTERED.store(1, SeqCst);
        wait_ok(child);
    });
    // The other thread is inside the bookkeeping (held in its allocation) or past it.
    while HELD.load(SeqCst) != 1 && REGISTERED.load(SeqCst) != 1 {
        std::hint::spin_loop();
    }
    // Short alarms: neither child is registered (the parent's own registration would wait
    // for the held thread).
    let waiter = in_child(5, || wait_ok(in_child(5, || {})));
    HELD.store(2, SeqCst);
    let status = wait_status(waiter);
    registrar.join().expect("the registering thread");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child waiting for its own child: status {status:#x} (signal 14 is SIGALRM: it \
         hung)"
    );
}
