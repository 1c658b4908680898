//! Each occurrence reported once (`Detection::fresh`) for every correlation type, and the byte
//! budget for event payloads held in windows (`EngineLimits::max_payload_bytes`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::Duration;
use vigil_correlate::{
    approx_event_bytes, Detection, DetectionKind, Engine, EngineLimits, EngineStats,
};
use vigil_parsers::event::Event;

use crate::common::{at, ev, load, FAILED, OK};

const DISCOVERY: &str = "title: discovery
name: discovery
detection:
  sel: {event.outcome: unknown}
  condition: sel
";

/// An event `ms` milliseconds after the epoch of the tests, with a unique `tid` (in `extra`).
fn event(ms: i64, outcome: &str, ip: &str, user: &str, tid: usize) -> Arc<Event> {
    let t = at(0) + Duration::milliseconds(ms);
    let mut e = Event::new(t, t);
    for (k, v) in [
        ("event.outcome", outcome),
        ("source.ip", ip),
        ("user.name", user),
        ("tid", &tid.to_string()),
    ] {
        e.set(k, v).unwrap();
    }
    Arc::new(e)
}

fn tid(e: &Event) -> usize {
    e.extra.get("tid").unwrap().parse().unwrap()
}

fn correlation(kind: &str, rules: &str, group: &str, timespan: &str, extra: &str) -> String {
    format!(
        "{FAILED}---
{OK}---
{DISCOVERY}---
title: corr
name: corr
correlation:
  type: {kind}
  rules: {rules}
  group-by: [{group}]
  timespan: {timespan}
{extra}"
    )
}

fn feed(engine: &mut Engine, events: &[Arc<Event>]) -> Vec<Detection> {
    let mut out = Vec::new();
    for e in events {
        engine.process(e, &mut out);
    }
    out
}

fn rule_stats<'a>(stats: &'a EngineStats, name: &str) -> &'a vigil_correlate::RuleStats {
    stats.rules.iter().find(|r| r.name == name).unwrap()
}

#[test]
fn a_key_that_re_arms_reports_only_new_occurrences_in_its_next_new() {
    // The service adds detections into offenses: event_count gte 10 over 5m, ten failures at
    // 0-9 s fire (fresh 10); one at 305 s leaves 6, 7, 8, 9 and itself in the window (re-arm);
    // five more at 305.1-305.5 s make ten again: a New with count 10 but fresh 6, carrying only
    // those six events. 16 distinct events, 16 reported.
    let text = correlation(
        "event_count",
        "[failed]",
        "source.ip",
        "5m",
        "  condition: {gte: 10}\n",
    );
    let mut events: Vec<_> = (0..10)
        .map(|i| event(i * 1000, "failure", "192.0.2.1", "u", i as usize))
        .collect();
    events.push(event(305_000, "failure", "192.0.2.1", "u", 10));
    for i in 1..=5 {
        events.push(event(
            305_000 + i * 100,
            "failure",
            "192.0.2.1",
            "u",
            10 + i as usize,
        ));
    }
    let mut engine = Engine::new(Arc::new(load(&text)), EngineLimits::default());
    let out = feed(&mut engine, &events);
    let summary: Vec<_> = out
        .iter()
        .map(|d| (d.kind, d.count, d.fresh, d.events.len()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (DetectionKind::New, 10, 10, 10),
            (DetectionKind::New, 10, 6, 6)
        ]
    );
    let second: Vec<_> = out[1].events.iter().map(|e| tid(e)).collect();
    assert_eq!(second, vec![10, 11, 12, 13, 14, 15]);
    assert_eq!(out.iter().map(|d| d.fresh).sum::<u64>(), 16);

    // With an Update in between: an eleventh failure at 10 s updates (fresh 1); the window at
    // 305 s then holds 6-10 and 305 (re-arm), and four more fire a New reporting only the five
    // occurrences no detection reported.
    let mut events: Vec<_> = (0..11)
        .map(|i| event(i * 1000, "failure", "192.0.2.1", "u", i as usize))
        .collect();
    for i in 0..5 {
        events.push(event(
            305_000 + i * 100,
            "failure",
            "192.0.2.1",
            "u",
            11 + i as usize,
        ));
    }
    let mut engine = Engine::new(Arc::new(load(&text)), EngineLimits::default());
    let out = feed(&mut engine, &events);
    let summary: Vec<_> = out
        .iter()
        .map(|d| (d.kind, d.count, d.fresh, d.events.len()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (DetectionKind::New, 10, 10, 10),
            (DetectionKind::Update, 1, 1, 1),
            (DetectionKind::New, 10, 5, 5)
        ]
    );
    assert_eq!(out.iter().map(|d| d.fresh).sum::<u64>(), 16);
}

#[test]
fn single_event_detections_report_one_fresh_occurrence() {
    let set = load(FAILED);
    let mut engine = Engine::new(Arc::new(set), EngineLimits::default());
    let out = feed(
        &mut engine,
        &[
            event(0, "failure", "192.0.2.1", "u", 0),
            event(0, "failure", "192.0.2.1", "u", 1),
        ],
    );
    let fresh: Vec<_> = out.iter().map(|d| (d.count, d.fresh)).collect();
    assert_eq!(fresh, vec![(1, 1), (1, 1)]);
}

/// A deterministic pseudo-random stream, in time order (ties allowed): events of the given
/// outcomes over three source IPs and three users.
fn stream(seed: u64, n: usize, outcomes: &[&str], max_step_ms: u64) -> Vec<Arc<Event>> {
    let mut x = seed;
    let mut next = move || {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        x >> 33
    };
    let mut t = 0i64;
    (0..n)
        .map(|i| {
            t += i64::try_from(next() % max_step_ms).unwrap();
            let outcome = outcomes[usize::try_from(next()).unwrap() % outcomes.len()];
            let ip = ["192.0.2.1", "192.0.2.2", "192.0.2.3"][usize::try_from(next() % 3).unwrap()];
            let user = ["a", "b", "c"][usize::try_from(next() % 3).unwrap()];
            event(t, outcome, ip, user, i)
        })
        .collect()
}

/// Feeds `events` (every one an occurrence of `corr` for its `source.ip`) one at a time and
/// checks, against the window computed independently (`(newest - span, newest]` of the key's
/// occurrences), that every detection of `corr` reports each occurrence once: a New's `count` is
/// the window's size and its events are the window's occurrences not reported before, an Update
/// reports the event that caused it, and over the whole stream the sum of `fresh` per key is the
/// number of distinct occurrences ever part of a firing window. Returns (News, Updates, News
/// whose window overlapped earlier reports).
fn check_each_occurrence_reported_once(
    text: &str,
    span_ms: i64,
    events: &[Arc<Event>],
) -> (usize, usize, usize) {
    let mut engine = Engine::new(Arc::new(load(text)), EngineLimits::default());
    let mut fed: HashMap<String, Vec<(i64, usize)>> = HashMap::new();
    let mut reported: HashMap<String, HashSet<usize>> = HashMap::new();
    let mut fresh_sum: HashMap<String, u64> = HashMap::new();
    let (mut news, mut updates, mut overlapping) = (0, 0, 0);
    let mut out = Vec::new();
    for e in events {
        let ip = e.source_ip.unwrap().to_string();
        let ms = e.timestamp.timestamp_millis();
        let occurrences = fed.entry(ip.clone()).or_default();
        occurrences.push((ms, tid(e)));
        out.clear();
        engine.process(e, &mut out);
        for d in out.iter().filter(|d| &*d.rule == "corr") {
            assert_eq!(d.group[0].1, ip);
            let seen = reported.entry(ip.clone()).or_default();
            let window: Vec<usize> = occurrences
                .iter()
                .filter(|(t, _)| *t > ms - span_ms)
                .map(|(_, id)| *id)
                .collect();
            let expected: Vec<usize> = match d.kind {
                DetectionKind::New => {
                    news += 1;
                    assert_eq!(d.count, window.len() as u64, "{d:?}");
                    if window.iter().any(|id| seen.contains(id)) {
                        overlapping += 1;
                    }
                    let mut fresh: Vec<usize> =
                        window.into_iter().filter(|id| !seen.contains(id)).collect();
                    fresh.sort_unstable();
                    fresh
                }
                DetectionKind::Update => {
                    updates += 1;
                    assert_eq!(d.count, 1);
                    vec![tid(e)]
                }
            };
            let mut carried: Vec<usize> = d.events.iter().map(|x| tid(x)).collect();
            carried.sort_unstable();
            assert_eq!(carried, expected, "{:?} at {ms} ms", d.kind);
            assert_eq!(d.fresh, expected.len() as u64);
            for id in carried {
                assert!(seen.insert(id), "occurrence {id} reported twice");
            }
            *fresh_sum.entry(ip.clone()).or_default() += d.fresh;
        }
    }
    for (ip, seen) in &reported {
        assert_eq!(fresh_sum[ip], seen.len() as u64, "{ip}");
    }
    (news, updates, overlapping)
}

#[test]
fn every_correlation_type_reports_each_occurrence_once() {
    let cases: Vec<(String, i64, Vec<&str>)> = vec![
        (
            correlation(
                "event_count",
                "[failed]",
                "source.ip",
                "30s",
                "  condition: {gte: 4}\n",
            ),
            30_000,
            vec!["failure"],
        ),
        (
            correlation(
                "event_count",
                "[failed]",
                "source.ip",
                "30s",
                "  condition: {gte: 3, lte: 5}\n",
            ),
            30_000,
            vec!["failure"],
        ),
        (
            correlation(
                "value_count",
                "[failed]",
                "source.ip",
                "30s",
                "  condition: {field: user.name, gte: 3}\n",
            ),
            30_000,
            vec!["failure"],
        ),
        (
            correlation(
                "temporal",
                "[failed, ok, discovery]",
                "source.ip",
                "20s",
                "",
            ),
            20_000,
            vec!["failure", "success", "unknown"],
        ),
        (
            correlation("temporal_ordered", "[failed, ok]", "source.ip", "20s", ""),
            20_000,
            vec!["failure", "success"],
        ),
    ];
    for (text, span, outcomes) in cases {
        let mut totals = (0, 0, 0);
        for seed in 1..=4 {
            let events = stream(seed, 400, &outcomes, 9_000);
            let (n, u, o) = check_each_occurrence_reported_once(&text, span, &events);
            totals = (totals.0 + n, totals.1 + u, totals.2 + o);
        }
        // The streams exercise re-firing over windows that overlap earlier reports.
        assert!(
            totals.0 > 10 && totals.1 > 10 && totals.2 > 5,
            "{totals:?} for\n{text}"
        );
    }
}

#[test]
fn a_chained_correlation_reports_each_inner_firing_once() {
    // Inner: three failures of a user within a minute. Outer: three inner firings within 10m.
    // Bursts (three failures each) at 0, 100, 200 s fire the outer (New, fresh 3); bursts at 700
    // and 780 s: at 702 the window (102, 702] holds 202 and 702 (re-arm), at 782 three again: a
    // New with count 3 but fresh 2, carrying the events that made the inner fire at 702 and 782.
    let text = format!(
        "{FAILED}---
title: many failures
name: many_failures
correlation:
  type: event_count
  rules: [failed]
  group-by: [user.name]
  timespan: 1m
  condition: {{gte: 3}}
---
title: repeated bursts
name: bursts
correlation:
  type: event_count
  rules: [many_failures]
  group-by: [user.name]
  timespan: 10m
  condition: {{gte: 3}}
"
    );
    let mut events = Vec::new();
    for burst in [0i64, 100, 200, 700, 780] {
        for s in 0..3 {
            events.push(event(
                (burst + s) * 1000,
                "failure",
                "192.0.2.1",
                "bob",
                events.len(),
            ));
        }
    }
    let mut engine = Engine::new(Arc::new(load(&text)), EngineLimits::default());
    let out = feed(&mut engine, &events);
    let summary: Vec<_> = out
        .iter()
        .map(|d| {
            let times: Vec<_> = d.events.iter().map(|e| e.timestamp).collect();
            (d.kind, d.count, d.fresh, times)
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (DetectionKind::New, 3, 3, vec![at(2), at(102), at(202)]),
            (DetectionKind::New, 3, 2, vec![at(702), at(782)]),
        ]
    );
    assert_eq!(out.iter().map(|d| d.fresh).sum::<u64>(), 5);
}

#[test]
fn approx_event_bytes_grows_with_the_payload() {
    let small = ev(0, &[("event.outcome", "failure")]);
    let mut big = (*small).clone();
    big.raw = vec![b'x'; 65_536];
    big.extra
        .insert("capture".into(), "y".repeat(65_536).into());
    let (s, b) = (approx_event_bytes(&small), approx_event_bytes(&big));
    assert!(s >= std::mem::size_of::<Event>() + "failure".len(), "{s}");
    assert!(b >= s + 2 * 65_536, "{s} {b}");
}

#[test]
fn a_tiny_payload_budget_samples_evidence_and_keeps_counts_exact() {
    let text = correlation(
        "event_count",
        "[failed]",
        "source.ip",
        "5m",
        "  condition: {gte: 10}\n",
    );
    let events: Vec<_> = (0..10)
        .map(|i| event(i * 1000, "failure", "192.0.2.1", "u", i as usize))
        .collect();
    let size = approx_event_bytes(&events[0]);
    let limits = EngineLimits {
        max_payload_bytes: 3 * size,
        ..EngineLimits::default()
    };
    let mut engine = Engine::new(Arc::new(load(&text)), limits);
    let mut out = Vec::new();
    for e in &events {
        engine.process(e, &mut out);
        let stats = engine.stats();
        assert!(stats.payload_bytes <= 3 * size as u64, "{stats:?}");
        assert!(stats.approx_bytes >= stats.payload_bytes);
    }
    assert_eq!(out.len(), 1);
    let d = &out[0];
    assert_eq!((d.kind, d.count, d.fresh), (DetectionKind::New, 10, 10));
    assert!(
        !d.events.is_empty() && d.events.len() < 10,
        "{}",
        d.events.len()
    );
    // The newest evidence survives; what is carried is in time order.
    let ids: Vec<_> = d.events.iter().map(|e| tid(e)).collect();
    assert_eq!(ids.last(), Some(&9));
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let stats = engine.stats();
    let corr = rule_stats(&stats, "corr");
    assert_eq!(corr.payloads_dropped, 10 - d.events.len() as u64);
    assert_eq!(stats.payloads_dropped, corr.payloads_dropped);
    // The New took the rest: nothing held.
    assert_eq!(stats.payload_bytes, 0);

    // A zero budget keeps no payload in windows: only the event that fires the New travels with
    // it (it never waits in a window), and counts stay exact.
    let limits = EngineLimits {
        max_payload_bytes: 0,
        ..EngineLimits::default()
    };
    let mut engine = Engine::new(Arc::new(load(&text)), limits);
    let out = feed(&mut engine, &events);
    assert_eq!(
        (out[0].count, out[0].fresh, out[0].events.len()),
        (10, 10, 1)
    );
    assert!(Arc::ptr_eq(&out[0].events[0], &events[9]));
    assert_eq!(engine.stats().payloads_dropped, 9);
}

#[test]
fn payloads_of_the_least_recently_updated_keys_go_first_across_correlations() {
    // Two correlations; a budget of four (same-sized) events. Two failures (rule `fails`), then
    // three successes (rule `oks`): the fifth payload exceeds the budget, and the key idle the
    // longest, in the other correlation, loses its payloads. Both then fire with exact counts;
    // only `fails` carries fewer events.
    let text = format!(
        "{FAILED}---
{OK}---
title: fails
name: fails
correlation:
  type: event_count
  rules: [failed]
  group-by: [source.ip]
  timespan: 5m
  condition: {{gte: 4}}
---
title: oks
name: oks
correlation:
  type: event_count
  rules: [ok]
  group-by: [source.ip]
  timespan: 5m
  condition: {{gte: 4}}
"
    );
    let outcomes = [
        "failure", "failure", "success", "success", "success", "failure", "failure", "success",
    ];
    let events: Vec<_> = outcomes
        .iter()
        .enumerate()
        .map(|(i, o)| event(i as i64 * 1000, o, "192.0.2.1", "u", i))
        .collect();
    let size = approx_event_bytes(&events[0]);
    assert!(events.iter().all(|e| approx_event_bytes(e) == size));
    let limits = EngineLimits {
        max_payload_bytes: 4 * size,
        ..EngineLimits::default()
    };
    let mut engine = Engine::new(Arc::new(load(&text)), limits);
    let out = feed(&mut engine, &events);
    let summary: Vec<_> = out
        .iter()
        .map(|d| {
            let ids: Vec<_> = d.events.iter().map(|e| tid(e)).collect();
            (&*d.rule, d.count, d.fresh, ids)
        })
        .collect();
    assert_eq!(
        summary,
        vec![("fails", 4, 4, vec![5, 6]), ("oks", 4, 4, vec![2, 3, 4, 7]),]
    );
    let stats = engine.stats();
    assert_eq!(rule_stats(&stats, "fails").payloads_dropped, 2);
    assert_eq!(rule_stats(&stats, "oks").payloads_dropped, 0);
    assert_eq!(stats.payloads_dropped, 2);
}

#[test]
fn payload_bytes_follow_windows_sliding_and_keys_expiring() {
    // Armed keys hold their payloads; sliding and expiry release them from the estimate.
    let text = correlation(
        "event_count",
        "[failed]",
        "source.ip",
        "1m",
        "  condition: {gte: 100}\n",
    );
    let a = event(0, "failure", "192.0.2.1", "u", 0);
    let size = approx_event_bytes(&a) as u64;
    let mut engine = Engine::new(Arc::new(load(&text)), EngineLimits::default());
    feed(
        &mut engine,
        &[a, event(1000, "failure", "192.0.2.2", "u", 1)],
    );
    assert_eq!(engine.stats().payload_bytes, 2 * size);
    // 192.0.2.1 slides to one occurrence; 192.0.2.2 expires (two timespans behind).
    feed(
        &mut engine,
        &[event(200_000, "failure", "192.0.2.1", "u", 2)],
    );
    let stats = engine.stats();
    assert_eq!(stats.keys_live, 1);
    assert_eq!(stats.payload_bytes, size);
    assert_eq!(rule_stats(&stats, "corr").payload_bytes, size);
}
