//! Parser definitions as data, and the normalizer end to end.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, FixedOffset, Utc};
use vigil_parsers::definitions::{DefinitionError, DefinitionSet};
use vigil_parsers::event::FieldValue;
use vigil_parsers::normalize::{
    InvalidUtf8Policy, NormalizeOptions, Normalizer, RecordMeta, Rejection,
};
use vigil_parsers::syslog::{Format, SyslogMessage};
use vigil_parsers::Event;

fn load(files: &[(&str, &str)]) -> (DefinitionSet, Vec<DefinitionError>) {
    let sources: Vec<(String, String)> = files
        .iter()
        .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
        .collect();
    DefinitionSet::from_sources(&sources)
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn meta(received_at: &str) -> RecordMeta<'static> {
    RecordMeta {
        observer_type: "syslog",
        observer_id: "syslog/udp/192.0.2.1",
        peer: Some("192.0.2.1".parse().unwrap()),
        received_at: at(received_at),
    }
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

fn message(program: &str, text: &str) -> SyslogMessage {
    SyslogMessage {
        format: Format::FileLine,
        priority: None,
        facility: None,
        severity: None,
        version: None,
        timestamp: None,
        hostname: Some("bastion".into()),
        appname: Some(program.into()),
        procid: None,
        msgid: None,
        structured_data: BTreeMap::new(),
        message: Some(text.as_bytes().to_vec()),
    }
}

const GOOD: &str = "\
name: demo
match: {program: demo}
patterns:
  - name: hello
    regex: '^hello (?P<who>\\w+) from (?P<source.ip>\\S+)$'
    fields: {who: user.name}
    set: {event.action: greeting}
tests:
  - message: hello bob from 192.0.2.5
    expect: {user.name: bob, source.ip: 192.0.2.5, event.action: greeting, event.dataset: demo}
";

// ----- loading ---------------------------------------------------------------------------------

#[test]
fn builtin_definitions_load_without_errors_and_all_their_cases_pass() {
    let (set, errors) = DefinitionSet::builtin_checked();
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(set.names().contains(&"openssh"));
    let report = set.run_tests();
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    assert!(report.cases > 15, "only {} cases", report.cases);
    assert_eq!(DefinitionSet::builtin().len(), set.len());
}

#[test]
fn a_broken_regex_is_refused_naming_the_file_and_line() {
    let yaml = "\
name: broken
match: {program: x}
patterns:
  - name: ok
    regex: '^fine$'
  - name: bad
    regex: '^unclosed (group'
";
    let (set, errors) = load(&[("defs/broken.yml", yaml)]);
    assert!(set.is_empty());
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].path, "defs/broken.yml");
    assert_eq!(errors[0].line, 7, "{errors:#?}");
    assert!(errors[0].message.contains("bad"), "{}", errors[0]);
    assert!(
        errors[0].to_string().starts_with("defs/broken.yml:7: "),
        "{}",
        errors[0]
    );
}

#[test]
fn a_broken_match_regex_is_refused_naming_the_line() {
    let yaml =
        "name: m\nmatch:\n  program: x\n  regex: '[z-a]'\npatterns:\n  - name: p\n    regex: x\n";
    let (_, errors) = load(&[("m.yml", yaml)]);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].line, 4, "{errors:#?}");
}

#[test]
fn an_unknown_target_field_is_refused_naming_the_file_and_line() {
    let yaml = "\
name: typo
patterns:
  - name: p
    regex: '^(?P<ip>\\S+) (?P<user>\\S+)$'
    fields:
      user: user.name
      ip: sorce.ip
";
    let (set, errors) = load(&[("typo.yml", yaml)]);
    assert!(set.is_empty());
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].path, "typo.yml");
    assert_eq!(errors[0].line, 7, "{errors:#?}");
    assert!(errors[0].message.contains("sorce.ip"), "{}", errors[0]);
}

#[test]
fn an_unknown_constant_target_is_refused_naming_the_line() {
    let yaml = "name: c\nset:\n  event.kind: event\n  event.outcom: failure\npatterns:\n  - name: p\n    regex: x\n";
    let (_, errors) = load(&[("c.yml", yaml)]);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].line, 4, "{errors:#?}");
    assert!(errors[0].message.contains("event.outcom"), "{}", errors[0]);
}

#[test]
fn a_dotted_capture_that_is_not_a_field_is_refused() {
    let yaml = "name: d\npatterns:\n  - name: p\n    regex: '(?P<source.addr>\\S+)'\n";
    let (_, errors) = load(&[("d.yml", yaml)]);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].line, 4);
    assert!(errors[0].message.contains("source.addr"), "{}", errors[0]);
}

#[test]
fn an_unknown_yaml_key_is_refused_naming_the_line() {
    let yaml = "name: k\npatterns:\n  - name: p\n    regex: x\n    feilds: {a: user.name}\n";
    let (set, errors) = load(&[("k.yml", yaml)]);
    assert!(set.is_empty());
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].line, 5, "{errors:#?}");
    assert!(errors[0].message.contains("feilds"), "{}", errors[0]);
    assert!(!errors[0].message.contains(" at line "), "{}", errors[0]);
}

#[test]
fn a_yaml_syntax_error_is_refused_naming_the_line() {
    let (_, errors) = load(&[("s.yml", "name: s\npatterns: [\n")]);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].path, "s.yml");
    assert!(errors[0].line >= 2, "{errors:#?}");
}

#[test]
fn one_good_and_one_bad_file_still_load_the_good_one() {
    let bad = "name: bad\npatterns:\n  - name: p\n    regex: '('\n";
    let (set, errors) = load(&[("bad.yml", bad), ("good.yml", GOOD)]);
    assert_eq!(set.names(), vec!["demo"]);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "bad.yml");
    let report = set.run_tests();
    assert_eq!(report.cases, 1);
    assert!(report.passed(), "{:?}", report.failures);
}

#[test]
fn a_repeated_definition_name_is_refused() {
    let (set, errors) = load(&[("a.yml", GOOD), ("b.yml", GOOD)]);
    assert_eq!(set.len(), 1);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "b.yml");
}

#[test]
fn a_failing_embedded_case_is_reported_with_file_and_line() {
    let yaml = GOOD.replace("user.name: bob", "user.name: alice");
    let (set, errors) = load(&[("demo.yml", &yaml)]);
    assert!(errors.is_empty(), "{errors:#?}");
    let report = set.run_tests();
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    assert!(
        report.failures[0].starts_with("demo.yml:9: "),
        "{}",
        report.failures[0]
    );
    assert!(
        report.failures[0].contains("user.name"),
        "{}",
        report.failures[0]
    );
}

// ----- applying ----------------------------------------------------------------------------------

#[test]
fn openssh_failures_become_typed_authentication_fields() {
    let set = DefinitionSet::builtin();
    let text = "Failed password for invalid user admin from 2001:db8::7 port 50022 ssh2";
    let mut event = Event::new(at("2026-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z"));
    let hit = set
        .apply(&message("sshd-session", text), text, &mut event)
        .unwrap();
    assert_eq!(hit, Some(("openssh", "failed_auth_invalid_user")));
    assert_eq!(event.user_name.as_deref(), Some("admin"));
    assert_eq!(event.source_ip, ip("2001:db8::7"));
    assert_eq!(event.source_port, Some(50022));
    assert_eq!(event.category.as_deref(), Some("authentication"));
    assert_eq!(event.outcome.as_deref(), Some("failure"));
    assert_eq!(event.dataset.as_deref(), Some("openssh"));
    assert_eq!(
        event.get("extra.sshd.auth_method"),
        Some(FieldValue::Str("password"))
    );
}

#[test]
fn a_message_from_another_program_is_left_alone() {
    let set = DefinitionSet::builtin();
    let text = "Failed password for root from 203.0.113.7 port 50022 ssh2";
    let before = Event::new(at("2026-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z"));
    let mut event = before.clone();
    assert_eq!(
        set.apply(&message("cron", text), text, &mut event).unwrap(),
        None
    );
    assert_eq!(event, before);
}

// ----- normalizing --------------------------------------------------------------------------------

fn normalizer() -> Normalizer {
    Normalizer::new(DefinitionSet::builtin(), NormalizeOptions::default())
}

#[test]
fn an_rfc3164_sshd_line_normalizes_to_typed_fields() {
    let raw = b"<38>Mar  4 10:15:02 bastion sshd[4242]: Failed password for root from 203.0.113.7 port 50022 ssh2\n";
    let event = normalizer()
        .normalize(raw, &meta("2026-03-04T10:15:03Z"))
        .unwrap();
    assert_eq!(event.timestamp, at("2026-03-04T10:15:02Z"));
    assert_eq!(event.ingested, at("2026-03-04T10:15:03Z"));
    assert_eq!(event.kind.as_deref(), Some("event"));
    assert_eq!(event.host_name.as_deref(), Some("bastion"));
    assert_eq!(event.process_name.as_deref(), Some("sshd"));
    assert_eq!(event.process_pid, Some(4242));
    assert_eq!(event.syslog_facility, Some(4));
    assert_eq!(event.syslog_severity, Some(6));
    assert_eq!(event.severity, Some(6));
    assert_eq!(event.observer_type.as_deref(), Some("syslog"));
    assert_eq!(event.observer_id.as_deref(), Some("syslog/udp/192.0.2.1"));
    assert_eq!(event.observer_ip, ip("192.0.2.1"));
    assert_eq!(event.user_name.as_deref(), Some("root"));
    assert_eq!(event.source_ip, ip("203.0.113.7"));
    assert_eq!(event.source_port, Some(50022));
    assert_eq!(event.outcome.as_deref(), Some("failure"));
    assert_eq!(event.action.as_deref(), Some("ssh_login"));
    assert_eq!(event.dataset.as_deref(), Some("openssh"));
    assert_eq!(
        event.message.as_deref(),
        Some("Failed password for root from 203.0.113.7 port 50022 ssh2")
    );
    assert_eq!(event.raw, raw.to_vec(), "raw keeps the untrimmed bytes");
}

#[test]
fn an_rfc5424_sshd_session_record_normalizes_with_structured_data() {
    let raw = b"<38>1 2026-03-04T10:15:02.123+01:00 bastion.example.net sshd-session 4242 AUTH [meta@32473 sequenceId=\"7\"] Accepted publickey for alice from 2001:db8::10 port 51514 ssh2: ED25519 SHA256:Jx0m2uJ8HnW8sLkV9M0Qx";
    let event = normalizer()
        .normalize(raw, &meta("2026-03-04T09:15:03Z"))
        .unwrap();
    assert_eq!(event.timestamp, at("2026-03-04T09:15:02.123Z"));
    assert_eq!(event.host_name.as_deref(), Some("bastion.example.net"));
    assert_eq!(event.process_name.as_deref(), Some("sshd-session"));
    assert_eq!(event.process_pid, Some(4242));
    assert_eq!(
        event
            .extra
            .get("log.syslog.msgid")
            .map(vigil_parsers::Text::as_str),
        Some("AUTH")
    );
    assert_eq!(
        event
            .extra
            .get("sd.meta@32473.sequenceId")
            .map(vigil_parsers::Text::as_str),
        Some("7")
    );
    assert_eq!(event.user_name.as_deref(), Some("alice"));
    assert_eq!(event.source_ip, ip("2001:db8::10"));
    assert_eq!(event.source_port, Some(51514));
    assert_eq!(event.outcome.as_deref(), Some("success"));
    assert_eq!(
        event.get("extra.sshd.key_type"),
        Some(FieldValue::Str("ED25519"))
    );
}

#[test]
fn an_auth_log_file_line_normalizes_with_the_default_offset() {
    let options = NormalizeOptions {
        default_offset: FixedOffset::east_opt(2 * 3600).unwrap(),
        invalid_utf8: InvalidUtf8Policy::DeadLetter,
        ..NormalizeOptions::default()
    };
    let n = Normalizer::new(DefinitionSet::builtin(), options);
    let raw = b"Mar  4 10:15:02 bastion sshd[4242]: Invalid user admin from 203.0.113.7 port 50022";
    let event = n.normalize(raw, &meta("2026-03-04T08:15:03Z")).unwrap();
    assert_eq!(event.timestamp, at("2026-03-04T08:15:02Z"));
    assert_eq!(event.syslog_facility, None);
    assert_eq!(event.action.as_deref(), Some("ssh_invalid_user"));
    assert_eq!(event.user_name.as_deref(), Some("admin"));
    assert_eq!(event.source_ip, ip("203.0.113.7"));
}

#[test]
fn syslog_without_a_matching_definition_is_still_a_generic_event() {
    let raw = b"<86>Mar  4 10:15:02 bastion cron[77]: (root) CMD (run-parts /etc/cron.hourly)";
    let event = normalizer()
        .normalize(raw, &meta("2026-03-04T10:15:03Z"))
        .unwrap();
    assert_eq!(event.process_name.as_deref(), Some("cron"));
    assert_eq!(event.dataset, None);
    assert_eq!(event.category, None);
    assert_eq!(event.kind.as_deref(), Some("event"));
    assert_eq!(
        event.message.as_deref(),
        Some("(root) CMD (run-parts /etc/cron.hourly)")
    );
}

#[test]
fn a_non_numeric_procid_is_kept_in_extra() {
    let raw = b"<38>1 2026-03-04T10:15:02Z host app worker-3 - - hello";
    let event = normalizer()
        .normalize(raw, &meta("2026-03-04T10:15:03Z"))
        .unwrap();
    assert_eq!(event.process_pid, None);
    assert_eq!(
        event
            .extra
            .get("log.syslog.procid")
            .map(vigil_parsers::Text::as_str),
        Some("worker-3")
    );
}

#[test]
fn invalid_utf8_is_a_dead_letter_by_default_and_replaced_on_request() {
    let raw =
        b"<38>Mar  4 10:15:02 bastion sshd[1]: Invalid user \xff\xfe from 203.0.113.7 port 50022";
    let rejection = normalizer()
        .normalize(raw, &meta("2026-03-04T10:15:03Z"))
        .unwrap_err();
    assert_eq!(rejection.reason, "invalid_utf8");
    assert!(rejection.detail.contains("byte 50"), "{rejection}");

    let options = NormalizeOptions {
        invalid_utf8: InvalidUtf8Policy::Replace,
        ..NormalizeOptions::default()
    };
    let event = Normalizer::new(DefinitionSet::builtin(), options)
        .normalize(raw, &meta("2026-03-04T10:15:03Z"))
        .unwrap();
    assert_eq!(event.user_name.as_deref(), Some("\u{fffd}\u{fffd}"));
    assert_eq!(event.source_ip, ip("203.0.113.7"));
    assert_eq!(event.raw, raw.to_vec());
}

#[test]
fn a_capture_that_does_not_convert_is_a_field_type_rejection() {
    let yaml = "\
name: typed
match: {program: app}
patterns:
  - name: p
    regex: '^client (?P<source.ip>\\S+) port (?P<source.port>\\d+)$'
";
    let (set, errors) = load(&[("typed.yml", yaml)]);
    assert!(errors.is_empty(), "{errors:#?}");
    let n = Normalizer::new(set, NormalizeOptions::default());
    let m = meta("2026-03-04T10:15:03Z");
    let bad_ip = n.normalize(b"<38>Mar  4 10:15:02 h app: client foo port 1", &m);
    assert!(
        matches!(
            bad_ip,
            Err(Rejection {
                reason: "field_type",
                ..
            })
        ),
        "{bad_ip:?}"
    );
    let bad_port = n.normalize(
        b"<38>Mar  4 10:15:02 h app: client 192.0.2.1 port 70000",
        &m,
    );
    assert!(
        matches!(
            bad_port,
            Err(Rejection {
                reason: "field_type",
                ..
            })
        ),
        "{bad_port:?}"
    );
    let good = n
        .normalize(b"<38>Mar  4 10:15:02 h app: client 192.0.2.1 port 7000", &m)
        .unwrap();
    assert_eq!(good.source_port, Some(7000));
}

#[test]
fn records_that_are_not_syslog_are_rejected_with_the_parser_reason() {
    let n = normalizer();
    let m = meta("2026-03-04T10:15:03Z");
    assert_eq!(n.normalize(b"\r\n\0", &m).unwrap_err().reason, "empty");
    assert_eq!(n.normalize(b"<999>x", &m).unwrap_err().reason, "pri");
    for junk in [
        &b"hello world"[..],
        b"<",
        b"<1",
        b"\0\0x",
        b"<38>1 ",
        b"<38>1 x",
    ] {
        // Never a panic; an event or a labelled rejection.
        if let Err(r) = n.normalize(junk, &m) {
            assert!(!r.reason.is_empty());
        }
    }
}

#[test]
fn the_rsyslog_repeat_wrapper_still_parses_and_counts() {
    let raw = b"<38>Mar  4 10:15:02 bastion sshd[4242]: message repeated 5 times: [ Failed password for root from 203.0.113.7 port 50022 ssh2]";
    let event = normalizer()
        .normalize(raw, &meta("2026-03-04T10:15:03Z"))
        .unwrap();
    assert_eq!(event.source_ip, ip("203.0.113.7"));
    assert_eq!(event.get("extra.repeat_count"), Some(FieldValue::Str("5")));
}

static NORMALIZER: std::sync::LazyLock<Normalizer> = std::sync::LazyLock::new(|| {
    Normalizer::new(DefinitionSet::builtin(), NormalizeOptions::default())
});

proptest::proptest! {
    /// Any bytes, and any sshd-shaped line with arbitrary fields, become an Event that keeps
    /// the raw bytes exactly, or a Rejection with a reason; never a panic.
    #[test]
    fn normalize_never_panics_and_keeps_the_raw_bytes(
        data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        user in "\\PC{0,20}",
        ip in "[0-9a-f:.]{0,40}",
        port in "[0-9]{0,7}",
    ) {
        let normalizer = &*NORMALIZER;
        let m = meta("2026-01-01T00:00:30Z");
        let line = format!("<38>Jan  1 00:00:00 h sshd[1]: Failed password for {user} from {ip} port {port} ssh2");
        for input in [data.as_slice(), line.as_bytes()] {
            match normalizer.normalize(input, &m) {
                Ok(event) => proptest::prop_assert_eq!(&event.raw, &input.to_vec()),
                Err(r) => proptest::prop_assert!(!r.reason.is_empty()),
            }
        }
    }
}

#[test]
fn a_timestamp_far_past_the_receive_time_is_replaced_and_kept_aside() {
    let normalizer = Normalizer::new(DefinitionSet::builtin(), NormalizeOptions::default());
    let m = meta("2026-11-28T12:00:00Z");
    let forged = normalizer
        .normalize(
            b"<38>1 9999-01-01T00:00:00Z h sshd - - - Failed password for x from 203.0.113.7 port 1 ssh2",
            &m,
        )
        .unwrap();
    assert_eq!(forged.timestamp, at("2026-11-28T12:00:00Z"));
    assert_eq!(
        forged
            .extra
            .get(vigil_parsers::normalize::ORIGINAL_TIMESTAMP_FIELD)
            .map(vigil_parsers::Text::as_str),
        Some("9999-01-01T00:00:00Z")
    );
    // Within the allowed skew (and anything in the past) the record's own time stands.
    let near = normalizer
        .normalize(b"<38>1 2026-11-28T12:04:00Z h sshd - - - hello", &m)
        .unwrap();
    assert_eq!(near.timestamp, at("2026-11-28T12:04:00Z"));
    assert!(near.extra.is_empty());
    // A clock reset to 1970 is not believed either.
    let reset = normalizer
        .normalize(b"<38>1 1970-01-01T00:00:05Z h sshd - - - hello", &m)
        .unwrap();
    assert_eq!(reset.timestamp, at("2026-11-28T12:00:00Z"));
    assert_eq!(
        reset
            .extra
            .get(vigil_parsers::normalize::ORIGINAL_TIMESTAMP_FIELD)
            .map(vigil_parsers::Text::as_str),
        Some("1970-01-01T00:00:05Z")
    );
    // Old but plausible history (a replayed 2019 log) stands.
    let old = normalizer
        .normalize(b"<38>1 2019-06-01T10:00:00Z h sshd - - - hello", &m)
        .unwrap();
    assert_eq!(old.timestamp, at("2019-06-01T10:00:00Z"));
}

#[test]
fn every_shipped_definition_carries_embedded_cases() {
    let set = DefinitionSet::builtin();
    for name in [
        "openssh",
        "sudo",
        "pam",
        "netfilter",
        "cisco_asa",
        "fortigate",
        "paloalto",
        "cef",
        "leef",
    ] {
        assert!(set.names().contains(&name), "{name} is not shipped");
    }
    let report = set.run_tests();
    assert!(report.cases >= 100, "only {} cases", report.cases);
    println!("{} embedded cases", report.cases);
}

// ----- structured definitions ------------------------------------------------------------------

const ACME_CEF: &str = "\
name: acme
match: {cef: {vendor: Acme, product: [Wall, Wall2]}}
extract: {format: cef}
fields: {src: source.ip, 'label:Rule': extra.rule.name}
patterns:
  - name: deny
    when: {cef.signature_id: '100'}
    set: {event.type: denied}
";

#[test]
fn a_vendor_cef_definition_loaded_after_the_generic_one_still_wins() {
    let mut sources = DefinitionSet::builtin_sources();
    sources.push(("acme.yml".to_owned(), ACME_CEF.to_owned()));
    let (set, errors) = DefinitionSet::from_sources(&sources);
    assert!(errors.is_empty(), "{errors:#?}");
    let n = Normalizer::new(set, NormalizeOptions::default());
    let m = meta("2026-11-28T12:00:00Z");
    let ours = n
        .normalize(
            b"<134>Nov 28 10:00:01 gw CEF:0|Acme|Wall|1.0|100|Blocked|5|src=192.0.2.7 cs1Label=Rule cs1=No-SSH",
            &m,
        )
        .unwrap();
    assert_eq!(ours.dataset.as_deref(), Some("acme"));
    assert_eq!(ours.event_type.as_deref(), Some("denied"));
    assert_eq!(ours.source_ip, ip("192.0.2.7"));
    assert_eq!(ours.get("extra.rule.name"), Some(FieldValue::Str("No-SSH")));
    // Another vendor, or a signature no pattern knows, falls to the generic definition.
    for other in [
        &b"<134>Nov 28 10:00:01 gw CEF:0|Other|Wall|1.0|100|Blocked|5|src=192.0.2.7"[..],
        b"<134>Nov 28 10:00:01 gw CEF:0|Acme|Wall|1.0|200|Allowed|5|src=192.0.2.7",
    ] {
        let e = n.normalize(other, &m).unwrap();
        assert_eq!(e.dataset.as_deref(), Some("cef"));
        assert_eq!(e.source_ip, ip("192.0.2.7"));
    }
}

#[test]
fn a_structured_record_that_does_not_parse_is_a_dead_letter_with_the_format_reason() {
    let n = normalizer();
    let m = meta("2026-11-28T12:00:00Z");
    let r = n
        .normalize(b"<134>Nov 28 10:00:01 gw CEF:0|Acme|short", &m)
        .unwrap_err();
    assert_eq!(r.reason, "cef_header");
    assert!(r.detail.starts_with("definition cef: "), "{r}");
    let r = n
        .normalize(b"<13>Nov 28 10:00:01 h LEEF:1.0|Vendor|only", &m)
        .unwrap_err();
    assert_eq!(r.reason, "leef_header");
    let r = n
        .normalize(
            b"<14>Nov 28 10:00:01 PA 1,2026/11/28 10:00:01,0128,TRAFFIC,end,,\"open",
            &m,
        )
        .unwrap_err();
    assert_eq!(r.reason, "csv");
}

#[test]
fn a_record_time_in_the_future_is_replaced_like_a_header_time() {
    let n = normalizer();
    let m = meta("2026-11-28T12:00:00Z");
    let e = n
        .normalize(
            b"<13>Nov 28 10:00:01 h LEEF:1.0|V|P|1|x|devTime=Dec 31 2099 23:59:59\tsrc=192.0.2.1",
            &m,
        )
        .unwrap();
    assert_eq!(e.timestamp, at("2026-11-28T12:00:00Z"));
    assert_eq!(
        e.extra
            .get(vigil_parsers::normalize::ORIGINAL_TIMESTAMP_FIELD)
            .map(vigil_parsers::Text::as_str),
        Some("2099-12-31T23:59:59Z")
    );
    // A time in the past stands, even though the header says otherwise.
    let e = n
        .normalize(
            b"<189>Nov 28 11:00:00 relay date=2026-11-28 time=10:00:01 devid=\"FG1\" tz=\"+0100\" logid=\"0000000013\" type=\"traffic\" srcip=10.0.0.5 action=\"deny\"",
            &m,
        )
        .unwrap();
    assert_eq!(e.dataset.as_deref(), Some("fortigate"));
    assert_eq!(e.timestamp, at("2026-11-28T09:00:01Z"));
}

#[test]
fn a_structured_definition_with_a_bad_key_is_refused_naming_the_line() {
    let yaml = "\
name: pan
extract:
  format: csv
  columns: [a, src, dst]
fields:
  src: source.ip
  srcip: source.ip
";
    let (set, errors) = load(&[("pan.yml", yaml)]);
    assert!(set.is_empty());
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].line, 7, "{errors:#?}");
    assert_eq!(
        errors[0].to_string(),
        "pan.yml:7: fields: srcip is not a column name (or a column index)"
    );
    let (_, errors) = load(&[(
        "fw.yml",
        "name: fw\nextract: {format: kv}\nfields:\n  src: source.ipp\n",
    )]);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].line, 4, "{errors:#?}");
    assert!(errors[0].message.contains("source.ipp"), "{errors:#?}");
}

#[test]
fn definitions_without_program_are_found_by_their_literals() {
    let mut files: Vec<(String, String)> = (0..300)
        .map(|i| {
            (
                format!("g{i}.yml"),
                format!(
                    "name: g{i}\nmatch: {{contains: 'MARK{i}:'}}\npatterns:\n  - name: p\n    regex: 'MARK{i}: (?P<user.name>\\S+)$'\n"
                ),
            )
        })
        .collect();
    files.push((
        "kv.yml".to_owned(),
        "name: kvs\nmatch: {prefix: 'kv '}\nextract: {format: kv}\nfields: {u: user.name}\n"
            .to_owned(),
    ));
    let (set, errors) = DefinitionSet::from_sources(&files);
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(set.unconditional_len(), 0);
    let mut e = Event::new(at("2026-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z"));
    let text = "MARK299: carol";
    assert_eq!(
        set.apply(&message("app", text), text, &mut e).unwrap(),
        Some(("g299", "p"))
    );
    assert_eq!(e.user_name.as_deref(), Some("carol"));
    let text = "kv u=dave x=1";
    assert_eq!(
        set.apply(&message("app", text), text, &mut e).unwrap(),
        Some(("kvs", ""))
    );
    assert_eq!(e.user_name.as_deref(), Some("dave"));
    assert_eq!(e.get("extra.kvs.x"), Some(FieldValue::Str("1")));
}

proptest::proptest! {
    /// Structured-looking records with arbitrary bodies become an event or a labelled rejection,
    /// never a panic.
    #[test]
    fn structured_records_never_panic(
        body in "\\PC{0,200}",
        kind in 0usize..5,
    ) {
        let normalizer = &*NORMALIZER;
        let m = meta("2026-11-28T12:00:00Z");
        let line = match kind {
            0 => format!("<134>Nov 28 10:00:01 gw CEF:0|{body}"),
            1 => format!("<13>Nov 28 10:00:01 gw LEEF:2.0|{body}"),
            2 => format!("<189>date=2026-11-28 time=10:00:01 devid=\"FG1\" logid=\"0000000013\" {body}"),
            3 => format!("<14>Nov 28 10:00:01 PA 1,2026/11/28 10:00:01,0128,TRAFFIC,{body}"),
            _ => format!("<4>Nov 28 10:00:01 gw kernel: [UFW BLOCK] IN=eth0 OUT= SRC={body}"),
        };
        match normalizer.normalize(line.as_bytes(), &m) {
            Ok(event) => proptest::prop_assert_eq!(&event.raw, &line.as_bytes().to_vec()),
            Err(r) => proptest::prop_assert!(!r.reason.is_empty()),
        }
    }
}

#[test]
fn a_json_definition_maps_dotted_paths_and_rejects_broken_json() {
    let yaml = "\
name: app
match: {program: app, prefix: '{'}
extract: {format: json, max_depth: 4}
fields: {client.ip: source.ip, user.name: user.name, ts: '@timestamp'}
";
    let (_, errors) = load(&[("app.yml", yaml)]);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].message.contains("cannot be set"), "{errors:#?}");
    let yaml = "\
name: app
match: {program: app, prefix: '{'}
extract: {format: json, max_depth: 4}
fields: {client.ip: source.ip, user.name: user.name}
timestamp: {field: ts, format: rfc3339}
";
    let (set, errors) = load(&[("app.yml", yaml)]);
    assert!(errors.is_empty(), "{errors:#?}");
    let n = Normalizer::new(set, NormalizeOptions::default());
    let m = meta("2026-11-28T12:00:00Z");
    let e = n
        .normalize(
            br#"<14>Nov 28 11:00:00 h app: {"ts":"2026-11-28T10:00:00Z","client":{"ip":"2001:db8::1"},"user":{"name":"eve"},"n":3}"#,
            &m,
        )
        .unwrap();
    assert_eq!(e.source_ip, ip("2001:db8::1"));
    assert_eq!(e.user_name.as_deref(), Some("eve"));
    assert_eq!(e.timestamp, at("2026-11-28T10:00:00Z"));
    assert_eq!(e.get("extra.app.n"), Some(FieldValue::Str("3")));
    let r = n
        .normalize(b"<14>Nov 28 11:00:00 h app: {\"broken\":", &m)
        .unwrap_err();
    assert_eq!(r.reason, "json");
}

// ----- raw records (not syslog) ----------------------------------------------------------------

fn file_meta() -> RecordMeta<'static> {
    RecordMeta {
        observer_type: "file",
        observer_id: "file:/var/log/nginx/access.log",
        peer: None,
        received_at: at("2026-11-28T12:00:00Z"),
    }
}

#[test]
fn a_raw_nginx_line_becomes_an_event() {
    let line = br#"2001:db8::7 - alice [28/Nov/2026:11:00:01 +0100] "GET /v1/accounts?id=42 HTTP/1.1" 404 153 "-" "curl/8.5.0" 0.052"#;
    let e = normalizer().normalize(line, &file_meta()).unwrap();
    assert_eq!(e.dataset.as_deref(), Some("nginx"));
    assert_eq!(e.timestamp, at("2026-11-28T10:00:01Z"));
    assert_eq!(e.ingested, at("2026-11-28T12:00:00Z"));
    assert_eq!(e.source_ip, ip("2001:db8::7"));
    assert_eq!(e.user_name.as_deref(), Some("alice"));
    assert_eq!(e.rare().http_request_method.as_deref(), Some("GET"));
    assert_eq!(e.rare().url_path.as_deref(), Some("/v1/accounts"));
    assert_eq!(e.rare().url_query.as_deref(), Some("id=42"));
    assert_eq!(e.http_response_status_code, Some(404));
    assert_eq!(e.duration_ns, Some(52_000_000));
    assert_eq!(e.outcome.as_deref(), Some("failure"));
    assert_eq!(e.category.as_deref(), Some("web"));
    // No syslog header: no host, process or syslog fields; the record is the message.
    assert_eq!(e.host_name, None);
    assert_eq!(e.process_name, None);
    assert_eq!(e.syslog_severity, None);
    assert_eq!(e.observer_type.as_deref(), Some("file"));
    assert_eq!(e.message.as_deref(), std::str::from_utf8(line).ok());
    assert_eq!(e.raw, line.to_vec());
}

#[test]
fn a_raw_json_gateway_line_becomes_an_event() {
    let line = br#"{"request":{"method":"POST","uri":"/v1/transfers?dry=1"},"response":{"status":201,"size":64},"latencies":{"request":7},"client_ip":"203.0.113.7","consumer":{"username":"alice"},"route":{"name":"transfers"},"started_at":1795860001123}"#;
    let e = normalizer().normalize(line, &file_meta()).unwrap();
    assert_eq!(e.dataset.as_deref(), Some("kong"));
    assert_eq!(e.timestamp, at("2026-11-28T10:00:01.123Z"));
    assert_eq!(e.rare().api_consumer.as_deref(), Some("alice"));
    assert_eq!(e.rare().api_route.as_deref(), Some("transfers"));
    assert_eq!(e.rare().url_query.as_deref(), Some("dry=1"));
    assert_eq!(e.duration_ns, Some(7_000_000));
    assert_eq!(e.outcome.as_deref(), Some("success"));
    // The same object through syslog, program kong, takes the normal path.
    let mut syslog = b"<14>Nov 28 10:00:02 gw1 kong: ".to_vec();
    syslog.extend_from_slice(line);
    let e = normalizer().normalize(&syslog, &file_meta()).unwrap();
    assert_eq!(e.dataset.as_deref(), Some("kong"));
    assert_eq!(e.process_name.as_deref(), Some("kong"));
    assert_eq!(e.host_name.as_deref(), Some("gw1"));
    assert_eq!(e.rare().api_consumer.as_deref(), Some("alice"));
}

#[test]
fn a_raw_record_without_its_own_time_takes_the_receive_time() {
    let yaml = "name: plain\nmatch: {raw: true, prefix: 'ping '}\npatterns:\n  - name: p\n    regex: '^ping (?P<source.ip>[0-9.]+)$'\n";
    let (set, errors) = load(&[("plain.yml", yaml)]);
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(set.raw_len(), 1);
    let n = Normalizer::new(set, NormalizeOptions::default());
    let e = n.normalize(b"ping 192.0.2.9\n", &file_meta()).unwrap();
    assert_eq!(e.timestamp, at("2026-11-28T12:00:00Z"));
    assert_eq!(e.source_ip, ip("192.0.2.9"));
}

#[test]
fn garbage_and_unknown_raw_lines_are_still_rejected_as_before() {
    let n = normalizer();
    let bare = Normalizer::new(DefinitionSet::default(), NormalizeOptions::default());
    let m = file_meta();
    // A plain line no raw definition takes: the same rejection as without raw definitions.
    for line in [
        &b"hello world"[..],
        b"203.0.113.7 said hi",
        b"{\"level\":\"info\",\"msg\":\"no gateway here\"}",
        b"[2026-11-28T10:00:01Z] not an envoy line",
    ] {
        let with = n.normalize(line, &m).unwrap_err();
        let without = bare.normalize(line, &m).unwrap_err();
        assert_eq!(with.reason, "not_syslog", "{line:?}");
        assert_eq!(with, without, "{line:?}");
    }
    // Binary garbage: invalid UTF-8 first, then (replaced) not syslog.
    let garbage = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\xff\xfe";
    assert_eq!(n.normalize(garbage, &m).unwrap_err().reason, "invalid_utf8");
    let replace = Normalizer::new(
        DefinitionSet::builtin(),
        NormalizeOptions {
            invalid_utf8: InvalidUtf8Policy::Replace,
            ..NormalizeOptions::default()
        },
    );
    assert_eq!(
        replace.normalize(garbage, &m).unwrap_err().reason,
        "not_syslog"
    );
    // Only `not_syslog` opens the raw path: a bad PRI stays a PRI error even when the rest is
    // a gateway line.
    let r = n
        .normalize(br#"<999>{"latencies":{},"client_ip":"203.0.113.7"}"#, &m)
        .unwrap_err();
    assert_eq!(r.reason, "pri");
    // A raw record that meets a JSON definition but is broken is that format's rejection.
    let r = n
        .normalize(br#"{"latencies":{"request":1},"client_ip":"#, &m)
        .unwrap_err();
    assert_eq!(r.reason, "json");
}

#[test]
fn raw_records_meet_only_raw_definitions_and_program_is_not_required() {
    let files = [
        (
            "syslog_only.yml",
            "name: syslog_only\nmatch: {contains: 'token='}\npatterns:\n  - name: p\n    regex: 'token=(?P<user.name>\\w+)'\n",
        ),
        (
            "raw_prog.yml",
            "name: raw_prog\nmatch: {program: app, raw: true, contains: 'user='}\npatterns:\n  - name: p\n    regex: 'user=(?P<user.name>\\w+)'\n",
        ),
    ];
    let (set, errors) = load(&files);
    assert!(errors.is_empty(), "{errors:#?}");
    let n = Normalizer::new(set, NormalizeOptions::default());
    let m = file_meta();
    // Not raw: a plain line is not for it.
    assert_eq!(
        n.normalize(b"token=bob", &m).unwrap_err().reason,
        "not_syslog"
    );
    // Raw with a program condition: the program is not checked on a raw record...
    let e = n.normalize(b"user=carol", &m).unwrap();
    assert_eq!(e.dataset.as_deref(), Some("raw_prog"));
    assert_eq!(e.user_name.as_deref(), Some("carol"));
    // ...but it is on syslog, as before.
    let e = n
        .normalize(b"<14>Nov 28 10:00:01 h other: user=dave", &m)
        .unwrap();
    assert_eq!(e.dataset, None);
    let e = n
        .normalize(b"<14>Nov 28 10:00:01 h app: user=dave", &m)
        .unwrap();
    assert_eq!(e.dataset.as_deref(), Some("raw_prog"));
}

#[test]
fn the_new_definition_keys_are_checked_with_file_and_line() {
    for (yaml, line, needle) in [
        ("name: x\nextract: {format: json}\nfields:\n  a: {to: user.name, sclae: 1}\n", 4, "expected a target field"),
        ("name: x\nextract: {format: json}\nfields:\n  a: {to: user.name, scale: 0}\n", 4, "scale must be at least 1"),
        ("name: x\nextract: {format: json}\nfields:\n  a: {to: user.nam}\n", 4, "user.nam"),
        ("name: x\nextract: {format: json}\nfields:\n  a: [user.name, {to: url.path, regex: '('}]\n", 4, "regex does not compile"),
        ("name: x\nextract: {format: json}\npatterns:\n  - name: p\n    when: {s: {regx: '^4'}}\n", 5, "{regex:"),
        ("name: x\nextract: {format: json}\npatterns:\n  - name: p\n    when: {s: {regex: '^(4'}}\n", 5, "when s: regex does not compile"),
        ("name: x\nmatch: {raw: yes please}\nextract: {format: json}\n", 2, "expected a boolean"),
        ("name: x\nabsent: ['']\nextract: {format: json}\n", 2, "absent"),
        ("name: x\ntimestamp: {field: tme, format: rfc3339}\npatterns:\n  - name: p\n    regex: '^(?P<user.name>\\S+)'\n", 2, "tme is not a named capture group"),
        ("name: x\ntimestamp: {field: t, format: '%Q'}\npatterns:\n  - name: p\n    regex: '^(?P<t>\\S+)'\n", 2, "strftime"),
    ] {
        let (set, errors) = load(&[("new.yml", yaml)]);
        assert!(set.is_empty(), "{yaml}");
        assert_eq!(errors.len(), 1, "{yaml}: {errors:#?}");
        assert_eq!(errors[0].line, line, "{yaml}: {errors:#?}");
        assert!(errors[0].message.contains(needle), "{yaml}: {errors:#?}");
        assert!(errors[0].to_string().starts_with(&format!("new.yml:{line}: ")));
    }
}

#[test]
fn mappings_scale_extract_and_keep_what_they_cannot_write() {
    let yaml = "\
name: gw
match: {prefix: '{'}
extract: {format: json}
absent: ['-']
fields:
  rt: {to: event.duration, scale: 1000000000}
  uri: [url.original, {to: url.path, regex: '^([^?]*)'}, {to: url.query, regex: '\\?(.+)$'}]
  status: {to: http.response.status_code, regex: '^([0-9]{3})\\b'}
patterns:
  - name: bad
    when: {status: {regex: '^[45]'}}
    set: {event.outcome: failure}
  - name: good
    set: {event.outcome: success}
";
    let (set, errors) = load(&[("gw.yml", yaml)]);
    assert!(errors.is_empty(), "{errors:#?}");
    let mut e = Event::new(at("2026-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z"));
    let text = r#"{"rt":"1.5e-3","uri":"/a","status":"503 Service Unavailable","x":"-"}"#;
    let got = set.apply(&message("app", text), text, &mut e).unwrap();
    assert_eq!(got, Some(("gw", "bad")));
    assert_eq!(e.duration_ns, Some(1_500_000));
    assert_eq!(e.rare().url_path.as_deref(), Some("/a"));
    assert_eq!(e.rare().url_query, None);
    assert_eq!(e.http_response_status_code, Some(503));
    // Written by one mapping: not kept in extra; `-` is absent: not kept either.
    assert!(!e.extra.contains_key("gw.uri"), "{:?}", e.extra);
    assert!(!e.extra.contains_key("gw.x"), "{:?}", e.extra);
    // A value no mapping can write stays in extra.
    let mut e = Event::new(at("2026-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z"));
    let text = r#"{"rt":"fast","status":"OK"}"#;
    let got = set.apply(&message("app", text), text, &mut e).unwrap();
    assert_eq!(got, Some(("gw", "good")));
    assert_eq!(e.duration_ns, None);
    assert_eq!(e.get("extra.gw.rt"), Some(FieldValue::Str("fast")));
    assert_eq!(e.get("extra.gw.status"), Some(FieldValue::Str("OK")));
}

#[test]
fn regex_definitions_read_timestamps_and_scale_captures() {
    let yaml = "\
name: acc
match: {program: web}
timestamp: {field: t, format: '%d/%b/%Y:%H:%M:%S %z'}
patterns:
  - name: p
    regex: '^\\[(?P<t>[^\\]]+)\\] (?P<ms>\\S+)$'
    fields:
      ms: {to: event.duration, scale: 1000000}
";
    let (set, errors) = load(&[("acc.yml", yaml)]);
    assert!(errors.is_empty(), "{errors:#?}");
    let mut e = Event::new(at("2026-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z"));
    let text = "[28/Nov/2026:11:00:01 +0100] 12.5";
    assert_eq!(
        set.apply(&message("web", text), text, &mut e).unwrap(),
        Some(("acc", "p"))
    );
    assert_eq!(e.timestamp, at("2026-11-28T10:00:01Z"));
    assert_eq!(e.duration_ns, Some(12_500_000));
    // A capture that does not scale is a field_type error, like any capture of the wrong type.
    let text = "[28/Nov/2026:11:00:01 +0100] soon";
    let err = set.apply(&message("web", text), text, &mut e).unwrap_err();
    assert_eq!(err.reason(), "field_type");
}

#[test]
fn gateway_and_zeek_definitions_are_shipped_raw() {
    let set = DefinitionSet::builtin();
    for name in [
        "nginx",
        "nginx_json",
        "kong",
        "aws_apigateway",
        "apic",
        "envoy",
        "envoy_json",
        "zeek_conn",
        "zeek_dns",
        "zeek_http",
        "zeek_ssh",
        "zeek_notice",
        "zeek",
    ] {
        assert!(set.names().contains(&name), "{name} is not shipped");
    }
    assert_eq!(set.raw_len(), 13);
    // Raw definitions do not add to the per-message cost of syslog: all have a literal.
    assert_eq!(set.unconditional_len(), 0);
}
