//! `vigil parse` and `vigil config check`.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::*;

#[test]
fn parse_prints_normalized_events_and_rejections_as_json_lines() {
    let mut child = Command::new(vigil_bin())
        .arg("parse")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"<38>Nov 28 10:00:00 bastion01 sshd[42]: Failed password for invalid user admin from 203.0.113.7 port 50022 ssh2\n\
              Nov 28 10:00:01 bastion01 sshd[42]: Accepted publickey for alice from 2001:db8::1 port 50023 ssh2: ED25519 SHA256:abc\n\
              <999>garbage\n",
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["source.ip"], "203.0.113.7");
    assert_eq!(lines[0]["source.port"], 50022);
    assert_eq!(lines[0]["user.name"], "admin");
    assert_eq!(lines[0]["event.category"], "authentication");
    assert_eq!(lines[0]["event.outcome"], "failure");
    assert_eq!(lines[0]["host.name"], "bastion01");
    assert_eq!(lines[1]["event.outcome"], "success");
    assert_eq!(lines[1]["source.ip"], "2001:db8::1");
    assert_eq!(lines[2]["rejected"]["reason"], "pri");
}

#[test]
fn config_check_accepts_the_defaults_and_names_an_unknown_key() {
    let ok = Command::new(vigil_bin())
        .current_dir(repo_root())
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[syslog]\nmax_mesage_bytes = 100\n").unwrap();
    let out = Command::new(vigil_bin())
        .args(["--config", bad.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("max_mesage_bytes"), "{stderr}");
}

#[test]
fn config_check_names_the_file_and_line_of_a_broken_rule() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::copy(
        repo_root().join("rules/ssh_brute_force.yml"),
        rules.join("good.yml"),
    )
    .unwrap();
    std::fs::write(
        rules.join("broken.yml"),
        "title: Broken\nname: broken\nlogsource: {product: linux}\ndetection:\n  selection:\n    message|re: '(unclosed'\n  condition: selection\n",
    )
    .unwrap();
    let config = dir.path().join("vigil.toml");
    std::fs::write(
        &config,
        format!("[rules]\ndir = {:?}\n", rules.display().to_string()),
    )
    .unwrap();
    let out = Command::new(vigil_bin())
        .args(["--config", config.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("broken.yml:"), "{stdout}");
    // The good rules still load.
    assert!(stdout.contains("2 rules loaded"), "{stdout}");
}
