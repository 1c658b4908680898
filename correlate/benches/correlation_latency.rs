//! Stateful correlation latency and memory: the shipped `ssh_brute_force` pack rule
//! (`event_count` grouped by `source.ip`, 5 minutes, `gte: 10`) fed sshd failed-password events
//! from 100 k and then 1 M distinct source addresses.
//!
//! Not a criterion bench (harness = false): it times every `Engine::process` call with
//! `Instant` and prints mean, p50, p99 and p99.9, then `EngineStats` (keys, approximate bytes,
//! bytes per key) and the process RSS.
//!
//! Phases per key count `K`: "new keys" feeds one event per address (each call creates a key);
//! "existing keys" then feeds 200 k events to addresses picked at random among the `K` (each call
//! updates a key, some reach the threshold and fire). Event time advances 50 µs per event, so
//! every key stays inside its 5-minute window. Events are built outside the timed call.
//!
//! `cargo bench -p vigil-correlate --bench correlation_latency` (add `-- 100000` or
//! `-- 1000000` to run one key count; RSS is only clean for the first count of a process).
//! With `--no-payloads` the engine keeps no event payloads (`max_payload_bytes: 0`), so the RSS
//! is the key state's alone, to check `EngineStats::approx_bytes` against.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use vigil_correlate::{Engine, EngineLimits, RuleSet, RuleSource};
use vigil_parsers::event::Event;

fn rule_set() -> RuleSet {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/ssh_brute_force.yml");
    let text = std::fs::read_to_string(&path).expect("pack rule reads");
    let (set, errors) = RuleSet::from_sources(&[RuleSource {
        path: path.display().to_string(),
        text,
    }]);
    assert!(errors.is_empty(), "{errors:?}");
    set
}

fn event(t: DateTime<Utc>, key: u32) -> Arc<Event> {
    let ip = Ipv4Addr::from(0x0a00_0000 | key).to_string();
    let mut e = Event::new(t, t);
    for (k, v) in [
        ("process.name", "sshd"),
        ("event.dataset", "openssh"),
        ("event.category", "authentication"),
        ("event.action", "ssh_login"),
        ("event.outcome", "failure"),
        ("user.name", "root"),
        ("source.ip", ip.as_str()),
    ] {
        e.set(k, v).expect("valid field");
    }
    e.message = Some(format!("Failed password for root from {ip} port 22 ssh2").into());
    Arc::new(e)
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn report(phase: &str, ns: &mut [u64]) {
    ns.sort_unstable();
    let pct = |p: f64| ns[((ns.len() as f64 - 1.0) * p) as usize];
    let mean = ns.iter().sum::<u64>() as f64 / ns.len() as f64;
    println!(
        "  {phase:<14} {:>8} events  mean {:>7.0} ns  p50 {:>6} ns  p99 {:>6} ns  p99.9 {:>7} ns  max {:>8} ns",
        ns.len(),
        mean,
        pct(0.50),
        pct(0.99),
        pct(0.999),
        ns[ns.len() - 1]
    );
}

fn run(keys: u32, no_payloads: bool) {
    let set = Arc::new(rule_set());
    let mut limits = EngineLimits {
        max_keys_per_rule: 2_000_000,
        ..EngineLimits::default()
    };
    if no_payloads {
        limits.max_payload_bytes = 0;
    }
    let mut engine = Engine::new(set, limits);
    let t0 = DateTime::parse_from_rfc3339("2026-11-29T00:00:00Z")
        .expect("valid time")
        .with_timezone(&Utc);
    let mut step = 0i64;
    let mut out = Vec::new();
    let rss_before = rss_mib();
    println!(
        "{keys} keys{}:",
        if no_payloads { " (no payloads)" } else { "" }
    );
    let mut ns = Vec::with_capacity(keys as usize);
    for k in 0..keys {
        let e = event(t0 + Duration::microseconds(step * 50), k);
        step += 1;
        out.clear();
        let start = Instant::now();
        engine.process(&e, &mut out);
        ns.push(start.elapsed().as_nanos() as u64);
    }
    report("new keys", &mut ns);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut ns = Vec::with_capacity(200_000);
    let mut fired = 0usize;
    for _ in 0..200_000 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let k = (rng % u64::from(keys)) as u32;
        let e = event(t0 + Duration::microseconds(step * 50), k);
        step += 1;
        out.clear();
        let start = Instant::now();
        engine.process(&e, &mut out);
        ns.push(start.elapsed().as_nanos() as u64);
        fired += out.len();
    }
    report("existing keys", &mut ns);
    let stats = engine.stats();
    println!(
        "  keys_live {}  approx_bytes {} ({:.1} MiB)  bytes/key {}  payload_bytes {} ({:.1} MiB)  detections {}",
        stats.keys_live,
        stats.approx_bytes,
        stats.approx_bytes as f64 / 1048576.0,
        stats.bytes_per_key(),
        stats.payload_bytes,
        stats.payload_bytes as f64 / 1048576.0,
        fired
    );
    let state = stats.approx_bytes.saturating_sub(stats.payload_bytes);
    println!(
        "  without payloads: {} bytes ({:.1} MiB), {} bytes/key",
        state,
        state as f64 / 1048576.0,
        state.checked_div(stats.keys_live).unwrap_or(0)
    );
    println!(
        "  RSS {:.0} MiB (before {:.0} MiB; run one key count per process for a clean figure)",
        rss_mib(),
        rss_before
    );
}

fn main() {
    let only: Option<u32> = std::env::args().skip(1).find_map(|a| a.parse().ok());
    let no_payloads = std::env::args().any(|a| a == "--no-payloads");
    for keys in [100_000u32, 1_000_000] {
        if only.is_none_or(|o| o == keys) {
            run(keys, no_payloads);
        }
    }
}
