//! `value_count`, `temporal`, `temporal_ordered`, aliases, chained correlations, `generate`,
//! allowed lateness and the memory estimate.

use std::sync::Arc;

use chrono::Duration;
use vigil_correlate::{DetectionKind, EngineLimits, RuleKind};
use vigil_parsers::event::Event;

use crate::common::{at, ev, load, load_files, run, FAILED, OK};

fn failure(secs: i64, ip: &str, user: &str) -> Arc<Event> {
    ev(
        secs,
        &[
            ("event.outcome", "failure"),
            ("source.ip", ip),
            ("user.name", user),
        ],
    )
}

fn success(secs: i64, ip: &str, user: &str) -> Arc<Event> {
    ev(
        secs,
        &[
            ("event.outcome", "success"),
            ("source.ip", ip),
            ("user.name", user),
        ],
    )
}

fn spraying(condition: &str) -> String {
    format!(
        "{FAILED}---
title: spraying
name: spraying
correlation:
  type: value_count
  rules: [failed]
  group-by: [source.ip]
  timespan: 10m
  condition: {condition}
"
    )
}

const IP: &str = "203.0.113.7";

fn kinds(out: &[vigil_correlate::Detection]) -> Vec<(DetectionKind, u64)> {
    out.iter().map(|d| (d.kind, d.count)).collect()
}

#[test]
fn value_count_counts_distinct_values_and_reports_them() {
    let set = load(&spraying("{field: user.name, gte: 3}"));
    assert_eq!(set.rules()[1].kind, RuleKind::ValueCount);
    let events = vec![
        failure(0, IP, "root"),
        failure(1, IP, "root"),
        failure(2, IP, "admin"),
        failure(3, IP, "root"),
        failure(4, IP, "oracle"), // third distinct user: New with 5 events
        failure(5, IP, "admin"),  // still holds: Update
        failure(6, "192.0.2.1", "a"),
    ];
    let (out, _) = run(set, EngineLimits::default(), &events);
    assert_eq!(
        kinds(&out),
        vec![(DetectionKind::New, 5), (DetectionKind::Update, 1)]
    );
    assert_eq!(out[0].distinct, Some(3));
    assert_eq!(out[0].events.len(), 5);
    assert_eq!(out[0].index_value, IP);
    assert_eq!(out[1].distinct, None);
}

#[test]
fn value_count_windows_slide_and_values_need_the_field() {
    // Four distinct users, but never three inside one minute.
    let set = load(&spraying("{field: user.name, gte: 3}").replace("10m", "1m"));
    let events = vec![
        failure(0, IP, "a"),
        failure(40, IP, "b"),
        failure(80, IP, "c"),
        failure(120, IP, "d"),
    ];
    let (out, _) = run(set, EngineLimits::default(), &events);
    assert!(out.is_empty(), "{out:?}");

    let set = load(&spraying("{field: user.name, gte: 2}"));
    let no_user = ev(0, &[("event.outcome", "failure"), ("source.ip", IP)]);
    let (out, engine) = run(
        set,
        EngineLimits::default(),
        &[no_user, failure(1, IP, "a")],
    );
    assert!(out.is_empty());
    let stats = engine.stats();
    let r = stats.rules.iter().find(|r| r.name == "spraying").unwrap();
    assert_eq!(r.valueless_events, 1);
}

#[test]
fn value_count_accepts_the_field_outside_the_condition_and_refuses_it_elsewhere() {
    let text =
        spraying("{gte: 2}").replace("  timespan: 10m", "  field: user.name\n  timespan: 10m");
    let set = load(&text);
    let (out, _) = run(
        set,
        EngineLimits::default(),
        &[failure(0, IP, "a"), failure(1, IP, "b")],
    );
    assert_eq!(out.len(), 1);
    let text = spraying("{gte: 2}")
        .replace("value_count", "event_count")
        .replace("{gte: 2}", "{gte: 2, field: user.name}");
    let (_, errors) = load_files(&[("x.yml", &text)]);
    assert!(errors[0].message.contains("value_count only"), "{errors:?}");
}

#[test]
fn value_count_tracks_a_bounded_number_of_values() {
    let set = load(&spraying("{field: user.name, gte: 100}"));
    let limits = EngineLimits {
        max_values_per_key: 3,
        ..EngineLimits::default()
    };
    let events: Vec<_> = (0..10).map(|i| failure(i, IP, &format!("u{i}"))).collect();
    let (out, engine) = run(set, limits, &events);
    assert!(out.is_empty());
    let stats = engine.stats();
    let r = stats.rules.iter().find(|r| r.name == "spraying").unwrap();
    assert_eq!(r.values_evicted, 7);
}

fn temporal(kind: &str, rules: &str, extra: &str) -> String {
    format!(
        "{FAILED}---
{OK}---
title: discovery
name: discovery
detection:
  sel: {{process.name: whoami}}
  condition: sel
---
title: chain
name: chain
correlation:
  type: {kind}
  rules: {rules}
  group-by: [source.ip]
  timespan: 1m
{extra}"
    )
}

fn whoami(secs: i64, ip: &str) -> Arc<Event> {
    ev(secs, &[("process.name", "whoami"), ("source.ip", ip)])
}

#[test]
fn temporal_needs_every_rule_in_the_window_in_any_order() {
    for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
        let set = load(&temporal("temporal", "[failed, ok, discovery]", ""));
        let all = [failure(0, IP, "x"), success(10, IP, "x"), whoami(20, IP)];
        let events: Vec<_> = order.iter().map(|i| Arc::clone(&all[*i])).collect();
        let (out, _) = run(set, EngineLimits::default(), &events);
        assert_eq!(kinds(&out), vec![(DetectionKind::New, 3)], "{order:?}");
        assert_eq!(out[0].first_seen, at(0));
        assert_eq!(out[0].last_seen, at(20));
    }
    // Two of three, or all three spread over more than the timespan: silent.
    let set = load(&temporal("temporal", "[failed, ok, discovery]", ""));
    let (out, _) = run(
        set,
        EngineLimits::default(),
        &[failure(0, IP, "x"), success(10, IP, "x"), whoami(70, IP)],
    );
    assert!(out.is_empty());
    // Another source's events do not complete the set.
    let set = load(&temporal("temporal", "[failed, ok, discovery]", ""));
    let (out, _) = run(
        set,
        EngineLimits::default(),
        &[
            failure(0, IP, "x"),
            success(10, IP, "x"),
            whoami(20, "192.0.2.9"),
        ],
    );
    assert!(out.is_empty());
}

#[test]
fn temporal_condition_counts_distinct_rules() {
    let set = load(&temporal(
        "temporal",
        "[failed, ok, discovery]",
        "  condition: {gte: 2}\n",
    ));
    let (out, _) = run(
        set,
        EngineLimits::default(),
        &[
            failure(0, IP, "x"),
            failure(1, IP, "x"),
            whoami(2, IP),
            success(3, IP, "x"),
        ],
    );
    assert_eq!(
        kinds(&out),
        vec![(DetectionKind::New, 3), (DetectionKind::Update, 1)]
    );
}

#[test]
fn temporal_ordered_needs_the_listed_order() {
    let text = temporal("temporal_ordered", "[failed, ok]", "");
    let set = load(&text);
    assert_eq!(set.rules()[3].kind, RuleKind::TemporalOrdered);
    let (out, _) = run(
        set,
        EngineLimits::default(),
        &[
            failure(0, IP, "x"),
            success(30, IP, "x"),
            success(40, IP, "x"),
        ],
    );
    assert_eq!(
        kinds(&out),
        vec![(DetectionKind::New, 2), (DetectionKind::Update, 1)]
    );
    // Success first, failure after: wrong order.
    let set = load(&text);
    let (out, _) = run(
        set,
        EngineLimits::default(),
        &[success(0, IP, "x"), failure(30, IP, "x")],
    );
    assert!(out.is_empty());
    // Order is event time, not arrival: a failure arriving late but stamped earlier counts.
    let set = load(&text);
    let (out, _) = run(
        set,
        EngineLimits::default(),
        &[success(30, IP, "x"), failure(10, IP, "x")],
    );
    assert_eq!(kinds(&out), vec![(DetectionKind::New, 2)]);
    // The key re-arms once the first step leaves the window.
    let set = load(&text);
    let (out, _) = run(
        set,
        EngineLimits::default(),
        &[
            failure(0, IP, "x"),
            success(10, IP, "x"),
            success(100, IP, "x"),
            failure(110, IP, "x"),
            success(120, IP, "x"),
        ],
    );
    assert_eq!(
        kinds(&out),
        vec![(DetectionKind::New, 2), (DetectionKind::New, 3)]
    );
}

#[test]
fn aliases_group_by_a_field_that_differs_per_rule() {
    let text = "title: internal error
name: internal_error
detection:
  sel: {http.response.status_code: 500}
  condition: sel
---
title: new connection
name: new_network_connection
detection:
  sel: {event.category: network}
  condition: sel
---
title: error then connection
name: error_and_connection
correlation:
  type: temporal
  rules: [internal_error, new_network_connection]
  group-by: [internal_ip, remote_ip]
  timespan: 10s
  aliases:
    internal_ip:
      internal_error: destination.ip
      new_network_connection: source.ip
    remote_ip:
      internal_error: source.ip
      new_network_connection: destination.ip
"
    .to_owned();
    let error = |secs, src: &str, dst: &str| {
        ev(
            secs,
            &[
                ("http.response.status_code", "500"),
                ("source.ip", src),
                ("destination.ip", dst),
            ],
        )
    };
    let conn = |secs, src: &str, dst: &str| {
        ev(
            secs,
            &[
                ("event.category", "network"),
                ("source.ip", src),
                ("destination.ip", dst),
            ],
        )
    };
    let set = load(&text);
    let (out, _) = run(
        set,
        EngineLimits::default(),
        &[
            error(0, "198.51.100.5", "10.0.0.8"),
            conn(1, "10.0.0.9", "198.51.100.5"), // another internal host: no match
            conn(2, "10.0.0.8", "198.51.100.5"),
        ],
    );
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        out[0].group,
        vec![
            ("internal_ip".to_owned(), "10.0.0.8".to_owned()),
            ("remote_ip".to_owned(), "198.51.100.5".to_owned())
        ]
    );
    assert_eq!(&*out[0].index_field, "internal_ip");
    assert_eq!(out[0].index_value, "10.0.0.8");
    assert_eq!(out[0].count, 2);

    // An alias naming a rule the correlation does not reference, or missing a rule, is refused.
    let bad = text.replace(
        "      new_network_connection: source.ip\n",
        "      nope: source.ip\n",
    );
    let (_, errors) = load_files(&[("a.yml", &bad)]);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].message.contains("does not reference"),
        "{}",
        errors[0]
    );
    assert_eq!(errors[0].line, 23);
    let bad = text.replace("      new_network_connection: destination.ip\n", "");
    let (_, errors) = load_files(&[("a.yml", &bad)]);
    assert!(
        errors[0]
            .message
            .contains("gives no field for rule `new_network_connection`"),
        "{}",
        errors[0]
    );
}

fn chained(generate: bool) -> String {
    format!(
        "{FAILED}---
{OK}---
title: many failures
name: many_failures
correlation:
  type: event_count
  rules: [failed]
  group-by: [user.name]
  timespan: 1m
  condition: {{gte: 3}}
---
title: failures then success
name: failures_then_success
correlation:
  type: temporal_ordered
  rules: [many_failures, ok]
  group-by: [user.name]
  timespan: 10m
  generate: {generate}
level: high
"
    )
}

#[test]
fn a_correlation_can_count_another_correlations_firings() {
    let set = load(&chained(false));
    let names: Vec<_> = set
        .rules()
        .iter()
        .map(|r| (r.name.as_str(), r.generate))
        .collect();
    assert_eq!(
        names,
        vec![
            ("failed", false),
            ("ok", false),
            ("many_failures", false),
            ("failures_then_success", true)
        ]
    );
    assert_eq!(set.rules()[3].references, vec!["many_failures", "ok"]);
    let events = vec![
        success(0, IP, "bob"), // before the failures: does not count
        failure(1, IP, "bob"),
        failure(2, IP, "bob"),
        failure(3, IP, "bob"), // many_failures fires (silently): step one
        failure(4, IP, "bob"), // an update of many_failures: not a new step
        success(200, IP, "bob"),
        success(300, IP, "alice"),
    ];
    let (out, engine) = run(set, EngineLimits::default(), &events);
    // The window holds every occurrence of the referenced rules: the early success too.
    assert_eq!(kinds(&out), vec![(DetectionKind::New, 3)]);
    let d = &out[0];
    assert_eq!(&*d.rule, "failures_then_success");
    assert_eq!(d.group, vec![("user.name".to_owned(), "bob".to_owned())]);
    let times: Vec<_> = d.events.iter().map(|e| e.timestamp).collect();
    assert_eq!(times, vec![at(0), at(3), at(200)]);
    let stats = engine.stats();
    let inner = stats
        .rules
        .iter()
        .find(|r| r.name == "many_failures")
        .unwrap();
    assert_eq!((inner.matches, inner.detections), (4, 0));

    // generate: true lets the rules it references (a detection and a correlation) emit their
    // own detections; `failed`, referenced only by `many_failures`, stays silent.
    let set = load(&chained(true));
    let generate: Vec<_> = set.rules().iter().map(|r| r.generate).collect();
    assert_eq!(generate, vec![false, true, true, true]);
    let (out, _) = run(set, EngineLimits::default(), &events);
    let rules: Vec<_> = out.iter().map(|d| (&*d.rule, d.kind)).collect();
    assert_eq!(
        rules,
        vec![
            ("ok", DetectionKind::New),
            ("many_failures", DetectionKind::New),
            ("many_failures", DetectionKind::Update),
            ("ok", DetectionKind::New),
            ("failures_then_success", DetectionKind::New),
            ("ok", DetectionKind::New),
        ]
    );
}

#[test]
fn correlations_reference_each_other_across_files_and_cycles_are_refused() {
    let (set, errors) = load_files(&[
        ("base.yml", &format!("{FAILED}---\n{OK}")),
        (
            "outer.yml",
            chained(false)
                .replace(FAILED, "")
                .replace(&format!("{OK}---\n"), "")
                .trim_start_matches("---\n"),
        ),
    ]);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(set.len(), 4);

    let cycle = "title: a
name: a
correlation:
  type: event_count
  rules: [b]
  timespan: 1m
  condition: {gte: 2}
---
title: b
name: b
correlation:
  type: temporal
  rules:
    - failed
    - a
  timespan: 1m
---
title: c
name: c
correlation:
  type: event_count
  rules: [a]
  timespan: 1m
  condition: {gte: 2}
";
    let (set, errors) = load_files(&[("f.yml", FAILED), ("cycle.yml", cycle)]);
    assert_eq!(set.len(), 1, "{errors:?}");
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert_eq!((errors[0].path.as_str(), errors[0].line), ("cycle.yml", 5));
    assert!(
        errors[0].message.contains("cycle: a -> b -> a"),
        "{}",
        errors[0]
    );
    assert_eq!(errors[1].line, 15);
    assert!(errors[1].message.contains("cycle"), "{}", errors[1]);
    assert_eq!(errors[2].line, 22);
    assert!(
        errors[2].message.contains("failed to load"),
        "{}",
        errors[2]
    );

    let selfref = "title: s\nname: s\ncorrelation:\n  type: event_count\n  rules: [s]\n  timespan: 1m\n  condition: {gte: 2}\n";
    let (_, errors) = load_files(&[("s.yml", selfref)]);
    assert!(
        errors[0].message.contains("references itself"),
        "{}",
        errors[0]
    );
    assert_eq!(errors[0].line, 5);
}

fn brute_force() -> String {
    format!(
        "{FAILED}---
title: brute
name: brute
correlation:
  type: event_count
  rules: [failed]
  group-by: [source.ip]
  timespan: 1m
  condition: {{gte: 3}}
"
    )
}

#[test]
fn allowed_lateness_bounds_how_far_behind_the_rule_watermark_events_apply() {
    // Without lateness, another key's old events still count (only per-key windows matter).
    let events = vec![
        failure(1000, "192.0.2.1", "x"),
        failure(0, IP, "x"),
        failure(1, IP, "x"),
        failure(2, IP, "x"),
    ];
    let (out, _) = run(load(&brute_force()), EngineLimits::default(), &events);
    assert_eq!(out.len(), 1);
    // With 5 minutes of lateness they are 1000 s behind the watermark: late, not applied.
    let limits = EngineLimits {
        allowed_lateness: Duration::minutes(5),
        ..EngineLimits::default()
    };
    let (out, engine) = run(load(&brute_force()), limits, &events);
    assert!(out.is_empty());
    assert_eq!(engine.stats().rules[1].late_events, 3);
    // Inside the lateness they apply.
    let events = vec![
        failure(100, "192.0.2.1", "x"),
        failure(0, IP, "x"),
        failure(1, IP, "x"),
        failure(2, IP, "x"),
    ];
    let (out, _) = run(load(&brute_force()), limits, &events);
    assert_eq!(out.len(), 1);
}

#[test]
fn a_hundred_thousand_fired_keys_stay_small() {
    let set = load(&brute_force());
    let mut engine = vigil_correlate::Engine::new(Arc::new(set), EngineLimits::default());
    let mut out = Vec::new();
    for k in 0..100_000u32 {
        let ip = format!("10.{}.{}.{}", k >> 16, (k >> 8) & 255, k & 255);
        for s in 0..3 {
            engine.process(&failure(i64::from(s), &ip, "root"), &mut out);
        }
        out.clear();
    }
    let stats = engine.stats();
    assert_eq!(stats.keys_live, 100_000);
    assert_eq!(stats.rules[1].detections, 100_000);
    let per_key = stats.bytes_per_key();
    eprintln!("bytes per fired key: {per_key}");
    // Three 24-byte slots (time, reported, no event) in a buffer of exactly three, the firing,
    // the key's slab entry (key text inline, update-order links) and its index entry.
    assert!(per_key <= 256, "{per_key} bytes per key");
}
