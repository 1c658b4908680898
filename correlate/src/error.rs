//! The load error: a rule that refused to load, pointing at its file and line.

/// A rule that failed to load. The rest of the rule set still loads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}:{line}: {message}")]
pub struct RuleError {
    /// The rule file, as given in [`crate::RuleSource::path`].
    pub path: String,
    /// One-based line in that file the problem is at (best effort for semantic errors: the line of
    /// the offending key or value).
    pub line: usize,
    /// The rule's name (or id, or title) when it could be read.
    pub rule: Option<String>,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
    /// The rule is valid but asks for something Vigil does not serve (a `logsource` no
    /// collector and parser of Vigil produces events for); it is refused rather than run
    /// against events it was not written for.
    pub unsupported: bool,
}
