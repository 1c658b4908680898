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
//!   ([`KafkaConsumer::commit`]), asynchronously for the caller: `commit` records them and
//!   returns; a commit thread per consumer sends what accumulated, merged, one synchronous
//!   commit at a time. Polling never waits on a broker round trip (SERVICES.md saw about
//!   1 k msg/s with a synchronous commit per message), bursts become one request, commits reach
//!   the broker in order, and each outcome is counted in [`ConsumerStats`] (librdkafka reports
//!   nothing back for its own asynchronous manual commits). [`KafkaConsumer::commit_sync`] and
//!   [`KafkaConsumer::close`] wait for the broker, for shutdown. Delivery is at least once:
//!   records after the last commit are read again by the next owner.
//! - **Rebalances.** The eager protocol (librdkafka's default `range,roundrobin` assignors): a
//!   rebalance revokes the whole assignment, then assigns the new one. Both are recorded as
//!   [`RebalanceEvent`]s for the owner to read with [`KafkaConsumer::take_rebalance_events`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError as ClientError, RDKafkaErrorCode};
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
    /// Static group membership for this process's consumers (`group.instance.id`, KIP-345):
    /// give each stage-2 node its own stable id (its host name) and a node restarted within
    /// `session_timeout_ms` gets its partitions back without moving them to the other nodes
    /// and back. Unset: dynamic membership.
    pub instance_id: Option<String>,
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
            instance_id: None,
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
    "group.instance.id",
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
    /// A negative offset was given to commit.
    #[error("cannot commit offset {offset} of {topic}/{partition}: offsets are not negative")]
    InvalidOffset {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The offset given.
        offset: i64,
    },
    /// The broker refused a commit, or it could not be sent.
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

/// How many partitions `topic` has, from the brokers' metadata (0 if the topic is unknown).
/// Blocks up to ten seconds: call it from a blocking context.
pub fn partition_count(cfg: &KafkaConfig, topic: &str) -> Result<i32, KafkaError> {
    let client: BaseConsumer = base_config(cfg)?
        .create()
        .map_err(|source| KafkaError::Client {
            client: "metadata client",
            source: Box::new(source),
        })?;
    let metadata = client
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|source| KafkaError::Client {
            client: "metadata client",
            source: Box::new(source),
        })?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| {
            i32::try_from(t.partitions().len()).unwrap_or(i32::MAX)
        }))
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
    /// Records handed to the client whose delivery report has not been seen yet. Counted here
    /// rather than read from librdkafka's queue length, which also counts reports still waiting
    /// to be served, so it can be above zero after every send has returned.
    in_flight: Arc<AtomicI32>,
}

/// One record in flight: counted while it lives.
struct InFlight(Arc<AtomicI32>);

impl InFlight {
    fn start(count: &Arc<AtomicI32>) -> InFlight {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(count))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for KafkaProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProducer")
            .field("in_flight", &self.stats().in_flight)
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
        Ok(KafkaProducer {
            inner,
            in_flight: Arc::default(),
        })
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
        let _counted = InFlight::start(&self.in_flight);
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
        let mut pending: VecDeque<(DeliveryFuture, InFlight)> =
            VecDeque::with_capacity(records.len());
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
                        pending.push_back((delivery, InFlight::start(&self.in_flight)));
                        break;
                    }
                    Err((ClientError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        match pending.pop_front() {
                            Some((oldest, _counted)) => note(delivery_outcome(oldest.await)),
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
        for (delivery, _counted) in pending {
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

    /// Records sent and not yet acknowledged or failed, right now.
    pub fn stats(&self) -> ProducerStats {
        ProducerStats {
            in_flight: self.in_flight.load(Ordering::Relaxed),
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
    /// Commits the broker accepted (one commit may cover many [`KafkaConsumer::commit`] calls).
    pub commits_ok: u64,
    /// Commits that failed; those offsets stay at the previous commit until a later one.
    pub commits_failed: u64,
    /// The last commit failure, if any.
    pub last_commit_error: Option<String>,
    /// Offsets recorded by [`KafkaConsumer::commit`] and not yet sent.
    pub commits_pending: usize,
    /// Rebalance events dropped because the owner did not take them.
    pub rebalance_events_dropped: u64,
}

/// Callbacks librdkafka runs while the consumer is polled: records rebalances where the owner
/// can read them.
#[derive(Debug, Default)]
pub struct GroupContext {
    events: Mutex<VecDeque<RebalanceEvent>>,
    events_dropped: AtomicU64,
}

impl GroupContext {
    fn push(&self, event: RebalanceEvent) {
        let mut events = lock(&self.events);
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

/// Locks, going on with the data if a thread panicked while holding the lock (every critical
/// section here leaves the data consistent).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
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
}

type Client = StreamConsumer<GroupContext>;

/// Offsets waiting to be committed, shared by the owner and the committer thread.
#[derive(Debug, Default)]
struct CommitQueue {
    /// Next offset to read (last done + 1) per partition, the highest recorded.
    pending: HashMap<(String, i32), i64>,
    /// The owner is gone or closing: send what is pending, then stop.
    closing: bool,
}

/// The committer's shared state.
#[derive(Debug, Default)]
struct Committer {
    queue: Mutex<CommitQueue>,
    wake: Condvar,
    /// Held from taking a batch until the broker answered for it, so batches reach the broker
    /// in the order they were taken and a commit never goes back.
    order: Mutex<()>,
    ok: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Committer {
    /// Takes everything pending (plus `more`) and commits it synchronously.
    fn flush(
        &self,
        consumer: &Client,
        group: &str,
        more: &[(String, i32, i64)],
    ) -> Result<(), KafkaError> {
        let _order = lock(&self.order);
        let batch = {
            let mut queue = lock(&self.queue);
            merge(&mut queue.pending, more);
            std::mem::take(&mut queue.pending)
        };
        if batch.is_empty() {
            return Ok(());
        }
        let result = commit_now(consumer, group, &batch);
        match &result {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "kafka offset commit failed");
                self.failed.fetch_add(1, Ordering::Relaxed);
                *lock(&self.last_error) = Some(e.to_string());
            }
        }
        result
    }

    /// The committer thread: commits whatever accumulated, one commit at a time, until closed.
    /// Holding a handle on the client, it is also what closes it when the owner was dropped.
    fn run(&self, consumer: Arc<Client>, group: String) {
        loop {
            {
                let mut queue = lock(&self.queue);
                while queue.pending.is_empty() && !queue.closing {
                    queue = self.wake.wait(queue).unwrap_or_else(|p| p.into_inner());
                }
                if queue.pending.is_empty() && queue.closing {
                    break;
                }
            }
            // A failure is counted and logged; later commits supersede it.
            let _ = self.flush(&consumer, &group, &[]);
        }
        drop(consumer);
    }

    fn close(&self) {
        lock(&self.queue).closing = true;
        self.wake.notify_all();
    }
}

/// Records `done` offsets as next-to-read offsets, keeping the highest per partition.
fn merge(pending: &mut HashMap<(String, i32), i64>, done: &[(String, i32, i64)]) {
    for (topic, partition, offset) in done {
        let next = offset.saturating_add(1);
        pending
            .entry((topic.clone(), *partition))
            .and_modify(|o| *o = (*o).max(next))
            .or_insert(next);
    }
}

/// Commits `next` (the next offset to read per partition) and waits for the broker.
fn commit_now(
    consumer: &Client,
    group: &str,
    next: &HashMap<(String, i32), i64>,
) -> Result<(), KafkaError> {
    let describe = || {
        let mut parts: Vec<String> = next
            .iter()
            .map(|((t, p), o)| format!("{t}/{p}@{o}"))
            .collect();
        parts.sort();
        parts.join(",")
    };
    let fail = |source| KafkaError::Commit {
        group: group.to_owned(),
        offsets: describe(),
        source: Box::new(source),
    };
    let mut tpl = TopicPartitionList::with_capacity(next.len());
    for ((topic, partition), offset) in next {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
            .map_err(fail)?;
    }
    consumer.commit(&tpl, CommitMode::Sync).map_err(fail)
}

/// A member of a consumer group that commits only what the caller says is done:
/// `enable.auto.commit=false`, `enable.auto.offset.store=false`, `auto.offset.reset=earliest`
/// (a new group reads from the beginning).
///
/// Poll it regularly ([`poll_batch`](Self::poll_batch)): group membership and rebalances are
/// served while it is polled, and a member not polled for `max.poll.interval.ms` (5 minutes)
/// leaves the group.
///
/// Commits run on a thread of their own (`vigil-kafka-commit`): [`commit`](Self::commit) only
/// records offsets, the thread sends what accumulated with one synchronous commit at a time.
/// Polling never waits for a commit, a burst of commits becomes one request, commits reach the
/// broker in order, and each outcome is known ([`stats`](Self::stats)). librdkafka reports
/// nothing back for its own asynchronous manual commits, hence the thread.
///
/// [`close`](Self::close) commits what is pending and leaves the group, waiting for both.
/// Dropping the consumer does the same in the background.
pub struct KafkaConsumer {
    inner: Arc<Client>,
    group: String,
    committer: Arc<Committer>,
    committer_thread: Option<std::thread::JoinHandle<()>>,
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
        // Each stage is a hop of the end-to-end latency: the broker answers a fetch after at
        // most 100 ms even with little data (librdkafka waits 500 ms by default). `extra` may
        // set it otherwise.
        if !cfg.extra.contains_key("fetch.wait.max.ms") {
            config.set("fetch.wait.max.ms", "100");
        }
        if let Some(id) = &cfg.instance_id {
            config.set("group.instance.id", id);
        }
        let inner: Client = config
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
        let inner = Arc::new(inner);
        let committer = Arc::new(Committer::default());
        let committer_thread = {
            let (committer, inner, group) = (committer.clone(), inner.clone(), group.to_owned());
            std::thread::Builder::new()
                .name("vigil-kafka-commit".to_owned())
                .spawn(move || committer.run(inner, group))
                .map_err(|e| KafkaError::Blocking {
                    operation: "starting the commit thread",
                    reason: e.to_string(),
                })?
        };
        Ok(KafkaConsumer {
            inner,
            group: group.to_owned(),
            committer,
            committer_thread: Some(committer_thread),
            deferred: Mutex::new(None),
        })
    }

    fn client(&self) -> &Client {
        &self.inner
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
        if let Some(source) = lock(&self.deferred).take() {
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
                    *lock(&self.deferred) = Some(source);
                    break;
                }
            }
        }
        Ok(batch)
    }

    /// The next record, copied out of librdkafka's buffer.
    async fn recv(&self) -> Result<Received, ClientError> {
        let message = self.client().recv().await?;
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

    /// Marks every record up to and including these `(topic, partition, offset)`s done, to be
    /// committed (the next owner of a partition starts just after). Returns at once: the commit
    /// thread sends it, merged with any other pending, and counts the outcome in
    /// [`stats`](Self::stats). For one partition the highest offset wins, so offsets must be
    /// given in processing order. A failed commit (e.g. during a rebalance) is not retried: a
    /// later commit supersedes it, or the next owner reads those records again.
    pub fn commit(&self, done: &[(String, i32, i64)]) -> Result<(), KafkaError> {
        if let Some((topic, partition, offset)) = done.iter().find(|(_, _, o)| *o < 0) {
            return Err(KafkaError::InvalidOffset {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
            });
        }
        if done.is_empty() {
            return Ok(());
        }
        merge(&mut lock(&self.committer.queue).pending, done);
        self.committer.wake.notify_one();
        Ok(())
    }

    /// Like [`commit`](Self::commit), with everything pending, but waits for the broker's
    /// answer (on the blocking pool) and fails if it refuses. For shutdown and hand-overs.
    pub async fn commit_sync(&self, done: &[(String, i32, i64)]) -> Result<(), KafkaError> {
        if let Some((topic, partition, offset)) = done.iter().find(|(_, _, o)| *o < 0) {
            return Err(KafkaError::InvalidOffset {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
            });
        }
        let done = done.to_vec();
        let (committer, group) = (self.committer.clone(), self.group.clone());
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || committer.flush(&inner, &group, &done))
            .await
            .map_err(|e| KafkaError::Blocking {
                operation: "commit",
                reason: e.to_string(),
            })?
    }

    /// Commits everything pending, leaves the group and releases the client, waiting (on the
    /// blocking pool) for all of it. Returns the final commit's error, if it failed.
    pub async fn close(mut self) -> Result<(), KafkaError> {
        let inner = self.inner.clone();
        let thread = self.committer_thread.take();
        let (committer, group) = (self.committer.clone(), self.group.clone());
        // From here the blocking task and the commit thread hold the only handles.
        drop(self);
        tokio::task::spawn_blocking(move || {
            let result = committer.flush(&inner, &group, &[]);
            committer.close();
            if let Some(thread) = thread {
                let _ = thread.join();
            }
            // The last handle: leaving the group happens here.
            drop(inner);
            result
        })
        .await
        .map_err(|e| KafkaError::Blocking {
            operation: "close",
            reason: e.to_string(),
        })?
    }

    /// The partitions assigned to this member now.
    pub fn assignment(&self) -> Result<Vec<(String, i32)>, KafkaError> {
        self.client()
            .assignment()
            .map(|tpl| partitions_of(&tpl))
            .map_err(|source| KafkaError::Assignment {
                group: self.group.clone(),
                source: Box::new(source),
            })
    }

    /// The rebalance events recorded since the last call, oldest first.
    pub fn take_rebalance_events(&self) -> Vec<RebalanceEvent> {
        lock(&self.client().context().events).drain(..).collect()
    }

    /// Commit outcomes, pending commits and dropped events so far.
    pub fn stats(&self) -> ConsumerStats {
        ConsumerStats {
            commits_ok: self.committer.ok.load(Ordering::Relaxed),
            commits_failed: self.committer.failed.load(Ordering::Relaxed),
            last_commit_error: lock(&self.committer.last_error).clone(),
            commits_pending: lock(&self.committer.queue).pending.len(),
            rebalance_events_dropped: self
                .client()
                .context()
                .events_dropped
                .load(Ordering::Relaxed),
        }
    }
}

impl Drop for KafkaConsumer {
    /// Lets the commit thread send what is pending and close the client, without waiting.
    fn drop(&mut self) {
        self.committer.close();
    }
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
