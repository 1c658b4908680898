//! Reference-set membership at scale: a [`PrefixSet`] built from 600,000 pseudo-random IPv4
//! prefixes (lengths /16 to /32, a deterministic generator, so every run sees the same set), then
//! lookups of pseudo-random addresses, 10,000 per iteration (throughput in lookups/s), and the
//! build time of the set itself.
//!
//! `cargo bench -p vigil-correlate --bench prefix -- --warm-up-time 1 --measurement-time 3`
//!
//! Goal: ≥ 5 M lookups/s on one core.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vigil_correlate::net::{Cidr, PrefixSet};

const PREFIXES: usize = 600_000;
const LOOKUPS: usize = 10_000;

/// SplitMix64: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn prefixes() -> Vec<Cidr> {
    let mut rng = Rng(0x5EED_0001);
    (0..PREFIXES)
        .map(|_| {
            let r = rng.next();
            let len = 16 + (r >> 40) as u32 % 17; // 16..=32
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            Cidr::V4(r as u32 & mask, mask)
        })
        .collect()
}

fn addresses() -> Vec<IpAddr> {
    let mut rng = Rng(0xADD2_E55E);
    (0..LOOKUPS)
        .map(|_| IpAddr::V4(Ipv4Addr::from(rng.next() as u32)))
        .collect()
}

fn bench(c: &mut Criterion) {
    let nets = prefixes();
    let set = PrefixSet::new(nets.iter().copied());
    let addrs = addresses();
    let hits = addrs.iter().filter(|a| set.contains(**a)).count();
    eprintln!(
        "prefix set: {PREFIXES} prefixes -> {} ranges; {hits} of {LOOKUPS} lookups hit",
        set.ranges()
    );

    let mut group = c.benchmark_group("prefix_set");
    group.throughput(Throughput::Elements(LOOKUPS as u64));
    group.bench_function("lookup_600k_v4", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for a in &addrs {
                n += usize::from(set.contains(black_box(*a)));
            }
            n
        })
    });
    group.finish();

    let mut group = c.benchmark_group("prefix_set_build");
    group.sample_size(10);
    group.throughput(Throughput::Elements(PREFIXES as u64));
    group.bench_function("build_600k_v4", |b| {
        b.iter(|| PrefixSet::new(black_box(&nets).iter().copied()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
