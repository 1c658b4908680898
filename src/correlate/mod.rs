//! Stage 2 glue: loading the rule pack and turning the engine's detections into offenses.
//!
//! The rule engine itself (Sigma detection, correlation windows) is the pure crate
//! `vigil-correlate`; this module decides where rules come from and keeps offenses, indexed like
//! QRadar's: a detection whose (index field, index value) matches an open offense joins it,
//! whichever rule raised it (one attacker tripping several rules is one offense listing every
//! rule); otherwise a new offense is created with a deterministic id.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use vigil_correlate::{Detection, RuleError, RuleSet, RuleSource};
use vigil_parsers::Event;

use crate::store::{Offense, OffenseRule, OffenseStatus, Store, StoreError};

pub mod book;
pub mod control;
pub mod ruletest;
pub mod saved;

pub use book::{BookStats, OffenseBook};

/// The rule pack built into the binary, used when the rules folder does not exist.
pub const BUILTIN_RULES: &[(&str, &str)] = &[
    (
        "rules/ssh_brute_force.yml",
        include_str!("../../rules/ssh_brute_force.yml"),
    ),
    (
        "rules/ssh_login_after_failures.yml",
        include_str!("../../rules/ssh_login_after_failures.yml"),
    ),
    (
        "rules/ssh_password_spraying.yml",
        include_str!("../../rules/ssh_password_spraying.yml"),
    ),
    (
        "rules/sshd_log_source_silent.yml",
        include_str!("../../rules/sshd_log_source_silent.yml"),
    ),
    (
        "rules/api_brute_force.yml",
        include_str!("../../rules/api_brute_force.yml"),
    ),
    (
        "rules/api_rate_limit_storm.yml",
        include_str!("../../rules/api_rate_limit_storm.yml"),
    ),
    (
        "rules/api_object_enumeration.yml",
        include_str!("../../rules/api_object_enumeration.yml"),
    ),
    (
        "rules/web_attacks.yml",
        include_str!("../../rules/web_attacks.yml"),
    ),
    (
        "rules/threat_intel_contact.yml",
        include_str!("../../rules/threat_intel_contact.yml"),
    ),
    (
        "rules/api_key_many_countries.yml",
        include_str!("../../rules/api_key_many_countries.yml"),
    ),
    (
        "rules/sudo_failures.yml",
        include_str!("../../rules/sudo_failures.yml"),
    ),
    (
        "rules/firewall_deny_storm.yml",
        include_str!("../../rules/firewall_deny_storm.yml"),
    ),
    ("rules/flows.yml", include_str!("../../rules/flows.yml")),
    (
        "rules/network_scans.yml",
        include_str!("../../rules/network_scans.yml"),
    ),
    (
        "rules/gateway_ddos.yml",
        include_str!("../../rules/gateway_ddos.yml"),
    ),
    (
        "rules/api_credential_stuffing.yml",
        include_str!("../../rules/api_credential_stuffing.yml"),
    ),
    (
        "rules/infected_host_beaconing.yml",
        include_str!("../../rules/infected_host_beaconing.yml"),
    ),
];

/// Reads every `*.yml` / `*.yaml` file of `dir` (sorted by name) as rule sources. When `dir`
/// does not exist, returns the built-in pack.
pub fn rule_sources(dir: &Path) -> std::io::Result<Vec<RuleSource>> {
    if !dir.exists() {
        return Ok(BUILTIN_RULES
            .iter()
            .map(|(path, text)| RuleSource {
                path: (*path).to_owned(),
                text: (*text).to_owned(),
            })
            .collect());
    }
    let mut paths = Vec::new();
    if dir.is_file() {
        paths.push(dir.to_path_buf());
    } else {
        collect_yaml(dir, &mut paths)?;
    }
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            Ok(RuleSource {
                text: std::fs::read_to_string(&p)?,
                path: p.display().to_string(),
            })
        })
        .collect()
}

/// Every `*.yml` / `*.yaml` under `dir`, recursively (symbolic links are not followed).
fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect_yaml(&path, out)?;
        } else if kind.is_file()
            && matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yml") | Some("yaml")
            )
        {
            out.push(path);
        }
    }
    Ok(())
}

/// What `vigil rules lint` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LintReport {
    /// Rules that loaded.
    pub loaded: usize,
    /// Rules refused because Vigil does not serve what they need (their log source).
    pub unsupported: usize,
    /// Rules refused because they are broken.
    pub failed: usize,
    /// One line per refused rule: `unsupported|failed: file:line: reason`.
    pub problems: Vec<String>,
}

/// Loads every rule file under `path` (a file or a folder, recursively; Vigil rules or plain
/// Sigma) and sorts the refusals into unsupported and failed.
pub fn lint(path: &Path) -> std::io::Result<LintReport> {
    if !path.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{}: no such file or folder", path.display()),
        ));
    }
    let (rules, errors) = load_rules(path)?;
    let mut report = LintReport {
        loaded: rules.len(),
        ..LintReport::default()
    };
    for e in errors {
        if e.unsupported {
            report.unsupported += 1;
            report.problems.push(format!("unsupported: {e}"));
        } else {
            report.failed += 1;
            report.problems.push(format!("failed: {e}"));
        }
    }
    Ok(report)
}

/// Loads and compiles the rules of `dir` (or the built-in pack) against the reference sets the
/// default configuration declares (empty), as `vigil rules lint` does.
pub fn load_rules(dir: &Path) -> std::io::Result<(RuleSet, Vec<RuleError>)> {
    let reference = crate::context::loader::declare(&crate::config::ContextConfig::default());
    load_rules_with(dir, Arc::new(reference))
}

/// Loads and compiles the rules of `dir` (or the built-in pack); `refset` and `add_to_set`
/// resolve against `reference`.
pub fn load_rules_with(
    dir: &Path,
    reference: Arc<dyn vigil_correlate::reference::ReferenceLookup>,
) -> std::io::Result<(RuleSet, Vec<RuleError>)> {
    load_rules_except(dir, reference, &std::collections::BTreeSet::new())
}

/// [`load_rules_with`] leaving out the rules named in `disabled` (switched off by an operator).
pub fn load_rules_except(
    dir: &Path,
    reference: Arc<dyn vigil_correlate::reference::ReferenceLookup>,
    disabled: &std::collections::BTreeSet<String>,
) -> std::io::Result<(RuleSet, Vec<RuleError>)> {
    Ok(RuleSet::from_sources_with(
        &rule_sources(dir)?,
        &vigil_correlate::LoadOptions {
            reference: Some(reference),
            disabled: disabled.clone(),
            ..Default::default()
        },
    ))
}

/// Deterministic offense id from (index field, index value, first window start): a replay or a
/// restart over the same data finds the same offense instead of a duplicate. The rule is not
/// part of it: an offense belongs to its index, and which of several rules reported first
/// must not change its identity (scaled out, that depends on which node ran ahead).
pub fn offense_id(index_field: &str, index_value: &str, window_start: DateTime<Utc>) -> String {
    let mut h = Sha256::new();
    for part in [index_field, index_value] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(window_start.timestamp_millis().to_be_bytes());
    hex::encode(&h.finalize()[..16])
}

/// Rule facts an offense keeps that detections do not carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleMeta {
    /// Sigma rule id.
    pub id: Option<String>,
    /// Rule author.
    pub author: Option<String>,
    /// The rule's `vigil.suppress`: after an offense for an index closes, this rule's
    /// detections for the same index within this long (event time) of the offense's last event
    /// join the closed offense (counted, evidence kept) instead of opening a new one.
    pub suppress: Option<chrono::Duration>,
    /// The rule's `vigil.offense.add_to_set`: (set, ttl).
    pub add_to_set: Option<(String, Option<chrono::Duration>)>,
}

/// Every loaded rule's [`RuleMeta`] by rule name. Looked up twice per detection (which runs it
/// may join, then its facts), so with foldhash rather than SipHash: the names are the loaded
/// rules' own, not the network's.
pub type RuleMetas = std::collections::HashMap<String, RuleMeta, foldhash::fast::RandomState>;

impl RuleMeta {
    /// The facts of a loaded rule (durations were validated at load).
    pub fn of(r: &vigil_correlate::RuleInfo) -> RuleMeta {
        let duration = |s: Option<&str>| s.and_then(|s| vigil_correlate::parse_duration(s).ok());
        RuleMeta {
            id: r.id.clone(),
            author: r.author.clone(),
            suppress: duration(r.vigil.suppress.as_deref()),
            add_to_set: r
                .vigil
                .offense
                .add_to_set
                .as_ref()
                .map(|a| (a.set.clone(), duration(a.ttl.as_deref()))),
        }
    }

    /// [`RuleMeta::of`] for every rule of a set, by rule name.
    pub fn all(rules: &RuleSet) -> RuleMetas {
        rules
            .rules()
            .iter()
            .map(|r| (r.name.clone(), RuleMeta::of(r)))
            .collect()
    }
}

/// Magnitude 0-10 of an offense from its rules and the hosts involved: severity, relevance and
/// credibility are each the highest among the contributing rules, relevance gains 1 per further
/// rule (one attacker tripping several rules matters more) and is at least the criticality of
/// the most critical zone the offense's events touch (an attack on core banking matters more
/// than one on a lab), and severity weighs double as the thing an analyst triages on first.
/// Returns (magnitude, severity, relevance, credibility, one reason each).
pub fn magnitude(
    rules: &[OffenseRule],
    asset: Option<(u8, &str)>,
) -> (u8, u8, u8, u8, Vec<String>) {
    // Ties go to the first rule by name, so the reasons do not depend on the parts' order
    // (arrival order in memory, first-seen order from the database).
    let top = |f: fn(&OffenseRule) -> u8| {
        rules
            .iter()
            .max_by_key(|r| (f(r), std::cmp::Reverse(r.rule.as_str())))
            .map(|r| (f(r).min(10), r.rule.as_str()))
            .unwrap_or((0, "none"))
    };
    let (sev, sev_rule) = top(|r| r.severity);
    let (rel0, rel_rule) = top(|r| r.relevance);
    let (cred, cred_rule) = top(|r| r.credibility);
    let extra_rules = rules.len().saturating_sub(1).min(10) as u8;
    let rel_rules = (rel0 + extra_rules).min(10);
    let asset = asset.filter(|(c, _)| *c > rel_rules);
    let rel = asset.map_or(rel_rules, |(c, _)| c.min(10));
    let m = ((2 * u32::from(sev) + u32::from(rel) + u32::from(cred)) as f64 / 4.0).round() as u8;
    let level = rules
        .iter()
        .find(|r| r.rule == sev_rule)
        .and_then(|r| r.level.as_deref())
        .unwrap_or("unset");
    let mut reasons = vec![format!(
        "severity {sev}/10 from rule {sev_rule} (level {level}), weight 2"
    )];
    if let Some((_, why)) = asset {
        reasons.push(format!(
            "relevance {rel}/10 from the asset: {why} (rules alone: {rel_rules}), weight 1"
        ));
    } else if extra_rules > 0 {
        reasons.push(format!(
            "relevance {rel}/10: {rel0} from rule {rel_rule}, +{extra_rules} for {} rules contributing, weight 1",
            rules.len()
        ));
    } else {
        reasons.push(format!("relevance {rel}/10 from rule {rel_rule}, weight 1"));
    }
    reasons.push(format!(
        "credibility {cred}/10 from rule {cred_rule}, weight 1"
    ));
    (m.min(10), sev, rel, cred, reasons)
}

/// Offense bookkeeping limits (from `[offenses]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffenseLimits {
    /// Contributing events stored per offense.
    pub max_events_per_offense: u64,
    /// Event-time quiet period after which an open offense is closed as inactive.
    pub inactive_after: chrono::Duration,
    /// Open offenses held in memory between detections (0: every detection reads and writes
    /// the database).
    pub held_open: usize,
}

impl OffenseLimits {
    /// The limits `[offenses]` in the configuration sets.
    pub fn from_config(c: &crate::config::OffenseConfig) -> OffenseLimits {
        OffenseLimits {
            max_events_per_offense: c.max_events_per_offense as u64,
            inactive_after: chrono::Duration::seconds(
                i64::try_from(c.inactive_after_secs).unwrap_or(i64::MAX / 1000),
            ),
            held_open: c.held_open,
        }
    }
}

impl Default for OffenseLimits {
    fn default() -> Self {
        OffenseLimits {
            max_events_per_offense: 1000,
            inactive_after: chrono::Duration::days(5),
            held_open: book::DEFAULT_CAPACITY,
        }
    }
}

/// Which events each offense has already counted, so an event reported by several rules (a
/// failed login counted by brute force and by password spraying) counts once. Keyed by
/// (offense, `event.sequence`); bounded: beyond `capacity` the oldest entries are forgotten
/// (an event reported again after that would count twice; the rules that share events report
/// them within one correlation window, long before). Additions made during a store transaction
/// go into the set at once (one lookup and insert a pair) and are listed, so that a rollback
/// takes them out again and a commit remembers them in detection order.
#[derive(Debug)]
pub struct SeenEvents {
    set: PairSet,
    order: std::collections::VecDeque<(u64, u64)>,
    /// Additions since the last commit or rollback, with the position of the detection that
    /// made them (they are in `set` already).
    staged: Vec<(usize, (u64, u64))>,
    /// The position in its batch of the detection being applied ([`SeenEvents::at`]).
    position: usize,
    capacity: usize,
}

/// Hashes [`SeenEvents`]' (offense, sequence) pairs with FxHash's multiply-rotate mix: the
/// offense part is a SipHash of its id already and the sequence is Vigil's own counter, so
/// nothing from the network chooses where a pair lands, and SipHash over them again cost a
/// tenth of a busy commit.
#[derive(Debug, Default, Clone, Copy)]
struct PairHasher(u64);

impl std::hash::Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            for (d, s) in b.iter_mut().zip(chunk) {
                *d = *s;
            }
            self.write_u64(u64::from_le_bytes(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

type PairSet = std::collections::HashSet<(u64, u64), std::hash::BuildHasherDefault<PairHasher>>;

impl SeenEvents {
    /// An empty set remembering at most `capacity` (offense, event) pairs.
    pub fn new(capacity: usize) -> Self {
        SeenEvents {
            set: PairSet::default(),
            order: std::collections::VecDeque::new(),
            staged: Vec::new(),
            position: 0,
            capacity: capacity.max(1),
        }
    }

    fn key(offense_id: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        offense_id.hash(&mut h);
        h.finish()
    }

    /// Marks `seq` counted for the offense; false if it already was (committed or staged).
    fn first_time(&mut self, offense: u64, seq: u64) -> bool {
        let k = (offense, seq);
        if !self.set.insert(k) {
            return false;
        }
        self.staged.push((self.position, k));
        true
    }

    /// What is staged next comes from the detection at `position` of the batch. The commit
    /// remembers the staged pairs in detection order, so that which are forgotten first does
    /// not depend on runs applying detections out of order (without positions: in the order
    /// staged).
    fn at(&mut self, position: usize) {
        self.position = position;
    }

    /// Keeps the staged additions (the transaction committed).
    pub fn commit(&mut self) {
        self.position = 0;
        let mut staged = std::mem::take(&mut self.staged);
        // Stable: a detection's own pairs keep their order.
        staged.sort_by_key(|(position, _)| *position);
        self.order.extend(staged.drain(..).map(|(_, k)| k));
        // The (emptied) list's room is kept for the next batch.
        self.staged = staged;
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    /// Forgets the staged additions (the transaction rolled back).
    pub fn rollback(&mut self) {
        for (_, k) in self.staged.drain(..) {
            self.set.remove(&k);
        }
        self.position = 0;
    }
}

/// What one detection did to the offense table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffenseChange {
    /// A new offense was opened.
    Created,
    /// Events joined an open offense.
    Updated,
    /// Events joined a recently closed offense of a rule with `vigil.suppress` (no re-alert).
    Suppressed,
}

/// Applies one detection: joins the open offense with the same index (field and value),
/// whichever rule opened it, or opens a new one; records the rule's part; stores up to
/// `max_events_per_offense` contributing events. Runs inside the caller's transaction.
/// [`apply_detections`] with a group of one, returning the offense as it now is.
#[allow(clippy::too_many_arguments)]
pub fn apply_detection(
    store: &Store,
    book: &mut OffenseBook,
    d: &Detection,
    asset: Option<&crate::context::AssetFactor>,
    meta: &RuleMeta,
    limits: &OffenseLimits,
    seen: &mut SeenEvents,
    now: DateTime<Utc>,
) -> Result<(Offense, OffenseChange), StoreError> {
    apply_detections(
        store,
        book,
        ((d, meta, asset, 0), &[]),
        limits,
        seen,
        now,
        |o, change, _| (o.clone(), change),
    )
}

/// The contributing events a run of detections kept for its offense, stored in that order from
/// position `first_seq` on (none when the offense holds `max_events_per_offense` already, or
/// when every event was counted for it before); and the offense of the same index the run
/// closed as inactive before opening this one, if it did (its id and stored events).
#[derive(Debug, Clone, Copy)]
pub struct Kept<'a> {
    pub first_seq: u64,
    pub events: &'a [Arc<Event>],
    pub closed: Option<(&'a str, u64)>,
}

/// How a detection may share a run with other detections of its index ([`group_detections`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// Alone: it has effects of its own per change (webhooks, set additions, block decisions).
    Never,
    /// Joins an open run, but a run it would start stays its own: a rule with `suppress`. Its
    /// detection differs from a plain one only when it finds no open offense, and after a
    /// run's first member (a plain detection) there always is one, the run's span being within
    /// `inactive_after`. Leading, it may join a closed offense, which those after it would not
    /// join one by one.
    Join,
    /// Starts or joins runs.
    Any,
}

impl Merge {
    /// How a detection of a rule with these facts may share a run: never when every change
    /// has effects of its own (`per_change`: webhooks, the magnitude blocking policy) or the
    /// rule adds to a set; a suppressing rule's joins only.
    pub fn of(meta: Option<&RuleMeta>, per_change: bool) -> Merge {
        match meta {
            _ if per_change => Merge::Never,
            Some(m) if m.add_to_set.is_some() => Merge::Never,
            Some(m) if m.suppress.is_some() => Merge::Join,
            _ => Merge::Any,
        }
    }
}

/// Groups a batch's detections (in order) into runs applied at once by
/// [`apply_detections`]: a detection joins the open run of its (index field, index value)
/// when `merge` allows it (see [`Merge`]) and the run's event times stay within `max_span`
/// (the offenses' `inactive_after`, so that no member could close the offense the run's first
/// one joined). Any other detection of the index ends the run, so each index's detections keep
/// their order; runs of different indexes touch different offenses and commute. Applying the
/// runs in the order of their first members gives the offenses applying the detections one by
/// one gives (tested). Returns the runs, by position, in that order.
pub fn group_detections<'a>(
    detections: impl Iterator<Item = &'a Detection>,
    merge: impl Fn(&Detection) -> Merge,
    max_span: chrono::Duration,
) -> Vec<Vec<usize>> {
    struct Run {
        group: usize,
        first: DateTime<Utc>,
        last: DateTime<Utc>,
    }
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut open: std::collections::HashMap<(&'a str, &'a str), Run, foldhash::fast::RandomState> =
        std::collections::HashMap::default();
    for (i, d) in detections.enumerate() {
        let index = (&*d.index_field, d.index_value.as_str());
        let merge = merge(d);
        if merge != Merge::Never {
            if let Some(run) = open.get_mut(&index) {
                let first = run.first.min(d.first_seen);
                let last = run.last.max(d.last_seen);
                if last.signed_duration_since(first) <= max_span {
                    run.first = first;
                    run.last = last;
                    if let Some(g) = groups.get_mut(run.group) {
                        g.push(i);
                        continue;
                    }
                }
            }
        }
        let group = groups.len();
        groups.push(vec![i]);
        if merge == Merge::Any {
            open.insert(
                index,
                Run {
                    group,
                    first: d.first_seen,
                    last: d.last_seen,
                },
            );
        } else {
            open.remove(&index);
        }
    }
    groups
}

/// A detection to apply, with its rule's facts, the asset factor of its events (the one with
/// the highest criticality) and its position in the batch.
pub type Member<'a> = (
    &'a Detection,
    &'a RuleMeta,
    Option<&'a crate::context::AssetFactor>,
    usize,
);

/// Applies a run of detections of one index, as [`group_detections`] made it (or a single
/// detection): what applying them one by one in order does, with one lookup of the offense
/// and one write. `then` sees the offense as it now is, what the first member did to it (the
/// others joined the offense it created or joined) and the events kept for it, which are stored
/// after `then` returns; its result is returned.
pub fn apply_detections<R>(
    store: &Store,
    book: &mut OffenseBook,
    (first, rest): (Member<'_>, &[Member<'_>]),
    limits: &OffenseLimits,
    seen: &mut SeenEvents,
    now: DateTime<Utc>,
    then: impl FnOnce(&Offense, OffenseChange, Kept<'_>) -> R,
) -> Result<R, StoreError> {
    let (d, meta, _, _) = first;
    let members = || std::iter::once(first).chain(rest.iter().copied());
    let group_first = members()
        .map(|m| m.0.first_seen)
        .min()
        .unwrap_or(d.first_seen);
    let group_last = members()
        .map(|m| m.0.last_seen)
        .max()
        .unwrap_or(d.last_seen);
    let mut open = book.take(store, &d.index_field, &d.index_value)?;
    let mut closed_as_inactive: Option<(String, u64)> = None;
    if let Some(mut closed) = open.take_if(|b| {
        b.offense
            .last_seen
            .checked_add_signed(limits.inactive_after)
            .is_some_and(|limit| d.first_seen > limit)
    }) {
        // Quiet for longer than inactive_after (event time): that offense is over.
        let o = &mut closed.offense;
        o.status = OffenseStatus::Closed;
        o.closing_reason = Some("inactive".into());
        o.closed_at = Some(now);
        o.updated_at = now;
        closed.dirty = true;
        closed.write(store)?;
        closed_as_inactive = Some((closed.offense.id.clone(), closed.offense.stored_events));
    }
    // Suppression: no open offense, but one closed recently (event time) for this index and the
    // rule asks to suppress re-alerts: the detection joins the closed offense, which stays
    // closed. Nothing is hidden: its events are counted and kept there.
    let mut suppressed = false;
    if open.is_none() {
        if let Some(window) = meta.suppress {
            if let Some(closed) = store.find_last_closed_offense(&d.index_field, &d.index_value)? {
                let within = closed
                    .last_seen
                    .checked_add_signed(window)
                    .is_some_and(|limit| d.first_seen <= limit);
                if within && closed.closing_reason.as_deref() != Some("inactive") {
                    suppressed = true;
                    let rules = store.offense_rules(&closed.id)?;
                    open = Some(book::Booked::clean(closed, rules));
                }
            }
        }
    }
    let (mut booked, change) = match open {
        Some(mut b) => {
            let o = &mut b.offense;
            o.first_seen = o.first_seen.min(group_first);
            o.last_seen = o.last_seen.max(group_last);
            o.updated_at = now;
            let change = if suppressed {
                OffenseChange::Suppressed
            } else {
                OffenseChange::Updated
            };
            (b, change)
        }
        None => {
            let id = offense_id(&d.index_field, &d.index_value, d.window_start);
            // The same id may exist closed (a replay over data whose offense was closed): a
            // deterministic id must not resurrect it, so reopen under a suffixed id.
            let id = match store.get_offense(&id)? {
                Some(existing) if existing.status == OffenseStatus::Closed => {
                    offense_id(&d.index_field, &d.index_value, now)
                }
                _ => id,
            };
            (
                book::Booked::new(Offense {
                    id,
                    rule: d.rule.to_string(),
                    title: d.title.to_string(),
                    index_field: d.index_field.to_string(),
                    index_value: d.index_value.clone(),
                    status: OffenseStatus::Open,
                    magnitude: 0,
                    severity: 0,
                    relevance: 0,
                    credibility: 0,
                    magnitude_reasons: Vec::new(),
                    level: d.level.as_deref().map(str::to_owned),
                    tags: Vec::new(),
                    first_seen: group_first,
                    last_seen: group_last,
                    event_count: 0,
                    stored_events: 0,
                    window_start: d.window_start,
                    created_at: now,
                    updated_at: now,
                    assignee: None,
                    closing_reason: None,
                    closed_at: None,
                    follow_up: false,
                    asset_criticality: 0,
                    asset_reason: None,
                }),
                OffenseChange::Created,
            )
        }
    };
    booked.dirty = true;
    let book::Booked {
        offense,
        rules,
        dirty_rules,
        loaded,
        ..
    } = &mut booked;
    // The magnitude depends only on the rule parts' scores and the asset: recomputed (and its
    // reasons written out) when the offense was just read from the database, a part joins or
    // the asset changes, not on every detection.
    let mut rescore = std::mem::take(loaded) || offense.magnitude_reasons.is_empty();
    // The offense counts an event once, whichever rules report it; each rule's part counts
    // what that rule reported. Of the events counted, the ones with room left are kept.
    let offense_key = SeenEvents::key(&offense.id);
    let room = limits
        .max_events_per_offense
        .saturating_sub(offense.stored_events) as usize;
    let mut keep: Vec<Arc<Event>> = Vec::new();
    // Rules (with their tags) of the run whose tags were added already.
    let mut tagged: Vec<(&str, &[String])> = Vec::new();
    for (m, m_meta, asset, position) in members() {
        seen.at(position);
        let part = match rules.iter().position(|r| *r.rule == *m.rule) {
            Some(i) => i,
            None => {
                rescore = true;
                rules.push(OffenseRule {
                    rule: m.rule.to_string(),
                    title: m.title.to_string(),
                    rule_id: m_meta.id.clone(),
                    author: m_meta.author.clone(),
                    level: m.level.as_deref().map(str::to_owned),
                    severity: m.severity,
                    relevance: m.relevance,
                    credibility: m.credibility,
                    detections: 0,
                    events: 0,
                    first_seen: m.first_seen,
                    last_seen: m.last_seen,
                });
                dirty_rules.push(false);
                rules.len() - 1
            }
        };
        if let Some(dirty) = dirty_rules.get_mut(part) {
            *dirty = true;
        }
        let mut counted = m.fresh.saturating_sub(m.events.len() as u64);
        for e in &m.events {
            if e.sequence.is_none_or(|s| seen.first_time(offense_key, s)) {
                counted += 1;
                if keep.len() < room {
                    keep.push(Arc::clone(e));
                }
            }
        }
        offense.event_count += counted;
        if let Some(r) = rules.get_mut(part) {
            r.detections += 1;
            r.events += m.fresh;
            r.first_seen = r.first_seen.min(m.first_seen);
            r.last_seen = r.last_seen.max(m.last_seen);
        }
        // The same rule's detections carry the same tags, except across a rule change
        // (detections of two rule versions in one scaled-out batch): compared, not assumed.
        if !tagged.iter().any(|(r, t)| **r == *m.rule && *t == &*m.tags) {
            tagged.push((&m.rule, &m.tags));
            for tag in m.tags.iter() {
                if !offense.tags.contains(tag) {
                    offense.tags.push(tag.clone());
                }
            }
        }
        if let Some(a) = asset.filter(|a| a.criticality > offense.asset_criticality) {
            offense.asset_criticality = a.criticality;
            offense.asset_reason = Some(a.reason.clone());
            rescore = true;
        }
    }
    // The offense is named after its earliest contributing rule (event time, then name), not
    // whichever detection arrived first, so the name does not depend on arrival order.
    if let Some(first) = rules
        .iter()
        .min_by(|a, b| a.first_seen.cmp(&b.first_seen).then(a.rule.cmp(&b.rule)))
    {
        if first.rule != offense.rule {
            offense.rule = first.rule.clone();
            offense.title = first.title.clone();
            offense.level = first.level.clone();
        }
    }
    if rescore {
        let (m, sev, rel, cred, reasons) = magnitude(
            rules,
            offense
                .asset_reason
                .as_deref()
                .map(|why| (offense.asset_criticality, why)),
        );
        offense.magnitude = m;
        offense.severity = sev;
        offense.relevance = rel;
        offense.credibility = cred;
        offense.magnitude_reasons = reasons;
    }
    let first_seq = offense.stored_events;
    offense.stored_events += keep.len() as u64;
    let result = then(
        offense,
        change,
        Kept {
            first_seq,
            events: &keep,
            closed: closed_as_inactive
                .as_ref()
                .map(|(id, stored)| (id.as_str(), *stored)),
        },
    );
    if change == OffenseChange::Created {
        // Its events refer to it (a foreign key): the row goes first.
        booked.write(store)?;
    }
    if !keep.is_empty() {
        store.add_offense_events(&booked.offense.id, first_seq, &keep)?;
    }
    if booked.offense.status == OffenseStatus::Open {
        book.keep(store, booked)?;
    } else {
        // Joined under suppression: a closed offense is not held.
        booked.write(store)?;
    }
    Ok(result)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn seen_events_count_each_event_once_per_offense_across_staging_and_commits() {
        let mut seen = SeenEvents::new(3);
        assert!(seen.first_time(1, 10));
        assert!(!seen.first_time(1, 10), "staged already");
        assert!(seen.first_time(2, 10), "another offense");
        seen.rollback();
        assert!(
            seen.first_time(1, 10),
            "a rolled-back batch counted nothing"
        );
        seen.commit();
        assert!(!seen.first_time(1, 10), "committed");
        for s in 11..14 {
            assert!(seen.first_time(1, s));
        }
        seen.commit();
        // Committed pairs are found; the same event is new to another offense, a later one
        // to every offense.
        assert!(!seen.first_time(1, 12), "committed");
        assert!(seen.first_time(2, 12), "another offense");
        assert!(seen.first_time(1, 14), "a later event");
        assert!(
            seen.first_time(1, 10),
            "the oldest is forgotten beyond the capacity"
        );
        assert!(!seen.first_time(1, 13));
        // Many staged entries in one batch (the scaled-out offense stage): each still once.
        let mut big = SeenEvents::new(1 << 16);
        for s in 0..20_000 {
            assert!(big.first_time(7, s));
        }
        assert!((0..20_000).all(|s| !big.first_time(7, s)));
        // A rollback takes a batch's pairs out again, and leaves the committed ones.
        big.commit();
        assert!(big.first_time(7, 20_000));
        assert!(big.first_time(8, 5));
        big.rollback();
        assert!(big.first_time(7, 20_000), "rolled back");
        assert!(big.first_time(8, 5), "rolled back");
        assert!(!big.first_time(7, 5), "committed before");
        // Detections applied out of order (runs): the commit remembers their pairs in
        // detection order, so the earliest detection's are forgotten first; a forgotten pair
        // counts again, once.
        let mut small = SeenEvents::new(2);
        small.at(1);
        assert!(small.first_time(1, 100));
        small.at(0);
        assert!(small.first_time(1, 200));
        small.at(2);
        assert!(small.first_time(1, 300));
        small.commit();
        assert!(small.first_time(1, 200), "position 0's pair went first");
        assert!(!small.first_time(1, 200), "and counts once again");
        assert!(!small.first_time(1, 300));
        small.commit();
        assert!(small.first_time(1, 100), "then position 1's");
    }

    #[test]
    fn offense_ids_are_deterministic_and_distinct() {
        let t = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let a = offense_id("source.ip", "203.0.113.7", t);
        assert_eq!(a, offense_id("source.ip", "203.0.113.7", t));
        assert_ne!(a, offense_id("source.ip", "203.0.113.8", t));
        assert_ne!(a, offense_id("user.name", "203.0.113.7", t));
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn a_critical_asset_raises_relevance_and_says_why() {
        let t = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let rule = OffenseRule {
            rule: "ssh_brute_force".into(),
            title: "SSH brute force".into(),
            rule_id: None,
            author: None,
            level: Some("medium".into()),
            severity: 5,
            relevance: 4,
            credibility: 6,
            detections: 1,
            events: 10,
            first_seen: t,
            last_seen: t,
        };
        let rules = [rule];
        let (m, _, rel, _, reasons) = magnitude(&rules, None);
        assert_eq!((m, rel), (5, 4));
        let why = "destination 10.20.0.5 in zone core-banking (criticality 9)";
        let (m, _, rel, _, reasons_asset) = magnitude(&rules, Some((9, why)));
        // (2*5 + 9 + 6) / 4 = 6.25
        assert_eq!((m, rel), (6, 9));
        assert!(reasons_asset[1].contains(why), "{reasons_asset:?}");
        assert_ne!(reasons, reasons_asset);
        // A zone less critical than the rules' relevance changes nothing.
        assert_eq!(magnitude(&rules, Some((3, "lab"))).2, 4);
    }

    /// A failed sshd login as root from 203.0.113.7, `secs` after 1_700_000_000, with
    /// `sequence`.
    fn root_failure_from_docnet(secs: i64, sequence: u64) -> Result<Event, StoreError> {
        let t = DateTime::<Utc>::from_timestamp(1_700_000_000 + secs, 0).unwrap_or_default();
        let mut e = Event::new(t, t);
        for (k, v) in [
            ("process.name", "sshd"),
            ("event.dataset", "openssh"),
            ("user.name", "root"),
            ("event.outcome", "failure"),
            ("source.ip", "203.0.113.7"),
        ] {
            e.set(k, v)
                .map_err(|err| StoreError::Corrupt(err.to_string()))?;
        }
        e.sequence = Some(sequence);
        Ok(e)
    }

    fn detections_for(rules_yaml: &str, event: Event) -> Vec<Detection> {
        let (set, errors) = RuleSet::from_sources(&[RuleSource {
            path: "t.yml".into(),
            text: rules_yaml.into(),
        }]);
        assert!(errors.is_empty(), "{errors:?}");
        let mut engine = vigil_correlate::Engine::new(Arc::new(set), Default::default());
        let mut out = Vec::new();
        engine.process(&Arc::new(event), &mut out);
        out
    }

    /// A detection after `inactive_after` of quiet closes the open offense and opens another;
    /// the caller is told which offense it closed (the scaled-out stage mirrors it too).
    #[test]
    fn a_run_that_closes_an_inactive_offense_names_it() -> Result<(), StoreError> {
        let rules = "title: Root login failure
name: root_failure
logsource: {product: linux, service: sshd}
detection:
  sel: {user.name: root, event.outcome: failure}
  condition: sel
level: medium
vigil:
  offense: {index: source.ip}
";
        let event_at = |secs: i64| root_failure_from_docnet(secs, secs as u64);
        let store = Store::open_in_memory()?;
        let mut book = OffenseBook::new(16);
        let limits = OffenseLimits {
            inactive_after: chrono::Duration::seconds(100),
            ..OffenseLimits::default()
        };
        let meta = RuleMeta::default();
        let mut seen = SeenEvents::new(100);
        let now = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let (mut ids, mut closed) = (Vec::new(), Vec::new());
        for secs in [0, 10, 1_000] {
            let detections = detections_for(rules, event_at(secs)?);
            assert_eq!(detections.len(), 1);
            let d = &detections[0];
            ids.push(apply_detections(
                &store,
                &mut book,
                ((d, &meta, None, 0), &[]),
                &limits,
                &mut seen,
                now,
                |o, _, kept| {
                    closed.push(kept.closed.map(|(id, n)| (id.to_owned(), n)));
                    o.id.clone()
                },
            )?);
            book.flush(&store)?;
        }
        // The third detection, 990 s after the second, closed the offense the first two made
        // (2 events stored) and opened another.
        assert_eq!(ids[0], ids[1]);
        assert_ne!(ids[2], ids[0]);
        assert_eq!(closed, [None, None, Some((ids[0].clone(), 2))]);
        let old = store
            .get_offense(&ids[0])?
            .ok_or_else(|| StoreError::Corrupt("the closed offense is gone".into()))?;
        assert_eq!(old.status, crate::store::OffenseStatus::Closed);
        assert_eq!(old.stored_events, 2);
        Ok(())
    }

    #[test]
    fn two_rules_firing_for_one_address_make_one_offense_listing_both() -> Result<(), StoreError> {
        let rules = "title: Root login failure
name: root_failure
author: Alice Analyst
logsource: {product: linux, service: sshd}
detection:
  sel: {user.name: root, event.outcome: failure}
  condition: sel
level: medium
vigil:
  offense: {index: source.ip, relevance: 4, credibility: 5}
---
title: Failure from a documentation range
name: docnet_failure
logsource: {product: linux, service: sshd}
detection:
  sel: {source.ip|cidr: 203.0.113.0/24, event.outcome: failure}
  condition: sel
level: high
vigil:
  offense: {index: source.ip, relevance: 6, credibility: 8}
";
        let t = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let detections = detections_for(rules, root_failure_from_docnet(0, 7)?);
        assert_eq!(detections.len(), 2);
        let store = Store::open_in_memory()?;
        let meta = RuleMeta {
            id: None,
            author: Some("Alice Analyst".into()),
            suppress: None,
            add_to_set: None,
        };
        let mut changes = Vec::new();
        let mut seen = SeenEvents::new(100);
        for d in &detections {
            changes.push(
                apply_detection(
                    &store,
                    &mut OffenseBook::write_through(),
                    d,
                    None,
                    &meta,
                    &OffenseLimits::default(),
                    &mut seen,
                    t,
                )?
                .1,
            );
        }
        assert_eq!(changes, [OffenseChange::Created, OffenseChange::Updated]);
        let (all, total) = store.list_offenses(&crate::store::OffenseFilter {
            limit: 10,
            ..Default::default()
        })?;
        assert_eq!(total, 1);
        let o = &all[0];
        assert_eq!(
            (o.index_field.as_str(), o.index_value.as_str()),
            ("source.ip", "203.0.113.7")
        );
        // One event reported by two rules: the offense counts it once, each rule's part once.
        assert_eq!(o.event_count, 1);
        assert_eq!(store.offense_events(&o.id, 10)?.len(), 1);
        // Severity from the high rule (7), relevance 6 + 1 for the second rule, credibility 8.
        assert_eq!((o.severity, o.relevance, o.credibility), (7, 7, 8));
        assert_eq!(o.magnitude, 7);
        assert!(
            o.magnitude_reasons
                .iter()
                .any(|r| r.contains("2 rules contributing")),
            "{:?}",
            o.magnitude_reasons
        );
        let parts = store.offense_rules(&o.id)?;
        let names: Vec<&str> = parts.iter().map(|r| r.rule.as_str()).collect();
        assert_eq!(names.len(), 2);
        assert!(names.contains(&"root_failure") && names.contains(&"docnet_failure"));
        assert!(parts.iter().all(|r| r.events == 1 && r.detections == 1));
        assert!(parts
            .iter()
            .any(|r| r.author.as_deref() == Some("Alice Analyst")));
        Ok(())
    }

    #[test]
    fn a_suppressing_rule_adds_to_a_recently_closed_offense_instead_of_reopening(
    ) -> Result<(), StoreError> {
        let rule = "title: Root login failure
name: root_failure
detection:
  sel: {user.name: root, event.outcome: failure}
  condition: sel
level: medium
vigil:
  offense: {index: source.ip}
  suppress: 1h
";
        let (set, errors) = RuleSet::from_sources(&[RuleSource {
            path: "t.yml".into(),
            text: rule.into(),
        }]);
        assert!(errors.is_empty(), "{errors:?}");
        let suppress = set.rules()[0]
            .vigil
            .suppress
            .as_deref()
            .and_then(|s| vigil_correlate::parse_duration(s).ok());
        let meta = RuleMeta {
            suppress,
            ..RuleMeta::default()
        };
        let mut engine = vigil_correlate::Engine::new(Arc::new(set), Default::default());
        let store = Store::open_in_memory()?;
        let mut seen = SeenEvents::new(100);
        let t0 = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let mut apply =
            |offset_mins: i64, seq: u64| -> Result<(Offense, OffenseChange), StoreError> {
                let e = root_failure_from_docnet(offset_mins * 60, seq)?;
                let mut out = Vec::new();
                engine.process(&Arc::new(e), &mut out);
                let d = out
                    .first()
                    .ok_or_else(|| StoreError::Corrupt("no detection".into()))?;
                apply_detection(
                    &store,
                    &mut OffenseBook::write_through(),
                    d,
                    None,
                    &meta,
                    &OffenseLimits::default(),
                    &mut seen,
                    t0,
                )
            };
        let (first, change) = apply(0, 1)?;
        assert_eq!(change, OffenseChange::Created);
        // An analyst closes it.
        let mut closed = first.clone();
        closed.status = OffenseStatus::Closed;
        closed.closing_reason = Some("false positive: scanner allow-listed".into());
        store.put_offense(&closed)?;
        // 30 minutes later (within suppress 1h): joins the closed offense, which stays closed.
        let (o, change) = apply(30, 2)?;
        assert_eq!(change, OffenseChange::Suppressed);
        assert_eq!(o.id, first.id);
        assert_eq!(o.status, OffenseStatus::Closed);
        assert_eq!(o.event_count, 2);
        assert_eq!(store.offense_events(&o.id, 10)?.len(), 2);
        // Three hours after the offense's last event: a new offense opens.
        let (o, change) = apply(210, 3)?;
        assert_eq!(change, OffenseChange::Created);
        assert_ne!(o.id, first.id);
        Ok(())
    }

    #[test]
    fn builtin_rules_compile() -> std::io::Result<()> {
        let (rules, errors) = load_rules(Path::new("/nonexistent-rules-dir"))?;
        assert!(errors.is_empty(), "{errors:?}");
        assert!(!rules.is_empty());
        // The pack built into the binary is exactly the rules/ folder.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".yml"))
            .map(|n| format!("rules/{n}"))
            .collect();
        on_disk.sort();
        let mut built_in: Vec<String> =
            BUILTIN_RULES.iter().map(|(p, _)| (*p).to_owned()).collect();
        built_in.sort();
        assert_eq!(built_in, on_disk);
        Ok(())
    }
}
