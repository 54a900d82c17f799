//! Every workload of the `workloads` library with the System allocator (glibc malloc) as the global allocator.

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

fn main() {
    workloads::main(workloads::Hooks {
        // SAFETY: malloc_trim only releases free memory; it is safe to call at any time.
        compact: || unsafe {
            libc::malloc_trim(0);
        },
        classes: None,
    });
}
