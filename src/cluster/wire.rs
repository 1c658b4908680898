//! What travels on the Kafka topics of the scaled-out mode, as JSON: a routed match with its
//! event (stage 1 → stage 2), a detection (either stage → the offense stage), and the topic
//! names. Plain JSON keeps the topics readable with `kcat` and any consumer.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vigil_correlate::{Detection, DetectionKind, Routed};
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

/// A routed match and the event that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchRecord {
    /// Which window.
    pub routed: Routed,
    /// The event.
    pub event: Event,
}

/// A [`Detection`] on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionRecord {
    /// `new` or `update`.
    pub new: bool,
    /// Rule name.
    pub rule: String,
    /// Rule title.
    pub title: String,
    /// Sigma level.
    pub level: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Group-by names and values.
    pub group: Vec<(String, String)>,
    /// Offense index field.
    pub index_field: String,
    /// Offense index value.
    pub index_value: String,
    /// Window start.
    pub window_start: DateTime<Utc>,
    /// First event time.
    pub first_seen: DateTime<Utc>,
    /// Last event time.
    pub last_seen: DateTime<Utc>,
    /// Occurrences in the window.
    pub count: u64,
    /// Occurrences reported for the first time.
    pub fresh: u64,
    /// Distinct values (`value_count`).
    pub distinct: Option<u64>,
    /// Sum (`value_sum`).
    pub sum: Option<u64>,
    /// The events.
    pub events: Vec<Event>,
    /// Relevance.
    pub relevance: u8,
    /// Credibility.
    pub credibility: u8,
    /// Severity.
    pub severity: u8,
}

impl From<&Detection> for DetectionRecord {
    fn from(d: &Detection) -> Self {
        DetectionRecord {
            new: d.kind == DetectionKind::New,
            rule: d.rule.clone(),
            title: d.title.clone(),
            level: d.level.clone(),
            tags: d.tags.clone(),
            group: d.group.clone(),
            index_field: d.index_field.clone(),
            index_value: d.index_value.clone(),
            window_start: d.window_start,
            first_seen: d.first_seen,
            last_seen: d.last_seen,
            count: d.count,
            fresh: d.fresh,
            distinct: d.distinct,
            sum: d.sum,
            events: d.events.iter().map(|e| (**e).clone()).collect(),
            relevance: d.relevance,
            credibility: d.credibility,
            severity: d.severity,
        }
    }
}

impl DetectionRecord {
    /// Back to a [`Detection`].
    pub fn into_detection(self) -> Detection {
        Detection {
            kind: if self.new {
                DetectionKind::New
            } else {
                DetectionKind::Update
            },
            rule: self.rule,
            title: self.title,
            level: self.level,
            tags: self.tags,
            group: self.group,
            index_field: self.index_field,
            index_value: self.index_value,
            window_start: self.window_start,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            count: self.count,
            fresh: self.fresh,
            distinct: self.distinct,
            sum: self.sum,
            events: self.events.into_iter().map(Arc::new).collect(),
            relevance: self.relevance,
            credibility: self.credibility,
            severity: self.severity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detection_round_trips_through_its_wire_form() {
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
        let json = serde_json::to_vec(&DetectionRecord::from(&d)).unwrap_or_default();
        let back: Option<DetectionRecord> = serde_json::from_slice(&json).ok();
        assert_eq!(back.map(DetectionRecord::into_detection), Some(d));
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
