//! Rules changed while the service runs: list, reload (keeping windows), switch off and on
//! (kept across a restart), a broken file changes nothing, and every change is audited.

use crate::support::*;

fn failures(vigil: &Vigil, ip: &str, n: u16, first_port: u16) {
    let lines: Vec<Vec<u8>> = (0..n)
        .map(|i| failed_password_3164(ip, first_port + i))
        .collect();
    vigil.send_tcp_octet_counted(&lines);
}

fn post(vigil: &Vigil, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = vigil.request("POST", path, None);
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {body:?}: {e}"));
    (status, json)
}

fn names(list: &serde_json::Value, key: &str) -> Vec<String> {
    list[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn rules_reload_and_switch_off_and_on_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::copy(
        repo_root().join("rules/ssh_brute_force.yml"),
        rules.join("ssh_brute_force.yml"),
    )
    .unwrap();
    let config = write_config_with_rules(dir.path(), &rules, "");
    let mut vigil = Vigil::start(&config);

    let list = vigil.get_json("/api/v1/rules");
    assert_eq!(
        names(&list, "rules"),
        ["ssh_failed_login", "ssh_brute_force"],
        "{list}"
    );
    let brute = &list["rules"][1];
    assert_eq!(brute["kind"], "event_count");
    assert_eq!(brute["references"][0], "ssh_failed_login");
    assert_eq!(list["rules"][0]["generate"], false);

    // Six failures build a window; a reload of the same files keeps it, and four more make
    // the offense of ten.
    failures(&vigil, "203.0.113.7", 6, 40000);
    vigil.wait_processed(6);
    let (status, report) = post(&vigil, "/api/v1/rules/reload");
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["loaded"], 2);
    assert_eq!(report["windows_kept"], 1, "{report}");
    failures(&vigil, "203.0.113.7", 4, 40100);
    vigil.wait_processed(10);
    let offenses = vigil.get_json("/api/v1/offenses");
    assert_eq!(offenses["total"], 1, "{offenses}");
    assert_eq!(offenses["items"][0]["event_count"], 10);
    assert!(
        vigil.get_json("/api/v1/rules")["rules"][1]["matches"].as_u64() >= Some(10),
        "match counts are listed"
    );

    // The base rule feeds the correlation: it cannot be switched off alone.
    let (status, body) = post(&vigil, "/api/v1/rules/ssh_failed_login/disable");
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("ssh_brute_force"));
    let (status, _) = post(&vigil, "/api/v1/rules/no_such_rule/disable");
    assert_eq!(status, 404);

    // Both off: ten failures from another address raise nothing.
    assert_eq!(post(&vigil, "/api/v1/rules/ssh_brute_force/disable").0, 200);
    let (status, report) = post(&vigil, "/api/v1/rules/ssh_failed_login/disable");
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["loaded"], 0);
    failures(&vigil, "198.51.100.9", 10, 41000);
    vigil.wait_processed(20);
    assert_eq!(vigil.get_json("/api/v1/offenses")["total"], 1);
    let list = vigil.get_json("/api/v1/rules");
    assert!(names(&list, "rules").is_empty(), "{list}");
    assert_eq!(
        names(&list, "disabled"),
        ["ssh_brute_force", "ssh_failed_login"]
    );
    assert_eq!(list["disabled"][0]["changed_by"], "admin");

    // Switched off survives a restart.
    vigil.stop();
    let mut vigil = Vigil::start(&config);
    assert!(names(&vigil.get_json("/api/v1/rules"), "rules").is_empty());
    failures(&vigil, "198.51.100.9", 10, 42000);
    vigil.wait_processed(10);
    assert_eq!(vigil.get_json("/api/v1/offenses")["total"], 1);

    // On again (the base rule first would make it raise offenses alone: the correlation first
    // is refused because its base rule is off, a broken set).
    let (status, body) = post(&vigil, "/api/v1/rules/ssh_brute_force/enable");
    assert_eq!(status, 422, "{body}");
    assert!(
        body["problems"][0]
            .as_str()
            .unwrap()
            .contains("ssh_failed_login"),
        "{body}"
    );
    assert_eq!(post(&vigil, "/api/v1/rules/ssh_failed_login/enable").0, 200);
    assert_eq!(post(&vigil, "/api/v1/rules/ssh_brute_force/enable").0, 200);
    assert_eq!(
        post(&vigil, "/api/v1/rules/ssh_brute_force/enable").0,
        404,
        "not off"
    );
    failures(&vigil, "198.51.100.9", 10, 43000);
    vigil.wait_processed(20);
    vigil.wait_until("the second offense", || {
        vigil.get_json("/api/v1/offenses")["total"] == 2
    });

    // A broken file changes nothing; fixed, the new rule runs.
    std::fs::write(
        rules.join("broken.yml"),
        "title: broken\nname: broken\nlogsource:\n  product: linux\n  service: sshd\ndetection:\n  condition: nothing\n",
    )
    .unwrap();
    let (status, body) = post(&vigil, "/api/v1/rules/reload");
    assert_eq!(status, 422, "{body}");
    assert!(
        body["problems"][0].as_str().unwrap().contains("broken"),
        "{body}"
    );
    assert_eq!(
        vigil.get_json("/api/v1/rules")["rules"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    std::fs::write(
        rules.join("broken.yml"),
        "title: Root login\nname: root_ssh_login\nlogsource:\n  product: linux\n  service: sshd\n\
         detection:\n  selection:\n    event.action: ssh_login\n    event.outcome: success\n    user.name: root\n  condition: selection\nlevel: high\n",
    )
    .unwrap();
    let (status, report) = post(&vigil, "/api/v1/rules/reload");
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["loaded"], 3);
    assert!(names(&vigil.get_json("/api/v1/rules"), "rules").contains(&"root_ssh_login".to_owned()));

    // Every change is in the audit trail, with who made it.
    let audit = vigil.get_json("/api/v1/audit?limit=100");
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    for a in ["rules.reload", "rule.disable", "rule.enable"] {
        assert!(actions.contains(&a), "{a} audited: {actions:?}");
    }
    vigil.stop();
}
