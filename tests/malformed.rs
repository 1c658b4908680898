//! Bad input never crashes or hangs the service: each case becomes a dead letter or a counted
//! refusal, and other connections keep working.

use std::io::Write;

use crate::support::*;

#[test]
fn malformed_input_is_kept_or_counted_and_the_service_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let mut vigil = Vigil::start(&config);

    // A healthy connection opened first, used again at the end.
    let mut healthy = vigil.tcp();

    // UDP: binary garbage, PRI out of range, invalid UTF-8, an oversized datagram.
    let garbage: Vec<u8> = (0..200u32)
        .map(|i| (i.wrapping_mul(37) % 256) as u8)
        .collect();
    let bad_pri =
        b"<999>Nov 28 10:00:00 host sshd[1]: Failed password for root from 203.0.113.9 port 1 ssh2"
            .to_vec();
    let mut bad_utf8 = b"<38>Nov 28 10:00:00 host sshd[1]: Failed password for ro".to_vec();
    bad_utf8.extend_from_slice(&[0xc3, 0x28, 0xff, 0xfe]);
    bad_utf8.extend_from_slice(b"t from 203.0.113.9 port 1 ssh2");
    let oversized = vec![b'A'; 20_000];
    let not_syslog = b"GET / HTTP/1.1 this is not syslog at all".to_vec();
    vigil.send_udp(&[
        garbage.clone(),
        not_syslog,
        bad_pri.clone(),
        bad_utf8.clone(),
        oversized,
    ]);

    // TCP, newline framing: the same garbage, then a 100 KB line, then a valid line: the
    // stream resyncs after the oversized line.
    {
        let mut s = vigil.tcp();
        s.write_all(&bad_pri).unwrap();
        s.write_all(b"\n").unwrap();
        s.write_all(&vec![b'x'; 100 * 1024]).unwrap();
        s.write_all(b"\n").unwrap();
        s.write_all(&failed_password_3164("192.0.2.1", 1000))
            .unwrap();
        s.write_all(b"\n").unwrap();
    }
    // TCP, octet counting with a truncated frame at the end of the stream.
    {
        let mut s = vigil.tcp();
        let line = failed_password_3164("192.0.2.2", 1001);
        s.write_all(format!("{} ", line.len()).as_bytes()).unwrap();
        s.write_all(&line).unwrap();
        s.write_all(b"500 <34>1 2026-11-28T10:00:00Z host app - - - trunc")
            .unwrap();
    }
    // TCP, octet counting with a non-numeric length: unrecoverable, the connection is closed.
    {
        let mut s = vigil.tcp();
        s.write_all(b"12 <34>Nov 28 1").unwrap();
        s.write_all(b"x9z garbage that is not a length\n").unwrap();
    }

    // The healthy connection still works after all of that. A record dated far ahead is
    // kept at the time it was received, its own time kept aside, and counted.
    healthy
        .write_all(&[failed_password_3164("192.0.2.3", 1002), b"\n".to_vec()].concat())
        .unwrap();
    healthy
        .write_all(b"<34>1 2099-01-01T00:00:00Z host app - - - from the future\n")
        .unwrap();
    healthy.flush().unwrap();

    vigil.wait_until("every bad record accounted for", || {
        let dead = vigil.get_json("/api/v1/dead-letters?limit=500");
        let reasons: Vec<String> = dead["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["reason"].as_str().unwrap().to_owned())
            .collect();
        [
            "not_syslog",
            "pri",
            "invalid_utf8",
            "frame_too_long",
            "bad_octet_count",
        ]
        .iter()
        .all(|r| reasons.iter().any(|x| x == r))
            && vigil.metric("vigil_parse_events_total") >= 4
    });
    assert!(vigil.is_running());

    // Dead letters keep the raw bytes exactly (base64 on the wire).
    let dead = vigil.get_json("/api/v1/dead-letters?reason=invalid_utf8");
    use base64::Engine as _;
    let raws: Vec<Vec<u8>> = dead["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            base64::engine::general_purpose::STANDARD
                .decode(d["raw"].as_str().unwrap())
                .unwrap()
        })
        .collect();
    assert!(raws.contains(&bad_utf8), "{dead}");
    let dead = vigil.get_json("/api/v1/dead-letters?reason=pri");
    assert!(dead["items"][0]["detail"].as_str().unwrap().len() > 3);
    assert_eq!(dead["items"][0]["observer_type"], "syslog");

    // Refusals are counted with their reason.
    let metrics = vigil.metrics();
    for needle in [
        "vigil_collector_refused_total{source=\"syslog_udp\",reason=\"frame_too_long\"} 1",
        "vigil_collector_refused_total{source=\"syslog_tcp\",reason=\"frame_too_long\"} 1",
        "vigil_parse_dead_letters_total{source=\"syslog_udp\",reason=\"pri\"} 1",
        "vigil_parse_dead_letters_total{source=\"syslog_udp\",reason=\"invalid_utf8\"} 2",
        "vigil_parse_dead_letters_total{source=\"syslog_udp\",reason=\"not_syslog\"} 1",
        "vigil_parse_timestamps_clamped_total 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    assert!(metrics.contains("reason=\"bad_octet_count\""), "{metrics}");

    // Still healthy, and shuts down cleanly.
    assert_eq!(vigil.get("/healthz", None).0, 200);
    vigil.stop();
}

#[test]
fn connections_over_the_limit_are_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    // write_config sets max_connections = 16.
    let vigil = Vigil::start(&config);
    let held: Vec<_> = (0..16).map(|_| vigil.tcp()).collect();
    // Make sure all 16 are accepted before the 17th arrives.
    for (i, mut s) in held.iter().enumerate() {
        s.write_all(
            &[
                failed_password_3164("192.0.2.9", 2000 + i as u16),
                b"\n".to_vec(),
            ]
            .concat(),
        )
        .unwrap();
    }
    vigil.wait_processed(16);
    let extra = vigil.tcp();
    vigil.wait_until("the 17th connection refused", || {
        vigil.metrics().contains(
            "vigil_collector_refused_total{source=\"syslog_tcp\",reason=\"max_connections\"} 1",
        )
    });
    drop(extra);
    drop(held);
}

#[test]
fn a_silent_connection_is_closed_after_the_idle_timeout_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    // write_config sets idle_timeout_secs = 30; this test needs a short one.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("idle_timeout_secs = 30", "idle_timeout_secs = 1");
    std::fs::write(&config, text).unwrap();
    let vigil = Vigil::start(&config);
    let mut silent = vigil.tcp();
    vigil.wait_until("the idle connection refused", || {
        vigil.metrics().contains(
            "vigil_collector_refused_total{source=\"syslog_tcp\",reason=\"idle_timeout\"} 1",
        )
    });
    // The server closed it: reading gives end of stream (the timeout only guards a hang).
    silent
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 1];
    use std::io::Read;
    assert_eq!(silent.read(&mut buf).unwrap(), 0);
}
