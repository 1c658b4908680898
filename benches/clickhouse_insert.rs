//! ClickHouse insert throughput of the scaled-out store: rows per second through
//! `ClickHouseStore::insert_identified_events` (RowBinary, every event as its typed columns,
//! its codec blob and its raw bytes, each row under its own identity as the store stage writes
//! them) in inserts of
//! 50,000 rows, against the server at `VIGIL_TEST_CLICKHOUSE_URL` (default the test server
//! `scripts/services.sh start` runs: Debian's 18.16 on this machine). The events are the
//! loadgen mix, normalized.
//!
//! `scripts/services.sh start && cargo bench --bench clickhouse_insert -- --warm-up-time 2 --measurement-time 20`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vigil::store::clickhouse::{ClickHouseConfig, ClickHouseStore};
use vigil_parsers::normalize::{NormalizeOptions, Normalizer, RecordMeta};

const ROWS: usize = 50_000;

fn bench(c: &mut Criterion) {
    let url = std::env::var("VIGIL_TEST_CLICKHOUSE_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:18123".to_owned());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let store = rt.block_on(async {
        let ch = ClickHouseStore::connect(&ClickHouseConfig {
            url: url.clone(),
            database: "vigil_bench_insert".to_owned(),
            batch_rows: ROWS,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("no ClickHouse at {url} ({e}): scripts/services.sh start"));
        ch.migrate().await.unwrap();
        ch
    });
    let normalizer = Normalizer::new(
        vigil_parsers::definitions::DefinitionSet::builtin(),
        NormalizeOptions::default(),
    );
    let meta = RecordMeta {
        observer_type: "syslog",
        observer_id: "syslog/tcp/10.0.0.1",
        peer: None,
        received_at: chrono::Utc::now(),
    };
    let events: Vec<vigil_parsers::Event> = (0..ROWS as u64)
        .filter_map(|i| {
            normalizer
                .normalize(vigil::loadgen::mix_line(0, i).as_bytes(), &meta)
                .ok()
        })
        .collect();
    let mut g = c.benchmark_group("clickhouse_insert");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.sample_size(10);
    let mut batch = 0u64;
    g.bench_function("events_50k_rows", |b| {
        b.iter(|| {
            batch += 1;
            let id = format!("bench/{}/{batch}", std::process::id());
            let rows: Vec<(&str, u32, &vigil_parsers::Event)> = events
                .iter()
                .enumerate()
                .map(|(i, e)| (id.as_str(), i as u32, e))
                .collect();
            rt.block_on(store.insert_identified_events(&rows)).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
