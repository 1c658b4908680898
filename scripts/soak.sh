#!/usr/bin/env bash
# Soak: a release `vigil run` (embedded defaults: spool, event store, full rule pack) under
# `vigil loadgen` at a fixed rate for a long time, sampling the server's RSS every 10 s.
# Reports RSS after warm-up (SOAK_WARMUP_SECS, default 10 min: at 80 % of capacity the
# correlation windows take about that long to fill their 256 MiB event budget, a bounded
# growth that is not a leak) and at the end, the growth between them, and every drop
# counter. Usage: scripts/soak.sh RATE SECONDS   (e.g. scripts/soak.sh 60000 1800)
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:?rate (records/s)}
secs=${2:-1800}
cargo build --release --locked -q
dir=$(mktemp -d)
# Waits for the server to finish its shutdown (it writes its windows then) before removing its data.
trap 'kill $pid 2>/dev/null && wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
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
dir = "$PWD/rules"
[api]
listen = "127.0.0.1:0"
token = "soak"
${VIGIL_BENCH_TOML:-}
TOML
VIGIL_LOG=warn target/release/vigil -c "$dir/vigil.toml" run > "$dir/ready" &
pid=$!
for _ in $(seq 100); do [ -s "$dir/ready" ] && break; sleep 0.1; done
tcp=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['bound']['syslog_tcp'])" "$dir/ready")
api=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['bound']['api'])" "$dir/ready")
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%FT%TZ)"
echo "soak: ${rate}/s for ${secs}s"
target/release/vigil loadgen --tcp "$tcp" --api "$api" --token soak --rate "$rate" \
  --duration-secs "$secs" > "$dir/loadgen.txt" 2>&1 &
lg=$!
start=$(date +%s)
: > "$dir/rss.txt"
while kill -0 $lg 2>/dev/null; do
  echo "$(( $(date +%s) - start )) $(ps -o rss= -p $pid | xargs)" >> "$dir/rss.txt"
  sleep 10
done
wait $lg || true
cat "$dir/loadgen.txt"
mkdir -p target && cp "$dir/rss.txt" target/soak-rss.txt  # seconds, RSS KiB: kept for plotting
python3 - "$dir/rss.txt" "${SOAK_WARMUP_SECS:-600}" <<'PY'
import sys
rows = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 2]
warm = [r for t, r in rows if t >= int(sys.argv[2])]
if not warm:
    warm = [r for _, r in rows]
first, last, peak = warm[0], warm[-1], max(warm)
print(f"rss_kib after warm-up {first}, at the end {last}, peak {peak}; "
      f"growth {100.0 * (last - first) / first:+.1f} % (end vs warm-up), "
      f"{100.0 * (peak - first) / first:+.1f} % (peak vs warm-up)")
PY
curl -fsS -H "Authorization: Bearer soak" "http://$api/metrics" \
  | grep -E '^vigil_(collector_dropped_total|store_events_dropped_total|spool_full_total|flow_kernel_drops_total|parse_events_total|offenses_created_total|offenses_updated_total|correlate_payload_bytes|correlate_state_(saved_bytes|saves_total|save_milliseconds)|offense_book_(hits|misses|evicted|invalidated))' || true
