//! Rules tested as data: each rule's `vigil.tests` cases replay a fixture file through the
//! whole pipeline (with every rule of the pack loaded, as in production) and compare the
//! offenses this rule raised with the expected ones. `vigil rules test` and `cargo test` both
//! run this.

use std::path::{Path, PathBuf};

use crate::config::Config;

/// The outcome of one test case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    /// Rule name.
    pub rule: String,
    /// Test case name.
    pub case: String,
    /// `None` when it passed, else what differed.
    pub failure: Option<String>,
}

/// `config` with a case's context: GeoIP databases and reference-set files (relative to the rule
/// file's folder).
fn with_context(config: &Config, base: &Path, ctx: &vigil_correlate::TestContext) -> Config {
    let mut c = config.clone();
    if let Some(p) = &ctx.geoip_city {
        c.context.geoip_city = Some(base.join(p));
    }
    if let Some(p) = &ctx.geoip_asn {
        c.context.geoip_asn = Some(base.join(p));
    }
    for (set, file) in &ctx.reference {
        if let Some(s) = c.context.reference_sets.iter_mut().find(|s| &s.name == set) {
            s.files.push(base.join(file));
        }
    }
    c
}

/// Runs every test case of every rule in `rules_dir`.
pub fn run(config: &Config, rules_dir: &Path) -> anyhow::Result<Vec<CaseResult>> {
    let mut config = config.clone();
    config.rules.dir = rules_dir.to_path_buf();
    let (rules, problems) = crate::app::load_rules(&config)?;
    let mut results: Vec<CaseResult> = problems
        .into_iter()
        .map(|p| CaseResult {
            rule: "(load)".into(),
            case: "rule compiles".into(),
            failure: Some(p),
        })
        .collect();
    for info in rules.rules() {
        for case in &info.vigil.tests {
            let base = Path::new(&info.path)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let fixture: PathBuf = base.join(&case.events);
            let case_config = with_context(&config, &base, &case.context);
            let failure =
                match crate::replay::replay(&case_config, std::slice::from_ref(&fixture), false) {
                    Err(e) => Some(format!("replaying {}: {e:#}", fixture.display())),
                    Ok((offenses, _)) => {
                        // Offenses join across rules, so a case checks this rule's own
                        // part: the offenses it contributed to, and its events in each.
                        let mut got: Vec<(String, u64)> = offenses
                            .iter()
                            .filter_map(|o| {
                                let part = o.rules.iter().find(|r| r.rule == info.name)?;
                                Some((o.index_value.clone(), part.events))
                            })
                            .collect();
                        let mut want: Vec<(String, u64)> = case
                            .expect
                            .iter()
                            .map(|e| (e.index.clone(), e.events))
                            .collect();
                        got.sort();
                        want.sort();
                        (got != want).then(|| format!("expected offenses {want:?}, got {got:?}"))
                    }
                };
            results.push(CaseResult {
                rule: info.name.clone(),
                case: case.name.clone(),
                failure,
            });
        }
    }
    Ok(results)
}
