//! `vigil replay` over a realistic auth.log prints exactly the expected offenses.

use std::process::Command;

use crate::support::*;

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

    // What the fixture is built to contain (fixtures/sshd/SOURCE.md).
    let mut got: Vec<(String, u64)> = stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["rule"], "ssh_brute_force");
            (
                v["index_value"].as_str().unwrap().to_owned(),
                v["event_count"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("198.51.100.200".to_owned(), 12),
            ("2001:db8::bad".to_owned(), 14),
            ("203.0.113.7".to_owned(), 35),
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
