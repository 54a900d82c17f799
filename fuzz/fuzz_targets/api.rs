//! The whole API, single-threaded, on a fresh allocator per input with the default
//! reservation: the malloc family, the `Layout` forms, `GlobalAlloc`, allocator handles
//! (direct calls, `Vec`, `Box`), explicit joins, `release_class`, `scope`, `compact`, huge
//! requests; a model of what is live checks every pattern and every count (see the crate
//! docs of `cohort_fuzz`).
#![no_main]

use cohort_fuzz::{run, Config};
use libfuzzer_sys::fuzz_target;

const CONFIG: Config = Config {
    may_fail: false,
    max_size: usize::MAX,
    budget: 64 << 20,
};

fuzz_target!(|data: &[u8]| run(data, &CONFIG, None));
