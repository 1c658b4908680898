//! The web console in a real browser: the real `vigil` binary on ephemeral ports, the sshd
//! fixture replayed into it over `POST /api/v1/ingest`, then headless Chromium (Debian's
//! `chromium`, driven by playwright-core from `tests/console/drive.mjs`) signs in with the token,
//! finds the fixture's top offense at the head of the magnitude-sorted queue, opens it (events,
//! magnitude reasons, timeline), adds a note, assigns it, closes it with a reason, searches an
//! event by text and watches the sources' live EPS. Back here, the API must show the offense
//! closed with that reason, assigned, with the note, and the audit trail must name the changes.
//!
//! Screenshots of every step land in `target/console-screenshots/` (or
//! `VIGIL_CONSOLE_SCREENSHOTS`). Needs node (18+), Debian's chromium and `npm ci` in
//! `tests/console`: `scripts/services.sh install` sets them up. A missing browser or node fails
//! the test; it is never skipped. `VIGIL_TEST_CHROMIUM` / `VIGIL_TEST_NODE` point elsewhere.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{repo_root, write_config, Vigil, TOKEN};

const FIXTURE: &str = "fixtures/sshd/auth.log";
/// The fixture's offense of highest magnitude (fixtures/sshd/auth.expected.jsonl).
const TOP_INDEX: &str = "203.0.113.7";
/// Offenses the fixture makes at least (time-driven rules may add more while the test runs).
const OFFENSES: u64 = 3;
const NOTE: &str =
    "Blocked 203.0.113.7 at the edge firewall; it sprayed passwords over five accounts.";
const ASSIGNEE: &str = "alice";
const REASON: &str = "remediated: source blocked at the edge firewall";
const SEARCH: &str = "Failed password for oracle from 203.0.113.7";
/// Longest the browser run may take (a guard against hangs; it takes seconds).
const BROWSER_PATIENCE: Duration = Duration::from_secs(300);

/// Says something on the test's real stderr (not captured by the harness).
fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn chromium() -> PathBuf {
    let path = PathBuf::from(
        std::env::var("VIGIL_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    assert!(
        path.is_file(),
        "no Chromium at {}: run `scripts/services.sh install` (Debian package chromium) or set \
         VIGIL_TEST_CHROMIUM",
        path.display()
    );
    path
}

fn node() -> PathBuf {
    let path = std::env::var_os("VIGIL_TEST_NODE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("node"))
                    .find(|n| n.is_file())
            })
        })
        .unwrap_or_else(|| PathBuf::from("/usr/bin/node"));
    let version = Command::new(&path)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let Some(version) = version else {
        panic!(
            "node does not run ({}): run `scripts/services.sh install` (Debian packages nodejs \
             npm) or set VIGIL_TEST_NODE",
            path.display()
        );
    };
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 18,
        "node {version} is too old for playwright-core: 18 or later is needed"
    );
    path
}

/// `tests/console`, with playwright-core installed.
fn driver_dir() -> PathBuf {
    let dir = repo_root().join("tests/console");
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .is_file(),
        "playwright-core is not installed: run `npm ci` in {} (scripts/services.sh install does)",
        dir.display()
    );
    dir
}

/// The screenshot folder, emptied.
fn screenshot_dir() -> PathBuf {
    let dir = std::env::var_os("VIGIL_CONSOLE_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/console-screenshots"));
    if dir.exists() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "png") {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Reads a child's pipe to its end on a thread.
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut out = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut out);
        }
        out
    })
}

/// Runs `node drive.mjs` with `env`; (success, stdout, stderr). Killed after
/// [`BROWSER_PATIENCE`].
fn run_driver(env: &[(&str, String)]) -> (bool, String, String) {
    let node = node();
    let dir = driver_dir();
    let mut cmd = Command::new(node);
    cmd.arg("drive.mjs")
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start node");
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + BROWSER_PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (out, mut err) = (out.join().unwrap(), err.join().unwrap());
    if status.is_none() {
        err.push_str(&format!(
            "\ndrive.mjs killed after {}s",
            BROWSER_PATIENCE.as_secs()
        ));
    }
    (status.is_some_and(|s| s.success()), out, err)
}

fn is_png(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.len() > 1000 && b.starts_with(b"\x89PNG\r\n\x1a\n"))
}

#[test]
fn an_analyst_works_an_offense_in_the_console_in_a_real_browser() {
    let started = Instant::now();
    // Fail early, with the fix, when the browser side is missing.
    chromium();
    node();
    driver_dir();
    let shots = screenshot_dir();

    let dir = tempfile::tempdir().unwrap();
    let mut vigil = Vigil::start(&write_config(dir.path(), ""));

    // Replay the sshd fixture into the running service.
    let fixture = std::fs::read_to_string(repo_root().join(FIXTURE)).unwrap();
    let lines = fixture.lines().filter(|l| !l.trim().is_empty()).count() as u64;
    let (status, body) = vigil.request("POST", "/api/v1/ingest", Some(&fixture));
    assert_eq!(status, 202, "ingest: {body}");
    vigil.wait_processed(lines);
    vigil.wait_until(&format!("{OFFENSES} offenses, {TOP_INDEX} first"), || {
        let page = vigil.get_json("/api/v1/offenses");
        page["total"].as_u64().unwrap_or(0) >= OFFENSES
            && page["items"][0]["index_value"] == TOP_INDEX
            && page["items"][0]["event_count"] == 35
    });
    let page = vigil.get_json("/api/v1/offenses");
    let items = page["items"].as_array().unwrap();
    let magnitudes: Vec<u64> = items
        .iter()
        .map(|o| o["magnitude"].as_u64().unwrap())
        .collect();
    assert!(
        magnitudes.windows(2).all(|w| w[0] >= w[1]) && magnitudes[0] > magnitudes[1],
        "the fixture's top offense must stand alone at the head of the queue: {magnitudes:?}"
    );
    let top = &items[0];
    let id = top["id"].as_str().unwrap().to_owned();
    assert_eq!(top["status"], "open");

    // The search window: the offense's events and a minute or two either side, as UTC wall
    // time to the minute (what every browser's datetime-local field takes).
    let time = |k: &str, shift: i64| {
        let t: chrono::DateTime<chrono::Utc> = top[k].as_str().unwrap().parse().unwrap();
        (t + chrono::Duration::seconds(shift))
            .format("%Y-%m-%dT%H:%M")
            .to_string()
    };
    let env = [
        ("VIGIL_URL", format!("http://{}", vigil.api)),
        ("VIGIL_TOKEN", TOKEN.to_owned()),
        ("VIGIL_SCREENSHOTS", shots.display().to_string()),
        ("VIGIL_CHROMIUM", chromium().display().to_string()),
        ("VIGIL_EXPECT_INDEX", TOP_INDEX.to_owned()),
        ("VIGIL_EXPECT_OFFENSES", OFFENSES.to_string()),
        ("VIGIL_NOTE", NOTE.to_owned()),
        ("VIGIL_ASSIGNEE", ASSIGNEE.to_owned()),
        ("VIGIL_CLOSING_REASON", REASON.to_owned()),
        ("VIGIL_SEARCH_TEXT", SEARCH.to_owned()),
        ("VIGIL_SEARCH_FROM", time("first_seen", -60)),
        ("VIGIL_SEARCH_TO", time("last_seen", 120)),
        ("VIGIL_EXPECT_SOURCE", "http/127.0.0.1".to_owned()),
    ];
    let browser_started = Instant::now();
    let (ok, stdout, stderr) = run_driver(&env);
    let browser_secs = browser_started.elapsed().as_secs_f64();
    println!("{stderr}");
    assert!(
        ok,
        "the browser run failed (screenshots, failure.png included, in {}):\n{stderr}\n{stdout}",
        shots.display()
    );
    let result: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no result line from drive.mjs: {stdout}"));
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["offense_id"], id.as_str(), "{result}");
    let taken: Vec<PathBuf> = result["screenshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| PathBuf::from(p.as_str().unwrap()))
        .collect();
    assert!(taken.len() >= 10, "{taken:?}");
    for p in &taken {
        assert!(is_png(p), "not a screenshot: {}", p.display());
    }

    // What the browser did, as the API has it.
    let detail = vigil.get_json(&format!("/api/v1/offenses/{id}"));
    assert_eq!(detail["status"], "closed", "{detail}");
    assert_eq!(detail["closing_reason"], REASON);
    assert!(detail["closed_at"].is_string());
    assert_eq!(detail["assignee"], ASSIGNEE);
    let notes = detail["notes"].as_array().unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["text"], NOTE);
    assert_eq!(notes[0]["author"], "admin");
    let open = vigil.get_json("/api/v1/offenses?status=open&limit=500");
    assert!(
        open["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["id"] != id.as_str()),
        "{open}"
    );
    let closed = vigil.get_json("/api/v1/offenses?status=closed");
    assert_eq!(closed["total"], 1, "{closed}");
    assert_eq!(closed["items"][0]["id"], id.as_str());
    let audit = vigil.get_json("/api/v1/audit?limit=100");
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["target"] == id.as_str() && r["actor"] == "admin")
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for action in ["offense.note", "offense.assign", "offense.close"] {
        assert!(
            actions.contains(&action),
            "{action} not audited: {actions:?}"
        );
    }
    vigil.stop();

    say(&format!(
        "console test: {} screenshots in {} (browser {browser_secs:.1}s, test {:.1}s)",
        taken.len(),
        shots.display(),
        started.elapsed().as_secs_f64()
    ));
}
