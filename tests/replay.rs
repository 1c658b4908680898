//! `vigil replay` over a realistic auth.log prints exactly the expected offenses.

use std::process::Command;

use crate::support::*;

/// (index value, distinct events, each rule's (name, events)).
type OffenseSummary = (String, u64, Vec<(String, u64)>);

#[test]
fn replay_of_the_sshd_fixture_prints_exactly_the_expected_offenses() {
    let root = repo_root();
    let out = Command::new(vigil_bin())
        .current_dir(&root)
        .args(["replay", "--quiet", "fixtures/sshd/auth.log"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();

    // What the fixture is built to contain (fixtures/sshd/SOURCE.md): per offense, its index,
    // its distinct events, and each rule's part.
    let mut got: Vec<OffenseSummary> = stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let parts = v["rules"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r["rule"].as_str().unwrap().to_owned(),
                        r["events"].as_u64().unwrap(),
                    )
                })
                .collect();
            (
                v["index_value"].as_str().unwrap().to_owned(),
                v["event_count"].as_u64().unwrap(),
                parts,
            )
        })
        .collect();
    got.sort();
    let part = |r: &str, n| (r.to_owned(), n);
    assert_eq!(
        got,
        [
            (
                "198.51.100.200".to_owned(),
                12,
                vec![part("ssh_brute_force", 12)]
            ),
            (
                "2001:db8::bad".to_owned(),
                14,
                vec![part("ssh_brute_force", 14)]
            ),
            // The attacker rotates five user names: brute force and password spraying both
            // fire, and the offense counts each of the 35 failed logins once.
            (
                "203.0.113.7".to_owned(),
                35,
                vec![
                    part("ssh_brute_force", 35),
                    part("ssh_password_spraying", 25)
                ]
            ),
        ]
    );

    // And byte for byte what was reviewed (ids, times, magnitudes).
    let expected_path = root.join("fixtures/sshd/auth.expected.jsonl");
    if std::env::var_os("VIGIL_BLESS").is_some() {
        std::fs::write(&expected_path, &stdout).unwrap();
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap();
    assert_eq!(
        stdout, expected,
        "replay output changed; review and rerun with VIGIL_BLESS=1"
    );

    // Replay is deterministic: a second run prints the same bytes.
    let again = Command::new(vigil_bin())
        .current_dir(&root)
        .args(["replay", "--quiet", "fixtures/sshd/auth.log"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(again.stdout).unwrap(), stdout);
}

#[test]
fn replay_reads_several_files_and_reports_progress_on_stderr() {
    let root = repo_root();
    let out = Command::new(vigil_bin())
        .current_dir(&root)
        .args([
            "replay",
            "rules/tests/ssh_three_failures.log",
            "rules/tests/ssh_brute_force.log",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("replay: done"), "{stderr}");
}

#[test]
fn replay_reads_a_zeek_tsv_log_into_typed_network_events() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("conn.log");
    std::fs::write(
        &log,
        "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n\
         #open\t2026-11-28-10-00-00\n\
         #fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\torig_bytes\tresp_bytes\tconn_state\n\
         #types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tstring\n\
         1795860001.123456\tCx1\t10.0.0.5\t50000\t203.0.113.7\t443\ttcp\tssl\t1.5\t512\t4096\tSF\n\
         1795860002.000000\tCx2\t2001:db8::5\t50001\t2001:db8::9\t53\tudp\tdns\t0.01\t40\t120\tSF\n\
         1795860003.000000\tCx3\t10.0.0.6\t50002\n\
         #close\t2026-11-28-10-05-00\n",
    )
    .unwrap();
    let out = std::process::Command::new(vigil_bin())
        .current_dir(repo_root())
        .args(["replay", log.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Two records become events; the short one is a dead letter; headers are neither.
    assert!(stderr.contains("2 events, 1 dead letters"), "{stderr}");
    // And they are typed by the Zeek conn definition.
    let mut parse = std::process::Command::new(vigil_bin())
        .arg("parse")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    parse
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"_path":"conn","ts":"1795860001.123456","uid":"Cx1","id.orig_h":"10.0.0.5","id.orig_p":"50000","id.resp_h":"203.0.113.7","id.resp_p":"443","proto":"tcp","conn_state":"SF"}"#)
        .unwrap();
    let event: serde_json::Value =
        serde_json::from_slice(&parse.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(event["event.dataset"], "zeek.conn", "{event}");
    assert_eq!(event["source.ip"], "10.0.0.5");
    assert_eq!(event["destination.port"], 443);
    assert_eq!(event["network.transport"], "tcp");
    assert_eq!(event["event.category"], "network");
}
