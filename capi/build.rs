//! Generates the C header from this crate's source with cbindgen (settings in
//! cbindgen.toml) into `$OUT_DIR/cohort.h`; `tests/header.rs` checks that the committed
//! `include/cohort.h` is the same text, so the two cannot drift. To refresh the committed
//! header after changing the C interface:
//! `COHORT_WRITE_HEADER=1 cargo build -p cohort-c` (writes `include/cohort.h` too).

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=COHORT_WRITE_HEADER");
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not read the C interface");
    bindings.write_to_file(out.join("cohort.h"));
    if std::env::var_os("COHORT_WRITE_HEADER").is_some() {
        bindings.write_to_file(dir.join("include/cohort.h"));
    }
}
