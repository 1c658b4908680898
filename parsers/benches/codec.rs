//! The binary event codec against JSON, on a flow event (what the spool and the flow store
//! write) and an sshd event with its raw line.
//!
//! `cargo bench -p vigil-parsers --bench codec -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vigil_parsers::{codec, Event};

/// A NetFlow record as the collector makes it (collect/flow.rs `flow_event`).
fn flow() -> Event {
    let t = Utc.timestamp_opt(1_710_058_530, 123_000_000).unwrap();
    let mut e = Event::new(t, t);
    for (k, v) in [
        ("event.kind", "event"),
        ("event.category", "network"),
        ("event.type", "connection"),
        ("event.action", "flow"),
        ("event.dataset", "netflow"),
        ("observer.type", "netflow"),
        ("observer.id", "netflow/192.0.2.1"),
        ("observer.ip", "192.0.2.1"),
        ("source.ip", "10.1.2.3"),
        ("source.port", "51514"),
        ("destination.ip", "203.0.113.7"),
        ("destination.port", "443"),
        ("network.transport", "tcp"),
        ("network.bytes", "48211"),
        ("network.packets", "42"),
        ("network.community_id", "1:LQU9qZlK+B5F3KDmev6m5PMibrg="),
        ("event.duration", "12000000000"),
    ] {
        e.set(k, v).unwrap();
    }
    for (k, v) in [
        ("flow.start", "2024-03-10T08:15:18.123Z"),
        ("flow.end", "2024-03-10T08:15:30.123Z"),
        ("flow.exporter", "192.0.2.1"),
        ("flow.version", "9"),
        ("flow.sampling_rate", "1"),
        ("tcp.flags", "ACK,FIN,PSH,SYN"),
        ("tcp.flags_raw", "27"),
        ("observer.ingress.interface", "3"),
        ("observer.egress.interface", "7"),
    ] {
        e.extra.insert(k.into(), v.into());
    }
    e
}

fn sshd() -> Event {
    let t = Utc.timestamp_opt(1_710_058_530, 0).unwrap();
    let mut e = Event::new(t, t);
    for (k, v) in [
        ("event.kind", "event"),
        ("event.category", "authentication"),
        ("event.outcome", "failure"),
        ("event.action", "ssh_login"),
        ("event.dataset", "openssh"),
        ("host.name", "srv01"),
        ("source.ip", "203.0.113.7"),
        ("source.port", "51514"),
        ("user.name", "root"),
        ("process.name", "sshd"),
        ("process.pid", "4242"),
        (
            "message",
            "Failed password for root from 203.0.113.7 port 51514 ssh2",
        ),
    ] {
        e.set(k, v).unwrap();
    }
    e.extra.insert("sshd.auth_method".into(), "password".into());
    e.raw = b"<38>Mar 10 08:15:30 srv01 sshd[4242]: Failed password for root from 203.0.113.7 port 51514 ssh2".to_vec();
    e
}

fn bench(c: &mut Criterion) {
    for (name, event) in [("flow", flow()), ("sshd", sshd())] {
        let mut g = c.benchmark_group(format!("event_codec/{name}"));
        g.throughput(Throughput::Elements(1));
        let bin = codec::to_vec(&event);
        let json = serde_json::to_vec(&event).unwrap();
        g.bench_function("encode_binary", |b| {
            let mut out = Vec::with_capacity(1024);
            b.iter(|| {
                out.clear();
                codec::encode(black_box(&event), &mut out);
                out.len()
            })
        });
        g.bench_function("encode_json", |b| {
            let mut out = Vec::with_capacity(2048);
            b.iter(|| {
                out.clear();
                serde_json::to_writer(&mut out, black_box(&event)).unwrap();
                out.len()
            })
        });
        g.bench_function("decode_binary", |b| {
            b.iter(|| codec::decode(black_box(&bin)).unwrap())
        });
        g.bench_function("decode_json", |b| {
            b.iter(|| serde_json::from_slice::<Event>(black_box(&json)).unwrap())
        });
        g.finish();
        println!(
            "{name}: {} bytes binary, {} bytes JSON",
            bin.len(),
            json.len()
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
