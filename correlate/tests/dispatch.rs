//! The dispatch index never changes results: indexed and exhaustive evaluation agree on many
//! generated events over a varied rule set.

use std::sync::Arc;

use vigil_correlate::{Engine, EngineLimits, RuleSet, RuleSource};
use vigil_parsers::event::Event;

use crate::common::ev;

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() as usize) % xs.len()]
    }
}

const WORDS: &[&str] = &[
    "invalid",
    "user",
    "Failed",
    "password",
    "root",
    "admin",
    "sshd",
    "sudo",
    "accepted",
    "publickey",
    "error",
    "timeout",
    "connection",
    "closed",
    "ÄRGER",
    "über",
    "x",
    "10.0.0.1",
];
const PROCS: &[&str] = &["sshd", "sudo", "nginx", "kernel", "cron", "SSHD"];
const CATS: &[&str] = &["authentication", "network", "web", "Authentication"];
const DATASETS: &[&str] = &["openssh", "sudo", "nginx", "netfilter"];
const USERS: &[&str] = &["root", "admin", "bob", "Alice", "über"];
const IPS: &[&str] = &[
    "10.0.0.1",
    "10.1.2.3",
    "192.168.1.9",
    "203.0.113.7",
    "2001:db8::1",
    "::ffff:10.0.0.9",
];

fn rule_set() -> RuleSet {
    let mut rng = Lcg(7);
    let logsources = [
        "{product: linux, service: sshd}",
        "{product: linux, service: auth}",
        "{category: authentication}",
        "{category: firewall}",
        "{product: linux}",
        "{}",
    ];
    let mut text = String::new();
    for i in 0..300 {
        let ls = rng.pick(&logsources);
        let w1 = rng.pick(WORDS);
        let w2 = rng.pick(WORDS);
        let u = rng.pick(USERS);
        let p = rng.pick(PROCS);
        let ip = rng.pick(IPS);
        let detection = match i % 12 {
            0 => format!("  sel:\n    message|contains: '{w1}'\n  condition: sel"),
            1 => format!("  keywords:\n    - '{w1}'\n    - '{w2} *'\n  condition: keywords"),
            2 => format!("  sel:\n    message|contains|all: ['{w1}', '{w2}']\n  condition: sel"),
            3 => format!("  sel:\n    user.name: '{u}'\n  filter:\n    message|contains: '{w1}'\n  condition: sel and not filter"),
            4 => format!("  sel:\n    process.name|startswith: '{}'\n  condition: sel", &p[..2]),
            5 => format!("  sel:\n    message|re|i: '{w1}.*{w2}'\n  condition: sel"),
            6 => format!("  a:\n    message|endswith: '{w1}'\n  b:\n    user.name: '{u}'\n  condition: 1 of them"),
            7 => format!("  sel:\n    source.ip|cidr: '{ip}/8'\n  condition: sel"),
            8 => format!("  sel:\n    - message|contains: '{w1}'\n    - process.name: '{p}'\n  condition: sel"),
            9 => format!("  sel:\n    message: '*{w1}*{w2}*'\n  condition: sel"),
            10 => format!("  sel:\n    user.name: null\n    message|contains: '{w2}'\n  condition: sel"),
            _ => format!("  sel_a:\n    message|contains: '{w1}'\n  sel_b:\n    user.name|contains: '{}'\n  condition: all of sel_*", u.chars().next().unwrap_or('x')),
        };
        let ls = if ls == "{}" {
            String::new()
        } else {
            format!("logsource: {ls}\n")
        };
        text.push_str(&format!(
            "---\ntitle: r{i}\nname: r{i}\n{ls}detection:\n{detection}\n"
        ));
    }
    let (set, errors) = RuleSet::from_sources(&[RuleSource {
        path: "gen.yml".into(),
        text,
    }]);
    assert!(errors.is_empty(), "{errors:?}");
    set
}

fn events(n: usize) -> Vec<Arc<Event>> {
    let mut rng = Lcg(42);
    (0..n)
        .map(|i| {
            let words = (0..(rng.next() % 6))
                .map(|_| rng.pick(WORDS))
                .collect::<Vec<_>>()
                .join(" ");
            let mut fields = vec![("message", words)];
            if !rng.next().is_multiple_of(4) {
                fields.push(("process.name", rng.pick(PROCS).to_owned()));
            }
            if !rng.next().is_multiple_of(3) {
                fields.push(("event.category", rng.pick(CATS).to_owned()));
            }
            if rng.next().is_multiple_of(3) {
                fields.push(("event.dataset", rng.pick(DATASETS).to_owned()));
            }
            if rng.next().is_multiple_of(2) {
                fields.push(("user.name", rng.pick(USERS).to_owned()));
            }
            if rng.next().is_multiple_of(2) {
                fields.push(("source.ip", rng.pick(IPS).to_owned()));
            }
            let f: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            ev(i as i64, &f)
        })
        .collect()
}

#[test]
fn indexed_matching_equals_exhaustive_matching() {
    let set = rule_set();
    assert!(
        set.prefiltered_rules() > 100,
        "prefiltered {}",
        set.prefiltered_rules()
    );
    let mut total = 0;
    for e in events(5000) {
        let indexed = set.matching_rules(&e);
        assert_eq!(indexed, set.matching_rules_exhaustive(&e), "event {e:?}");
        total += indexed.len();
    }
    assert!(
        total > 1000,
        "the generated rules should match often ({total})"
    );
}

#[test]
fn the_engine_emits_one_detection_per_match() {
    let set = Arc::new(rule_set());
    let evs = events(500);
    let expected: usize = evs
        .iter()
        .map(|e| set.matching_rules_exhaustive(e).len())
        .sum();
    let mut engine = Engine::new(Arc::clone(&set), EngineLimits::default());
    let mut out = Vec::new();
    for e in &evs {
        engine.process(e, &mut out);
    }
    assert_eq!(out.len(), expected);
}
