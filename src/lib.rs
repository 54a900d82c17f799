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
//! | pool | `pool`, `large` | blocks shared by an instance's heaps, empty blocks, heap registry; the large-allocation table |
//! | heap | `heap` | per-thread heaps, their slow paths, thread exit |
//! | api | `api`, `lifetime` | [`Cohort`], `GlobalAlloc`, the malloc family |
//!
//! (The pool sits below the heap: heaps take blocks from the pool, and the pool only keeps
//! pointers to heaps in its registry.) Above `api`: `handle` (allocator handles per lifetime
//! class), `join` (explicit joins), `release` (releasing a class, compact), `stats`,
//! `verify`.
//!
//! # Decisions that differ from DESIGN.md, and why
//!
//! - **Block sizes.** Every block is 2 MiB, whatever its class. With a 64-byte header no
//!   1 MiB block of 64-byte slots can reach the seed's 1.00006 (one slot is lost to the
//!   header: 1.000061), nor 48-byte slots (1.00011), nor 4-, 8- and 16-byte slots; at 2 MiB
//!   every class meets its row. One size for all classes (rather than the smallest size
//!   that meets each class's row) is what makes a free safe against a wrong size: any
//!   pointer into a block masks to that block's own header, so the header's key catches the
//!   wrong size, where a smaller mask would land in the middle of a larger block and read
//!   user data as a header. The header key is stored inverted, so memory that reads zero (a
//!   given-back or never-carved part of the region, which is reserved readable) is an empty
//!   block that no free matches.
//! - **Tiny slots.** 1- and 2-byte slots live in 2 MiB blocks too, cut into runs of 255 or
//!   65 535 slots with 8- or 16-bit links (ratios 1.004 and 1.00008 against the seed's 1.024
//!   and 1.00023), and are served under the pool's lock rather than the thread fast paths.
//! - **Heap tokens.** A block records its owner as `instance << 16 | heap id`, unique in the
//!   process, in one word with its key (`owner << 16 | class | life << 8`), so the free fast
//!   path checks ownership and the caller's size and lifetime class with one compare against
//!   one thread-local word. Instance ids are never reused; the 2^32nd instance a process
//!   creates cannot allocate (null), which keeps a token within the word's 48 bits.
//! - **Counting by role.** A block counts `used + bias`, where the bias comes from its role
//!   for its owner (current, listed, retired full) and is chosen so that the one local free
//!   that needs the slow path is the one that takes the count to zero: the free fast path's
//!   accounting is a decrement and a branch.
//! - **Thread-local class tables.** The fast paths read a per-thread copy of the class and
//!   mask tables, beside the current heap: in position-independent code a table in the
//!   binary costs an address computation per look-up; the thread pointer is loaded anyway.
//!
//! # Lifetime classes
//!
//! A lifetime class is a name for "allocations that die together" ([`lifetime_classes!`](crate::lifetime_classes)).
//! Blocks never mix classes, so:
//!
//! - a class's memory empties together: [`Cohort::release_class`] (or the safe
//!   [`Cohort::scope`]) frees a whole class in time proportional to its blocks, and
//!   [`Cohort::compact`] gives the emptied memory back to the OS;
//! - structures built in one class are contiguous: a linked list or tree allocated in its own
//!   class walks through consecutive slots, not through memory shared with short-lived
//!   garbage;
//! - [`Cohort::class`] gives an `allocator_api2` handle, so `Vec`, `Box` and hashbrown's
//!   `HashMap` allocate in a class.
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
pub mod design;

mod block;
mod tiny;

#[cfg(not(loom))]
mod large;
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
