//! Scopes: a lifetime class released safely on a shared allocator, a `static` included.
//!
//! [`Cohort::scope`] runs a closure with a [`ClassScope`], an `Allocator` handle to a
//! lifetime class of the scope's own, then frees the whole class at once. Why that is sound
//! while other threads use the allocator is in [`Cohort::scope`]'s docs (`# Soundness`),
//! where rustdoc shows it.

use crate::api::Cohort;
use crate::fork;
use crate::handle::{impl_allocator, Lane};
use crate::lifetime::{scope_class, Lifetime, ScopeClaims, SCOPE_CLASSES};
use crate::os;
use crate::release::{Released, Whose};
use core::alloc::Layout;
use core::fmt;
use core::marker::PhantomData;
use core::ptr::{self, NonNull};

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
        let life = Cohort::<L>::reported(self.life);
        let name = Cohort::<L>::life_name(life);
        write!(f, "ClassScope(lifetime class {life} ({name}))")
    }
}

impl_allocator!([L: Lifetime] ClassScope<'_, L>, self => Lane {
    core: &self.cohort.core,
    life: self.life,
});

/// Ends a scope, on return or unwinding: releases its class, then gives the class back.
struct Closing<'a, L: Lifetime> {
    cohort: &'a Cohort<L>,
    /// The scope class's number (below [`SCOPE_CLASSES`]).
    claimed: usize,
    /// The fork generation the class was claimed in ([`fork::generation`]).
    born: u64,
}

impl<L: Lifetime> Drop for Closing<'_, L> {
    fn drop(&mut self) {
        // A fork child that ends a scope its parent opened on a shared instance: the claim
        // (in the region) is the parent's, whose scope is still open and whose objects may
        // lie in the class's pool-held blocks. The child neither releases nor gives the
        // class back; what it allocated in it is released by the class's next release
        // after the child leaves (its heap's blocks then go to the pool).
        if self.born != fork::generation() && !ptr::eq(self.cohort.scope_claims(), &self.cohort.scopes)
        {
            return;
        }
        // SAFETY: the class is this scope's alone since it claimed it (see `Cohort::scope`'s
        // soundness argument): every allocation in it was made through the scope's handle,
        // on this thread, and the handle and everything built on it are gone (they borrowed
        // the closure's `'s`).
        let _: Released = unsafe {
            self.cohort
                .release(scope_class::<L>(self.claimed), Whose::Claimed)
        };
        self.cohort.scope_claims().unclaim(self.claimed);
    }
}

/// The error of [`Cohort::try_scope`]: every scope class of the allocator is held by an
/// open scope (at most 8 are open at once on one allocator, over all threads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScopesInUse;

impl fmt::Display for ScopesInUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cohort: all {SCOPE_CLASSES} scope classes of this allocator are in use ({SCOPE_CLASSES} \
             scopes are open at once, over all threads)"
        )
    }
}

impl std::error::Error for ScopesInUse {}

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
    /// allocator meanwhile, scopes of their own included; scopes nest.
    ///
    /// An allocator has 8 scope classes, and each open scope holds one for itself alone:
    /// at most 8 scopes are open at once on one allocator, over all threads and nesting
    /// levels. [`Cohort::try_scope`] reports a ninth as an error instead of panicking.
    /// Statistics show a scope's allocations as lifetime class `"scope N"`, N from 1 to 8.
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
    /// 1. **The class is the scope's alone.** The scope claims one of the allocator's
    ///    hidden scope classes (beside the caller's classes, as std's `"global"` is) with an
    ///    atomic compare-and-swap on a bitmap, and gives it back only after its release: no
    ///    other scope, on any thread, holds it meanwhile. Every other call names its class by
    ///    a value of `L` (whose index is below `L::COUNT`), or is `GlobalAlloc` (class
    ///    `"global"`): none reaches a scope class. The [`ClassScope`] is the only way in.
    /// 2. **Only the scope's thread allocates or frees in it.** A `ClassScope` is neither
    ///    `Send` nor `Sync`, so neither is a collection built on it: every allocation and
    ///    free of the class while the scope runs happens on the calling thread.
    /// 3. **Nothing outlives the scope.** The closure is called for every lifetime `'s`
    ///    (`for<'s> FnOnce(ClassScope<'s, L>) -> R`), and `ClassScope<'s, L>` is invariant in
    ///    `'s`: no value whose type holds the handle (a `Vec<T, ClassScope<'s, L>>`, a `Box`,
    ///    a reference obtained through them) can be returned or stored outside the closure.
    ///    Raw pointers from `Allocator::allocate` are valid, by that trait's contract, only
    ///    while the allocator is: using them afterwards is the caller's `unsafe` breach.
    /// 4. **So every allocation of the class is the scope's, and all of it is freed**:
    ///    the previous holder released everything before giving the class back, so when the
    ///    closure returns or unwinds, the class holds exactly what the scope allocated,
    ///    wherever it lies: the calling thread's blocks, blocks shared under the pool's lock
    ///    by threads without a heap (a thread that is exiting), its large allocations. Blocks
    ///    other live threads' heaps own cannot hold any (those threads did not allocate in
    ///    the class since its last release), and are left alone regardless.
    ///
    /// # Panics
    /// When all 8 scope classes are held by open scopes (see [`Cohort::try_scope`]); and
    /// whatever `f` panics with, after the release.
    #[track_caller]
    pub fn scope<R>(&self, f: impl for<'s> FnOnce(ClassScope<'s, L>) -> R) -> R {
        match self.try_scope(f) {
            Ok(r) => r,
            Err(e) => panic!("{e}: Cohort::try_scope reports this as an error"),
        }
    }

    /// [`Cohort::scope`], or [`ScopesInUse`] (and `f` is not called) when all 8 scope
    /// classes of the allocator are held by open scopes.
    ///
    /// ```
    /// static A: cohort::Cohort = cohort::Cohort::new();
    ///
    /// let n = A.try_scope(|frame| {
    ///     let mut v = cohort::Vec::new_in(frame);
    ///     v.extend_from_slice(b"abc");
    ///     v.len()
    /// });
    /// assert_eq!(n, Ok(3));
    /// ```
    ///
    /// # Errors
    /// [`ScopesInUse`] when 8 scopes are open on this allocator (on any threads).
    pub fn try_scope<R>(
        &self,
        f: impl for<'s> FnOnce(ClassScope<'s, L>) -> R,
    ) -> Result<R, ScopesInUse> {
        let claimed = self.claim_scope().ok_or(ScopesInUse)?;
        let closing = Closing {
            cohort: self,
            claimed,
            born: fork::generation(),
        };
        let handle = ClassScope {
            cohort: self,
            life: scope_class::<L>(claimed),
            _scope: PhantomData,
        };
        let r = f(handle);
        drop(closing);
        Ok(r)
    }
}

impl<L: Lifetime> Cohort<L> {
    /// Where this allocator's scope claims live: in a shared instance, its region's (every
    /// process's scopes claim there, see [`ScopeClaims`]); else the instance's own.
    fn scope_claims(&self) -> &ScopeClaims {
        match self.core.pool_if_any() {
            Some(pool) if pool.is_shared() => &pool.scope_claims,
            _ => &self.scopes,
        }
    }

    /// Claims a scope class for this process (a shared instance) or the instance.
    fn claim_scope(&self) -> Option<usize> {
        let claims = self.scope_claims();
        if ptr::eq(claims, &self.scopes) {
            return claims.claim(ScopeClaims::PRIVATE, |_| true);
        }
        let pool = self.core.pool_if_any().expect("a shared instance's pool");
        pool.note_namespace();
        let me = os::shared_mem::process_word();
        claims.claim(me, |held| {
            !pool.pids_compare()
                || os::shared_mem::same_process(held, me)
                || os::shared_mem::is_alive(held)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::lifetime::SCOPE_CLASSES;
    use crate::Cohort;
    use allocator_api2::vec::Vec;

    #[test]
    fn a_scope_releases_its_class_and_gives_it_back() {
        let a: Cohort = Cohort::new();
        let n = a.scope(|f| {
            assert_eq!(a.scopes.claimed(), 1);
            let mut v = Vec::new_in(f);
            v.extend(0..1000u32);
            let inner = a.scope(|g| {
                assert_eq!(a.scopes.claimed(), 2);
                let mut w = Vec::new_in(g);
                w.push(1u8);
                w.len()
            });
            v.len() + inner
        });
        assert_eq!(n, 1001);
        assert_eq!(a.scopes.claimed(), 0);
        assert!(a.is_empty());
    }

    #[test]
    fn every_scope_class_claimed_is_an_error_then_a_panic() {
        let a: Cohort = Cohort::new();
        fn nest(a: &Cohort, left: usize) -> usize {
            if left == 0 {
                assert_eq!(a.try_scope(|_| ()), Err(super::ScopesInUse));
                let caught =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| a.scope(|_| ())));
                assert!(caught.is_err());
                return 0;
            }
            a.scope(|f| {
                let mut v = Vec::new_in(f);
                v.extend(0..100_000u32);
                1 + nest(a, left - 1) + v.len() - 100_000
            })
        }
        assert_eq!(nest(&a, SCOPE_CLASSES), SCOPE_CLASSES);
        assert_eq!(a.scopes.claimed(), 0);
        assert!(a.is_empty());
    }
}
