//! `vigil loadgen`: pushes syslog over TCP (octet counting) or UDP to a running Vigil at a
//! fixed rate or flat out, waits until Vigil has processed everything it sent, and reports sustained EPS
//! and the receive -> offense latency percentiles that Vigil measured itself
//! (`vigil_offense_latency_seconds`, read from `/metrics` before and after).
//!
//! The mix is realistic for an SSH-exposed estate: about one line in five is an sshd failed
//! password from one of ~750 documentation-range addresses (so brute-force offenses open and
//! grow all the time), the rest accepted logins, sudo, cron, kernel and RFC 5424 app lines.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Arguments of `vigil loadgen`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenArgs {
    /// Syslog TCP address of the target.
    #[arg(long, default_value = "127.0.0.1:5514")]
    pub tcp: String,
    /// API address of the target (for its metrics).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub api: String,
    /// API token of the target.
    #[arg(long, env = "VIGIL_API_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Records per second in total; 0 sends flat out.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Parallel TCP connections.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Longest wait for the target to finish processing after sending stops, in seconds.
    #[arg(long, default_value_t = 120)]
    pub drain_timeout_secs: u64,
    /// Count a record done when it is stored (`vigil_store_events_total`: in ClickHouse, for
    /// the scaled-out mode) rather than when it is parsed.
    #[arg(long)]
    pub until_stored: bool,
    /// Send the syslog mix to this UDP address instead of over TCP (one record a datagram,
    /// from `--connections` sockets). Datagrams the kernel drops on the target's socket are
    /// reported with the other drops.
    #[arg(long)]
    pub udp: Option<String>,
    /// The target is not Vigil (syslog-ng, for a side-by-side run) and writes a line to this
    /// file for each record it received: a record counts as done when its line is there. The
    /// API is not used, and no latency is reported.
    #[arg(long)]
    pub count_lines: Option<std::path::PathBuf>,
    /// Send NetFlow v5 to this UDP address instead of syslog (30 flow records a datagram, from
    /// 16 exporters); `--rate` is then flow records per second.
    #[arg(long)]
    pub netflow: Option<String>,
}

/// What loadgen measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadgenReport {
    /// Records sent.
    pub sent: u64,
    /// Seconds spent sending.
    pub send_secs: f64,
    /// Records the target processed (events + dead letters) during the run.
    pub processed: u64,
    /// Seconds from the first record sent to the target having processed all of them.
    pub total_secs: f64,
    /// processed / total_secs.
    pub sustained_eps: f64,
    /// Offenses created + updated during the run.
    pub offense_changes: u64,
    /// Median receive -> offense stored latency, seconds (bucket-interpolated).
    pub offense_latency_p50_secs: Option<f64>,
    /// 99th percentile receive -> offense stored latency, seconds (bucket-interpolated).
    pub offense_latency_p99_secs: Option<f64>,
    /// Records the target dropped or refused during the run.
    pub dropped_or_refused: u64,
}

/// One line of the mix, number `i` of connection `conn`, as an RFC 3164 or 5424 record.
pub fn mix_line(conn: usize, i: u64) -> String {
    let n = i.wrapping_mul(2_654_435_761).wrapping_add(conn as u64 * 97);
    let ip = format!(
        "{}.{}",
        ["203.0.113", "198.51.100", "192.0.2"][(n % 3) as usize],
        (n / 3) % 250 + 1
    );
    let port = 1024 + (n % 60_000);
    let pid = 1000 + (n % 30_000);
    let host = format!("srv{:02}", n % 40);
    match n % 10 {
        0 | 1 => format!(
            "<38>Nov 28 10:00:01 {host} sshd[{pid}]: Failed password for invalid user admin from {ip} port {port} ssh2"
        ),
        2 => format!(
            "<38>Nov 28 10:00:01 {host} sshd[{pid}]: Accepted publickey for deploy from 10.1.{}.{} port {port} ssh2: ED25519 SHA256:Zm9vYmFyYmF6cXV4",
            n % 200,
            n % 250 + 1
        ),
        3 => format!(
            "<85>Nov 28 10:00:01 {host} sudo[{pid}]:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/systemctl restart nginx"
        ),
        4 => format!(
            "<78>Nov 28 10:00:01 {host} CRON[{pid}]: (root) CMD (/usr/local/bin/backup --incremental >/dev/null 2>&1)"
        ),
        5 => format!(
            "<4>Nov 28 10:00:01 {host} kernel: [UFW BLOCK] IN=eth0 OUT= SRC={ip} DST=10.0.0.5 LEN=60 PROTO=TCP SPT={port} DPT=22"
        ),
        6 => format!(
            "<165>1 2026-11-28T10:00:01.123456Z {host} api-gw {pid} ACCESS [req@32473 id=\"{n}\" route=\"/accounts\"] GET /v1/accounts 200 {}ms",
            n % 900
        ),
        7 => format!(
            "<38>Nov 28 10:00:01 {host} sshd[{pid}]: Disconnected from authenticating user root {ip} port {port} [preauth]"
        ),
        _ => format!(
            "<30>Nov 28 10:00:01 {host} systemd[1]: Started Session {n} of user alice."
        ),
    }
}

/// `GET path` over plain HTTP/1.1 with a bearer token; returns status and body. Small on
/// purpose: loadgen and the tests need nothing more.
pub async fn http_get(
    addr: &str,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("malformed http response"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status in http response"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(rest.get(..size).unwrap_or_default());
        body = rest
            .get(size..)
            .unwrap_or_default()
            .trim_start_matches("\r\n");
    }
    out
}

/// Sum of a counter family in Prometheus text (every label set).
pub fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn scrape(args: &LoadgenArgs) -> anyhow::Result<String> {
    let (status, body) = http_get(&args.api, "/metrics", Some(&args.token)).await?;
    if status != 200 {
        bail!("GET /metrics answered {status}: check --api and --token");
    }
    Ok(body)
}

fn processed(text: &str, stored: bool) -> u64 {
    if stored {
        metric_sum(text, "vigil_store_events_total")
    } else {
        metric_sum(text, "vigil_parse_events_total")
            + metric_sum(text, "vigil_parse_dead_letters_total")
    }
}

/// One NetFlow v5 datagram of 30 records from exporter sequence `seq`: scattered sources and
/// destinations, mostly short TCP connections.
pub fn netflow_v5_datagram(seq: u32, unix_secs: u32) -> Vec<u8> {
    let mut d = Vec::with_capacity(24 + 30 * 48);
    let uptime: u32 = 86_400_000;
    d.extend_from_slice(&5u16.to_be_bytes());
    d.extend_from_slice(&30u16.to_be_bytes());
    d.extend_from_slice(&uptime.to_be_bytes());
    d.extend_from_slice(&unix_secs.to_be_bytes());
    d.extend_from_slice(&0u32.to_be_bytes());
    d.extend_from_slice(&seq.wrapping_mul(30).to_be_bytes());
    d.extend_from_slice(&[0, 0, 0, 0]);
    for i in 0..30u32 {
        let n = seq
            .wrapping_mul(30)
            .wrapping_add(i)
            .wrapping_mul(2_654_435_761);
        d.extend_from_slice(&[
            10,
            (n >> 8) as u8 & 0x3f,
            (n >> 16) as u8,
            1 + (n % 250) as u8,
        ]);
        d.extend_from_slice(&[198, 51, 100, 1 + (n >> 24) as u8 % 250]);
        d.extend_from_slice(&[0, 0, 0, 0]);
        d.extend_from_slice(&1u16.to_be_bytes());
        d.extend_from_slice(&2u16.to_be_bytes());
        d.extend_from_slice(&(3 + n % 20).to_be_bytes());
        d.extend_from_slice(&(180 + n % 20_000).to_be_bytes());
        d.extend_from_slice(&(uptime - 5_000).to_be_bytes());
        d.extend_from_slice(&(uptime - 1_000).to_be_bytes());
        d.extend_from_slice(&(1024 + (n % 60_000) as u16).to_be_bytes());
        d.extend_from_slice(&[443u16.to_be_bytes(), 53u16.to_be_bytes()][(n % 2) as usize]);
        d.extend_from_slice(&[
            0,
            0x1b,
            [6u8, 17][(n % 2) as usize],
            0,
            0,
            0,
            0,
            0,
            24,
            24,
            0,
            0,
        ]);
    }
    d
}

/// Sends NetFlow v5 to `target` and reports like [`run`]: flow records processed (events through
/// the engine), and dropped (the kernel's drops on Vigil's socket, as records, plus records
/// refused by a full queue).
async fn run_netflow(args: &LoadgenArgs, target: &str) -> anyhow::Result<LoadgenReport> {
    let before = scrape(args).await?;
    let start = Instant::now();
    let duration = Duration::from_secs(args.duration_secs);
    let exporters = 16usize;
    let mut sockets = Vec::with_capacity(exporters);
    for _ in 0..exporters {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        s.connect(target).await?;
        sockets.push(s);
    }
    let now_secs = u32::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
    let mut seqs = vec![0u32; exporters];
    let mut sent_records = 0u64;
    let mut i = 0usize;
    while start.elapsed() < duration {
        let due = due(
            start,
            sent_records,
            (args.rate > 0).then_some(args.rate),
            30 * 64,
        );
        while sent_records < due {
            let e = i % exporters;
            i += 1;
            let d = netflow_v5_datagram(seqs[e], now_secs);
            seqs[e] += 1;
            if let Some(sock) = sockets.get(e) {
                sock.send(&d).await?;
            }
            sent_records += 30;
        }
        tokio::time::sleep(Duration::from_millis(if args.rate == 0 { 0 } else { 5 })).await;
        tokio::task::yield_now().await;
    }
    let send_secs = start.elapsed().as_secs_f64();
    // Done = through the engine (context, rules, store), not just decoded.
    let records = |t: &str| metric_sum(t, "vigil_parse_events_total");
    let base = records(&before);
    // Records that will never arrive: the kernel's drops on Vigil's socket (30 a datagram)
    // and what a full queue refused.
    let lost = |t: &str| {
        let delta = |name: &str| metric_sum(t, name).saturating_sub(metric_sum(&before, name));
        delta("vigil_flow_kernel_drops_total") * 30 + delta("vigil_collector_dropped_total")
    };
    let deadline = Instant::now() + Duration::from_secs(args.drain_timeout_secs);
    let mut progress = Progress::new();
    let after = loop {
        let text = scrape(args).await?;
        let done = records(&text).saturating_sub(base);
        if done + lost(&text) >= sent_records || Instant::now() > deadline || progress.stalled(done)
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let total_secs = start.elapsed().as_secs_f64();
    let processed = records(&after).saturating_sub(base);
    let delta = |name: &str| metric_sum(&after, name).saturating_sub(metric_sum(&before, name));
    Ok(LoadgenReport {
        sent: sent_records,
        send_secs,
        processed,
        total_secs,
        sustained_eps: processed as f64 / total_secs.max(1e-9),
        offense_changes: delta("vigil_offenses_created_total")
            + delta("vigil_offenses_updated_total"),
        offense_latency_p50_secs: None,
        offense_latency_p99_secs: None,
        dropped_or_refused: lost(&after),
    })
}

/// Runs the load and reports.
pub async fn run(args: LoadgenArgs) -> anyhow::Result<LoadgenReport> {
    if let Some(target) = args.netflow.clone() {
        return run_netflow(&args, &target).await;
    }
    if let Some(path) = args.count_lines.clone() {
        return run_to_file(&args, &path).await;
    }
    let before = scrape(&args).await?;
    let start = Instant::now();
    let sent = send_syslog(&args).await?;
    let send_secs = start.elapsed().as_secs_f64();
    let base = processed(&before, args.until_stored);
    let deadline = Instant::now() + Duration::from_secs(args.drain_timeout_secs);
    // Over UDP a datagram may be lost where nothing counts it: stop once nothing moved for a
    // while (as for flows), and count the time until the last progress.
    let mut progress = Progress::new();
    let mut stalled = false;
    let after = loop {
        let now_text = scrape(&args).await?;
        let refused = metric_sum(&now_text, "vigil_collector_dropped_total")
            .saturating_sub(metric_sum(&before, "vigil_collector_dropped_total"));
        let done = processed(&now_text, args.until_stored).saturating_sub(base) + refused;
        if done >= sent || Instant::now() > deadline {
            break now_text;
        }
        if progress.stalled(done) && args.udp.is_some() {
            stalled = true;
            break now_text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let total_secs = if stalled {
        progress.secs_to_last_move(start, send_secs)
    } else {
        start.elapsed().as_secs_f64()
    };
    let processed_n = processed(&after, args.until_stored).saturating_sub(base);
    let delta = |name: &str| metric_sum(&after, name).saturating_sub(metric_sum(&before, name));
    let buckets_delta = histogram_delta(&before, &after, "vigil_offense_latency_seconds");
    Ok(LoadgenReport {
        sent,
        send_secs,
        processed: processed_n,
        total_secs,
        sustained_eps: processed_n as f64 / total_secs.max(1e-9),
        offense_changes: delta("vigil_offenses_created_total")
            + delta("vigil_offenses_updated_total"),
        offense_latency_p50_secs: crate::telemetry::histogram_quantile(&buckets_delta, "h", 0.5),
        offense_latency_p99_secs: crate::telemetry::histogram_quantile(&buckets_delta, "h", 0.99),
        dropped_or_refused: delta("vigil_collector_dropped_total")
            + delta("vigil_collector_refused_total"),
    })
}

/// The histogram `name` of `after` minus that of `before`, rendered as buckets of a
/// histogram named `h` (so [`crate::telemetry::histogram_quantile`] can read it).
fn histogram_delta(before: &str, after: &str, name: &str) -> String {
    let prefix = format!("{name}_bucket{{le=\"");
    let read = |text: &str| -> Vec<(String, u64)> {
        text.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(&prefix)?;
                let (le, v) = rest.split_once("\"} ")?;
                Some((le.to_owned(), v.trim().parse().ok()?))
            })
            .collect()
    };
    let b = read(before);
    read(after)
        .into_iter()
        .map(|(le, v)| {
            let old = b
                .iter()
                .find(|(l, _)| *l == le)
                .map(|(_, v)| *v)
                .unwrap_or(0);
            format!("h_bucket{{le=\"{le}\"}} {}\n", v.saturating_sub(old))
        })
        .collect()
}

/// Records due by now since `start`: at `rate` per second, or (flat out, `None`) `burst` more
/// than `sent`. Senders work in ticks, each catching up to this.
fn due(start: Instant, sent: u64, rate: Option<u64>, burst: u64) -> u64 {
    match rate {
        None => sent + burst,
        Some(rate) => (start.elapsed().as_secs_f64() * rate as f64) as u64,
    }
}

/// Waiting for the target after sending: whether the count of records done has stopped moving
/// for a while (records lost where nothing counts them), and when it last moved.
struct Progress {
    done: u64,
    moved: Instant,
}

impl Progress {
    /// How long nothing may move before the records still missing count as lost. Longer than
    /// the engine's pauses: a snapshot of millions of correlation keys (a flow backlog) holds
    /// it for several seconds, and 2 s cut flow runs off a third of the way through.
    const QUIET: Duration = Duration::from_secs(10);

    fn new() -> Progress {
        Progress {
            done: 0,
            moved: Instant::now(),
        }
    }

    /// Notes `done`; true once it has not changed for [`Progress::QUIET`].
    fn stalled(&mut self, done: u64) -> bool {
        if done != self.done {
            self.done = done;
            self.moved = Instant::now();
        }
        self.moved.elapsed() > Self::QUIET
    }

    /// Seconds from `start` to the last change, at least `send_secs`.
    fn secs_to_last_move(&self, start: Instant, send_secs: f64) -> f64 {
        self.moved
            .duration_since(start)
            .as_secs_f64()
            .max(send_secs)
    }
}

async fn send_connection(
    target: &str,
    conn: usize,
    rate: Option<u64>,
    duration: Duration,
) -> anyhow::Result<u64> {
    if rate == Some(0) {
        return Ok(0);
    }
    let mut stream = TcpStream::connect(target)
        .await
        .with_context(|| format!("connecting to {target}"))?;
    stream.set_nodelay(true)?;
    let start = Instant::now();
    let mut sent = 0u64;
    let mut buf = Vec::with_capacity(256 * 1024);
    // Sends in ticks of 10 ms; each tick catches up to where the rate says it should be.
    while start.elapsed() < duration {
        let due = due(start, sent, rate, 512);
        buf.clear();
        while sent < due {
            let line = mix_line(conn, sent);
            buf.extend_from_slice(format!("{} {}", line.len(), line).as_bytes());
            sent += 1;
        }
        if !buf.is_empty() {
            stream.write_all(&buf).await?;
        }
        if rate.is_some() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    stream.flush().await?;
    stream.shutdown().await?;
    Ok(sent)
}

/// Sends the syslog mix as the arguments say (TCP or UDP, rate, duration, connections) and
/// returns how many records were sent.
async fn send_syslog(args: &LoadgenArgs) -> anyhow::Result<u64> {
    let duration = Duration::from_secs(args.duration_secs);
    let conns = args.connections.max(1);
    let mut tasks = Vec::new();
    for conn in 0..conns {
        // The rate split over the connections, remainder to the first ones; None = flat out.
        let rate = (args.rate > 0).then(|| {
            args.rate / conns as u64 + u64::from((conn as u64) < args.rate % conns as u64)
        });
        let (tcp, udp) = (args.tcp.clone(), args.udp.clone());
        tasks.push(tokio::spawn(async move {
            match udp {
                Some(target) => send_datagrams(&target, conn, rate, duration).await,
                None => send_connection(&tcp, conn, rate, duration).await,
            }
        }));
    }
    let mut sent = 0;
    for t in tasks {
        sent += t.await.context("sender task")??;
    }
    Ok(sent)
}

/// Runs the load against a target that writes a line per record to `path` (see
/// `--count-lines`): done when every record's line is there, or nothing was added for a while.
async fn run_to_file(args: &LoadgenArgs, path: &std::path::Path) -> anyhow::Result<LoadgenReport> {
    let mut lines = LineCounter::new(path)?;
    let base = lines.count()?;
    let start = Instant::now();
    let sent = send_syslog(args).await?;
    let send_secs = start.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(args.drain_timeout_secs);
    let mut progress = Progress::new();
    let done = loop {
        let n = lines.count()?.saturating_sub(base);
        if n >= sent || Instant::now() > deadline || progress.stalled(n) {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Stopped waiting for lost records: count the time until the last line came, not the wait.
    let total_secs = if done >= sent {
        start.elapsed().as_secs_f64()
    } else {
        progress.secs_to_last_move(start, send_secs)
    };
    Ok(LoadgenReport {
        sent,
        send_secs,
        processed: done,
        total_secs,
        sustained_eps: done as f64 / total_secs.max(1e-9),
        offense_changes: 0,
        offense_latency_p50_secs: None,
        offense_latency_p99_secs: None,
        dropped_or_refused: sent.saturating_sub(done),
    })
}

/// Counts the lines of a growing file, reading only what was added since the last count.
struct LineCounter {
    file: std::fs::File,
    lines: u64,
    buf: Vec<u8>,
}

impl LineCounter {
    fn new(path: &std::path::Path) -> anyhow::Result<LineCounter> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(LineCounter {
            file,
            lines: 0,
            buf: vec![0; 1 << 20],
        })
    }

    fn count(&mut self) -> anyhow::Result<u64> {
        use std::io::Read;
        loop {
            let n = self.file.read(&mut self.buf)?;
            if n == 0 {
                return Ok(self.lines);
            }
            let chunk = self.buf.get(..n).unwrap_or_default();
            self.lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        }
    }
}

/// As [`send_connection`], over UDP: one record a datagram, without octet counting.
async fn send_datagrams(
    target: &str,
    conn: usize,
    rate: Option<u64>,
    duration: Duration,
) -> anyhow::Result<u64> {
    if rate == Some(0) {
        return Ok(0);
    }
    let local = if target.starts_with('[') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let socket = tokio::net::UdpSocket::bind(local).await?;
    socket
        .connect(target)
        .await
        .with_context(|| format!("connecting to {target}"))?;
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < duration {
        let due = due(start, sent, rate, 256);
        while sent < due && start.elapsed() < duration {
            let line = mix_line(conn, sent);
            match socket.send(line.as_bytes()).await {
                Ok(_) => sent += 1,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    bail!("{target} refused the datagrams: {e}")
                }
                // A full local buffer (ENOBUFS) is the sender's loss, not the target's: the
                // record is sent again.
                Err(_) => tokio::task::yield_now().await,
            }
        }
        if rate.is_some() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unwrap_used)]
    fn line_counter_counts_only_what_was_added() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.log");
        let mut counter = LineCounter::new(&path).unwrap();
        assert_eq!(counter.count().unwrap(), 0);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"a\nb\nc").unwrap();
        assert_eq!(counter.count().unwrap(), 2, "a line counts once it ends");
        f.write_all(b"\n").unwrap();
        f.write_all("d\n".repeat(3 << 20).as_bytes()).unwrap();
        assert_eq!(counter.count().unwrap(), 3 + (3 << 20));
    }

    #[test]
    fn metric_sum_adds_every_label_set_of_one_family_only() {
        let text = "a_total{x=\"1\"} 2\na_total{x=\"2\"} 3\na_total_other 7\na_total 1\n";
        assert_eq!(metric_sum(text, "a_total"), 6);
    }

    #[test]
    fn dechunk_joins_chunks() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}
