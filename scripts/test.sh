#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a warm one: installs and starts what the tests
# need (skipping what is already there), then runs every test of the workspace, lints and
# formatting included. The scaled-out tests use a real ClickHouse and a real Kafka-protocol
# broker: scripts/services.sh installs them (once per machine) and starts them on loopback with
# their own data under .services/; they are stopped when this script ends. A missing service
# fails those tests; none is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "toolchain"
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust (https://rustup.rs) first" >&2
  exit 1
fi
cargo --version
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt || true

step "services: ClickHouse and a Kafka broker on loopback (scripts/services.sh)"
scripts/services.sh install
scripts/services.sh start
trap 'scripts/services.sh stop' EXIT
export VIGIL_TEST_CLICKHOUSE_URL=${VIGIL_TEST_CLICKHOUSE_URL:-http://127.0.0.1:18123}
export VIGIL_TEST_KAFKA=${VIGIL_TEST_KAFKA:-127.0.0.1:19092}

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "fuzz targets type-check (running them needs nightly: fuzz/README.md)"
cargo check --manifest-path fuzz/Cargo.toml --locked

step "tests"
# One build of the test profile serves every crate of the workspace.
cargo test --workspace --locked --no-fail-fast 2>&1 | tee target/test-output.txt
# A plain summary line over all the test binaries.
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "\ntests: %d passed, %d failed, %d skipped\n", p, f, i }' target/test-output.txt
