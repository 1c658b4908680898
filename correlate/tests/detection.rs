//! Single-event detection: values, modifiers, wildcards, keywords, conditions, field names,
//! logsource.

use vigil_correlate::{LoadOptions, RuleSet, RuleSource};

use crate::common::{ev, hits, load, load_files, matching};

fn rule(selection: &str) -> String {
    format!("title: t\nname: r\ndetection:\n  sel:\n{selection}\n  condition: sel\n")
}

#[test]
fn plain_values_match_case_insensitively_and_exactly() {
    let r = rule("    user.name: Admin");
    assert!(hits(&r, &[("user.name", "ADMIN")]));
    assert!(hits(&r, &[("user.name", "admin")]));
    assert!(!hits(&r, &[("user.name", "administrator")]));
    assert!(!hits(&r, &[]));
}

#[test]
fn wildcards_and_escapes_follow_sigma() {
    let r = rule("    message: 'Failed * for ?oot'");
    assert!(hits(&r, &[("message", "failed password for root")]));
    assert!(!hits(&r, &[("message", "failed password for roots")]));
    let esc = rule("    message: 'a\\*b'");
    assert!(hits(&esc, &[("message", "A*B")]));
    assert!(!hits(&esc, &[("message", "axb")]));
}

#[test]
fn numbers_and_ips_compare_as_text() {
    let r = rule("    destination.port: 22\n    source.ip: 203.0.113.7");
    assert!(hits(
        &r,
        &[("destination.port", "22"), ("source.ip", "203.0.113.7")]
    ));
    assert!(!hits(
        &r,
        &[("destination.port", "2222"), ("source.ip", "203.0.113.7")]
    ));
}

#[test]
fn contains_startswith_endswith_modifiers() {
    assert!(hits(
        &rule("    message|contains: Invalid User"),
        &[("message", "sshd: invalid user bob")]
    ));
    assert!(!hits(
        &rule("    message|contains: invalid user"),
        &[("message", "valid user")]
    ));
    assert!(hits(
        &rule("    process.name|startswith: SSH"),
        &[("process.name", "sshd")]
    ));
    assert!(!hits(
        &rule("    process.name|startswith: shd"),
        &[("process.name", "sshd")]
    ));
    assert!(hits(
        &rule("    process.name|endswith: HD"),
        &[("process.name", "sshd")]
    ));
    assert!(!hits(
        &rule("    process.name|endswith: ss"),
        &[("process.name", "sshd")]
    ));
    // Wildcards still work inside a modified value.
    assert!(hits(
        &rule("    message|contains: 'user * from'"),
        &[("message", "x user bob from y")]
    ));
}

#[test]
fn value_lists_are_or_and_all_makes_them_and() {
    let or = rule("    message|contains:\n      - alpha\n      - beta");
    assert!(hits(&or, &[("message", "xx BETA xx")]));
    assert!(!hits(&or, &[("message", "gamma")]));
    let and = rule("    message|contains|all:\n      - alpha\n      - beta");
    assert!(hits(&and, &[("message", "beta then alpha")]));
    assert!(!hits(&and, &[("message", "alpha only")]));
    let plain_or = rule("    user.name:\n      - root\n      - admin");
    assert!(hits(&plain_or, &[("user.name", "ADMIN")]));
}

#[test]
fn re_is_case_sensitive_unless_i_and_supports_m_and_s() {
    let re = rule("    message|re: 'Failed (password|publickey) for \\w+'");
    assert!(hits(&re, &[("message", "x Failed password for root")]));
    assert!(!hits(&re, &[("message", "failed password for root")]));
    let rei = rule("    message|re|i: '^failed'");
    assert!(hits(&rei, &[("message", "FAILED login")]));
    let rem = rule("    message|re|m: '^second$'");
    assert!(hits(&rem, &[("message", "first\nsecond\nthird")]));
    assert!(!hits(
        &rule("    message|re: '^second$'"),
        &[("message", "first\nsecond")]
    ));
    let res = rule("    message|re|s: 'a.b'");
    assert!(hits(&res, &[("message", "a\nb")]));
    assert!(!hits(
        &rule("    message|re: 'a.b'"),
        &[("message", "a\nb")]
    ));
}

#[test]
fn cidr_matches_ipv4_and_ipv6_prefixes() {
    let r = rule("    source.ip|cidr:\n      - 10.0.0.0/8\n      - 2001:db8::/32");
    assert!(hits(&r, &[("source.ip", "10.20.30.40")]));
    assert!(hits(&r, &[("source.ip", "2001:db8:1::5")]));
    assert!(!hits(&r, &[("source.ip", "11.0.0.1")]));
    assert!(!hits(&r, &[("source.ip", "2001:db9::1")]));
    assert!(!hits(&r, &[]));
    // Text fields holding addresses work too.
    let extra = rule("    client|cidr: 192.168.0.0/16");
    assert!(hits(&extra, &[("client", "192.168.1.1")]));
    assert!(!hits(&extra, &[("client", "not an ip")]));
}

#[test]
fn exists_and_null_test_presence() {
    assert!(hits(
        &rule("    user.name|exists: true"),
        &[("user.name", "x")]
    ));
    assert!(!hits(&rule("    user.name|exists: true"), &[]));
    assert!(hits(&rule("    user.name|exists: false"), &[]));
    assert!(hits(&rule("    user.name: null"), &[]));
    assert!(!hits(&rule("    user.name: null"), &[("user.name", "x")]));
    assert!(hits(
        &rule("    user.name:\n      - null\n      - root"),
        &[("user.name", "root")]
    ));
}

#[test]
fn numeric_comparisons_on_numbers() {
    let ev_bytes = |b: &str| vec![("network.bytes", b.to_owned())];
    let check = |sel: &str, b: &str| {
        let f = ev_bytes(b);
        let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        hits(&rule(sel), &f)
    };
    assert!(check("    network.bytes|gt: 1000", "1001"));
    assert!(!check("    network.bytes|gt: 1000", "1000"));
    assert!(check("    network.bytes|gte: 1000", "1000"));
    assert!(check("    network.bytes|lt: 1000", "999"));
    assert!(!check("    network.bytes|lt: 1000", "1000"));
    assert!(check("    network.bytes|lte: 1000", "1000"));
    assert!(hits(&rule("    score|gt: 2.5"), &[("score", "3")]));
    assert!(!hits(&rule("    score|gt: 2.5"), &[("score", "abc")]));
}

#[test]
fn cased_and_windash_modifiers() {
    assert!(hits(
        &rule("    message|cased: Root"),
        &[("message", "Root")]
    ));
    assert!(!hits(
        &rule("    message|cased: Root"),
        &[("message", "root")]
    ));
    let w = rule("    message|contains|windash: ' -enc '");
    assert!(hits(&w, &[("message", "powershell /enc abc")]));
    assert!(hits(&w, &[("message", "powershell \u{2013}enc abc")]));
    assert!(hits(&w, &[("message", "powershell -enc abc")]));
}

#[test]
fn keywords_search_the_message() {
    let list = "title: k\nname: k\ndetection:\n  keywords:\n    - 'error in libcrypto'\n    - 'bad*value'\n  condition: keywords\n";
    assert!(hits(list, &[("message", "fatal: ERROR IN LIBCRYPTO here")]));
    assert!(hits(list, &[("message", "a bad dh value")]));
    assert!(!hits(list, &[("message", "all good")]));
    let single = "title: k\nname: k\ndetection:\n  keywords: 'segfault'\n  condition: keywords\n";
    assert!(hits(single, &[("message", "process segfault at 0")]));
    let all = "title: k\nname: k\ndetection:\n  keywords:\n    '|all':\n      - one\n      - two\n  condition: keywords\n";
    assert!(hits(all, &[("message", "two and one")]));
    assert!(!hits(all, &[("message", "one only")]));
}

#[test]
fn a_map_is_and_and_a_list_of_maps_is_or() {
    let and = rule("    user.name: root\n    event.outcome: failure");
    assert!(hits(
        &and,
        &[("user.name", "root"), ("event.outcome", "failure")]
    ));
    assert!(!hits(
        &and,
        &[("user.name", "root"), ("event.outcome", "success")]
    ));
    let or = "title: t\nname: r\ndetection:\n  sel:\n    - user.name: root\n    - event.outcome: failure\n  condition: sel\n";
    assert!(hits(or, &[("user.name", "root")]));
    assert!(hits(or, &[("event.outcome", "failure")]));
    assert!(!hits(or, &[("user.name", "bob")]));
}

#[test]
fn conditions_with_parentheses_and_quantifiers() {
    let text = "title: t\nname: r\ndetection:\n  sel_a:\n    user.name: a\n  sel_b:\n    host.name: b\n  filter:\n    event.outcome: success\n  condition: (sel_a or sel_b) and not filter\n";
    assert!(hits(text, &[("user.name", "a")]));
    assert!(hits(text, &[("host.name", "b")]));
    assert!(!hits(
        text,
        &[("user.name", "a"), ("event.outcome", "success")]
    ));
    let one = text.replace(
        "(sel_a or sel_b) and not filter",
        "1 of sel_* and not filter",
    );
    assert!(hits(&one, &[("host.name", "b")]));
    let all = text.replace("(sel_a or sel_b) and not filter", "all of sel_*");
    assert!(!hits(&all, &[("host.name", "b")]));
    assert!(hits(&all, &[("host.name", "b"), ("user.name", "a")]));
    let them1 = text.replace("(sel_a or sel_b) and not filter", "1 of them");
    assert!(hits(&them1, &[("event.outcome", "success")]));
    let them_all = text.replace("(sel_a or sel_b) and not filter", "all of them");
    assert!(!hits(&them_all, &[("host.name", "b"), ("user.name", "a")]));
    assert!(hits(
        &them_all,
        &[
            ("host.name", "b"),
            ("user.name", "a"),
            ("event.outcome", "success")
        ]
    ));
    let nested = text.replace(
        "(sel_a or sel_b) and not filter",
        "not (sel_a and (sel_b or filter))",
    );
    assert!(hits(&nested, &[("user.name", "a")]));
    assert!(!hits(
        &nested,
        &[("user.name", "a"), ("event.outcome", "success")]
    ));
}

#[test]
fn sigma_field_names_map_to_ecs() {
    let r = rule("    SourceIp: 203.0.113.7\n    TargetUserName: root\n    Image|endswith: sshd\n    DestinationPort: 22");
    assert!(hits(
        &r,
        &[
            ("source.ip", "203.0.113.7"),
            ("user.name", "root"),
            ("process.name", "sshd"),
            ("destination.port", "22"),
        ]
    ));
}

#[test]
fn logsource_restricts_events_and_a_rule_without_one_applies_to_all() {
    let sshd = "title: t\nname: sshd_rule\nlogsource: {product: linux, service: sshd}\ndetection:\n  sel:\n    message|contains: invalid\n  condition: sel\n";
    let any = "title: t\nname: any_rule\ndetection:\n  sel:\n    message|contains: invalid\n  condition: sel\n";
    let auth = "title: t\nname: auth_rule\nlogsource: {category: authentication}\ndetection:\n  sel:\n    event.outcome: failure\n  condition: sel\n";
    let set = load(&format!("{sshd}---\n{any}---\n{auth}"));
    let e = ev(0, &[("process.name", "sshd"), ("message", "invalid user")]);
    assert_eq!(matching(&set, &e), vec!["sshd_rule", "any_rule"]);
    let e = ev(
        0,
        &[("event.dataset", "OpenSSH"), ("message", "invalid user")],
    );
    assert_eq!(matching(&set, &e), vec!["sshd_rule", "any_rule"]);
    let e = ev(0, &[("process.name", "nginx"), ("message", "invalid user")]);
    assert_eq!(matching(&set, &e), vec!["any_rule"]);
    let e = ev(
        0,
        &[
            ("event.category", "authentication"),
            ("event.outcome", "failure"),
        ],
    );
    assert_eq!(matching(&set, &e), vec!["auth_rule"]);
    let e = ev(
        0,
        &[("event.category", "network"), ("event.outcome", "failure")],
    );
    assert!(matching(&set, &e).is_empty());
}

#[test]
fn a_logsource_vigil_does_not_serve_is_refused_as_unsupported_and_the_rest_load() {
    let windows = "title: t\nname: win_rule\nlogsource: {product: windows, category: process_creation}\ndetection:\n  sel:\n    Image|endswith: '\\\\cmd.exe'\n  condition: sel\n";
    let sshd = "title: t\nname: sshd_rule\nlogsource: {product: linux, service: sshd}\ndetection:\n  sel:\n    message|contains: invalid\n  condition: sel\n";
    let (set, errors) = RuleSet::from_sources(&[RuleSource {
        path: "mixed.yml".into(),
        text: format!("{windows}---\n{sshd}"),
    }]);
    assert_eq!(set.len(), 1);
    assert_eq!(errors.len(), 1);
    let e = &errors[0];
    assert!(e.unsupported, "{e}");
    assert_eq!((e.path.as_str(), e.line), ("mixed.yml", 3));
    assert!(
        e.message.contains("product: windows") && e.message.contains("category: process_creation"),
        "{e}"
    );
    // A broken rule is not "unsupported".
    let (_, errors) = RuleSet::from_sources(&[RuleSource {
        path: "broken.yml".into(),
        text: "title: t\nname: b\ndetection:\n  sel:\n    message|re: '('\n  condition: sel\n"
            .into(),
    }]);
    assert_eq!(errors.len(), 1);
    assert!(!errors[0].unsupported);
}

#[test]
fn non_ascii_values_fold_case() {
    assert!(hits(
        &rule("    user.name: ÄRGER"),
        &[("user.name", "ärger")]
    ));
    assert!(hits(
        &rule("    message|contains: ÜBER"),
        &[("message", "x über y")]
    ));
}

#[test]
fn fieldref_and_base64_modifiers() {
    let r = rule("    user.name|fieldref: target.user");
    assert!(hits(&r, &[("user.name", "Root"), ("target.user", "root")]));
    assert!(!hits(&r, &[("user.name", "root"), ("target.user", "bob")]));
    assert!(!hits(&r, &[("user.name", "root")]));
    let b = rule("    message|base64offset|contains: /bin/bash");
    assert!(hits(
        &b,
        &[("message", "echo L2Jpbi9iYXNoIC1p | base64 -d")]
    ));
    assert!(hits(&b, &[("message", "xx IC9iaW4vYmFzaA== yy")]));
    assert!(!hits(&b, &[("message", "/bin/bash")]));
    let plain = rule("    message|base64: foobar");
    assert!(hits(&plain, &[("message", "Zm9vYmFy")]));
}

#[test]
fn utf16_modifiers_encode_before_base64() {
    // base64 of "ping" as UTF-16LE, UTF-16BE and UTF-16LE after a byte-order mark.
    for (mods, encoded) in [
        ("wide|base64", "cABpAG4AZwA="),
        ("utf16le|base64", "cABpAG4AZwA="),
        ("utf16be|base64", "AHAAaQBuAGc="),
        ("utf16|base64", "//5wAGkAbgBnAA=="),
    ] {
        let r = rule(&format!("    message|{mods}|contains: ping"));
        assert!(
            hits(&r, &[("message", &format!("x {encoded} y"))]),
            "{mods}"
        );
        assert!(!hits(&r, &[("message", "cGluZw==")]), "{mods}");
    }
    // "whoami" as UTF-16LE at each alignment inside a longer base64 stream.
    let r = rule("    message|wide|base64offset|contains: whoami");
    for stream in [
        "eAAgAHcAaABvAGEAbQBpACAA",
        "eAAgAGEAdwBoAG8AYQBtAGkAIAA=",
        "eAAgAGF3AGgAbwBhAG0AaQAgAA==",
    ] {
        assert!(hits(&r, &[("message", stream)]), "{stream}");
    }
    assert!(!hits(&r, &[("message", "d2hvYW1p")]));
}

#[test]
fn utf16_modifiers_need_base64() {
    let (_, errors) = load_files(&[("u.yml", &rule("    message|wide: x"))]);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].message.contains("need base64"), "{}", errors[0]);
    let (_, errors) = load_files(&[("u.yml", &rule("    message|wide|utf16be|base64: x"))]);
    assert!(
        errors[0].message.contains("more than one utf16"),
        "{}",
        errors[0]
    );
}

#[test]
fn expand_replaces_placeholders_from_the_load_options() {
    let text =
        rule("    user.name|expand: '%admins%'\n    host.name|expand|startswith: 'srv-%site%-'");
    let mut options = LoadOptions::default();
    options
        .placeholders
        .insert("admins".into(), vec!["root".into(), "administrator".into()]);
    options
        .placeholders
        .insert("site".into(), vec!["fra".into(), "ams".into()]);
    let sources = [RuleSource {
        path: "x.yml".into(),
        text: text.clone(),
    }];
    let (set, errors) = RuleSet::from_sources_with(&sources, &options);
    assert!(errors.is_empty(), "{errors:?}");
    let on = |user: &str, host: &str| {
        !matching(&set, &ev(0, &[("user.name", user), ("host.name", host)])).is_empty()
    };
    assert!(on("root", "srv-fra-01"));
    assert!(on("Administrator", "SRV-AMS-7"));
    assert!(!on("alice", "srv-fra-01"));
    assert!(!on("root", "srv-lon-01"));

    // Without a value for the placeholder the rule does not load, and the error names it.
    let (set, errors) = load_files(&[("x.yml", &text)]);
    assert!(set.is_empty());
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, 5);
    assert!(errors[0].message.contains("`%admins%`"), "{}", errors[0]);
    // A lone percent sign is literal.
    assert!(hits(
        &rule("    message|expand: '100% sure'"),
        &[("message", "100% sure")]
    ));
}
