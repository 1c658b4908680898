//! Single-event evaluation throughput at 10 / 100 / 1000 generated rules, through the engine
//! (dispatch index) and, for reference, exhaustive evaluation of every rule.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vigil_correlate::{Engine, EngineLimits, RuleSet, RuleSource};
use vigil_parsers::event::Event;

const WORDS: &[&str] = &[
    "invalid",
    "failed",
    "accepted",
    "session",
    "opened",
    "closed",
    "timeout",
    "refused",
    "publickey",
    "password",
    "preauth",
    "disconnect",
    "kex",
    "cipher",
    "denied",
    "sudo",
    "command",
    "tty",
    "pam_unix",
    "authentication",
    "error",
    "warning",
    "upstream",
    "request",
];
const PROCS: &[&str] = &[
    "sshd", "sudo", "nginx", "kernel", "cron", "systemd", "postfix",
];
const USERS: &[&str] = &[
    "root", "admin", "deploy", "www-data", "alice", "bob", "oracle",
];

fn rule_text(n: usize) -> String {
    let mut text = String::new();
    for i in 0..n {
        // Literals unlikely to be in most events: word + number suffix.
        let w = WORDS[i % WORDS.len()];
        let p = PROCS[i % PROCS.len()];
        let u = USERS[i % USERS.len()];
        let tag = i / WORDS.len();
        let detection = match i % 5 {
            0 => format!("  sel:\n    message|contains: '{w} {tag}'\n  condition: sel"),
            1 => format!("  sel:\n    process.name: {p}\n    user.name: '{u}{tag}'\n  condition: sel"),
            2 => format!("  keywords:\n    - '{w}-{tag}'\n    - 'x{tag} {w}'\n  condition: keywords"),
            3 => format!("  sel:\n    message|contains|all: ['{w}', 'id={tag};']\n  filter:\n    user.name: root\n  condition: sel and not filter"),
            _ => format!("  sel:\n    user.name|startswith: '{u}-{tag}'\n  condition: sel"),
        };
        let ls = if i % 3 == 0 {
            "logsource: {product: linux, service: sshd}\n"
        } else {
            ""
        };
        text.push_str(&format!(
            "---\ntitle: r{i}\nname: r{i}\n{ls}detection:\n{detection}\n"
        ));
    }
    text
}

fn events() -> Vec<Arc<Event>> {
    let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    (0..1000usize)
        .map(|i| {
            let t = t0 + Duration::seconds(i as i64);
            let mut e = Event::new(t, t);
            let msg: Vec<&str> = (0..8)
                .map(|k| WORDS[(i * 7 + k * 3) % WORDS.len()])
                .collect();
            let mut msg = msg.join(" ");
            if i % 10 == 0 {
                msg.push_str(&format!(" id={};", i % 40));
            }
            e.set("message", &msg).unwrap();
            e.set("process.name", PROCS[i % PROCS.len()]).unwrap();
            e.set(
                "user.name",
                &format!("{}{}", USERS[i % USERS.len()], i % 50),
            )
            .unwrap();
            e.set("source.ip", &format!("10.0.{}.{}", i % 200, i % 250))
                .unwrap();
            e.set("event.category", "authentication").unwrap();
            Arc::new(e)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let evs = events();
    let mut group = c.benchmark_group("rules");
    group.throughput(Throughput::Elements(evs.len() as u64));
    for n in [10usize, 100, 1000] {
        let (set, errors) = RuleSet::from_sources(&[RuleSource {
            path: "bench.yml".into(),
            text: rule_text(n),
        }]);
        assert!(errors.is_empty(), "{errors:?}");
        let set = Arc::new(set);
        let mut engine = Engine::new(Arc::clone(&set), EngineLimits::default());
        let mut out = Vec::new();
        group.bench_with_input(BenchmarkId::new("engine", n), &n, |b, _| {
            b.iter(|| {
                for e in &evs {
                    out.clear();
                    engine.process(e, &mut out);
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("exhaustive", n), &n, |b, _| {
            b.iter(|| {
                let mut hits = 0;
                for e in &evs {
                    hits += set.matching_rules_exhaustive(e).len();
                }
                hits
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
