//! Golden tests: every case in `fixtures/netflow/golden/` (Logstash netflow codec spec) is fed
//! through one `FlowDecoder` per case and every expected record and field assertion is compared
//! with our output, rendered in Logstash's shape through the name-mapping table.
//!
//! Differences from Logstash are not silently tolerated: each one is a named entry of
//! [`EXCEPTIONS`] (or a documented rendering rule in [`logstash_event`]) with its reason, and
//! the test fails if an exception is never exercised.
#![allow(clippy::unwrap_used)]

use std::cell::Cell;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Map, Value};
use vigil_flows::{FieldValue, FlowDecoder, FlowRecord, FlowSource, Limits, TemplateSnapshot};

fn netflow_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/netflow")
}

fn exporter() -> SocketAddr {
    "192.0.2.10:2055".parse().unwrap()
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap()
}

/// A deliberate, justified difference from the Logstash golden output.
struct Exception {
    /// Golden file name prefix (`NN`).
    case: &'static str,
    /// Decoded event index, or `None` for every event of the case.
    index: Option<usize>,
    /// Field name in the `netflow` object.
    field: &'static str,
    /// Why we differ.
    reason: &'static str,
    used: Cell<bool>,
}

impl Exception {
    const fn new(
        case: &'static str,
        index: Option<usize>,
        field: &'static str,
        reason: &'static str,
    ) -> Self {
        Exception {
            case,
            index,
            field,
            reason,
            used: Cell::new(false),
        }
    }
}

thread_local! {
    static EXCEPTIONS: Vec<Exception> = vec![
        Exception::new(
            "52",
            Some(0),
            "flowEndMicroseconds",
            "field assert without `only_for` uses the Logstash < 8 millisecond rendering \
             (2016-11-11T12:09:19.000Z); we keep the NTP timestamp's sub-millisecond digits, \
             and the `logstash>=8` assert on the same field (…19.000127768Z) passes",
        ),
    ];
}

/// Logstash's rendering of v5/v9 `first_switched`/`last_switched` from the raw sysUptime value.
///
/// Named rule `LOGSTASH_SWITCHED_QUIRK` (SOURCE.md quirks 2 and 3): we keep the raw uptime
/// milliseconds in the field map and put the true absolute time in `flow_start`/`flow_end`
/// (checked separately in [`check_flow_times`]). Logstash computes with unbounded integers
/// (no 32-bit wrap), renders v9 times 1 s late, and v5 times 1 s late whenever the
/// sub-second borrow is needed (Ruby has no `--`). This reproduces that for comparison.
fn logstash_switched(version: u16, uptime: u32, export: DateTime<Utc>, raw: u64) -> DateTime<Utc> {
    let millis = i64::from(uptime) - i64::try_from(raw).unwrap();
    let seconds = export.timestamp() - millis.div_euclid(1000);
    let micros = if version == 9 {
        1_000_000 - millis.rem_euclid(1000) * 1000
    } else {
        let mut micros =
            i64::from(export.timestamp_subsec_nanos() / 1000) - millis.rem_euclid(1000) * 1000;
        if micros < 0 {
            micros += 1_000_000; // the `seconds--` that Ruby silently ignores
        }
        micros
    };
    Utc.timestamp_opt(seconds, 0).unwrap() + Duration::microseconds(micros)
}

/// Our record rendered as Logstash's `netflow` object.
fn logstash_event(rec: &FlowRecord, include_flowset_id: bool) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("version".into(), rec.protocol_version.into());
    match rec.source {
        FlowSource::NetflowV5 => {
            m.insert("flow_seq_num".into(), rec.sequence.into());
        }
        FlowSource::NetflowV9 => {
            m.insert("flow_seq_num".into(), rec.sequence.into());
            m.insert("flowset_id".into(), rec.template_id.unwrap().into());
        }
        FlowSource::Ipfix if include_flowset_id => {
            m.insert("flowset_id".into(), rec.template_id.unwrap().into());
        }
        _ => {}
    }
    for (name, value) in rec.fields.iter() {
        // Named rule UNKNOWN_FIELDS: Logstash drops elements missing from its tables; we keep
        // them as `unknown_v9_<type>` / `unknown_<pen>_<id>` (octets) so nothing is lost.
        if name.starts_with("unknown_") {
            continue;
        }
        let rendered = match (rec.source, name, value) {
            (
                FlowSource::NetflowV5 | FlowSource::NetflowV9,
                "first_switched" | "last_switched",
                FieldValue::Unsigned(raw),
            ) => {
                let t = logstash_switched(
                    rec.protocol_version,
                    rec.exporter_uptime_ms.unwrap(),
                    rec.export_time,
                    *raw,
                );
                Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            }
            _ => serde_json::to_value(value).unwrap(),
        };
        m.insert(name.to_string(), rendered);
    }
    m
}

/// `flow_start`/`flow_end` are the true absolute times (uptime differences taken modulo 2^32).
fn check_flow_times(rec: &FlowRecord) {
    if !matches!(rec.source, FlowSource::NetflowV5 | FlowSource::NetflowV9) {
        return;
    }
    for (name, got) in [
        ("first_switched", rec.flow_start),
        ("last_switched", rec.flow_end),
    ] {
        if let Some(FieldValue::Unsigned(raw)) = rec.field(name) {
            let uptime = rec.exporter_uptime_ms.unwrap();
            let ago = i64::from(uptime.wrapping_sub(*raw as u32) as i32);
            let want = rec.export_time - Duration::milliseconds(ago);
            assert_eq!(got, Some(want), "{name} of {rec:?}");
        }
    }
}

fn as_time(v: &Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn values_equal(expected: &Value, got: &Value) -> bool {
    if expected == got {
        return true;
    }
    if let (Some(a), Some(b)) = (as_time(expected), as_time(got)) {
        return a == b;
    }
    if let (Some(a), Some(b)) = (expected.as_f64(), got.as_f64()) {
        // serde_json (without `float_roundtrip`) may parse the golden's 17-digit float32
        // values one ulp off; the exact widened value is what we produce.
        return a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs());
    }
    false
}

/// Compares one field; a mismatch must be covered by a named exception.
fn compare_field(
    case: &str,
    index: usize,
    field: &str,
    expected: Option<&Value>,
    got: Option<&Value>,
    failures: &mut Vec<String>,
) {
    let equal = match (expected, got) {
        (Some(e), Some(g)) => values_equal(e, g),
        (None, None) => true,
        _ => false,
    };
    if equal {
        return;
    }
    let excused = EXCEPTIONS.with(|list| {
        list.iter()
            .find(|x| {
                case.starts_with(x.case) && x.index.is_none_or(|i| i == index) && x.field == field
            })
            .map(|x| {
                x.used.set(true);
                x.reason
            })
            .is_some()
    });
    if !excused {
        failures.push(format!(
            "{case} event {index} field {field}: expected {expected:?}, got {got:?}"
        ));
    }
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(netflow_dir().join(name)).unwrap()
}

/// Runs one golden case; returns the decoded events.
fn run_case(case: &str, golden: &Value) -> Vec<FlowRecord> {
    let datagrams: Vec<&str> = golden["datagrams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    let config = &golden["codec_config"];
    let mut out = Vec::new();
    if config.get("cache_save_path").is_some() {
        // Template persistence: phase 1 learns the templates, a NEW decoder restores them.
        let mut first = FlowDecoder::new(Limits::default());
        for d in datagrams.iter().filter(|d| d.contains("tpl")) {
            let _ = first.decode(exporter(), &read(d), now(), &mut out);
        }
        assert!(out.is_empty(), "{case}: template datagrams yield no events");
        let json = serde_json::to_string(&first.snapshot_templates()).unwrap();
        let snapshot: TemplateSnapshot = serde_json::from_str(&json).unwrap();
        let mut second = FlowDecoder::new(Limits::default());
        assert!(second.restore_templates(&snapshot, now()) > 0);
        for d in datagrams.iter().filter(|d| !d.contains("tpl")) {
            let _ = second.decode(exporter(), &read(d), now(), &mut out);
        }
    } else {
        let mut decoder = FlowDecoder::new(Limits::default());
        for d in &datagrams {
            // Invalid inputs may return errors; they must never panic.
            if let Err(e) = decoder.decode(exporter(), &read(d), now(), &mut out) {
                eprintln!("{case}: {d} rejected: {e}");
            }
        }
    }
    out
}

#[test]
fn golden_netflow_cases() {
    let mut dir: Vec<PathBuf> = std::fs::read_dir(netflow_dir().join("golden"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    dir.sort();
    assert_eq!(dir.len(), 52, "all golden cases present");

    let mut failures = Vec::new();
    let mut compared_records = 0;
    let mut compared_asserts = 0;
    for path in &dir {
        let case = path.file_name().unwrap().to_string_lossy().to_string();
        let golden: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let include_flowset_id = golden["codec_config"]["include_flowset_id"] == Value::Bool(true);
        let events = run_case(&case, &golden);
        eprintln!("{case}: {} events", events.len());
        events.iter().for_each(check_flow_times);
        let rendered: Vec<Map<String, Value>> = events
            .iter()
            .map(|e| logstash_event(e, include_flowset_id))
            .collect();

        if let Some(n) = golden["event_count"].as_u64() {
            if events.len() as u64 != n {
                failures.push(format!("{case}: {} events, expected {n}", events.len()));
                continue;
            }
        }
        let expected = golden["expected"].as_array().unwrap();
        let indexes = golden["expected_decode_index"].as_array().unwrap();
        for (want, index) in expected.iter().zip(indexes) {
            let index = index.as_u64().unwrap() as usize;
            let Some(got) = rendered.get(index) else {
                failures.push(format!("{case}: no event {index}"));
                continue;
            };
            compared_records += 1;
            let want_nf = want["netflow"].as_object().unwrap();
            let keys: BTreeSet<&String> = want_nf.keys().chain(got.keys()).collect();
            for key in keys {
                compare_field(
                    &case,
                    index,
                    key,
                    want_nf.get(key),
                    got.get(key),
                    &mut failures,
                );
            }
            // @timestamp is the export time of the header.
            let ts = as_time(&want["@timestamp"]).unwrap();
            if ts != events[index].export_time {
                failures.push(format!(
                    "{case} event {index}: @timestamp {ts} vs {}",
                    events[index].export_time
                ));
            }
        }
        for fa in golden["field_asserts"].as_array().unwrap() {
            if fa.get("only_for").and_then(Value::as_str) == Some("logstash<8") {
                continue;
            }
            let index = fa["index"].as_u64().unwrap() as usize;
            let field = fa["field"].as_str().unwrap();
            compared_asserts += 1;
            let got = rendered.get(index).and_then(|e| e.get(field));
            compare_field(&case, index, field, Some(&fa["value"]), got, &mut failures);
        }
    }
    EXCEPTIONS.with(|list| {
        for x in list {
            assert!(
                x.used.get(),
                "stale exception {} {}: {}",
                x.case,
                x.field,
                x.reason
            );
        }
    });
    assert!(
        failures.is_empty(),
        "{} golden divergences:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(compared_records, 56, "every expected record compared");
    assert!(
        compared_asserts >= 170,
        "field asserts compared: {compared_asserts}"
    );
}

/// The .dat files no golden case uses still decode without panicking.
#[test]
fn unused_captures_smoke() {
    for name in [
        "ipfix_test_ixia_tpldata271.dat",
        "netflow9_test_cisco_asr9k_opttpl257.dat",
        "netflow9_test_cisco_asr9k_opttpl334.dat",
        "netflow9_test_cisco_asr9k_tpl266.dat",
    ] {
        let mut decoder = FlowDecoder::new(Limits::default());
        let mut out = Vec::new();
        decoder
            .decode(exporter(), &read(name), now(), &mut out)
            .unwrap();
        assert!(decoder.template_count() > 0, "{name}");
    }
}

/// Normalized columns on real captures (beyond Logstash's field map).
#[test]
fn normalized_columns_on_captures() {
    let decode_all = |files: &[&str]| {
        let mut d = FlowDecoder::new(Limits::default());
        let mut out = Vec::new();
        for f in files {
            d.decode(exporter(), &read(f), now(), &mut out).unwrap();
        }
        out
    };
    // IPFIX sysUpTime-relative times use systemInitTimeMilliseconds from the options record.
    let out = decode_all(&["ipfix.dat"]);
    let init = Utc.timestamp_millis_opt(1_431_516_013_506).unwrap();
    assert_eq!(out[1].flow_start, Some(init));
    assert_eq!(out[1].flow_end, Some(init + Duration::milliseconds(12726)));
    assert_eq!(out[1].transport, Some("tcp"));
    assert_eq!(out[1].tcp_flag_names, vec!["ack"]);
    assert_eq!(out[0].kind, vigil_flows::RecordKind::Options);
    assert!(out[0].community_id.is_empty());

    // MAC addresses (v9 in_src_mac / in_dst_mac).
    let out = decode_all(&[
        "netflow9_test_macaddr_tpl.dat",
        "netflow9_test_macaddr_data.dat",
    ]);
    assert_eq!(out[1].src_mac.unwrap().to_string(), "00:50:56:c0:00:01");
    assert_eq!(out[1].dst_mac.unwrap().to_string(), "00:0c:29:70:86:09");

    // flowDirection (IE 61) and IPFIX millisecond times (VMware).
    let out = decode_all(&[
        "ipfix_test_vmware_vds_tpl.dat",
        "ipfix_test_vmware_vds_data264.dat",
    ]);
    assert_eq!(out[0].direction, Some(vigil_flows::Direction::Egress));
    assert_eq!(
        out[0].flow_start,
        as_time(&Value::from("2016-12-22T12:17:37.000Z"))
    );
    assert_eq!(
        (out[0].input_interface, out[0].output_interface),
        (Some(3), Some(11))
    );

    // Cisco ASA: ICMP type/code, bytes from NSEL counters.
    let out = decode_all(&[
        "netflow9_test_cisco_asa_1_tpl.dat",
        "netflow9_test_cisco_asa_1_data.dat",
    ]);
    assert_eq!((out[1].icmp_type, out[1].icmp_code), (Some(8), Some(0)));
    assert_eq!(out[1].transport, Some("icmp"));
    assert_eq!(out[1].bytes, 56);

    // IPv6 next hop (Mikrotik) and AS numbers / masks (Juniper v5).
    let out = decode_all(&[
        "ipfix_test_mikrotik_tpl.dat",
        "ipfix_test_mikrotik_data258.dat",
        "ipfix_test_mikrotik_data259.dat",
    ]);
    assert_eq!(out[45].next_hop, Some("ff02::1".parse().unwrap()));
    assert_eq!(
        out[45].src_addr,
        Some("fe80::ff:fe00:1201".parse().unwrap())
    );
    let out = decode_all(&["netflow5_test_juniper_mx80.dat"]);
    let r = &out[28];
    assert_eq!(
        (r.src_as, r.dst_as, r.src_mask, r.dst_mask),
        (Some(15169), Some(64496), Some(19), Some(24))
    );
    assert_eq!(r.sampling_rate, 1000);
    assert_eq!((r.bytes, r.packets), (104_000, 2000));
}
