//! The Grafana dashboards in `dashboards/`.
//!
//! Every `dashboards/*.json` is checked as an importable Grafana dashboard for the ClickHouse
//! data source plugin (`grafana-clickhouse-datasource`), and every panel's SQL runs against the
//! test ClickHouse (`VIGIL_TEST_CLICKHOUSE_URL`, default `http://127.0.0.1:18123`;
//! `scripts/services.sh start` starts one) in a fresh database `vigil_test_<random>` that Vigil's
//! own store API migrated and filled. The plugin's macros are expanded the way the plugin
//! expands them (`pkg/macros` of grafana/clickhouse-datasource) for a fixed time range, and
//! `${database}` becomes the test database. A query must succeed, return rows, and return
//! something that is not zero: a wrong column, a filter that matches nothing or a unit slip in
//! the time bucketing fails the test. A server that does not answer fails the test too: missing
//! is a failure, never a skip.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::LazyLock;

use chrono::{DateTime, Duration, NaiveDateTime, TimeZone, Utc};
use regex::Regex;
use serde_json::{Map, Value};
use vigil::store::clickhouse::{ClickHouseConfig, ClickHouseStore};
use vigil::store::{DeadLetter, Offense, OffenseRule, OffenseStatus};
use vigil::Event;

use crate::support::{
    clickhouse_admin as admin, clickhouse_url, require_clickhouse as require_server, TestDb,
};

/// The data source plugin every panel must use.
const PLUGIN: &str = "grafana-clickhouse-datasource";

/// 2026-01-01T00:00:00Z: the test data lies in the two hours after it.
const BASE_MS: i64 = 1_767_225_600_000;
/// The dashboard time range the test expands the macros for: 24 hours around the data.
const FROM_S: i64 = BASE_MS / 1000 - 3600;
const TO_S: i64 = FROM_S + 24 * 3600;
/// `$__interval_s`: what Grafana picks for 24 hours on a typical screen (and the panels' 1m
/// minimum interval).
const INTERVAL_S: i64 = 60;

/// The views the issue asks for, each found by panel title in some dashboard: (what,
/// title, panel types that may show it).
const REQUIRED_VIEWS: &[(&str, &str, &[&str])] = &[
    (
        "EPS by source",
        "Events per second by source",
        &["timeseries"],
    ),
    ("offenses over time", "Offenses over time", &["timeseries"]),
    ("top offending IPs", "Top offending IPs", &["table"]),
    ("top rules", "Top rules", &["barchart", "bargauge", "table"]),
];

// ---------------------------------------------------------------------------------------------
// Loading and validating the files
// ---------------------------------------------------------------------------------------------

/// Every `dashboards/*.json`, parsed, in file-name order.
fn dashboards() -> Vec<(String, Value)> {
    let dir = crate::support::repo_root().join("dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboards in {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, json)
        })
        .collect()
}

/// Panels of a dashboard, those inside collapsed rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(p);
        for inner in p["panels"].as_array().into_iter().flatten() {
            out.push(inner);
        }
    }
    out
}

fn is_row(panel: &Value) -> bool {
    panel["type"] == "row"
}

/// The SQL of a query variable (the plugin stores `{rawSql}`; older exports a plain string).
fn variable_sql(variable: &Value) -> Option<&str> {
    variable["query"]["rawSql"]
        .as_str()
        .or_else(|| variable["query"].as_str())
}

fn non_empty_str(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| !s.trim().is_empty())
}

/// `${DS_...}` inputs a dashboard uses.
static DS_INPUT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\$\{(DS_[A-Za-z0-9_]+)\}").unwrap());

/// Everything wrong with one dashboard file, as readable lines.
fn problems(file: &str, d: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut bad = |what: String| out.push(format!("{file}: {what}"));

    if non_empty_str(&d["title"]).is_none() {
        bad("no title".into());
    }
    match d["uid"].as_str() {
        Some(uid)
            if !uid.is_empty()
                && uid.len() <= 40
                && uid
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') => {}
        other => bad(format!(
            "uid {other:?}: want 1-40 letters, digits, '-' or '_'"
        )),
    }
    match d["schemaVersion"].as_u64() {
        Some(v) if v >= 36 => {}
        other => bad(format!("schemaVersion {other:?}: want 36 or newer")),
    }
    if d["time"]["from"] != "now-24h" || d["time"]["to"] != "now" {
        bad(format!(
            "default time range {}: want now-24h to now",
            d["time"]
        ));
    }
    if d["refresh"] != "30s" {
        bad(format!("refresh {}: want 30s", d["refresh"]));
    }

    // The data source is an import input of the ClickHouse plugin; every ${DS_...} is declared.
    let inputs: BTreeSet<String> = d["__inputs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["type"] == "datasource" && i["pluginId"] == PLUGIN)
        .filter_map(|i| i["name"].as_str().map(str::to_owned))
        .collect();
    if inputs.is_empty() {
        bad(format!("no __inputs entry for a {PLUGIN} data source"));
    }
    let text = d.to_string();
    for used in DS_INPUT.captures_iter(&text) {
        if !inputs.contains(&used[1]) {
            bad(format!(
                "uses ${{{}}} but __inputs does not declare it",
                &used[1]
            ));
        }
    }
    let datasource_ok = |ds: &Value| {
        ds["type"] == PLUGIN
            && ds["uid"].as_str().is_some_and(|uid| {
                DS_INPUT
                    .captures(uid)
                    .is_some_and(|c| c[0] == *uid && inputs.contains(&c[1]))
            })
    };

    // The `database` variable every query's `${database}` refers to.
    let variables = d["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    match variables.iter().find(|v| v["name"] == "database") {
        Some(v) => {
            if v["type"] != "query" || !datasource_ok(&v["datasource"]) {
                bad("variable database: want a query variable on the ClickHouse input".into());
            }
            if variable_sql(v).is_none_or(|s| s.trim().is_empty()) {
                bad("variable database: no SQL".into());
            }
        }
        None => bad("no `database` template variable".into()),
    }

    let all = panels(d);
    if all.iter().all(|p| is_row(p)) {
        bad("no panels".into());
    }
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(String, [i64; 4])> = Vec::new();
    for p in all {
        let title = p["title"].as_str().unwrap_or("");
        let name = format!("panel {} {title:?}", p["id"]);
        match p["id"].as_u64() {
            Some(id) if ids.insert(id) => {}
            Some(id) => bad(format!("{name}: id {id} is not unique")),
            None => bad(format!("{name}: no numeric id")),
        }
        if non_empty_str(&p["type"]).is_none() {
            bad(format!("{name}: no type"));
        }
        if title.trim().is_empty() && !is_row(p) {
            bad(format!("{name}: no title"));
        }
        let g = &p["gridPos"];
        let dims = ["x", "y", "w", "h"].map(|k| g[k].as_i64());
        match dims {
            [Some(x), Some(y), Some(w), Some(h)]
                if x >= 0 && y >= 0 && w >= 1 && h >= 1 && x + w <= 24 =>
            {
                // Panels inside a collapsed row keep their expanded positions: only the
                // top level must not overlap.
                let top_level = d["panels"]
                    .as_array()
                    .is_some_and(|top| top.iter().any(|q| std::ptr::eq(q, p)));
                if top_level {
                    for (other, [ox, oy, ow, oh]) in &boxes {
                        if x < ox + ow && *ox < x + w && y < oy + oh && *oy < y + h {
                            bad(format!("{name}: gridPos overlaps {other}"));
                        }
                    }
                    boxes.push((name.clone(), [x, y, w, h]));
                }
            }
            _ => bad(format!(
                "{name}: gridPos {g} is not a box inside 24 columns"
            )),
        }
        if is_row(p) {
            continue;
        }
        if !datasource_ok(&p["datasource"]) {
            bad(format!(
                "{name}: datasource {} is not the {PLUGIN} input",
                p["datasource"]
            ));
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            bad(format!("{name}: no targets"));
        }
        let mut ref_ids = BTreeSet::new();
        for t in &targets {
            let ref_id = t["refId"].as_str().unwrap_or("");
            if ref_id.is_empty() || !ref_ids.insert(ref_id.to_owned()) {
                bad(format!("{name}: refId {ref_id:?} is empty or repeated"));
            }
            if !datasource_ok(&t["datasource"]) {
                bad(format!(
                    "{name} {ref_id}: target datasource is not the input"
                ));
            }
            if t["editorType"] != "sql" {
                bad(format!("{name} {ref_id}: editorType is not sql"));
            }
            let want_format = if p["type"] == "timeseries" { 0 } else { 1 };
            if t["format"].as_u64() != Some(want_format) {
                bad(format!(
                    "{name} {ref_id}: format {} (want {want_format}: 0 time series, 1 table)",
                    t["format"]
                ));
            }
            match non_empty_str(&t["rawSql"]) {
                None => bad(format!("{name} {ref_id}: empty rawSql")),
                Some(sql) => {
                    if let Err(e) = expand(sql, "db", FROM_S, TO_S, INTERVAL_S) {
                        bad(format!("{name} {ref_id}: {e}"));
                    }
                    if sql.contains('?') {
                        bad(format!(
                            "{name} {ref_id}: '?' in SQL (the test client binds it)"
                        ));
                    }
                    if sql.trim_end().ends_with(';') {
                        bad(format!("{name} {ref_id}: trailing ';'"));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn dashboards_are_grafana_dashboards_with_the_required_views() {
    let all = dashboards();
    let mut found = Vec::new();
    for (file, d) in &all {
        found.extend(problems(file, d));
    }
    let mut uids = BTreeMap::new();
    let mut titles = BTreeMap::new();
    for (file, d) in &all {
        if let Some(previous) = uids.insert(d["uid"].to_string(), file) {
            found.push(format!("{file}: uid {} also in {previous}", d["uid"]));
        }
        if let Some(previous) = titles.insert(d["title"].to_string(), file) {
            found.push(format!("{file}: title {} also in {previous}", d["title"]));
        }
    }
    let every_panel: Vec<&Value> = all.iter().flat_map(|(_, d)| panels(d)).collect();
    for (what, title, types) in REQUIRED_VIEWS {
        let ok = every_panel
            .iter()
            .any(|p| p["title"] == *title && types.iter().any(|t| p["type"] == *t));
        if !ok {
            found.push(format!(
                "no dashboard shows {what}: want a {types:?} panel titled {title:?}"
            ));
        }
    }
    if !every_panel.iter().any(|p| p["type"] == "geomap") {
        found.push("no dashboard has a world map (a geomap panel)".into());
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Macros
// ---------------------------------------------------------------------------------------------

static TIME_FILTER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\$__timeFilter\(\s*([^()]*?)\s*\)").unwrap());
static FROM_TIME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\$__fromTime\b").unwrap());
static TO_TIME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\$__toTime\b").unwrap());
static INTERVAL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\$__interval_s\b").unwrap());
static LEFT_OVER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?(\([^)]*\))?").unwrap());

/// A panel's SQL as the plugin (4.x) sends it for the range `from`..`to` (Unix seconds) and
/// the interval: `$__timeFilter(c)` is `c >= toDateTime(from) AND c <= toDateTime(to)`,
/// `$__fromTime` / `$__toTime` are `toDateTime(..)`, `$__interval_s` the interval in seconds,
/// and the `${database}` variable the database. Anything else starting with `$` (another
/// macro, such as `$__timeInterval` which ClickHouse 18.16 cannot run, or another variable)
/// is an error.
fn expand(sql: &str, database: &str, from: i64, to: i64, interval: i64) -> Result<String, String> {
    let sql = TIME_FILTER.replace_all(sql, |c: &regex::Captures<'_>| {
        let column = &c[1];
        format!("{column} >= toDateTime({from}) AND {column} <= toDateTime({to})")
    });
    let sql = FROM_TIME.replace_all(&sql, format!("toDateTime({from})"));
    let sql = TO_TIME.replace_all(&sql, format!("toDateTime({to})"));
    let sql = INTERVAL.replace_all(&sql, interval.to_string());
    let sql = sql.replace("${database}", database);
    let left: Vec<&str> = LEFT_OVER.find_iter(&sql).map(|m| m.as_str()).collect();
    if left.is_empty() {
        Ok(sql)
    } else {
        Err(format!(
            "unsupported macros or variables {left:?} (supported: $__timeFilter(column), \
             $__fromTime, $__toTime, $__interval_s, ${{database}})"
        ))
    }
}

/// Stops background merges of `table`, so the panels must deduplicate by themselves (FINAL).
async fn stop_merges(db: &str, table: &str) {
    admin()
        .query("SYSTEM STOP MERGES ?.?")
        .bind(::clickhouse::sql::Identifier(db))
        .bind(::clickhouse::sql::Identifier(table))
        .execute()
        .await
        .unwrap();
}

/// Runs `sql` and returns its rows as JSON objects (64-bit integers come as strings).
async fn rows(sql: &str) -> Result<Vec<Map<String, Value>>, String> {
    let bytes = admin()
        .query(sql)
        .fetch_bytes("JSONEachRow")
        .map_err(|e| e.to_string())?
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&bytes);
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("row {l:?}: {e}")))
        .collect()
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Test data, written through Vigil's store API
// ---------------------------------------------------------------------------------------------

fn t(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).unwrap()
}

/// Authentication events from syslog, one a minute: IPv4 sources in GB, IPv6 ones in US, a few
/// without GeoIP.
fn auth_events() -> Vec<Event> {
    (0..60)
        .map(|i| {
            let ts = t(BASE_MS + i * 60_000 + 7);
            let mut e = Event::new(ts, ts + Duration::milliseconds(3));
            e.sequence = Some(i as u64);
            e.observer_type = Some("syslog".into());
            e.observer_id = Some("syslog/udp/10.0.0.1".into());
            e.dataset = Some("openssh".into());
            e.category = Some("authentication".into());
            e.action = Some("ssh_login".into());
            e.outcome = Some(if i % 3 == 0 { "success" } else { "failure" }.into());
            let v6 = i % 4 == 0;
            e.source_ip = Some(if v6 {
                format!("2001:db8::{:x}", i % 3 + 1).parse().unwrap()
            } else {
                format!("198.51.100.{}", i % 5 + 1).parse().unwrap()
            });
            e.source_port = Some(40_000 + i as u16);
            e.destination_ip = Some("10.0.0.22".parse().unwrap());
            e.destination_port = Some(22);
            e.host_name = Some("bastion01".into());
            e.message = Some(format!("Failed password for root from {:?}", e.source_ip).into());
            if i % 10 != 9 {
                let (cc, name) = if v6 {
                    ("US", "United States")
                } else {
                    ("GB", "United Kingdom")
                };
                e.rare_mut().source_geo_country_iso_code = Some(cc.into());
                e.rare_mut().source_geo_country_name = Some(name.into());
            }
            e.raw =
                format!("<38>Jan  1 00:00:00 bastion01 sshd[1]: Failed password {i}").into_bytes();
            e
        })
        .collect()
}

/// Flow records as the flow collector builds them (two exporters, NetFlow and IPFIX), plus one
/// sFlow interface-counter event that the flow panels must not count.
fn flow_events() -> Vec<Event> {
    let mut out: Vec<Event> = (0..40)
        .map(|i| {
            let ts = t(BASE_MS + 30 * 60_000 + i * 90_000);
            let mut e = Event::new(ts, ts + Duration::milliseconds(20));
            e.kind = Some("event".into());
            e.category = Some("network".into());
            e.event_type = Some("connection".into());
            e.action = Some("flow".into());
            let (kind, exporter) = if i % 2 == 0 {
                ("netflow", "192.0.2.1")
            } else {
                ("ipfix", "192.0.2.2")
            };
            e.observer_type = Some(kind.into());
            e.dataset = Some(kind.into());
            e.observer_id = Some(format!("{kind}/{exporter}").into());
            e.observer_ip = Some(exporter.parse().unwrap());
            e.source_ip = Some(format!("10.0.0.{}", i % 4 + 10).parse().unwrap());
            e.source_port = Some(50_000 + i as u16);
            e.destination_ip = Some(format!("203.0.113.{}", i % 3 + 1).parse().unwrap());
            e.destination_port = Some([443, 22, 53][i as usize % 3]);
            e.network_transport = Some(if i % 3 == 2 { "udp" } else { "tcp" }.into());
            e.network_bytes = Some(1_000 * (i as u64 + 1));
            e.network_packets = Some(i as u64 + 2);
            let (cc, name) = if i % 2 == 0 {
                ("DE", "Germany")
            } else {
                ("FR", "France")
            };
            e.rare_mut().destination_geo_country_iso_code = Some(cc.into());
            e.rare_mut().destination_geo_country_name = Some(name.into());
            e.extra.insert("flow.exporter".into(), exporter.into());
            e.extra.insert("flow.version".into(), "9".into());
            e.raw = vec![0, 9, 0, 1, i as u8];
            e
        })
        .collect();
    let ts = t(BASE_MS + 45 * 60_000);
    let mut counters = Event::new(ts, ts);
    counters.kind = Some("metric".into());
    counters.category = Some("network".into());
    counters.action = Some("interface_counters".into());
    counters.observer_type = Some("sflow".into());
    counters.dataset = Some("sflow".into());
    counters.observer_id = Some("sflow/192.0.2.3".into());
    counters
        .extra
        .insert("sflow.if_in_octets".into(), "123456".into());
    counters.raw = vec![0, 0, 0, 5];
    out.push(counters);
    out
}

fn letter(minute: i64, reason: &str) -> DeadLetter {
    DeadLetter {
        id: 0,
        received_at: t(BASE_MS + minute * 60_000),
        observer_type: "syslog".into(),
        observer_id: "syslog/udp/10.0.0.1".into(),
        peer: Some("10.0.0.1:5514".into()),
        reason: reason.into(),
        detail: format!("{reason} detail"),
        raw: b"<999>garbage".to_vec(),
    }
}

/// An offense indexed by `field` = `value`, created `minute` minutes after the base time.
fn offense(
    id: &str,
    rule: &str,
    field: &str,
    value: &str,
    magnitude: u8,
    minute: i64,
    status: OffenseStatus,
) -> Offense {
    let created = BASE_MS + minute * 60_000;
    Offense {
        id: id.into(),
        rule: rule.into(),
        title: format!("Rule {rule}"),
        index_field: field.into(),
        index_value: value.into(),
        status,
        magnitude,
        severity: magnitude,
        relevance: 6,
        credibility: 8,
        magnitude_reasons: vec![format!("severity {magnitude}")],
        level: Some(if magnitude >= 8 { "high" } else { "medium" }.into()),
        tags: vec!["attack.t1110.001".into()],
        first_seen: t(created - 120_000),
        last_seen: t(created + 300_000),
        event_count: 10 + u64::from(magnitude),
        stored_events: 10,
        window_start: t(created - 120_000),
        created_at: t(created),
        updated_at: t(created + 300_000),
        assignee: None,
        closing_reason: (status == OffenseStatus::Closed).then(|| "false positive".into()),
        closed_at: (status == OffenseStatus::Closed).then(|| t(created + 600_000)),
        follow_up: false,
        asset_criticality: 0,
        asset_reason: None,
    }
}

fn rule_part(o: &Offense, detections: u64) -> OffenseRule {
    OffenseRule {
        rule: o.rule.clone(),
        title: o.title.clone(),
        rule_id: Some(format!("id-{}", o.rule)),
        author: Some("Vigil".into()),
        level: o.level.clone(),
        severity: o.severity,
        relevance: o.relevance,
        credibility: o.credibility,
        detections,
        events: detections * 5,
        first_seen: o.first_seen,
        last_seen: o.last_seen,
    }
}

/// What the test wrote, for the exact checks.
struct Written {
    events: usize,
    flows: usize,
    dead_letters: usize,
    open_offenses: usize,
    offenses: usize,
}

async fn fill(store: &ClickHouseStore, db: &str) -> Written {
    for table in ["events", "offenses", "offense_rules", "dead_letters"] {
        stop_merges(db, table).await;
    }
    let auth = auth_events();
    let flows = flow_events();
    store.insert_events("syslog/0/0", &auth).await.unwrap();
    // A stage-1 retry writes the same batch again: the panels must not count it twice.
    store.insert_events("syslog/0/0", &auth).await.unwrap();
    store.insert_events("flows/0/0", &flows).await.unwrap();

    let letters = [
        letter(5, "pri"),
        letter(6, "pri"),
        letter(40, "invalid_utf8"),
        letter(70, "frame_too_long"),
        letter(71, "pri"),
    ];
    store
        .insert_dead_letters("dead/0/0", &letters)
        .await
        .unwrap();
    store
        .insert_dead_letters("dead/0/0", &letters)
        .await
        .unwrap();

    use OffenseStatus::{Closed, Open};
    let o1 = offense(
        "o1",
        "ssh_brute_force",
        "source.ip",
        "198.51.100.1",
        8,
        10,
        Open,
    );
    let o2 = offense("o2", "port_scan", "source.ip", "198.51.100.2", 5, 20, Open);
    let o3_open = offense(
        "o3",
        "ssh_brute_force",
        "source.ip",
        "203.0.113.66",
        9,
        30,
        Open,
    );
    let o3_closed = offense(
        "o3",
        "ssh_brute_force",
        "source.ip",
        "203.0.113.66",
        9,
        30,
        Closed,
    );
    let o4 = offense("o4", "root_login", "user.name", "root", 10, 40, Open);
    let o5 = offense(
        "o5",
        "dns_tunnel",
        "destination.ip",
        "2001:db8::dead",
        6,
        50,
        Open,
    );
    // Versions as separate INSERTs (separate parts): only FINAL hides o3's open version.
    store
        .put_offenses(&[(o1.clone(), 1), (o2.clone(), 1), (o3_open.clone(), 1)])
        .await
        .unwrap();
    store
        .put_offenses(&[(o3_closed, 2), (o4.clone(), 1), (o5.clone(), 1)])
        .await
        .unwrap();
    store
        .put_offense_rules(&[
            ("o1".into(), rule_part(&o1, 3), 1),
            ("o2".into(), rule_part(&o2, 1), 1),
            ("o3".into(), rule_part(&o3_open, 2), 1),
            ("o4".into(), rule_part(&o4, 1), 1),
            ("o5".into(), rule_part(&o5, 1), 1),
        ])
        .await
        .unwrap();
    // o1 grew: a newer version of its rule part (4 detections, not 3 + 4).
    store
        .put_offense_rules(&[("o1".into(), rule_part(&o1, 4), 2)])
        .await
        .unwrap();

    Written {
        events: auth.len() + flows.len(),
        flows: flows.len() - 1,
        dead_letters: letters.len(),
        open_offenses: 4,
        offenses: 5,
    }
}

// ---------------------------------------------------------------------------------------------
// Running every panel
// ---------------------------------------------------------------------------------------------

/// Fields a panel's options name that the query must return (time series' `time`, the label
/// column in `displayName`, the geomap lookup and style fields, the bar chart's x field, the
/// columns an `organize` transformation renames).
fn fields_the_panel_needs(panel: &Value) -> BTreeSet<String> {
    let mut need = BTreeSet::new();
    let add = |need: &mut BTreeSet<String>, v: &Value| {
        if let Some(s) = non_empty_str(v) {
            need.insert(s.to_owned());
        }
    };
    if panel["type"] == "timeseries" {
        need.insert("time".to_owned());
        if let Some(name) = panel["fieldConfig"]["defaults"]["displayName"].as_str() {
            if let Some(label) = name
                .strip_prefix("${__field.labels.")
                .and_then(|s| s.strip_suffix('}'))
            {
                need.insert(label.to_owned());
            }
        }
    }
    for layer in panel["options"]["layers"].as_array().into_iter().flatten() {
        let location = &layer["location"];
        match location["mode"].as_str() {
            Some("lookup") => add(&mut need, &location["lookup"]),
            Some("coords") => {
                add(&mut need, &location["latitude"]);
                add(&mut need, &location["longitude"]);
            }
            _ => {}
        }
        let style = &layer["config"]["style"];
        add(&mut need, &style["size"]["field"]);
        add(&mut need, &style["color"]["field"]);
    }
    add(&mut need, &panel["options"]["xField"]);
    for tr in panel["transformations"].as_array().into_iter().flatten() {
        if tr["id"] == "organize" {
            for k in tr["options"]["renameByName"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.keys())
            {
                need.insert(k.clone());
            }
        }
    }
    need
}

/// One column of a result, by name.
fn column<'a>(rows: &'a [Map<String, Value>], name: &str) -> Vec<&'a Value> {
    rows.iter().filter_map(|r| r.get(name)).collect()
}

fn strings(values: Vec<&Value>) -> Vec<String> {
    values
        .into_iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string())
        })
        .collect()
}

fn sum(values: Vec<&Value>) -> f64 {
    values.into_iter().filter_map(number).sum()
}

#[tokio::test]
async fn dashboard_queries_run_on_clickhouse_over_vigils_own_rows() {
    require_server().await;
    let db = TestDb {
        name: format!("vigil_test_{:016x}", rand::random::<u64>()),
    };
    let store = ClickHouseStore::connect(&ClickHouseConfig {
        url: clickhouse_url(),
        database: db.name.clone(),
        ..ClickHouseConfig::default()
    })
    .await
    .unwrap();
    let written = fill(&store, &db.name).await;

    let mut failures = Vec::new();
    // Results by panel title, for the exact checks below.
    let mut results: BTreeMap<String, Vec<Map<String, Value>>> = BTreeMap::new();
    let mut queries = 0;
    for (file, d) in dashboards() {
        // The `database` variable lists the test database.
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            let Some(sql) = variable_sql(v) else { continue };
            let name = format!("{file}: variable {}", v["name"]);
            match expand(sql, &db.name, FROM_S, TO_S, INTERVAL_S) {
                Err(e) => failures.push(format!("{name}: {e}")),
                Ok(sql) => match rows(&sql).await {
                    Err(e) => failures.push(format!("{name}: {e}\n{sql}")),
                    Ok(r) => {
                        queries += 1;
                        let offered: Vec<String> = r
                            .iter()
                            .filter_map(|row| row.values().next())
                            .map(|v| v.as_str().unwrap_or_default().to_owned())
                            .collect();
                        if v["name"] == "database" && !offered.contains(&db.name) {
                            failures.push(format!("{name}: {} not offered", db.name));
                        }
                    }
                },
            }
        }
        for p in panels(&d).into_iter().filter(|p| !is_row(p)) {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            let name = format!("{file}: panel {} {title:?}", p["id"]);
            for target in p["targets"].as_array().into_iter().flatten() {
                let raw = target["rawSql"].as_str().unwrap_or_default();
                let sql = match expand(raw, &db.name, FROM_S, TO_S, INTERVAL_S) {
                    Ok(sql) => sql,
                    Err(e) => {
                        failures.push(format!("{name}: {e}"));
                        continue;
                    }
                };
                let r = match rows(&sql).await {
                    Ok(r) => r,
                    Err(e) => {
                        failures.push(format!("{name}: {e}\n{sql}"));
                        continue;
                    }
                };
                queries += 1;
                if r.is_empty() {
                    failures.push(format!("{name}: no rows\n{sql}"));
                    continue;
                }
                if !r
                    .iter()
                    .flat_map(|row| row.values())
                    .any(|v| number(v).is_some_and(|n| n != 0.0))
                {
                    failures.push(format!("{name}: only zeros {r:?}\n{sql}"));
                }
                let returned: BTreeSet<&String> = r.iter().flat_map(|row| row.keys()).collect();
                for field in fields_the_panel_needs(p) {
                    if !returned.contains(&field) {
                        failures.push(format!(
                            "{name}: the panel uses field {field:?}, the query returns {returned:?}"
                        ));
                    }
                }
                // Time buckets lie in the range (a seconds/milliseconds slip does not).
                for v in column(&r, "time") {
                    let parsed = v
                        .as_str()
                        .and_then(|s| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").ok())
                        .map(|t| t.and_utc().timestamp());
                    if !parsed.is_some_and(|s| (FROM_S - INTERVAL_S..=TO_S).contains(&s)) {
                        failures.push(format!("{name}: time {v} outside the range"));
                        break;
                    }
                }
                results.insert(title.clone(), r);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // Exact answers for the data written: each row once (FINAL), the right rows only.
    let get = |title: &str| {
        results
            .get(title)
            .unwrap_or_else(|| panic!("no panel titled {title:?}"))
            .as_slice()
    };
    let one = |title: &str, col: &str| sum(column(get(title), col));
    let eps_rows = get("Events per second by source");
    assert_eq!(
        (sum(column(eps_rows, "eps")) * INTERVAL_S as f64).round() as usize,
        written.events,
        "EPS × interval adds up to the events written, each once"
    );
    let sources: BTreeSet<String> = strings(column(eps_rows, "source")).into_iter().collect();
    assert!(sources.contains("syslog / openssh"), "{sources:?}");
    assert!(sources.contains("netflow / netflow"), "{sources:?}");
    assert_eq!(one("Events", "events") as usize, written.events);
    assert_eq!(
        one("Open offenses", "open_offenses") as usize,
        written.open_offenses
    );
    assert_eq!(
        one("Offenses created", "offenses") as usize,
        written.offenses
    );
    assert_eq!(
        one("Offenses over time", "offenses") as usize,
        written.offenses
    );
    assert_eq!(
        one("Dead letters", "dead_letters") as usize,
        written.dead_letters
    );
    assert_eq!(
        one("Dead letters by reason", "dead_letters") as usize,
        written.dead_letters
    );

    // Open offenses on addresses, highest magnitude first: not o3 (closed in its newest
    // version) nor o4 (indexed by user name).
    assert_eq!(
        strings(column(get("Top offending IPs"), "ip")),
        ["198.51.100.1", "2001:db8::dead", "198.51.100.2"]
    );
    let rules = get("Top rules");
    assert_eq!(
        strings(column(rules, "rule"))[0],
        "ssh_brute_force",
        "{rules:?}"
    );
    assert_eq!(
        one("Top rules", "rule_detections") as u64,
        4 + 1 + 2 + 1 + 1
    );

    let countries: BTreeSet<String> = strings(column(get("Event sources by country"), "country"))
        .into_iter()
        .collect();
    assert_eq!(countries, BTreeSet::from(["GB".into(), "US".into()]));
    let auth = auth_events();
    let with_geo = auth
        .iter()
        .filter(|e| e.rare().source_geo_country_iso_code.is_some())
        .count();
    assert_eq!(
        one("Event sources by country", "event_count") as usize,
        with_geo
    );

    // Flows: the counter event is not a flow; IPv4 talkers show dotted.
    let flows = flow_events();
    let bytes: u64 = flows.iter().filter_map(|e| e.network_bytes).sum();
    assert_eq!(one("Flows", "flows") as usize, written.flows);
    assert_eq!(one("Traffic", "bytes") as u64, bytes);
    assert_eq!(one("Exporters", "exporters") as u64, 2);
    assert_eq!(
        (one("Flow traffic by exporter", "bits_per_second") * INTERVAL_S as f64 / 8.0).round()
            as u64,
        bytes
    );
    let talkers = strings(column(get("Top talkers"), "source"));
    let expected_talkers: BTreeSet<String> = flows
        .iter()
        .filter(|e| e.action.as_deref() == Some("flow"))
        .filter_map(|e| e.source_ip.map(|ip: IpAddr| ip.to_string()))
        .collect();
    assert_eq!(
        talkers.iter().cloned().collect::<BTreeSet<_>>(),
        expected_talkers
    );
    let destinations: BTreeSet<String> =
        strings(column(get("Flow destinations by country"), "country"))
            .into_iter()
            .collect();
    assert_eq!(destinations, BTreeSet::from(["DE".into(), "FR".into()]));
    assert!(queries >= 20, "ran {queries} queries");
    eprintln!(
        "ran {queries} dashboard queries against {}",
        clickhouse_url()
    );
}
