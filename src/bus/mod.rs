//! The bus between stages: a small pair of traits, a bounded in-process implementation.
//!
//! Collectors publish [`RawRecord`]s; the engine consumes them. The embedded mode uses
//! [`memory`]; the Kafka backend (scaled-out mode) implements the same traits. Every queue is
//! bounded: [`Publisher::publish`] waits for room (TCP back-pressure) and
//! [`Publisher::try_publish`] refuses when full (UDP counts the drop).
//! [`kafka`] holds the Kafka clients (topics, idempotent producer, consumer group member).

use std::future::Future;
use std::net::IpAddr;

use chrono::{DateTime, Utc};

pub mod kafka;
pub mod memory;
pub mod spool;

/// One record as received, before parsing: the bytes and where and when they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRecord {
    /// The bytes exactly as received (one datagram or one TCP frame, or one file line).
    pub bytes: Vec<u8>,
    /// Collector kind: `syslog`, `file`, ...
    pub observer_type: &'static str,
    /// Log source identity: `syslog/udp/10.0.0.5`, `file:/var/log/auth.log` (inline up to 24
    /// bytes: a record's copy of its source's name costs no allocation).
    pub observer_id: vigil_parsers::Text,
    /// The network peer that sent it, when there is one.
    pub peer: Option<IpAddr>,
    /// When Vigil received it.
    pub received_at: DateTime<Utc>,
    /// Set when the collector already refused the record (for example a frame over the size
    /// limit): it goes straight to the dead letters with this reason and detail.
    pub refused: Option<(&'static str, String)>,
    /// Set by collectors that decode records themselves (flow exports, normalized-event files):
    /// the event or flow record, ready for context and rules; the parsers are skipped.
    pub decoded: Option<Decoded>,
    /// Told once the record is accepted (written to the spool); HTTP ingest waits on it.
    pub ack: Option<spool::Ack>,
}

impl Weigh for RawRecord {
    fn weight(&self) -> usize {
        // The bytes, the source name, and the fixed part of the record.
        self.bytes.len()
            + self.observer_id.len()
            + std::mem::size_of::<RawRecord>()
            + self.decoded.as_ref().map_or(0, |d| match d {
                Decoded::Event(e) => {
                    std::mem::size_of::<vigil_parsers::Event>()
                        + e.raw.len()
                        + e.extra
                            .iter()
                            .map(|(k, v)| k.len() + v.len() + 48)
                            .sum::<usize>()
                }
                Decoded::Flow(f) => {
                    std::mem::size_of::<vigil_flows::FlowRecord>() + f.community_id.len()
                }
            })
    }
}

/// What a collector decoded itself, so the parsers are skipped.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A normalized event (a file of events, an sFlow counter sample).
    Event(Box<vigil_parsers::Event>),
    /// A flow record. Its event is made by the normalize thread
    /// ([`crate::collect::flow::flow_event`]): a collector under a flood of flows only decodes,
    /// and the record crosses the spool in its compact form (about a third of the event's).
    Flow(Box<vigil_flows::FlowRecord>),
}

/// What an item costs a queue's byte budget.
pub trait Weigh {
    /// Approximate heap and inline size in bytes.
    fn weight(&self) -> usize;
}

/// The bus is closed: the consumer side is gone (shutdown).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bus closed")]
pub struct Closed;

/// Why [`Publisher::try_publish`] did not take a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TryPublishError {
    /// The queue is at capacity.
    #[error("queue full")]
    Full,
    /// The consumer is gone.
    #[error("bus closed")]
    Closed,
}

/// The producing side of a bus topic.
pub trait Publisher<T>: Clone + Send + Sync + 'static {
    /// Publishes, waiting for room when the queue is full.
    fn publish(&self, item: T) -> impl Future<Output = Result<(), Closed>> + Send;
    /// Publishes if there is room now.
    fn try_publish(&self, item: T) -> Result<(), TryPublishError>;
}

/// What waiting on a [`Subscriber`] gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received<T> {
    /// An item.
    Item(T),
    /// Nothing within the wait.
    Idle,
    /// Every publisher is gone and the queue is drained.
    Closed,
}

/// The consuming side of a bus topic.
pub trait Subscriber<T>: Send + 'static {
    /// The next item, waiting at most `wait`. For use on a dedicated (non-async) thread.
    fn next_within(&mut self, wait: std::time::Duration) -> Received<T>;
    /// The next item, waiting for one; `None` once every publisher is gone and the queue is
    /// drained. For use on a dedicated (non-async) thread.
    fn next_blocking(&mut self) -> Option<T>;
    /// An item if one is ready now.
    fn try_next(&mut self) -> Option<T>;
    /// Where the last item returned came from, for a source that can be read again from
    /// there (the burst spool: (segment, offset)).
    fn position(&self) -> Option<(u64, u64)> {
        None
    }
}

impl<T, S: Subscriber<T> + ?Sized> Subscriber<T> for Box<S> {
    fn next_within(&mut self, wait: std::time::Duration) -> Received<T> {
        (**self).next_within(wait)
    }
    fn next_blocking(&mut self) -> Option<T> {
        (**self).next_blocking()
    }
    fn try_next(&mut self) -> Option<T> {
        (**self).try_next()
    }
    fn position(&self) -> Option<(u64, u64)> {
        (**self).position()
    }
}
