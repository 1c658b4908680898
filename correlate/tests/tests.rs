//! Integration tests for vigil-correlate, one binary, a module per concern.
#![allow(clippy::unwrap_used)]

mod common;
mod correlation;
mod detection;
mod dispatch;
mod loading;
mod sigmahq;
