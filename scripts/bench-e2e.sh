#!/usr/bin/env bash
# End-to-end load: starts a release `vigil run` on loopback with a fresh data folder and the
# shipped rules, then runs `vigil loadgen` (TCP syslog, octet counting) flat out and at fixed
# rates, printing each report and the server's RSS. Usage: scripts/bench-e2e.sh [SECONDS]
# VIGIL_BENCH_TOML: more config appended (e.g. $'[bus]\nspool = false'); VIGIL_BENCH_RULES:
# more lines in the [rules] table (e.g. "state_save_secs = 0"); VIGIL_BENCH_RATES:
# the rates to run (default "0 150000 100000 20000"; 0 = flat out); VIGIL_BIN: a vigil binary to
# run instead of building this tree (to compare two builds); VIGIL_BENCH_UDP=1: send over UDP;
# VIGIL_BENCH_METRICS_OUT: a file to keep the server's whole /metrics text in after each rate;
# VIGIL_BENCH_TIME: a command to run the load generator under (e.g. "/usr/bin/time -f %U", its CPU);
# VIGIL_BENCH_SIGMA=N: the shipped rules plus N SigmaHQ rule files from fixtures/sigma (Linux
# ones first, then the rest, in path order: the selection of `correlate/benches/sigmahq.rs`,
# so 997 gives its 1,000-rule set), each without its `logsource` block so it runs against
# every event (what that bench's `apply_unserved_logsources` does; the service would refuse
# rules for log sources no parser produces).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
bin=${VIGIL_BIN:-target/release/vigil}
[ -n "${VIGIL_BIN:-}" ] || cargo build --release --locked -q
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null && wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
rules="$PWD/rules"
if [ -n "${VIGIL_BENCH_SIGMA:-}" ]; then
  rules="$dir/rules"
  mkdir -p "$rules"
  cp rules/*.yml "$rules/"
  ln -s "$PWD/rules/tests" "$rules/tests"
  python3 - "$VIGIL_BENCH_SIGMA" "$rules" <<'PY'
import pathlib, sys
n, out = int(sys.argv[1]), pathlib.Path(sys.argv[2])
files = sorted(pathlib.Path("fixtures/sigma/rules").rglob("*.yml"))
linux = [f for f in files if "linux" in f.parts]
chosen = (linux + [f for f in files if "linux" not in f.parts])[:n]
for i, f in enumerate(chosen):
    kept, skipping = [], False
    for line in f.read_text().splitlines():
        if line.startswith("logsource:"):
            skipping = True
            continue
        if skipping and (line.startswith((" ", "\t")) or not line.strip()):
            continue
        skipping = False
        kept.append(line)
    (out / f"sigma_{i:04d}_{f.name}").write_text("\n".join(kept) + "\n")
print(f"rules: the pack and {len(chosen)} SigmaHQ files", file=sys.stderr)
PY
fi
cat > "$dir/vigil.toml" <<TOML
data_dir = "$dir/data"
[syslog]
udp_listen = "127.0.0.1:0"
tcp_listen = "127.0.0.1:0"
[flows]
netflow_listen = "127.0.0.1:0"
ipfix_listen = "127.0.0.1:0"
sflow_listen = "127.0.0.1:0"
[rules]
dir = "$rules"
${VIGIL_BENCH_RULES:-}
[api]
listen = "127.0.0.1:0"
token = "bench"
${VIGIL_BENCH_TOML:-}
TOML
VIGIL_LOG=warn "$bin" -c "$dir/vigil.toml" run > "$dir/ready" &
pid=$!
for _ in $(seq 100); do [ -s "$dir/ready" ] && break; sleep 0.1; done
tcp=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['bound']['syslog_tcp'])" "$dir/ready")
udp=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['bound']['syslog_udp'])" "$dir/ready")
# VIGIL_BENCH_UDP=1: the mix over UDP (one record a datagram) instead of TCP.
send=(--tcp "$tcp")
[ -z "${VIGIL_BENCH_UDP:-}" ] || send=(--udp "$udp")
api=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['bound']['api'])" "$dir/ready")
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%F)"
curl -fsS -H "Authorization: Bearer bench" "http://$api/metrics" | grep -E '^vigil_rules_(loaded|rejected_total)' || true
# CPU seconds (user+sys) of each thread of the server, summed by thread name.
threads() {
  for t in /proc/$pid/task/*; do
    echo "$(cat "$t/comm") $(cut -d' ' -f14,15 "$t/stat")"
  done | awk -v hz="$(getconf CLK_TCK)" '{cpu[$1] += ($2 + $3) / hz} END {for (n in cpu) printf "%s %.2f\n", n, cpu[n]}' | sort
}
for rate in ${VIGIL_BENCH_RATES:-0 150000 100000 20000}; do
  echo "== rate ${rate} (0 = flat out), ${secs}s"
  threads > "$dir/cpu.before"
  ${VIGIL_BENCH_TIME:-} "$bin" loadgen "${send[@]}" --api "$api" --token bench --rate "$rate" --duration-secs "$secs"
  threads > "$dir/cpu.after"
  echo "server CPU seconds by thread during this rate:"
  join -a2 "$dir/cpu.before" "$dir/cpu.after" | awk 'NF==3 {printf "  %-18s %7.2f\n", $1, $3 - $2} NF==2 {printf "  %-18s %7.2f\n", $1, $2}'
  echo "server rss_kib=$(ps -o rss= -p $pid | xargs)"
  curl -fsS -H "Authorization: Bearer bench" "http://$api/metrics" > "$dir/metrics"
  [ -z "${VIGIL_BENCH_METRICS_OUT:-}" ] || cp "$dir/metrics" "$VIGIL_BENCH_METRICS_OUT"
  grep -E '^vigil_(store_events_(stored|dropped)_total|spool_full_total|collector_dropped_total|collector_received_total|offense_book_(hits|misses|evicted|invalidated))' "$dir/metrics" || true
done
