//! Out of memory: the whole API on a fresh `with_reservation` allocator of 4 to 16 MiB (the
//! first input byte picks it, 4 MiB half the time), with mostly small requests so that the
//! reservation runs out. A null return must leave every live object intact (the model
//! checks every pattern after each release, compact and check, and each object before it
//! is freed or resized), a failed resize must keep the old allocation, and a small request
//! may only fail while something small is live (empty blocks are reclaimed before null is
//! returned: issue 9 item 10).
#![no_main]

use cohort_fuzz::{run, Config};
use libfuzzer_sys::fuzz_target;

const CONFIG: Config = Config {
    may_fail: true,
    max_size: 64 << 10,
    budget: 256 << 20,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mib, rest)) = data.split_first() else {
        return;
    };
    // Half the inputs on the smallest reservation (4 MiB: a few blocks), the others on 5
    // to 16 MiB.
    let mib = if mib < 128 { 4 } else { 5 + mib as usize % 12 };
    run(rest, &CONFIG, Some(mib << 20));
});
