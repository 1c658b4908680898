//! Starting and stopping a real `vigil run` process, and talking to it.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "test-token-0123456789abcdef";

/// Longest a test waits for the service to reach a state before failing (a guard against
/// hangs, not a timing assertion).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The Kafka broker the scaled-out tests use (`VIGIL_TEST_KAFKA`, default the one
/// `scripts/services.sh` starts), after checking that something listens there: a missing
/// service fails the test, it never skips it.
pub fn kafka_broker() -> String {
    use std::net::ToSocketAddrs;
    let addr = std::env::var("VIGIL_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:19092".to_owned());
    let answers = addr.split(',').any(|one| {
        one.trim()
            .to_socket_addrs()
            .ok()
            .and_then(|mut all| all.next())
            .is_some_and(|sa| TcpStream::connect_timeout(&sa, Duration::from_secs(3)).is_ok())
    });
    assert!(
        answers,
        "no Kafka broker answers at {addr}: run `scripts/services.sh start` \
         (or point VIGIL_TEST_KAFKA at a broker)"
    );
    addr
}

/// The ClickHouse HTTP interface the scaled-out tests use (`VIGIL_TEST_CLICKHOUSE_URL`, default
/// the one `scripts/services.sh` starts).
pub fn clickhouse_url() -> String {
    std::env::var("VIGIL_TEST_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:18123".into())
}

pub fn vigil_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vigil")
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub struct Vigil {
    child: Option<Child>,
    /// The NetFlow / IPFIX and sFlow listeners (port 0 when disabled).
    pub netflow: SocketAddr,
    pub sflow: SocketAddr,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    /// Syslog over TLS (port 0 when disabled).
    pub tls: SocketAddr,
    pub api: SocketAddr,
}

/// Writes a config for a test instance in `dir` (ports 0, data in `dir/data`, the shipped
/// rules).
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    write_config_with_rules(dir, &repo_root().join("rules"), extra)
}

/// [`write_config`] with another rules folder.
pub fn write_config_with_rules(dir: &Path, rules: &Path, extra: &str) -> PathBuf {
    let path = dir.join("vigil.toml");
    let text = format!(
        "data_dir = {data:?}\n\
         [syslog]\nudp_listen = \"127.0.0.1:0\"\ntcp_listen = \"127.0.0.1:0\"\n\
         max_message_bytes = 8192\nmax_connections = 16\nidle_timeout_secs = 30\n\
         [flows]\nnetflow_listen = \"127.0.0.1:0\"\nipfix_listen = \"127.0.0.1:0\"\n\
         sflow_listen = \"127.0.0.1:0\"\n\
         [rules]\ndir = {rules:?}\n\
         [api]\nlisten = \"127.0.0.1:0\"\ntoken = {TOKEN:?}\n{extra}",
        data = dir.join("data").display().to_string(),
        rules = rules.display().to_string(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts `vigil run` (no `VIGIL_API_TOKEN` from the environment) and waits for its ready
/// line; returns the process and that line.
pub fn spawn_run(config_path: &Path, stderr: Stdio) -> (Child, serde_json::Value) {
    let mut child = Command::new(vigil_bin())
        .args(["--config", config_path.to_str().unwrap(), "run"])
        .env(
            "VIGIL_LOG",
            std::env::var("VIGIL_TEST_LOG").unwrap_or_else(|_| "warn".to_owned()),
        )
        .env_remove("VIGIL_API_TOKEN")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start vigil");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let ready = serde_json::from_str(&line).unwrap_or_else(|e| panic!("ready line {line:?}: {e}"));
    (child, ready)
}

/// Sends SIGTERM and collects the exit status and what the process wrote.
pub fn sigterm_and_wait(child: Child) -> std::process::Output {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait_with_output().unwrap()
}

impl Vigil {
    pub fn start(config_path: &Path) -> Vigil {
        let (child, ready) = spawn_run(config_path, Stdio::inherit());
        let addr = |k: &str| -> SocketAddr {
            ready["bound"][k]
                .as_str()
                .unwrap_or("0.0.0.0:0")
                .parse()
                .unwrap()
        };
        Vigil {
            netflow: addr("netflow"),
            sflow: addr("sflow"),
            udp: addr("syslog_udp"),
            tcp: addr("syslog_tcp"),
            tls: addr("syslog_tls"),
            api: addr("api"),
            child: Some(child),
        }
    }

    /// Stops with SIGTERM (graceful: intake stops, the queue drains) and waits for the exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + PATIENCE;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    assert!(status.success(), "vigil exited with {status}");
                    return;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("vigil did not stop after SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Kills the process with SIGKILL (no shutdown work at all) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(vigil::loadgen::http_get(&self.api.to_string(), path, token))
            .unwrap()
    }

    /// Any request with the test token and a JSON body (or none); (status, body).
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.request_as(TOKEN, method, path, body)
    }

    /// [`Vigil::request`] with another token.
    pub fn request_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, String) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(self.api).await.unwrap();
            let body = body.unwrap_or("");
            let req = format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.unwrap();
            let text = String::from_utf8_lossy(&out).into_owned();
            let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
            let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("").to_owned();
            (status, body)
        })
    }

    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path, Some(TOKEN));
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    pub fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics", Some(TOKEN));
        assert_eq!(status, 200);
        body
    }

    pub fn metric(&self, name: &str) -> u64 {
        vigil::loadgen::metric_sum(&self.metrics(), name)
    }

    /// Waits until the service has processed (as event or dead letter) at least `n` records.
    pub fn wait_processed(&self, n: u64) {
        self.wait_until(&format!("{n} records processed"), || {
            self.metric("vigil_parse_events_total") + self.metric("vigil_parse_dead_letters_total")
                >= n
        });
    }

    pub fn wait_until(&self, what: &str, cond: impl FnMut() -> bool) {
        self.wait_at_most(PATIENCE, what, cond)
    }

    /// [`Vigil::wait_until`] with another bound (a liveness bound for slow recoveries on a
    /// loaded machine, not a timing assertion).
    pub fn wait_at_most(&self, patience: Duration, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + patience;
        while !cond() {
            assert!(Instant::now() < deadline, "gave up waiting for: {what}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn send_udp(&self, datagrams: &[Vec<u8>]) {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        for d in datagrams {
            sock.send_to(d, self.udp).unwrap();
        }
    }

    /// Sends datagrams to `to`, pausing a little every 64 so a burst does not overrun the
    /// socket buffer (the test is about decoding, not about the kernel).
    pub fn send_datagrams_to(&self, to: SocketAddr, datagrams: &[Vec<u8>]) {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        for (i, d) in datagrams.iter().enumerate() {
            sock.send_to(d, to).unwrap();
            if i % 64 == 63 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    pub fn tcp(&self) -> TcpStream {
        TcpStream::connect(self.tcp).unwrap()
    }

    pub fn send_tcp_octet_counted(&self, frames: &[Vec<u8>]) {
        let mut s = self.tcp();
        for f in frames {
            s.write_all(format!("{} ", f.len()).as_bytes()).unwrap();
            s.write_all(f).unwrap();
        }
        s.flush().unwrap();
    }
}

impl Drop for Vigil {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An sshd "Failed password" line as RFC 3164 with the current time.
pub fn failed_password_3164(ip: &str, port: u16) -> Vec<u8> {
    let now = chrono::Utc::now().format("%b %e %H:%M:%S");
    format!("<38>{now} bastion01 sshd[4242]: Failed password for root from {ip} port {port} ssh2")
        .into_bytes()
}

/// An sshd "Failed password" line as RFC 5424 with the current time.
pub fn failed_password_5424(ip: &str, port: u16) -> Vec<u8> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    format!(
        "<38>1 {now} bastion01 sshd 4242 - - Failed password for invalid user admin from {ip} port {port} ssh2"
    )
    .into_bytes()
}

/// A ClickHouse server of a test's own (the installed `clickhouse-server`, on free loopback
/// ports, data in `dir`), for tests that stop it: the shared one stays up for the others.
pub struct PrivateClickHouse {
    child: Option<Child>,
    dir: PathBuf,
    ports: [u16; 3],
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PrivateClickHouse {
    /// Starts a server with its data in `dir` and waits until it answers.
    pub fn start(dir: &Path) -> PrivateClickHouse {
        let mut ch = PrivateClickHouse {
            child: None,
            dir: dir.to_owned(),
            ports: [free_port(), free_port(), free_port()],
        };
        ch.launch();
        ch
    }

    /// Its HTTP interface.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[0])
    }

    fn launch(&mut self) {
        let bin = ["/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("clickhouse-server is installed (scripts/services.sh install)");
        let d = |sub: &str| format!("{}/{sub}/", self.dir.display());
        let child = Command::new(bin)
            .arg("--config-file=/etc/clickhouse-server/config.xml")
            .arg("--")
            .arg(format!("--path={}", d("data")))
            .arg(format!("--tmp_path={}", d("tmp")))
            .arg(format!("--user_files_path={}", d("user_files")))
            .arg(format!("--format_schema_path={}", d("format_schemas")))
            .arg(format!("--logger.log={}server.log", d("")))
            .arg(format!("--logger.errorlog={}server.err.log", d("")))
            .arg(format!("--http_port={}", self.ports[0]))
            .arg(format!("--tcp_port={}", self.ports[1]))
            .arg(format!("--interserver_http_port={}", self.ports[2]))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start clickhouse-server");
        self.child = Some(child);
        let deadline = Instant::now() + PATIENCE;
        let addr: SocketAddr = format!("127.0.0.1:{}", self.ports[0]).parse().unwrap();
        loop {
            if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                let _ = s.write_all(b"GET /ping HTTP/1.0\r\n\r\n");
                let mut body = String::new();
                let _ = std::io::Read::read_to_string(&mut s, &mut body);
                if body.ends_with("Ok.\n") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "private ClickHouse did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL (no shutdown at all), then waits for the process to end.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same data and ports.
    pub fn restart(&mut self) {
        self.kill9();
        self.launch();
    }
}

impl Drop for PrivateClickHouse {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Test certificates written as PEM files under `dir`: a CA, a server certificate it signed
/// for `localhost` and 127.0.0.1, and a client certificate it signed.
pub struct TestPki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestPki {
    pub fn new(dir: &Path) -> TestPki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf = |names: Vec<String>| {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
        let (client, client_key) = leaf(vec!["firewall01.bank.example".into()]);
        let pki = TestPki {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server-key.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
        };
        std::fs::write(&pki.ca, ca.pem()).unwrap();
        std::fs::write(&pki.cert, server).unwrap();
        std::fs::write(&pki.key, server_key).unwrap();
        std::fs::write(&pki.client_cert, client).unwrap();
        std::fs::write(&pki.client_key, client_key).unwrap();
        pki
    }
}

/// A client of the test ClickHouse on no particular database: a query that names a table
/// without its database fails.
pub fn clickhouse_admin() -> ::clickhouse::Client {
    ::clickhouse::Client::default()
        .with_url(clickhouse_url())
        .with_validation(false)
}

/// A test database; dropped when this goes out of scope, panics included.
pub struct TestDb {
    pub name: String,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        use std::io::Read;
        // Plain blocking HTTP: `Drop` cannot await, and this must run on panic too.
        let url = clickhouse_url();
        let addr = url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        if let Ok(mut s) = TcpStream::connect(&addr) {
            let body = format!("DROP DATABASE IF EXISTS {}", self.name);
            let _ = write!(
                s,
                "POST / HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        }
    }
}

/// Fails (never skips) when the test ClickHouse does not answer.
pub async fn require_clickhouse() {
    if let Err(e) = clickhouse_admin().query("SELECT 1").fetch_one::<u8>().await {
        panic!(
            "ClickHouse does not answer at {} ({e}); run `scripts/services.sh start` \
             (or point VIGIL_TEST_CLICKHOUSE_URL at a server)",
            clickhouse_url()
        );
    }
}
