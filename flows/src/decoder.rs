//! [`FlowDecoder`]: the stateful NetFlow v5 / v9 / IPFIX decoder and its bounded per-exporter
//! state (templates, buffered data sets, sampling, sequence numbers).
//!
//! State is keyed by the exporter's socket address (RFC 7011 §10.3: templates belong to a
//! transport session), then by (version, observation domain / source id). Every collection is
//! bounded by [`Limits`]; time-based expiry uses only the `now` the caller passes.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::netflow5;
use crate::record::{DomainInfo, FlowRecord};
use crate::stats::{DecodeSummary, FlowStats};
use crate::templated::{self, FieldSpec, Flavor, Template};

/// Bounds and timeouts of a [`FlowDecoder`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Exporters tracked at once; the least recently seen is evicted for a new one.
    pub max_exporters: usize,
    /// Templates per exporter (all domains and versions); further new templates are rejected.
    pub max_templates_per_exporter: usize,
    /// Observation domains / source ids per exporter.
    pub max_domains_per_exporter: usize,
    /// Fields per template; templates with more are rejected as absurd.
    pub max_template_fields: usize,
    /// Minimum encoded record length a template may declare (sum of fixed lengths).
    pub max_record_length: usize,
    /// A template not refreshed for this long is dropped.
    pub template_ttl: Duration,
    /// Data sets buffered per exporter while their template is unknown (0 disables buffering).
    pub max_pending_sets_per_exporter: usize,
    /// Bytes of buffered data sets per exporter.
    pub max_pending_bytes_per_exporter: usize,
    /// Bytes of buffered data sets over all exporters.
    pub max_pending_bytes_total: usize,
    /// A buffered data set older than this is dropped by [`FlowDecoder::expire`].
    pub pending_ttl: Duration,
    /// Sampler / selector ids remembered per domain (from options data).
    pub max_samplers_per_domain: usize,
    /// Sequence jumps up to this many flows/packets count as loss; larger ones as a reset.
    pub max_sequence_gap: u32,
    /// Exporters silent for this long are forgotten by [`FlowDecoder::expire`].
    pub exporter_idle_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_exporters: 1024,
            max_templates_per_exporter: 512,
            max_domains_per_exporter: 64,
            max_template_fields: 256,
            max_record_length: 16 * 1024,
            template_ttl: Duration::minutes(30),
            max_pending_sets_per_exporter: 64,
            max_pending_bytes_per_exporter: 256 * 1024,
            max_pending_bytes_total: 8 * 1024 * 1024,
            pending_ttl: Duration::seconds(120),
            max_samplers_per_domain: 64,
            max_sequence_gap: 1_000_000,
            exporter_idle_ttl: Duration::hours(2),
        }
    }
}

/// Template cache key inside one exporter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TemplateKey {
    pub version: u16,
    pub domain: u32,
    pub id: u16,
}

/// Domain key inside one exporter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct DomainKey {
    pub version: u16,
    pub domain: u32,
}

/// Sequence tracking and normalization state of one observation domain.
#[derive(Clone, Debug, Default)]
pub(crate) struct DomainState {
    pub next_sequence: Option<u32>,
    pub info: DomainInfo,
}

/// Export header values needed to decode a data set later.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeaderInfo {
    pub sequence: u32,
    pub export_time: DateTime<Utc>,
    pub uptime_ms: Option<u32>,
}

/// A data set waiting for its template.
#[derive(Clone, Debug)]
pub(crate) struct PendingSet {
    pub key: TemplateKey,
    pub header: HeaderInfo,
    pub data: Vec<u8>,
    pub received: DateTime<Utc>,
}

/// Everything known about one exporter.
#[derive(Debug)]
pub(crate) struct ExporterState {
    pub last_seen: DateTime<Utc>,
    pub templates: HashMap<TemplateKey, Template>,
    pub domains: HashMap<DomainKey, DomainState>,
    pub pending: VecDeque<PendingSet>,
    pub pending_bytes: usize,
}

impl ExporterState {
    fn new(now: DateTime<Utc>) -> Self {
        ExporterState {
            last_seen: now,
            templates: HashMap::new(),
            domains: HashMap::new(),
            pending: VecDeque::new(),
            pending_bytes: 0,
        }
    }
}

/// Decoder-wide mutable parts handed to the protocol modules next to one exporter's state.
pub(crate) struct Shared<'a> {
    pub limits: &'a Limits,
    pub stats: &'a mut FlowStats,
    pub pending_total: &'a mut usize,
}

/// Stateful decoder for NetFlow v5, NetFlow v9 and IPFIX datagrams.
#[derive(Debug)]
pub struct FlowDecoder {
    limits: Limits,
    stats: FlowStats,
    exporters: HashMap<SocketAddr, ExporterState>,
    pending_total: usize,
}

/// Serializable copy of the template cache (e.g. to survive a restart).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateSnapshot {
    /// All templates, sorted by exporter, version, domain and id.
    pub templates: Vec<SnapshotTemplate>,
}

/// One template in a [`TemplateSnapshot`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotTemplate {
    /// Exporter socket address.
    pub exporter: SocketAddr,
    /// 9 or 10.
    pub version: u16,
    /// Source id / observation domain.
    pub domain: u32,
    /// Template id.
    pub template_id: u16,
    /// Options template?
    pub options: bool,
    /// Field specifiers: (enterprise number, element id, length, is scope field).
    pub fields: Vec<(u32, u16, u16, bool)>,
}

impl FlowDecoder {
    /// A decoder with the given limits and empty state.
    pub fn new(limits: Limits) -> Self {
        FlowDecoder {
            limits,
            stats: FlowStats::default(),
            exporters: HashMap::new(),
            pending_total: 0,
        }
    }

    /// Cumulative counters.
    pub fn stats(&self) -> &FlowStats {
        &self.stats
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Number of exporters with state.
    pub fn exporter_count(&self) -> usize {
        self.exporters.len()
    }

    /// Number of cached templates over all exporters.
    pub fn template_count(&self) -> usize {
        self.exporters.values().map(|e| e.templates.len()).sum()
    }

    /// Number of buffered data sets and their total bytes.
    pub fn pending(&self) -> (usize, usize) {
        let sets = self.exporters.values().map(|e| e.pending.len()).sum();
        (sets, self.pending_total)
    }

    /// Decodes one UDP payload from `exporter` received at `now`, appending records to `out`.
    ///
    /// The version is read from the first two bytes (5, 9 or 10). Only the first export packet
    /// of the payload is decoded; extra bytes are reported in [`DecodeSummary::trailing_bytes`].
    pub fn decode(
        &mut self,
        exporter: SocketAddr,
        payload: &[u8],
        now: DateTime<Utc>,
        out: &mut Vec<FlowRecord>,
    ) -> Result<DecodeSummary, DecodeError> {
        self.stats.datagrams += 1;
        let result = self.decode_inner(exporter, payload, now, out);
        match &result {
            Ok(summary) => {
                if summary.trailing_bytes > 0 {
                    self.stats.datagrams_with_trailing_bytes += 1;
                }
            }
            Err(err) => {
                self.stats.datagrams_rejected += 1;
                match err {
                    DecodeError::Empty | DecodeError::TruncatedHeader { .. } => {
                        self.stats.rejected_truncated_header += 1
                    }
                    DecodeError::UnknownVersion { .. } => self.stats.rejected_unknown_version += 1,
                    _ => self.stats.rejected_bad_length += 1,
                }
            }
        }
        result
    }

    fn decode_inner(
        &mut self,
        exporter: SocketAddr,
        payload: &[u8],
        now: DateTime<Utc>,
        out: &mut Vec<FlowRecord>,
    ) -> Result<DecodeSummary, DecodeError> {
        let version = match payload {
            [] => return Err(DecodeError::Empty),
            [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
            [_] => {
                return Err(DecodeError::TruncatedHeader {
                    protocol: "netflow/ipfix",
                    need: 2,
                    have: payload.len(),
                })
            }
        };
        match version {
            5 => {
                let header = netflow5::parse_header(payload)?;
                let (shared, state) = self.exporter_state(exporter, now);
                Ok(netflow5::decode(
                    shared, state, exporter, &header, payload, now, out,
                ))
            }
            9 | 10 => {
                let flavor = if version == 9 {
                    Flavor::V9
                } else {
                    Flavor::Ipfix
                };
                let header = templated::parse_header(flavor, payload)?;
                templated::check_structure(flavor, &header, payload)?;
                let (shared, state) = self.exporter_state(exporter, now);
                Ok(templated::decode(
                    shared, state, exporter, flavor, &header, payload, now, out,
                ))
            }
            other => Err(DecodeError::UnknownVersion {
                protocol: "netflow/ipfix",
                version: u32::from(other),
            }),
        }
    }

    /// State of `exporter`, created (evicting the least recently seen exporter if needed).
    fn exporter_state(
        &mut self,
        exporter: SocketAddr,
        now: DateTime<Utc>,
    ) -> (Shared<'_>, &mut ExporterState) {
        if !self.exporters.contains_key(&exporter)
            && self.exporters.len() >= self.limits.max_exporters.max(1)
        {
            let oldest = self
                .exporters
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(addr, _)| *addr);
            if let Some(addr) = oldest {
                if let Some(gone) = self.exporters.remove(&addr) {
                    self.pending_total = self.pending_total.saturating_sub(gone.pending_bytes);
                    self.stats.exporters_evicted += 1;
                }
            }
        }
        let state = self
            .exporters
            .entry(exporter)
            .or_insert_with(|| ExporterState::new(now));
        if now > state.last_seen {
            state.last_seen = now;
        }
        (
            Shared {
                limits: &self.limits,
                stats: &mut self.stats,
                pending_total: &mut self.pending_total,
            },
            state,
        )
    }

    /// Drops templates not refreshed within `template_ttl`, buffered data sets older than
    /// `pending_ttl` and exporters idle for `exporter_idle_ttl`, as of `now`.
    pub fn expire(&mut self, now: DateTime<Utc>) {
        let limits = &self.limits;
        let stats = &mut self.stats;
        let mut freed = 0usize;
        for state in self.exporters.values_mut() {
            let before = state.templates.len();
            state
                .templates
                .retain(|_, t| now.signed_duration_since(t.last_seen) <= limits.template_ttl);
            stats.templates_expired += (before - state.templates.len()) as u64;
            while let Some(front) = state.pending.front() {
                if now.signed_duration_since(front.received) <= limits.pending_ttl {
                    break;
                }
                if let Some(gone) = state.pending.pop_front() {
                    state.pending_bytes = state.pending_bytes.saturating_sub(gone.data.len());
                    freed += gone.data.len();
                    stats.pending_expired += 1;
                }
            }
        }
        self.pending_total = self.pending_total.saturating_sub(freed);
        let before = self.exporters.len();
        let mut freed_idle = 0usize;
        self.exporters.retain(|_, s| {
            let keep = now.signed_duration_since(s.last_seen) <= limits.exporter_idle_ttl;
            if !keep {
                freed_idle += s.pending_bytes;
            }
            keep
        });
        self.pending_total = self.pending_total.saturating_sub(freed_idle);
        stats.exporters_expired += (before - self.exporters.len()) as u64;
    }

    /// Copies the template cache.
    pub fn snapshot_templates(&self) -> TemplateSnapshot {
        let mut templates: Vec<SnapshotTemplate> = self
            .exporters
            .iter()
            .flat_map(|(addr, state)| {
                state
                    .templates
                    .iter()
                    .map(move |(key, t)| SnapshotTemplate {
                        exporter: *addr,
                        version: key.version,
                        domain: key.domain,
                        template_id: key.id,
                        options: t.options,
                        fields: t
                            .specs
                            .iter()
                            .map(|s| (s.pen, s.id, s.length, s.scope))
                            .collect(),
                    })
            })
            .collect();
        templates.sort_by(|a, b| {
            (a.exporter, a.version, a.domain, a.template_id).cmp(&(
                b.exporter,
                b.version,
                b.domain,
                b.template_id,
            ))
        });
        TemplateSnapshot { templates }
    }

    /// Loads templates from a snapshot as if they had been received at `now`. Templates are
    /// validated and bounded like received ones; returns how many were accepted.
    pub fn restore_templates(&mut self, snapshot: &TemplateSnapshot, now: DateTime<Utc>) -> usize {
        let mut accepted = 0;
        for t in &snapshot.templates {
            let flavor = match t.version {
                9 => Flavor::V9,
                10 => Flavor::Ipfix,
                _ => continue,
            };
            let specs: Vec<FieldSpec> = t
                .fields
                .iter()
                .map(|&(pen, id, length, scope)| FieldSpec {
                    pen,
                    id,
                    length,
                    scope,
                })
                .collect();
            let key = TemplateKey {
                version: t.version,
                domain: t.domain,
                id: t.template_id,
            };
            let (mut shared, state) = self.exporter_state(t.exporter, now);
            if templated::register_template(&mut shared, state, flavor, key, specs, t.options, now)
            {
                accepted += 1;
            }
        }
        accepted
    }
}

/// Looks up or creates the state of a domain, honouring `max_domains_per_exporter`.
pub(crate) fn domain_state<'s>(
    shared: &mut Shared<'_>,
    domains: &'s mut HashMap<DomainKey, DomainState>,
    key: DomainKey,
) -> Option<&'s mut DomainState> {
    if !domains.contains_key(&key) && domains.len() >= shared.limits.max_domains_per_exporter {
        shared.stats.domains_rejected_limit += 1;
        return None;
    }
    Some(domains.entry(key).or_default())
}

/// Compares a sequence number with the expected one; returns the loss to count (in the
/// protocol's unit) and updates the stats. `next` becomes the expectation for the next packet.
pub(crate) fn check_sequence(
    shared: &mut Shared<'_>,
    expected: Option<u32>,
    got: u32,
    packets_unit: bool,
) -> u64 {
    let Some(expected) = expected else { return 0 };
    let diff = got.wrapping_sub(expected);
    if diff == 0 {
        return 0;
    }
    if diff <= shared.limits.max_sequence_gap {
        let lost = u64::from(diff);
        if packets_unit {
            shared.stats.sequence_lost_packets += lost;
        } else {
            shared.stats.sequence_lost_flows += lost;
        }
        lost
    } else {
        shared.stats.sequence_resets += 1;
        0
    }
}
