//! Vigil: an open SIEM / SOC event-correlation engine.
//!
//! # Layout
//! - [`config`]: the TOML configuration, strict and documented; defaults are embedded mode.
//! - [`collect`]: collectors producing raw records: `syslog` UDP/TCP, `flow` for NetFlow,
//!   IPFIX and sFlow, `file` for replay.
//! - [`bus`]: the queue between collectors and the engine (bounded, in-process; Kafka later).
//! - [`pipeline`]: normalize -> rule engine -> offenses -> store, shared by `run` and `replay`.
//! - [`correlate`]: rule loading and offense bookkeeping around the `vigil-correlate` engine.
//! - [`sources`]: every sender Vigil hears from, its detected type, EPS and failure rate.
//! - [`store`]: SQLite storage of offenses, their events, dead letters and token hashes.
//! - [`api`]: the HTTP API (axum) and `/metrics`.
//! - [`response`]: automatic IP blocking and its guards (internal zones, allow list, rate cap,
//!   dry run), for firewalls pulling `/api/v1/blocklist.txt`.
//! - [`webhook`]: signed webhooks (durable outbox, retries, circuit breaker, SSRF guard) and
//!   the verifier receivers use.
//! - [`telemetry`]: counters, gauges, the latency histogram, Prometheus text.
//! - [`app`]: wiring shared by the subcommands and the `run` service.
//! - [`replay`], [`loadgen`]: the `replay` and `loadgen` subcommands.
//!
//! The parsing crate `vigil-parsers` (re-exported as [`parsers`]) and the rule engine crate
//! `vigil-correlate` (re-exported as [`rules`]) are pure: no I/O, no async.

pub mod api;
pub mod app;
pub mod bus;
mod bytes;
pub mod cluster;
pub mod collect;
pub mod config;
pub mod context;
pub mod correlate;
pub mod loadgen;
pub mod pipeline;
pub mod replay;
pub mod response;
pub mod sources;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod webhook;

pub use vigil_correlate as rules;
pub use vigil_parsers as parsers;
pub use vigil_parsers::Event;
