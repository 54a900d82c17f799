#!/usr/bin/env bash
# cohort's named shared memory beside Boost.Interprocess managed_shared_memory: the same
# workloads (cohort.rs, boost_shm.cpp), each run COHORT_BENCH_RUNS times (default 3) per
# allocator; the table gives the medians and writes them to $COHORT_BENCH_OUT/shm.md
# (default bench-results/shm.md).
#
#   bash benches/shm/run.sh            # from the repository root
#   COHORT_BENCH_SCALE=0.1 bash benches/shm/run.sh   # a quick run
#
# Needs g++ and Boost's headers (Debian's libboost-dev, header-only for this): installed
# with apt-get when missing (as root), as CI does.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${COHORT_BENCH_RUNS:-3}"
scale="${COHORT_BENCH_SCALE:-1}"
out="${COHORT_BENCH_OUT:-bench-results}"
ops=$(awk -v s="$scale" 'BEGIN { printf "%d", 2000000 * s }')

if [ ! -f /usr/include/boost/interprocess/managed_shared_memory.hpp ]; then
  echo "shm: installing libboost-dev"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libboost-dev g++
fi
mkdir -p target/shm "$out"
g++ -O2 -std=c++17 -o target/shm/boost_shm benches/shm/boost_shm.cpp -lrt -pthread
cargo bench -p cohort-benches --bench shm_cohort --no-run 2>/dev/null
cohort_bin=$(cargo bench -p cohort-benches --bench shm_cohort --no-run --message-format=json 2>/dev/null |
  grep -o '"executable":"[^"]*shm_cohort[^"]*"' | tail -1 | cut -d'"' -f4)
boost_bin=target/shm/boost_shm

# median FILE: the median of the numbers in FILE, one a line.
median() { sort -g "$1" | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for run in $(seq 1 "$runs"); do
  for alloc in cohort boost; do
    bin=$cohort_bin
    [ "$alloc" = boost ] && bin=$boost_bin
    for w in "churn1 $ops" "churn2 $ops" "overhead" "prodcons $((ops / 2))"; do
      # shellcheck disable=SC2086
      "$bin" $w | while IFS=$'\t' read -r metric value; do
        echo "$value" >>"$tmp/$alloc.$metric"
      done
    done
  done
  echo "shm: run $run of $runs done"
done

{
  echo "| metric | cohort | Boost.Interprocess | Boost / cohort |"
  echo "|---|---|---|---|"
  for f in "$tmp"/cohort.*; do
    metric=${f#"$tmp"/cohort.}
    c=$(median "$f")
    b=$(median "$tmp/boost.$metric")
    ratio=$(awk -v c="$c" -v b="$b" 'BEGIN { if (c > 0) printf "%.1f", b / c; else print "-" }')
    echo "| $metric | $c | $b | $ratio |"
  done
  echo
  echo "Medians of $runs runs; churn: $ops free+allocate pairs of 16 B to 1 KiB (thread CPU ns per"
  echo "pair, each process); prodcons: $((ops / 2)) objects of 64 B (wall ns per object);"
  echo "overhead: shared-memory bytes per object beyond its size (100 000 objects)."
  echo "$(uname -m), $(nproc) CPUs, $(git describe --always --dirty 2>/dev/null || echo unknown)."
} | tee "$out/shm.md"
