//! The source of instance ids: every allocator instance takes one when its pool is created.
//!
//! Invariants: ids are never reused and never 0 (`1 <= id < MAX_INSTANCES`), so that a heap
//! token `instance << 16 | heap id` names one heap of the whole process's history: a stale
//! token (of a dropped instance) matches no live heap.

use crate::sync::AtomicU64;

/// Source of instance ids: never reused, never 0.
pub(crate) static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

/// Instance ids are below this, so that a token (`instance << 16 | id`) fits the 48
/// bits `Header::owner_key` gives it, with bits 31 and 30 of its upper half left to the
/// tokens of regions (`crate::pool::SHARED_TAG`, `crate::pool::PRIVATE_REGION_TAG`): the
/// 2^30th instance a process creates cannot allocate (its calls return null), rather than
/// reuse an id.
pub(crate) const MAX_INSTANCES: u64 = 1 << 30;
