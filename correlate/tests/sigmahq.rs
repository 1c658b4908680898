//! A sample of SigmaHQ rules (see `tests/sigmahq/SOURCE.md`) loads unchanged, or is refused
//! as unsupported when Vigil serves no events of its log source; none fails.

use std::path::Path;

use vigil_correlate::{RuleSet, RuleSource};

#[test]
fn sigmahq_sample_rules_all_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sigmahq");
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yml") {
            sources.push(RuleSource {
                path: path.display().to_string(),
                text: std::fs::read_to_string(&path).unwrap(),
            });
        }
    }
    assert!(sources.len() >= 15, "only {} sample rules", sources.len());
    let (set, errors) = RuleSet::from_sources(&sources);
    assert!(errors.iter().all(|e| e.unsupported), "{errors:#?}");
    assert_eq!(set.len() + errors.len(), sources.len());
    // Linux rules for sources Vigil parses (syslog, sshd, vsftpd's and named's syslog lines)
    // load; Cisco, Fortinet, auditd, Zeek and process-creation rules wait for their parsers.
    assert!(set.len() >= 5, "{} loaded: {errors:#?}", set.len());
    assert!(set.rules().iter().all(|r| r.author.is_some()));
    // Every one of them compiles: with unserved log sources applied to all events, all load.
    let (all, errors) = RuleSet::from_sources_with(
        &sources,
        &vigil_correlate::LoadOptions {
            apply_unserved_logsources: true,
            ..Default::default()
        },
    );
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(all.len(), sources.len());
}
