//! Automatic blocking end to end: offenses decide blocks through the guards, firewalls pull
//! the list with their own token, internal addresses are never blocked, dry run blocks nothing.

use crate::support::*;

const FIREWALL: &str = "firewall-pull-token-0123456789";

fn brute_force(v: &Vigil, ip: &str) {
    let lines: Vec<Vec<u8>> = (0..12)
        .map(|i| failed_password_3164(ip, 40_000 + i))
        .collect();
    v.send_udp(&lines);
}

fn blocklist(v: &Vigil, token: &str) -> (u16, String) {
    v.get("/api/v1/blocklist.txt", Some(token))
}

fn decisions(v: &Vigil) -> Vec<(String, String)> {
    let d = v.get_json("/api/v1/response/decisions");
    let mut out: Vec<(String, String)> = d["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["value"].as_str().unwrap().to_owned(),
                x["decision"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn offenses_block_outside_attackers_and_never_internal_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("[response]\nmin_magnitude = 1\nblocklist_token = \"{FIREWALL}\"\n"),
    );
    let vigil = Vigil::start(&config);
    brute_force(&vigil, "203.0.113.77");
    brute_force(&vigil, "10.0.0.5");
    vigil.wait_until("two decisions", || decisions(&vigil).len() == 2);
    assert_eq!(
        decisions(&vigil),
        vec![
            ("10.0.0.5".to_owned(), "internal".to_owned()),
            ("203.0.113.77".to_owned(), "blocked".to_owned()),
        ]
    );
    vigil.wait_until("the block in the live list", || {
        blocklist(&vigil, FIREWALL).1 == "203.0.113.77\n"
    });
    // More failures from the blocked address grow its offense but decide nothing again.
    brute_force(&vigil, "203.0.113.77");
    vigil.wait_processed(36);
    assert_eq!(decisions(&vigil).len(), 2);
    // The firewall's token reads the list and nothing else.
    assert_eq!(blocklist(&vigil, FIREWALL).0, 200);
    assert_eq!(vigil.get("/api/v1/offenses", Some(FIREWALL)).0, 401);
    assert_eq!(blocklist(&vigil, "wrong-token-0123456789").0, 401);
    assert_eq!(vigil.metric("vigil_response_decisions_total"), 2);
}

#[test]
fn dry_run_records_the_decision_and_blocks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[response]\nmin_magnitude = 1\ndry_run = true\nallow_list = [\"198.51.100.0/24\"]\n\
             blocklist_token = \"{FIREWALL}\"\n"
        ),
    );
    let vigil = Vigil::start(&config);
    brute_force(&vigil, "203.0.113.78");
    brute_force(&vigil, "198.51.100.9");
    vigil.wait_until("two decisions", || decisions(&vigil).len() == 2);
    assert_eq!(
        decisions(&vigil),
        vec![
            ("198.51.100.9".to_owned(), "allow_listed".to_owned()),
            ("203.0.113.78".to_owned(), "dry_run".to_owned()),
        ]
    );
    assert_eq!(blocklist(&vigil, FIREWALL), (200, String::new()));
}
