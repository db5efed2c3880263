#!/usr/bin/env bash
# What a capture costs the host as production sees it: the `capture_cost_ns` the demo checkout's
# own snapshots report, at its own few requests a second (each hit inside a request span, with
# other work in between), through the real path: quickstart, session, `loupe capture`.
#
#   benches/demo_capture_cost.sh [LOUPE_BINARY...]
#
# Each binary given (default: target/release/loupe) gets a fresh quickstart in a temporary
# directory and 30 snapshots of checkout.apply_discount; the script prints the median and
# quartiles of their `capture_cost_ns`. Give two builds to compare them in one run (interleave
# by repeating them: `A B A B`); single numbers on a shared machine move by ±15 %.
#
# BUSY_CORES=1 keeps every CPU busy meanwhile with a spinning process at the lowest priority,
# as the other work of a loaded host keeps its cores: no core idles between two hits (an idle
# virtual CPU may lose its caches to the hypervisor's other guests, or to a deep sleep state),
# and the spinners themselves touch almost no memory.
set -euo pipefail
cd "$(dirname "$0")/.."

SNAPSHOTS=${SNAPSHOTS:-30}
binaries=("$@")
[ ${#binaries[@]} -gt 0 ] || binaries=(target/release/loupe)

quickstart_pid=
stop_quickstart() {
  if [ -n "$quickstart_pid" ]; then
    kill -INT "$quickstart_pid" 2>/dev/null || true
    wait "$quickstart_pid" 2>/dev/null || true
    quickstart_pid=
  fi
}
spinners=()
stop_all() {
  stop_quickstart
  if [ ${#spinners[@]} -gt 0 ]; then kill "${spinners[@]}" 2>/dev/null || true; fi
}
trap stop_all EXIT

if [ "${BUSY_CORES:-0}" = 1 ]; then
  for cpu in $(seq 0 $(($(nproc) - 1))); do
    taskset -c "$cpu" nice -n 19 bash -c 'while :; do :; done' &
    spinners+=($!)
  done
fi

for binary in "${binaries[@]}"; do
  dir=$(mktemp -d)
  "$binary" quickstart --dir "$dir" --keep-running >"$dir/quickstart.log" 2>&1 &
  quickstart_pid=$!
  ready=
  for _ in $(seq 1 120); do
    if grep -q '"config"' "$dir/quickstart.log" 2>/dev/null; then ready=1; break; fi
    sleep 1
  done
  if [ -z "$ready" ]; then
    echo "$binary: the quickstart did not come up within 120 s; its log: $dir/quickstart.log" >&2
    exit 1
  fi
  # Only the client commands read this quickstart's config: exported, it would reach the next
  # binary's quickstart too, which refuses a config file that no longer exists.
  config="$dir/config.toml"
  session=$(LOUPE_CONFIG="$config" "$binary" session open --service checkout --points checkout.apply_discount \
    --ttl 15m --reason "measure capture cost" --output jsonl |
    python3 -c 'import json, sys; print(json.loads(sys.stdin.readline())["id"])')
  LOUPE_CONFIG="$config" timeout 120 "$binary" capture checkout.apply_discount --session "$session" \
    --count "$SNAPSHOTS" --output jsonl >"$dir/snapshots.jsonl"
  stop_quickstart
  python3 - "$binary" "$dir/snapshots.jsonl" <<'PY'
import json, sys
binary, path = sys.argv[1], sys.argv[2]
costs = sorted(json.loads(line)["capture_cost_ns"] / 1000 for line in open(path) if line.strip())
n = len(costs)
if n == 0:
    sys.exit(f"{binary}: no snapshots arrived; see {path}")
print(f"{binary}: {n} snapshots, capture_cost_ns p50 {costs[n // 2]:.1f} µs "
      f"(p25 {costs[n // 4]:.1f}, p75 {costs[3 * n // 4]:.1f}, max {costs[-1]:.1f})")
PY
  rm -rf "$dir"
done
