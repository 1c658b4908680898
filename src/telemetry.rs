//! Metrics: counters, gauges and one latency histogram, rendered as Prometheus text.
//!
//! Names follow `vigil_<component>_<thing>_total` with a small closed label set (`source`,
//! `reason`, `rule`). Hot paths hold [`Counter`] handles (an `Arc<AtomicU64>`), so counting is
//! one atomic add; the registry lock is taken only when a new series is created.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A monotonically increasing count.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    /// Mirrors a total counted elsewhere (for example inside the rule engine), which only
    /// grows; never use it to count down.
    pub fn mirror(&self, total: u64) {
        self.0.fetch_max(total, Ordering::Relaxed);
    }
}

/// A value that goes up and down (set, not added).
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Adds one (atomically, for gauges several tasks move).
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Subtracts one, stopping at zero.
    pub fn dec(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(1))
            });
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds (seconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS_SECS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A fixed-bucket histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            buckets: LATENCY_BUCKETS_SECS
                .iter()
                .map(|_| AtomicU64::new(0))
                .collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one duration in seconds.
    pub fn observe(&self, secs: f64) {
        let secs = secs.max(0.0);
        if let Some(i) = LATENCY_BUCKETS_SECS.iter().position(|b| secs <= *b) {
            if let Some(b) = self.buckets.get(i) {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
    }
}

type SeriesKey = (&'static str, Vec<(&'static str, String)>);

/// The registry of every series, with its help text.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<SeriesKey, Counter>>,
    gauges: Mutex<BTreeMap<SeriesKey, Gauge>>,
    help: Mutex<BTreeMap<&'static str, &'static str>>,
    /// Receive -> offense stored latency (the triggering event's receive time to the commit of
    /// the offense that it created or updated).
    pub offense_latency: Histogram,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics {
            offense_latency: Histogram::new(),
            ..Default::default()
        })
    }

    /// The counter `name{labels}`, created at zero on first use.
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
    ) -> Counter {
        self.note_help(name, help);
        let key = (name, own(labels));
        let mut map = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key).or_default().clone()
    }

    /// The gauge `name{labels}`, created at zero on first use.
    pub fn gauge(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
    ) -> Gauge {
        self.note_help(name, help);
        let key = (name, own(labels));
        let mut map = self.gauges.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key).or_default().clone()
    }

    /// Current value of a counter, summed over every label set that contains `labels`.
    pub fn counter_value(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let map = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .filter(|((n, ls), _)| {
                *n == name
                    && labels
                        .iter()
                        .all(|(k, v)| ls.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, c)| c.get())
            .sum()
    }

    fn note_help(&self, name: &'static str, help: &'static str) {
        let mut h = self.help.lock().unwrap_or_else(|p| p.into_inner());
        h.entry(name).or_insert(help);
    }

    /// Renders every series in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let help = self.help.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut write_family = |kind: &str, series: Vec<(SeriesKey, u64)>| {
            let mut last = "";
            for ((name, labels), value) in series {
                if name != last {
                    let h = help.get(name).copied().unwrap_or("");
                    let _ = writeln!(out, "# HELP {name} {h}");
                    let _ = writeln!(out, "# TYPE {name} {kind}");
                    last = name;
                }
                let _ = writeln!(out, "{name}{} {value}", render_labels(&labels));
            }
        };
        let counters: Vec<_> = {
            let map = self.counters.lock().unwrap_or_else(|p| p.into_inner());
            map.iter().map(|(k, c)| (k.clone(), c.get())).collect()
        };
        write_family("counter", counters);
        let gauges: Vec<_> = {
            let map = self.gauges.lock().unwrap_or_else(|p| p.into_inner());
            map.iter().map(|(k, g)| (k.clone(), g.get())).collect()
        };
        write_family("gauge", gauges);

        let h = &self.offense_latency;
        let name = "vigil_offense_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from receiving the triggering record to storing its offense."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BUCKETS_SECS.iter().zip(&h.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = h.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
}

fn own(labels: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

fn render_labels(labels: &[(&'static str, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Quantile estimate from the Prometheus text of a histogram (linear interpolation inside the
/// bucket, as `histogram_quantile` does). Used by `vigil loadgen` to report p50/p99.
pub fn histogram_quantile(metrics_text: &str, name: &str, q: f64) -> Option<f64> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in metrics_text.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        let (bound, value) = rest.split_once("\"} ")?;
        let bound = if bound == "+Inf" {
            f64::INFINITY
        } else {
            bound.parse().ok()?
        };
        buckets.push((bound, value.trim().parse().ok()?));
    }
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev_bound = 0.0;
    let mut prev_count = 0.0;
    for (bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(prev_bound);
            }
            let in_bucket = count - prev_count;
            let frac = if in_bucket > 0.0 {
                (rank - prev_count) / in_bucket
            } else {
                0.0
            };
            return Some(prev_bound + (bound - prev_bound) * frac);
        }
        prev_bound = bound;
        prev_count = count;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_with_help_type_and_labels() {
        let m = Metrics::new();
        let c = m.counter(
            "vigil_test_total",
            "A test counter.",
            &[("source", "syslog_udp"), ("reason", "a\"b")],
        );
        c.add(3);
        let text = m.render();
        assert!(text.contains("# TYPE vigil_test_total counter"));
        assert!(text.contains("vigil_test_total{source=\"syslog_udp\",reason=\"a\\\"b\"} 3"));
        assert_eq!(
            m.counter_value("vigil_test_total", &[("source", "syslog_udp")]),
            3
        );
    }

    #[test]
    fn histogram_quantiles_come_back_from_the_text() {
        let m = Metrics::new();
        for _ in 0..99 {
            m.offense_latency.observe(0.0015);
        }
        m.offense_latency.observe(3.0);
        let text = m.render();
        let p50 = histogram_quantile(&text, "vigil_offense_latency_seconds", 0.5).unwrap_or(-1.0);
        assert!(p50 > 0.001 && p50 <= 0.002, "{p50}");
        let p100 = histogram_quantile(&text, "vigil_offense_latency_seconds", 1.0).unwrap_or(-1.0);
        assert!(p100 > 2.5 && p100 <= 5.0, "{p100}");
    }
}
