//! The workloads of `common` with cohort as the global allocator, plus cohort's own
//! lifetime-class API for the `classes` workload.

#[path = "common/mod.rs"]
mod common;

use cohort::Cohort;

#[global_allocator]
static GLOBAL: Cohort = Cohort::new();

cohort::lifetime_classes! {
    /// The two lifetime classes of the `classes` workload.
    enum Life { Request, Long }
}

/// A second cohort instance, with two lifetime classes.
static CLASSES: Cohort<Life> = Cohort::new();

struct Classes;

fn life(long: bool) -> Life {
    if long {
        Life::Long
    } else {
        Life::Request
    }
}

impl common::LifetimeApi for Classes {
    fn malloc(&self, size: usize, long: bool) -> *mut u8 {
        CLASSES.malloc(size, life(long))
    }
    unsafe fn free(&self, ptr: *mut u8, size: usize, long: bool) {
        // SAFETY: the caller passes a live pointer from `malloc(size, long)`, i.e. from
        // `CLASSES.malloc(size, life(long))`.
        unsafe { CLASSES.free(ptr, size, life(long)) }
    }
    fn compact(&self) {
        // cohort has no compaction yet (issue 5): the RSS after compaction is the RSS after
        // the frees.
    }
}

fn main() {
    common::main(common::Hooks {
        compact: || {},
        classes: Some(&Classes),
    });
}
