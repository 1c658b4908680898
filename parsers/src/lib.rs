//! Pure parsing for Vigil: bytes in, a normalized [`Event`] or a rejection with a reason out.
//!
//! # Layout
//! - [`event`]: the normalized event schema (typed core, ECS-style names on the wire, `extra`,
//!   the raw bytes kept). Every other crate speaks it.
//! - [`syslog`]: RFC 5424, RFC 3164 (and its real-world variants, including PRI-less file
//!   lines) and RFC 6587 TCP framing, written with nom.
//! - [`formats`]: structured formats (CEF, LEEF, key=value, JSON, CSV, Zeek): text in, named
//!   values out.
//! - [`definitions`]: per-vendor parser definitions loaded from data (`parsers/definitions/*.yml`)
//!   that turn a syslog message into typed fields (regex patterns, or key=value, JSON, CSV, CEF
//!   and LEEF extraction): OpenSSH, sudo, PAM, netfilter, Cisco ASA, FortiGate, Palo Alto,
//!   generic CEF and LEEF.
//! - [`normalize`]: the one entry point the service uses: raw record -> [`Event`] or
//!   [`normalize::Rejection`].
//!
//! Architecture invariant: nothing here does I/O, spawns, or knows about Kafka, HTTP or storage.
//! Nothing here panics on any input.

pub mod codec;
pub mod definitions;
pub mod event;
pub mod formats;
pub mod normalize;
pub mod quick;
pub mod syslog;

pub use event::{ip_text, Event, Extra, FieldRef, FieldValue, Text};
