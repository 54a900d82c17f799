#!/usr/bin/env bash
# The MSRV (`rust-version` in Cargo.toml) checked as far as a machine without that toolchain
# allows, and fully where rustup can install it:
#   1. clippy's `incompatible_msrv` lint (it reads rust-version): no standard-library item
#      stabilised after the MSRV is used, in any target of the workspace;
#   2. every package the workspace resolves to (the committed Cargo.lock, normal, dev and
#      build dependencies, every platform) declares a rust-version at most the MSRV, or none
#      (the workspace uses `resolver = "3"`, so `cargo update` picks such versions);
#   3. when rustup can install the MSRV toolchain, the library and its tests build with it
#      (`cargo +MSRV check --all-targets --locked`); when it cannot (no rustup, or its server
#      unreachable), the script says so and does not fail.
# Not covered without the toolchain: language features newer than the MSRV that the lint
# does not see (it checks library items only).
set -euo pipefail
cd "$(dirname "$0")/.."

msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
echo "MSRV (rust-version): $msrv"

echo "--- clippy: incompatible_msrv"
cargo clippy --workspace --all-targets --locked -- -D clippy::incompatible_msrv

echo "--- the resolved dependencies' rust-version"
command -v python3 >/dev/null || apt-get install -y python3
cargo metadata --format-version 1 --locked | python3 -c '
import json, sys
msrv = sys.argv[1]
key = lambda v: tuple(int(x) for x in v.split(".")[:3]) + (0,) * (3 - len(v.split(".")))
newer = ["%s %s needs Rust %s" % (p["name"], p["version"], p["rust_version"])
         for p in json.load(sys.stdin)["packages"]
         if p.get("rust_version") and key(p["rust_version"]) > key(msrv)]
for line in newer:
    print("  " + line)
if newer:
    sys.exit(f"{len(newer)} dependencies need a newer Rust than {msrv}: "
             "cargo update -p NAME (resolver 3 picks a compatible version), or raise rust-version")
print(f"  every resolved package declares rust-version <= {msrv} or none")
' "$msrv"

echo "--- build with the $msrv toolchain"
if command -v rustup >/dev/null && timeout 300 rustup toolchain install "$msrv" --profile minimal; then
  cargo "+$msrv" check -p cohort-alloc -p cohort-ratio -p test-support --all-targets --locked
else
  echo "  rustup could not install $msrv here: the two checks above are the MSRV check"
fi
