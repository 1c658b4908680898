#!/usr/bin/env bash
# Flow collection end to end: a release `vigil run` (embedded defaults, flow listeners on
# loopback) fed NetFlow v5 by `vigil loadgen --netflow` (30 records a datagram, 16 exporters)
# flat out and at fixed rates of flow records per second. Reports records decoded and
# processed (events through context, rules and the flow store), kernel drops on Vigil's socket
# (as records), the server's RSS, and the flow store's counters (its writer runs behind the
# engine and drops, counted, when its queue is full), and the CPU seconds of the engine and
# the flow writer, the spool writer and the tokio workers (the collectors). Usage: scripts/bench-flows.sh [SECONDS] [RATES...]
# VIGIL_BIN: a vigil binary to run instead of building this tree (to compare two builds).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
shift || true
rates=${*:-0 200000 100000 50000}
bin=${VIGIL_BIN:-target/release/vigil}
[ -n "${VIGIL_BIN:-}" ] || cargo build --release --locked -q
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null && wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
cat > "$dir/vigil.toml" <<TOML
data_dir = "$dir/data"
[syslog]
udp_listen = ""
tcp_listen = ""
[flows]
netflow_listen = "127.0.0.1:0"
ipfix_listen = ""
sflow_listen = ""
[rules]
dir = "$PWD/rules"
[api]
listen = "127.0.0.1:0"
token = "bench"
TOML
VIGIL_LOG=warn "$bin" -c "$dir/vigil.toml" run > "$dir/ready" &
pid=$!
for _ in $(seq 100); do [ -s "$dir/ready" ] && break; sleep 0.1; done
nf=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['bound']['netflow'])" "$dir/ready")
api=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['bound']['api'])" "$dir/ready")
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); rmem_max $(cat /proc/sys/net/core/rmem_max); $(date -u +%F)"
for rate in $rates; do
  echo "== rate ${rate} flow records/s (0 = flat out), ${secs}s"
  "$bin" loadgen --netflow "$nf" --api "$api" --token bench --rate "$rate" \
    --duration-secs "$secs" --drain-timeout-secs 120
  echo "server rss_kib=$(ps -o rss= -p $pid | xargs)"
  for t in /proc/$pid/task/*; do echo "$(cat "$t/comm") $(cut -d' ' -f14,15 "$t/stat")"; done \
    | awk -v hz="$(getconf CLK_TCK)" '$1 ~ /^(vigil-(engine|normalize|flows|spool)|tokio-rt-worker)$/ {c[$1] += ($2 + $3) / hz}
        END {for (n in c) printf "server cpu_s %s %.1f (since start)\n", n, c[n]}' | sort
  # The flow store's writer runs behind the engine: what it dropped (queue full) so far.
  curl -fsS -H "Authorization: Bearer bench" "http://$api/metrics" \
    | grep -E '^vigil_store_flows_(dropped|stored|evicted)_total' || true
done
