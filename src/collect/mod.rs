//! Collectors: one module per source. Each turns what arrives into [`crate::bus::RawRecord`]s
//! (bytes, source identity, receive time) on the bus, applying its limits and counting what it
//! refuses. Collectors never parse: that is the pipeline's job.

pub mod file;
pub mod flow;
pub mod http;
pub mod syslog;
