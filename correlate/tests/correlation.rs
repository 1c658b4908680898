//! `event_count` correlation: thresholds, event-time windows, out-of-order arrival, groups,
//! re-arming, bounded state, offense fields.

use std::sync::Arc;

use vigil_correlate::{DetectionKind, EngineLimits};
use vigil_parsers::event::Event;

use crate::common::{ev, load, run};

fn brute_force(condition: &str, timespan: &str, generate: bool) -> String {
    format!(
        "title: SSH password failure
name: ssh_failed_password
logsource: {{product: linux, service: sshd}}
detection:
  selection: {{event.category: authentication, event.outcome: failure}}
  condition: selection
---
title: SSH brute force
name: ssh_brute_force
correlation:
  type: event_count
  rules: [ssh_failed_password]
  group-by: [source.ip]
  timespan: {timespan}
  condition: {condition}
  generate: {generate}
level: high
tags: [attack.credential_access, attack.t1110.001]
vigil:
  offense: {{relevance: 6, credibility: 8}}
  suppress: 1h
"
    )
}

fn failure(secs: i64, ip: &str) -> Arc<Event> {
    ev(
        secs,
        &[
            ("process.name", "sshd"),
            ("event.category", "authentication"),
            ("event.outcome", "failure"),
            ("source.ip", ip),
        ],
    )
}

const IP: &str = "203.0.113.7";

#[test]
fn nine_failures_are_silent_ten_fire_once_and_the_eleventh_updates() {
    let set = load(&brute_force("{gte: 10}", "5m", false));
    let events: Vec<_> = (0..11).map(|i| failure(i * 5, IP)).collect();
    let (out, engine) = run(set, EngineLimits::default(), &events[..9]);
    assert!(out.is_empty(), "9 events fired: {out:?}");
    drop(engine);

    let set = load(&brute_force("{gte: 10}", "5m", false));
    let (out, engine) = run(set, EngineLimits::default(), &events);
    assert_eq!(out.len(), 2);
    let new = &out[0];
    assert_eq!(new.kind, DetectionKind::New);
    assert_eq!(&*new.rule, "ssh_brute_force");
    assert_eq!(&*new.title, "SSH brute force");
    assert_eq!(new.count, 10);
    assert_eq!(new.events.len(), 10);
    assert_eq!(new.group, vec![("source.ip".to_owned(), IP.to_owned())]);
    assert_eq!(&*new.index_field, "source.ip");
    assert_eq!(new.index_value, IP);
    assert_eq!(new.window_start, events[0].timestamp);
    assert_eq!(new.first_seen, events[0].timestamp);
    assert_eq!(new.last_seen, events[9].timestamp);
    assert_eq!((new.relevance, new.credibility, new.severity), (6, 8, 7));
    assert_eq!(new.level.as_deref(), Some("high"));
    assert_eq!(new.tags.len(), 2);
    let upd = &out[1];
    assert_eq!(upd.kind, DetectionKind::Update);
    assert_eq!(upd.count, 1);
    assert_eq!(upd.events.len(), 1);
    assert!(Arc::ptr_eq(&upd.events[0], &events[10]));
    assert_eq!(upd.window_start, events[0].timestamp);
    assert_eq!(upd.index_value, IP);
    let stats = engine.stats();
    let base = stats
        .rules
        .iter()
        .find(|r| r.name == "ssh_failed_password")
        .unwrap();
    let corr = stats
        .rules
        .iter()
        .find(|r| r.name == "ssh_brute_force")
        .unwrap();
    assert_eq!((base.matches, base.detections), (11, 0));
    assert_eq!(
        (corr.matches, corr.detections, corr.updates, corr.keys_live),
        (11, 1, 1, 1)
    );
    assert_eq!(stats.events, 11);
}

#[test]
fn events_spread_over_more_than_the_timespan_never_fire() {
    // 30 failures 40 s apart: at most 8 fall in any 5 minute window.
    let set = load(&brute_force("{gte: 10}", "5m", false));
    let events: Vec<_> = (0..30).map(|i| failure(i * 40, IP)).collect();
    let (out, _) = run(set, EngineLimits::default(), &events);
    assert!(out.is_empty());
}

#[test]
fn the_window_is_half_open_in_event_time() {
    // Events at 0..=300 s with 5m span: the event at 300 s pushes the one at 0 s out.
    let set = load(&brute_force("{gte: 3}", "5m", false));
    let events = vec![failure(0, IP), failure(150, IP), failure(300, IP)];
    let (out, _) = run(set, EngineLimits::default(), &events);
    assert!(out.is_empty());
    let set = load(&brute_force("{gte: 3}", "5m", false));
    let events = vec![failure(1, IP), failure(150, IP), failure(300, IP)];
    let (out, _) = run(set, EngineLimits::default(), &events);
    assert_eq!(out.len(), 1);
}

#[test]
fn out_of_order_events_inside_the_window_count() {
    let set = load(&brute_force("{gte: 10}", "5m", false));
    let order = [9, 3, 0, 7, 1, 8, 2, 6, 4, 5];
    let events: Vec<_> = order.iter().map(|i| failure(i * 10, IP)).collect();
    let (out, _) = run(set, EngineLimits::default(), &events);
    assert_eq!(out.len(), 1);
    let ts: Vec<_> = out[0].events.iter().map(|e| e.timestamp).collect();
    let mut sorted = ts.clone();
    sorted.sort();
    assert_eq!(ts, sorted, "events are in time order");
    assert_eq!(out[0].first_seen, crate::common::at(0));
    assert_eq!(out[0].last_seen, crate::common::at(90));
}

#[test]
fn events_later_than_the_window_are_not_counted() {
    let set = load(&brute_force("{gte: 10}", "5m", false));
    let mut events: Vec<_> = (0..9).map(|i| failure(1000 + i, IP)).collect();
    events.push(failure(100, IP)); // 900 s behind: outside the window
    let (out, engine) = run(set, EngineLimits::default(), &events);
    assert!(out.is_empty());
    let corr = engine
        .stats()
        .rules
        .into_iter()
        .find(|r| r.name == "ssh_brute_force")
        .unwrap();
    assert_eq!(corr.late_events, 1);
}

#[test]
fn two_group_keys_are_counted_separately() {
    let set = load(&brute_force("{gte: 10}", "5m", false));
    let mut events = Vec::new();
    for i in 0..10 {
        events.push(failure(i, "198.51.100.1"));
        if i < 9 {
            events.push(failure(i, "198.51.100.2"));
        }
    }
    let (out, engine) = run(set, EngineLimits::default(), &events);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].index_value, "198.51.100.1");
    assert_eq!(out[0].count, 10);
    let corr = engine
        .stats()
        .rules
        .into_iter()
        .find(|r| r.name == "ssh_brute_force")
        .unwrap();
    assert_eq!(corr.keys_live, 2);
}

#[test]
fn a_key_re_arms_when_the_condition_stops_holding() {
    let set = load(&brute_force("{gte: 3}", "1m", false));
    let events = vec![
        failure(0, IP),
        failure(1, IP),
        failure(2, IP), // New
        failure(3, IP), // Update
        failure(200, IP),
        failure(201, IP),
        failure(202, IP), // New again
    ];
    let (out, _) = run(set, EngineLimits::default(), &events);
    let kinds: Vec<_> = out.iter().map(|d| d.kind).collect();
    assert_eq!(
        kinds,
        vec![
            DetectionKind::New,
            DetectionKind::Update,
            DetectionKind::New
        ]
    );
    assert_eq!(out[2].count, 3);
    assert_eq!(out[2].window_start, crate::common::at(200));
}

#[test]
fn range_conditions_fire_inside_the_range_and_re_arm_above_it() {
    let set = load(&brute_force("{gte: 3, lte: 4}", "5m", false));
    let events: Vec<_> = (0..7).map(|i| failure(i, IP)).collect();
    let (out, _) = run(set, EngineLimits::default(), &events);
    let kinds: Vec<_> = out.iter().map(|d| (d.kind, d.count)).collect();
    assert_eq!(
        kinds,
        vec![(DetectionKind::New, 3), (DetectionKind::Update, 1)]
    );

    for (cond, n, fires) in [
        ("{gt: 3}", 3, false),
        ("{gt: 3}", 4, true),
        ("{eq: 2}", 2, true),
        ("{lt: 3}", 1, true),
        ("{lte: 1}", 1, true),
    ] {
        let set = load(&brute_force(cond, "5m", false));
        let events: Vec<_> = (0..n).map(|i| failure(i, IP)).collect();
        let (out, _) = run(set, EngineLimits::default(), &events);
        let news = out.iter().filter(|d| d.kind == DetectionKind::New).count();
        assert_eq!(news > 0, fires, "{cond} with {n} events");
    }
}

#[test]
fn referenced_rules_do_not_generate_unless_the_correlation_says_so() {
    let set = load(&brute_force("{gte: 100}", "5m", false));
    let (out, _) = run(set, EngineLimits::default(), &[failure(0, IP)]);
    assert!(out.is_empty());
    let set = load(&brute_force("{gte: 100}", "5m", true));
    assert!(set.rules().iter().all(|r| r.generate));
    let (out, _) = run(set, EngineLimits::default(), &[failure(0, IP)]);
    assert_eq!(out.len(), 1);
    assert_eq!(&*out[0].rule, "ssh_failed_password");
    assert_eq!(out[0].count, 1);
    assert!(out[0].group.is_empty());
    assert_eq!(out[0].index_value, IP);
}

#[test]
fn an_unreferenced_detection_rule_fires_per_event() {
    let set = load(
        "title: Root login\nname: root_login\nlevel: critical\ndetection:\n  sel: {user.name: root}\n  condition: sel\nvigil:\n  offense: {index: user.name}\n",
    );
    let events = vec![
        ev(0, &[("user.name", "root")]),
        ev(1, &[("user.name", "root")]),
    ];
    let (out, engine) = run(set, EngineLimits::default(), &events);
    assert_eq!(out.len(), 2);
    assert!(out
        .iter()
        .all(|d| d.kind == DetectionKind::New && d.count == 1));
    assert_eq!(&*out[0].index_field, "user.name");
    assert_eq!(out[0].index_value, "root");
    assert_eq!(out[0].severity, 9);
    assert_eq!(engine.stats().rules[0].detections, 2);
}

#[test]
fn an_event_missing_a_group_by_field_counts_toward_no_group() {
    let set = load(&brute_force("{gte: 2}", "5m", false));
    let mut no_ip = (*failure(0, IP)).clone();
    no_ip.source_ip = None;
    let events = vec![Arc::new(no_ip.clone()), Arc::new(no_ip), failure(1, IP)];
    let (out, engine) = run(set, EngineLimits::default(), &events);
    assert!(out.is_empty());
    let corr = engine
        .stats()
        .rules
        .into_iter()
        .find(|r| r.name == "ssh_brute_force")
        .unwrap();
    assert_eq!(corr.ungrouped_events, 2);
}

#[test]
fn key_and_event_eviction_are_counted() {
    let set = load(&brute_force("{gte: 3}", "5m", false));
    let limits = EngineLimits {
        max_keys_per_rule: 2,
        max_events_per_key: 10,
        ..EngineLimits::default()
    };
    let events = vec![
        failure(0, "198.51.100.1"),
        failure(1, "198.51.100.2"),
        failure(2, "198.51.100.1"),
        failure(3, "198.51.100.3"), // evicts .2 (least recently updated)
        failure(4, "198.51.100.1"), // .1 still has 3 events: fires
    ];
    let (out, engine) = run(set, limits, &events);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].index_value, "198.51.100.1");
    let stats = engine.stats();
    assert_eq!(stats.keys_evicted, 1);
    assert_eq!(stats.keys_live, 2);

    let set = load(&brute_force("{gte: 100}", "5m", false));
    let limits = EngineLimits {
        max_keys_per_rule: 10,
        max_events_per_key: 5,
        ..EngineLimits::default()
    };
    let events: Vec<_> = (0..8).map(|i| failure(i, IP)).collect();
    let (_, engine) = run(set, limits, &events);
    assert_eq!(engine.stats().events_evicted, 3);
}

#[test]
fn idle_keys_expire_once_far_behind_the_rule_watermark() {
    let set = load(&brute_force("{gte: 100}", "1m", false));
    let events = vec![failure(0, "198.51.100.1"), failure(1000, "198.51.100.2")];
    let (_, engine) = run(set, EngineLimits::default(), &events);
    let corr = engine
        .stats()
        .rules
        .into_iter()
        .find(|r| r.name == "ssh_brute_force")
        .unwrap();
    assert_eq!((corr.keys_live, corr.keys_expired), (1, 1));
}

#[test]
fn an_event_matching_two_source_rules_counts_once() {
    let text = "title: a\nname: a\ndetection:\n  s: {user.name: root}\n  condition: s\n---\ntitle: b\nname: b\ndetection:\n  s: {event.outcome: failure}\n  condition: s\n---\ntitle: c\nname: c\ncorrelation:\n  type: event_count\n  rules: [a, b]\n  group-by: [user.name]\n  timespan: 1m\n  condition: {gte: 2}\n";
    let set = load(text);
    let both = ev(0, &[("user.name", "root"), ("event.outcome", "failure")]);
    let (out, _) = run(set, EngineLimits::default(), &[both]);
    assert!(out.is_empty());
    let set = load(text);
    let events = vec![
        ev(0, &[("user.name", "root"), ("event.outcome", "failure")]),
        ev(1, &[("user.name", "root")]),
    ];
    let (out, _) = run(set, EngineLimits::default(), &events);
    assert_eq!(out.len(), 1);
    assert_eq!(&*out[0].index_field, "user.name");
    assert_eq!(out[0].severity, 5);
}

#[test]
fn correlations_without_group_by_count_all_events_together() {
    let text = "title: a\nid: 5d0c6d3e-0000-4000-8000-000000000001\ndetection:\n  s: {user.name: root}\n  condition: s\n---\ntitle: c\nname: c\ncorrelation:\n  type: event_count\n  rules: [5d0c6d3e-0000-4000-8000-000000000001]\n  timespan: 1m\n  condition: {gte: 2}\n";
    let set = load(text);
    assert_eq!(set.rules()[0].name, "5d0c6d3e-0000-4000-8000-000000000001");
    let events = vec![
        ev(0, &[("user.name", "root"), ("source.ip", "192.0.2.1")]),
        ev(1, &[("user.name", "root"), ("source.ip", "192.0.2.2")]),
    ];
    let (out, _) = run(set, EngineLimits::default(), &events);
    assert_eq!(out.len(), 1);
    assert!(out[0].group.is_empty());
    assert_eq!(&*out[0].index_field, "source.ip");
    assert_eq!(out[0].index_value, "192.0.2.1");
}

#[test]
fn a_firing_key_keeps_times_not_events_and_its_next_firing_still_counts_exactly() {
    // gte 3 over 10 s. 0, 1, 2 fire (New, 3 events); 9 and 11 update while the window still
    // holds 3 or more; at 20 the window (10, 20] holds 11 and 20 only, so the key re-arms; a
    // second event at 20 makes it 3 again: a New whose count is exact (11, 20, 20) while it
    // reports and carries only the two events at 20 (11 was reported by an Update and kept only
    // its time; the first 20 stopped the condition holding, so nothing reported it yet).
    let set = load(&brute_force("{gte: 3}", "10s", false));
    let events = vec![
        failure(0, IP),
        failure(1, IP),
        failure(2, IP),
        failure(9, IP),
        failure(11, IP),
        failure(20, IP),
        failure(20, IP),
    ];
    let (out, _) = run(set, EngineLimits::default(), &events);
    let summary: Vec<_> = out
        .iter()
        .map(|d| (d.kind, d.count, d.fresh, d.events.len()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (DetectionKind::New, 3, 3, 3),
            (DetectionKind::Update, 1, 1, 1),
            (DetectionKind::Update, 1, 1, 1),
            (DetectionKind::New, 3, 2, 2),
        ]
    );
    assert_eq!(out[3].window_start, crate::common::at(11));
    assert!(Arc::ptr_eq(&out[3].events[0], &events[5]));
    assert!(Arc::ptr_eq(&out[3].events[1], &events[6]));
}
