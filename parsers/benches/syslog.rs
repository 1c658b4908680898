//! Syslog hot paths: parsing one ~200-byte record per format, and framing a TCP stream.
//!
//! `cargo bench -p vigil-parsers --bench syslog -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vigil_parsers::syslog::framing::Framer;
use vigil_parsers::syslog::{self, rfc3164, rfc5424, ParseOptions};

const RFC5424: &[u8] = b"<165>1 2026-11-28T10:00:01.123456+01:00 web-01.example.com sshd 1234 ID47 \
[origin ip=\"203.0.113.7\" software=\"openssh\"] Failed password for invalid user admin from 203.0.113.7 port 50022 ssh2";
const RFC3164: &[u8] =
    b"<38>Nov 28 10:00:01 web-01.example.com sshd[1234]: Failed password for invalid user \
admin from 203.0.113.7 port 50022 ssh2 (attempt 3 of 6, client OpenSSH_9.6p1 Ubuntu-3ubuntu13.5)";
const FILE_LINE: &[u8] =
    b"2026-11-28T10:00:01.123456+00:00 web-01.example.com sshd[1234]: Failed password for \
invalid user admin from 203.0.113.7 port 50022 ssh2 (attempt 3 of 6, client OpenSSH_9.6p1)";

fn opts() -> ParseOptions {
    ParseOptions::at(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap())
}

fn parse(c: &mut Criterion) {
    let opts = opts();
    let mut group = c.benchmark_group("syslog_parse");
    group.throughput(Throughput::Elements(1));
    group.bench_function(format!("rfc5424_{}b", RFC5424.len()), |b| {
        b.iter(|| rfc5424::parse(black_box(RFC5424)).unwrap())
    });
    group.bench_function(format!("rfc3164_{}b", RFC3164.len()), |b| {
        b.iter(|| rfc3164::parse(black_box(RFC3164), &opts).unwrap())
    });
    group.bench_function(format!("file_line_{}b", FILE_LINE.len()), |b| {
        b.iter(|| syslog::parse(black_box(FILE_LINE), &opts).unwrap())
    });
    group.bench_function("dispatch_rfc5424", |b| {
        b.iter(|| syslog::parse(black_box(RFC5424), &opts).unwrap())
    });
    group.finish();
}

const FRAMES: usize = 1000;

fn framing(c: &mut Criterion) {
    let mut octet = Vec::new();
    let mut lf = Vec::new();
    for _ in 0..FRAMES {
        octet.extend_from_slice(format!("{} ", RFC5424.len()).as_bytes());
        octet.extend_from_slice(RFC5424);
        lf.extend_from_slice(RFC3164);
        lf.push(b'\n');
    }
    let mut group = c.benchmark_group("syslog_framing");
    group.throughput(Throughput::Elements(FRAMES as u64));
    for (name, stream) in [("octet_counting", &octet), ("lf", &lf)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut framer = Framer::new(8192);
                let mut n = 0;
                // 16 KiB reads, as a TCP source would do.
                for chunk in black_box(stream.as_slice()).chunks(16 * 1024) {
                    framer.push(chunk);
                    while let Some(frame) = framer.next_frame() {
                        n += frame.unwrap().len();
                    }
                }
                n
            })
        });
    }
    group.finish();
}

/// The per-record path of the service: syslog parse + parser definitions into an `Event`.
fn normalize(c: &mut Criterion) {
    use vigil_parsers::definitions::DefinitionSet;
    use vigil_parsers::normalize::{NormalizeOptions, Normalizer, RecordMeta};
    let normalizer = Normalizer::new(DefinitionSet::builtin(), NormalizeOptions::default());
    let meta = RecordMeta {
        observer_type: "syslog",
        observer_id: "syslog/tcp/10.0.0.5",
        peer: None,
        received_at: opts().reference_time,
    };
    let mut g = c.benchmark_group("normalize");
    g.throughput(Throughput::Elements(1));
    for (name, line) in [
        (
            "openssh_failed_password_3164",
            &b"<38>Nov 28 10:00:01 bastion01 sshd[4242]: Failed password for invalid user admin from 203.0.113.7 port 50022 ssh2"[..],
        ),
        (
            "openssh_accepted_publickey_file_line",
            &b"2026-11-28T10:00:01.123456+00:00 bastion01 sshd[4242]: Accepted publickey for deploy from 10.20.1.7 port 50122 ssh2: ED25519 SHA256:8Yw0kqW7r0mJt3Rk1vX4Yb6sC2eN9pQ5uL1zH0aG3dE"[..],
        ),
        (
            "no_definition_cron_3164",
            &b"<78>Nov 28 10:00:01 srv01 CRON[4242]: (root) CMD (/usr/local/bin/backup --incremental >/dev/null 2>&1)"[..],
        ),
    ] {
        g.bench_function(name, |b| b.iter(|| normalizer.normalize(black_box(line), &meta)));
    }
    g.finish();
}

criterion_group!(benches, parse, framing, normalize);
criterion_main!(benches);
