#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a warm one: installs and starts what the tests
# need (skipping what is already there), then runs every test of the workspace, lints and
# formatting included. Services the scaled-out tests will need (ClickHouse, a Kafka broker)
# are added here when those tests exist; embedded mode needs nothing but Rust.
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
