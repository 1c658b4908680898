//! The scaled-out mode end to end, against the real services the test command starts
//! (`scripts/services.sh`): syslog → collector → Kafka → correlation → ClickHouse → API.

use crate::support::*;

/// Fails (never skips) when a service is down.
fn require_services() {
    kafka_broker();
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
        kafka = kafka_broker(),
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
    // Offense webhooks leave from the offense stage's outbox.
    let receiver =
        crate::response::Receiver::start(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), 0);
    let hooks = format!(
        "[[response.webhooks]]\nname = \"soar\"\nurl = \"http://{}/hook\"\nsecret = \"{}\"\n\
         allow_private = true\nretry_initial_ms = 100\n",
        receiver.addr,
        crate::response::SECRET
    );
    // Records that are not UTF-8 become events (text replaced, bytes kept): the binary wire
    // carries those bytes exactly to ClickHouse, through the events and detections topics.
    let config = write_config(
        dir.path(),
        &format!(
            "{}{hooks}[parse]\ninvalid_utf8 = \"replace\"\n",
            scaled_config(&name, "all")
        ),
    );
    let vigil = Vigil::start(&config);

    // Twelve failures from one address (one with a byte that is not UTF-8 in it), one record
    // that is not syslog.
    let mut attack: Vec<Vec<u8>> = (0..12)
        .map(|i| failed_password_3164("203.0.113.77", 45000 + i))
        .collect();
    let odd = attack[11]
        .windows(4)
        .position(|w| w == b"root")
        .map(|at| {
            let mut line = attack[11].clone();
            line.splice(at..at + 4, b"r\xe9ot".iter().copied());
            line
        })
        .unwrap();
    attack[11] = odd.clone();
    vigil.send_udp(&attack);
    vigil.send_udp(&[b"<999>not syslog".to_vec()]);

    vigil.wait_until("the offense in ClickHouse, through the API", || {
        let o = vigil.get_json("/api/v1/offenses");
        o["total"] == 1 && o["items"][0]["event_count"] == 12
    });
    let o = &vigil.get_json("/api/v1/offenses")["items"][0];
    assert_eq!(o["rule"], "ssh_brute_force");
    vigil.wait_until("the offense.created webhook", || {
        receiver
            .seen()
            .iter()
            .any(|(_, kind, ok)| kind == "offense.created" && *ok)
    });
    // The events are searchable through the same endpoint as in embedded mode.
    vigil.wait_until("the events, searchable", || {
        let page =
            vigil.get_json("/api/v1/events?q=failed%20PASSWORD&source_ip=203.0.113.77&limit=100");
        page["items"].as_array().map(Vec::len) == Some(12)
    });
    assert_eq!(o["index_value"], "203.0.113.77");
    let detail = vigil.get_json(&format!("/api/v1/offenses/{}", o["id"].as_str().unwrap()));
    assert_eq!(detail["events"].as_array().unwrap().len(), 12);
    assert!(detail["rules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["rule"] == "ssh_brute_force"));
    // Rule match counts reach the metrics in this mode too: the ingest stage counts the
    // single-event rule, the correlate stage the correlation it feeds.
    vigil.wait_until("the rules' match counts", || {
        vigil.metric("vigil_rule_matches_total{rule=\"ssh_failed_login\"}") == 12
            && vigil.metric("vigil_rule_matches_total{rule=\"ssh_brute_force\"}") == 12
    });

    // A flow record through the same path: NetFlow v5 → Kafka → ClickHouse → /api/v1/flows.
    let mut v5 = vec![0, 5, 0, 1];
    v5.extend_from_slice(&3_600_000u32.to_be_bytes()); // uptime
    v5.extend_from_slice(&1_795_003_600u32.to_be_bytes()); // unix secs
    v5.extend_from_slice(&[0; 4]); // nsecs
    v5.extend_from_slice(&[0; 4]); // sequence
    v5.extend_from_slice(&[0; 4]); // engine, sampling
    v5.extend_from_slice(&[10, 0, 0, 5, 198, 51, 100, 9, 0, 0, 0, 0, 0, 1, 0, 2]);
    v5.extend_from_slice(&3u32.to_be_bytes()); // packets
    v5.extend_from_slice(&180u32.to_be_bytes()); // bytes
    v5.extend_from_slice(&3_590_000u32.to_be_bytes()); // first
    v5.extend_from_slice(&3_591_000u32.to_be_bytes()); // last
    v5.extend_from_slice(&40_000u16.to_be_bytes());
    v5.extend_from_slice(&443u16.to_be_bytes());
    v5.extend_from_slice(&[0, 0x02, 6, 0, 0, 0, 0, 0, 24, 24, 0, 0]);
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(&v5, vigil.netflow)
        .unwrap();
    vigil.wait_until("the flow in ClickHouse, through the API", || {
        vigil.get_json("/api/v1/flows?ip=198.51.100.9")["total"] == 1
    });
    let flow = &vigil.get_json("/api/v1/flows?ip=198.51.100.9")["items"][0]["event"];
    assert_eq!(flow["source.ip"], "10.0.0.5");
    assert_eq!(flow["extra"]["tcp.flags"], "SYN");

    vigil.wait_until("the dead letter in ClickHouse", || {
        vigil.get_json("/api/v1/dead-letters")["total"] == 1
    });
    let dead = &vigil.get_json("/api/v1/dead-letters")["items"][0];
    assert_eq!(dead["reason"], "pri");

    // Every event reached the events table.
    vigil.wait_until("13 records stored", || {
        vigil.metric("vigil_store_events_total") >= 13
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let id = o["id"].as_str().unwrap().to_owned();
    let (count, events, offense_events) = rt.block_on(async {
        let ch = vigil::store::clickhouse::ClickHouseStore::connect(
            &vigil::store::clickhouse::ClickHouseConfig {
                url: clickhouse_url(),
                database: name.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        (
            ch.count_events().await.unwrap(),
            ch.events_for_ip("203.0.113.77".parse().unwrap(), 100)
                .await
                .unwrap(),
            ch.offense_events(&id, 100).await.unwrap(),
        )
    });
    assert_eq!(count, 13, "twelve log events and one flow");
    // The line that is not UTF-8, exactly as sent: in the events table and among the
    // offense's events.
    assert_eq!(events.len(), 12);
    assert_eq!(events.iter().filter(|e| e.raw == odd).count(), 1);
    assert_eq!(offense_events.iter().filter(|e| e.raw == odd).count(), 1);
}

/// Rules grouped by source address, by user, and by (user, host).
const CLUSTER_RULES: &str = "title: SSH failure
name: fail
logsource: {product: linux, service: sshd}
detection:
  sel: {event.action: ssh_login, event.outcome: failure}
  condition: sel
---
title: brute force from one address
name: by_source
correlation: {type: event_count, rules: [fail], group-by: [source.ip], timespan: 5m, condition: {gte: 10}}
---
title: one user attacked
name: by_user
correlation: {type: event_count, rules: [fail], group-by: [user.name], timespan: 10m, condition: {gte: 15}}
level: high
---
title: one user on one host
name: by_user_host
correlation: {type: event_count, rules: [fail], group-by: [user.name, host.name], timespan: 10m, condition: {gte: 5}}
";

/// `n` sshd failure lines (RFC 5424) over one day from about 1,000 addresses and 300 users on 20
/// hosts, time-ordered. 100 addresses attack bastion00 (12 failures in 30 s, each guessing its
/// own account) and 30 users are attacked on one host each (16 failures in a minute from 16
/// addresses); the background stays under every threshold.
fn cluster_lines(n: usize) -> Vec<String> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let base = chrono::DateTime::parse_from_rfc3339("2026-11-28T00:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let mut lines: Vec<(i64, String)> = Vec::with_capacity(n);
    let line = |ms: i64, ip: &str, user: &str, host: &str, port: u64| {
        let t = (base + chrono::Duration::milliseconds(ms))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        format!(
            "<38>1 {t} {host} sshd 4242 - - Failed password for {user} from {ip} port {port} ssh2"
        )
    };
    // Bursts: 100 addresses x 12 failures within 30 s; 30 users x 16 failures on one host
    // within 60 s (from 16 different addresses of a /24 used for nothing else).
    for a in 0..100u64 {
        let start = (a as i64) * 800_000;
        for k in 0..12 {
            let ms = start + (k as i64) * 2_500;
            let ip = format!("203.0.{}.{}", a / 250, 1 + a % 250);
            lines.push((
                ms,
                line(ms, &ip, &format!("guess{a}"), "bastion00", 40_000 + k),
            ));
        }
    }
    for u in 0..30u64 {
        let start = 100_000 + (u as i64) * 2_700_000;
        for k in 0..16 {
            let ms = start + (k as i64) * 3_700;
            let ip = format!("198.18.{}.{}", u, 1 + k);
            lines.push((
                ms,
                line(
                    ms,
                    &ip,
                    &format!("victim{u}"),
                    &format!("bastion{:02}", 1 + u % 19),
                    41_000 + k,
                ),
            ));
        }
    }
    // Background: everyone else, thinly over the day.
    let rest = n.saturating_sub(lines.len());
    for i in 0..rest {
        let ms = (i as i64) * 86_000_000 / rest.max(1) as i64;
        let r = rnd();
        let ip = format!("198.51.{}.{}", (r >> 8) % 4, (r >> 16) % 225);
        let user = format!("user{}", (r >> 24) % 300);
        let host = format!("bastion{:02}", (r >> 40) % 20);
        lines.push((ms, line(ms, &ip, &user, &host, 50_000 + (r >> 48) % 10_000)));
    }
    lines.sort_by_key(|(ms, _)| *ms);
    lines.into_iter().map(|(_, l)| l).collect()
}

/// (id, rule, index value, events, per-rule events) of an offense, from the API's JSON or replay.
fn offense_key(o: &serde_json::Value, rules: &serde_json::Value) -> String {
    let mut parts: Vec<String> = rules
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}={}", r["rule"].as_str().unwrap(), r["events"]))
        .collect();
    parts.sort();
    format!(
        "{} {} {} {} [{}]",
        o["id"].as_str().unwrap(),
        o["rule"].as_str().unwrap(),
        o["index_value"].as_str().unwrap(),
        o["event_count"],
        parts.join(" ")
    )
}

/// The two ingest nodes (or one node across a restart) run at their own pace over a day of
/// history: allowed lateness covers their event-time skew (live traffic needs seconds,
/// replayed history a day).
fn with_lateness(cfg: std::path::PathBuf) -> std::path::PathBuf {
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replacen("[rules]\n", "[rules]\nallowed_lateness_secs = 86400\n", 1),
    )
    .unwrap();
    cfg
}

/// A cluster test's input: the rules directory, `n` lines, and the offenses embedded mode
/// makes of them (as [`offense_key`]s, sorted).
struct ClusterCase {
    dir: tempfile::TempDir,
    rules: std::path::PathBuf,
    lines: Vec<String>,
    want: Vec<String>,
}

impl ClusterCase {
    fn new(n: usize) -> ClusterCase {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules");
        std::fs::create_dir_all(&rules).unwrap();
        std::fs::write(rules.join("cluster.yml"), CLUSTER_RULES).unwrap();
        let lines = cluster_lines(n);
        let log = dir.path().join("auth.log");
        std::fs::write(&log, lines.join("\n") + "\n").unwrap();
        let embedded_dir = dir.path().join("embedded");
        std::fs::create_dir_all(&embedded_dir).unwrap();
        let embedded_cfg = with_lateness(write_config_with_rules(&embedded_dir, &rules, ""));
        let config = vigil::config::Config::load(Some(&embedded_cfg)).unwrap();
        let (offenses, _) =
            vigil::replay::replay(&config, std::slice::from_ref(&log), false).unwrap();
        let mut want: Vec<String> = offenses
            .iter()
            .map(|o| {
                let v = serde_json::to_value(o).unwrap();
                offense_key(&v, &v["rules"])
            })
            .collect();
        want.sort();
        assert!(
            want.len() >= 230,
            "100 addresses + their 100 accounts + 30 attacked users: {}",
            want.len()
        );
        ClusterCase {
            dir,
            rules,
            lines,
            want,
        }
    }

    /// The config of node `i` of deployment `name` (its own data directory).
    fn node_config(&self, name: &str, i: usize, role: &str, bus_extra: &str) -> std::path::PathBuf {
        let d = self.dir.path().join(format!("node{i}"));
        std::fs::create_dir_all(&d).unwrap();
        // History replayed flat out lets one correlate node run tens of seconds ahead of the
        // other (live, they keep pace): the offense stage waits longer to put detections back
        // in event-time order.
        let text = scaled_config(name, role).replace(
            "partitions = 4\n",
            &format!("partitions = 4\noffense_reorder_ms = 30000\n{bus_extra}"),
        );
        with_lateness(write_config_with_rules(&d, &self.rules, &text))
    }
}

/// Metric `name` of node `v` for stage `stage` (0 when absent).
fn of_stage(v: &Vigil, name: &str, stage: &str) -> u64 {
    let line = format!("{name}{{stage=\"{stage}\"}} ");
    v.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .and_then(|x| x.trim().parse().ok())
        .unwrap_or(0)
}

/// Partitions of `stage` node `v` owns.
fn owned(v: &Vigil, stage: &str) -> u64 {
    of_stage(v, "vigil_bus_assigned_partitions", stage)
}

/// Waits until every node owns some of the 4 partitions of both stage-2 consumer groups.
fn wait_shared(nodes: &[&Vigil]) {
    for stage in ["correlate", "offenses"] {
        nodes[0].wait_until(
            &format!("the {stage} partitions shared by all nodes"),
            || {
                let owned: Vec<u64> = nodes.iter().map(|c| owned(c, stage)).collect();
                owned.iter().all(|n| *n >= 1) && owned.iter().sum::<u64>() == 4
            },
        );
    }
}

/// Sends `lines` to node `v` over TCP (newline framing).
fn send_tcp(v: &Vigil, lines: &[&String]) {
    use std::io::Write;
    let mut tcp = std::io::BufWriter::new(v.tcp());
    for l in lines {
        tcp.write_all(l.as_bytes()).unwrap();
        tcp.write_all(b"\n").unwrap();
    }
    tcp.flush().unwrap();
}

/// (visible events, duplicate rows not merged yet) in deployment `name`'s events table.
fn stored_events(name: &str) -> (u64, u64) {
    stored_events_at(&clickhouse_url(), name)
}

/// [`stored_events`] on the ClickHouse at `url`.
fn stored_events_at(url: &str, name: &str) -> (u64, u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ch = vigil::store::clickhouse::ClickHouseStore::connect(
            &vigil::store::clickhouse::ClickHouseConfig {
                url: url.to_owned(),
                database: name.to_owned(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        (
            ch.count_events().await.unwrap(),
            ch.duplicate_events().await.unwrap(),
        )
    })
}

/// Waits (a guard against hangs, not a timing assertion) until all `n` events are visible in
/// ClickHouse and the API lists exactly `want`; fails showing the first differences.
fn wait_for_exact(api: &Vigil, name: &str, n: usize, want: &[String]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let mut got: Vec<String> = Vec::new();
    loop {
        let (stored, _) = stored_events(name);
        if stored >= n as u64 {
            got = all_offenses(api);
            if got == want {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gave up: {stored} of {n} events stored; offenses {} (want {}); first differences: {:?}",
            got.len(),
            want.len(),
            got.iter()
                .zip(want)
                .filter(|(a, b)| a != b)
                .take(3)
                .collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(got, want);
    assert_eq!(stored_events(name).0, n as u64, "every event exactly once");
}

#[test]
fn two_ingest_and_two_correlate_nodes_give_exactly_the_embedded_offenses() {
    require_services();
    let case = ClusterCase::new(100_000);
    // Scaled out: two ingest and two correlate processes, 4-partition topics.
    let name = unique("vigil_cluster");
    let node = |i: usize, role: &str| Vigil::start(&case.node_config(&name, i, role, ""));
    let correlate = [node(0, "correlate"), node(1, "correlate")];
    let ingest = [node(2, "ingest"), node(3, "ingest")];
    wait_shared(&[&correlate[0], &correlate[1]]);
    // Each host (log source) sends to one ingest node, as behind a syslog load balancer; the
    // two nodes get about half each, concurrently.
    let host_of = |l: &str| l.split(' ').nth(2).unwrap_or("").to_owned();
    std::thread::scope(|s| {
        for (k, v) in ingest.iter().enumerate() {
            let mine: Vec<&String> = case
                .lines
                .iter()
                .filter(|l| host_of(l).bytes().map(usize::from).sum::<usize>() % 2 == k)
                .collect();
            s.spawn(move || send_tcp(v, &mine));
        }
    });
    wait_for_exact(&correlate[0], &name, case.lines.len(), &case.want);
}

/// A deployment of two stage-2 nodes (static group members `engine-a`, `engine-b`, saving
/// checkpoints every `checkpoint_secs`) and one ingest node; `engine-b` is killed with SIGKILL
/// once `ready` says so, mid-stream, and restarted on its data directory. The offenses must
/// be exactly the embedded ones and every event stored once. Returns (restarted node, the
/// other) for further checks.
fn kill_and_restart(
    case: &ClusterCase,
    name: &str,
    checkpoint_secs: u64,
    ready: impl Fn(&Vigil) -> bool,
) -> (Vigil, Vigil) {
    let engine = |i: usize, id: &str| {
        let cfg = case.node_config(
            name,
            i,
            "correlate",
            &format!("checkpoint_secs = {checkpoint_secs}\n"),
        );
        let text = std::fs::read_to_string(&cfg).unwrap().replace(
            "linger_ms = 1\n",
            &format!("linger_ms = 1\ninstance_id = \"{id}\"\n"),
        );
        std::fs::write(&cfg, text).unwrap();
        cfg
    };
    let configs = [engine(0, "engine-a"), engine(1, "engine-b")];
    let survivor = Vigil::start(&configs[0]);
    let mut victim = Vigil::start(&configs[1]);
    let ingest = Vigil::start(&case.node_config(name, 2, "ingest", ""));
    wait_shared(&[&survivor, &victim]);
    let (first, second) = case.lines.split_at(case.lines.len() / 2);
    send_tcp(&ingest, &first.iter().collect::<Vec<_>>());
    survivor.wait_until("the victim at work", || ready(&victim));
    victim.kill9();
    send_tcp(&ingest, &second.iter().collect::<Vec<_>>());
    // Static membership: restarted, the victim takes its own partitions back.
    let back = Vigil::start(&configs[1]);
    wait_shared(&[&survivor, &back]);
    wait_for_exact(&survivor, name, case.lines.len(), &case.want);
    let (_, duplicates) = stored_events(name);
    eprintln!(
        "after the crash: {} events visible once; {duplicates} duplicate rows not merged yet (deduplicated on read); records skipped as already applied: {}",
        case.lines.len(),
        survivor.metric("vigil_cluster_replayed_total") + back.metric("vigil_cluster_replayed_total"),
    );
    (back, survivor)
}

/// Killed after checkpoints: the restarted node restores its windows from them and goes on.
#[test]
fn a_correlate_node_killed_mid_stream_restores_its_checkpoints_exactly() {
    require_services();
    let case = ClusterCase::new(60_000);
    let name = unique("vigil_crash");
    // Mid-stream: the victim has correlated part of the first half (checkpointed twice, and
    // holds live windows).
    let (back, _) = kill_and_restart(&case, &name, 2, |victim| {
        victim.metric("vigil_cluster_checkpoints_total") >= 2
            && victim.metric("vigil_correlate_keys") > 0
    });
    assert!(
        back.metric("vigil_cluster_partitions_restored_total") >= 1,
        "the restarted node restored its partitions from their checkpoints"
    );
}

/// Killed before any checkpoint, after it published detections: the restarted node
/// processes its partitions again from the start and publishes those detections again; the
/// offense stages drop every copy by its origin, so no offense counts anything twice.
#[test]
fn detections_published_again_after_a_crash_are_applied_once() {
    require_services();
    let case = ClusterCase::new(40_000);
    let name = unique("vigil_replay");
    let (back, survivor) = kill_and_restart(&case, &name, 3600, |victim| {
        victim.metric("vigil_cluster_detections_total") >= 3
    });
    let dropped = |v: &Vigil| of_stage(v, "vigil_cluster_replayed_total", "offenses");
    assert!(
        dropped(&back) + dropped(&survivor) >= 3,
        "the detections published before the crash came again and were dropped"
    );
}

/// ClickHouse killed (SIGKILL) and restarted while a node inserts events and offenses: the
/// stages retry until it is back, nothing is lost, and rows written twice (an insert the
/// server stored but did not acknowledge) are counted and read once.
#[test]
fn clickhouse_killed_during_inserts_loses_nothing() {
    require_services();
    let case = ClusterCase::new(30_000);
    let name = unique("vigil_chkill");
    let ch_dir = case.dir.path().join("clickhouse");
    std::fs::create_dir_all(&ch_dir).unwrap();
    let mut ch = PrivateClickHouse::start(&ch_dir);
    let cfg = case.node_config(&name, 0, "all", "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&clickhouse_url(), &ch.url());
    std::fs::write(&cfg, text).unwrap();
    let vigil = Vigil::start(&cfg);
    let (first, second) = case.lines.split_at(case.lines.len() / 2);
    send_tcp(&vigil, &first.iter().collect::<Vec<_>>());
    vigil.wait_until("inserts under way", || {
        vigil.metric("vigil_store_events_total") >= 2_000
    });
    ch.kill9();
    send_tcp(&vigil, &second.iter().collect::<Vec<_>>());
    // Down until an insert has failed: on a loaded machine the second half can take longer
    // than any fixed pause to reach the store stage.
    vigil.wait_at_most(
        std::time::Duration::from_secs(300),
        "an insert failing while ClickHouse is down",
        || vigil.metric("vigil_store_insert_failures_total") >= 1,
    );
    ch.restart();
    let counts = |name: &str| stored_events_at(&ch.url(), name);
    // ClickHouse 18.16 restarting and the store stage's backoff (up to 5 s between
    // attempts) can take minutes on a loaded 2-core machine.
    vigil.wait_at_most(
        std::time::Duration::from_secs(300),
        "every event in ClickHouse",
        || counts(&name).0 >= case.lines.len() as u64,
    );
    vigil.wait_until("exactly the embedded offenses", || {
        all_offenses(&vigil) == case.want
    });
    let (visible, duplicates) = counts(&name);
    assert_eq!(visible, case.lines.len() as u64, "every event exactly once");
    let retried = vigil.metric("vigil_store_retried_batches_total");
    assert!(
        retried >= 1,
        "inserts failed while ClickHouse was down and were retried"
    );
    eprintln!(
        "ClickHouse killed during inserts: {visible} events visible once, {duplicates} rows written twice (read once), {retried} inserts retried"
    );
}

/// Every offense through the API (paged), as [`offense_key`]s, sorted.
fn all_offenses(v: &Vigil) -> Vec<String> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let page = v.get_json(&format!("/api/v1/offenses?limit=500&offset={offset}"));
        let items = page["items"].as_array().unwrap().clone();
        for o in &items {
            let d = v.get_json(&format!("/api/v1/offenses/{}", o["id"].as_str().unwrap()));
            out.push(offense_key(o, &d["rules"]));
        }
        offset += items.len();
        if items.is_empty() || offset as u64 >= page["total"].as_u64().unwrap() {
            break;
        }
    }
    out.sort();
    out
}
