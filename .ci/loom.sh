#!/usr/bin/env bash
# The loom models of the lock-free structures, inside the crate (`#[cfg(all(loom, test))]`
# modules of src/block.rs and src/sync.rs): remote free list, FULL retirement and
# relisting, the blocks' returned stacks, a block's hand-over at thread exit, and the spin
# lock. Under `--cfg loom` the library builds only its sync, class and block layers, on
# loom's atomics (src/sync.rs); its own target dir keeps the other builds' caches intact.
# About a minute of models at 5 preemptions once built (the first build compiles every
# dev-dependency again, a few minutes on 2 cores).
#
# CARGO_TARGET_DIR_LOOM: the target dir (default target/loom).
# LOOM_MAX_PREEMPTIONS: the preemption bound (default 5; every model also passes with 10,
# in about a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg loom ${RUSTFLAGS:-}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_LOOM:-target/loom}"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-5}"
# A failing model prints the schedule that broke it; LOOM_LOG=1 LOOM_LOCATION=1 for more.
cargo test --release -p cohort-alloc --lib -- --test-threads 2
