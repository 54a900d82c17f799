#!/usr/bin/env bash
# The loom models, inside the crate (`#[cfg(all(loom, test))]` modules): the spin lock
# (src/sync.rs); the remote free list, FULL retirement and relisting, the blocks' returned
# stacks (src/block/loom.rs); take_block against the give-back of an emptied block
# (src/pool/loom.rs); a thread's exit, a heap's adoption and the pool's reclaim against
# remote frees (src/heap_handover/loom.rs); a heap's medium cache taking a held run back
# against another thread's free and a reaper's flush, and its guard against a claimer's flush
# (src/medium_cache/loom.rs); a claim of a live heap's returned blocks against its drain and
# its local free (src/heap_handover/loom_claim.rs). Under `--cfg loom` the library builds its
# layers up to heap_handover on loom's atomics (src/sync.rs): the pool, its region and the
# heaps are the real ones, their tables of atomics built in place, the registry small. Its
# own target dir keeps the other builds' caches intact. About a minute of models at 5
# preemptions (emptying_free_races_reclaim at 2) once built (the first build compiles every
# dev-dependency again, a few minutes on 2 cores).
#
# CARGO_TARGET_DIR_LOOM: the target dir (default target/loom).
# LOOM_MAX_PREEMPTIONS: the preemption bound of every model (default: each model's own).
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg loom ${RUSTFLAGS:-}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_LOOM:-target/loom}"
# A failing model prints the schedule that broke it; LOOM_LOG=1 LOOM_LOCATION=1 for more.
cargo test --release -p cohort-alloc --lib -- --test-threads 2
