//! Lifetime classes: the caller's names for "allocations that die together", and the
//! classes every allocator keeps beside them.
//!
//! An allocator with lifetime classes `L` has `N = L::COUNT + HIDDEN` of them, numbered two
//! ways:
//!
//! - **inside** (block keys, heads, the pool's lists): `GLOBAL = 0` is what `GlobalAlloc`
//!   allocates in (std's collections when the allocator is the `#[global_allocator]`);
//!   `index_of(l) = l.index() + 1` for the caller's classes;
//!   `scope_class(n) = L::COUNT + 1 + n` for the [`SCOPE_CLASSES`] scope classes (each
//!   open [`Cohort::scope`](crate::Cohort::scope) claims one for itself alone). Global is
//!   0 so that its blocks' keys are their size classes alone: the global allocator's free
//!   compares the key with no lifetime term.
//! - **in reports** (statistics, block reports, misuse reports, [`crate::Allocation`]): the
//!   caller's class `l` is `l.index()`, global is `L::COUNT`, scope class `n` is
//!   `L::COUNT + 1 + n`, so that a report's index of one of the caller's classes is its
//!   `index()`: `reported(index_of(l)) = l.index()`, `reported(GLOBAL) = L::COUNT`,
//!   `reported(i) = i` for scope classes ([`reported`]).
//!
//! No value of `L` has a hidden class's index, so no call that takes an `L` (a release
//! above all) reaches them.

use core::sync::atomic::{AtomicU64, Ordering};

/// A set of lifetime classes, normally an enum declared with
/// [`lifetime_classes!`](crate::lifetime_classes).
///
/// Allocations of different lifetime classes never share a block, so a class's blocks
/// empty together when its allocations die together, and structures built in one class lie
/// densely in memory.
///
/// # Safety
/// `index()` returns a value below `COUNT` for every value of the type, and `COUNT` is
/// between 1 and [`MAX_LIFETIME_CLASSES`]. The allocator indexes its tables with `index()`
/// unchecked.
pub unsafe trait Lifetime: Copy + Send + Sync + 'static {
    /// How many classes there are.
    const COUNT: usize;
    /// This class's index, below `COUNT`.
    fn index(self) -> usize;
    /// The classes' names by index, for misuse reports ("lifetime class 1 (Request)"); empty
    /// (the default) when the classes have none, and reports give indices only.
    /// [`lifetime_classes!`](crate::lifetime_classes) gives the variants' names.
    const NAMES: &'static [&'static str] = &[];
}

/// Hidden classes for scopes: each open [`Cohort::scope`](crate::Cohort::scope) of an
/// allocator claims one of them for itself alone (so at most this many scopes are open on
/// one allocator at once, over all threads).
pub(crate) const SCOPE_CLASSES: usize = 8;

/// Lifetime classes every allocator has beside its caller's: std's, then the scopes'.
pub(crate) const HIDDEN: usize = 1 + SCOPE_CLASSES;

/// The most lifetime classes a [`Lifetime`] type may have: a block header holds a class's
/// index in 8 bits, and every allocator keeps 9 classes of its own beside the caller's
/// (std's allocations, and 8 for scopes).
pub const MAX_LIFETIME_CLASSES: usize = 256 - HIDDEN;

/// The hidden classes' names, in reported index order from `L::COUNT`.
const HIDDEN_NAMES: [&str; HIDDEN] = [
    "global", "scope 1", "scope 2", "scope 3", "scope 4", "scope 5", "scope 6", "scope 7",
    "scope 8",
];

/// The inside index of the class `GlobalAlloc` allocates in (see the module docs).
pub(crate) const GLOBAL: usize = 0;

/// The inside index of the caller's class `life`.
#[inline(always)]
pub(crate) fn index_of<L: Lifetime>(life: L) -> usize {
    life.index() + 1
}

/// The inside index of scope class `n` (below [`SCOPE_CLASSES`]).
pub(crate) const fn scope_class<L: Lifetime>(n: usize) -> usize {
    L::COUNT + 1 + n
}

/// The index reports give inside index `inside` of an allocator with `life_count` classes
/// (see the module docs).
pub(crate) const fn reported(inside: usize, life_count: usize) -> usize {
    let callers = life_count - HIDDEN;
    if inside == GLOBAL {
        callers
    } else if inside <= callers {
        inside - 1
    } else {
        inside
    }
}

/// Which of an allocator's [`SCOPE_CLASSES`] scope classes are claimed, and by whom: entry
/// `n` holds scope class `n`'s claimer while an open scope holds it, 0 while it is free. A
/// claim is exclusive: taken by one compare and swap, cleared by its owner after the
/// class's release.
///
/// Claimers: in a region shared between processes the claims live in the region and the
/// claimer is the claiming process's word (pid and start time), so that two processes
/// never hold one class; a class whose claimer died may be claimed again (its allocations
/// were the dead scope's, which could not outlive it: the new scope's release frees them
/// with its own). In a private instance every claimer is [`ScopeClaims::PRIVATE`].
pub(crate) struct ScopeClaims([AtomicU64; SCOPE_CLASSES]);

impl ScopeClaims {
    /// The claimer of every claim of a private instance.
    pub(crate) const PRIVATE: u64 = 1;

    pub(crate) const fn new() -> ScopeClaims {
        ScopeClaims([const { AtomicU64::new(0) }; SCOPE_CLASSES])
    }

    /// Claims a scope class for `claimer` (not 0): a free one, else one whose claimer
    /// `alive` says has died (`alive` says so of no claim of `claimer`'s own). Its number,
    /// or `None` when every class is held by a live claimer.
    pub(crate) fn claim(&self, claimer: u64, alive: impl Fn(u64) -> bool) -> Option<usize> {
        debug_assert_ne!(claimer, 0);
        // Acquire: the previous owner's release of the class happened before.
        let take = |n: usize, from: u64| {
            self.0[n]
                .compare_exchange(from, claimer, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        };
        if let Some(n) = (0..SCOPE_CLASSES).find(|&n| take(n, 0)) {
            return Some(n);
        }
        (0..SCOPE_CLASSES).find(|&n| {
            // Acquire: what the claimer stored before its claim (see `alive`'s caller).
            let held = self.0[n].load(Ordering::Acquire);
            held != 0 && !alive(held) && take(n, held)
        })
    }

    /// Gives back scope class `n`, claimed by the caller, once it is released.
    pub(crate) fn unclaim(&self, n: usize) {
        let before = self.0[n].swap(0, Ordering::Release);
        debug_assert!(before != 0, "scope class {n} was not claimed");
    }

    /// How many are claimed now.
    #[cfg(test)]
    pub(crate) fn claimed(&self) -> usize {
        self.0
            .iter()
            .filter(|c| c.load(Ordering::Relaxed) != 0)
            .count()
    }
}

/// Every class's name by reported index (see the module docs) for lifetime classes `L`:
/// `L::NAMES` (`""` where it has none), then the hidden classes' names; `""` past them.
pub(crate) const fn all_names<L: Lifetime>() -> [&'static str; 256] {
    let mut names = [""; 256];
    let mut i = 0;
    while i < L::NAMES.len() && i < L::COUNT {
        names[i] = L::NAMES[i];
        i += 1;
    }
    let mut h = 0;
    while h < HIDDEN && L::COUNT + h < 256 {
        names[L::COUNT + h] = HIDDEN_NAMES[h];
        h += 1;
    }
    names
}

// SAFETY: one class, index 0.
unsafe impl Lifetime for () {
    const COUNT: usize = 1;
    #[inline(always)]
    fn index(self) -> usize {
        0
    }
}

/// Declares a fieldless enum and implements [`Lifetime`] for it: each variant is one
/// lifetime class, in declaration order (its index), named by the variant in statistics and
/// misuse reports.
///
/// The enum derives `Clone, Copy, Debug, PartialEq, Eq, Hash` and is `#[repr(u8)]`: do not
/// derive those again (a second `#[derive(Debug)]` is a conflicting implementation);
/// other attributes and derives (`PartialOrd`, `serde`'s...) pass through. Variants take
/// no explicit discriminants: a class's index is its position (a `compile_error!` says so).
/// At most [`MAX_LIFETIME_CLASSES`] variants.
///
/// ```compile_fail
/// cohort::lifetime_classes! { enum Life { Frame = 1, Long } } // no discriminants
/// ```
///
/// ```
/// cohort::lifetime_classes! {
///     /// How long an allocation lives.
///     pub enum Life { Frame, Request, Session }
/// }
/// use cohort::Lifetime;
/// assert_eq!(Life::COUNT, 3);
/// assert_eq!(Life::Session.index(), 2);
/// assert_eq!(Life::NAMES[2], "Session");
/// ```
#[macro_export]
macro_rules! lifetime_classes {
    ($(#[$meta:meta])* $vis:vis enum $name:ident {
        $($(#[$vmeta:meta])* $variant:ident $(= $value:expr)?),+ $(,)?
    }) => {
        $crate::lifetime_classes!(@check [$($($value)?)*] $(#[$meta])* $vis enum $name {
            $($(#[$vmeta])* $variant),+
        });
    };
    (@check [$($value:expr)+] $($rest:tt)*) => {
        compile_error!(
            "lifetime_classes!: variants take no explicit discriminant (`A = 1`): a lifetime \
             class's index is its position in the enum"
        );
    };
    (@check [] $(#[$meta:meta])* $vis:vis enum $name:ident {
        $($(#[$vmeta:meta])* $variant:ident),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        $vis enum $name {
            $($(#[$vmeta])* $variant),+
        }

        // SAFETY: a fieldless enum's discriminants run from 0 to the variant count - 1, and
        // repr(u8) caps the count at 256.
        unsafe impl $crate::Lifetime for $name {
            const COUNT: usize = [$($name::$variant),+].len();
            const NAMES: &'static [&'static str] = &[$(stringify!($variant)),+];
            #[inline(always)]
            fn index(self) -> usize {
                self as usize
            }
        }
    };
}
