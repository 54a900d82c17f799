//! Misuse: what a free (or resize) found wrong with its pointer, size or lifetime class, and
//! how it is reported: a panic with its message from the direct API, an abort with the
//! message from `GlobalAlloc` (which must not unwind), or the [`Misuse`] itself as the error
//! of [`Cohort::try_free`](crate::Cohort::try_free). The message names the pointer, the size
//! and the lifetime class; the abort's is formatted without allocating.

use crate::class::CLASSES;
use crate::lifetime;
use crate::os;
use crate::label::{Label, LabelTag};
use crate::sync::{AtomicPtr, Ordering};
use core::fmt;
use core::ptr;

/// What a free found wrong: the error [`Cohort::try_free`](crate::Cohort::try_free) returns.
/// Its `Display` is the message the other frees panic (or abort) with (see
/// [`Cohort::free`](crate::Cohort::free)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misuse {
    /// The pointer given to free.
    pub ptr: usize,
    /// The size given to free.
    pub size: usize,
    /// The lifetime class index given to free.
    pub life: usize,
    /// What is wrong.
    pub problem: Problem,
    /// The lifetime classes' names by index, for the message: those of
    /// [`Lifetime::NAMES`](crate::Lifetime::NAMES) (`""` where a class has none), then
    /// `"global"` (std's allocations, through `GlobalAlloc`) and the scopes' classes.
    pub life_names: &'static [&'static str],
    /// The allocator's label ([`Cohort::set_label`](crate::Cohort::set_label)), empty when
    /// it has none.
    pub label: Label,
}

/// The kinds of [`Misuse`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The pointer is not in this allocator's memory.
    Foreign,
    /// The pointer's block holds another size class or lifetime class (or is empty).
    WrongBlock {
        /// The size class the size maps to.
        class: usize,
        /// Its stride.
        stride: usize,
        /// The block's size class (`None` for an empty or unreadable block).
        block_class: Option<usize>,
        /// The block's lifetime class.
        block_life: usize,
    },
    /// The pointer is inside a slot, not at its start.
    NotASlot {
        /// The block's stride.
        stride: usize,
    },
    /// The slot is already free.
    DoubleFree,
    /// The size says large, but no live large allocation starts at the pointer (a double
    /// free, a foreign pointer, or a size that is too large).
    NotLarge,
    /// Size 0, which frees only the pointer of a zero-size request (and null), given with a
    /// pointer into this allocator's blocks: an allocation freed (or resized) with size 0.
    /// (A large allocation given size 0 is [`Problem::LargeMismatch`].)
    ZeroSize {
        /// The size class of the block the pointer is in (`None` when the block holds no
        /// allocations).
        block_class: Option<usize>,
        /// That block's lifetime class.
        block_life: usize,
    },
    /// The size says medium (above the small classes, up to 1 MiB), but the pointer is in
    /// a block that holds no medium allocations.
    NotMedium {
        /// The block's size class (`None` when it holds no allocations).
        block_class: Option<usize>,
        /// The block's lifetime class.
        block_life: usize,
    },
    /// The pointer is in a block of medium allocations but starts none: inside one (an
    /// interior pointer) or in the block's header.
    NotARun,
    /// A medium allocation starts at the pointer, but of another size or lifetime class.
    WrongRun {
        /// Its usable bytes: sizes that round up to them free it.
        usable: usize,
        /// Its lifetime class.
        block_life: usize,
    },
    /// The slot holds a request of a smaller size class promoted into this block (its own
    /// class had no free slot when it was made): it is freed with that request's size.
    Promoted {
        /// The size class's stride the size maps to (the block's).
        stride: usize,
        /// The size class the slot's request was made with.
        source: usize,
        /// Its stride.
        source_stride: usize,
    },
    /// The size maps to the size class whose requests this block holds promoted, but this
    /// slot is not one of them (a wrong size, or already freed).
    NotPromoted {
        /// The size class the size maps to.
        class: usize,
        /// Its stride.
        stride: usize,
        /// The block's size class.
        block_class: usize,
    },
    /// The pointer lies inside a live large allocation, past its start.
    InsideLarge {
        /// The allocation's address.
        start: usize,
        /// Its mapped length.
        mapped: usize,
    },
    /// A large allocation starts at the pointer, but of another length or lifetime class.
    LargeMismatch {
        /// Its mapped length.
        mapped: usize,
        /// Its lifetime class.
        life: usize,
    },
    /// A small request that a full region served from a mapping of its own
    /// ([`RegionOptions::fallback`](crate::RegionOptions::fallback)) starts at the pointer,
    /// but of another size class or lifetime class (as [`Problem::WrongBlock`] in the
    /// region).
    FallbackMismatch {
        /// The request's size class.
        class: usize,
        /// Its stride.
        stride: usize,
        /// Its lifetime class.
        life: usize,
    },
}

impl Misuse {
    /// The report of a free of `ptr` with `size` in lifetime class `life`, with `life` and
    /// the problem's classes given as inside indices (see [`crate::lifetime`]) and reported
    /// as the caller numbers them. `life_names` has a name for every class, by reported
    /// index.
    pub(crate) fn new(
        ptr: usize,
        size: usize,
        life: usize,
        problem: Problem,
        life_names: &'static [&'static str],
        label: Label,
    ) -> Misuse {
        let reported = |l| lifetime::reported(l, life_names.len());
        let problem = match problem {
            Problem::WrongBlock {
                class,
                stride,
                block_class,
                block_life,
            } => Problem::WrongBlock {
                class,
                stride,
                block_class,
                block_life: reported(block_life),
            },
            Problem::ZeroSize {
                block_class,
                block_life,
            } => Problem::ZeroSize {
                block_class,
                block_life: reported(block_life),
            },
            Problem::LargeMismatch { mapped, life } => Problem::LargeMismatch {
                mapped,
                life: reported(life),
            },
            Problem::FallbackMismatch {
                class,
                stride,
                life,
            } => Problem::FallbackMismatch {
                class,
                stride,
                life: reported(life),
            },
            Problem::NotMedium {
                block_class,
                block_life,
            } => Problem::NotMedium {
                block_class,
                block_life: reported(block_life),
            },
            Problem::WrongRun { usable, block_life } => Problem::WrongRun {
                usable,
                block_life: reported(block_life),
            },
            Problem::Foreign
            | Problem::NotASlot { .. }
            | Problem::DoubleFree
            | Problem::NotLarge
            | Problem::InsideLarge { .. }
            | Problem::NotARun
            | Problem::Promoted { .. }
            | Problem::NotPromoted { .. } => problem,
        };
        Misuse {
            ptr,
            size,
            life: reported(life),
            problem,
            life_names,
            label,
        }
    }
}

/// "lifetime class 1", or "lifetime class 1 (Request)" when the classes have names.
struct LifeName<'a>(usize, &'a [&'static str]);

impl fmt::Display for LifeName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lifetime class {}", self.0)?;
        match self.1.get(self.0) {
            Some(name) if !name.is_empty() => write!(f, " ({name})"),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Misuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let life = |l| LifeName(l, self.life_names);
        write!(
            f,
            "cohort{}: bad free of {:#x} (size {}, {}): ",
            LabelTag(self.label),
            self.ptr,
            self.size,
            life(self.life)
        )?;
        match &self.problem {
            Problem::Foreign => write!(f, "the pointer is not from this allocator"),
            Problem::WrongBlock {
                class,
                stride,
                block_class: Some(bc),
                block_life,
            } if bc == class => write!(
                f,
                "wrong lifetime class: freed as {} but the block holds {} (the size \
                 matches: stride {stride} B)",
                life(self.life),
                life(*block_life)
            ),
            Problem::WrongBlock {
                class,
                stride,
                block_class: Some(bc),
                block_life,
            } => write!(
                f,
                "size {} is size class {class} (stride {stride} B) but the block holds size \
                 class {bc} (stride {} B) of {}",
                self.size,
                CLASSES[*bc].stride,
                life(*block_life)
            ),
            Problem::WrongBlock {
                class,
                stride,
                block_class: None,
                ..
            } => write!(
                f,
                "size {} is size class {class} (stride {stride} B) but the block is empty or \
                 not a block of that size (wrong size, or already freed)",
                self.size
            ),
            Problem::NotASlot { stride } => {
                write!(
                    f,
                    "the pointer is not the start of a slot (stride {stride} B)"
                )
            }
            Problem::DoubleFree => write!(f, "the slot is already free (double free)"),
            Problem::Promoted {
                stride,
                source,
                source_stride,
            } => write!(
                f,
                "size {} is the block's size class (stride {stride} B), but the slot holds a \
                 request of size class {source} (stride {source_stride} B) promoted into it: \
                 free it with that request's size",
                self.size
            ),
            Problem::NotPromoted {
                class,
                stride,
                block_class,
            } => write!(
                f,
                "size {} is size class {class} (stride {stride} B), whose requests the block \
                 of size class {block_class} (stride {} B) holds promoted, but this slot is \
                 not one of them (wrong size, or already freed)",
                self.size,
                CLASSES[*block_class].stride
            ),
            Problem::ZeroSize {
                block_class: Some(bc),
                block_life,
            } => write!(
                f,
                "size 0 frees only a zero-size request's pointer, but this one is in a block \
                 of size class {bc} (stride {} B) of {}",
                CLASSES[*bc].stride,
                life(*block_life)
            ),
            Problem::ZeroSize {
                block_class: None, ..
            } => write!(
                f,
                "size 0 frees only a zero-size request's pointer, but this one is in a block \
                 that holds no allocations (already freed?)"
            ),
            Problem::NotLarge => write!(
                f,
                "size {} is a large allocation, but none starts at the pointer (double free, \
                 foreign pointer, or wrong size)",
                self.size
            ),
            Problem::InsideLarge { start, mapped } => write!(
                f,
                "the pointer is inside the large allocation at {start:#x} ({mapped} B mapped), \
                 not at its start"
            ),
            Problem::NotMedium {
                block_class: Some(bc),
                block_life,
            } if *bc < CLASSES.len() => write!(
                f,
                "size {} is a medium size but the pointer is in a block of size class {bc} \
                 (stride {} B) of {}",
                self.size,
                CLASSES[*bc].stride,
                life(*block_life)
            ),
            Problem::NotMedium { .. } => write!(
                f,
                "size {} is a medium size but the pointer is in a block that holds no medium \
                 allocations (wrong size, or already freed)",
                self.size
            ),
            Problem::NotARun => write!(
                f,
                "the pointer is inside a medium allocation, not at its start"
            ),
            Problem::WrongRun { usable, block_life } if *block_life != self.life => write!(
                f,
                "wrong lifetime class: freed as {} but the medium allocation there is of {}",
                life(self.life),
                life(*block_life)
            ),
            Problem::WrongRun { usable, .. } => write!(
                f,
                "the medium allocation there has {usable} usable bytes, which size {} does \
                 not round to (wrong size)",
                self.size
            ),
            Problem::LargeMismatch { mapped, life: l } => write!(
                f,
                "the large allocation there maps {mapped} B in {}, which size {} and {} do \
                 not match",
                life(*l),
                self.size,
                life(self.life)
            ),
            Problem::FallbackMismatch {
                class,
                stride,
                life: l,
            } => write!(
                f,
                "a request of size class {class} (stride {stride} B) in {}, which the full \
                 region served from a mapping of its own, starts there: size {} and {} do not \
                 match",
                life(*l),
                self.size,
                life(self.life)
            ),
        }
    }
}

impl std::error::Error for Misuse {}

/// The misuse hook: null, or a `fn(&Misuse)` cast to a pointer ([`set_misuse_hook`]).
static HOOK: AtomicPtr<()> = AtomicPtr::new(ptr::null_mut());

/// Sets the function every misuse report calls first, with the [`Misuse`] as a value,
/// before the report's panic (direct API) or abort (`GlobalAlloc`, which must not unwind);
/// `None` removes it. Returns the hook it replaces.
///
/// A hook can log the misuse to the program's own log, or unwind with the value itself
/// (`std::panic::panic_any(m.clone())`) so that `catch_unwind` callers downcast the
/// payload to a [`Misuse`] (the default panic's payload is its message, a `String`). When
/// the report is an abort, a hook that unwinds is caught and the abort goes on. Frees that
/// return the misuse ([`Cohort::try_free`](crate::Cohort::try_free)) do not call the hook.
///
/// # Examples
///
/// ```
/// use std::panic::{catch_unwind, panic_any, AssertUnwindSafe};
/// fn raise(m: &cohort::Misuse) {
///     panic_any(m.clone());
/// }
/// let previous = cohort::set_misuse_hook(Some(raise));
/// let a = cohort::Cohort::<()>::new();
/// let p = a.malloc(24, ());
/// // SAFETY (of the call, not of the size): p is live; the wrong size is reported, and
/// // nothing is freed.
/// let caught = catch_unwind(AssertUnwindSafe(|| unsafe { a.free(p, 4000, ()) }));
/// let m = caught.unwrap_err().downcast::<cohort::Misuse>().unwrap();
/// assert_eq!((m.ptr, m.size), (p as usize, 4000));
/// cohort::set_misuse_hook(previous);
/// // SAFETY: p is still live, freed with its own size.
/// unsafe { a.free(p, 24, ()) };
/// ```
pub fn set_misuse_hook(hook: Option<fn(&Misuse)>) -> Option<fn(&Misuse)> {
    let new = hook.map_or(ptr::null_mut(), |f| f as *mut ());
    hook_of(HOOK.swap(new, Ordering::AcqRel))
}

/// The hook a value of [`HOOK`] names: `None` for null.
fn hook_of(word: *mut ()) -> Option<fn(&Misuse)> {
    // SAFETY: HOOK only ever holds null or a `fn(&Misuse)` (set_misuse_hook).
    (!word.is_null()).then(|| unsafe { core::mem::transmute::<*mut (), fn(&Misuse)>(word) })
}

/// Calls the hook, if one is set; a hook that unwinds unwinds from here unless `ABORT`.
fn call_hook<const ABORT: bool>(m: &Misuse) {
    let Some(hook) = hook_of(HOOK.load(Ordering::Acquire)) else {
        return;
    };
    if ABORT {
        // The abort must happen whatever the hook does: an unwind out of a `GlobalAlloc`
        // call would be undefined behaviour.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(m)));
    } else {
        hook(m);
    }
}

/// Reports misuse: the hook first ([`set_misuse_hook`]), then a panic from the direct API,
/// an abort with the message from `GlobalAlloc` (which must not unwind).
///
/// The panic's payload is the message (a `String`), as for any panic, so that panic hooks
/// print it and `#[should_panic(expected = ...)]` matches it; a caller that wants the
/// [`Misuse`] as a value frees with [`Cohort::try_free`](crate::Cohort::try_free), or sets
/// a hook that unwinds with it.
#[cold]
#[inline(never)]
#[track_caller]
pub(crate) fn report<const ABORT: bool>(m: Misuse) -> ! {
    call_hook::<ABORT>(&m);
    if ABORT {
        os::abort_with(format_args!("{m}\n"));
    }
    panic!("{m}");
}
