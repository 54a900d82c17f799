#!/usr/bin/env bash
# The C benchmarks of capi/bench/bench.c under LD_PRELOAD of each allocator, in one run:
# glibc (nothing preloaded), cohort (libcohort.so), jemalloc (Debian's libjemalloc2),
# mimalloc (libmimalloc2.0) and tcmalloc (libtcmalloc-minimal4); then the instructions of
# one 16-byte malloc/free pair under callgrind (cohort's unsized free, its C23 free_sized,
# and the others' free). Prints markdown tables (capi/README.md keeps a run's).
# Usage: capi/bench/run.sh [repetitions, default 3: the best is kept]
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
reps=${1:-3}
out=$root/target/capi
mkdir -p "$out"
libdir=/usr/lib/x86_64-linux-gnu
if [ ! -e $libdir/libjemalloc.so.2 ] || [ ! -e $libdir/libmimalloc.so.2 ] || [ ! -e $libdir/libtcmalloc_minimal.so.4 ]; then
  apt-get install -y libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4 >/dev/null ||
    { apt-get update >/dev/null && apt-get install -y libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4 >/dev/null; }
fi
cargo build --release -p cohort-c >&2
gcc -O2 -g -Wall -Wextra -Werror capi/bench/bench.c -lpthread -o "$out/bench"

names=(glibc cohort jemalloc mimalloc tcmalloc)
libs=("" "$root/target/release/libcohort.so" $libdir/libjemalloc.so.2 $libdir/libmimalloc.so.2 $libdir/libtcmalloc_minimal.so.4)
# With a nightly compiler, cohort also built with initial-exec thread-locals (a direct
# %fs-relative access instead of a call to __tls_get_addr per access): "cohort-ie".
if cargo +nightly --version >/dev/null 2>&1; then
  RUSTFLAGS="-Z tls-model=initial-exec" cargo +nightly build --release -p cohort-c --target-dir target/ie >&2
  names+=(cohort-ie)
  libs+=("$root/target/ie/release/libcohort.so")
fi
# workload, threads, operations per thread
runs=("larson 4 1000000" "xmalloc 4 1000000" "churn 4 1000000" "churn 1 2000000" "large 2 1000")

echo "| workload | threads | $(IFS='|'; echo "${names[*]}" | sed 's/|/ | /g') |"
echo "|---|---|$(printf -- '---|%.0s' "${names[@]}")"
for r in "${runs[@]}"; do
  set -- $r
  row="| $1 | $2 |"
  for i in "${!names[@]}"; do
    best=0
    rss=0
    for _ in $(seq "$reps"); do
      read -r _ _ _ mops mib < <(LD_PRELOAD=${libs[$i]} "$out/bench" $r)
      if awk "BEGIN{exit !($mops > $best)}"; then best=$mops; rss=$mib; fi
    done
    row="$row $best Mop/s, ${rss} MiB |"
  done
  echo "$row"
done

echo
echo "Instructions per 16-byte malloc/free pair (callgrind; (Ir of 2M pairs - Ir of 1M) / 1M):"
echo
echo "| allocator | free | instructions |"
echo "|---|---|---|"
ir() { # total instructions of: bench pair16 1 N [sized] under LD_PRELOAD=$1
  local lib=$1
  shift
  LD_PRELOAD=$lib valgrind --tool=callgrind --callgrind-out-file=/dev/null "$out/bench" pair16 1 "$@" 2>&1 >/dev/null |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
per_pair() {
  local a b
  a=$(ir "$1" 1000000 ${2:-})
  b=$(ir "$1" 2000000 ${2:-})
  echo $(((b - a) / 1000000))
}
echo "| cohort | free_sized(p, 16) (C23, sized) | $(per_pair "${libs[1]}" sized) |"
echo "| cohort | free(p) (size from the address) | $(per_pair "${libs[1]}") |"
if [ "${#names[@]}" -gt 5 ]; then
  echo "| cohort-ie | free_sized(p, 16) (C23, sized) | $(per_pair "${libs[5]}" sized) |"
  echo "| cohort-ie | free(p) (size from the address) | $(per_pair "${libs[5]}") |"
fi
for i in 0 2 3 4; do
  echo "| ${names[$i]} | free(p) | $(per_pair "${libs[$i]}") |"
done
