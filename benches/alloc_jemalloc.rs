//! Every workload of the `workloads` library with jemalloc as the global allocator.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Purges the dirty pages of every arena (4096 is `MALLCTL_ARENAS_ALL`).
fn purge() {
    let name = c"arena.4096.purge";
    // SAFETY: a NUL-terminated mallctl name; this command reads and writes no value.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    assert_eq!(rc, 0, "mallctl arena.4096.purge");
}

fn main() {
    workloads::main(workloads::Hooks {
        compact: purge,
        classes: None,
    });
}
