//! Superflows (QRadar's word): a scan's many tiny flows condensed into one stored record with
//! counts, so a sweep of a /16 is one row, not 65,536.
//!
//! A flow of at most [`TINY_PACKETS`] packets (a probe: a SYN with no answer, a RST, one UDP
//! datagram) is held per source address for [`HOLD`] of wall time instead of being stored at
//! once. When that window closes, a source that sent fewer than `min_flows` tiny flows has them
//! stored one by one, as if nothing had happened; a source that sent more is stored as one
//! superflow row: flows, packets and bytes summed, first and last time, the number of distinct
//! destinations and ports (up to [`MAX_DISTINCT`] each, then counted as "at least"), and a few
//! sample destinations. Rules are not affected: they see every flow event as it arrives; this
//! is only what the flow store keeps.
//!
//! Bounded: at most `max_sources` sources are held; a new one beyond that flushes the oldest
//! (its flows stored one by one or as a superflow, as above, counted). Held flows per source
//! stop being kept individually once there are `min_flows` of them (from then on the source is
//! a superflow and only its counters grow).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use vigil_parsers::Event;

use super::flows::flow_time;

/// Largest flow (in packets) that counts as a probe.
pub const TINY_PACKETS: u64 = 2;
/// How long a source's tiny flows are held before they are stored.
pub const HOLD: Duration = Duration::from_secs(60);
/// Distinct destinations or ports counted per superflow.
pub const MAX_DISTINCT: usize = 4096;

/// One condensed scan: what the store keeps instead of its flows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SuperFlow {
    /// The scanning address.
    #[serde(rename = "source.ip")]
    pub source_ip: IpAddr,
    /// Flows condensed.
    pub flows: u64,
    /// Their packets.
    #[serde(rename = "network.packets")]
    pub packets: u64,
    /// Their bytes.
    #[serde(rename = "network.bytes")]
    pub bytes: u64,
    /// Earliest flow start.
    pub first: DateTime<Utc>,
    /// Latest flow end.
    pub last: DateTime<Utc>,
    /// Distinct destination addresses (at most [`MAX_DISTINCT`] counted).
    pub destinations: u64,
    /// Distinct destination ports (at most [`MAX_DISTINCT`] counted).
    pub ports: u64,
    /// Transports seen (`tcp`, `udp`, ...).
    pub transports: Vec<String>,
    /// Up to eight destinations, for the analyst.
    pub sample_destinations: Vec<IpAddr>,
    /// Exporter of the first flow.
    pub exporter: String,
}

/// What the flow store writes: a flow, or a superflow.
#[derive(Debug, Clone)]
pub enum FlowRow {
    /// One flow event.
    Flow(Arc<Event>),
    /// A condensed scan (boxed: a batch holds tens of thousands of rows, nearly all flows, and
    /// the row stays two words instead of the summary's size).
    Super(Box<SuperFlow>),
}

struct Held {
    flows: Vec<Arc<Event>>,
    summary: SuperFlow,
    destinations: BTreeSet<IpAddr>,
    ports: BTreeSet<u16>,
}

/// Holds tiny flows per source and condenses scans. See the module docs.
pub struct Condenser {
    min_flows: usize,
    max_sources: usize,
    held: HashMap<IpAddr, Held>,
    order: VecDeque<(Instant, IpAddr)>,
    /// Sources flushed early because `max_sources` were held.
    pub evicted: u64,
}

impl Condenser {
    /// Condenses a source's tiny flows when it sends at least `min_flows` of them in the hold
    /// window (0 turns condensing off), holding at most `max_sources` sources.
    pub fn new(min_flows: usize, max_sources: usize) -> Condenser {
        Condenser {
            min_flows,
            max_sources: max_sources.max(1),
            held: HashMap::new(),
            order: VecDeque::new(),
            evicted: 0,
        }
    }

    /// Takes one flow event: stored now (pushed to `out`) unless it is a tiny flow from a
    /// source, which is held.
    pub fn push(&mut self, e: Arc<Event>, now: Instant, out: &mut Vec<FlowRow>) {
        let tiny = e.network_packets.unwrap_or(u64::MAX) <= TINY_PACKETS;
        let Some(src) = e.source_ip.filter(|_| tiny && self.min_flows > 0) else {
            out.push(FlowRow::Flow(e));
            return;
        };
        if !self.held.contains_key(&src) && self.held.len() >= self.max_sources {
            if let Some((_, oldest)) = self.order.pop_front() {
                if let Some(h) = self.held.remove(&oldest) {
                    self.evicted += 1;
                    self.release(h, out);
                }
            }
        }
        let min_flows = self.min_flows;
        let order = &mut self.order;
        let h = self.held.entry(src).or_insert_with(|| {
            order.push_back((now, src));
            Held {
                flows: Vec::new(),
                summary: SuperFlow {
                    source_ip: src,
                    flows: 0,
                    packets: 0,
                    bytes: 0,
                    first: flow_time(&e, "flow.start"),
                    last: flow_time(&e, "flow.end"),
                    destinations: 0,
                    ports: 0,
                    transports: Vec::new(),
                    sample_destinations: Vec::new(),
                    exporter: e
                        .extra
                        .get("flow.exporter")
                        .map(|t| t.to_string())
                        .unwrap_or_default(),
                },
                destinations: BTreeSet::new(),
                ports: BTreeSet::new(),
            }
        });
        let s = &mut h.summary;
        s.flows += 1;
        s.packets += e.network_packets.unwrap_or(0);
        s.bytes += e.network_bytes.unwrap_or(0);
        s.first = s.first.min(flow_time(&e, "flow.start"));
        s.last = s.last.max(flow_time(&e, "flow.end"));
        if let Some(t) = &e.network_transport {
            if !s.transports.iter().any(|x| x == t) && s.transports.len() < 8 {
                s.transports.push(t.to_string());
            }
        }
        if let Some(d) = e.destination_ip {
            if h.destinations.len() < MAX_DISTINCT
                && h.destinations.insert(d)
                && s.sample_destinations.len() < 8
            {
                s.sample_destinations.push(d);
            }
        }
        if let Some(p) = e.destination_port {
            if h.ports.len() < MAX_DISTINCT {
                h.ports.insert(p);
            }
        }
        if h.flows.len() < min_flows {
            h.flows.push(e);
        } else {
            // A scan: the flows themselves will not be stored.
            h.flows.clear();
            h.flows.shrink_to_fit();
        }
    }

    /// Stores (pushes to `out`) what was held longer than [`HOLD`] at `now`; everything when
    /// `all` (shutdown).
    pub fn flush(&mut self, now: Instant, all: bool, out: &mut Vec<FlowRow>) {
        while let Some(&(since, src)) = self.order.front() {
            if !all && now.duration_since(since) < HOLD {
                break;
            }
            self.order.pop_front();
            if let Some(h) = self.held.remove(&src) {
                self.release(h, out);
            }
        }
    }

    fn release(&self, h: Held, out: &mut Vec<FlowRow>) {
        if (h.summary.flows as usize) < self.min_flows {
            out.extend(h.flows.into_iter().map(FlowRow::Flow));
        } else {
            let mut s = h.summary;
            s.destinations = h.destinations.len() as u64;
            s.ports = h.ports.len() as u64;
            out.push(FlowRow::Super(Box::new(s)));
        }
    }

    /// Sources held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn probe(src: &str, dst: &str, port: u16, packets: u64) -> Arc<Event> {
        let t = DateTime::<Utc>::from_timestamp(1_795_000_000, 0).unwrap();
        let mut e = Event::new(t, t);
        e.source_ip = src.parse().ok();
        e.destination_ip = dst.parse().ok();
        e.destination_port = Some(port);
        e.network_packets = Some(packets);
        e.network_bytes = Some(packets * 60);
        e.network_transport = Some("tcp".into());
        Arc::new(e)
    }

    #[test]
    fn a_sweep_becomes_one_superflow_and_a_few_probes_stay_flows() {
        let mut c = Condenser::new(16, 100);
        let t0 = Instant::now();
        let mut out = Vec::new();
        for i in 0..300u32 {
            c.push(
                probe(
                    "203.0.113.66",
                    &format!("10.0.{}.{}", i / 250, 1 + i % 250),
                    22,
                    1,
                ),
                t0,
                &mut out,
            );
        }
        for p in 0..3u16 {
            c.push(probe("198.51.100.5", "10.0.0.1", 80 + p, 1), t0, &mut out);
        }
        c.push(probe("198.51.100.6", "10.0.0.1", 443, 40), t0, &mut out);
        assert_eq!(out.len(), 1, "a big flow is stored at once");
        c.flush(t0 + Duration::from_secs(30), false, &mut out);
        assert_eq!(out.len(), 1, "held for the window");
        c.flush(t0 + HOLD, false, &mut out);
        let supers: Vec<&SuperFlow> = out
            .iter()
            .filter_map(|r| match r {
                FlowRow::Super(s) => Some(&**s),
                FlowRow::Flow(_) => None,
            })
            .collect();
        assert_eq!(supers.len(), 1);
        let s = supers[0];
        assert_eq!(
            (s.flows, s.destinations, s.ports, s.packets),
            (300, 300, 1, 300)
        );
        assert_eq!(s.sample_destinations.len(), 8);
        assert_eq!(
            out.len(),
            1 + 1 + 3,
            "the big flow, the sweep, three plain probes"
        );
        assert_eq!(c.held(), 0);
    }

    #[test]
    fn held_sources_are_bounded() {
        let mut c = Condenser::new(16, 2);
        let t0 = Instant::now();
        let mut out = Vec::new();
        for s in 1..=5u8 {
            c.push(
                probe(&format!("198.51.100.{s}"), "10.0.0.1", 22, 1),
                t0,
                &mut out,
            );
        }
        assert_eq!(c.held(), 2);
        assert_eq!(c.evicted, 3);
        assert_eq!(out.len(), 3, "evicted sources are stored, not lost");
        c.flush(t0, true, &mut out);
        assert_eq!(out.len(), 5);
    }
}
