//! The scaled-out mode end to end, against the real services the test command starts
//! (`scripts/services.sh`): syslog → collector → Kafka → correlation → ClickHouse → API.

use crate::support::*;

fn kafka() -> String {
    std::env::var("VIGIL_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:19092".to_owned())
}

fn clickhouse_url() -> String {
    std::env::var("VIGIL_TEST_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:18123".into())
}

/// Fails (never skips) when a service is down.
fn require_services() {
    let k = kafka();
    assert!(
        std::net::TcpStream::connect(&k).is_ok(),
        "no Kafka broker at {k}: run scripts/services.sh start (or set VIGIL_TEST_KAFKA)"
    );
    let ch = clickhouse_url();
    let addr = ch.trim_start_matches("http://").to_owned();
    assert!(
        std::net::TcpStream::connect(&addr).is_ok(),
        "no ClickHouse at {ch}: run scripts/services.sh start (or set VIGIL_TEST_CLICKHOUSE_URL)"
    );
}

/// Config text for one node of a deployment named `name` (its topics and database).
fn scaled_config(name: &str, role: &str) -> String {
    format!(
        "[bus]\nkind = \"kafka\"\nrole = \"{role}\"\ntopic_prefix = \"{name}\"\npartitions = 4\n\
         [bus.kafka]\nbrokers = \"{kafka}\"\nlinger_ms = 1\n\
         [store]\nkind = \"clickhouse\"\n\
         [store.clickhouse]\nurl = \"{ch}\"\ndatabase = \"{name}\"\nbatch_max_wait_ms = 200\n",
        kafka = kafka(),
        ch = clickhouse_url(),
    )
}

fn unique(what: &str) -> String {
    format!("{what}_{:08x}", rand::random::<u32>())
}

#[test]
fn syslog_through_kafka_and_clickhouse_becomes_an_offense_in_the_api() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("vigil_e2e");
    let config = write_config(dir.path(), &scaled_config(&name, "all"));
    let vigil = Vigil::start(&config);

    // Twelve failures from one address, one record that is not syslog.
    let attack: Vec<Vec<u8>> = (0..12)
        .map(|i| failed_password_3164("203.0.113.77", 45000 + i))
        .collect();
    vigil.send_udp(&attack);
    vigil.send_udp(&[b"<999>not syslog".to_vec()]);

    vigil.wait_until("the offense in ClickHouse, through the API", || {
        let o = vigil.get_json("/api/v1/offenses");
        o["total"] == 1 && o["items"][0]["event_count"] == 12
    });
    let o = &vigil.get_json("/api/v1/offenses")["items"][0];
    assert_eq!(o["rule"], "ssh_brute_force");
    assert_eq!(o["index_value"], "203.0.113.77");
    let detail = vigil.get_json(&format!("/api/v1/offenses/{}", o["id"].as_str().unwrap()));
    assert_eq!(detail["events"].as_array().unwrap().len(), 12);
    assert!(detail["rules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["rule"] == "ssh_brute_force"));

    vigil.wait_until("the dead letter in ClickHouse", || {
        vigil.get_json("/api/v1/dead-letters")["total"] == 1
    });
    let dead = &vigil.get_json("/api/v1/dead-letters")["items"][0];
    assert_eq!(dead["reason"], "pri");

    // Every event reached the events table.
    vigil.wait_until("13 records stored", || {
        vigil.metric("vigil_store_events_total") >= 12
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let count = rt.block_on(async {
        let ch = vigil::store::clickhouse::ClickHouseStore::connect(
            &vigil::store::clickhouse::ClickHouseConfig {
                url: clickhouse_url(),
                database: name.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        ch.count_events().await.unwrap()
    });
    assert_eq!(count, 12);
}
