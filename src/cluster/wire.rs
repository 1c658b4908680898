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

/// A routed match and the event that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchRecord {
    /// Which window.
    pub routed: Routed,
    /// The event.
    pub event: Event,
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert_eq!(back, Some(d));
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
