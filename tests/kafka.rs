//! The Kafka bus backend against a real broker (`VIGIL_TEST_KAFKA`, default 127.0.0.1:19092;
//! `scripts/services.sh start` runs one). A missing broker fails these tests, it never skips them.
//! Every test uses its own topics and groups, so reruns on the same broker do not interfere.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::support::kafka_broker;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use vigil::bus::kafka::{
    ensure_topics, murmur2, partition_for, KafkaConfig, KafkaConsumer, KafkaProducer,
    RebalanceEvent, Received, TopicSpec,
};

/// How long any wait on the broker may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

fn config() -> KafkaConfig {
    KafkaConfig {
        brokers: kafka_broker(),
        client_id: "vigil-test".to_owned(),
        ..KafkaConfig::default()
    }
}

/// A name no earlier run used.
fn unique(what: &str) -> String {
    format!("vigil-test-{what}-{:016x}", rand::random::<u64>())
}

/// Creates a fresh topic with `partitions` partitions and returns its name.
async fn fresh_topic(cfg: &KafkaConfig, what: &str, partitions: i32) -> String {
    let name = unique(what);
    ensure_topics(cfg, &[TopicSpec::new(name.clone(), partitions)])
        .await
        .unwrap_or_else(|e| panic!("creating {name}: {e}"));
    name
}

/// `count` records, key `key-<i>`, payload `payload-<i>`.
fn records(count: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..count)
        .map(|i| {
            (
                format!("key-{i}").into_bytes(),
                format!("payload-{i}").into_bytes(),
            )
        })
        .collect()
}

fn partition_count(brokers: &str, topic: &str) -> usize {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let metadata = client
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let found = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .unwrap_or_else(|| panic!("{topic} not in the metadata"));
    assert!(found.error().is_none(), "{topic}: {:?}", found.error());
    found.partitions().len()
}

/// Polls one consumer until it has read `n` records (or fails after `PATIENCE`).
async fn read(consumer: &KafkaConsumer, n: usize) -> Vec<Received> {
    let start = Instant::now();
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            start.elapsed() < PATIENCE,
            "read only {} of {n} records in {PATIENCE:?}",
            got.len()
        );
        got.extend(
            consumer
                .poll_batch(500, Duration::from_millis(500))
                .await
                .unwrap(),
        );
    }
    got
}

/// Polls for `span` and returns whatever arrived (to show that nothing more comes).
async fn read_for(consumer: &KafkaConsumer, span: Duration) -> Vec<Received> {
    let start = Instant::now();
    let mut got = Vec::new();
    while start.elapsed() < span {
        got.extend(
            consumer
                .poll_batch(500, Duration::from_millis(200))
                .await
                .unwrap(),
        );
    }
    got
}

/// Polls both consumers (so both serve their group protocol) until `done` says so.
async fn poll_both_until(
    a: &KafkaConsumer,
    b: &KafkaConsumer,
    what: &str,
    mut done: impl FnMut(&KafkaConsumer, &KafkaConsumer, &[Received], &[Received]) -> bool,
) -> (Vec<Received>, Vec<Received>) {
    let start = Instant::now();
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    while !done(a, b, &got_a, &got_b) {
        assert!(
            start.elapsed() < PATIENCE,
            "{what}: not within {PATIENCE:?}"
        );
        let wait = Duration::from_millis(200);
        let (ra, rb) = tokio::join!(a.poll_batch(500, wait), b.poll_batch(500, wait));
        got_a.extend(ra.unwrap());
        got_b.extend(rb.unwrap());
    }
    (got_a, got_b)
}

/// Polls one consumer until its assignment has `n` partitions.
async fn wait_assigned(consumer: &KafkaConsumer, n: usize) {
    let start = Instant::now();
    while consumer.assignment().unwrap().len() != n {
        assert!(
            start.elapsed() < PATIENCE,
            "no assignment of {n} partitions within {PATIENCE:?}: {:?}",
            consumer.assignment()
        );
        let early = consumer
            .poll_batch(100, Duration::from_millis(200))
            .await
            .unwrap();
        assert!(early.is_empty(), "records before any were sent: {early:?}");
    }
}

/// Checks that `got` is exactly `sent` (as `key-<i>`/`payload-<i>` records), once each,
/// each on the partition murmur2 gives its key.
fn assert_exactly_once(got: &[Received], sent: &[(Vec<u8>, Vec<u8>)], partitions: i32) {
    let mut seen = BTreeMap::new();
    for r in got {
        let key = r.key.clone().expect("every record has a key");
        assert_eq!(
            r.partition,
            partition_for(&key, partitions),
            "{} read from the wrong partition",
            String::from_utf8_lossy(&key)
        );
        if let Some(previous) = seen.insert(key.clone(), r.payload.clone()) {
            panic!(
                "{} read twice (payload {:?})",
                String::from_utf8_lossy(&key),
                String::from_utf8_lossy(&previous)
            );
        }
    }
    let expected: BTreeMap<Vec<u8>, Vec<u8>> = sent.iter().cloned().collect();
    assert_eq!(
        seen.len(),
        expected.len(),
        "read {} of {}",
        seen.len(),
        expected.len()
    );
    assert!(
        seen == expected,
        "keys or payloads differ from what was sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_topics_creates_partitioned_topics_and_leaves_existing_ones_alone() {
    let cfg = config();
    let plain = unique("ensure");
    let compacted = unique("ensure-compacted");
    let specs = [
        TopicSpec::new(plain.clone(), 4),
        TopicSpec {
            name: compacted.clone(),
            partitions: 2,
            compacted: true,
        },
    ];
    ensure_topics(&cfg, &specs).await.unwrap();
    assert_eq!(partition_count(&cfg.brokers, &plain), 4);
    assert_eq!(partition_count(&cfg.brokers, &compacted), 2);

    // Again, and with a different partition count: existing topics are not an error, nor changed.
    ensure_topics(&cfg, &specs).await.unwrap();
    ensure_topics(&cfg, &[TopicSpec::new(plain.clone(), 8)])
        .await
        .unwrap();
    assert_eq!(partition_count(&cfg.brokers, &plain), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_land_on_the_murmur2_partition_and_are_read_exactly_once() {
    let cfg = config();
    let topic = fresh_topic(&cfg, "keyed", 4).await;
    let producer = KafkaProducer::new(&cfg).unwrap();
    let sent = records(1_000);

    // One `send` per record, all in flight together; each reports where it was written.
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (key, payload) in sent.clone() {
        let (producer, topic) = (producer.clone(), topic.clone());
        tasks.spawn(async move {
            let at = producer.send(&topic, &key, &payload).await;
            (key, at)
        });
    }
    let mut offsets = BTreeSet::new();
    while let Some(joined) = tasks.join_next().await {
        let (key, at) = joined.unwrap();
        let (partition, offset) = at.unwrap();
        assert_eq!(
            partition,
            partition_for(&key, 4),
            "{} written to the wrong partition",
            String::from_utf8_lossy(&key)
        );
        assert!(
            offsets.insert((partition, offset)),
            "two records at {partition}@{offset}"
        );
    }
    let produce_time = started.elapsed();
    assert_eq!(producer.stats().in_flight, 0);

    let consumer = KafkaConsumer::new(&cfg, &unique("keyed-group"), &[&topic]).unwrap();
    let started = Instant::now();
    let got = read(&consumer, sent.len()).await;
    let consume_time = started.elapsed();
    assert_exactly_once(&got, &sent, 4);
    for r in &got {
        assert!(
            offsets.contains(&(r.partition, r.offset)),
            "{r:?} not reported by send"
        );
    }
    assert!(read_for(&consumer, Duration::from_secs(1)).await.is_empty());
    eprintln!(
        "informal: 1000 concurrent sends in {produce_time:?}; read 1000 (incl. group join) in \
         {consume_time:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_of_a_group_split_the_partitions_and_read_everything_once() {
    let cfg = config();
    let topic = fresh_topic(&cfg, "split", 4).await;
    let group = unique("split-group");
    let a = KafkaConsumer::new(&cfg, &group, &[&topic]).unwrap();
    let b = KafkaConsumer::new(&cfg, &group, &[&topic]).unwrap();

    // Both members own disjoint, non-empty shares of the 4 partitions before anything is sent.
    poll_both_until(&a, &b, "a split assignment", |a, b, got_a, got_b| {
        assert!(got_a.is_empty() && got_b.is_empty());
        let (pa, pb) = (a.assignment().unwrap(), b.assignment().unwrap());
        let union: BTreeSet<_> = pa.iter().chain(&pb).collect();
        !pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == 4 && union.len() == 4
    })
    .await;

    let producer = KafkaProducer::new(&cfg).unwrap();
    let sent = records(1_000);
    let started = Instant::now();
    producer.send_batch(&topic, &sent).await.unwrap();
    let produce_time = started.elapsed();

    let (got_a, got_b) = poll_both_until(&a, &b, "1000 records", |_, _, got_a, got_b| {
        got_a.len() + got_b.len() >= 1_000
    })
    .await;
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "one member read everything"
    );
    let own_a: BTreeSet<i32> = a.assignment().unwrap().iter().map(|(_, p)| *p).collect();
    assert!(got_a.iter().all(|r| own_a.contains(&r.partition)));
    assert!(got_b.iter().all(|r| !own_a.contains(&r.partition)));
    let all: Vec<Received> = got_a.into_iter().chain(got_b).collect();
    assert_exactly_once(&all, &sent, 4);
    eprintln!("informal: send_batch of 1000 records in {produce_time:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_resumes_after_the_committed_offsets_without_loss_or_repeats() {
    let cfg = config();
    let topic = fresh_topic(&cfg, "commit", 4).await;
    let group = unique("commit-group");
    let sent = records(100);
    KafkaProducer::new(&cfg)
        .unwrap()
        .send_batch(&topic, &sent)
        .await
        .unwrap();

    // The first member reads all 100 but finishes only the first 50 it received: per partition
    // that is a prefix, so committing each partition's highest finished offset covers exactly them.
    let first = KafkaConsumer::new(&cfg, &group, &[&topic]).unwrap();
    let got = read(&first, 100).await;
    assert_exactly_once(&got, &sent, 4);
    let (done, rest) = got.split_at(50);
    let done_offsets: Vec<(String, i32, i64)> = done
        .iter()
        .map(|r| (r.topic.clone(), r.partition, r.offset))
        .collect();
    first.commit(&done_offsets).unwrap();
    // The commit thread sends it in the background; its outcome shows in the stats.
    let start = Instant::now();
    while first.stats().commits_ok == 0 && first.stats().commits_failed == 0 {
        assert!(
            start.elapsed() < PATIENCE,
            "commit not sent: {:?}",
            first.stats()
        );
        let more = first
            .poll_batch(10, Duration::from_millis(100))
            .await
            .unwrap();
        assert!(more.is_empty(), "read again: {more:?}");
    }
    let stats = first.stats();
    assert_eq!(
        (stats.commits_ok, stats.commits_failed),
        (1, 0),
        "{stats:?}"
    );
    assert_eq!(stats.commits_pending, 0);
    first.close().await.unwrap();

    // The next member gets exactly the 50 unfinished records.
    let second = KafkaConsumer::new(&cfg, &group, &[&topic]).unwrap();
    let resumed = read(&second, 50).await;
    let expected: Vec<(Vec<u8>, Vec<u8>)> = rest
        .iter()
        .map(|r| (r.key.clone().unwrap(), r.payload.clone()))
        .collect();
    assert_exactly_once(&resumed, &expected, 4);
    assert!(read_for(&second, Duration::from_secs(1)).await.is_empty());

    // A synchronous commit of everything, then a third member has nothing left to read.
    let all: Vec<(String, i32, i64)> = resumed
        .iter()
        .map(|r| (r.topic.clone(), r.partition, r.offset))
        .collect();
    second.commit_sync(&all).await.unwrap();
    assert_eq!(second.stats().commits_ok, 1);
    drop(second); // Leaves the group in the background.
    let third = KafkaConsumer::new(&cfg, &group, &[&topic]).unwrap();
    wait_assigned(&third, 4).await;
    let leftover = read_for(&third, Duration::from_secs(2)).await;
    assert!(
        leftover.is_empty(),
        "read again after a full commit: {leftover:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_member_makes_the_first_revoke_then_take_fewer_partitions() {
    let cfg = config();
    let topic = fresh_topic(&cfg, "rebalance", 4).await;
    let group = unique("rebalance-group");
    let first = KafkaConsumer::new(&cfg, &group, &[&topic]).unwrap();
    wait_assigned(&first, 4).await;
    let events = first.take_rebalance_events();
    assert!(
        matches!(events.last(), Some(RebalanceEvent::Assigned(p)) if p.len() == 4),
        "{events:?}"
    );

    let second = KafkaConsumer::new(&cfg, &group, &[&topic]).unwrap();
    poll_both_until(&first, &second, "a rebalance", |a, b, _, _| {
        let (pa, pb) = (a.assignment().unwrap(), b.assignment().unwrap());
        !pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == 4
    })
    .await;
    let events = first.take_rebalance_events();
    let revoked = events
        .iter()
        .position(|e| matches!(e, RebalanceEvent::Revoked(p) if !p.is_empty()))
        .unwrap_or_else(|| panic!("no revocation: {events:?}"));
    let now = first.assignment().unwrap();
    assert!(
        events[revoked..]
            .iter()
            .any(|e| matches!(e, RebalanceEvent::Assigned(p) if p.len() < 4 && *p == now)),
        "no smaller assignment after the revocation: {events:?}"
    );
    assert!(
        first.take_rebalance_events().is_empty(),
        "events are taken once"
    );
    let mut seen = second.take_rebalance_events();
    seen.retain(|e| matches!(e, RebalanceEvent::Assigned(p) if !p.is_empty()));
    assert!(!seen.is_empty(), "the second member saw no assignment");
}

#[test]
fn murmur2_matches_kafkas_published_vectors() {
    // Apache Kafka, clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java,
    // testMurmur2.
    let cases: [(&[u8], i32); 6] = [
        (b"21", -973_932_308),
        (b"foobar", -790_332_482),
        (b"a-little-bit-long-string", -985_981_536),
        (b"a-little-bit-longer-string", -1_486_304_829),
        (
            b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58_897_971,
        ),
        (b"abc", 479_470_107),
    ];
    for (key, hash) in cases {
        assert_eq!(
            murmur2(key),
            hash,
            "murmur2({})",
            String::from_utf8_lossy(key)
        );
    }
}

#[test]
fn partition_for_is_the_positive_hash_modulo_the_partition_count() {
    // toPositive(murmur2(key)) % n, as Kafka's BuiltInPartitioner.partitionForKey.
    for key in [
        &b"21"[..],
        b"foobar",
        b"abc",
        b"",
        b"a-little-bit-long-string",
    ] {
        let positive = murmur2(key) & 0x7fff_ffff;
        for n in 1..=64 {
            let p = partition_for(key, n);
            assert_eq!(p, positive % n);
            assert!((0..n).contains(&p));
        }
    }
    // "foobar" hashes to -790332482: 0x7fffffff & that is 1357151166, which is 16 mod 50.
    assert_eq!(partition_for(b"foobar", 50), 16);
    assert_eq!(
        partition_for(b"foobar", 0),
        0,
        "a count below 1 is taken as 1"
    );
}
