//! Definition dispatch: events per second through the normalizer with 10, 50 and 200
//! definitions loaded, over a mixed corpus (every shipped vendor, lines for the generated
//! definitions, lines nobody claims).
//!
//! The shipped definitions are loaded first; the rest are generated, half dispatched by program
//! name and half by a literal (`match.contains`), a quarter of those structured (`extract: kv`).
//! The `unindexed` group loads the same number of generated definitions with only a
//! `match.regex` (no program, no literal), so every message meets every one of them: the linear
//! cost the literal prefilter avoids.
//!
//! `cargo bench -p vigil-parsers --bench definitions -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vigil_parsers::definitions::DefinitionSet;
use vigil_parsers::normalize::{NormalizeOptions, Normalizer, RecordMeta};

/// Definitions with distinct programs and literals, dispatched by the indexes.
fn generated(i: usize) -> (String, String) {
    let yaml = match i % 4 {
        0 | 2 => format!(
            "name: gen{i}\nmatch: {{program: genprog{i}}}\npatterns:\n  - name: p\n    \
             regex: '^job (?P<user.name>\\S+) done in (?P<extra.ms>[0-9]+)ms$'\n"
        ),
        1 => format!(
            "name: gen{i}\nmatch: {{contains: 'GENMARK{i}:'}}\npatterns:\n  - name: p\n    \
             regex: 'GENMARK{i}: user=(?P<user.name>\\S+) src=(?P<source.ip>[0-9.]+)$'\n"
        ),
        _ => format!(
            "name: gen{i}\nmatch: {{contains: 'genkv{i}='}}\nextract: {{format: kv}}\n\
             fields: {{src: source.ip, usr: user.name}}\n"
        ),
    };
    (format!("gen{i}.yml"), yaml)
}

/// Definitions without program or literal: every message is tried against each.
fn unindexed(i: usize) -> (String, String) {
    let yaml = format!(
        "name: slow{i}\nmatch: {{regex: 'SLOWMARK{i}: '}}\npatterns:\n  - name: p\n    \
         regex: 'SLOWMARK{i}: user=(?P<user.name>\\S+)$'\n"
    );
    (format!("slow{i}.yml"), yaml)
}

fn set_of(total: usize, make: fn(usize) -> (String, String)) -> DefinitionSet {
    let mut sources = DefinitionSet::builtin_sources();
    let builtin = sources.len();
    sources.extend((0..total.saturating_sub(builtin)).map(make));
    let (set, errors) = DefinitionSet::from_sources(&sources);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(set.len(), total.max(builtin));
    set
}

fn make_corpus(generated_count: usize) -> Vec<Vec<u8>> {
    let mut lines: Vec<String> = [
        "<38>Nov 28 10:00:01 bastion01 sshd[4242]: Failed password for invalid user admin from 203.0.113.7 port 50022 ssh2",
        "<38>Nov 28 10:00:02 bastion01 sshd[4242]: Accepted publickey for deploy from 2001:db8::10 port 50124 ssh2: ED25519 SHA256:8Yw0kqW7r0mJt3Rk1vX4Yb6sC2eN9pQ5uL1zH0aG3dE",
        "<85>Nov 28 10:00:03 bastion01 sudo[5001]: alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id",
        "<86>Nov 28 10:00:04 bastion01 su[6001]: pam_unix(su:auth): authentication failure; logname=alice uid=1000 euid=0 tty=/dev/pts/0 ruser=alice rhost=  user=root",
        "<4>Nov 28 10:00:05 gw01 kernel: [12345.678901] [UFW BLOCK] IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 SRC=203.0.113.7 DST=10.0.0.5 LEN=60 TOS=0x00 PREC=0x00 TTL=52 ID=54321 DF PROTO=TCP SPT=50000 DPT=22 WINDOW=64240 RES=0x00 SYN URGP=0",
        "<166>Nov 28 2026 10:00:06 fw01 : %ASA-6-302013: Built inbound TCP connection 1 for outside:203.0.113.7/50000 (203.0.113.7/50000) to inside:10.0.0.5/22 (10.0.0.5/22)",
        "<189>date=2026-11-28 time=10:00:07 devname=\"FG100F\" devid=\"FG100FTK20000001\" tz=\"+0100\" logid=\"0000000013\" type=\"traffic\" subtype=\"forward\" level=\"notice\" vd=\"root\" srcip=10.0.0.5 srcport=51514 srcintf=\"port2\" dstip=203.0.113.80 dstport=443 dstintf=\"wan1\" proto=6 action=\"deny\" policyid=0 service=\"HTTPS\" sentbyte=0 rcvdbyte=0",
        "<14>Nov 28 10:00:08 PA-440 1,2026/11/28 10:00:08,012801096514,TRAFFIC,end,,2026/11/28 10:00:08,10.0.0.5,203.0.113.80,198.51.100.2,203.0.113.80,allow-web,corp\\alice,,ssl,vsys1,trust,untrust,ethernet1/2,ethernet1/1,default,,33760,1,51514,443,17845,443,0x400064,tcp,allow,5321,1261,4060,20,2026/11/28 09:59:40,20,any,,7226348122,,10.0.0.0-10.255.255.255,United States,,10,10,tcp-fin",
        "<134>Nov 28 10:00:09 gw01 CEF:0|Check Point|VPN-1 & FireWall-1|R81.20|Log|https|Unknown|act=Accept dst=10.0.0.1 spt=51514 src=192.0.2.5 proto=TCP dpt=443 cs2Label=Rule Name cs2=Allow-HTTPS",
        "<13>Nov 28 10:00:10 sw01 LEEF:2.0|Lancope|StealthWatch|1.0|41|^|src=10.0.1.8^dst=10.0.0.5^sev=5^cat=Worm Activity",
        "<86>Nov 28 10:00:11 bastion01 cron[77]: (root) CMD (run-parts /etc/cron.hourly)",
        "<30>Nov 28 10:00:12 web01 nginx[900]: 203.0.113.7 - - \"GET /index.html HTTP/1.1\" 200 612 \"-\" \"curl/8.5.0\"",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    // One line for every eighth generated definition, so the corpus stays mixed.
    for i in (0..generated_count).step_by(8) {
        lines.push(match i % 4 {
            0 | 2 => format!("<14>Nov 28 10:00:13 app01 genprog{i}[1]: job bob done in 42ms"),
            1 => format!("<14>Nov 28 10:00:13 app01 svc: GENMARK{i}: user=bob src=192.0.2.9"),
            _ => format!("<14>Nov 28 10:00:13 app01 svc: genkv{i}=1 src=192.0.2.9 usr=bob"),
        });
    }
    lines.into_iter().map(String::into_bytes).collect()
}

fn dispatch(c: &mut Criterion) {
    let meta = RecordMeta {
        observer_type: "syslog",
        observer_id: "syslog/udp/192.0.2.254",
        peer: None,
        received_at: Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap(),
    };
    let corpus = make_corpus(0);
    let mut group = c.benchmark_group("definitions_dispatch");
    group.throughput(Throughput::Elements(corpus.len() as u64));
    for (label, make) in [
        ("indexed", generated as fn(usize) -> (String, String)),
        ("unindexed", unindexed),
    ] {
        for total in [10, 50, 200] {
            let set = set_of(total, make);
            let normalizer = Normalizer::new(set, NormalizeOptions::default());
            group.bench_with_input(BenchmarkId::new(label, total), &corpus, |b, corpus| {
                b.iter(|| {
                    for line in corpus {
                        let _ = black_box(normalizer.normalize(black_box(line), &meta));
                    }
                })
            });
        }
    }
    group.finish();

    // The same sets over a corpus that also exercises the generated definitions.
    let mut group = c.benchmark_group("definitions_mixed");
    for total in [10, 50, 200] {
        let set = set_of(total, generated);
        let corpus = make_corpus(total);
        group.throughput(Throughput::Elements(corpus.len() as u64));
        let normalizer = Normalizer::new(set, NormalizeOptions::default());
        group.bench_with_input(BenchmarkId::new("indexed", total), &corpus, |b, corpus| {
            b.iter(|| {
                for line in corpus {
                    let _ = black_box(normalizer.normalize(black_box(line), &meta));
                }
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = dispatch
}
criterion_main!(benches);
