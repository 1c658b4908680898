//! Template-based exports: NetFlow v9 (RFC 3954) and IPFIX (RFC 7011).
//!
//! One datagram = one export packet (IPFIX: up to the header length; extra bytes are trailing).
//! Sets are walked in order: template and options-template sets update the per-exporter cache
//! (refresh, change, withdrawal, absurd-template rejection, flood limit); data sets are decoded
//! with their template, or buffered until it arrives (bounded), then decoded. Options data
//! records update the domain's sampling rate and system init time and are emitted as
//! [`RecordKind::Options`] records. Sequence numbers: v9 counts export packets, IPFIX counts
//! data records.

use std::borrow::Cow;
use std::net::SocketAddr;

use chrono::{DateTime, TimeZone, Utc};

use crate::decoder::{
    check_sequence, domain_state, DomainKey, DomainState, ExporterState, HeaderInfo, PendingSet,
    Shared, TemplateKey,
};
use crate::error::DecodeError;
use crate::fields::{decode_value, ipfix_field, v9_field, v9_scope_name, FieldKind, Role};
use crate::record::{FlowRecord, FlowSource, RecordBuilder, RecordCtx, RecordKind};
use crate::stats::DecodeSummary;

/// Variable-length marker in a field specifier.
const VARIABLE: u16 = 0xffff;

/// NetFlow v9 or IPFIX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavor {
    V9,
    Ipfix,
}

impl Flavor {
    fn version(self) -> u16 {
        match self {
            Flavor::V9 => 9,
            Flavor::Ipfix => 10,
        }
    }
}

/// A field specifier as sent by the exporter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FieldSpec {
    pub pen: u32,
    pub id: u16,
    pub length: u16,
    pub scope: bool,
}

/// A field specifier resolved against the name table.
#[derive(Clone, Debug)]
pub(crate) struct TemplateField {
    length: u16,
    name: Cow<'static, str>,
    kind: FieldKind,
    role: Role,
}

/// A cached template.
#[derive(Clone, Debug)]
pub(crate) struct Template {
    pub specs: Vec<FieldSpec>,
    fields: Vec<TemplateField>,
    pub options: bool,
    /// Smallest possible encoded record (fixed lengths + 1 byte per variable-length field).
    min_len: usize,
    pub last_seen: DateTime<Utc>,
}

impl Template {
    fn build(flavor: Flavor, specs: Vec<FieldSpec>, options: bool, now: DateTime<Utc>) -> Self {
        let mut min_len = 0usize;
        let fields = specs
            .iter()
            .map(|s| {
                min_len += if s.length == VARIABLE {
                    1
                } else {
                    usize::from(s.length)
                };
                let (name, kind, role) = match flavor {
                    Flavor::V9 if s.scope => (v9_scope_name(s.id), FieldKind::Unsigned, Role::None),
                    Flavor::V9 => v9_field(s.id),
                    Flavor::Ipfix => ipfix_field(s.pen, s.id),
                };
                TemplateField {
                    length: s.length,
                    name,
                    kind,
                    role,
                }
            })
            .collect();
        Template {
            specs,
            fields,
            options,
            min_len,
            last_seen: now,
        }
    }
}

/// Parsed export header.
pub(crate) struct Header {
    info: HeaderInfo,
    domain: u32,
    /// Body of the export packet (after the header, up to the IPFIX length).
    body_start: usize,
    body_end: usize,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    match b.get(at..at.checked_add(2)?)? {
        &[x, y] => Some(u16::from_be_bytes([x, y])),
        _ => None,
    }
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    match b.get(at..at.checked_add(4)?)? {
        &[a, c, d, e] => Some(u32::from_be_bytes([a, c, d, e])),
        _ => None,
    }
}

pub(crate) fn parse_header(flavor: Flavor, payload: &[u8]) -> Result<Header, DecodeError> {
    let (protocol, need) = match flavor {
        Flavor::V9 => ("NetFlow v9", 20),
        Flavor::Ipfix => ("IPFIX", 16),
    };
    let truncated = || DecodeError::TruncatedHeader {
        protocol,
        need,
        have: payload.len(),
    };
    if payload.len() < need {
        return Err(truncated());
    }
    match flavor {
        Flavor::V9 => {
            let uptime = be32(payload, 4).ok_or_else(truncated)?;
            let secs = be32(payload, 8).ok_or_else(truncated)?;
            let sequence = be32(payload, 12).ok_or_else(truncated)?;
            let domain = be32(payload, 16).ok_or_else(truncated)?;
            Ok(Header {
                info: HeaderInfo {
                    sequence,
                    export_time: Utc
                        .timestamp_opt(i64::from(secs), 0)
                        .single()
                        .unwrap_or_default(),
                    uptime_ms: Some(uptime),
                },
                domain,
                body_start: need,
                body_end: payload.len(),
            })
        }
        Flavor::Ipfix => {
            let length = usize::from(be16(payload, 2).ok_or_else(truncated)?);
            if length < need || length > payload.len() {
                return Err(DecodeError::BadLength {
                    protocol,
                    declared: length,
                    have: payload.len(),
                });
            }
            let secs = be32(payload, 4).ok_or_else(truncated)?;
            let sequence = be32(payload, 8).ok_or_else(truncated)?;
            let domain = be32(payload, 12).ok_or_else(truncated)?;
            Ok(Header {
                info: HeaderInfo {
                    sequence,
                    export_time: Utc
                        .timestamp_opt(i64::from(secs), 0)
                        .single()
                        .unwrap_or_default(),
                    uptime_ms: None,
                },
                domain,
                body_start: need,
                body_end: length,
            })
        }
    }
}

/// Walks the set headers before anything is decoded, so a truncated or corrupt packet is
/// rejected as a whole (no partial output). A v9 flowset of length 0 ends the packet (zero
/// padding); fewer than 4 zero bytes after the last v9 flowset are padding too.
pub(crate) fn check_structure(
    flavor: Flavor,
    header: &Header,
    payload: &[u8],
) -> Result<(), DecodeError> {
    let body = payload
        .get(header.body_start..header.body_end)
        .unwrap_or_default();
    let protocol = match flavor {
        Flavor::V9 => "NetFlow v9",
        Flavor::Ipfix => "IPFIX",
    };
    let mut off = 0usize;
    while off < body.len() {
        let remaining = body.len() - off;
        let (Some(_), Some(len)) = (be16(body, off), be16(body, off + 2)) else {
            let tail = body.get(off..).unwrap_or_default();
            if flavor == Flavor::V9 && tail.iter().all(|b| *b == 0) {
                return Ok(());
            }
            return Err(DecodeError::BadSetLength {
                protocol,
                offset: header.body_start + off,
                length: 0,
                remaining,
            });
        };
        let len = usize::from(len);
        if flavor == Flavor::V9 && len == 0 {
            return Ok(());
        }
        if len < 4 || len > remaining {
            return Err(DecodeError::BadSetLength {
                protocol,
                offset: header.body_start + off,
                length: len,
                remaining,
            });
        }
        off += len;
    }
    Ok(())
}

/// Outcome of decoding one data set.
struct SetResult {
    records: usize,
    options: usize,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn decode(
    mut shared: Shared<'_>,
    state: &mut ExporterState,
    exporter: SocketAddr,
    flavor: Flavor,
    header: &Header,
    payload: &[u8],
    now: DateTime<Utc>,
    out: &mut Vec<FlowRecord>,
) -> DecodeSummary {
    let version = flavor.version();
    let mut summary = DecodeSummary {
        version,
        trailing_bytes: payload.len().saturating_sub(header.body_end),
        ..DecodeSummary::default()
    };
    let dkey = DomainKey {
        version,
        domain: header.domain,
    };
    if domain_state(&mut shared, &mut state.domains, dkey).is_none() {
        summary.sets_skipped = 1;
        return summary;
    }
    let body = payload
        .get(header.body_start..header.body_end)
        .unwrap_or_default();

    // v9 counts export packets: check right away.
    if flavor == Flavor::V9 {
        if let Some(domain) = state.domains.get_mut(&dkey) {
            summary.lost = check_sequence(
                &mut shared,
                domain.next_sequence,
                header.info.sequence,
                true,
            );
            domain.next_sequence = Some(header.info.sequence.wrapping_add(1));
        }
    }
    // IPFIX counts data records: only known if every data set of this message was decoded.
    let mut message_records: Option<u32> = Some(0);

    let mut off = 0usize;
    while let (Some(set_id), Some(set_len)) = (be16(body, off), be16(body, off + 2)) {
        let set_len = usize::from(set_len);
        if flavor == Flavor::V9 && set_len == 0 {
            // A zero-length flowset ends the packet (zero padding after the last flowset).
            break;
        }
        let Some(set_body) = (set_len >= 4)
            .then(|| body.get(off + 4..off + set_len))
            .flatten()
        else {
            shared.stats.sets_malformed += 1;
            summary.sets_skipped += 1;
            message_records = None;
            break;
        };
        off += set_len;

        let (template_set, options_set) = match flavor {
            Flavor::V9 => (0, 1),
            Flavor::Ipfix => (2, 3),
        };
        if set_id == template_set || set_id == options_set {
            let learned = parse_template_set(
                &mut shared,
                state,
                flavor,
                header.domain,
                set_id,
                set_id == options_set,
                set_body,
                now,
                &mut summary,
            );
            for key in learned {
                decode_pending(
                    &mut shared,
                    state,
                    exporter,
                    flavor,
                    key,
                    now,
                    out,
                    &mut summary,
                );
            }
        } else if set_id < 256 {
            shared.stats.sets_reserved += 1;
            summary.sets_skipped += 1;
        } else {
            let key = TemplateKey {
                version,
                domain: header.domain,
                id: set_id,
            };
            if template_usable(&mut shared, state, key, now) {
                let result = decode_data_set(
                    &mut shared,
                    state,
                    exporter,
                    flavor,
                    key,
                    &header.info,
                    set_body,
                    now,
                    out,
                );
                summary.records += result.records;
                summary.options_records += result.options;
                message_records = message_records
                    .map(|n| n.wrapping_add(u32::try_from(result.records).unwrap_or(u32::MAX)));
            } else {
                message_records = None;
                buffer_pending(
                    &mut shared,
                    state,
                    key,
                    header.info,
                    set_body,
                    now,
                    &mut summary,
                );
            }
        }
    }

    if flavor == Flavor::Ipfix {
        if let Some(domain) = state.domains.get_mut(&dkey) {
            summary.lost = check_sequence(
                &mut shared,
                domain.next_sequence,
                header.info.sequence,
                false,
            );
            domain.next_sequence = message_records.map(|n| header.info.sequence.wrapping_add(n));
        }
    }
    summary
}

/// True when `key` has a template that has not timed out (an expired one is removed).
fn template_usable(
    shared: &mut Shared<'_>,
    state: &mut ExporterState,
    key: TemplateKey,
    now: DateTime<Utc>,
) -> bool {
    let Some(t) = state.templates.get(&key) else {
        return false;
    };
    if now.signed_duration_since(t.last_seen) > shared.limits.template_ttl {
        state.templates.remove(&key);
        shared.stats.templates_expired += 1;
        return false;
    }
    true
}

/// Parses a (options) template set; returns the keys of templates now usable.
#[allow(clippy::too_many_arguments)]
fn parse_template_set(
    shared: &mut Shared<'_>,
    state: &mut ExporterState,
    flavor: Flavor,
    domain: u32,
    set_id: u16,
    options: bool,
    body: &[u8],
    now: DateTime<Utc>,
    summary: &mut DecodeSummary,
) -> Vec<TemplateKey> {
    let version = flavor.version();
    let max_fields = shared.limits.max_template_fields;
    let mut learned = Vec::new();
    let mut p = 0usize;
    while let Some(tid) = be16(body, p) {
        let (specs, next) = match (flavor, options) {
            (Flavor::V9, true) => {
                // template id, scope length (bytes), option length (bytes), specifiers
                let (Some(scope_len), Some(opt_len)) = (be16(body, p + 2), be16(body, p + 4))
                else {
                    break;
                };
                if tid < 256 {
                    break; // padding
                }
                let (scope_len, opt_len) = (usize::from(scope_len), usize::from(opt_len));
                let count = (scope_len + opt_len) / 4;
                if scope_len % 4 != 0 || opt_len % 4 != 0 || count == 0 || count > max_fields {
                    shared.stats.templates_invalid_field_count += 1;
                    break;
                }
                let start = p + 6;
                let Some(raw) = body.get(start..start + scope_len + opt_len) else {
                    shared.stats.templates_truncated += 1;
                    break;
                };
                let specs: Vec<FieldSpec> = raw
                    .chunks_exact(4)
                    .enumerate()
                    .map(|(i, c)| FieldSpec {
                        pen: 0,
                        id: u16::from_be_bytes([c[0], c[1]]),
                        length: u16::from_be_bytes([c[2], c[3]]),
                        scope: i < scope_len / 4,
                    })
                    .collect();
                (specs, start + scope_len + opt_len)
            }
            _ => {
                let Some(count) = be16(body, p + 2) else {
                    break;
                };
                let count = usize::from(count);
                if count == 0 {
                    // IPFIX withdrawal (v9 has none: treat as padding/invalid).
                    if flavor == Flavor::Ipfix && (tid == set_id || tid >= 256) {
                        withdraw(shared, state, version, domain, tid, set_id, options);
                        summary.templates += 1;
                        p += 4;
                        continue;
                    }
                    if tid >= 256 {
                        shared.stats.templates_invalid_field_count += 1;
                    }
                    break;
                }
                if tid < 256 {
                    shared.stats.templates_invalid_field_count += 1;
                    break;
                }
                if count > max_fields {
                    shared.stats.templates_invalid_field_count += 1;
                    break;
                }
                let mut q = p + 4;
                let mut scope_count = 0usize;
                if options && flavor == Flavor::Ipfix {
                    let Some(sc) = be16(body, q) else {
                        shared.stats.templates_truncated += 1;
                        break;
                    };
                    scope_count = usize::from(sc);
                    if scope_count == 0 || scope_count > count {
                        shared.stats.templates_invalid_field_count += 1;
                        break;
                    }
                    q += 2;
                }
                let mut specs = Vec::with_capacity(count);
                let mut truncated = false;
                for i in 0..count {
                    let (Some(raw_id), Some(length)) = (be16(body, q), be16(body, q + 2)) else {
                        truncated = true;
                        break;
                    };
                    q += 4;
                    let mut pen = 0;
                    if flavor == Flavor::Ipfix && raw_id & 0x8000 != 0 {
                        let Some(e) = be32(body, q) else {
                            truncated = true;
                            break;
                        };
                        pen = e;
                        q += 4;
                    }
                    specs.push(FieldSpec {
                        pen,
                        id: if flavor == Flavor::Ipfix {
                            raw_id & 0x7fff
                        } else {
                            raw_id
                        },
                        length,
                        scope: i < scope_count,
                    });
                }
                if truncated {
                    shared.stats.templates_truncated += 1;
                    break;
                }
                (specs, q)
            }
        };
        p = next;
        summary.templates += 1;
        let key = TemplateKey {
            version,
            domain,
            id: tid,
        };
        if register_template(shared, state, flavor, key, specs, options, now) {
            learned.push(key);
        }
    }
    learned
}

/// Validates and stores a template. Returns true when the key now has this template.
pub(crate) fn register_template(
    shared: &mut Shared<'_>,
    state: &mut ExporterState,
    flavor: Flavor,
    key: TemplateKey,
    specs: Vec<FieldSpec>,
    options: bool,
    now: DateTime<Utc>,
) -> bool {
    let limits = shared.limits;
    let stats = &mut *shared.stats;
    stats.templates_received += 1;
    if specs.is_empty() || specs.len() > limits.max_template_fields {
        stats.templates_invalid_field_count += 1;
        return false;
    }
    let template = Template::build(flavor, specs, options, now);
    if template.min_len == 0 || template.min_len > limits.max_record_length {
        stats.templates_invalid_length += 1;
        return false;
    }
    if let Some(existing) = state.templates.get_mut(&key) {
        if existing.specs == template.specs && existing.options == template.options {
            existing.last_seen = now;
            stats.templates_refreshed += 1;
        } else {
            *existing = template;
            stats.templates_changed += 1;
        }
        return true;
    }
    if state.templates.len() >= limits.max_templates_per_exporter {
        stats.templates_rejected_limit += 1;
        return false;
    }
    state.templates.insert(key, template);
    true
}

fn withdraw(
    shared: &mut Shared<'_>,
    state: &mut ExporterState,
    version: u16,
    domain: u32,
    tid: u16,
    set_id: u16,
    options: bool,
) {
    if tid == set_id {
        let before = state.templates.len();
        state
            .templates
            .retain(|k, t| !(k.version == version && k.domain == domain && t.options == options));
        shared.stats.templates_withdrawn += (before - state.templates.len()) as u64;
    } else if state
        .templates
        .remove(&TemplateKey {
            version,
            domain,
            id: tid,
        })
        .is_some()
    {
        shared.stats.templates_withdrawn += 1;
    }
}

fn buffer_pending(
    shared: &mut Shared<'_>,
    state: &mut ExporterState,
    key: TemplateKey,
    header: HeaderInfo,
    data: &[u8],
    now: DateTime<Utc>,
    summary: &mut DecodeSummary,
) {
    let limits = shared.limits;
    let size = data.len();
    if limits.max_pending_sets_per_exporter == 0
        || size > limits.max_pending_bytes_per_exporter
        || size > limits.max_pending_bytes_total
    {
        shared.stats.pending_dropped += 1;
        summary.sets_skipped += 1;
        return;
    }
    // Make room: oldest first, within this exporter.
    while state.pending.len() >= limits.max_pending_sets_per_exporter
        || state.pending_bytes + size > limits.max_pending_bytes_per_exporter
        || *shared.pending_total + size > limits.max_pending_bytes_total
    {
        let Some(old) = state.pending.pop_front() else {
            // Other exporters hold the global budget: drop the new set.
            shared.stats.pending_dropped += 1;
            summary.sets_skipped += 1;
            return;
        };
        state.pending_bytes = state.pending_bytes.saturating_sub(old.data.len());
        *shared.pending_total = shared.pending_total.saturating_sub(old.data.len());
        shared.stats.pending_evicted += 1;
        shared.stats.pending_evicted_bytes += old.data.len() as u64;
    }
    state.pending.push_back(PendingSet {
        key,
        header,
        data: data.to_vec(),
        received: now,
    });
    state.pending_bytes += size;
    *shared.pending_total += size;
    shared.stats.pending_buffered += 1;
    summary.sets_buffered += 1;
}

#[allow(clippy::too_many_arguments)]
fn decode_pending(
    shared: &mut Shared<'_>,
    state: &mut ExporterState,
    exporter: SocketAddr,
    flavor: Flavor,
    key: TemplateKey,
    now: DateTime<Utc>,
    out: &mut Vec<FlowRecord>,
    summary: &mut DecodeSummary,
) {
    if !state.pending.iter().any(|p| p.key == key) {
        return;
    }
    let (ready, keep): (Vec<PendingSet>, Vec<PendingSet>) = std::mem::take(&mut state.pending)
        .into_iter()
        .partition(|p| p.key == key);
    state.pending = keep.into();
    for set in ready {
        state.pending_bytes = state.pending_bytes.saturating_sub(set.data.len());
        *shared.pending_total = shared.pending_total.saturating_sub(set.data.len());
        shared.stats.pending_decoded += 1;
        summary.sets_from_buffer += 1;
        let result = decode_data_set(
            shared,
            state,
            exporter,
            flavor,
            key,
            &set.header,
            &set.data,
            now,
            out,
        );
        summary.records += result.records;
        summary.options_records += result.options;
    }
}

/// Reads the length of a variable-length field at `pos`: returns (length, header bytes).
fn variable_length(data: &[u8], pos: usize) -> Option<(usize, usize)> {
    let first = *data.get(pos)?;
    if first < 255 {
        Some((usize::from(first), 1))
    } else {
        Some((usize::from(be16(data, pos + 1)?), 3))
    }
}

#[allow(clippy::too_many_arguments)]
fn decode_data_set(
    shared: &mut Shared<'_>,
    state: &mut ExporterState,
    exporter: SocketAddr,
    flavor: Flavor,
    key: TemplateKey,
    header: &HeaderInfo,
    data: &[u8],
    now: DateTime<Utc>,
    out: &mut Vec<FlowRecord>,
) -> SetResult {
    let mut result = SetResult {
        records: 0,
        options: 0,
    };
    let Some(template) = state.templates.get(&key) else {
        return result;
    };
    let dkey = DomainKey {
        version: key.version,
        domain: key.domain,
    };
    let Some(domain) = state.domains.get_mut(&dkey) else {
        return result;
    };
    let ctx = RecordCtx {
        kind: if template.options {
            RecordKind::Options
        } else {
            RecordKind::Flow
        },
        source: match flavor {
            Flavor::V9 => FlowSource::NetflowV9,
            Flavor::Ipfix => FlowSource::Ipfix,
        },
        version: key.version,
        exporter,
        domain: key.domain,
        template_id: Some(key.id),
        sequence: header.sequence,
        export_time: header.export_time,
        uptime_ms: header.uptime_ms,
        received_at: now,
    };
    let mut pos = 0usize;
    while template.min_len > 0 && data.len().saturating_sub(pos) >= template.min_len {
        let mut b = RecordBuilder::with_capacity(template.fields.len());
        let mut complete = true;
        for f in &template.fields {
            if f.length == 0 {
                continue; // fields declared with length 0 carry nothing
            }
            let (len, skip) = if f.length == VARIABLE {
                match variable_length(data, pos) {
                    Some(v) => v,
                    None => {
                        complete = false;
                        break;
                    }
                }
            } else {
                (usize::from(f.length), 0)
            };
            let start = pos + skip;
            let Some(bytes) = data.get(start..start + len) else {
                complete = false;
                break;
            };
            pos = start + len;
            if let Some(value) = decode_value(f.kind, bytes) {
                b.apply(f.role, &value);
                b.push(f.name.clone(), value);
            }
        }
        if !complete {
            shared.stats.records_truncated += 1;
            break;
        }
        if template.options {
            apply_options(shared, domain, &b);
            result.options += 1;
        }
        out.push(b.finish(&ctx, Some(&domain.info)));
        result.records += 1;
    }
    if template.options {
        shared.stats.options_records += result.options as u64;
    } else {
        shared.stats.flow_records += result.records as u64;
    }
    result
}

/// Options data: remember sampling rates (per sampler id when given) and system init time.
fn apply_options(shared: &mut Shared<'_>, domain: &mut DomainState, b: &RecordBuilder) {
    if let Some(rate) = b.sampling_rate_here() {
        match b.sampler_id() {
            Some(id) => {
                let samplers = &mut domain.info.samplers;
                if samplers.contains_key(&id)
                    || samplers.len() < shared.limits.max_samplers_per_domain
                {
                    samplers.insert(id, rate);
                }
                domain.info.sampling_rate = Some(rate);
            }
            None => domain.info.sampling_rate = Some(rate),
        }
    }
    if let Some(init) = b.system_init_ms {
        domain.info.system_init_ms = Some(init);
    }
}
