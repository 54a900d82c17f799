#![doc = include_str!("../README.md")]
//!
//! # Design
//!
//! The vocabulary is DESIGN.md's: a **request** (size, align, lifetime class) maps to a
//! **size class** (a slot stride); a **block** holds slots of one size class and one
//! **lifetime class**; a **head** is the blocks of one (size class, lifetime class) pair; a
//! **heap** is what one thread owns, where the fast paths run; the **region** is where blocks
//! come from; a **large allocation** has its own mapping.
//!
//! # Layers
//!
//! Each module uses only the modules above it in this list:
//!
//! | layer | module | what |
//! |---|---|---|
//! | os / region | `sync`, `os`, `region` | atomics and the lock; system calls; address space carved into blocks |
//! | class | `class` | the size-class table and block geometry, checked at compile time |
//! | block | `block`, `tiny` | the header, slot lists, remote frees |
//! | pool | `pool` | blocks shared by an instance's heaps, empty blocks, heap registry |
//! | heap | `heap` | per-thread heaps, their slow paths, thread exit |
//! | api | `api`, `lifetime` | [`Cohort`], `GlobalAlloc`, the malloc family |
//!
//! (The pool sits below the heap: heaps take blocks from the pool, and the pool only keeps
//! pointers to heaps in its registry.)
//!
//! # Safety and correctness
//!
//! - Every invariant of DESIGN.md has a test (`tests/invariants.rs`); the class table's
//!   geometry is checked by `const` assertions.
//! - `tests/model.rs` drives random operation sequences against a plain model (quickcheck),
//!   with a pattern in every live allocation.
//! - The lock-free structures (remote free list, block stacks, the spin lock) are
//!   model-checked with loom (`tests/loom.rs`, `RUSTFLAGS="--cfg loom"`).
//! - With debug assertions or the `checked` feature, every free is fully checked.
#![cfg_attr(feature = "nightly", feature(allocator_api))]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]
// Under loom only the layers the models need are built (sync, class, block); the rest of
// their items would be unused.
#![cfg_attr(loom, allow(dead_code, unused_imports))]

mod sync;

#[cfg(not(loom))]
mod os;
#[cfg(not(loom))]
mod region;

pub mod class;

mod block;
mod tiny;

#[cfg(not(loom))]
mod pool;

#[cfg(not(loom))]
mod heap;

#[cfg(not(loom))]
mod api;
#[cfg(not(loom))]
mod handle;
#[cfg(not(loom))]
mod join;
mod lifetime;
#[cfg(not(loom))]
mod release;
#[cfg(not(loom))]
mod stats;
#[cfg(not(loom))]
mod verify;

/// Test-only access to the lock-free structures for the loom models (`tests/loom.rs`).
#[cfg(loom)]
#[doc(hidden)]
pub mod loom_api;

#[cfg(not(loom))]
pub use api::{BlockReport, Cohort, Misuse, Problem, DEFAULT_RESERVATION};
#[cfg(not(loom))]
pub use handle::ClassHandle;
#[cfg(not(loom))]
pub use join::Join;
pub use lifetime::Lifetime;
#[cfg(not(loom))]
pub use release::{Compacted, Released};
#[cfg(not(loom))]
pub use stats::{HeadStats, Stats, Totals};
#[cfg(not(loom))]
pub use verify::{Verified, VerifyError};
