//! Loading: multi-document files, errors naming file and line, the `vigil:` block.

use vigil_correlate::{RuleError, RuleKind, RuleSet};

use crate::common::{load, load_files};

const DESIGN_EXAMPLE: &str = "title: SSH password failure
name: ssh_failed_password
logsource: {product: linux, service: sshd}
detection:
  selection: {event.category: authentication, event.outcome: failure}
  condition: selection
---
title: SSH brute force
name: ssh_brute_force
correlation:
  type: event_count
  rules: [ssh_failed_password]
  group-by: [source.ip]
  timespan: 5m
  condition: {gte: 10}
level: high
tags: [attack.credential_access, attack.t1110.001]
vigil:                      # everything Sigma has no word for
  offense: {index: source.ip, relevance: 6, credibility: 8}
  suppress: 1h
  tests:
    - name: ten failures in a minute raise one offense
      events: ssh_brute_force.fixture.log
      expect: [{index: 203.0.113.7, events: 10}]
    - name: three failures stay quiet
      events: ssh_three_failures.fixture.log
      expect: []
";

fn only_error(files: &[(&str, &str)]) -> RuleError {
    let (_, errors) = load_files(files);
    assert_eq!(errors.len(), 1, "{errors:?}");
    errors.into_iter().next().unwrap()
}

#[test]
fn the_design_example_loads_with_its_vigil_block() {
    let set = load(DESIGN_EXAMPLE);
    assert_eq!(set.len(), 2);
    let rules = set.rules();
    assert_eq!(rules[0].kind, RuleKind::Detection);
    assert!(!rules[0].generate);
    let corr = &rules[1];
    assert_eq!(corr.kind, RuleKind::EventCount);
    assert_eq!(corr.name, "ssh_brute_force");
    assert_eq!(corr.line, 8);
    assert_eq!(corr.references, vec!["ssh_failed_password"]);
    assert_eq!(corr.vigil.offense.relevance, 6);
    assert_eq!(corr.vigil.offense.credibility, 8);
    assert_eq!(corr.vigil.offense.index.as_deref(), Some("source.ip"));
    assert_eq!(corr.vigil.suppress.as_deref(), Some("1h"));
    assert_eq!(corr.vigil.tests.len(), 2);
    assert_eq!(corr.vigil.tests[0].expect[0].index, "203.0.113.7");
    assert_eq!(corr.vigil.tests[0].expect[0].events, 10);
    assert!(corr.vigil.tests[1].expect.is_empty());
}

#[test]
fn a_broken_rule_names_its_file_and_line_and_the_others_load() {
    let good = "title: good\nname: good\ndetection:\n  sel: {user.name: root}\n  condition: sel\n";
    let bad = "title: bad\nname: bad\ndetection:\n  sel:\n    user.name: root\n    message|contians: x\n  condition: sel\n";
    let (set, errors) = load_files(&[("rules/good.yml", good), ("rules/bad.yml", bad)]);
    assert_eq!(set.len(), 1);
    assert_eq!(set.rules()[0].name, "good");
    assert_eq!(errors.len(), 1);
    let e = &errors[0];
    assert_eq!((e.path.as_str(), e.line), ("rules/bad.yml", 6));
    assert_eq!(e.rule.as_deref(), Some("bad"));
    assert!(
        e.message.contains("unknown modifier `contians`"),
        "{}",
        e.message
    );
    assert_eq!(e.to_string(), format!("rules/bad.yml:6: {}", e.message));
}

#[test]
fn errors_in_later_documents_count_lines_from_the_file_start() {
    let text = format!("{DESIGN_EXAMPLE}---\ntitle: third\nname: third\ndetection:\n  sel:\n    source.ip|cidr: 10.0.0.0/99\n  condition: sel\n");
    let (set, errors) = load_files(&[("multi.yml", &text)]);
    assert_eq!(set.len(), 2);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, 33);
    assert!(
        errors[0].message.contains("prefix length"),
        "{}",
        errors[0].message
    );
}

#[test]
fn yaml_syntax_errors_point_at_their_line() {
    let text = "title: x\nname: x\ndetection:\n  sel: {user.name: root\n  condition: sel\n---\ntitle: y\nname: y\ndetection:\n  sel: {user.name: root}\n  condition: sel\n";
    let (set, errors) = load_files(&[("syntax.yml", text)]);
    assert_eq!(set.len(), 1);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].line >= 4 && errors[0].line <= 6, "{}", errors[0]);
}

#[test]
fn an_unknown_rule_reference_names_the_line() {
    let text = "title: c\nname: c\ncorrelation:\n  type: event_count\n  rules:\n    - nope\n  timespan: 5m\n  condition: {gte: 2}\n";
    let e = only_error(&[("corr.yml", text)]);
    assert_eq!((e.path.as_str(), e.line), ("corr.yml", 6));
    assert!(e.message.contains("unknown rule `nope`"), "{}", e.message);
}

#[test]
fn a_reference_to_a_rule_that_failed_says_so() {
    let text = "title: a\nname: a\ndetection:\n  sel: {x|bogus: 1}\n  condition: sel\n---\ntitle: c\nname: c\ncorrelation:\n  type: event_count\n  rules: [a]\n  timespan: 5m\n  condition: {gte: 2}\n";
    let (set, errors) = load_files(&[("f.yml", text)]);
    assert!(set.is_empty());
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0].line, 4);
    assert_eq!(errors[1].line, 11);
    assert!(
        errors[1].message.contains("failed to load"),
        "{}",
        errors[1].message
    );
}

#[test]
fn the_vigil_block_is_strict() {
    let text = "title: a\nname: a\ndetection:\n  sel: {user.name: root}\n  condition: sel\nvigil:\n  offense:\n    relevence: 3\n";
    let e = only_error(&[("v.yml", text)]);
    assert_eq!(e.line, 8);
    assert!(e.message.contains("relevence"), "{}", e.message);
    let text = "title: a\nname: a\ndetection:\n  sel: {user.name: root}\n  condition: sel\nvigil:\n  offense:\n    relevance: 11\n";
    let e = only_error(&[("v.yml", text)]);
    assert_eq!(e.line, 8);
    let text = "title: a\nname: a\ndetection:\n  sel: {user.name: root}\n  condition: sel\nvigil:\n  suppress: soon\n";
    let e = only_error(&[("v.yml", text)]);
    assert_eq!(e.line, 7);
}

#[test]
fn sigma_top_level_keys_and_custom_attributes_are_accepted() {
    let text = "title: a\nid: 0e95725d-7320-415d-80f7-004da920fc11\nstatus: test\ndescription: d\nreferences: [x]\nauthor: someone\ndate: 2024-01-01\nmodified: 2024-02-01\ntags: [attack.t1]\nlogsource: {product: linux, definition: x}\nfalsepositives: [none]\nfields: [a]\nlevel: low\nlicense: DRL\nrelated: [{id: x, type: derived}]\ntaxonomy: sigma\nscope: [server]\nregression_tests_path: x/y\ndetection:\n  sel: {user.name: root}\n  condition: sel\n";
    let set = load(text);
    let r = &set.rules()[0];
    assert_eq!(r.name, "0e95725d-7320-415d-80f7-004da920fc11");
    assert_eq!(r.author.as_deref(), Some("someone"));
    assert_eq!(r.level.as_deref(), Some("low"));
}

#[test]
fn semantic_errors_are_refused_with_lines() {
    let cases: &[(&str, usize, &str)] = &[
        ("title: a\ndetection:\n  sel:\n    message|re: '(unclosed'\n  condition: sel\n", 4, "regex"),
        ("title: a\ndetection:\n  sel:\n    n|gt: many\n  condition: sel\n", 4, "number"),
        ("title: a\ndetection:\n  sel:\n    n|exists: maybe\n  condition: sel\n", 4, "true or false"),
        ("title: a\ndetection:\n  sel:\n    n|contains|re: x\n  condition: sel\n", 4, "only apply"),
        ("title: a\ndetection:\n  sel:\n    n|i: x\n  condition: sel\n", 4, "only apply to re"),
        ("title: a\ndetection:\n  sel:\n    n: x\n  condition: sel and other\n", 5, "unknown selection"),
        ("title: a\ndetection:\n  sel:\n    n: x\n", 2, "no condition"),
        ("title: a\ndetection:\n  sel:\n    n: x\n  condition: sel | count() > 5\n", 5, "aggregation"),
        ("title: a\nlogsource: {product: x}\n", 1, "neither"),
        ("name: a\ncorrelation:\n  type: value_count\n  rules: [x]\n  timespan: 5m\n  condition: {gte: 2}\n", 3, "needs condition.field"),
        ("name: a\ncorrelation:\n  type: sequence\n  rules: [x]\n  timespan: 5m\n  condition: {gte: 2}\n", 3, "unknown correlation type"),
        ("name: a\ncorrelation:\n  type: temporal\n  rules: [x, y]\n  timespan: 5m\n  condition: {gte: 3}\n", 6, "lists 2 rules"),
        ("name: a\ncorrelation:\n  type: event_count\n  rules: [x]\n  timespan: 5q\n  condition: {gte: 2}\n", 5, "unit"),
        ("name: a\ncorrelation:\n  type: event_count\n  rules: [x]\n  timespan: 5m\n  condition: {gte: 5, lt: 3}\n", 6, "never"),
        ("name: a\ncorrelation:\n  type: event_count\n  rules: [x]\n  timespan: 5m\n  condition: {}\n", 6, "needs one of"),
        ("name: a\ncorrelation:\n  type: event_count\n  rules: [x]\n  timespan: 5m\n  grup-by: [x]\n  condition: {gte: 1}\n", 6, "grup-by"),
    ];
    for (text, line, needle) in cases {
        let e = only_error(&[("s.yml", text)]);
        assert_eq!(e.line, *line, "{text}\n=> {e}");
        assert!(e.message.contains(needle), "{text}\n=> {e}");
        assert!(!e.message.ends_with('.'), "{e}");
    }
}

#[test]
fn duplicate_names_are_refused() {
    let a = "title: a\nname: dup\ndetection:\n  sel: {n: 1}\n  condition: sel\n";
    let (set, errors) = load_files(&[("a.yml", a), ("b.yml", a)]);
    assert_eq!(set.len(), 1);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "b.yml");
    assert!(errors[0].message.contains("a.yml:1"), "{}", errors[0]);
}

#[test]
fn no_input_panics_the_loader() {
    let seeds = [
        DESIGN_EXAMPLE,
        "title: a\ndetection:\n  sel|all: ['a', 'b']\n  condition: 1 of them\n",
        "title: a\nname: a\ndetection:\n  sel: {x|wide|base64offset|contains: y, z|expand: '%p%'}\n  condition: sel\n---\nname: b\ncorrelation:\n  type: temporal_ordered\n  rules: [a, c]\n  group-by: [ip]\n  timespan: 1m\n  aliases:\n    ip: {a: source.ip, c: destination.ip}\n---\nname: c\ncorrelation:\n  type: value_count\n  rules: [a, b]\n  timespan: 1m\n  condition: {field: u, gte: 2}\n",
    ];
    let tricky = [
        "",
        "---",
        "---\n---\n",
        "...",
        "[",
        "{",
        "title: [",
        "detection: 5",
        "detection: {condition: 5}",
        "title: a\ndetection:\n  sel: [[1]]\n  condition: sel",
        "title: a\ndetection:\n  sel: !tag x\n  condition: sel",
        "title: a\ndetection:\n  sel: {a: {b: c}}\n  condition: sel",
        "\u{feff}title: a",
        "title: a\ndetection:\n  ? [a]\n  : b\n  condition: sel",
        "title: a\ndetection:\n  sel: {'|': x}\n  condition: sel",
        "title: a\ndetection:\n  sel: {'a||b': x}\n  condition: sel",
    ];
    for t in tricky {
        let _ = load_files(&[("t.yml", t)]);
    }
    // Cut each seed at every byte boundary and flip characters: nothing may panic.
    for seed in seeds {
        for cut in (0..seed.len()).filter(|i| seed.is_char_boundary(*i)) {
            let _ = load_files(&[("t.yml", &seed[..cut])]);
        }
        let chars: Vec<char> = seed.chars().collect();
        for i in (0..chars.len()).step_by(3) {
            for sub in [':', '|', '*', '\\', '-', '(', '\n'] {
                let mut c = chars.clone();
                c[i] = sub;
                let s: String = c.into_iter().collect();
                let _ = load_files(&[("t.yml", &s)]);
            }
        }
    }
}

#[test]
fn rule_sets_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RuleSet>();
    assert_send_sync::<vigil_correlate::Engine>();
}
