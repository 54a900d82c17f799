//! Lifetime classes: the caller's names for "allocations that die together".

/// A set of lifetime classes, normally an enum declared with
/// [`lifetime_classes!`](crate::lifetime_classes).
///
/// Allocations of different lifetime classes never share a block, so a class's blocks
/// empty together when its allocations die together, and structures built in one class lie
/// densely in memory.
///
/// # Safety
/// `index()` returns a value below `COUNT` for every value of the type, and `COUNT` is
/// between 1 and 256. The allocator indexes its tables with `index()` unchecked.
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

// SAFETY: one class, index 0.
unsafe impl Lifetime for () {
    const COUNT: usize = 1;
    #[inline(always)]
    fn index(self) -> usize {
        0
    }
}

/// Declares a fieldless enum and implements [`Lifetime`] for it: each variant is one
/// lifetime class, in declaration order.
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
