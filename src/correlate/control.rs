//! Rules changed while the service runs (embedded mode): reload the rule files, switch a rule
//! off or on. The new rule set is compiled off the engine thread and handed to it
//! ([`RulesSwap`]); the engine swaps between two batches and keeps the windows of every
//! correlation that still exists and groups the same way (`Pipeline::replace_rules`).
//!
//! Invariants:
//! - a rule set with a broken rule (`failed`, not merely `unsupported`) is never swapped in:
//!   the running rules stay and the caller gets the problems;
//! - rules switched off are kept in the store (`rule_state`) and left out at every load,
//!   at start too;
//! - a rule that an enabled correlation references cannot be switched off alone (the
//!   correlation would stop loading): the caller is told which correlations to switch off first.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use serde::Serialize;
use vigil_correlate::{RestoreReport, RuleInfo, RuleKind, RuleSet};

use crate::context::refdata::ReferenceData;

/// Longest an API call waits for the engine thread to take a new rule set.
pub const SWAP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// A compiled rule set for the engine thread, and where to say what the swap did.
pub struct RulesSwap {
    /// The new rules.
    pub rules: Arc<RuleSet>,
    /// The windows kept and dropped.
    pub reply: tokio::sync::oneshot::Sender<Result<RestoreReport, String>>,
}

/// One loaded rule, as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleView {
    /// The rule's name (its identity).
    pub name: String,
    /// Sigma id.
    pub id: Option<String>,
    /// Title.
    pub title: String,
    /// `detection`, `event_count`, `value_count`, `temporal`, `temporal_ordered`, ...
    pub kind: String,
    /// Sigma level.
    pub level: Option<String>,
    /// Tags (ATT&CK, ...).
    pub tags: Vec<String>,
    /// File and line.
    pub path: String,
    /// Line of the rule in its file.
    pub line: usize,
    /// Whether its matches raise offenses of their own.
    pub generate: bool,
    /// The rules a correlation references.
    pub references: Vec<String>,
}

impl RuleView {
    fn of(r: &RuleInfo) -> RuleView {
        let kind = match r.kind {
            RuleKind::Detection => "detection".to_owned(),
            RuleKind::EventCount => "event_count".to_owned(),
            RuleKind::ValueCount => "value_count".to_owned(),
            RuleKind::Temporal => "temporal".to_owned(),
            other => format!("{other:?}").to_lowercase(),
        };
        RuleView {
            name: r.name.clone(),
            id: r.id.clone(),
            title: r.title.clone(),
            kind,
            level: r.level.clone(),
            tags: r.tags.clone(),
            path: r.path.clone(),
            line: r.line,
            generate: r.generate,
            references: r.references.clone(),
        }
    }
}

/// The running rules, as the API shows them.
#[derive(Debug, Clone, Serialize)]
pub struct RulesView {
    /// Rules loaded and running.
    pub rules: Vec<RuleView>,
    /// Rules of the files not loaded (unsupported log source, or broken), one line each.
    pub refused: Vec<String>,
    /// When this set was loaded.
    pub loaded_at: DateTime<Utc>,
}

impl RulesView {
    /// The view of `rules` and the problems of their load.
    pub fn of(rules: &RuleSet, refused: Vec<String>) -> RulesView {
        RulesView {
            rules: rules.rules().iter().map(RuleView::of).collect(),
            refused,
            loaded_at: Utc::now(),
        }
    }
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Rules failed to compile; nothing changed.
    #[error("the rule files have broken rules; the running rules stay")]
    Broken(Vec<String>),
    /// No such rule.
    #[error("no rule named {0:?}")]
    Unknown(String),
    /// Enabled correlations reference the rule.
    #[error("rule {rule:?} feeds {correlations:?}: switch those off first")]
    Referenced {
        /// The rule.
        rule: String,
        /// Correlations that reference it.
        correlations: Vec<String>,
    },
    /// The engine did not take the rules in time, or is gone.
    #[error("the engine did not take the new rules: {0}")]
    Engine(String),
    /// Reading the files or the store failed.
    #[error("{0}")]
    Io(String),
}

/// The handle the API uses.
pub struct RulesControl {
    dir: PathBuf,
    reference: Arc<ReferenceData>,
    swap: Mutex<std::sync::mpsc::SyncSender<RulesSwap>>,
    view: RwLock<RulesView>,
    /// One change at a time.
    busy: tokio::sync::Mutex<()>,
}

/// What a reload did.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    /// Rules now running.
    pub loaded: usize,
    /// Rules not loaded because Vigil does not serve their log source.
    pub unsupported: Vec<String>,
    /// Correlation keys carried over.
    pub windows_kept: u64,
    /// Correlation keys dropped (their rule is gone or now groups differently).
    pub windows_dropped: u64,
}

impl RulesControl {
    /// The handle, and the receiving end the engine thread polls.
    pub fn new(
        dir: PathBuf,
        reference: Arc<ReferenceData>,
        view: RulesView,
    ) -> (Arc<RulesControl>, std::sync::mpsc::Receiver<RulesSwap>) {
        // Changes are made one at a time (`busy`): one swap waits at most.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        (
            Arc::new(RulesControl {
                dir,
                reference,
                swap: Mutex::new(tx),
                view: RwLock::new(view),
                busy: tokio::sync::Mutex::new(()),
            }),
            rx,
        )
    }

    /// The running rules.
    pub fn view(&self) -> RulesView {
        self.view
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Compiles the files without the `disabled` rules and swaps them in. `check` runs first
    /// on the compiled set (under the same lock as the swap).
    pub async fn reload(&self, disabled: BTreeSet<String>) -> Result<ReloadReport, ControlError> {
        let _one = self.busy.lock().await;
        self.reload_locked(disabled).await
    }

    async fn reload_locked(
        &self,
        disabled: BTreeSet<String>,
    ) -> Result<ReloadReport, ControlError> {
        let dir = self.dir.clone();
        let reference = Arc::clone(&self.reference);
        let (rules, errors) = tokio::task::spawn_blocking(move || {
            super::load_rules_except(&dir, reference, &disabled)
        })
        .await
        .map_err(|e| ControlError::Io(e.to_string()))?
        .map_err(|e| ControlError::Io(format!("reading the rule files: {e}")))?;
        let broken: Vec<String> = errors
            .iter()
            .filter(|e| !e.unsupported)
            .map(|e| e.to_string())
            .collect();
        if !broken.is_empty() {
            return Err(ControlError::Broken(broken));
        }
        let unsupported: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let rules = Arc::new(rules);
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.swap
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(RulesSwap {
                rules: Arc::clone(&rules),
                reply,
            })
            .map_err(|_| ControlError::Engine("the engine has stopped".into()))?;
        let restored = tokio::time::timeout(SWAP_PATIENCE, answer)
            .await
            .map_err(|_| ControlError::Engine("timed out".into()))?
            .map_err(|_| ControlError::Engine("the engine has stopped".into()))?
            .map_err(ControlError::Engine)?;
        *self
            .view
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            RulesView::of(&rules, unsupported.clone());
        Ok(ReloadReport {
            loaded: rules.len(),
            unsupported,
            windows_kept: restored.keys,
            windows_dropped: restored.skipped,
        })
    }

    /// Switches `name` off (`enabled` false) or on, given the rules switched off so far, and
    /// reloads. `persist` stores the change; it runs only once the new set has compiled, and
    /// before the swap, so a restart never runs a set the operator did not get.
    pub async fn set_enabled(
        &self,
        name: &str,
        enabled: bool,
        mut disabled: BTreeSet<String>,
        persist: impl FnOnce() -> Result<(), String>,
    ) -> Result<ReloadReport, ControlError> {
        let _one = self.busy.lock().await;
        if enabled {
            if !disabled.remove(name) {
                return Err(ControlError::Unknown(name.to_owned()));
            }
        } else {
            let view = self.view();
            if !view.rules.iter().any(|r| r.name == name) {
                return Err(ControlError::Unknown(name.to_owned()));
            }
            let correlations: Vec<String> = view
                .rules
                .iter()
                .filter(|r| r.references.iter().any(|x| x == name))
                .map(|r| r.name.clone())
                .collect();
            if !correlations.is_empty() {
                return Err(ControlError::Referenced {
                    rule: name.to_owned(),
                    correlations,
                });
            }
            disabled.insert(name.to_owned());
        }
        // Compile first (cheap to throw away), then persist, then swap.
        let dir = self.dir.clone();
        let reference = Arc::clone(&self.reference);
        let check = disabled.clone();
        let (_, errors) =
            tokio::task::spawn_blocking(move || super::load_rules_except(&dir, reference, &check))
                .await
                .map_err(|e| ControlError::Io(e.to_string()))?
                .map_err(|e| ControlError::Io(format!("reading the rule files: {e}")))?;
        let broken: Vec<String> = errors
            .iter()
            .filter(|e| !e.unsupported)
            .map(|e| e.to_string())
            .collect();
        if !broken.is_empty() {
            return Err(ControlError::Broken(broken));
        }
        persist().map_err(ControlError::Io)?;
        self.reload_locked(disabled).await
    }
}
