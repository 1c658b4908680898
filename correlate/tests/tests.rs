//! Integration tests for vigil-correlate, one binary, a module per concern.
#![allow(clippy::unwrap_used)]

mod common;
mod correlation;
mod correlation_types;
mod detection;
mod dispatch;
mod extensions;
mod loading;
mod memory;
mod reporting;
mod sigmahq;
mod spec_examples;
mod split;
