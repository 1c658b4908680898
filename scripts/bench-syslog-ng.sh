#!/usr/bin/env bash
# Collection side by side (issue 9): syslog-ng (the Debian package, installed if missing)
# receiving the load generator's TCP syslog stream (octet counting; the same mix of RFC 3164
# and 5424 lines) and writing each message parsed (time, host, program, pid, message) to a
# file, against Vigil on its defaults (receive, spool, parse, definitions, rules, offenses, the
# event store) fed the same stream. Flat out, alternated twice, each on a fresh process.
# Vigil runs with store.event_overflow = "wait", so that it keeps every record searchable in
# events.db as syslog-ng writes every line (its default, "shed", lets that copy give way under
# overload; VIGIL_BENCH_TOML="" measures that). The report says how many records it kept.
# syslog-ng runs with flow control, so it slows the sender instead of dropping.
# Usage: scripts/bench-syslog-ng.sh [SECONDS]   VIGIL_BIN: a vigil binary (default: build).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
bin=${VIGIL_BIN:-target/release/vigil}
# Like for like: Vigil keeps every record searchable, as syslog-ng writes every line (a
# VIGIL_BENCH_TOML set by the caller replaces this).
wait_toml=$'[store]\nevent_overflow = "wait"'
vigil_toml=${VIGIL_BENCH_TOML-$wait_toml}
[ -n "${VIGIL_BIN:-}" ] || cargo build --release --locked -q
if ! command -v syslog-ng > /dev/null; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends syslog-ng-core > /dev/null
fi
dir=$(mktemp -d)
sng=""
trap '[ -z "$sng" ] || kill $sng 2>/dev/null; rm -rf "$dir"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$dir/syslog-ng.conf" <<CONF
@version: 3.38
options { stats_freq(0); flush_lines(1000); log_fifo_size(100000); keep_hostname(yes); };
source s_net { syslog(ip(127.0.0.1) port($port) transport("tcp") log_iw_size(100000)); };
destination d_file { file("$dir/out.log" template("\${ISODATE} \${HOST} \${PROGRAM} \${PID} \${MSG}\n")); };
log { source(s_net); destination(d_file); flags(flow-control); };
CONF
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(syslog-ng --version | head -1); $(date -u +%F)"
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }
for round in 1 2; do
  rm -f "$dir/out.log"
  syslog-ng -F -f "$dir/syslog-ng.conf" -R "$dir/persist" -p "$dir/pid" -c "$dir/ctl" > "$dir/sng.log" 2>&1 &
  sng=$!
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2> /dev/null && break; sleep 0.1; done
  report=$("$bin" loadgen --tcp "127.0.0.1:$port" --token none --count-lines "$dir/out.log" \
    --duration-secs "$secs")
  eps=$(echo "$report" | awk -F'[:,]' '/"sustained_eps"/ {printf "%.0f", $2}')
  echo "round $round syslog-ng: sustained ${eps} msg/s, $(echo "$report" | awk -F'[:,]' '/"processed"/ {print $2 + 0}') lines, CPU $(cpu_of $sng) s"
  kill $sng; wait $sng 2> /dev/null || true
  sng=""
  # Like for like: Vigil keeps every record searchable, as syslog-ng writes every line.
  out=$(VIGIL_BIN=$bin VIGIL_BENCH_RATES=0 VIGIL_BENCH_TOML="$vigil_toml" \
    scripts/bench-e2e.sh "$secs" 2>&1)
  veps=$(echo "$out" | awk -F'[:,]' '/"sustained_eps"/ {printf "%.0f", $2}')
  vn=$(echo "$out" | awk -F'[:,]' '/"processed"/ {print $2 + 0}')
  vcpu=$(echo "$out" | awk '/^  [a-z]/ && NF == 2 {s += $2} END {printf "%.2f", s}')
  vkept=$(echo "$out" | awk '/^vigil_store_events_stored_total/ {print $2 + 0}')
  echo "round $round vigil:     sustained ${veps} EPS, ${vn} records, CPU ${vcpu} s (all threads), ${vkept:-0} kept searchable in events.db"
  echo "round $round vigil, searchable copy alone: $(awk -v k="${vkept:-0}" -v n="$vn" -v e="$veps" 'BEGIN {if (n > 0) printf "%.0f", e * k / n; else print "n/a"}') EPS (store.event_overflow sheds it under overload unless set to \"wait\")"
  echo "round $round ratio vigil / syslog-ng: $(awk -v a="$veps" -v b="$eps" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}')"
done
