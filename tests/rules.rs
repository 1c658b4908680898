//! Rules are tested as data: every case in the shipped rule files passes, through the library
//! and through `vigil rules test`.

use std::process::Command;

use crate::support::*;

#[test]
fn every_shipped_rule_test_case_passes() {
    let results = vigil::correlate::ruletest::run(
        &vigil::config::Config::default(),
        &repo_root().join("rules"),
    )
    .unwrap();
    let failures: Vec<_> = results.iter().filter(|r| r.failure.is_some()).collect();
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(results.len() >= 5, "only {} cases ran", results.len());
}

#[test]
fn rules_test_command_passes_and_says_so() {
    let out = Command::new(vigil_bin())
        .current_dir(repo_root())
        .args(["rules", "test"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("ok   ssh_brute_force :: three failures stay quiet"),
        "{stdout}"
    );
}

#[test]
fn a_rule_test_that_expects_the_wrong_thing_fails() {
    let dir = tempfile::tempdir().unwrap();
    let rule = std::fs::read_to_string(repo_root().join("rules/ssh_brute_force.yml")).unwrap();
    std::fs::write(
        dir.path().join("r.yml"),
        rule.replace("events: 12", "events: 13"),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    for f in std::fs::read_dir(repo_root().join("rules/tests")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.path().join("tests").join(f.file_name().unwrap())).unwrap();
    }
    let out = Command::new(vigil_bin())
        .args(["rules", "test", "--dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("FAIL ssh_brute_force :: twelve failures"),
        "{stdout}"
    );
    assert!(stdout.contains("1 failed"), "{stdout}");
}
