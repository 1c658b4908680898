//! Dispatch: which rules an event could match, so it only meets those.
//!
//! Two paths, both exact supersets of the true matches:
//! - **literal prefilter**: a rule whose detection implies "field F contains one of these ASCII
//!   literals" (from `contains`/`startswith`/`endswith`/equality values and keyword searches) is
//!   only a candidate when one aho-corasick automaton per field (ASCII case-insensitive, the same
//!   comparison the matchers use) finds one of them;
//! - **logsource dispatch**: any other rule whose `logsource` maps to `(field, value)`
//!   alternatives (`event.category`, `event.dataset`, `process.name`) is filed under those values
//!   and found by hash lookup; the rest are always candidates.
//!
//! Architecture Invariant: the index never changes results, only how many rules are evaluated
//! (checked by a test that compares against exhaustive evaluation).

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, AhoCorasickKind};

/// Pattern bytes up to which a field's prefilter automaton is built as a DFA.
const DFA_MAX_PATTERN_BYTES: usize = 200_000;
use vigil_parsers::event::{Event, FieldRef, LATE_FIELDS};

use crate::matcher::with_text;
use crate::ruleset::DetectionRule;

/// Calls `f` with `text` ASCII-lowercased, on the stack when it is short.
fn with_ascii_lowercase<R>(text: &str, f: impl FnOnce(&str) -> R) -> R {
    let mut buf = [0u8; 128];
    if let Some(slot) = buf.get_mut(..text.len()) {
        slot.copy_from_slice(text.as_bytes());
        slot.make_ascii_lowercase();
        if let Ok(lower) = std::str::from_utf8(slot) {
            return f(lower);
        }
    }
    f(&text.to_ascii_lowercase())
}

struct FieldPrefilter {
    field: String,
    /// `field`, resolved.
    at: FieldRef,
    ac: AhoCorasick,
    /// Pattern id to the rules that need it.
    pattern_rules: Vec<Vec<u32>>,
}

/// While building: a field, its literal -> pattern id map, the patterns, rules per pattern.
type LiteralField = (String, HashMap<String, usize>, Vec<String>, Vec<Vec<u32>>);

/// The compiled dispatch index.
#[derive(Default)]
pub(crate) struct Index {
    anchor_fields: Vec<String>,
    /// `anchor_fields`, resolved.
    anchors: Vec<FieldRef>,
    /// Per anchor field: lowercase value to rules.
    by_value: Vec<HashMap<String, Vec<u32>>>,
    unanchored: Vec<u32>,
    prefilters: Vec<FieldPrefilter>,
    /// Prefilters (indices into `prefilters`) on core event fields, read with `Event::get`,
    /// that are final once the event is normalized: [`Index::prescan`] may run them ahead.
    early_prefilters: Vec<usize>,
    /// Prefilters on core fields set after normalization ([`LATE_FIELDS`]: enrichment): only
    /// the engine runs them.
    late_prefilters: Vec<usize>,
    /// Prefilters on `extra` fields, by `extra` key (`extra.` prefix removed, as `Event::get`
    /// does), so an event's few `extra` entries are looked up instead of every prefilter field.
    extra_prefilters: HashMap<String, Vec<usize>>,
    /// How many rules are behind the literal prefilter (for stats and tests).
    pub(crate) prefiltered: usize,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("anchor_fields", &self.anchor_fields)
            .field("unanchored", &self.unanchored.len())
            .field("prefilters", &self.prefilters.len())
            .field("prefiltered", &self.prefiltered)
            .finish()
    }
}

/// Reusable per-caller buffers for [`Index::candidates`].
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    marks: Vec<u32>,
    generation: u32,
    pub(crate) candidates: Vec<u32>,
}

impl Index {
    pub(crate) fn build(rules: &[DetectionRule]) -> Index {
        let mut index = Index::default();
        // field -> (literal -> pattern id, patterns, rules per pattern)
        let mut lit_fields: Vec<LiteralField> = Vec::new();
        let mut wants_prefilter: Vec<Option<Vec<(String, String)>>> = Vec::new();
        for rule in rules {
            wants_prefilter.push(rule.detection.required_literals());
        }
        for (r, lits) in wants_prefilter.iter().enumerate() {
            let Some(lits) = lits else { continue };
            let Ok(rid) = u32::try_from(r) else { continue };
            for (field, lit) in lits {
                let fi = match lit_fields.iter().position(|(f, ..)| f == field) {
                    Some(i) => i,
                    None => {
                        lit_fields.push((field.clone(), HashMap::new(), Vec::new(), Vec::new()));
                        lit_fields.len() - 1
                    }
                };
                let (_, ids, pats, prules) = &mut lit_fields[fi];
                let pid = *ids.entry(lit.clone()).or_insert_with(|| {
                    pats.push(lit.clone());
                    prules.push(Vec::new());
                    pats.len() - 1
                });
                if prules[pid].last() != Some(&rid) {
                    prules[pid].push(rid);
                }
            }
        }
        let mut prefiltered = vec![false; rules.len()];
        for (field, _, pats, prules) in lit_fields {
            // A DFA scans fastest; its memory grows with the patterns, so very large sets (or a
            // DFA that fails to build) use the default choice.
            let total: usize = pats.iter().map(String::len).sum();
            let dfa = (total <= DFA_MAX_PATTERN_BYTES)
                .then(|| {
                    AhoCorasick::builder()
                        .ascii_case_insensitive(true)
                        .kind(Some(AhoCorasickKind::DFA))
                        .build(&pats)
                        .ok()
                })
                .flatten();
            let built = match dfa {
                Some(ac) => Ok(ac),
                None => AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build(&pats),
            };
            match built {
                Ok(ac) => {
                    for list in &prules {
                        for r in list {
                            if let Some(p) = prefiltered.get_mut(*r as usize) {
                                *p = true;
                            }
                        }
                    }
                    index.prefilters.push(FieldPrefilter {
                        at: FieldRef::new(&field),
                        field,
                        ac,
                        pattern_rules: prules,
                    });
                }
                Err(_) => {
                    // Rules of a field whose automaton cannot be built fall back to the other
                    // path; a rule is prefiltered only when all its fields' automata exist.
                }
            }
        }
        // A rule whose literals span a field without an automaton must not be prefiltered.
        for (r, lits) in wants_prefilter.iter().enumerate() {
            if let Some(lits) = lits {
                let all_built = lits
                    .iter()
                    .all(|(f, _)| index.prefilters.iter().any(|p| p.field == *f));
                if !all_built {
                    prefiltered[r] = false;
                }
            }
        }
        // Drop prefilter entries for rules that ended up not prefiltered.
        for pf in &mut index.prefilters {
            for list in &mut pf.pattern_rules {
                list.retain(|r| prefiltered.get(*r as usize).copied().unwrap_or(false));
            }
        }
        index.prefiltered = prefiltered.iter().filter(|p| **p).count();
        for (i, pf) in index.prefilters.iter().enumerate() {
            if LATE_FIELDS.contains(&pf.field.as_str()) {
                index.late_prefilters.push(i);
            } else if Event::is_core_field(&pf.field) {
                index.early_prefilters.push(i);
            } else {
                let key = pf.field.strip_prefix("extra.").unwrap_or(&pf.field);
                index
                    .extra_prefilters
                    .entry(key.to_owned())
                    .or_default()
                    .push(i);
            }
        }
        for (r, rule) in rules.iter().enumerate() {
            let Ok(rid) = u32::try_from(r) else { continue };
            if prefiltered[r] {
                continue;
            }
            match rule.logsource {
                Some(tests) if !tests.is_empty() => {
                    for (field, value) in tests {
                        let fi = match index.anchor_fields.iter().position(|f| f == field) {
                            Some(i) => i,
                            None => {
                                index.anchor_fields.push((*field).to_owned());
                                index.anchors.push(FieldRef::new(field));
                                index.by_value.push(HashMap::new());
                                index.anchor_fields.len() - 1
                            }
                        };
                        let list = index.by_value[fi]
                            .entry(value.to_ascii_lowercase())
                            .or_default();
                        if list.last() != Some(&rid) {
                            list.push(rid);
                        }
                    }
                }
                _ => index.unanchored.push(rid),
            }
        }
        index
    }

    /// Fills `scratch.candidates` with the sorted, distinct rules `event` could match.
    /// `prescanned`: what [`Index::prescan`] found for this event with this index (the early
    /// prefilters are then not run again).
    pub(crate) fn candidates(
        &self,
        event: &Event,
        n_rules: usize,
        scratch: &mut Scratch,
        prescanned: Option<&[u32]>,
    ) {
        scratch.candidates.clear();
        let generation = scratch.next_generation(n_rules);
        let Scratch {
            marks, candidates, ..
        } = scratch;
        let mut push = |r: u32| {
            if let Some(m) = marks.get_mut(r as usize) {
                if *m != generation {
                    *m = generation;
                    candidates.push(r);
                }
            }
        };
        for r in &self.unanchored {
            push(*r);
        }
        for (fi, at) in self.anchors.iter().enumerate() {
            let Some(v) = at.get(event) else { continue };
            let Some(map) = self.by_value.get(fi) else {
                continue;
            };
            with_text(&v, |text| {
                with_ascii_lowercase(text, |key| {
                    if let Some(list) = map.get(key) {
                        list.iter().for_each(|r| push(*r));
                    }
                })
            });
        }
        match prescanned {
            Some(hits) => hits.iter().for_each(|r| push(*r)),
            None => self.scan_early(event, &mut push),
        }
        self.scan(&self.late_prefilters, event, &mut push);
        candidates.sort_unstable();
    }

    /// The rules the literal prefilters on fields final at normalization (every `extra` field,
    /// the core fields outside [`LATE_FIELDS`]) let through for `event`, distinct, into `out`
    /// (cleared first): the part of [`Index::candidates`] that another thread can run ahead of
    /// the engine, before enrichment. Returns false, with `out` cleared, when more than
    /// `max_hits` rules pass (the engine then scans the event itself: bounds what a batch holds).
    pub(crate) fn prescan(
        &self,
        event: &Event,
        n_rules: usize,
        scratch: &mut Scratch,
        max_hits: usize,
        out: &mut Vec<u32>,
    ) -> bool {
        out.clear();
        let generation = scratch.next_generation(n_rules);
        let marks = &mut scratch.marks;
        let mut push = |r: u32| {
            if let Some(m) = marks.get_mut(r as usize) {
                if *m != generation {
                    *m = generation;
                    out.push(r);
                }
            }
        };
        self.scan_early(event, &mut push);
        if out.len() > max_hits {
            out.clear();
            return false;
        }
        true
    }

    /// Runs the core-field prefilters `which` over `event`, pushing the rules of every literal found.
    fn scan(&self, which: &[usize], event: &Event, push: &mut impl FnMut(u32)) {
        for &i in which {
            let Some(pf) = self.prefilters.get(i) else {
                continue;
            };
            if let Some(v) = pf.at.get(event) {
                with_text(&v, |text| pf.scan(text, push));
            }
        }
    }

    /// Runs the prefilters on fields final at normalization over `event`: the early core
    /// fields and every `extra` field.
    fn scan_early(&self, event: &Event, push: &mut impl FnMut(u32)) {
        self.scan(&self.early_prefilters, event, push);
        if !self.extra_prefilters.is_empty() {
            for (key, text) in &event.extra {
                let Some(list) = self.extra_prefilters.get(key.as_str()) else {
                    continue;
                };
                for &i in list {
                    if let Some(pf) = self.prefilters.get(i) {
                        pf.scan(text, push);
                    }
                }
            }
        }
    }
}

impl FieldPrefilter {
    /// Pushes the rules of every literal of this field found in `text`.
    fn scan(&self, text: &str, push: &mut impl FnMut(u32)) {
        for m in self.ac.find_overlapping_iter(text) {
            if let Some(list) = self.pattern_rules.get(m.pattern().as_usize()) {
                list.iter().for_each(|r| push(*r));
            }
        }
    }
}

impl Scratch {
    /// Starts a new round of marks for `n_rules` rules: its generation number.
    fn next_generation(&mut self, n_rules: usize) -> u32 {
        if self.marks.len() != n_rules {
            self.marks = vec![0; n_rules];
            self.generation = 0;
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.generation = 1;
        }
        self.generation
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use vigil_parsers::event::Event;

    use crate::{LoadOptions, RuleSet, RuleSource};

    /// Prefilters on `extra` fields (with and without the `extra.` prefix), `*` wildcards and
    /// exact values agree with exhaustive evaluation.
    #[test]
    fn extra_field_prefilters_equal_exhaustive_matching() {
        let mut text = String::new();
        let lits = ["cmd", "CMD.exe", "powershell", "-enc", "whoami", "/c", "x"];
        for (i, l) in lits.iter().enumerate() {
            for (j, det) in [
                format!("CommandLine|contains: '{l}'"),
                format!("extra.CommandLine|contains: '{l}'"),
                format!("Image|endswith: '{l}'"),
                format!("ParentImage: '*{l}*exe'"),
                format!("CommandLine: '{l}'"),
                format!("OriginalFileName|startswith: '{l}'"),
            ]
            .iter()
            .enumerate()
            {
                text.push_str(&format!(
                    "---\ntitle: r{i}_{j}\nname: r{i}_{j}\nlogsource: {{product: windows}}\ndetection:\n  sel:\n    {det}\n  condition: sel\n"
                ));
            }
        }
        let (set, errors) = RuleSet::from_sources_with(
            &[RuleSource {
                path: "t.yml".into(),
                text,
            }],
            &LoadOptions {
                apply_unserved_logsources: true,
                ..Default::default()
            },
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(set.prefiltered_rules(), set.detections.len());
        let t = DateTime::<Utc>::from_timestamp(0, 0).unwrap_or_default();
        let values = [
            "cmd",
            "CMD.EXE",
            "C:\\x\\cmd.exe",
            "powershell -enc AA",
            "whoami /c",
            "",
            "X",
            "é",
        ];
        let mut hits = 0;
        for (a, v1) in values.iter().enumerate() {
            for v2 in &values[a..] {
                let mut e = Event::new(t, t);
                e.extra.insert("CommandLine".into(), (*v1).into());
                e.extra
                    .insert("ParentImage".into(), format!("{v2}exe").into());
                e.extra.insert("OriginalFileName".into(), (*v2).into());
                e.extra.insert("Unrelated".into(), (*v1).into());
                e.process_name = Some((*v2).into());
                let indexed = set.matching_rules(&e);
                assert_eq!(indexed, set.matching_rules_exhaustive(&e), "{e:?}");
                hits += indexed.len();
            }
        }
        assert!(hits > 50, "{hits}");
    }

    /// The prescan made ahead on the normalized event, then the engine's match on the event
    /// after enrichment set its late fields, equals exhaustive evaluation of the final event:
    /// early fields (core and `extra`) come from the prescan, late ones (a GeoIP country) are
    /// scanned by the engine. An event passing more than the prescan's bound, and a prescan
    /// made with another rule set, are scanned by the engine instead.
    #[test]
    fn a_prescan_before_enrichment_equals_exhaustive_matching_after() {
        let mut text = String::new();
        let mut rule = |name: &str, det: &str| {
            text.push_str(&format!(
                "---\ntitle: {name}\nname: {name}\ndetection:\n  sel:\n    {det}\n  condition: sel\n"
            ));
        };
        rule("msg_root", "message|contains: 'root'");
        rule("msg_sudo", "message|contains|all: ['sudo', 'COMMAND']");
        rule("cmd_enc", "CommandLine|contains: '-enc'");
        rule("geo_land", "source.geo.country_name|contains: 'land'");
        rule("geo_kingdom", "source.geo.country_name|endswith: 'Kingdom'");
        // Seventy rules on one word: an event with it passes more than the prescan keeps.
        for i in 0..70 {
            rule(
                &format!("many_{i}"),
                &format!("message|contains: 'flood{i:02}'"),
            );
        }
        let (set, errors) = RuleSet::from_sources_with(
            &[RuleSource {
                path: "t.yml".into(),
                text,
            }],
            &LoadOptions {
                apply_unserved_logsources: true,
                ..Default::default()
            },
        );
        assert!(errors.is_empty(), "{errors:?}");
        let set = std::sync::Arc::new(set);
        let flood: String = (0..70).map(|i| format!("flood{i:02} ")).collect();
        let messages = [
            "Accepted password for ROOT from 10.0.0.1",
            "sudo: alice : COMMAND=/bin/sh",
            "sudo without the other word",
            flood.as_str(),
            "",
        ];
        let countries = [None, Some("Finland"), Some("United Kingdom"), Some("Chile")];
        let t = DateTime::<Utc>::from_timestamp(0, 0).unwrap_or_default();
        let mut prescan = crate::Prescan::new(std::sync::Arc::clone(&set));
        let mut finals = Vec::new();
        for m in messages {
            for c in countries {
                for cmd in [None, Some("powershell -ENC AAAA")] {
                    let mut e = Event::new(t, t);
                    e.message = Some(m.into());
                    if let Some(cmd) = cmd {
                        e.extra.insert("CommandLine".into(), cmd.into());
                    }
                    prescan.push(Some(&e));
                    // Enrichment, after the prescan.
                    e.rare_mut().source_geo_country_name = c.map(Into::into);
                    finals.push(e);
                }
            }
        }
        prescan.push(None);
        assert_eq!(prescan.len(), finals.len() + 1);
        let other = std::sync::Arc::new(RuleSet::default());
        let mut scratch = super::Scratch::default();
        let (mut with, mut without) = (Vec::new(), Vec::new());
        let mut skipped = 0;
        for (i, e) in finals.iter().enumerate() {
            let hits = prescan.hits(&set, i);
            assert!(prescan.hits(&other, i).is_none());
            skipped += usize::from(hits.is_none());
            set.match_indexed(e, &mut scratch, hits, &mut with);
            set.match_indexed(e, &mut scratch, None, &mut without);
            assert_eq!(with, without, "{e:?}");
            let named: Vec<usize> = with.iter().map(|d| set.detections[*d].info).collect();
            assert_eq!(named, set.matching_rules_exhaustive(e), "{e:?}");
        }
        // The flood messages (8 events) were left to the engine; the dead letter has no hits.
        assert_eq!(skipped, 8);
        assert!(prescan.hits(&set, finals.len()).is_none());
        let all: std::collections::BTreeSet<String> = finals
            .iter()
            .flat_map(|e| set.matching_rules(e))
            .map(|r| set.rules()[r].name.clone())
            .filter(|n| !n.starts_with("many_"))
            .collect();
        assert_eq!(
            all.len(),
            5,
            "every rule but the flood ones matched some event: {all:?}"
        );
    }
}
