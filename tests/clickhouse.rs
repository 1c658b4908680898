//! The ClickHouse store against a real server (`VIGIL_TEST_CLICKHOUSE_URL`, default
//! `http://127.0.0.1:18123`; `scripts/services.sh start` starts one). Each test works in its
//! own database `vigil_test_<random>`, dropped at the end (also when the test fails). A server
//! that does not answer fails the test: missing is a failure, never a skip.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use vigil::store::clickhouse::{
    AuditEntry, ChError, ClickHouseConfig, ClickHouseStore, RetentionDays, LATEST, MIGRATIONS,
    TABLES,
};
use vigil::store::{DeadLetter, Offense, OffenseFilter, OffenseRule, OffenseStatus, Store};
use vigil::Event;

use crate::support::{
    clickhouse_admin as admin, clickhouse_url, require_clickhouse as require_server, TestDb,
};

fn config(retention_days: RetentionDays) -> (ClickHouseConfig, TestDb) {
    let name = format!("vigil_test_{:016x}", rand::random::<u64>());
    let cfg = ClickHouseConfig {
        url: clickhouse_url(),
        database: name.clone(),
        // Small, so a 1,000-event batch goes out as several INSERTs.
        batch_rows: 300,
        retention_days,
        ..ClickHouseConfig::default()
    };
    (cfg, TestDb { name })
}

async fn fresh(retention_days: RetentionDays) -> (ClickHouseStore, TestDb) {
    require_server().await;
    let (cfg, db) = config(retention_days);
    let store = ClickHouseStore::connect(&cfg).await.unwrap();
    (store, db)
}

/// Stops background merges of `table`, so reads must deduplicate by themselves (FINAL,
/// LIMIT BY) rather than by luck of a merge having run.
async fn stop_merges(db: &TestDb, table: &str) {
    admin()
        .query("SYSTEM STOP MERGES ?.?")
        .bind(::clickhouse::sql::Identifier(&db.name))
        .bind(::clickhouse::sql::Identifier(table))
        .execute()
        .await
        .unwrap();
}

/// Rows physically stored in `table`, duplicates included.
async fn stored_rows(db: &TestDb, table: &str) -> u64 {
    admin()
        .with_database(db.name.clone())
        .query("SELECT count() FROM ?")
        .bind(::clickhouse::sql::Identifier(table))
        .fetch_one::<u64>()
        .await
        .unwrap()
}

/// Runs `OPTIMIZE … FINAL` on each partition until the table holds `rows` rows. A background
/// merge that started first makes `OPTIMIZE` a silent no-op, so one pass is not enough; the
/// five-minute bound is a liveness bound for a loaded machine, not a speed assertion.
async fn merge_partitions_until(db: &TestDb, table: &str, partitions: &[u32], rows: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        for partition in partitions {
            admin()
                .with_database(db.name.clone())
                .query("OPTIMIZE TABLE ? PARTITION ? FINAL")
                .bind(::clickhouse::sql::Identifier(table))
                .bind(*partition)
                .execute()
                .await
                .unwrap();
        }
        let stored = stored_rows(db, table).await;
        if stored == rows || std::time::Instant::now() > deadline {
            assert_eq!(stored, rows, "{table} after merging");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

fn t(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).unwrap()
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(0, 0, 0).unwrap().and_utc()
}

const BASE_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// Event `i`: fields varied, IPv4 and IPv6, raw bytes that are not UTF-8 for some.
fn event(i: usize, ts: DateTime<Utc>) -> Event {
    let mut e = Event::new(ts, ts + Duration::milliseconds(3));
    e.sequence = Some(i as u64);
    e.observer_type = Some(
        if i.is_multiple_of(2) {
            "syslog"
        } else {
            "netflow"
        }
        .into(),
    );
    e.observer_id = Some(format!("syslog/udp/10.0.0.{}", i % 5).into());
    e.dataset = (!i.is_multiple_of(3))
        .then(|| "openssh".to_owned())
        .map(Into::into);
    e.category = Some("authentication".into());
    e.outcome = Some(
        if i.is_multiple_of(2) {
            "failure"
        } else {
            "success"
        }
        .into(),
    );
    e.action = Some("ssh_login".into());
    e.source_ip = Some(if i.is_multiple_of(4) {
        format!("2001:db8::{:x}", i % 10).parse().unwrap()
    } else {
        format!("198.51.100.{}", i % 25).parse().unwrap()
    });
    e.source_port = Some(40_000 + (i % 1000) as u16);
    e.destination_ip = i.is_multiple_of(7).then(|| "203.0.113.9".parse().unwrap());
    e.destination_port = Some(22);
    e.user_name = i
        .is_multiple_of(5)
        .then(|| format!("user{i}"))
        .map(Into::into);
    // A text with a column of its own may also be empty (kept apart from absent).
    e.host_name = Some(if i.is_multiple_of(11) { "" } else { "gw01" }.into());
    e.message = Some(format!("Failed password for user{i}").into());
    e.network_transport = i
        .is_multiple_of(2)
        .then(|| "tcp".to_owned())
        .map(Into::into);
    e.network_bytes = Some(i as u64 * 10);
    e.rare_mut().source_geo_country_iso_code = Some("DE".into());
    e.rare_mut().source_geo_country_name = Some("Germany".into());
    e.extra.insert("sshd.method".into(), "password".into());
    e.raw = if i.is_multiple_of(3) {
        vec![
            b'<',
            b'3',
            b'4',
            b'>',
            0xff,
            0xfe,
            0x00,
            b'x',
            (i % 256) as u8,
        ]
    } else {
        format!("<34>Jan  1 00:00:00 gw01 sshd[1]: Failed password for user{i}").into_bytes()
    };
    e
}

/// 1,000 events over three days, every timestamp different.
fn thousand_events() -> Vec<Event> {
    (0..1000)
        .map(|i| {
            let ts = t(BASE_MS)
                + Duration::days((i % 3) as i64)
                + Duration::milliseconds(i as i64 * 997);
            event(i, ts)
        })
        .collect()
}

#[tokio::test]
async fn clickhouse_migrate_twice_is_a_no_op_and_creates_every_table() {
    let (store, db) = fresh(RetentionDays::default()).await;
    let client = admin().with_database(db.name.clone());
    let count_migrations = || async {
        client
            .query("SELECT count() FROM schema_migrations")
            .fetch_one::<u64>()
            .await
            .unwrap()
    };
    assert_eq!(count_migrations().await, u64::from(LATEST));
    assert_eq!(store.schema_version().await.unwrap(), LATEST);

    store.migrate().await.unwrap();
    assert_eq!(
        count_migrations().await,
        u64::from(LATEST),
        "second migrate ran again"
    );

    // Connecting again (another process) changes nothing either.
    let (mut cfg, _) = config(RetentionDays::default());
    cfg.database = db.name.clone();
    ClickHouseStore::connect(&cfg).await.unwrap();
    assert_eq!(count_migrations().await, u64::from(LATEST));

    let mut tables = admin()
        .query("SELECT name FROM system.tables WHERE database = ? ORDER BY name")
        .bind(&db.name)
        .fetch_all::<String>()
        .await
        .unwrap();
    let mut expected: Vec<String> = TABLES.iter().map(|s| s.to_string()).collect();
    tables.sort();
    expected.sort();
    assert_eq!(tables, expected);

    // A database from a newer build is refused.
    client
        .query("INSERT INTO schema_migrations (version, applied) VALUES (?, now())")
        .bind(LATEST + 1)
        .execute()
        .await
        .unwrap();
    let err = store.migrate().await.err();
    assert!(
        matches!(err, Some(ChError::TooNew { found, supported }) if found == LATEST + 1 && supported == LATEST),
        "{err:?}"
    );

    // Names that are not plain identifiers never reach SQL.
    cfg.database = "vigil`; DROP DATABASE default; --".into();
    assert!(matches!(
        ClickHouseStore::connect(&cfg).await.err(),
        Some(ChError::InvalidName(_))
    ));
}

#[tokio::test]
async fn clickhouse_events_round_trip_and_a_retried_batch_is_not_doubled() {
    let (store, db) = fresh(RetentionDays::default()).await;
    stop_merges(&db, "events").await;
    let events = thousand_events();

    let started = std::time::Instant::now();
    assert_eq!(
        store.insert_events("events/0/0", &events).await.unwrap(),
        1000
    );
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "informal: 1,000 events in {secs:.3} s ({:.0} rows/s)",
        1000.0 / secs
    );
    assert_eq!(store.count_events().await.unwrap(), 1000);

    // The same batch again (a stage-1 process retried after a crash): still 1,000 visible.
    assert_eq!(
        store.insert_events("events/0/0", &events).await.unwrap(),
        1000
    );
    assert_eq!(store.count_events().await.unwrap(), 1000);

    // Searches see each event once, whole, with its raw bytes exactly.
    let by_time_desc = |mut v: Vec<Event>| {
        v.sort_by_key(|e| std::cmp::Reverse(e.timestamp));
        v
    };
    let v4: IpAddr = "203.0.113.9".parse().unwrap();
    let expected = by_time_desc(
        events
            .iter()
            .filter(|e| e.destination_ip == Some(v4))
            .cloned()
            .collect(),
    );
    assert_eq!(expected.len(), 143);
    let got = store.events_for_ip(v4, 10_000).await.unwrap();
    assert_eq!(got.len(), expected.len());
    assert_eq!(got, expected);
    assert!(got.iter().any(|e| std::str::from_utf8(&e.raw).is_err()));

    let v6: IpAddr = "2001:db8::4".parse().unwrap();
    let expected = by_time_desc(
        events
            .iter()
            .filter(|e| e.source_ip == Some(v6))
            .cloned()
            .collect(),
    );
    assert_eq!(expected.len(), 50);
    assert_eq!(store.events_for_ip(v6, 10_000).await.unwrap(), expected);
    let src4: IpAddr = "198.51.100.7".parse().unwrap();
    let got = store.events_for_ip(src4, 5).await.unwrap();
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|e| e.source_ip == Some(src4)));

    // Another batch is other events, even when they look the same.
    store
        .insert_events("events/0/1000", &events[..10])
        .await
        .unwrap();
    assert_eq!(store.count_events().await.unwrap(), 1010);

    // A merge removes the copies for good: the batch identity is the end of the sorting key.
    admin()
        .query("SYSTEM START MERGES ?.events")
        .bind(::clickhouse::sql::Identifier(&db.name))
        .execute()
        .await
        .unwrap();
    merge_partitions_until(&db, "events", &[20260101, 20260102, 20260103], 1010).await;
    assert_eq!(stored_rows(&db, "events").await, 1010);
    assert_eq!(store.count_events().await.unwrap(), 1010);
    assert_eq!(
        store.events_for_ip(v4, 10_000).await.unwrap().len(),
        143 + 2,
        "exact after the merge too"
    );
}

/// A database an older build made and filled (schema 3: the whole event as JSON in
/// `event_json`, no `event_bin`), then upgraded: its rows read back whole, and the columns
/// migration 4 adds are computed from their JSON on parts written before them, also in the
/// dashboards' query shape (filters on other columns, which ClickHouse may move to PREWHERE).
#[tokio::test]
async fn clickhouse_events_written_as_json_by_older_builds_still_read() {
    require_server().await;
    let (cfg, db) = config(RetentionDays::default());
    let old = admin();
    old.query("CREATE DATABASE ?")
        .bind(::clickhouse::sql::Identifier(&db.name))
        .execute()
        .await
        .unwrap();
    let old = old.with_database(db.name.clone());
    old.query(
        "CREATE TABLE schema_migrations (version UInt32, applied DateTime)
         ENGINE = ReplacingMergeTree ORDER BY version",
    )
    .execute()
    .await
    .unwrap();
    for (i, statements) in MIGRATIONS.iter().take(3).enumerate() {
        for sql in statements.iter() {
            old.query(sql).execute().await.unwrap();
        }
        old.query("INSERT INTO schema_migrations (version, applied) VALUES (?, now())")
            .bind(i as u32 + 1)
            .execute()
            .await
            .unwrap();
    }
    let mut e = event(1, t(BASE_MS));
    e.extra.insert("flow.exporter".into(), "192.0.2.1".into());
    e.network_packets = Some(7);
    e.rare_mut().destination_geo_country_iso_code = Some("FR".into());
    let mut json_event = e.clone();
    json_event.raw = Vec::new();
    let json = serde_json::to_string(&json_event).unwrap();
    old.query(
        "INSERT INTO events (day, ts_ms, observer_type, source_ip, destination_ip,
             batch_id, row_in_batch, event_json, raw, message)
         VALUES (toDate('2026-01-01'), ?, ?, unhex(?), unhex(?), 'legacy', 0, ?, ?, ?)",
    )
    .bind(BASE_MS)
    .bind("netflow")
    .bind("00000000000000000000ffffc6336401")
    .bind("00000000000000000000ffffcb007109")
    .bind(&json)
    .bind(std::str::from_utf8(&e.raw).unwrap())
    .bind(e.message.as_deref().unwrap())
    .execute()
    .await
    .unwrap();
    // The upgrade: this build connects and migrates the database it finds.
    let store = ClickHouseStore::connect(&cfg).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), LATEST);
    let got = store
        .events_for_ip("198.51.100.1".parse().unwrap(), 10)
        .await
        .unwrap();
    assert_eq!(got, vec![e.clone()]);

    #[derive(clickhouse::Row, serde::Deserialize, Debug, PartialEq)]
    struct Columns {
        network_bytes: u64,
        network_packets: u64,
        network_transport: String,
        flow_exporter: String,
        source_country: String,
        source_country_name: String,
        destination_country: String,
    }
    let columns = admin()
        .with_database(db.name.clone())
        .query("SELECT ?fields FROM events WHERE batch_id = 'legacy'")
        .fetch_one::<Columns>()
        .await
        .unwrap();
    // As the flow dashboard asks (FINAL, filters on the day and the source kind).
    let (bytes, exporters) = admin()
        .with_database(db.name.clone())
        .query(
            "SELECT sum(network_bytes), uniqExact(flow_exporter) FROM events FINAL
             WHERE day >= toDate('2026-01-01') AND day <= toDate('2026-01-02')
               AND observer_type IN ('netflow', 'ipfix', 'sflow')",
        )
        .fetch_one::<(u64, u64)>()
        .await
        .unwrap();
    assert_eq!((bytes, exporters), (10, 1));
    assert_eq!(
        columns,
        Columns {
            network_bytes: 10,
            network_packets: 7,
            network_transport: String::new(),
            flow_exporter: "192.0.2.1".into(),
            source_country: "DE".into(),
            source_country_name: "Germany".into(),
            destination_country: "FR".into(),
        }
    );
}

fn offense(
    id: &str,
    magnitude: u8,
    last_seen_ms: i64,
    status: OffenseStatus,
    index: &str,
) -> Offense {
    Offense {
        id: id.into(),
        rule: "ssh_brute_force".into(),
        title: "SSH brute force".into(),
        index_field: "source.ip".into(),
        index_value: index.into(),
        status,
        magnitude,
        severity: 7,
        relevance: 6,
        credibility: 8,
        magnitude_reasons: vec!["severity 7: level high".into(), "relevance 6".into()],
        level: Some("high".into()),
        tags: vec!["attack.t1110.001".into()],
        first_seen: t(BASE_MS),
        last_seen: t(last_seen_ms),
        event_count: 10,
        stored_events: 10,
        window_start: t(BASE_MS),
        created_at: t(BASE_MS + 5),
        updated_at: t(last_seen_ms + 5),
        assignee: None,
        closing_reason: None,
        closed_at: (status == OffenseStatus::Closed).then(|| t(last_seen_ms + 60_000)),
        follow_up: false,
        asset_criticality: 0,
        asset_reason: None,
    }
}

#[tokio::test]
async fn clickhouse_offenses_keep_the_newest_version_and_list_like_the_sqlite_store() {
    let (store, db) = fresh(RetentionDays::default()).await;
    stop_merges(&db, "offenses").await;
    let sqlite = Store::open_in_memory().unwrap();

    // Ties in magnitude and in last_seen, so the id tie-break matters too.
    let mut v1 = vec![
        offense(
            "o1",
            7,
            BASE_MS + 10_000,
            OffenseStatus::Open,
            "203.0.113.7",
        ),
        offense(
            "o2",
            7,
            BASE_MS + 10_000,
            OffenseStatus::Open,
            "203.0.113.8",
        ),
        offense(
            "o3",
            9,
            BASE_MS + 5_000,
            OffenseStatus::Closed,
            "203.0.113.9",
        ),
        offense(
            "o4",
            3,
            BASE_MS + 50_000,
            OffenseStatus::Open,
            "2001:db8::1",
        ),
        offense(
            "o5",
            7,
            BASE_MS + 20_000,
            OffenseStatus::Open,
            "203.0.113.10",
        ),
        offense(
            "a6",
            7,
            BASE_MS + 10_000,
            OffenseStatus::Closed,
            "203.0.113.11",
        ),
        offense(
            "o7",
            5,
            BASE_MS + 1_000,
            OffenseStatus::Open,
            "203.0.113.12",
        ),
        offense("o8", 0, BASE_MS, OffenseStatus::Open, "203.0.113.13"),
    ];
    v1[1].assignee = Some("alice".into());
    v1[1].follow_up = true;
    v1[1].asset_criticality = 8;
    v1[1].asset_reason = Some("10.0.0.5 in core-banking".into());
    v1[1].level = None;
    for o in &v1 {
        sqlite.put_offense(o).unwrap();
    }
    let rows: Vec<(Offense, u64)> = v1.iter().map(|o| (o.clone(), 1)).collect();
    store.put_offenses(&rows).await.unwrap();
    assert_eq!(
        store.get_offense("o2").await.unwrap().as_ref(),
        Some(&v1[1])
    );

    // Version 2 of o1: more events, closed.
    let mut o1v2 = v1[0].clone();
    o1v2.status = OffenseStatus::Closed;
    o1v2.magnitude = 8;
    o1v2.event_count = 25;
    o1v2.stored_events = 20;
    o1v2.last_seen = t(BASE_MS + 30_000);
    o1v2.updated_at = t(BASE_MS + 40_000);
    o1v2.closed_at = Some(t(BASE_MS + 40_000));
    o1v2.closing_reason = Some("blocked at the edge".into());
    o1v2.magnitude_reasons.push("25 events".into());
    sqlite.put_offense(&o1v2).unwrap();
    store.put_offenses(&[(o1v2.clone(), 2)]).await.unwrap();
    // A retried write of version 1 arrives late: harmless.
    store.put_offenses(&[(v1[0].clone(), 1)]).await.unwrap();
    store.put_offenses(&[(o1v2.clone(), 2)]).await.unwrap();
    assert_eq!(store.get_offense("o1").await.unwrap(), Some(o1v2.clone()));
    assert_eq!(store.get_offense("missing").await.unwrap(), None);
    assert_eq!(
        stored_rows(&db, "offenses").await,
        8 + 3,
        "old versions are still stored"
    );

    let since = t(BASE_MS + 10_000);
    let filters = [
        OffenseFilter {
            limit: 100,
            ..Default::default()
        },
        OffenseFilter {
            status: Some(OffenseStatus::Open),
            limit: 100,
            ..Default::default()
        },
        OffenseFilter {
            status: Some(OffenseStatus::Closed),
            limit: 100,
            ..Default::default()
        },
        OffenseFilter {
            min_magnitude: Some(7),
            limit: 100,
            ..Default::default()
        },
        OffenseFilter {
            since: Some(since),
            limit: 100,
            ..Default::default()
        },
        OffenseFilter {
            limit: 3,
            offset: 2,
            ..Default::default()
        },
        OffenseFilter {
            status: Some(OffenseStatus::Open),
            min_magnitude: Some(5),
            since: Some(since),
            limit: 2,
            offset: 1,
            ..Default::default()
        },
        OffenseFilter {
            min_magnitude: Some(10),
            limit: 100,
            ..Default::default()
        },
        OffenseFilter {
            index_value: Some("203.0.113.12".into()),
            limit: 100,
            ..Default::default()
        },
        OffenseFilter {
            rule: Some("ssh_brute_force".into()),
            limit: 100,
            ..Default::default()
        },
    ];
    for f in &filters {
        let want = sqlite.list_offenses(f).unwrap();
        let got = store.list_offenses(f).await.unwrap();
        assert_eq!(got.1, want.1, "total for {f:?}");
        assert_eq!(
            got.0.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(),
            want.0.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(),
            "order for {f:?}"
        );
        assert_eq!(got.0, want.0, "rows for {f:?}");
    }
    // The filters are not vacuous: o1 is closed now, and counted so.
    let (open, open_total) = store.list_offenses(&filters[1]).await.unwrap();
    assert_eq!(open_total, 5);
    assert!(open.iter().all(|o| o.id != "o1"));
    let (closed, _) = store.list_offenses(&filters[2]).await.unwrap();
    let closed_ids: Vec<&str> = closed.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(closed_ids, ["o3", "o1", "a6"]);

    // Only open offenses are found; o1 (closed in its newest version) no longer is.
    assert_eq!(
        store
            .find_open_offense("source.ip", "203.0.113.7")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .find_open_offense("source.ip", "203.0.113.9")
            .await
            .unwrap(),
        None
    );
    let found = store
        .find_open_offense("source.ip", "203.0.113.8")
        .await
        .unwrap();
    assert_eq!(found.as_ref().map(|o| o.id.as_str()), Some("o2"));
    assert_eq!(
        found,
        sqlite
            .find_open_offense("source.ip", "203.0.113.8")
            .unwrap()
    );
    // A new offense for o1's address is found once it exists.
    let reopened = offense(
        "o9",
        4,
        BASE_MS + 90_000,
        OffenseStatus::Open,
        "203.0.113.7",
    );
    store.put_offenses(&[(reopened.clone(), 1)]).await.unwrap();
    assert_eq!(
        store
            .find_open_offense("source.ip", "203.0.113.7")
            .await
            .unwrap(),
        Some(reopened)
    );
    assert_eq!(
        store
            .find_open_offense("user.name", "203.0.113.8")
            .await
            .unwrap(),
        None
    );
}

fn rule(name: &str, first_seen_ms: i64, detections: u64) -> OffenseRule {
    OffenseRule {
        rule: name.into(),
        title: format!("Rule {name}"),
        rule_id: Some(format!("id-{name}")),
        author: (name != "b").then(|| "Florian Roth".to_owned()),
        level: Some("high".into()),
        severity: 7,
        relevance: 6,
        credibility: 8,
        detections,
        events: detections * 10,
        first_seen: t(first_seen_ms),
        last_seen: t(first_seen_ms + 1_000),
    }
}

#[tokio::test]
async fn clickhouse_offense_events_and_rules_round_trip_and_retries_are_not_doubled() {
    let (store, db) = fresh(RetentionDays::default()).await;
    stop_merges(&db, "offense_events").await;
    stop_merges(&db, "offense_rules").await;
    let events: Vec<Arc<Event>> = thousand_events()
        .into_iter()
        .take(8)
        .map(Arc::new)
        .collect();
    let plain = |v: &[Arc<Event>]| v.iter().map(|e| e.as_ref().clone()).collect::<Vec<_>>();

    store
        .add_offense_events("o1", 0, &events[..5])
        .await
        .unwrap();
    store
        .add_offense_events("o1", 0, &events[..5])
        .await
        .unwrap(); // retried
    store
        .add_offense_events("o2", 0, &events[5..6])
        .await
        .unwrap();
    let got = store.offense_events("o1", 100).await.unwrap();
    assert_eq!(got, plain(&events[..5]));
    assert!(got.iter().any(|e| std::str::from_utf8(&e.raw).is_err()));

    store
        .add_offense_events("o1", 5, &events[5..])
        .await
        .unwrap();
    store
        .add_offense_events("o1", 5, &events[5..])
        .await
        .unwrap(); // retried
    assert_eq!(
        store.offense_events("o1", 100).await.unwrap(),
        plain(&events)
    );
    assert_eq!(stored_rows(&db, "offense_events").await, 2 * 8 + 1);
    assert_eq!(
        store.offense_events("o1", 3).await.unwrap(),
        plain(&events[..3])
    );
    assert_eq!(
        store.offense_events("o2", 100).await.unwrap(),
        plain(&events[5..6])
    );
    assert!(store.offense_events("o3", 100).await.unwrap().is_empty());

    // Rules: "b" contributed first, so it lists first.
    let v1 = vec![
        ("o1".to_owned(), rule("a", BASE_MS + 5_000, 1), 1),
        ("o1".to_owned(), rule("b", BASE_MS, 1), 1),
        ("o2".to_owned(), rule("a", BASE_MS, 4), 1),
    ];
    store.put_offense_rules(&v1).await.unwrap();
    store.put_offense_rules(&v1).await.unwrap(); // retried
    assert_eq!(
        store.offense_rules("o1").await.unwrap(),
        vec![rule("b", BASE_MS, 1), rule("a", BASE_MS + 5_000, 1)]
    );
    // Rule "a" detects again: version 2 replaces version 1; a late version 1 changes nothing.
    store
        .put_offense_rules(&[("o1".to_owned(), rule("a", BASE_MS + 5_000, 3), 2)])
        .await
        .unwrap();
    store.put_offense_rules(&v1[..1]).await.unwrap();
    assert_eq!(
        store.offense_rules("o1").await.unwrap(),
        vec![rule("b", BASE_MS, 1), rule("a", BASE_MS + 5_000, 3)]
    );
    assert_eq!(
        store.offense_rules("o2").await.unwrap(),
        vec![rule("a", BASE_MS, 4)]
    );
    assert!(store.offense_rules("o3").await.unwrap().is_empty());
    assert_eq!(stored_rows(&db, "offense_rules").await, 3 + 3 + 1 + 1);
}

fn letter(received_ms: i64, reason: &str, raw: &[u8]) -> DeadLetter {
    DeadLetter {
        id: 0,
        received_at: t(received_ms),
        observer_type: "syslog".into(),
        observer_id: "syslog/udp/127.0.0.1".into(),
        peer: (reason != "frame_too_long").then(|| "127.0.0.1:5514".to_owned()),
        reason: reason.into(),
        detail: format!("{reason} detail"),
        raw: raw.to_vec(),
    }
}

#[tokio::test]
async fn clickhouse_dead_letters_keep_raw_bytes_exactly_and_filter_by_reason() {
    let (store, db) = fresh(RetentionDays::default()).await;
    stop_merges(&db, "dead_letters").await;
    let letters = vec![
        letter(BASE_MS, "pri", b"<999>bad pri"),
        letter(
            BASE_MS + 1,
            "invalid_utf8",
            &[0xff, 0xfe, 0x00, b'a', 0xc3, 0x28],
        ),
        letter(BASE_MS + 2, "pri", &[0x00, 0x00, 0x00]),
        letter(BASE_MS + 3, "frame_too_long", &[b'x'; 10_000]),
        letter(BASE_MS + 4, "pri", b""),
    ];
    assert_eq!(
        store.insert_dead_letters("dl/0/0", &letters).await.unwrap(),
        5
    );
    store.insert_dead_letters("dl/0/0", &letters).await.unwrap(); // retried

    assert_eq!(stored_rows(&db, "dead_letters").await, 10);
    let (all, total) = store.list_dead_letters(None, 100, 0).await.unwrap();
    assert_eq!(total, 5);
    // Newest first; everything but the id as written, raw bytes exactly.
    let without_id = |v: &[DeadLetter]| {
        v.iter()
            .map(|d| DeadLetter { id: 0, ..d.clone() })
            .collect::<Vec<_>>()
    };
    let mut newest_first = letters.clone();
    newest_first.reverse();
    assert_eq!(without_id(&all), newest_first);
    let mut ids: Vec<i64> = all.iter().map(|d| d.id).collect();
    assert!(ids.iter().all(|&id| id > 0));
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "ids are unique");

    let (pri, pri_total) = store.list_dead_letters(Some("pri"), 100, 0).await.unwrap();
    assert_eq!(pri_total, 3);
    assert_eq!(
        without_id(&pri),
        vec![letters[4].clone(), letters[2].clone(), letters[0].clone()]
    );
    let (none, none_total) = store.list_dead_letters(Some("nope"), 100, 0).await.unwrap();
    assert_eq!((none.len(), none_total), (0, 0));

    // Paging; ids are stable from one read to the next.
    let (page, page_total) = store.list_dead_letters(None, 2, 1).await.unwrap();
    assert_eq!(page_total, 5);
    assert_eq!(page, all[1..3].to_vec());
}

#[tokio::test]
async fn clickhouse_retention_drops_old_partitions_and_closed_offenses_only() {
    let retention = RetentionDays {
        events: 30,
        dead_letters: 7,
        offenses_closed: 90,
        audit: 365,
    };
    let (store, _db) = fresh(retention).await;
    let today = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
    let day = |ago: u64| midnight(today - chrono::Days::new(ago));

    // Events: 40 and 31 days old go; 30, 29 and 0 days old stay.
    let mut n = 0;
    for (ago, count) in [(40, 3), (31, 4), (30, 5), (29, 6), (0, 7)] {
        let batch: Vec<Event> = (0..count)
            .map(|i| event(n + i, day(ago) + Duration::hours(i as i64 + 1)))
            .collect();
        n += count;
        store
            .insert_events(&format!("e/{ago}"), &batch)
            .await
            .unwrap();
    }
    // Dead letters: 8 days old go; 7 and 0 stay.
    for (ago, count) in [(8, 2), (7, 3), (0, 1)] {
        let batch: Vec<DeadLetter> = (0..count)
            .map(|i| letter(day(ago).timestamp_millis() + i, "pri", &[0xff, i as u8]))
            .collect();
        store
            .insert_dead_letters(&format!("d/{ago}"), &batch)
            .await
            .unwrap();
    }
    // Audit: 400 days old goes; 10 days old stays.
    let entry = |ago: u64| AuditEntry {
        ts: day(ago) + Duration::hours(12),
        actor: "alice".into(),
        action: "offense.close".into(),
        target: "o1".into(),
        detail: format!("{ago} days ago"),
    };
    store
        .insert_audit(&[entry(400), entry(400), entry(10)])
        .await
        .unwrap();

    // Offenses: closed 100 days ago goes (with its rules and events); closed 10 days ago,
    // open, and closed-long-ago-but-reopened stay.
    let closed_at = |o: &mut Offense, ago: u64| {
        o.status = OffenseStatus::Closed;
        o.closed_at = Some(day(ago));
    };
    let mut old = offense("old", 5, BASE_MS, OffenseStatus::Open, "203.0.113.1");
    closed_at(&mut old, 100);
    let mut recent = offense("recent", 5, BASE_MS, OffenseStatus::Open, "203.0.113.2");
    closed_at(&mut recent, 10);
    let open = offense("open", 5, BASE_MS, OffenseStatus::Open, "203.0.113.3");
    let mut reopened_v1 = offense("reopened", 5, BASE_MS, OffenseStatus::Open, "203.0.113.4");
    closed_at(&mut reopened_v1, 100);
    let reopened_v2 = offense("reopened", 5, BASE_MS, OffenseStatus::Open, "203.0.113.4");
    store
        .put_offenses(&[
            (old.clone(), 1),
            (recent.clone(), 1),
            (open.clone(), 1),
            (reopened_v1, 1),
            (reopened_v2.clone(), 2),
        ])
        .await
        .unwrap();
    let some_events: Vec<Arc<Event>> = (0..3).map(|i| Arc::new(event(i, day(100)))).collect();
    for id in ["old", "recent", "reopened"] {
        store.add_offense_events(id, 0, &some_events).await.unwrap();
        store
            .put_offense_rules(&[(id.to_owned(), rule("a", BASE_MS, 1), 1)])
            .await
            .unwrap();
    }

    let removed = store.apply_retention(today).await.unwrap();
    assert_eq!(removed, (3 + 4) + 2 + 2 + 1);

    assert_eq!(store.count_events().await.unwrap(), 5 + 6 + 7);
    let (letters, total) = store.list_dead_letters(None, 100, 0).await.unwrap();
    assert_eq!(total, 4);
    assert!(letters.iter().all(|d| d.received_at >= day(7)));
    assert!(store
        .audit_on(today - chrono::Days::new(400))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.audit_on(today - chrono::Days::new(10)).await.unwrap(),
        vec![entry(10)]
    );

    assert_eq!(store.get_offense("old").await.unwrap(), None);
    assert!(store.offense_events("old", 100).await.unwrap().is_empty());
    assert!(store.offense_rules("old").await.unwrap().is_empty());
    assert_eq!(store.get_offense("recent").await.unwrap(), Some(recent));
    assert_eq!(store.get_offense("open").await.unwrap(), Some(open));
    assert_eq!(
        store.get_offense("reopened").await.unwrap(),
        Some(reopened_v2)
    );
    for id in ["recent", "reopened"] {
        assert_eq!(store.offense_events(id, 100).await.unwrap().len(), 3);
        assert_eq!(store.offense_rules(id).await.unwrap().len(), 1);
    }

    // Nothing left to remove; retention 0 keeps everything.
    assert_eq!(store.apply_retention(today).await.unwrap(), 0);
    let (mut cfg, _) = config(RetentionDays {
        events: 0,
        dead_letters: 0,
        offenses_closed: 0,
        audit: 0,
    });
    cfg.database = store.database().to_owned();
    let keep_all = ClickHouseStore::connect(&cfg).await.unwrap();
    assert_eq!(
        keep_all
            .apply_retention(today + chrono::Days::new(10_000))
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.count_events().await.unwrap(), 18);
}

/// The event search answers the same on ClickHouse as on the embedded store, for the same
/// events and queries; a re-inserted batch does not show twice.
#[tokio::test]
async fn clickhouse_event_search_matches_the_embedded_store() {
    use vigil::store::events::{EventSearch, EventStore};
    let (store, _db) = fresh(RetentionDays::default()).await;
    let events = thousand_events();
    store.insert_events("events/0/0", &events).await.unwrap();
    store.insert_events("events/0/0", &events).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut embedded = EventStore::open(&dir.path().join("events.db")).unwrap();
    let shared: Vec<_> = events.iter().cloned().map(std::sync::Arc::new).collect();
    embedded.insert(&shared, 1_000_000).unwrap();

    let day = |d: i64| t(BASE_MS) + Duration::days(d);
    let base = EventSearch {
        from: day(0),
        to: day(3),
        limit: 50,
        ..EventSearch::default()
    };
    let queries = [
        ("everything, first page", base.clone()),
        (
            "second page",
            EventSearch {
                offset: 50,
                ..base.clone()
            },
        ),
        (
            "one day, text",
            EventSearch {
                from: day(1),
                to: day(2),
                text: Some("PASSWORD for USER1".into()),
                ..base.clone()
            },
        ),
        (
            "IPv6 source",
            EventSearch {
                source_ip: "2001:db8::4".parse().ok(),
                ..base.clone()
            },
        ),
        (
            "IPv4 destination and outcome",
            EventSearch {
                destination_ip: "203.0.113.9".parse().ok(),
                outcome: Some("failure".into()),
                ..base.clone()
            },
        ),
        (
            "user, dataset, category, host",
            EventSearch {
                user: Some("user35".into()),
                dataset: Some("openssh".into()),
                category: Some("authentication".into()),
                host: Some("gw01".into()),
                ..base.clone()
            },
        ),
        (
            "nothing",
            EventSearch {
                text: Some("no such text".into()),
                ..base.clone()
            },
        ),
    ];
    for (what, q) in queries {
        let (ch, ch_more) = store.search_events(&q).await.unwrap();
        let (sq, sq_more) = embedded.search(&q).unwrap();
        let seqs = |v: &[Event]| v.iter().map(|e| e.sequence.unwrap()).collect::<Vec<_>>();
        assert_eq!(seqs(&ch), seqs(&sq), "{what}");
        assert_eq!(ch_more, sq_more, "{what}");
        assert!(ch == sq, "{what}: the events themselves differ");
        if what != "nothing" {
            assert!(!ch.is_empty(), "{what}: matches something");
        }
    }
}
