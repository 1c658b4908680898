//! Vigil's integration tests: one binary, a module per concern. They start the real `vigil`
//! process on ephemeral ports with a temporary data folder and talk to it over the network.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod cli;
mod clickhouse;
mod console;
mod context;
mod dashboards;
mod e2e;
mod flows;
mod kafka;
mod malformed;
mod reliability;
mod replay;
mod response;
mod rules;
mod rules_api;
mod scaled;
mod sigmahq;
mod tls;
