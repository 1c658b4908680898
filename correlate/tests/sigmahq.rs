//! A sample of SigmaHQ rules (see `tests/sigmahq/SOURCE.md`) loads unchanged.

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
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(set.len(), sources.len());
    assert!(set.rules().iter().all(|r| r.author.is_some()));
}
