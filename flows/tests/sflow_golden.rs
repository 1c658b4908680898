//! sFlow golden tests: every vector in `fixtures/sflow/` (goflow2's decoder tests). We check what
//! goflow2 asserts (`expected`) and cross-check every header, sample and record value of the
//! independent `decoded_reference` parse.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use serde_json::Value;
use vigil_flows::{FieldValue, FlowRecord, SflowDecoder, SflowLimits, SflowRecord};

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn u(rec: &FlowRecord, name: &str) -> u64 {
    match rec.field(name) {
        Some(FieldValue::Unsigned(v)) => *v,
        other => panic!("{name}: {other:?}"),
    }
}

fn check_flow(rec: &FlowRecord, sample: &Value) {
    assert_eq!(
        u(rec, "sample_sequence_number"),
        sample["sample_sequence_number"].as_u64().unwrap()
    );
    assert_eq!(
        u(rec, "source_id_type"),
        sample["source_id_type"].as_u64().unwrap()
    );
    assert_eq!(
        u(rec, "source_id_index"),
        sample["source_id_index"].as_u64().unwrap()
    );
    assert_eq!(
        u(rec, "sampling_rate"),
        sample["sampling_rate"].as_u64().unwrap()
    );
    assert_eq!(
        u(rec, "sample_pool"),
        sample["sample_pool"].as_u64().unwrap()
    );
    assert_eq!(u(rec, "drops"), sample["drops"].as_u64().unwrap());
    let input = sample.get("input_value").or(sample.get("input")).unwrap();
    let output = sample.get("output_value").or(sample.get("output")).unwrap();
    assert_eq!(u(rec, "input"), input.as_u64().unwrap());
    assert_eq!(u(rec, "output"), output.as_u64().unwrap());
    assert_eq!(rec.input_interface, Some(input.as_u64().unwrap() as u32));
    let rate = sample["sampling_rate"].as_u64().unwrap();
    assert_eq!(rec.sampling_rate as u64, rate);
    for r in sample["records"].as_array().unwrap() {
        match r["format"].as_u64().unwrap() {
            1 => {
                assert_eq!(
                    u(rec, "header_protocol"),
                    r["header_protocol"].as_u64().unwrap()
                );
                assert_eq!(u(rec, "frame_length"), r["frame_length"].as_u64().unwrap());
                assert_eq!(u(rec, "stripped"), r["stripped"].as_u64().unwrap());
                assert_eq!(
                    u(rec, "header_length"),
                    r["header_length"].as_u64().unwrap()
                );
                let header = serde_json::to_value(rec.field("header").unwrap()).unwrap();
                assert_eq!(header, r["header_hex"]);
                assert_eq!(rec.bytes, r["frame_length"].as_u64().unwrap() * rate);
                assert_eq!(rec.packets, rate);
            }
            1001 => {
                assert_eq!(u(rec, "src_vlan"), r["src_vlan"].as_u64().unwrap());
                assert_eq!(u(rec, "dst_vlan"), r["dst_vlan"].as_u64().unwrap());
                assert_eq!(u(rec, "src_priority"), r["src_priority"].as_u64().unwrap());
                assert_eq!(u(rec, "dst_priority"), r["dst_priority"].as_u64().unwrap());
            }
            other => panic!("unexpected record format {other}"),
        }
    }
}

#[test]
fn golden_sflow_vectors() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/sflow");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 5);
    let exporter: SocketAddr = "192.0.2.20:6343".parse().unwrap();
    let now = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let golden: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let payload = unhex(golden["hex"].as_str().unwrap());
        assert_eq!(payload.len() as u64, golden["length"].as_u64().unwrap());
        let mut decoder = SflowDecoder::new(SflowLimits::default());
        let mut out = Vec::new();
        let result = decoder.decode(exporter, &payload, now, &mut out);
        let expected = &golden["expected"];
        assert_eq!(
            result.is_err(),
            expected["decode_error"].as_bool().unwrap(),
            "{name}"
        );
        let summary = result.unwrap();

        // What goflow2 asserts.
        if let Some(n) = expected.get("samples_len") {
            assert_eq!(out.len() as u64, n.as_u64().unwrap(), "{name}");
        }
        if let Some(t) = expected.get("sample0_type").and_then(Value::as_str) {
            assert!(t.starts_with("DropSample"), "{name}");
            assert!(matches!(out[0], SflowRecord::Discarded(_)), "{name}");
        }
        if let Some(rec0) = expected.get("sample0_record0") {
            let SflowRecord::Discarded(d) = &out[0] else {
                panic!("{name}")
            };
            let f = &rec0["fields"];
            match rec0["type"].as_str().unwrap() {
                "EgressQueue" => {
                    assert_eq!(d.egress_queue, Some(f["Queue"].as_u64().unwrap() as u32))
                }
                "ExtendedACL" => {
                    let acl = d.acl.as_ref().unwrap();
                    assert_eq!(acl.number as u64, f["Number"].as_u64().unwrap());
                    assert_eq!(acl.name, f["Name"].as_str().unwrap());
                    assert_eq!(acl.direction as u64, f["Direction"].as_u64().unwrap());
                }
                "ExtendedFunction" => {
                    assert_eq!(d.function.as_deref(), f["Symbol"].as_str());
                }
                other => panic!("{name}: {other}"),
            }
            assert_eq!(expected["sample0_records_len"].as_u64(), Some(1));
        }

        // Cross-check with the independent reference parse.
        let reference = &golden["decoded_reference"];
        assert_eq!(
            summary.samples_declared as u64,
            reference["samples_count"].as_u64().unwrap()
        );
        assert_eq!(
            summary.trailing_bytes as u64,
            reference["trailing_bytes"].as_u64().unwrap()
        );
        let samples = reference["samples"].as_array().unwrap();
        assert_eq!(out.len(), samples.len(), "{name}");
        for (record, sample) in out.iter().zip(samples) {
            match record {
                SflowRecord::Flow(rec) => {
                    assert_eq!(
                        rec.sequence as u64,
                        reference["sequence_number"].as_u64().unwrap()
                    );
                    assert_eq!(
                        rec.observation_domain as u64,
                        reference["sub_agent_id"].as_u64().unwrap()
                    );
                    assert_eq!(
                        rec.exporter_uptime_ms.map(u64::from),
                        reference["uptime_ms"].as_u64()
                    );
                    let agent = serde_json::to_value(rec.field("agent_address").unwrap()).unwrap();
                    assert_eq!(agent, reference["agent_ip"]);
                    check_flow(rec, sample);
                }
                SflowRecord::Discarded(d) => {
                    let o = &d.origin;
                    assert_eq!(
                        o.agent_address.to_string(),
                        reference["agent_ip"].as_str().unwrap()
                    );
                    assert_eq!(
                        o.sub_agent_id as u64,
                        reference["sub_agent_id"].as_u64().unwrap()
                    );
                    assert_eq!(
                        o.datagram_sequence as u64,
                        reference["sequence_number"].as_u64().unwrap()
                    );
                    assert_eq!(o.uptime_ms as u64, reference["uptime_ms"].as_u64().unwrap());
                    assert_eq!(
                        o.sample_sequence as u64,
                        sample["sample_sequence_number"].as_u64().unwrap()
                    );
                    assert_eq!(
                        o.source_id_type as u64,
                        sample["source_id_type"].as_u64().unwrap()
                    );
                    assert_eq!(
                        o.source_id_index as u64,
                        sample["source_id_index"].as_u64().unwrap()
                    );
                    assert_eq!(d.drops as u64, sample["drops"].as_u64().unwrap());
                    assert_eq!(d.input as u64, sample["input"].as_u64().unwrap());
                    assert_eq!(d.output as u64, sample["output"].as_u64().unwrap());
                    assert_eq!(d.reason as u64, sample["reason"].as_u64().unwrap());
                }
                SflowRecord::Counters(_) => panic!("{name}: no counter samples in the vectors"),
            }
        }
    }
}

/// The basic flow sample's raw header: 802.1Q VLAN 32, ICMP echo 172.16.32.254 -> .241.
#[test]
fn basic_flow_sample_packet_fields() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/sflow/sflow5_basic_flow_sample.json");
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let payload = unhex(golden["hex"].as_str().unwrap());
    let mut decoder = SflowDecoder::new(SflowLimits::default());
    let mut out = Vec::new();
    decoder
        .decode(
            "192.0.2.20:6343".parse().unwrap(),
            &payload,
            Utc::now(),
            &mut out,
        )
        .unwrap();
    let SflowRecord::Flow(rec) = &out[0] else {
        panic!()
    };
    assert_eq!(rec.vlan, Some(32));
    assert_eq!(rec.src_addr, Some("172.16.32.254".parse().unwrap()));
    assert_eq!(rec.dst_addr, Some("172.16.32.241".parse().unwrap()));
    assert_eq!(rec.ip_protocol, Some(1));
    assert_eq!(rec.transport, Some("icmp"));
    assert_eq!((rec.icmp_type, rec.icmp_code), (Some(8), Some(0)));
    assert_eq!(rec.bytes, 82 * 2048);
    assert_eq!(rec.sampling_rate, 2048);
    assert!(rec.community_id.starts_with("1:"));
    assert_eq!(rec.input_interface, Some(1194));
    assert_eq!(rec.output_interface, Some(1043));
}
