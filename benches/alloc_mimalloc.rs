//! Every workload of the `workloads` library with mimalloc as the global allocator.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    workloads::main(workloads::Hooks {
        // SAFETY: mi_collect only releases free memory; it is safe to call at any time.
        compact: || unsafe { libmimalloc_sys::mi_collect(true) },
        classes: None,
    });
}
