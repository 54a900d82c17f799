//! The committed header is the one cbindgen generates from the source (build.rs): refresh
//! it with `COHORT_WRITE_HEADER=1 cargo build -p cohort-c` when this fails.

#[test]
fn the_committed_header_is_the_generated_one() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/cohort.h"));
    let committed = include_str!("../include/cohort.h");
    assert!(
        generated == committed,
        "capi/include/cohort.h is stale: run COHORT_WRITE_HEADER=1 cargo build -p cohort-c"
    );
}
