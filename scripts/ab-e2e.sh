#!/usr/bin/env bash
# Side-by-side flat-out runs of two or more vigil builds, alternated (A B A B) so that a noisy
# machine affects each alike: each run is `scripts/bench-e2e.sh SECONDS` flat out on a fresh
# server (VIGIL_BENCH_SIGMA and VIGIL_BENCH_TOML pass through). Prints one line a run:
# sustained EPS, records, the server's CPU per record over all its threads (it moves less than
# the rate with the machine's hour), and the engine, normalize and event-writer threads' share.
# Usage: scripts/ab-e2e.sh SECONDS BINARY... (e.g. copies of target/release/vigil in /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:?seconds}
shift
per() { awk -v c="${1:-0}" -v n="$2" 'BEGIN {if (n > 0) printf "%.2f", c / n * 1e6; else print "n/a"}'; }
for _round in 1 2; do
  for b in "$@"; do
    out=$(VIGIL_BIN=$b VIGIL_BENCH_RATES=0 scripts/bench-e2e.sh "$secs" 2>&1)
    eps=$(echo "$out" | awk -F'[:,]' '/"sustained_eps"/ {printf "%.0f", $2}')
    n=$(echo "$out" | awk -F'[:,]' '/"processed"/ {print $2 + 0}')
    total=$(echo "$out" | sed -n '/server CPU seconds/,/server rss/p' \
      | awk 'NF == 2 && $2 ~ /^[0-9.]+$/ {s += $2} END {print s + 0}')
    eng=$(echo "$out" | awk '$1 == "vigil-engine" {print $2}')
    nor=$(echo "$out" | awk '$1 == "vigil-normalize" {print $2}')
    evs=$(echo "$out" | awk '$1 == "vigil-events" {print $2}')
    echo "$(basename "$b") eps=$eps records=$n cpu=$(per "$total" "$n") us/record" \
      "(engine $(per "$eng" "$n"), normalize $(per "$nor" "$n"), events $(per "$evs" "$n"))"
  done
done
