//! The workloads of `common` with jemalloc as the global allocator.

#[path = "common/mod.rs"]
mod common;

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
    common::main(common::Hooks {
        compact: purge,
        classes: None,
    });
}
