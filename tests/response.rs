//! Automatic blocking end to end: offenses decide blocks through the guards, firewalls pull
//! the list with their own token, internal addresses are never blocked, dry run blocks nothing.

use crate::support::*;

const FIREWALL: &str = "firewall-pull-token-0123456789";

pub(crate) fn brute_force(v: &Vigil, ip: &str) {
    let lines: Vec<Vec<u8>> = (0..12)
        .map(|i| failed_password_3164(ip, 40_000 + i))
        .collect();
    v.send_udp(&lines);
}

fn blocklist(v: &Vigil, token: &str) -> (u16, String) {
    v.get("/api/v1/blocklist.txt", Some(token))
}

fn decisions(v: &Vigil) -> Vec<(String, String)> {
    let d = v.get_json("/api/v1/response/decisions");
    let mut out: Vec<(String, String)> = d["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["value"].as_str().unwrap().to_owned(),
                x["decision"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn offenses_block_outside_attackers_and_never_internal_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("[response]\nmin_magnitude = 1\nblocklist_token = \"{FIREWALL}\"\n"),
    );
    let vigil = Vigil::start(&config);
    brute_force(&vigil, "203.0.113.77");
    brute_force(&vigil, "10.0.0.5");
    vigil.wait_until("two decisions", || decisions(&vigil).len() == 2);
    assert_eq!(
        decisions(&vigil),
        vec![
            ("10.0.0.5".to_owned(), "internal".to_owned()),
            ("203.0.113.77".to_owned(), "blocked".to_owned()),
        ]
    );
    vigil.wait_until("the block in the live list", || {
        blocklist(&vigil, FIREWALL).1 == "203.0.113.77\n"
    });
    // More failures from the blocked address grow its offense but decide nothing again.
    brute_force(&vigil, "203.0.113.77");
    vigil.wait_processed(36);
    assert_eq!(decisions(&vigil).len(), 2);
    // The firewall's token reads the list and nothing else.
    assert_eq!(blocklist(&vigil, FIREWALL).0, 200);
    assert_eq!(vigil.get("/api/v1/offenses", Some(FIREWALL)).0, 401);
    assert_eq!(blocklist(&vigil, "wrong-token-0123456789").0, 401);
    assert_eq!(vigil.metric("vigil_response_decisions_total"), 2);
}

#[test]
fn dry_run_records_the_decision_and_blocks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[response]\nmin_magnitude = 1\ndry_run = true\nallow_list = [\"198.51.100.0/24\"]\n\
             blocklist_token = \"{FIREWALL}\"\n"
        ),
    );
    let vigil = Vigil::start(&config);
    brute_force(&vigil, "203.0.113.78");
    brute_force(&vigil, "198.51.100.9");
    vigil.wait_until("two decisions", || decisions(&vigil).len() == 2);
    assert_eq!(
        decisions(&vigil),
        vec![
            ("198.51.100.9".to_owned(), "allow_listed".to_owned()),
            ("203.0.113.78".to_owned(), "dry_run".to_owned()),
        ]
    );
    assert_eq!(blocklist(&vigil, FIREWALL), (200, String::new()));
}

/// A webhook receiver: verifies each delivery with `vigil::webhook::verify`, records it, and
/// answers 503 to the first `fail_blocks` deliveries of `ip.blocked`.
pub(crate) struct Receiver {
    pub(crate) addr: std::net::SocketAddr,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, String, bool)>>>,
}

pub(crate) const SECRET: &str = "webhook-secret-0123456789";

impl Receiver {
    pub(crate) fn start(listener: std::net::TcpListener, fail_blocks: usize) -> Receiver {
        Self::start_with(listener, fail_blocks, None)
    }

    /// [`Receiver::start`], over TLS with `tls` when given.
    pub(crate) fn start_with(
        listener: std::net::TcpListener,
        fail_blocks: usize,
        tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    ) -> Receiver {
        use std::io::{BufRead, Read, Write};
        let addr = listener.local_addr().unwrap();
        let seen: std::sync::Arc<std::sync::Mutex<Vec<(String, String, bool)>>> =
            Default::default();
        let log = seen.clone();
        std::thread::spawn(move || {
            let mut blocks = 0usize;
            for conn in listener.incoming() {
                let Ok(tcp) = conn else { continue };
                let mut conn: Box<dyn ReadWrite> = match &tls {
                    Some(cfg) => Box::new(rustls::StreamOwned::new(
                        rustls::ServerConnection::new(cfg.clone()).unwrap(),
                        tcp,
                    )),
                    None => Box::new(tcp),
                };
                let mut reader = std::io::BufReader::new(&mut conn);
                let mut headers = std::collections::HashMap::new();
                let mut line = String::new();
                reader.read_line(&mut line).unwrap_or(0);
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.trim_end().split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                    }
                }
                let len: usize = headers
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; len];
                reader.read_exact(&mut body).unwrap_or(());
                let h = |k: &str| headers.get(k).cloned().unwrap_or_default();
                let ok = vigil::webhook::verify(
                    SECRET,
                    &h("webhook-id"),
                    &h("webhook-timestamp"),
                    &h("webhook-signature"),
                    &body,
                    chrono::Utc::now(),
                )
                .is_ok();
                let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let kind = event["type"].as_str().unwrap_or("").to_owned();
                let status = if kind == "ip.blocked" && blocks < fail_blocks {
                    blocks += 1;
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                log.lock().unwrap().push((h("webhook-id"), kind, ok));
                drop(reader);
                let _ = conn.write_all(
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .as_bytes(),
                );
                let _ = conn.flush();
            }
        });
        Receiver { addr, seen }
    }

    pub(crate) fn seen(&self) -> Vec<(String, String, bool)> {
        self.seen.lock().unwrap().clone()
    }
}

pub(crate) trait ReadWrite: std::io::Read + std::io::Write + Send {}
impl<T: std::io::Read + std::io::Write + Send> ReadWrite for T {}

pub(crate) fn webhook_config(url: &str) -> String {
    format!(
        "[response]\nmin_magnitude = 1\n\
         [[response.webhooks]]\nname = \"soar\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n\
         allow_private = true\nretry_initial_ms = 100\n"
    )
}

#[test]
fn webhooks_are_signed_retried_and_one_block_decision_blocks_once() {
    let receiver = Receiver::start(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), 4);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{}/hooks/vigil", receiver.addr);
    let vigil = Vigil::start(&write_config(dir.path(), &webhook_config(&url)));
    brute_force(&vigil, "203.0.113.90");
    vigil.wait_until("the block delivered after four failures", || {
        receiver
            .seen()
            .iter()
            .filter(|(_, kind, _)| kind == "ip.blocked")
            .count()
            >= 5
    });
    let seen = receiver.seen();
    assert!(
        seen.iter().all(|(_, _, ok)| *ok),
        "every delivery verifies: {seen:?}"
    );
    assert!(seen.iter().any(|(_, kind, _)| kind == "offense.created"));
    // Five deliveries of one decision, one id: a receiver keyed on webhook-id blocks once.
    let block_ids: std::collections::BTreeSet<&String> = seen
        .iter()
        .filter(|(_, kind, _)| kind == "ip.blocked")
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(block_ids.len(), 1);
    assert!(vigil.metric("vigil_webhook_failures_total") >= 4);
}

#[test]
fn deliveries_pending_at_a_restart_are_all_delivered() {
    // A port with nothing listening yet: every attempt fails.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = port.local_addr().unwrap();
    drop(port);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &webhook_config(&format!("http://{addr}/hook")));
    let mut vigil = Vigil::start(&config);
    brute_force(&vigil, "203.0.113.91");
    vigil.wait_until("failed attempts", || {
        vigil.metric("vigil_webhook_failures_total") >= 2
    });
    vigil.stop();
    let receiver = Receiver::start(std::net::TcpListener::bind(addr).unwrap(), 0);
    let vigil = Vigil::start(&config);
    vigil.wait_until("the pending deliveries", || {
        let seen = receiver.seen();
        seen.iter().any(|(_, k, _)| k == "offense.created")
            && seen.iter().any(|(_, k, _)| k == "ip.blocked")
    });
    assert!(receiver.seen().iter().all(|(_, _, ok)| *ok));
    drop(vigil);
}

/// An analyst works an offense: assigns it, notes it, closes it with a reason; a viewer may
/// only read; every change is in the audit trail with who made it.
#[test]
fn analysts_work_offenses_and_every_change_is_audited() {
    use sha2::Digest;
    let sha = |t: &str| hex::encode(sha2::Sha256::digest(t.as_bytes()));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[[api.tokens]]\nname = \"alice\"\nrole = \"analyst\"\nsha256 = \"{}\"\n\
             [[api.tokens]]\nname = \"victor\"\nrole = \"viewer\"\nsha256 = \"{}\"\n",
            sha("alice-token-0123456789"),
            sha("victor-token-0123456789")
        ),
    );
    let vigil = Vigil::start(&config);
    brute_force(&vigil, "203.0.113.95");
    vigil.wait_until("the offense", || {
        vigil.get_json("/api/v1/offenses")["total"] == 1
    });
    let id = vigil.get_json("/api/v1/offenses")["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Filters: by index value and by contributing rule.
    let by = |q: &str| vigil.get_json(&format!("/api/v1/offenses?{q}"))["total"].clone();
    assert_eq!(by("index_value=203.0.113.95"), 1);
    assert_eq!(by("index_value=198.51.100.1"), 0);
    assert_eq!(by("rule=ssh_brute_force"), 1);
    assert_eq!(by("rule=sudo_failures"), 0);
    let path = format!("/api/v1/offenses/{id}");
    let alice = "alice-token-0123456789";
    let victor = "victor-token-0123456789";
    // The viewer reads but may not change anything.
    assert_eq!(vigil.request_as(victor, "GET", &path, None).0, 200);
    let (s, _) = vigil.request_as(victor, "PATCH", &path, Some(r#"{"assignee":"victor"}"#));
    assert_eq!(s, 403);
    // Closing needs a reason; unknown fields are refused.
    let (s, _) = vigil.request_as(alice, "PATCH", &path, Some(r#"{"status":"closed"}"#));
    assert_eq!(s, 400);
    let (s, _) = vigil.request_as(alice, "PATCH", &path, Some(r#"{"colour":"red"}"#));
    assert_eq!(s, 400);
    let (s, body) = vigil.request_as(
        alice,
        "PATCH",
        &path,
        Some(r#"{"assignee":"alice","follow_up":true}"#),
    );
    assert_eq!(s, 200, "{body}");
    let (s, _) = vigil.request_as(
        alice,
        "POST",
        &format!("{path}/notes"),
        Some(r#"{"text":"scanner from a hosting range; blocked at the edge"}"#),
    );
    assert_eq!(s, 201);
    let (s, body) = vigil.request_as(
        alice,
        "PATCH",
        &path,
        Some(r#"{"status":"closed","closing_reason":"remediated"}"#),
    );
    assert_eq!(s, 200, "{body}");
    let detail = vigil.get_json(&path);
    assert_eq!(detail["status"], "closed");
    assert_eq!(detail["closing_reason"], "remediated");
    assert_eq!(detail["assignee"], "alice");
    assert_eq!(detail["notes"][0]["author"], "alice");
    // The timeline tells the story in order: events and rule matches, creation, the analyst.
    let timeline: Vec<(String, String)> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["kind"].as_str().unwrap().to_owned(),
                t["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let kinds: Vec<&str> = timeline.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"event"), "{timeline:?}");
    assert!(
        timeline.contains(&(
            "rule".into(),
            "SSH brute force from one source first matched".into()
        )),
        "{timeline:?}"
    );
    let tail: Vec<&String> = timeline
        .iter()
        .rev()
        .take(4)
        .rev()
        .map(|(_, t)| t)
        .collect();
    assert_eq!(
        tail,
        [
            "assigned to alice by alice",
            "follow-up flag changed by alice",
            "note by alice",
            "closed: remediated by alice"
        ],
        "{timeline:?}"
    );
    let times: Vec<&str> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["at"].as_str().unwrap())
        .collect();
    let parsed: Vec<chrono::DateTime<chrono::Utc>> =
        times.iter().map(|t| t.parse().unwrap()).collect();
    assert!(parsed.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // The trail: admin only.
    assert_eq!(vigil.request_as(alice, "GET", "/api/v1/audit", None).0, 403);
    let audit = vigil.get_json("/api/v1/audit");
    let actions: Vec<(String, String)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["actor"].as_str().unwrap().to_owned(),
                a["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            ("alice".to_owned(), "offense.close".to_owned()),
            ("alice".to_owned(), "offense.note".to_owned()),
            ("alice".to_owned(), "offense.follow_up".to_owned()),
            ("alice".to_owned(), "offense.assign".to_owned()),
        ]
    );
    // Later failures from the address never reopen the closed offense (they open a new one,
    // or join it silently if the rule suppresses re-alerts).
    brute_force(&vigil, "203.0.113.95");
    vigil.wait_processed(24);
    assert_eq!(vigil.get_json(&path)["status"], "closed");
}

/// Guessing tokens: after ten failures a client is refused for a minute, even with the right
/// token; health stays open.
#[test]
fn failed_token_checks_lock_the_client_out() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&write_config(dir.path(), ""));
    for _ in 0..10 {
        assert_eq!(
            vigil.get("/api/v1/offenses", Some("guess-0123456789")).0,
            401
        );
    }
    assert_eq!(vigil.get("/api/v1/offenses", Some(TOKEN)).0, 429);
    assert_eq!(vigil.get("/healthz", None).0, 200);
}

/// Blocks end when their TTL passes: the list drops the address, the audit records the
/// unblock, and `ip.unblocked` is delivered.
#[test]
fn blocks_expire_and_emit_unblock_events() {
    let receiver = Receiver::start(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), 0);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{}/hook", receiver.addr);
    let config = write_config(
        dir.path(),
        &webhook_config(&url).replace(
            "min_magnitude = 1\n",
            &format!("min_magnitude = 1\nblock_ttl_secs = 2\nblocklist_token = \"{FIREWALL}\"\n"),
        ),
    );
    let vigil = Vigil::start(&config);
    brute_force(&vigil, "203.0.113.97");
    vigil.wait_until("the block", || {
        blocklist(&vigil, FIREWALL).1 == "203.0.113.97\n"
    });
    vigil.wait_until("the unblock", || {
        decisions(&vigil)
            .iter()
            .any(|(ip, d)| ip == "203.0.113.97" && d == "unblocked")
    });
    assert_eq!(blocklist(&vigil, FIREWALL).1, "");
    vigil.wait_until("ip.unblocked delivered", || {
        receiver
            .seen()
            .iter()
            .any(|(_, k, ok)| k == "ip.unblocked" && *ok)
    });
}
