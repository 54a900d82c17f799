//! Every workload of the `workloads` library with snmalloc as the global allocator.

#[global_allocator]
static GLOBAL: snmalloc_rs::SnMalloc = snmalloc_rs::SnMalloc;

fn main() {
    workloads::main(workloads::Hooks {
        // snmalloc gives freed memory back by itself; it has no call to ask for it.
        compact: || {},
        classes: None,
    });
}
