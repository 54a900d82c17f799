#![doc = include_str!("../README.md")]
//!
//! # Design
//!
//! The vocabulary, the numbered invariants, the path of one request through the layers and
//! the reasons for the main decisions are in [`design`]. In short: a **request** (size,
//! align, lifetime class) maps to a **size class** (a slot stride); a **block** holds slots
//! of one size class and one **lifetime class**; a **head** is one (size class, lifetime
//! class) pair and the blocks that serve it; a **heap** is what one thread owns, where the
//! fast paths run; the **region** is where blocks come from; a **large allocation** has its
//! own mapping.
//!
//! # Layers
//!
//! Each module uses only modules of the rows above its own (`tests/layers.rs` reads the
//! sources and fails on any other `crate::` edge; this table is its input):
//!
//! | layer | modules | what |
//! |---|---|---|
//! | 0 | `class`, `sync`, `os`, `lifetime`, `offset`, `label` | the size-class table and block geometry, checked at compile time; atomics and the lock; every system call; the lifetime-class trait; typed offsets into a region; an allocator's label in its reports |
//! | 1 | `region`, `decay`, `misuse`, `instance_id`, `counters` | address space carved into blocks; what is kept of unused memory and when it is given back (bounds, the adaptive delay); what a bad free is and how it is reported; the source of instance ids; per-head counters of slow-path events |
//! | 2 | `live_bits`, `block`, `large` | checked mode's live bit per slot; the block header, its slot lists, remote frees; the large-allocation table and the cache of freed large mappings |
//! | 3 | `tiny`, `medium_block` | 1- and 2-byte slots in runs; a medium block's granules and runs (bitmaps and run table) |
//! | 4 | `heap_record`, `medium_cache` | what other threads may touch of a heap: token, state, `returned`, abandoned link, tiny heads; a heap's cache of freed medium runs and the medium blocks' start bytes it holds them by |
//! | 5 | `pool` | the blocks an instance's heaps share, empty blocks, the registry of heap records |
//! | 6 | `remote` | a heap's batch of remote frees, pushed per block as one chain |
//! | 7 | `heap`, `medium` | a heap: its heads, the alloc and free slow paths; medium allocations (above 16 KiB up to 1 MiB): runs of granules in medium blocks, under the pool lock or from a heap's medium cache without it |
//! | 8 | `heap_handover`, `promotion` | heaps changing hands: created, adopted, abandoned at exit, orphaned at teardown; a request served from a larger size class when its own has no slot left, and the checks of its free |
//! | 9 | `per_thread` | the calling thread's heaps and the fast paths' thread-local state |
//! | 10 | `fork`, `route` | the fork handlers and the instance list; which heap a call runs on (the thread's or a join's) |
//! | 11 | `instance` | the non-generic core of an instance: id, pool created on first use, region bounds, drop |
//! | 12 | `alloc`, `free` | the alloc paths (large allocations with them); the free paths and the checks a free makes |
//! | 13 | `resize` | realloc |
//! | 14 | `api` | [`Cohort`], its public methods, `GlobalAlloc`, block reports |
//! | 15 | `handle`, `join`, `stats`, `verify`, `lookup`, `shared` | allocator handles per lifetime class; explicit joins; statistics; the consistency check; frees and resizes without a size (found from the address); instances in memory shared between processes |
//! | 16 | `promote_api`, `release`, `persist`, `placement` | allocations that never promote (on an allocator, a join, a handle); releasing a lifetime class, `scope_exclusive`, `compact`; named shared-memory and file regions: their header, create / open / leave / destroy, root slots and offsets; regions made with [`RegionOptions`] (fixed capacity, prefaulted, locked, bound to NUMA nodes, in huge pages), the footprint, memory the caller provides |
//! | 17 | `scope` | a lifetime class released safely on a shared allocator: [`ClassScope`] |
//! | 18 | `design` | the design as documentation (no code): glossary, invariants, walks |
//!
//! The pool sits below the heap: it keeps heap records (`heap_record`), never heaps; and
//! `tiny` sits above `block`, whose header it uses.
//!
//! # Lifetime classes
//!
//! A lifetime class is a name for "allocations that die together" ([`lifetime_classes!`](crate::lifetime_classes)).
//! Blocks never mix classes, so:
//!
//! - a class's memory empties together: [`Cohort::scope`] (safe, on any allocator) or
//!   [`Cohort::release_class`] (unsafe) frees a whole class in time proportional to its blocks, and
//!   [`Cohort::compact`] gives the emptied memory back to the OS;
//! - structures built in one class are contiguous: a linked list or tree allocated in its own
//!   class walks through consecutive slots, not through memory shared with short-lived
//!   garbage;
//! - [`Cohort::handle`] gives an `allocator_api2` handle, so `Vec`, `Box` and hashbrown's
//!   `HashMap` allocate in a class.
//!
//! The safe way to release memory, on a `static` too, is a scope: [`Cohort::scope`] gives
//! a [`ClassScope`], the only handle to a lifetime class of the scope's own, and frees the
//! class when the closure returns. The borrow checker proves nothing built on the handle
//! outlives the scope or leaves its thread, and no other scope or call can allocate in that
//! class (the soundness argument is in [`Cohort::scope`]'s and `ClassScope`'s docs). An
//! allocator has 8 such classes: at most 8 scopes are open on it at once, over all threads
//! ([`Cohort::try_scope`] reports a ninth as an error, [`Cohort::scope`] panics).
//!
//! ```
//! use cohort::allocator_api2::vec::Vec;
//! cohort::lifetime_classes! { enum Life { Cache } }
//! static A: cohort::Cohort<Life> = cohort::Cohort::new();
//!
//! for frame_no in 0..3u32 {
//!     let drawn = A.scope(|frame| {
//!         let mut sprites = Vec::new_in(frame);
//!         sprites.extend((0..1000).map(|i| i * frame_no));
//!         sprites.len()
//!     }); // every allocation of the frame is freed here, at once
//!     assert_eq!(drawn, 1000);
//! }
//! ```
//!
//! With `Cohort` as the `#[global_allocator]`, std's own allocations (through
//! `GlobalAlloc`) live in a lifetime class of their own, `"global"` in statistics, which no
//! value of your enum names: releasing one of your classes never frees a `String` std made.
//!
//! The examples measure it (figures from one run on a shared 2-core machine; times are
//! noisy, RSS is not):
//!
//! - `cargo run --release --example tree`: a 2-million-node tree, each node its own
//!   allocation, built beside short-lived garbage. In its own class it walks at 8.9 ns per
//!   node against 32 ns for the same tree of `Box`es on glibc, takes 32.5 B per node of RSS
//!   against 49.5, and is freed in 4.6 ms by releasing the class against 91 ms node by node.
//! - `cargo run --release --example compiler`: parse, lower, optimise and emit, each phase's
//!   trees in their own class, released when the phase ends: RSS goes 143 → 216 → 105 →
//!   129 → 62 → 74 → 46 MiB across the phases and releases, where glibc stays at 300 MiB.
//! - `cargo run --release --example requests`: 20 000 requests, each in a per-request class
//!   released at its end, beside a slowly growing long-lived cache: RSS stays at 2.1 to
//!   2.4 MiB throughout.
//!
//! # Regions shared between processes and kept in files
//!
//! [`SharedCohort`] is an allocator whose memory is a named region: POSIX shared memory
//! that unrelated processes open by name, or a file that keeps its contents after every
//! process has exited. It dereferences to [`Cohort`], so everything above works on it;
//! allocations refer to each other by [`Off`] (an offset from the region's base, the same
//! in every process, wherever the region is mapped), and the region's header holds
//! [`ROOT_SLOTS`] root slots by which a process that opens it finds its data.
//! `cargo run --release --example persist_tree` builds a tree in a file in one process and
//! walks and frees it in later ones.
//!
//! # Safety and correctness
//!
//! - Every invariant of [`design`] has a test (`tests/invariants.rs`); the class table's
//!   geometry is checked by `const` assertions.
//! - `tests/model.rs` drives random operation sequences against a plain model (quickcheck),
//!   with a pattern in every live allocation.
//! - The lock-free structures (remote free list, block stacks, the spin lock) are
//!   model-checked with loom (models inside the crate, `RUSTFLAGS="--cfg loom"`).
//! - With debug assertions or the `checked` feature, every free is fully checked.
#![cfg_attr(feature = "nightly", feature(allocator_api))]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]
// Under loom only the layers the models need are built (see `not_under_loom!`); the rest
// of their items would be unused.
#![cfg_attr(loom, allow(dead_code, unused_imports))]

/// Declares modules that are not built under loom (only the layers the models need are:
/// from `class` and `sync` up to `heap_handover`, but not `misuse`, `instance_id` and
/// `live_bits`).
macro_rules! not_under_loom {
    ($($(#[$attr:meta])* $vis:vis mod $name:ident;)*) => {
        $($(#[$attr])* #[cfg(not(loom))] $vis mod $name;)*
    };
}

// In the order of the layer table.
pub mod class;
mod counters;
mod decay;
mod label;
mod large;
mod lifetime;
mod offset;
mod os;
mod region;
mod sync;
not_under_loom! {
    mod misuse;
    mod instance_id;
    mod live_bits;
}
mod block;
mod heap;
mod heap_handover;
mod heap_record;
mod medium_block;
mod medium_cache;
mod pool;
mod remote;
mod tiny;
not_under_loom! {
    mod medium;
    mod promotion;
    mod per_thread;
    mod fork;
    mod route;
    mod instance;
    mod alloc;
    mod free;
    mod resize;
    mod api;
    mod handle;
    mod join;
    mod stats;
    mod verify;
    mod lookup;
    mod shared;
    mod promote_api;
    mod placement;
    mod release;
    mod persist;
    mod scope;
}
pub mod design;

/// The `allocator-api2` crate (0.2) whose `Allocator` trait cohort's handles implement:
/// build collections with its [`Vec`] and [`Box`] (or hashbrown's `HashMap` with its `allocator-api2`
/// feature, which uses the same 0.2). Use this re-export rather than a dependency of your
/// own: `cargo add allocator-api2` may pick another major version, whose trait is a
/// different one ("multiple different versions of crate `allocator_api2`").
///
/// ```
/// use cohort::allocator_api2::{boxed::Box, vec::Vec};
/// static A: cohort::Cohort = cohort::Cohort::new();
///
/// let mut v = Vec::new_in(A.handle(()));
/// v.push(Box::new_in(7u8, A.handle(())));
/// assert_eq!(*v[0], 7);
/// ```
pub use allocator_api2;
/// `allocator_api2`'s `Vec` and `Box`, the collections that take a cohort handle.
pub use allocator_api2::{boxed::Box, vec::Vec};

#[cfg(not(loom))]
pub use api::{BlockReport, Cohort, DEFAULT_RESERVATION};
pub use decay::Retention;
#[cfg(not(loom))]
pub use handle::{ClassHandle, StaticClass, StaticHandle};
#[cfg(not(loom))]
pub use join::Join;
pub use label::{Label, LABEL_BYTES};
pub use lifetime::{Lifetime, MAX_LIFETIME_CLASSES};
#[cfg(not(loom))]
pub use lookup::Allocation;
#[cfg(not(loom))]
pub use misuse::{set_misuse_hook, Misuse, Problem};
pub use offset::Off;
#[cfg(not(loom))]
pub use persist::{
    CreateOptions, OpenOptions, Place, RegionError, Salvage, SharedCohort, ROOT_SLOTS,
};
#[cfg(not(loom))]
pub use placement::{max_expand, Footprint};
#[cfg(not(loom))]
pub use promote_api::TryHandle;
pub use region::options::{HugePages, PlacementError, RegionOptions};
#[cfg(not(loom))]
pub use release::{Compacted, Released};
#[cfg(not(loom))]
pub use scope::{ClassScope, ScopesInUse};
#[cfg(not(loom))]
pub use shared::Recoveries;
#[cfg(not(loom))]
pub use stats::{ClassStats, HeadEvents, HeadStats, Stats, Totals};
#[cfg(not(loom))]
pub use verify::{Verified, VerifyError};
