//! Nothing accepted is lost: a burst above what the engine takes waits in the spool (TCP
//! senders held back when it is full) and drains; ten `kill -9` at random moments under load
//! leave every acknowledged record in exactly one offense, and SQLite consistent.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::support::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_tcp_burst_over_capacity_waits_in_the_spool_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    // A small memory queue and a small spool: the burst fills both, and TCP must wait.
    let config = write_config(
        dir.path(),
        "[bus]\nqueue_capacity = 256\nspool_max_bytes = 1048576\nspool_segment_bytes = 65536\n",
    );
    // Windows are not saved here (the crash test below covers that): segments go as soon as
    // their records are stored.
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[rules]\n",
        "[rules]\nstate_save_secs = 0\n",
        1,
    );
    std::fs::write(&config, text).unwrap();
    let vigil = Vigil::start(&config);
    const N: usize = 60_000;
    let lines: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            format!(
                "<38>Jan  1 00:00:00 bastion01 sshd[4242]: Accepted publickey for svc{i} from 198.18.{}.{} port 22 ssh2",
                (i / 250) % 250,
                i % 250
            )
            .into_bytes()
        })
        .collect();
    let started = Instant::now();
    vigil.send_tcp_octet_counted(&lines);
    let sent = started.elapsed();
    vigil.wait_processed(N as u64);
    let drained = started.elapsed();
    eprintln!(
        "informal: {N} records sent over TCP in {:.2} s, all processed after {:.2} s",
        sent.as_secs_f64(),
        drained.as_secs_f64()
    );
    assert_eq!(vigil.metric("vigil_parse_events_total"), N as u64);
    assert_eq!(vigil.metric("vigil_collector_dropped_total"), 0);
    assert!(
        vigil.metric("vigil_spool_full_total") > 0,
        "the spool was full at least once (the burst was over capacity)"
    );
    assert!(vigil.metric("vigil_spool_appended_total") >= N as u64);
    // Drained: at most the segment being written remains.
    vigil.wait_until("the spool drained", || {
        vigil.metric("vigil_spool_bytes") <= 65536 + 4096
    });
}

/// POSTs one batch; Some(status) when an answer came.
fn post_batch(port: u16, body: &str) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(40))).ok()?;
    let req = format!(
        "POST /api/v1/ingest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn ten_kill_9_under_load_lose_no_acknowledged_record_and_double_none() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), "").to_str().unwrap().to_owned();
    // A fixed API port, so the sender finds each new process.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "listen = \"127.0.0.1:0\"\ntoken",
        &format!("listen = \"127.0.0.1:{port}\"\ntoken"),
    );
    std::fs::write(&config, text).unwrap();
    let config = std::path::PathBuf::from(config);
    let mut vigil = Vigil::start(&config);

    // One batch = ten failed logins from one address: an offense of exactly ten events when
    // it is processed once, more if processed twice, none (or a smaller one) if lost.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut unacked = Vec::new();
            let mut k = 0usize;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let ip = format!("198.18.{}.{}", k / 250, k % 250 + 1);
                let body: String = (0..10)
                    .map(|i| {
                        String::from_utf8(failed_password_3164(&ip, 40_000 + i)).unwrap() + "\n"
                    })
                    .collect();
                match post_batch(port, &body) {
                    Some(202) => acked.push(ip),
                    Some(_) | None => {
                        unacked.push(ip);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                k += 1;
            }
            (acked, unacked)
        })
    };
    let mut rng_state = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(port);
    let mut rand_ms = |lo: u64, hi: u64| {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        lo + rng_state % (hi - lo)
    };
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(rand_ms(150, 700)));
        vigil.kill9();
        vigil = Vigil::start(&config);
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (acked, unacked) = sender.join().unwrap();
    assert!(
        acked.len() >= 50,
        "enough load: {} batches acknowledged",
        acked.len()
    );

    // Everything accepted is processed: wait until the offenses stop changing.
    let offenses = |v: &Vigil| -> Vec<serde_json::Value> {
        let mut all = Vec::new();
        let mut offset = 0;
        loop {
            let page = v.get_json(&format!(
                "/api/v1/offenses?rule=ssh_brute_force&limit=500&offset={offset}"
            ));
            let items = page["items"].as_array().unwrap().clone();
            let n = items.len();
            all.extend(items);
            if n < 500 {
                return all;
            }
            offset += 500;
        }
    };
    // Settled: every acknowledged batch has its offense and nothing changed since the last
    // look. A restarted Vigil may spend seconds on one large batch of the backlog, so an
    // unchanged look alone is not the end; past the deadline the checks below say what is
    // missing.
    let mut last = (usize::MAX, u64::MAX);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = offenses(&vigil);
        let events: u64 = now.iter().map(|o| o["event_count"].as_u64().unwrap()).sum();
        let seen: std::collections::HashSet<&str> = now
            .iter()
            .filter_map(|o| o["index_value"].as_str())
            .collect();
        let all_there = acked.iter().all(|ip| seen.contains(ip.as_str()));
        if all_there
            && (now.len(), events) == last
            && vigil.metric("vigil_spool_bytes") < 70_000_000
        {
            break;
        }
        last = (now.len(), events);
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(1500));
    }
    let all = offenses(&vigil);
    let mut by_ip: std::collections::HashMap<String, Vec<u64>> = Default::default();
    for o in &all {
        by_ip
            .entry(o["index_value"].as_str().unwrap().to_owned())
            .or_default()
            .push(o["event_count"].as_u64().unwrap());
    }
    for ip in &acked {
        assert_eq!(
            by_ip.get(ip).map(Vec::as_slice),
            Some(&[10u64][..]),
            "acknowledged batch {ip}: one offense of exactly ten events"
        );
    }
    for ip in &unacked {
        if let Some(counts) = by_ip.get(ip) {
            assert_eq!(counts.len(), 1, "{ip}: one offense at most");
            assert!(counts[0] <= 10, "{ip}: processed at most once ({counts:?})");
        }
    }
    eprintln!(
        "informal: {} batches acknowledged, {} not (killed mid-request); {} offenses",
        acked.len(),
        unacked.len(),
        all.len()
    );
    vigil.stop();
    let db = rusqlite::Connection::open(dir.path().join("data/vigil.db")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}
