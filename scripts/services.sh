#!/usr/bin/env bash
# The services the scaled-out tests use, on loopback, with their own data under .services/:
# ClickHouse (Debian's clickhouse-server) and a Kafka-protocol broker (Tansu). Production runs
# Apache Kafka / Redpanda and a current ClickHouse; these are the test stand-ins
# (see ARCHITECTURE.md).
#
#   scripts/services.sh install   install what is missing (apt, cargo install), skip the rest
#   scripts/services.sh start     start both, wait until they answer, print their addresses
#   scripts/services.sh stop      stop both
#   scripts/services.sh status    say whether each answers
#
# Addresses (export them to point the tests elsewhere):
#   VIGIL_TEST_CLICKHOUSE_URL  default http://127.0.0.1:18123
#   VIGIL_TEST_KAFKA           default 127.0.0.1:19092
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${VIGIL_SERVICES_DIR:-$PWD/.services}
CH_HTTP=${VIGIL_CH_HTTP_PORT:-18123}
CH_TCP=${VIGIL_CH_TCP_PORT:-19000}
CH_INTER=${VIGIL_CH_INTERSERVER_PORT:-19009}
KAFKA_PORT=${VIGIL_KAFKA_PORT:-19092}
TANSU_VERSION=0.6.0

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root for: $*" >&2; return 1; fi
}

ch_answers() { curl -fsS "http://127.0.0.1:$CH_HTTP/?query=SELECT%201" >/dev/null 2>&1; }
kafka_answers() { (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") >/dev/null 2>&1; }

tansu_bin() {
  if command -v tansu >/dev/null 2>&1; then command -v tansu; else echo "$HOME/.cargo/bin/tansu"; fi
}

install() {
  if [ ! -x /usr/sbin/clickhouse-server ] && ! command -v clickhouse-server >/dev/null 2>&1; then
    echo "installing clickhouse-server (Debian package)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q clickhouse-server clickhouse-client curl
  else
    echo "clickhouse-server: installed"
  fi
  if ! command -v curl >/dev/null 2>&1; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q curl
  fi
  local tansu; tansu=$(tansu_bin)
  if [ -x "$tansu" ] && "$tansu" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    echo "tansu: installed ($tansu)"
  else
    echo "installing tansu $TANSU_VERSION (cargo install, about 15 minutes on 2 cores, once)"
    cargo install tansu --version "$TANSU_VERSION" --features libsql,dynostore --locked \
      || cargo install tansu --version "$TANSU_VERSION" --features libsql,dynostore
  fi
  # The console test (tests/console.rs) drives Debian's Chromium with playwright-core on node.
  if [ ! -x /usr/bin/chromium ]; then
    echo "installing chromium (Debian package, for the console test)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
  else
    echo "chromium: installed"
  fi
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "installing nodejs and npm (Debian packages, for the console test)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm
  else
    echo "node: installed ($(node --version))"
  fi
  if [ ! -f tests/console/node_modules/playwright-core/package.json ]; then
    echo "installing playwright-core (npm ci in tests/console)"
    (cd tests/console && npm ci --no-audit --no-fund)
  else
    echo "playwright-core: installed"
  fi
}

# launch PIDFILE LOG DIR CMD...: start CMD in DIR in the background with stdin from /dev/null,
# output to LOG, and no other file descriptor inherited (a pipe held open by a server would keep
# whoever reads this script's output waiting for its end).
launch() {
  local pidfile=$1 log=$2 dir=$3; shift 3
  (
    cd "$dir" || exit 1
    exec </dev/null >>"$log" 2>&1
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ] 2>/dev/null; then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec "$@"
  ) &
  echo $! >"$pidfile"
}

wait_for() { # wait_for WHAT CHECK LOG
  local i
  for i in $(seq 1 150); do
    if "$2"; then echo "$1: up"; return 0; fi
    sleep 0.2
  done
  echo "$1 did not answer; its log:" >&2
  tail -n 40 "$3" >&2 || true
  return 1
}

start() {
  mkdir -p "$DIR/clickhouse" "$DIR/tansu"
  if ch_answers; then
    echo "clickhouse: already up on $CH_HTTP"
  else
    local ch=/usr/sbin/clickhouse-server
    [ -x "$ch" ] || ch=$(command -v clickhouse-server)
    launch "$DIR/clickhouse/pid" "$DIR/clickhouse/stdout.log" "$DIR/clickhouse" \
      "$ch" --config-file=/etc/clickhouse-server/config.xml -- \
      --path="$DIR/clickhouse/data/" --tmp_path="$DIR/clickhouse/tmp/" \
      --user_files_path="$DIR/clickhouse/user_files/" \
      --format_schema_path="$DIR/clickhouse/format_schemas/" \
      --logger.log="$DIR/clickhouse/server.log" --logger.errorlog="$DIR/clickhouse/server.err.log" \
      --http_port="$CH_HTTP" --tcp_port="$CH_TCP" --interserver_http_port="$CH_INTER"
    wait_for clickhouse ch_answers "$DIR/clickhouse/server.err.log"
  fi
  if kafka_answers; then
    echo "kafka (tansu): already up on $KAFKA_PORT"
  else
    # A broker for tests: it starts empty, so its storage does not grow run after run (it
    # had reached 32 GB on a development machine).
    rm -f "$DIR/tansu/tansu.db" "$DIR/tansu/tansu.db-shm" "$DIR/tansu/tansu.db-wal"
    launch "$DIR/tansu/pid" "$DIR/tansu/broker.log" "$DIR/tansu" \
      "$(tansu_bin)" broker \
      --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --storage-engine "sqlite://tansu.db"
    wait_for "kafka (tansu)" kafka_answers "$DIR/tansu/broker.log"
  fi
  echo "VIGIL_TEST_CLICKHOUSE_URL=http://127.0.0.1:$CH_HTTP"
  echo "VIGIL_TEST_KAFKA=127.0.0.1:$KAFKA_PORT"
}

stop() {
  local f
  for f in "$DIR/clickhouse/pid" "$DIR/tansu/pid"; do
    if [ -f "$f" ]; then
      kill "$(cat "$f")" 2>/dev/null || true
      rm -f "$f"
    fi
  done
}

status() {
  if ch_answers; then echo "clickhouse: up"; else echo "clickhouse: down"; fi
  if kafka_answers; then echo "kafka: up"; else echo "kafka: down"; fi
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
