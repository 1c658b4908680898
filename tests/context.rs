//! Context end to end: GeoIP, zones, reference sets (files, API, offense actions) and assets
//! through a running `vigil run`, surviving a restart.

use crate::support::*;

/// A firewall (netfilter) record, `action` BLOCK or ALLOW, with the current time.
fn ufw(action: &str, src: &str, dst: &str, dport: u16) -> Vec<u8> {
    let now = chrono::Utc::now().format("%b %e %H:%M:%S");
    format!(
        "<4>{now} gw01 kernel: [UFW {action}] IN=eth0 OUT= SRC={src} DST={dst} LEN=60 TOS=0x00 \
         PREC=0x00 TTL=52 ID=1 DF PROTO=TCP SPT=50000 DPT={dport} WINDOW=64240 RES=0x00 SYN URGP=0"
    )
    .into_bytes()
}

const RULES: &str = "title: Contact from a threat-intel address
name: intel_hit
detection:
  selection: {source.ip|refset: threat_intel}
  condition: selection
level: medium
vigil:
  offense:
    index: source.ip
    relevance: 3
    add_to_set: {set: blocked_ips, ttl: 1h}
";

#[test]
fn context_enriches_events_feeds_rules_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("intel.yml"), RULES).unwrap();
    let feed = dir.path().join("intel.netset");
    std::fs::write(
        &feed,
        "# FireHOL-style feed\n203.0.113.0/24\nthis is not an address\n198.51.100.77\n",
    )
    .unwrap();
    let geo = repo_root().join("fixtures/maxmind/GeoIP2-City-Test.mmdb");
    let context = format!(
        "[context]\ngeoip_city = {geo:?}\n\
         [[context.networks]]\nname = \"private\"\ncidrs = [\"10.0.0.0/8\"]\ncriticality = 4\n\
         [[context.networks]]\nname = \"core-banking\"\ncidrs = [\"10.20.0.0/16\"]\ncriticality = 9\n\
         [[context.reference_sets]]\nname = \"threat_intel\"\nfiles = [{feed:?}]\n\
         [[context.reference_sets]]\nname = \"blocked_ips\"\n",
        geo = geo.display().to_string(),
        feed = feed.display().to_string(),
    );
    let config = write_config_with_rules(dir.path(), &rules, &context);
    let mut vigil = Vigil::start(&config);

    // The unreadable feed line is counted; the rest loaded.
    assert_eq!(vigil.metric("vigil_reference_bad_lines_total"), 1);
    let sets = vigil.get_json("/api/v1/reference-sets");
    assert_eq!(sets["total"], 2, "{sets}");
    let intel = vigil.get_json("/api/v1/reference-sets/threat_intel");
    assert_eq!(intel["total"], 2, "{intel}");

    // A feed address reaches a core-banking host: the rule fires, the offense's relevance comes
    // from the zone, and the action adds the address to blocked_ips.
    vigil.send_udp(&[ufw("BLOCK", "203.0.113.9", "10.20.0.5", 22)]);
    vigil.wait_until("the intel offense", || {
        vigil.get_json("/api/v1/offenses")["total"] == 1
    });
    let o = &vigil.get_json("/api/v1/offenses")["items"][0];
    assert_eq!(o["rule"], "intel_hit");
    assert_eq!(o["index_value"], "203.0.113.9");
    assert_eq!(o["relevance"], 9, "{o}");
    assert_eq!(o["asset_criticality"], 9);
    let reasons = o["magnitude_reasons"].to_string();
    assert!(
        reasons.contains("destination 10.20.0.5 in zone core-banking (criticality 9)"),
        "{reasons}"
    );
    let detail = vigil.get_json(&format!("/api/v1/offenses/{}", o["id"].as_str().unwrap()));
    let ev = &detail["events"][0];
    assert_eq!(ev["destination.zone"], "core-banking");
    assert_eq!(ev["destination.internal"], true);
    assert_eq!(ev["source.internal"], false);
    assert_eq!(ev["network.direction"], "inbound");
    let blocked = vigil.get_json("/api/v1/reference-sets/blocked_ips");
    assert_eq!(blocked["items"][0]["value"], "203.0.113.9", "{blocked}");
    assert_eq!(blocked["items"][0]["source"], "rule:intel_hit");
    assert!(blocked["items"][0]["expires"].is_string());

    // An analyst adds a London address (in the GeoIP test database) through the API: the next
    // record from it matches at once and carries its geo fields.
    let (status, body) = vigil.request(
        "POST",
        "/api/v1/reference-sets/threat_intel/entries",
        Some(r#"{"values": ["81.2.69.160"], "ttl_secs": 86400}"#),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = vigil.request(
        "POST",
        "/api/v1/reference-sets/threat_intel/entries",
        Some(r#"{"values": ["81.2.69.161", "not-an-ip"]}"#),
    );
    assert_eq!(status, 400, "all or nothing: {body}");
    assert!(body.contains("not-an-ip"), "{body}");
    assert_eq!(
        vigil
            .request(
                "POST",
                "/api/v1/reference-sets/nope/entries",
                Some(r#"{"values": ["1.2.3.4"]}"#)
            )
            .0,
        404
    );
    assert_eq!(vigil.get("/api/v1/reference-sets", None).0, 401);
    vigil.send_udp(&[ufw("ALLOW", "81.2.69.160", "10.20.0.6", 443)]);
    vigil.wait_until("the second intel offense", || {
        vigil.get_json("/api/v1/offenses")["total"] == 2
    });
    let all = vigil.get_json("/api/v1/offenses");
    let london = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["index_value"] == "81.2.69.160")
        .unwrap()
        .clone();
    let detail = vigil.get_json(&format!(
        "/api/v1/offenses/{}",
        london["id"].as_str().unwrap()
    ));
    let ev = &detail["events"][0];
    assert_eq!(ev["source.geo.country_iso_code"], "GB", "{ev}");
    assert_eq!(ev["source.geo.city_name"], "London");

    // Assets: the two core-banking hosts, with the port an allowed connection reached.
    vigil.wait_until("assets written", || {
        vigil.get_json("/api/v1/assets?zone=core-banking")["total"] == 2
    });
    let assets = vigil.get_json("/api/v1/assets?zone=core-banking");
    let six = assets["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["ip"] == "10.20.0.6")
        .unwrap()
        .clone();
    assert_eq!(six["criticality"], 9);
    assert_eq!(six["ports"], serde_json::json!([443]));
    let five = assets["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["ip"] == "10.20.0.5")
        .unwrap()
        .clone();
    assert_eq!(
        five["ports"],
        serde_json::json!([]),
        "a blocked port is not a service"
    );

    // Restart: API and action entries come back from the store, the file from the file.
    vigil.stop();
    let vigil = Vigil::start(&config);
    let intel = vigil.get_json("/api/v1/reference-sets/threat_intel");
    let values: Vec<&str> = intel["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["value"].as_str().unwrap())
        .collect();
    assert!(values.contains(&"81.2.69.160"), "{intel}");
    assert!(values.contains(&"203.0.113.0/24"), "{intel}");
    assert_eq!(
        vigil.get_json("/api/v1/reference-sets/blocked_ips")["items"][0]["value"],
        "203.0.113.9"
    );
    assert_eq!(vigil.get_json("/api/v1/assets")["total"], 2);

    // Removing an entry takes effect at once and is kept removed.
    let (status, body) = vigil.request(
        "DELETE",
        "/api/v1/reference-sets/threat_intel/entries?value=81.2.69.160",
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("true"), "{body}");
    vigil.send_udp(&[ufw("ALLOW", "81.2.69.160", "10.20.0.6", 443)]);
    vigil.send_udp(&[ufw("BLOCK", "198.51.100.77", "10.0.0.1", 22)]);
    vigil.wait_until("the third offense (the feed address only)", || {
        vigil.get_json("/api/v1/offenses")["total"] == 3
    });
    let london = vigil.get_json("/api/v1/offenses");
    let count = london["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["index_value"] == "81.2.69.160")
        .map(|o| o["event_count"].clone());
    assert_eq!(
        count,
        Some(serde_json::json!(1)),
        "the removed address matched again"
    );
}

/// A one-route HTTP server on loopback serving whatever `body` holds (a threat feed).
fn feed_server(body: std::sync::Arc<std::sync::Mutex<String>>) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let text = body.lock().unwrap().clone();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    addr
}

fn set_values(vigil: &Vigil, set: &str) -> Vec<String> {
    vigil.get_json(&format!("/api/v1/reference-sets/{set}"))["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["value"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn feeds_are_fetched_on_schedule_files_reload_when_changed_and_a_dead_feed_keeps_its_last_list() {
    let dir = tempfile::tempdir().unwrap();
    let body = std::sync::Arc::new(std::sync::Mutex::new(
        "# feed v1\n198.51.100.0/25\n203.0.113.44\n".to_owned(),
    ));
    let server = feed_server(body.clone());
    let list = dir.path().join("vip.txt");
    std::fs::write(&list, "alice\n").unwrap();
    let context = format!(
        "[context]\n\
         [[context.reference_sets]]\nname = \"threat_intel\"\nurl = \"http://{server}/feed.netset\"\nrefresh_secs = 1\n\
         [[context.reference_sets]]\nname = \"blocked_ips\"\n\
         [[context.reference_sets]]\nname = \"vip_users\"\nkind = \"string\"\nfiles = [{list:?}]\n",
        list = list.display().to_string(),
    );
    let config = write_config(dir.path(), &context);
    let mut vigil = Vigil::start(&config);
    vigil.wait_until("the first fetch", || {
        set_values(&vigil, "threat_intel") == ["198.51.100.0/25", "203.0.113.44"]
    });
    assert_eq!(set_values(&vigil, "vip_users"), ["alice"]);

    // The feed drops one address and adds another; the file gains a user.
    *body.lock().unwrap() = "# feed v2\n198.51.100.0/25\n192.0.2.7\n".to_owned();
    std::fs::write(&list, "alice\nBob\n").unwrap();
    vigil.wait_until("the second fetch", || {
        set_values(&vigil, "threat_intel") == ["192.0.2.7", "198.51.100.0/25"]
    });
    vigil.wait_until("the file reload", || {
        set_values(&vigil, "vip_users") == ["alice", "bob"]
    });

    // The feed goes away: after a restart the last fetched list is still there (from the store),
    // and the failed fetches are counted.
    vigil.stop();
    let dir2 = tempfile::tempdir().unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&server.to_string(), &dead_addr.to_string());
    let config2 = dir2.path().join("vigil.toml");
    std::fs::write(&config2, text).unwrap();
    let vigil = Vigil::start(&config2);
    assert_eq!(
        set_values(&vigil, "threat_intel"),
        ["192.0.2.7", "198.51.100.0/25"]
    );
    vigil.wait_until("a failed fetch counted", || {
        vigil.metric("vigil_reference_fetch_failures_total") >= 1
    });
    assert_eq!(
        set_values(&vigil, "threat_intel"),
        ["192.0.2.7", "198.51.100.0/25"],
        "a dead feed keeps its last list"
    );
}
