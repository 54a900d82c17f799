#!/usr/bin/env bash
# The fast-path budget, enforced in the build users get: a 16-byte malloc+free pair through
# cohort as a program's `#[global_allocator]`, in a release build without LTO (opt-level 3,
# one codegen unit), called from a crate other than the one declaring the allocator (as
# from any dependency or the standard library: each allocation a call to `__rust_alloc`
# and `__rust_dealloc`), net of the same loop on a do-nothing allocator. The measurement is
# the package tools/budget/ (see its src/lib.rs); callgrind counts instructions exactly.
#
#   bash .ci/budget.sh           # fails when the pair costs more than BUDGET + SLACK
#   COHORT_BUDGET_FEATURES=mimalloc bash .ci/budget.sh
#                                # the same count with mimalloc as the global allocator,
#                                # for comparison (by hand, not in CI: it fails the budget)
#
# BUDGET is the documented ceiling (benches/README.md, "The budget in a user's build"):
# the count the fast paths reach today, so that any regression fails; lower it with every
# change that saves instructions. TARGET is issue 10's goal for this build, printed, not
# enforced: it is not reached (see the README section for what the remaining instructions
# do). SLACK allows for code generation differences between compiler versions. All three
# may be overridden from the environment (COHORT_BUDGET, COHORT_BUDGET_SLACK,
# COHORT_BUDGET_TARGET), e.g. `COHORT_BUDGET=40 bash .ci/budget.sh` to enforce the goal.
#
# Also printed, not checked: the same loop inside the binary's own crate ("inline"), where
# the compiler may inline the allocator functions into the loop.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

BUDGET="${COHORT_BUDGET:-49}"
SLACK="${COHORT_BUDGET_SLACK:-2}"
TARGET="${COHORT_BUDGET_TARGET:-40}"
N=10000

if ! command -v valgrind >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "budget: installing valgrind"
    apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
  else
    echo "budget: valgrind is missing (and this is not a root shell with apt-get)"
    exit 1
  fi
fi

features="${COHORT_BUDGET_FEATURES:-}"
cargo build --release --quiet --manifest-path tools/budget/Cargo.toml ${features:+--features "$features"}
bin=tools/budget/target/release/cohort-budget

# Instructions callgrind counts inside function budget_measure_<mode> when it runs n pairs
# (after the binary's warm-up, which is outside it).
count() {
  local mode=$1 n=$2 out
  out=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null --collect-atstart=no \
    --toggle-collect="budget_measure_$mode" "$bin" "$mode" "$n" 2>&1) || {
    echo "$out"
    echo "budget: $bin $mode $n failed"
    exit 1
  }
  echo "$out" | sed -n 's/^==[0-9]*== Collected : \([0-9]*\)$/\1/p'
}

# Per pair, net of the function's entry and exit (n = 0) and of the loop (noop).
per_pair() {
  local mode=$1
  local m0 mn z0 zn
  m0=$(count "$mode" 0)
  mn=$(count "$mode" "$N")
  z0=$(count noop 0)
  zn=$(count noop "$N")
  awk -v m0="$m0" -v mn="$mn" -v z0="$z0" -v zn="$zn" -v n="$N" \
    'BEGIN { printf "%.2f", ((mn - m0) - (zn - z0)) / n }'
}

called=$(per_pair called)
inline=$(per_pair inline)
echo "budget: ${features:-cohort}: 16-byte malloc+free pair, no LTO, through __rust_alloc/__rust_dealloc: $called instructions (budget $BUDGET, slack $SLACK; target $TARGET)"
echo "budget: the same loop in the allocator's own crate (inlined; not checked): $inline instructions"
if awk -v c="$called" -v b="$BUDGET" -v s="$SLACK" 'BEGIN { exit !(c > b + s) }'; then
  echo "budget: FAILED: $called > $BUDGET + $SLACK"
  exit 1
fi
if awk -v c="$called" -v t="$TARGET" 'BEGIN { exit !(c > t) }'; then
  echo "budget: ok (within the budget; the target, $TARGET, is not reached yet)"
else
  echo "budget: ok"
fi
