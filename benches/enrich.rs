//! What context costs: events per second through normalize + rule engine (the shipped pack)
//! with and without enrichment (GeoIP City + ASN test databases, the default zones plus a
//! critical one, reference sets that the pack's `refset` rules consult), over the mixed corpus
//! of every parser fixture. Source addresses are rewritten from a pool of 20,000 public
//! addresses, a tenth of them in the GeoIP test data, so the GeoIP cache sees misses as it
//! would on real traffic. The issue's budget: enrichment adds at most 20 %.
//!
//! `cargo bench --bench enrich -- --warm-up-time 1 --measurement-time 5`
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vigil::config::{Config, NetworkZone};
use vigil::context::{geoip, Enricher};
use vigil_correlate::{Engine, EngineLimits};
use vigil_parsers::normalize::{NormalizeOptions, Normalizer, RecordMeta};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every line of the parser fixtures, with IPv4 source addresses replaced from a pool.
fn corpus() -> Vec<Vec<u8>> {
    let lines = common::fixture_lines();
    // Known to the GeoIP test data (GB, US, SE, CN, ...), then plain public addresses.
    let known = [
        "81.2.69.160",
        "216.160.83.56",
        "89.160.20.112",
        "175.16.199.1",
        "2.125.160.216",
    ];
    let re = regex::Regex::new(r"\b(?:203\.0\.113|198\.51\.100|192\.0\.2)\.\d{1,3}\b").unwrap();
    let mut n: u32 = 0;
    let mut out = Vec::new();
    for _ in 0..20 {
        for l in &lines {
            let line = re.replace_all(l, |_: &regex::Captures<'_>| {
                n = n.wrapping_add(1);
                if n.is_multiple_of(10) {
                    known[(n / 10) as usize % known.len()].to_owned()
                } else {
                    let x = n.wrapping_mul(2_654_435_761) % 20_000;
                    format!("45.{}.{}.{}", x >> 8 & 0x3f, x & 0xff, 1 + n % 200)
                }
            });
            out.push(line.into_owned().into_bytes());
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let mut config = Config::default();
    config.context.geoip_city = Some(root().join("fixtures/maxmind/GeoIP2-City-Test.mmdb"));
    config.context.geoip_asn = Some(root().join("fixtures/maxmind/GeoLite2-ASN-Test.mmdb"));
    config.context.networks.push(NetworkZone {
        name: "core-banking".into(),
        cidrs: vec!["10.20.0.0/16".into()],
        criticality: 9,
        internal: true,
    });
    let metrics = vigil::telemetry::Metrics::new();
    let store = vigil::store::Store::open_in_memory().unwrap();
    let (reference, _) = vigil::context::loader::build(&config.context, &store, &metrics).unwrap();
    for i in 0..1000u32 {
        reference
            .add(
                "threat_intel",
                &format!("45.1.{}.0/24", i % 250),
                None,
                "bench",
                Utc::now(),
            )
            .unwrap();
    }
    let (rules, errors) =
        vigil::correlate::load_rules_with(&root().join("rules"), reference.clone()).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    let rules = Arc::new(rules);
    let normalizer = Normalizer::new(
        vigil_parsers::definitions::DefinitionSet::builtin(),
        NormalizeOptions::default(),
    );
    let lines = corpus();
    let now = Utc::now();
    let meta = RecordMeta {
        observer_type: "syslog",
        observer_id: "syslog/udp/10.0.0.1",
        peer: Some("10.0.0.1".parse().unwrap()),
        received_at: now,
    };
    let mut g = c.benchmark_group("parse_correlate");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.sample_size(10);
    for with in [false, true] {
        let name = if with {
            "with_context"
        } else {
            "without_context"
        };
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let geo = geoip::GeoIp::open(&geoip::GeoConfig {
                        city: config.context.geoip_city.clone(),
                        asn: config.context.geoip_asn.clone(),
                        cache_entries: config.context.geoip_cache_entries,
                    })
                    .unwrap();
                    let enricher =
                        Enricher::new(Some(geo), &config.context, reference.clone(), &metrics);
                    (
                        Engine::new(rules.clone(), EngineLimits::default()),
                        enricher,
                    )
                },
                |(mut engine, mut enricher)| {
                    let mut out = Vec::new();
                    for l in &lines {
                        if let Ok(mut ev) = normalizer.normalize(l, &meta) {
                            if with {
                                enricher.enrich(&mut ev);
                            }
                            engine.process(&Arc::new(ev), &mut out);
                            out.clear();
                        }
                    }
                    black_box(engine.stats().keys_live)
                },
                criterion::BatchSize::PerIteration,
            );
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
