//! The scaled-out split is exact: stage-1 engines that only route single-event matches
//! ([`Engine::route`]) and stage-2 engines that own the windows of their partitions
//! ([`Engine::feed_routed`]) give, together, exactly the detections one embedded engine gives
//! ([`Engine::process`]) for the same events, for any number of nodes. This is the property the
//! Kafka deployment relies on (matches keyed by correlation and group-by values, so each window
//! lives in one partition); here the "topic" is in memory.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use vigil_correlate::{Detection, Engine, EngineLimits, Routed, RuleSet};
use vigil_parsers::event::Event;

use crate::common::{ev, load};

/// Rules grouped by source address, by user, and by (user, destination), as the scaled-out
/// issue asks, plus value_count, temporal with aliases, and a chained correlation.
const RULES: &str = "title: failed login
name: fail
detection:
  sel: {event.outcome: failure}
  condition: sel
---
title: successful login
name: ok
detection:
  sel: {event.outcome: success}
  condition: sel
---
title: brute force by source
name: by_source
correlation: {type: event_count, rules: [fail], group-by: [source.ip], timespan: 5m, condition: {gte: 8}}
---
title: locked out user
name: by_user
correlation: {type: event_count, rules: [fail], group-by: [user.name], timespan: 10m, condition: {gte: 12}}
---
title: one user against one host
name: by_user_host
correlation: {type: event_count, rules: [fail], group-by: [user.name, destination.ip], timespan: 10m, condition: {gte: 5}}
---
title: spraying
name: spraying
correlation:
  type: value_count
  rules: [fail]
  group-by: [source.ip]
  timespan: 10m
  condition: {field: user.name, gte: 6}
---
title: failures then success
name: compromise
correlation:
  type: temporal_ordered
  rules: [fail, ok]
  group-by: [source.ip, user.name]
  timespan: 10m
---
title: repeated brute force
name: repeated
correlation: {type: event_count, rules: [by_source], group-by: [source.ip], timespan: 1h, condition: {gte: 2}, generate: true}
---
title: anything from the lab
name: lab
detection:
  sel: {source.ip|startswith: '10.9.'}
  condition: sel
";

/// A deterministic mix: 300 source addresses (some hot), 100 users, 20 destinations,
/// mostly failures, event time moving forward with small disorder.
fn events(n: usize) -> Vec<Arc<Event>> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut t: i64 = 0;
    (0..n)
        .map(|i| {
            let r = next();
            t += (r % 3) as i64;
            let jitter = (r >> 8) % 5;
            let ip = if r % 7 == 0 {
                format!("10.9.0.{}", (r >> 16) % 8)
            } else if r % 3 == 0 {
                format!("203.0.113.{}", (r >> 16) % 12)
            } else {
                format!("198.51.{}.{}", (r >> 20) % 2, (r >> 24) % 140)
            };
            let user = format!("user{}", (r >> 32) % 100);
            let dst = format!("10.0.0.{}", (r >> 40) % 20);
            let outcome = if (r >> 48) % 10 < 8 {
                "failure"
            } else {
                "success"
            };
            let seq = i.to_string();
            let e = ev(
                t - jitter as i64,
                &[
                    ("source.ip", ip.as_str()),
                    ("user.name", user.as_str()),
                    ("destination.ip", dst.as_str()),
                    ("event.outcome", outcome),
                    ("extra.seq", seq.as_str()),
                ],
            );
            e
        })
        .collect()
}

/// What a detection says, comparable across engines (events by their test sequence number).
fn shape(d: &Detection) -> String {
    let seqs: Vec<&str> = d
        .events
        .iter()
        .map(|e| match e.get("extra.seq") {
            Some(vigil_parsers::event::FieldValue::Str(s)) => s,
            _ => "?",
        })
        .collect();
    format!(
        "{} {:?} {} {:?} {} {} {} count={} fresh={} distinct={:?} events={:?}",
        d.rule,
        d.kind,
        d.index_value,
        d.group,
        d.window_start,
        d.first_seen,
        d.last_seen,
        d.count,
        d.fresh,
        d.distinct,
        seqs
    )
}

fn embedded(rules: &Arc<RuleSet>, events: &[Arc<Event>]) -> Vec<String> {
    let mut engine = Engine::new(rules.clone(), EngineLimits::default());
    let mut out = Vec::new();
    for e in events {
        engine.process(e, &mut out);
    }
    let mut shapes: Vec<String> = out.iter().map(shape).collect();
    shapes.sort();
    shapes
}

fn partition_of(key: &str, partitions: usize) -> usize {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % partitions as u64) as usize
}

type Queues = Vec<std::collections::VecDeque<(Routed, Arc<Event>)>>;

/// Stage 2 drains every partition queue in order, partition `p` by engine `owner_of[p]`; a
/// reroute (chaining) is appended to its partition's queue.
fn drain(queues: &mut Queues, owners: &mut [Engine], owner_of: &[usize], out: &mut Vec<Detection>) {
    let partitions = queues.len();
    loop {
        let mut progressed = false;
        for p in 0..partitions {
            while let Some((r, e)) = queues[p].pop_front() {
                progressed = true;
                let mut reroute = Vec::new();
                owners[owner_of[p]].feed_routed(&r, &e, out, &mut reroute);
                for rr in reroute {
                    queues[partition_of(&rr.key(), partitions)].push_back((rr, e.clone()));
                }
            }
        }
        if !progressed {
            break;
        }
    }
}

/// `stage1` routing engines take the events round-robin; matches go to `partitions` queues by
/// key; `stage2` engines own the partitions (partition p belongs to engine p % stage2). A
/// reroute (chaining) is appended to its partition's queue. Queues are drained in the order
/// records arrived, as a partition is.
fn split(
    rules: &Arc<RuleSet>,
    events: &[Arc<Event>],
    stage1: usize,
    partitions: usize,
    stage2: usize,
) -> Vec<String> {
    let mut routers: Vec<Engine> = (0..stage1)
        .map(|_| Engine::new(rules.clone(), EngineLimits::default()))
        .collect();
    let mut owners: Vec<Engine> = (0..stage2)
        .map(|_| Engine::new(rules.clone(), EngineLimits::default()))
        .collect();
    let mut out = Vec::new();
    let mut routed = Vec::new();
    let mut queues: Queues = vec![std::collections::VecDeque::new(); partitions];
    for (i, e) in events.iter().enumerate() {
        routed.clear();
        routers[i % stage1].route(e, &mut out, &mut routed);
        for r in routed.drain(..) {
            queues[partition_of(&r.key(), partitions)].push_back((r, e.clone()));
        }
        // Stage 2 keeps up: drain every queue (in partition order) after each event.
        let owner_of: Vec<usize> = (0..partitions).map(|p| p % stage2).collect();
        drain(&mut queues, &mut owners, &owner_of, &mut out);
    }
    let stats: u64 = owners.iter().map(|o| o.stats().unroutable).sum();
    assert_eq!(stats, 0);
    let mut shapes: Vec<String> = out.iter().map(shape).collect();
    shapes.sort();
    shapes
}

#[test]
fn routing_and_partitioned_windows_give_exactly_the_embedded_detections() {
    let rules = Arc::new(load(RULES));
    let events = events(20_000);
    let want = embedded(&rules, &events);
    // The workload exercises every rule.
    for rule in [
        "by_source",
        "by_user",
        "by_user_host",
        "spraying",
        "compromise",
        "repeated",
        "lab",
    ] {
        assert!(
            want.iter().any(|d| d.starts_with(&format!("{rule} "))),
            "no detection of {rule}"
        );
    }
    for (stage1, partitions, stage2) in [(1, 1, 1), (2, 4, 2), (3, 8, 4), (2, 4, 4)] {
        let got = split(&rules, &events, stage1, partitions, stage2);
        assert_eq!(
            got.len(),
            want.len(),
            "{stage1} routers, {partitions} partitions, {stage2} owners"
        );
        assert!(
            got == want,
            "{stage1} routers, {partitions} partitions, {stage2} owners: detections differ"
        );
    }
}

/// [`split`] with one rebalance in the middle: at event `at`, partition `moved` changes owner
/// from engine `moved % stage2` to the next engine, its windows handed over as a JSON snapshot.
fn split_with_handoff(
    rules: &Arc<RuleSet>,
    events: &[Arc<Event>],
    partitions: usize,
    stage2: usize,
    moved: usize,
    at: usize,
) -> Vec<String> {
    let mut router = Engine::new(rules.clone(), EngineLimits::default());
    let mut owners: Vec<Engine> = (0..stage2)
        .map(|_| Engine::new(rules.clone(), EngineLimits::default()))
        .collect();
    let mut owner_of: Vec<usize> = (0..partitions).map(|p| p % stage2).collect();
    let mut out = Vec::new();
    let mut routed = Vec::new();
    let mut queues: Queues = vec![std::collections::VecDeque::new(); partitions];
    for (i, e) in events.iter().enumerate() {
        if i == at {
            let from = owner_of[moved];
            let to = (from + 1) % stage2;
            let select = |k: &str| partition_of(k, partitions) == moved;
            let snap = owners[from].snapshot(select);
            assert!(
                !snap.windows.is_empty(),
                "the moved partition holds windows"
            );
            let removed = owners[from].remove_keys(select);
            let json = serde_json::to_vec(&snap).unwrap();
            let snap: vigil_correlate::EngineSnapshot = serde_json::from_slice(&json).unwrap();
            let report = owners[to].restore(snap).unwrap();
            assert_eq!(report.keys, removed);
            assert_eq!(report.replaced, 0);
            owner_of[moved] = to;
        }
        routed.clear();
        router.route(e, &mut out, &mut routed);
        for r in routed.drain(..) {
            queues[partition_of(&r.key(), partitions)].push_back((r, e.clone()));
        }
        drain(&mut queues, &mut owners, &owner_of, &mut out);
    }
    let mut shapes: Vec<String> = out.iter().map(shape).collect();
    shapes.sort();
    shapes
}

#[test]
fn windows_handed_over_mid_stream_keep_the_result_exact() {
    let rules = Arc::new(load(RULES));
    let events = events(12_000);
    let want = embedded(&rules, &events);
    for (partitions, stage2, moved, at) in [(4, 2, 1, 6_000), (8, 3, 5, 3_333), (4, 4, 0, 9_001)] {
        let got = split_with_handoff(&rules, &events, partitions, stage2, moved, at);
        assert!(
            got == want,
            "{partitions} partitions, {stage2} owners, partition {moved} moved at {at}: differ"
        );
    }
}

#[test]
fn a_restart_from_a_snapshot_continues_as_if_nothing_happened() {
    let rules = Arc::new(load(RULES));
    let events = events(12_000);
    let want = embedded(&rules, &events);
    let mut engine = Engine::new(rules.clone(), EngineLimits::default());
    let mut out = Vec::new();
    for e in &events[..7_000] {
        engine.process(e, &mut out);
    }
    let snap = engine.snapshot(|_| true);
    let keys_before = engine.stats().keys_live;
    let payload_before = engine.stats().payload_bytes;
    drop(engine);
    let json = serde_json::to_vec(&snap).unwrap();
    let mut engine = Engine::new(rules.clone(), EngineLimits::default());
    let report = engine
        .restore(serde_json::from_slice(&json).unwrap())
        .unwrap();
    assert_eq!(report.keys, keys_before);
    assert_eq!(engine.stats().keys_live, keys_before);
    assert_eq!(engine.stats().payload_bytes, payload_before);
    for e in &events[7_000..] {
        engine.process(e, &mut out);
    }
    let mut got: Vec<String> = out.iter().map(shape).collect();
    got.sort();
    assert!(got == want, "a restart changed the detections");
    // A snapshot of an unknown format is refused, not misread.
    let mut bad = snap.clone();
    bad.version = 99;
    assert!(Engine::new(rules, EngineLimits::default())
        .restore(bad)
        .unwrap_err()
        .contains("version 99"));
}

#[test]
fn a_routed_match_names_its_window_and_survives_serialization() {
    let rules = Arc::new(load(RULES));
    let mut router = Engine::new(rules.clone(), EngineLimits::default());
    let e = ev(
        0,
        &[
            ("source.ip", "203.0.113.5"),
            ("user.name", "alice"),
            ("destination.ip", "10.0.0.1"),
            ("event.outcome", "failure"),
        ],
    );
    let (mut out, mut routed) = (Vec::new(), Vec::new());
    router.route(&e, &mut out, &mut routed);
    assert!(out.is_empty(), "no generating detection rule matched");
    let mut names: Vec<String> = routed
        .iter()
        .map(|r| format!("{} {:?}", r.correlation, r.group))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "by_source [\"203.0.113.5\"]",
            "by_user [\"alice\"]",
            "by_user_host [\"alice\", \"10.0.0.1\"]",
            "compromise [\"203.0.113.5\", \"alice\"]",
            "spraying [\"203.0.113.5\"]",
        ]
    );
    // Keys differ per correlation even for the same values.
    let keys: std::collections::BTreeSet<String> = routed.iter().map(Routed::key).collect();
    assert_eq!(keys.len(), routed.len());
    // The record a stage-1 node publishes round-trips.
    let json = serde_json::to_string(&routed[0]).unwrap();
    let back: Routed = serde_json::from_str(&json).unwrap();
    assert_eq!(back, routed[0]);
    // A stage-2 node without that correlation counts it instead of guessing.
    let other = Arc::new(load(
        "title: x\nname: x\ndetection:\n  sel: {event.outcome: failure}\n  condition: sel\n",
    ));
    let mut owner = Engine::new(other, EngineLimits::default());
    let mut reroute = Vec::new();
    owner.feed_routed(&routed[0], &e, &mut out, &mut reroute);
    assert_eq!(owner.stats().unroutable, 1);
}

/// Correlations whose keys hold thousands of occurrences (a day's window grouped by outcome):
/// kept in shared chunks, which a cut shares with the engine instead of copying.
const LONG_RULES: &str = "
---
title: a day of failures
name: day_of_failures
correlation: {type: event_count, rules: [fail], group-by: [event.outcome], timespan: 1d, condition: {gte: 3000}}
---
title: many users in a day
name: day_of_users
correlation:
  type: value_count
  rules: [fail]
  group-by: [event.outcome]
  timespan: 1d
  condition: {field: user.name, gte: 50}
---
title: failures then success in a day
name: day_compromise
correlation:
  type: temporal_ordered
  rules: [fail, ok]
  group-by: [destination.ip]
  timespan: 1d
";

#[test]
fn a_cut_is_the_snapshot_of_its_moment_and_a_restart_from_it_changes_nothing() {
    let rules = Arc::new(load(&format!("{RULES}{LONG_RULES}")));
    let events = events(12_000);
    for limits in [
        EngineLimits::default(),
        // Payloads shed and the oldest occurrences evicted from the long windows.
        EngineLimits {
            max_payload_bytes: 300_000,
            max_events_per_key: 4_000,
            ..EngineLimits::default()
        },
    ] {
        let want = {
            let mut engine = Engine::new(rules.clone(), limits);
            let mut out = Vec::new();
            for e in &events {
                engine.process(e, &mut out);
            }
            let mut shapes: Vec<String> = out.iter().map(shape).collect();
            shapes.sort();
            shapes
        };
        let mut engine = Engine::new(rules.clone(), limits);
        let mut out = Vec::new();
        let mut cuts = Vec::new();
        for (i, e) in events.iter().enumerate() {
            if i % 2_500 == 1_000 {
                cuts.push((i, engine.snapshot_all(), engine.cut()));
            }
            engine.process(e, &mut out);
        }
        assert_eq!(cuts.len(), 5);
        let longest = |s: &vigil_correlate::EngineSnapshot| {
            s.windows
                .iter()
                .flat_map(|w| &w.keys)
                .map(|k| k.slots.len())
                .max()
        };
        for (i, want_snapshot, cut) in cuts {
            let got = cut.into_snapshot();
            assert!(
                got == want_snapshot,
                "the cut at event {i} changed as the engine went on"
            );
            if i > 5_000 {
                assert!(longest(&got) > Some(1_000), "long windows at {i}");
            }
            // Restarting from it and feeding the rest detects what one engine did (with room
            // for the evidence: under payload pressure a restored engine sheds in its own
            // order, so which events a detection carries may differ; counts do not).
            if limits != EngineLimits::default() {
                continue;
            }
            let mut restarted = Engine::new(rules.clone(), limits);
            restarted.restore(got).unwrap();
            let mut after = out_before(&rules, limits, &events[..i]);
            for e in &events[i..] {
                restarted.process(e, &mut after);
            }
            let mut shapes: Vec<String> = after.iter().map(shape).collect();
            shapes.sort();
            assert!(
                shapes == want,
                "a restart from the cut at {i} changed the detections ({limits:?})"
            );
        }
    }
}

/// The detections of the first events, from an engine of their own.
fn out_before(rules: &Arc<RuleSet>, limits: EngineLimits, events: &[Arc<Event>]) -> Vec<Detection> {
    let mut engine = Engine::new(rules.clone(), limits);
    let mut out = Vec::new();
    for e in events {
        engine.process(e, &mut out);
    }
    out
}
