#!/usr/bin/env bash
# Scaled-out end-to-end load: a release `vigil run` with `bus.kind = "kafka"` and
# `store.kind = "clickhouse"` (role all: ingest, correlate, offense and store stages in one
# process) against the test services (`scripts/services.sh start`), fed by `vigil loadgen`
# (TCP syslog) flat out and at fixed rates. A record counts when its event is stored in
# ClickHouse (`--until-stored`). The broker is a Tansu of its own with in-memory storage
# (BROKER=sqlite uses the durable test broker instead, much slower per byte).
# Usage: scripts/bench-scaled.sh [SECONDS] [RATES...]
# VIGIL_BIN: a vigil binary to run instead of building this tree (to compare builds side by side).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
shift || true
rates=${*:-0 50000 20000}
scripts/services.sh start >/dev/null
bin=${VIGIL_BIN:-target/release/vigil}
[ -n "${VIGIL_BIN:-}" ] || cargo build --release --locked -q
dir=$(mktemp -d)
name="vigil_bench_$(date +%s)"
pid=""
bpid=""
trap 'kill $pid $bpid 2>/dev/null || true; rm -rf "$dir"' EXIT
brokers=${VIGIL_TEST_KAFKA:-127.0.0.1:19092}
broker=$(cat .services/tansu/pid 2>/dev/null || pgrep -x tansu | head -1)
if [ "${BROKER:-memory}" = memory ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  tansu=$(command -v tansu || echo "$HOME/.cargo/bin/tansu")
  (cd "$dir" && exec "$tansu" broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://tansu/ \
    > "$dir/broker.log" 2>&1 < /dev/null) &
  bpid=$!
  broker=$bpid
  brokers="127.0.0.1:$port"
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
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
dir = "$PWD/rules"
[api]
listen = "127.0.0.1:0"
token = "bench"
[bus]
kind = "kafka"
topic_prefix = "$name"
partitions = 4
[bus.kafka]
brokers = "$brokers"
[store]
kind = "clickhouse"
[store.clickhouse]
url = "${VIGIL_TEST_CLICKHOUSE_URL:-http://127.0.0.1:18123}"
database = "$name"
TOML
VIGIL_LOG=warn "$bin" -c "$dir/vigil.toml" run > "$dir/ready" &
pid=$!
for _ in $(seq 300); do [ -s "$dir/ready" ] && break; sleep 0.1; done
tcp=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['bound']['syslog_tcp'])" "$dir/ready")
api=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['bound']['api'])" "$dir/ready")
echo "broker: ${BROKER:-memory} storage at $brokers"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%F)"
# CPU seconds (user + system) a process has used so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0; }
chpid=$(cat .services/clickhouse/pid 2>/dev/null || pgrep -f clickhouse-server | head -1)
for rate in $rates; do
  echo "== rate ${rate} (0 = flat out), ${secs}s, counted when stored in ClickHouse"
  before="$(cpu $pid) $(cpu $broker) $(cpu $chpid)"
  "$bin" loadgen --tcp "$tcp" --api "$api" --token bench --rate "$rate" \
    --duration-secs "$secs" --drain-timeout-secs 600 --until-stored
  after="$(cpu $pid) $(cpu $broker) $(cpu $chpid)"
  python3 - "$before" "$after" <<'PY'
import sys
b = [float(x) for x in sys.argv[1].split()]
a = [float(x) for x in sys.argv[2].split()]
names = ["vigil", "broker", "clickhouse"]
print("cpu seconds during the run: " + ", ".join(f"{n} {y - x:.1f}" for n, x, y in zip(names, b, a)))
PY
  echo "server rss_kib=$(ps -o rss= -p $pid | xargs)"
done
