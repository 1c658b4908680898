//! The Kafka backend of the bus (scaled-out mode): topic creation, an idempotent keyed producer,
//! and a consumer-group member with manual commits and recorded rebalances.
//!
//! Built on `rdkafka` (librdkafka). Everything here is plain Kafka client behaviour: it runs
//! against Apache Kafka, Redpanda or any broker speaking the Kafka protocol (the tests use Tansu).
//!
//! # Choices
//! - **Partitioner.** librdkafka's default is `consistent_random` (CRC32 of the key), which does
//!   not agree with the Java client. Every producer here sets `partitioner=murmur2_random`, Kafka
//!   Java's default for keyed records, so any producer (Vigil node, Java, Go) puts a key on the
//!   same partition; [`partition_for`] computes that partition without a broker.
//! - **Delivery.** Idempotent producer (`enable.idempotence=true`, `acks=all`, at most
//!   [`KafkaConfig::max_in_flight`] ≤ 5 requests in flight), so retries neither duplicate nor
//!   reorder a partition. The local queue is bounded ([`KafkaConfig::queue_max_messages`],
//!   [`KafkaConfig::queue_max_kbytes`]): a send waits for room. A record that cannot be delivered
//!   within `message.timeout.ms` is an error returned to the caller, never dropped silently.
//! - **Commits.** Offsets are committed only for records the caller says are done
//!   ([`KafkaConsumer::commit`]), asynchronously: a synchronous commit per batch stalls the
//!   consumer on a broker round trip (SERVICES.md saw about 1 k msg/s with one per message).
//!   Async commit results arrive through the consumer's callbacks and are counted in
//!   [`ConsumerStats`]; [`KafkaConsumer::commit_sync`] waits for the broker, for shutdown.
//!   Delivery is at least once: records after the last commit are read again by the next owner.
//! - **Rebalances.** The eager protocol (librdkafka's default `range,roundrobin` assignors): a
//!   rebalance revokes the whole assignment, then assigns the new one. Both are recorded as
//!   [`RebalanceEvent`]s for the owner to read with [`KafkaConsumer::take_rebalance_events`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError as ClientError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

/// Client settings, shared by the admin client, producers and consumers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, comma separated `host:port` (`bootstrap.servers`).
    pub brokers: String,
    /// Client name the brokers see in their logs and quotas (`client.id`).
    pub client_id: String,
    /// Producer batch compression (`compression.type`): `lz4`, `zstd`, `snappy`, `gzip` or `none`.
    pub compression: String,
    /// Produce requests in flight per broker connection
    /// (`max.in.flight.requests.per.connection`); idempotence allows at most 5.
    pub max_in_flight: u32,
    /// How long the producer waits to fill a batch (`linger.ms`).
    pub linger_ms: u32,
    /// A consumer not heard from for this long leaves its group (`session.timeout.ms`).
    pub session_timeout_ms: u32,
    /// Most records waiting in a producer's local queue (`queue.buffering.max.messages`);
    /// a send waits for room beyond it.
    pub queue_max_messages: u32,
    /// Most kilobytes waiting in a producer's local queue (`queue.buffering.max.kbytes`).
    pub queue_max_kbytes: u32,
    /// Any other librdkafka setting, passed through as is (`security.protocol`,
    /// `sasl.mechanisms`, `ssl.ca.location`, ...). The settings this module manages (see
    /// [`MANAGED_SETTINGS`]) are refused here, so nothing can quietly weaken delivery.
    pub extra: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:19092".to_owned(),
            client_id: "vigil".to_owned(),
            compression: "lz4".to_owned(),
            max_in_flight: 5,
            linger_ms: 5,
            session_timeout_ms: 10_000,
            queue_max_messages: 100_000,
            queue_max_kbytes: 65_536,
            extra: BTreeMap::new(),
        }
    }
}

/// librdkafka settings set from [`KafkaConfig`]'s typed fields or fixed by this module; they may
/// not appear in [`KafkaConfig::extra`].
pub const MANAGED_SETTINGS: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "client.id",
    "compression.type",
    "compression.codec",
    "max.in.flight.requests.per.connection",
    "max.in.flight",
    "linger.ms",
    "queue.buffering.max.ms",
    "session.timeout.ms",
    "queue.buffering.max.messages",
    "queue.buffering.max.kbytes",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "partitioner",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
];

/// What went wrong talking to Kafka, with the operation and topic it concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaError {
    /// A setting in [`KafkaConfig::extra`] is managed by this module.
    #[error("kafka setting {key} is managed by vigil and cannot be set in extra")]
    ManagedSetting {
        /// The librdkafka setting name.
        key: String,
    },
    /// librdkafka refused the configuration or could not create the client.
    #[error("creating the kafka {client}: {source}")]
    Client {
        /// Which client: `producer`, `consumer`, `admin client`.
        client: &'static str,
        /// The client library's error.
        source: Box<ClientError>,
    },
    /// The admin request to create topics failed as a whole (broker unreachable, timeout).
    #[error("creating topics {topics}: {source}")]
    Admin {
        /// The topics asked for, comma separated.
        topics: String,
        /// The client library's error.
        source: Box<ClientError>,
    },
    /// The broker refused to create one topic, for a reason other than that it exists.
    #[error("creating topic {topic}: {code}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's error code.
        code: RDKafkaErrorCode,
    },
    /// A record could not be queued or was not acknowledged by the broker.
    #[error("producing to topic {topic}: {source}")]
    Delivery {
        /// The topic.
        topic: String,
        /// The client library's error.
        source: Box<ClientError>,
    },
    /// Several records of one batch failed; `first` is the first failure.
    #[error("producing to topic {topic}: {failed} of {total} records failed, first: {first}")]
    BatchDelivery {
        /// The topic.
        topic: String,
        /// How many records failed.
        failed: usize,
        /// How many records the batch had.
        total: usize,
        /// The first failure.
        first: Box<ClientError>,
    },
    /// The producer was closed before the broker answered for a record.
    #[error("producing to topic {topic}: the producer closed before the delivery report")]
    DeliveryCanceled {
        /// The topic.
        topic: String,
    },
    /// Records were still queued when a flush timed out, or the flush failed.
    #[error("flushing the producer: {source}")]
    Flush {
        /// The client library's error.
        source: Box<ClientError>,
    },
    /// Subscribing to topics failed.
    #[error("subscribing group {group} to {topics}: {source}")]
    Subscribe {
        /// The consumer group.
        group: String,
        /// The topics, comma separated.
        topics: String,
        /// The client library's error.
        source: Box<ClientError>,
    },
    /// The consumer reported an error while fetching (the records before it were returned).
    #[error("consuming for group {group}: {source}")]
    Consume {
        /// The consumer group.
        group: String,
        /// The client library's error.
        source: Box<ClientError>,
    },
    /// A commit could not be sent, or (for [`KafkaConsumer::commit_sync`]) the broker refused it.
    #[error("committing offsets of group {group} ({offsets}): {source}")]
    Commit {
        /// The consumer group.
        group: String,
        /// The offsets, as `topic/partition@offset`.
        offsets: String,
        /// The client library's error.
        source: Box<ClientError>,
    },
    /// Reading the consumer's assignment failed.
    #[error("reading the assignment of group {group}: {source}")]
    Assignment {
        /// The consumer group.
        group: String,
        /// The client library's error.
        source: Box<ClientError>,
    },
    /// A blocking client call could not run on the blocking thread pool.
    #[error("kafka {operation}: the blocking task failed: {reason}")]
    Blocking {
        /// What was being done.
        operation: &'static str,
        /// Why the task failed (panic or runtime shutdown).
        reason: String,
    },
}

/// Applies the pass-through settings, then the common ones.
fn base_config(cfg: &KafkaConfig) -> Result<ClientConfig, KafkaError> {
    let mut out = ClientConfig::new();
    for (key, value) in &cfg.extra {
        if MANAGED_SETTINGS.contains(&key.as_str()) {
            return Err(KafkaError::ManagedSetting { key: key.clone() });
        }
        out.set(key, value);
    }
    out.set("bootstrap.servers", &cfg.brokers)
        .set("client.id", &cfg.client_id);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Topics
// ---------------------------------------------------------------------------------------------

/// A topic [`ensure_topics`] creates when it is missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSpec {
    /// The topic name.
    pub name: String,
    /// How many partitions to create it with.
    pub partitions: i32,
    /// Whether the topic keeps only the latest record per key (`cleanup.policy=compact`).
    pub compacted: bool,
}

impl TopicSpec {
    /// A topic with `partitions` partitions and the default (delete) cleanup policy.
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        TopicSpec {
            name: name.into(),
            partitions,
            compacted: false,
        }
    }
}

/// How long an admin request may take on the broker and on the network.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Creates the topics that do not exist yet (admin API), with their partition count, the
/// broker's default replication factor and, for compacted topics, `cleanup.policy=compact`.
/// Existing topics are left as they are, whatever their partition count (not an error).
/// Fails naming the topic when the broker refuses one for another reason.
pub async fn ensure_topics(cfg: &KafkaConfig, topics: &[TopicSpec]) -> Result<(), KafkaError> {
    if topics.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> =
        base_config(cfg)?
            .create()
            .map_err(|source| KafkaError::Client {
                client: "admin client",
                source: Box::new(source),
            })?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            // -1: the broker's default.replication.factor (KIP-464).
            let topic = NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(-1));
            if t.compacted {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    let opts = AdminOptions::new()
        .operation_timeout(Some(ADMIN_TIMEOUT))
        .request_timeout(Some(ADMIN_TIMEOUT));
    let results = admin
        .create_topics(&new_topics, &opts)
        .await
        .map_err(|source| KafkaError::Admin {
            topics: topics
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(","),
            source: Box::new(source),
        })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(KafkaError::CreateTopic { topic, code }),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Partitioning
// ---------------------------------------------------------------------------------------------

/// Kafka's 32-bit murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), as librdkafka's
/// `murmur2` partitioners also compute it: seed `0x9747b28c`, little-endian 4-byte blocks.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Java hashes the length as an int; keys are far below 2^32 bytes.
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        // Java's switch falls through from 3 to 2 to 1.
        if tail.len() >= 3 {
            h ^= u32::from(tail[2]) << 16;
        }
        if tail.len() >= 2 {
            h ^= u32::from(tail[1]) << 8;
        }
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of a topic with `partitions` partitions that a record with this key goes to:
/// `toPositive(murmur2(key)) % partitions`, the Java client's default partitioner for keyed
/// records and librdkafka's `murmur2_random`, which [`KafkaProducer`] sets explicitly
/// (librdkafka's own default, `consistent_random`, hashes with CRC32 and would disagree).
/// A count below 1 is taken as 1.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

// ---------------------------------------------------------------------------------------------
// Producer
// ---------------------------------------------------------------------------------------------

/// What a producer holds right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStats {
    /// Records queued or in flight, not yet acknowledged or failed.
    pub in_flight: i32,
}

/// An idempotent producer: `acks=all`, compressed batches, a bounded local queue, keys placed
/// with the murmur2 partitioner. Cheap to clone (the clones share one client).
#[derive(Clone)]
pub struct KafkaProducer {
    inner: FutureProducer,
}

impl std::fmt::Debug for KafkaProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProducer")
            .field("in_flight", &self.inner.in_flight_count())
            .finish()
    }
}

impl KafkaProducer {
    /// Creates the producer. It connects lazily: an unreachable broker shows as delivery errors
    /// after `message.timeout.ms`, not here.
    pub fn new(cfg: &KafkaConfig) -> Result<Self, KafkaError> {
        let mut config = base_config(cfg)?;
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", &cfg.compression)
            .set(
                "max.in.flight.requests.per.connection",
                cfg.max_in_flight.to_string(),
            )
            .set("linger.ms", cfg.linger_ms.to_string())
            .set("partitioner", "murmur2_random")
            .set(
                "queue.buffering.max.messages",
                cfg.queue_max_messages.to_string(),
            )
            .set(
                "queue.buffering.max.kbytes",
                cfg.queue_max_kbytes.to_string(),
            );
        let inner = config.create().map_err(|source| KafkaError::Client {
            client: "producer",
            source: Box::new(source),
        })?;
        Ok(KafkaProducer { inner })
    }

    /// Sends one record and waits for the broker's acknowledgement. Waits for room while the
    /// local queue is full. Returns the (partition, offset) it was written at.
    pub async fn send(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
    ) -> Result<(i32, i64), KafkaError> {
        let record = FutureRecord::to(topic).key(key).payload(payload);
        match self.inner.send(record, Timeout::Never).await {
            Ok(delivery) => Ok((delivery.partition, delivery.offset)),
            Err((source, _)) => Err(KafkaError::Delivery {
                topic: topic.to_owned(),
                source: Box::new(source),
            }),
        }
    }

    /// Sends many `(key, payload)` records, in order, then waits for every acknowledgement.
    /// While the local queue is full it waits for the oldest outstanding record. Every record
    /// is accounted for: on failure the error says how many failed (the others were written;
    /// a retry of the whole batch writes those again: at least once).
    pub async fn send_batch(
        &self,
        topic: &str,
        records: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), KafkaError> {
        let mut pending: VecDeque<DeliveryFuture> = VecDeque::with_capacity(records.len());
        let mut failed = 0usize;
        let mut first: Option<ClientError> = None;
        let mut note = |result: Result<(), ClientError>| {
            if let Err(e) = result {
                failed += 1;
                first.get_or_insert(e);
            }
        };
        for (key, payload) in records {
            let mut record = FutureRecord::to(topic).key(key).payload(payload);
            loop {
                match self.inner.send_result(record) {
                    Ok(delivery) => {
                        pending.push_back(delivery);
                        break;
                    }
                    Err((ClientError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        match pending.pop_front() {
                            Some(oldest) => note(delivery_outcome(oldest.await)),
                            // The queue is full of other callers' records: let them drain.
                            None => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                    }
                    Err((e, _)) => {
                        note(Err(e));
                        break;
                    }
                }
            }
        }
        for delivery in pending {
            note(delivery_outcome(delivery.await));
        }
        match first {
            None => Ok(()),
            Some(first) if records.len() == 1 => Err(KafkaError::Delivery {
                topic: topic.to_owned(),
                source: Box::new(first),
            }),
            Some(first) => Err(KafkaError::BatchDelivery {
                topic: topic.to_owned(),
                failed,
                total: records.len(),
                first: Box::new(first),
            }),
        }
    }

    /// Waits until every queued record is acknowledged or failed, at most `timeout`.
    pub async fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let producer = self.inner.clone();
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|e| KafkaError::Blocking {
                operation: "flush",
                reason: e.to_string(),
            })?
            .map_err(|source| KafkaError::Flush {
                source: Box::new(source),
            })
    }

    /// Records queued or in flight right now.
    pub fn stats(&self) -> ProducerStats {
        ProducerStats {
            in_flight: self.inner.in_flight_count(),
        }
    }
}

/// What a [`DeliveryFuture`] resolves to.
type DeliveryReport = <DeliveryFuture as std::future::Future>::Output;

/// A delivery report as a plain result; a canceled report (producer closed) is an error.
fn delivery_outcome(report: DeliveryReport) -> Result<(), ClientError> {
    match report {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e),
        Err(_) => Err(ClientError::Canceled),
    }
}

// ---------------------------------------------------------------------------------------------
// Consumer
// ---------------------------------------------------------------------------------------------

/// One consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The topic it came from.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// Its key, if it has one.
    pub key: Option<Vec<u8>>,
    /// Its value (empty for a null value).
    pub payload: Vec<u8>,
}

/// A change of the partitions a consumer owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    /// These partitions were assigned (the whole new assignment, under the eager protocol).
    Assigned(Vec<(String, i32)>),
    /// These partitions are taken away (recorded just before they are given up).
    Revoked(Vec<(String, i32)>),
}

/// Most rebalance events kept until the owner takes them; older ones are dropped and counted.
const MAX_REBALANCE_EVENTS: usize = 1024;

/// Counters of a consumer's background activity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Asynchronous commits the broker accepted.
    pub commits_ok: u64,
    /// Asynchronous commits that failed (the offsets stay at the previous commit).
    pub commits_failed: u64,
    /// The last commit failure, if any.
    pub last_commit_error: Option<String>,
    /// Rebalance events dropped because the owner did not take them.
    pub rebalance_events_dropped: u64,
}

/// Callbacks librdkafka runs while the consumer is polled: records rebalances and commit
/// results where the owner can read them.
#[derive(Debug, Default)]
pub struct GroupContext {
    events: Mutex<VecDeque<RebalanceEvent>>,
    events_dropped: AtomicU64,
    commits_ok: AtomicU64,
    commits_failed: AtomicU64,
    last_commit_error: Mutex<Option<String>>,
}

impl GroupContext {
    fn push(&self, event: RebalanceEvent) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if events.len() >= MAX_REBALANCE_EVENTS {
            events.pop_front();
            self.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
        events.push_back(event);
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = tpl.count(), "kafka partitions revoked");
                self.push(RebalanceEvent::Revoked(partitions_of(tpl)));
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "kafka rebalance error"),
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            tracing::info!(partitions = tpl.count(), "kafka partitions assigned");
            self.push(RebalanceEvent::Assigned(partitions_of(tpl)));
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                self.commits_ok.fetch_add(1, Ordering::Relaxed);
            }
            // Nothing to commit (no new offsets) is not a failure.
            Err(ClientError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                tracing::warn!(error = %e, "kafka offset commit failed");
                self.commits_failed.fetch_add(1, Ordering::Relaxed);
                *self
                    .last_commit_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            }
        }
    }
}

/// A member of a consumer group that commits only what the caller says is done:
/// `enable.auto.commit=false`, `enable.auto.offset.store=false`, `auto.offset.reset=earliest`
/// (a new group reads from the beginning).
///
/// Poll it regularly ([`poll_batch`](Self::poll_batch)): group membership, rebalance and
/// commit callbacks are served while it is polled, and a member not polled for
/// `max.poll.interval.ms` (5 minutes) leaves the group. Dropping it leaves the group and
/// blocks the current thread until the broker confirms (normally milliseconds).
pub struct KafkaConsumer {
    inner: Arc<StreamConsumer<GroupContext>>,
    group: String,
    /// An error met after some records of a batch: returned by the next poll.
    deferred: Mutex<Option<ClientError>>,
}

impl std::fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConsumer")
            .field("group", &self.group)
            .finish()
    }
}

impl KafkaConsumer {
    /// Joins `group` and subscribes to `topics`. Must be called within a tokio runtime. The
    /// assignment arrives with the first polls.
    pub fn new(cfg: &KafkaConfig, group: &str, topics: &[&str]) -> Result<Self, KafkaError> {
        let mut config = base_config(cfg)?;
        config
            .set("group.id", group)
            .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false");
        let inner: StreamConsumer<GroupContext> = config
            .create_with_context(GroupContext::default())
            .map_err(|source| KafkaError::Client {
                client: "consumer",
                source: Box::new(source),
            })?;
        inner
            .subscribe(topics)
            .map_err(|source| KafkaError::Subscribe {
                group: group.to_owned(),
                topics: topics.join(","),
                source: Box::new(source),
            })?;
        Ok(KafkaConsumer {
            inner: Arc::new(inner),
            group: group.to_owned(),
            deferred: Mutex::new(None),
        })
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Up to `max` records, waiting at most `wait` for the first; the rest are those already
    /// fetched. An empty batch means nothing arrived within `wait`. An error met after some
    /// records ends the batch early and is returned by the next call, so no record is lost.
    pub async fn poll_batch(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Received>, KafkaError> {
        if let Some(source) = self
            .deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            return Err(self.consume_error(source));
        }
        let mut batch = Vec::new();
        if max == 0 {
            return Ok(batch);
        }
        // The first record: wait for it.
        match tokio::time::timeout(wait, self.recv()).await {
            Err(_) => return Ok(batch),
            Ok(Err(source)) => return Err(self.consume_error(source)),
            Ok(Ok(record)) => batch.push(record),
        }
        // The rest: only what is already there (a zero timeout polls the queue once).
        while batch.len() < max {
            match tokio::time::timeout(Duration::ZERO, self.recv()).await {
                Err(_) => break,
                Ok(Ok(record)) => batch.push(record),
                Ok(Err(source)) => {
                    *self.deferred.lock().unwrap_or_else(|p| p.into_inner()) = Some(source);
                    break;
                }
            }
        }
        Ok(batch)
    }

    /// The next record, copied out of librdkafka's buffer.
    async fn recv(&self) -> Result<Received, ClientError> {
        let message = self.inner.recv().await?;
        Ok(Received {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        })
    }

    fn consume_error(&self, source: ClientError) -> KafkaError {
        KafkaError::Consume {
            group: self.group.clone(),
            source: Box::new(source),
        }
    }

    /// Marks every record up to and including these `(topic, partition, offset)`s done and
    /// commits them (the next owner of a partition starts just after). Asynchronous: returns
    /// once the commit is queued; its outcome is counted in [`stats`](Self::stats) (and
    /// logged), and a failed commit is superseded by the next one. Several entries for one
    /// partition commit the highest. Pending commits are completed when the consumer closes.
    pub fn commit(&self, done: &[(String, i32, i64)]) -> Result<(), KafkaError> {
        self.commit_with(done, CommitMode::Async)
    }

    /// Like [`commit`](Self::commit) but waits for the broker's answer (on the blocking pool),
    /// and fails if it refuses. For shutdown and before giving partitions up.
    pub async fn commit_sync(&self, done: &[(String, i32, i64)]) -> Result<(), KafkaError> {
        let done = done.to_vec();
        let inner = self.inner.clone();
        let group = self.group.clone();
        tokio::task::spawn_blocking(move || commit_on(&inner, &group, &done, CommitMode::Sync))
            .await
            .map_err(|e| KafkaError::Blocking {
                operation: "commit",
                reason: e.to_string(),
            })?
    }

    fn commit_with(&self, done: &[(String, i32, i64)], mode: CommitMode) -> Result<(), KafkaError> {
        commit_on(&self.inner, &self.group, done, mode)
    }

    /// The partitions assigned to this member now.
    pub fn assignment(&self) -> Result<Vec<(String, i32)>, KafkaError> {
        self.inner
            .assignment()
            .map(|tpl| partitions_of(&tpl))
            .map_err(|source| KafkaError::Assignment {
                group: self.group.clone(),
                source: Box::new(source),
            })
    }

    /// The rebalance events recorded since the last call, oldest first.
    pub fn take_rebalance_events(&self) -> Vec<RebalanceEvent> {
        self.inner
            .context()
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect()
    }

    /// Commit outcomes and dropped events so far.
    pub fn stats(&self) -> ConsumerStats {
        let context = self.inner.context();
        ConsumerStats {
            commits_ok: context.commits_ok.load(Ordering::Relaxed),
            commits_failed: context.commits_failed.load(Ordering::Relaxed),
            last_commit_error: context
                .last_commit_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            rebalance_events_dropped: context.events_dropped.load(Ordering::Relaxed),
        }
    }
}

/// Commits `offset + 1` (the next record to read) for the highest done offset per partition.
fn commit_on(
    consumer: &StreamConsumer<GroupContext>,
    group: &str,
    done: &[(String, i32, i64)],
    mode: CommitMode,
) -> Result<(), KafkaError> {
    let mut highest: HashMap<(&str, i32), i64> = HashMap::new();
    for (topic, partition, offset) in done {
        let entry = highest
            .entry((topic.as_str(), *partition))
            .or_insert(*offset);
        *entry = (*entry).max(*offset);
    }
    if highest.is_empty() {
        return Ok(());
    }
    let describe = || {
        let mut parts: Vec<String> = highest
            .iter()
            .map(|((t, p), o)| format!("{t}/{p}@{o}"))
            .collect();
        parts.sort();
        parts.join(",")
    };
    let mut tpl = TopicPartitionList::with_capacity(highest.len());
    for ((topic, partition), offset) in &highest {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(offset.saturating_add(1)))
            .map_err(|source| KafkaError::Commit {
                group: group.to_owned(),
                offsets: describe(),
                source: Box::new(source),
            })?;
    }
    consumer
        .commit(&tpl, mode)
        .map_err(|source| KafkaError::Commit {
            group: group.to_owned(),
            offsets: describe(),
            source: Box::new(source),
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn managed_settings_are_refused_in_extra() {
        let mut cfg = KafkaConfig::default();
        cfg.extra
            .insert("enable.idempotence".to_owned(), "false".to_owned());
        assert!(matches!(
            base_config(&cfg),
            Err(KafkaError::ManagedSetting { key }) if key == "enable.idempotence"
        ));
        let mut cfg = KafkaConfig::default();
        cfg.extra
            .insert("security.protocol".to_owned(), "ssl".to_owned());
        assert!(base_config(&cfg).is_ok());
    }

    #[test]
    fn config_defaults_fill_missing_fields() {
        let cfg: KafkaConfig = toml::from_str("brokers = \"k1:9092,k2:9092\"").unwrap();
        assert_eq!(cfg.brokers, "k1:9092,k2:9092");
        assert_eq!(cfg.compression, "lz4");
        assert_eq!(cfg.max_in_flight, 5);
        assert!(toml::from_str::<KafkaConfig>("brokerz = \"x\"").is_err());
    }
}
