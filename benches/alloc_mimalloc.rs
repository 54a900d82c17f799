//! The workloads of `common` with mimalloc as the global allocator.

#[path = "common/mod.rs"]
mod common;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    common::main(common::Hooks {
        // SAFETY: mi_collect only releases free memory; it is safe to call at any time.
        compact: || unsafe { libmimalloc_sys::mi_collect(true) },
        classes: None,
    });
}
