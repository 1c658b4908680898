#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 600), each seeded from the project's fixtures
# (and, for rules, config and spool_record, from the rule pack, vigil.example.toml and hand-made
# records).
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
# Whole-file seeds (rules, config): one corpus file per input file.
seed_files() { # seed_files TARGET FILES...
  local dir=corpus/$1; shift
  mkdir -p "$dir"
  for f in "$@"; do
    [ -f "$f" ] && cp "$f" "$dir/seed-$(basename "$(dirname "$f")")-$(basename "$f")"
  done
  return 0
}
# rules: the shipped pack, the SigmaHQ rules the correlate tests use, the rule examples of
# correlate/README.md, and every 10th SigmaHQ rule of fixtures/sigma that fits -max_len.
seed_files rules $root/rules/*.yml $root/correlate/tests/sigmahq/*.yml
python3 - "$root" <<'PY'
import os, re, sys
root = sys.argv[1]
readme = f"{root}/correlate/README.md"
if os.path.exists(readme):
    for i, block in enumerate(re.findall(r"```ya?ml\n(.*?)```", open(readme).read(), re.S)):
        open(f"corpus/rules/seed-readme-{i}.yml", "w").write(block)
sigma = sorted(os.path.join(d, f) for d, _, fs in os.walk(f"{root}/fixtures/sigma/rules")
               for f in fs if f.endswith(".yml"))
for path in sigma[::10]:
    if os.path.getsize(path) <= 8192:
        open(f"corpus/rules/seed-sigma-{os.path.basename(path)}", "wb").write(open(path, "rb").read())
PY
# config: the example file and variants (scaled out, TLS, tokens, webhooks, zones, bad values).
seed_files config $root/vigil.example.toml
mkdir -p corpus/config
printf '' > corpus/config/seed-empty.toml
cat > corpus/config/seed-kafka.toml <<'TOML'
data_dir = "/var/lib/vigil"
[bus]
kind = "kafka"
role = "correlate"
partitions = 24
topic_prefix = "siem"
wire = "json"
[bus.kafka]
brokers = "k1:9092,k2:9092"
instance_id = "engine-1"
[bus.kafka.extra]
"security.protocol" = "SASL_SSL"
[store]
kind = "clickhouse"
[store.clickhouse]
url = "http://ch:8123"
database = "vigil_prod"
user = "vigil"
password = "secret"
[store.clickhouse.retention_days]
events = 0
TOML
cat > corpus/config/seed-tls.toml <<'TOML'
[syslog]
udp_listen = ""
tcp_listen = "[::]:514"
tls_listen = "0.0.0.0:6514"
tls_cert = "/etc/vigil/vigil.pem"
tls_key = "/etc/vigil/vigil-key.pem"
tls_client_ca = "/etc/vigil/ca.pem"
max_message_bytes = 64
[api]
listen = "[::1]:8443"
tls_cert = "/etc/vigil/api.pem"
tls_key = "/etc/vigil/api-key.pem"
[[api.tokens]]
name = "alice"
role = "analyst"
sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
[[api.tokens]]
name = "feeder"
role = "ingest"
sha256 = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
TOML
cat > corpus/config/seed-response.toml <<'TOML'
[response]
block_set = "blocked_ips"
min_magnitude = 7
dry_run = true
max_new_blocks_per_minute = 0
allow_list = ["192.0.2.1", "2001:db8::/32"]
blocklist_token = "firewall-pull-token-0123"
[[response.webhooks]]
name = "soar"
url = "http://soar.example:8080/hooks/vigil"
secret = "a-long-random-shared-secret"
events = ["ip.blocked", "offense.created"]
allow_private = true
retry_initial_ms = 5000
[parse]
default_utc_offset = "+05:30"
invalid_utf8 = "replace"
max_future_skew_secs = 0
TOML
cat > corpus/config/seed-context.toml <<'TOML'
[bus]
spool = true
spool_segment_bytes = 4096
spool_max_bytes = 8192
queue_capacity = 1
queue_bytes = 65536
[context]
geoip_cache_entries = 0
[[context.networks]]
name = "dmz"
cidrs = ["198.51.100.0/24", "2001:db8:1::/48"]
criticality = 10
internal = true
[[context.networks]]
name = "core-banking"
cidrs = ["10.1.0.0/16"]
criticality = 11
[[context.reference_sets]]
name = "threat_intel"
kind = "ip"
files = ["/etc/vigil/ti.txt"]
url = "http://ti.example/feed.txt"
refresh_secs = 3600
ttl_secs = 86400
[[context.reference_sets]]
name = "bad_users"
kind = "string"
[[context.reference_maps]]
name = "asset_owners"
files = ["/etc/vigil/asset_owners.csv"]
TOML
# spool_record: record bodies in the format of src/bus/spool.rs `encode` (format 1, time in
# microseconds, observer type and id, peer, refusal, event JSON, bytes).
python3 <<'PY'
import json, os, struct
os.makedirs("corpus/spool_record", exist_ok=True)
def short(s): b = s.encode(); return bytes([len(b)]) + b
def long(b): b = b if isinstance(b, bytes) else b.encode(); return struct.pack("<I", len(b)) + b
def record(micros, otype, oid, peer=b"\0", refused=None, event=None, raw=b""):
    b = bytes([1]) + struct.pack("<q", micros) + short(otype) + long(oid) + peer
    b += b"\0" if refused is None else b"\1" + short(refused[0]) + long(refused[1])
    b += b"\0" if event is None else b"\1" + long(json.dumps(event))
    return b + long(raw)
t = 1781524800000000  # 2026-06-15T12:00:00Z
v4 = b"\4" + bytes([203, 0, 113, 7])
v6 = b"\6" + bytes.fromhex("20010db8000000000000000000000001")
line = b"<38>Jun 15 12:00:00 bastion sshd[42]: Failed password for root from 203.0.113.7 port 52100 ssh2"
event = {"@timestamp": "2026-06-15T12:00:00Z", "event.ingested": "2026-06-15T12:00:00.250Z",
         "event.category": "network", "source.ip": "203.0.113.7", "source.port": 52100,
         "destination.ip": "2001:db8::1", "network.bytes": 1500, "source.internal": False,
         "extra": {"flow.exporter": "192.0.2.9"}, "event.original": "flow"}
seeds = [
    record(t, "syslog", "syslog/udp/203.0.113.7", v4, raw=line),
    record(t + 1, "syslog", "syslog/tcp/2001:db8::1", v6, raw=b"<13>1 2026-06-15T12:00:00Z h a - - - m"),
    record(t, "syslog", "syslog/tcp/203.0.113.7", v4, ("frame_too_long", "70000 bytes"), raw=b"x" * 64),
    record(t, "netflow", "netflow/192.0.2.9", b"\4" + bytes([192, 0, 2, 9]), event=event),
    record(0, "file", "file:/var/log/auth.log", raw=b"\xff\xfe not utf-8"),
    record(-1, "http", "http/ingest", raw=b""),
]
for i, s in enumerate(seeds):
    open(f"corpus/spool_record/seed-{i}", "wb").write(s)
PY
# wire_record: the golden records of each item type and a checkpoint body, in both formats
# (src/cluster/wire.rs).
mkdir -p corpus/wire_record
for f in $root/fixtures/wire/*.bin $root/fixtures/wire/*.json; do
  [ -f "$f" ] && cp "$f" "corpus/wire_record/seed-$(basename "$f")"
done
# quick_match: each shipped pattern and a test line of its definition, split by a NUL byte.
mkdir -p corpus/quick_match
python3 - "$root/parsers/definitions" <<'PY'
import pathlib, re, sys
i = 0
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.yml")):
    text = f.read_text()
    lines = re.findall(r"message: ['\"]?(.*?)['\"]?$", text, re.M) or ["x"]
    for p in re.findall(r"^\s+regex: '(\^.*)'$", text, re.M):
        i += 1
        line = lines[i % len(lines)]
        open(f"corpus/quick_match/seed-{i}", "wb").write(p.replace("''", "'").encode() + b"\0" + line.encode())
PY
# event_codec: the codec's pinned layouts are in parsers/src/codec.rs; it starts from an empty
# corpus (libFuzzer finds the version byte and the lengths within seconds).
# Build every target once up front: the package depends on the `vigil` crate, so a `cargo fuzz
# run` of any target rebuilds it (minutes) whenever src/ changed.
cargo fuzz build -O
for target in $(cargo fuzz list); do
  echo "== $target: ${secs}s"
  cargo fuzz run -O "$target" "corpus/$target" -- -max_total_time="$secs" -max_len=8192 \
    -rss_limit_mb=2048 -timeout=10 2>&1 | grep -E "^(#[0-9]+.*DONE|Done|==[0-9]+==ERROR|SUMMARY|artifact_prefix)" || true
done
