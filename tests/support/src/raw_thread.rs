//! Threads for fork children, started with `pthread_create` instead of std's spawn: a
//! thread std starts takes std's own locks as it starts and as it ends (the table of
//! threads' stack guards, `thread_info`), and a fork child made while another thread of its
//! parent held one of those (a thread starting or ending at that moment) has it held for
//! ever: its std-spawned thread waits for it and the child hangs (a CI run was lost so).
//! These threads take no lock of std's to start or end. The same shapes as std's:
//! [`spawn`] (a `'static` closure, joined or detached) and [`scope`] (closures that borrow,
//! every thread joined before it returns). A thread's panic is caught in the thread and
//! handed to whoever joins it, as std does: `join().unwrap()` in a fork child's closure
//! fails the child with it.
//!
//! Invariants: (a thread of [`scope`] has ended) before `scope` returns or unwinds, so
//! nothing it borrows outlives its use; (a thread's outcome is read) only after its
//! `pthread_join`, so each outcome is written once, then read once.

use std::marker::PhantomData;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

/// What a thread's closure returned, or its panic: written by the thread as it ends.
type Outcome<T> = Arc<Mutex<Option<std::thread::Result<T>>>>;

/// A closure run by a started thread: it catches its own panics (nothing unwinds out of
/// [`thread_main`]).
type Run = Box<dyn FnOnce() + Send + 'static>;

/// The thread's start routine: runs the [`Run`] that [`start`] handed over.
extern "C" fn thread_main(run: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY: `start` passed a `Box<Run>` made with `Box::into_raw`, taken back once, here.
    let run = unsafe { Box::from_raw(run.cast::<Run>()) };
    run();
    std::ptr::null_mut()
}

/// Starts a thread that runs `f` and stores its outcome in the returned [`Outcome`].
///
/// # Safety
/// Whatever `f` borrows outlives the thread: the caller joins it first (a `'static` `f`
/// borrows nothing).
unsafe fn start<'a, T: Send + 'a>(
    f: impl FnOnce() -> T + Send + 'a,
) -> (libc::pthread_t, Outcome<T>) {
    let outcome: Outcome<T> = Arc::new(Mutex::new(None));
    let written = Arc::clone(&outcome);
    let run: Box<dyn FnOnce() + Send + 'a> = Box::new(move || {
        let result = catch_unwind(AssertUnwindSafe(f));
        *written.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
    });
    // SAFETY: only the lifetime changes; the caller joins the thread before `'a` ends.
    let run: Run = unsafe { std::mem::transmute::<Box<dyn FnOnce() + Send + 'a>, Run>(run) };
    let arg = Box::into_raw(Box::new(run));
    // SAFETY: a zeroed pthread_t is only an out-parameter.
    let mut thread: libc::pthread_t = unsafe { std::mem::zeroed() };
    // SAFETY: `thread_main` takes `arg` over (a `Box<Run>`); default attributes.
    let r = unsafe { libc::pthread_create(&mut thread, std::ptr::null(), thread_main, arg.cast()) };
    if r != 0 {
        // SAFETY: no thread took `arg`: it is still ours, taken back once.
        drop(unsafe { Box::from_raw(arg) });
        panic!("pthread_create: {}", std::io::Error::from_raw_os_error(r));
    }
    (thread, outcome)
}

/// Waits for `thread` to end and takes its outcome.
///
/// # Safety
/// `thread` is a joinable thread started by [`start`] with `outcome`, not joined or
/// detached yet.
unsafe fn join<T>(thread: libc::pthread_t, outcome: &Outcome<T>) -> std::thread::Result<T> {
    // SAFETY: the caller's: joinable, joined once.
    let r = unsafe { libc::pthread_join(thread, std::ptr::null_mut()) };
    assert_eq!(r, 0, "pthread_join");
    let taken = outcome.lock().unwrap_or_else(|e| e.into_inner()).take();
    taken.expect("an ended thread wrote its outcome")
}

/// A thread started by [`spawn`]: [`JoinHandle::join`] waits for it; dropped unjoined, it
/// is detached.
pub struct JoinHandle<T> {
    /// `None` once joined.
    thread: Option<libc::pthread_t>,
    outcome: Outcome<T>,
}

impl<T> JoinHandle<T> {
    /// Waits for the thread to end: what its closure returned, or its panic.
    pub fn join(mut self) -> std::thread::Result<T> {
        let thread = self.thread.take().expect("joined once");
        // SAFETY: started by `start` with this outcome; `take` above makes this join the only one.
        unsafe { join(thread, &self.outcome) }
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            // SAFETY: a joinable thread of ours, neither joined nor detached.
            unsafe { libc::pthread_detach(thread) };
        }
    }
}

/// Starts a thread that runs `f` (with `pthread_create`; see the module's docs).
pub fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    // SAFETY: `f` is 'static: it borrows nothing.
    let (thread, outcome) = unsafe { start(f) };
    JoinHandle {
        thread: Some(thread),
        outcome,
    }
}

/// The threads a [`scope`] started and has not seen joined: each thread and whether it
/// panicked (known once it is joined). A slot is `None` once its handle joined it.
type Started = std::cell::RefCell<Vec<Option<(libc::pthread_t, Arc<Mutex<bool>>)>>>;

/// The scope of [`scope`]: starts threads that may borrow what outlives it.
pub struct Scope<'scope, 'env: 'scope> {
    started: Started,
    /// Invariant in both lifetimes, as std's scope: a borrow cannot be shortened to fit.
    scope: PhantomData<&'scope mut &'scope ()>,
    env: PhantomData<&'env mut &'env ()>,
}

/// A thread started by [`Scope::spawn`]: [`ScopedJoinHandle::join`] waits for it; unjoined,
/// the scope joins it at its end.
pub struct ScopedJoinHandle<'scope, T> {
    started: &'scope Started,
    slot: usize,
    outcome: Outcome<T>,
}

impl<T> ScopedJoinHandle<'_, T> {
    /// Waits for the thread to end: what its closure returned, or its panic.
    pub fn join(self) -> std::thread::Result<T> {
        let taken = self.started.borrow_mut()[self.slot].take();
        let (thread, _) = taken.expect("joined once");
        // SAFETY: started by `start` with this outcome; its slot, emptied above, made this
        // join the only one.
        unsafe { join(thread, &self.outcome) }
    }
}

impl<'scope> Scope<'scope, '_> {
    /// Starts a thread that runs `f`, which may borrow what outlives the scope.
    pub fn spawn<T: Send + 'scope>(
        &'scope self,
        f: impl FnOnce() -> T + Send + 'scope,
    ) -> ScopedJoinHandle<'scope, T> {
        let panicked = Arc::new(Mutex::new(false));
        let flag = Arc::clone(&panicked);
        let run = move || {
            let result = catch_unwind(AssertUnwindSafe(f));
            *flag.lock().unwrap_or_else(|e| e.into_inner()) = result.is_err();
            result.unwrap_or_else(|panic| resume_unwind(panic))
        };
        // SAFETY: the scope joins the thread before it ends ([`scope`]), and `'scope` ends
        // after the scope.
        let (thread, outcome) = unsafe { start(run) };
        let mut started = self.started.borrow_mut();
        started.push(Some((thread, panicked)));
        ScopedJoinHandle {
            started: &self.started,
            slot: started.len() - 1,
            outcome,
        }
    }
}

/// Runs `f` with a [`Scope`] whose threads may borrow from the caller, then joins every
/// thread it started and did not join (as std's `thread::scope`, with threads started by
/// `pthread_create`). Unwinds with `f`'s panic if `f` panicked (after the joins); panics
/// if a thread it joined here panicked.
pub fn scope<'env, T>(f: impl for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> T) -> T {
    let scope = Scope {
        started: std::cell::RefCell::new(Vec::new()),
        scope: PhantomData,
        env: PhantomData,
    };
    let result = catch_unwind(AssertUnwindSafe(|| f(&scope)));
    let unjoined: Vec<_> = scope.started.borrow_mut().drain(..).flatten().collect();
    let mut a_thread_panicked = false;
    for (thread, panicked) in unjoined {
        // SAFETY: a joinable thread of this scope whose handle did not join it (its slot
        // was still full), joined once.
        let r = unsafe { libc::pthread_join(thread, std::ptr::null_mut()) };
        assert_eq!(r, 0, "pthread_join");
        a_thread_panicked |= *panicked.lock().unwrap_or_else(|e| e.into_inner());
    }
    match result {
        Err(panic) => resume_unwind(panic),
        Ok(_) if a_thread_panicked => panic!("a thread of the scope panicked"),
        Ok(value) => value,
    }
}
