//! The workloads of `common` with the System allocator (glibc malloc) as the global allocator.

#[path = "common/mod.rs"]
mod common;

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

fn main() {
    common::main(common::Hooks {
        // SAFETY: malloc_trim only releases free memory; it is safe to call at any time.
        compact: || unsafe {
            libc::malloc_trim(0);
        },
        classes: None,
    });
}
