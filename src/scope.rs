//! Scopes: a lifetime class released safely on a shared allocator, a `static` included.
//!
//! [`Cohort::scope`] runs a closure with a [`ClassScope`], an `Allocator` handle to a
//! lifetime class of the scope's own, then frees the whole class at once. Why that is sound
//! while other threads use the allocator is in [`Cohort::scope`]'s docs (`# Soundness`),
//! where rustdoc shows it.

use crate::api::Cohort;
use crate::handle::{impl_allocator, Lane};
use crate::lifetime::{scope_class, Lifetime, SCOPE_DEPTHS};
use crate::release::Released;
use core::alloc::Layout;
use core::cell::Cell;
use core::fmt;
use core::marker::PhantomData;
use core::ptr::NonNull;

std::thread_local! {
    /// Scopes open on the calling thread, of any instance: the next one's depth.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// The handle of a [`Cohort::scope`]: an `Allocator` for `allocator_api2` collections, and
/// the only way to allocate in the scope's lifetime class. Zero cost to copy (two words).
///
/// Neither `Send` nor `Sync`, and it borrows the scope: see [`Cohort::scope`] for why that
/// makes the release at the scope's end safe.
///
/// ```
/// use cohort::allocator_api2::vec::Vec;
/// static A: cohort::Cohort = cohort::Cohort::new();
///
/// let total = A.scope(|frame| {
///     let mut v = Vec::new_in(frame);
///     v.extend(1..=10u64);
///     v.iter().sum::<u64>()
/// });
/// assert_eq!(total, 55);
/// ```
///
/// What the borrow checker refuses: a collection leaving the scope,
///
/// ```compile_fail
/// use cohort::allocator_api2::vec::Vec;
/// static A: cohort::Cohort = cohort::Cohort::new();
/// let escaped = A.scope(|frame| Vec::<u8, _>::new_in(frame));
/// ```
///
/// or stored outside it,
///
/// ```compile_fail
/// use cohort::allocator_api2::vec::Vec;
/// static A: cohort::Cohort = cohort::Cohort::new();
/// let mut outside = None;
/// A.scope(|frame| outside = Some(Vec::<u8, _>::new_in(frame)));
/// ```
///
/// or going to another thread (the handle is not `Send`, nor is anything built on it),
///
/// ```compile_fail
/// use cohort::allocator_api2::vec::Vec;
/// static A: cohort::Cohort = cohort::Cohort::new();
/// A.scope(|frame| {
///     let v = Vec::<u8, _>::new_in(frame);
///     std::thread::scope(|s| { s.spawn(move || drop(v)); });
/// });
/// ```
///
/// or shared with one (nor `Sync`):
///
/// ```compile_fail
/// use cohort::allocator_api2::vec::Vec;
/// static A: cohort::Cohort = cohort::Cohort::new();
/// A.scope(|frame| {
///     let v = Vec::<u8, _>::new_in(frame);
///     std::thread::scope(|s| { s.spawn(|| v.len()); });
/// });
/// ```
pub struct ClassScope<'s, L: Lifetime = ()> {
    cohort: &'s Cohort<L>,
    life: usize,
    /// Invariant in `'s` (nothing built on it can be stored outside the scope), neither
    /// `Send` nor `Sync` (only the scope's thread uses the class).
    _scope: PhantomData<*mut &'s ()>,
}

impl<L: Lifetime> Clone for ClassScope<'_, L> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<L: Lifetime> Copy for ClassScope<'_, L> {}

impl<L: Lifetime> fmt::Debug for ClassScope<'_, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = Cohort::<L>::life_name(self.life);
        write!(f, "ClassScope(lifetime class {} ({name}))", self.life)
    }
}

impl_allocator!([L: Lifetime] ClassScope<'_, L>, self => Lane {
    core: &self.cohort.core,
    life: self.life,
});

/// Ends a scope, on return or unwinding: releases its class and closes its depth.
struct Closing<'a, L: Lifetime> {
    cohort: &'a Cohort<L>,
    life: usize,
    depth: usize,
}

impl<L: Lifetime> Drop for Closing<'_, L> {
    fn drop(&mut self) {
        // SAFETY: the scope's class (see the module docs): its handles and everything built
        // on them are gone (they borrowed the closure's `'s`); only this thread allocated
        // in it, and other threads' blocks of the same index are left alone.
        // Its large allocations are told apart by the thread that made them.
        let _: Released = unsafe { self.cohort.release(self.life, false, true) };
        DEPTH.with(|d| d.set(self.depth));
    }
}

impl<L: Lifetime> Cohort<L> {
    /// Runs `f` with a [`ClassScope`], an `Allocator` handle to a lifetime class of the
    /// scope's own, then frees every allocation made through it at once (in time
    /// proportional to the class's blocks, as [`Cohort::release_class`]). The safe way to
    /// release memory on a shared allocator, a `static` above all.
    ///
    /// Collections built on the handle cannot outlive the scope (their type borrows it, and
    /// `f` must work for any lifetime of it), and the handle cannot leave the calling
    /// thread (it is neither `Send` nor `Sync`); no other call can allocate in the scope's
    /// class. So nothing can use what the release frees. Other threads may use the
    /// allocator meanwhile, scopes of their own included; scopes nest (each has its own
    /// class).
    ///
    /// Statistics show a scope's allocations as lifetime class `"scope N"`, N its nesting
    /// depth from 1.
    ///
    /// ```
    /// use cohort::allocator_api2::{boxed::Box, vec::Vec};
    /// cohort::lifetime_classes! { enum Life { Cache } }
    /// static A: cohort::Cohort<Life> = cohort::Cohort::new();
    ///
    /// let words = A.scope(|frame| {
    ///     let mut v: Vec<String, _> = Vec::new_in(frame);
    ///     v.push("a".repeat(3));
    ///     let b = Box::new_in(v.len(), frame);
    ///     *b + v[0].len()
    /// });
    /// assert_eq!(words, 4);
    /// ```
    ///
    /// # Soundness
    /// Why the release at the end frees nothing still in use, while other threads (and the
    /// same thread, through any other call) use the allocator:
    ///
    /// 1. **Nobody else can allocate in the class.** The scope's class is a hidden one
    ///    (beside the caller's classes, as std's `"global"` is): its index is `L::COUNT + 1 + depth`, where `depth` is the
    ///    calling thread's count of scopes open around this one. Every other call names its
    ///    class by a value of `L` (whose index is below `L::COUNT`), or is `GlobalAlloc` (class
    ///    `L::COUNT`): none reaches a hidden scope class. The [`ClassScope`] is the only way in.
    /// 2. **Only the scope's thread allocates or frees in it.** A `ClassScope` is neither
    ///    `Send` nor `Sync`, so neither is a collection built on it: every allocation and
    ///    free of the class while the scope runs happens on the calling thread, in blocks of
    ///    its own heap. Other threads' scopes at the same depth use the same index, but their
    ///    own blocks, which a release leaves alone (it frees the calling thread's blocks and
    ///    exited threads', see [`Cohort::release_class`]). Nested scopes on one thread have
    ///    different depths, so different classes.
    /// 3. **Nothing outlives the scope.** The closure is called for every lifetime `'s`
    ///    (`for<'s> FnOnce(ClassScope<'s, L>) -> R`), and `ClassScope<'s, L>` is invariant in
    ///    `'s`: no value whose type holds the handle (a `Vec<T, ClassScope<'s, L>>`, a `Box`,
    ///    a reference obtained through them) can be returned or stored outside the closure.
    ///    Raw pointers from `Allocator::allocate` are valid, by that trait's contract, only
    ///    while the allocator is: using them afterwards is the caller's `unsafe` breach.
    /// 4. **Then the release frees exactly the scope's allocations**: the calling thread's
    ///    blocks of the class (everything allocated in it since the scope began: the previous
    ///    scope at this depth on this thread released the rest), blocks exited threads
    ///    left in it (dead: a thread's scopes end before it exits), and the large
    ///    allocations (above 16 KiB) of the class that the calling thread made: the large
    ///    table records each one's thread. It runs when the closure returns or unwinds.
    ///
    ///
    /// A thread without a heap of its own (one that is exiting, or past the 16 383 heaps an
    /// instance registers) allocates from blocks shared under the pool's lock: its scopes'
    /// allocations there are not released (they stay allocated, unreachable): memory, not
    /// safety, is lost.
    ///
    /// # Panics
    /// When 4 scopes are already open on the calling thread (of any allocators): the
    /// allocator keeps a class for each of 4 nesting depths.
    pub fn scope<R>(&self, f: impl for<'s> FnOnce(ClassScope<'s, L>) -> R) -> R {
        let depth = DEPTH.with(Cell::get);
        assert!(
            depth < SCOPE_DEPTHS,
            "cohort: more than {SCOPE_DEPTHS} scopes open on one thread"
        );
        DEPTH.with(|d| d.set(depth + 1));
        let closing = Closing {
            cohort: self,
            life: scope_class::<L>(depth),
            depth,
        };
        let handle = ClassScope {
            cohort: self,
            life: closing.life,
            _scope: PhantomData,
        };
        let r = f(handle);
        drop(closing);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::DEPTH;
    use crate::Cohort;
    use allocator_api2::vec::Vec;
    use core::cell::Cell;

    #[test]
    fn a_scope_releases_its_class_and_closes_its_depth() {
        let a: Cohort = Cohort::new();
        let n = a.scope(|f| {
            assert_eq!(DEPTH.with(Cell::get), 1);
            let mut v = Vec::new_in(f);
            v.extend(0..1000u32);
            let inner = a.scope(|g| {
                assert_eq!(DEPTH.with(Cell::get), 2);
                let mut w = Vec::new_in(g);
                w.push(1u8);
                w.len()
            });
            v.len() + inner
        });
        assert_eq!(n, 1001);
        assert_eq!(DEPTH.with(Cell::get), 0);
        assert!(a.is_empty());
    }
}
