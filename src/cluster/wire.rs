//! What travels on the Kafka topics of the scaled-out mode, as JSON: a routed match with its
//! event (stage 1 → stage 2), a [`vigil_correlate::Detection`] as it is (either stage → the
//! offense stage), and the topic names. Plain JSON keeps the topics readable with `kcat` and any consumer.

use serde::{Deserialize, Serialize};
use vigil_correlate::Routed;
use vigil_parsers::Event;

/// The topics of one deployment, from `bus.topic_prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Routed single-event matches, keyed by correlation and group values.
    pub matches: String,
    /// Detections, keyed by offense index value (one offense stage owner per index).
    pub detections: String,
    /// Normalized events for storage, keyed by log source.
    pub events: String,
    /// Dead letters, keyed by log source.
    pub dead_letters: String,
}

impl Topics {
    /// `<prefix>.matches`, `<prefix>.detections`, `<prefix>.events`, `<prefix>.dead_letters`.
    pub fn new(prefix: &str) -> Topics {
        Topics {
            matches: format!("{prefix}.matches"),
            detections: format!("{prefix}.detections"),
            events: format!("{prefix}.events"),
            dead_letters: format!("{prefix}.dead_letters"),
        }
    }

    /// Every topic.
    pub fn all(&self) -> [&str; 4] {
        [
            &self.matches,
            &self.detections,
            &self.events,
            &self.dead_letters,
        ]
    }
}

/// Most bytes of one packed record (well under Kafka's default 1 MB message limit).
pub const MAX_PACK_BYTES: usize = 512 * 1024;

/// Packs keyed items (each already JSON) into records: items grouped by the partition their
/// key maps to (of `partitions`), in their order, each record a JSON array of at most
/// [`MAX_PACK_BYTES`] (an item larger than that gets a record of its own), keyed by its first
/// item's key so it lands in that same partition. Many items per Kafka record is what lets a
/// broker carry 100 k events/s: brokers pay per record, not per byte.
pub fn pack(items: Vec<(Vec<u8>, Vec<u8>)>, partitions: i32) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut open: std::collections::BTreeMap<i32, (Vec<u8>, Vec<u8>)> =
        std::collections::BTreeMap::new();
    let mut out = Vec::new();
    for (key, json) in items {
        let p = crate::bus::kafka::partition_for(&key, partitions.max(1));
        if let Some((_, buf)) = open.get(&p) {
            if buf.len() + json.len() + 2 > MAX_PACK_BYTES {
                if let Some((k, mut done)) = open.remove(&p) {
                    done.push(b']');
                    out.push((k, done));
                }
            }
        }
        match open.get_mut(&p) {
            Some((_, buf)) => {
                buf.push(b',');
                buf.extend_from_slice(&json);
            }
            None => {
                let mut buf = Vec::with_capacity(json.len() + 2);
                buf.push(b'[');
                buf.extend_from_slice(&json);
                open.insert(p, (key, buf));
            }
        }
    }
    for (_, (k, mut buf)) in open {
        buf.push(b']');
        out.push((k, buf));
    }
    out
}

/// The items of a packed record.
pub fn unpack<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<Vec<T>, serde_json::Error> {
    serde_json::from_slice(payload)
}

/// A routed match and the event that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchRecord {
    /// Which window.
    pub routed: Routed,
    /// The event.
    pub event: Event,
    /// Set when a correlate node produced it (a chained correlation): which input record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// A detection on the detections topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionRecord {
    /// The detection.
    pub detection: vigil_correlate::Detection,
    /// Set when a correlate node produced it from an input record (not for a stage-1
    /// single-event detection, nor an `absence` deadline fired by the clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// Which input record of a stage-2 consumer an output record came from: the input's
/// partition and offset, and the output's position among that input's outputs to one topic.
///
/// A correlate node that takes a partition over restores the last checkpoint and processes
/// the records after it again; that replay produces the same outputs under the same origins
/// (the engine is deterministic over the same state and records), so a consumer drops every
/// record whose origin is not above the highest it applied from that input partition
/// ([`Marks`]). Outputs of one input partition reach one output partition in order (one
/// owner at a time, an idempotent producer), which is what makes a high-water mark enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Origin {
    /// Partition of the input record (of the matches topic).
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Position among its outputs to one topic.
    pub n: u32,
}

/// The highest [`Origin`] applied per input partition, for one consumed partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marks(pub std::collections::BTreeMap<i32, (i64, u32)>);

impl Marks {
    /// True (and remembered) when `origin` is above every origin applied from its partition;
    /// false for a replayed record.
    pub fn fresh(&mut self, origin: Origin) -> bool {
        let next = (origin.offset, origin.n);
        match self.0.get(&origin.partition) {
            Some(high) if *high >= next => false,
            _ => {
                self.0.insert(origin.partition, next);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_keep_order_per_partition_and_land_where_their_keys_do() {
        let items: Vec<(Vec<u8>, Vec<u8>)> = (0..200u32)
            .map(|i| {
                let key = format!("key{}", i % 7).into_bytes();
                (key, format!("{i}").into_bytes())
            })
            .collect();
        let packed = pack(items.clone(), 4);
        assert!(packed.len() <= 4, "one record per partition here");
        let mut seen = 0;
        for (key, payload) in &packed {
            let p = crate::bus::kafka::partition_for(key, 4);
            let got: Vec<u32> = unpack(payload).unwrap_or_default();
            let want: Vec<u32> = items
                .iter()
                .filter(|(k, _)| crate::bus::kafka::partition_for(k, 4) == p)
                .map(|(_, j)| String::from_utf8_lossy(j).parse().unwrap_or(u32::MAX))
                .collect();
            assert_eq!(got, want, "partition {p}: every item, in order");
            seen += got.len();
        }
        assert_eq!(seen, 200);
        // Big items split into several records, none over the limit unless alone.
        let big = "x".repeat(200 * 1024);
        let items: Vec<(Vec<u8>, Vec<u8>)> = (0..5)
            .map(|_| (b"k".to_vec(), format!("\"{big}\"").into_bytes()))
            .collect();
        let packed = pack(items, 4);
        assert_eq!(packed.len(), 3);
        assert!(packed.iter().all(|(_, p)| p.len() <= MAX_PACK_BYTES));
        let total: usize = packed
            .iter()
            .map(|(_, p)| unpack::<String>(p).map(|v| v.len()).unwrap_or(0))
            .sum();
        assert_eq!(total, 5);
    }

    #[test]
    fn marks_drop_what_was_applied_per_input_partition() {
        let o = |partition, offset, n| Origin {
            partition,
            offset,
            n,
        };
        let mut m = Marks::default();
        assert!(m.fresh(o(0, 10, 0)));
        assert!(m.fresh(o(0, 10, 1)));
        assert!(!m.fresh(o(0, 10, 1)), "the same output again");
        assert!(!m.fresh(o(0, 9, 5)), "an earlier input");
        assert!(
            m.fresh(o(1, 2, 0)),
            "another input partition has its own mark"
        );
        assert!(m.fresh(o(0, 11, 0)));
        assert_eq!(m.0.get(&0), Some(&(11, 0)));
    }
    use chrono::{DateTime, Utc};
    use std::sync::Arc;
    use vigil_correlate::{Detection, DetectionKind};

    #[test]
    fn a_detection_round_trips_through_json() {
        let t = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let mut e = Event::new(t, t);
        e.source_ip = "203.0.113.7".parse().ok();
        e.sequence = Some(42);
        let d = Detection {
            kind: DetectionKind::Update,
            rule: "ssh_brute_force".into(),
            title: "SSH brute force".into(),
            level: Some("high".into()),
            tags: vec!["attack.t1110".into()],
            group: vec![("source.ip".into(), "203.0.113.7".into())],
            index_field: "source.ip".into(),
            index_value: "203.0.113.7".into(),
            window_start: t,
            first_seen: t,
            last_seen: t,
            count: 1,
            fresh: 1,
            distinct: Some(3),
            sum: None,
            events: vec![Arc::new(e)],
            relevance: 6,
            credibility: 8,
            severity: 7,
        };
        let json = serde_json::to_vec(&d).unwrap_or_default();
        let back: Option<Detection> = serde_json::from_slice(&json).ok();
        assert_eq!(back, Some(d.clone()));
        let rec = DetectionRecord {
            detection: d,
            origin: Some(Origin {
                partition: 3,
                offset: 17,
                n: 1,
            }),
        };
        let json = serde_json::to_vec(&rec).unwrap_or_default();
        let back: Option<DetectionRecord> = serde_json::from_slice(&json).ok();
        assert_eq!(back, Some(rec));
        assert_eq!(
            Topics::new("vigil").all(),
            [
                "vigil.matches",
                "vigil.detections",
                "vigil.events",
                "vigil.dead_letters"
            ]
        );
    }
}
