//! The Sigma correlation specification's examples (v2.0.x) and the scenarios of sigma-rust's
//! correlation tests, restated as black-box tests: rule text and events in, detections out.
//! Rules keep their Sigma field names (`ComputerName`, `User`); events carry the ECS names Vigil
//! maps them to (`host.name`, `user.name`).

use std::sync::Arc;

use vigil_correlate::{Detection, DetectionKind, EngineLimits};
use vigil_parsers::event::Event;

use crate::common::{ev, load, run};

fn news(out: &[Detection]) -> Vec<&Detection> {
    out.iter()
        .filter(|d| d.kind == DetectionKind::New)
        .collect()
}

fn group_values(d: &Detection) -> Vec<&str> {
    d.group.iter().map(|(_, v)| v.as_str()).collect()
}

const FAILED_LOGON: &str = "title: Failed logon
id: 5638f7c0-ac70-491d-8465-2a65075e0d86
name: failed_logon
logsource: {product: windows, service: security}
detection:
  selection:
    EventID: [529, 4625]
  condition: selection
";

fn logon(secs: i64, event_id: &str, fields: &[(&str, &str)]) -> Arc<Event> {
    let mut all = vec![("EventID", event_id)];
    all.extend_from_slice(fields);
    ev(secs, &all)
}

/// Spec, event_count: 100 or more failed logons on one computer within an hour.
#[test]
fn spec_event_count_many_failed_logons_per_computer() {
    let text = format!(
        "{FAILED_LOGON}---
title: Many failed logins
id: 0e95725d-7320-415d-80f7-004da920fc11
correlation:
  type: event_count
  rules:
    - 5638f7c0-ac70-491d-8465-2a65075e0d86
  group-by:
    - ComputerName
  timespan: 1h
  condition:
    gte: 100
"
    );
    let mut events: Vec<_> = (0..99)
        .map(|i| logon(i * 30, "4625", &[("host.name", "dc01")]))
        .collect();
    // Another computer's failures do not help dc01.
    events.push(logon(100, "4625", &[("host.name", "dc02")]));
    let (out, _) = run(load(&text), EngineLimits::default(), &events);
    assert!(out.is_empty());
    events.push(logon(3000, "529", &[("host.name", "dc01")]));
    let (out, _) = run(load(&text), EngineLimits::default(), &events);
    assert_eq!(news(&out).len(), 1);
    assert_eq!(out[0].count, 100);
    assert_eq!(
        out[0].group,
        vec![("host.name".to_owned(), "dc01".to_owned())]
    );
}

/// Spec, value_count: failed logons for 100 or more different users per source and
/// destination within a day.
#[test]
fn spec_value_count_many_users_per_computer_and_workstation() {
    let text = format!(
        "{FAILED_LOGON}---
title: Failed login
id: 0e95725d-7320-415d-80f7-004da920fc12
correlation:
  type: value_count
  rules:
    - 5638f7c0-ac70-491d-8465-2a65075e0d86
  group-by:
    - ComputerName
    - WorkstationName
  timespan: 1d
  condition:
    field: User
    gte: 100
"
    );
    let mut events = Vec::new();
    for i in 0..150 {
        // 99 distinct users, each failing more than once, from ws1 to dc01.
        let user = format!("user{}", i % 99);
        events.push(logon(
            i * 60,
            "4625",
            &[
                ("host.name", "dc01"),
                ("WorkstationName", "ws1"),
                ("user.name", &user),
            ],
        ));
    }
    // A 100th user from another workstation is another group.
    events.push(logon(
        9_000,
        "4625",
        &[
            ("host.name", "dc01"),
            ("WorkstationName", "ws2"),
            ("user.name", "user99"),
        ],
    ));
    let (out, _) = run(load(&text), EngineLimits::default(), &events);
    assert!(out.is_empty());
    events.push(logon(
        9_100,
        "4625",
        &[
            ("host.name", "dc01"),
            ("WorkstationName", "ws1"),
            ("user.name", "user99"),
        ],
    ));
    let (out, _) = run(load(&text), EngineLimits::default(), &events);
    let new = news(&out);
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].distinct, Some(100));
    assert_eq!(new[0].count, 151);
    assert_eq!(group_values(new[0]), vec!["dc01", "ws1"]);
}

fn recon_rules(kind: &str, rules: &[&str]) -> String {
    let mut text = String::new();
    for (i, cmd) in ["whoami", "net", "ipconfig"].iter().enumerate() {
        let name = ["recon_cmd_a", "recon_cmd_b", "recon_cmd_c"][i];
        text.push_str(&format!(
            "title: {name}\nname: {name}\ndetection:\n  sel: {{Image|endswith: '\\{cmd}.exe'}}\n  condition: sel\n---\n"
        ));
    }
    text.push_str(&format!(
        "title: Recon\nname: recon\ncorrelation:\n  type: {kind}\n  rules: [{}]\n  group-by:\n    - ComputerName\n    - User\n  timespan: 5m\n",
        rules.join(", ")
    ));
    text
}

fn cmd(secs: i64, exe: &str, host: &str, user: &str) -> Arc<Event> {
    ev(
        secs,
        &[
            ("process.name", &format!("C:\\Windows\\System32\\{exe}.exe")),
            ("host.name", host),
            ("user.name", user),
        ],
    )
}

/// Spec, temporal: three reconnaissance commands in any order within five minutes on one
/// system by one user.
#[test]
fn spec_temporal_recon_commands_in_any_order() {
    let text = recon_rules("temporal", &["recon_cmd_a", "recon_cmd_b", "recon_cmd_c"]);
    let events = vec![
        cmd(0, "ipconfig", "pc1", "eve"),
        cmd(20, "whoami", "pc1", "eve"),
        cmd(30, "net", "pc2", "eve"),     // other computer
        cmd(40, "net", "pc1", "mallory"), // other user
        cmd(290, "net", "pc1", "eve"),
    ];
    let (out, _) = run(load(&text), EngineLimits::default(), &events);
    let new = news(&out);
    assert_eq!(new.len(), 1, "{out:?}");
    assert_eq!(group_values(new[0]), vec!["pc1", "eve"]);
    assert_eq!(new[0].count, 3);
    // The same three commands spread over more than five minutes stay quiet.
    let events = vec![
        cmd(0, "ipconfig", "pc1", "eve"),
        cmd(20, "whoami", "pc1", "eve"),
        cmd(301, "net", "pc1", "eve"),
    ];
    let (out, _) = run(load(&text), EngineLimits::default(), &events);
    assert!(out.is_empty());
}

/// Spec, temporal_ordered: the same rules, but only in the listed order.
#[test]
fn spec_temporal_ordered_recon_commands_in_order() {
    let text = recon_rules(
        "temporal_ordered",
        &["recon_cmd_a", "recon_cmd_b", "recon_cmd_c"],
    );
    let ordered = vec![
        cmd(0, "whoami", "pc1", "eve"),
        cmd(10, "net", "pc1", "eve"),
        cmd(20, "ipconfig", "pc1", "eve"),
    ];
    let (out, _) = run(load(&text), EngineLimits::default(), &ordered);
    assert_eq!(news(&out).len(), 1);
    let shuffled = vec![
        cmd(0, "net", "pc1", "eve"),
        cmd(10, "whoami", "pc1", "eve"),
        cmd(20, "ipconfig", "pc1", "eve"),
    ];
    let (out, _) = run(load(&text), EngineLimits::default(), &shuffled);
    assert!(out.is_empty());
}

/// Spec, field name aliases: an internal error on a server, then a connection from that server
/// to the address that caused it, within ten seconds.
#[test]
fn spec_aliases_internal_error_and_new_connection() {
    let text = "name: internal_error
title: internal error
detection:
  selection:
    http.response.status_code: 500
  condition: selection
---
name: new_network_connection
title: new network connection
detection:
  selection:
    event.category: network
    event.type: connection
    event.outcome: success
  condition: selection
---
title: error followed by a connection back
correlation:
  type: temporal
  rules:
    - internal_error
    - new_network_connection
  group-by:
    - internal_ip
    - remote_ip
  timespan: 10s
  aliases:
    internal_ip:
      internal_error: destination.ip
      new_network_connection: source.ip
    remote_ip:
      internal_error: source.ip
      new_network_connection: destination.ip
";
    let error = ev(
        0,
        &[
            ("http.response.status_code", "500"),
            ("source.ip", "198.51.100.9"),
            ("destination.ip", "10.1.1.1"),
        ],
    );
    let connection = |secs, src: &str, dst: &str| {
        ev(
            secs,
            &[
                ("event.category", "network"),
                ("event.type", "connection"),
                ("event.outcome", "success"),
                ("source.ip", src),
                ("destination.ip", dst),
            ],
        )
    };
    let events = vec![
        Arc::clone(&error),
        connection(3, "10.1.1.1", "198.51.100.10"), // another remote
        connection(11, "10.1.1.1", "198.51.100.9"), // too late
    ];
    let (out, _) = run(load(text), EngineLimits::default(), &events);
    assert!(out.is_empty());
    let events = vec![error, connection(9, "10.1.1.1", "198.51.100.9")];
    let (out, _) = run(load(text), EngineLimits::default(), &events);
    assert_eq!(news(&out).len(), 1);
    assert_eq!(group_values(&out[0]), vec!["10.1.1.1", "198.51.100.9"]);
}

/// Spec, complete example: multiple failed logins by one user followed by a successful login of
/// that user, written as one file of four documents with a chained correlation.
#[test]
fn spec_example_failed_logins_followed_by_successful_login() {
    let text = "title: Correlation - Multiple Failed Logins Followed by Successful Login
id: b180ead8-d58f-40b2-ae54-c8940995b9b6
status: experimental
description: Detects multiple failed logins by a single user followed by a successful login of that user
references:
    - https://reference.com
author: Florian Roth (Nextron Systems)
date: 2023-06-16
correlation:
    type: temporal_ordered
    rules:
        - multiple_failed_login
        - successful_login
    group-by:
        - User
    timespan: 10m
falsepositives:
    - Unlikely
level: high
---
title: Multiple failed logons
id: a8418a5a-5fc4-46b5-b23b-6c73beb19d41
description: Detects multiple failed logins within a certain amount of time
name: multiple_failed_login
correlation:
    type: event_count
    rules:
        - failed_login
    group-by:
        - User
    timespan: 10m
    condition:
        gte: 10
---
title: Single failed login
id: 53ba33fd-3a50-4468-a5ef-c583635cfa92
name: failed_login
logsource:
    product: windows
    service: security
detection:
    selection:
        EventID:
            - 529
            - 4625
    condition: selection
---
title: Successful login
id: 4d0a2c83-c62c-4ed4-b475-c7e23a9269b8
description: Detects a successful login
name: successful_login
logsource:
    product: windows
    service: security
detection:
    selection:
        EventID:
            - 528
            - 4624
    condition: selection
";
    let set = load(text);
    assert_eq!(set.len(), 4);
    let mut events: Vec<_> = (0..10)
        .map(|i| logon(i * 20, "4625", &[("user.name", "jdoe")]))
        .collect();
    events.push(logon(230, "4624", &[("user.name", "asmith")])); // another user
    events.push(logon(240, "4624", &[("user.name", "jdoe")]));
    let (out, _) = run(set, EngineLimits::default(), &events);
    // Only the outermost correlation speaks: the others are referenced without `generate`.
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(&*out[0].rule, "b180ead8-d58f-40b2-ae54-c8940995b9b6");
    assert_eq!(out[0].level.as_deref(), Some("high"));
    assert_eq!(group_values(&out[0]), vec!["jdoe"]);

    // Nine failures are not "multiple" enough.
    let mut events: Vec<_> = (0..9)
        .map(|i| logon(i * 20, "4625", &[("user.name", "jdoe")]))
        .collect();
    events.push(logon(240, "4624", &[("user.name", "jdoe")]));
    let (out, _) = run(load(text), EngineLimits::default(), &events);
    assert!(out.is_empty());
}

fn simple_rules(kind: &str, rules: &str, timespan: &str, condition: &str) -> String {
    let mut text = String::new();
    for name in ["test_rule", "rule_a", "rule_b", "rule_c"] {
        text.push_str(&format!(
            "title: {name}\nname: {name}\ndetection:\n  sel: {{rule: {name}}}\n  condition: sel\n---\n"
        ));
    }
    text.push_str(&format!(
        "title: c\nname: c\ncorrelation:\n  type: {kind}\n  rules: {rules}\n  group-by: [user]\n  timespan: {timespan}\n  condition: {condition}\n"
    ));
    text
}

fn hit(secs: i64, rule: &str, user: &str) -> Arc<Event> {
    ev(secs, &[("rule", rule), ("user.name", user)])
}

fn fired_users(out: &[Detection]) -> Vec<String> {
    let mut users: Vec<String> = news(out)
        .iter()
        .map(|d| group_values(d).join(","))
        .collect();
    users.sort();
    users
}

/// sigma-rust: event_count per group (two events each for two users, one for a third).
#[test]
fn sigma_rust_event_count_groups() {
    let text = simple_rules("event_count", "[test_rule]", "5m", "{gte: 2}");
    let events = vec![
        hit(0, "test_rule", "alice"),
        hit(30, "test_rule", "alice"),
        hit(60, "test_rule", "bob"),
        hit(90, "test_rule", "bob"),
        hit(120, "test_rule", "charlie"),
    ];
    let (out, _) = run(load(&text), EngineLimits::default(), &events);
    assert_eq!(fired_users(&out), vec!["alice", "bob"]);
    assert!(news(&out).iter().all(|d| d.count == 2));
}

/// sigma-rust: event_count time window (three events within five minutes fire, a fourth ten
/// minutes in is outside).
#[test]
fn sigma_rust_event_count_time_window() {
    let text = simple_rules("event_count", "[test_rule]", "5m", "{gte: 3}");
    let events = vec![
        hit(0, "test_rule", "alice"),
        hit(120, "test_rule", "alice"),
        hit(240, "test_rule", "alice"),
        hit(600, "test_rule", "alice"),
    ];
    let (out, _) = run(load(&text), EngineLimits::default(), &events);
    assert_eq!(news(&out).len(), 1);
    assert_eq!(out[0].count, 3);
    assert_eq!(out.len(), 1, "the event at ten minutes starts a new window");
}

/// sigma-rust: value_count (three distinct targets for alice fire; bob's two do not).
#[test]
fn sigma_rust_value_count_targets() {
    let text = simple_rules(
        "value_count",
        "[test_rule]",
        "15m",
        "{gte: 3, field: target}",
    );
    let t = |secs, user: &str, target: &str| {
        ev(
            secs,
            &[
                ("rule", "test_rule"),
                ("user.name", user),
                ("target", target),
            ],
        )
    };
    let events = vec![
        t(0, "alice", "system1"),
        t(300, "alice", "system2"),
        t(600, "alice", "system3"),
        t(0, "bob", "system1"),
        t(300, "bob", "system2"),
        t(600, "bob", "system2"),
    ];
    let (out, _) = run(load(&text), EngineLimits::default(), &events);
    assert_eq!(fired_users(&out), vec!["alice"]);
    assert_eq!(out[0].distinct, Some(3));
}

/// sigma-rust: temporal (alice and bob complete both rules within a minute; charlie has one;
/// dave's second comes two minutes later).
#[test]
fn sigma_rust_temporal() {
    let text = simple_rules("temporal", "[rule_a, rule_b]", "1m", "{gte: 2}");
    let events = vec![
        hit(0, "rule_a", "alice"),
        hit(30, "rule_b", "alice"),
        hit(5, "rule_a", "bob"),
        hit(45, "rule_b", "bob"),
        hit(0, "rule_a", "charlie"),
        hit(0, "rule_a", "dave"),
        hit(120, "rule_b", "dave"),
    ];
    let (out, _) = run(load(&text), EngineLimits::default(), &events);
    assert_eq!(fired_users(&out), vec!["alice", "bob"]);
    assert!(news(&out).iter().all(|d| d.count == 2));
}

/// sigma-rust: temporal_ordered (only alice has a, b, c in order within a minute).
#[test]
fn sigma_rust_temporal_ordered() {
    let text = simple_rules(
        "temporal_ordered",
        "[rule_a, rule_b, rule_c]",
        "1m",
        "{gte: 3}",
    );
    let events = vec![
        hit(0, "rule_a", "alice"),
        hit(15, "rule_b", "alice"),
        hit(30, "rule_c", "alice"),
        hit(0, "rule_b", "bob"),
        hit(20, "rule_a", "bob"),
        hit(40, "rule_c", "bob"),
        hit(0, "rule_a", "charlie"),
        hit(30, "rule_c", "charlie"),
        hit(0, "rule_a", "dave"),
        hit(30, "rule_b", "dave"),
        hit(120, "rule_c", "dave"),
    ];
    let (out, _) = run(load(&text), EngineLimits::default(), &events);
    assert_eq!(fired_users(&out), vec!["alice"]);
    assert_eq!(out[0].count, 3);
}
