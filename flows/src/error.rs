//! Datagram-level decode errors. A datagram that yields an `Err` produced no records and should
//! be dead-lettered with its raw bytes; problems inside an otherwise valid datagram (a bad set,
//! a truncated record) are counted in [`crate::FlowStats`] instead.

use thiserror::Error;

/// Why a datagram could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Zero-length payload.
    #[error("empty datagram")]
    Empty,
    /// The datagram is shorter than the fixed export header.
    #[error("truncated {protocol} header: need {need} bytes, datagram has {have}")]
    TruncatedHeader {
        /// Protocol whose header was expected.
        protocol: &'static str,
        /// Header size.
        need: usize,
        /// Datagram size.
        have: usize,
    },
    /// The version field is not 5, 9 or 10 (or not 5 for sFlow).
    #[error("unknown {protocol} version {version}")]
    UnknownVersion {
        /// `netflow/ipfix` or `sflow`.
        protocol: &'static str,
        /// Version found.
        version: u32,
    },
    /// A NetFlow v5 header record count outside 1..=30.
    #[error("NetFlow v5 record count {count} outside 1..=30")]
    BadRecordCount {
        /// Count from the header.
        count: u16,
    },
    /// The header announces more data than the datagram holds.
    #[error("{protocol} header announces {declared} bytes, datagram has {have}")]
    BadLength {
        /// Protocol.
        protocol: &'static str,
        /// Length implied by the header.
        declared: usize,
        /// Datagram size.
        have: usize,
    },
    /// A v9 flowset / IPFIX set whose length is below 4 or runs past the end of the packet.
    #[error(
        "{protocol} set at offset {offset} declares length {length}, {remaining} bytes remain"
    )]
    BadSetLength {
        /// `NetFlow v9` or `IPFIX`.
        protocol: &'static str,
        /// Offset of the set header in the datagram.
        offset: usize,
        /// Declared set length.
        length: usize,
        /// Bytes left in the packet from the set header on.
        remaining: usize,
    },
    /// sFlow agent address type other than 1 (IPv4) or 2 (IPv6).
    #[error("sFlow agent address type {0} is neither 1 (IPv4) nor 2 (IPv6)")]
    BadAgentAddressType(u32),
    /// sFlow sample or record count above the configured limit.
    #[error("sFlow {what} count {count} exceeds limit {limit}")]
    TooMany {
        /// `samples` or `records`.
        what: &'static str,
        /// Count from the datagram.
        count: u32,
        /// Configured limit.
        limit: u32,
    },
}

impl DecodeError {
    /// Stable short reason, suitable as a metric label or dead-letter reason.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::TruncatedHeader { .. } => "truncated_header",
            DecodeError::UnknownVersion { .. } => "unknown_version",
            DecodeError::BadRecordCount { .. } => "bad_record_count",
            DecodeError::BadLength { .. } => "bad_length",
            DecodeError::BadSetLength { .. } => "bad_set_length",
            DecodeError::BadAgentAddressType(_) => "bad_agent_address_type",
            DecodeError::TooMany { .. } => "too_many",
        }
    }
}
