//! Vigil's extensions to Sigma correlations: `value_sum`, `absence`, `silence`, and
//! [`Engine::advance`].

use std::sync::Arc;

use chrono::Duration;
use vigil_correlate::{Detection, DetectionKind, Engine, EngineLimits, RuleKind, RuleSet};
use vigil_parsers::event::Event;

use crate::common::{at, ev, load, load_files, run};

// ---------------------------------------------------------------------------------------------
// value_sum

const FLOW: &str = "title: flow
name: flow
detection:
  sel: {event.action: flow}
  condition: sel
";

fn transfer(condition: &str) -> RuleSet {
    load(&format!(
        "{FLOW}---
title: Large transfer
name: large_transfer
correlation:
  type: value_sum
  rules: [flow]
  group-by: [source.ip]
  timespan: 10m
  condition: {condition}
"
    ))
}

fn flow(secs: i64, ip: &str, bytes: &str) -> Arc<Event> {
    ev(
        secs,
        &[
            ("event.action", "flow"),
            ("source.ip", ip),
            ("network.bytes", bytes),
        ],
    )
}

#[test]
fn value_sum_loads_with_its_kind() {
    let set = transfer("{field: network.bytes, gte: 1000}");
    let info = set
        .rules()
        .iter()
        .find(|r| r.name == "large_transfer")
        .unwrap();
    assert_eq!(info.kind, RuleKind::ValueSum);
}

#[test]
fn value_sum_fires_when_the_sum_reaches_the_threshold_then_updates() {
    let set = transfer("{field: network.bytes, gte: 1000}");
    let events = [
        flow(0, "10.0.0.1", "400"),
        flow(10, "10.0.0.1", "400"),
        flow(20, "10.0.0.2", "900"),
        flow(30, "10.0.0.1", "300"),
        flow(40, "10.0.0.1", "100"),
    ];
    let (out, _) = run(set, EngineLimits::default(), &events);
    assert_eq!(out.len(), 2, "{out:#?}");
    let new = &out[0];
    assert_eq!(new.kind, DetectionKind::New);
    assert_eq!(new.index_value, "10.0.0.1");
    assert_eq!(new.count, 3);
    assert_eq!(new.fresh, 3);
    assert_eq!(new.sum, Some(1100));
    assert_eq!(new.events.len(), 3);
    assert_eq!(new.window_start, at(0));
    assert_eq!(new.distinct, None);
    let update = &out[1];
    assert_eq!(update.kind, DetectionKind::Update);
    assert_eq!(update.sum, Some(1200));
    assert_eq!(update.fresh, 1);
}

#[test]
fn value_sum_window_slides_and_the_key_re_arms() {
    let set = transfer("{field: network.bytes, gte: 1000}");
    let events = [
        flow(0, "10.0.0.1", "600"),
        // Ten minutes later: the first one left the window.
        flow(600, "10.0.0.1", "600"),
        flow(700, "10.0.0.1", "500"),
        // Both earlier ones left: 200 alone, the key re-arms.
        flow(1400, "10.0.0.1", "200"),
        flow(1410, "10.0.0.1", "900"),
    ];
    let (out, _) = run(set, EngineLimits::default(), &events);
    let summary: Vec<(DetectionKind, u64, Option<u64>, u64)> = out
        .iter()
        .map(|d| (d.kind, d.count, d.sum, d.fresh))
        .collect();
    assert_eq!(
        summary,
        vec![
            (DetectionKind::New, 2, Some(1100), 2),
            (DetectionKind::New, 2, Some(1100), 2),
        ]
    );
    assert_eq!(out[0].window_start, at(600));
    assert_eq!(out[1].window_start, at(1400));
}

#[test]
fn value_sum_skips_and_counts_non_numeric_values() {
    let set = load(&format!(
        "{FLOW}---
title: sum
name: sum
correlation:
  type: value_sum
  rules: [flow]
  group-by: [source.ip]
  timespan: 10m
  condition: {{field: transfer.bytes, gte: 10}}
"
    ));
    let e = |secs, v: Option<&str>| {
        let mut fields = vec![("event.action", "flow"), ("source.ip", "10.0.0.1")];
        if let Some(v) = v {
            fields.push(("transfer.bytes", v));
        }
        ev(secs, &fields)
    };
    let events = [
        e(0, Some("abc")),
        e(1, Some("-5")),
        e(2, None),
        e(3, Some("4.9")),
        e(4, Some(" 5 ")),
        e(5, Some("NaN")),
        e(6, Some("1")),
    ];
    let (out, engine) = run(set, EngineLimits::default(), &events);
    assert_eq!(out.len(), 1, "{out:#?}");
    // 4 (4.9 truncated) + 5 + 1, three occurrences: the skipped ones are not in the window.
    assert_eq!(out[0].sum, Some(10));
    assert_eq!(out[0].count, 3);
    assert_eq!(out[0].fresh, 3);
    let stats = engine.stats();
    let rule = stats.rules.iter().find(|r| r.name == "sum").unwrap();
    assert_eq!(rule.valueless_events, 4);
}

#[test]
fn value_sum_saturates() {
    let set = transfer("{field: extra.big, gte: 18446744073709551615}");
    let big = |secs| {
        ev(
            secs,
            &[
                ("event.action", "flow"),
                ("source.ip", "10.0.0.1"),
                ("extra.big", "18446744073709551615"),
            ],
        )
    };
    let (out, _) = run(set, EngineLimits::default(), &[big(0), big(1), big(2)]);
    let sums: Vec<Option<u64>> = out.iter().map(|d| d.sum).collect();
    assert_eq!(sums, vec![Some(u64::MAX), Some(u64::MAX), Some(u64::MAX)]);
}

#[test]
fn value_sum_accepts_a_condition_a_zero_sum_meets() {
    let set = transfer("{field: network.bytes, lte: 0}");
    let (out, _) = run(
        set,
        EngineLimits::default(),
        &[flow(0, "10.0.0.1", "0"), flow(1, "10.0.0.1", "5")],
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].sum, Some(0));
}

// ---------------------------------------------------------------------------------------------
// absence

const START_END: &str = "title: start
name: start
detection:
  sel: {event.action: start}
  condition: sel
---
title: end
name: end
detection:
  sel: {event.action: end}
  condition: sel
";

fn absence_rules(group_by: &str) -> RuleSet {
    load(&format!(
        "{START_END}---
title: Start without end
name: no_end
correlation:
  type: absence
  rules: [start, end]
  group-by: {group_by}
  timespan: 1m
level: medium
"
    ))
}

fn act(secs: i64, action: &str, user: &str) -> Arc<Event> {
    ev(
        secs,
        &[
            ("event.action", action),
            ("user.name", user),
            ("host.name", "h1"),
        ],
    )
}

fn engine(set: RuleSet, limits: EngineLimits) -> Engine {
    Engine::new(Arc::new(set), limits)
}

fn feed(engine: &mut Engine, events: &[Arc<Event>]) -> Vec<Detection> {
    let mut out = Vec::new();
    for e in events {
        engine.process(e, &mut out);
    }
    out
}

fn advance(engine: &mut Engine, secs: i64) -> Vec<Detection> {
    let mut out = Vec::new();
    engine.advance(at(secs), &mut out);
    out
}

#[test]
fn absence_loads_and_its_detection_rules_raise_nothing_of_their_own() {
    let set = absence_rules("[user.name]");
    let info = set.rules().iter().find(|r| r.name == "no_end").unwrap();
    assert_eq!(info.kind, RuleKind::Absence);
    assert_eq!(info.references, vec!["start", "end"]);
    let mut e = engine(set, EngineLimits::default());
    assert!(feed(&mut e, &[act(0, "start", "alice"), act(1, "end", "alice")]).is_empty());
}

#[test]
fn absence_a_followed_by_b_in_time_stays_quiet() {
    let mut e = engine(absence_rules("[user.name]"), EngineLimits::default());
    let out = feed(&mut e, &[act(0, "start", "alice"), act(30, "end", "alice")]);
    assert!(out.is_empty());
    assert!(advance(&mut e, 10_000).is_empty());
    assert_eq!(e.stats().keys_live, 0);
}

#[test]
fn absence_b_exactly_at_the_deadline_still_cancels() {
    let mut e = engine(absence_rules("[user.name]"), EngineLimits::default());
    let out = feed(&mut e, &[act(0, "start", "alice"), act(60, "end", "alice")]);
    assert!(out.is_empty());
    assert!(advance(&mut e, 10_000).is_empty());
}

#[test]
fn absence_fires_when_a_later_event_of_another_key_passes_the_deadline() {
    let mut e = engine(absence_rules("[user.name]"), EngineLimits::default());
    let a = act(0, "start", "alice");
    let mut out = feed(&mut e, &[Arc::clone(&a), act(60, "other", "bob")]);
    assert!(out.is_empty(), "at the deadline it has not passed yet");
    out = feed(&mut e, &[act(61, "other", "bob")]);
    assert_eq!(out.len(), 1, "{out:#?}");
    let d = &out[0];
    assert_eq!(d.kind, DetectionKind::New);
    assert_eq!(&*d.rule, "no_end");
    assert_eq!(&*d.index_field, "user.name");
    assert_eq!(d.index_value, "alice");
    assert_eq!(d.group, vec![("user.name".to_owned(), "alice".to_owned())]);
    assert_eq!(d.window_start, at(0));
    assert_eq!(d.first_seen, at(0));
    assert_eq!(d.last_seen, at(0));
    assert_eq!((d.count, d.fresh), (1, 1));
    assert_eq!(d.events.len(), 1);
    assert!(Arc::ptr_eq(&d.events[0], &a));
    assert_eq!(d.level.as_deref(), Some("medium"));
    assert_eq!(d.sum, None);
    // Fired once.
    assert!(advance(&mut e, 10_000).is_empty());
    let stats = e.stats();
    let rule = stats.rules.iter().find(|r| r.name == "no_end").unwrap();
    assert_eq!(rule.detections, 1);
    assert_eq!(rule.keys_live, 0);
}

#[test]
fn absence_fires_on_advance() {
    let mut e = engine(absence_rules("[user.name]"), EngineLimits::default());
    assert!(feed(&mut e, &[act(0, "start", "alice")]).is_empty());
    assert!(advance(&mut e, 60).is_empty());
    let out = advance(&mut e, 61);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].index_value, "alice");
}

#[test]
fn absence_a_late_b_after_the_deadline_does_not_undo_the_detection() {
    let mut e = engine(absence_rules("[user.name]"), EngineLimits::default());
    feed(&mut e, &[act(0, "start", "alice")]);
    assert_eq!(advance(&mut e, 120).len(), 1);
    assert!(feed(&mut e, &[act(50, "end", "alice"), act(121, "end", "alice")]).is_empty());
    assert!(advance(&mut e, 10_000).is_empty());
    let stats = e.stats();
    let rule = stats.rules.iter().find(|r| r.name == "no_end").unwrap();
    assert_eq!(rule.detections, 1);
}

#[test]
fn absence_further_starts_while_pending_are_ignored_and_a_new_start_after_firing_counts() {
    let mut e = engine(absence_rules("[user.name]"), EngineLimits::default());
    let first = act(0, "start", "alice");
    let out = feed(
        &mut e,
        &[
            Arc::clone(&first),
            act(10, "start", "alice"),
            act(61, "start", "alice"),
        ],
    );
    assert_eq!(out.len(), 1);
    assert!(Arc::ptr_eq(&out[0].events[0], &first));
    // The start at 61 opened a new deadline (121).
    let out = advance(&mut e, 122);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].window_start, at(61));
}

#[test]
fn absence_keys_are_independent() {
    let mut e = engine(absence_rules("[user.name]"), EngineLimits::default());
    let out = feed(
        &mut e,
        &[
            act(0, "start", "alice"),
            act(30, "start", "bob"),
            act(20, "end", "alice"),
            act(40, "end", "carol"),
        ],
    );
    assert!(out.is_empty());
    let out = advance(&mut e, 1000);
    let keys: Vec<&str> = out.iter().map(|d| d.index_value.as_str()).collect();
    assert_eq!(keys, vec!["bob"]);
}

#[test]
fn absence_a_b_timed_before_its_a_does_not_cancel() {
    let mut e = engine(absence_rules("[user.name]"), EngineLimits::default());
    let out = feed(&mut e, &[act(10, "start", "alice"), act(5, "end", "alice")]);
    assert!(out.is_empty());
    assert_eq!(advance(&mut e, 71).len(), 1);
}

#[test]
fn absence_deadlines_fire_in_time_order_across_keys() {
    let mut e = engine(absence_rules("[user.name]"), EngineLimits::default());
    feed(
        &mut e,
        &[
            act(20, "start", "carol"),
            act(0, "start", "bob"),
            act(10, "start", "alice"),
        ],
    );
    let out = advance(&mut e, 1000);
    let keys: Vec<&str> = out.iter().map(|d| d.index_value.as_str()).collect();
    assert_eq!(keys, vec!["bob", "alice", "carol"]);
}

#[test]
fn absence_with_two_group_fields_reports_both() {
    let mut e = engine(
        absence_rules("[user.name, host.name]"),
        EngineLimits::default(),
    );
    feed(&mut e, &[act(0, "start", "al:ice")]);
    let out = advance(&mut e, 100);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].group,
        vec![
            ("user.name".to_owned(), "al:ice".to_owned()),
            ("host.name".to_owned(), "h1".to_owned()),
        ]
    );
    assert_eq!(out[0].index_value, "al:ice");
}

#[test]
fn absence_start_whose_deadline_already_passed_is_late() {
    let mut e = engine(absence_rules("[user.name]"), EngineLimits::default());
    assert!(advance(&mut e, 1000).is_empty());
    assert!(feed(&mut e, &[act(0, "start", "alice")]).is_empty());
    assert!(advance(&mut e, 5000).is_empty());
    let stats = e.stats();
    let rule = stats.rules.iter().find(|r| r.name == "no_end").unwrap();
    assert_eq!(rule.late_events, 1);
    assert_eq!(rule.detections, 0);
}

#[test]
fn absence_allowed_lateness_waits_for_late_b() {
    let limits = EngineLimits {
        allowed_lateness: Duration::seconds(30),
        ..EngineLimits::default()
    };
    let mut e = engine(absence_rules("[user.name]"), limits);
    // Deadline 60; with 30 s of lateness it fires only once time passes 90.
    let out = feed(
        &mut e,
        &[
            act(0, "start", "alice"),
            act(0, "start", "bob"),
            act(85, "other", "x"),
            act(55, "end", "alice"),
        ],
    );
    assert!(out.is_empty());
    assert!(advance(&mut e, 90).is_empty());
    let out = advance(&mut e, 91);
    let keys: Vec<&str> = out.iter().map(|d| d.index_value.as_str()).collect();
    assert_eq!(keys, vec!["bob"]);
}

#[test]
fn advance_never_goes_backwards() {
    let mut e = engine(absence_rules("[user.name]"), EngineLimits::default());
    assert_eq!(e.now(), None);
    assert!(advance(&mut e, 100).is_empty());
    assert!(advance(&mut e, 10).is_empty());
    assert_eq!(e.now(), Some(at(100)));
    // An event older than engine time does not move it back either.
    feed(&mut e, &[act(50, "start", "alice")]);
    assert_eq!(e.now(), Some(at(100)));
    assert!(advance(&mut e, 20).is_empty());
    assert!(advance(&mut e, 110).is_empty());
    assert_eq!(advance(&mut e, 111).len(), 1);
    assert_eq!(e.now(), Some(at(111)));
}

#[test]
fn absence_state_is_bounded_and_evictions_counted() {
    let limits = EngineLimits {
        max_keys_per_rule: 2,
        ..EngineLimits::default()
    };
    let mut e = engine(absence_rules("[user.name]"), limits);
    feed(
        &mut e,
        &[
            act(0, "start", "k1"),
            act(1, "start", "k2"),
            act(2, "start", "k3"),
        ],
    );
    let stats = e.stats();
    let rule = stats.rules.iter().find(|r| r.name == "no_end").unwrap();
    assert_eq!(rule.keys_evicted, 1);
    assert_eq!(rule.keys_live, 2);
    assert!(rule.approx_bytes > 0);
    let out = advance(&mut e, 1000);
    let keys: Vec<&str> = out.iter().map(|d| d.index_value.as_str()).collect();
    assert_eq!(keys, vec!["k2", "k3"]);
    let stats = e.stats();
    assert_eq!(stats.keys_live, 0);
    assert_eq!(stats.payload_bytes, 0);
}

#[test]
fn absence_payload_budget_may_drop_the_start_event_but_counts_stay() {
    let limits = EngineLimits {
        max_payload_bytes: 0,
        ..EngineLimits::default()
    };
    let mut e = engine(absence_rules("[user.name]"), limits);
    feed(&mut e, &[act(0, "start", "alice")]);
    let out = advance(&mut e, 100);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].fresh, 1);
    assert!(out[0].events.is_empty());
    assert_eq!(out[0].index_value, "alice");
    let stats = e.stats();
    assert_eq!(stats.payloads_dropped, 1);
    assert_eq!(stats.payload_bytes, 0);
}

// ---------------------------------------------------------------------------------------------
// silence

fn silence_rules() -> RuleSet {
    load(
        "title: any sshd
name: any_sshd
detection:
  sel: {event.dataset: openssh}
  condition: sel
---
title: Source silent
name: quiet
correlation:
  type: silence
  rules: [any_sshd]
  group-by: [host.name]
  timespan: 30m
",
    )
}

fn log(secs: i64, host: &str) -> Arc<Event> {
    ev(secs, &[("event.dataset", "openssh"), ("host.name", host)])
}

#[test]
fn silence_fires_once_per_silent_period_and_re_arms() {
    let set = silence_rules();
    assert_eq!(
        set.rules().iter().find(|r| r.name == "quiet").unwrap().kind,
        RuleKind::Silence
    );
    let mut e = engine(set, EngineLimits::default());
    let last = log(1200, "h1");
    let out = feed(
        &mut e,
        &[
            log(0, "h1"),
            log(600, "h1"),
            Arc::clone(&last),
            log(3000, "h2"),
        ],
    );
    assert!(out.is_empty(), "h1's deadline is 3000: not passed yet");
    let out = feed(&mut e, &[log(3001, "h2")]);
    assert_eq!(out.len(), 1, "{out:#?}");
    let d = &out[0];
    assert_eq!(d.kind, DetectionKind::New);
    assert_eq!(&*d.index_field, "host.name");
    assert_eq!(d.index_value, "h1");
    assert_eq!(d.window_start, at(1200));
    assert_eq!(d.last_seen, at(1200));
    assert_eq!((d.count, d.fresh), (1, 1));
    assert!(Arc::ptr_eq(&d.events[0], &last));
    // Silent on: no second detection for h1.
    assert!(advance(&mut e, 4000).is_empty());
    // h1 comes back: re-armed, and h2 (last seen 3001) goes silent at 4801.
    feed(&mut e, &[log(4500, "h1")]);
    let out = advance(&mut e, 4802);
    let keys: Vec<&str> = out.iter().map(|d| d.index_value.as_str()).collect();
    assert_eq!(keys, vec!["h2"]);
    let out = advance(&mut e, 6301);
    let keys: Vec<&str> = out.iter().map(|d| d.index_value.as_str()).collect();
    assert_eq!(keys, vec!["h1"]);
    assert_eq!(out[0].window_start, at(4500));
    assert_eq!(e.stats().keys_live, 0);
}

#[test]
fn silence_an_older_event_does_not_move_the_deadline_back() {
    let mut e = engine(silence_rules(), EngineLimits::default());
    feed(&mut e, &[log(1000, "h1"), log(10, "h1")]);
    assert!(advance(&mut e, 2800).is_empty());
    let out = advance(&mut e, 2801);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].window_start, at(1000));
}

#[test]
fn silence_a_regular_source_stays_quiet() {
    let mut e = engine(silence_rules(), EngineLimits::default());
    let events: Vec<Arc<Event>> = (0..20).map(|i| log(i * 1500, "h1")).collect();
    assert!(feed(&mut e, &events).is_empty());
}

#[test]
fn silence_payload_may_be_gone() {
    let limits = EngineLimits {
        max_payload_bytes: 0,
        ..EngineLimits::default()
    };
    let mut e = engine(silence_rules(), limits);
    feed(&mut e, &[log(0, "h1"), log(5, "h1")]);
    let out = advance(&mut e, 5000);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].fresh, 1);
    assert!(out[0].events.is_empty());
    assert_eq!(out[0].index_value, "h1");
}

#[test]
fn silence_evicts_the_least_recently_seen_key() {
    let limits = EngineLimits {
        max_keys_per_rule: 2,
        ..EngineLimits::default()
    };
    let mut e = engine(silence_rules(), limits);
    feed(
        &mut e,
        &[log(0, "h1"), log(1, "h2"), log(2, "h1"), log(3, "h3")],
    );
    let stats = e.stats();
    let rule = stats.rules.iter().find(|r| r.name == "quiet").unwrap();
    assert_eq!(rule.keys_evicted, 1);
    let out = advance(&mut e, 10_000);
    let keys: Vec<&str> = out.iter().map(|d| d.index_value.as_str()).collect();
    assert_eq!(keys, vec!["h1", "h3"]);
}

// ---------------------------------------------------------------------------------------------
// loading

fn load_error(text: &str) -> String {
    let (_, errors) = load_files(&[("x.yml", text)]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    errors[0].message.clone()
}

#[test]
fn extension_rules_that_cannot_work_are_refused_with_lowercase_errors() {
    let cases = [
        (
            format!(
                "{FLOW}---\nname: s\ncorrelation: {{type: value_sum, rules: [flow], timespan: 1m, condition: {{gte: 1}}}}\n"
            ),
            "value_sum needs condition.field",
        ),
        (
            format!(
                "{START_END}---\nname: s\ncorrelation: {{type: absence, rules: [start], timespan: 1m}}\n"
            ),
            "absence lists exactly two rules",
        ),
        (
            format!(
                "{START_END}---\nname: s\ncorrelation: {{type: absence, rules: [start, start], timespan: 1m}}\n"
            ),
            "absence needs two different rules",
        ),
        (
            format!(
                "{START_END}---\nname: s\ncorrelation: {{type: silence, rules: [start, end], timespan: 1m}}\n"
            ),
            "silence lists exactly one rule",
        ),
        (
            format!(
                "{START_END}---\nname: s\ncorrelation: {{type: silence, rules: [start], timespan: 1m, condition: {{gte: 1}}}}\n"
            ),
            "silence takes no condition",
        ),
        (
            format!(
                "{START_END}---\nname: s\ncorrelation: {{type: absence, rules: [start, end], timespan: 1m, condition: {{field: user.name, gte: 1}}}}\n"
            ),
            "absence takes no condition",
        ),
    ];
    for (text, want) in cases {
        let msg = load_error(&text);
        assert!(msg.contains(want), "{msg:?} should contain {want:?}");
        assert_eq!(msg, msg.to_lowercase());
    }
}

#[test]
fn a_correlation_cannot_reference_an_absence_or_silence_rule() {
    let text = format!(
        "{START_END}---
name: no_end
correlation: {{type: absence, rules: [start, end], group-by: [user.name], timespan: 1m}}
---
name: many
correlation: {{type: event_count, rules: [no_end], group-by: [user.name], timespan: 1h, condition: {{gte: 2}}}}
"
    );
    let (set, errors) = load_files(&[("x.yml", &text)]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0]
        .message
        .contains("cannot feed another correlation"));
    assert_eq!(errors[0].rule.as_deref(), Some("many"));
    assert!(set.rules().iter().any(|r| r.name == "no_end"));
}

#[test]
fn absence_can_start_on_a_correlation_firing() {
    let set = load(&format!(
        "{START_END}---
name: two_starts
correlation: {{type: event_count, rules: [start], group-by: [user.name], timespan: 1m, condition: {{gte: 2}}}}
---
name: repeated_start_without_end
correlation: {{type: absence, rules: [two_starts, end], group-by: [user.name], timespan: 1m}}
"
    ));
    let mut e = engine(set, EngineLimits::default());
    let second = act(5, "start", "bob");
    let out = feed(
        &mut e,
        &[
            act(0, "start", "alice"),
            act(1, "start", "alice"),
            act(2, "end", "alice"),
            act(4, "start", "bob"),
            Arc::clone(&second),
        ],
    );
    assert!(out.is_empty(), "{out:#?}");
    let out = advance(&mut e, 100);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(&*out[0].rule, "repeated_start_without_end");
    assert_eq!(out[0].index_value, "bob");
    assert_eq!(out[0].window_start, at(5));
    assert!(Arc::ptr_eq(&out[0].events[0], &second));
}

// ---------------------------------------------------------------------------------------------
// refset: reference-set membership

/// A fixed reference set for tests: set 0 `threat_intel` holds 203.0.113.0/24, set 1 `vip_users`
/// holds `alice` (compared case-insensitively), and it counts lookups so a test can see that
/// matching really asked it.
#[derive(Debug, Default)]
struct Sets {
    lookups: std::sync::atomic::AtomicUsize,
}

impl vigil_correlate::reference::ReferenceLookup for Sets {
    fn set_id(&self, name: &str) -> Option<usize> {
        ["threat_intel", "vip_users"]
            .iter()
            .position(|n| *n == name)
    }

    fn contains(&self, set: usize, value: &vigil_parsers::event::FieldValue<'_>) -> bool {
        use vigil_parsers::event::FieldValue;
        self.lookups
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let net = vigil_correlate::net::Cidr::parse("203.0.113.0/24").unwrap();
        match (set, value) {
            (0, FieldValue::Ip(ip)) => net.contains(*ip),
            (1, v) => v.as_text().eq_ignore_ascii_case("alice"),
            _ => false,
        }
    }
}

fn load_with_sets(text: &str, sets: &Arc<Sets>) -> (RuleSet, Vec<vigil_correlate::RuleError>) {
    let data: Arc<dyn vigil_correlate::reference::ReferenceLookup> = sets.clone();
    RuleSet::from_sources_with(
        &[vigil_correlate::RuleSource {
            path: "intel.yml".into(),
            text: text.into(),
        }],
        &vigil_correlate::LoadOptions {
            apply_unserved_logsources: true,
            reference: Some(data),
            ..Default::default()
        },
    )
}

const INTEL: &str = "title: Contact with a threat-intel address
name: intel_contact
detection:
  dst: {destination.ip|refset: threat_intel}
  vip: {user.name|refset: vip_users}
  condition: dst and not vip
";

#[test]
fn refset_matches_members_of_the_named_set_and_nothing_else() {
    let sets = Arc::new(Sets::default());
    let (set, errors) = load_with_sets(INTEL, &sets);
    assert!(errors.is_empty(), "{errors:?}");
    let hit = |fields: &[(&str, &str)]| !set.matching_rules(&ev(0, fields)).is_empty();
    assert!(hit(&[
        ("destination.ip", "203.0.113.9"),
        ("user.name", "bob")
    ]));
    assert!(!hit(&[
        ("destination.ip", "203.0.114.9"),
        ("user.name", "bob")
    ]));
    assert!(!hit(&[
        ("destination.ip", "203.0.113.9"),
        ("user.name", "ALICE")
    ]));
    assert!(
        !hit(&[("user.name", "bob")]),
        "an absent field is in no set"
    );
    assert!(sets.lookups.load(std::sync::atomic::Ordering::Relaxed) >= 4);
}

#[test]
fn refset_naming_an_unknown_set_or_without_reference_data_refuses_the_rule() {
    let sets = Arc::new(Sets::default());
    let (set, errors) = load_with_sets(
        &INTEL.replace("refset: threat_intel", "refset: no_such_set"),
        &sets,
    );
    assert_eq!(set.rules().len(), 0);
    assert!(
        errors[0]
            .message
            .contains("unknown reference set `no_such_set`"),
        "{errors:?}"
    );
    let (set, errors) = load_files(&[("intel.yml", INTEL)]);
    assert_eq!(set.rules().len(), 0);
    assert!(
        errors[0]
            .message
            .contains("no reference data is configured"),
        "{errors:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// periodic: beaconing

const CONN: &str = "title: outbound connection
name: conn
detection:
  sel: {event.action: conn}
  condition: sel
";

fn beacon_rules(extra: &str) -> RuleSet {
    load(&format!(
        "{CONN}---
title: Beaconing
name: beaconing
correlation:
  type: periodic
  rules: [conn]
  group-by: [source.ip, destination.ip]
  timespan: 2h
  condition: {{gte: 8}}
{extra}"
    ))
}

fn conn(secs: i64, dst: &str) -> Arc<Event> {
    ev(
        secs,
        &[
            ("event.action", "conn"),
            ("source.ip", "10.0.0.5"),
            ("destination.ip", dst),
        ],
    )
}

fn new_detections(out: &[Detection]) -> Vec<(String, u64)> {
    out.iter()
        .filter(|d| d.kind == DetectionKind::New)
        .map(|d| (d.index_value.clone(), d.count))
        .collect()
}

#[test]
fn periodic_fires_on_a_regular_beacon_with_small_jitter() {
    // Every 60 s with up to 3 s of jitter: the 8th beat fires, later beats update.
    let jitter = [0, 2, -3, 1, 3, -2, 0, 1, -1, 2, 0, -3];
    let events: Vec<_> = jitter
        .iter()
        .enumerate()
        .map(|(i, j)| conn(i as i64 * 60 + j, "198.51.100.9"))
        .collect();
    let (out, _) = run(
        beacon_rules("  max-jitter: 0.1\n  min-interval: 30s\n"),
        EngineLimits::default(),
        &events,
    );
    assert_eq!(new_detections(&out), vec![("10.0.0.5".to_owned(), 8)]);
    let updates = out
        .iter()
        .filter(|d| d.kind == DetectionKind::Update)
        .count();
    assert_eq!(updates, 4);
}

#[test]
fn periodic_ignores_irregular_traffic_and_tight_loops() {
    // A person browsing: gaps all over the place.
    let gaps = [5, 120, 7, 300, 45, 2, 900, 30, 61, 15, 400, 3];
    let mut t = 0;
    let browsing: Vec<_> = gaps
        .iter()
        .map(|g| {
            t += g;
            conn(t, "198.51.100.9")
        })
        .collect();
    let (out, _) = run(beacon_rules(""), EngineLimits::default(), &browsing);
    assert!(new_detections(&out).is_empty(), "{out:?}");
    // Perfectly regular but every second: a polling loop, under the 10 s default minimum.
    let tight: Vec<_> = (0..20).map(|i| conn(i, "198.51.100.9")).collect();
    let (out, _) = run(beacon_rules(""), EngineLimits::default(), &tight);
    assert!(new_detections(&out).is_empty(), "{out:?}");
}

#[test]
fn periodic_sees_through_a_few_stray_connections_and_keys_apart() {
    // Beacon every 300 s to one address, plus two manual visits; a second address gets
    // irregular traffic from the same host and stays quiet.
    let mut events: Vec<_> = (0..10).map(|i| conn(i * 300, "203.0.113.50")).collect();
    events.push(conn(1_000, "203.0.113.50"));
    events.push(conn(2_222, "203.0.113.50"));
    for t in [10, 500, 520, 2_000, 2_900] {
        events.push(conn(t, "192.0.2.80"));
    }
    events.sort_by_key(|e| e.timestamp);
    let (out, _) = run(beacon_rules(""), EngineLimits::default(), &events);
    let fired: Vec<_> = out
        .iter()
        .filter(|d| d.kind == DetectionKind::New)
        .map(|d| d.group.clone())
        .collect();
    assert_eq!(fired.len(), 1, "{out:?}");
    assert!(fired[0].contains(&("destination.ip".to_owned(), "203.0.113.50".to_owned())));
}

#[test]
fn periodic_options_are_checked_at_load() {
    let bad = [
        ("  max-jitter: 1.5\n", "max-jitter must be a fraction"),
        ("  min-interval: soon\n", "min-interval"),
    ];
    for (extra, want) in bad {
        let text = format!(
            "{CONN}---
title: Beaconing
name: beaconing
correlation:
  type: periodic
  rules: [conn]
  group-by: [source.ip]
  timespan: 1h
  condition: {{gte: 5}}
{extra}"
        );
        let (set, errors) = load_files(&[("b.yml", &text)]);
        assert_eq!(set.rules().len(), 1, "only the base rule loads");
        assert!(errors[0].message.contains(want), "{errors:?}");
    }
    let text = format!(
        "{CONN}---
title: Count
name: count
correlation:
  type: event_count
  rules: [conn]
  group-by: [source.ip]
  timespan: 1h
  condition: {{gte: 5}}
  max-jitter: 0.2
"
    );
    let (_, errors) = load_files(&[("c.yml", &text)]);
    assert!(
        errors[0].message.contains("apply to periodic only"),
        "{errors:?}"
    );
}
