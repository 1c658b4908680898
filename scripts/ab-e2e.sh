#!/usr/bin/env bash
# Side-by-side flat-out runs of two or more vigil builds, alternated (A B A B) so that a noisy
# machine affects each alike: each run is `scripts/bench-e2e.sh SECONDS` flat out on a fresh
# server. Prints one line a run: sustained EPS, records, the engine thread's CPU (total and
# per record) and the event writer's CPU.
# Usage: scripts/ab-e2e.sh SECONDS BINARY... (e.g. copies of target/release/vigil in /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:?seconds}
shift
for _round in 1 2; do
  for b in "$@"; do
    out=$(VIGIL_BIN=$b VIGIL_BENCH_RATES=0 scripts/bench-e2e.sh "$secs" 2>&1)
    eps=$(echo "$out" | awk -F'[:,]' '/"sustained_eps"/ {printf "%.0f", $2}')
    n=$(echo "$out" | awk -F'[:,]' '/"processed"/ {print $2 + 0}')
    eng=$(echo "$out" | awk '$1 == "vigil-engine" {print $2}')
    evs=$(echo "$out" | awk '$1 == "vigil-events" {print $2}')
    per=$(awk -v c="$eng" -v n="$n" 'BEGIN {if (n > 0) printf "%.2f", c / n * 1e6; else print "n/a"}')
    echo "$(basename "$b") eps=$eps records=$n engine=${eng}s (${per} us/record) events=${evs}s"
  done
done
