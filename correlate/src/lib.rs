//! Vigil's rule engine: Sigma detection and correlation (`event_count`, `value_count`,
//! `temporal`, `temporal_ordered`, with aliases, chaining and `generate`), plus Vigil's own
//! correlation types `value_sum`, `absence` and `silence` (see the crate's README.md), over a
//! stream of [`Event`](vigil_parsers::event::Event)s, pure (no I/O, no clock) and in event time:
//! time passes only when the caller says so ([`Engine::process`] with each event's time,
//! [`Engine::advance`] without events).
//!
//! Load rule files with [`RuleSet::from_sources`] (or [`RuleSet::from_sources_with`] and
//! [`LoadOptions`] for `expand` placeholders; broken rules come back as [`RuleError`]s naming
//! file and line; the rest load), share the set in an `Arc`, and feed events to an
//! [`Engine`], which pushes [`Detection`]s.
//!
//! # Layout
//!
//! - [`error`]: [`RuleError`], a rule that refused to load, with its file and line.
//! - [`duration`]: [`parse_duration`] for `30s` / `5m` / `1h` / `2d`.
//! - [`fields`]: const tables mapping Sigma field names to ECS names and `logsource` to event
//!   filters.
//! - [`rules`]: the public rule types ([`RuleSource`], [`RuleInfo`], the `vigil:` block).
//! - `load`: splitting files into documents, parsing, compiling, resolving rule references
//!   (detections and correlations, across files; reference cycles refused), aliases.
//! - [`net`]: [`net::Cidr`] and [`net::PrefixSet`] (membership of an address in many networks).
//! - [`mod@reference`]: the [`reference::ReferenceLookup`] trait rules use for reference-set
//!   membership (`|refset`); the service implements it over its live reference data.
//! - `matcher`: one field value test (strings with wildcards, `re`, `cidr`, numbers, `exists`).
//! - `condition`: the condition language (`and`/`or`/`not`, `1 of`, `all of them`).
//! - `detection`: a compiled `detection` block (selections of field items plus the condition).
//! - `index`: dispatch so an event only meets rules that could match (logsource lookup and an
//!   aho-corasick literal prefilter); never changes results.
//! - `ruleset`: [`RuleSet`], the immutable compiled set.
//! - [`engine`]: [`Engine`], event-time windows per group key for every correlation type,
//!   deadlines for `absence` and `silence`, firing, chaining, allowed lateness, bounded state,
//!   stats (with a memory estimate).
//!
//! Architecture Invariant: nothing here reads files, clocks or the network; the same events in
//! the same order give the same detections.

#![warn(missing_docs)]

mod chunked;
mod condition;
mod detection;
pub mod duration;
pub mod engine;
pub mod error;
pub mod fields;
mod index;
mod load;
mod matcher;
pub mod net;
pub mod reference;
pub mod rules;
mod ruleset;

pub use duration::parse_duration;
pub use engine::{
    approx_event_bytes, Detection, DetectionKind, Engine, EngineLimits, EngineSnapshot,
    EngineStats, KeySnapshot, RestoreReport, Routed, RuleStats, SnapshotCut, WindowSnapshot,
};
pub use error::RuleError;
pub use load::LoadOptions;
pub use rules::{
    AddToSet, ExpectedOffense, OffenseSpec, RuleInfo, RuleKind, RuleSource, RuleTest, TestContext,
    VigilBlock,
};
pub use ruleset::{Prescan, RuleSet};
