#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 600), each seeded from the project's fixtures.
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain; on a stable toolchain
# RUSTC_BOOTSTRAP=1 lets cargo-fuzz use the sanitizer flags it needs (set here).
# Crashes land in fuzz/artifacts/<target>/; turn each into a regression fixture.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-600}
export RUSTC_BOOTSTRAP=1
root=..
seed() { # seed TARGET FILES...: one corpus file per input line
  local dir=corpus/$1; shift
  mkdir -p "$dir"
  local i=0
  for f in "$@"; do
    [ -f "$f" ] || continue
    while IFS= read -r line; do
      i=$((i + 1)); printf '%s' "$line" > "$dir/seed-$i"
      [ $i -ge 2000 ] && return 0
    done < "$f"
  done
  return 0
}
json_inputs() { # input strings of a JSON case file, one per line
  python3 -c 'import json,sys
for c in json.load(open(sys.argv[1])):
    s=c.get("input")
    if isinstance(s,str): print(s.replace("\n"," "))' "$1"
}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
json_inputs $root/fixtures/syslog/rfc5424.json > "$tmp/syslog.txt"
json_inputs $root/fixtures/syslog/rfc3164.json >> "$tmp/syslog.txt"
json_inputs $root/fixtures/cef-leef/cef.json > "$tmp/cef.txt"
json_inputs $root/fixtures/cef-leef/leef.json > "$tmp/leef.txt"
cat $root/fixtures/parsers/*/*.log $root/fixtures/normalize/*.log $root/fixtures/sshd/auth.log > "$tmp/all.txt" 2>/dev/null || true
seed syslog_parse "$tmp/syslog.txt" "$tmp/all.txt"
seed syslog_framing "$tmp/syslog.txt"
seed normalize "$tmp/all.txt" "$tmp/syslog.txt"
seed cef "$tmp/cef.txt"
seed leef "$tmp/leef.txt"
for t in kv json csv zeek; do seed $t "$tmp/all.txt"; done
# Flow targets take datagrams with 2-byte big-endian length prefixes: each golden case's
# captures in order (templates first), and each sFlow vector.
python3 - "$root" <<'PY'
import json, os, struct, sys, glob
root = sys.argv[1]
os.makedirs("corpus/netflow", exist_ok=True)
os.makedirs("corpus/sflow", exist_ok=True)
for i, case in enumerate(sorted(glob.glob(f"{root}/fixtures/netflow/golden/*.json"))):
    names = json.load(open(case)).get("datagrams") or []
    blob = b""
    for n in names:
        path = f"{root}/fixtures/netflow/{n}"
        if os.path.exists(path):
            d = open(path, "rb").read()[:65535]
            blob += struct.pack(">H", len(d)) + d
    if blob:
        open(f"corpus/netflow/seed-{i}", "wb").write(blob)
for i, v in enumerate(sorted(glob.glob(f"{root}/fixtures/sflow/*.json"))):
    d = bytes.fromhex(json.load(open(v))["hex"])
    open(f"corpus/sflow/seed-{i}", "wb").write(struct.pack(">H", len(d)) + d)
PY
for target in $(cargo fuzz list); do
  echo "== $target: ${secs}s"
  cargo fuzz run -O "$target" "corpus/$target" -- -max_total_time="$secs" -max_len=8192 \
    -rss_limit_mb=2048 -timeout=10 2>&1 | grep -E "^(#[0-9]+.*DONE|Done|==[0-9]+==ERROR|SUMMARY|artifact_prefix)" || true
done
