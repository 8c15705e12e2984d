#!/usr/bin/env bash
# Co-location demo: a fixed amount of online work, timed alone, next to CPU hogs with no isolation,
# and next to the same hogs started with `tidal run --qos offline`. Needs root; cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/.."
TIDAL=./target/release/tidal
[ -x "$TIDAL" ] || cargo build --release --quiet
export TIDAL_ROOT="tidal-demo-$$" TIDAL_STATE_DIR="${TMPDIR:-/tmp}/tidal-demo-$$"
HOGS=$(( $(nproc) * 2 ))
CPU=/sys/fs/cgroup/cpu
[ -d "$CPU" ] || CPU=/sys/fs/cgroup
PLAIN="$CPU/tidal-demo-plain-$$"
pids=()

cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -d "$PLAIN" ] && rmdir "$PLAIN" 2>/dev/null || true
  "$TIDAL" restore >/dev/null || true
  rm -rf "$TIDAL_STATE_DIR"
}
trap cleanup EXIT INT TERM

online() { # prints the wall time of a fixed CPU job (one worker per CPU) run at online level
  "$TIDAL" run --qos online --name demo-online -- sh -c \
    's=$(date +%s%N); for _ in $(seq '"$(nproc)"'); do (i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done) & done; wait;
     e=$(date +%s%N); echo $(( (e-s)/1000000 ))'
}
hogs() { # $1 = "tidal" or "plain"
  for _ in $(seq "$HOGS"); do
    if [ "$1" = tidal ]; then
      "$TIDAL" run --qos offline --name demo-hog -- sh -c 'while :; do :; done' &
    else
      sh -c "echo \$\$ > $PLAIN/cgroup.procs; while :; do :; done" &
    fi
    pids+=($!)
  done
  sleep 1
}
stop_hogs() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }

echo "tidal demo on $(nproc) CPUs: the same online job (ms of wall time), $HOGS CPU hogs beside it"
alone=$(online); echo "  online alone:                         ${alone} ms"
mkdir -p "$PLAIN"; hogs plain
plain=$(online); echo "  next to hogs, no isolation:           ${plain} ms"
stop_hogs
hogs tidal
tidal=$(online); echo "  next to hogs run with --qos offline:  ${tidal} ms"
stop_hogs
echo "slowdown vs alone: no isolation x$(awk "BEGIN{printf \"%.2f\", $plain/$alone}"), tidal x$(awk "BEGIN{printf \"%.2f\", $tidal/$alone}")"
