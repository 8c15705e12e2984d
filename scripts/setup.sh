#!/usr/bin/env bash
# Installs what tidal needs to build and test on Debian/Ubuntu (run as root), then builds it.
set -euo pipefail
cd "$(dirname "$0")/.."

# clang and libelf-dev build the BPF run-queue latency program (without clang tidal builds
# without it and says so); zlib1g-dev is what libbpf links against.
pkgs=(build-essential pkg-config ca-certificates curl procps clang libelf-dev zlib1g-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: installing the Rust toolchain (rustup)"
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi

echo "setup: building tidal (release)"
cargo build --release --quiet
echo "setup: done: ./target/release/tidal"
