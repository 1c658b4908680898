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
use vigil_parsers::event::{Event, FieldRef};

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
    /// Prefilters (indices into `prefilters`) on core event fields, read with `Event::get`.
    core_prefilters: Vec<usize>,
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
            if Event::is_core_field(&pf.field) {
                index.core_prefilters.push(i);
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
    pub(crate) fn candidates(&self, event: &Event, n_rules: usize, scratch: &mut Scratch) {
        scratch.candidates.clear();
        if scratch.marks.len() != n_rules {
            scratch.marks = vec![0; n_rules];
            scratch.generation = 0;
        }
        scratch.generation = scratch.generation.wrapping_add(1);
        if scratch.generation == 0 {
            scratch.marks.iter_mut().for_each(|m| *m = 0);
            scratch.generation = 1;
        }
        let generation = scratch.generation;
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
        let mut scan = |pf: &FieldPrefilter, text: &str| {
            for m in pf.ac.find_overlapping_iter(text) {
                if let Some(list) = pf.pattern_rules.get(m.pattern().as_usize()) {
                    list.iter().for_each(|r| push(*r));
                }
            }
        };
        for &i in &self.core_prefilters {
            let Some(pf) = self.prefilters.get(i) else {
                continue;
            };
            if let Some(v) = pf.at.get(event) {
                with_text(&v, |text| scan(pf, text));
            }
        }
        if !self.extra_prefilters.is_empty() {
            for (key, text) in &event.extra {
                let Some(list) = self.extra_prefilters.get(key.as_str()) else {
                    continue;
                };
                for &i in list {
                    if let Some(pf) = self.prefilters.get(i) {
                        scan(pf, text);
                    }
                }
            }
        }
        candidates.sort_unstable();
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
}
