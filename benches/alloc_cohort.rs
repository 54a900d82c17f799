//! Every workload of the `workloads` library with cohort as the global allocator, plus cohort's own
//! lifetime-class API for the `classes` and `release` workloads.

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

/// Uses the same layouts as the other columns, which go through `GlobalAlloc`, so that the
/// lifetime classes are the only difference.
impl workloads::LifetimeApi for Classes {
    fn malloc(&self, size: usize, long: bool) -> *mut u8 {
        CLASSES.alloc(workloads::layout_for(size), life(long))
    }
    unsafe fn free(&self, ptr: *mut u8, size: usize, long: bool) {
        // SAFETY: the caller passes a live pointer from `malloc(size, long)`, i.e. from
        // `CLASSES.alloc(layout_for(size), life(long))`.
        unsafe { CLASSES.dealloc(ptr, workloads::layout_for(size), life(long)) }
    }
    fn compact(&self) {
        CLASSES.compact();
    }
    unsafe fn release_short(&self) -> bool {
        // SAFETY: forwarded contract: no `Request` allocation is used or freed afterwards and
        // no other thread allocates in `Request` meanwhile.
        unsafe { CLASSES.release_class(Life::Request) };
        true
    }
}

fn main() {
    workloads::main(workloads::Hooks {
        compact: || {
            GLOBAL.compact();
        },
        classes: Some(&Classes),
    });
}
