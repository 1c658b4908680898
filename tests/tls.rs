//! TLS end to end: syslog over TLS (RFC 5425) with client certificates, the API over HTTPS,
//! and webhooks delivered to an HTTPS receiver that a private CA vouches for.

use std::io::{Read, Write};
use std::sync::Arc;

use crate::response::{brute_force, Receiver, SECRET};
use crate::support::*;

fn client_config(pki: &TestPki, with_cert: bool) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in vigil::tls::load_certs(&pki.ca).unwrap() {
        roots.add(c).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(if with_cert {
        builder
            .with_client_auth_cert(
                vigil::tls::load_certs(&pki.client_cert).unwrap(),
                vigil::tls::load_key(&pki.client_key).unwrap(),
            )
            .unwrap()
    } else {
        builder.with_no_client_auth()
    })
}

/// Connects with TLS and writes `data`; Err when the handshake (or the write) fails.
fn send_tls(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    data: &[u8],
) -> std::io::Result<()> {
    let tcp = std::net::TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let conn = rustls::ClientConnection::new(config, "localhost".try_into().unwrap())
        .map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(data)?;
    tls.flush()?;
    // The server's verdict on our certificate comes with its first read under TLS 1.3.
    tls.conn.send_close_notify();
    tls.flush()?;
    let mut rest = Vec::new();
    match tls.read_to_end(&mut rest) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(()),
        Err(e) => Err(e),
    }
}

#[test]
fn syslog_over_tls_needs_a_client_certificate_and_correlates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let extra = format!(
        "tls_listen = \"127.0.0.1:0\"\ntls_cert = {:?}\ntls_key = {:?}\ntls_client_ca = {:?}\n\
         tls_handshake_timeout_secs = 1\n",
        pki.cert, pki.key, pki.ca
    );
    // The [syslog] keys go into the [syslog] table of the generated config.
    let config = write_config(dir.path(), "");
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[syslog]\n",
        &format!("[syslog]\n{extra}"),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let vigil = Vigil::start(&config);
    assert_ne!(vigil.tls.port(), 0, "the TLS listener is bound");

    let mut frames = Vec::new();
    for i in 0..10 {
        let line = failed_password_5424("203.0.113.50", 50_000 + i);
        frames.extend_from_slice(format!("{} ", line.len()).as_bytes());
        frames.extend_from_slice(&line);
    }
    send_tls(vigil.tls, client_config(&pki, true), &frames).unwrap();
    vigil.wait_processed(10);
    vigil.wait_until("the offense", || {
        vigil.get_json("/api/v1/offenses")["total"] == 1
    });
    let offenses = vigil.get_json("/api/v1/offenses");
    let id = offenses["items"][0]["id"].as_str().unwrap().to_owned();
    let detail = vigil.get_json(&format!("/api/v1/offenses/{id}"));
    assert_eq!(detail["events"].as_array().unwrap().len(), 10);
    assert!(detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["observer.id"] == "syslog/tls/127.0.0.1"));

    // Without a client certificate: refused in the handshake, nothing received.
    let refused = send_tls(vigil.tls, client_config(&pki, false), b"5 hello");
    assert!(refused.is_err(), "a client without a certificate got in");
    // Plain TCP to the TLS port, and a client that never starts the handshake.
    let mut plain = std::net::TcpStream::connect(vigil.tls).unwrap();
    plain.write_all(b"17 <13>1 - - - - - - x\n").unwrap();
    let _idle = std::net::TcpStream::connect(vigil.tls).unwrap();
    vigil.wait_until("three handshakes refused", || {
        vigil::loadgen::metric_sum(
            &vigil.metrics(),
            "vigil_collector_refused_total{source=\"syslog_tls\",reason=\"tls_handshake\"}",
        ) >= 3
    });
    assert_eq!(
        vigil::loadgen::metric_sum(
            &vigil.metrics(),
            "vigil_collector_received_total{source=\"syslog_tls\"}"
        ),
        10
    );
}

/// GET over HTTPS with a client that trusts `pki`'s CA; (status, body).
fn https_get(
    addr: std::net::SocketAddr,
    pki: &TestPki,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    let conn =
        rustls::ClientConnection::new(client_config(pki, false), "localhost".try_into().unwrap())
            .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_owned();
    (status, body)
}

#[test]
fn the_api_serves_https_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let config = write_config(
        dir.path(),
        &format!("tls_cert = {:?}\ntls_key = {:?}\n", pki.cert, pki.key),
    );
    let vigil = Vigil::start(&config);
    assert_eq!(https_get(vigil.api, &pki, "/healthz", None).0, 200);
    assert_eq!(https_get(vigil.api, &pki, "/api/v1/offenses", None).0, 401);
    let (status, body) = https_get(vigil.api, &pki, "/api/v1/offenses", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    // Plain HTTP on the TLS port gets no answer.
    let mut plain = std::net::TcpStream::connect(vigil.api).unwrap();
    plain
        .set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = plain.read_to_end(&mut out);
    assert!(
        !String::from_utf8_lossy(&out).contains("200 OK"),
        "plain HTTP answered"
    );
}

#[test]
fn webhooks_reach_an_https_receiver_of_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vigil::tls::load_certs(&pki.cert).unwrap(),
        vigil::tls::load_key(&pki.key).unwrap(),
    )
    .unwrap();
    let receiver = Receiver::start_with(
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        0,
        Some(Arc::new(tls)),
    );
    let url = format!("https://localhost:{}/hooks/vigil", receiver.addr.port());
    let hooks = format!(
        "[response]\nmin_magnitude = 1\n\
         [[response.webhooks]]\nname = \"soar\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n\
         allow_private = true\nretry_initial_ms = 100\nca_file = {:?}\n",
        pki.ca
    );
    let vigil = Vigil::start(&write_config(dir.path(), &hooks));
    brute_force(&vigil, "203.0.113.92");
    vigil.wait_until("the block delivered over https", || {
        receiver
            .seen()
            .iter()
            .any(|(_, kind, _)| kind == "ip.blocked")
    });
    assert!(receiver.seen().iter().all(|(_, _, ok)| *ok));
    assert_eq!(vigil.metric("vigil_webhook_failures_total"), 0);
}
