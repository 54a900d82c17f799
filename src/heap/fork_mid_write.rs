//! A test's stop inside a write of a heap's row: [`super::HeapHead::count_taken`] between
//! the header's count and the zeroing of `taken` (the test: `api::fork_mid_write`, a fork
//! child of a process whose thread stopped there).

use crate::os::shared_mem::thread_id;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The thread that stops inside `count_taken` (0: none), once.
static STOP_THREAD: AtomicI32 = AtomicI32::new(0);
/// Set while it is stopped there; `GO` lets it go on.
static STOPPED: AtomicBool = AtomicBool::new(false);
static GO: AtomicBool = AtomicBool::new(false);

/// The calling thread stops in its next `count_taken` that finds a current block.
pub(crate) fn stop_this_thread() {
    STOPPED.store(false, Ordering::Relaxed);
    GO.store(false, Ordering::Relaxed);
    STOP_THREAD.store(thread_id(), Ordering::Release);
}

/// Whether the thread stopped there.
pub(crate) fn stopped() -> bool {
    STOPPED.load(Ordering::Acquire)
}

/// Lets the stopped thread go on.
pub(crate) fn go_on() {
    GO.store(true, Ordering::Release);
}

/// Inside `count_taken`, between the header's count and the zeroing of `taken`: the thread
/// [`stop_this_thread`] named stops here (bounded: a failing test must not hang).
pub(super) fn inside_count_taken() {
    if STOP_THREAD.load(Ordering::Acquire) != thread_id() {
        return;
    }
    STOP_THREAD.store(0, Ordering::Relaxed);
    STOPPED.store(true, Ordering::Release);
    for _ in 0..10_000 {
        if GO.load(Ordering::Acquire) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}
