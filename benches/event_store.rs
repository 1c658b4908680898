//! The searchable event store of embedded mode (`events.db`, blocks of events): what its
//! writer pays per event, and what an analyst's searches cost. Events are the parser fixtures
//! normalized (every line of `fixtures/parsers`), source addresses from a pool of 20,000, one
//! event a millisecond of event time (as logs arrive: time advances).
//!
//! `cargo bench --bench event_store -- --warm-up-time 1 --measurement-time 5`
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hint::black_box;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use vigil::store::events::{EventSearch, EventStore};
use vigil_parsers::normalize::{NormalizeOptions, Normalizer, RecordMeta};
use vigil_parsers::Event;

/// Events kept in the store the searches run on.
const STORED: usize = 200_000;

fn events(n: usize, base: DateTime<Utc>) -> Vec<Arc<Event>> {
    let lines = common::fixture_lines();
    let normalizer = Normalizer::new(
        vigil_parsers::definitions::DefinitionSet::builtin(),
        NormalizeOptions::default(),
    );
    let meta = RecordMeta {
        observer_type: "syslog",
        observer_id: "syslog/tcp/10.0.0.1",
        peer: Some("10.0.0.1".parse().unwrap()),
        received_at: base,
    };
    let parsed: Vec<Event> = lines
        .iter()
        .filter_map(|l| normalizer.normalize(l.as_bytes(), &meta).ok())
        .collect();
    (0..n)
        .map(|i| {
            let mut e = parsed[i % parsed.len()].clone();
            e.timestamp = base + Duration::milliseconds(i as i64);
            let x = (i as u32).wrapping_mul(2_654_435_761) % 20_000;
            e.source_ip = Some(
                format!("45.{}.{}.{}", x >> 8 & 0x3f, x & 0xff, 1 + i % 200)
                    .parse()
                    .unwrap(),
            );
            Arc::new(e)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let base = DateTime::from_timestamp(1_795_000_000, 0).unwrap();
    let all = events(STORED, base);
    let dir = tempfile::tempdir().unwrap();

    let mut g = c.benchmark_group("event_store");
    g.sample_size(10);
    let batch = &all[..4096];
    g.throughput(Throughput::Elements(batch.len() as u64));
    let mut store = EventStore::open(&dir.path().join("insert.db")).unwrap();
    g.bench_function("insert_4096", |b| {
        b.iter(|| store.insert(black_box(batch), 1_000_000).unwrap())
    });

    let path = dir.path().join("search.db");
    let mut filled = EventStore::open(&path).unwrap();
    for chunk in all.chunks(4096) {
        filled.insert(chunk, 10_000_000).unwrap();
    }
    drop(filled);
    let reader = EventStore::open_reader(&path).unwrap();
    let whole = EventSearch {
        from: base,
        to: base + Duration::hours(1),
        limit: 50,
        ..EventSearch::default()
    };
    let present = all[STORED / 2].source_ip;
    let queries = [
        ("search_newest_page", whole.clone()),
        (
            "search_page_at_offset_5000",
            EventSearch {
                offset: 5_000,
                ..whole.clone()
            },
        ),
        (
            "search_source_ip",
            EventSearch {
                source_ip: present,
                ..whole.clone()
            },
        ),
        (
            "search_source_ip_absent",
            EventSearch {
                source_ip: "100.64.250.250".parse().ok(),
                ..whole.clone()
            },
        ),
        (
            "search_text_nowhere",
            EventSearch {
                text: Some("no such text anywhere".into()),
                ..whole.clone()
            },
        ),
    ];
    g.throughput(Throughput::Elements(1));
    for (name, q) in queries {
        g.bench_function(name, |b| {
            b.iter_batched(
                || q.clone(),
                |q| reader.search(&q).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
