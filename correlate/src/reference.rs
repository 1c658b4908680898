//! Reference data rules can test (QRadar's reference sets): a rule writes
//! `source.ip|refset: threat_intel` and matches when the value is in the named set. The engine
//! stays pure: the caller hands [`LoadOptions`](crate::LoadOptions) a [`ReferenceLookup`], and
//! the set is resolved by name once, when the rule compiles (an unknown set refuses the rule).

use vigil_parsers::event::FieldValue;

/// Named sets a rule can test membership against. Implementations are shared with whoever
/// changes the sets (the service's API, file reloads, TTL expiry), so lookups see live data.
pub trait ReferenceLookup: Send + Sync + std::fmt::Debug {
    /// The id of the named set (resolved once when a rule compiles), `None` if there is no such
    /// set.
    fn set_id(&self, name: &str) -> Option<usize>;
    /// Whether `value` is in set `set`: for IP sets, the address or a network containing it;
    /// for string sets, the text (compared case-insensitively).
    fn contains(&self, set: usize, value: &FieldValue<'_>) -> bool;
}
