//! Flow collection end to end: NetFlow/IPFIX captures and sFlow vectors sent over UDP to a
//! running `vigil run` are decoded (the same records as the library decodes offline), and
//! synthetic NetFlow v5 exports of a port sweep and of a beaconing host raise exactly one
//! offense each.

use std::net::Ipv4Addr;

use crate::support::*;

/// A NetFlow v5 datagram from an exporter that booted at `boot` (unix seconds), exported at
/// `export` (unix seconds), with `flows`: (src, dst, src port, dst port, proto, tcp flags,
/// packets, bytes, start and end in unix seconds).
#[allow(clippy::type_complexity)]
fn netflow_v5(
    boot: u32,
    export: u32,
    sequence: u32,
    flows: &[(Ipv4Addr, Ipv4Addr, u16, u16, u8, u8, u32, u32, u32, u32)],
) -> Vec<u8> {
    let uptime_ms = |t: u32| (t - boot) * 1000;
    let mut d = Vec::new();
    d.extend_from_slice(&5u16.to_be_bytes());
    d.extend_from_slice(&(flows.len() as u16).to_be_bytes());
    d.extend_from_slice(&uptime_ms(export).to_be_bytes());
    d.extend_from_slice(&export.to_be_bytes());
    d.extend_from_slice(&0u32.to_be_bytes()); // nsecs
    d.extend_from_slice(&sequence.to_be_bytes());
    d.extend_from_slice(&[0, 0]); // engine type, id
    d.extend_from_slice(&0u16.to_be_bytes()); // sampling
    for &(src, dst, sport, dport, proto, flags, packets, bytes, start, end) in flows {
        d.extend_from_slice(&src.octets());
        d.extend_from_slice(&dst.octets());
        d.extend_from_slice(&[0, 0, 0, 0]); // next hop
        d.extend_from_slice(&1u16.to_be_bytes()); // input if
        d.extend_from_slice(&2u16.to_be_bytes()); // output if
        d.extend_from_slice(&packets.to_be_bytes());
        d.extend_from_slice(&bytes.to_be_bytes());
        d.extend_from_slice(&uptime_ms(start).to_be_bytes());
        d.extend_from_slice(&uptime_ms(end).to_be_bytes());
        d.extend_from_slice(&sport.to_be_bytes());
        d.extend_from_slice(&dport.to_be_bytes());
        d.push(0); // pad
        d.push(flags);
        d.push(proto);
        d.push(0); // tos
        d.extend_from_slice(&0u16.to_be_bytes()); // src as
        d.extend_from_slice(&0u16.to_be_bytes()); // dst as
        d.push(24);
        d.push(24);
        d.extend_from_slice(&[0, 0]);
    }
    d
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn offenses_by_rule(v: &Vigil) -> Vec<(String, String, u64)> {
    let o = v.get_json("/api/v1/offenses?limit=100");
    let mut got: Vec<(String, String, u64)> = o["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["rule"].as_str().unwrap().to_owned(),
                o["index_value"].as_str().unwrap().to_owned(),
                o["event_count"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    got
}

#[test]
fn a_netflow_sweep_and_a_beacon_raise_one_offense_each() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&write_config(dir.path(), ""));
    let boot = 1_795_000_000u32; // the exporter's boot time (unix seconds)
    let t0 = boot + 3600;
    // A sweep: one outside address, SYN-only flows to 30 inside hosts on SSH, within 30 s.
    let sweep: Vec<_> = (0..30u32)
        .map(|i| {
            (
                ip("203.0.113.66"),
                Ipv4Addr::new(10, 20, 0, 1 + i as u8),
                61_000 + i as u16,
                22,
                6,
                0x02,
                1,
                60,
                t0 + i,
                t0 + i,
            )
        })
        .collect();
    // A beacon: one inside host to one outside address every 300 s (± 10 s), 12 times, each a
    // short TLS connection (SYN, ACK, PSH, FIN).
    let beacon: Vec<_> = (0..12u32)
        .map(|i| {
            let t = t0 + 600 + i * 300 + (i * 7) % 20;
            (
                ip("10.0.0.23"),
                ip("198.51.100.77"),
                49_152 + i as u16,
                443,
                6,
                0x1b,
                9,
                2100,
                t,
                t + 1,
            )
        })
        .collect();
    let mut datagrams = Vec::new();
    let mut seq = 0;
    for chunk in sweep.chunks(10) {
        datagrams.push(netflow_v5(boot, t0 + 40, seq, chunk));
        seq += chunk.len() as u32;
    }
    for f in &beacon {
        datagrams.push(netflow_v5(boot, f.9 + 15, seq, std::slice::from_ref(f)));
        seq += 1;
    }
    vigil.send_datagrams_to(vigil.netflow, &datagrams);
    vigil.wait_until("42 flow records decoded", || {
        vigil.metric("vigil_flow_records_total") >= 42
    });
    vigil.wait_until("both offenses", || offenses_by_rule(&vigil).len() >= 2);
    assert_eq!(
        offenses_by_rule(&vigil),
        vec![
            (
                "infected_host_beaconing".to_owned(),
                "10.0.0.23".to_owned(),
                12
            ),
            (
                "network_horizontal_scan".to_owned(),
                "203.0.113.66".to_owned(),
                30
            ),
        ]
    );
    assert_eq!(vigil.metric("vigil_flow_lost_at_exporter_total"), 0);
    // The flows themselves, through the API, once their writer (a thread of its own) has
    // stored them.
    vigil.wait_until("the beacon's flows stored", || {
        vigil.get_json("/api/v1/flows?ip=198.51.100.77&limit=50")["total"] == 12
    });
    let beacon_flows = vigil.get_json("/api/v1/flows?ip=198.51.100.77&limit=50");
    assert_eq!(beacon_flows["total"], 12);
    let f = &beacon_flows["items"][0]["event"];
    assert_eq!(f["source.ip"], "10.0.0.23");
    assert_eq!(f["destination.port"], 443);
    assert_eq!(f["network.transport"], "tcp");
    assert_eq!(f["network.packets"], 9);
    assert_eq!(f["network.direction"], "outbound");
    assert_eq!(f["extra"]["tcp.flags"], "ACK,FIN,PSH,SYN");
    assert!(f["network.community_id"]
        .as_str()
        .unwrap()
        .starts_with("1:"));
    let (status, _) = vigil.get("/api/v1/flows", None);
    assert_eq!(status, 401, "flows need a token");
    // The sweep's thirty one-packet flows are held to be condensed; stopping stores them, as
    // one superflow row (the next start lists it).
    let config = write_config(dir.path(), "");
    let mut vigil = vigil;
    vigil.stop();
    let vigil = Vigil::start(&config);
    let sweep = vigil.get_json("/api/v1/flows?ip=203.0.113.66");
    assert_eq!(sweep["total"], 1, "{sweep}");
    let row = &sweep["items"][0];
    assert_eq!(row["kind"], "superflow");
    assert_eq!(row["flows"], 30);
    assert_eq!(row["event"]["destinations"], 30);
    assert_eq!(row["event"]["ports"], 1);
    assert_eq!(row["event"]["network.packets"], 30);
    assert_eq!(vigil.get_json("/api/v1/flows")["total"], 13);
    assert_eq!(
        vigil.metric("vigil_store_superflows_total"),
        0,
        "counted by the first run"
    );
}

/// Every capture of the NetFlow/IPFIX fixtures, in the order of the golden cases, and every
/// sFlow vector: the service decodes as many flow records as the library does offline, and
/// refuses what the library refuses (dead letters, by reason).
#[test]
fn captures_sent_over_udp_decode_like_the_library() {
    let root = repo_root().join("fixtures/netflow");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "dat"))
        .collect();
    files.sort();
    let datagrams: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    // Offline, one decoder, one exporter address: the records and the refusals.
    let exporter: std::net::SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut decoder = vigil_flows::FlowDecoder::new(vigil_flows::Limits::default());
    let now = chrono::Utc::now();
    let (mut want, mut refused) = (0u64, 0u64);
    for d in &datagrams {
        let mut out = Vec::new();
        match decoder.decode(exporter, d, now, &mut out) {
            Ok(_) => {
                want += out
                    .iter()
                    .filter(|r| r.kind == vigil_flows::RecordKind::Flow)
                    .count() as u64
            }
            Err(_) => refused += 1,
        }
    }
    assert!(want > 100, "the captures hold flows: {want}");

    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&write_config(dir.path(), ""));
    // One socket, as one exporter: templates sent earlier serve later captures.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for d in &datagrams {
        sock.send_to(d, vigil.netflow).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    vigil.wait_until("every capture decoded", || {
        vigil.metric("vigil_collector_received_total") >= datagrams.len() as u64
    });
    vigil.wait_until("the library's records", || {
        vigil.metric("vigil_flow_records_total") >= want
    });
    assert_eq!(vigil.metric("vigil_flow_records_total"), want);
    if refused > 0 {
        vigil.wait_until("refused captures as dead letters", || {
            vigil.get_json("/api/v1/dead-letters")["total"].as_u64() == Some(refused)
        });
    }
}

/// Every sFlow vector over UDP: as many flow and counter events as the library decodes.
#[test]
fn sflow_vectors_sent_over_udp_decode_like_the_library() {
    let root = repo_root().join("fixtures/sflow");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let datagrams: Vec<Vec<u8>> = files
        .iter()
        .map(|f| {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
            hex::decode(v["hex"].as_str().unwrap()).unwrap()
        })
        .collect();
    let mut decoder = vigil_flows::SflowDecoder::new(vigil_flows::SflowLimits::default());
    let exporter: std::net::SocketAddr = "127.0.0.1:40001".parse().unwrap();
    let mut want = 0u64;
    for d in &datagrams {
        let mut out = Vec::new();
        if decoder
            .decode(exporter, d, chrono::Utc::now(), &mut out)
            .is_ok()
        {
            want += out
                .iter()
                .filter(|r| !matches!(r, vigil_flows::SflowRecord::Discarded(_)))
                .count() as u64;
        }
    }
    assert!(want > 0);
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&write_config(dir.path(), ""));
    vigil.send_datagrams_to(vigil.sflow, &datagrams);
    vigil.wait_until("the library's records", || {
        vigil.metric("vigil_flow_records_total") >= want
    });
    assert_eq!(vigil.metric("vigil_flow_records_total"), want);
}

/// NetFlow v9 templates survive a restart: data sent after it decodes without the exporter
/// resending its template.
#[test]
fn netflow_v9_templates_survive_a_restart() {
    let root = repo_root().join("fixtures/netflow");
    let template = std::fs::read(root.join("netflow9_test_cisco_asa_1_tpl.dat")).unwrap();
    let data = std::fs::read(root.join("netflow9_test_cisco_asa_1_data.dat")).unwrap();
    // What the data holds, decoded offline after the template.
    let exporter: std::net::SocketAddr = "127.0.0.1:40002".parse().unwrap();
    let mut decoder = vigil_flows::FlowDecoder::new(vigil_flows::Limits::default());
    let mut out = Vec::new();
    decoder
        .decode(exporter, &template, chrono::Utc::now(), &mut out)
        .unwrap();
    out.clear();
    decoder
        .decode(exporter, &data, chrono::Utc::now(), &mut out)
        .unwrap();
    let want = out
        .iter()
        .filter(|r| r.kind == vigil_flows::RecordKind::Flow)
        .count() as u64;
    assert!(want > 0);

    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let mut vigil = Vigil::start(&config);
    // The exporter keeps its address (and port) across the restart, as routers do.
    let exporter = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    exporter.send_to(&template, vigil.netflow).unwrap();
    vigil.wait_until("the template", || vigil.metric("vigil_flow_templates") >= 1);
    vigil.stop();
    let vigil = Vigil::start(&config);
    exporter.send_to(&data, vigil.netflow).unwrap();
    vigil.wait_until("the data decoded with the saved template", || {
        vigil.metric("vigil_flow_records_total") >= want
    });
    assert_eq!(vigil.metric("vigil_flow_records_total"), want);
}
