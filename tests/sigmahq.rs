//! The SigmaHQ rule tree (fixtures/sigma, 3,141 rules) loads with no panic: every rule either
//! loads or is reported unsupported (its log source is not one Vigil serves); none fails.

use crate::support::*;

#[test]
fn every_sigmahq_rule_loads_or_is_reported_unsupported() {
    let report = vigil::correlate::lint(&repo_root().join("fixtures/sigma/rules")).unwrap();
    let failed: Vec<&String> = report
        .problems
        .iter()
        .filter(|p| p.starts_with("failed"))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(report.loaded + report.unsupported, 3141);
    // Rules for the sources Vigil parses today load: Linux syslog, sshd and cron, and the
    // product-less firewall, web server and proxy categories (docs/sigmahq-load-report.md).
    assert!(report.loaded >= 75, "only {} loaded", report.loaded);
    for served in ["lnx_sshd_susp_ssh.yml", "lnx_syslog_susp_named.yml"] {
        assert!(
            !report.problems.iter().any(|p| p.contains(served)),
            "{served} was refused"
        );
    }
    // Unsupported rules say which log source is missing.
    assert!(report
        .problems
        .iter()
        .filter(|p| p.starts_with("unsupported"))
        .all(|p| p.contains("logsource")));
}

#[test]
fn rules_lint_ends_with_the_counts_line() {
    let out = std::process::Command::new(vigil_bin())
        .current_dir(repo_root())
        .args(["rules", "lint", "rules"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(
        stdout.lines().last(),
        Some("loaded 42, unsupported 0, failed 0"),
        "{stdout}"
    );
}
