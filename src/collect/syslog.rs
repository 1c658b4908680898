//! Syslog over UDP (one datagram = one record) and TCP (RFC 6587 framing: octet counting or
//! newline, detected per connection by the framer in `vigil-parsers`).
//!
//! Limits, each counted in `vigil_collector_refused_total{source,reason}` when it refuses:
//! `frame_too_long` (record over `max_message_bytes`), `bad_octet_count` (an octet-counted
//! stream that cannot be resynced: the connection is closed), `max_connections` (a connection
//! over the limit is closed at accept), `idle_timeout` (a silent connection is closed).
//! A full queue makes TCP readers wait (back-pressure) and drops UDP datagrams
//! (`vigil_collector_dropped_total{reason="queue_full"}`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use vigil_parsers::syslog::framing::{FrameError, Framer};

use crate::bus::{Publisher, RawRecord, TryPublishError};
use crate::config::SyslogConfig;
use crate::telemetry::{Counter, Metrics};

/// How long a TCP connection is still read after shutdown starts.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(2);

/// Counters of one listener.
#[derive(Clone)]
struct SourceMetrics {
    source: &'static str,
    metrics: Arc<Metrics>,
    received: Counter,
    received_bytes: Counter,
}

impl SourceMetrics {
    fn new(metrics: &Arc<Metrics>, source: &'static str) -> Self {
        SourceMetrics {
            source,
            received: metrics.counter(
                "vigil_collector_received_total",
                "Records received by collectors.",
                &[("source", source)],
            ),
            received_bytes: metrics.counter(
                "vigil_collector_received_bytes_total",
                "Bytes of records received by collectors.",
                &[("source", source)],
            ),
            metrics: metrics.clone(),
        }
    }

    fn refused(&self, reason: &'static str) {
        self.metrics
            .counter(
                "vigil_collector_refused_total",
                "Records or connections a collector refused, by reason.",
                &[("source", self.source), ("reason", reason)],
            )
            .inc();
    }

    fn dropped(&self, reason: &'static str) {
        self.dropped_n(reason, 1);
    }

    fn dropped_n(&self, reason: &'static str, n: u64) {
        self.metrics
            .counter(
                "vigil_collector_dropped_total",
                "Records dropped before the engine (unintentional loss), by reason.",
                &[("source", self.source), ("reason", reason)],
            )
            .add(n);
    }
}

/// Binds the UDP socket (with the configured receive buffer).
pub async fn bind_udp(config: &SyslogConfig) -> std::io::Result<UdpSocket> {
    let addr: SocketAddr = config
        .udp_listen
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if config.udp_recv_buffer_bytes > 0 {
        // The kernel may cap it (net.core.rmem_max); that is not an error.
        let _ = socket.set_recv_buffer_size(config.udp_recv_buffer_bytes);
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Receives datagrams until cancelled. Datagrams the kernel dropped because the socket's
/// buffer was full (read from `/proc/net/udp` every second) are counted as
/// `vigil_collector_dropped_total{source="syslog_udp",reason="kernel_buffer"}`: one syslog
/// record a datagram.
pub async fn run_udp<P: Publisher<RawRecord>>(
    socket: UdpSocket,
    config: SyslogConfig,
    publisher: P,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let m = SourceMetrics::new(&metrics, "syslog_udp");
    let max = config.max_message_bytes;
    // One byte more than the limit tells an oversized datagram from one exactly at it.
    let mut buf = vec![0u8; max + 1];
    let mut kernel = super::KernelDrops::of(&socket, "syslog_udp");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (len, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {
                let dropped = kernel.new_drops();
                if dropped > 0 {
                    m.dropped_n("kernel_buffer", dropped);
                }
                continue;
            }
            r = socket.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "udp receive failed");
                    continue;
                }
            },
        };
        m.received.inc();
        m.received_bytes.add(len as u64);
        let mut rec = RawRecord {
            bytes: Vec::new(),
            observer_type: "syslog",
            observer_id: format!("syslog/udp/{}", peer.ip()).into(),
            peer: Some(peer.ip()),
            received_at: Utc::now(),
            refused: None,
            decoded: None,
            ack: None,
        };
        if len > max {
            m.refused("frame_too_long");
            rec.bytes = buf.get(..max).unwrap_or_default().to_vec();
            rec.refused = Some((
                "frame_too_long",
                format!("datagram longer than max_message_bytes {max}; first {max} bytes kept"),
            ));
        } else {
            rec.bytes = buf.get(..len).unwrap_or_default().to_vec();
        }
        match publisher.try_publish(rec) {
            Ok(()) => {}
            Err(TryPublishError::Full) => m.dropped("queue_full"),
            Err(TryPublishError::Closed) => return,
        }
    }
}

/// Accepts TCP connections until cancelled; each connection runs in its own task.
pub async fn run_tcp<P: Publisher<RawRecord>>(
    listener: TcpListener,
    config: SyslogConfig,
    publisher: P,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let m = SourceMetrics::new(&metrics, "syslog_tcp");
    let limit = Arc::new(Semaphore::new(config.max_connections));
    let open = metrics.gauge(
        "vigil_collector_connections",
        "TCP connections open now.",
        &[("source", "syslog_tcp")],
    );
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            m.refused("max_connections");
            drop(stream);
            continue;
        };
        let (m, publisher, cancel, config, open) = (
            m.clone(),
            publisher.clone(),
            cancel.clone(),
            config.clone(),
            open.clone(),
        );
        tokio::spawn(async move {
            open.inc();
            handle_connection(stream, peer, "tcp", &config, &publisher, &m, &cancel).await;
            open.dec();
            drop(permit);
        });
    }
}

/// Syslog over TLS (RFC 5425): as [`run_tcp`], each connection after a TLS handshake that
/// must finish within `tls_handshake_timeout_secs` (failures counted as
/// `vigil_collector_refused_total{source="syslog_tls",reason="tls_handshake"}`).
pub async fn run_tls<P: Publisher<RawRecord>>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    config: SyslogConfig,
    publisher: P,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let m = SourceMetrics::new(&metrics, "syslog_tls");
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let limit = Arc::new(Semaphore::new(config.max_connections));
    let open = metrics.gauge(
        "vigil_collector_connections",
        "TCP connections open now.",
        &[("source", "syslog_tls")],
    );
    let handshake = Duration::from_secs(config.tls_handshake_timeout_secs.max(1));
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "tls accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            m.refused("max_connections");
            drop(stream);
            continue;
        };
        let (m, publisher, cancel, config, open, acceptor) = (
            m.clone(),
            publisher.clone(),
            cancel.clone(),
            config.clone(),
            open.clone(),
            acceptor.clone(),
        );
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "tls handshake failed");
                    m.refused("tls_handshake");
                    return;
                }
                Err(_) => {
                    m.refused("tls_handshake");
                    return;
                }
            };
            open.inc();
            handle_connection(stream, peer, "tls", &config, &publisher, &m, &cancel).await;
            open.dec();
            drop(permit);
        });
    }
}

async fn handle_connection<P: Publisher<RawRecord>, S: tokio::io::AsyncRead + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    transport: &str,
    config: &SyslogConfig,
    publisher: &P,
    m: &SourceMetrics,
    cancel: &CancellationToken,
) {
    let observer_id = vigil_parsers::Text::from(format!("syslog/{transport}/{}", peer.ip()));
    let mut framer = Framer::new(config.max_message_bytes);
    let mut buf = vec![0u8; 64 * 1024];
    let idle = Duration::from_secs(config.idle_timeout_secs.max(1));
    let record = |bytes: Vec<u8>, refused: Option<(&'static str, String)>| RawRecord {
        bytes,
        observer_type: "syslog",
        observer_id: observer_id.clone(),
        peer: Some(peer.ip()),
        received_at: Utc::now(),
        refused,
        decoded: None,
        ack: None,
    };
    // On shutdown a connection is drained, not dropped: what the peer already sent (and the
    // kernel acknowledged) is read until end of stream or SHUTDOWN_DRAIN, then the framer is
    // flushed.
    let mut drain_until: Option<tokio::time::Instant> = None;
    loop {
        let wait = match drain_until {
            Some(deadline) => deadline.saturating_duration_since(tokio::time::Instant::now()),
            None => idle,
        };
        let n = tokio::select! {
            _ = cancel.cancelled(), if drain_until.is_none() => {
                drain_until = Some(tokio::time::Instant::now() + SHUTDOWN_DRAIN);
                continue;
            }
            r = tokio::time::timeout(wait, stream.read(&mut buf)) => match r {
                Err(_) => {
                    if drain_until.is_none() {
                        m.refused("idle_timeout");
                    }
                    0
                }
                Ok(Err(_)) => 0,
                Ok(Ok(n)) => n,
            },
        };
        if n == 0 {
            // End of stream: a trailing unterminated frame (or a truncated octet count).
            while let Some(frame) = framer.finish() {
                if forward(frame, &record, publisher, m).await.is_err() {
                    break;
                }
            }
            return;
        }
        framer.push(buf.get(..n).unwrap_or_default());
        while let Some(frame) = framer.next_frame() {
            if forward(frame, &record, publisher, m).await.is_err() {
                return;
            }
        }
    }
}

/// Publishes one frame (or its refusal as a dead letter). `Err` means stop reading this
/// connection: the bus is closed or the stream cannot be resynced.
async fn forward<P: Publisher<RawRecord>>(
    frame: Result<Vec<u8>, FrameError>,
    record: &impl Fn(Vec<u8>, Option<(&'static str, String)>) -> RawRecord,
    publisher: &P,
    m: &SourceMetrics,
) -> Result<(), ()> {
    match frame {
        Ok(bytes) => {
            m.received.inc();
            m.received_bytes.add(bytes.len() as u64);
            publisher.publish(record(bytes, None)).await.map_err(|_| ())
        }
        Err(e) => {
            let fatal = matches!(e, FrameError::BadLength { .. });
            m.refused(e.reason());
            let sent = publisher
                .publish(record(Vec::new(), Some((e.reason(), e.to_string()))))
                .await;
            if fatal || sent.is_err() {
                Err(())
            } else {
                Ok(())
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::bus::{memory, Subscriber};

    /// Datagrams that arrive while the socket's buffer is full are lost in the kernel; they are
    /// counted, by reason, with what the collector received: nothing vanishes uncounted.
    #[tokio::test]
    async fn datagrams_the_kernel_dropped_are_counted() {
        let config = SyslogConfig {
            udp_listen: "127.0.0.1:0".into(),
            // The kernel's smallest receive buffer: a burst nobody reads overflows it.
            udp_recv_buffer_bytes: 1,
            ..SyslogConfig::default()
        };
        let socket = bind_udp(&config).await.unwrap();
        let target = socket.local_addr().unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let line = format!("<13>Nov 28 10:00:01 host app: {}", "x".repeat(900));
        let sent = 400u64;
        for _ in 0..sent {
            sender.send_to(line.as_bytes(), target).unwrap();
        }
        let metrics = Metrics::new();
        let (publisher, mut subscriber) =
            memory::channel(10_000, 64 << 20, metrics.gauge("d", "d", &[]));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_udp(
            socket,
            config,
            publisher,
            metrics.clone(),
            cancel.clone(),
        ));
        let dropped = || {
            metrics.counter_value(
                "vigil_collector_dropped_total",
                &[("source", "syslog_udp"), ("reason", "kernel_buffer")],
            )
        };
        let mut received = 0u64;
        for _ in 0..500 {
            while subscriber.try_next().is_some() {
                received += 1;
            }
            if received + dropped() >= sent {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cancel.cancel();
        task.await.unwrap();
        assert!(dropped() > 0, "a full buffer drops: received {received}");
        assert!(received > 0);
        assert_eq!(received + dropped(), sent);
        assert_eq!(
            metrics.counter_value(
                "vigil_collector_received_total",
                &[("source", "syslog_udp")]
            ),
            received
        );
    }
}
