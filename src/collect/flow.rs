//! Flow collectors: NetFlow v5/v9 and IPFIX (one decoder, the version is in each datagram) and
//! sFlow v5 on their own UDP sockets. Each listener owns its decoder (templates, sampling and
//! sequence state per exporter, bounded by `[flows]` limits); every flow record becomes an
//! event (`event.category=network`, addresses, ports, transport, bytes, packets, start and end,
//! TCP flags, exporter, interfaces, `network.community_id`) that skips the parsers and meets
//! context and rules like any log event. A datagram that cannot be decoded is a dead letter
//! with its bytes and the reason; what the decoder counts (templates, buffered data, loss at
//! the exporter) and what the kernel dropped on the socket are metrics.
//!
//! Event mapping: `event.type` is `start` for a flow that opened a connection (TCP with SYN,
//! or any non-TCP flow) and `connection` for the rest of a long TCP connection, so rules that
//! count connection starts (beaconing) do not count an exporter's active-timeout splits of one
//! long connection. Flow-only fields are in `extra`: `flow.start`, `flow.end` (RFC 3339),
//! `tcp.flags` (names joined with `,`, e.g. `SYN` or `ACK,PSH,SYN`), `flow.exporter`,
//! `flow.version`, `flow.sampling_rate`, `flow.direction` (the exporter's `ingress` /
//! `egress`), `observer.ingress.interface`, `observer.egress.interface`, and when sent
//! `vlan.id`, `source.mac`, `destination.mac`, `icmp.type`, `icmp.code`, `flow.source_as`,
//! `flow.destination_as` and `flow.next_hop` (the exporter's routing view; GeoIP fills the
//! core `source.as.*`).

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use compact_str::ToCompactString;
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use vigil_flows::{FlowDecoder, FlowRecord, FlowSource, RecordKind};
use vigil_parsers::{ip_text, Event, Text};

use crate::bus::{Decoded, Publisher, RawRecord, TryPublishError};
use crate::telemetry::Metrics;

/// `[flows]`: the flow listeners and the decoders' bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowsConfig {
    /// NetFlow (v5, v9, and IPFIX too) UDP listen address; empty disables it.
    pub netflow_listen: String,
    /// IPFIX UDP listen address (NetFlow accepted too); empty disables it.
    pub ipfix_listen: String,
    /// sFlow v5 UDP listen address; empty disables it.
    pub sflow_listen: String,
    /// Socket receive buffer to ask the kernel for, in bytes (flow exporters send bursts).
    pub recv_buffer_bytes: usize,
    /// Exporters tracked per listener (least recently seen evicted).
    pub max_exporters: usize,
    /// Templates per exporter; further new ones are refused and counted.
    pub max_templates_per_exporter: usize,
    /// A template not refreshed for this long (seconds) is dropped.
    pub template_timeout_secs: u64,
    /// Data sets held per exporter while their template is unknown.
    pub max_pending_sets_per_exporter: usize,
    /// Bytes of such data sets held per listener.
    pub max_pending_bytes: usize,
}

impl Default for FlowsConfig {
    fn default() -> Self {
        FlowsConfig {
            netflow_listen: "127.0.0.1:2055".into(),
            ipfix_listen: "127.0.0.1:4739".into(),
            sflow_listen: "127.0.0.1:6343".into(),
            recv_buffer_bytes: 16 * 1024 * 1024,
            max_exporters: 1024,
            max_templates_per_exporter: 512,
            template_timeout_secs: 1800,
            max_pending_sets_per_exporter: 64,
            max_pending_bytes: 8 * 1024 * 1024,
        }
    }
}

impl FlowsConfig {
    /// The decoder limits these settings give.
    pub fn limits(&self) -> vigil_flows::Limits {
        let defaults = vigil_flows::Limits::default();
        vigil_flows::Limits {
            max_exporters: self.max_exporters.max(1),
            max_templates_per_exporter: self.max_templates_per_exporter.max(1),
            template_ttl: chrono::Duration::seconds(
                i64::try_from(self.template_timeout_secs).unwrap_or(i64::MAX / 1000),
            ),
            max_pending_sets_per_exporter: self.max_pending_sets_per_exporter,
            max_pending_bytes_total: self.max_pending_bytes,
            ..defaults
        }
    }
}

/// Which decoder a listener runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowProtocol {
    /// NetFlow v5/v9 and IPFIX.
    Netflow,
    /// sFlow v5.
    Sflow,
}

/// Binds a flow listener's UDP socket with the configured receive buffer.
pub fn bind(addr: &str, recv_buffer_bytes: usize) -> std::io::Result<UdpSocket> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if recv_buffer_bytes > 0 {
        // The kernel may cap it (net.core.rmem_max); that is not an error.
        let _ = socket.set_recv_buffer_size(recv_buffer_bytes);
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Receives flow datagrams until cancelled: decode, turn every flow record into an event,
/// publish; undecodable datagrams become dead letters. The decoder's counters and the
/// socket's kernel drops are exported every second.
#[allow(clippy::too_many_arguments)]
pub async fn run<P: Publisher<RawRecord>>(
    socket: UdpSocket,
    protocol: FlowProtocol,
    listener: &'static str,
    config: FlowsConfig,
    templates_file: Option<std::path::PathBuf>,
    publisher: P,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let mut kernel = super::KernelDrops::of(&socket, listener);
    let received = metrics.counter(
        "vigil_collector_received_total",
        "Records received by a collector.",
        &[("source", listener)],
    );
    let records = metrics.counter(
        "vigil_flow_records_total",
        "Flow records decoded, by listener.",
        &[("listener", listener)],
    );
    let dropped = metrics.counter(
        "vigil_collector_dropped_total",
        "Records dropped before the engine (unintentional loss), by reason.",
        &[("source", listener), ("reason", "queue_full")],
    );
    let mut netflow = FlowDecoder::new(config.limits());
    // Templates learned before a restart: v9/IPFIX data decodes at once instead of waiting for
    // the exporters to resend their templates (some do every 30 minutes).
    if let Some(path) = &templates_file {
        match load_templates(path) {
            Ok(Some(snap)) => {
                let n = netflow.restore_templates(&snap, Utc::now());
                tracing::info!(listener, templates = n, "flow templates restored");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(listener, error = %e, "saved flow templates not readable; waiting for the exporters'")
            }
        }
    }
    let mut saved_templates = netflow.template_count();
    let mut last_save = std::time::Instant::now();
    let mut sflow = vigil_flows::SflowDecoder::new(vigil_flows::SflowLimits::default());
    let mut exported = Exported::default();
    let mut buf = vec![0u8; 65_536];
    let mut out: Vec<FlowRecord> = Vec::new();
    let mut sampled: Vec<vigil_flows::SflowRecord> = Vec::new();
    let mut last_tick = std::time::Instant::now();
    loop {
        let (len, peer) = tokio::select! {
            _ = cancel.cancelled() => {
                if let Some(path) = &templates_file {
                    save_templates(path, &netflow, listener);
                }
                return;
            }
            r = tokio::time::timeout(std::time::Duration::from_secs(1), socket.recv_from(&mut buf)) => match r {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "flow udp receive failed");
                    continue;
                }
                Err(_) => (0, SocketAddr::from(([0, 0, 0, 0], 0))),
            },
        };
        let now = Utc::now();
        if last_tick.elapsed() >= std::time::Duration::from_secs(1) {
            last_tick = std::time::Instant::now();
            netflow.expire(now);
            exported.update(&metrics, listener, &netflow, &sflow, &mut kernel);
            let count = netflow.template_count();
            if let Some(path) = &templates_file {
                if count != saved_templates
                    && last_save.elapsed() >= std::time::Duration::from_secs(30)
                {
                    save_templates(path, &netflow, listener);
                    saved_templates = count;
                    last_save = std::time::Instant::now();
                }
            }
        }
        if len == 0 {
            continue;
        }
        received.inc();
        let payload = buf.get(..len).unwrap_or_default();
        let observer_type = match protocol {
            FlowProtocol::Netflow => "netflow",
            FlowProtocol::Sflow => "sflow",
        };
        let observer_id = vigil_parsers::Text::from(format!("{observer_type}/{}", peer.ip()));
        out.clear();
        let mut counters: Vec<Event> = Vec::new();
        let result = match protocol {
            FlowProtocol::Netflow => netflow.decode(peer, payload, now, &mut out).map(|_| ()),
            FlowProtocol::Sflow => {
                sampled.clear();
                let r = sflow.decode(peer, payload, now, &mut sampled).map(|_| ());
                for rec in sampled.drain(..) {
                    match rec {
                        vigil_flows::SflowRecord::Flow(f) => out.push(f),
                        vigil_flows::SflowRecord::Counters(c) => {
                            counters.push(counter_event(&c, &observer_id))
                        }
                        // Packets the device discarded: counted by the decoder's stats.
                        vigil_flows::SflowRecord::Discarded(_) => {}
                    }
                }
                r
            }
        };
        let mut batch: Vec<RawRecord> = Vec::with_capacity(out.len().max(1));
        match result {
            Ok(()) => {
                // The record, not its event: the normalize thread makes the event, so a flood
                // of flows costs this task only the decoding.
                let flows = out
                    .drain(..)
                    .filter(|r| r.kind == RecordKind::Flow)
                    .map(|mut r| {
                        r.fields = vigil_flows::Fields::default();
                        Decoded::Flow(Box::new(r))
                    });
                for decoded in
                    flows.chain(counters.into_iter().map(|c| Decoded::Event(Box::new(c))))
                {
                    records.inc();
                    batch.push(RawRecord {
                        bytes: Vec::new(),
                        observer_type,
                        observer_id: observer_id.clone(),
                        peer: Some(peer.ip()),
                        received_at: now,
                        refused: None,
                        decoded: Some(decoded),
                        ack: None,
                    });
                }
            }
            Err(e) => batch.push(RawRecord {
                bytes: payload.to_vec(),
                observer_type,
                observer_id: observer_id.clone(),
                peer: Some(peer.ip()),
                received_at: now,
                refused: Some((e.reason(), e.to_string())),
                decoded: None,
                ack: None,
            }),
        }
        for rec in batch {
            match publisher.try_publish(rec) {
                Ok(()) => {}
                Err(TryPublishError::Full) => dropped.inc(),
                Err(TryPublishError::Closed) => return,
            }
        }
    }
}

/// Templates saved by [`save_templates`], if the file exists.
fn load_templates(path: &std::path::Path) -> anyhow::Result<Option<vigil_flows::TemplateSnapshot>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Writes the decoder's templates to `path` (a temporary file renamed over it).
fn save_templates(path: &std::path::Path, decoder: &FlowDecoder, listener: &str) {
    if let Err(e) = crate::store::json_file::write_atomically(path, &decoder.snapshot_templates()) {
        tracing::warn!(listener, error = %e, "saving flow templates failed");
    }
}

/// The decoder counters already exported, so each second adds only what is new.
#[derive(Default)]
struct Exported {
    seen: std::collections::HashMap<&'static str, u64>,
}

impl Exported {
    fn update(
        &mut self,
        metrics: &Metrics,
        listener: &'static str,
        netflow: &FlowDecoder,
        sflow: &vigil_flows::SflowDecoder,
        kernel: &mut super::KernelDrops,
    ) {
        let s = netflow.stats();
        let mut add = |name: &'static str,
                       help: &'static str,
                       label: (&'static str, &'static str),
                       total: u64| {
            let key = label.1;
            let before = self.seen.insert(key, total).unwrap_or(0);
            if total > before {
                metrics
                    .counter(name, help, &[("listener", listener), label])
                    .add(total - before);
            }
        };
        let rejected = "Flow datagrams, records, templates and buffered data the decoder refused or dropped, by reason.";
        for (reason, total) in [
            ("truncated_header", s.rejected_truncated_header),
            ("unknown_version", s.rejected_unknown_version),
            ("bad_length", s.rejected_bad_length),
            ("set_malformed", s.sets_malformed),
            ("record_truncated", s.records_truncated),
            ("template_truncated", s.templates_truncated),
            ("template_field_count", s.templates_invalid_field_count),
            ("template_length", s.templates_invalid_length),
            ("template_limit", s.templates_rejected_limit),
            ("domain_limit", s.domains_rejected_limit),
            ("pending_evicted", s.pending_evicted),
            ("pending_expired", s.pending_expired),
            ("pending_dropped", s.pending_dropped),
            ("exporter_evicted", s.exporters_evicted),
        ] {
            add(
                "vigil_flow_rejected_total",
                rejected,
                ("reason", reason),
                total,
            );
        }
        let templates = "Template events, by kind.";
        for (kind, total) in [
            ("received", s.templates_received),
            ("refreshed", s.templates_refreshed),
            ("changed", s.templates_changed),
            ("withdrawn", s.templates_withdrawn),
            ("expired", s.templates_expired),
        ] {
            add(
                "vigil_flow_templates_total",
                templates,
                ("kind", kind),
                total,
            );
        }
        add(
            "vigil_flow_lost_at_exporter_total",
            "Flows (NetFlow v5, IPFIX) or export packets (NetFlow v9) the exporters' sequence numbers say never arrived.",
            ("unit", "flows"),
            s.sequence_lost_flows,
        );
        add(
            "vigil_flow_lost_at_exporter_total",
            "Flows (NetFlow v5, IPFIX) or export packets (NetFlow v9) the exporters' sequence numbers say never arrived.",
            ("unit", "packets"),
            s.sequence_lost_packets,
        );
        let sf = sflow.stats();
        add(
            "vigil_flow_rejected_total",
            rejected,
            ("reason", "sflow_datagram"),
            sf.datagrams_rejected,
        );
        metrics
            .gauge(
                "vigil_flow_templates",
                "Templates cached, by listener.",
                &[("listener", listener)],
            )
            .set(netflow.template_count() as u64);
        metrics
            .gauge(
                "vigil_flow_pending_bytes",
                "Bytes of data sets held until their template arrives, by listener.",
                &[("listener", listener)],
            )
            .set(netflow.pending().1 as u64);
        let dropped = kernel.new_drops();
        if dropped > 0 {
            metrics
                .counter(
                    "vigil_flow_kernel_drops_total",
                    "Datagrams the kernel dropped on a flow socket (receive buffer full), by listener.",
                    &[("listener", listener)],
                )
                .add(dropped);
        }
    }
}

/// The event of an sFlow counter sample: `event.kind=metric`, the interface and Ethernet
/// counters in `extra` (`sflow.if_index`, `sflow.in_octets`, ...).
pub fn counter_event(c: &vigil_flows::CounterRecord, observer_id: &str) -> Event {
    let mut e = Event::new(c.origin.received_at, c.origin.received_at);
    e.kind = Some("metric".into());
    e.category = Some("network".into());
    e.event_type = Some("info".into());
    e.action = Some("interface_counters".into());
    e.dataset = Some("sflow".into());
    e.observer_type = Some("sflow".into());
    e.observer_id = Some(observer_id.into());
    e.observer_ip = Some(c.origin.agent_address);
    let mut flat = |value: serde_json::Value| {
        if let serde_json::Value::Object(map) = value {
            for (k, v) in map {
                let text = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                e.extra
                    .insert(compact_str::format_compact!("sflow.{k}"), text.into());
            }
        }
    };
    if let Some(i) = &c.interface {
        flat(serde_json::to_value(i).unwrap_or_default());
    }
    if let Some(eth) = &c.ethernet {
        flat(serde_json::to_value(eth).unwrap_or_default());
    }
    e
}

/// `t` as RFC 3339 with milliseconds and `Z` (`2026-11-30T07:51:09.123Z`), the way chrono
/// writes it with `SecondsFormat::Millis`, without the formatting machinery for the years
/// 0 to 9999 (chrono's writing otherwise).
fn rfc3339_text(t: DateTime<Utc>) -> Text {
    use chrono::{Datelike, Timelike};
    let year = t.year();
    let nanos = t.nanosecond();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return Text::from(t.to_rfc3339_opts(SecondsFormat::Millis, true));
    }
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: u32| {
        for i in (at..at + width).rev() {
            if let Some(d) = b.get_mut(i) {
                *d = b'0' + (v % 10) as u8;
            }
            v /= 10;
        }
    };
    put(0, 4, year.unsigned_abs());
    put(5, 2, t.month());
    put(8, 2, t.day());
    put(11, 2, t.hour());
    put(14, 2, t.minute());
    put(17, 2, t.second());
    put(20, 3, nanos / 1_000_000);
    Text::new(std::str::from_utf8(&b).unwrap_or_default())
}

/// The event of one flow record from exporter `observer_id`.
pub fn flow_event(r: &FlowRecord, observer_id: &str) -> Event {
    let start = r.flow_start.unwrap_or(r.export_time);
    let end = r.flow_end.unwrap_or(start);
    let mut e = Event::new(end, r.received_at);
    e.kind = Some("event".into());
    e.category = Some("network".into());
    let tcp = r.ip_protocol == Some(6);
    let syn = r.tcp_flags.is_some_and(|f| f & 0x02 != 0);
    e.event_type = Some(if !tcp || syn { "start" } else { "connection" }.into());
    e.action = Some("flow".into());
    let (observer_type, dataset) = match r.source {
        FlowSource::NetflowV5 | FlowSource::NetflowV9 => ("netflow", "netflow"),
        FlowSource::Ipfix => ("ipfix", "ipfix"),
        FlowSource::SflowV5 => ("sflow", "sflow"),
    };
    e.dataset = Some(dataset.into());
    e.observer_type = Some(observer_type.into());
    e.observer_id = Some(observer_id.into());
    e.observer_ip = Some(r.exporter.ip());
    e.source_ip = r.src_addr;
    e.source_port = r.src_port;
    e.destination_ip = r.dst_addr;
    e.destination_port = r.dst_port;
    e.network_transport = r.transport.map(Into::into);
    e.network_bytes = Some(r.bytes);
    e.network_packets = Some(r.packets);
    if !r.community_id.is_empty() {
        e.network_community_id = Some(r.community_id.as_str().into());
    }
    e.duration_ns = (end - start)
        .num_nanoseconds()
        .and_then(|n| u64::try_from(n).ok());
    // Collected, then built into the map at once (sorted, bulk-loaded): cheaper than a
    // dozen searching inserts for every flow. Names and nearly every value fit a `Text`
    // inline, so this costs no allocation each.
    let mut x: Vec<(Text, Text)> = Vec::with_capacity(18);
    x.push((Text::const_new("flow.start"), rfc3339_text(start)));
    x.push((Text::const_new("flow.end"), rfc3339_text(end)));
    x.push((Text::const_new("flow.exporter"), ip_text(r.exporter.ip())));
    x.push((
        Text::const_new("flow.version"),
        r.protocol_version.to_compact_string(),
    ));
    x.push((
        Text::const_new("flow.sampling_rate"),
        r.sampling_rate.to_compact_string(),
    ));
    if let Some(flags) = r.tcp_flags {
        // The decoder's names are lower-case letters: sorting them sorts their capitals.
        let mut names = r.tcp_flag_names.clone();
        names.sort_unstable();
        let mut joined = Text::default();
        for (i, n) in names.iter().enumerate() {
            if i > 0 {
                joined.push(',');
            }
            joined.extend(n.chars().map(|c| c.to_ascii_uppercase()));
        }
        x.push((Text::const_new("tcp.flags"), joined));
        x.push((Text::const_new("tcp.flags_raw"), flags.to_compact_string()));
    }
    if let Some(d) = r.direction {
        let d = match d {
            vigil_flows::Direction::Ingress => "ingress",
            vigil_flows::Direction::Egress => "egress",
        };
        x.push((Text::const_new("flow.direction"), Text::const_new(d)));
    }
    let mut put = |k: &'static str, v: Option<Text>| {
        if let Some(v) = v {
            x.push((Text::const_new(k), v));
        }
    };
    put(
        "observer.ingress.interface",
        r.input_interface.map(|v| v.to_compact_string()),
    );
    put(
        "observer.egress.interface",
        r.output_interface.map(|v| v.to_compact_string()),
    );
    put("vlan.id", r.vlan.map(|v| v.to_compact_string()));
    put("source.mac", r.src_mac.map(|m| m.to_compact_string()));
    put("destination.mac", r.dst_mac.map(|m| m.to_compact_string()));
    put("icmp.type", r.icmp_type.map(|v| v.to_compact_string()));
    put("icmp.code", r.icmp_code.map(|v| v.to_compact_string()));
    put("flow.source_as", r.src_as.map(|v| v.to_compact_string()));
    put(
        "flow.destination_as",
        r.dst_as.map(|v| v.to_compact_string()),
    );
    put("flow.next_hop", r.next_hop.map(ip_text));
    e.extra = x.into_iter().collect();
    // `flow tcp 10.0.0.1:51000 -> 198.51.100.7:443 3 packets 180 bytes`, written piece by
    // piece (the formatting machinery costs more than the rest of the event).
    let mut m = String::with_capacity(96);
    m.push_str("flow ");
    m.push_str(r.transport.unwrap_or("ip"));
    m.push(' ');
    let addr = |m: &mut String, ip: Option<std::net::IpAddr>, port: Option<u16>| {
        if let Some(ip) = ip {
            m.push_str(&ip_text(ip));
        }
        m.push(':');
        m.push_str(&port.unwrap_or(0).to_compact_string());
    };
    addr(&mut m, r.src_addr, r.src_port);
    m.push_str(" -> ");
    addr(&mut m, r.dst_addr, r.dst_port);
    m.push(' ');
    m.push_str(&r.packets.to_compact_string());
    m.push_str(" packets ");
    m.push_str(&r.bytes.to_compact_string());
    m.push_str(" bytes");
    e.message = Some(m.into());
    e
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use vigil_flows::{Direction, Fields, MacAddr};

    fn record() -> FlowRecord {
        let at = |s: i64| Utc.timestamp_opt(1_764_000_000 + s, 0).unwrap();
        FlowRecord {
            kind: RecordKind::Flow,
            source: FlowSource::NetflowV9,
            protocol_version: 9,
            exporter: "192.0.2.1:2055".parse().unwrap(),
            observation_domain: 0,
            template_id: Some(256),
            sequence: 7,
            export_time: at(60),
            exporter_uptime_ms: None,
            received_at: at(61),
            src_addr: Some("10.0.0.23".parse().unwrap()),
            dst_addr: Some("2001:db8::7".parse().unwrap()),
            src_port: Some(50_123),
            dst_port: Some(443),
            ip_protocol: Some(6),
            transport: Some("tcp"),
            bytes: 1_500,
            packets: 9,
            sampling_rate: 10,
            flow_start: Some(at(0)),
            flow_end: Some(at(30)),
            tcp_flags: Some(0x1b),
            tcp_flag_names: vec!["fin", "syn", "psh", "ack"],
            input_interface: Some(3),
            output_interface: Some(4),
            direction: Some(Direction::Egress),
            vlan: Some(12),
            src_mac: Some(MacAddr([0, 0x1b, 0x21, 1, 2, 3])),
            dst_mac: None,
            next_hop: Some("192.0.2.254".parse().unwrap()),
            src_as: Some(64_500),
            dst_as: None,
            src_mask: None,
            dst_mask: None,
            icmp_type: None,
            icmp_code: None,
            community_id: "1:abc=".into(),
            fields: Fields(Vec::new()),
        }
    }

    #[test]
    fn a_flow_becomes_an_event_with_every_field_named() {
        let e = flow_event(&record(), "netflow/192.0.2.1");
        assert_eq!(e.category.as_deref(), Some("network"));
        assert_eq!(e.event_type.as_deref(), Some("start"), "SYN seen");
        assert_eq!(e.network_transport.as_deref(), Some("tcp"));
        assert_eq!(e.network_community_id.as_deref(), Some("1:abc="));
        assert_eq!(e.duration_ns, Some(30_000_000_000));
        assert_eq!(e.observer_id.as_deref(), Some("netflow/192.0.2.1"));
        let extra: Vec<(&str, &str)> = e
            .extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            extra,
            [
                ("flow.direction", "egress"),
                ("flow.end", "2025-11-24T16:00:30.000Z"),
                ("flow.exporter", "192.0.2.1"),
                ("flow.next_hop", "192.0.2.254"),
                ("flow.sampling_rate", "10"),
                ("flow.source_as", "64500"),
                ("flow.start", "2025-11-24T16:00:00.000Z"),
                ("flow.version", "9"),
                ("observer.egress.interface", "4"),
                ("observer.ingress.interface", "3"),
                ("source.mac", "00:1b:21:01:02:03"),
                ("tcp.flags", "ACK,FIN,PSH,SYN"),
                ("tcp.flags_raw", "27"),
                ("vlan.id", "12"),
            ]
        );
        assert_eq!(
            e.message.as_deref(),
            Some("flow tcp 10.0.0.23:50123 -> 2001:db8::7:443 9 packets 1500 bytes")
        );
        let mut bare = record();
        bare.src_addr = None;
        bare.transport = None;
        assert_eq!(
            flow_event(&bare, "x").message.as_deref(),
            Some("flow ip :50123 -> 2001:db8::7:443 9 packets 1500 bytes")
        );
    }

    #[test]
    fn times_are_written_as_chrono_writes_them() {
        use chrono::TimeZone;
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut times = vec![
            Utc.timestamp_opt(0, 0).unwrap(),
            Utc.timestamp_opt(-62_167_219_200, 0).unwrap(), // year 0
            Utc.timestamp_opt(253_402_300_799, 999_999_999).unwrap(), // 9999-12-31
            Utc.timestamp_opt(253_402_300_800, 0).unwrap(), // year 10000
            Utc.timestamp_opt(-62_167_219_201, 0).unwrap(), // year -1
            Utc.timestamp_opt(1_764_028_799, 1_500_000_000).unwrap(), // leap second
        ];
        for _ in 0..10_000 {
            let secs = (next() % 8_000_000_000) as i64 - 2_000_000_000;
            let nanos = (next() % 1_000_000_000) as u32;
            times.push(Utc.timestamp_opt(secs, nanos).unwrap());
        }
        for t in times {
            assert_eq!(
                rfc3339_text(t).as_str(),
                t.to_rfc3339_opts(SecondsFormat::Millis, true),
                "{t:?}"
            );
        }
    }

    #[test]
    fn a_flow_through_the_spool_becomes_the_same_event() {
        let rec = record();
        let raw = RawRecord {
            bytes: Vec::new(),
            observer_type: "netflow",
            observer_id: "netflow/192.0.2.1".into(),
            peer: Some(rec.exporter.ip()),
            received_at: rec.received_at,
            refused: None,
            decoded: Some(Decoded::Flow(Box::new(rec.clone()))),
            ack: None,
        };
        let back = crate::bus::spool::decode(&crate::bus::spool::encode(&raw)).unwrap();
        let mut per_source = std::collections::HashMap::new();
        let normalizer = vigil_parsers::normalize::Normalizer::new(
            vigil_parsers::definitions::DefinitionSet::default(),
            vigil_parsers::normalize::NormalizeOptions::default(),
        );
        let event = crate::pipeline::normalize_record(&normalizer, back, &mut per_source).unwrap();
        assert_eq!(event, flow_event(&rec, "netflow/192.0.2.1"));
        assert_eq!(per_source.len(), 1, "counted for its exporter");
    }
}
