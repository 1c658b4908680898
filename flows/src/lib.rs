//! Vigil flow decoders: NetFlow v5, NetFlow v9, IPFIX and sFlow v5 datagrams in, normalized
//! [`FlowRecord`]s out.
//!
//! Pure library: no network I/O, no threads, no clock reads. The caller passes each UDP payload
//! with the exporter's socket address and the receive time; templates, buffered data sets,
//! sampling rates and sequence numbers are kept per exporter inside [`FlowDecoder`], bounded by
//! [`Limits`]. Everything that goes wrong is counted in [`FlowStats`] / [`SflowStats`]; datagrams
//! that cannot be decoded at all return a [`DecodeError`].
//!
//! ```
//! use vigil_flows::{FlowDecoder, Limits};
//! let mut decoder = FlowDecoder::new(Limits::default());
//! let mut out = Vec::new();
//! let now = chrono::Utc::now();
//! let err = decoder.decode("192.0.2.1:2055".parse().unwrap(), &[0, 7], now, &mut out);
//! assert!(err.is_err());
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod community_id;
mod compact;
mod decoder;
mod error;
pub mod fields;
mod netflow5;
mod packet;
mod record;
pub mod sflow;
mod stats;
mod tables;
mod templated;

pub use community_id::community_id_v1;
pub use compact::CompactError;
pub use decoder::{FlowDecoder, Limits, SnapshotTemplate, TemplateSnapshot};
pub use error::DecodeError;
pub use fields::{Field, FieldKind, FieldValue, Fields, MacAddr};
pub use packet::PacketSummary;
pub use record::{tcp_flag_names, transport_name, Direction, FlowRecord, FlowSource, RecordKind};
pub use sflow::{
    AclInfo, CounterRecord, DiscardRecord, EthernetCounters, InterfaceCounters, RawRecord,
    SampleOrigin, SflowDecoder, SflowLimits, SflowRecord, SflowStats, SflowSummary,
};
pub use stats::{DecodeSummary, FlowStats};
