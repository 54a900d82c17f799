#!/usr/bin/env bash
# Memory placement options with what they need of the machine: explicit huge pages
# reserved for the run (tests/placement_memory.rs skips its MAP_HUGETLB case, saying why,
# where none are free). As root, raises /proc/sys/vm/nr_hugepages by HUGEPAGES (default 32:
# 64 MiB, enough for the test's region in a debug build) for the tests and puts it back
# after; otherwise runs the tests as they are. `cargo test` runs the same tests without the
# reservation.
#
#   bash .ci/placement.sh          # debug build (checked mode), then release-tests
#
# The optimised run uses the release-tests profile (the release profile's optimisation and
# assertions, without link-time optimisation): .ci/run has built its test binaries in the
# step before, where `--release` built the tests' dependencies and these three binaries
# again with thin LTO and one codegen unit for nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

HUGEPAGES="${HUGEPAGES:-32}"
knob=/proc/sys/vm/nr_hugepages
old=""
if [ "$(id -u)" = 0 ] && [ -w "$knob" ]; then
  old=$(cat "$knob")
  echo $((old + HUGEPAGES)) > "$knob" || true
  echo "nr_hugepages: $old -> $(cat "$knob")"
  trap 'echo "$old" > "$knob"; echo "nr_hugepages back to $(cat "$knob")"' EXIT
else
  echo "not root: huge pages as they are ($(cat "$knob" 2>/dev/null || echo '?') reserved)"
fi
grep -E 'HugePages_(Total|Free)' /proc/meminfo || true
for profile in "" "--profile release-tests"; do
  cargo test $profile --test placement_memory --test region_fixed --test region_named -- --nocapture --test-threads 1
done
