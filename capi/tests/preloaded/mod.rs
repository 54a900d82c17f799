//! What the tests that run this test binary again under `LD_PRELOAD=libcohort.so` share:
//! the library to preload and the process's first definition of a C function.

use std::ffi::{c_void, CString};

/// The library a build of this package made: `target/<profile>/libcohort.so` of this
/// test's profile, else the release one, else the debug one (`.ci/capi.sh` builds both
/// before it runs `cargo test -p cohort-c`: a test build of this package does not make its
/// `cdylib`).
pub fn library() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let target = profile.parent().expect("target");
    [
        profile.to_path_buf(),
        target.join("release"),
        target.join("debug"),
    ]
    .into_iter()
    .map(|dir| dir.join("libcohort.so"))
    .find(|lib| lib.exists())
    .expect("libcohort.so: build it first (cargo build -p cohort-c)")
}

/// The process's first definition of the function `name` (the preloaded library's).
pub fn symbol(name: &str) -> *mut c_void {
    let c = CString::new(name).unwrap();
    // SAFETY: a NUL-terminated name.
    let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) };
    assert!(!f.is_null(), "{name} not found");
    f
}
