//! Counters the service exports as metrics, and the per-datagram summary.

use serde::Serialize;

/// Cumulative decoder counters (monotonic; never reset by the decoder).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FlowStats {
    /// Datagrams passed to `decode`.
    pub datagrams: u64,
    /// Datagrams rejected with a [`crate::DecodeError`], all reasons.
    pub datagrams_rejected: u64,
    /// ... because they were empty or shorter than the header.
    pub rejected_truncated_header: u64,
    /// ... because of an unknown version.
    pub rejected_unknown_version: u64,
    /// ... because of a header length / record count that does not fit the datagram.
    pub rejected_bad_length: u64,
    /// Datagrams with bytes after the first export packet (ignored).
    pub datagrams_with_trailing_bytes: u64,
    /// Flow records produced.
    pub flow_records: u64,
    /// Options data records produced.
    pub options_records: u64,
    /// v9 flowsets / IPFIX sets whose length field is invalid (< 4 or past the end).
    pub sets_malformed: u64,
    /// IPFIX sets with a reserved id (4..=255) or v9 flowsets with id 2..=255, skipped.
    pub sets_reserved: u64,
    /// Data records cut short by the end of their set (partial record dropped).
    pub records_truncated: u64,
    /// Template records received (including refreshes).
    pub templates_received: u64,
    /// Template re-sent unchanged (timestamp refreshed).
    pub templates_refreshed: u64,
    /// Template re-sent with a different layout (replaced).
    pub templates_changed: u64,
    /// Templates withdrawn (IPFIX field count 0).
    pub templates_withdrawn: u64,
    /// Templates removed because they were not refreshed within `template_ttl`.
    pub templates_expired: u64,
    /// Templates rejected: truncated template record.
    pub templates_truncated: u64,
    /// Templates rejected: field count 0 (v9) / scope count invalid / above `max_template_fields`.
    pub templates_invalid_field_count: u64,
    /// Templates rejected: record length 0 or above `max_record_length`.
    pub templates_invalid_length: u64,
    /// Templates rejected because the exporter already has `max_templates_per_exporter` (floods).
    pub templates_rejected_limit: u64,
    /// Domains rejected because the exporter already has `max_domains_per_exporter`.
    pub domains_rejected_limit: u64,
    /// Exporter state evicted to make room for a new exporter (`max_exporters`).
    pub exporters_evicted: u64,
    /// Exporter state removed by `expire` after `exporter_idle_ttl`.
    pub exporters_expired: u64,
    /// Data sets buffered because their template was unknown.
    pub pending_buffered: u64,
    /// Buffered data sets decoded after their template arrived.
    pub pending_decoded: u64,
    /// Buffered data sets evicted to stay within the pending limits.
    pub pending_evicted: u64,
    /// Bytes of evicted buffered data sets.
    pub pending_evicted_bytes: u64,
    /// Buffered data sets dropped by `expire` after `pending_ttl`.
    pub pending_expired: u64,
    /// Data sets dropped because buffering is disabled or the set alone exceeds the limits.
    pub pending_dropped: u64,
    /// Flows the exporters report as sent but we never received (v5 flow_sequence, IPFIX sequence).
    pub sequence_lost_flows: u64,
    /// NetFlow v9 export packets missing (the v9 sequence counts packets, not flows).
    pub sequence_lost_packets: u64,
    /// Sequence jumps too large or backwards (exporter restart, reordering); not counted as loss.
    pub sequence_resets: u64,
}

/// What one `decode` call did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DecodeSummary {
    /// Export protocol version (5, 9, 10).
    pub version: u16,
    /// Records appended to `out` (flows + options), including buffered sets decoded now.
    pub records: usize,
    /// Of which options data records.
    pub options_records: usize,
    /// Template records processed.
    pub templates: usize,
    /// Data sets buffered waiting for their template.
    pub sets_buffered: usize,
    /// Previously buffered data sets decoded in this call.
    pub sets_from_buffer: usize,
    /// Sets skipped (malformed, reserved, dropped).
    pub sets_skipped: usize,
    /// Flows (v5/IPFIX) or packets (v9) lost according to the sequence number.
    pub lost: u64,
    /// Bytes after the first export packet, ignored.
    pub trailing_bytes: usize,
}
