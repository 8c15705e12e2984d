#!/usr/bin/env bash
# The declared rust-version (workspace Cargo.toml) must be true:
#   1. no dependency declares a newer rust-version than ours;
#   2. clippy's incompatible_msrv lint (on with `-D warnings`) finds no std API newer than it;
#   3. where that toolchain is installed, the workspace builds with it.
# Rust toolchains other than the installed one cannot be fetched on these machines: there, 1 and 2
# stand in for 3, and the script says so.
set -euo pipefail
cd "$(dirname "$0")/.."
msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
[ -n "$msrv" ] || { echo "msrv-check: no rust-version in Cargo.toml" >&2; exit 1; }
cargo metadata --format-version 1 --locked | python3 -c '
import json, sys
msrv = tuple(int(x) for x in sys.argv[1].split("."))
def v(s):
    parts = [int(x) for x in s.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))
bad = [(p["name"], p["version"], p["rust_version"]) for p in json.load(sys.stdin)["packages"]
       if p.get("rust_version") and v(p["rust_version"]) > v(sys.argv[1])]
for name, ver, rv in bad:
    print(f"msrv-check: {name} {ver} needs Rust {rv}, newer than the declared {sys.argv[1]}")
sys.exit(1 if bad else 0)
' "$msrv"
echo "msrv-check: every dependency builds with Rust $msrv"
cargo clippy --workspace --all-targets --quiet -- -D warnings -D clippy::incompatible_msrv
echo "msrv-check: no std API newer than $msrv (clippy incompatible_msrv)"
if rustup toolchain list 2>/dev/null | grep -q "^$msrv"; then
  cargo "+$msrv" build --workspace --locked --quiet
  echo "msrv-check: built with Rust $msrv"
elif rustup toolchain install "$msrv" --profile minimal >/dev/null 2>&1; then
  cargo "+$msrv" build --workspace --locked --quiet
  echo "msrv-check: built with Rust $msrv"
else
  echo "msrv-check: Rust $msrv cannot be installed here (no network to its distribution server); checked statically above"
fi
