#!/usr/bin/env bash
# The C ABI and the drop-in malloc (capi/): builds libcohort.so, libcohort.a and cohort.h
# (the header checked against a fresh cbindgen generation), compiles the C and C++ test
# programs with gcc and g++ and runs them linked with the library, linked statically, and
# under LD_PRELOAD (release, and the debug library with every free fully checked); runs the
# multi-threaded stress; then runs unmodified programs (python3, perl, sqlite3, git, gcc)
# with and without LD_PRELOAD=libcohort.so and requires identical output.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$root/target/capi
mkdir -p "$out"

step() { printf '\n--- %s\n' "$*"; }

step "build: cargo build --release -p cohort-c (libcohort.so, libcohort.a, header)"
cargo build --release -p cohort-c
cargo build -p cohort-c
lib=$root/target/release
dbg=$root/target/debug
ls -l "$lib/libcohort.so" "$lib/libcohort.a"

step "the committed header is cbindgen's (cargo test -p cohort-c)"
cargo test -p cohort-c

step "C and C++ test programs"
cflags=(-O1 -g -Wall -Wextra -Werror -Wno-alloc-size-larger-than -Wno-use-after-free -I"$root/capi/include")
gcc "${cflags[@]}" capi/c/test_malloc.c -L"$lib" -lcohort -Wl,-rpath,"$lib" -lpthread -o "$out/test_malloc"
gcc "${cflags[@]}" capi/c/test_malloc.c "$lib/libcohort.a" -lpthread -ldl -lm -o "$out/test_malloc_static"
g++ -std=c++17 "${cflags[@]}" -fsized-deallocation capi/c/test_cxx.cpp -L"$lib" -lcohort -Wl,-rpath,"$lib" -lpthread -o "$out/test_cxx"
gcc -O2 -g -Wall -Wextra -Werror capi/c/stress.c -lpthread -o "$out/stress"
"$out/test_malloc" 2>/dev/null
"$out/test_malloc_static" 2>/dev/null
"$out/test_cxx"
for l in "$lib" "$dbg"; do
  echo "LD_PRELOAD=$l/libcohort.so"
  LD_PRELOAD=$l/libcohort.so "$out/test_malloc" 2>/dev/null
  LD_PRELOAD=$l/libcohort.so "$out/test_cxx"
done

step "multi-threaded stress (cross-thread frees, every byte checked)"
LD_PRELOAD=$lib/libcohort.so "$out/stress" 8 40000
LD_PRELOAD=$dbg/libcohort.so "$out/stress" 4 4000

step "unmodified programs: identical output with LD_PRELOAD=libcohort.so"
if ! command -v sqlite3 >/dev/null; then
  apt-get install -y sqlite3 >/dev/null || { apt-get update >/dev/null && apt-get install -y sqlite3 >/dev/null; }
fi
# The preloaded library must really serve malloc: cohort's class of 100 bytes is 112.
LD_PRELOAD=$lib/libcohort.so python3 -c '
import ctypes
c = ctypes.CDLL(None)
c.malloc.restype = ctypes.c_void_p
c.malloc_usable_size.argtypes = [ctypes.c_void_p]
assert c.malloc_usable_size(c.malloc(100)) == 112, "malloc is not cohort'"'"'s"
assert "libcohort" in open("/proc/self/maps").read()
print("python3 allocates through cohort")'

sql() {
  echo "create table t(id integer primary key, name text, v real);"
  echo "begin;"
  for i in $(seq 1 5000); do echo "insert into t(name, v) values ('name$i-$((i * 7919 % 1000))', $i.5);"; done
  echo "commit;"
  echo "create index tv on t(name);"
  echo "select count(*), sum(v), min(name), max(name) from t where name like 'name1%';"
  echo "select name, v from t order by name desc limit 5;"
}
sql >"$out/workload.sql"
cat >"$out/workload.pl" <<'PERL'
my %h; my @a;
for my $r (1 .. 5) {
  $h{"k$_-$r"} = [ ($_) x ($_ % 13) ] for 1 .. 60000;
  push @a, "x" x ($_ % 300) for 1 .. 60000;
  my $n = 0; $n += @{ $h{$_} } for keys %h;
  my $len = 0; $len += length for @a;
  print "round $r: $n $len\n";
  delete $h{"k$_-$r"} for grep { $_ % 2 } 1 .. 60000;
  splice @a, 0, 30000;
}
print join(",", map { scalar(@{ $h{$_} }) } sort grep { /^k1[0-9]-/ } keys %h), "\n";
PERL
rm -f "$out/db0.sqlite" "$out/db1.sqlite"
programs=(
  "python3|python3 $root/capi/c/workload.py"
  "perl|perl $out/workload.pl"
  "sqlite3|sqlite3 $out/db.sqlite < $out/workload.sql"
  "git|git -C $root log --stat -n 40 --format=%H%n%an%n%s && git -C $root status --short --untracked-files=no"
  "gcc|gcc -O2 -S -o - $root/capi/c/stress.c"
)
for entry in "${programs[@]}"; do
  name=${entry%%|*}
  cmd=${entry#*|}
  rm -f "$out/db.sqlite"
  bash -c "$cmd" >"$out/$name.plain" 2>&1
  rm -f "$out/db.sqlite"
  LD_PRELOAD=$lib/libcohort.so bash -c "$cmd" >"$out/$name.cohort" 2>&1
  if cmp -s "$out/$name.plain" "$out/$name.cohort"; then
    echo "$name: identical output ($(wc -l <"$out/$name.plain") lines)"
  else
    echo "$name: OUTPUT DIFFERS under LD_PRELOAD"
    diff "$out/$name.plain" "$out/$name.cohort" | head -20
    exit 1
  fi
done
echo "capi: all passed"
