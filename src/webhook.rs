//! Signed webhooks: offense and blocking events pushed to SOAR tools and firewall managers.
//!
//! Events (`offense.created`, `offense.updated`, `offense.closed`, `ip.blocked`,
//! `ip.unblocked`) are written to a durable outbox
//! in the store in the same transaction as the change they describe, one row per subscribed
//! endpoint; a restart loses nothing. A delivery task sends due rows as `POST` with a JSON body
//! and Standard-Webhooks headers:
//!
//! - `webhook-id`: the delivery's id, the same on every retry (the receiver's idempotency key:
//!   five redeliveries of one block decision must block once);
//! - `webhook-timestamp`: Unix seconds of this attempt;
//! - `webhook-signature`: `v1,` + base64 of HMAC-SHA256(secret, `id.timestamp.body`).
//!
//! Receivers check it with [`verify`] (or the same few lines in their language, README): a
//! wrong signature is forged, a timestamp more than five minutes off is a replay. A 2xx answer
//! delivers; anything else is retried with exponential backoff (`retry_initial_ms`, 5 s,
//! doubling, at most 1 h apart) for [`GIVE_UP_AFTER`] (24 h), then given up and counted. An endpoint that fails
//! [`BREAKER_FAILURES`] times in a row is skipped for [`BREAKER_OPEN`] (circuit breaker), so
//! one dead receiver does not slow the others.
//!
//! Targets are checked against SSRF when the config loads and again before each send (DNS
//! may change): loopback, link-local (cloud metadata `169.254.169.254`), private, unspecified
//! and multicast addresses are refused unless the endpoint sets `allow_private = true`.
//! The checked address is the one connected to (no second DNS lookup a rebinding could
//! change). `https://` targets are verified against the Mozilla roots plus the endpoint's
//! `ca_file` (a private CA); `http://` is for receivers on a trusted segment.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError};
use crate::telemetry::Metrics;

/// Deliveries are given up this long after the event.
pub const GIVE_UP_AFTER: chrono::Duration = chrono::Duration::hours(24);
/// Consecutive failures that open an endpoint's circuit breaker.
pub const BREAKER_FAILURES: u32 = 5;
/// How long an open breaker skips its endpoint.
pub const BREAKER_OPEN: Duration = Duration::from_secs(60);
/// Largest clock difference [`verify`] accepts.
pub const TOLERANCE: chrono::Duration = chrono::Duration::minutes(5);

/// One `[[response.webhooks]]` endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// A name for logs and metrics.
    pub name: String,
    /// `https://host[:port]/path` (or `http://`).
    pub url: String,
    /// CA certificates (PEM) trusted for this endpoint besides the public roots.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// The signing secret (at least 16 characters).
    pub secret: String,
    /// Event types sent (`offense.created`, `offense.updated`, `ip.blocked`); empty: all.
    #[serde(default)]
    pub events: Vec<String>,
    /// Allow loopback, private and link-local targets (a receiver on the same host or LAN).
    #[serde(default)]
    pub allow_private: bool,
    /// First retry delay in milliseconds (doubling each time, at most an hour).
    #[serde(default = "default_retry_ms")]
    pub retry_initial_ms: u64,
}

fn default_retry_ms() -> u64 {
    5000
}

impl WebhookConfig {
    /// Whether this endpoint takes `event`.
    pub fn wants(&self, event: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == event)
    }
}

/// Every event type.
pub const EVENTS: &[&str] = &[
    "offense.created",
    "offense.updated",
    "offense.closed",
    "ip.blocked",
    "ip.unblocked",
];

/// Checks an endpoint's settings (URL form, scheme, SSRF on literal addresses, secret length).
pub fn validate(w: &WebhookConfig) -> Result<(), String> {
    let (host, _) = split_url(&w.url).map_err(|e| format!("webhook {}: {e}", w.name))?;
    if w.secret.len() < 16 {
        return Err(format!(
            "webhook {}: secret must be at least 16 characters",
            w.name
        ));
    }
    if let Some(e) = w.events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
        return Err(format!("webhook {}: unknown event {e:?}", w.name));
    }
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        if !w.allow_private && forbidden(ip) {
            return Err(format!(
                "webhook {}: {ip} is a loopback, private or link-local address (set allow_private = true to allow it)",
                w.name
            ));
        }
    }
    Ok(())
}

/// (host, host:port) of an `http://` or `https://` URL (port 80 or 443 when absent).
fn split_url(url: &str) -> Result<(String, String), String> {
    let (rest, default_port) = if let Some(r) = url.strip_prefix("https://") {
        (r, 443)
    } else if let Some(r) = url.strip_prefix("http://") {
        (r, 80)
    } else {
        return Err("the URL must start with https:// or http://".to_owned());
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err("the URL needs a host (and no user info)".into());
    }
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            if p.parse::<u16>().is_err() && !authority.ends_with(']') {
                return Err(format!("bad port in {authority:?}"));
            }
            h.to_owned()
        }
        _ => authority.to_owned(),
    };
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:{default_port}")
    };
    Ok((host, with_port))
}

/// Addresses a webhook may not reach unless allowed: loopback, private, link-local (cloud
/// metadata), unspecified, multicast, broadcast, and IPv6 unique-local.
pub fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|m| forbidden(IpAddr::V4(m)))
        }
    }
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The `webhook-signature` value for a delivery.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut message = format!("{id}.{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(hmac_sha256(secret.as_bytes(), &message))
    )
}

/// Why [`verify`] refused a delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No `v1` signature matches: forged or tampered.
    #[error("signature does not match")]
    BadSignature,
    /// The timestamp is more than [`TOLERANCE`] away from now: a replay (or a wrong clock).
    #[error("timestamp outside the tolerance")]
    Stale,
    /// The timestamp is not a number.
    #[error("bad timestamp")]
    BadTimestamp,
}

/// What a receiver runs on each delivery: the `webhook-id`, `webhook-timestamp` and
/// `webhook-signature` headers, the raw body, the shared secret and its clock. Accepts any of
/// several space-separated `v1,` signatures (secret rotation); compares in constant time.
pub fn verify(
    secret: &str,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), VerifyError> {
    let ts: i64 = timestamp.parse().map_err(|_| VerifyError::BadTimestamp)?;
    if (now.timestamp() - ts).abs() > TOLERANCE.num_seconds() {
        return Err(VerifyError::Stale);
    }
    let want = sign(secret, id, ts, body);
    let ok = signatures.split(' ').any(|s| {
        s.len() == want.len()
            && s.bytes()
                .zip(want.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if ok {
        Ok(())
    } else {
        Err(VerifyError::BadSignature)
    }
}

/// The delivery id of `event` about `subject` (offense id and version, or a decision) for
/// `endpoint`: stable, so a retried or re-enqueued delivery keeps it.
pub fn delivery_id(endpoint: &str, event: &str, subject: &str) -> String {
    let h = Sha256::digest(format!("{endpoint}\n{event}\n{subject}").as_bytes());
    format!("msg_{}", hex::encode(h.get(..16).unwrap_or_default()))
}

/// One outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Delivery id (`webhook-id`).
    pub id: String,
    /// Endpoint name.
    pub endpoint: String,
    /// Event type.
    pub event: String,
    /// JSON body.
    pub body: String,
    /// Attempts so far.
    pub attempts: u32,
    /// When the event happened.
    pub created_at: DateTime<Utc>,
}

/// Enqueues `event` about `subject` with `body` for every endpoint that wants it (inside the
/// caller's transaction). An id already in the outbox is not enqueued again.
pub fn enqueue(
    store: &Store,
    endpoints: &[WebhookConfig],
    event: &str,
    subject: &str,
    body: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    for w in endpoints.iter().filter(|w| w.wants(event)) {
        let id = delivery_id(&w.name, event, subject);
        let payload = serde_json::json!({
            "type": event,
            "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "data": body,
        });
        store.outbox_put(&id, &w.name, event, &payload.to_string(), now)?;
    }
    Ok(())
}

/// Sends due deliveries until `cancel`: every second, each endpoint's due rows in order.
pub async fn run(
    store_path: std::path::PathBuf,
    endpoints: Vec<WebhookConfig>,
    metrics: Arc<Metrics>,
    cancel: tokio_util::sync::CancellationToken,
) {
    if endpoints.is_empty() {
        return;
    }
    let store = match Store::open(&store_path) {
        Ok(s) => Arc::new(std::sync::Mutex::new(s)),
        Err(e) => {
            tracing::error!(error = %e, "webhooks: cannot open the store; nothing will be delivered");
            return;
        }
    };
    let by_name: HashMap<String, WebhookConfig> =
        endpoints.into_iter().map(|w| (w.name.clone(), w)).collect();
    // Endpoint -> (consecutive failures, open until).
    let mut breakers: HashMap<String, (u32, Option<std::time::Instant>)> = HashMap::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let now = Utc::now();
        let due = {
            let s = store.lock().unwrap_or_else(|p| p.into_inner());
            s.outbox_due(now, 256)
        };
        let due = match due {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "webhooks: reading the outbox failed");
                continue;
            }
        };
        for d in due {
            let Some(w) = by_name.get(&d.endpoint) else {
                continue;
            };
            let breaker = breakers.entry(d.endpoint.clone()).or_insert((0, None));
            if breaker
                .1
                .is_some_and(|until| std::time::Instant::now() < until)
            {
                continue;
            }
            let result = send(w, &d).await;
            let label = [("endpoint", w.name.as_str())];
            let s = store.lock().unwrap_or_else(|p| p.into_inner());
            let outcome = match result {
                Ok(()) => {
                    *breaker = (0, None);
                    metrics
                        .counter(
                            "vigil_webhook_delivered_total",
                            "Webhook deliveries acknowledged (2xx), by endpoint.",
                            &label,
                        )
                        .inc();
                    s.outbox_done(&d.id, now)
                }
                Err(e) => {
                    breaker.0 += 1;
                    if breaker.0 >= BREAKER_FAILURES {
                        breaker.1 = Some(std::time::Instant::now() + BREAKER_OPEN);
                    }
                    metrics
                        .counter(
                            "vigil_webhook_failures_total",
                            "Webhook attempts that failed (retried later), by endpoint.",
                            &label,
                        )
                        .inc();
                    let attempts = d.attempts + 1;
                    if now - d.created_at >= GIVE_UP_AFTER {
                        metrics
                            .counter(
                                "vigil_webhook_given_up_total",
                                "Webhook deliveries given up after 24 h of failures, by endpoint.",
                                &label,
                            )
                            .inc();
                        tracing::error!(endpoint = %w.name, id = %d.id, error = %e, "webhook delivery given up");
                        s.outbox_give_up(&d.id, &e)
                    } else {
                        let first = i64::try_from(w.retry_initial_ms).unwrap_or(5000);
                        let backoff = first
                            .saturating_mul(1i64 << attempts.saturating_sub(1).min(20))
                            .min(3_600_000);
                        s.outbox_retry(
                            &d.id,
                            attempts,
                            now + chrono::Duration::milliseconds(backoff),
                            &e,
                        )
                    }
                }
            };
            if let Err(e) = outcome {
                tracing::warn!(error = %e, "webhooks: updating the outbox failed");
            }
        }
    }
}

/// One HTTP/1.1 request on `io`; the answer's status.
async fn exchange<S>(
    io: S,
    request: axum::http::Request<http_body_util::Full<axum::body::Bytes>>,
) -> Result<axum::http::StatusCode, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| format!("request failed: {e}"))?;
    let driver = tokio::spawn(conn);
    let resp = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request failed: {e}"));
    driver.abort();
    Ok(resp?.status())
}

/// One attempt: SSRF check on the resolved address, then `POST` with the signed headers.
async fn send(w: &WebhookConfig, d: &Delivery) -> Result<(), String> {
    use axum::http::{header, Request};
    use http_body_util::Full;

    let (host, authority) = split_url(&w.url)?;
    // Origin-form request target and a Host header, as servers expect from a client.
    let after_scheme = w.url.split_once("://").map_or("", |x| x.1);
    let path = after_scheme
        .find('/')
        .map_or("/", |i| after_scheme.get(i..).unwrap_or("/"));
    let host_header = after_scheme
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(&authority)
        .await
        .map_err(|e| format!("resolving {authority}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{authority} resolves to nothing"));
    }
    if !w.allow_private {
        if let Some(bad) = addrs.iter().find(|a| forbidden(a.ip())) {
            return Err(format!(
                "{authority} resolves to {bad}, a forbidden address (SSRF guard)"
            ));
        }
    }
    let ts = Utc::now().timestamp();
    let body = d.body.clone().into_bytes();
    let signature = sign(&w.secret, &d.id, ts, &body);
    let request = Request::post(path)
        .header(header::HOST, host_header)
        .header(header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &d.id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(Full::new(axum::body::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        // Connect to the address just checked, not to a name resolved again.
        let tcp = tokio::net::TcpStream::connect(addrs.as_slice())
            .await
            .map_err(|e| format!("connecting to {authority}: {e}"))?;
        if w.url.starts_with("https://") {
            let tls = crate::tls::client_config(w.ca_file.as_deref()).map_err(|e| e.0)?;
            let name =
                rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                    .map_err(|e| format!("{host}: {e}"))?;
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("tls with {authority}: {e}"))?;
            exchange(stream, request).await
        } else {
            exchange(tcp, request).await
        }
    };
    let resp = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "timed out after 10 s".to_owned())??;
    if resp.is_success() {
        Ok(())
    } else {
        Err(format!("answered {resp}"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        let mac = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex::encode(mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn verify_accepts_the_signature_and_refuses_forgeries_and_replays() {
        let now = Utc::now();
        let body = br#"{"type":"ip.blocked"}"#;
        let sig = sign("a-secret-of-16-chars", "msg_1", now.timestamp(), body);
        let ts = now.timestamp().to_string();
        assert_eq!(
            verify("a-secret-of-16-chars", "msg_1", &ts, &sig, body, now),
            Ok(())
        );
        assert_eq!(
            verify("another-secret-16ch", "msg_1", &ts, &sig, body, now),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify("a-secret-of-16-chars", "msg_1", &ts, &sig, b"{}", now),
            Err(VerifyError::BadSignature),
            "a tampered body"
        );
        assert_eq!(
            verify("a-secret-of-16-chars", "msg_2", &ts, &sig, body, now),
            Err(VerifyError::BadSignature),
            "another delivery's signature"
        );
        let later = now + chrono::Duration::minutes(10);
        assert_eq!(
            verify("a-secret-of-16-chars", "msg_1", &ts, &sig, body, later),
            Err(VerifyError::Stale),
            "a replay ten minutes later"
        );
        let rotated = format!("v1,bm9wZQ== {sig}");
        assert_eq!(
            verify("a-secret-of-16-chars", "msg_1", &ts, &rotated, body, now),
            Ok(())
        );
    }

    #[test]
    fn ssrf_targets_are_refused_unless_allowed() {
        let hook = |url: &str, allow_private: bool| WebhookConfig {
            name: "soar".into(),
            url: url.into(),
            secret: "0123456789abcdef".into(),
            events: Vec::new(),
            allow_private,
            retry_initial_ms: 5000,
            ca_file: None,
        };
        assert!(validate(&hook("http://203.0.113.10:8080/hook", false)).is_ok());
        for bad in [
            "http://127.0.0.1/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.5:9000/",
            "http://[::1]:8080/x",
            "http://0.0.0.0/",
        ] {
            assert!(validate(&hook(bad, false)).is_err(), "{bad}");
        }
        assert!(validate(&hook("http://127.0.0.1:9000/hook", true)).is_ok());
        assert!(validate(&hook("https://soar.example/hook", false)).is_ok());
        assert!(validate(&hook("ftp://soar.example/hook", false)).is_err());
        assert!(validate(&hook("ftp://x/", false)).is_err());
        assert!(validate(&WebhookConfig {
            secret: "short".into(),
            ..hook("http://203.0.113.10/", false)
        })
        .is_err());
    }
}
