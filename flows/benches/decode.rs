//! Flow decoding throughput with templates cached: NetFlow v9 and IPFIX data datagrams (the
//! template is fed once, then one data datagram is decoded repeatedly) and NetFlow v5.
//! Throughput is reported in flow records per second.
//!
//! `flock /tmp/vigil-cargo.lock cargo bench -p vigil-flows --bench decode -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::net::SocketAddr;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vigil_flows::{FlowDecoder, Limits};

/// Typical v9 / IPFIX flow template: (element id, length).
const FIELDS: [(u16, u16); 18] = [
    (8, 4),  // src addr
    (12, 4), // dst addr
    (15, 4), // next hop
    (10, 4), // input if
    (14, 4), // output if
    (2, 4),  // packets
    (1, 4),  // bytes
    (22, 4), // first switched / flowStartSysUpTime
    (21, 4), // last switched / flowEndSysUpTime
    (7, 2),  // src port
    (11, 2), // dst port
    (6, 1),  // tcp flags
    (4, 1),  // protocol
    (5, 1),  // tos
    (16, 4), // src as
    (17, 4), // dst as
    (9, 1),  // src mask
    (13, 1), // dst mask
];
const RECORDS: usize = 25;

fn set(id: u16, body: &[u8]) -> Vec<u8> {
    let mut v = id.to_be_bytes().to_vec();
    v.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn template() -> Vec<u8> {
    let mut v = 256u16.to_be_bytes().to_vec();
    v.extend_from_slice(&(FIELDS.len() as u16).to_be_bytes());
    for (id, len) in FIELDS {
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(&len.to_be_bytes());
    }
    v
}

fn records() -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..RECORDS as u32 {
        v.extend_from_slice(&[10, 1, (i >> 8) as u8, i as u8]);
        v.extend_from_slice(&[192, 0, 2, 7]);
        v.extend_from_slice(&[10, 0, 0, 1]);
        v.extend_from_slice(&3u32.to_be_bytes());
        v.extend_from_slice(&4u32.to_be_bytes());
        v.extend_from_slice(&(10 + i).to_be_bytes());
        v.extend_from_slice(&(1500 * (10 + i)).to_be_bytes());
        v.extend_from_slice(&(90_000 + i).to_be_bytes());
        v.extend_from_slice(&(99_000 + i).to_be_bytes());
        v.extend_from_slice(&(40_000 + i as u16).to_be_bytes());
        v.extend_from_slice(&443u16.to_be_bytes());
        v.extend_from_slice(&[0x1b, 6, 0]);
        v.extend_from_slice(&64_500u32.to_be_bytes());
        v.extend_from_slice(&15_169u32.to_be_bytes());
        v.extend_from_slice(&[24, 16]);
    }
    v
}

fn v9(flowsets: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![0, 9, 0, 1];
    v.extend_from_slice(&100_000u32.to_be_bytes());
    v.extend_from_slice(&1_714_564_800u32.to_be_bytes());
    v.extend_from_slice(&1u32.to_be_bytes());
    v.extend_from_slice(&7u32.to_be_bytes());
    v.extend_from_slice(&flowsets.concat());
    v
}

fn ipfix(sets: &[Vec<u8>]) -> Vec<u8> {
    let body = sets.concat();
    let mut v = vec![0, 10];
    v.extend_from_slice(&((body.len() + 16) as u16).to_be_bytes());
    v.extend_from_slice(&1_714_564_800u32.to_be_bytes());
    v.extend_from_slice(&1u32.to_be_bytes());
    v.extend_from_slice(&7u32.to_be_bytes());
    v.extend_from_slice(&body);
    v
}

fn v5() -> Vec<u8> {
    let mut p = vec![0, 5, 0, 30];
    p.extend_from_slice(&100_000u32.to_be_bytes());
    p.extend_from_slice(&1_714_564_800u32.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]);
    for i in 0..30u32 {
        p.extend_from_slice(&[10, 1, 0, i as u8, 192, 0, 2, 7, 10, 0, 0, 1, 0, 3, 0, 4]);
        p.extend_from_slice(&(10 + i).to_be_bytes());
        p.extend_from_slice(&(1500 * (10 + i)).to_be_bytes());
        p.extend_from_slice(&(90_000 + i).to_be_bytes());
        p.extend_from_slice(&(99_000 + i).to_be_bytes());
        p.extend_from_slice(&(40_000 + i as u16).to_be_bytes());
        p.extend_from_slice(&[1, 187, 0, 0x1b, 6, 0, 0xfb, 0xf4, 0x3b, 0x41, 24, 16, 0, 0]);
    }
    p
}

fn bench_decoder(c: &mut Criterion, name: &str, setup: Option<Vec<u8>>, data: Vec<u8>, per: usize) {
    let exporter: SocketAddr = "192.0.2.1:2055".parse().unwrap();
    let now = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
    let mut decoder = FlowDecoder::new(Limits::default());
    let mut out = Vec::with_capacity(64);
    if let Some(t) = setup {
        decoder.decode(exporter, &t, now, &mut out).unwrap();
    }
    out.clear();
    assert_eq!(
        decoder
            .decode(exporter, &data, now, &mut out)
            .unwrap()
            .records,
        per
    );
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(per as u64));
    group.bench_function(name, |b| {
        b.iter(|| {
            out.clear();
            decoder
                .decode(exporter, black_box(&data), now, &mut out)
                .unwrap();
            black_box(out.len())
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let data = records();
    bench_decoder(
        c,
        "netflow_v9_25_records",
        Some(v9(&[set(0, &template())])),
        v9(&[set(256, &data)]),
        RECORDS,
    );
    bench_decoder(
        c,
        "ipfix_25_records",
        Some(ipfix(&[set(2, &template())])),
        ipfix(&[set(256, &data)]),
        RECORDS,
    );
    bench_decoder(c, "netflow_v5_30_records", None, v5(), 30);
}

criterion_group!(decode, benches);
criterion_main!(decode);
