#!/usr/bin/env bash
# Runs the test binaries `cargo test ARGS` would run, JOBS of them at a time (default 2),
# each as cargo test runs it: from its package's directory, its tests in one process with
# the harness's own threads (tests of one binary still run beside each other), so a binary
# whose tests run one long test at a time no longer leaves the other CPU idle. Each
# binary's output is written in one piece when it ends, with its wall time; a failing
# binary fails the run (all others still run), and the failures are listed at the end with
# the slowest binaries.
#
#   bash .ci/test-binaries.sh [cargo test arguments]   # e.g. --profile release-tests --tests
#
# Arguments after `--` go to every test binary. COHORT_CI_TEST_JOBS: the binaries run at
# once (default 2). Needs jq (cargo's JSON artifact list): without it, runs `cargo test`
# with the same arguments (one binary at a time) and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v jq >/dev/null 2>&1; then
  echo "test-binaries: jq is missing: cargo test $*, one binary at a time"
  exec cargo test "$@"
fi

cargo_args=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  cargo_args+=("$1")
  shift
done
[ $# -gt 0 ] && shift
export TEST_BINARY_ARGS="$*"
jobs="${COHORT_CI_TEST_JOBS:-2}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The test executables with their package directories, in cargo's order.
cargo test "${cargo_args[@]}" --no-run --message-format=json-render-diagnostics |
  jq -r 'select(.reason == "compiler-artifact" and .executable != null and .profile.test)
         | "\(.manifest_path | sub("/Cargo.toml$"; ""))\t\(.executable)"' >"$work/list"
echo "test-binaries: $(wc -l <"$work/list") binaries, $jobs at a time"

# One binary: its output to a file, written out whole at its end.
run_one() {
  local dir=$1 exe=$2 work=$3 name start status
  name=$(basename "$exe")
  start=$EPOCHREALTIME
  # shellcheck disable=SC2086
  (cd "$dir" && "$exe" $TEST_BINARY_ARGS) >"$work/$name.out" 2>&1
  status=$?
  local secs
  secs=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  {
    printf '\n--- %s (%s): exit %d, %s s\n' "$name" "${exe#"$PWD"/}" "$status" "$secs"
    cat "$work/$name.out"
  } | flock "$work/list" cat
  printf '%8s %s\n' "$secs" "$name" >>"$work/times"
  [ "$status" = 0 ] || echo "$name (exit $status)" >>"$work/failed"
  rm -f "$work/$name.out"
}
export -f run_one

tr '\n' '\0' <"$work/list" |
  xargs -0 -P "$jobs" -I{} bash -c 'IFS=$'"'"'\t'"'"' read -r dir exe <<<"$1"; run_one "$dir" "$exe" "$2"' _ {} "$work"

echo
echo "test-binaries: the slowest binaries (wall seconds)"
# Not `sort | head`: under pipefail, sort killed by SIGPIPE when head has its ten lines
# would end the script here, before its verdict (seen once in 2 runs of 219 binaries).
sort -rn -o "$work/times" "$work/times"
head -10 "$work/times"
if [ -s "$work/failed" ]; then
  echo "test-binaries: FAILED: $(wc -l <"$work/failed") binaries:"
  cat "$work/failed"
  exit 1
fi
echo "test-binaries: all $(wc -l <"$work/times") binaries passed"
